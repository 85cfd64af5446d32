"""Rubin (LSST) photometry -> normalized rows, for the ``rubin`` and ``rubin-rsp`` services
(docs/photometry.md section 8).

The raw files, by name:

- ``fink-fp-<id>.json`` / ``fink-sources-<id>.json``: the Fink LSST API's ``/api/v1/fp``
  (forced photometry, the alert packet's DiaForcedSource) and ``/api/v1/sources``
  (detections, DiaSource); JSON records whose keys carry Fink's family prefix
  (``r:psfFlux``), which is dropped here;
- ``alerce-forced-photometry-<id>.json`` / ``alerce-detections-<id>.json``: ALeRCE's
  ``lightcurve_api`` records (``oid``, ``measurement_id``, ``band`` + ``band_map``);
- ``rsp-result.csv`` / ``rsp-result.xml``: the Science Platform's TAP result,
  ``ForcedSourceOnDiaObject`` joined with ``Visit`` (CSV or VOTable);
- ``rsp-detections.csv`` / ``rsp-detections.xml``: its ``DiaSource`` result.

Two flux namings: the alert (APDB) schema that the brokers serve, and the data release's
DiaSource table, call the flux on the difference image ``psfFlux`` and the one on the
direct image ``scienceFlux``; the data release's forced photometry
(ForcedSourceOnDiaObject, DP1) calls them ``psfDiffFlux`` and ``psfFlux``. A table
holding ``psfDiffFlux`` is read with the release naming, any other with the alert naming.
Each becomes its own rows, ``flux_kind`` difference or total: never one column.
Fluxes are nJy (x 1e-3 -> uJy); times (``midpointMjdTai``, ALeRCE ``mjd``,
``expMidptMJD``) are TAI MJD at mid-exposure, converted to UTC.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar

from stdq import photometry
from stdq.errors import QueryFailed
from stdq.processors.base import DataProcessor

if TYPE_CHECKING:
    import pandas as pd

    from stdq.store import DataProduct

NJY_TO_UJY = 1e-3
SURVEY = "LSST"
TELESCOPE = "Rubin"

# quality_flag bit 1: the measurement's own failure flags (per flux kind, then common ones)
FIT_FLAGS = {
    # (naming, flux kind) -> flag columns
    ("alert", "difference"): ("psfFlux_flag", "psfFlux_flag_edge", "psfFlux_flag_noGoodPixels"),
    ("alert", "total"): ("scienceFlux_flag",),
    ("release", "difference"): ("psfDiffFlux_flag", "diff_PixelFlags_nodataCenter"),
    ("release", "total"): ("psfFlux_flag",),
}
COMMON_FIT_FLAGS = ("invalidPsfFlag", "pixelFlags_nodata")
# quality_flag bit 8: bad, saturated, cosmic-ray, edge, interpolated or suspect pixels
PIXEL_FLAGS = tuple(
    f"pixelFlags_{name}"
    for name in ("bad", "cr", "crCenter", "edge", "interpolated", "interpolatedCenter",
                 "saturated", "saturatedCenter", "suspect", "suspectCenter")
)
ALERCE_BAND_GUESS = {"0": "u", "1": "g", "2": "r", "3": "i", "4": "z", "5": "y"}  # guess: no band_map

LEFT_OTHER_OBJECT = "another object in the cone (not the nearest)"
LEFT_BAD_BAND = "unknown band"
LEFT_REPEATED = "repeated measurement"
LEFT_TIME_RANGE = "outside the asked time range"


def _strip_prefix(name: str) -> str:
    """Fink's column families (``r:``, ``f:``, ``v:``) dropped: ``r:psfFlux`` -> ``psfFlux``."""
    return name.split(":", 1)[1] if ":" in name else name


def read_records(data: bytes, what: str) -> list[dict[str, Any]]:
    """A JSON answer of records (a list, or an object with ``items``/``data``) -> list of dicts."""
    try:
        payload = json.loads(data)
    except RecursionError:
        raise QueryFailed(f"rubin: {what} is nested too deeply to read") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise QueryFailed(f"rubin: {what} is not JSON ({exc})") from None
    if isinstance(payload, dict):
        for key in ("items", "data", "detections", "forced_photometry"):
            if isinstance(payload.get(key), list):
                payload = payload[key]
                break
    if not isinstance(payload, list) or not all(isinstance(r, dict) for r in payload):
        raise QueryFailed(f"rubin: {what} is not a list of records")
    return [{_strip_prefix(str(k)): v for k, v in r.items()} for r in payload]


def read_tap_table(path: Any, name: str) -> pd.DataFrame:
    """A TAP result (CSV, or a VOTable for a ``.xml`` name) as a DataFrame."""
    import pandas as pd

    if name.endswith(".xml"):
        from astropy.io.votable import parse_single_table

        photometry.quiet_astropy()
        try:
            table = parse_single_table(str(path)).to_table()
        except Exception as exc:  # a malformed VOTable of any kind
            raise QueryFailed(f"rubin-rsp: the TAP result is not a readable VOTable ({exc})") from None
        frame = table.to_pandas()
    else:
        try:
            frame = pd.read_csv(path, dtype={"diaObjectId": "string", "diaSourceId": "string",
                                             "visit": "string", "detector": "string"},
                                keep_default_na=True)
        except pd.errors.EmptyDataError:
            frame = pd.DataFrame()
        except (ValueError, pd.errors.ParserError) as exc:
            raise QueryFailed(f"rubin-rsp: the TAP result is not a readable CSV table ({exc})") from None
    frame.columns = [_strip_prefix(str(c)) for c in frame.columns]
    return frame


def _truthy(values: Any) -> Any:
    """Flags as booleans: true/1/"true"/"t" are set; false, 0, null, "" are not."""
    import numpy as np

    out = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if isinstance(v, bool | np.bool_):
            out[i] = bool(v)
        elif isinstance(v, int | float | np.integer | np.floating):
            out[i] = v == v and v != 0
        elif isinstance(v, str):
            out[i] = v.strip().lower() in ("true", "t", "1", "yes")
    return out


def _floats(frame: pd.DataFrame, name: str) -> Any:
    import numpy as np
    import pandas as pd

    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _ids(frame: pd.DataFrame, name: str, what: str) -> Any:
    """An id column as text (64-bit ids never through a float); empty when missing."""
    import numpy as np

    if name not in frame.columns:
        return np.full(len(frame), "", dtype=object)
    values = list(frame[name].to_numpy(dtype=object))
    photometry.check_int64([v for v in values if not isinstance(v, float)], what)
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and v != v):
            out.append("")
        elif isinstance(v, float):
            out.append(str(int(v)) if v.is_integer() else str(v))
        else:
            out.append(str(v).strip())
    return np.array(out, dtype=object)


def measurements(frame: pd.DataFrame, *, kind: str, broker: str) -> list[pd.DataFrame]:
    """The rows of one raw table, one DataFrame per flux kind, in an intermediate schema
    (object_id, source_row_id, tai, filter, flux_njy, err_njy, flux_kind, quality_flag, ra, dec)."""
    import numpy as np
    import pandas as pd

    n = len(frame)
    if not n:
        return []
    naming = "release" if "psfDiffFlux" in frame.columns else "alert"
    fluxes = {
        "difference": ("psfDiffFlux", "psfDiffFluxErr") if naming == "release" else ("psfFlux", "psfFluxErr"),
        "total": ("psfFlux", "psfFluxErr") if naming == "release" else ("scienceFlux", "scienceFluxErr"),
    }
    object_id = _ids(frame, "diaObjectId" if "diaObjectId" in frame.columns else "oid", "diaObjectId")
    tai = _floats(frame, next((c for c in ("midpointMjdTai", "expMidptMJD", "mjd") if c in frame.columns),
                              "midpointMjdTai"))
    # band: a letter, or ALeRCE's number with its band_map
    if "band" in frame.columns:
        raw_band = list(frame["band"].to_numpy(dtype=object))
    else:
        raw_band = [None] * n
    maps = list(frame["band_map"].to_numpy(dtype=object)) if "band_map" in frame.columns else [None] * n
    letters = []
    for value, mapping in zip(raw_band, maps, strict=True):
        text = "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()
        if isinstance(value, float) and value.is_integer():
            text = str(int(value))
        if text.isdigit():
            table: dict[Any, Any] = mapping if isinstance(mapping, dict) else ALERCE_BAND_GUESS
            text = str(table.get(text, table.get(int(text), "")))
        letters.append(text)
    band_letter = np.array(letters, dtype=object)
    if kind == "detection":
        source = _ids(frame, next((c for c in ("diaSourceId", "measurement_id") if c in frame.columns),
                                  "diaSourceId"), "diaSourceId")
    elif "visit" in frame.columns and "detector" in frame.columns:
        visit, detector = _ids(frame, "visit", "visit"), _ids(frame, "detector", "detector")
        source = np.array([f"{v}:{d}" if v and d else "" for v, d in zip(visit, detector, strict=True)],
                          dtype=object)
    else:
        source = _ids(frame, next((c for c in ("diaForcedSourceId", "measurement_id") if c in frame.columns),
                                  "diaForcedSourceId"), "diaForcedSourceId")
    ra = _floats(frame, "coord_ra" if "coord_ra" in frame.columns else "ra")
    dec = _floats(frame, "coord_dec" if "coord_dec" in frame.columns else "dec")
    masked = np.zeros(n, dtype=bool)
    for name in PIXEL_FLAGS:
        if name in frame.columns:
            masked |= _truthy(frame[name].to_numpy(dtype=object))
    common = np.zeros(n, dtype=bool)
    for name in COMMON_FIT_FLAGS:
        if name in frame.columns:
            common |= _truthy(frame[name].to_numpy(dtype=object))
    out = []
    for flux_kind, (fcol, ecol) in fluxes.items():
        if fcol not in frame.columns:
            continue
        fit = common.copy()
        for name in FIT_FLAGS[(naming, flux_kind)]:
            if name in frame.columns:
                fit |= _truthy(frame[name].to_numpy(dtype=object))
        quality = np.where(fit, photometry.FLAG_SURVEY_CODE, 0) | np.where(masked, photometry.FLAG_MASKED_PIXELS, 0)
        out.append(pd.DataFrame({
            "object_id": object_id,
            "source_row_id": source,
            "rubin_mjd_tai": tai,
            "filter": band_letter,
            "flux_njy": _floats(frame, fcol),
            "err_njy": _floats(frame, ecol),
            "flux_kind": flux_kind,
            "quality_flag": quality.astype("int64"),
            "ra": ra,
            "dec": dec,
            "rubin_kind": kind,
            "rubin_broker": broker,
        }))
    return out


def raw_kind(name: str) -> tuple[str, str] | None:
    """(kind, broker) of a raw file by its name; None for the cone-search answers."""
    if name.startswith("fink-fp-"):
        return "forced", "fink"
    if name.startswith("fink-sources-"):
        return "detection", "fink"
    if name.startswith("alerce-forced-photometry-"):
        return "forced", "alerce"
    if name.startswith("alerce-detections-"):
        return "detection", "alerce"
    if name.startswith("rsp-result"):
        return "forced", "rsp"
    if name.startswith("rsp-detections"):
        return "detection", "rsp"
    return None


class RubinProcessor(DataProcessor):
    """Rubin forced photometry and detections (brokers or the Science Platform) -> rows."""

    data_product_type = "rubin_photometry"
    version = "1"
    settings_defaults: ClassVar[dict[str, Any]] = {"snr_threshold": 5.0, "limit_nsigma": 5.0}
    settings_help: ClassVar[dict[str, str]] = {
        "snr_threshold": "a forced measurement is a detection at this flux/error (DIA detects at 5)",
        "limit_nsigma": "upper limits of forced non-detections at this many flux errors",
    }

    def process(self, product: DataProduct) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        parts: list[pd.DataFrame] = []
        seen_any = False
        for raw in sorted(product.raw_files, key=lambda r: r.name):
            kind = raw_kind(raw.name)
            if kind is None:
                continue
            seen_any = True
            if kind[1] == "rsp":
                frame = read_tap_table(raw.path, raw.name)
            else:
                # object columns: a 64-bit id beside a null must never become a float
                frame = pd.DataFrame(read_records(raw.path.read_bytes(), f"the answer {raw.name}"), dtype=object)
            parts += measurements(frame, kind=kind[0], broker=kind[1])
        if not seen_any:
            raise QueryFailed("rubin: the product has no photometry answer")
        if not parts:
            return photometry.empty_table()
        table = pd.concat(parts, ignore_index=True)
        params = product.params
        wanted = str(params.get("flux_kind") or "difference")
        if wanted != "both":
            table = table[table["flux_kind"] == wanted].reset_index(drop=True)

        def drop(mask: Any, reason: str) -> None:
            nonlocal table
            mask = np.asarray(mask, dtype=bool)
            if mask.any():
                product.leave_out(reason, int(mask.sum()))
                table = table.loc[~mask].reset_index(drop=True)

        drop(~table["filter"].isin(list(photometry.LSST_BANDS)), LEFT_BAD_BAND)
        target = product.target
        with np.errstate(invalid="ignore"):
            table["sep_arcsec"] = photometry.separation_arcsec(
                float(target["ra"]), float(target["dec"]), table["ra"].to_numpy(), table["dec"].to_numpy()
            )
        if not params.get("all_objects") and table["object_id"].nunique() > 1:
            seps = table.groupby("object_id")["sep_arcsec"].median()
            nearest = seps.fillna(np.inf).idxmin()
            drop(table["object_id"] != nearest, LEFT_OTHER_OBJECT)
        key = table["rubin_kind"] + "|" + table["flux_kind"] + "|" + table["object_id"] + "|" + table["source_row_id"]
        drop((table["source_row_id"] != "") & key.duplicated(), LEFT_REPEATED)
        table["mjd"] = photometry.tai_to_utc_mjd(table["rubin_mjd_tai"].to_numpy(dtype="float64"))
        with np.errstate(over="ignore", invalid="ignore"):
            table["flux_ujy"] = table.pop("flux_njy").to_numpy(dtype="float64") * NJY_TO_UJY
            table["flux_err_ujy"] = table.pop("err_njy").to_numpy(dtype="float64") * NJY_TO_UJY
        table = photometry.drop_bad_values(table, SURVEY, product)
        lo, hi = params.get("mjd_min"), params.get("mjd_max")
        if lo is not None or hi is not None:
            mjd = table["mjd"].to_numpy()
            outside = np.zeros(len(table), dtype=bool)
            if lo is not None:
                outside |= mjd < float(lo)
            if hi is not None:
                outside |= mjd > float(hi)
            drop(outside, LEFT_TIME_RANGE)
        table["survey"] = SURVEY
        table["telescope"] = TELESCOPE
        release = str(params.get("release") or "")
        table["instrument"] = "LSSTComCam" if release == "dp1" else "LSSTCam"
        table["band"] = table["filter"].map(photometry.LSST_BANDS)
        photometry.fill_detections(table, float(self.setting("snr_threshold")),
                                   float(self.setting("limit_nsigma")))
        is_det = (table["rubin_kind"] == "detection").to_numpy()
        if is_det.any():  # a DIA source is a detection (>= 5 sigma on the difference image)
            flux = table["flux_ujy"].to_numpy()
            err = table["flux_err_ujy"].to_numpy()
            table.loc[is_det, "detected"] = True
            table.loc[is_det, "magnitude"] = photometry.magnitude_from_flux(flux[is_det])
            table.loc[is_det, "magnitude_error"] = np.where(
                flux[is_det] > 0, photometry.magnitude_error(flux[is_det], err[is_det]), np.nan)
            table.loc[is_det, "limit"] = np.nan
            table.loc[is_det, "limit_nsigma"] = np.nan
        return photometry.normalize(table, product.id)
