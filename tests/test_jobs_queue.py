"""The SQLite job queue itself: idempotency, claims and leases, retries, cancel, prune."""

from __future__ import annotations

import json
import math
import sqlite3
import threading

import pytest

from stdq.db import Database
from stdq.errors import BadInput
from stdq.jobs.queue import RETRY_BACKOFF_CAP, JobQueue, idempotency_key, retry_delay
from stdq.records import Job, JobEvent, JobState

TARGET = {"name": "SN 2023ixf", "ra": 210.910674, "dec": 54.311650}
T0 = 1_800_000_000.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def queue(tmp_path, clock):
    jq = JobQueue(Database(tmp_path / "data", clock=clock))
    yield jq
    jq.db.close()


def test_idempotency_key_rounds_coordinates_to_1e6_degree():
    params = {"mjd_min": 60000.0}
    base = idempotency_key("atlas", 210.910674, 54.311650, params)
    # 4e-7 degree apart: the same 6-decimal coordinates, the same key
    assert idempotency_key("atlas", 210.9106744, 54.3116496, params) == base
    # 1e-6 degree apart: another job
    assert idempotency_key("atlas", 210.910675, 54.311650, params) != base
    assert idempotency_key("atlas", 210.910674, 54.311650, {"mjd_min": 60001.0}) != base
    assert idempotency_key("panstarrs", 210.910674, 54.311650, params) != base
    # the order of the parameters does not matter
    two = {"a": 1, "b": 2}
    assert idempotency_key("x", 1, 2, two) == idempotency_key("x", 1, 2, {"b": 2, "a": 1})


def test_identical_submission_returns_the_queued_job(queue):
    job = queue.submit("slow", TARGET, {"seconds": 1.0})
    again = queue.submit("slow", dict(TARGET, ra=210.9106741), {"seconds": 1.0})
    assert isinstance(job, Job) and not job.reused and again.reused
    assert again.id == job.id and job.state is JobState.QUEUED
    forced = queue.submit("slow", TARGET, {"seconds": 1.0}, force=True)
    assert not forced.reused and forced.id != job.id
    other = queue.submit("slow", TARGET, {"seconds": 2.0})
    assert not other.reused and other.id not in (job.id, forced.id)
    assert job.created_at == T0  # the injected clock


def test_finished_job_does_not_block_a_new_submission(queue):
    job = queue.submit("slow", TARGET, {})
    claimed = queue.claim("me", 30)
    assert queue.finish(claimed.id, JobState.SUCCEEDED, owner="me", rows=3)
    again = queue.submit("slow", TARGET, {})
    assert not again.reused and again.id != job.id


def test_concurrent_claims_never_share_a_job(tmp_path):
    setup = JobQueue(tmp_path / "data")
    for i in range(40):
        setup.submit("slow", dict(TARGET, ra=float(i)), {})
    setup.close()
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        jq = JobQueue(tmp_path / "data")  # one Database per thread
        while True:
            job = jq.claim(f"owner{n}", 30)
            if job is None:
                break
            with lock:
                claimed.append(job.id)
        jq.close()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == list(range(1, 41))  # each of the 40 jobs once


def test_expired_lease_is_claimed_again_and_keeps_the_checkpoint(queue, clock):
    queue.submit("slow", TARGET, {})
    job = queue.claim("first", 20)
    queue.save_checkpoint(job.id, {"task_url": "http://x/tasks/1"})
    assert queue.claim("second", 30) is None  # lease still held
    assert not queue.require(job.id).is_abandoned(clock())
    clock.advance(21)
    assert queue.require(job.id).is_abandoned(clock())
    again = queue.claim("second", 30)
    assert again.id == job.id
    assert again.attempts == 2
    assert again.checkpoint == {"task_url": "http://x/tasks/1"}
    claims = [e.message for e in queue.events(job.id) if e.kind == "claimed"]
    assert "lease of first expired; resumed by second" in claims[-1]
    # the first runner lost it: its heartbeat and its finish change nothing
    assert queue.heartbeat(job.id, "first", 30) == (False, False)
    assert not queue.finish(job.id, "succeeded", owner="first", rows=1)
    assert queue.require(job.id).lease_owner == "second"


def test_heartbeat_renews_and_reports_cancel(queue, clock):
    queue.submit("slow", TARGET, {})
    job = queue.claim("me", 0.5)
    assert job.lease_expires == T0 + 0.5
    clock.advance(0.4)
    assert queue.heartbeat(job.id, "me", 10) == (True, False)
    assert queue.require(job.id).lease_expires == T0 + 10.4
    _, outcome = queue.request_cancel(job.id)
    assert outcome == "requested"
    assert queue.heartbeat(job.id, "me", 10) == (True, True)


def test_retry_delay_doubles_from_30_seconds_up_to_an_hour():
    # attempt 1 failed -> 30 s; 2 -> 60 s; 3 -> 120 s; ... capped at 3600 s
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [30.0, 60.0, 120.0, 240.0]
    assert retry_delay(20) == 3600.0
    assert retry_delay(10_000) == 3600.0  # no overflow
    assert retry_delay(1, retry_after=90) == 90.0  # the server's wait wins when longer


@pytest.mark.parametrize("retry_after", [1e9, math.inf, -math.inf, math.nan, -5.0, 1e308])
def test_retry_delay_never_takes_an_absurd_server_wait(retry_after):
    delay = retry_delay(1, retry_after=retry_after)
    assert math.isfinite(delay) and 30.0 <= delay <= RETRY_BACKOFF_CAP


@pytest.mark.parametrize("delay", [math.inf, math.nan, 1e9, -1.0])
def test_requeue_never_stores_an_absurd_time(queue, clock, delay):
    queue.submit("slow", TARGET, {})
    job = queue.claim("me", 30)
    assert queue.requeue(job.id, owner="me", delay=delay, error="slow: HTTP 503")
    row = queue.require(job.id)
    assert math.isfinite(row.run_after) and row.run_after <= T0 + RETRY_BACKOFF_CAP
    json.dumps(row.to_json(), allow_nan=False)  # `jobs list --json` keeps working
    assert queue.list()[0].id == job.id


def test_requeue_waits_for_run_after(queue, clock):
    queue.submit("slow", TARGET, {})
    job = queue.claim("me", 30)
    assert queue.requeue(job.id, owner="me", delay=60, error="slow: HTTP 503")
    row = queue.require(job.id)
    assert row.state is JobState.QUEUED and row.error == "slow: HTTP 503"
    assert row.run_after == T0 + 60
    assert queue.claim("me", 30) is None
    assert not queue.runnable_now()
    assert queue.next_due() == pytest.approx(row.run_after)
    clock.advance(60)
    assert queue.runnable_now()
    assert queue.claim("me", 30).id == job.id


def test_set_progress_stores_the_wait_and_one_event_per_text(queue, clock):
    job = queue.submit("slow", TARGET, {})
    queue.claim("me", 30)
    queue.set_progress(job.id, "slow: HTTP 503; retry 1/4", wait_until=T0 + 8)
    queue.set_progress(job.id, "slow: HTTP 503; retry 1/4", wait_until=T0 + 8)
    shown = queue.require(job.id)
    assert shown.progress == "slow: HTTP 503; retry 1/4" and shown.wait_until == T0 + 8
    queue.set_progress(job.id, "slow: waiting", wait_until=math.inf)  # never stored
    assert queue.require(job.id).wait_until is None
    queue.set_progress(job.id, "slow: HTTP 429", wait_until=T0 + 1e9)  # capped
    assert queue.require(job.id).wait_until == T0 + RETRY_BACKOFF_CAP
    texts = [e.message for e in queue.events(job.id) if e.kind == "progress"]
    assert texts == ["slow: HTTP 503; retry 1/4", "slow: waiting", "slow: HTTP 429"]


def test_release_gives_the_attempt_back(queue):
    queue.submit("slow", TARGET, {})
    job = queue.claim("me", 30)
    assert job.attempts == 1
    assert queue.release(job.id, "me")
    again = queue.claim("other", 30)
    assert again.id == job.id and again.attempts == 1


def test_cancel_queued_running_abandoned_and_finished(queue, clock):
    a = queue.submit("slow", dict(TARGET, ra=1.0), {})
    job, outcome = queue.request_cancel(a.id)
    assert outcome == "cancelled" and job.state is JobState.CANCELLED

    queue.submit("slow", dict(TARGET, ra=2.0), {})
    running = queue.claim("me", 30)
    job, outcome = queue.request_cancel(running.id)
    assert outcome == "requested" and job.state is JobState.RUNNING and job.cancel_requested

    queue.submit("slow", dict(TARGET, ra=3.0), {})
    dead = queue.claim("gone", 1)
    clock.advance(2)
    job, outcome = queue.request_cancel(dead.id)
    assert outcome == "cancelled" and job.state is JobState.CANCELLED

    queue.submit("slow", dict(TARGET, ra=4.0), {})
    done = queue.claim("me", 30)
    queue.finish(done.id, "succeeded", owner="me", rows=1)
    job, outcome = queue.request_cancel(done.id)
    assert outcome == "final" and job.state is JobState.SUCCEEDED
    with pytest.raises(BadInput):
        queue.request_cancel(999)


def test_retry_rules(queue):
    queue.submit("slow", TARGET, {})
    job = queue.claim("me", 30)
    with pytest.raises(BadInput, match="runner is alive"):
        queue.retry(job.id)
    queue.finish(job.id, "failed", owner="me", error="boom", exit_code=1)
    again = queue.retry(job.id)
    assert again.state is JobState.QUEUED and again.attempts == 0 and again.error is None


def test_retry_takes_a_job_whose_process_is_gone(queue):
    """A job owned by a process of this host that no longer exists is abandoned at once."""
    import socket
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that existed and is gone
    queue.submit("slow", TARGET, {}, runner="inprocess")
    owner = f"{socket.gethostname()}:{proc.pid}:abcdef"
    job = queue.claim(owner, 3600, runner="inprocess")
    fresh = queue.require(job.id)
    assert fresh.is_abandoned() and fresh.settled()
    assert "jobs retry" in str(fresh.error_exception())
    assert queue.retry(job.id).state is JobState.QUEUED


def test_prune_deletes_old_finished_jobs_and_events(queue, clock):
    for i in range(3):
        queue.submit("slow", dict(TARGET, ra=float(i)), {})
    first = queue.claim("me", 30)
    queue.finish(first.id, "succeeded", owner="me", rows=1)
    clock.advance(29 * 86400)
    assert queue.prune(30 * 86400) == 0
    clock.advance(2 * 86400)
    assert queue.prune(30 * 86400) == 1
    assert queue.get(first.id) is None
    assert queue.events(first.id) == []
    assert queue.counts()["queued"] == 2  # queued jobs are never pruned


def test_public_shape(queue):
    job = queue.submit("slow", TARGET, {"seconds": 1.0})
    shown = queue.require(job.id).to_json()
    assert list(shown) == [
        "id", "state", "service", "target", "params", "runner", "attempts", "max_attempts",
        "progress", "error", "exit_code", "rows", "detections", "products", "note", "checkpoint",
        "created_at", "created_at_unix", "updated_at", "updated_at_unix", "started_at",
        "started_at_unix", "finished_at", "finished_at_unix", "run_after", "run_after_unix",
        "lease_expires", "lease_expires_unix", "wait_until", "wait_until_unix",
        "cancel_requested", "abandoned",
    ]
    assert shown["state"] == "queued" and shown["abandoned"] is False
    assert shown["target"]["name"] == "SN 2023ixf" and shown["params"] == {"seconds": 1.0}
    events = queue.events(job.id)
    assert all(isinstance(e, JobEvent) for e in events)
    with_events = job.to_json(events=events)
    assert with_events["events"][0]["kind"] == "submitted"
    json.dumps(with_events)


def test_database_is_wal(queue):
    queue.submit("slow", TARGET, {})
    conn = sqlite3.connect(queue.data_dir / "stdq.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_a_job_whose_runner_always_dies_is_failed_not_claimed_for_ever(queue, clock):
    """Each expired-lease reclaim is an attempt; at max_attempts the job ends as failed."""
    job = queue.submit("slow", {"name": "x", "ra": 1.0, "dec": 2.0}, {}, max_attempts=2)
    for attempt in (1, 2):
        claimed = queue.claim(f"dying-{attempt}", lease_seconds=1)
        assert claimed is not None and claimed.attempts == attempt
        clock.advance(2)  # the runner "dies": its lease runs out
    assert queue.claim("next", lease_seconds=10) is None
    ended = queue.require(job.id)
    assert ended.state is JobState.FAILED and ended.exit_code == 1
    assert "2 attempts" in ended.error and "jobs retry" in ended.error
    exc = ended.error_exception()
    assert exc.exit_code == 1 and "jobs retry" in (exc.hint or "")
