"""The local job queue: jobs and job events in the data directory's SQLite database.

Stdlib only (``stdq jobs status`` must start fast). Every query is a job, run
either by a worker (runner "worker") or in the calling process (runner
"inprocess"). Claims take a lease (``[tasks] lease_seconds``) that the runner
renews; a worker job whose lease expired is claimed again and resumes from its
checkpoint. Writes go through ``BEGIN IMMEDIATE`` transactions, so concurrent
processes serialize on SQLite's lock (with a long busy timeout) instead of failing.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from stdq import db
from stdq.errors import BadInput

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATES = ("succeeded", "failed", "cancelled")
RUNNERS = ("worker", "inprocess")
RETRY_BACKOFF_BASE = 30.0  # seconds before the 2nd attempt of a temporarily failed job
RETRY_BACKOFF_CAP = 3600.0


def idempotency_key(service: str, ra: float, dec: float, params: dict[str, Any]) -> str:
    """Service + coordinates to 1e-6 degree + cleaned parameters."""
    blob = json.dumps(
        [service, f"{ra:.6f}", f"{dec:+.6f}", params], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def owner_id() -> str:
    """Identifies this process as a lease owner: host:pid:random."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def retry_delay(attempts: int, retry_after: float | None = None) -> float:
    """Wait before attempt ATTEMPTS+1 of a job that failed temporarily."""
    backoff = min(RETRY_BACKOFF_CAP, RETRY_BACKOFF_BASE * 2 ** max(0, attempts - 1))
    return max(backoff, retry_after or 0.0)


def _job(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    job = dict(row)
    job["target"] = json.loads(job.pop("target_json"))
    job["params"] = json.loads(job.pop("params_json"))
    job["checkpoint"] = json.loads(job.pop("checkpoint_json") or "{}")
    job["products"] = json.loads(job.pop("products_json") or "[]")
    return job


class JobQueue:
    """The jobs and job_events tables of one data directory."""

    def __init__(self, data_dir: Path | str, conn: sqlite3.Connection | None = None):
        self.data_dir = Path(data_dir)
        self._conn = conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = db.connect(self.data_dir)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- submitting -----------------------------------------------------------------
    def submit(
        self,
        service: str,
        target: dict[str, Any],
        params: dict[str, Any],
        *,
        runner: str = "worker",
        max_attempts: int = 5,
        force: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Queue a job; returns (job, created). An identical queued or running job is
        returned instead of a new one (created False) unless FORCE."""
        if runner not in RUNNERS:
            raise ValueError(runner)
        ra, dec = float(target["ra"]), float(target["dec"])
        key = idempotency_key(service, ra, dec, params)
        now = time.time()
        with db.transaction(self.conn) as conn:
            if not force:
                row = conn.execute(
                    "SELECT * FROM jobs WHERE idem_key = ? AND state IN ('queued', 'running')"
                    " ORDER BY id LIMIT 1",
                    (key,),
                ).fetchone()
                if row is not None:
                    return _job(row), False
            cur = conn.execute(
                "INSERT INTO jobs (service, target_name, ra, dec, target_json, params_json, idem_key,"
                " runner, state, max_attempts, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
                (
                    service,
                    target.get("name"),
                    ra,
                    dec,
                    json.dumps(target),
                    json.dumps(params, sort_keys=True),
                    key,
                    runner,
                    max_attempts,
                    now,
                    now,
                ),
            )
            job_id = int(cur.lastrowid)
            self._event(conn, job_id, "submitted", f"queued for {runner}")
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row), True

    # -- claiming and leases -----------------------------------------------------------
    def claim(
        self,
        owner: str,
        lease_seconds: float,
        *,
        job_id: int | None = None,
        runner: str = "worker",
        services: list[str] | None = None,
    ) -> dict[str, Any] | None:
        """Take the next runnable job (or JOB_ID) with a lease; None when there is none.

        Runnable: queued and due, or running with an expired lease (its runner died).
        """
        now = time.time()
        where = (
            "((state = 'queued' AND run_after <= :now)"
            " OR (state = 'running' AND lease_expires < :now))"
            " AND runner = :runner AND cancel_requested = 0"
        )
        args: dict[str, Any] = {"now": now, "runner": runner}
        if job_id is not None:
            where += " AND id = :id"
            args["id"] = job_id
        if services:
            where += " AND service IN (%s)" % ",".join(f":s{i}" for i in range(len(services)))
            args.update({f"s{i}": s for i, s in enumerate(services)})
        with db.transaction(self.conn) as conn:
            row = conn.execute(
                f"SELECT id, state, lease_owner FROM jobs WHERE {where} ORDER BY run_after, id LIMIT 1",
                args,
            ).fetchone()
            if row is None:
                return None
            resumed = row["state"] == "running"
            claimed = conn.execute(
                "UPDATE jobs SET state = 'running', lease_owner = ?, lease_expires = ?,"
                " attempts = attempts + 1, started_at = COALESCE(started_at, ?), updated_at = ?,"
                " error = NULL WHERE id = ? RETURNING *",
                (owner, now + lease_seconds, now, now, row["id"]),
            ).fetchone()
            message = f"claimed by {owner}"
            if resumed:
                message = f"lease of {row['lease_owner']} expired; resumed by {owner}"
            self._event(conn, row["id"], "claimed", message)
        return _job(claimed)

    def heartbeat(self, job_id: int, owner: str, lease_seconds: float) -> tuple[bool, bool]:
        """Renew the lease; returns (still ours, cancel requested)."""
        now = time.time()
        with db.transaction(self.conn) as conn:
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
    def set_progress(self, job_id: int, text: str) -> None:
        with db.transaction(self.conn) as conn:
            row = conn.execute("SELECT progress FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is not None and row["progress"] == text:
                return
            conn.execute(
                "UPDATE jobs SET progress = ?, updated_at = ? WHERE id = ?",
                (text, time.time(), job_id),
            )
            self._event(conn, job_id, "progress", text)

    def save_checkpoint(self, job_id: int, checkpoint: dict[str, Any]) -> None:
        with db.transaction(self.conn) as conn:
            conn.execute(
                "UPDATE jobs SET checkpoint_json = ?, updated_at = ? WHERE id = ?",
                (json.dumps(checkpoint, sort_keys=True), time.time(), job_id),
            )

    def add_event(self, job_id: int, kind: str, message: str) -> None:
        with db.transaction(self.conn) as conn:
            self._event(conn, job_id, kind, message)

    @staticmethod
    def _event(conn: sqlite3.Connection, job_id: int, kind: str, message: str) -> None:
        conn.execute(
            "INSERT INTO job_events (job_id, ts, kind, message) VALUES (?, ?, ?, ?)",
            (job_id, time.time(), kind, message),
        )

    # -- ending -------------------------------------------------------------------------
    def finish(
        self,
        job_id: int,
        state: str,
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
        if state not in FINAL_STATES:
            raise ValueError(state)
        now = time.time()
        with db.transaction(self.conn) as conn:
            sql = (
                "UPDATE jobs SET state = ?, finished_at = ?, updated_at = ?, rows = ?,"
                " detections = ?, products_json = COALESCE(?, products_json), note = ?, error = ?,"
                " exit_code = ?, lease_owner = NULL, lease_expires = NULL WHERE id = ?"
            )
            args: list[Any] = [
                state,
                now,
                now,
                rows,
                detections,
                json.dumps(products) if products is not None else None,
                note,
                error,
                exit_code,
                job_id,
            ]
            if owner is not None:
                sql += " AND lease_owner = ?"
                args.append(owner)
            cur = conn.execute(sql, args)
            if cur.rowcount:
                self._event(conn, job_id, state, error or note or state)
        return bool(cur.rowcount)

    def requeue(
        self, job_id: int, *, owner: str | None, delay: float, error: str
    ) -> bool:
        """Put a running job back in the queue, due after DELAY seconds."""
        now = time.time()
        with db.transaction(self.conn) as conn:
            sql = (
                "UPDATE jobs SET state = 'queued', run_after = ?, updated_at = ?, error = ?,"
                " lease_owner = NULL, lease_expires = NULL WHERE id = ? AND state = 'running'"
            )
            args: list[Any] = [now + delay, now, error, job_id]
            if owner is not None:
                sql += " AND lease_owner = ?"
                args.append(owner)
            cur = conn.execute(sql, args)
            if cur.rowcount:
                self._event(conn, job_id, "retry", f"{error}; queued again in {delay:.0f} s")
        return bool(cur.rowcount)

    def release(self, job_id: int, owner: str) -> bool:
        """Give a running job back unchanged (a worker stopping): queued, due now."""
        now = time.time()
        with db.transaction(self.conn) as conn:
            cur = conn.execute(
                "UPDATE jobs SET state = 'queued', run_after = ?, updated_at = ?, lease_owner = NULL,"
                " lease_expires = NULL, attempts = MAX(0, attempts - 1)"
                " WHERE id = ? AND lease_owner = ? AND state = 'running'",
                (now, now, job_id, owner),
            )
            if cur.rowcount:
                self._event(conn, job_id, "released", f"released by {owner}; queued again")
        return bool(cur.rowcount)

    def request_cancel(self, job_id: int) -> dict[str, Any]:
        """Cancel a queued job at once; ask a running one to stop at its next check."""
        now = time.time()
        with db.transaction(self.conn) as conn:
            job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if job is None:
                raise BadInput(f"no job with id {job_id}")
            if job["state"] == "queued":
                conn.execute(
                    "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished_at = ?,"
                    " updated_at = ?, note = 'cancelled before it ran' WHERE id = ?",
                    (now, now, job_id),
                )
                self._event(conn, job_id, "cancelled", "cancelled while queued")
            elif job["state"] == "running":
                conn.execute(
                    "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                    (now, job_id),
                )
                self._event(conn, job_id, "cancel", "cancel requested; the job stops at its next check")
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row)

    def retry(self, job_id: int) -> dict[str, Any]:
        """Queue a failed or cancelled job again (attempts reset), keeping its checkpoint.

        A running job whose lease expired (its process was killed) is also taken:
        it resumes from its checkpoint.
        """
        now = time.time()
        with db.transaction(self.conn) as conn:
            job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if job is None:
                raise BadInput(f"no job with id {job_id}")
            state = job["state"]
            dead = state == "running" and (job["lease_expires"] or 0) < now
            if state not in ("failed", "cancelled") and not dead:
                raise BadInput(
                    f"job {job_id} is {state}"
                    + (" and its runner is alive" if state == "running" else "")
                    + "; only failed, cancelled or abandoned jobs can be retried"
                )
            conn.execute(
                "UPDATE jobs SET state = 'queued', attempts = 0, run_after = ?, updated_at = ?,"
                " finished_at = NULL, cancel_requested = 0, error = NULL, exit_code = NULL,"
                " lease_owner = NULL, lease_expires = NULL WHERE id = ?",
                (now, now, job_id),
            )
            self._event(conn, job_id, "retry", f"retry requested (was {state})")
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row)

    # -- reading ------------------------------------------------------------------------
    def get(self, job_id: int) -> dict[str, Any] | None:
        return _job(self.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def require(self, job_id: int) -> dict[str, Any]:
        job = self.get(job_id)
        if job is None:
            raise BadInput(f"no job with id {job_id}", hint="list them: stdq jobs list")
        return job

    def list(
        self, state: str | None = None, service: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        sql = "SELECT * FROM jobs"
        where, args = [], []
        if state:
            where.append("state = ?")
            args.append(state)
        if service:
            where.append("service = ?")
            args.append(service)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [_job(r) for r in self.conn.execute(sql, args)]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for row in self.conn.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            counts[row["state"]] = row["n"]
        return counts

    def events(self, job_id: int, after_id: int = 0) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self.conn.execute(
                "SELECT id, ts, kind, message FROM job_events WHERE job_id = ? AND id > ? ORDER BY id",
                (job_id, after_id),
            )
        ]

    def runnable_count(self, runner: str = "worker") -> int:
        now = time.time()
        row = self.conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE runner = ? AND cancel_requested = 0 AND"
            " ((state = 'queued') OR (state = 'running' AND lease_expires < ?))",
            (runner, now),
        ).fetchone()
        return int(row[0])

    def next_due(self, runner: str = "worker") -> float | None:
        """When the next queued job becomes due (epoch seconds), or None."""
        row = self.conn.execute(
            "SELECT MIN(run_after) FROM jobs WHERE runner = ? AND state = 'queued'"
            " AND cancel_requested = 0",
            (runner,),
        ).fetchone()
        return row[0]

    def prune(self, older_than_seconds: float) -> int:
        """Delete finished jobs (and their events) that ended longer ago than that."""
        cutoff = time.time() - older_than_seconds
        with db.transaction(self.conn) as conn:
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
