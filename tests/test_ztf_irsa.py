"""`stdq query ztf` end to end against the IRSA emulator: values, objects, options, faults.

Expected numbers are computed here from the raw CSV IRSA answered, with the
documented rules (photometry.md 3.1): flux = 10**(-0.4 (mag - 23.9)) uJy,
error = flux * magerr * ln(10) / 2.5, mjd = IRSA mjd + exptime/2.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path

import pytest

from conftest import assert_clean_error
from stdq.photometry import COLUMNS
from stdq.testing.fakeserver import Response, settings_toml

SN = ("SN 2023ixf", "--ra", "210.910674", "--dec", "54.311650")
TARGET = (210.910674, 54.311650)
TARGET_OIDS = {"735105200012345", "735205200023456", "176809100034567"}
NEIGHBOUR = "735105200012399"
FAR_STAR = "735205200023499"


def sep_arcsec(ra1, dec1, ra2, dec2):
    """Haversine separation, written out here rather than taken from stdq."""
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    s = math.sin((d2 - d1) / 2) ** 2 + math.cos(d1) * math.cos(d2) * math.sin((r2 - r1) / 2) ** 2
    return math.degrees(2 * math.asin(math.sqrt(s))) * 3600


def product_dir(stdq) -> Path:
    folders = [p.parent for p in stdq.data_dir.rglob("product.json")]
    assert len(folders) == 1, folders
    return folders[0]


def read_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def irsa_requests(stdq):
    return stdq.server.log_of(emulator="irsa")


def test_values_follow_the_documented_rules(stdq):
    result = stdq.run("query", "ztf", *SN)
    assert result.returncode == 0, result.stderr
    folder = product_dir(stdq)
    raw_bytes = (folder / "raw" / "lightcurve.csv").read_bytes()
    assert raw_bytes.splitlines()[0] == (
        b"oid,expid,hjd,mjd,mag,magerr,catflags,filtercode,ra,dec,chi,sharp,filefracday,field,"
        b"ccdid,qid,limitmag,magzp,magzprms,clrcoeff,clrcounc,exptime,airmass,programid"
    )
    raw = {f"{r['oid']}:{r['expid']}": r for r in csv.DictReader(io.StringIO(raw_bytes.decode()))}
    rows = read_rows(folder / "photometry.csv")
    assert list(rows[0])[: len(COLUMNS)] == COLUMNS
    assert {r["object_id"] for r in rows} == TARGET_OIDS
    # one worked example: the first zg epoch, mag 14.8215 +- 0.0213
    first = next(r for r in rows if r["source_row_id"] == "735105200012345:237011001")
    assert float(first["flux_ujy"]) == pytest.approx(10 ** (0.4 * (23.9 - 14.8215)), rel=1e-9)
    assert float(first["flux_ujy"]) == pytest.approx(4279.5687, abs=1e-3)
    assert float(first["flux_err_ujy"]) == pytest.approx(4279.5687 * 0.0213 / 1.0857362, rel=1e-6)
    assert float(first["mjd"]) == pytest.approx(60084.15312 + 15 / 86400, abs=1e-9)
    assert first["time_utc"].startswith("2023-05-20T03:40:44.5")
    for row in rows:
        src = raw[row["source_row_id"]]
        mag, magerr = float(src["mag"]), float(src["magerr"])
        flux = 10 ** (-0.4 * (mag - 23.9))
        assert float(row["flux_ujy"]) == pytest.approx(flux, rel=1e-9)
        assert float(row["flux_err_ujy"]) == pytest.approx(flux * magerr * math.log(10) / 2.5, rel=1e-9)
        assert float(row["mjd"]) == pytest.approx(float(src["mjd"]) + float(src["exptime"]) / 2 / 86400, abs=1e-9)
        assert float(row["ztf_hjd"]) == float(src["hjd"])  # kept apart, never the time
        assert row["detected"] == "True"
        assert float(row["magnitude"]) == mag and float(row["magnitude_error"]) == magerr
        assert row["limit"] == "" and row["limit_nsigma"] == ""
        assert float(row["image_depth"]) == float(src["limitmag"])
        assert row["flux_kind"] == "total"
        assert row["survey"] == "ZTF" and row["telescope"] == "P48" and row["instrument"] == "ZTF"
        assert row["band"] == {"zg": "ztfg", "zr": "ztfr", "zi": "ztfi"}[src["filtercode"]]
        assert row["filter"] == src["filtercode"]
        assert int(row["quality_flag"]) == (1 if int(src["catflags"]) != 0 else 0)
        assert int(row["ztf_catflags"]) == int(src["catflags"])
        assert row["object_id"] == src["oid"] and row["ztf_expid"] == src["expid"]
        sep = sep_arcsec(*TARGET, float(src["ra"]), float(src["dec"]))
        assert float(row["sep_arcsec"]) == pytest.approx(sep, abs=1e-6)
    # the one catflags=4 epoch is kept and flagged; catflags=32768 was removed by IRSA (mask)
    assert sum(int(r["quality_flag"]) for r in rows) == 1
    assert not any(int(r["catflags"]) & 32768 for r in raw.values())
    (request,) = irsa_requests(stdq)
    assert request.query["POS"] == ["CIRCLE 210.910674 54.31165 0.00041667"]  # 1.5" in degrees
    assert request.query["BAD_CATFLAGS_MASK"] == ["32768"]
    assert request.query["FORMAT"] == ["CSV"]
    assert "TIME" not in request.query and "COLLECTION" not in request.query


def test_nearest_oid_per_group_with_a_neighbour_in_the_cone(stdq):
    result = stdq.run("--json", "query", "ztf", *SN)
    assert result.returncode == 0, result.stderr
    folder = product_dir(stdq)
    raw = list(csv.DictReader(io.StringIO((folder / "raw" / "lightcurve.csv").read_text())))
    # hand rule: the oid position is the median of its rows; nearest per field/ccd/quadrant/filter
    by_oid: dict[str, list[dict[str, str]]] = {}
    for r in raw:
        by_oid.setdefault(r["oid"], []).append(r)
    seps = {
        oid: sep_arcsec(*TARGET, statistics.median(float(r["ra"]) for r in rs),
                        statistics.median(float(r["dec"]) for r in rs))
        for oid, rs in by_oid.items()
    }
    assert 0.9 < seps[NEIGHBOUR] < 1.1  # the neighbour really is inside the 1.5" cone
    groups: dict[tuple, list[str]] = {}
    for oid, rs in by_oid.items():
        r = rs[0]
        groups.setdefault((r["field"], r["ccdid"], r["qid"], r["filtercode"]), []).append(oid)
    expected = {min(oids, key=lambda o: seps[o]) for oids in groups.values()}
    assert expected == TARGET_OIDS
    rows = read_rows(folder / "photometry.csv")
    assert {r["object_id"] for r in rows} == expected
    # the neighbour shares the target's zg exposures: without the rule they would double up
    assert len({r["ztf_expid"] for r in rows if r["filter"] == "zg"}) == len([r for r in rows if r["filter"] == "zg"])
    meta = json.loads((folder / "product.json").read_text())
    n_neighbour = len(by_oid[NEIGHBOUR])
    assert meta["left_out"] == {
        "rows of 1 other object in the cone (nearest oid kept per field/ccd/quadrant/filter)": n_neighbour
    }
    assert meta["counts"]["rows"] == len(raw) - n_neighbour
    notes = {o["oid"]: o for o in meta["service_notes"]["objects"]}
    assert notes[NEIGHBOUR]["kept"] is False and notes[NEIGHBOUR]["sep_arcsec"] == pytest.approx(seps[NEIGHBOUR], abs=1e-3)
    assert all(notes[o]["kept"] for o in TARGET_OIDS)
    info = json.loads(result.stdout)
    assert info["rows"] == len(raw) - n_neighbour == info["detections"]


def test_all_objects_keeps_every_oid(stdq):
    result = stdq.run("query", "ztf", *SN, "--all-objects", "--radius", "5")
    assert result.returncode == 0, result.stderr
    folder = product_dir(stdq)
    raw = list(csv.DictReader(io.StringIO((folder / "raw" / "lightcurve.csv").read_text())))
    rows = read_rows(folder / "photometry.csv")
    assert len(rows) == len(raw)
    assert {r["object_id"] for r in rows} == TARGET_OIDS | {NEIGHBOUR, FAR_STAR}
    meta = json.loads((folder / "product.json").read_text())
    assert meta["left_out"] == {}
    assert meta["query"]["params"]["all_objects"] is True
    # without --all-objects the same cone leaves out the rows of two objects
    result = stdq.run("query", "ztf", *SN, "--radius", "5", "--force")
    assert result.returncode == 0, result.stderr
    assert "rows of 2 other objects in the cone" in result.stdout


def test_options_on_the_wire(stdq):
    result = stdq.run(
        "query", "ztf", *SN, "--bands", "g,r", "--mjd-min", "60085", "--release", "ZTF_DR23",
        "--radius", "600", "--bad-catflags-mask", "0",
    )
    assert result.returncode == 0, result.stderr
    (request,) = irsa_requests(stdq)
    assert request.query["POS"] == ["CIRCLE 210.910674 54.31165 0.16666667"]  # <= 0.1667 deg
    assert request.query["BANDNAME"] == ["g,r"]
    assert request.query["TIME"] == ["60085 Inf"]  # an open upper bound
    assert request.query["COLLECTION"] == ["ztf_dr23"]
    assert request.query["BAD_CATFLAGS_MASK"] == ["0"]
    rows = read_rows(product_dir(stdq) / "photometry.csv")
    assert min(float(r["ztf_mjd"]) for r in rows) >= 60085
    # mask 0: the catflags=32768 epoch comes back, flagged
    assert any(r["ztf_catflags"] == "32768" and r["quality_flag"] == "1" for r in rows)
    result = stdq.run("query", "ztf", *SN, "--date-max", "2023-05-25", "--force")
    assert result.returncode == 0, result.stderr
    # 2023-05-25T00:00Z = MJD 60089
    assert irsa_requests(stdq)[-1].query["TIME"] == ["-Inf 60089"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--radius", "601"], "600 arcsec"),
        (["--radius", "0"], "positive"),
        (["--bands", "g,z"], "--bands"),
        (["--release", "dr23"], "--release"),
        (["--bad-catflags-mask", "-1"], "--bad-catflags-mask"),
    ],
)
def test_bad_options_exit_2_before_any_request(stdq, args, needle):
    result = stdq.run("query", "ztf", *SN, *args)
    last = assert_clean_error(result, 2)
    assert needle in result.stderr, last
    assert irsa_requests(stdq) == []
    assert not (stdq.data_dir / "products").exists()


def test_header_only_answer_is_no_data(stdq):
    result = stdq.run("query", "ztf", "Empty Field", "--ra", "150", "--dec", "-30")
    last = assert_clean_error(result, 5)
    assert "no ZTF light-curve rows" in result.stderr, last
    (request,) = irsa_requests(stdq)
    assert request.status == 200
    assert not list(stdq.data_dir.rglob("photometry.csv"))


def test_400_is_one_clear_line_and_no_product(stdq):
    # the emulator serves the 5 latest releases; an old one is refused with 400
    result = stdq.run("query", "ztf", *SN, "--release", "ztf_dr5")
    last = assert_clean_error(result, 1)
    assert "HTTP 400" in last and "ztf_dr5" in last
    assert len([x for x in result.stderr.strip().splitlines() if not x.startswith("note: ")]) == 1
    assert not (stdq.data_dir / "products").exists()


def test_html_instead_of_csv_is_a_temporary_failure_without_product(stdq):
    stdq.server.add_fault("html", path="nph_light_curves")
    result = stdq.run("query", "ztf", *SN)
    last = assert_clean_error(result, 75)
    assert "answered an HTML page where CSV was expected: '<!DOCTYPE html>'" in last
    assert len([x for x in result.stderr.strip().splitlines() if not x.startswith("note: ")]) == 1
    assert not (stdq.data_dir / "products").exists()
    assert not list(stdq.data_dir.rglob("photometry.csv"))


def test_csv_without_the_documented_columns_fails(stdq):
    stdq.server.emulator("irsa").handle = lambda request: Response.text("a,b\n1,2\n", 200, "text/csv")
    result = stdq.run("query", "ztf", *SN)
    last = assert_clean_error(result, 1)
    assert "not the expected CSV" in last
    assert not (stdq.data_dir / "products").exists()


def test_truncated_answer_is_retried_and_an_empty_one_is_temporary(stdq, recorded_waits):
    stdq.server.add_fault("truncate", path="nph_light_curves")
    result = stdq.run("query", "ztf", *SN)
    assert result.returncode == 0, result.stderr
    assert len(irsa_requests(stdq)) == 2
    raw = (product_dir(stdq) / "raw" / "lightcurve.csv").read_bytes()
    assert raw.endswith(b"\n") and len(raw.splitlines()) == 1 + 20  # the whole answer, kept whole
    stdq.server.add_fault("empty", path="nph_light_curves")
    result = stdq.run("query", "ztf", *SN, "--force")
    last = assert_clean_error(result, 75)
    assert "empty" in last


def test_server_errors_exit_75(stdq, recorded_waits):
    stdq.server.add_fault("500", path="nph_light_curves", times=10)
    result = stdq.run("query", "ztf", *SN)
    last = assert_clean_error(result, 75)
    assert "HTTP 500" in last and "gave up after 3 tries" in last
    assert len(irsa_requests(stdq)) == 3  # max_retries = 2 in the test settings
    assert len(recorded_waits) == 2  # a backoff before each retry


def test_timeout_exits_75(stdq, recorded_waits):
    # the three tries each wait out the read timeout (0.25 s) for real
    stdq.config_path.write_text(settings_toml(stdq.server).replace("timeout = 5", "timeout = 0.25"))
    stdq.server.add_fault("hang", path="nph_light_curves", times=3, seconds=1)
    result = stdq.run("query", "ztf", *SN)
    last = assert_clean_error(result, 75)
    assert "timed out" in last
    assert not (stdq.data_dir / "products").exists()
