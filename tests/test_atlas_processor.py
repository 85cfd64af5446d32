"""The ATLAS processor on the two real result files and on small files made here.

Expected numbers are computed in the tests from the raw file values with the
documented rules (photometry.md 1.2, 4): limit = 23.9 - 2.5 log10(3 duJy),
magnitude = 23.9 - 2.5 log10(uJy) for snr >= 3, mjd = MJD + 15 s.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from conftest import REALDATA, needs_realdata
from stdq import photometry
from stdq.errors import QueryFailed
from stdq.processors.atlas import AtlasProcessor, isot_fast, read_result
from stdq.store import DataProduct, RawFile

JOB01088 = REALDATA / "atlas" / "job01088.txt"
TOM = REALDATA / "atlas" / "tom_base_test_atlas_fp.txt"
HEADER = (
    "###MJD          m      dm   uJy   duJy F err chi/N     RA       Dec        x        y     maj"
    "  min   phi  apfit mag5sig Sky   Obs"
)
FIFTEEN_SECONDS = 15 / 86400


def product_for(path: Path, target=(0.0, 0.0), **params) -> DataProduct:
    product = DataProduct(
        id=7, service="atlas", data_product_type="atlas_photometry",
        target={"ra": target[0], "dec": target[1]}, params={"stack": "none", **params},
        path=path.parent,
    )
    product.raw_files = [RawFile(name=path.name, path=path, sha256="", bytes=path.stat().st_size)]
    return product


def process(path: Path, target=(0.0, 0.0), settings=None, **params):
    product = product_for(path, target, **params)
    table = photometry.normalize(AtlasProcessor(settings or {}).process(product), product_id=7)
    return table, product


def raw_rows(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()[1:] if line.strip()]


def row(table, obs: str):
    found = table[table["source_row_id"] == obs]
    assert len(found) == 1, obs
    return found.iloc[0]


@needs_realdata
def test_tom_toolkit_file_counts_and_hand_values():
    table, product = process(TOM, (65.00165, -54.93795))
    assert len(table) == 32 and product.left_out == {}
    assert list(table.columns[: len(photometry.COLUMNS)]) == photometry.COLUMNS
    # 17 rows with uJy/duJy < 3 (counted from the raw numbers here): limits, no magnitude
    raw = raw_rows(TOM)
    low = [r for r in raw if int(r[3]) / int(r[4]) < 3]
    assert len(low) == 17
    assert int((~table["detected"]).sum()) == 17 and int(table["detected"].sum()) == 15
    assert table.loc[~table["detected"], "magnitude"].isna().all()
    assert table.loc[~table["detected"], "limit_nsigma"].eq(3.0).all()
    assert table.loc[table["detected"], "limit"].isna().all()

    # 60316.142545  17.349 0.089  417  37 o  0  28.03 ... 19.34 20.82 04a60316o0180o
    r = row(table, "04a60316o0180o")
    assert r["flux_ujy"] == 417 and r["flux_err_ujy"] == 37
    assert r["snr"] == pytest.approx(417 / 37)  # 11.27
    assert r["detected"]
    assert r["magnitude"] == pytest.approx(23.9 - 2.5 * math.log10(417), abs=1e-9)  # 17.34966
    assert r["magnitude"] == pytest.approx(17.34966, abs=1e-5)
    assert r["magnitude_error"] == pytest.approx(2.5 / math.log(10) * 37 / 417)  # 0.09634
    assert r["mjd"] == pytest.approx(60316.142545 + FIFTEEN_SECONDS, abs=1e-9)  # 60316.1427186
    assert r["time_utc"] == "2024-01-07T03:25:30.888Z"  # 0.1427186 d = 3 h 25 min 30.888 s
    assert r["telescope"] == "ATLAS-04a" and r["band"] == "atlaso" and r["filter"] == "o"
    assert r["image_depth"] == 19.34
    assert r["quality_flag"] == photometry.FLAG_POOR_FIT  # chi/N 28.03 > 10
    assert r["atlas_m"] == 17.349 and r["atlas_chi2n"] == 28.03

    # 60316.145763 -17.672 0.077 -310  24: negative flux -> a limit; the negative m is no magnitude
    r = row(table, "04a60316o0187o")
    assert r["flux_ujy"] == -310 and not r["detected"] and math.isnan(r["magnitude"])
    assert r["limit"] == pytest.approx(23.9 - 2.5 * math.log10(3 * 24))  # 19.25667
    assert r["limit"] == pytest.approx(19.25667, abs=1e-5)
    assert r["atlas_m"] == -17.672

    # 60321.870492  21.153 1.437  13  18 c ... 03a60322o0206c: night 60322 from Obs, MJD 60321
    r = row(table, "03a60322o0206c")
    assert r["limit"] == pytest.approx(23.9 - 2.5 * math.log10(54), abs=1e-9)  # 19.56902
    assert r["telescope"] == "ATLAS-03a" and r["band"] == "atlasc" and r["atlas_night"] == 60322
    assert r["mjd"] == pytest.approx(60321.870492 + FIFTEEN_SECONDS, abs=1e-9)

    # 60324.116538 16.673 0.046 778 36: magnitude 23.9 - 2.5 log10(778) = 16.67255
    r = row(table, "04a60324o0200o")
    assert r["magnitude"] == pytest.approx(16.67255, abs=1e-5)
    # 60333.845249 19.153 0.406 79 32: snr 2.47 < 3, a limit although m is positive
    r = row(table, "03a60334o0160o")
    assert not r["detected"] and r["limit"] == pytest.approx(23.9 - 2.5 * math.log10(96))
    assert r["limit"] == pytest.approx(18.94432, abs=1e-5)
    # 60328.106077 19.414 0.597 62 37: limit 23.9 - 2.5 log10(111) = 18.78669
    assert row(table, "04a60328o0180o")["limit"] == pytest.approx(18.78669, abs=1e-5)
    assert set(table["flux_kind"]) == {"difference"} and set(table["survey"]) == {"ATLAS"}


@needs_realdata
def test_job01088_counts_and_hand_values():
    table, product = process(JOB01088, (29.86137, 30.72675))
    raw = raw_rows(JOB01088)
    assert len(raw) == 147 and len(table) == 147 and product.left_out == {}
    detections = sum(1 for r in raw if int(r[3]) / int(r[4]) >= 3)
    assert detections == 74
    assert int(table["detected"].sum()) == 74 and int((~table["detected"]).sum()) == 73
    # flags from the raw columns: err != 0 or chi/N > 10 or duJy > 160
    flagged = sum(1 for r in raw if int(r[6]) != 0 or float(r[7]) > 10 or int(r[4]) > 160)
    assert int((table["quality_flag"] != 0).sum()) == flagged == 15
    units = {f"ATLAS-{r[18][:3]}" for r in raw}
    assert set(table["telescope"]) == units == {"ATLAS-01a", "ATLAS-02a"}
    assert set(table["band"]) == {"atlasc", "atlaso"}

    # first row: 59101.519211 -21.740 1.398 -7 10 o ... 01a59101o0618o -> 3-sigma limit of 30 uJy
    r = row(table, "01a59101o0618o")
    assert r["limit"] == pytest.approx(23.9 - 2.5 * math.log10(30))  # 20.20720
    assert r["limit"] == pytest.approx(20.20720, abs=1e-5)
    assert r["flux_ujy"] == -7 and math.isnan(r["magnitude"])
    assert r["mjd"] == pytest.approx(59101.519211 + FIFTEEN_SECONDS, abs=1e-9)
    # 59103.552116 16.499 0.011 912 10 o 0 613.69: a bright detection with a poor fit
    r = row(table, "02a59103o0723o")
    assert r["magnitude"] == pytest.approx(23.9 - 2.5 * math.log10(912))  # 16.50001
    assert r["magnitude"] == pytest.approx(16.50001, abs=1e-5)
    assert r["quality_flag"] == photometry.FLAG_POOR_FIT and r["telescope"] == "ATLAS-02a"
    # 59105.520940 19.606 0.208 52 11: snr 4.73 -> magnitude 23.9 - 2.5 log10(52) = 19.60999
    assert row(table, "01a59105o0640o")["magnitude"] == pytest.approx(19.60999, abs=1e-5)
    # 59115.579428 20.497 0.305 23 7 c: snr 3.29 -> detected, 20.49568; filter from F, not Obs
    r = row(table, "02a59115o0768c")
    assert r["detected"] and r["magnitude"] == pytest.approx(20.49568, abs=1e-5)
    assert r["band"] == "atlasc"
    # the forced position is 0.108 arcsec from the target (Dec differs by 3e-5 deg)
    assert r["sep_arcsec"] == pytest.approx(0.00003 * 3600, abs=1e-3)


def write(tmp_path: Path, text: str, name: str = "job00001.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


LINE = (
    "{mjd} {m} 0.100 {ujy} {dujy} {f} {err} {chi} 10.00000 20.00000 100.00 200.00 2.00 2.00 0.0"
    " -0.400 19.50 20.50 {obs}"
)


def line(mjd, ujy, dujy, obs, f="o", err=0, chi=1.5, m="18.000"):
    return LINE.format(mjd=mjd, m=m, ujy=ujy, dujy=dujy, f=f, err=err, chi=chi, obs=obs)


def test_header_by_name_any_order_and_double_hash(tmp_path):
    text = "##MJD Obs duJy uJy F chi/N err ZP\n60000.1 01a60000o0001o 10 50 c 1.0 0 30.1\n"
    table, product = process(write(tmp_path, text))
    r = table.iloc[0]
    assert r["flux_ujy"] == 50 and r["flux_err_ujy"] == 10 and r["band"] == "atlasc"
    assert r["magnitude"] == pytest.approx(23.9 - 2.5 * math.log10(50))
    assert r["atlas_zp"] == 30.1 and math.isnan(r["image_depth"])  # an older file: ZP, no mag5sig
    assert r["telescope"] == "ATLAS-01a"


def test_flags_bad_rows_repeats_and_zero_error_left_out(tmp_path):
    rows = [
        line("60000.30", 100, 10, "02a60000o0001o"),
        line("60000.31", 100, 10, "02a60000o0002o", err=3),
        line("60000.32", 100, 10, "02a60000o0003o", chi=12.5),
        line("60000.33", 100, 170, "02a60000o0004o"),
        line("60000.34", 100, 0, "02a60000o0005o"),
        line("60000.35", "nan", 10, "02a60000o0006o"),
        line("60000.36", 100, "--", "02a60000o0007o"),
        line("60000.30", 100, 10, "02a60000o0001o"),  # the first exposure again
        line("60000.37", -90, 10, "02a60000o0008o", m="-18.014"),
    ]
    table, product = process(write(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n"))
    assert product.left_out == {
        "non-finite flux or error": 2,
        "flux error <= 0": 1,
        "repeated exposure (same Obs and MJD)": 1,
    }
    flags = dict(zip(table["source_row_id"], table["quality_flag"], strict=True))
    assert flags == {
        "02a60000o0001o": 0,
        "02a60000o0002o": photometry.FLAG_SURVEY_CODE,
        "02a60000o0003o": photometry.FLAG_POOR_FIT,
        "02a60000o0004o": photometry.FLAG_LARGE_ERROR,
        "02a60000o0008o": 0,
    }
    negative = row(table, "02a60000o0008o")  # snr -9: not a detection, whatever m says
    assert not negative["detected"] and math.isnan(negative["magnitude"])
    assert negative["limit"] == pytest.approx(23.9 - 2.5 * math.log10(30))


def test_thresholds_are_settings_and_reduced_is_total_flux(tmp_path):
    text = HEADER + "\n" + line("60000.3", 40, 10, "01a60000o0001o", chi=8.0) + "\n"
    path = write(tmp_path, text)
    table, _ = process(path, reduced=True)
    assert table.iloc[0]["detected"] and table.iloc[0]["flux_kind"] == "total"
    strict, _ = process(path, settings={"snr_threshold": 5.0, "limit_nsigma": 5.0, "chi2_max": 5.0})
    r = strict.iloc[0]
    assert not r["detected"] and r["limit_nsigma"] == 5.0
    assert r["limit"] == pytest.approx(23.9 - 2.5 * math.log10(50))
    assert r["quality_flag"] == photometry.FLAG_POOR_FIT and r["flux_kind"] == "difference"


def test_malformed_and_non_atlas_files(tmp_path):
    text = HEADER + "\n" + line("60000.3", 40, 10, "01a60000o0001o") + " extra\n"
    text += line("60000.4", 40, 10, "01a60000o0002o") + "\n"
    text += line("60000.5", 798, 28, "01a60000o0003o")[:40] + "\n"  # a line cut short
    text += line("60000.6", 50, 10, "01a60000o0004o") + "\n"
    table, product = process(write(tmp_path, text))
    assert list(table["source_row_id"]) == ["01a60000o0002o", "01a60000o0004o"]
    assert product.left_out == {"malformed lines (wrong number of fields)": 2}
    cut = HEADER + "\n" + line("60000.4", 40, 10, "01a60000o0002o") + "\n"
    cut += line("60000.5", 798, 28, "01a60000o0003o")[:30] + "\n"
    table, product = process(write(tmp_path, cut, "job00002.txt"))
    assert list(table["flux_ujy"]) == [40]
    assert product.left_out == {"malformed lines (wrong number of fields)": 1}
    with pytest.raises(QueryFailed, match="HTML"):
        read_result(b"<!DOCTYPE html>\n<html><body>Bad Gateway</body></html>\n")
    with pytest.raises(QueryFailed, match="header"):
        read_result(b"60000.1 18.0 0.1 40 10 o\n")
    with pytest.raises(QueryFailed, match="no column duJy"):
        read_result(b"###MJD m dm uJy F\n60000.1 18.0 0.1 40 o\n")
    frame, malformed = read_result((HEADER + "\n").encode())
    assert len(frame) == 0 and malformed == 0
    # tabs and CRLF line ends read the same as spaces
    tabbed = (HEADER + "\r\n" + line("60000.3", 40, 10, "01a60000o0001o").replace(" ", "\t") + "\r\n")
    frame, _ = read_result(tabbed.encode())
    assert frame["uJy"].tolist() == [40] and frame["Obs"].tolist() == ["01a60000o0001o"]


def test_time_strings_match_the_shared_helper():
    import numpy as np

    values = np.array([59101.5193846, 60000.0, 51544.5, 60369.99999999, np.nan, 40587.0])
    assert list(isot_fast(values)) == list(photometry.mjd_to_isot(values))


def test_nightly_stack_by_hand(tmp_path):
    rows = [
        # night 60000, unit 02a, filter o: three good exposures and one poor fit
        line("60000.300000", 100, 10, "02a60000o0001o"),
        line("60000.310000", 110, 10, "02a60000o0002o"),
        line("60000.320000", 90, 20, "02a60000o0003o"),
        line("60000.330000", 300, 10, "02a60000o0004o", chi=50),
        # the same night and filter on unit 01a: its own bin
        line("60000.400000", 20, 10, "01a60000o0001o"),
        # night 60003: every exposure flagged
        line("60003.300000", 50, 200, "02a60003c0001c", f="c"),
        line("60003.310000", 70, 200, "02a60003c0002c", f="c"),
    ]
    table, product = process(write(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n"), stack="nightly")
    assert len(table) == 3
    first = row(table, "02a60000o")
    # weights 1/100, 1/100, 1/400: sum 0.0225; flux (1 + 1.1 + 0.225) / 0.0225 = 103.333
    assert first["flux_ujy"] == pytest.approx(2.325 / 0.0225)
    assert first["flux_err_ujy"] == pytest.approx(0.0225**-0.5)  # 6.667
    assert first["snr"] == pytest.approx(103.3333 / 6.6667, rel=1e-4)
    assert first["magnitude"] == pytest.approx(23.9 - 2.5 * math.log10(2.325 / 0.0225))
    mid = [60000.30 + FIFTEEN_SECONDS, 60000.31 + FIFTEEN_SECONDS, 60000.32 + FIFTEEN_SECONDS]
    assert first["mjd"] == pytest.approx((mid[0] / 100 + mid[1] / 100 + mid[2] / 400) / 0.0225)
    assert first["n_combined"] == 3 and first["quality_flag"] == 0
    assert first["atlas_n_flagged"] == 1 and first["atlas_night"] == 60000
    # image depth of three 19.50 images in inverse variance: sigma_i = 10^(-0.4 (19.5 - 23.9)) / 5
    sigma = 10 ** (-0.4 * (19.5 - 23.9)) / 5
    combined = (1 / sigma**2 * 3) ** -0.5
    assert first["image_depth"] == pytest.approx(23.9 - 2.5 * math.log10(5 * combined))
    single = row(table, "01a60000o")  # 20 +- 10: snr 2, a 3-sigma limit of 30 uJy
    assert single["n_combined"] == 1 and not single["detected"]
    assert single["limit"] == pytest.approx(23.9 - 2.5 * math.log10(30))
    flagged = row(table, "02a60003c")  # only flagged exposures: combined, and flagged
    assert flagged["n_combined"] == 2 and flagged["quality_flag"] == photometry.FLAG_LARGE_ERROR
    assert flagged["flux_ujy"] == pytest.approx(60) and flagged["band"] == "atlasc"
    assert flagged["flux_err_ujy"] == pytest.approx((2 / 200**2) ** -0.5)
    assert product.notes["stack"]["bins"] == 3
    assert product.notes["stack"]["flagged_exposures_not_combined"] == 1


@needs_realdata
def test_real_file_stacks_per_observatory_night():
    table, product = process(TOM, (65.00165, -54.93795), stack="nightly")
    # nights from Obs: 04a 60316, 60320, 60324, 60328, 60332; 03a 60322 (c), 60334 (o)
    assert sorted(table["source_row_id"]) == [
        "03a60322c", "03a60334o", "04a60316o", "04a60320o", "04a60324o", "04a60328o", "04a60332o",
    ]
    assert int(table["n_combined"].sum()) + int(table["atlas_n_flagged"].sum()) == 32
    r = row(table, "04a60328o")  # one unflagged exposure (62 +- 37): it alone
    assert r["n_combined"] == 1 and r["flux_ujy"] == 62 and r["atlas_n_flagged"] == 3
