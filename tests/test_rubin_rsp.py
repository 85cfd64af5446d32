"""`stdq query rubin-rsp` against the RSP TAP/UWS emulator: the async job's whole life,
a killed worker resuming its job, ERROR and ABORTED phases, the token (sent as pyvo
sends it, only to the service's host, never stored), cancel deleting the remote job.

Values by hand from the kept TAP result: flux_ujy = psfDiffFlux[nJy] * 1e-3,
m = 23.9 - 2.5 log10(flux_ujy), mjd = expMidptMJD (TAI) - 37 s.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from conftest import assert_clean_error, assert_secret_nowhere, stop_workers, wait_until
from stdq import Stdq
from stdq.testing.fakeserver import FakeServer
from stdq.testing.fink import NEIGHBOUR_ID, PEAK_NJY, RUBIN_TARGET, TARGET_ID, FinkEmulator
from stdq.testing.rsp import TEST_TOKEN, RspTapEmulator


def EMULATORS():
    return [FinkEmulator(), RspTapEmulator()]


POS = ("--ra", f"{RUBIN_TARGET.ra}", "--dec", f"{RUBIN_TARGET.dec}")
TOKEN_ENV = {"STDQ_RUBIN_RSP_TOKEN": TEST_TOKEN}


@pytest.fixture
def rsp(stdq):
    return stdq, stdq.server.emulator("rsp")


def log(runner, method=None, path=None):
    return runner.server.log_of(emulator="rsp", method=method, path=path)


def query(runner, *args: str, env=TOKEN_ENV):
    return runner.run("--json", "query", "rubin-rsp", *POS, "--sync", *args, env=env)


def assert_token_nowhere(runner, *texts: str) -> None:
    assert_secret_nowhere(runner.data_dir, [TEST_TOKEN], *texts)


def product_rows(info: dict) -> tuple[dict, list[dict[str, str]], Path]:
    folder = Path(info["path"]).parent
    meta = json.loads((folder / "product.json").read_text())
    with open(folder / "photometry.csv", newline="") as f:
        return meta, list(csv.DictReader(f)), folder


def test_the_whole_async_job(rsp):
    stdq, emulator = rsp
    result = query(stdq)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    meta, rows, folder = product_rows(info)
    # the protocol: the listing, one POST /async, RUN, polls, the result, DELETE
    steps = [(r.method, r.path.split("?")[0].removeprefix("/rsp/api/tap")) for r in log(stdq)]
    assert steps[0] == ("GET", "/tables")
    assert [s for s in steps if s == ("POST", "/async")] == [("POST", "/async")]
    (job,) = emulator.jobs.values()
    assert ("POST", f"/async/{job.id}/phase") in steps
    assert ("GET", f"/async/{job.id}/results/result") in steps
    assert steps.index(("DELETE", f"/async/{job.id}")) > steps.index(("GET", f"/async/{job.id}/results/result"))
    assert job.deleted and job.events == ["run", "deleted"]
    form = {k: v[-1] for k, v in parse_qs(log(stdq, "POST", r"/async$")[0].body).items()}
    assert form["LANG"] == "ADQL" and form["FORMAT"] == "csv" and form["RUNID"].startswith("stdq-")
    assert "FROM dp1.ForcedSourceOnDiaObject AS fs JOIN dp1.Visit AS vis" in form["QUERY"]  # newest listed
    assert "CONTAINS(POINT('ICRS', fs.coord_ra, fs.coord_dec), CIRCLE('ICRS', 53.13, -28.1," in form["QUERY"]
    # the token: as pyvo sends it, on every request to the service
    assert all(r.headers.get("authorization") == f"Bearer {TEST_TOKEN}" for r in log(stdq))
    assert_token_nowhere(stdq, result.stdout, result.stderr)
    # values by hand from the kept CSV
    with open(folder / "raw" / "rsp-result.csv", newline="") as f:
        table = list(csv.DictReader(f))
    target = [t for t in table if t["diaObjectId"] == str(TARGET_ID)]
    assert {t["diaObjectId"] for t in table} == {str(TARGET_ID), str(NEIGHBOUR_ID)}  # 0.7" neighbour in the cone
    peak = next(t for t in target if t["psfDiffFlux"] and float(t["psfDiffFlux"]) == PEAK_NJY)
    row = next(x for x in rows if x["source_row_id"] == f"{peak['visit']}:{peak['detector']}")
    assert float(row["flux_ujy"]) == pytest.approx(36.307805477, rel=1e-12)
    assert float(row["magnitude"]) == pytest.approx(20.0, abs=1e-6)
    assert float(row["mjd"]) == pytest.approx(float(peak["expMidptMJD"]) - 37.0 / 86400.0, abs=1e-9)
    assert row["flux_kind"] == "difference" and row["band"] == "lsstr" and row["instrument"] == "LSSTComCam"
    assert {x["object_id"] for x in rows} == {str(TARGET_ID)}
    assert meta["left_out"] == {"another object in the cone (not the nearest)": len(table) - len(target),
                                "non-finite flux or error": 1}
    assert len(rows) == len(target) - 1
    flagged = {x["source_row_id"]: int(x["quality_flag"]) for x in rows if x["quality_flag"] != "0"}
    assert sorted(flagged.values()) == [1, 8]  # psfDiffFlux_flag, pixelFlags_saturated
    notes = meta["service_notes"]
    assert notes["release"] == "dp1" and notes["remote_jobs_deleted"] == {"forced": True}
    assert notes["tap_jobs"]["forced"].endswith(f"/async/{job.id}") and notes["kind"] == "forced"
    assert notes["result_rows"] == {"forced": len(table)}


def steps_of(runner) -> list[tuple[str, str]]:
    return [(r.method, r.path.split("?")[0].removeprefix("/rsp/api/tap")) for r in log(runner)]


def test_detections_come_from_dia_source(rsp):
    stdq, emulator = rsp
    result = query(stdq, "--kind", "detections")
    assert result.returncode == 0, result.stderr
    meta, rows, folder = product_rows(json.loads(result.stdout))
    (job,) = emulator.jobs.values()
    assert job.deleted and [s for s in steps_of(stdq) if s == ("POST", "/async")] == [("POST", "/async")]
    form = {k: v[-1] for k, v in parse_qs(log(stdq, "POST", r"/async$")[0].body).items()}
    assert "FROM dp1.DiaSource AS ds WHERE CONTAINS(POINT('ICRS', ds.ra, ds.dec), CIRCLE('ICRS', 53.13," \
        in form["QUERY"]
    assert "Visit" not in form["QUERY"] and "ds.midpointMjdTai" in form["QUERY"]
    assert sorted(r.name for r in (folder / "raw").iterdir()) == ["rsp-detections.csv"]
    with open(folder / "raw" / "rsp-detections.csv", newline="") as f:
        table = list(csv.DictReader(f))
    sources = emulator.objects[0].sources
    assert len(table) == len(sources) and {t["diaObjectId"] for t in table} == {str(TARGET_ID)}
    # every DIA source is a detection; source_row_id is its diaSourceId (> 2**53: kept exactly)
    assert len(rows) == len(sources) and all(x["detected"] == "True" for x in rows)
    assert {x["source_row_id"] for x in rows} == {str(i) for i, _ in sources}
    # the peak by hand: psfFlux 36670.88 nJy (the alert naming: psfFlux is the difference flux)
    # = 36.67088 uJy; AB 23.9 - 2.5 log10(36.67088) = 20 - 2.5 log10(1.01) = 19.9891967
    peak = next(t for t in table if float(t["psfFlux"]) == 36670.88)
    row = next(x for x in rows if x["source_row_id"] == peak["diaSourceId"])
    assert float(row["flux_ujy"]) == pytest.approx(36.67088, rel=1e-12)
    assert float(row["magnitude"]) == pytest.approx(19.9891967, abs=1e-6)
    assert float(row["mjd"]) == pytest.approx(float(peak["midpointMjdTai"]) - 37.0 / 86400.0, abs=1e-9)
    assert row["flux_kind"] == "difference" and row["band"] == "lsstr" and row["rubin_kind"] == "detection"
    flags = {x["source_row_id"]: int(x["quality_flag"]) for x in rows}
    saturated = next(t for t in table if t["pixelFlags_saturated"] == "true")
    fit = next(t for t in table if t["psfFlux_flag"] == "true")
    assert flags[saturated["diaSourceId"]] == 8 and flags[fit["diaSourceId"]] == 1
    assert sorted(flags.values()).count(0) == len(rows) - 2
    notes = meta["service_notes"]
    assert notes["kind"] == "detections" and notes["result_rows"] == {"detections": len(sources)}
    assert notes["tap_jobs"] == {"detections": f"{emulator.base_url}/async/{job.id}"}
    assert notes["remote_jobs_deleted"] == {"detections": True}


def test_both_kinds_are_two_jobs_in_one_product(rsp):
    stdq, emulator = rsp
    result = query(stdq, "--kind", "both", "--flux-kind", "both")
    assert result.returncode == 0, result.stderr
    meta, rows, folder = product_rows(json.loads(result.stdout))
    forced, detections = emulator.jobs.values()  # one after the other, in this order
    assert "ForcedSourceOnDiaObject" in forced.query and "DiaSource AS ds" in detections.query
    assert forced.deleted and detections.deleted
    steps = steps_of(stdq)
    assert [s for s in steps if s[0] == "POST" and s[1] == "/async"] == [("POST", "/async")] * 2
    assert steps.index(("DELETE", f"/async/{forced.id}")) < steps.index(("POST", "/async"), 2)
    assert sorted(r.name for r in (folder / "raw").iterdir()) == ["rsp-detections.csv", "rsp-result.csv"]
    target = emulator.objects[0]
    by_kind: dict[tuple[str, str], int] = {}
    for x in rows:
        by_kind[(x["rubin_kind"], x["flux_kind"])] = by_kind.get((x["rubin_kind"], x["flux_kind"]), 0) + 1
    # forced: every epoch twice (difference, total) but the null difference flux; detections: twice
    n, k = len(target.forced), len(target.sources)
    assert by_kind == {("forced", "difference"): n - 1, ("forced", "total"): n,
                       ("detection", "difference"): k, ("detection", "total"): k}
    ids = {x["source_row_id"] for x in rows if x["rubin_kind"] == "forced"}
    assert ids == {f"{m.visit}:{m.detector}" for m in target.forced}
    # a total (direct-image) flux of a detection: scienceFlux 156307.8 nJy -> 156.3078 uJy
    peak_id = next(str(i) for i, m in target.sources if m.diff == 36670.88)
    total = next(x for x in rows if x["source_row_id"] == peak_id and x["flux_kind"] == "total")
    assert float(total["flux_ujy"]) == pytest.approx(156.3078, rel=1e-12)
    notes = meta["service_notes"]
    assert notes["kind"] == "both" and set(notes["tap_jobs"]) == {"forced", "detections"}
    assert notes["remote_jobs_deleted"] == {"forced": True, "detections": True}
    with open(folder / "raw" / "rsp-result.csv", newline="") as f:
        n_forced = sum(1 for _ in csv.DictReader(f))
    assert notes["result_rows"] == {"forced": n_forced, "detections": k}


def test_both_resumes_after_the_first_job_without_submitting_it_again(rsp, monkeypatch, recorded_waits):
    stdq, emulator = rsp
    monkeypatch.setenv("STDQ_RUBIN_RSP_TOKEN", TEST_TOKEN)
    # the second job's polls fail until the client gives up: the attempt ends temporary
    stdq.server.add_fault("503", path=r"/async/q0002[^/]*$", method="GET", times=100)
    with Stdq(stdq.config_path, stdq.data_dir) as s:
        job = s.submit("rubin-rsp", ra=RUBIN_TARGET.ra, dec=RUBIN_TARGET.dec, kind="both", runner="inprocess")
        first = s.run(job.id)
        assert first.outcome is not None and str(first.outcome) == "temporary", first
        cp = first.checkpoint
        assert cp["downloaded"] is True and cp["deleted"] is True and cp["detections_job_url"]
        assert not cp.get("detections_downloaded")
    stdq.server.clear_faults()
    with Stdq(stdq.config_path, stdq.data_dir) as later:  # stdq jobs retry N: from its checkpoint
        assert later.retry(job.id).checkpoint["detections_job_url"] == cp["detections_job_url"]
        done = later.run(job.id)
    assert done.state == "succeeded", done
    assert len(log(stdq, "POST", r"/async$")) == 2  # each job submitted once: the forced one not again
    assert [j.deleted for j in emulator.jobs.values()] == [True, True]
    results = [r.path for r in log(stdq, "GET", r"/results/result$")]
    assert len(results) == 2  # the forced result was not fetched again either


@pytest.mark.parametrize("kind", ["forced", "both"])
def test_votable_results_read_the_same(rsp, kind):
    stdq, _ = rsp
    first = query(stdq, "--kind", kind)
    assert first.returncode == 0, first.stderr
    text = stdq.config_path.read_text().replace(
        "[services.rubin-rsp]\n", '[services.rubin-rsp]\nresult_format = "votable"\n')
    stdq.config_path.write_text(text)
    second = query(stdq, "--kind", kind, "--force")  # the same query again: not the earlier job's result
    assert second.returncode == 0, second.stderr
    _, rows_csv, _ = product_rows(json.loads(first.stdout))
    _, rows_vot, folder = product_rows(json.loads(second.stdout))
    assert (folder / "raw" / "rsp-result.xml").exists()
    assert (folder / "raw" / "rsp-detections.xml").exists() == (kind == "both")
    key = ("source_row_id", "flux_ujy", "flux_err_ujy", "mjd", "band", "quality_flag", "object_id",
           "rubin_kind", "detected")
    assert [tuple(r[k] for k in key) for r in rows_vot] == [tuple(r[k] for k in key) for r in rows_csv]


def test_a_lost_submission_answer_adopts_the_job_it_made(rsp):
    stdq, emulator = rsp
    stdq.server.add_fault("drop", path=r"/async$", method="POST")  # the job is made, the answer lost
    result = query(stdq)
    assert result.returncode == 0, result.stderr
    (job,) = emulator.jobs.values()  # found by its RUNID in the job list: never sent twice
    assert len(log(stdq, "POST", r"/async$")) == 1 and log(stdq, "GET", r"/async$")
    assert job.deleted and job.runid.startswith("stdq-")


def test_5xx_on_run_and_poll_are_retried_without_a_second_job(rsp, recorded_waits):
    stdq, emulator = rsp
    stdq.server.add_fault("503", path=r"/phase$", method="POST")
    stdq.server.add_fault("500", path=r"/async/[^/]+$", method="GET", times=2)
    result = query(stdq)
    assert result.returncode == 0, result.stderr
    assert len(emulator.jobs) == 1 and len(log(stdq, "POST", r"/async$")) == 1
    assert [r.status for r in log(stdq, "POST", r"/phase$")] == [503, 303]
    assert next(iter(emulator.jobs.values())).deleted


def test_uws_error_exits_1_with_its_message_and_deletes_the_job(rsp):
    stdq, emulator = rsp
    emulator.fail_with = "Query processing error: QI=42: table scan exceeded the limit"
    result = query(stdq)
    message = assert_clean_error(result, 1)
    assert ("the TAP job (ForcedSourceOnDiaObject) failed: Query processing error: QI=42: table scan"
            " exceeded the limit") in message
    (job,) = emulator.jobs.values()
    assert job.phase == "ERROR" and job.deleted


def test_aborted_on_the_server_exits_1(rsp):
    stdq, emulator = rsp
    emulator.hold = True
    original = emulator._advance

    def abort_when_executing(job):
        original(job)
        if job.phase == "EXECUTING":
            job.phase = "ABORTED"

    emulator._advance = abort_when_executing
    message = assert_clean_error(query(stdq), 1)
    assert "aborted on the server" in message
    assert all(j.deleted for j in emulator.jobs.values())


def test_missing_token_exits_3_and_sends_nothing(rsp):
    stdq, _ = rsp
    text = stdq.config_path.read_text()
    assert f'token = "{TEST_TOKEN}"\n' in text  # the emulators' settings file has the test token
    stdq.config_path.write_text(text.replace(f'token = "{TEST_TOKEN}"\n', ""))
    message = assert_clean_error(query(stdq, env={}), 3)
    assert "STDQ_RUBIN_RSP_TOKEN" in message
    assert not log(stdq)


def test_refused_token_exits_3_without_echo(rsp):
    stdq, _ = rsp
    wrong = "not-the-right-token-0123"
    result = query(stdq, env={"STDQ_RUBIN_RSP_TOKEN": wrong})
    message = assert_clean_error(result, 3)
    assert "refused the token" in message and wrong not in result.stdout + result.stderr


def test_a_result_on_another_origin_is_not_fetched(rsp):
    stdq, emulator = rsp
    with FakeServer([RspTapEmulator()]) as other:
        original = emulator._job_xml
        emulator._job_xml = lambda job: original(job).replace(emulator.base_url, other.url("rsp"))
        message = assert_clean_error(query(stdq), 1)
        assert "another origin" in message and not other.requests
    assert_token_nowhere(stdq)


def test_the_token_does_not_follow_a_redirect_to_another_host(rsp):
    stdq, _ = rsp
    with FakeServer([RspTapEmulator()]) as other:
        stdq.server.add_fault("redirect", path=r"/tables", options={"location": other.base_url})
        result = query(stdq)
        assert result.returncode != 0
        (seen,) = other.requests
        assert seen.path == "/rsp/api/tap/tables" and "authorization" not in seen.headers
    assert all(r.headers.get("authorization") == f"Bearer {TEST_TOKEN}" for r in log(stdq))
    assert_token_nowhere(stdq, result.stdout, result.stderr)


def test_unknown_release_exits_2_listing_the_known_ones(rsp):
    stdq, emulator = rsp
    message = assert_clean_error(query(stdq, "--release", "dr9"), 2)
    assert "dr9" in message and "dp1" in message
    assert not emulator.jobs


def test_cancel_deletes_the_remote_job(rsp, monkeypatch):
    stdq, emulator = rsp
    monkeypatch.setenv("STDQ_RUBIN_RSP_TOKEN", TEST_TOKEN)
    response = httpx.post(f"{emulator.base_url}/async", data={"LANG": "ADQL", "QUERY": "SELECT 1", "PHASE": "RUN"},
                          headers={"Authorization": f"Bearer {TEST_TOKEN}"})
    assert response.status_code == 303
    url = response.headers["Location"]
    with Stdq(stdq.config_path, stdq.data_dir) as s:
        job = s.submit("rubin-rsp", ra=RUBIN_TARGET.ra, dec=RUBIN_TARGET.dec, runner="inprocess")
        s.queue.save_checkpoint(job.id, {"job_url": url, "release": "dp1"})
        cancelled = s.cancel(job.id)
        assert cancelled.state == "cancelled"
    (remote,) = emulator.jobs.values()
    assert remote.deleted
    assert [r.path.removeprefix("/rsp/api/tap") for r in log(stdq, "DELETE")] == [f"/async/{remote.id}"]


# -- a killed worker ------------------------------------------------------------------------------


@pytest.fixture
def wq(rsp):
    stdq, emulator = rsp
    stdq.write_settings("\n[tasks]\nautostart_worker = false\nlease_seconds = 2.0\n")
    try:
        yield stdq, emulator
    finally:
        stop_workers(stdq)


@pytest.mark.slow
def test_killed_worker_mid_executing_resumes_the_same_job(wq, monkeypatch):
    stdq, emulator = wq
    emulator.hold = True  # EXECUTING until the test lets it finish
    submitted = stdq.run("query", "rubin-rsp", *POS, "--background", env=TOKEN_ENV)
    assert submitted.returncode == 0, submitted.stderr
    job_id = int(submitted.stdout)
    with open(stdq.tmp / "worker.log", "wb") as out:
        worker = stdq.popen("jobs", "worker", stdout=out, stderr=out, env=TOKEN_ENV)
        try:
            wait_until(lambda: any(j.phase == "EXECUTING" for j in emulator.jobs.values())
                       and len(log(stdq, "GET", r"/async/[^/]+$")) >= 4, what="the job to be EXECUTING")
            with Stdq(stdq.config_path, stdq.data_dir) as s:
                before = s.job(job_id)
            assert before.state == "running" and before.checkpoint["job_url"]
            worker.kill()  # SIGKILL: no cleanup, no release
        finally:
            worker.wait(timeout=15)
    assert len(emulator.jobs) == 1 and not next(iter(emulator.jobs.values())).deleted
    emulator.hold = False
    monkeypatch.setenv("STDQ_RUBIN_RSP_TOKEN", TEST_TOKEN)
    # a burst worker whose clock is a minute ahead: the 2 s lease has run out for it
    with Stdq(config=stdq.config_path, data_dir=stdq.data_dir, clock=lambda: time.time() + 60) as later:
        assert later.run_worker(burst=True) == 0
        job = later.job(job_id)
    assert job.state == "succeeded" and job.attempts == 2 and job.rows > 0
    posts = log(stdq, "POST", r"/async$")
    assert [r.status for r in posts] == [303]  # exactly one job submitted: it was resumed
    (remote,) = emulator.jobs.values()
    assert remote.deleted and job.checkpoint["job_url"].endswith(f"/async/{remote.id}")
    polled = {r.path for r in log(stdq, "GET", r"/async/[^/]+$")}
    assert polled == {f"/rsp/api/tap/async/{remote.id}"}
    assert [r.path for r in log(stdq, "DELETE")] == [f"/rsp/api/tap/async/{remote.id}"]
    assert_token_nowhere(stdq, (stdq.tmp / "worker.log").read_text())
    assert math.isfinite(job.rows)


@pytest.mark.slow
def test_killed_worker_mid_detections_job_resumes_it_and_not_the_forced_one(wq, monkeypatch):
    stdq, emulator = wq
    held = {"on": True}  # the DiaSource job stays EXECUTING until the test lets it finish
    original = emulator._advance

    def advance(job):
        if held["on"] and "DiaSource" in job.query and job.phase in ("QUEUED", "EXECUTING"):
            job.phase = "EXECUTING"
            return
        original(job)

    emulator._advance = advance
    submitted = stdq.run("query", "rubin-rsp", *POS, "--kind", "both", "--background", env=TOKEN_ENV)
    assert submitted.returncode == 0, submitted.stderr
    job_id = int(submitted.stdout)
    with open(stdq.tmp / "worker.log", "wb") as out:
        worker = stdq.popen("jobs", "worker", stdout=out, stderr=out, env=TOKEN_ENV)
        try:
            def detections_polled() -> bool:
                jobs = list(emulator.jobs.values())
                return len(jobs) == 2 and jobs[1].phase == "EXECUTING" and len(
                    log(stdq, "GET", rf"/async/{jobs[1].id}$")) >= 3

            wait_until(detections_polled, what="the detections job to be EXECUTING")
            worker.kill()  # SIGKILL: no cleanup, no release
        finally:
            worker.wait(timeout=15)
    forced, detections = emulator.jobs.values()
    assert forced.deleted and not detections.deleted
    held["on"] = False
    monkeypatch.setenv("STDQ_RUBIN_RSP_TOKEN", TEST_TOKEN)
    with Stdq(config=stdq.config_path, data_dir=stdq.data_dir, clock=lambda: time.time() + 60) as later:
        assert later.run_worker(burst=True) == 0
        job = later.job(job_id)
    assert job.state == "succeeded" and job.attempts == 2
    assert len(log(stdq, "POST", r"/async$")) == 2 and len(emulator.jobs) == 2  # nothing submitted again
    assert [r.path.rsplit("/", 3)[-3] for r in log(stdq, "GET", r"/results/result$")] == [forced.id, detections.id]
    assert forced.deleted and detections.deleted
    with Stdq(stdq.config_path, stdq.data_dir) as s:
        (product_id,) = job.products
        names = sorted(r.name for r in s.store.load_product(product_id).raw_files)
    assert names == ["rsp-detections.csv", "rsp-result.csv"]


def test_an_empty_cone_is_no_data_after_both_jobs_and_deletes_them(rsp):
    stdq, emulator = rsp
    result = stdq.run("query", "rubin-rsp", "--ra", "53.3", "--dec", "-28.3", "--kind", "both", "--sync",
                      env=TOKEN_ENV)
    message = assert_clean_error(result, 5)
    assert "no DIA forced photometry or DIA detection within 1 arcsec of RA 53.300000" in message
    assert len(emulator.jobs) == 2 and all(j.deleted for j in emulator.jobs.values())
