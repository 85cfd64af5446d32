"""The local job queue: jobs, job events and live workers in the data directory's SQLite database.

Stdlib only (``stdq jobs status`` must start fast). Every query is a job, run
either by a worker (runner "worker") or in the calling process (runner
"inprocess"). Claims take a lease (``[tasks] lease_seconds``) that the runner
renews; a worker job whose lease expired is claimed again and resumes from its
checkpoint; an in-process job whose process died waits for ``stdq jobs retry``
(a process of this host that no longer exists counts as dead at once). Writes
go through ``BEGIN IMMEDIATE`` transactions, so concurrent processes serialize
on SQLite's lock (with a long busy timeout) instead of failing with "database
is locked". Submitting the same service, coordinates (to 1e-6 degree) and
cleaned parameters while such a job is queued or running returns that job.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
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
    import hashlib

    blob = json.dumps(
        [service, f"{ra:.6f}", f"{dec:+.6f}", params], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def hostname() -> str:
    """This host's name (os.uname: cheaper to import than socket)."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket  # pragma: no cover - Windows

    return socket.gethostname()


def owner_id() -> str:
    """Identifies this process as a lease owner: host:pid:random."""
    return f"{hostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def pid_alive(pid: int) -> bool:
    """Whether process PID exists on this host (a zombie counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def owner_dead(owner: str | None) -> bool:
    """True when OWNER (host:pid:random) is a process of this host that no longer exists."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != hostname() or not pid_text.isdigit():
        return False
    return not pid_alive(int(pid_text))


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


PUBLIC_KEYS = (
    "id", "state", "service", "target", "params", "runner", "attempts", "max_attempts",
    "progress", "error", "exit_code", "rows", "detections", "products", "note", "checkpoint",
    "created_at", "started_at", "finished_at", "run_after", "cancel_requested", "lease_expires",
)


def public(job: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The documented JSON of a job (``stdq jobs list/show``), without events.

    ``abandoned`` is true for a running job whose runner stopped renewing its
    lease (a worker job is then taken up again; an in-process one waits for
    ``stdq jobs retry``).
    """
    now = time.time() if now is None else now
    out = {key: job.get(key) for key in PUBLIC_KEYS}
    out["cancel_requested"] = bool(job.get("cancel_requested"))
    out["abandoned"] = is_abandoned(job, now)
    return out


def is_abandoned(job: dict[str, Any], now: float | None = None) -> bool:
    """A running job whose lease ran out, or whose runner on this host is gone."""
    if job.get("state") != "running":
        return False
    now = time.time() if now is None else now
    return (job.get("lease_expires") or 0) < now or owner_dead(job.get("lease_owner"))


class JobQueue(db.Database):
    """The jobs and job_events tables of one data directory."""

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

        Runnable: running with an expired lease (its runner died: taken first, it
        resumes from its checkpoint, or cleans up when a cancel was asked), else
        queued and due (oldest due first). One ``BEGIN IMMEDIATE`` transaction:
        two claimers never get the same job.
        """
        now = time.time()
        extra = " AND runner = :runner"
        args: dict[str, Any] = {"now": now, "runner": runner}
        if job_id is not None:
            extra += " AND id = :id"
            args["id"] = job_id
        if services:
            marks = ",".join(f":s{i}" for i in range(len(services)))
            extra += f" AND service IN ({marks})"
            args.update({f"s{i}": s for i, s in enumerate(services)})
        with db.transaction(self.conn) as conn:
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
                self._event(conn, row["id"], "failed", error)
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

    def request_cancel(self, job_id: int) -> tuple[dict[str, Any], str]:
        """Cancel a job; returns (job, what happened).

        What happened: "cancelled" (a queued job, or a running one whose runner is
        gone: the caller should clean up remotely), "requested" (a running job
        stops at its next check and cleans up itself), or "final" (it had ended).
        """
        now = time.time()
        with db.transaction(self.conn) as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise BadInput(f"no job with id {job_id}", hint="list them: stdq jobs list")
            job = _job(row)
            outcome = "final"
            if job["state"] == "queued" or is_abandoned(job, now):
                note = "cancelled before it ran" if job["state"] == "queued" else (
                    "cancelled after its runner stopped"
                )
                conn.execute(
                    "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished_at = ?,"
                    " updated_at = ?, note = ?, exit_code = 1, lease_owner = NULL,"
                    " lease_expires = NULL WHERE id = ?",
                    (now, now, note, job_id),
                )
                self._event(conn, job_id, "cancelled", note)
                outcome = "cancelled"
            elif job["state"] == "running":
                conn.execute(
                    "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                    (now, job_id),
                )
                self._event(conn, job_id, "cancel", "cancel requested; the job stops at its next check")
                outcome = "requested"
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row), outcome

    def retry(self, job_id: int) -> dict[str, Any]:
        """Queue a failed or cancelled job again (attempts reset), keeping its checkpoint.

        A running job whose lease expired (its process was killed) is also taken:
        it resumes from its checkpoint.
        """
        now = time.time()
        with db.transaction(self.conn) as conn:
            job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if job is None:
                raise BadInput(f"no job with id {job_id}", hint="list them: stdq jobs list")
            state = job["state"]
            dead = is_abandoned(_job(job), now)
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

    def events(
        self, job_id: int, after_id: int = 0, last: int | None = None
    ) -> list[dict[str, Any]]:
        """The job's events after event AFTER_ID (only the LAST ones when given), oldest first."""
        if last is not None:
            rows = self.conn.execute(
                "SELECT id, ts, kind, message FROM job_events WHERE job_id = ? AND id > ?"
                " ORDER BY id DESC LIMIT ?",
                (job_id, after_id, int(last)),
            ).fetchall()
            return [dict(r) for r in reversed(rows)]
        return [
            dict(r)
            for r in self.conn.execute(
                "SELECT id, ts, kind, message FROM job_events WHERE job_id = ? AND id > ? ORDER BY id",
                (job_id, after_id),
            )
        ]

    def runnable_now(self, runner: str = "worker") -> bool:
        """Whether a job of RUNNER could be claimed now (queued and due, or abandoned)."""
        now = time.time()
        row = self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' AND run_after <= ?"
            " AND runner = ? AND cancel_requested = 0)"
            " OR EXISTS (SELECT 1 FROM jobs WHERE state = 'running' AND lease_expires < ?"
            " AND runner = ?)",
            (now, runner, now, runner),
        ).fetchone()
        return bool(row[0])

    def running(self) -> list[dict[str, Any]]:
        """The running jobs, oldest first."""
        return [
            _job(r)
            for r in self.conn.execute("SELECT * FROM jobs WHERE state = 'running' ORDER BY id")
        ]

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


# -- the workers table (live workers, for `jobs status` and the autostart) ----------------

WORKER_SPAWN_GRACE = 15.0  # a worker row counts as alive this long after its last heartbeat, at least


def worker_id(pid: int | None = None) -> str:
    return f"{hostname()}:{pid or os.getpid()}"


def register_worker(
    conn: sqlite3.Connection, pid: int, *, burst: bool, concurrency: int,
    log_path: str | None = None, running: int = 0,
) -> None:
    """Insert or renew the row of worker PID (this host)."""
    now = time.time()
    with db.transaction(conn):
        conn.execute(
            "INSERT INTO workers (id, host, pid, started_at, heartbeat_at, burst, concurrency,"
            " running, log_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,"
            " burst = excluded.burst, concurrency = excluded.concurrency,"
            " running = excluded.running, log_path = COALESCE(excluded.log_path, workers.log_path)",
            (worker_id(pid), hostname(), pid, now, now, int(burst), concurrency, running, log_path),
        )


def unregister_worker(conn: sqlite3.Connection, pid: int | None = None) -> None:
    with db.transaction(conn):
        conn.execute("DELETE FROM workers WHERE id = ?", (worker_id(pid),))


def live_workers(conn: sqlite3.Connection, lease_seconds: float) -> list[dict[str, Any]]:
    """The workers whose heartbeat is fresh and whose process (on this host) exists."""
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
