"""latest.csv merged product by product (stdq.latest.add_product) gives the same bytes as a
full rebuild from every product: repeated rows (newest product wins), new rows, rows
without a source_row_id, a product without rows, an extra column, masks, latest.ecsv;
out-of-order products, a crash before the state is written, and two threads adding
products of one folder fall back to (or end in) the full result."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stdq import latest, masks, photometry
from stdq.db import Database
from stdq.store import Store, atomic_write

TARGET = {"name": "SN 2099x", "ra": 150.0, "dec": 2.0}
SERVICE = "atlas"


def table(rows: list[tuple], extra: dict[str, list] | None = None) -> pd.DataFrame:
    """A normalized table of ROWS = (source_row_id or None, mjd, filter, flux, error)."""
    ids, mjd, filt, flux, err = (list(col) for col in zip(*rows, strict=True)) if rows else ([],) * 5
    data = {
        "mjd": np.array(mjd, dtype="float64"), "survey": ["ATLAS"] * len(rows),
        "filter": filt, "band": [f"atlas{f}" for f in filt],
        "flux_ujy": np.array(flux, dtype="float64"), "flux_err_ujy": np.array(err, dtype="float64"),
        "detected": np.array([f / e >= 5 for f, e in zip(flux, err, strict=True)], dtype=bool),
        "source_row_id": pd.Series(ids, dtype=object),
    }
    data.update(extra or {})
    return pd.DataFrame(data)


def add(store: Store, rows: list[tuple], extra: dict[str, list] | None = None, *, ready: bool = True):
    """A processed product of ROWS: photometry.csv written as processing writes it."""
    product = store.create_product(
        service=SERVICE, data_product_type="atlas_forced_photometry", target=TARGET, params={}
    )
    df = photometry.normalize(table(rows, extra), product_id=product.id)
    atomic_write(product.photometry_path, lambda fh: photometry.write_table(df, fh, "csv"))
    if ready:
        store.mark_product(product.id, state="ready", rows=len(df))
    return product


@pytest.fixture
def store(tmp_path):
    database = Database(tmp_path / "data")
    st = Store(database)
    yield st
    st.close()


@pytest.fixture
def reads(monkeypatch) -> list[list[int]]:
    """The product ids each read_products call read (a merge reads only the new one)."""
    calls: list[list[int]] = []
    original = latest.read_products

    def spy(products):
        products = list(products)
        calls.append([p.id for p in products])
        return original(products)

    monkeypatch.setattr(latest, "read_products", spy)
    return calls


def folder(store: Store) -> Path:
    return latest.folder_for(store, TARGET["name"], SERVICE)


def full_bytes(store: Store) -> dict[str, bytes]:
    """latest.csv and latest.ecsv as a full rebuild writes them, every product read from its
    file (none kept in memory); the incremental files are put back afterwards."""
    where = folder(store)
    names = [n for n in (latest.LATEST_CSV, latest.LATEST_ECSV) if (where / n).exists()]
    before = {n: (where / n).read_bytes() for n in names}
    state = (where / latest.STATE).read_bytes()
    photometry.forget_written()
    latest.rebuild(store, where, SERVICE)
    after = {n: (where / n).read_bytes() for n in names}
    for name, data in before.items():
        (where / name).write_bytes(data)
    (where / latest.STATE).write_bytes(state)
    # put back: the state names the files as they were (inode, size, time): rewrite it
    latest._write_state(where, {"products": latest._read_ids(where), "csv": latest._identity(where / "latest.csv")})
    return after


NIGHTS = [
    # 1: three rows with ids, one without (an epoch and filter instead)
    [("a", 60000.1, "o", 100.0, 5.0), ("b", 60000.2, "c", 50.0, 5.0), ("c", 60001.0, "o", 80.0, 4.0),
     (None, 60001.5, "o", 3.0, 2.0)],
    # 2: b and the id-less row again with new values (they win), a new row e, and f at the
    # same epoch as a (ties keep product order)
    [("b", 60000.2, "c", 55.0, 5.0), (None, 60001.5, "o", 4.0, 2.0), ("e", 60002.0, "c", 70.0, 5.0),
     ("f", 60000.1, "o", 90.0, 5.0)],
    # 3: no rows
    [],
    # 4: an extra column, e twice within the product (the last one wins), a row older than all
    [("e", 60002.0, "c", 71.0, 5.0), ("g", 59999.0, "o", 20.0, 5.0), ("e", 60002.0, "c", 72.0, 5.0)],
    # 5: only repeated rows
    [("a", 60000.1, "o", 101.0, 5.0), ("g", 59999.0, "o", 21.0, 5.0)],
    # 6: new rows after the others
    [("h", 60003.0, "o", 60.0, 5.0), ("i", 60003.0, "c", 61.0, 5.0)],
]
EXTRA = {3: {"atlas_chin": [1.5, 0.9, 1.1]}}


@pytest.mark.parametrize("ecsv", [False, True])
def test_merged_product_by_product_equals_a_full_rebuild(store, reads, ecsv):
    masks.add(store.db, TARGET["name"], [(SERVICE, "c"), (SERVICE, "~60001.500000|o")], "bad")
    for night, rows in enumerate(NIGHTS):
        product = add(store, rows, EXTRA.get(night))
        reads.clear()
        made = latest.add_product(store, product, ecsv=ecsv and night == 0)
        # a merge reads the new product only (the first one is all there is)
        assert reads == [[product.id]], night
        expected = full_bytes(store)
        where = folder(store)
        assert (where / "latest.csv").read_bytes() == expected["latest.csv"], night
        assert ((where / "latest.ecsv").exists()) is ecsv
        if ecsv:
            assert (where / "latest.ecsv").read_bytes() == expected["latest.ecsv"], night
        assert made.products == tuple(range(1, night + 2))
    rows = pd.read_csv(folder(store) / "latest.csv", keep_default_na=False)
    # by hand: a f g b ~ c e h i -> 9 rows, the newest value of each, sorted by MJD (ties in
    # product order: g from 5 at 59999; a (5) and f (2) at 60000.1: f's product first)
    assert list(rows["source_row_id"]) == ["g", "f", "a", "b", "c", "", "e", "h", "i"]
    assert list(rows["flux_ujy"]) == [21.0, 90.0, 101.0, 55.0, 80.0, 4.0, 72.0, 60.0, 61.0]
    assert list(rows["product_id"]) == [5, 2, 5, 2, 1, 2, 4, 6, 6]
    assert list(rows["masked"]) == [False, False, False, False, True, True, False, False, False]
    assert list(rows["atlas_chin"].astype(str)) == ["", "", "", "", "", "", "1.1", "", ""]


def test_a_product_out_of_order_or_after_a_crash_is_a_full_rebuild(store, reads, monkeypatch):
    first = add(store, NIGHTS[0])
    latest.add_product(store, first)
    # two workers: products 2 and 3 ready, 3 merged first, then 2 (out of order)
    second, third = add(store, NIGHTS[1]), add(store, NIGHTS[3], EXTRA[3])
    reads.clear()
    latest.add_product(store, third)
    latest.add_product(store, second)
    assert reads == [[1, 2, 3], [1, 2, 3]]  # both in full: neither is "the one after the state"
    assert (folder(store) / "latest.csv").read_bytes() == full_bytes(store)["latest.csv"]

    # a crash after latest.csv was written but before .latest.json: no state, the next is full
    write_state = latest._write_state
    monkeypatch.setattr(latest, "_write_state", lambda where, state: None)
    fourth = add(store, NIGHTS[4])
    reads.clear()
    latest.add_product(store, fourth)
    assert reads == [[4]] and not (folder(store) / latest.STATE).exists()
    monkeypatch.setattr(latest, "_write_state", write_state)
    fifth = add(store, NIGHTS[5])
    reads.clear()
    latest.add_product(store, fifth)
    assert reads == [[1, 2, 3, 4, 5]]

    # latest.csv changed behind the state's back (edited, restored from a backup): full
    (folder(store) / "latest.csv").write_text("mjd\n1\n")
    sixth = add(store, NIGHTS[1])
    reads.clear()
    latest.add_product(store, sixth)
    assert reads == [[1, 2, 3, 4, 5, 6]]
    assert (folder(store) / "latest.csv").read_bytes() == full_bytes(store)["latest.csv"]


def test_a_product_ready_but_never_merged_is_caught_up_by_current(store, reads):
    """A worker killed between marking a product ready and merging it: latest.csv is behind;
    the next reader (update's plan, Stdq.latest) rebuilds it."""
    latest.add_product(store, add(store, NIGHTS[0]))
    add(store, NIGHTS[5])  # ready, never merged
    reads.clear()
    path = latest.current(store, folder(store), SERVICE)
    assert reads == [[1, 2]]
    assert path is not None and len(pd.read_csv(path)) == 6
    reads.clear()
    assert latest.current(store, folder(store), SERVICE) == path and reads == []  # up to date
    assert latest.newest_mjd(store, folder(store), SERVICE) == 60003.0


def test_two_threads_adding_products_of_one_folder_end_in_the_full_result(store, tmp_path):
    products = [add(store, rows, EXTRA.get(i), ready=False) for i, rows in enumerate(NIGHTS * 3)]
    errors: list[BaseException] = []

    def work(mine) -> None:
        own = Store(Database(tmp_path / "data"))
        try:
            for product in mine:
                own.mark_product(product.id, state="ready")
                latest.add_product(own, product)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=work, args=(products[k::2],)) for k in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    where = folder(store)
    assert latest._read_ids(where) == [p.id for p in products]
    assert (where / "latest.csv").read_bytes() == full_bytes(store)["latest.csv"]
    assert not [p for p in where.iterdir() if p.name.endswith(".tmp")]


FIRST = {
    **{f"night {i}": (rows, EXTRA.get(i)) for i, rows in enumerate(NIGHTS)},
    "whole floats": (NIGHTS[5], {"atlas_n": [1.0, 2.0]}),  # written 1.0, 2.0 (read back as floats)
    "a comma in a text": (NIGHTS[5], {"object_id": ["x,1", "y"]}),  # quoted: the table is written
    "unsorted": (NIGHTS[0][::-1], None),
}


@pytest.mark.parametrize("case", sorted(FIRST))
def test_the_first_product_of_a_folder_gives_the_bytes_of_a_rebuild(store, case):
    """The first product's latest.csv is its photometry.csv with the masked column added
    (not formatted again, when nothing in it is quoted): the bytes of a full rebuild."""
    rows, extra = FIRST[case]
    masks.add(store.db, TARGET["name"], [(SERVICE, "c"), (SERVICE, "h")], None)
    product = add(store, rows, extra)
    latest.add_product(store, product)
    where = folder(store)
    assert (where / "latest.csv").read_bytes() == full_bytes(store)["latest.csv"]
    lines = (where / "latest.csv").read_text().splitlines()
    assert lines[0].endswith(",product_id,masked" if not extra or "object_id" in extra else ",masked")
    assert len(lines) == 1 + len({r[0] or f"~{r[1]}" for r in rows})


def test_new_rows_of_the_product_merged_last_read_only_that_product(store, reads):
    """stdq update's new rows (and the hook's new detections) of a merged product come from
    the keys its merge found already stored, not from reading every earlier product."""
    expected = [["a", "b", "c", "~"], ["e", "f"], [], ["g"], [], ["h", "i"]]  # by hand
    for night, rows in enumerate(NIGHTS):
        product = add(store, rows, EXTRA.get(night))
        latest.add_product(store, product)
        reads.clear()
        fast = latest.new_rows(store, folder(store), SERVICE, [product.id])
        assert reads == [[product.id]], night
        got = sorted(r if isinstance(r, str) else "~" for r in fast["source_row_id"])
        assert got == expected[night], night
        # the same as reading every earlier product (no state to go by)
        state = folder(store) / latest.STATE
        saved = state.read_bytes()
        state.unlink()
        slow = latest.new_rows(store, folder(store), SERVICE, [product.id])
        state.write_bytes(saved)
        pd.testing.assert_frame_equal(fast, slow)
    # the state speaks of the last product only: an earlier one reads its earlier ones
    reads.clear()
    assert len(latest.new_rows(store, folder(store), SERVICE, [2])) == 2
    assert reads == [[2], [1]]


@pytest.mark.slow
def test_two_worker_processes_adding_products_of_one_target_end_in_the_full_result(tmp_path):
    """Two `stdq jobs worker` processes (3 threads each) run 24 jobs of one target and
    service: every product is in latest.csv, with the bytes of a full rebuild."""
    import os
    import subprocess

    from conftest import STDQ_BIN
    from stdq.jobs.queue import JobQueue
    from stdq.testing import slow
    from stdq.testing.fakeserver import FakeServer, settings_toml

    # remote tasks of 0.5 s: one worker alone would take seconds, so both take jobs
    server = FakeServer([slow.SlowServiceEmulator(default_seconds=0.5)]).start()
    try:
        config = tmp_path / "config.toml"
        config.write_text(settings_toml(server, slow.settings_extra(autostart_worker=False)))
        queue = JobQueue(tmp_path / "data")
        for i in range(24):  # one target; a job each (its own mjd_min), 12 new rows each
            queue.submit("slow", {"name": "T", "ra": 10.0, "dec": 20.0}, {"mjd_min": 50000 + i})
        queue.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STDQ_")}
        env.update(STDQ_DATA_DIR=str(tmp_path / "data"), STDQ_CONFIG=str(config), NO_COLOR="1")
        workers = [
            subprocess.Popen([str(STDQ_BIN), "jobs", "worker", "--burst", "--concurrency", "3"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(2)
        ]
        assert [w.wait(timeout=120) for w in workers] == [0, 0]
    finally:
        server.stop()
    own = Store(Database(tmp_path / "data"))
    try:
        where = latest.folder_for(own, "T", "slow")
        ids = [p.id for p in latest.folder_products(own, where, "slow")]
        assert len(ids) == 24 and latest._read_ids(where) == ids
        claimed = own.conn.execute("SELECT message FROM job_events WHERE kind = 'claimed'").fetchall()
        pids = {str(m[0]).split()[2].split(":")[1] for m in claimed}  # "claimed by host:pid:..."
        assert len(pids) == 2  # both workers took jobs
        merged = (where / "latest.csv").read_bytes()
        assert merged.count(b"\n") == 1 + 24 * 12
        latest.rebuild(own, where, "slow")
        assert (where / "latest.csv").read_bytes() == merged
    finally:
        own.close()


def test_new_rows_past_the_keys_a_state_keeps_read_the_earlier_products(store, reads, monkeypatch):
    monkeypatch.setattr(latest, "MAX_STATE_KEYS", 1)
    latest.add_product(store, add(store, NIGHTS[0]))
    second = add(store, NIGHTS[1])  # 2 of its keys stored before, 2 new: more than 1 to keep
    latest.add_product(store, second)
    assert "added" not in latest._read_state(folder(store))
    reads.clear()
    fresh = latest.new_rows(store, folder(store), SERVICE, [second.id])
    assert sorted(fresh["source_row_id"]) == ["e", "f"] and reads == [[2], [1]]
