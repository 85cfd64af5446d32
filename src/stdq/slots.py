"""Per-account limits held across every worker of a data directory (issue 11 item 5).

Besides the request rates (:mod:`stdq.limiter`), services limit what an account has in
flight: ATLAS at most ``max_queued`` unstarted tasks (server: 500), ZFPS at most
``max_pending`` requests. :class:`SlotPool` counts them in the ``remote_slots`` table of
the data directory's database (migration 5): a job takes a slot before it submits and
gives it back when its remote task has started or ended; a slot of a job that has ended
(or is gone) is freed by the next ``take``, so a killed worker never leaks one.

:class:`DeferredDeletes` is the list of remote tasks to DELETE later (``deferred_deletes``):
ATLAS counts a DELETE as a write, so a finished task is deleted only when the write budget
has room after every waiting submission; until then its URL is kept here (and in its job's
record), and workers drain the list when they have room. Nothing is lost.

:class:`Postponed` (a TemporaryFailure) asks the worker to queue the job again after
``retry_after`` seconds without counting an attempt: a job that cannot go on now (no slot,
no write budget) gives its thread to a job that can (of any service). :class:`Waiting` (a
Postponed) does the same for a job between two polls of its remote task.

Stdlib only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from stdq.db import Database
from stdq.errors import TemporaryFailure

FINAL_STATES = ("succeeded", "failed", "cancelled")


class Postponed(TemporaryFailure):
    """Not now: queue the job again after ``retry_after`` seconds (no attempt counted)."""


class Waiting(Postponed):
    """The job waits for its remote task (between two polls): queued again with its checkpoint,
    due after ``retry_after`` seconds, so its thread runs other jobs meanwhile; the same attempt
    goes on when it is taken up again (one ``waiting`` event per wait, not one per poll)."""


class SlotPool:
    """At most LIMIT slots of SCOPE held at once, by job id, across processes."""

    def __init__(self, db: Database, scope: str, limit: int):
        self.db = db
        self.scope = scope
        self.limit = int(limit)

    def take(self, job_id: int) -> bool:
        """Take a slot for JOB_ID (True; also when it holds one already), False when full.
        A LIMIT of 0 or less: no limit (always True, nothing stored)."""
        if self.limit <= 0:
            return True
        with self.db.transaction() as conn:
            conn.execute(
                "DELETE FROM remote_slots WHERE scope = ? AND job_id NOT IN"
                " (SELECT id FROM jobs WHERE state NOT IN (?, ?, ?))",
                (self.scope, *FINAL_STATES),
            )
            if conn.execute(
                "SELECT 1 FROM remote_slots WHERE scope = ? AND job_id = ?", (self.scope, job_id)
            ).fetchone():
                return True
            held = conn.execute(
                "SELECT COUNT(*) FROM remote_slots WHERE scope = ?", (self.scope,)
            ).fetchone()[0]
            if int(held) >= self.limit:
                return False
            conn.execute(
                "INSERT INTO remote_slots (scope, job_id, taken_at) VALUES (?, ?, ?)",
                (self.scope, job_id, self.db.clock()),
            )
            return True

    def give_back(self, job_id: int) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "DELETE FROM remote_slots WHERE scope = ? AND job_id = ?", (self.scope, job_id)
            )

    def held(self) -> int:
        row = self.db.conn.execute(
            "SELECT COUNT(*) FROM remote_slots WHERE scope = ?", (self.scope,)
        ).fetchone()
        return int(row[0])


class DeferredDeletes:
    """Remote task URLs of SCOPE to DELETE when the write budget has room."""

    def __init__(self, db: Database, scope: str):
        self.db = db
        self.scope = scope

    def add(self, url: str, job_id: int | None) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO deferred_deletes (scope, url, job_id, added_at)"
                " VALUES (?, ?, ?, ?)",
                (self.scope, url, job_id, self.db.clock()),
            )

    def pending(self) -> list[tuple[str, int | None]]:
        rows = self.db.conn.execute(
            "SELECT url, job_id FROM deferred_deletes WHERE scope = ? ORDER BY id", (self.scope,)
        ).fetchall()
        return [(str(r[0]), r[1]) for r in rows]

    def done(self, url: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM deferred_deletes WHERE scope = ? AND url = ?", (self.scope, url))

    def failed(self, url: str, why: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE deferred_deletes SET tries = tries + 1, last_error = ? WHERE scope = ?"
                " AND url = ?",
                (why[:300], self.scope, url),
            )

    def drain(
        self, delete: Callable[[str], bool], room: Callable[[], bool], *, most: int = 1000
    ) -> int:
        """DELETE pending URLs while ROOM() says the write budget allows one more;
        DELETE(url) -> True when gone. Returns how many were deleted."""
        count = 0
        for url, job in self.pending()[:most]:
            if not room():
                break
            if not self.claim(url):
                continue  # another thread or process took it
            try:
                gone = delete(url)
                why = "the server did not delete it"
            except Exception as exc:  # best effort: back on the list for the next drain
                gone, why = False, f"{type(exc).__name__}: {exc}"
            if gone:
                count += 1
            else:
                self.add(url, job)
                self.failed(url, why)
        return count

    def claim(self, url: str) -> bool:
        """Take URL off the list (True) before its DELETE, unless another took it first."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM deferred_deletes WHERE scope = ? AND url = ?", (self.scope, url)
            )
            return cur.rowcount == 1


def waiting_submissions(db: Database, service: str, slot_key: str = "task_url") -> int:
    """Jobs of SERVICE queued or running that have not submitted yet (no SLOT_KEY in their
    checkpoint): the writes that come before any deferred DELETE."""
    row = db.conn.execute(
        "SELECT COUNT(*) FROM jobs WHERE service = ? AND state IN ('queued', 'running')"
        " AND (checkpoint_json IS NULL OR json_extract(checkpoint_json, '$.' || ?) IS NULL)",
        (service, slot_key),
    ).fetchone()
    return int(row[0])


def submissions_ahead(
    db: Database, service: str, job_id: int, slot_key: str = "task_url",
    sending: str | None = None,
) -> int:
    """Jobs of SERVICE waiting to submit that came before JOB_ID (lower id): its place in line.
    SENDING: the create-once record (stdq.remote) of a job whose submission is on its way (state
    ``sending``: it holds its rate-limit slot already, or is about to take the next one); such
    jobs are not counted as waiting for a later slot."""
    sql = (
        "SELECT COUNT(*) FROM jobs WHERE service = ? AND state IN ('queued', 'running') AND id < ?"
        " AND (checkpoint_json IS NULL OR json_extract(checkpoint_json, '$.' || ?) IS NULL)"
    )
    args: list[Any] = [service, job_id, slot_key]
    if sending:
        sql += (" AND (checkpoint_json IS NULL OR"
                " json_extract(checkpoint_json, '$.' || ? || '.state') IS NOT 'sending')")
        args.append(sending)
    row = db.conn.execute(sql, args).fetchone()
    return int(row[0])


def postpone_line(
    db: Database, service: str, turn_at: Callable[[int], float], lead: float,
    slot_key: str = "task_url", sending: str | None = None,
) -> int:
    """Give every queued job of SERVICE waiting to submit (no SLOT_KEY in its checkpoint) its
    turn at once, first come first served: the job with A such jobs before it (queued or
    running, lower id; SENDING as in :func:`submissions_ahead`) becomes due LEAD seconds before
    TURN_AT(A) (never earlier than it was due). One transaction instead of one claim per job that would only find the budget used up
    and be postponed. Returns how many jobs were moved."""
    with db.transaction() as conn:
        rows = conn.execute(
            "SELECT id, state, run_after, cancel_requested FROM jobs WHERE service = ? AND state"
            " IN ('queued', 'running') AND (checkpoint_json IS NULL OR"
            " json_extract(checkpoint_json, '$.' || ?) IS NULL) AND (? IS NULL OR checkpoint_json"
            " IS NULL OR json_extract(checkpoint_json, '$.' || ? || '.state') IS NOT 'sending')"
            " ORDER BY id",
            (service, slot_key, sending, sending),
        ).fetchall()
        moves = []
        for ahead, (job_id, state, run_after, cancel) in enumerate(rows):
            due = turn_at(ahead) - lead
            if state == "queued" and not cancel and due > float(run_after or 0.0) + 0.05:
                moves.append((due, job_id))
        conn.executemany("UPDATE jobs SET run_after = ? WHERE id = ? AND state = 'queued'", moves)
        return len(moves)


PARK_ALWAYS = 2.0  # a wait at least this long always gives the thread back (seconds)


def park_rather_than_sleep(db: Database, seconds: float, spare: int) -> bool:
    """Whether a worker's job about to wait SECONDS for its remote task gives its thread back
    (:class:`Waiting`) instead of sleeping in it. Always for a wait of PARK_ALWAYS or more;
    for a shorter one, when none of this worker's threads is free (SPARE, from
    ``stdq.jobs.worker.spare_threads``) and some other worker job is due within the wait: a
    thread sleeps only while a free thread of its worker could take whatever becomes due, so a
    worker never sleeps idle while a job (of any service) could run, and a short poll does not
    pay for a park and a claim when it need not."""
    if seconds >= PARK_ALWAYS:
        return True
    if spare > 0:
        return False
    try:
        row: Any = db.conn.execute(
            "SELECT MIN(run_after) FROM jobs WHERE state = 'queued' AND runner = 'worker'"
            " AND cancel_requested = 0"
        ).fetchone()
    except Exception:  # an older schema: park, as a job that waits long does
        return True
    return row is not None and row[0] is not None and float(row[0]) <= clock_of(db)() + seconds


def clock_of(db: Database) -> Callable[[], float]:
    return getattr(db, "clock", time.time)


DELETE_TRIES = 5  # a burst worker stays for a deferred DELETE that failed fewer times than this


def has_deferred(db: Database, *, retried_below: int | None = None) -> bool:
    """Whether any deferred DELETE waits (cheap: the worker asks it when idle); with
    RETRIED_BELOW, only one that failed fewer times than that."""
    try:
        if retried_below is None:
            row: Any = db.conn.execute("SELECT 1 FROM deferred_deletes LIMIT 1").fetchone()
        else:
            row = db.conn.execute(
                "SELECT 1 FROM deferred_deletes WHERE tries < ? LIMIT 1", (retried_below,)
            ).fetchone()
    except Exception:  # an older schema, or no database yet
        return False
    return row is not None


def postponed_due(db: Database) -> float | None:
    """When the next job postponed by an account limit (its latest event ``postponed``, or never
    run: given its turn by :func:`postpone_line`) or waiting for its remote task (``waiting``)
    is due, None when there is none: a burst worker waits for those instead of exiting."""
    try:
        row: Any = db.conn.execute(
            "SELECT MIN(j.run_after) FROM jobs j WHERE j.state = 'queued' AND"
            " j.runner = 'worker' AND j.cancel_requested = 0 AND (j.attempts = 0 OR"
            " (SELECT e.kind FROM job_events e WHERE e.job_id = j.id ORDER BY e.id DESC LIMIT 1)"
            " IN ('postponed', 'waiting'))"
        ).fetchone()
    except Exception:  # an older schema, or no database yet
        return None
    return None if row is None or row[0] is None else float(row[0])
