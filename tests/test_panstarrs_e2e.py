"""`stdq query panstarrs` end to end: the installed command against the MAST emulator on 127.0.0.1.

Expected numbers are computed here by hand from the raw answers the service kept
(read with the csv module) and the documented rules (photometry.md sections 2, 4, 6):
flux_ujy = psfFlux[Jy] * 1e6, m = 23.9 - 2.5 log10(flux_ujy), dm = 2.5/ln(10) err/flux,
UTC = obsTime(TAI) - N/86400 with N = 34 s before MJD 56109 (2012-07-01), 35 s
before 57204 (2015-07-01), 36 s before 57754 (2017-01-01).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import pytest
from test_panstarrs_processor import sep_arcsec, tai_minus_utc

from conftest import assert_clean_error, assert_secret_nowhere
from stdq.testing import sky
from stdq.testing.fakeserver import settings_toml
from stdq.testing.mast import SN_ARTIFACT_ID, SN_NEIGHBOUR_ID, SN_TARGET_ID

SN = sky.find("SN 2023ixf")
COORDS = ["--ra", f"{SN.ra}", "--dec", f"{SN.dec}"]
BAD_INFOFLAG = 0x8 | 0x10 | 0x80 | 0x400 | 0x800 | 0x1000 | 0x2000 | 0x8000 | 0x10000 | 0x20000
BLEND_BITS = 0x100 | 0x4000


def configure(stdq, *, timeout: float | None = None, max_retries: int | None = None,
              pagesize: int | None = None) -> None:
    """Rewrite the settings file with other [http] values / a panstarrs pagesize."""
    text = settings_toml(stdq.server)
    if timeout is not None:
        text = text.replace("timeout = 5", f"timeout = {timeout}")
    if max_retries is not None:
        text = text.replace("max_retries = 2", f"max_retries = {max_retries}")
    if pagesize is not None:
        line = f'url = "{stdq.server.url("mast")}"'
        assert line in text
        text = text.replace(line, f"{line}\npagesize = {pagesize}")
    stdq.config_path.write_text(text, encoding="utf-8")


def read_csv_text(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def query_json(stdq, *args: str, env: dict | None = None):
    result = stdq.run("--json", "query", "panstarrs", *args, env=env)
    assert result.returncode == 0, (result.stdout, result.stderr)
    info = json.loads(result.stdout)
    product_dir = Path(info["path"]).parent
    return info, product_dir


def raw_rows(product_dir: Path, prefix: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted((product_dir / "raw").glob(f"{prefix}*.csv")):
        rows += read_csv_text(path.read_text())
    return rows


def mast_requests(stdq, table: str):
    return [r for r in stdq.server.log_of(emulator="mast") if re.search(rf"/{table}\.csv", r.path)]


def assert_no_product_files(stdq) -> None:
    data = stdq.data_dir
    assert not list(data.rglob("photometry.csv")), list(data.rglob("*"))
    assert not list(data.rglob("*.tmp")) and not list(data.rglob(".*.tmp"))


# -- the light curve -------------------------------------------------------------------------


def check_light_curve(product_dir: Path, table: list[dict[str, str]], target_ra: float, target_dec: float):
    """Every normalized row against its raw detection row, by hand."""
    raws = {r["detectID"]: r for r in raw_rows(product_dir, "detection-")}
    assert len(raws) == 50  # the target's 50 detections, in the kept answers
    seen_offsets, seen_years, flags = set(), set(), {}
    for row in table:
        raw = raws[row["source_row_id"]]
        flux_jy, err_jy, obs = float(raw["psfFlux"]), float(raw["psfFluxErr"]), float(raw["obsTime"])
        fid, info, qf = int(raw["filterID"]), int(raw["infoFlag"]), float(raw["psfQfPerfect"])
        assert row["object_id"] == str(SN_TARGET_ID) == raw["objID"]
        assert row["filter"] == "grizy"[fid - 1] and row["band"] == "ps1::" + "grizy"[fid - 1]
        assert (row["survey"], row["telescope"], row["instrument"]) == ("PS1", "PS1", "GPC1")
        assert float(row["flux_ujy"]) == pytest.approx(flux_jy * 1e6, rel=1e-12)
        assert float(row["flux_err_ujy"]) == pytest.approx(err_jy * 1e6, rel=1e-12)
        assert float(row["magnitude"]) == pytest.approx(23.9 - 2.5 * math.log10(flux_jy * 1e6), abs=1e-9)
        assert float(row["magnitude_error"]) == pytest.approx(2.5 / math.log(10) * err_jy / flux_jy, rel=1e-9)
        n = tai_minus_utc(obs)
        assert float(row["mjd"]) == pytest.approx(obs - n / 86400.0, abs=1e-9)
        seen_offsets.add(n)
        seen_years.add(row["time_utc"][:4])
        expected = (1 if info & BAD_INFOFLAG else 0) | (16 if info & BLEND_BITS else 0) | (8 if qf < 0.9 else 0)
        assert int(row["quality_flag"]) == expected, raw
        flags[raw["detectID"]] = expected
        assert row["detected"] == "True" and row["limit"] == "" and row["flux_kind"] == "total"
        assert float(row["sep_arcsec"]) == pytest.approx(
            sep_arcsec(target_ra, target_dec, float(raw["ra"]), float(raw["dec"])), abs=1e-6
        )
    assert seen_offsets == {34, 35, 36}
    assert seen_years == {"2010", "2011", "2013", "2014", "2016"}
    assert sorted(set(flags.values())) == [0, 1, 8, 16, 17]
    # the one row whose psfFlux is exactly 3.631e-05 Jy: 36.31 uJy, m = 23.9 - 2.5 log10(36.31)
    first = next(r for r in table if raws[r["source_row_id"]]["psfFlux"] == "3.631e-05")
    assert float(first["flux_ujy"]) == pytest.approx(36.31, rel=1e-12)
    assert float(first["magnitude"]) == pytest.approx(19.99993437771777, abs=1e-9)
    assert float(first["magnitude_error"]) == pytest.approx(0.010857362047581296, rel=1e-9)


def test_light_curve_by_coordinates(stdq):
    out = stdq.tmp / "sn.csv"
    info, product_dir = query_json(stdq, *COORDS, "-o", str(out))
    table = read_csv_text(out.read_text())
    assert info["rows"] == len(table) == 47 and info["detections"] == 47
    check_light_curve(product_dir, table, SN.ra, SN.dec)
    meta = json.loads((product_dir / "product.json").read_text())
    assert meta["left_out"] == {"psfFlux missing (-999 or null)": 2, "psfFlux = 0": 1}
    assert meta["counts"]["objects"] == [str(SN_TARGET_ID)]
    # the stored photometry.csv is the same table
    assert read_csv_text((product_dir / "photometry.csv").read_text()) == table

    # the cone: radius 2 arcsec in degrees, nDetections.gt=1; the neighbour (1.5") is in the
    # answer but not in the light curve; the nDetections=1 artifact (0.05", nearer than the
    # target) is kept out by the server-side filter.
    (cone,) = mast_requests(stdq, "mean")
    assert cone.query["nDetections.gt"] == ["1"]
    assert float(cone.query["radius"][0]) == pytest.approx(2 / 3600)
    mean_ids = {r["objID"] for r in raw_rows(product_dir, "mean-")}
    assert mean_ids == {str(SN_TARGET_ID), str(SN_NEIGHBOUR_ID)}
    assert str(SN_ARTIFACT_ID) not in mean_ids
    assert {r["object_id"] for r in table} == {str(SN_TARGET_ID)}
    (det,) = mast_requests(stdq, "detection")
    assert det.query["objID"] == [str(SN_TARGET_ID)] and det.query["page"] == ["1"]
    assert "mast_token" not in det.headers.get("cookie", "")  # no token configured


def test_name_to_coordinates_to_photometry(stdq):
    out = stdq.tmp / "sn.csv"
    info, product_dir = query_json(stdq, "SN 2023ixf", "-o", str(out))
    assert info["target"]["ra"] == pytest.approx(SN.ra, abs=1e-6)
    assert info["target"]["dec"] == pytest.approx(SN.dec, abs=1e-6)
    (cone,) = mast_requests(stdq, "mean")
    assert float(cone.query["ra"][0]) == pytest.approx(SN.ra, abs=1e-6)
    assert float(cone.query["dec"][0]) == pytest.approx(SN.dec, abs=1e-6)
    table = read_csv_text(out.read_text())
    assert len(table) == 47
    check_light_curve(product_dir, table, info["target"]["ra"], info["target"]["dec"])
    assert "SN_2023ixf" in str(product_dir)


def test_all_objects_adds_the_neighbour_with_its_id_and_separation(stdq):
    out = stdq.tmp / "all.csv"
    info, product_dir = query_json(stdq, *COORDS, "--all-objects", "-o", str(out))
    table = read_csv_text(out.read_text())
    ids = {r["object_id"] for r in table}
    assert ids == {str(SN_TARGET_ID), str(SN_NEIGHBOUR_ID)}
    neighbour = [r for r in table if r["object_id"] == str(SN_NEIGHBOUR_ID)]
    assert len(neighbour) == 12
    raws = {r["detectID"]: r for r in raw_rows(product_dir, "detection-")}
    for row in neighbour:
        raw = raws[row["source_row_id"]]
        sep = sep_arcsec(SN.ra, SN.dec, float(raw["ra"]), float(raw["dec"]))
        assert float(row["sep_arcsec"]) == pytest.approx(sep, abs=1e-6)
        assert float(row["sep_arcsec"]) == pytest.approx(1.5, abs=0.01)  # 1.2" east, 0.9" north
    assert info["rows"] == 47 + 12
    requested = sorted(r.query["objID"][0] for r in mast_requests(stdq, "detection"))
    assert requested == sorted([str(SN_TARGET_ID), str(SN_NEIGHBOUR_ID)])


@pytest.mark.parametrize("pagesize, pages", [(20, [20, 20, 10]), (25, [25, 25, 0])])
def test_detections_are_paged_until_a_short_page(stdq, pagesize, pages):
    configure(stdq, pagesize=pagesize)
    info, product_dir = query_json(stdq, *COORDS)
    assert info["rows"] == 47
    requests = mast_requests(stdq, "detection")
    assert [r.query["page"] for r in requests] == [[str(i)] for i in range(1, len(pages) + 1)]
    assert all(r.query["pagesize"] == [str(pagesize)] for r in requests)
    files = sorted((product_dir / "raw").glob("detection-*.csv"))
    assert [len(read_csv_text(f.read_text())) for f in files] == pages


def test_mean_table(stdq):
    out = stdq.tmp / "mean.csv"
    info, product_dir = query_json(stdq, *COORDS, "--table", "mean", "-o", str(out))
    table = read_csv_text(out.read_text())
    assert [r["band"] for r in table] == [f"ps1::{f}" for f in "grizy"]
    (mean_raw,) = [r for r in raw_rows(product_dir, "mean-") if r["objID"] == str(SN_TARGET_ID)]
    for row in table:
        f = row["filter"]
        mag, magerr = float(mean_raw[f"{f}MeanPSFMag"]), float(mean_raw[f"{f}MeanPSFMagErr"])
        flux = 10 ** (-0.4 * (mag - 23.9))
        assert float(row["flux_ujy"]) == pytest.approx(flux, rel=1e-12)
        assert float(row["flux_err_ujy"]) == pytest.approx(flux * magerr / (2.5 / math.log(10)), rel=1e-12)
        assert float(row["magnitude"]) == pytest.approx(mag, abs=1e-9)
        assert int(row["n_combined"]) == int(mean_raw[f"{f}MeanPSFMagNpt"])
        epoch = float(mean_raw["epochMean"])
        assert float(row["mjd"]) == pytest.approx(epoch - tai_minus_utc(epoch) / 86400, abs=1e-9)
    assert not mast_requests(stdq, "detection")


def test_dr1_offers_only_the_mean_table(stdq):
    result = stdq.run("query", "panstarrs", *COORDS, "--release", "dr1", "--table", "detection")
    line = assert_clean_error(result, 2)
    assert "DR1 has no detection table" in result.stderr, line
    assert not stdq.server.log_of(emulator="mast")

    info, _ = query_json(stdq, *COORDS, "--release", "dr1")
    assert info["rows"] == 5
    assert [r.path.split("?")[0] for r in stdq.server.log_of(emulator="mast")] == [
        "/mast/api/v0.1/panstarrs/dr1/mean.csv"
    ]


def test_time_bounds_are_sent_in_tai(stdq):
    out = stdq.tmp / "t.csv"
    query_json(stdq, *COORDS, "--date-min", "2013-01-01", "--date-max", "2015-01-01", "-o", str(out))
    (det,) = mast_requests(stdq, "detection")
    # 2013-01-01 is MJD 56293, 2015-01-01 is MJD 57023; both with TAI-UTC = 35 s
    assert float(det.query["obsTime.gte"][0]) == pytest.approx(56293 + 35 / 86400, abs=1e-9)
    assert float(det.query["obsTime.lte"][0]) == pytest.approx(57023 + 35 / 86400, abs=1e-9)
    years = {r["time_utc"][:4] for r in read_csv_text(out.read_text())}
    assert years == {"2013", "2014"}


def test_empty_cone_is_no_data(stdq):
    result = stdq.run("query", "panstarrs", "Empty Field")
    assert_clean_error(result, 5)
    assert "no Pan-STARRS DR2 object with nDetections > 1 within 2 arcsec" in result.stderr
    assert_no_product_files(stdq)


def test_mast_token_is_sent_as_cookie_and_never_shown(stdq):
    token = "tok-Secret-6f1d2c9a"
    info, product_dir = query_json(stdq, *COORDS, env={"MAST_API_TOKEN": token})
    requests = stdq.server.log_of(emulator="mast")
    assert requests and all(f"mast_token={token}" in r.headers.get("cookie", "") for r in requests)
    for other in stdq.server.requests:
        if other.emulator != "mast":
            assert token not in json.dumps(other.as_dict())
    shown = stdq.run("jobs", "show", str(info["job_id"]), "--json", env={"MAST_API_TOKEN": token})
    assert_secret_nowhere(stdq.data_dir, [token], shown.stdout + shown.stderr)


# -- faults --------------------------------------------------------------------------------------


def test_429_with_retry_after_then_success_waits(stdq, recorded_waits):
    configure(stdq, max_retries=1, timeout=2)
    stdq.server.add_fault("429", r"/mast/api/.*/mean\.csv", times=1, retry_after=1)
    info, _ = query_json(stdq, *COORDS)
    assert info["rows"] == 47
    first, second = mast_requests(stdq, "mean")
    assert first.status == 429 and second.status == 200
    assert recorded_waits == [1.0]  # the client honoured Retry-After: 1, and waited only then


@pytest.mark.parametrize(
    "kind, where, code, words",
    [
        ("429", "mean", 75, "throttled"),
        ("500", "mean", 75, "HTTP 500"),
        ("503", "detection", 75, "HTTP 503"),
        ("hang", "detection", 75, "timed out"),
        ("truncate", "detection", 75, "an answer cut short"),
        ("html", "mean", 75, "answered an HTML page where CSV was expected"),
        ("html", "detection", 75, "answered an HTML page where CSV was expected"),
    ],
)
def test_faults_end_cleanly_without_partial_files(stdq, recorded_waits, kind, where, code, words):
    # a hanging answer is a real wait: the read timeout (0.3 s) of each of the two tries
    configure(stdq, max_retries=1, timeout=0.3 if kind == "hang" else 2)
    stdq.server.add_fault(kind, rf"/mast/api/.*/{where}\.csv", times=5, retry_after=1, seconds=1)
    result = stdq.run("query", "panstarrs", *COORDS, "-o", str(stdq.tmp / "out.csv"))
    assert_clean_error(result, code)
    assert words in result.stderr, result.stderr
    assert "panstarrs" in result.stderr
    assert_no_product_files(stdq)
    assert not (stdq.tmp / "out.csv").exists()
    if kind != "hang":  # a hanging request is logged only when the server answers, later
        tries = mast_requests(stdq, where)
        # max_retries = 1: two tries of a transport failure; an HTML page is not asked again at once
        assert len(tries) == (2 if code == 75 and kind != "html" else 1)


def test_422_names_the_columns_the_table_does_not_have(fake_server, tmp_path):
    """In process: a 422 is explained from the table's metadata endpoint (parse_metadata)."""
    from stdq.config import load_settings
    from stdq.errors import QueryFailed
    from stdq.jobs.runner import build_service
    from stdq.services.base import QueryContext
    from stdq.store import Store

    config_file = tmp_path / "config.toml"
    config_file.write_text(settings_toml(fake_server), encoding="utf-8")
    settings = load_settings(config_file, tmp_path / "data")
    service, config = build_service(settings, "panstarrs")
    context = QueryContext(store=Store(tmp_path / "data"), settings=settings, service_config=config)
    context.client_factory = lambda: service.make_client(context)
    try:
        with pytest.raises(QueryFailed, match=r"no column\(s\) psfFlux"):
            service._get(context, service.table_url("dr2", "mean"), {"columns": "[objID,psfFlux]"})
    finally:
        context.close()
    paths = [r.path.split("?")[0] for r in fake_server.log_of(emulator="mast")]
    assert paths == ["/mast/api/v0.1/panstarrs/dr2/mean.csv", "/mast/api/v0.1/panstarrs/dr2/mean/metadata"]


def test_emulator_json_answers_match_its_csv_answers(fake_server):
    """The emulator's JSON form (string objIDs, -999) read by the real JSON parser equals its CSV."""
    import httpx

    from stdq.processors.panstarrs import read_mast_csv, read_mast_json

    base = fake_server.url("mast") + "/dr2/detection"
    params = {"objID": str(SN_TARGET_ID), "sort_by": "obsTime"}
    csv_table = read_mast_csv(httpx.get(base + ".csv", params=params).content)
    answer = httpx.get(base + ".json", params=params)
    doc = answer.json()
    assert isinstance(doc["data"][0][0], str) and doc["data"][0][0] == str(SN_TARGET_ID)
    json_table = read_mast_json(answer.content)
    assert len(json_table) == len(csv_table) == 50
    assert list(json_table["detectID"]) == [str(v) for v in csv_table["detectID"]]
    assert (json_table["psfFlux"] == -999).sum() == 2
    assert list(json_table["psfFlux"]) == list(csv_table["psfFlux"])
    # astroquery's way: POST a JSON body to the .json endpoint
    cone = {"ra": SN.ra, "dec": SN.dec, "radius": 2 / 3600, "columns": ["objID", "nDetections"],
            "nDetections.gt": 1}
    posted = read_mast_json(httpx.post(fake_server.url("mast") + "/dr2/mean.json", json=cone).content)
    assert set(posted["objID"]) == {str(SN_TARGET_ID), str(SN_NEIGHBOUR_ID)}
    assert list(posted.columns) == ["objID", "nDetections", "distance"]
    # bad filter syntax: 422
    assert httpx.get(base + ".csv", params={"objID.between": "1"}).status_code == 422
    assert httpx.get(base + ".csv", params={"obsTime.gt": "soon"}).status_code == 422
    # guess: DR1 has no detection table -> 404
    assert httpx.get(fake_server.url("mast") + "/dr1/detection.csv").status_code == 404
