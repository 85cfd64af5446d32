"""ATLAS forced-photometry result files -> the normalized photometry table.

Rules (docs/photometry.md sections 1 and 4):

- The header is read by name: the first line whose first token, without its
  leading ``#`` (``###MJD``, ``##MJD``), is ``MJD``. Columns may come in any
  order and number; MJD, uJy, duJy and F are required.
- One row per exposure with the signed flux ``uJy`` and error ``duJy`` (uJy, AB
  zero point 23.9). The sign of ``m`` is never read as a magnitude: magnitudes
  are recomputed from the flux, for detections with positive flux only.
- Detected when uJy/duJy >= ``snr_threshold`` (default 3); otherwise the limit is
  ``23.9 - 2.5 log10(limit_nsigma * duJy)`` with ``limit_nsigma`` 3.
- ``mjd`` is the middle of the 30 s exposure: MJD (its start, UTC) + 15 s.
- Band ``atlasc``/``atlaso``/``atlasw`` from F; telescope ``ATLAS-<unit>`` from the
  first three characters of Obs; ``image_depth`` = mag5sig; ``flux_kind``
  ``difference``, or ``total`` for a query of the reduced images.
- quality_flag bits (photometry.py): 1 when ``err`` != 0 (tphot error code);
  2 when ``chi/N`` > ``chi2_max`` (10); 4 when ``duJy`` > ``dujy_max`` (160 uJy),
  the ATClean cuts.
- The common rule (``photometry.drop_bad_values``, survey ``ATLAS``): rows whose
  uJy or duJy is not a finite number, whose duJy <= 0, whose MJD is not a number,
  before MJD 57000 or in the future are left out and counted, as are repeated
  exposures (the same Obs: the first is kept). An ``err`` code that is not a
  whole 64-bit number fails the product (QueryFailed).
- Extra columns: ``atlas_m``, ``atlas_dm`` (raw, for audit), ``atlas_err``,
  ``atlas_chi2n``, ``atlas_x``, ``atlas_y``, ``atlas_maj``, ``atlas_min``,
  ``atlas_phi``, ``atlas_apfit``, ``atlas_sky``, ``atlas_night`` (the night's MJD
  from Obs), and ``atlas_<name>`` for any other column of the file.

``--stack nightly`` (params ``stack="nightly"``): per night (the MJD in Obs, i.e.
the observatory's night, not the UTC date), filter and unit, the unflagged
exposures with duJy > 0 are combined: flux = sum(f/s^2)/sum(1/s^2), error =
sum(1/s^2)^-1/2, mjd = the same inverse-variance weighted mean of their
mid-exposure times, n_combined = their number; snr, detection, magnitude and
limit are recomputed from the combined flux, and image_depth is the depth of the
combination (the 5-sigma flux limits of the images added in inverse variance).
A bin with no unflagged exposure is still given, combined from all its
exposures, with quality_flag the OR of theirs (so ``quality_flag == 0`` selects
the clean bins). The stacked rows replace the exposures; the raw file keeps all.
"""

from __future__ import annotations

import io
import mmap
import os
from typing import TYPE_CHECKING, Any, ClassVar

from stdq import photometry
from stdq.errors import QueryFailed
from stdq.processors.base import DataProcessor

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from stdq.store import DataProduct

EXPOSURE_SECONDS = 30.0
HALF_EXPOSURE_DAYS = EXPOSURE_SECONDS / 2 / 86400.0
BANDS = {"c": "atlasc", "o": "atlaso", "w": "atlasw"}
REQUIRED = ("MJD", "uJy", "duJy", "F")
TEXT_COLUMNS = ("F", "Obs")
# columns that become fixed columns of the table (not extras)
USED = {"MJD", "uJy", "duJy", "F", "RA", "Dec", "mag5sig", "Obs"}
EXTRA_NAMES = {"chi/N": "atlas_chi2n", "PA_DEG": "atlas_pa_deg"}
HEADER_SCAN_BYTES = 65536


def extra_name(column: str) -> str:
    """``atlas_<name>`` for a survey column kept after the fixed ones."""
    if column in EXTRA_NAMES:
        return EXTRA_NAMES[column]
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in column.lower()).strip("_")
    return f"atlas_{cleaned or 'col'}"


def find_header(head: bytes) -> tuple[int, list[str]]:
    """(line index, column names) of the ``###MJD ...`` header in the first bytes of a file."""
    for index, line in enumerate(head.split(b"\n")):
        tokens = line.decode("utf-8", "replace").split()
        if not tokens:
            continue
        tokens[0] = tokens[0].lstrip("#")
        if not tokens[0] and len(tokens) > 1:  # "# MJD ..."
            tokens = tokens[1:]
        if tokens and tokens[0] == "MJD":
            return index, tokens
        if index > 200:
            break
    lowered = head[:2000].lower()
    if b"<html" in lowered or b"<!doctype" in lowered:
        raise QueryFailed("atlas: the file is an HTML page, not an ATLAS result")
    if not head.strip():
        raise QueryFailed("atlas: the result file is empty")
    raise QueryFailed("atlas: no ATLAS header line (###MJD ...) in the result file")


def read_result(source: Any) -> tuple[pd.DataFrame, int]:
    """Parse an ATLAS result (a path or bytes): (frame with the file's column names,
    number of malformed lines left out). Numeric columns are numbers (float64 with
    NaN where a value is not a number)."""
    if isinstance(source, (bytes, bytearray)):
        return _read(source, lambda: io.BytesIO(source))
    with open(source, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return _read(b"", lambda: io.BytesIO(b""))
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _read(data, lambda: source)


def _read(data: Any, stream: Any) -> tuple[pd.DataFrame, int]:
    """read_result on DATA (bytes or an mmap); STREAM() opens it for pandas."""
    import pandas as pd

    head = bytes(data[:HEADER_SCAN_BYTES])
    index, names = find_header(head)
    if len(set(names)) != len(names):
        raise QueryFailed("atlas: the result header names a column twice")
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise QueryFailed(f"atlas: the result file has no column {', '.join(missing)}")
    # The real files separate fields by runs of spaces: the C parser's single-space mode
    # (skipinitialspace) reads them right and fast. Tabs or CRs take the general
    # whitespace mode, as does a line with a trailing space (a ParserError here).
    modes: list[dict[str, Any]] = [{"sep": r"\s+"}]
    if data.find(b"\t") < 0 and data.find(b"\r") < 0:
        modes.insert(0, {"sep": " ", "skipinitialspace": True})
    # The number of fields comes from the first row: a row with more is a ParserError,
    # one with fewer ends early (its last column is empty); both count as malformed.
    frame, malformed = None, 0
    for mode in modes:
        try:
            frame = pd.read_csv(
                stream(), header=None, skiprows=index + 1, engine="c", index_col=False, **mode
            )
        except pd.errors.EmptyDataError:
            frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in names})
        except pd.errors.ParserError:
            continue
        break
    if frame is None or frame.shape[1] != len(names):
        frame, malformed = _read_tolerant(bytes(data), index, names)
    frame.columns = names
    short = frame[names[-1]].isna().to_numpy()
    if short.any():
        malformed += int(short.sum())
        frame = frame.loc[~short].reset_index(drop=True)
    for column in names:
        if column in TEXT_COLUMNS:
            continue
        kind = frame[column].dtype.kind
        if kind not in "fiub":  # text in a numeric column: NaN where it is not a number
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame, malformed


def _read_tolerant(data: bytes, index: int, names: list[str]) -> tuple[pd.DataFrame, int]:
    """Line by line: rows with the wrong number of fields are left out and counted."""
    import pandas as pd

    rows, malformed = [], 0
    for line in data.decode("utf-8", "replace").splitlines()[index + 1:]:
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) != len(names):
            malformed += 1
            continue
        rows.append(tokens)
    return pd.DataFrame(rows, columns=names, dtype=object), malformed


def obs_parts(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Telescope names ('ATLAS-02a') and nights (int MJD, -1 when unreadable) from Obs."""
    import numpy as np
    import pandas as pd

    n = len(obs)
    if n == 0:
        return np.empty(0, dtype=object), np.empty(0, dtype="int64")
    chars = np.asarray(obs).astype("U8").view(np.uint32).reshape(n, 8)
    key = (
        (chars[:, 0].astype("int64") << 42) | (chars[:, 1].astype("int64") << 21) | chars[:, 2]
    )
    codes, unique = pd.factorize(key)
    names = []
    for k in unique.tolist():
        unit = "".join(chr(c) for c in (k >> 42, (k >> 21) & 0x1FFFFF, k & 0x1FFFFF) if c)
        names.append(f"ATLAS-{unit}" if len(unit) == 3 and unit[:2].isdigit() else "ATLAS")
    telescope = np.array(names, dtype=object)[codes]
    digits = chars[:, 3:8].astype("int64") - 48
    valid = ((digits >= 0) & (digits <= 9)).all(axis=1)
    night = digits @ np.array([10000, 1000, 100, 10, 1], dtype="int64")
    night[~valid] = -1
    return telescope, night


def constant(n: int, value: Any) -> np.ndarray:
    """An object array of N times VALUE (much faster than np.full for objects)."""
    import numpy as np

    out = np.empty(n, dtype=object)
    out.fill(value)
    return out


def band_of(filters: pd.Series) -> np.ndarray:
    """sncosmo band names of the ATLAS filter letters (None for an unknown letter)."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(filters.to_numpy(dtype=object), use_na_sentinel=True)
    names = np.array([BANDS.get(str(u)) for u in uniques] + [None], dtype=object)
    return names[codes]  # code -1 (missing) takes the trailing None


def dense_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique values, index of each value in them) for integers of a small range."""
    import numpy as np

    low, high = int(values.min()), int(values.max())
    if high - low > 50_000_000:
        return np.unique(values, return_inverse=True)
    offset = values - low
    present = np.zeros(high - low + 1, dtype=bool)
    present[offset] = True
    rank = np.cumsum(present) - 1
    return np.flatnonzero(present) + low, rank[offset]


def _clock_table() -> np.ndarray:
    """'HH:MM:SS.' for every second of a day, as UCS-4 code points (86400 x 9)."""
    import numpy as np

    seconds = np.arange(86_400)
    table = np.empty((86_400, 9), dtype=np.uint32)
    digits: tuple[Any, ...] = (
        seconds // 36000, seconds // 3600 % 10, -1, seconds // 600 % 6, seconds // 60 % 10, -1,
        seconds % 60 // 10, seconds % 10, -2,
    )
    for column, value in enumerate(digits):
        if isinstance(value, int):
            table[:, column] = ord(":") if value == -1 else ord(".")
        else:
            table[:, column] = value + ord("0")
    return table


def isot_fast(mjd: np.ndarray) -> np.ndarray:
    """UTC MJD -> 'YYYY-MM-DDTHH:MM:SS.sssZ' (object array), as photometry.mjd_to_isot.

    Faster for many rows: each date is formatted once, the time of day is looked
    up by second and millisecond. Years outside 1000..9999 go through mjd_to_isot.
    """
    import numpy as np

    values = np.asarray(mjd, dtype="float64")
    good = np.isfinite(values)
    if not good.any() or values[good].min() < -311_000 or values[good].max() > 2_973_000:
        return photometry.mjd_to_isot(values)
    ms = np.round((values[good] - 40587.0) * 86_400_000.0).astype("int64")
    days, msd = np.divmod(ms, 86_400_000)
    unique_days, which = dense_codes(days)
    dates = np.datetime_as_string(unique_days.astype("datetime64[D]"), unit="D").astype("U10")
    prefix = np.empty((len(dates), 11), dtype=np.uint32)
    prefix[:, :10] = dates.view(np.uint32).reshape(-1, 10)
    prefix[:, 10] = ord("T")
    millis = np.arange(1000)
    tail = np.stack(
        [millis // 100 + 48, millis // 10 % 10 + 48, millis % 10 + 48, np.full(1000, ord("Z"))],
        axis=1,
    ).astype(np.uint32)
    second, milli = np.divmod(msd, 1000)
    grid = np.empty((len(ms), 24), dtype=np.uint32)
    grid[:, :11] = prefix[which]
    grid[:, 11:20] = _clock_table()[second]
    grid[:, 20:] = tail[milli]
    text = grid.view("U24").reshape(-1)
    if good.all():
        return text.astype(object)
    out = constant(len(values), "")
    out[good] = text.astype(object)
    return out


class AtlasProcessor(DataProcessor):
    """ATLAS forced photometry: one row per exposure, or per night with ``--stack nightly``."""

    data_product_type = "atlas_photometry"
    version = "2"  # 2: the common value rule (drop_bad_values); error <= 0 left out, not flagged
    settings_defaults: ClassVar[dict[str, Any]] = {
        "snr_threshold": 3.0,
        "limit_nsigma": 3.0,
        "chi2_max": 10.0,
        "dujy_max": 160.0,
    }
    settings_help: ClassVar[dict[str, str]] = {
        "snr_threshold": "uJy/duJy >= this is a detection",
        "limit_nsigma": "non-detections get the limit 23.9 - 2.5 log10(n * duJy) with this n",
        "chi2_max": "quality_flag 2 (poor fit) when chi/N is above this (ATClean default 10)",
        "dujy_max": "quality_flag 4 (large error) when duJy is above this, uJy (ATClean: 160)",
    }

    def value(self, key: str) -> float:
        return float(self.setting(key))

    def cuts(self) -> dict[str, Any]:
        return {key: self.value(key) for key in self.settings_defaults}

    def process(self, product: DataProduct) -> pd.DataFrame:
        raws = [r for r in product.raw_files if r.name.endswith(".txt")] or list(product.raw_files)
        if not raws:
            raise QueryFailed(f"atlas: product {product.id} has no raw result file")
        import numpy as np

        frame, malformed = read_result(raws[0].path)
        product.leave_out("malformed lines (wrong number of fields)", malformed)
        # a hostile value overflows to inf (then left out as non-finite): no numpy warnings
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            table = self.normalize_rows(frame, product)
            if str(product.params.get("stack") or "none") == "nightly":
                table = self.stack_nightly(table, product)
        return table

    # -- one row per exposure ------------------------------------------------------
    def normalize_rows(self, frame: pd.DataFrame, product: DataProduct) -> pd.DataFrame:
        """The exposures of FRAME (as read_result gives it) in the normalized schema."""
        import numpy as np
        import pandas as pd

        frame = photometry.drop_bad_values(frame, "ATLAS", product, flux="uJy", err="duJy", mjd="MJD")
        if "err" in frame.columns and frame["err"].dtype.kind == "f":
            codes = frame["err"].to_numpy(dtype="float64")
            whole = np.isnan(codes) | (np.isfinite(codes) & (np.abs(codes) < 2.0**63))
            whole &= np.isnan(codes) | (codes == np.round(codes))
            if not whole.all():
                photometry.check_int64(codes[~whole][:1].tolist(), "atlas: the err code")
        if "Obs" in frame.columns:
            # a repeated exposure repeats its Obs and its MJD: look at rows sharing an MJD only
            times = frame["MJD"].to_numpy(dtype="float64")
            steps = np.diff(times)
            if len(times) < 2 or (steps > 0).all():  # sorted, as the server writes it
                repeated = np.zeros(len(times), dtype=bool)
            else:
                repeated = pd.Series(times).duplicated(keep=False).to_numpy().copy()
            if repeated.any():
                candidates = frame.loc[repeated, ["MJD", "Obs"]]
                twice = candidates.duplicated(keep="first").to_numpy()
                repeated[repeated] = twice
            if repeated.any():
                product.leave_out("repeated exposure (same Obs and MJD)", int(repeated.sum()))
                frame = frame.loc[~repeated]
        n = len(frame)

        def column(name: str) -> np.ndarray:
            if name in frame.columns:
                return frame[name].to_numpy(dtype="float64")
            return np.full(n, np.nan)

        start = frame["MJD"].to_numpy(dtype="float64")
        mjd = start + HALF_EXPOSURE_DAYS
        flux = frame["uJy"].to_numpy(dtype="float64")
        err = frame["duJy"].to_numpy(dtype="float64")
        if "Obs" in frame.columns:
            obs = frame["Obs"].to_numpy(dtype=object)
            telescope, night = obs_parts(obs)
            unknown = night < 0
            if unknown.any():
                night[unknown] = np.floor(start[unknown]).astype("int64")
        else:
            obs = constant(n, None)
            telescope = constant(n, "ATLAS")
            night = np.floor(start).astype("int64")

        flags = np.zeros(n, dtype="int64")
        code = column("err")
        flags |= np.where(np.isfinite(code) & (code != 0), photometry.FLAG_SURVEY_CODE, 0)
        with np.errstate(invalid="ignore"):
            flags |= np.where(column("chi/N") > self.value("chi2_max"), photometry.FLAG_POOR_FIT, 0)
            flags |= np.where(err > self.value("dujy_max"), photometry.FLAG_LARGE_ERROR, 0)

        ra, dec = column("RA"), column("Dec")
        target = product.target or {}
        sep = np.full(n, np.nan)
        if n and target.get("ra") is not None and target.get("dec") is not None:
            where = (float(target["ra"]), float(target["dec"]))
            if ra.min() == ra.max() and dec.min() == dec.max():  # one forced position
                sep[:] = photometry.separation_arcsec(ra[:1], dec[:1], *where)[0]
            else:
                sep = photometry.separation_arcsec(ra, dec, *where)
        filters = frame["F"].astype(object).to_numpy()
        kind = "total" if product.params.get("reduced") else "difference"
        index = pd.RangeIndex(n)
        data: dict[str, Any] = {
            "mjd": mjd,
            "time_utc": isot_fast(mjd),
            "survey": constant(n, "ATLAS"),
            "telescope": telescope,
            "instrument": constant(n, "ATLAS"),
            "filter": filters,
            "band": band_of(frame["F"]),
            "flux_ujy": flux,
            "flux_err_ujy": err,
            "image_depth": column("mag5sig"),
            "flux_kind": constant(n, kind),
            "quality_flag": flags,
            "ra": ra,
            "dec": dec,
            "sep_arcsec": sep,
            "object_id": constant(n, None),
            "source_row_id": obs,
        }
        # object columns as object Series: no per-column string inference (fast)
        table = pd.DataFrame(
            {
                key: pd.Series(value, index=index, dtype=object, copy=False)
                if value.dtype == object
                else value
                for key, value in data.items()
            },
            index=index,
            copy=False,
        )
        photometry.fill_detections(table, self.value("snr_threshold"), self.value("limit_nsigma"))
        extras: dict[str, Any] = {}
        for name in frame.columns:
            if name in USED:
                continue
            values = frame[name].to_numpy()
            extras[extra_name(name)] = values
        extras["atlas_night"] = night
        return pd.concat([table, pd.DataFrame(extras, index=index, copy=False)], axis=1)

    # -- nightly stacks ------------------------------------------------------------
    def stack_nightly(self, table: pd.DataFrame, product: DataProduct) -> pd.DataFrame:
        """Per night, filter and unit: the inverse-variance weighted flux (module docstring)."""
        import numpy as np
        import pandas as pd

        exposures = len(table)
        weighable = (table["flux_err_ujy"] > 0).to_numpy()
        product.leave_out(
            "exposures with duJy <= 0, not combined in nightly stacks", int((~weighable).sum())
        )
        rows = table.loc[weighable].copy()
        keys = ["atlas_night", "filter", "telescope"]
        if rows.empty:
            product.notes["stack"] = {"mode": "nightly", "exposures": exposures, "bins": 0}
            return table.iloc[0:0][[c for c in photometry.COLUMNS if c in table.columns]]
        rows["_good"] = rows["quality_flag"] == 0
        any_good = rows.groupby(keys, sort=False, dropna=False)["_good"].transform("any")
        use = rows["_good"] | ~any_good
        not_combined = rows.loc[~use]
        rows = rows.loc[use].copy()
        w = 1.0 / rows["flux_err_ujy"].to_numpy() ** 2
        depth = rows["image_depth"].to_numpy(dtype="float64")
        with np.errstate(over="ignore", invalid="ignore"):
            sigma_img = 10 ** (-0.4 * (depth - photometry.ZP_AB_UJY)) / 5.0
            w_img = np.where(np.isfinite(sigma_img) & (sigma_img > 0), 1.0 / sigma_img**2, 0.0)
        rows["_w"] = w
        rows["_wf"] = w * rows["flux_ujy"].to_numpy()
        rows["_wt"] = w * rows["mjd"].to_numpy()
        rows["_wimg"] = w_img
        rows["_n"] = 1
        grouped = rows.groupby(keys, sort=True, dropna=False)
        sums = grouped[["_w", "_wf", "_wt", "_wimg", "_n"]].sum()
        first = grouped[["survey", "instrument", "band", "flux_kind"]].first()
        means = grouped[["ra", "dec"]].mean()
        flags = grouped["quality_flag"].agg(lambda s: int(np.bitwise_or.reduce(s.to_numpy())))
        obs_lists = grouped["source_row_id"].agg(lambda s: ";".join(str(v) for v in s))
        flagged_counts = (
            not_combined.groupby(keys, sort=False, dropna=False).size()
            if len(not_combined)
            else pd.Series(dtype="int64")
        )
        out = sums.join(first).join(means)
        out["quality_flag"] = flags
        out["atlas_obs"] = obs_lists
        out["atlas_n_flagged"] = flagged_counts.reindex(out.index).fillna(0).astype("int64")
        out = out.reset_index()
        with np.errstate(divide="ignore"):
            combined_sigma_img = np.where(out["_wimg"] > 0, out["_wimg"] ** -0.5, np.nan)
            image_depth = photometry.ZP_AB_UJY - 2.5 * np.log10(5.0 * combined_sigma_img)
        unit = out["telescope"].astype(str).str.replace("ATLAS-", "", regex=False)
        unit = unit.where(unit != "ATLAS", "")
        stacked = pd.DataFrame(
            {
                "mjd": out["_wt"] / out["_w"],
                "survey": out["survey"],
                "telescope": out["telescope"],
                "instrument": out["instrument"],
                "filter": out["filter"],
                "band": out["band"],
                "flux_ujy": out["_wf"] / out["_w"],
                "flux_err_ujy": out["_w"] ** -0.5,
                "image_depth": image_depth,
                "flux_kind": out["flux_kind"],
                "quality_flag": out["quality_flag"].astype("int64"),
                "ra": out["ra"],
                "dec": out["dec"],
                "object_id": None,
                "source_row_id": unit + out["atlas_night"].astype(str) + out["filter"].astype(str),
                "n_combined": out["_n"].astype("int64"),
                "atlas_night": out["atlas_night"].astype("int64"),
                "atlas_n_flagged": out["atlas_n_flagged"],
                "atlas_obs": out["atlas_obs"],
            }
        )
        target = product.target or {}
        if target.get("ra") is not None and target.get("dec") is not None:
            stacked["sep_arcsec"] = photometry.separation_arcsec(
                stacked["ra"], stacked["dec"], float(target["ra"]), float(target["dec"])
            )
        photometry.fill_detections(stacked, self.value("snr_threshold"), self.value("limit_nsigma"))
        product.notes["stack"] = {
            "mode": "nightly",
            "exposures": exposures,
            "bins": int(len(stacked)),
            "bins_of_flagged_exposures_only": int((stacked["quality_flag"] != 0).sum()),
            "flagged_exposures_not_combined": int(len(not_combined)),
            "weights": "inverse variance (1/duJy^2) for flux and mid-exposure time",
        }
        return stacked

