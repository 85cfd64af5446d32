"""The data directory's database: migrations, files stdq must not use, read-only folders."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import assert_clean_error, read_only
from stdq import db
from stdq.db import APPLICATION_ID, DB_NAME, MIGRATIONS, SCHEMA_VERSION, Database
from stdq.errors import ConfigError
from stdq.limiter import RateLimiter
from stdq.store import Store
from stdq.testing import sky

SN = sky.find("SN 2023ixf")
COORDS = ("--ra", f"{SN.ra}", "--dec", f"{SN.dec}")


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def make_db_at(data_dir: Path, version: int) -> Path:
    """A stdq database made by a stdq that knew only the first VERSION migrations."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DB_NAME
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA journal_mode = WAL")
    assert db.migrate(conn, version) == version
    conn.close()
    return path


def insert_job(conn: sqlite3.Connection, now: float = 1.0) -> int:
    cur = conn.execute(
        "INSERT INTO jobs (service, ra, dec, target_json, params_json, idem_key, created_at,"
        " updated_at) VALUES ('atlas', 1.5, 2.5, '{\"ra\": 1.5, \"dec\": 2.5}', '{}', 'k', ?, ?)",
        (now, now),
    )
    return int(cur.lastrowid or 0)


# -- migrations ---------------------------------------------------------------------------------


def test_a_new_database_is_at_the_latest_version_with_our_application_id(tmp_path):
    database = Database(tmp_path / "data")
    with database.transaction() as conn:
        insert_job(conn)
    conn = database.conn
    assert db.schema_version(conn) == SCHEMA_VERSION == len(MIGRATIONS) == 6
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert "wait_until" in columns(conn, "jobs")
    database.close()
    # the file itself says so (the header is what a foreign-file check reads first)
    header = (tmp_path / "data" / DB_NAME).read_bytes()[:100]
    assert int.from_bytes(header[68:72], "big") == APPLICATION_ID
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.endswith(".tmp")]


def test_migrations_from_zero_apply_each_one_in_order(tmp_path):
    conn = sqlite3.connect(":memory:", isolation_level=None)
    assert db.schema_version(conn) == 0
    assert db.migrate(conn, 1) == 1
    assert "wait_until" not in columns(conn, "jobs")
    assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")} >= db.TABLES
    assert db.migrate(conn) == SCHEMA_VERSION
    assert columns(conn, "jobs")[-1] == "wait_until"
    assert db.migrate(conn) == SCHEMA_VERSION  # nothing left to do


def test_a_version_1_database_gains_wait_until_and_keeps_its_data(tmp_path):
    path = make_db_at(tmp_path / "data", 1)
    conn = sqlite3.connect(path, isolation_level=None)
    job_id = insert_job(conn, now=123.0)
    conn.execute("INSERT INTO targets VALUES ('SN 2023ixf', 210.9, 54.3, 'sesame', 5.0)")
    conn.close()

    database = Database(tmp_path / "data")
    conn = database.conn
    assert db.schema_version(conn) == SCHEMA_VERSION
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert row["service"] == "atlas" and row["created_at"] == 123.0 and row["wait_until"] is None
    assert conn.execute("SELECT name, source FROM targets").fetchall()[0][:] == ("SN 2023ixf", "sesame")
    with database.transaction() as tx:
        tx.execute("UPDATE jobs SET wait_until = 99.5 WHERE id = ?", (job_id,))
    database.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT wait_until FROM jobs").fetchone()[0] == 99.5
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_a_failed_migration_leaves_the_version_and_schema_as_they_were(tmp_path, monkeypatch):
    path = make_db_at(tmp_path / "data", 1)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE jobs ADD COLUMN half_done TEXT")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(db, "MIGRATIONS", [MIGRATIONS[0], broken])
    with pytest.raises(RuntimeError, match="migration bug"):
        Database(tmp_path / "data").conn  # noqa: B018
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "half_done" not in columns(conn, "jobs")
    conn.close()


@pytest.mark.parametrize("start", [None, 1])
def test_many_first_opens_at_once_all_succeed(tmp_path, start):
    """Threads with a connection each create (or upgrade) the database at the same moment."""
    data_dir = tmp_path / "data"
    if start is not None:
        make_db_at(data_dir, start)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def first_open() -> None:
        try:
            database = Database(data_dir)
            barrier.wait()
            with database.transaction() as conn:
                insert_job(conn)
            database.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_open) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    conn = sqlite3.connect(data_dir / DB_NAME)
    assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 8
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    assert sorted(p.name for p in data_dir.iterdir() if not p.name.startswith(DB_NAME)) == []


UPGRADE = """
import sys
from stdq.db import Database
database = Database(sys.argv[1])
with database.transaction() as conn:
    conn.execute("UPDATE jobs SET wait_until = 1.0")
print(database.conn.execute("PRAGMA user_version").fetchone()[0])
"""


def test_processes_upgrading_one_old_database_at_once_apply_each_migration_once(tmp_path):
    data_dir = tmp_path / "data"
    make_db_at(data_dir, 1)
    procs = [
        subprocess.Popen([sys.executable, "-c", UPGRADE, str(data_dir)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err  # a second ALTER TABLE would fail: "duplicate column"
        assert out.strip() == str(SCHEMA_VERSION)


CLOSE_ONE = """
import sys
from stdq.db import Database
database = Database(sys.argv[1])
database.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()
database.close()
"""


def test_opening_a_second_database_keeps_the_locks_of_the_first(tmp_path):
    """A plain open()+close() of the file (the header check) would drop this process's
    SQLite locks; another process closing its connection would then delete the WAL in use."""
    data_dir = tmp_path / "data"
    first = Database(data_dir)
    with first.transaction() as conn:
        insert_job(conn)
    second = Database(data_dir)
    assert second.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
    done = subprocess.run([sys.executable, "-c", CLOSE_ONE, str(data_dir)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (data_dir / f"{DB_NAME}-wal").exists()  # still ours: the other process was not last
    with first.transaction() as conn:
        insert_job(conn)
    assert second.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 2
    first.close()
    second.close()
    # this file's count only: connections of earlier tests in this process are theirs
    assert os.path.realpath(data_dir / DB_NAME) not in db._OPEN_FILES


# -- the Database object ------------------------------------------------------------------------


def test_one_connection_and_one_clock_shared_by_store_and_limiter(tmp_path):
    clock = FakeClock()
    database = Database(tmp_path / "data", clock=clock)
    store = Store(database)
    limiter = RateLimiter(database, "x", 1, 60.0, sleep=lambda s: None)
    product = store.create_product(
        service="atlas", data_product_type="lightcurve", target={"name": "a", "ra": 1.0, "dec": 2.0},
        params={},
    )
    assert store.conn is database.conn and limiter.db is database
    assert limiter.acquire() == 0.0
    conn = database.conn
    assert conn.execute("SELECT created_at FROM products WHERE id = ?", (product.id,)).fetchone()[0] == clock.now
    assert conn.execute("SELECT ts FROM limiter").fetchone()[0] == clock.now
    store.close()  # not its own: the shared connection stays open
    assert database.conn is conn
    database.close()


def test_a_nested_transaction_is_a_savepoint(tmp_path):
    database = Database(tmp_path)
    with database.transaction() as conn:
        insert_job(conn)
        with pytest.raises(ValueError), database.transaction():
            insert_job(conn)
            raise ValueError("inner")
    assert database.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
    with pytest.raises(ValueError), database.transaction() as conn:
        insert_job(conn)
        raise ValueError("outer")
    assert database.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
    database.close()


def test_a_missing_database_reads_as_empty_and_is_made_by_the_first_write(tmp_path):
    data_dir = tmp_path / "not" / "yet"
    database = Database(data_dir)
    assert database.writable and not database.exists
    assert database.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    assert Store(database).list_products() == []
    assert not (tmp_path / "not").exists()  # reading created nothing
    with database.transaction() as conn:
        insert_job(conn)
    assert database.exists
    assert database.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
    database.close()


def test_a_reader_of_a_missing_database_sees_it_once_another_process_made_it(tmp_path):
    reader = Database(tmp_path / "data")
    assert reader.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    with Database(tmp_path / "data") as writer, writer.transaction() as conn:
        insert_job(conn)
    assert reader.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
    reader.close()


def test_the_module_transaction_of_a_database_connection_creates_the_file(tmp_path):
    """`db.transaction(conn)` on a Database's connection is Database.transaction()."""
    database = Database(tmp_path / "data")
    with db.transaction(database.conn) as conn:  # the in-memory stand-in: replaced
        insert_job(conn)
    assert database.exists and database.conn is conn
    assert db.connect(tmp_path / "data").execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
    database.close()


def test_readonly_serves_reads_and_refuses_writes_naming_the_folder(tmp_path):
    data_dir = tmp_path / "data"
    with Database(data_dir) as database, database.transaction() as conn:
        insert_job(conn)
    before = sha256(data_dir / DB_NAME)
    database = Database(data_dir, readonly=True)
    assert not database.writable
    assert database.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
    with pytest.raises(ConfigError) as info, database.transaction():
        pass
    assert str(data_dir) in info.value.message and "read-only" in info.value.message
    assert info.value.exit_code == 3 and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="read-only"):
        database.require_writable("run a query")
    # a write past the checks is still turned into the same error, not a sqlite3 traceback
    with pytest.raises(ConfigError, match="read-only"), db.transaction(database.conn) as conn:
        insert_job(conn)
    database.close()
    assert sha256(data_dir / DB_NAME) == before


def test_readonly_on_a_missing_database_reads_empty_and_creates_nothing(tmp_path):
    database = Database(tmp_path / "data", readonly=True)
    assert database.conn.execute("SELECT COUNT(*) FROM products").fetchone()[0] == 0
    with pytest.raises(ConfigError, match="read-only"), database.transaction():
        pass
    assert not (tmp_path / "data").exists()


def test_a_plain_connection_opened_read_only_gives_the_clear_error(tmp_path):
    with Database(tmp_path) as database, database.transaction() as conn:
        insert_job(conn)
    conn = sqlite3.connect(f"{(tmp_path / DB_NAME).as_uri()}?mode=ro", uri=True, isolation_level=None)
    with pytest.raises(ConfigError) as info, db.transaction(conn) as tx:
        insert_job(tx)
    assert "read-only" in info.value.message and str(tmp_path) in info.value.message
    conn.close()


# -- files stdq must not use ---------------------------------------------------------------------


def _zero_length(path: Path) -> None:
    path.write_bytes(b"")


def _text(path: Path) -> None:
    path.write_text("name,ra,dec\nSN 2023ixf,210.91,54.31\n", encoding="utf-8")


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()


def _other_application(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234567")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()


def _our_id_but_no_schema(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()


def _stdq_db(path: Path) -> None:
    with Database(path.parent) as database, database.transaction() as conn:
        insert_job(conn)


def _corrupt(path: Path) -> None:
    _stdq_db(path)
    data = bytearray(path.read_bytes())
    data[100:4096] = os.urandom(4096 - 100)  # page 1 after the header: the schema table
    path.write_bytes(bytes(data))


def _truncated(path: Path) -> None:
    _stdq_db(path)
    path.write_bytes(path.read_bytes()[:60])


def _future(path: Path) -> None:
    _stdq_db(path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    conn.commit()
    conn.close()


def _incomplete(path: Path) -> None:
    _stdq_db(path)
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE products")
    conn.commit()
    conn.close()


BAD_FILES = {
    "zero-length": (_zero_length, "empty", "move it away"),
    "text": (_text, "not an SQLite file", "move it away"),
    "foreign-sqlite": (_foreign_sqlite, "another program", "move it away"),
    "other-application": (_other_application, "another program", "move it away"),
    "corrupt": (_corrupt, "corrupt", "move it away"),
    "truncated": (_truncated, "corrupt", "move it away"),
    "future-version": (_future, "newer stdq", "upgrade stdq"),
    "incomplete": (_incomplete, "no table products", "move it away"),
    "no-schema-version": (_our_id_but_no_schema, "no stdq schema version", "move it away"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_a_file_stdq_cannot_trust_is_refused_and_left_alone(tmp_path, kind):
    make, what, todo = BAD_FILES[kind]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = data_dir / DB_NAME
    make(path)
    before = sha256(path)
    for readonly in (False, True):
        with pytest.raises(ConfigError) as info:
            Database(data_dir, readonly=readonly).conn  # noqa: B018
        message = info.value.message
        assert str(path) in message and what in message and todo in message, message
        assert info.value.exit_code == 3 and "\n" not in str(info.value)
    with pytest.raises(ConfigError), Database(data_dir).transaction():
        pass
    with pytest.raises(ConfigError):
        db.connect(data_dir)
    assert sha256(path) == before
    assert sorted(p.name for p in data_dir.iterdir()) == [DB_NAME]


@pytest.mark.parametrize("kind", ["zero-length", "future-version", "foreign-sqlite", "corrupt"])
def test_the_cli_says_so_in_one_line_and_exits_3(stdq, kind):
    make, what, todo = BAD_FILES[kind]
    stdq.data_dir.mkdir()
    path = stdq.data_dir / DB_NAME
    make(path)
    before = sha256(path)
    for args in (("jobs", "list"), ("jobs", "status"), ("products", "list"), ("query", "panstarrs", *COORDS)):
        result = stdq.run(*args)
        line = assert_clean_error(result, 3)
        assert str(path) in line and what in line and todo in line, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
    assert sha256(path) == before
    assert sorted(p.name for p in stdq.data_dir.iterdir()) == [DB_NAME]


# -- read-only data directories through the CLI ---------------------------------------------------




@pytest.fixture
def filled(stdq):
    """A data dir with one finished job and its product (a Pan-STARRS query)."""
    result = stdq.run("--json", "query", "panstarrs", *COORDS)
    assert result.returncode == 0, result.stderr
    return stdq


@pytest.mark.parametrize("what", ["folder", "file"])
def test_a_read_only_data_directory_serves_reads_and_refuses_writes(filled, what):
    stdq = filled
    path = stdq.data_dir / DB_NAME
    before = sha256(path)
    jobs_before = json.loads(stdq.run("--json", "jobs", "list").stdout)
    with read_only(stdq.data_dir if what == "folder" else path):
        listed = stdq.run("--json", "jobs", "list")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == jobs_before and len(jobs_before) == 1
        products = stdq.run("--json", "products", "list")
        assert products.returncode == 0, products.stderr
        assert [p["service"] for p in json.loads(products.stdout)] == ["panstarrs"]
        status = stdq.run("--json", "jobs", "status")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["counts"]["succeeded"] == 1
        text = stdq.run("jobs", "list")
        assert text.returncode == 0 and "panstarrs" in text.stdout
        job_id = jobs_before[0]["id"]
        for args in (("jobs", "show", str(job_id)), ("products", "show", "1"), ("targets", "list")):
            shown = stdq.run("--json", *args)
            assert shown.returncode == 0, (args, shown.stderr)

        refused = stdq.run("query", "panstarrs", *COORDS, "--force")
        line = assert_clean_error(refused, 3)
        assert "read-only" in line and str(stdq.data_dir) in line, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert sha256(path) == before


def test_read_commands_do_not_create_a_missing_data_directory(stdq):
    assert not stdq.data_dir.exists()
    for args in (("jobs", "list"), ("products", "list"), ("jobs", "status")):
        result = stdq.run("--json", *args)
        assert result.returncode == 0, (args, result.stderr)
    assert json.loads(stdq.run("--json", "jobs", "list").stdout) == []
    assert json.loads(stdq.run("--json", "products", "list").stdout) == []
    assert not stdq.data_dir.exists()
