"""The data directory's SQLite database: one file, WAL, every table of stdq, numbered migrations.

Tables: targets, resolver_cache, products, jobs, job_events, limiter, workers. The schema is
built by :data:`MIGRATIONS`, applied in order, each in its own transaction, and the number
applied is kept in ``PRAGMA user_version``; a later release adds a column by appending a
migration. ``PRAGMA application_id`` marks the file as stdq's, so a foreign file is recognised.

A file stdq cannot trust (empty, not SQLite, another program's, corrupt, or written by a
newer stdq) is never replaced or used: opening it raises :class:`~stdq.errors.ConfigError`
(exit 3) naming the file. A read-only data directory is opened read-only (reads work, writes
raise ConfigError); a data directory that does not exist is only created by the first write.
Stdlib only: ``stdq jobs status`` opens this without importing anything heavy.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import TypeAlias, TypeVar

from stdq.errors import ConfigError, DiskFull, StdqError, TemporaryFailure, is_disk_full

DB_NAME = "stdq.sqlite3"
APPLICATION_ID = 0x53544451  # b"STDQ": PRAGMA application_id of every stdq database
BUSY_TIMEOUT_MS = 60_000
SQLITE_MAGIC = b"SQLite format 3\x00"
MOVE_AWAY = "move it away or point --data-dir elsewhere"

Migration: TypeAlias = "str | Callable[[sqlite3.Connection], None]"

SCHEMA_1 = """
CREATE TABLE targets (
    name        TEXT PRIMARY KEY COLLATE NOCASE,
    ra          REAL NOT NULL,
    dec         REAL NOT NULL,
    source      TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE resolver_cache (
    key         TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    resolver    TEXT NOT NULL,
    ra          REAL NOT NULL,
    dec         REAL NOT NULL,
    canonical   TEXT,
    resolved_at REAL NOT NULL
);
CREATE TABLE products (
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
CREATE INDEX products_target ON products(target);
CREATE TABLE jobs (
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
CREATE INDEX jobs_state ON jobs(state, run_after);
CREATE INDEX jobs_idem ON jobs(idem_key, state);
CREATE TABLE job_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   INTEGER NOT NULL,
    ts       REAL NOT NULL,
    kind     TEXT NOT NULL,
    message  TEXT NOT NULL
);
CREATE INDEX job_events_job ON job_events(job_id, id);
CREATE TABLE limiter (
    scope  TEXT NOT NULL,
    ts     REAL NOT NULL
);
CREATE INDEX limiter_scope ON limiter(scope, ts);
CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    burst        INTEGER NOT NULL DEFAULT 0,
    concurrency  INTEGER NOT NULL DEFAULT 1,
    running      INTEGER NOT NULL DEFAULT 0,
    log_path     TEXT
)
"""

SCHEMA_3 = """
CREATE TABLE target_lists (
    list      TEXT NOT NULL COLLATE NOCASE,
    name      TEXT NOT NULL COLLATE NOCASE,
    added_at  REAL NOT NULL,
    PRIMARY KEY (list, name)
);
CREATE TABLE update_jobs (
    job_id      INTEGER PRIMARY KEY,
    target      TEXT NOT NULL,
    service     TEXT NOT NULL,
    hook        TEXT,
    hook_state  TEXT
)
"""

SCHEMA_4 = """
CREATE TABLE masks (
    target         TEXT NOT NULL COLLATE NOCASE,
    service        TEXT NOT NULL,
    source_row_id  TEXT NOT NULL,
    reason         TEXT,
    created_at     REAL NOT NULL,
    PRIMARY KEY (target, service, source_row_id)
)
"""

SCHEMA_5 = """
CREATE TABLE remote_slots (
    scope     TEXT NOT NULL,
    job_id    INTEGER NOT NULL,
    taken_at  REAL NOT NULL,
    PRIMARY KEY (scope, job_id)
);
CREATE TABLE deferred_deletes (
    id          INTEGER PRIMARY KEY,
    scope       TEXT NOT NULL,
    url         TEXT NOT NULL,
    job_id      INTEGER,
    added_at    REAL NOT NULL,
    tries       INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    UNIQUE (scope, url)
)
"""

SCHEMA_6 = """
CREATE TABLE batches (
    id         INTEGER PRIMARY KEY,
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL,
    state      TEXT NOT NULL,
    leader     INTEGER NOT NULL,
    opened_at  REAL NOT NULL,
    sent_at    REAL,
    info_json  TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE batch_members (
    batch_id      INTEGER NOT NULL,
    job_id        INTEGER NOT NULL,
    idx           INTEGER NOT NULL,
    request_json  TEXT NOT NULL,
    PRIMARY KEY (batch_id, job_id)
)
"""

#: Migration N (1-based) takes the schema from version N-1 to N. Append only; never edit one
#: that has been released.
MIGRATIONS: list[Migration] = [
    SCHEMA_1,  # 1: the whole schema of the first release
    "ALTER TABLE jobs ADD COLUMN wait_until REAL",  # 2: when a retry wait ends (live display)
    SCHEMA_3,  # 3: target lists (watchlists) and the jobs of `stdq update`
    SCHEMA_4,  # 4: masked light-curve rows (`stdq mask`), kept across re-fetches
    SCHEMA_5,  # 5: per-account slots (ATLAS max_queued, ZFPS max_pending), deferred DELETEs
    SCHEMA_6,  # 6: batch submissions shared by several jobs (ZFPS: many positions, one request)
]
SCHEMA_VERSION = len(MIGRATIONS)
TABLES = frozenset(
    {"targets", "resolver_cache", "products", "jobs", "job_events", "limiter", "workers"}
)

T = TypeVar("T")


def db_path(data_dir: Path | str) -> Path:
    """Where the database of DATA_DIR lives."""
    return Path(data_dir) / DB_NAME


# -- opening and checking ------------------------------------------------------------------


class _Connection(sqlite3.Connection):
    """A connection that knows its :class:`Database` (so ``transaction(conn)`` can use it)
    and, while open, counts in ``_OPEN_FILES`` for its file."""

    stdq_db: weakref.ReferenceType[Database] | None = None
    stdq_file: str | None = None

    def close(self) -> None:
        super().close()
        key, self.stdq_file = self.stdq_file, None
        if key is not None:
            _release_file(key)


# POSIX: closing ANY descriptor of a file drops every lock this process holds on it, and SQLite
# keeps its locks as such (another process may then checkpoint or delete the WAL under us). So
# the header check, a plain open() and close(), runs only while no connection of this process
# has the file open, under this lock (no connection can open meanwhile).
_OPEN_LOCK = threading.Lock()
_OPEN_FILES: dict[str, int] = {}  # database file -> connections of this process open on it


def _reserve_file(path: Path) -> str:
    """Count one more connection on PATH (checking its header first if it is the first)."""
    key = os.path.realpath(path)
    with _OPEN_LOCK:
        if not _OPEN_FILES.get(key):
            check_header(path)
        _OPEN_FILES[key] = _OPEN_FILES.get(key, 0) + 1
    return key


def _release_file(key: str) -> None:
    with _OPEN_LOCK:
        left = _OPEN_FILES.get(key, 0) - 1
        if left > 0:
            _OPEN_FILES[key] = left
        else:
            _OPEN_FILES.pop(key, None)


def _refuse_link_out(path: Path, folder: Path) -> None:
    """ConfigError (exit 3) when PATH is a symbolic link that leads outside FOLDER."""
    if not path.is_symlink():
        return
    root, real = os.path.realpath(folder), os.path.realpath(path)
    if os.path.dirname(real) != root and not real.startswith(root + os.sep):
        raise ConfigError(
            f"{path} is a symbolic link that leads outside the data directory {folder}"
            f" (to {real}); stdq does not write or read through it: remove it"
        )


def _bad(path: Path, what: str, todo: str = MOVE_AWAY) -> ConfigError:
    return ConfigError(f"{path} {what}; {todo}")


def check_header(path: Path) -> None:
    """Refuse a file that is not a stdq database, from its first 100 bytes alone.

    Nothing is opened with SQLite before this passes, so a foreign file is never touched.
    """
    try:
        with open(path, "rb") as fh:
            header = fh.read(100)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}; check its permissions") from exc
    if not header:
        raise _bad(path, "is empty (0 bytes), not a stdq database")
    if not header.startswith(SQLITE_MAGIC):
        raise _bad(path, "is not a stdq database (not an SQLite file)")
    if len(header) < 100:
        raise _bad(path, "is corrupt (truncated SQLite header)")
    app_id = int.from_bytes(header[68:72], "big")
    if app_id != APPLICATION_ID:
        owner = f"application_id {app_id:#010x}" if app_id else "no stdq application_id"
        raise _bad(path, f"is an SQLite database of another program ({owner})")


def _connect(target: str, *, uri: bool = False) -> _Connection:
    conn = sqlite3.connect(
        target,
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        uri=uri,
        factory=_Connection,
    )
    assert isinstance(conn, _Connection)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def _uri(path: Path, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{Path(os.path.abspath(path)).as_uri()}?{query}"


def schema_version(conn: sqlite3.Connection) -> int:
    """The number of migrations applied to CONN's database."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_schema(conn: sqlite3.Connection, path: Path) -> int:
    """Check an open database is stdq's and not newer than this stdq; returns its version."""
    try:
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        version = schema_version(conn)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as exc:
        raise _bad(path, f"is corrupt ({exc})") from exc
    if app_id != APPLICATION_ID:
        raise _bad(path, f"is an SQLite database of another program (application_id {app_id:#010x})")
    if version > SCHEMA_VERSION:
        raise _bad(
            path,
            f"was written by a newer stdq (schema {version}, this stdq knows {SCHEMA_VERSION})",
            "upgrade stdq",
        )
    if version == 0 and tables:
        raise _bad(path, "is not a stdq database (tables but no stdq schema version)")
    if version >= 1 and not tables >= TABLES:
        missing = ", ".join(sorted(TABLES - tables))
        raise _bad(path, f"is not a complete stdq database (no table {missing})")
    return version


def _apply(conn: sqlite3.Connection, migration: Migration) -> None:
    if isinstance(migration, str):
        for statement in migration.split(";"):
            if statement.strip():
                conn.execute(statement)
    else:
        migration(conn)


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Apply the migrations CONN's database lacks, up to TARGET; returns the version reached.

    Each migration runs in its own ``BEGIN IMMEDIATE`` transaction that re-reads the version,
    so processes opening an old database at the same moment apply each one exactly once.
    """
    version = schema_version(conn)
    while version < target:
        _retry_locked(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            version = schema_version(conn)
            if version < target:
                _apply(conn, MIGRATIONS[version])
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return version


def _create(path: Path) -> None:
    """Create PATH as a complete, migrated stdq database, atomically.

    It is built under a temporary name and hard-linked into place, so no process ever sees a
    half-made (or zero-length) ``stdq.sqlite3``; when several processes create it at once, the
    first link wins and the others use that file.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(path.parent, "creating it") from exc
        raise ConfigError(
            f"cannot create the data directory {path.parent}: {exc.strerror}; "
            "point --data-dir to a writable folder"
        ) from exc
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        conn = _connect(str(tmp))
        try:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("PRAGMA journal_mode = WAL")
            migrate(conn)
        finally:
            conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        except OSError:  # no hard links here (some network file systems)
            if not path.exists():
                os.replace(tmp, path)
    except (OSError, sqlite3.OperationalError) as exc:
        if is_disk_full(exc):
            raise DiskFull(path.parent, f"creating {path.name}") from exc
        raise ConfigError(
            f"cannot create {path}: {exc}; point --data-dir to a writable folder"
        ) from exc
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            leftover.unlink(missing_ok=True)


def _retry_locked(fn: Callable[[], T], tries: int = 50) -> T:
    """Run FN, retrying while SQLite says the database is locked (schema creation races)."""
    for attempt in range(tries):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(min(0.05 * (attempt + 1), 0.5))
    raise AssertionError("unreachable")  # pragma: no cover


def _dir_writable(path: Path) -> bool:
    """Whether PATH (or, if it does not exist, its nearest existing parent) is writable."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate.is_dir() and os.access(candidate, os.W_OK)
    return False


def _translate(exc: sqlite3.Error, path: Path, folder: Path) -> StdqError | None:
    """The ConfigError for a SQLite error that means read-only or corrupt, DiskFull for a
    full disk, else None."""
    text = str(exc)
    if is_disk_full(exc) or ("disk I/O error" in text and disk_is_full(folder)):
        return DiskFull(folder, "writing its database")
    if isinstance(exc, sqlite3.OperationalError):
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            return read_only_error(folder, "write to its database")
        return None
    if isinstance(exc, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text):
        return _bad(path, f"is corrupt ({text})")
    return None


def disk_is_full(folder: Path) -> bool:
    """Whether the file system of FOLDER (or its nearest existing parent) has (almost) no
    space left: SQLite reports a full disk as an I/O error or a failed open at times."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            try:
                info = os.statvfs(candidate)
            except (OSError, AttributeError):
                return False
            return info.f_bavail * info.f_frsize < 64 * 1024
    return False


def read_only_error(folder: Path, what: str) -> ConfigError:
    """The one error for a write refused because the data directory is read-only (or is,
    or lies under, something that is not a folder)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            if not candidate.is_dir():
                where = "is a file" if candidate == folder else f"lies under a file ({candidate})"
                return ConfigError(
                    f"the data directory {folder} {where}, not a folder, so stdq cannot {what};"
                    " point --data-dir to a folder"
                )
            break
    return ConfigError(
        f"the data directory {folder} is read-only, so stdq cannot {what}; "
        "make it writable or point --data-dir elsewhere"
    )


# -- transactions ---------------------------------------------------------------------------


@contextmanager
def _transaction(conn: sqlite3.Connection, path: Path, folder: Path) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); a nested one is a SAVEPOINT."""
    try:
        if conn.in_transaction:
            name = f"stdq_{id(object())}"
            conn.execute(f"SAVEPOINT {name}")
            try:
                yield conn
            except BaseException:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
                raise
            conn.execute(f"RELEASE {name}")
            return
        _retry_locked(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        error = _translate(exc, path, folder)
        if error is None:
            raise
        raise error from exc


class transaction(AbstractContextManager[sqlite3.Connection]):
    """``with transaction(conn) as conn:`` — BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error.

    For a connection of a :class:`Database` this is ``Database.transaction()`` (use the
    connection it returns: a database first created by this write is a new connection).
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self._cm: AbstractContextManager[sqlite3.Connection] | None = None

    def __enter__(self) -> sqlite3.Connection:
        ref = getattr(self.conn, "stdq_db", None)
        database = ref() if ref is not None else None
        if database is not None and database._conn is self.conn:
            self._cm = database.transaction()
        else:
            row = self.conn.execute("PRAGMA database_list").fetchone()
            path = Path(row[2]) if row is not None and row[2] else Path(DB_NAME)
            self._cm = _transaction(self.conn, path, path.parent)
        return self._cm.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._cm is not None
        return self._cm.__exit__(exc_type, exc, tb)


# -- the database of one data directory ------------------------------------------------------


class Database:
    """The database of one data directory: ONE lazily opened connection, for its thread.

    Shared by the store (catalog), the job queue and the rate limiter of a session; a thread
    of its own (heartbeat, worker thread) opens its own ``Database(data_dir, clock=...)``.
    ``clock`` is the time source of everything written through it (inject one in tests).
    With ``readonly`` (or when the folder or file cannot be written) the file is opened
    read-only and every write raises ConfigError. A missing database reads as empty and is
    created by the first write.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        clock: Callable[[], float] = time.time,
        readonly: bool = False,
    ):
        self.data_dir = Path(data_dir)
        self.path = db_path(self.data_dir)
        self.clock = clock
        self.readonly = readonly
        self._conn: sqlite3.Connection | None = None
        self._ephemeral = False  # an in-memory stand-in while the file does not exist
        self._writable: bool | None = None
        # told "note: created the data directory PATH" when a first write creates the folder
        # (None: the "stdq" logger's warning)
        self.notice: Callable[[str], None] | None = None
        self._disk_full = False  # opened read-only because the disk is full

    # -- state ------------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        """Whether writes can succeed (the file, or the folder to create it in, is writable)."""
        if self.readonly:
            return False
        if self._writable is None:
            if self.path.exists():
                self._writable = os.access(self.path, os.W_OK) and _dir_writable(self.data_dir)
            else:
                self._writable = _dir_writable(self.data_dir)
        return self._writable

    @property
    def exists(self) -> bool:
        """Whether the database file exists (a read on a missing one sees empty tables)."""
        return self.path.exists()

    def require_writable(self, what: str) -> None:
        """Raise ConfigError (exit 3) naming the folder if the data directory is read-only."""
        if not self.writable:
            if self._disk_full:
                raise DiskFull(self.data_dir, "writing its database")
            raise read_only_error(self.data_dir, what)

    # -- the connection ---------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        """The connection (opened, checked and migrated on first use).

        While the file does not exist this is an empty in-memory stand-in; once another
        process has created the file, the next use switches to it.
        """
        if self._conn is None:
            self._conn = self._open()
        elif self._ephemeral and self.path.exists():
            self._conn = self._open()  # the stand-in is dropped, not closed: a cursor may be live
        return self._conn

    def _open(self) -> sqlite3.Connection:
        if not self.path.exists():
            self._ephemeral = True
            conn = _connect(":memory:")
            migrate(conn)
        else:
            self._ephemeral = False
            _refuse_link_out(self.path, self.data_dir)
            key = _reserve_file(self.path)
            try:
                conn = self._open_file()
            except BaseException:
                _release_file(key)
                raise
            conn.stdq_file = key  # released by conn.close()
        conn.stdq_db = weakref.ref(self)
        return conn

    def _open_file(self) -> _Connection:
        """Open the existing file: read-write if possible, else read-only (then immutable)."""
        attempts: list[dict[str, str]] = []
        if self.writable:
            attempts.append({"mode": "rw"})
        attempts += [{"mode": "ro"}, {"mode": "ro", "immutable": "1"}]
        last: sqlite3.OperationalError | None = None
        for params in attempts:
            conn: _Connection | None = None
            try:
                conn = _connect(_uri(self.path, **params), uri=True)
                version = check_schema(conn, self.path)
                if params["mode"] == "rw":
                    if version < SCHEMA_VERSION:
                        migrate(conn)
                    conn.execute("PRAGMA synchronous = NORMAL")
                else:
                    self._writable = False
                    self._disk_full = bool(attempts[0].get("mode") == "rw" and disk_is_full(self.data_dir))
                    if version < SCHEMA_VERSION:
                        raise _bad(
                            self.path,
                            f"has schema {version} and needs an upgrade to {SCHEMA_VERSION}, "
                            "but it is read-only here",
                            "run stdq once with write access to it",
                        )
                return conn
            except sqlite3.OperationalError as exc:  # cannot open this way: try the next
                if conn is not None:
                    conn.close()
                if "locked" in str(exc):
                    raise TemporaryFailure(
                        f"{self.path} stayed locked by another process; try again"
                    ) from exc
                last = exc
            except BaseException:
                if conn is not None:
                    conn.close()
                raise
        raise ConfigError(
            f"cannot open {self.path}: {last}; check its permissions or point --data-dir elsewhere"
        )

    def _materialize(self) -> None:
        """Create the database file for a first write (the in-memory stand-in is dropped)."""
        self.require_writable("create its database")
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if not self.path.exists():
            created = not self.data_dir.exists()
            _create(self.path)
            if created:
                import logging

                say = self.notice or logging.getLogger("stdq").warning
                say(f"note: created the data directory {self.data_dir}")
        self._ephemeral = False
        self._conn = self._open()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``with db.transaction() as conn:`` BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error.

        Nested, it is a savepoint. Raises ConfigError when the database is read-only; creates
        the database file if it does not exist yet.
        """
        self.require_writable("write to its database")
        if self._conn is None:
            self._conn = self._open()  # may find the file read-only after all
        if self._ephemeral:
            self._materialize()
        self.require_writable("write to its database")
        with _transaction(self.conn, self.path, self.data_dir) as conn:
            yield conn

    def close(self) -> None:
        """Close the connection (a later use opens it again)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._ephemeral = False

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({str(self.data_dir)!r})"


def connect(data_dir: Path | str, *, create: bool = True) -> sqlite3.Connection:
    """A checked, migrated connection of its own to DATA_DIR's database (created if CREATE).

    Prefer :class:`Database`; this is for code that manages a bare connection.
    """
    database = Database(data_dir)
    if create and not database.path.exists():
        database._materialize()
    conn = database.conn
    database._conn = None  # the caller owns and closes it
    return conn
