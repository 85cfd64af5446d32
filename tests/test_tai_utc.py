"""TAI <-> UTC without astropy (photometry.tai_to_utc_mjd / utc_to_tai_mjd, ERFA's
taiutc/utctai) equals astropy.time's to 1e-9 d over 1972-2030, leap-second days included."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from stdq import photometry

TOL_DAYS = 1e-9

# The days that end in a leap second (UTC MJD of the day after: 1972-07-01 ... 2017-01-01).
LEAP_DAYS_AFTER = [
    41499, 41683, 42048, 42413, 42778, 43144, 43509, 43874, 44239, 44786, 45151, 45516,
    46247, 47161, 47892, 48257, 48804, 49169, 49534, 50083, 50630, 51179, 53736, 54832,
    56109, 57204, 57754,
]


def astropy_tai_to_utc(values: np.ndarray) -> np.ndarray:
    from astropy.time import Time

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Time(values, format="mjd", scale="tai").utc.mjd


def astropy_utc_to_tai(values: np.ndarray) -> np.ndarray:
    from astropy.time import Time

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Time(values, format="mjd", scale="utc").tai.mjd


def sample_tai() -> np.ndarray:
    """Every ~3 hours from 1972-01-01 to 2030-01-01, plus a dense sweep of each leap day."""
    rng = np.random.default_rng(20231)
    spread = np.arange(41317.0, 62502.0, 0.123456789)
    sweeps = [
        day - 1 + np.concatenate([np.linspace(0.0, 1.0 + 60 / 86400, 400), rng.random(200)])
        for day in LEAP_DAYS_AFTER
    ]
    # the last seconds of a leap day, in TAI: around the moment itself
    edges = [day + d / 86400.0 for day in LEAP_DAYS_AFTER for d in (8.0, 9.5, 30.0, 36.0, 37.0, 38.0)]
    return np.concatenate([spread, *sweeps, np.array(edges)])


def test_tai_to_utc_equals_astropy_1972_2030():
    tai = sample_tai()
    ours = photometry.tai_to_utc_mjd(tai)
    theirs = astropy_tai_to_utc(tai)
    worst = np.max(np.abs(ours - theirs))
    assert worst <= TOL_DAYS, f"largest difference {worst * 86400e6:.3f} us"


def test_leap_second_days_stretch_as_astropy():
    # on 2016-12-31 (a leap day) the UTC MJD runs over 86401 s: 36 s before, 37 s after
    tai = np.array([57753.5, 57754.5])
    ours = photometry.tai_to_utc_mjd(tai)
    assert abs((tai[1] - ours[1]) * 86400 - 37.0) < 1e-6
    assert np.max(np.abs(ours - astropy_tai_to_utc(tai))) <= TOL_DAYS
    day = 57753.0 + np.linspace(0.0, 1.0, 2001)
    assert np.max(np.abs(photometry.tai_to_utc_mjd(day) - astropy_tai_to_utc(day))) <= TOL_DAYS


def test_utc_to_tai_equals_astropy_and_inverts():
    utc = np.concatenate([np.arange(41317.0, 62502.0, 0.731), [d - 1e-6 for d in LEAP_DAYS_AFTER],
                          [float(d) for d in LEAP_DAYS_AFTER]])
    ours = photometry.utc_to_tai_mjd(utc)
    assert np.max(np.abs(ours - astropy_utc_to_tai(utc))) <= TOL_DAYS
    assert np.max(np.abs(photometry.tai_to_utc_mjd(ours) - utc)) <= TOL_DAYS


def test_nan_and_absurd_values_pass_through():
    values = np.array([np.nan, -1e9, 1e9, 60000.0])
    out = photometry.tai_to_utc_mjd(values)
    assert np.isnan(out[0]) and out[1] == -1e9 and out[2] == 1e9
    assert out[3] == pytest.approx(60000.0 - 37 / 86400, abs=1e-12)
    assert photometry.tai_to_utc_mjd(np.array([])).size == 0


def test_no_astropy_import():
    code = (
        "import sys, numpy as np\n"
        "from stdq import photometry\n"
        "photometry.tai_to_utc_mjd(np.array([57000.0])); photometry.utc_to_tai_mjd([57000.0])\n"
        "photometry.mjd_to_isot(np.array([57000.0]))\n"
        "assert 'astropy' not in sys.modules, 'astropy imported'\n"
        "assert not photometry._TIME_TABLES, 'time tables built for one value'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_small_and_large_time_formatting_agree():
    rng = np.random.default_rng(7)
    mjd = np.concatenate([rng.uniform(41317, 62502, photometry.SMALL_TIME_ARRAY + 10), [np.nan]])
    large = photometry.mjd_to_isot(mjd)
    small = np.concatenate([photometry.mjd_to_isot(chunk) for chunk in np.array_split(mjd, 10)])
    assert large.tolist() == small.tolist()
    assert large[-1] == ""
