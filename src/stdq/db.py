"""The data directory's SQLite database: one file, WAL, every table of stdq.

Tables: targets, resolver_cache, products, jobs, job_events, limiter, workers. Stdlib only:
``stdq jobs status`` opens this without importing anything heavy.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

DB_NAME = "stdq.sqlite3"
SCHEMA_VERSION = 2  # 2: the workers table
BUSY_TIMEOUT_MS = 60_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS targets (
    name        TEXT PRIMARY KEY COLLATE NOCASE,
    ra          REAL NOT NULL,
    dec         REAL NOT NULL,
    source      TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS resolver_cache (
    key         TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    resolver    TEXT NOT NULL,
    ra          REAL NOT NULL,
    dec         REAL NOT NULL,
    canonical   TEXT,
    resolved_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS products (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id            INTEGER,
    service           TEXT NOT NULL,
    data_product_type TEXT NOT NULL,
    target            TEXT NOT NULL,
    ra                REAL NOT NULL,
    dec               REAL NOT NULL,
    path              TEXT NOT NULL,
    state             TEXT NOT NULL DEFAULT 'pending',
    rows              INTEGER,
    detections        INTEGER,
    left_out          INTEGER,
    error             TEXT,
    created_at        REAL NOT NULL,
    processed_at      REAL
);
CREATE INDEX IF NOT EXISTS products_target ON products(target);
CREATE TABLE IF NOT EXISTS jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    service          TEXT NOT NULL,
    target_name      TEXT,
    ra               REAL NOT NULL,
    dec              REAL NOT NULL,
    target_json      TEXT NOT NULL,
    params_json      TEXT NOT NULL,
    idem_key         TEXT NOT NULL,
    runner           TEXT NOT NULL DEFAULT 'worker',
    state            TEXT NOT NULL DEFAULT 'queued',
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 5,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    updated_at       REAL NOT NULL,
    run_after        REAL NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires    REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress         TEXT,
    checkpoint_json  TEXT NOT NULL DEFAULT '{}',
    products_json    TEXT NOT NULL DEFAULT '[]',
    rows             INTEGER,
    detections       INTEGER,
    note             TEXT,
    error            TEXT,
    exit_code        INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, run_after);
CREATE INDEX IF NOT EXISTS jobs_idem ON jobs(idem_key, state);
CREATE TABLE IF NOT EXISTS job_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   INTEGER NOT NULL,
    ts       REAL NOT NULL,
    kind     TEXT NOT NULL,
    message  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_events_job ON job_events(job_id, id);
CREATE TABLE IF NOT EXISTS limiter (
    scope  TEXT NOT NULL,
    ts     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS limiter_scope ON limiter(scope, ts);
CREATE TABLE IF NOT EXISTS workers (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    burst        INTEGER NOT NULL DEFAULT 0,
    concurrency  INTEGER NOT NULL DEFAULT 1,
    running      INTEGER NOT NULL DEFAULT 0,
    log_path     TEXT
);
"""


def db_path(data_dir: Path) -> Path:
    return Path(data_dir) / DB_NAME


def connect(data_dir: Path, *, create: bool = True) -> sqlite3.Connection:
    """Open (and on first use create) the database, in WAL mode with a long busy timeout.

    The connection is in autocommit mode; callers group writes with
    ``with transaction(conn):`` (BEGIN IMMEDIATE).
    """
    data_dir = Path(data_dir)
    if create:
        data_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        db_path(data_dir), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version < SCHEMA_VERSION:
        _retry_locked(lambda: _create_schema(conn))
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _retry_locked(fn, tries: int = 50):
    """Run FN, retrying while SQLite says the database is locked (schema creation races)."""
    for attempt in range(tries):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    return None


class transaction:
    """``with transaction(conn):`` — BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        _retry_locked(lambda: self.conn.execute("BEGIN IMMEDIATE"))
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


class Database:
    """A lazily opened connection to a data directory's database (base of Store and JobQueue)."""

    def __init__(self, data_dir: Path | str, conn: sqlite3.Connection | None = None):
        self.data_dir = Path(data_dir)
        self._conn = conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.data_dir)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
