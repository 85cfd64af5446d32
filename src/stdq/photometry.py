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
====  =====================  ===========================================================

Values every processor checks (:func:`drop_bad_values`, docs/photometry.md "Rows
left out"): a row with a non-finite flux or error, an error <= 0, an epoch that
is not a number, before its survey began (:data:`SURVEY_YEARS`), after it ended,
or more than a day in the future is left out and counted by reason.
"""

from __future__ import annotations

import contextlib
import io
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
QUALITY_BITS = {
    "survey_code": FLAG_SURVEY_CODE,
    "poor_fit": FLAG_POOR_FIT,
    "large_error": FLAG_LARGE_ERROR,
    "masked_pixels": FLAG_MASKED_PIXELS,
    "blend": FLAG_BLEND,
    "bad_seeing": FLAG_BAD_SEEING,
    "zero_error": FLAG_ZERO_ERROR,
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


MJD0 = 2400000.5  # JD of MJD 0
_LEAP_TABLE_CHECKED: list[bool] = []


def _erfa() -> Any:
    """pyerfa (astropy's own ERFA binding) with the newest leap-second table at hand.

    pyerfa ships a table; astropy ships a newer one in ``astropy_iers_data``
    (``Leap_Second.dat``). When that file lists a leap second pyerfa does not know,
    erfa's table is extended the way astropy extends it (``erfa.leap_seconds.update``)
    -- read as text, without importing astropy.
    """
    import erfa

    if not _LEAP_TABLE_CHECKED:
        _LEAP_TABLE_CHECKED.append(True)
        import contextlib

        with contextlib.suppress(Exception):  # else pyerfa's own table stays (correct to its date)
            _update_leap_seconds(erfa)
    return erfa


def _update_leap_seconds(erfa: Any) -> None:
    """Add the leap seconds of astropy-iers-data's Leap_Second.dat that erfa lacks."""
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("astropy_iers_data")
    if spec is None or not spec.submodule_search_locations:
        return
    from pathlib import Path

    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "Leap_Second.dat"
    if not path.is_file():
        return
    rows = []
    for line in path.read_text(encoding="ascii", errors="replace").splitlines():
        fields = line.split()
        if len(fields) == 5 and not line.lstrip().startswith("#"):
            _, _, month, year, offset = fields
            rows.append((int(year), int(month), float(offset)))
    if rows:
        table = np.array(rows, dtype=[("year", "i4"), ("month", "i4"), ("tai_utc", "f8")])
        erfa.leap_seconds.update(table)  # adds only what erfa lacks (as astropy does)


def tai_to_utc_mjd(mjd_tai):
    """TAI MJD -> UTC MJD (ERFA's ``taiutc``, as astropy.time does it, without astropy).

    On a day that ends in a leap second the UTC MJD stretches over 86401 s, as
    astropy's does. NaN stays NaN; a value outside the years 1000..3000 (no survey
    observed then) is returned as it is.
    """
    import warnings

    import numpy as np

    values = np.asarray(mjd_tai, dtype="float64")
    out = values.copy()
    with np.errstate(invalid="ignore"):
        good = np.isfinite(values) & (values >= -312_000.0) & (values <= 418_000.0)
    if not good.any():
        return out
    tai = values[good]
    erfa = _erfa()

    def exact(t: Any) -> Any:
        day = np.floor(t)
        with warnings.catch_warnings():  # ERFA's "dubious year" for an epoch far from now
            warnings.simplefilter("ignore")
            utc1, utc2 = erfa.taiutc(MJD0 + day, t - day)
        return (utc1 - MJD0) + utc2

    if tai.size < 1000:
        out[good] = exact(tai)
        return out
    # Many values: TAI-UTC is a whole number of seconds from 1972 on and changes only at
    # a leap second, so ERFA is asked once per distinct TAI day (its start and end); the
    # rows of a day in which it changes (or that is not whole) go through ERFA one by one.
    days = np.floor(tai)
    uniq, inverse = np.unique(days, return_inverse=True)
    offsets = (np.concatenate([uniq, uniq + 1.0]) - exact(np.concatenate([uniq, uniq + 1.0]))) * 86400.0
    start, end = offsets[: uniq.size], offsets[uniq.size :]
    whole = np.round(start)
    steady = (np.abs(start - end) < 1e-4) & (np.abs(start - whole) < 1e-4) & (uniq >= 41317)
    utc = tai - whole[inverse] / 86400.0
    mixed = (~steady)[inverse]
    if mixed.any():
        utc[mixed] = exact(tai[mixed])
    out[good] = utc
    return out


def utc_to_tai_mjd(mjd_utc):
    """UTC MJD -> TAI MJD (ERFA's ``utctai``; the inverse of :func:`tai_to_utc_mjd`)."""
    import warnings

    import numpy as np

    values = np.asarray(mjd_utc, dtype="float64")
    out = values.copy()
    with np.errstate(invalid="ignore"):
        good = np.isfinite(values) & (values >= -312_000.0) & (values <= 418_000.0)
    if not good.any():
        return out
    utc = values[good]
    day = np.floor(utc)
    erfa = _erfa()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tai1, tai2 = erfa.utctai(MJD0 + day, utc - day)
    out[good] = (tai1 - MJD0) + tai2
    return out


_TIME_TABLES: dict[str, Any] = {}
SMALL_TIME_ARRAY = 20_000  # below this many values, times are formatted one by one (no tables)


def _time_tables():
    """``hh:mm:ss.`` for every second of a day and ``sssZ`` + newline for every millisecond
    (built once, for a large array only)."""
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
    a leap second itself). A large array is assembled from small tables -- the date
    of each day, the time of each second, each millisecond -- in one byte buffer
    that is split into strings once (several times faster on a million rows); a
    small one is formatted value by value (building the tables would cost more).
    """
    import numpy as np

    values = np.asarray(mjd, dtype="float64")
    out = np.full(values.shape, "", dtype=object)
    good = np.isfinite(values) & (values > -678575) & (values < 2973483)  # years 1..9999
    if not good.any():
        return out
    ms = np.round((values[good] - 40587.0) * 86_400_000.0).astype("int64")
    days, in_day = np.divmod(ms, 86_400_000)
    if ms.size < SMALL_TIME_ARRAY:
        dates = np.datetime_as_string(days.astype("datetime64[D]")).tolist()
        texts = []
        for date, t in zip(dates, in_day.tolist(), strict=True):
            s, milli = divmod(t, 1000)
            texts.append(f"{date}T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{milli:03d}Z")
        out[good] = texts
        return out
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
    import pandas as pd

    df = df.reset_index(drop=True)  # (no copy) rows by position, as the arrays below are
    n = len(df)
    # The columns are gathered in one dict and made one table at the end: inserting
    # them one by one into a copy of DF cost a block rebuild each (~2 ms a job).
    cols: dict[str, Any] = {}

    def column(name: str) -> Any:
        return cols[name] if name in cols else df[name]

    for name, dtype in COLUMN_TYPES:
        if name in df.columns:
            col = df[name]
            if dtype != "object" and col.dtype != dtype:
                col = col.astype(dtype)
            cols[name] = col
            continue
        if name == "time_utc" and "mjd" in df.columns:
            values = mjd_to_isot(column("mjd").to_numpy())
        elif name == "snr" and "flux_ujy" in df.columns:
            f = column("flux_ujy").to_numpy(dtype="float64")
            e = column("flux_err_ujy").to_numpy(dtype="float64")
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
        cols[name] = values
    if product_id is not None:
        cols["product_id"] = np.full(n, product_id, dtype="int64")
    for name in df.columns:
        if name not in cols:
            cols[name] = df[name]
    table = pd.DataFrame(cols, index=df.index, copy=False)  # a RangeIndex (reset above)
    if not table["mjd"].is_monotonic_increasing:
        table = table.sort_values("mjd", kind="stable").reset_index(drop=True)
    return table


def empty_table() -> pd.DataFrame:
    """A table with the fixed columns and no rows."""
    import pandas as pd

    return normalize(pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in COLUMN_TYPES}))


FORMATS = ("csv", "ecsv", "json", "parquet")
CSV_CHUNK_ROWS = 8_192  # rows formatted at a time (streamed: 100k-row chunks cost +75 MiB at peak;
# with 2 threads 16,384 rows cost +34 MiB for a 100k-row table, 8,192 rows +18 MiB, as fast)
PYARROW_HINT = "pip install pyarrow   (or: pip install 'stdq[arrow]')"


def have_pyarrow() -> bool:
    """Whether pyarrow is installed (the fast CSV writer and Parquet use it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("pyarrow") is not None
    except (ImportError, ValueError):  # sys.modules["pyarrow"] = None: blocked
        return False


def write_table(df: pd.DataFrame, dest: IO[bytes], fmt: str = "csv", meta: dict | None = None) -> None:
    """Write the normalized table to a binary stream as csv, ecsv, json or parquet.

    CSV (docs/photometry.md "The CSV file"): streamed in chunks of CSV_CHUNK_ROWS
    rows, by pyarrow's CSV writer when pyarrow is installed, else by pandas; either
    way every float reads back equal (shortest round-trip text, NaN as an empty
    field), booleans are ``True``/``False`` and text is quoted only where needed.
    Parquet needs pyarrow (ConfigError, exit 3, naming the pip command, without it).
    """
    if fmt == "csv":
        write_csv(df, dest)
    elif fmt == "json":
        _write_json(df, dest)
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
        text = io.TextIOWrapper(dest, encoding="utf-8", newline="\n", write_through=True)
        try:
            table.write(text, format="ascii.ecsv")
            text.flush()
        finally:
            text.detach()
    elif fmt == "parquet":
        write_parquet(df, dest, meta)
    else:
        raise ValueError(f"unknown format {fmt!r}")


def write_csv(df: pd.DataFrame, dest: IO[bytes], *, engine: str | None = None) -> None:
    """DF as CSV on DEST, streamed. ENGINE "arrow" or "pandas" (default: arrow when
    pyarrow is installed). Both write the same columns and values (see write_table)."""
    engine = engine or ("arrow" if have_pyarrow() else "pandas")
    header = ",".join(_csv_quote(str(name)) for name in df.columns) + "\n"
    dest.write(header.encode("utf-8"))
    n = len(df)
    if engine == "arrow":
        _write_csv_arrow_chunks(df, dest)
        return
    for start in range(0, n, CSV_CHUNK_ROWS):
        _write_csv_pandas(df.iloc[start : start + CSV_CHUNK_ROWS], dest)


def _csv_quote(text: str) -> str:
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _whole_float_columns(df: pd.DataFrame) -> set[str]:
    """Extra float columns (no fixed dtype on reading) holding only whole numbers, no NaN:
    written with ``.0`` so that they read back as floats, not integers."""
    import numpy as np

    fixed = set(COLUMNS)
    out = set()
    for name in df.columns:
        if name in fixed or df[name].dtype != np.float64:
            continue
        values = df[name].to_numpy()
        with np.errstate(invalid="ignore"):
            if values.size and not np.isnan(values).any() and (values == np.floor(values)).all():
                out.add(name)
    return out


def _arrow_column(series: pd.Series, *, whole: bool = False, csv: bool = True, pool: Any = None) -> Any:
    """One column as a pyarrow array, as the CSV writer should show it (memory from POOL,
    default: pyarrow's default pool)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    dtype = series.dtype
    if dtype == np.float64 or dtype == np.float32:
        values = series.to_numpy()
        if whole and csv:  # 1.0 -> "1.0" (pyarrow writes "1"), so it reads back a float
            text = pc.cast(pa.array(values, memory_pool=pool), pa.string(), memory_pool=pool)
            has_dot = pc.match_substring_regex(text, r"[.eEn]", memory_pool=pool)
            return pc.if_else(has_dot, text, pc.binary_join_element_wise(text, ".0", "", memory_pool=pool),
                              memory_pool=pool)
        return pa.array(values, from_pandas=True, memory_pool=pool)  # NaN -> null -> an empty field
    if dtype == np.bool_:
        values = pa.array(series.to_numpy(), memory_pool=pool)
        return pc.if_else(values, "True", "False", memory_pool=pool) if csv else values
    if dtype == np.dtype(object):
        values = series.to_numpy()
        try:
            return pa.array(values, type=pa.string(), from_pandas=True, memory_pool=pool)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all text: as pandas writes them
            return pa.array(
                [None if v is None or (isinstance(v, float) and v != v) else str(v) for v in values],
                type=pa.string(), memory_pool=pool,
            )
    try:
        array = pa.array(series, from_pandas=True, memory_pool=pool)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        array = pa.array(series.astype(str).to_numpy(), type=pa.string(), memory_pool=pool)
    if csv and pa.types.is_boolean(array.type):  # a nullable boolean column
        return pc.if_else(array, "True", "False", memory_pool=pool)
    return array


CSV_THREADS = 2  # chunks formatted by pyarrow at the same time (it releases the GIL)


def _write_csv_arrow_chunks(df: pd.DataFrame, dest: IO[bytes]) -> None:
    """DF's rows by pyarrow, CSV_CHUNK_ROWS at a time, in order.

    Each chunk's columns are made arrow arrays here (that needs the GIL); the text is
    formatted by pyarrow in CSV_THREADS threads while the next chunk is prepared, at
    most CSV_THREADS + 1 chunks ahead of the one written (memory stays a few chunks).
    A column holding one value throughout (zp, err_scale, survey, product_id ...) is
    made an arrow array once per chunk size, not once per chunk. The memory comes from
    the C library's allocator (pyarrow's system pool), which gives it back when the
    chunk is written: pyarrow's default pool (mimalloc) keeps it per thread, +30 MiB
    at peak for a 100,000-row table.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa

    pool = pa.system_memory_pool()
    n = len(df)
    whole = _whole_float_columns(df)
    constants = _constant_columns(df, whole)
    repeated: dict[tuple[str, int], Any] = {}
    starts = range(0, n, CSV_CHUNK_ROWS)
    if len(starts) <= 1 or CSV_THREADS <= 1:
        for start in starts:
            dest.write(_format_chunk(_chunk_arrays(df, start, whole, constants, repeated, pool), pool))
        return
    pending: deque[Any] = deque()
    with ThreadPoolExecutor(max_workers=CSV_THREADS, thread_name_prefix="stdq-csv") as threads:
        try:
            for start in starts:
                table = _chunk_arrays(df, start, whole, constants, repeated, pool)
                pending.append(threads.submit(_format_chunk, table, pool))
                while len(pending) > CSV_THREADS or (pending and pending[0].done()):
                    dest.write(pending.popleft().result())
            while pending:
                dest.write(pending.popleft().result())
        finally:
            for future in pending:
                future.cancel()


def _constant_columns(df: pd.DataFrame, whole: set[str]) -> dict[str, Any]:
    """{column: its one value as a pyarrow scalar} for the float, integer and text columns
    of DF that hold one value in every row (floats bit for bit, no NaN, no missing text):
    pyarrow formats such a column as it formats any other (the same text)."""
    import numpy as np
    import pyarrow as pa

    out: dict[str, Any] = {}
    if len(df) < 2:
        return out
    for name in df.columns:
        column = df[name]
        if name in whole or column.dtype not in (np.float64, np.int64, np.dtype(object)):
            continue
        values = column.to_numpy()
        first = values[0]
        sample = values[:: max(1, len(values) // 64)]  # most columns differ here already
        if column.dtype == np.float64:
            sample = sample.view("u8") == sample[:1].view("u8")
        if not _all_equal(sample, first):
            continue
        if column.dtype == np.float64:  # the same bits (0.0 and -0.0 are written apart)
            if np.isfinite(first) and (values.view("u8") == values[:1].view("u8")).all():
                out[name] = pa.scalar(float(first), type=pa.float64())
        elif column.dtype == np.int64:
            if (values == first).all():
                out[name] = pa.scalar(int(first), type=pa.int64())
        elif type(first) is str and not any(c in first for c in ',"\r\n') and _all_equal(values, first):
            out[name] = pa.scalar(first, type=pa.string())
    return out


def _all_equal(values: Any, first: Any) -> bool:
    """Whether every value equals FIRST (a boolean array: whether all are true)."""
    try:
        if values.dtype == bool:
            return bool(values.all())
        return bool((values == first).all())
    except (TypeError, ValueError):  # pd.NA and the like: not one value
        return False


def _chunk_arrays(
    df: pd.DataFrame, start: int, whole: set[str], constants: dict[str, Any],
    repeated: dict[tuple[str, int], Any], pool: Any = None,
) -> Any:
    """Rows START.. START + CSV_CHUNK_ROWS of DF as a pyarrow table, or as the pandas chunk
    itself when a text of it needs quotes (a comma, a quote, a line break: never in survey
    data; pandas writes that chunk, so that quoting stays minimal everywhere). A constant
    column is the same arrow array in every chunk of a size (REPEATED keeps them)."""
    import pyarrow as pa

    chunk = df.iloc[start : start + CSV_CHUNK_ROWS]
    rows = len(chunk)
    arrays = []
    for name in chunk.columns:
        if name in constants:
            key = (name, rows)
            if key not in repeated:
                repeated[key] = pa.repeat(constants[name], rows, memory_pool=pool)
            arrays.append(repeated[key])
        else:
            arrays.append(_arrow_column(chunk[name], whole=name in whole, pool=pool))
    if any(_needs_quotes(array) for array in arrays):
        return chunk
    return pa.Table.from_arrays(arrays, names=[str(c) for c in chunk.columns])


def _format_chunk(chunk: Any, pool: Any = None) -> Any:
    """The CSV text (no header) of a pyarrow table (a buffer), or of a pandas chunk (bytes)."""
    import pandas as pd

    if isinstance(chunk, pd.DataFrame):
        sink = io.BytesIO()
        _write_csv_pandas(chunk, sink)
        return sink.getvalue()
    import pyarrow as pa
    import pyarrow.csv as pacsv

    out = pa.BufferOutputStream(memory_pool=pool)
    # one batch for the chunk (pyarrow's default, 1,024 rows, costs about 15% more CPU)
    options = pacsv.WriteOptions(include_header=False, quoting_style="none",
                                 batch_size=max(1, chunk.num_rows))
    pacsv.write_csv(chunk, out, options, memory_pool=pool)
    return memoryview(out.getvalue())


def _needs_quotes(array: Any) -> bool:
    """Whether a text ARRAY holds a comma, a quote or a line break: a byte search of its
    UTF-8 data buffer (a bytes search is memchr-fast; a regex per value is not)."""
    import pyarrow as pa

    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return False
    data = array.buffers()[2]
    if data is None:
        return False
    raw = data.to_pybytes()  # (a sliced array's buffer may hold more: a false alarm at most)
    return any(ch in raw for ch in (b",", b'"', b"\r", b"\n"))


def _write_csv_pandas(chunk: pd.DataFrame, dest: IO[bytes]) -> None:
    """CHUNK by pandas: quoting as needed -- every field quoted in a chunk with a carriage
    return in some text (Python's csv would leave that one unquoted)."""
    import csv
    import io

    quoting = csv.QUOTE_MINIMAL
    for name in chunk.columns:
        column = chunk[name]
        is_text = column.dtype.kind in "OTU" or str(column.dtype) in ("string", "str")
        if is_text and column.astype(str).str.contains("\r", regex=False).any():
            quoting = csv.QUOTE_ALL
            break
    text = io.TextIOWrapper(dest, encoding="utf-8", newline="", write_through=True)
    try:
        chunk.to_csv(text, index=False, header=False, lineterminator="\n", quoting=quoting)
        text.flush()
    finally:
        text.detach()


def _write_json(df: pd.DataFrame, dest: IO[bytes]) -> None:
    """DF as one JSON array of records, streamed a chunk at a time."""
    n = len(df)
    dest.write(b"[")
    for start in range(0, n, CSV_CHUNK_ROWS):
        text = df.iloc[start : start + CSV_CHUNK_ROWS].to_json(
            orient="records", double_precision=15, date_format="iso"
        )
        if start:
            dest.write(b",")
        dest.write(text[1:-1].encode("utf-8"))
    dest.write(b"]\n")


def require_pyarrow(what: str) -> Any:
    """pyarrow, or ConfigError (exit 3) saying WHAT needs it and how to install it."""
    if not have_pyarrow():
        from stdq.errors import ConfigError

        raise ConfigError(f"{what} needs pyarrow, which is not installed", hint=PYARROW_HINT)
    import pyarrow

    return pyarrow


def write_parquet(df: pd.DataFrame, dest: IO[bytes], meta: dict | None = None) -> None:
    """DF as Parquet (pyarrow), with the units and META as the file's key-value metadata."""
    import json

    pa = require_pyarrow("writing Parquet (--format parquet)")
    import pyarrow.parquet as pq

    arrays = [_arrow_column(df[name], csv=False) for name in df.columns]
    table = pa.Table.from_arrays(arrays, names=[str(c) for c in df.columns])
    info = {"units": {k: v for k, v in UNITS.items() if k in df.columns}, "zpsys": "ab",
            "time_scale": "utc", **(meta or {})}
    table = table.replace_schema_metadata({"stdq": json.dumps(info, default=str)})
    pq.write_table(table, dest)


def read_parquet(path) -> pd.DataFrame:
    """A Parquet file written by write_parquet, as a DataFrame (text columns ``object``)."""
    pa = require_pyarrow("reading Parquet")
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    df = table.to_pandas(types_mapper={pa.string(): None}.get)
    for name in df.columns:
        if pa.types.is_string(table.schema.field(name).type):
            df[name] = df[name].astype(object).where(df[name].notna(), None)
    return df


# -- a table just written is not read back ---------------------------------------------

_WRITTEN: dict[str, tuple[tuple[int, int, int], pd.DataFrame]] = {}


def _signature(path: Any) -> tuple[int, int, int]:
    import os

    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def remember_written(path: Any, df: pd.DataFrame) -> None:
    """DF is what was just written to PATH: ``read_table(PATH)`` gives it back without
    reading the file while the file is unchanged. Only the latest table is kept."""
    from pathlib import Path

    key = str(Path(path).resolve())
    _WRITTEN.clear()
    with contextlib.suppress(OSError):
        _WRITTEN[key] = (_signature(key), df)


def forget_written() -> None:
    """Drop the table remember_written keeps (a long-running worker frees its memory)."""
    _WRITTEN.clear()


def copy_table_file(src: Any, dest: Any) -> None:
    """Copy the file SRC to DEST atomically (a new file, never a link: editing the copy
    never changes the product), by the kernel where it can (``shutil.copyfile``)."""
    import os
    import shutil
    import time as _time
    from pathlib import Path

    from stdq.store import write_error

    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{_time.monotonic_ns()}.tmp")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except OSError as exc:
        import contextlib

        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise write_error(exc, dest, None) from exc


COPY_BLOCK = 1 << 20  # bytes read at a time by csv_with_flag_column


def csv_with_flag_column(
    source: Any, columns: list[str], name: str, flags: Any
) -> Callable[[IO[bytes]], None] | None:
    """A writer of the CSV file SOURCE (as write_csv writes it) with one more column NAME,
    ``True``/``False`` per row by FLAGS (booleans, one a row): each line of SOURCE and
    ``,True`` or ``,False`` -- the bytes write_csv gives for the table with that column,
    without formatting the table again -- streamed COPY_BLOCK bytes at a time (never the
    file in memory). None when SOURCE cannot be copied line for line: it cannot be read,
    has a quoted field (a line break may be inside it) or a carriage return, does not end
    in a line break, its header is not COLUMNS, or it has not one line per flag."""
    import numpy as np

    flags = np.asarray(flags, dtype=bool)
    try:
        with open(source, "rb") as fh:
            header = fh.readline()
            if header[-1:] != b"\n" or b'"' in header or b"\r" in header:
                return None
            if header[:-1].decode("utf-8", "replace").split(",") != [str(c) for c in columns]:
                return None
            rows, last = 0, b"\n"
            while block := fh.read(COPY_BLOCK):
                if b'"' in block or b"\r" in block:
                    return None
                rows += block.count(b"\n")
                last = block[-1:]
    except OSError:
        return None
    if last != b"\n" or rows != len(flags):
        return None
    ends = (b",False", b",True")

    def write(dest: IO[bytes]) -> None:
        with open(source, "rb") as fh:
            dest.write(fh.readline()[:-1] + b"," + name.encode("utf-8") + b"\n")
            done, rest = 0, b""
            while block := fh.read(COPY_BLOCK):
                block = rest + block
                cut = block.rfind(b"\n") + 1
                lines, rest = block[:cut], block[cut:]
                count = lines.count(b"\n")
                part = flags[done : done + count]
                if len(part) != count:
                    raise ValueError(f"{source}: changed while it was copied")
                if not part.any():
                    dest.write(lines.replace(b"\n", b",False\n"))
                elif part.all():
                    dest.write(lines.replace(b"\n", b",True\n"))
                else:
                    pieces = lines[:-1].split(b"\n")
                    dest.write(b"".join(line + ends[flag] + b"\n" for line, flag in zip(pieces, part.tolist(), strict=True)))
                done += count
            if rest or done != len(flags):
                raise ValueError(f"{source}: changed while it was copied")

    return write


def read_table(path) -> pd.DataFrame:
    """Read a normalized photometry.csv back, with its dtypes (the table itself, when this
    process has just written it and the file is unchanged: remember_written)."""
    import os
    from pathlib import Path

    import pandas as pd

    key = str(Path(path).resolve()) if isinstance(path, (str, os.PathLike)) else ""
    known = _WRITTEN.get(key)
    if known is not None:
        try:
            if _signature(key) == known[0]:
                return known[1].copy(deep=False)
        except OSError:
            pass
    dtypes = dict(COLUMN_TYPES)
    dtypes.pop("detected")
    # only an empty field is missing: a text "NA" or "nan" stays text (NaN is written empty).
    # Text read as object: pandas' parser makes one str of each distinct text of a column
    # (survey, band, ... share it), where the "string" dtype and then object made one str a
    # row: +60 MiB for 100,000 rows, and 5 times the time.
    df = pd.read_csv(path, dtype={k: v for k, v in dtypes.items() if v != "int64"},
                     keep_default_na=False, na_values=[""])
    for name in df.columns:  # text (fixed or extra): missing is None, as in the written table
        column = df[name]
        if column.dtype.kind not in "biufcmM":
            missing = column.isna()
            column = column.astype(object)
            df[name] = column.where(~missing, None) if missing.any() else column
    return df


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    """Counts for a summary: rows, detections, per band (sorted; a missing band as
    ``nan``, last), time span, objects.

    Counted on the columns' codes (no copy of the table per band: a groupby made one,
    +31 MiB at peak for 100,000 rows).
    """
    import numpy as np
    import pandas as pd

    n = len(df)
    per_band: dict[str, dict[str, int]] = {}
    detected = df["detected"].to_numpy(dtype=bool, na_value=False) if n else np.zeros(0, dtype=bool)
    if n:
        codes, uniques = pd.factorize(df["band"], sort=True, use_na_sentinel=True)
        have = codes >= 0
        rows = np.bincount(codes[have], minlength=len(uniques))
        found = np.bincount(codes[have & detected], minlength=len(uniques))
        for k, band in enumerate(uniques.tolist()):
            per_band[str(band)] = {"rows": int(rows[k]), "detections": int(found[k])}
        if not have.all():  # the groupby's NaN group (None and NaN bands), sorted last
            per_band[str(np.nan)] = {"rows": int((~have).sum()), "detections": int(detected[~have].sum())}
    mjd = df["mjd"].to_numpy(dtype="float64") if n else np.array([])

    def distinct(name: str) -> list[str]:
        return sorted({str(v) for v in pd.unique(df[name].dropna())}) if n else []

    return {
        "rows": int(n),
        "detections": int(detected.sum()),
        "bands": per_band,
        "mjd_min": float(np.nanmin(mjd)) if mjd.size else None,
        "mjd_max": float(np.nanmax(mjd)) if mjd.size else None,
        "objects": distinct("object_id"),
        "flux_kind": distinct("flux_kind"),
    }
