"""The local job queue: jobs, job events and live workers in the data directory's SQLite database.

Stdlib only (``stdq jobs status`` must start fast). Every query is a job, run
either by a worker (runner "worker") or in the calling process (runner
"inprocess"). Claims take a lease (``[tasks] lease_seconds``) that the runner
renews; a worker job whose lease expired is claimed again and resumes from its
checkpoint; an in-process job whose process died waits for ``stdq jobs retry``
(a process of this host that no longer exists counts as dead at once). Writes
go through ``BEGIN IMMEDIATE`` transactions of :class:`stdq.db.Database`, so
concurrent processes serialize on SQLite's lock instead of failing with
"database is locked". Submitting the same service, coordinates (to 1e-6
degree) and cleaned parameters while such a job is queued or running returns
that job (``reused``). Time comes from the database's clock, so tests inject one.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import sqlite3
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from stdq.db import Database
from stdq.errors import BadInput
from stdq.records import (
    RUNNERS,
    Job,
    JobEvent,
    JobState,
    Target,
    hostname,
    owner_dead,
    pid_alive,
)

__all__ = [
    "FINAL_STATES", "RETRY_BACKOFF_BASE", "RETRY_BACKOFF_CAP", "RUNNERS", "STATES", "JobQueue",
    "hostname", "idempotency_key", "is_abandoned", "live_workers", "owner_dead", "owner_id",
    "pid_alive", "public", "retry_delay", "worker_id",
]

STATES = tuple(str(s) for s in JobState)
FINAL_STATES = tuple(str(s) for s in JobState if s.final)
RETRY_BACKOFF_BASE = 30.0  # seconds before the 2nd attempt of a temporarily failed job
RETRY_BACKOFF_CAP = 3600.0  # the longest wait before a next attempt, whatever a server says
WORKER_SPAWN_GRACE = 15.0  # a worker row counts as alive this long after its last heartbeat, at least


def idempotency_key(service: str, ra: float, dec: float, params: Mapping[str, Any]) -> str:
    """Service + coordinates to 1e-6 degree + cleaned parameters."""
    import hashlib

    blob = json.dumps(
        [service, f"{ra:.6f}", f"{dec:+.6f}", params], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def owner_id() -> str:
    """Identifies this process as a lease owner: host:pid:random."""
    return f"{hostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def worker_id(pid: int | None = None) -> str:
    return f"{hostname()}:{pid or os.getpid()}"


def _finite_wait(seconds: float | None) -> float | None:
    """SECONDS as a wait we may store: None when absent, negative or not finite; at most the cap."""
    if seconds is None:
        return None
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return min(value, RETRY_BACKOFF_CAP)


def retry_delay(attempts: int, retry_after: float | None = None) -> float:
    """Wait before attempt ATTEMPTS+1 of a job that failed temporarily.

    30 s doubling per attempt up to an hour; a server's RETRY_AFTER wins when
    longer, but a negative, non-finite or absurd one never counts past the hour.
    """
    exponent = min(max(0, attempts - 1), 20)
    backoff = min(RETRY_BACKOFF_CAP, RETRY_BACKOFF_BASE * 2**exponent)
    return max(backoff, _finite_wait(retry_after) or 0.0)


def is_abandoned(job: Job, now: float | None = None) -> bool:
    """A running job whose lease ran out, or whose runner on this host is gone."""
    return job.is_abandoned(now)


def public(job: Job, now: float | None = None) -> dict[str, Any]:
    """The documented JSON of a job (``Job.to_json``)."""
    return job.to_json(now)


def _one(row: sqlite3.Row | None) -> Job | None:
    return None if row is None else Job.from_row(row)


def _open(database: Database | Path | str) -> tuple[Database, bool]:
    """(the Database, whether we opened it and so close it)."""
    if isinstance(database, (str, os.PathLike)):
        return Database(Path(database)), True
    return database, False


def _no_job(job_id: int) -> BadInput:
    return BadInput(f"no job with id {job_id}", hint="list them: stdq jobs list")


class JobQueue:
    """The jobs, job_events and workers tables of one data directory."""

    def __init__(self, database: Database | Path | str):
        self.db, self._owned = _open(database)

    # -- the database -----------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    @property
    def data_dir(self) -> Path:
        return Path(self.db.data_dir)

    def now(self) -> float:
        """The time of the database's clock (injectable: tests pass their own)."""
        return float(self.db.clock())

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return self.db.transaction()

    def _writable(self, what: str) -> None:
        self.db.require_writable(what)

    def close(self) -> None:
        if self._owned:
            self.db.close()

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- submitting -----------------------------------------------------------------
    def submit(
        self,
        service: str,
        target: Target | Mapping[str, Any],
        params: Mapping[str, Any],
        *,
        runner: str = "worker",
        max_attempts: int = 5,
        force: bool = False,
    ) -> Job:
        """Queue a job. An identical queued or running job is returned instead of a new
        one (its ``reused`` is True) unless FORCE."""
        if runner not in RUNNERS:
            raise ValueError(runner)
        self._writable("submit a job")
        target = target if isinstance(target, Target) else Target.from_dict(target)
        key = idempotency_key(service, target.ra, target.dec, dict(params))
        now = self.now()
        with self._tx() as conn:
            if not force:
                row = conn.execute(
                    "SELECT * FROM jobs WHERE idem_key = ? AND state IN ('queued', 'running')"
                    " ORDER BY id LIMIT 1",
                    (key,),
                ).fetchone()
                if row is not None:
                    return _reused(Job.from_row(row))
            cur = conn.execute(
                "INSERT INTO jobs (service, target_name, ra, dec, target_json, params_json, idem_key,"
                " runner, state, max_attempts, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
                (
                    service, target.name, target.ra, target.dec, json.dumps(target.as_dict()),
                    json.dumps(dict(params), sort_keys=True), key, runner, max_attempts, now, now,
                ),
            )
            job_id = int(cur.lastrowid or 0)
            self._event(conn, job_id, "submitted", f"queued for {runner}", now)
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row)

    # -- claiming and leases -----------------------------------------------------------
    def claim(
        self,
        owner: str,
        lease_seconds: float,
        *,
        job_id: int | None = None,
        runner: str = "worker",
        services: list[str] | None = None,
    ) -> Job | None:
        """Take the next runnable job (or JOB_ID) with a lease; None when there is none.

        Runnable: running with an expired lease (its runner died: taken first, it
        resumes from its checkpoint, or cleans up when a cancel was asked), else
        queued and due (oldest due first). Each reclaim counts as an attempt; a job
        whose runner died on every one of its max_attempts ends as failed. One
        ``BEGIN IMMEDIATE`` transaction: two claimers never get the same job.
        """
        now = self.now()
        extra = " AND runner = :runner"
        args: dict[str, Any] = {"now": now, "runner": runner}
        if job_id is not None:
            extra += " AND id = :id"
            args["id"] = job_id
        if services:
            marks = ",".join(f":s{i}" for i in range(len(services)))
            extra += f" AND service IN ({marks})"
            args.update({f"s{i}": s for i, s in enumerate(services)})
        # a look without the write lock first: idle threads of many workers ask often, and a
        # BEGIN IMMEDIATE each would queue every other writer (a submission's rate-limit slot)
        # behind them
        if not self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' AND run_after <= :now"
            f" AND cancel_requested = 0{extra}) OR EXISTS (SELECT 1 FROM jobs WHERE"
            f" state = 'running' AND lease_expires < :now{extra})",
            args,
        ).fetchone()[0]:
            return None
        with self._tx() as conn:
            while True:
                row = conn.execute(
                    "SELECT id, state, lease_owner, attempts, max_attempts FROM jobs"
                    f" WHERE state = 'running' AND lease_expires < :now{extra} ORDER BY id LIMIT 1",
                    args,
                ).fetchone()
                if row is None or row["attempts"] < row["max_attempts"]:
                    break
                # Its runner died on every attempt (a job that kills its process, say):
                # end it instead of handing it to the next runner for ever.
                error = (
                    f"the job's runner stopped without ending it on each of {row['attempts']}"
                    f" attempts (last: {row['lease_owner']}); not taken up again"
                    f"\nlook at its events (stdq jobs logs {row['id']}); run it again: stdq jobs retry {row['id']}"
                )
                conn.execute(
                    "UPDATE jobs SET state = 'failed', finished_at = :now, updated_at = :now,"
                    " error = :error, exit_code = 1, lease_owner = NULL, lease_expires = NULL"
                    " WHERE id = :id",
                    {"now": now, "error": error, "id": row["id"]},
                )
                self._event(conn, row["id"], "failed", error, now)
            if row is None:
                row = conn.execute(
                    "SELECT id, state, lease_owner FROM jobs WHERE state = 'queued'"
                    f" AND run_after <= :now AND cancel_requested = 0{extra}"
                    " ORDER BY run_after, id LIMIT 1",
                    args,
                ).fetchone()
            if row is None:
                return None
            resumed = row["state"] == "running"
            claimed = conn.execute(
                "UPDATE jobs SET state = 'running', lease_owner = ?, lease_expires = ?,"
                " attempts = attempts + 1, started_at = COALESCE(started_at, ?), updated_at = ?"
                " WHERE id = ? RETURNING *",
                (owner, now + lease_seconds, now, now, row["id"]),
            ).fetchone()
            message = f"claimed by {owner} (attempt {claimed['attempts']})"
            if resumed:
                message = (
                    f"lease of {row['lease_owner']} expired; resumed by {owner}"
                    f" (attempt {claimed['attempts']})"
                )
            # a job parked between two polls goes on with the same attempt: no event each poll
            if resumed or self._last_kind(conn, row["id"]) != "waiting":
                self._event(conn, row["id"], "claimed", message, now)
        return Job.from_row(claimed)

    @staticmethod
    def _last_kind(conn: sqlite3.Connection, job_id: int) -> str | None:
        row = conn.execute(
            "SELECT kind FROM job_events WHERE job_id = ? ORDER BY id DESC LIMIT 1", (job_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def last_event_kind(self, job_id: int) -> str | None:
        """The kind of the job's latest event (``waiting``: parked between two polls)."""
        return self._last_kind(self.conn, job_id)

    def heartbeat(self, job_id: int, owner: str, lease_seconds: float) -> tuple[bool, bool]:
        """Renew the lease; returns (still ours, cancel requested)."""
        now = self.now()
        with self._tx() as conn:
            row = conn.execute(
                "UPDATE jobs SET lease_expires = ?, updated_at = ? WHERE id = ? AND lease_owner = ?"
                " AND state = 'running' RETURNING cancel_requested",
                (now + lease_seconds, now, job_id, owner),
            ).fetchone()
        if row is None:
            return False, self.cancel_requested(job_id)
        return True, bool(row["cancel_requested"])

    def cancel_requested(self, job_id: int) -> bool:
        row = self.conn.execute(
            "SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return bool(row and row["cancel_requested"])

    # -- while running ------------------------------------------------------------------
    def set_progress(self, job_id: int, text: str, wait_until: float | None = None) -> None:
        """The job's progress line, and when what it waits for ends (a retry: unix time).

        A new text is also an event; WAIT_UNTIL is stored only when finite and
        within the backoff cap of now.
        """
        now = self.now()
        until = None
        if wait_until is not None:
            left = _finite_wait(float(wait_until) - now) if math.isfinite(wait_until) else None
            until = None if left is None else now + left
        seen = self.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if seen is not None and seen["progress"] == text and (
            "wait_until" not in seen.keys() or seen["wait_until"] == until  # noqa: SIM118
        ):
            return  # unchanged: no write lock taken
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return
            has_wait = "wait_until" in row.keys()  # noqa: SIM118 (a Row: `in` tests values)
            if row["progress"] == text and (not has_wait or row["wait_until"] == until):
                return
            if has_wait:
                conn.execute(
                    "UPDATE jobs SET progress = ?, wait_until = ?, updated_at = ? WHERE id = ?",
                    (text, until, now, job_id),
                )
            else:  # a database before migration 2
                conn.execute(
                    "UPDATE jobs SET progress = ?, updated_at = ? WHERE id = ?", (text, now, job_id)
                )
            if row["progress"] != text:
                self._event(conn, job_id, "progress", text, now)

    def save_checkpoint(self, job_id: int, checkpoint: Mapping[str, Any]) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE jobs SET checkpoint_json = ?, updated_at = ? WHERE id = ?",
                (json.dumps(dict(checkpoint), sort_keys=True), self.now(), job_id),
            )

    def add_event(self, job_id: int, kind: str, message: str) -> None:
        with self._tx() as conn:
            self._event(conn, job_id, kind, message, self.now())

    @staticmethod
    def _event(conn: sqlite3.Connection, job_id: int, kind: str, message: str, now: float) -> None:
        conn.execute(
            "INSERT INTO job_events (job_id, ts, kind, message) VALUES (?, ?, ?, ?)",
            (job_id, now, kind, message),
        )

    # -- ending -------------------------------------------------------------------------
    def finish(
        self,
        job_id: int,
        state: JobState | str,
        *,
        owner: str | None = None,
        rows: int | None = None,
        detections: int | None = None,
        products: list[int] | None = None,
        note: str | None = None,
        error: str | None = None,
        exit_code: int | None = None,
    ) -> bool:
        """End a job in STATE; False when OWNER no longer holds it (nothing changed)."""
        state = JobState(state)
        if not state.final:
            raise ValueError(state)
        now = self.now()
        with self._tx() as conn:
            sql = (
                "UPDATE jobs SET state = ?, finished_at = ?, updated_at = ?, rows = ?,"
                " detections = ?, products_json = COALESCE(?, products_json), note = ?, error = ?,"
                " exit_code = ?, lease_owner = NULL, lease_expires = NULL WHERE id = ?"
            )
            args: list[Any] = [
                str(state), now, now, rows, detections,
                json.dumps(products) if products is not None else None,
                note, error, exit_code, job_id,
            ]
            if owner is not None:
                sql += " AND lease_owner = ?"
                args.append(owner)
            cur = conn.execute(sql, args)
            if cur.rowcount:
                self._event(conn, job_id, str(state), error or note or str(state), now)
        return bool(cur.rowcount)

    def requeue(self, job_id: int, *, owner: str | None, delay: float, error: str) -> bool:
        """Put a running job back in the queue, due after DELAY seconds (at most an hour;
        a non-finite or negative DELAY counts as the hour)."""
        wait = _finite_wait(delay)
        wait = RETRY_BACKOFF_CAP if wait is None else wait
        now = self.now()
        with self._tx() as conn:
            sql = (
                "UPDATE jobs SET state = 'queued', run_after = ?, updated_at = ?, error = ?,"
                " lease_owner = NULL, lease_expires = NULL WHERE id = ? AND state = 'running'"
            )
            args: list[Any] = [now + wait, now, error, job_id]
            if owner is not None:
                sql += " AND lease_owner = ?"
                args.append(owner)
            cur = conn.execute(sql, args)
            if cur.rowcount:
                self._event(conn, job_id, "retry", f"{error}; queued again in {wait:.0f} s", now)
        return bool(cur.rowcount)

    def release(self, job_id: int, owner: str, *, delay: float = 0.0, why: str | None = None) -> bool:
        """Give a running job back unchanged (a worker stopping): queued, due now (or after
        DELAY seconds: a job postponed by an account limit, WHY); no attempt counted."""
        now = self.now()
        wait = _finite_wait(delay) or 0.0
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE jobs SET state = 'queued', run_after = ?, updated_at = ?, lease_owner = NULL,"
                " lease_expires = NULL, attempts = MAX(0, attempts - 1)"
                " WHERE id = ? AND lease_owner = ? AND state = 'running'",
                (now + wait, now, job_id, owner),
            )
            if cur.rowcount:
                if why:
                    self._event(conn, job_id, "postponed", f"{why}; again in {wait:.1f} s", now)
                else:
                    self._event(conn, job_id, "released", f"released by {owner}; queued again", now)
        return bool(cur.rowcount)

    def park(self, job_id: int, owner: str, *, delay: float, why: str) -> bool:
        """Give back a running job that waits for its remote task (between two polls): queued
        with its checkpoint, due after DELAY seconds (shown as its ``wait_until``), no attempt
        counted: its thread runs other jobs meanwhile. One ``waiting`` event per wait: while the
        job's latest event is one, it is brought up to date instead of adding one per poll."""
        now = self.now()
        wait = _finite_wait(delay) or 0.0
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE jobs SET state = 'queued', run_after = ?, wait_until = ?, updated_at = ?,"
                " lease_owner = NULL, lease_expires = NULL, attempts = MAX(0, attempts - 1)"
                " WHERE id = ? AND lease_owner = ? AND state = 'running'",
                (now + wait, now + wait, now, job_id, owner),
            )
            if not cur.rowcount:
                return False
            message = f"{why}; again in {wait:.1f} s"
            last = conn.execute(
                "SELECT id, kind FROM job_events WHERE job_id = ? ORDER BY id DESC LIMIT 1",
                (job_id,),
            ).fetchone()
            if last is not None and last["kind"] == "waiting":
                conn.execute(
                    "UPDATE job_events SET ts = ?, message = ? WHERE id = ?", (now, message, last["id"])
                )
            else:
                self._event(conn, job_id, "waiting", message, now)
        return True

    def request_cancel(self, job_id: int) -> tuple[Job, str]:
        """Cancel a job; returns (job, what happened).

        What happened: "cancelled" (a queued job, or a running one whose runner is
        gone: the caller should clean up remotely), "requested" (a running job
        stops at its next check and cleans up itself), or "final" (it had ended).
        """
        self._writable("cancel a job")
        now = self.now()
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise _no_job(job_id)
            job = Job.from_row(row)
            outcome = "final"
            if job.state is JobState.QUEUED or job.is_abandoned(now):
                note = (
                    "cancelled before it ran" if job.state is JobState.QUEUED
                    else "cancelled after its runner stopped"
                )
                conn.execute(
                    "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished_at = ?,"
                    " updated_at = ?, note = ?, exit_code = 1, lease_owner = NULL,"
                    " lease_expires = NULL WHERE id = ?",
                    (now, now, note, job_id),
                )
                self._event(conn, job_id, "cancelled", note, now)
                outcome = "cancelled"
            elif job.state is JobState.RUNNING:
                conn.execute(
                    "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                    (now, job_id),
                )
                self._event(
                    conn, job_id, "cancel", "cancel requested; the job stops at its next check", now
                )
                outcome = "requested"
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row), outcome

    def retry(self, job_id: int) -> Job:
        """Queue a failed or cancelled job again (attempts reset), keeping its checkpoint.

        A running job whose lease expired (its process was killed) is also taken:
        it resumes from its checkpoint.
        """
        self._writable("retry a job")
        now = self.now()
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise _no_job(job_id)
            job = Job.from_row(row)
            if job.state not in (JobState.FAILED, JobState.CANCELLED) and not job.is_abandoned(now):
                raise BadInput(
                    f"job {job_id} is {job.state}"
                    + (" and its runner is alive" if job.state is JobState.RUNNING else "")
                    + "; only failed, cancelled or abandoned jobs can be retried"
                )
            conn.execute(
                "UPDATE jobs SET state = 'queued', attempts = 0, run_after = ?, updated_at = ?,"
                " finished_at = NULL, cancel_requested = 0, error = NULL, exit_code = NULL,"
                " lease_owner = NULL, lease_expires = NULL WHERE id = ?",
                (now, now, job_id),
            )
            self._event(conn, job_id, "retry", f"retry requested (was {job.state})", now)
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row)

    # -- reading ------------------------------------------------------------------------
    def get(self, job_id: int) -> Job | None:
        return _one(self.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def require(self, job_id: int) -> Job:
        job = self.get(job_id)
        if job is None:
            raise _no_job(job_id)
        return job

    def list(
        self, state: JobState | str | None = None, service: str | None = None, limit: int | None = None
    ) -> list[Job]:
        sql = "SELECT * FROM jobs"
        where: list[str] = []
        args: list[Any] = []
        if state:
            where.append("state = ?")
            args.append(str(JobState(state)))
        if service:
            where.append("service = ?")
            args.append(service)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [Job.from_row(r) for r in self.conn.execute(sql, args)]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for row in self.conn.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            counts[row["state"]] = row["n"]
        return counts

    def events(self, job_id: int, after_id: int = 0, last: int | None = None) -> builtins.list[JobEvent]:
        """The job's events after event AFTER_ID (only the LAST ones when given), oldest first."""
        if last is not None:
            rows = self.conn.execute(
                "SELECT id, job_id, ts, kind, message FROM job_events WHERE job_id = ? AND id > ?"
                " ORDER BY id DESC LIMIT ?",
                (job_id, after_id, int(last)),
            ).fetchall()
            return [JobEvent.from_row(r) for r in reversed(rows)]
        return [
            JobEvent.from_row(r)
            for r in self.conn.execute(
                "SELECT id, job_id, ts, kind, message FROM job_events WHERE job_id = ? AND id > ?"
                " ORDER BY id",
                (job_id, after_id),
            )
        ]

    def runnable_now(self, runner: str = "worker") -> bool:
        """Whether a job of RUNNER could be claimed now (queued and due, or abandoned)."""
        now = self.now()
        row = self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' AND run_after <= ?"
            " AND runner = ? AND cancel_requested = 0)"
            " OR EXISTS (SELECT 1 FROM jobs WHERE state = 'running' AND lease_expires < ?"
            " AND runner = ?)",
            (now, runner, now, runner),
        ).fetchone()
        return bool(row[0])

    def running(self) -> builtins.list[Job]:
        """The running jobs, oldest first."""
        return [
            Job.from_row(r)
            for r in self.conn.execute("SELECT * FROM jobs WHERE state = 'running' ORDER BY id")
        ]

    def next_due(self, runner: str = "worker") -> float | None:
        """When the next queued job becomes due (epoch seconds), or None."""
        row = self.conn.execute(
            "SELECT MIN(run_after) FROM jobs WHERE runner = ? AND state = 'queued'"
            " AND cancel_requested = 0",
            (runner,),
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def prune(self, older_than_seconds: float) -> int:
        """Delete finished jobs (and their events) that ended longer ago than that."""
        self._writable("prune jobs")
        cutoff = self.now() - older_than_seconds
        with self._tx() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled')"
                    " AND finished_at < ?",
                    (cutoff,),
                )
            ]
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM job_events WHERE job_id IN ({marks})", chunk)
                conn.execute(f"DELETE FROM jobs WHERE id IN ({marks})", chunk)
        return len(ids)

    # -- the workers table (live workers, for `jobs status` and the autostart) ------------
    def register_worker(
        self, pid: int, *, burst: bool, concurrency: int, log_path: str | None = None,
        running: int = 0,
    ) -> None:
        """Insert or renew the row of worker PID (this host)."""
        now = self.now()
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO workers (id, host, pid, started_at, heartbeat_at, burst, concurrency,"
                " running, log_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,"
                " burst = excluded.burst, concurrency = excluded.concurrency,"
                " running = excluded.running, log_path = COALESCE(excluded.log_path, workers.log_path)",
                (worker_id(pid), hostname(), pid, now, now, int(burst), concurrency, running, log_path),
            )

    def unregister_worker(self, pid: int | None = None) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM workers WHERE id = ?", (worker_id(pid),))

    def live_workers(self, lease_seconds: float) -> builtins.list[dict[str, Any]]:
        """The workers whose heartbeat is fresh and whose process (on this host) exists."""
        return live_workers(self.conn, lease_seconds, now=self.now())


def _reused(job: Job) -> Job:
    import dataclasses

    return dataclasses.replace(job, reused=True)


WORKER_KEYS = (
    "id", "pid", "host", "started_at", "heartbeat_at", "burst", "concurrency", "running", "log_path",
)


def live_workers(
    conn: sqlite3.Connection, lease_seconds: float, *, now: float | None = None
) -> list[dict[str, Any]]:
    """The workers whose heartbeat is fresh and whose process (on this host) exists."""
    if now is None:
        import time

        now = time.time()
    stale_after = max(float(lease_seconds), WORKER_SPAWN_GRACE)
    host = hostname()
    alive = []
    for row in conn.execute("SELECT * FROM workers ORDER BY started_at"):
        worker = dict(row)
        if worker["heartbeat_at"] < now - stale_after:
            continue
        if worker["host"] == host and not pid_alive(int(worker["pid"])):
            continue
        alive.append(worker)
    return alive
