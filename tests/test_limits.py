"""Per-account limits held across the workers of a data directory (issue 11 item 5): ATLAS's
max_queued unstarted tasks (remote_slots), the write budget shared by submissions and DELETEs
(a finished task's DELETE deferred while submissions wait, never lost), and postponed jobs
that give their thread to another job."""

from __future__ import annotations

import json
import sqlite3

import pytest

from stdq.db import Database
from stdq.jobs.queue import JobQueue
from stdq.records import Target
from stdq.slots import DeferredDeletes, SlotPool, waiting_submissions


@pytest.fixture
def database(tmp_path):
    db = Database(tmp_path / "data")
    yield db
    db.close()


def new_job(queue: JobQueue, i: int) -> int:
    job = queue.submit("atlas", Target(ra=10.0 + i, dec=5.0), {"i": i}, runner="worker")
    return job.id


def test_slots_are_held_across_connections_and_freed_with_their_job(database, tmp_path):
    queue = JobQueue(database)
    ids = [new_job(queue, i) for i in range(4)]
    pool = SlotPool(database, "atlas:x:queued", 2)
    assert pool.take(ids[0]) and pool.take(ids[1])
    assert pool.take(ids[0])  # a job holding one already keeps it
    # another process (its own connection) sees the same count
    other = Database(tmp_path / "data")
    try:
        assert not SlotPool(other, "atlas:x:queued", 2).take(ids[2])
        assert SlotPool(other, "atlas:y:queued", 2).take(ids[2])  # another account: its own slots
    finally:
        other.close()
    pool.give_back(ids[0])
    assert pool.take(ids[2]) and pool.held() == 2
    # a job that ended (or a worker killed, then the job failed) frees its slot at the next take
    with database.transaction() as conn:
        conn.execute("UPDATE jobs SET state = 'failed' WHERE id = ?", (ids[1],))
    assert pool.take(ids[3]) and pool.held() == 2
    assert SlotPool(database, "atlas:x:queued", 0).take(ids[0])  # 0: no limit


def test_deferred_deletes_are_kept_until_deleted(database):
    deferred = DeferredDeletes(database, "atlas:x")
    deferred.add("http://h/queue/1/", 1)
    deferred.add("http://h/queue/2/", 2)
    deferred.add("http://h/queue/1/", 1)  # once
    assert [u for u, _ in deferred.pending()] == ["http://h/queue/1/", "http://h/queue/2/"]
    asked: list[str] = []

    def delete(url: str) -> bool:
        asked.append(url)
        if url.endswith("/2/"):
            raise RuntimeError("connection reset")
        return True

    assert deferred.drain(delete, room=lambda: True) == 1
    assert asked == ["http://h/queue/1/", "http://h/queue/2/"]
    (left,) = deferred.pending()
    assert left == ("http://h/queue/2/", 2)  # the failed one is back on the list
    row = database.conn.execute("SELECT tries, last_error FROM deferred_deletes").fetchone()
    assert row[0] == 1 and "connection reset" in row[1]
    assert deferred.drain(lambda url: True, room=lambda: False) == 0  # no room: nothing sent
    assert deferred.drain(lambda url: True, room=lambda: True) == 1 and deferred.pending() == []


def test_waiting_submissions_counts_jobs_without_a_task(database):
    queue = JobQueue(database)
    ids = [new_job(queue, i) for i in range(3)]
    queue.save_checkpoint(ids[0], {"task_url": "http://h/queue/1/"})
    assert waiting_submissions(database, "atlas") == 2
    with database.transaction() as conn:
        conn.execute("UPDATE jobs SET state = 'succeeded' WHERE id = ?", (ids[1],))
    assert waiting_submissions(database, "atlas") == 1
    assert waiting_submissions(database, "ztf-fps") == 0


# -- ATLAS end to end, through a worker in this process -----------------------------------------------


def db_rows(stdq, sql: str, args=()) -> list[sqlite3.Row]:
    conn = sqlite3.connect(stdq.data_dir / "stdq.sqlite3", timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def max_unstarted(tasks) -> int:
    """The most tasks created and not yet started at any creation instant."""
    most = 0
    for t in tasks:
        at = t.created
        most = max(most, sum(1 for u in tasks if u.created <= at and (u.started is None or u.started > at)))
    return most


@pytest.fixture
def atlas(stdq):
    emulator = stdq.server.emulator("atlas")
    emulator.queue_seconds = 0.3
    emulator.run_seconds = 0.1
    emulator.queue_ahead = 0
    emulator.recent_nights = 0
    return stdq, emulator


def submit(stdq, n: int) -> list[int]:
    ids = []
    for i in range(n):
        result = stdq.run("query", "atlas", "--ra", f"{20.0 + i:.4f}", "--dec", "10.0", "--background")
        assert result.returncode == 0, result.stderr
        ids.append(int(result.stdout))
    return ids


def test_max_queued_holds_across_worker_threads(atlas):
    stdq, emulator = atlas
    emulator.settings_overrides = {"max_queued": 2, "poll_interval": 0.1, "max_poll_interval": 0.2}
    stdq.write_settings("\n[tasks]\nautostart_worker = false\n")
    ids = submit(stdq, 6)
    result = stdq.run("jobs", "worker", "--burst", "--concurrency", "4", timeout=120)
    assert result.returncode == 0, result.stderr
    states = [r["state"] for r in db_rows(stdq, "SELECT state FROM jobs ORDER BY id")]
    assert states == ["succeeded"] * 6
    tasks = list(emulator.tasks.values())
    assert len(tasks) == 6  # one submission each: postponing never submits twice
    assert max_unstarted(tasks) <= 2
    postponed = db_rows(stdq, "SELECT COUNT(*) AS n FROM job_events WHERE kind = 'postponed'")[0]["n"]
    assert postponed >= 1  # some job had to wait for a slot, and gave its thread back
    attempts = [r["attempts"] for r in db_rows(stdq, "SELECT attempts FROM jobs")]
    assert max(attempts) == 1  # a postponement is not an attempt
    assert db_rows(stdq, "SELECT * FROM remote_slots") == []
    assert all(t.deleted for t in tasks)  # every finished task deleted in the end
    assert ids


def test_finished_deletes_wait_for_the_submissions(atlas):
    """A write budget of 4 per 2 s, 6 targets: the first DELETEs would take the submissions'
    slots, so they are deferred; every task is deleted in the end (0 left on the server), no
    window over the budget, and a deferred delete is in the job's product notes."""
    stdq, emulator = atlas
    emulator.write_limit, emulator.throttle_window = 4, 2.0
    emulator.settings_overrides = {"writes_per_minute": 4, "rate_window": 2.0, "poll_interval": 0.1,
                                   "max_poll_interval": 0.2}
    stdq.write_settings("\n[tasks]\nautostart_worker = false\n")
    submit(stdq, 6)
    result = stdq.run("jobs", "worker", "--burst", "--concurrency", "6", timeout=120)
    assert result.returncode == 0, result.stderr
    assert [r["state"] for r in db_rows(stdq, "SELECT state FROM jobs")] == ["succeeded"] * 6
    writes = [r for r in stdq.server.log_of(emulator="atlas") if r.method in ("POST", "DELETE")]
    # one accepted submission per job (a 429 of a CPU-starved moment is retried, never twice)
    assert len([r for r in writes if r.method == "POST" and r.status == 201]) == 6
    deferred = [json.loads(r["checkpoint_json"]).get("deleted") for r in db_rows(stdq, "SELECT checkpoint_json FROM jobs")]
    assert "deferred" in deferred  # at least one DELETE waited for the submissions
    # the submissions came first: no DELETE before the last submission took its slot... unless
    # the budget had room for every waiting one
    assert all(t.deleted for t in emulator.tasks.values())
    assert db_rows(stdq, "SELECT * FROM deferred_deletes") == []
    assert len([r for r in writes if r.method == "DELETE" and r.status < 400]) == 6


def test_zfps_max_pending_holds_across_worker_threads(stdq):
    """max_pending = 1: a request is submitted only once the one before it has ended."""
    emulator = stdq.server.emulator("zfps")
    emulator.delay = 0.2
    emulator.recent_nights = 0
    stdq.write_settings("\n[tasks]\nautostart_worker = false\n")
    text = stdq.config_path.read_text().replace(
        "[services.ztf-fps]\n", "[services.ztf-fps]\nmax_pending = 1\nbatch_size = 1\n", 1)
    stdq.config_path.write_text(text)
    for i in range(3):
        result = stdq.run("query", "ztf-fps", "--ra", f"{40.0 + i:.4f}", "--dec", "10.0", "--background")
        assert result.returncode == 0, result.stderr
    result = stdq.run("jobs", "worker", "--burst", "--concurrency", "3", timeout=120)
    assert result.returncode == 0, result.stderr
    assert [r["state"] for r in db_rows(stdq, "SELECT state FROM jobs")] == ["succeeded"] * 3
    requests = sorted(emulator.fp_requests, key=lambda r: r.created)
    assert len(requests) == 3
    for before, after in zip(requests, requests[1:], strict=False):
        assert after.created >= before.ready_at  # the earlier one had ended
    assert db_rows(stdq, "SELECT * FROM remote_slots") == []
    assert max(r["attempts"] for r in db_rows(stdq, "SELECT attempts FROM jobs")) == 1


def test_zfps_jobs_share_one_batch_submission(stdq):
    """5 jobs, 3 worker threads: one submission with the 5 positions; each job finds its own
    request (its position) in the listing and gets its own light curve."""
    emulator = stdq.server.emulator("zfps")
    emulator.delay = 0.2
    emulator.recent_nights = 0
    stdq.write_settings("\n[tasks]\nautostart_worker = false\n")
    text = stdq.config_path.read_text().replace(
        "[services.ztf-fps]\n", "[services.ztf-fps]\nbatch_window = 1.0\n", 1)
    stdq.config_path.write_text(text)
    positions = [("210.910674", "54.311650"), ("170.5750583", "59.0742417"), ("10.684708", "41.268750"),
                 ("50.0", "10.0"), ("51.0", "10.0")]
    ids = []
    for ra, dec in positions:
        result = stdq.run("query", "ztf-fps", "--ra", ra, "--dec", dec, "--background")
        assert result.returncode == 0, result.stderr
        ids.append(int(result.stdout))
    result = stdq.run("jobs", "worker", "--burst", "--concurrency", "3", timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {r["id"]: r for r in db_rows(stdq, "SELECT * FROM jobs")}
    assert [rows[i]["state"] for i in ids] == ["succeeded"] * 5, [rows[i]["error"] for i in ids]
    assert len(emulator.submissions) == 1  # the service counts requests: one
    (form,) = emulator.submissions
    assert sorted(json.loads(form["ra"])) == sorted(float(ra) for ra, _ in positions)
    by_id = {str(r.req_id): r for r in emulator.fp_requests}
    for job_id, (ra, dec) in zip(ids, positions, strict=True):
        checkpoint = json.loads(rows[job_id]["checkpoint_json"])
        request = by_id[checkpoint["zfps_reqid"]]  # its own request, matched by position
        assert (request.ra, request.dec) == (float(ra), float(dec))
    assert rows[ids[0]]["rows"] > 0 and rows[ids[1]]["rows"] > 0  # SN 2023ixf, NGC 3642 have data
    assert max(r["attempts"] for r in rows.values()) == 1


def test_a_short_wait_parks_only_when_no_thread_is_free_and_a_job_is_due(database):
    from stdq.slots import PARK_ALWAYS, park_rather_than_sleep

    clock = {"now": 1000.0}
    db = Database(database.data_dir, clock=lambda: clock["now"])
    queue = JobQueue(db)
    try:
        assert park_rather_than_sleep(db, PARK_ALWAYS, spare=8)  # a long wait: always parked
        assert not park_rather_than_sleep(db, 0.5, spare=0)  # nothing else to run: sleeps
        job = new_job(queue, 1)
        with db.transaction() as conn:
            conn.execute("UPDATE jobs SET run_after = 1000.8 WHERE id = ?", (job,))
        assert not park_rather_than_sleep(db, 0.5, spare=0)  # due after the wait: sleeps
        assert park_rather_than_sleep(db, 0.9, spare=0)  # due within it, no free thread: parks
        assert not park_rather_than_sleep(db, 0.9, spare=1)  # a free thread will take it
        queue.request_cancel(job)
        assert not park_rather_than_sleep(db, 0.9, spare=0)  # cancelled: nothing to run
    finally:
        db.close()


def test_postpone_line_gives_each_waiting_job_its_turn(database):
    from stdq.slots import postpone_line

    queue = JobQueue(database)
    ids = [new_job(queue, i) for i in range(5)]
    queue.save_checkpoint(ids[0], {"task_url": "http://h/queue/1/"})  # submitted: not in line
    claimed = queue.claim("me", 30.0)  # ids[0], the oldest due
    assert claimed is not None and claimed.id == ids[0]
    second = queue.claim("me", 30.0)  # ids[1] runs: in line (first), not moved
    assert second is not None and second.id == ids[1]
    with database.transaction() as conn:
        conn.execute("UPDATE jobs SET run_after = 500 WHERE id = ?", (ids[4],))  # due later already
    moved = postpone_line(database, "atlas", lambda k: 100.0 + 10.0 * k, 1.0)
    due = {r[0]: r[1] for r in database.conn.execute("SELECT id, run_after FROM jobs")}
    # in line: ids[1] (0 ahead, running), ids[2] (1), ids[3] (2), ids[4] (3); LEAD 1 s early
    assert (due[ids[2]], due[ids[3]], due[ids[4]]) == (109.0, 119.0, 500.0)
    assert moved == 2


def test_a_submission_on_its_way_is_not_waiting_for_a_later_slot(database):
    from stdq.slots import submissions_ahead

    queue = JobQueue(database)
    ids = [new_job(queue, i) for i in range(3)]
    queue.save_checkpoint(ids[0], {"atlas_submit": {"key": "k0", "state": "sending"}})
    queue.save_checkpoint(ids[1], {"atlas_submit": {"key": "k1", "state": "refused"}})
    assert submissions_ahead(database, "atlas", ids[2]) == 2
    # ids[0] holds (or is taking) its slot: only ids[1] waits for one before ids[2]
    assert submissions_ahead(database, "atlas", ids[2], sending="atlas_submit") == 1


def test_a_batch_knows_its_latest_join_and_wakes_its_members_when_sent(tmp_path):
    from stdq.batches import BatchBoard

    clock = {"now": 100.0}
    db = Database(tmp_path / "data", clock=lambda: clock["now"])
    queue = JobQueue(db)
    try:
        ids = [new_job(queue, i) for i in range(3)]
        board = BatchBoard(db, "ztf-fps:x")
        batch, leads = board.join("k", ids[0], {"ra": 1.0}, 500, {"jdend": 2.0})
        assert leads and board.last_join(batch.id) == 100.0
        for i, job in enumerate(ids[1:], start=1):
            clock["now"] = 100.0 + 2.5 * i  # each within a 3 s window of the one before
            again, leads = board.join("k", job, {"ra": 1.0 + i}, 500, {})
            assert again.id == batch.id and not leads
        assert board.last_join(batch.id) == 105.0  # the leader sends 3 s after this, not 103
        with db.transaction() as conn:  # the two members postponed far ahead; one ended
            conn.execute("UPDATE jobs SET run_after = 130 WHERE id IN (?, ?)", (ids[1], ids[2]))
            conn.execute("UPDATE jobs SET state = 'cancelled' WHERE id = ?", (ids[2],))
        clock["now"] = 109.0
        assert board.wake_members(batch.id) == 1
        assert db.conn.execute("SELECT run_after FROM jobs WHERE id = ?", (ids[1],)).fetchone()[0] == 109.0
    finally:
        db.close()
