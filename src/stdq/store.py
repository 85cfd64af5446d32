"""The data directory: products catalog (SQLite) and product folders, written atomically.

Layout (docs/data.md)::

    $data_dir/products/<target>/<service>/<product_id>/
        raw/...          every answer of the service, byte for byte
        photometry.csv   the normalized table
        product.json     query, versions, cuts, counts, left-out rows, sha256 per raw file
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from stdq import db
from stdq.errors import BadInput
from stdq.records import Product, RawFile, coordinate_name

__all__ = ["DataProduct", "Product", "RawFile", "Store", "atomic_write", "coordinate_name", "safe_name", "sha256_file"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(name: str) -> str:
    """NAME made safe for one path component ("SN 2023ixf" -> "SN_2023ixf")."""
    cleaned = _UNSAFE.sub("_", name.strip()).strip("._")
    return cleaned or "target"


def atomic_write(path: Path, data: bytes | str | Callable[[IO[bytes]], None]) -> None:
    """Write to a temporary name in the same folder, fsync, then rename to PATH."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class DataProduct:
    """A product: raw files of one query of one service for one target.

    Processors read ``raw_files``, ``params`` (the cleaned query) and
    ``target``; they record what they left out in ``left_out`` (reason -> count)
    and anything else worth keeping in ``notes`` (both go to product.json).
    """

    id: int
    service: str
    data_product_type: str
    target: dict[str, Any]
    params: dict[str, Any]
    path: Path
    job_id: int | None = None
    raw_files: list[RawFile] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)

    @property
    def raw_dir(self) -> Path:
        return self.path / "raw"

    @property
    def photometry_path(self) -> Path:
        return self.path / "photometry.csv"

    @property
    def json_path(self) -> Path:
        return self.path / "product.json"

    def raw(self, name: str) -> RawFile:
        for raw in self.raw_files:
            if raw.name == name:
                return raw
        raise KeyError(name)

    def add_raw(
        self, name: str, data: bytes, *, url: str | None = None, content_type: str | None = None
    ) -> RawFile:
        """Keep DATA as raw/NAME, byte for byte (atomic write); returns its record."""
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad raw file name {name!r}")
        path = self.raw_dir / name
        atomic_write(path, data)
        raw = RawFile(
            name=name,
            path=path,
            sha256=hashlib.sha256(data).hexdigest(),
            bytes=len(data),
            url=url,
            content_type=content_type,
        )
        self.raw_files = [r for r in self.raw_files if r.name != name] + [raw]
        return raw

    def leave_out(self, reason: str, count: int = 1) -> None:
        """Count COUNT rows left out for REASON."""
        if count:
            self.left_out[reason] = self.left_out.get(reason, 0) + int(count)


class Store:
    """The data directory and its products catalog.

    DATABASE is the session's shared :class:`~stdq.db.Database`, or a data directory (the
    store then opens, and closes, a Database of its own).
    """

    def __init__(self, database: db.Database | Path | str):
        if isinstance(database, db.Database):
            self.db, self._owned = database, False
        else:
            self.db, self._owned = db.Database(Path(database)), True

    @property
    def data_dir(self) -> Path:
        return self.db.data_dir

    @property
    def conn(self) -> sqlite3.Connection:
        """The shared connection (writes go through ``self.db.transaction()``)."""
        return self.db.conn

    def close(self) -> None:
        """Close the database if this store opened it."""
        if self._owned:
            self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def products_dir(self) -> Path:
        return self.data_dir / "products"

    # -- products -------------------------------------------------------------------
    def create_product(
        self,
        *,
        service: str,
        data_product_type: str,
        target: dict[str, Any],
        params: dict[str, Any],
        job_id: int | None = None,
    ) -> DataProduct:
        """A new, empty product: its catalog row (state 'pending') and its folder."""
        now = self.db.clock()
        folder_target = safe_name(target.get("name") or "") if target.get("name") else None
        if not folder_target:
            folder_target = coordinate_name(float(target["ra"]), float(target["dec"]))
        with self.db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO products (job_id, service, data_product_type, target, ra, dec, path,"
                " state, created_at) VALUES (?, ?, ?, ?, ?, ?, '', 'pending', ?)",
                (
                    job_id,
                    service,
                    data_product_type,
                    target.get("name") or folder_target,
                    float(target["ra"]),
                    float(target["dec"]),
                    now,
                ),
            )
            assert cur.lastrowid is not None  # an INSERT always sets it
            product_id = int(cur.lastrowid)
            path = self.products_dir / folder_target / safe_name(service) / str(product_id)
            conn.execute("UPDATE products SET path = ? WHERE id = ?", (str(path), product_id))
        path.mkdir(parents=True, exist_ok=True)
        return DataProduct(
            id=product_id,
            service=service,
            data_product_type=data_product_type,
            target=dict(target),
            params=dict(params),
            path=path,
            job_id=job_id,
            created_at=now,
        )

    def load_product(self, product_id: int) -> DataProduct:
        """A stored product with its raw files, from its catalog row and product.json."""
        row = self.conn.execute("SELECT * FROM products WHERE id = ?", (product_id,)).fetchone()
        if row is None:
            raise BadInput(f"no product with id {product_id}", hint="list them: stdq products list")
        path = Path(row["path"])
        meta: dict[str, Any] = {}
        if (path / "product.json").is_file():
            meta = json.loads((path / "product.json").read_text(encoding="utf-8"))
        product = DataProduct(
            id=row["id"],
            service=row["service"],
            data_product_type=row["data_product_type"],
            target=meta.get("target") or {"name": row["target"], "ra": row["ra"], "dec": row["dec"]},
            params=meta.get("query", {}).get("params", {}),
            path=path,
            job_id=row["job_id"],
            created_at=row["created_at"],
        )
        recorded = {r["name"]: r for r in meta.get("raw_files", [])}
        raw_dir = path / "raw"
        names = sorted(p.name for p in raw_dir.iterdir() if not p.name.startswith(".")) if raw_dir.is_dir() else []
        for name in names:
            info = recorded.get(name, {})
            raw_path = raw_dir / name
            product.raw_files.append(
                RawFile(
                    name=name,
                    path=raw_path,
                    sha256=info.get("sha256") or sha256_file(raw_path),
                    bytes=raw_path.stat().st_size,
                    url=info.get("url"),
                    content_type=info.get("content_type"),
                )
            )
        product.notes = dict(meta.get("service_notes", {}))
        return product

    def list_products(self, target: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """The catalog rows as dicts, newest first (:meth:`products` gives records)."""
        return [p.row() for p in self.products(target, limit=limit)]

    def mark_product(self, product_id: int, **fields: Any) -> None:
        """Update catalog columns of a product (state, rows, detections, left_out, error...)."""
        if not fields:
            return
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.db.transaction() as conn:
            conn.execute(f"UPDATE products SET {cols} WHERE id = ?", (*fields.values(), product_id))

    # -- the catalog as records -----------------------------------------------------------
    def get_product(self, product_id: int) -> Product | None:
        """The catalog row of PRODUCT_ID as a Product, or None."""
        row = self.conn.execute("SELECT * FROM products WHERE id = ?", (product_id,)).fetchone()
        return Product.from_row(row) if row else None

    def require_product(self, product_id: int) -> Product:
        product = self.get_product(product_id)
        if product is None:
            raise BadInput(f"no product with id {product_id}", hint="list them: stdq products list")
        return product

    def products(
        self, target: str | None = None, *, service: str | None = None, limit: int | None = None
    ) -> list[Product]:
        """Catalog rows, newest first; only TARGET's (case ignored) / SERVICE's when given."""
        sql = "SELECT * FROM products"
        where: list[str] = []
        args: list[Any] = []
        if target:
            where.append("target = ? COLLATE NOCASE")
            args.append(target)
        if service:
            where.append("service = ?")
            args.append(service)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [Product.from_row(r) for r in self.conn.execute(sql, args)]

    def inspect_product(self, product_id: int) -> Product:
        """The product with product.json and every raw file checked against its recorded sha256.

        A raw file's status: "ok", "changed" (sha256 differs), "missing" (recorded,
        not on disk) or "not recorded" (on disk, not in product.json); every status
        but "ok" is also a line of ``problems``.
        """
        product = self.require_product(product_id)
        folder = product.path
        meta, meta_problem = _read_meta(folder / "product.json")
        recorded = {r.get("name"): r for r in meta.get("raw_files") or [] if isinstance(r, dict)}
        raw_dir = folder / "raw"
        on_disk = (
            sorted(p.name for p in raw_dir.iterdir() if not p.name.startswith("."))
            if raw_dir.is_dir() else []
        )
        raw_files: list[RawFile] = []
        problems: list[str] = []
        for name in sorted(set(recorded) | set(on_disk), key=str):
            info = recorded.get(name, {})
            path = raw_dir / str(name)
            actual = sha256_file(path) if path.is_file() else None
            if actual is None:
                status = "missing"
            elif not info.get("sha256"):
                status = "not recorded"
            else:
                status = "ok" if actual == info["sha256"] else "changed"
            if status != "ok":
                problems.append(f"raw/{name}: {status}")
            raw_files.append(
                RawFile(
                    name=str(name),
                    path=path,
                    sha256=info.get("sha256") or actual or "",
                    bytes=path.stat().st_size if path.is_file() else int(info.get("bytes") or 0),
                    url=info.get("url"),
                    content_type=info.get("content_type"),
                    status=status,
                    sha256_on_disk=actual,
                )
            )
        if meta_problem:
            problems.append(meta_problem)
        return dataclasses.replace(
            product, raw_files=tuple(raw_files), problems=tuple(problems), meta=meta,
            meta_problem=meta_problem,
        )


def _read_meta(path: Path) -> tuple[dict[str, Any], str | None]:
    """product.json as a dict, and why it could not be read (None when fine or absent)."""
    if not path.is_file():
        return {}, None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {}, f"product.json cannot be read ({type(exc).__name__})"
    return (meta if isinstance(meta, dict) else {}), None
