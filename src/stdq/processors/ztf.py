"""IRSA ZTF DR light curve (CSV) -> normalized photometry (docs/photometry.md 3.1, 4).

Rules:

- flux: ``flux_ujy = 10**(-0.4 (mag - 23.9))``; ``flux_err_ujy = flux * magerr *
  ln(10)/2.5`` (= flux * magerr / 1.0857); these are **total** fluxes (PSF fits on
  the science image), so ``flux_kind = total``.
- every row is a catalogue detection: ``detected = true``; ``magnitude`` and
  ``magnitude_error`` are IRSA's own ``mag`` and ``magerr`` (stored as given, not
  recomputed from the flux; they agree with 1.0857 err/flux to first order);
  ``limit`` and ``limit_nsigma`` are empty; ``image_depth = limitmag`` (the
  epoch's 5-sigma depth, not an upper limit of this source).
- time: ``mjd`` is IRSA's ``mjd`` + ``exptime``/2 (mid-exposure, UTC). IRSA's
  ``mjd`` is taken as the start of the exposure, like every other ZTF epoch time
  (``jd`` of ZFPS, ``obsjd`` of alerts); docs/photometry.md marks this as unverified
  for IRSA. The value as given is kept in ``ztf_mjd``; ``hjd`` (a heliocentric
  JD) is kept in ``ztf_hjd`` and never used as a time.
- ``quality_flag``: FLAG_SURVEY_CODE when ``catflags != 0`` (catflags kept in
  ``ztf_catflags``).
- ids: ``object_id = oid`` and ``source_row_id = oid:expid``, both read as text
  (15-digit integers never go through a float).
- objects: by default, in each (field, ccdid, qid, filtercode) group the oid
  whose position (median ra/dec of its rows) is nearest the target is kept and
  the rows of the other oids are left out and counted; with ``--all-objects``
  every oid is kept. ``service_notes.objects`` lists every oid with its group,
  row count, separation and whether it was kept.
- rows without a ``mag``/``magerr``/``mjd`` (empty or not a number) or with an
  unknown ``filtercode`` are left out and counted; then the common rule
  (``photometry.drop_bad_values``, survey ``ZTF``): a non-finite flux or error, an
  error <= 0, an epoch before MJD 58000 or in the future.
- ``oid``, ``expid`` and the integer columns (``catflags``, ``field``, ``ccdid``,
  ``qid``, ``programid``) must be whole numbers that fit a signed 64-bit integer
  (``oid``/``expid`` written as digits): anything else fails the product
  (QueryFailed, exit 1), never an internal error.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from stdq import photometry
from stdq.errors import QueryFailed
from stdq.processors.base import DataProcessor

if TYPE_CHECKING:
    import pandas as pd

    from stdq.store import DataProduct

RAW_NAME = "lightcurve.csv"
BANDS = {"zg": "ztfg", "zr": "ztfr", "zi": "ztfi"}
DEFAULT_EXPTIME = 30.0  # seconds, when a row has none
GROUP_KEY = ["ztf_field", "ztf_ccdid", "ztf_qid", "filter"]
NUMERIC = ("hjd", "mjd", "mag", "magerr", "ra", "dec", "chi", "sharp", "limitmag", "magzp",
           "magzprms", "clrcoeff", "clrcounc", "exptime", "airmass")
INTEGER = ("catflags", "field", "ccdid", "qid", "programid")


class ZtfLightCurveProcessor(DataProcessor):
    """IRSA ``nph_light_curves`` CSV -> rows of total-flux detections in microjansky."""

    data_product_type = "ztf_photometry"
    version = "2"  # 2: the common value rule (drop_bad_values); error <= 0 left out, not flagged

    def cuts(self) -> dict[str, Any]:
        return {
            "objects": "nearest oid per (field, ccdid, qid, filtercode), unless --all-objects",
            "quality_flag": "catflags != 0 -> FLAG_SURVEY_CODE (1)",
            "time": "mjd = IRSA mjd + exptime/2",
        }

    def process(self, product: DataProduct) -> pd.DataFrame:
        import pandas as pd

        data = product.raw(RAW_NAME).path.read_bytes()
        try:
            raw = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, skipinitialspace=True)
        except pd.errors.EmptyDataError:
            raise QueryFailed("ztf: the light-curve answer is empty (not even a header line)") from None
        except (ValueError, UnicodeDecodeError) as exc:  # ParserError: a line with too many fields
            text = " ".join(str(exc).split())[:160]
            raise QueryFailed(f"ztf: the light-curve CSV could not be read ({text})") from None
        raw.columns = [c.strip() for c in raw.columns]
        missing = {"oid", "expid", "mjd", "mag", "magerr", "filtercode", "ra", "dec"} - set(raw.columns)
        if missing:
            raise QueryFailed(f"ztf: the light-curve CSV has no column(s) {', '.join(sorted(missing))}")
        for name in NUMERIC:
            if name in raw.columns:
                raw[name] = pd.to_numeric(raw[name].str.strip(), errors="coerce").astype("float64")
        for name in INTEGER:
            if name in raw.columns:
                raw[name] = _integers(raw[name], name)
        for name in ("oid", "expid", "filtercode", "filefracday"):
            if name in raw.columns:
                raw[name] = raw[name].str.strip()
        for name in ("oid", "expid"):
            photometry.check_int64(raw[name].unique().tolist(), f"ztf: {name}")

        raw = self._leave_out_unusable(product, raw)
        target_ra, target_dec = float(product.target["ra"]), float(product.target["dec"])
        table = photometry.drop_bad_values(self._rows(raw, target_ra, target_dec), "ZTF", product)
        all_objects = bool(product.params.get("all_objects"))
        table = self._select_objects(product, table, target_ra, target_dec, all_objects)
        product.notes["time"] = "mjd = IRSA mjd + exptime/2 (mid-exposure, UTC); IRSA mjd in ztf_mjd"
        product.notes["magnitudes"] = "IRSA mag/magerr as given (ZTF AB, PS1-calibrated; no colour term)"
        return table.reset_index(drop=True) if len(table) else table

    @staticmethod
    def _leave_out_unusable(product: DataProduct, raw: pd.DataFrame) -> pd.DataFrame:
        import numpy as np

        bad_filter = ~raw["filtercode"].isin(list(BANDS))
        product.leave_out("rows with an unknown filtercode", int(bad_filter.sum()))
        raw = raw[~bad_filter]
        unusable = np.isnan(raw["mag"]) | np.isnan(raw["magerr"]) | np.isnan(raw["mjd"])
        product.leave_out("rows without a usable mag, magerr or mjd", int(unusable.sum()))
        return raw[~unusable]

    @staticmethod
    def _rows(raw: pd.DataFrame, target_ra: float, target_dec: float) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        def col(name: str, default: Any = np.nan) -> pd.Series:
            if name in raw.columns:
                return raw[name]
            return pd.Series([default] * len(raw), index=raw.index)

        mag = raw["mag"].to_numpy(dtype="float64")
        magerr = raw["magerr"].to_numpy(dtype="float64")
        with np.errstate(over="ignore"):
            flux = np.where(np.isfinite(mag), photometry.flux_from_magnitude(mag), np.nan)
        exptime = col("exptime").to_numpy(dtype="float64")
        exptime = np.where(np.isfinite(exptime) & (exptime > 0), exptime, DEFAULT_EXPTIME)
        catflags = col("catflags", 0).fillna(0).astype("int64")
        quality = np.where(catflags.to_numpy() != 0, photometry.FLAG_SURVEY_CODE, 0).astype("int64")
        with np.errstate(over="ignore", invalid="ignore"):
            err = flux * magerr / photometry.PSF_MAG_ERR
        ra = raw["ra"].to_numpy(dtype="float64")
        dec = raw["dec"].to_numpy(dtype="float64")
        oid = raw["oid"].astype(str)
        expid = raw["expid"].astype(str)
        table = pd.DataFrame(
            {
                "mjd": raw["mjd"].to_numpy(dtype="float64") + exptime / 2.0 / 86400.0,
                "survey": "ZTF",
                "telescope": "P48",
                "instrument": "ZTF",
                "filter": raw["filtercode"].to_numpy(),
                "band": raw["filtercode"].map(BANDS).to_numpy(),
                "flux_ujy": flux,
                "flux_err_ujy": err,
                "detected": True,
                "magnitude": mag,
                "magnitude_error": magerr,
                "limit": np.nan,
                "limit_nsigma": np.nan,
                "image_depth": col("limitmag").to_numpy(dtype="float64"),
                "flux_kind": "total",
                "quality_flag": quality.astype("int64"),
                "ra": ra,
                "dec": dec,
                "sep_arcsec": photometry.separation_arcsec(target_ra, target_dec, ra, dec),
                "object_id": oid.to_numpy(),
                "source_row_id": (oid + ":" + expid).to_numpy(),
                "ztf_catflags": catflags.to_numpy(),
                "ztf_field": col("field", pd.NA).to_numpy(),
                "ztf_ccdid": col("ccdid", pd.NA).to_numpy(),
                "ztf_qid": col("qid", pd.NA).to_numpy(),
                "ztf_expid": expid.to_numpy(),
                "ztf_mjd": raw["mjd"].to_numpy(dtype="float64"),
                "ztf_hjd": col("hjd").to_numpy(dtype="float64"),
                "ztf_exptime": col("exptime").to_numpy(dtype="float64"),
                "ztf_limitmag": col("limitmag").to_numpy(dtype="float64"),
                "ztf_magzp": col("magzp").to_numpy(dtype="float64"),
                "ztf_magzprms": col("magzprms").to_numpy(dtype="float64"),
                "ztf_clrcoeff": col("clrcoeff").to_numpy(dtype="float64"),
                "ztf_clrcounc": col("clrcounc").to_numpy(dtype="float64"),
                "ztf_chi": col("chi").to_numpy(dtype="float64"),
                "ztf_sharp": col("sharp").to_numpy(dtype="float64"),
                "ztf_airmass": col("airmass").to_numpy(dtype="float64"),
                "ztf_programid": col("programid", pd.NA).to_numpy(),
                "ztf_filefracday": col("filefracday", "").astype(str).to_numpy(),
            },
            index=raw.index,
        )
        for name in ("ztf_field", "ztf_ccdid", "ztf_qid", "ztf_programid"):
            table[name] = pd.array(table[name], dtype="Int64")
        return table

    @staticmethod
    def _select_objects(
        product: DataProduct, table: pd.DataFrame, target_ra: float, target_dec: float, all_objects: bool
    ) -> pd.DataFrame:
        """Keep the nearest oid per (field, ccdid, qid, filtercode), or every oid."""
        if not len(table):
            product.notes["objects"] = []
            return table
        objects = (
            table.groupby("object_id", sort=True)
            .agg(
                ra=("ra", "median"),
                dec=("dec", "median"),
                ztf_field=("ztf_field", "first"),
                ztf_ccdid=("ztf_ccdid", "first"),
                ztf_qid=("ztf_qid", "first"),
                filter=("filter", "first"),
                rows=("ra", "size"),
            )
            .reset_index()
        )
        objects["sep_arcsec"] = photometry.separation_arcsec(
            target_ra, target_dec, objects["ra"].to_numpy(), objects["dec"].to_numpy()
        )
        if all_objects:
            keep = set(objects["object_id"])
        else:
            keep = set()
            for _, group in objects.groupby(GROUP_KEY, sort=True, dropna=False):
                nearest = group.sort_values(["sep_arcsec", "object_id"], kind="stable").iloc[0]
                keep.add(nearest["object_id"])
        product.notes["objects"] = [
            {
                "oid": str(row.object_id),
                "field": _int_or_none(row.ztf_field),
                "ccdid": _int_or_none(row.ztf_ccdid),
                "qid": _int_or_none(row.ztf_qid),
                "filtercode": str(row.filter),
                "rows": int(row.rows),
                "ra": float(row.ra),
                "dec": float(row.dec),
                "sep_arcsec": round(float(row.sep_arcsec), 4),
                "kept": row.object_id in keep,
            }
            for row in objects.itertuples(index=False)
        ]
        product.notes["object_rule"] = (
            "every oid in the cone (--all-objects)"
            if all_objects
            else "nearest oid (median ra/dec of its rows) per field/ccdid/qid/filtercode"
        )
        dropped = ~table["object_id"].isin(keep)
        n_objects = int((~objects["object_id"].isin(keep)).sum())
        if dropped.any():
            product.leave_out(
                f"rows of {n_objects} other object{'s' if n_objects != 1 else ''} in the cone "
                "(nearest oid kept per field/ccd/quadrant/filter)",
                int(dropped.sum()),
            )
        return table[~dropped]


def _integers(column: pd.Series, name: str) -> pd.Series:
    """An integer column as Int64 (empty or non-numeric text: missing); QueryFailed for a
    number that is not whole or does not fit a signed 64-bit integer."""
    import numpy as np
    import pandas as pd

    text = column.str.strip()
    exact = text.where(text.str.fullmatch(r"[+-]?\d+"), None)
    numbers = pd.to_numeric(text, errors="coerce")
    floats = numbers.astype("float64").to_numpy()
    bad = np.isfinite(floats) & ((np.abs(floats) >= 2.0**63) | (floats != np.round(floats)))
    bad |= np.isinf(floats)
    if bad.any():
        photometry.check_int64([text[bad].iloc[0]], f"ztf: column {name}:")
    photometry.check_int64(exact.dropna().unique().tolist(), f"ztf: column {name}:")
    values = [int(v) if isinstance(v, str) else None for v in exact]
    floats_ok = np.isfinite(floats)
    out = pd.array(
        [v if v is not None else (int(f) if ok else None) for v, f, ok in zip(values, floats, floats_ok, strict=True)],
        dtype="Int64",
    )
    return pd.Series(out, index=column.index)


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None or value != value or str(value) == "<NA>" else int(value)
    except (TypeError, ValueError):
        return None
