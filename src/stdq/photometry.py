"""The normalized photometry table (docs/photometry.md) and the helpers every processor shares.

Units: flux in microjansky with AB zero point 23.9 (1 uJy <-> AB 23.9), so
``m = 23.9 - 2.5 log10(flux_ujy)``; an n-sigma upper limit is
``23.9 - 2.5 log10(n * flux_err_ujy)``. Magnitudes exist only for detections with
positive flux; the log of |flux| is never taken. Times are UTC MJD at the middle
of the exposure.

quality_flag bits (0 = good). A processor sets a bit when its survey's rule says
so; the thresholds are settings keys of the service (``stdq services show NAME``):

====  =====================  ===========================================================
bit   name                   set when
====  =====================  ===========================================================
1     FLAG_SURVEY_CODE       the survey's own error code says bad: ATLAS ``err != 0``;
                             PS1 ``infoFlag`` has a bit of PS1_BAD_INFOFLAG (FAIL, POOR,
                             SATSTAR, BADPSF, DEFECT, SATURATED, CR_LIMIT,
                             MOMENTS_FAILURE, SKY_FAILURE, SKYVAR_FAILURE = 0x3BC98);
                             ZTF ``catflags != 0``; ZFPS ``infobitssci != 0`` or a
                             procstatus warning (56, 59, 60, 61, an unknown code);
                             Gaia ``rejected_by_photometry`` or an ``other_flags`` bit
                             of the ``other_flags_mask`` setting
2     FLAG_POOR_FIT          ATLAS ``chi/N`` > ``chi2_max``
4     FLAG_LARGE_ERROR       ATLAS ``duJy`` > ``dujy_max``; ZFPS ``scisigpix`` > 25 DN
8     FLAG_MASKED_PIXELS     PS1 ``psfQfPerfect`` < ``min_psf_qf_perfect``
16    FLAG_BLEND             PS1 ``infoFlag`` BLEND (0x100) or EXT_LIMIT (0x4000)
32    FLAG_BAD_SEEING        ZFPS ``sciinpseeing`` > 5 pixels
64    FLAG_ZERO_ERROR        reserved (was: error <= 0; such rows are now left out)
128   FLAG_OUTLIER           rejected as an outlier by the survey's time-series processing:
                             Gaia ``rejected_by_variability``
128   FLAG_OUTLIER           rejected as an outlier by the survey's time-series processing:
                             Gaia ``rejected_by_variability``
====  =====================  ===========================================================

Values every processor checks (:func:`drop_bad_values`, docs/photometry.md "Rows
left out"): a row with a non-finite flux or error, an error <= 0, an epoch that
is not a number, before its survey began (:data:`SURVEY_YEARS`), after it ended,
or more than a day in the future is left out and counted by reason.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from stdq.store import DataProduct

ZP_AB_UJY = 23.9
PSF_MAG_ERR = 2.5 / math.log(10)  # 1.0857...

FLAG_SURVEY_CODE = 1
FLAG_POOR_FIT = 2
FLAG_LARGE_ERROR = 4
FLAG_MASKED_PIXELS = 8
FLAG_BLEND = 16
FLAG_BAD_SEEING = 32
FLAG_ZERO_ERROR = 64  # reserved: rows with an error <= 0 are left out (drop_bad_values)
FLAG_OUTLIER = 128  # Gaia rejected_by_variability
FLAG_OUTLIER = 128  # Gaia rejected_by_variability
QUALITY_BITS = {
    "survey_code": FLAG_SURVEY_CODE,
    "poor_fit": FLAG_POOR_FIT,
    "large_error": FLAG_LARGE_ERROR,
    "masked_pixels": FLAG_MASKED_PIXELS,
    "blend": FLAG_BLEND,
    "bad_seeing": FLAG_BAD_SEEING,
    "zero_error": FLAG_ZERO_ERROR,
    "outlier": FLAG_OUTLIER,
    "outlier": FLAG_OUTLIER,
}

# PS1 DetectionFlags (https://outerspace.stsci.edu/display/PANSTARRS/PS1+Detection+Flags)
PS1_BAD_INFOFLAG = 0x8 | 0x10 | 0x80 | 0x400 | 0x800 | 0x1000 | 0x2000 | 0x8000 | 0x10000 | 0x20000
PS1_BLEND_INFOFLAG = 0x100 | 0x4000

FLUX_KINDS = ("difference", "total")

# Rubin (LSST) bands -> sncosmo band names (docs/photometry.md section 8)
LSST_BANDS = {"u": "lsstu", "g": "lsstg", "r": "lsstr", "i": "lssti", "z": "lsstz", "y": "lssty"}

# (name, pandas dtype) in table order.
COLUMN_TYPES: list[tuple[str, str]] = [
    ("mjd", "float64"),
    ("time_utc", "object"),
    ("survey", "object"),
    ("telescope", "object"),
    ("instrument", "object"),
    ("filter", "object"),
    ("band", "object"),
    ("flux_ujy", "float64"),
    ("flux_err_ujy", "float64"),
    ("snr", "float64"),
    ("detected", "bool"),
    ("magnitude", "float64"),
    ("magnitude_error", "float64"),
    ("limit", "float64"),
    ("limit_nsigma", "float64"),
    ("image_depth", "float64"),
    ("zp", "float64"),
    ("zpsys", "object"),
    ("flux_kind", "object"),
    ("quality_flag", "int64"),
    ("err_scale", "float64"),
    ("ra", "float64"),
    ("dec", "float64"),
    ("sep_arcsec", "float64"),
    ("object_id", "object"),
    ("source_row_id", "object"),
    ("n_combined", "int64"),
    ("product_id", "int64"),
]
COLUMNS = [name for name, _ in COLUMN_TYPES]
UNITS = {
    "mjd": "d",
    "flux_ujy": "uJy",
    "flux_err_ujy": "uJy",
    "magnitude": "mag",
    "magnitude_error": "mag",
    "limit": "mag",
    "image_depth": "mag",
    "zp": "mag",
    "ra": "deg",
    "dec": "deg",
    "sep_arcsec": "arcsec",
}


# -- values every processor checks ---------------------------------------------------

# The survey's operating years: (first MJD, last MJD or None while it observes, as text).
# An epoch outside them is no measurement of that survey. Bounds are generous: a day
# or a year early is harmless, a real epoch left out is not (docs/photometry.md).
SURVEY_YEARS: dict[str, tuple[float, float | None, str]] = {
    "ATLAS": (57000.0, None, "2014-12-09 (first unit 2015; the service's own mjd_min default)"),
    "PS1": (54832.0, 57754.0, "2009-01-01 .. 2017-01-01 (DR2 covers 2009-2015)"),
    "ZTF": (58000.0, None, "2017-09-04 (first light 2017-11-01)"),
    "Gaia": (56800.0, None, "2014-05-23 (science operations from 2014-07-25)"),
    "LSST": (60600.0, None, "2024-10-09 (LSSTComCam commissioning, DP1, from 2024-10-24)"),
}
FUTURE_DAYS = 1.0  # an epoch later than now + this is in the future
LEFT_NON_FINITE = "non-finite flux or error"
LEFT_BAD_ERROR = "flux error <= 0"
LEFT_NO_EPOCH = "epoch not a number"
LEFT_FUTURE = "epoch in the future"
INT64_MAX = 2**63 - 1


def left_before(survey: str) -> str:
    """The left-out reason of an epoch before SURVEY began."""
    return f"epoch before {survey} began"


def left_after(survey: str) -> str:
    """The left-out reason of an epoch after SURVEY ended."""
    return f"epoch after {survey} ended"


def now_mjd(clock: Callable[[], float] = time.time) -> float:
    """The current UTC MJD (by CLOCK, Unix seconds)."""
    return clock() / 86400.0 + 40587.0


def bad_values(
    flux: Any,
    err: Any,
    mjd: Any,
    survey: str | None,
    *,
    now: float | None = None,
    require_error: bool = True,
) -> list[tuple[str, Any]]:
    """[(reason, mask)] of the rows to leave out, each row under its first reason only.

    FLUX and ERR in any unit, MJD in UTC days (numpy arrays of one length). SURVEY
    names a row of SURVEY_YEARS (None or an unknown survey: no operating years,
    the other rules still hold). NOW is the current MJD (default: the clock). With
    REQUIRE_ERROR false a missing (NaN) error is allowed -- a survey that gives none
    -- but a given error must still be finite and > 0.
    """
    import numpy as np

    flux = np.asarray(flux, dtype="float64")
    err = np.asarray(err, dtype="float64")
    mjd = np.asarray(mjd, dtype="float64")
    now = now_mjd() if now is None else float(now)
    taken = np.zeros(flux.shape, dtype=bool)
    out: list[tuple[str, Any]] = []

    def add(reason: str, mask: Any) -> None:
        nonlocal taken
        mask = np.asarray(mask, dtype=bool) & ~taken
        if mask.any():
            out.append((reason, mask))
            taken |= mask

    err_missing = np.isnan(err) if not require_error else np.zeros(err.shape, dtype=bool)
    add(LEFT_NON_FINITE, ~np.isfinite(flux) | (~np.isfinite(err) & ~err_missing))
    with np.errstate(invalid="ignore"):
        add(LEFT_BAD_ERROR, (err <= 0) & ~err_missing)
        add(LEFT_NO_EPOCH, ~np.isfinite(mjd))
        years = SURVEY_YEARS.get(survey or "")
        if years is not None:
            first, last, _ = years
            add(left_before(str(survey)), mjd < first)
            if last is not None:
                add(left_after(str(survey)), mjd > last)
        add(LEFT_FUTURE, mjd > now + FUTURE_DAYS)
    return out


def drop_bad_values(
    df: pd.DataFrame,
    survey: str | None,
    product: DataProduct,
    *,
    now: float | None = None,
    require_error: bool = True,
    flux: str = "flux_ujy",
    err: str = "flux_err_ujy",
    mjd: str = "mjd",
) -> pd.DataFrame:
    """DF without the rows whose values no survey can have, each counted in PRODUCT.

    The one rule every processor applies (``bad_values``): non-finite flux or
    error, error <= 0, an epoch not a number, outside SURVEY's operating years or in
    the future. SURVEY None takes each row's ``survey`` column. FLUX, ERR, MJD name
    the columns (default the normalized ones). DF itself is returned when nothing
    is left out.
    """
    import numpy as np

    n = len(df)
    if not n:
        return df

    cache: dict[str, Any] = {}

    def values(name: str) -> Any:
        if name not in cache:
            if name not in df.columns:
                cache[name] = np.full(n, np.nan)
            elif df[name].dtype == np.float64:
                cache[name] = df[name].to_numpy()
            else:
                cache[name] = np.asarray(df[name].to_numpy(dtype="float64", na_value=np.nan), dtype="float64")
        return cache[name]

    if survey is None and "survey" in df.columns:
        import pandas as pd

        drop = np.zeros(n, dtype=bool)
        codes, names = pd.factorize(df["survey"], use_na_sentinel=False)
        for code, name in enumerate(names.tolist()):
            rows = codes == code
            for reason, mask in bad_values(
                values(flux)[rows], values(err)[rows], values(mjd)[rows],
                name if isinstance(name, str) else None, now=now, require_error=require_error,
            ):
                product.leave_out(reason, int(mask.sum()))
                where = np.flatnonzero(rows)[mask]
                drop[where] = True
    else:
        found = bad_values(values(flux), values(err), values(mjd), survey, now=now,
                           require_error=require_error)
        drop = np.zeros(n, dtype=bool)
        for reason, mask in found:
            product.leave_out(reason, int(mask.sum()))
            drop |= mask
    if not drop.any():
        return df
    return df.loc[~drop].reset_index(drop=True)


def check_int64(values: Any, what: str) -> None:
    """QueryFailed naming WHAT when a value of VALUES (numbers or integer text) is not a
    whole number that fits a signed 64-bit integer (NaN/None: allowed, a missing value)."""
    from stdq.errors import QueryFailed

    for value in values:
        if value is None or (isinstance(value, float) and value != value):
            continue
        if isinstance(value, str):
            text = value.strip()
            if not text:
                continue
            digits = text[1:] if text[:1] in "+-" else text
            ok = digits.isascii() and digits.isdigit() and len(digits) <= 19
            ok = ok and -INT64_MAX - 1 <= int(text) <= INT64_MAX
        elif isinstance(value, float):
            ok = math.isfinite(value) and value.is_integer() and abs(value) < 2.0**63
        else:
            try:
                ok = -INT64_MAX - 1 <= int(value) <= INT64_MAX
            except (TypeError, ValueError, OverflowError):
                ok = False
        if not ok:
            shown = str(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise QueryFailed(f"{what} {shown!r} is not a 64-bit integer")


# -- conversions ------------------------------------------------------------------


def magnitude_from_flux(flux_ujy):
    """AB magnitude of a positive flux in uJy; NaN where the flux is not positive."""
    import numpy as np

    flux = np.asarray(flux_ujy, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, ZP_AB_UJY - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)


def magnitude_error(flux_ujy, flux_err_ujy):
    """First-order magnitude error 1.0857 * err / flux (NaN where the flux is not positive)."""
    import numpy as np

    flux = np.asarray(flux_ujy, dtype="float64")
    err = np.asarray(flux_err_ujy, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, PSF_MAG_ERR * err / np.where(flux > 0, flux, 1.0), np.nan)


def limit_magnitude(flux_err_ujy, nsigma: float):
    """n-sigma upper-limit magnitude from the flux error: 23.9 - 2.5 log10(n * err)."""
    import numpy as np

    err = np.asarray(flux_err_ujy, dtype="float64") * float(nsigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(err > 0, ZP_AB_UJY - 2.5 * np.log10(np.where(err > 0, err, 1.0)), np.nan)


def flux_from_magnitude(mag, zero_point: float = ZP_AB_UJY):
    """Flux in uJy of an AB magnitude measured against ZERO_POINT (23.9 for uJy)."""
    import numpy as np

    return np.power(10.0, -0.4 * (np.asarray(mag, dtype="float64") - zero_point))


def _astropy_tai_to_utc(mjd_tai):
    """TAI MJD -> UTC MJD through astropy.time, value by value (the reference)."""
    import warnings

    import numpy as np

    quiet_astropy()
    from astropy.time import Time

    values = np.asarray(mjd_tai, dtype="float64")
    if values.size == 0:
        return values
    with warnings.catch_warnings():  # ERFA's "dubious year" for an epoch far from now
        warnings.simplefilter("ignore")
        return Time(values, format="mjd", scale="tai").utc.mjd


def tai_to_utc_mjd(mjd_tai):
    """TAI MJD -> UTC MJD with astropy's leap-second table (never downloaded); fast.

    TAI-UTC is a whole number of seconds since 1972 and changes only at a leap
    second, so it is taken from astropy for each distinct day (and the next),
    and applied as ``tai - n/86400``; the rows of a day in which it changes (and
    any value before 1972) go through astropy one by one. NaN stays NaN; a value
    outside the years 1000..3000 (no survey observed then) is returned as it is.
    """
    import numpy as np

    values = np.asarray(mjd_tai, dtype="float64")
    out = np.full(values.shape, np.nan)
    with np.errstate(invalid="ignore"):
        absurd = np.isfinite(values) & ((values < -312_000.0) | (values > 418_000.0))
    out[absurd] = values[absurd]
    good = np.isfinite(values) & ~absurd
    if not good.any():
        return out
    tai = values[good]
    days = np.floor(tai)
    uniq, inverse = np.unique(days, return_inverse=True)
    edges = np.concatenate([uniq, uniq + 1.0])
    offsets = (edges - _astropy_tai_to_utc(edges)) * 86400.0
    start, end = offsets[: uniq.size], offsets[uniq.size :]
    # astropy's UTC MJD stretches a leap-second day to 86401 s: the offsets of a TAI day
    # touching one are off a whole second by >= 0.0004 s; float noise here is < 1e-6 s.
    steady = np.abs(start - end) < 5e-5
    whole = np.round(start)
    if uniq.min() < 41317 or (steady.any() and np.abs(start - whole)[steady].max() > 5e-5):
        out[good] = _astropy_tai_to_utc(tai)  # before 1972: not whole seconds
        return out
    utc = tai - whole[inverse] / 86400.0
    mixed = (~steady)[inverse]
    if mixed.any():
        utc[mixed] = _astropy_tai_to_utc(tai[mixed])
    out[good] = utc
    return out


_TIME_TABLES: dict[str, Any] = {}


def _time_tables():
    """``hh:mm:ss.`` for every second of a day and ``sssZ`` + newline for every millisecond."""
    import numpy as np

    if not _TIME_TABLES:
        _TIME_TABLES["seconds"] = np.array(
            [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}." for s in range(86400)], dtype="S9"
        )
        _TIME_TABLES["millis"] = np.array([f"{m:03d}Z\n" for m in range(1000)], dtype="S5")
    return _TIME_TABLES["seconds"], _TIME_TABLES["millis"]


def mjd_to_isot(mjd) -> Any:
    """UTC MJD -> ``YYYY-MM-DDThh:mm:ss.sssZ`` strings (object array; '' for NaN).

    Calendar arithmetic on the millisecond, 86400 s per day (exact except within
    a leap second itself), assembled from small tables -- the date of
    each day, the time of each second, each millisecond -- in one byte buffer that
    is split into strings once (several times faster on a million rows).
    """
    import numpy as np

    values = np.asarray(mjd, dtype="float64")
    out = np.full(values.shape, "", dtype=object)
    good = np.isfinite(values) & (values > -678575) & (values < 2973483)  # years 1..9999
    if not good.any():
        return out
    ms = np.round((values[good] - 40587.0) * 86_400_000.0).astype("int64")
    days, in_day = np.divmod(ms, 86_400_000)
    first, last = int(days.min()), int(days.max())
    if last - first < 400_000:
        day_index = days - first
        day_numbers = np.arange(first, last + 1)
    else:
        day_numbers, day_index = np.unique(days, return_inverse=True)
    dates = np.char.add(np.datetime_as_string(day_numbers.astype("datetime64[D]")), "T").astype("S11")
    seconds, millis = _time_tables()
    buf = np.empty(ms.size, dtype=[("date", "S11"), ("time", "S9"), ("ms", "S5")])
    buf["date"] = dates[day_index]
    buf["time"] = seconds[in_day // 1000]
    buf["ms"] = millis[in_day % 1000]
    texts = buf.tobytes().decode("ascii").split("\n")
    texts.pop()
    out[good] = texts
    return out


def quiet_astropy() -> None:
    """Never let astropy download IERS or leap-second tables, nor warn about their age."""
    import warnings

    from astropy.utils import iers

    iers.conf.auto_download = False
    iers.conf.auto_max_age = None
    try:
        from astropy.utils.iers import IERSStaleWarning

        warnings.simplefilter("ignore", IERSStaleWarning)
    except ImportError:  # older astropy
        pass
    try:
        from astropy.utils.exceptions import AstropyWarning

        warnings.filterwarnings("ignore", message=".*leap.?second.*", category=AstropyWarning)
        warnings.filterwarnings("ignore", message=".*IERS.*", category=AstropyWarning)
    except ImportError:
        pass


def separation_arcsec(ra1, dec1, ra2, dec2):
    """Angular separation in arcsec (haversine; vectorized; degrees in)."""
    import numpy as np

    r1, d1, r2, d2 = (np.radians(np.asarray(x, dtype="float64")) for x in (ra1, dec1, ra2, dec2))
    with np.errstate(invalid="ignore"):  # an infinite position gives NaN
        s = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
        return np.degrees(2 * np.arcsin(np.sqrt(np.clip(s, 0, 1)))) * 3600.0


# -- the table ----------------------------------------------------------------------


def fill_detections(df: pd.DataFrame, snr_threshold: float, limit_nsigma: float) -> pd.DataFrame:
    """Set snr, detected, magnitude, magnitude_error, limit, limit_nsigma for forced photometry.

    Detected when snr >= SNR_THRESHOLD; detections with positive flux get a
    magnitude; the others an upper limit at LIMIT_NSIGMA from the flux error.
    """
    import numpy as np

    flux = df["flux_ujy"].to_numpy(dtype="float64")
    err = df["flux_err_ujy"].to_numpy(dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(err > 0, flux / err, np.nan)
    detected = np.nan_to_num(snr, nan=-np.inf) >= snr_threshold
    df["snr"] = snr
    df["detected"] = detected
    df["magnitude"] = np.where(detected, magnitude_from_flux(flux), np.nan)
    df["magnitude_error"] = np.where(detected & (flux > 0), magnitude_error(flux, err), np.nan)
    df["limit"] = np.where(detected, np.nan, limit_magnitude(err, limit_nsigma))
    df["limit_nsigma"] = np.where(detected, np.nan, float(limit_nsigma))
    return df


def normalize(df: pd.DataFrame, product_id: int | None = None) -> pd.DataFrame:
    """DF with the fixed columns in order (missing ones filled), extra columns after.

    Fills what can be derived: time_utc from mjd, snr from flux and error,
    zp/zpsys, err_scale 1, n_combined 1, quality_flag 0. Sorted by mjd (stable;
    an already sorted table is not copied again).
    """
    import numpy as np

    n = len(df)
    table = df.copy(deep=False)
    for name, dtype in COLUMN_TYPES:
        if name in table.columns:
            if dtype != "object" and table[name].dtype != dtype:
                table[name] = table[name].astype(dtype)
            continue
        if name == "time_utc" and "mjd" in table.columns:
            values = mjd_to_isot(table["mjd"].to_numpy())
        elif name == "snr" and "flux_ujy" in table.columns:
            f = table["flux_ujy"].to_numpy(dtype="float64")
            e = table["flux_err_ujy"].to_numpy(dtype="float64")
            with np.errstate(divide="ignore", invalid="ignore"):
                values = np.where(e > 0, f / e, np.nan)
        elif name == "zp":
            values = np.full(n, ZP_AB_UJY)
        elif name == "zpsys":
            values = np.full(n, "ab", dtype=object)
        elif name == "err_scale":
            values = np.ones(n)
        elif name in ("n_combined",):
            values = np.ones(n, dtype="int64")
        elif name in ("quality_flag", "product_id"):
            values = np.full(n, 0, dtype="int64")
        elif name == "detected":
            values = np.zeros(n, dtype=bool)
        elif dtype == "float64":
            values = np.full(n, np.nan)
        else:
            values = np.full(n, None, dtype=object)
        table[name] = values
    if product_id is not None:
        table["product_id"] = np.full(n, product_id, dtype="int64")
    fixed = set(COLUMNS)
    table = table[COLUMNS + [c for c in df.columns if c not in fixed]]
    if not table["mjd"].is_monotonic_increasing:
        table = table.sort_values("mjd", kind="stable")
    return table.reset_index(drop=True)


def empty_table() -> pd.DataFrame:
    """A table with the fixed columns and no rows."""
    import pandas as pd

    return normalize(pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in COLUMN_TYPES}))


FORMATS = ("csv", "ecsv", "json")


def write_table(df: pd.DataFrame, dest: IO[bytes], fmt: str = "csv", meta: dict | None = None) -> None:
    """Write the normalized table to a binary stream as csv, ecsv or json."""
    if fmt == "csv":
        text = df.to_csv(index=False, lineterminator="\n")
        dest.write(text.encode("utf-8"))
    elif fmt == "json":
        text = df.to_json(orient="records", double_precision=15, date_format="iso")
        dest.write(text.encode("utf-8"))
        dest.write(b"\n")
    elif fmt == "ecsv":
        import io

        quiet_astropy()
        from astropy.table import Table

        table = Table.from_pandas(df)
        for name, unit in UNITS.items():
            if name in table.colnames:
                table[name].unit = unit
        table.meta.update(meta or {})
        table.meta.setdefault("zpsys", "ab")
        table.meta.setdefault("time_scale", "utc")
        buf = io.StringIO()
        table.write(buf, format="ascii.ecsv")
        dest.write(buf.getvalue().encode("utf-8"))
    else:
        raise ValueError(f"unknown format {fmt!r}")


def read_table(path) -> pd.DataFrame:
    """Read a normalized photometry.csv back, with its dtypes."""
    import pandas as pd

    dtypes = {name: ("string" if dtype == "object" else dtype) for name, dtype in COLUMN_TYPES}
    dtypes.pop("detected")
    df = pd.read_csv(path, dtype={k: v for k, v in dtypes.items() if v != "int64"}, keep_default_na=True)
    for name, dtype in COLUMN_TYPES:
        if dtype == "object" and name in df.columns:
            df[name] = df[name].astype(object).where(df[name].notna(), None)
    return df


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    """Counts for a summary: rows, detections, per band, time span, objects."""
    import numpy as np

    per_band: dict[str, dict[str, int]] = {}
    if len(df):
        for band, group in df.groupby("band", sort=True, dropna=False):
            per_band[str(band)] = {
                "rows": int(len(group)),
                "detections": int(group["detected"].sum()),
            }
    mjd = df["mjd"].to_numpy(dtype="float64") if len(df) else np.array([])
    return {
        "rows": int(len(df)),
        "detections": int(df["detected"].sum()) if len(df) else 0,
        "bands": per_band,
        "mjd_min": float(np.nanmin(mjd)) if mjd.size else None,
        "mjd_max": float(np.nanmax(mjd)) if mjd.size else None,
        "objects": sorted({str(o) for o in df["object_id"].dropna()}) if len(df) else [],
        "flux_kind": sorted({str(k) for k in df["flux_kind"].dropna()}) if len(df) else [],
    }
