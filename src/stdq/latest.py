"""The current light curve of one target and service: ``products/<target>/<service>/latest.csv``.

Derived from every ready product of that folder: their photometry tables in product
order, one row per source row (``source_row_id``; for a row without one, its epoch and
filter), the newest product winning for a row fetched more than once, sorted by MJD.
Rebuilt (atomically, under a lock file of the folder) whenever one of the products is
processed (added or reprocessed) or removed. ``latest.ecsv`` is written beside it when it
was asked for once (``stdq update --format ecsv``) and kept up to date from then on.
"""

from __future__ import annotations

import contextlib
import logging
import os
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

    prefix = str(folder) + os.sep
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = store.conn.execute(
        "SELECT * FROM products WHERE service = ? AND state = 'ready' AND path LIKE ? ESCAPE '\\'"
        " ORDER BY id",
        (service, pattern),
    ).fetchall()
    found = [Product.from_row(r) for r in rows]
    return [p for p in found if Path(p.path).parent == folder]


def row_keys(table: pd.DataFrame) -> pd.Series:
    """One key per row: its source_row_id, or (no id) ``mjd|filter``."""
    ids = table["source_row_id"]
    fallback = table["mjd"].map(lambda m: f"{float(m):.6f}") + "|" + table["filter"].astype(str)
    return ids.where(ids.notna(), "~" + fallback).astype(str)


def read_products(products: Iterable[Product]) -> pd.DataFrame:
    """The photometry of PRODUCTS, concatenated in their order (unreadable ones skipped)."""
    import pandas as pd

    from stdq.photometry import empty_table, read_table

    frames = []
    for product in products:
        try:
            frames.append(read_table(product.photometry_path))
        except (OSError, ValueError) as exc:
            log.warning("product %s: its photometry.csv cannot be read (%s)", product.id, exc)
    if not frames:
        return empty_table()
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def combine(table: pd.DataFrame) -> pd.DataFrame:
    """One row per key (the last one wins), sorted by MJD."""
    if not len(table):
        return table
    keep = ~row_keys(table).duplicated(keep="last")
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
    """Write FOLDER's latest.csv (and latest.ecsv when ECSV or when it exists) from its
    ready products; remove them when none is left."""
    from stdq.photometry import write_table
    from stdq.store import atomic_write, check_inside

    check_inside(store.data_dir, folder)
    with _locked(folder):
        products = folder_products(store, folder, service)
        csv_path, ecsv_path = folder / LATEST_CSV, folder / LATEST_ECSV
        if not products:
            for path in (csv_path, ecsv_path):
                path.unlink(missing_ok=True)
            return Latest(None, 0, ())
        table = combine(read_products(products))
        from stdq import masks  # stdq mask: a `masked` column, kept across re-fetches

        table = masks.apply(table, masks.masked_ids(store.db, products[0].target, service))
        atomic_write(csv_path, lambda fh: write_table(table, fh, "csv"), data_dir=store.data_dir)
        if ecsv or ecsv_path.exists():
            meta: dict[str, Any] = {"service": service, "products": [p.id for p in products]}
            atomic_write(
                ecsv_path, lambda fh: write_table(table, fh, "ecsv", meta), data_dir=store.data_dir
            )
        return Latest(csv_path, int(len(table)), tuple(p.id for p in products))


def rebuild_for(store: Store, product: Product | Any) -> Latest | None:
    """Rebuild the latest.csv of PRODUCT's folder; a failure is a warning (the product
    itself is stored all the same) and gives None."""
    try:
        return rebuild(store, Path(product.path).parent, product.service)
    except Exception as exc:  # never fail the product over its derived light curve
        log.warning("product %s: latest.csv not rebuilt (%s)", product.id, exc)
        return None


def newest_mjd(store: Store, folder: Path, service: str) -> float | None:
    """The newest epoch stored for FOLDER's target and service (None: nothing yet)."""
    import pandas as pd

    path = folder / LATEST_CSV
    products = folder_products(store, folder, service)
    if not products:
        return None
    if not path.is_file():
        rebuild(store, folder, service)
    try:
        mjd = pd.read_csv(path, usecols=["mjd"])["mjd"]
    except (OSError, ValueError):
        mjd = read_products(products)["mjd"]
    mjd = mjd.dropna()
    return float(mjd.max()) if len(mjd) else None


def new_rows(store: Store, folder: Path, service: str, product_ids: Iterable[int]) -> pd.DataFrame:
    """The rows of PRODUCT_IDS that no earlier product of FOLDER has (by source_row_id,
    else epoch and filter), once each."""
    ids = sorted(set(product_ids))
    products = folder_products(store, folder, service)
    mine = [p for p in products if p.id in ids]
    table = combine(read_products(mine)) if mine else read_products([])
    if not ids or not len(table):
        return table
    earlier = [p for p in products if p.id < ids[0]]
    if not earlier:
        return table
    known = set(row_keys(read_products(earlier)))
    return table[~row_keys(table).isin(known)].reset_index(drop=True)


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
