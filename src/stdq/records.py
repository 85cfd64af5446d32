"""Typed records of stdq: jobs, their events, targets, products and raw files.

Stdlib only (``stdq jobs status`` imports this): the queue, the catalog and the
library hand these out instead of dicts. :meth:`Job.error_exception` is the one
place that turns a job which ended without rows into the exception of its exit
code.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from stdq import errors
from stdq.errors import StdqError


class JobState(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """True once the job has ended (succeeded, failed or cancelled)."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Outcome(StrEnum):
    """How an ended job ended."""

    ROWS = "rows"  # succeeded with photometry
    NO_DATA = "no_data"  # succeeded: the service had nothing for the target (exit 5)
    TEMPORARY = "temporary"  # failed with exit 75: may work later
    FAILED = "failed"
    CANCELLED = "cancelled"


RUNNERS = ("worker", "inprocess")


# -- the lease owner of a job: host:pid:random ----------------------------------------------


def hostname() -> str:
    """This host's name (os.uname: cheaper to import than socket)."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket  # pragma: no cover - Windows

    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether process PID runs on this host (a zombie, ended but not yet reaped, does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError included: it exists
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):  # no /proc (not Linux): what kill said
        return True
    return state != b"Z"


def owner_dead(owner: str | None) -> bool:
    """True when OWNER (host:pid:random) is a process of this host that no longer exists."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != hostname() or not pid_text.isdigit():
        return False
    return not pid_alive(int(pid_text))


def iso_time(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC to the second (``2026-12-01T22:30:35Z``); None, and 0
    (never set), as None."""
    if not ts:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def with_times(data: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """DATA with each time key K as ISO 8601 UTC and its Unix seconds under ``K_unix``
    (the key order kept: ``K`` then ``K_unix``); keys not in DATA are left out."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in keys:
            out[key] = iso_time(value)
            out[f"{key}_unix"] = value
        else:
            out[key] = value
    return out


def counted(n: int | None, word: str, plural: str | None = None) -> str:
    """``1 row``, ``2 rows``, ``0 detections`` (PLURAL for irregular words)."""
    n = int(n or 0)
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def coordinate_name(ra: float, dec: float) -> str:
    """``J<ra>+<dec>`` in degrees with six decimals, for a target given by coordinates."""
    return f"J{ra:.6f}{dec:+.6f}"


# -- targets and files ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One position on the sky, with the name it was asked by and who resolved it."""

    ra: float
    dec: float
    name: str | None = None
    resolver: str = "coordinates"
    canonical: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ra": self.ra,
            "dec": self.dec,
            "resolver": self.resolver,
            "canonical": self.canonical,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Target:
        return cls(
            ra=float(data["ra"]),
            dec=float(data["dec"]),
            name=data.get("name"),
            resolver=data.get("resolver") or "coordinates",
            canonical=data.get("canonical"),
        )

    @property
    def label(self) -> str:
        """The name, or ``J<ra>+<dec>``."""
        return self.name or coordinate_name(self.ra, self.dec)


@dataclass(frozen=True)
class RawFile:
    """One answer of a service, kept byte for byte.

    ``status`` and ``sha256_on_disk`` are set by the integrity check of
    ``Stdq.product()``: "ok", "changed", "missing" or "not recorded".
    """

    name: str
    path: Path
    sha256: str
    bytes: int
    url: str | None = None  # redacted
    content_type: str | None = None
    redacted: bool = False
    status: str | None = None
    sha256_on_disk: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry of ``products show --json`` raw_files."""
        return {
            "name": self.name,
            "sha256": self.sha256 or self.sha256_on_disk,
            "sha256_on_disk": self.sha256_on_disk,
            "status": self.status,
            "bytes": self.bytes,
            "url": self.url,
            "content_type": self.content_type,
            "redacted": self.redacted,
            "path": str(self.path),
        }


PRODUCT_TIMES = ("created_at", "processed_at")
PRODUCT_COLUMNS = (
    "id", "job_id", "service", "data_product_type", "target", "ra", "dec", "path", "state",
    "rows", "detections", "left_out", "error", "created_at", "processed_at",
)


@dataclass(frozen=True)
class Product:
    """A row of the products catalog; with raw files and their check when asked one by one.

    ``problems`` lists what the sha256 check found ("raw/x.json: changed");
    ``meta`` is product.json as read (empty when absent), ``meta_problem`` why it
    could not be read.
    """

    id: int
    job_id: int | None
    service: str
    data_product_type: str
    target: str
    ra: float
    dec: float
    path: Path
    state: str
    rows: int | None
    detections: int | None
    left_out: int | None
    error: str | None
    created_at: float
    processed_at: float | None
    raw_files: tuple[RawFile, ...] = ()
    problems: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)
    meta_problem: str | None = None

    @property
    def photometry_path(self) -> Path:
        return self.path / "photometry.csv"

    @classmethod
    def from_row(cls, row: sqlite3.Row | Mapping[str, Any]) -> Product:
        data = {key: row[key] for key in PRODUCT_COLUMNS}
        data["path"] = Path(data["path"])
        return cls(**data)

    def row(self) -> dict[str, Any]:
        """The catalog columns, as stored."""
        out = {key: getattr(self, key) for key in PRODUCT_COLUMNS}
        out["path"] = str(self.path)
        return out

    def row_json(self) -> dict[str, Any]:
        """The catalog row as JSON: times as ISO 8601 UTC, with ``*_unix`` twins."""
        return with_times(self.row(), PRODUCT_TIMES)

    def to_json(self) -> dict[str, Any]:
        """The JSON of ``products list --json``: the catalog row and the table's path."""
        return {**self.row_json(), "photometry": str(self.photometry_path)}

    def details_json(self) -> dict[str, Any]:
        """The JSON of ``products show --json``: row, paths, product.json, raw-file check."""
        meta = self.meta
        folder = self.path
        photometry = folder / "photometry.csv"
        product_json = folder / "product.json"
        return {
            "product": self.row_json(),
            "paths": {
                "directory": str(folder),
                "photometry": str(photometry) if photometry.is_file() else None,
                "product_json": str(product_json) if product_json.is_file() else None,
                "raw": str(folder / "raw"),
            },
            "target": meta.get("target"),
            "query": meta.get("query"),
            "service_info": meta.get("service_info"),
            "processor": meta.get("processor"),
            "counts": meta.get("counts"),
            "left_out": meta.get("left_out") or {},
            "service_notes": meta.get("service_notes") or {},
            "raw_files": [raw.to_json() for raw in self.raw_files],
            "error": self.error or meta.get("error") or self.meta_problem,
        }


# -- jobs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobEvent:
    """One line of a job's history."""

    id: int
    job_id: int
    ts: float
    kind: str
    message: str

    @classmethod
    def from_row(cls, row: sqlite3.Row | Mapping[str, Any]) -> JobEvent:
        return cls(
            id=int(row["id"]), job_id=int(row["job_id"]), ts=float(row["ts"]),
            kind=str(row["kind"]), message=str(row["message"]),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON of ``jobs logs --json`` (and the events of ``jobs show``)."""
        return {
            "id": self.id, "ts": iso_time(self.ts), "ts_unix": self.ts, "kind": self.kind,
            "message": self.message,
        }


PUBLIC_KEYS = (
    "id", "state", "service", "target", "params", "runner", "attempts", "max_attempts",
    "progress", "error", "exit_code", "rows", "detections", "products", "note", "checkpoint",
    "created_at", "updated_at", "started_at", "finished_at", "run_after", "lease_expires",
    "wait_until", "cancel_requested",
)
# the time keys of a job's JSON: ISO 8601 UTC, and Unix seconds under K_unix
JOB_TIMES = (
    "created_at", "updated_at", "started_at", "finished_at", "run_after", "lease_expires",
    "wait_until",
)
# and of a worker's (``jobs status --json``)
WORKER_TIMES = ("started_at", "heartbeat_at")

_EXIT_CLASSES: dict[int, type[StdqError]] = {
    errors.EXIT_FAILED: errors.QueryFailed,
    errors.EXIT_USAGE: errors.BadInput,
    errors.EXIT_CONFIG: errors.ConfigError,
    errors.EXIT_UNRESOLVED: errors.ResolveError,
    errors.EXIT_NO_DATA: errors.NoData,
    errors.EXIT_TEMPORARY: errors.TemporaryFailure,
    errors.EXIT_INTERRUPTED: errors.Interrupted,
}


def _loads(text: str | None, default: Any) -> Any:
    return json.loads(text) if text else default


@dataclass(frozen=True)
class Job:
    """One query, queued or run, as the jobs table holds it."""

    id: int
    service: str
    target: Target
    params: dict[str, Any]
    runner: str
    state: JobState
    attempts: int
    max_attempts: int
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    run_after: float
    lease_owner: str | None
    lease_expires: float | None
    cancel_requested: bool
    progress: str | None
    wait_until: float | None
    checkpoint: dict[str, Any]
    products: tuple[int, ...]
    rows: int | None
    detections: int | None
    note: str | None
    error: str | None
    exit_code: int | None
    reused: bool = False  # not stored: submit() returned an identical queued/running job

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        keys = row.keys()
        return cls(
            id=int(row["id"]),
            service=row["service"],
            target=Target.from_dict(json.loads(row["target_json"])),
            params=_loads(row["params_json"], {}),
            runner=row["runner"],
            state=JobState(row["state"]),
            attempts=int(row["attempts"]),
            max_attempts=int(row["max_attempts"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            run_after=row["run_after"] or 0.0,
            lease_owner=row["lease_owner"],
            lease_expires=row["lease_expires"],
            cancel_requested=bool(row["cancel_requested"]),
            progress=row["progress"],
            wait_until=row["wait_until"] if "wait_until" in keys else None,
            checkpoint=_loads(row["checkpoint_json"], {}),
            products=tuple(int(p) for p in _loads(row["products_json"], [])),
            rows=row["rows"],
            detections=row["detections"],
            note=row["note"],
            error=row["error"],
            exit_code=row["exit_code"],
        )

    @property
    def final(self) -> bool:
        return self.state.final

    @property
    def outcome(self) -> Outcome | None:
        """How the job ended; None while it has not."""
        if self.state is JobState.SUCCEEDED:
            if self.exit_code == errors.EXIT_NO_DATA or not self.rows:
                return Outcome.NO_DATA
            return Outcome.ROWS
        if self.state is JobState.FAILED:
            return Outcome.TEMPORARY if self.exit_code == errors.EXIT_TEMPORARY else Outcome.FAILED
        if self.state is JobState.CANCELLED:
            return Outcome.CANCELLED
        return None

    def is_abandoned(self, now: float | None = None) -> bool:
        """A running job whose lease ran out, or whose runner on this host is gone."""
        if self.state is not JobState.RUNNING:
            return False
        now = time.time() if now is None else now
        return (self.lease_expires or 0) < now or owner_dead(self.lease_owner)

    def settled(self, now: float | None = None) -> bool:
        """Ended, or an in-process job whose process is gone (it waits for ``jobs retry``)."""
        return self.final or (self.runner == "inprocess" and self.is_abandoned(now))

    def to_json(
        self, now: float | None = None, events: Sequence[JobEvent] | None = None
    ) -> dict[str, Any]:
        """The documented JSON of a job (``stdq jobs list/show/status``).

        ``abandoned`` is true for a running job whose runner stopped renewing its
        lease; EVENTS, when given, are added as ``events``.
        """
        out: dict[str, Any] = {
            "id": self.id,
            "state": str(self.state),
            "service": self.service,
            "target": self.target.as_dict(),
            "params": dict(self.params),
            "runner": self.runner,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "progress": self.progress,
            "error": self.error,
            "exit_code": self.exit_code,
            "rows": self.rows,
            "detections": self.detections,
            "products": list(self.products),
            "note": self.note,
            "checkpoint": dict(self.checkpoint),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "run_after": self.run_after,
            "lease_expires": self.lease_expires,
            "wait_until": self.wait_until,
            "cancel_requested": self.cancel_requested,
            "abandoned": self.is_abandoned(now),
        }
        out = with_times(out, JOB_TIMES)
        if events is not None:
            out["events"] = [e.to_json() for e in events]
        return out

    def error_exception(self, now: float | None = None) -> StdqError:
        """The exception of a job that gave no rows: its own error and exit code.

        failed -> the class of its exit code with its stored message (first line)
        and hint (the rest); cancelled -> Cancelled (exit 1); succeeded without
        rows -> NoData (exit 5); an in-process job whose process died ->
        StdqError telling ``stdq jobs retry N``; not ended -> TemporaryFailure
        (exit 75, "no result yet"). ValueError for a job that succeeded with rows.
        """
        if self.state is JobState.FAILED:
            code = self.exit_code or errors.EXIT_FAILED
            text = self.error or f"job {self.id} failed"
            message, _, hint = text.partition("\n")
            cls = _EXIT_CLASSES.get(code, StdqError)
            exc = cls(message, hint=hint or None)
            exc.exit_code = code
            return exc
        if self.state is JobState.CANCELLED:
            return errors.Cancelled(f"job {self.id} was cancelled")
        if self.state is JobState.SUCCEEDED:
            if self.outcome is Outcome.NO_DATA:
                return errors.NoData(f"job {self.id}: {self.note or 'no data for this target'}")
            raise ValueError(f"job {self.id} succeeded with {counted(self.rows, 'row')}: no error")
        if self.runner == "inprocess" and self.is_abandoned(now):
            return StdqError(
                f"job {self.id} was being run by a process that stopped",
                hint=f"resume it: stdq jobs retry {self.id}",
            )
        return errors.TemporaryFailure(
            f"job {self.id} is {self.state}: no result yet",
            hint=f"wait for it: stdq jobs wait {self.id} && stdq jobs result {self.id}",
        )


def wait_exit_code(jobs: Sequence[Job], now: float | None = None) -> int:
    """The exit code of ``jobs wait``: 0 every job succeeded (no data too), 1 any failed or
    was cancelled (or ran in a process that died), 75 any has not ended."""
    now = time.time() if now is None else now
    if any(job.settled(now) and job.state is not JobState.SUCCEEDED for job in jobs):
        return errors.EXIT_FAILED
    if any(not job.final for job in jobs):
        return errors.EXIT_TEMPORARY
    return errors.EXIT_OK


# -- stdq doctor -----------------------------------------------------------------------------


CHECK_KINDS = ("settings", "data_dir", "credentials", "service", "resolver")


@dataclass(frozen=True)
class Check:
    """One line of ``stdq doctor``: what was checked, how it went, in a few words.

    ``kind``: one of :data:`CHECK_KINDS`; ``name``: the settings file, the data
    directory, or the service or resolver; ``status``: "ok", "skipped" or "failed";
    ``exit_code``: 0, or for a failed check 3 (configuration) or 75 (cannot be
    reached, or does not answer in its format). Messages never hold a secret.
    """

    kind: str
    name: str
    status: str
    message: str
    exit_code: int = 0
    seconds: float | None = None  # how long a probe took

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def to_json(self) -> dict[str, Any]:
        """One element of ``checks`` in ``stdq doctor --json``."""
        return {
            "kind": self.kind, "name": self.name, "status": self.status,
            "message": self.message, "exit_code": self.exit_code, "seconds": self.seconds,
        }


def doctor_exit_code(checks: Sequence[Check]) -> int:
    """0 when nothing failed, 3 when a configuration check failed, else 75 (a service or
    resolver could not be reached, or did not answer in its format)."""
    codes = {check.exit_code for check in checks if check.failed}
    if not codes:
        return errors.EXIT_OK
    if errors.EXIT_CONFIG in codes:
        return errors.EXIT_CONFIG
    return errors.EXIT_TEMPORARY
