"""Bad local state (issue 9 item 7), end to end against the emulators: a full disk (a raw
file, photometry.csv, product.json, the database; injected, and a real tmpfs when it can be
mounted), temporary files of a killed write, symbolic links that lead out of the data
directory, and target names that do not make good folder names."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_clean_error
from stdq import Stdq, store
from stdq.errors import DiskFull

SN = ("SN 2023ixf",)
POS = ("--ra", "210.910674", "--dec", "54.311650")


# -- a full disk, injected -----------------------------------------------------------------


class _FullDisk:
    """A file opened for writing whose writes fail as on a full disk."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        self._fh.flush()

    def fileno(self) -> int:
        return self._fh.fileno()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(predicate)``: atomic writes of the files whose final name matches
    PREDICATE fail with ENOSPC; ``full_disk(None)`` ends that. Returns the names hit."""
    real = store._open_temp
    hit: list[str] = []
    state = {"match": None}

    def opener(tmp: Path):
        fh = real(tmp)
        final = tmp.name[1:].rsplit(".", 3)[0]  # .<name>.<pid>.<n>.tmp
        if state["match"] is not None and state["match"](final):
            hit.append(final)
            return _FullDisk(fh)
        return fh

    monkeypatch.setattr(store, "_open_temp", opener)

    def set_match(predicate):
        state["match"] = predicate
        return hit

    return set_match


def session(runner) -> Stdq:
    return Stdq(runner.config_path, runner.data_dir)


def disk_full_line(runner, name: str) -> str:
    return (f"error: the disk of the data directory {runner.data_dir} is full (no space left"
            f" writing {name}); free some space, then try again")


def assert_nothing_pending(sdq: Stdq) -> None:
    products = sdq.products()
    assert products, "no product was made"
    assert all(p.state != "pending" for p in products), [(p.id, p.state) for p in products]


@pytest.fixture
def atlas(stdq):
    emulator = stdq.server.emulator("atlas")
    emulator.queue_seconds = 0.2
    emulator.run_seconds = 0.2
    return stdq, emulator


def test_full_disk_writing_the_raw_file_keeps_the_remote_task_for_a_retry(atlas, full_disk):
    stdq, emulator = atlas
    hit = full_disk(lambda name: name.startswith("job") and name.endswith(".txt"))
    result = stdq.run("query", "atlas", *SN, "--sync")
    line = assert_clean_error(result, 75)
    (task_id,) = emulator.tasks
    assert line == disk_full_line(stdq, f"job{task_id:05d}.txt")
    assert len([ln for ln in result.stderr.splitlines() if ln.startswith("error:")]) == 1
    assert hit and not list((stdq.data_dir / "products").rglob("*.tmp"))
    with session(stdq) as sdq:
        (job,) = sdq.jobs()
        assert job.state == "failed" and job.exit_code == 75
        assert job.checkpoint["task_url"].endswith(f"/queue/{task_id}/")
        assert "disk of the data directory" in job.error
        assert_nothing_pending(sdq)
        (product,) = sdq.products()
        assert product.state == "failed" and "is full" in product.error
    assert not emulator.tasks[task_id].deleted  # kept for the retry
    # space again: the retry resumes the same remote task (no second POST) and ends well
    full_disk(None)
    again = stdq.run("--json", "jobs", "retry", str(job.id))
    assert again.returncode == 0, again.stderr
    assert len(stdq.server.log_of(emulator="atlas", method="POST")) == 1
    assert emulator.tasks[task_id].deleted
    with session(stdq) as sdq:
        (product,) = sdq.products()
        assert product.state == "ready" and product.rows and product.error is None
        resumed = sdq.job(job.id)
        assert resumed.state == "succeeded" and resumed.products == (product.id,)


def test_full_disk_in_a_worker_job_requeues_it_and_cancel_deletes_the_remote_task(atlas, full_disk):
    from stdq.jobs.queue import owner_id
    from stdq.jobs.runner import run_job

    stdq, emulator = atlas
    stdq.write_settings("\n[tasks]\nautostart_worker = false\n")
    full_disk(lambda name: name.endswith(".txt"))
    with session(stdq) as sdq:
        job = sdq.submit("atlas", ra=210.910674, dec=54.31165, runner="worker")
        owner = owner_id()
        claimed = sdq.queue.claim(owner, sdq.settings.tasks.lease_seconds, job_id=job.id)
        ended = run_job(claimed, settings=sdq.settings, store=sdq.store, queue=sdq.queue, owner=owner)
        # a temporary failure: queued again with backoff, its remote task in the checkpoint
        assert ended.state == "queued" and ended.attempts == 1
        assert "disk of the data directory" in ended.error
        (task_id,) = emulator.tasks
        assert ended.checkpoint["task_url"].endswith(f"/queue/{task_id}/")
        assert not emulator.tasks[task_id].deleted
        assert_nothing_pending(sdq)
        cancelled = sdq.cancel(job.id)
        assert cancelled.state == "cancelled"
    assert emulator.tasks[task_id].deleted
    assert stdq.server.log_of(emulator="atlas", method="DELETE")


@pytest.mark.parametrize("name", ["photometry.csv", "product.json"])
def test_full_disk_writing_the_products_files(stdq, full_disk, name):
    full_disk(lambda final: final == name)
    result = stdq.run("query", "panstarrs", *SN, *POS)
    line = assert_clean_error(result, 75)
    assert line == disk_full_line(stdq, name)
    with session(stdq) as sdq:
        (job,) = sdq.jobs()
        assert job.state == "failed" and job.exit_code == 75
        assert_nothing_pending(sdq)
        assert sdq.products()[0].state == "failed"
    assert not [p for p in stdq.data_dir.rglob("*") if p.name.endswith(".tmp")]


def test_full_database_is_disk_full_naming_the_data_directory(tmp_path):
    data = tmp_path / "data"
    config = tmp_path / "empty.toml"
    config.write_text("")
    with Stdq(config, data) as sdq:
        sdq.targets.add("first", 10.0, 20.0)
        pages = sdq.db.conn.execute("PRAGMA page_count").fetchone()[0]
        sdq.db.conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own SQLITE_FULL
        with pytest.raises(DiskFull) as caught:
            for n in range(5000):
                sdq.targets.add(f"target {n} " + "x" * 200, 10.0, 20.0)
    assert caught.value.exit_code == 75
    assert caught.value.message == (
        f"the disk of the data directory {data} is full (no space left writing its database);"
        " free some space, then try again"
    )


# -- a full disk, for real (a tiny tmpfs; root only) ------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("cannot mount a tmpfs here")
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=10)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill FOLDER's file system, then free LEAVE bytes."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


@pytest.mark.skipif(sys.platform != "linux", reason="tmpfs")
@pytest.mark.parametrize("leave", [0, 48 * 1024])
def test_a_really_full_disk(stdq, tiny_disk, leave):
    """Whatever write meets the full disk first (the database, a raw file, the table):
    one line naming the data directory, exit 75, no traceback."""
    data = tiny_disk / "data"
    env = {"STDQ_DATA_DIR": str(data)}
    made = stdq.run("targets", "add", "Here", "--ra", "210.910674", "--dec", "54.31165", env=env)
    assert made.returncode == 0, made.stderr
    fill(tiny_disk, leave)
    result = stdq.run("query", "panstarrs", "Here", env=env)
    line = assert_clean_error(result, 75)
    assert line.startswith(f"error: the disk of the data directory {data} is full (no space left"), line
    assert line.endswith("free some space, then try again")
    (tiny_disk / "filler").unlink()
    with Stdq(stdq.config_path, data) as sdq:
        assert all(p.state != "pending" for p in sdq.products())


# -- temporary files of a killed write ----------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporary_files_of_a_killed_write_are_removed_at_the_next_start(stdq, monkeypatch):
    assert stdq.run("query", "panstarrs", *SN, *POS).returncode == 0
    with session(stdq) as sdq:
        folder = sdq.products()[0].path
    gone, live = dead_pid(), os.getpid()
    stale = [
        folder / f".photometry.csv.{gone}.123456.tmp",
        folder / "raw" / f".detections.csv.{gone}.99.tmp",
        stdq.data_dir / f".stdq.sqlite3.{gone}.5.tmp",
        stdq.data_dir / f".stdq.sqlite3.{gone}.5.tmp-wal",
    ]
    old = folder / f".product.json.{live}.7.tmp"  # a live pid, but two days old (pid reused)
    kept = [
        folder / f".product.json.{live}.8.tmp",  # a write in progress in a live process
        folder / "notes.tmp",  # not one of stdq's temporary names
    ]
    for path in [*stale, old, *kept]:
        path.write_bytes(b"half a file")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    monkeypatch.setattr(store, "_CLEANED", set())  # a fresh process
    result = stdq.run("products", "list")
    assert result.returncode == 0, result.stderr
    for path in [*stale, old]:
        assert not path.exists(), path
    for path in kept:
        assert path.exists(), path


def test_temporary_files_stay_on_a_read_only_data_directory(stdq, monkeypatch):
    assert stdq.run("query", "panstarrs", *SN, *POS).returncode == 0
    stale = stdq.data_dir / f".stdq.sqlite3.{dead_pid()}.5.tmp"
    stale.write_bytes(b"x")
    monkeypatch.setattr(store, "_CLEANED", set())
    with Stdq(stdq.config_path, stdq.data_dir) as sdq:
        sdq.db.readonly = True
        store.Store(sdq.db)
    assert stale.exists()


# -- symbolic links that lead out of the data directory ---------------------------------------------


def test_a_target_folder_linked_outside_is_refused(stdq, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (stdq.data_dir / "products").mkdir(parents=True)
    link = stdq.data_dir / "products" / "SN_2023ixf"
    link.symlink_to(outside)
    result = stdq.run("query", "panstarrs", *SN, *POS)
    line = assert_clean_error(result, 3)
    assert f"{link} is a symbolic link that leads outside the data directory {stdq.data_dir}" in line
    assert list(outside.iterdir()) == []  # nothing written there
    # the products folder itself
    link.unlink()
    (stdq.data_dir / "products").rmdir()
    (stdq.data_dir / "products").symlink_to(outside)
    result = stdq.run("query", "panstarrs", *SN, *POS)
    assert "products is a symbolic link that leads outside" in assert_clean_error(result, 3)
    assert list(outside.iterdir()) == []
    with session(stdq) as sdq:
        assert all(p.state != "pending" for p in sdq.products())


def test_links_inside_a_product_are_refused(stdq, tmp_path):
    assert stdq.run("query", "panstarrs", *SN, *POS).returncode == 0
    with session(stdq) as sdq:
        product = sdq.products()[0]
    secret = tmp_path / "private.txt"
    secret.write_text("my private notes\n")
    raw = product.path / "raw"
    first = sorted(raw.iterdir())[0]
    first.unlink()
    first.symlink_to(secret)  # a raw file that points at a file outside
    for args in (["products", "show", str(product.id)], ["products", "reprocess", str(product.id)]):
        result = stdq.run("--json", *args)
        line = assert_clean_error(result, 3)
        assert f"{first} is a symbolic link that leads outside the data directory" in line
        assert "my private notes" not in result.stdout + result.stderr
    # the raw folder itself
    moved = tmp_path / "raw-elsewhere"
    raw.rename(moved)
    raw.symlink_to(moved)
    result = stdq.run("products", "show", str(product.id))
    assert f"{raw} is a symbolic link that leads outside" in assert_clean_error(result, 3)


def test_links_that_stay_inside_and_a_linked_data_directory_are_fine(stdq, tmp_path):
    real = tmp_path / "real-data"
    real.mkdir()
    linked = tmp_path / "linked-data"
    linked.symlink_to(real)
    env = {"STDQ_DATA_DIR": str(linked)}
    assert stdq.run("query", "panstarrs", *SN, *POS, env=env).returncode == 0
    # a target folder that is a link to another folder inside the data directory
    products = real / "products"
    (products / "elsewhere").mkdir()
    (products / "M_31").symlink_to(products / "elsewhere")
    result = stdq.run("query", "panstarrs", "M 31", "--ra", "10.684708", "--dec", "41.26875", env=env)
    assert result.returncode in (0, 5), result.stderr
    listed = stdq.run("--json", "products", "show", "1", env=env)
    assert listed.returncode == 0, listed.stderr


# -- target names as folder names ----------------------------------------------------------------


def test_target_names_never_share_a_folder(stdq):
    long_a = "Comet " + "A" * 250 + " one"
    long_b = "Comet " + "A" * 250 + " two"
    names = ["SN 2023ixf", "SN_2023ixf", "SN/2023ixf", "Тест", "漢字 星", long_a, long_b, "..x"]
    for name in names:  # all at the emulator's SN 2023ixf (with data)
        made = stdq.run("targets", "add", name, *POS)
        assert made.returncode == 0, (name, made.stderr)
    folders = {}
    for name in names:
        result = stdq.run("--json", "query", "panstarrs", name)
        assert result.returncode == 0, (name, result.stderr)
    with session(stdq) as sdq:
        for product in sdq.products():
            folder = product.path.parent.parent
            assert folder.parent == stdq.data_dir / "products"
            folders.setdefault(folder.name, set()).add(product.target)
    assert all(len(targets) == 1 for targets in folders.values()), folders
    assert len(folders) == len(names)
    assert "SN_2023ixf" in folders and "Тест" in folders  # readable names stay as they were
    assert "漢字_星" in folders
    for folder in folders:
        assert len(folder.encode()) <= 200
        assert "/" not in folder and not folder.startswith(".")
    # a hash where the safe form is not the name: SN_2023ixf, SN/2023ixf, the long ones, "..x"
    assert sorted(f.split("~")[0][:12] for f in folders if "~" in f) == [
        "Comet_AAAAAA", "Comet_AAAAAA", "SN_2023ixf", "SN_2023ixf", "x"]


@pytest.mark.parametrize("garbage", ["{not json", '{"query": 5, "raw_files": 7, "target": []}', "[]"])
def test_a_broken_product_json_is_rebuilt_by_reprocess(stdq, garbage):
    assert stdq.run("query", "panstarrs", *SN, *POS).returncode == 0
    (meta_path,) = stdq.data_dir.rglob("product.json")
    before = json.loads(meta_path.read_text())
    meta_path.write_text(garbage)
    shown = stdq.run("--json", "products", "show", str(before["product_id"]))
    assert shown.returncode == 0, shown.stderr
    result = stdq.run("--json", "products", "reprocess", str(before["product_id"]))
    assert result.returncode == 0, result.stderr
    after = json.loads(meta_path.read_text())
    assert after["counts"]["rows"] == before["counts"]["rows"]
    assert sorted(r["sha256"] for r in after["raw_files"]) == sorted(r["sha256"] for r in before["raw_files"])


@pytest.mark.parametrize("under", [False, True])
def test_a_data_directory_that_is_a_file(stdq, tmp_path, under):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    data = afile / "sub" if under else afile
    result = stdq.run("targets", "add", "X", *POS, env={"STDQ_DATA_DIR": str(data)})
    line = assert_clean_error(result, 3)
    where = f"lies under a file ({afile})" if under else "is a file"
    assert line == (f"error: the data directory {data} {where}, not a folder, so stdq cannot add a"
                    " target; point --data-dir to a folder")
    assert afile.read_text() == "not a folder"


def test_a_database_linked_outside_is_refused(stdq, tmp_path):
    assert stdq.run("targets", "add", "X", *POS).returncode == 0
    outside = tmp_path / "outside.sqlite3"
    (stdq.data_dir / "stdq.sqlite3").rename(outside)
    (stdq.data_dir / "stdq.sqlite3").symlink_to(outside)
    before = outside.read_bytes()
    for args in (["targets", "list"], ["targets", "add", "Y", *POS]):
        result = stdq.run(*args)
        line = assert_clean_error(result, 3)
        assert f"{stdq.data_dir / 'stdq.sqlite3'} is a symbolic link that leads outside" in line
    assert outside.read_bytes() == before


NAMES = st.text(max_size=120) | st.text(alphabet="Aa _./\\~é漢Ж-+.\x00\n", max_size=300)


@settings(max_examples=300, deadline=None)
@given(first=NAMES, second=NAMES)
def test_safe_names_are_one_path_component_and_never_shared(first, second):
    for name in (first, second):
        folder = store.safe_name(name)
        assert folder and len(folder.encode("utf-8", "surrogatepass")) <= 200
        assert "/" not in folder and "\\" not in folder and "\x00" not in folder
        assert not folder.startswith(".") and folder not in (".", "..")
        assert all(c.isprintable() for c in folder)
        assert store.safe_name(name) == folder  # the same name, the same folder
    if first != second:
        assert store.safe_name(first) != store.safe_name(second)


def test_output_onto_a_device_writes_into_it_and_never_replaces_it(tmp_path):
    """`-o /dev/null` as root: the atomic rename would put a regular file in place of the device."""
    import stat as stat_module

    from stdq.store import atomic_write

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    atomic_write(fifo, b"a,b\n1,2\n")
    reader.join(timeout=5)
    assert received == [b"a,b\n1,2\n"]
    assert stat_module.S_ISFIFO(os.stat(fifo).st_mode)
    atomic_write(Path("/dev/null"), b"x")
    assert stat_module.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_zombie_process_is_not_alive():
    from stdq.records import pid_alive

    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while pid_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pid_alive(child.pid)  # ended, not yet reaped
    child.wait()
    assert pid_alive(os.getpid())
