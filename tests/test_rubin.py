"""`stdq query rubin` (Fink, then ALeRCE) in process against the Rubin emulators.

Expected numbers are computed here by hand from the raw answers the service kept and
the documented rules (docs/photometry.md section 8): flux_ujy = flux[nJy] * 1e-3,
m = 23.9 - 2.5 log10(flux_ujy), UTC = TAI - 37 s (TAI-UTC since 2017-01-01), bands
u..y -> lsstu..lssty, source_row_id = diaSourceId (detections) or visit:detector (forced).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from conftest import assert_clean_error
from stdq import photometry
from stdq.testing.alerce import AlerceLsstEmulator
from stdq.testing.fink import (
    NEIGHBOUR_ID,
    OUTER_ID,
    PEAK_NJY,
    RUBIN_TARGET,
    TARGET_ID,
    FinkEmulator,
)
from stdq.testing.rsp import RspTapEmulator


def EMULATORS():
    return [FinkEmulator(), AlerceLsstEmulator(), RspTapEmulator()]


POS = ("--ra", f"{RUBIN_TARGET.ra}", "--dec", f"{RUBIN_TARGET.dec}")


def query(stdq, *args: str, code: int = 0):
    result = stdq.run("--json", "query", "rubin", *POS, *args)
    assert result.returncode == code, (result.stdout, result.stderr)
    return result


def product_of(result) -> tuple[dict, list[dict[str, str]], Path]:
    info = json.loads(result.stdout)
    folder = Path(info["path"]).parent
    meta = json.loads((folder / "product.json").read_text())
    with open(folder / "photometry.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return meta, rows, folder


def raw_records(folder: Path, prefix: str) -> list[dict]:
    records: list[dict] = []
    for path in sorted((folder / "raw").glob(f"{prefix}*.json")):
        records += json.loads(path.read_text())
    return records


def log(stdq, emulator: str):
    return stdq.server.log_of(emulator=emulator)


# -- values by hand ------------------------------------------------------------------------------


def test_forced_photometry_values_by_hand(stdq):
    meta, rows, folder = product_of(query(stdq))
    assert meta["service_notes"]["broker"] == "fink"
    forced = raw_records(folder, "fink-fp-")
    assert forced and all(r["r:diaObjectId"] == TARGET_ID for r in forced)
    # the peak: 36307.805477 nJy = 36.307805477 uJy, AB 23.9 - 2.5 log10(36.3078...) = 20.000
    peak = next(r for r in forced if r["r:psfFlux"] == PEAK_NJY)
    row = next(x for x in rows if x["source_row_id"] == f"{peak['r:visit']}:{peak['r:detector']}")
    assert float(row["flux_ujy"]) == pytest.approx(36.307805477, rel=1e-12)
    assert float(row["flux_err_ujy"]) == pytest.approx(peak["r:psfFluxErr"] * 1e-3, rel=1e-12)
    assert float(row["magnitude"]) == pytest.approx(20.0, abs=1e-6)
    assert float(row["magnitude_error"]) == pytest.approx(2.5 / math.log(10) * 500.0 / 36307.805477, rel=1e-9)
    # TAI -> UTC: 37 leap seconds
    assert float(row["mjd"]) == pytest.approx(peak["r:midpointMjdTai"] - 37.0 / 86400.0, abs=1e-9)
    assert row["band"] == "lsstr" and row["filter"] == "r" and row["flux_kind"] == "difference"
    assert row["survey"] == "LSST" and row["telescope"] == "Rubin" and row["object_id"] == str(TARGET_ID)
    assert row["detected"] == "True" and row["zp"] == "23.9"
    # a non-detection: no magnitude, a 5-sigma limit from the error
    faint = next(r for r in forced if r["r:psfFlux"] is not None and abs(r["r:psfFlux"]) < 400)
    lim = next(x for x in rows if x["source_row_id"] == f"{faint['r:visit']}:{faint['r:detector']}")
    assert lim["detected"] == "False" and lim["magnitude"] == ""
    assert float(lim["limit"]) == pytest.approx(23.9 - 2.5 * math.log10(5 * faint["r:psfFluxErr"] * 1e-3))
    assert float(lim["limit_nsigma"]) == 5.0
    # one forced measurement without a flux is left out and counted
    assert sum(r["r:psfFlux"] is None for r in forced) == 1
    assert meta["left_out"] == {photometry.LEFT_NON_FINITE: 1}
    assert len(rows) == len(forced) - 1
    assert {x["band"] for x in rows} == {"lsstu", "lsstg", "lsstr", "lssti", "lsstz", "lssty"}
    # snr threshold 5 (processor default)
    for x in rows:
        assert (x["detected"] == "True") == (float(x["snr"]) >= 5.0)


def test_a_tai_time_to_utc_by_hand():
    # 2026-11-20 00:00:00 TAI = 2026-11-19 23:59:23 UTC (TAI - UTC = 37 s)
    tai = 61364.0
    assert float(photometry.tai_to_utc_mjd([tai])[0]) == pytest.approx(61363.0 + (86400 - 37) / 86400, abs=1e-10)


def test_detections_and_both_kinds(stdq):
    meta, rows, folder = product_of(query(stdq, "--kind", "detections"))
    sources = raw_records(folder, "fink-sources-")
    assert len(rows) == len(sources) and all(x["detected"] == "True" for x in rows)
    assert {x["source_row_id"] for x in rows} == {str(s["r:diaSourceId"]) for s in sources}
    by_id = {x["source_row_id"]: x for x in rows}
    saturated = next(s for s in sources if s["r:pixelFlags_saturated"])
    fit = next(s for s in sources if s["r:psfFlux_flag"])
    assert int(by_id[str(saturated["r:diaSourceId"])]["quality_flag"]) == photometry.FLAG_MASKED_PIXELS
    assert int(by_id[str(fit["r:diaSourceId"])]["quality_flag"]) == photometry.FLAG_SURVEY_CODE
    assert sum(int(x["quality_flag"]) != 0 for x in rows) == 2
    meta, rows, folder = product_of(query(stdq, "--kind", "both"))
    kinds = {x["rubin_kind"] for x in rows}
    assert kinds == {"forced", "detection"}
    assert [r.path.split("?")[0] for r in log(stdq, "fink")][-2:] == ["/fink/api/v1/fp", "/fink/api/v1/sources"]


def test_values_no_survey_can_have_are_left_out_and_counted(stdq):
    forced = stdq.server.emulator("fink").objects[0].forced
    forced[0].tai = 1e30  # far in the future
    forced[1].diff_err = 0.0
    forced[2].band = "w"
    forced[4].tai = 50000.0  # 1995: before LSST began
    meta, rows, _ = product_of(query(stdq))
    assert meta["left_out"] == {
        "unknown band": 1, photometry.LEFT_NON_FINITE: 1, photometry.LEFT_BAD_ERROR: 1,
        photometry.LEFT_FUTURE: 1, photometry.left_before("LSST"): 1,
    }
    assert len(rows) == len(forced) - 5


def test_time_bounds_select_utc_epochs(stdq):
    _, every, folder = product_of(query(stdq))
    mjds = sorted(float(x["mjd"]) for x in every)
    cut = (mjds[5] + mjds[6]) / 2
    meta, rows, _ = product_of(query(stdq, "--mjd-min", f"{cut}"))
    assert len(rows) == len(every) - 6 and all(float(x["mjd"]) >= cut for x in rows)
    assert meta["left_out"]["outside the asked time range"] == 6


def test_total_fluxes_are_their_own_rows(stdq):
    _, rows, folder = product_of(query(stdq, "--flux-kind", "both"))
    forced = raw_records(folder, "fink-fp-")
    kinds = [x["flux_kind"] for x in rows]
    assert kinds.count("difference") == len(forced) - 1 and kinds.count("total") == len(forced)
    peak = next(r for r in forced if r["r:psfFlux"] == PEAK_NJY)
    rid = f"{peak['r:visit']}:{peak['r:detector']}"
    total = next(x for x in rows if x["source_row_id"] == rid and x["flux_kind"] == "total")
    assert float(total["flux_ujy"]) == pytest.approx(peak["r:scienceFlux"] * 1e-3)


# -- the nearest object --------------------------------------------------------------------------


def test_the_nearest_object_with_a_neighbour_in_the_cone(stdq):
    meta, rows, _ = product_of(query(stdq))
    notes = meta["service_notes"]
    cone = notes["objects_in_cone"]
    assert [c["object_id"] for c in cone] == [str(TARGET_ID), str(NEIGHBOUR_ID)]  # 0.7" neighbour inside 1"
    assert cone[0]["sep_arcsec"] < 0.1 and cone[1]["sep_arcsec"] == pytest.approx(0.7, abs=0.05)
    assert notes["selected_objects"] == [str(TARGET_ID)]
    assert {x["object_id"] for x in rows} == {str(TARGET_ID)}
    asked = [r.query.get("diaObjectId") for r in log(stdq, "fink") if "diaObjectId" in r.query]
    assert asked == [[str(TARGET_ID)]]


def test_all_objects_keeps_each_with_its_separation(stdq):
    meta, rows, _ = product_of(query(stdq, "--all-objects", "--radius", "5"))
    ids = {x["object_id"] for x in rows}
    assert ids == {str(TARGET_ID), str(NEIGHBOUR_ID), str(OUTER_ID)}
    seps = {x["object_id"]: float(x["sep_arcsec"]) for x in rows}
    assert seps[str(NEIGHBOUR_ID)] == pytest.approx(0.7, abs=0.05)
    assert seps[str(OUTER_ID)] == pytest.approx(4.0, abs=0.05)
    assert len(meta["service_notes"]["objects_in_cone"]) == 3


# -- failover --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["500", "html", "429", "empty"])
def test_fink_failing_falls_over_to_alerce(stdq, recorded_waits, fault):
    stdq.server.add_fault(fault, path=r"^/fink/", times=100)
    meta, rows, folder = product_of(query(stdq))
    notes = meta["service_notes"]
    assert notes["broker"] == "alerce" and "fink" in notes["fink_problem"]
    if fault == "html":
        assert "HTML page" in notes["fink_problem"]
    assert not list((folder / "raw").glob("fink-*"))
    forced = raw_records(folder, "alerce-forced-photometry-")
    assert {x["object_id"] for x in rows} == {str(TARGET_ID)}
    assert len(rows) == len(forced) - 1
    peak = next(r for r in forced if r["psfFlux"] == PEAK_NJY)
    row = next(x for x in rows if x["source_row_id"] == f"{peak['visit']}:{peak['detector']}")
    assert row["band"] == "lsstr" and float(row["magnitude"]) == pytest.approx(20.0, abs=1e-6)
    assert float(row["mjd"]) == pytest.approx(peak["mjd"] - 37.0 / 86400.0, abs=1e-9)
    assert [r.query["survey"] for r in log(stdq, "alerce-lsst") if "survey" in r.query] == [["lsst"]]


def test_fink_without_the_object_falls_over_to_alerce(stdq):
    stdq.server.emulator("fink").hidden = {TARGET_ID, NEIGHBOUR_ID, OUTER_ID}
    meta, rows, _ = product_of(query(stdq, "--kind", "both"))
    assert meta["service_notes"]["broker"] == "alerce"
    assert "no object within" in meta["service_notes"]["fink_problem"]
    assert {x["rubin_kind"] for x in rows} == {"forced", "detection"}
    dets = [x for x in rows if x["rubin_kind"] == "detection"]
    assert sum(int(x["quality_flag"]) & photometry.FLAG_SURVEY_CODE != 0 for x in dets) == 2


def test_an_object_without_a_light_curve_at_fink_is_asked_of_alerce(stdq):
    stdq.server.emulator("fink").objects[0].forced.clear()  # Fink knows the object, has no fp
    meta, rows, _ = product_of(query(stdq))
    assert meta["service_notes"]["broker"] == "alerce" and rows
    assert meta["service_notes"]["fink_problem"] == f"no forced photometry of {TARGET_ID}"
    stdq.server.emulator("alerce-lsst").objects[0].forced.clear()
    message = assert_clean_error(stdq.run("query", "rubin", *POS, "--force"), 5)
    assert "no forced photometry of" in message


def test_broker_forcing(stdq, recorded_waits):
    meta, _, _ = product_of(query(stdq, "--broker", "alerce"))
    assert meta["service_notes"]["broker"] == "alerce" and not log(stdq, "fink")
    stdq.server.add_fault("503", path=r"^/fink/", times=100)
    before = len(log(stdq, "alerce-lsst"))
    result = query(stdq, "--broker", "fink", code=75)
    assert "Fink" in result.stderr and "503" in result.stderr
    assert len(log(stdq, "alerce-lsst")) == before


def test_no_object_anywhere_is_no_data(stdq):
    result = stdq.run("query", "rubin", "--ra", "150.0", "--dec", "-30.0")
    message = assert_clean_error(result, 5)
    assert "no Rubin object within 1 arcsec" in message and "ALeRCE" in message


def test_both_brokers_failing_is_temporary(stdq, recorded_waits):
    stdq.server.add_fault("500", path=r"^/fink/", times=100)
    stdq.server.add_fault("429", path=r"^/alerce-lsst/", times=100)
    result = stdq.run("query", "rubin", *POS)
    message = assert_clean_error(result, 75)
    assert "Fink" in message and "ALeRCE" in message


def test_bad_options_exit_2(stdq):
    for args in (["--kind", "lightcurve"], ["--broker", "lasair"], ["--radius", "0"], ["--radius", "601"]):
        result = stdq.run("query", "rubin", *POS, *args)
        assert result.returncode == 2, (args, result.stderr)


# -- services list/show ----------------------------------------------------------------------------


def test_services_list_and_show(stdq):
    listed = stdq.run("--json", "services", "list")
    assert listed.returncode == 0, listed.stderr
    names = {s["name"] for s in json.loads(listed.stdout)}
    assert {"rubin", "rubin-rsp"} <= names
    shown = stdq.run("--json", "services", "show", "rubin")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    for key in ("alerce_url", "snr_threshold", "limit_nsigma", "--kind", "--broker", "--radius"):
        assert key.lstrip("-") in text, key
    rsp = stdq.run("--json", "services", "show", "rubin-rsp")
    assert rsp.returncode == 0, rsp.stderr
    for key in ("release", "poll_interval", "result_format", "STDQ_RUBIN_RSP_TOKEN", "limit_nsigma"):
        assert key in rsp.stdout, key
