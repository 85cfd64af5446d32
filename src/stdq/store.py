"""The data directory: products catalog (SQLite) and product folders, written atomically.

Layout (DESIGN.md "Data on disk")::

    $data_dir/products/<target>/<service>/<product_id>/
        raw/...          every answer of the service, byte for byte
        photometry.csv   the normalized table
        product.json     query, versions, cuts, counts, left-out rows, sha256 per raw file
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from stdq import db
from stdq.errors import BadInput

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(name: str) -> str:
    """NAME made safe for one path component ("SN 2023ixf" -> "SN_2023ixf")."""
    cleaned = _UNSAFE.sub("_", name.strip()).strip("._")
    return cleaned or "target"


def coordinate_name(ra: float, dec: float) -> str:
    """``J<ra>+<dec>`` in degrees with six decimals, for a target given by coordinates."""
    return f"J{ra:.6f}{dec:+.6f}"


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
class RawFile:
    """One answer of a service, kept byte for byte."""

    name: str
    path: Path
    sha256: str
    bytes: int
    url: str | None = None  # redacted
    content_type: str | None = None


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


class Store(db.Database):
    """The data directory and its products catalog."""

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
        now = time.time()
        folder_target = safe_name(target.get("name") or "") if target.get("name") else None
        if not folder_target:
            folder_target = coordinate_name(float(target["ra"]), float(target["dec"]))
        with db.transaction(self.conn) as conn:
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

    def product_row(self, product_id: int) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM products WHERE id = ?", (product_id,)).fetchone()
        return dict(row) if row else None

    def list_products(self, target: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM products"
        args: list[Any] = []
        if target:
            sql += " WHERE target = ? COLLATE NOCASE"
            args.append(target)
        sql += " ORDER BY id DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [dict(r) for r in self.conn.execute(sql, args)]

    def mark_product(self, product_id: int, **fields: Any) -> None:
        """Update catalog columns of a product (state, rows, detections, left_out, error...)."""
        if not fields:
            return
        cols = ", ".join(f"{k} = ?" for k in fields)
        with db.transaction(self.conn) as conn:
            conn.execute(f"UPDATE products SET {cols} WHERE id = ?", (*fields.values(), product_id))
