"""`ztf-fps` run by background workers: a SIGKILLed worker's job resumes with one submission only,
and the credentials stay out of everything a worker writes."""

from __future__ import annotations

import json
import math
import sqlite3
import time

import pytest
from test_ztf_fps import CREDS_ENV, SECRET_FORMS, SN, settings_without_credentials

from conftest import assert_secret_nowhere, process_alive, stop_workers, wait_until, worker_pids
from stdq import Stdq


def db_job(runner, job_id: int) -> dict:
    """The job row and its events, read straight from SQLite."""
    conn = sqlite3.connect(runner.data_dir / "stdq.sqlite3", timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        events = [dict(r) for r in conn.execute(
            "SELECT * FROM job_events WHERE job_id = ? ORDER BY id", (job_id,))]
    finally:
        conn.close()
    job = dict(row)
    job["checkpoint"] = json.loads(job["checkpoint_json"] or "{}")
    job["events"] = events
    return job


@pytest.fixture
def wq(stdq):
    """`stdq` with credentials only in the environment, and workers started by the test."""
    stdq.config_path.write_text(settings_without_credentials(
        stdq.server, "\n[tasks]\nautostart_worker = false\nlease_seconds = 2.0\n"))
    stdq.extra_env.update(CREDS_ENV)
    try:
        yield stdq
    finally:
        stop_workers(stdq)


def assert_no_secret_anywhere(runner, *texts: str) -> None:
    assert (runner.data_dir / "stdq.sqlite3").is_file()
    assert_secret_nowhere(runner.data_dir, SECRET_FORMS, *texts)


@pytest.mark.slow
def test_killed_worker_resumes_without_a_second_submission(wq, monkeypatch, recorded_waits):
    emulator = wq.server.emulator("zfps")
    emulator.delay = math.inf  # the remote request runs until the test says so
    result = wq.run("query", "ztf-fps", *SN, "--background")
    assert result.returncode == 0, result.stderr
    job_id = int(result.stdout.strip())
    logs = wq.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "test-worker-1.log", "wb") as log1:
        worker = wq.popen("jobs", "worker", stdout=log1, stderr=log1)
        try:
            # the job submitted its request and polls the status listing
            wait_until(lambda: len(emulator.submissions) == 1 and emulator.status_queries >= 4,
                       what="the worker to submit and poll")
            before = db_job(wq, job_id)
            assert before["state"] == "running" and before["checkpoint"]["zfps_state"] == "submitted"
            worker.kill()  # SIGKILL: no clean release, the lease must run out
        finally:
            worker.wait(timeout=15)
    emulator.finish_now()
    # another worker takes the job up once the lease (2 s) has expired, from its checkpoint:
    # a burst worker in this process whose clock is a minute ahead (nothing sleeps)
    assert db_job(wq, job_id)["lease_expires"] > time.time()
    for name, value in CREDS_ENV.items():
        monkeypatch.setenv(name, value)
    with Stdq(config=wq.config_path, data_dir=wq.data_dir, clock=lambda: time.time() + 60) as later:
        assert later.run_worker(burst=True) == 0
    job = db_job(wq, job_id)
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2
    assert any("resuming ZFPS request" in e["message"] for e in job["events"])
    # exactly one submission in the emulator's log, and in its request list
    assert len(wq.server.log_of(emulator="zfps", method="POST", path="batchfp.py/submit")) == 1
    assert len(emulator.submissions) == 1 and len(emulator.fp_requests) == 1
    assert job["checkpoint"]["zfps_state"] == "downloaded"
    shown = wq.run("--json", "jobs", "show", str(job_id))
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["rows"] > 0 and len(info["products"]) == 1
    got = wq.run("jobs", "result", str(job_id), "-o", "-")
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith("mjd,time_utc,")
    assert_no_secret_anywhere(wq, result.stdout, result.stderr, shown.stdout, got.stderr)


@pytest.mark.slow
def test_foreground_query_through_an_autostarted_worker_keeps_secrets_out(wq):
    wq.config_path.write_text(settings_without_credentials(
        wq.server, "\n[tasks]\nautostart_worker = true\nlease_seconds = 2.0\n"))
    wq.server.emulator("zfps").delay = 0.2  # the request is done 0.2 s after its submission
    result = wq.run("query", "ztf-fps", *SN, "--baseline", "auto")
    assert result.returncode == 0, result.stderr
    assert "ztf-fps: SN 2023ixf" in result.stdout
    assert len(wq.server.emulator("zfps").submissions) == 1
    worker_logs = list((wq.data_dir / "logs").glob("worker-*.log"))
    assert worker_logs, "the spawned worker writes its log under the data dir"
    # wait for the burst worker to leave, so its last log lines are in the file
    wait_until(lambda: not _live_worker_pids(wq), timeout=30, what="the burst worker to exit")
    assert_no_secret_anywhere(wq, result.stdout, result.stderr)


def _live_worker_pids(runner) -> list[int]:
    return [pid for pid in worker_pids(runner) if process_alive(pid)]


def test_a_polled_zfps_request_frees_the_thread_for_a_job_of_another_service(wq, monkeypatch):
    """One worker thread, a ZFPS job whose request runs until the test ends it and a Pan-STARRS
    job queued after it, on an injected clock: between two looks at the listing the ZFPS job is
    parked (queued, due at the next look), the thread runs the Pan-STARRS job meanwhile, and the
    ZFPS job goes on with the same attempt and its one submission."""
    import threading

    from conftest import FakeTime

    emulator = wq.server.emulator("zfps")
    emulator.delay = math.inf
    for name, value in CREDS_ENV.items():
        monkeypatch.setenv(name, value)
    clock = FakeTime(time.time())
    with Stdq(config=wq.config_path, data_dir=wq.data_dir, clock=clock.clock) as lib:
        zfps_id = lib.submit("ztf-fps", ra=SN[2], dec=SN[4], runner="worker").id
        other_id = lib.submit("panstarrs", ra=210.910674, dec=54.311650, runner="worker").id
        worker = threading.Thread(target=lib.run_worker, kwargs={"burst": True, "concurrency": 1})
        worker.start()
        try:
            wait_until(lambda: db_job(wq, other_id)["state"] == "succeeded",
                       what="the Pan-STARRS job to run while the ZFPS request runs")
            parked = db_job(wq, zfps_id)
            assert parked["state"] == "queued" and parked["checkpoint"]["zfps_state"] == "submitted"
            assert parked["events"][-1]["kind"] == "waiting"
            assert parked["run_after"] == clock.now + 0.2  # the first wait: poll_interval
            looks = emulator.status_queries
            emulator.finish_now()
            clock.now += 0.2
            worker.join(timeout=60)
        finally:
            emulator.finish_now()
            clock.now += 1000.0
            worker.join(timeout=60)
    assert not worker.is_alive()
    done = db_job(wq, zfps_id)
    assert done["state"] == "succeeded" and done["rows"] > 0 and done["attempts"] == 1
    assert [e["kind"] for e in done["events"]].count("claimed") == 1
    assert len(emulator.submissions) == 1
    assert emulator.status_queries > looks  # looked again when due, found it ended
