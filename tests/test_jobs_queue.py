"""The SQLite job queue itself: idempotency, claims and leases, retries, cancel, prune."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from stdq.errors import BadInput
from stdq.jobs import queue as q
from stdq.jobs.queue import JobQueue, idempotency_key, public, retry_delay

TARGET = {"name": "SN 2023ixf", "ra": 210.910674, "dec": 54.311650}


@pytest.fixture
def queue(tmp_path):
    jq = JobQueue(tmp_path / "data")
    yield jq
    jq.close()


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
    job, created = queue.submit("slow", TARGET, {"seconds": 1.0})
    again, created_again = queue.submit("slow", dict(TARGET, ra=210.9106741), {"seconds": 1.0})
    assert created and not created_again
    assert again["id"] == job["id"]
    forced, created_forced = queue.submit("slow", TARGET, {"seconds": 1.0}, force=True)
    assert created_forced and forced["id"] != job["id"]
    other, created_other = queue.submit("slow", TARGET, {"seconds": 2.0})
    assert created_other and other["id"] not in (job["id"], forced["id"])


def test_finished_job_does_not_block_a_new_submission(queue):
    job, _ = queue.submit("slow", TARGET, {})
    claimed = queue.claim("me", 30)
    assert queue.finish(claimed["id"], "succeeded", owner="me", rows=3)
    again, created = queue.submit("slow", TARGET, {})
    assert created and again["id"] != job["id"]


def test_concurrent_claims_never_share_a_job(tmp_path):
    setup = JobQueue(tmp_path / "data")
    for i in range(40):
        setup.submit("slow", dict(TARGET, ra=float(i)), {})
    setup.close()
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        jq = JobQueue(tmp_path / "data")
        while True:
            job = jq.claim(f"owner{n}", 30)
            if job is None:
                break
            with lock:
                claimed.append(job["id"])
        jq.close()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == list(range(1, 41))  # each of the 40 jobs once


def test_expired_lease_is_claimed_again_and_keeps_the_checkpoint(queue):
    queue.submit("slow", TARGET, {})
    job = queue.claim("first", 0.2)
    queue.save_checkpoint(job["id"], {"task_url": "http://x/tasks/1"})
    assert queue.claim("second", 30) is None  # lease still held
    time.sleep(0.3)
    again = queue.claim("second", 30)
    assert again["id"] == job["id"]
    assert again["attempts"] == 2
    assert again["checkpoint"] == {"task_url": "http://x/tasks/1"}
    kinds = [e["message"] for e in queue.events(job["id"]) if e["kind"] == "claimed"]
    assert "lease of first expired; resumed by second" in kinds[-1]
    # the first runner lost it: its heartbeat and its finish change nothing
    assert queue.heartbeat(job["id"], "first", 30) == (False, False)
    assert not queue.finish(job["id"], "succeeded", owner="first", rows=1)
    assert queue.get(job["id"])["lease_owner"] == "second"


def test_heartbeat_renews_and_reports_cancel(queue):
    queue.submit("slow", TARGET, {})
    job = queue.claim("me", 0.5)
    before = queue.get(job["id"])["lease_expires"]
    time.sleep(0.05)
    assert queue.heartbeat(job["id"], "me", 10) == (True, False)
    assert queue.get(job["id"])["lease_expires"] > before + 5
    _, outcome = queue.request_cancel(job["id"])
    assert outcome == "requested"
    assert queue.heartbeat(job["id"], "me", 10) == (True, True)


def test_retry_delay_doubles_from_30_seconds_up_to_an_hour():
    # attempt 1 failed -> 30 s; 2 -> 60 s; 3 -> 120 s; ... capped at 3600 s
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [30.0, 60.0, 120.0, 240.0]
    assert retry_delay(20) == 3600.0
    assert retry_delay(1, retry_after=90) == 90.0  # the server's wait wins when longer


def test_requeue_waits_for_run_after(queue):
    queue.submit("slow", TARGET, {})
    job = queue.claim("me", 30)
    assert queue.requeue(job["id"], owner="me", delay=60, error="slow: HTTP 503")
    row = queue.get(job["id"])
    assert row["state"] == "queued" and row["error"] == "slow: HTTP 503"
    assert row["run_after"] > time.time() + 50
    assert queue.claim("me", 30) is None
    assert not queue.runnable_now()
    assert queue.next_due() == pytest.approx(row["run_after"])


def test_release_gives_the_attempt_back(queue):
    queue.submit("slow", TARGET, {})
    job = queue.claim("me", 30)
    assert job["attempts"] == 1
    assert queue.release(job["id"], "me")
    again = queue.claim("other", 30)
    assert again["id"] == job["id"] and again["attempts"] == 1


def test_cancel_queued_running_abandoned_and_finished(queue):
    a, _ = queue.submit("slow", dict(TARGET, ra=1.0), {})
    job, outcome = queue.request_cancel(a["id"])
    assert outcome == "cancelled" and job["state"] == "cancelled"

    queue.submit("slow", dict(TARGET, ra=2.0), {})
    running = queue.claim("me", 30)
    job, outcome = queue.request_cancel(running["id"])
    assert outcome == "requested" and job["state"] == "running" and job["cancel_requested"]

    queue.submit("slow", dict(TARGET, ra=3.0), {})
    dead = queue.claim("gone", 0.01)
    time.sleep(0.05)
    job, outcome = queue.request_cancel(dead["id"])
    assert outcome == "cancelled" and job["state"] == "cancelled"

    queue.submit("slow", dict(TARGET, ra=4.0), {})
    done = queue.claim("me", 30)
    queue.finish(done["id"], "succeeded", owner="me", rows=1)
    job, outcome = queue.request_cancel(done["id"])
    assert outcome == "final" and job["state"] == "succeeded"
    with pytest.raises(BadInput):
        queue.request_cancel(999)


def test_retry_rules(queue):
    queue.submit("slow", TARGET, {})
    job = queue.claim("me", 30)
    with pytest.raises(BadInput, match="runner is alive"):
        queue.retry(job["id"])
    queue.finish(job["id"], "failed", owner="me", error="boom", exit_code=1)
    again = queue.retry(job["id"])
    assert again["state"] == "queued" and again["attempts"] == 0 and again["error"] is None


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
    assert q.is_abandoned(queue.get(job["id"]))
    assert queue.retry(job["id"])["state"] == "queued"


def test_prune_deletes_old_finished_jobs_and_events(queue):
    for i in range(3):
        queue.submit("slow", dict(TARGET, ra=float(i)), {})
    first = queue.claim("me", 30)
    queue.finish(first["id"], "succeeded", owner="me", rows=1)
    queue.conn.execute("UPDATE jobs SET finished_at = ? WHERE id = ?", (time.time() - 40 * 86400, first["id"]))
    assert queue.prune(30 * 86400) == 1
    assert queue.get(first["id"]) is None
    assert queue.events(first["id"]) == []
    assert queue.counts()["queued"] == 2  # queued jobs are never pruned


def test_public_shape(queue):
    job, _ = queue.submit("slow", TARGET, {"seconds": 1.0})
    shown = public(queue.get(job["id"]))
    for key in ("id", "state", "service", "target", "params", "attempts", "progress", "error", "rows", "products"):
        assert key in shown
    assert shown["target"]["name"] == "SN 2023ixf" and shown["params"] == {"seconds": 1.0}
    json.dumps(shown)


def test_database_is_wal(queue):
    queue.submit("slow", TARGET, {})
    conn = sqlite3.connect(queue.data_dir / "stdq.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_a_job_whose_runner_always_dies_is_failed_not_claimed_for_ever(tmp_path):
    """Each expired-lease reclaim is an attempt; at max_attempts the job ends as failed."""
    import time as _time

    from stdq.jobs.queue import JobQueue

    queue = JobQueue(tmp_path)
    job, _ = queue.submit("slow", {"name": "x", "ra": 1.0, "dec": 2.0}, {}, max_attempts=2)
    for attempt in (1, 2):
        claimed = queue.claim(f"dying-{attempt}", lease_seconds=0.01)
        assert claimed is not None and claimed["attempts"] == attempt
        _time.sleep(0.05)  # the runner "dies": its lease runs out
    assert queue.claim("next", lease_seconds=10) is None
    ended = queue.require(job["id"])
    assert ended["state"] == "failed" and ended["exit_code"] == 1
    assert "2 attempts" in ended["error"] and "jobs retry" in ended["error"]
    queue.close()
