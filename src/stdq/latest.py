"""The current light curve of one target and service: ``products/<target>/<service>/latest.csv``.

Derived from every ready product of that folder: their photometry tables in product
order, one row per source row (``source_row_id``; for a row without one, its epoch and
filter), the newest product winning for a row fetched more than once, sorted by MJD.

- A product added (:func:`add_product`, after each job): its rows are merged into the
  existing latest.csv -- no other product is read -- when latest.csv is what the products
  before it give (``.latest.json`` beside it records the product ids and the file's
  identity) and the new product is the newest; else, and after a reprocess or a removal,
  a full :func:`rebuild` from every product. Both give the same bytes.
  A folder's first product: its photometry.csv lines with the masked column added.
- Written atomically, under a lock file of the folder (two workers adding products of
  the same folder take turns), not fsync'ed (derived). ``.latest.json`` is removed
  before and written after latest.csv: a crash or a power cut in between leaves no
  state that matches the file, and the next product, ``stdq update`` or
  ``Stdq.latest`` (:func:`current`) rebuilds in full.
- The state also keeps which rows of the product merged last were stored already, so
  that :func:`new_rows` of that product reads no other product.
- ``latest.ecsv`` is written beside it when it was asked for once (``stdq update
  --format ecsv``) and kept up to date from then on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from stdq.records import Product
    from stdq.store import Store

log = logging.getLogger("stdq")

LATEST_CSV = "latest.csv"
LATEST_ECSV = "latest.ecsv"
LOCK = ".latest.lock"
STATE = ".latest.json"  # what latest.csv was built from: product ids and the file's identity
MAX_STATE_KEYS = 20_000  # row keys of the product merged last kept in the state, at most


@dataclass(frozen=True)
class Latest:
    """What a rebuild wrote: the path (None when no product is left), rows, products used."""

    path: Path | None
    rows: int
    products: tuple[int, ...]


def folder_for(store: Store, target: str, service: str) -> Path:
    """products/<target>/<service> of a target label (name or J<ra>+<dec>) and a service."""
    from stdq.store import safe_name

    return store.products_dir / safe_name(target) / safe_name(service)


def folder_products(store: Store, folder: Path, service: str) -> list[Product]:
    """The ready products stored in FOLDER, oldest first."""
    from stdq.records import Product

    return [Product.from_row(r) for r in _folder_rows(store, folder, service, "*")]


def folder_index(store: Store, folder: Path, service: str) -> list[tuple[int, str]]:
    """(id, target) of the ready products stored in FOLDER, oldest first: what
    :func:`folder_products` gives without making a record of each (a worker asks this
    after every job, and a folder may hold thousands of products)."""
    return [(int(r["id"]), str(r["target"])) for r in _folder_rows(store, folder, service, "id, target, path")]


def _folder_rows(store: Store, folder: Path, service: str, columns: str) -> list[Any]:
    prefix = str(folder) + os.sep
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = store.conn.execute(
        f"SELECT {columns} FROM products WHERE service = ? AND state = 'ready'"
        " AND path LIKE ? ESCAPE '\\' ORDER BY id",
        (service, pattern),
    ).fetchall()
    # in FOLDER itself (products/<target>/<service>/<id>), not in a folder below it; the
    # paths are stored as str(Path): a string test is enough (a Path per row is not cheap)
    cut = len(prefix)
    return [r for r in rows if os.sep not in str(r["path"])[cut:].rstrip(os.sep)]


def row_keys(table: pd.DataFrame) -> pd.Series:
    """One key per row: its source_row_id, or (no id) ``mjd|filter``."""
    ids = table["source_row_id"]
    missing = ids.isna()
    if not missing.any():
        return ids.astype(str)
    keys = ids.astype(object).copy()
    rows = table[missing]
    fallback = rows["mjd"].map(lambda m: f"{float(m):.6f}") + "|" + rows["filter"].astype(str)
    keys[missing] = "~" + fallback
    return keys.astype(str)


def read_products(products: Iterable[Product]) -> pd.DataFrame:
    """The photometry of PRODUCTS, concatenated in their order (unreadable ones skipped)."""

    from stdq.photometry import read_table

    frames = []
    for product in products:
        try:
            frames.append(read_table(product.photometry_path))
        except (OSError, ValueError) as exc:
            log.warning("product %s: its photometry.csv cannot be read (%s)", product.id, exc)
    return concat(frames)


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """FRAMES one after the other; a table without rows adds none (nor its dtypes: the
    result is the same whether a product without rows is among them or not)."""
    import pandas as pd

    from stdq.photometry import empty_table

    if not frames:
        return empty_table()
    full = [f for f in frames if len(f)]
    if len(full) <= 1:
        return full[0] if full else frames[0]
    return pd.concat(full, ignore_index=True)


def combine(table: pd.DataFrame) -> pd.DataFrame:
    """One row per key (the last one wins), sorted by MJD."""
    if not len(table):
        return table
    keep = ~row_keys(table).duplicated(keep="last")
    if keep.all():
        if table["mjd"].is_monotonic_increasing:
            return table.reset_index(drop=True)
        return table.sort_values("mjd", kind="stable").reset_index(drop=True)
    return table[keep].sort_values("mjd", kind="stable").reset_index(drop=True)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: no lock
            pass
        yield
    finally:
        os.close(fd)


def rebuild(store: Store, folder: Path, service: str, *, ecsv: bool = False) -> Latest:
    """Write FOLDER's latest.csv (and latest.ecsv when ECSV or when it exists) from all its
    ready products; remove them when none is left."""
    from stdq.store import check_inside

    check_inside(store.data_dir, folder)
    with _locked(folder):
        return _rebuild(store, folder, service, folder_products(store, folder, service), ecsv)


def add_product(store: Store, product: Product | Any, *, ecsv: bool = False) -> Latest:
    """PRODUCT (just processed) into its folder's latest.csv: merged into the existing one
    when that is what the products before it give and PRODUCT is the newest (only the
    existing latest.csv and PRODUCT are read); else a full :func:`rebuild` (a reprocess,
    a product added out of order by another worker, a state left by a crash)."""
    from stdq.store import check_inside

    folder = Path(product.path).parent
    service = product.service
    check_inside(store.data_dir, folder)
    with _locked(folder):
        index = folder_index(store, folder, service)
        ids = [i for i, _ in index]
        if not ids or ids[-1] != product.id:  # not the newest ready one (or not ready)
            return _rebuild(store, folder, service, folder_products(store, folder, service), ecsv)
        target = index[0][1]
        if len(ids) == 1:  # the first product
            new = read_products([product])
            table = combine(new)
            # no row dropped (a repeated one) and none moved (sorted already): its file's lines
            same = len(table) == len(new) and bool(new["mjd"].is_monotonic_increasing)
            return _write(store, folder, service, ids, target, table, ecsv,
                          copy_of=Path(product.photometry_path) if same else None)
        previous = _current_table(folder, ids[:-1])
        if previous is None:
            return _rebuild(store, folder, service, folder_products(store, folder, service), ecsv)
        new = read_products([product])
        table = combine(concat([previous, new]))
        return _write(store, folder, service, ids, target, table, ecsv,
                      added=_added(product.id, new, previous))


def _added(product_id: int, new: pd.DataFrame, previous: pd.DataFrame) -> dict[str, Any] | None:
    """For the state: which keys of NEW (product PRODUCT_ID) PREVIOUS (latest.csv before it)
    had ("known") or had not ("new"), whichever list is shorter; None past MAX_STATE_KEYS
    (a re-fetch of a long history: new_rows then reads the products)."""
    keys = set(row_keys(new)) if len(new) else set()
    known = keys & set(row_keys(previous)) if keys else set()
    kind, chosen = ("known", known) if len(known) <= len(keys) - len(known) else ("new", keys - known)
    if len(chosen) > MAX_STATE_KEYS:
        return None
    return {"product": product_id, kind: sorted(chosen)}


def _rebuild(
    store: Store, folder: Path, service: str, products: list[Product], ecsv: bool
) -> Latest:
    if not products:
        for name in (LATEST_CSV, LATEST_ECSV, STATE):
            (folder / name).unlink(missing_ok=True)
        return Latest(None, 0, ())
    return _write(store, folder, service, [p.id for p in products], products[0].target,
                  combine(read_products(products)), ecsv)


def _write(
    store: Store, folder: Path, service: str, ids: list[int], target: str, table: pd.DataFrame,
    ecsv: bool, *, copy_of: Path | None = None, added: dict[str, Any] | None = None,
) -> Latest:
    """TABLE (combined from the products IDS of TARGET) with its masks as latest.csv (and
    latest.ecsv), then the state.
    COPY_OF: the photometry.csv TABLE was written as, row for row (:func:`_with_masked`).
    ADDED: the product just merged and which of its rows were stored before (:func:`_added`)."""
    from stdq import masks  # stdq mask: a `masked` column, kept across re-fetches
    from stdq.photometry import write_table
    from stdq.store import atomic_write

    csv_path, ecsv_path = folder / LATEST_CSV, folder / LATEST_ECSV
    (folder / STATE).unlink(missing_ok=True)  # a crash from here on: the next change rebuilds
    table = masks.apply(table, masks.masked_ids(store.db, target, service))
    data = _with_masked(copy_of, table) if copy_of is not None else None
    # not fsync'ed (durable=False): a derived file; after a power cut it is at worst behind
    # or gone, and its state (written after it) then names no such file: rebuilt in full
    atomic_write(
        csv_path, data if data is not None else (lambda fh: write_table(table, fh, "csv")),
        data_dir=store.data_dir, durable=False,
    )
    if ecsv or ecsv_path.exists():
        meta: dict[str, Any] = {"service": service, "products": list(ids)}
        atomic_write(
            ecsv_path, lambda fh: write_table(table, fh, "ecsv", meta), data_dir=store.data_dir,
            durable=False,
        )
    state: dict[str, Any] = {"products": list(ids), "csv": _identity(csv_path)}
    if added is not None:
        state["added"] = added
    _write_state(folder, state)
    return Latest(csv_path, int(len(table)), tuple(ids))


def _with_masked(source: Path, table: pd.DataFrame) -> Any:
    """A writer of latest.csv from SOURCE, the photometry.csv whose rows TABLE (with its
    masked column) has in the same order: each line and ``,True``/``,False`` -- what
    write_table gives (one line a row, each column's text its own, booleans True/False)
    without formatting the table again, streamed (photometry.csv_with_flag_column; the
    file and its lines as bytes in memory: +180 MiB for 100,000 rows). None (write the
    table) when the file has a quoted field (a line break may be inside it) or does not
    have TABLE's rows and columns."""
    from stdq.masks import MASKED_COLUMN
    from stdq.photometry import csv_with_flag_column

    columns = [str(c) for c in table.columns]
    if columns[-1:] != [MASKED_COLUMN]:
        return None
    flags = table[MASKED_COLUMN].to_numpy(dtype=bool)
    return csv_with_flag_column(source, columns[:-1], MASKED_COLUMN, flags)


def _identity(path: Path) -> list[int] | None:
    """(inode, size, mtime in ns) of PATH: a file written anew since differs."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    """.latest.json, replaced atomically; never fsync'ed and never an error: a state lost
    or left stale (a crash, a power cut) matches no file and only costs a full rebuild."""
    tmp = folder / f"{STATE}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    try:
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, folder / STATE)
    except OSError as exc:
        log.debug("%s: %s not written (%s)", folder, STATE, exc)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _state_matches(folder: Path, ids: list[int]) -> bool:
    """Whether FOLDER's latest.csv was built from exactly the products IDS and is unchanged
    since (.latest.json)."""
    state = _read_state(folder)
    if state is None or state.get("products") != ids:
        return False
    return state.get("csv") is not None and state.get("csv") == _identity(folder / LATEST_CSV)


def _read_state(folder: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _read_ids(folder: Path) -> list[int] | None:
    """The product ids FOLDER's latest.csv was built from, by its state (None: unknown)."""
    state = _read_state(folder)
    ids = state.get("products") if state else None
    return ids if isinstance(ids, list) else None


def _current_table(folder: Path, ids: list[int]) -> pd.DataFrame | None:
    """latest.csv of FOLDER without its masked column, when it was built from exactly the
    products IDS and is unchanged since (.latest.json); None otherwise (or when it has no
    rows: a full rebuild is as cheap)."""
    from stdq.masks import MASKED_COLUMN
    from stdq.photometry import read_table

    path = folder / LATEST_CSV
    if not _state_matches(folder, ids):
        return None
    try:
        table = read_table(path)
    except (OSError, ValueError) as exc:
        log.warning("%s cannot be read (%s): rebuilt from its products", path, exc)
        return None
    if not len(table):
        return None
    return table.drop(columns=[MASKED_COLUMN], errors="ignore")


def rebuild_for(store: Store, product: Product | Any) -> Latest | None:
    """Bring PRODUCT's latest.csv up to date after it was processed (:func:`add_product`);
    a failure is a warning (the product itself is stored all the same) and gives None."""
    try:
        return add_product(store, product)
    except Exception as exc:  # never fail the product over its derived light curve
        log.warning("product %s: latest.csv not rebuilt (%s)", product.id, exc)
        return None


def current(store: Store, folder: Path, service: str, *, ecsv: bool = False) -> Path | None:
    """FOLDER's latest.csv, rebuilt first when it is missing or was not built from exactly
    today's ready products (a worker killed between a product and its merge), or, with
    ECSV, when latest.ecsv is not there yet; None when there is no ready product."""
    from stdq.store import check_inside

    index = folder_index(store, folder, service)
    if not index:
        return None
    path = folder / LATEST_CSV

    def up_to_date(ids: list[int]) -> bool:
        return _state_matches(folder, ids) and (not ecsv or (folder / LATEST_ECSV).is_file())

    if up_to_date([i for i, _ in index]):  # read only: no lock needed
        return path
    check_inside(store.data_dir, folder)
    try:
        with _locked(folder):
            products = folder_products(store, folder, service)
            if up_to_date([p.id for p in products]):
                return path
            return _rebuild(store, folder, service, products, ecsv).path
    except Exception as exc:  # a read-only data directory: the file as it is
        if not path.is_file():
            raise
        log.warning("%s not rebuilt (%s)", path, exc)
        return path


def newest_mjd(store: Store, folder: Path, service: str) -> float | None:
    """The newest epoch stored for FOLDER's target and service (None: nothing yet)."""
    import pandas as pd

    path = current(store, folder, service)
    if path is None:
        return None
    try:
        mjd = pd.read_csv(path, usecols=["mjd"])["mjd"]
    except (OSError, ValueError):
        mjd = read_products(folder_products(store, folder, service))["mjd"]
    mjd = mjd.dropna()
    return float(mjd.max()) if len(mjd) else None


def new_rows(store: Store, folder: Path, service: str, product_ids: Iterable[int]) -> pd.DataFrame:
    """The rows of PRODUCT_IDS that no earlier product of FOLDER has (by source_row_id,
    else epoch and filter), once each."""
    ids = sorted(set(product_ids))
    stored = [i for i, _ in folder_index(store, folder, service)]
    mine = [p for p in (store.get_product(i) for i in stored if i in ids) if p is not None]
    table = combine(read_products(mine)) if mine else read_products([])
    if not ids or not len(table):
        return table
    earlier = [i for i in stored if i < ids[0]]
    if not earlier:
        return table
    keys = row_keys(table)
    merged = _merged_keys(folder, ids, earlier)
    if merged is not None:
        kind, listed = merged
        return table[keys.isin(listed) == (kind == "new")].reset_index(drop=True)
    # not the product merged last: read every earlier product
    before = [p for p in folder_products(store, folder, service) if p.id < ids[0]]
    return table[~keys.isin(set(row_keys(read_products(before))))].reset_index(drop=True)


def _merged_keys(folder: Path, ids: list[int], earlier: list[int]) -> tuple[str, set[str]] | None:
    """("known", keys of product IDS (one) that the products EARLIER have too) or ("new",
    those they have not), from the state of its merge (latest.csv before it); None when the
    state is of another product or other earlier products."""
    state = _read_state(folder)
    added = state.get("added") if state else None
    if len(ids) != 1 or not isinstance(added, dict) or added.get("product") != ids[0]:
        return None
    if state is None or state.get("products") != [*earlier, ids[0]]:
        return None
    for kind in ("known", "new"):
        listed = added.get(kind)
        if isinstance(listed, list):
            return kind, {str(k) for k in listed}
    return None


# -- removing products ------------------------------------------------------------------------


def needed_rows(store: Store, product: Product, others: Iterable[Product]) -> int:
    """Rows of PRODUCT that no product of OTHERS has: what removing it would take out of
    latest.csv (a product that is not ready has none)."""
    if product.state != "ready":
        return 0
    mine = set(row_keys(read_products([product])))
    if not mine:
        return 0
    rest = [p for p in others if p.id != product.id]
    return len(mine - set(row_keys(read_products(rest)))) if rest else len(mine)


def remove_product(store: Store, product: Product) -> None:
    """Delete PRODUCT's folder and catalog row, then rebuild its latest.csv."""
    import shutil

    from stdq.store import check_inside

    folder = Path(product.path)
    if folder.exists() or folder.is_symlink():
        check_inside(store.data_dir, folder)
        shutil.rmtree(folder)
    with store.db.transaction() as conn:
        conn.execute("DELETE FROM products WHERE id = ?", (product.id,))
    rebuild(store, folder.parent, product.service)
