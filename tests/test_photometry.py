"""The shared photometry helpers, checked against numbers computed by hand."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

from stdq import photometry


def test_magnitude_of_positive_flux_only():
    # 1 uJy is AB 23.9; 100 uJy is 23.9 - 5 = 18.9; 3631 Jy = 3.631e9 uJy is AB 0
    # (to 7e-5 mag: 23.9 is the rounded 2.5 log10(3631e6) = 23.90007).
    mags = photometry.magnitude_from_flux([1.0, 100.0, 3.631e9, 0.0, -50.0, np.nan])
    assert mags[0] == pytest.approx(23.9)
    assert mags[1] == pytest.approx(18.9)
    assert mags[2] == pytest.approx(0.0, abs=1e-4)
    assert all(math.isnan(m) for m in mags[3:])  # never the log of |flux|


def test_magnitude_error_and_limits():
    # 1.0857 * 10 / 200 = 0.054286
    assert photometry.magnitude_error([200.0], [10.0])[0] == pytest.approx(2.5 / math.log(10) * 0.05)
    # 3-sigma limit of a 10 uJy error: 23.9 - 2.5 log10(30) = 20.207196...
    assert photometry.limit_magnitude([10.0], 3)[0] == pytest.approx(23.9 - 2.5 * math.log10(30))
    # 5-sigma of 4 uJy: 23.9 - 2.5 log10(20) = 20.647425...
    assert photometry.limit_magnitude([4.0], 5)[0] == pytest.approx(20.647425010840047)
    assert math.isnan(photometry.limit_magnitude([0.0], 3)[0])


def test_flux_from_magnitude():
    assert photometry.flux_from_magnitude([23.9, 18.9])[1] == pytest.approx(100.0)
    # a Jy zero point: 8.90 mag is 1 Jy
    assert photometry.flux_from_magnitude([8.9], zero_point=8.9)[0] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("mjd_tai", "tai_minus_utc"),
    [
        (55500.5, 34.0),  # 2010-11-03: TAI-UTC = 34 s (2009-01-01 .. 2012-06-30)
        (56500.5, 35.0),  # 2013-07-29: 35 s (2012-07-01 .. 2015-06-30)
        (57500.5, 36.0),  # 2016-04-25: 36 s (2015-07-01 .. 2016-12-31)
        (58000.5, 37.0),  # 2017-09-04: 37 s (since 2017-01-01)
    ],
)
def test_tai_to_utc_across_leap_seconds(mjd_tai, tai_minus_utc):
    utc = photometry.tai_to_utc_mjd([mjd_tai])[0]
    assert (mjd_tai - utc) * 86400.0 == pytest.approx(tai_minus_utc, abs=1e-4)


def test_mjd_to_isot():
    # MJD 60000 is 2023-02-25T00:00:00 UTC; +0.5 d is noon; 15 s = 1.736111e-4 d
    out = photometry.mjd_to_isot([60000.0, 60000.5, 60000.0 + 15 / 86400, np.nan])
    assert list(out[:3]) == [
        "2023-02-25T00:00:00.000Z",
        "2023-02-25T12:00:00.000Z",
        "2023-02-25T00:00:15.000Z",
    ]
    assert out[3] == ""


def test_separation_arcsec():
    # 1 arcsec north; 1 arcsec of RA at dec 60 is 0.5 arcsec on the sky
    assert photometry.separation_arcsec(10, 20, 10, 20 + 1 / 3600)[()] == pytest.approx(1.0, rel=1e-6)
    assert photometry.separation_arcsec(10, 60, 10 + 1 / 3600, 60)[()] == pytest.approx(0.5, rel=1e-4)


def test_fill_detections_forced_photometry_rules():
    df = pd.DataFrame({"flux_ujy": [300.0, 20.0, -40.0, 5.0], "flux_err_ujy": [10.0, 10.0, 10.0, 0.0]})
    photometry.fill_detections(df, snr_threshold=3, limit_nsigma=3)
    assert df["snr"].tolist()[:3] == [30.0, 2.0, -4.0]
    assert math.isnan(df["snr"][3])
    assert df["detected"].tolist() == [True, False, False, False]
    assert df["magnitude"][0] == pytest.approx(23.9 - 2.5 * math.log10(300))
    assert df["magnitude_error"][0] == pytest.approx(1.0857362 * 10 / 300, rel=1e-6)
    # non-detections: no magnitude (even for the negative flux), a 3-sigma limit from the error
    assert df["magnitude"][1:].isna().all()
    assert df["limit"][1] == pytest.approx(23.9 - 2.5 * math.log10(30))
    assert df["limit"][2] == pytest.approx(23.9 - 2.5 * math.log10(30))
    assert df["limit_nsigma"][1] == 3
    assert math.isnan(df["limit"][0])


def test_normalize_orders_fills_and_keeps_extras():
    df = pd.DataFrame(
        {
            "atlas_chi2n": [1.5, 2.5],
            "flux_ujy": [10.0, 20.0],
            "flux_err_ujy": [2.0, 4.0],
            "mjd": [60001.0, 60000.0],
            "band": ["atlaso", "atlasc"],
        }
    )
    out = photometry.normalize(df, product_id=7)
    assert list(out.columns) == photometry.COLUMNS + ["atlas_chi2n"]
    assert out["mjd"].tolist() == [60000.0, 60001.0]  # sorted by time
    assert out["atlas_chi2n"].tolist() == [2.5, 1.5]  # extras follow their rows
    assert out["zp"].eq(23.9).all() and out["zpsys"].eq("ab").all()
    assert out["snr"].tolist() == [5.0, 5.0]
    assert out["product_id"].eq(7).all() and out["n_combined"].eq(1).all()
    assert out["time_utc"][0] == "2023-02-25T00:00:00.000Z"


@pytest.mark.parametrize("fmt", ["csv", "ecsv", "json"])
def test_write_table_formats(fmt):
    df = photometry.normalize(
        pd.DataFrame({"mjd": [60000.0], "flux_ujy": [10.0], "flux_err_ujy": [1.0], "band": ["ztfg"]}),
        product_id=1,
    )
    buf = io.BytesIO()
    photometry.write_table(df, buf, fmt)
    text = buf.getvalue().decode()
    if fmt == "csv":
        assert text.splitlines()[0].split(",") == photometry.COLUMNS
    elif fmt == "ecsv":
        assert text.startswith("# %ECSV")
        assert "unit: uJy" in text
    else:
        import json

        row = json.loads(text)[0]
        assert row["flux_ujy"] == 10.0 and row["magnitude"] is None


def test_csv_round_trip(tmp_path):
    df = photometry.normalize(
        pd.DataFrame(
            {
                "mjd": [60000.0, 60001.0],
                "flux_ujy": [10.0, -3.0],
                "flux_err_ujy": [1.0, 1.0],
                "band": ["ztfg", "ztfr"],
                "object_id": ["123456789012345678", None],
            }
        ),
        product_id=3,
    )
    path = tmp_path / "p.csv"
    with open(path, "wb") as fh:
        photometry.write_table(df, fh)
    back = photometry.read_table(path)
    assert back["object_id"][0] == "123456789012345678"  # 64-bit ids never pass through float
    assert back["flux_ujy"].tolist() == [10.0, -3.0]


def test_summarize_counts_per_band_by_hand():
    """Bands sorted, a missing band counted as 'nan' (last), detections per band, objects
    and flux kinds once each, without missing values."""
    df = pd.DataFrame(
        {
            "band": pd.Series(["ztfr", "ztfg", None, "ztfr", np.nan], dtype=object),
            "detected": [True, False, True, True, False],
            "mjd": [60002.0, 60001.5, np.nan, 60000.25, 60003.0],
            "object_id": pd.Series(["22", None, "1", "22", "1"], dtype=object),
            "flux_kind": pd.Series(["total"] * 4 + [None], dtype=object),
        }
    )
    summary = photometry.summarize(df)
    assert summary["bands"] == {"ztfg": {"rows": 1, "detections": 0}, "ztfr": {"rows": 2, "detections": 2},
                                "nan": {"rows": 2, "detections": 1}}
    assert list(summary["bands"]) == ["ztfg", "ztfr", "nan"]
    assert (summary["rows"], summary["detections"]) == (5, 3)
    assert (summary["mjd_min"], summary["mjd_max"]) == (60000.25, 60003.0)
    assert summary["objects"] == ["1", "22"] and summary["flux_kind"] == ["total"]
    empty = photometry.summarize(df.iloc[:0])
    assert empty["bands"] == {} and empty["rows"] == 0 and empty["mjd_min"] is None
