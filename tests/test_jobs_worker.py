"""Workers in this process (run_worker) against the slow emulator: outcomes, retries, stop, cancel."""

from __future__ import annotations

import threading
import time

import pytest

from stdq.config import load_settings
from stdq.db import Database
from stdq.jobs import queue as queue_mod
from stdq.jobs import worker as worker_mod
from stdq.jobs.queue import JobQueue
from stdq.jobs.worker import ensure_worker, run_worker
from stdq.records import JobState, Outcome
from stdq.testing import slow
from stdq.testing.fakeserver import FakeServer, settings_toml
from stdq.testing.slow import SlowServiceEmulator

SN = {"name": "SN 2023ixf", "ra": 210.910674, "dec": 54.311650}
EMPTY = {"name": "Empty Field", "ra": 150.0, "dec": -30.0}


@pytest.fixture
def server():
    srv = FakeServer([SlowServiceEmulator(default_seconds=0.0)]).start()
    yield srv
    srv.stop()


@pytest.fixture
def make_settings(tmp_path, server):
    def make(**tasks):
        path = tmp_path / "config.toml"
        tasks.setdefault("autostart_worker", False)
        path.write_text(settings_toml(server, slow.settings_extra(**tasks)), encoding="utf-8")
        return load_settings(str(path), str(tmp_path / "data"))

    return make


@pytest.fixture
def queue(tmp_path):
    jq = JobQueue(tmp_path / "data")
    yield jq
    jq.close()


class Clock:
    """A clock the test moves by hand (shared by the queue and the worker)."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clocked(tmp_path):
    """(a hand-moved clock, the queue of the data dir on it)."""
    clock = Clock(time.time())
    database = Database(tmp_path / "data", clock=clock)
    yield clock, JobQueue(database)
    database.close()


def emulator(server) -> SlowServiceEmulator:
    return server.emulator("slow")


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_burst_worker_runs_each_job_once(make_settings, queue, server):
    settings = make_settings()
    ids = [queue.submit("slow", dict(SN, ra=SN["ra"] + i * 1e-3), {}).id for i in range(5)]
    assert run_worker(settings, burst=True, concurrency=2) == 0
    jobs = [queue.get(i) for i in ids]
    assert [j.state for j in jobs] == [JobState.SUCCEEDED] * 5
    # rows i = 0..11: snr = (50 (i + 1) - 100) / 10 = 5 i - 5 -> -5, 0, 5, 10, ...: i >= 2 detected
    assert {(j.rows, j.detections, j.attempts) for j in jobs} == {(12, 10, 1)}
    assert {j.outcome for j in jobs} == {Outcome.ROWS}
    assert len(server.log_of(emulator="slow", method="POST")) == 5
    assert len(server.log_of(emulator="slow", method="DELETE")) == 5  # remote tasks cleaned up
    assert queue.live_workers(30) == []  # the burst worker left the table


def test_time_window_reaches_the_service(make_settings, queue):
    settings = make_settings()
    job = queue.submit("slow", SN, {"mjd_min": 60003.0, "mjd_max": 60004.5})
    run_worker(settings, burst=True)
    # mjd = 60000 + 0.5 i in [60003, 60004.5] -> i = 6, 7, 8, 9; snr 25..40: all detections
    ended = queue.get(job.id)
    assert (ended.state, ended.rows, ended.detections) == ("succeeded", 4, 4)


def test_no_data_is_a_success_with_zero_rows(make_settings, queue):
    settings = make_settings()
    job = queue.submit("slow", EMPTY, {})
    run_worker(settings, burst=True)
    ended = queue.get(job.id)
    assert ended.state is JobState.SUCCEEDED and ended.rows == 0 and ended.outcome is Outcome.NO_DATA
    assert "no data" in ended.note
    assert ended.error_exception().exit_code == 5
    assert len(ended.products) == 1  # the raw answer is kept


def test_temporary_failure_is_queued_again_with_backoff_then_fails(make_settings, clocked, server):
    settings = make_settings()
    clock, queue = clocked
    # a POST that creates remote work is never re-sent: one try per attempt, answered 503
    server.add_fault("503", r"/slow/tasks$", method="POST", times=2)
    job = queue.submit("slow", SN, {}, max_attempts=2)  # as [tasks] max_attempts = 2 would
    before = clock()
    run_worker(settings, burst=True, clock=clock)
    first = queue.get(job.id)
    assert first.state is JobState.QUEUED and first.attempts == 1
    assert "HTTP 503" in first.error
    # attempt 1 failed: the next one is due 30 s later (RETRY_BACKOFF_BASE)
    assert first.run_after - before >= 29
    clock.advance(31)  # the worker and the queue share the injected clock
    run_worker(settings, burst=True, clock=clock)
    second = queue.get(job.id)
    assert (second.state, second.attempts, second.exit_code) == ("failed", 2, 75)
    assert second.outcome is Outcome.TEMPORARY
    assert second.error_exception().exit_code == 75
    assert len(server.log_of(emulator="slow", method="POST")) == 2


def test_refused_credential_fails_at_once(make_settings, queue, server, monkeypatch):
    emulator(server).api_key = "right-key-123"
    monkeypatch.setenv("STDQ_SLOW_API_KEY", "wrong-key-456")
    settings = make_settings()
    job = queue.submit("slow", SN, {})
    run_worker(settings, burst=True)
    ended = queue.get(job.id)
    assert (ended.state, ended.attempts, ended.exit_code) == ("failed", 1, 3)
    assert "credentials refused" in ended.error and "wrong-key-456" not in ended.error
    assert type(ended.error_exception()).__name__ == "ConfigError"
    assert len(server.log_of(emulator="slow", method="POST")) == 1


def test_right_credential_is_sent(make_settings, queue, server, monkeypatch):
    emulator(server).api_key = "right-key-123"
    monkeypatch.setenv("STDQ_SLOW_API_KEY", "right-key-123")
    settings = make_settings()
    job = queue.submit("slow", SN, {})
    run_worker(settings, burst=True)
    assert queue.get(job.id).state is JobState.SUCCEEDED


def test_bad_target_fails_at_once(make_settings, queue, server):
    settings = make_settings()
    job = queue.submit("slow", {"name": None, "ra": 10.0, "dec": -88.0}, {})
    run_worker(settings, burst=True)
    ended = queue.get(job.id)
    assert (ended.state, ended.attempts, ended.exit_code) == ("failed", 1, 1)
    assert "footprint" in ended.error


def _worker_thread(settings, stop):
    thread = threading.Thread(
        target=run_worker, args=(settings,), kwargs={"stop_event": stop}, daemon=True
    )
    thread.start()
    return thread


def test_stopping_a_worker_releases_its_job_and_keeps_the_remote_task(make_settings, queue, server):
    settings = make_settings()
    job = queue.submit("slow", SN, {"seconds": 60.0})
    stop = threading.Event()
    thread = _worker_thread(settings, stop)
    wait_for(lambda: queue.get(job.id).checkpoint.get("task_url"), what="task_url")
    stop.set()
    thread.join(timeout=20)
    assert not thread.is_alive()
    released = queue.get(job.id)
    assert released.state is JobState.QUEUED and released.attempts == 0
    assert released.checkpoint["task_url"].endswith("/tasks/1")
    assert server.log_of(emulator="slow", method="DELETE") == []
    # the remote task finishes meanwhile; the next worker resumes it without a new submission
    emulator(server).tasks[1].seconds = 0.0
    run_worker(settings, burst=True)
    ended = queue.get(job.id)
    assert ended.state is JobState.SUCCEEDED and ended.rows == 12
    assert len(server.log_of(emulator="slow", method="POST")) == 1
    assert any(e.kind == "resume" for e in queue.events(job.id))


def test_cancel_of_a_running_job_deletes_the_remote_task(make_settings, queue, server):
    settings = make_settings(lease_seconds=1.5)  # heartbeat every 0.5 s: a quick cancel
    job = queue.submit("slow", SN, {"seconds": 60.0})
    stop = threading.Event()
    thread = _worker_thread(settings, stop)
    try:
        wait_for(lambda: queue.get(job.id).checkpoint.get("task_url"), what="task_url")
        _, outcome = queue.request_cancel(job.id)
        assert outcome == "requested"
        wait_for(lambda: queue.get(job.id).state is JobState.CANCELLED, what="cancelled")
    finally:
        stop.set()
        thread.join(timeout=20)
    deletes = server.log_of(emulator="slow", method="DELETE")
    assert [d.path for d in deletes] == ["/slow/tasks/1"]
    assert emulator(server).tasks[1].deleted_at is not None


def test_ensure_worker_rules(make_settings, clocked, server, monkeypatch):
    spawned = []
    monkeypatch.setattr(worker_mod, "spawn_worker", lambda s: (spawned.append(1) or 4242, s.data_dir / "x.log"))
    monkeypatch.setattr(queue_mod, "pid_alive", lambda pid: True)
    off = make_settings(autostart_worker=False)
    on = make_settings(autostart_worker=True)
    clock, queue = clocked
    job = queue.submit("slow", SN, {})
    assert ensure_worker(off, queue) is None  # autostart off
    assert ensure_worker(on, queue) == 4242
    assert ensure_worker(on, queue) is None  # the spawned worker is registered: no second one
    assert spawned == [1]
    queue.unregister_worker(4242)
    queue.register_worker(99999, burst=False, concurrency=1)
    assert ensure_worker(on, queue) is None  # a live worker exists
    clock.advance(60)  # no heartbeat for a minute (> lease and spawn grace): dead
    assert ensure_worker(on, queue) == 4242
    queue.unregister_worker(4242)
    queue.finish(job.id, "cancelled", note="done with it")
    assert ensure_worker(on, queue) is None  # nothing to run
    assert spawned == [1, 1]


@pytest.mark.slow
def test_ensure_worker_spawns_a_detached_burst_worker(make_settings, queue, server):
    settings = make_settings(autostart_worker=True)
    job = queue.submit("slow", SN, {})
    pid = ensure_worker(settings)
    assert pid
    wait_for(lambda: queue.get(job.id).state is JobState.SUCCEEDED, timeout=60, what="job done")
    wait_for(lambda: not queue_mod.pid_alive(pid) or _reap(pid), timeout=30, what="worker exit")
    log = settings.data_dir / "logs" / f"worker-{pid}.log"
    assert log.is_file()
    assert f"job {job.id} succeeded" in log.read_text()
    assert queue.live_workers(30) == []


def _reap(pid: int) -> bool:
    import os

    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid
