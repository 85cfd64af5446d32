"""ATLAS through background workers: the whole protocol, a killed worker resuming the
same remote task, cancellation, the full-queue backoff, and the shared rate limit
across three workers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time

import pytest
from test_atlas_limiter import max_in_window

from conftest import assert_secret_nowhere, stop_workers, wait_until, worker_pids
from stdq import Stdq
from stdq.testing.atlas import TEST_TOKEN

POS = ("--ra", "210.910674", "--dec", "54.311650")


def db_job(runner, job_id: int) -> dict:
    conn = sqlite3.connect(runner.data_dir / "stdq.sqlite3", timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        row = dict(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
        row["events"] = [dict(r) for r in conn.execute(
            "SELECT * FROM job_events WHERE job_id = ? ORDER BY id", (job_id,))]
    finally:
        conn.close()
    row["checkpoint"] = json.loads(row["checkpoint_json"] or "{}")
    return row


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def wq(stdq):
    emulator = stdq.server.emulator("atlas")
    emulator.queue_seconds = 0.4
    emulator.run_seconds = 0.4
    stdq.write_settings("\n[tasks]\nautostart_worker = false\nlease_seconds = 2.0\n")
    try:
        yield stdq, emulator
    finally:
        stop_workers(stdq)


def atlas_log(runner, method=None, path=None):
    return runner.server.log_of(emulator="atlas", method=method, path=path)


def assert_token_nowhere(runner, *texts: str) -> None:
    assert_secret_nowhere(runner.data_dir, [TEST_TOKEN], *texts)


@pytest.mark.slow
def test_foreground_query_through_an_autostarted_worker(wq):
    stdq, emulator = wq
    stdq.write_settings("\n[tasks]\nautostart_worker = true\nlease_seconds = 2.0\n")
    result = stdq.run("--json", "query", "atlas", "SN 2023ixf")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    job = db_job(stdq, info["job_id"])
    assert job["runner"] == "worker" and job["state"] == "succeeded" and info["rows"] > 0
    progress = [e["message"] for e in job["events"] if e["kind"] == "progress"]
    first_queued = next(i for i, m in enumerate(progress) if "queued, position" in m)
    first_running = next(i for i, m in enumerate(progress) if m.endswith("running"))
    assert first_queued < first_running < progress.index("processing")
    calls = [(r.method, r.path.split("?")[0].rsplit("/", 2)[-2:], r.status) for r in atlas_log(stdq)]
    assert calls[0][0] == "POST" and calls[0][2] == 201
    assert calls[-2][0] == "GET" and calls[-2][1][-1].startswith("job")
    assert calls[-1][0] == "DELETE" and calls[-1][2] == 204
    assert {c[0] for c in calls[1:-2]} == {"GET"}
    wait_until(lambda: not [p for p in worker_pids(stdq) if alive(p)], what="the burst worker to exit")
    logs = list((stdq.data_dir / "logs").glob("worker-*.log"))
    assert logs and "succeeded" in logs[0].read_text()
    assert_token_nowhere(stdq, result.stdout, result.stderr)


@pytest.mark.slow
def test_killed_worker_resumes_the_same_remote_task(wq):
    """Killed (SIGKILL) while a poll of its task hangs, so the job is running (between polls
    it is parked, queued): its lease runs out and a later worker resumes the same task."""
    stdq, emulator = wq
    emulator.hold = True  # the task stays queued until the test lets it run
    result = stdq.run("query", "atlas", *POS, "--background")
    assert result.returncode == 0, result.stderr
    job_id = int(result.stdout)
    (stdq.data_dir / "logs").mkdir(parents=True, exist_ok=True)
    with open(stdq.data_dir / "logs" / "test-worker-1.log", "wb") as out:
        worker = stdq.popen("jobs", "worker", stdout=out, stderr=out)
        try:
            wait_until(lambda: len(atlas_log(stdq, "GET", r"/queue/\d+/")) >= 2,
                       what="the worker to submit and poll")
            hang = stdq.server.add_fault("hang", r"/queue/\d+/$", method="GET", seconds=4.0)
            wait_until(lambda: hang.times == 0, what="the next poll")
            before = db_job(stdq, job_id)
            assert before["state"] == "running" and before["checkpoint"]["task_url"]
            worker.kill()  # SIGKILL: no release; the lease (2 s) must run out
        finally:
            worker.kill()
            worker.wait(timeout=15)
    emulator.hold = False
    # the lease (2 s) has not run out: a burst worker in this process whose clock is a
    # minute ahead takes the job up (nothing sleeps it out)
    assert db_job(stdq, job_id)["lease_expires"] > time.time()
    with Stdq(config=stdq.config_path, data_dir=stdq.data_dir, clock=lambda: time.time() + 60) as later:
        assert later.run_worker(burst=True) == 0
    job = db_job(stdq, job_id)
    assert job["state"] == "succeeded" and job["attempts"] == 2, job
    posts = atlas_log(stdq, "POST", r"/queue/$")
    assert [r.status for r in posts] == [201]  # one accepted POST: the task was resumed
    assert len(emulator.tasks) == 1
    (task,) = emulator.tasks.values()
    assert task.deleted and job["checkpoint"]["task_id"] == task.id
    polled = {r.path for r in atlas_log(stdq, "GET", r"/queue/\d+/")}
    assert polled == {f"/atlas/forcedphot/queue/{task.id}/"}
    assert any("resumed by" in e["message"] for e in job["events"])
    assert_token_nowhere(stdq)


@pytest.mark.slow
def test_cancel_deletes_the_remote_task(wq):
    stdq, emulator = wq
    emulator.hold = True
    job_id = int(stdq.run("query", "atlas", *POS, "--background").stdout)
    with open(stdq.tmp / "worker.log", "wb") as out:
        worker = stdq.popen("jobs", "worker", stdout=out, stderr=out)
        try:
            wait_until(lambda: len(atlas_log(stdq, "GET", r"/queue/\d+/")) >= 2,
                       what="the worker to poll")
            cancel = stdq.run("jobs", "cancel", str(job_id), "--wait", timeout=60)
            assert cancel.returncode == 0, cancel.stderr
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=15)
    job = db_job(stdq, job_id)
    assert job["state"] == "cancelled"
    (task,) = emulator.tasks.values()
    assert task.deleted
    assert [r.status for r in atlas_log(stdq, "DELETE")] == [204]
    assert job["checkpoint"].get("deleted") is True


@pytest.mark.slow
def test_full_queue_is_retried_later_in_the_background(wq):
    stdq, emulator = wq
    emulator.max_user_tasks = 0
    job_id = int(stdq.run("query", "atlas", *POS, "--background").stdout)
    burst = stdq.run("jobs", "worker", "--burst", timeout=60)
    assert burst.returncode == 0, burst.stderr
    job = db_job(stdq, job_id)
    assert job["state"] == "queued" and "the ATLAS queue is full" in job["error"]
    assert job["run_after"] - time.time() > 500  # backoff: not before the queue can drain
    assert len(atlas_log(stdq, "POST")) == 1 and not emulator.tasks




@pytest.mark.slow
def test_three_workers_share_the_write_limit(wq):
    stdq, emulator = wq
    # the server's 60 writes per 60 s, scaled down: 4 writes per 2 s for the client and server
    emulator.write_limit, emulator.read_limit, emulator.throttle_window = 4, 200, 2.0
    emulator.queue_seconds = emulator.run_seconds = 0.2
    emulator.settings_overrides = {"writes_per_minute": 4, "reads_per_minute": 200, "rate_window": 2.0}
    stdq.write_settings("\n[tasks]\nautostart_worker = false\nlease_seconds = 5.0\n")
    jobs = []
    for i in range(8):
        ra = f"{210.9 + 0.01 * i:.6f}"
        result = stdq.run("query", "atlas", "--ra", ra, "--dec", "54.3", "--background")
        assert result.returncode == 0, result.stderr
        jobs.append(int(result.stdout))
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(open(stdq.tmp / f"w{i}.log", "wb")) for i in range(3)]
        workers = [
            stdq.popen("jobs", "worker", "--burst", "--concurrency", "2", stdout=out, stderr=out)
            for out in logs
        ]
        for worker in workers:
            assert worker.wait(timeout=120) == 0
    states = {db_job(stdq, j)["state"] for j in jobs}
    assert states == {"succeeded"}, [db_job(stdq, j)["error"] for j in jobs]
    writes = [r for r in atlas_log(stdq) if r.method in ("POST", "DELETE")]
    assert len([r for r in writes if r.method == "POST"]) == 8 and len(writes) == 16
    assert max_in_window([r.time for r in writes if r.method == "POST"], 2.0) <= 4
    assert max_in_window([r.time for r in writes], 2.0) <= 4
    assert not [r for r in atlas_log(stdq) if r.status == 429]  # never throttled by the server
    assert max(r.time for r in writes) - min(r.time for r in writes) >= 3 * 2.0  # it had to wait


def test_a_polled_atlas_task_frees_the_thread_for_a_job_of_another_service(stdq):
    """Issue 11: a worker never sleeps idle while a job of another service could run. One worker
    thread, an ATLAS job whose task stays queued (the emulator holds it) and a Pan-STARRS job
    queued after it, on an injected clock: between two polls the ATLAS job is parked (queued,
    due at the next poll, its task and what the polls saw in its checkpoint), the thread runs
    the Pan-STARRS job to its end meanwhile, and when the clock reaches the next poll the ATLAS
    job goes on with the same attempt and the same task."""
    import threading

    from conftest import FakeTime

    emulator = stdq.server.emulator("atlas")
    emulator.hold = True
    emulator.queue_seconds = emulator.run_seconds = 0.0
    # a wait under slots.PARK_ALWAYS: parked because the one thread is busy and a job is due
    emulator.settings_overrides = {"poll_interval": 1.0, "max_poll_interval": 1.0}
    stdq.write_settings("\n[tasks]\nautostart_worker = false\n")
    clock = FakeTime(time.time())
    with Stdq(config=stdq.config_path, data_dir=stdq.data_dir, clock=clock.clock) as lib:
        atlas_id = lib.submit("atlas", ra=210.910674, dec=54.311650, runner="worker").id
        other_id = lib.submit("panstarrs", ra=210.910674, dec=54.311650, runner="worker").id
        worker = threading.Thread(target=lib.run_worker, kwargs={"burst": True, "concurrency": 1})
        worker.start()
        try:
            wait_until(lambda: db_job(stdq, other_id)["state"] == "succeeded",
                       what="the Pan-STARRS job to run while the ATLAS task is queued")
            parked = db_job(stdq, atlas_id)
            assert parked["state"] == "queued" and parked["checkpoint"]["task_url"]
            assert parked["run_after"] == clock.now + 1.0  # the next poll, on the injected clock
            assert parked["events"][-1]["kind"] == "waiting"
            (task,) = emulator.tasks.values()
            assert task.finished is None  # still queued on the server
            # the same thread ran both: the Pan-STARRS job after the ATLAS one was parked
            claims = {j: [e for e in db_job(stdq, j)["events"] if e["kind"] == "claimed"]
                      for j in (atlas_id, other_id)}
            owner = claims[atlas_id][0]["message"].split()[2]
            assert owner.endswith("/t0") and claims[other_id][0]["message"].split()[2] == owner
            assert claims[other_id][0]["id"] > parked["events"][-1]["id"]  # after the park
            assert atlas_log(stdq, "GET", rf"/queue/{task.id}/$") == []  # no poll slept out
            emulator.hold = False
            clock.now += 1.0
            worker.join(timeout=60)
        finally:
            emulator.hold = False
            clock.now += 1000.0
            worker.join(timeout=60)
    assert not worker.is_alive()
    done = db_job(stdq, atlas_id)
    assert done["state"] == "succeeded" and done["rows"] > 0 and done["attempts"] == 1
    assert [e["kind"] for e in done["events"]].count("claimed") == 1  # one attempt, taken up again
    assert [r.status for r in atlas_log(stdq, "POST", r"/queue/$")] == [201]
    assert len(atlas_log(stdq, "GET", rf"/queue/{task.id}/$")) == 1  # polled at once when due
    assert task.deleted
