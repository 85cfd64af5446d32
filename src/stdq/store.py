"""The data directory: products catalog (SQLite) and product folders, written atomically.

Layout (docs/data.md)::

    $data_dir/products/<target>/<service>/<product_id>/
        raw/...          every answer of the service, byte for byte (echoed secrets masked)
        photometry.csv   the normalized table
        product.json     query, versions, cuts, counts, left-out rows, sha256 per raw file

Local faults (docs/data.md): a full disk is :class:`~stdq.errors.DiskFull` (exit 75,
naming the data directory) and the product being written is marked failed; temporary
files of a killed write are removed when a writable Store opens; a symbolic link inside
the data directory that leads outside it is refused (ConfigError, exit 3).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import sqlite3
import stat
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, quote_plus

from stdq import db
from stdq.errors import BadInput, ConfigError, DiskFull, StdqError, is_disk_full
from stdq.records import Product, RawFile, coordinate_name

__all__ = [
    "DataProduct", "Product", "RawFile", "Store", "atomic_write", "coordinate_name",
    "mask_secrets", "remove_stale_temp_files", "safe_name", "sha256_file",
]

MAX_NAME_BYTES = 200  # a longer safe form is cut (and given its hash)
CUT_NAME_BYTES = 180
HASH_SEPARATOR = "~"  # never in a reversible safe form, so a hashed name never meets one
_KEPT_PUNCTUATION = frozenset(".+-")
# temporary names of atomic_write and of the database's creation: .<name>.<pid>.<n>.tmp[-wal|-shm]
TEMP_NAME = re.compile(r"^\..+\.(?P<pid>\d+)\.\d+\.tmp(?:-wal|-shm|-journal)?$")
TEMP_MAX_AGE = 86400.0  # a temporary file this old goes even when its pid is alive (pid reuse)


def _name_hash(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def safe_name(name: str) -> str:
    """NAME made safe for one path component, different for different names.

    Letters of any script, digits and ``. + -`` are kept and a space becomes ``_``
    ("SN 2023ixf" -> "SN_2023ixf"). When that cannot be undone (another character
    replaced by ``_``, leading or trailing dots or spaces dropped, an empty result) or
    is longer than 200 bytes, ``~`` and 8 hex digits of NAME's sha256 are appended
    (after a cut to 180 bytes).
    """
    out = []
    for char in name:
        keep = char in _KEPT_PUNCTUATION or (char.isascii() and char.isalnum()) or (
            not char.isascii() and unicodedata.category(char)[0] in "LNM"
        )
        out.append(char if keep else "_")
    cleaned = unicodedata.normalize("NFC", "".join(out).strip("._")) or "target"
    # reversible only when every "_" was a space and nothing was dropped or changed
    lossy = cleaned.replace("_", " ") != name
    if len(cleaned.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        cut = cleaned.encode("utf-8", "surrogatepass")[:CUT_NAME_BYTES].decode("utf-8", "ignore")
        cleaned, lossy = cut.rstrip("._") or "target", True
    return f"{cleaned}{HASH_SEPARATOR}{_name_hash(name)}" if lossy else cleaned


def _data_dir_of(path: Path) -> Path:
    """The data directory PATH lies in (the folder holding ``products/``), else its folder."""
    for parent in path.parents:
        if (parent / db.DB_NAME).exists():
            return parent
    for parent in path.parents:
        if parent.name == "products":
            return parent.parent
    return path.parent


def write_error(exc: OSError, path: Path, data_dir: Path | None = None) -> StdqError:
    """The StdqError for an OSError met while writing PATH: DiskFull (exit 75) naming the
    data directory, ConfigError (3) for a folder that cannot be written, else exit 1."""
    folder = data_dir or _data_dir_of(path)
    if is_disk_full(exc):
        return DiskFull(folder, f"writing {path.name}")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return db.read_only_error(folder, f"write {path.name}")
    return StdqError(f"cannot write {path} ({exc.strerror or exc}); check the data directory {folder}")


def atomic_write(
    path: Path, data: bytes | str | Callable[[IO[bytes]], None], *, data_dir: Path | None = None,
    durable: bool = True,
) -> None:
    """Write to a temporary name in the same folder, fsync, then rename to PATH.

    DURABLE false: no fsync (still atomic for any process crash), for a derived file
    whose loss in a power cut its writer detects and makes again (latest.csv).

    The temporary file is created new (never through an existing name or link). An
    OSError becomes a StdqError (:func:`write_error`): DiskFull when the disk is full.
    """
    path = Path(path)
    if _is_special_file(path):
        # a device or a pipe (`-o /dev/null`, `-o /dev/stdout`): write into it, never
        # replace it by a regular file (as root, a rename onto /dev/null would)
        try:
            with open(path, "wb") as fh:
                if callable(data):
                    data(fh)
                else:
                    fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        except OSError as exc:
            raise write_error(exc, path, data_dir) from exc
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _open_temp(tmp) as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(exc, path, data_dir) from exc
        raise


def _is_special_file(path: Path) -> bool:
    """PATH exists and is neither a regular file nor a folder (a device, a pipe, a socket)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _open_temp(tmp: Path) -> IO[bytes]:
    """TMP opened for writing, created new: never through an existing name or link (tests
    replace this to simulate a full disk)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(tmp, flags, 0o644), "wb")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temp_files(
    data_dir: Path, folders: Iterable[Path | str] | None = None, *, now: float | None = None
) -> list[Path]:
    """Remove the temporary files a killed write left in DATA_DIR: those of a process that
    is gone, or older than a day. Returns them.

    Looked for in DATA_DIR's top folder and in FOLDERS (product folders, with their
    ``raw/``), or, when FOLDERS is None, everywhere under ``products/``.
    """
    now = time.time() if now is None else now
    removed: list[Path] = []

    def consider(folder: str, name: str) -> None:
        match = TEMP_NAME.match(name)
        if not match:
            return
        path = Path(folder) / name
        try:
            info = path.lstat()
            if _pid_alive(int(match["pid"])) and now - info.st_mtime < TEMP_MAX_AGE:
                return
            path.unlink()
            removed.append(path)
        except OSError:
            return

    try:
        top = os.listdir(data_dir)
    except OSError:
        return removed
    for name in top:
        consider(str(data_dir), name)
    if folders is None:
        for folder, dirs, files in os.walk(Path(data_dir) / "products"):  # links not followed
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.startswith("."):
                    consider(folder, name)
        return removed
    root = os.path.realpath(data_dir)
    for product_folder in folders:
        for place in (Path(product_folder), Path(product_folder) / "raw"):
            if place.is_symlink() or not os.path.realpath(place).startswith(root + os.sep):
                continue
            try:
                names = os.listdir(place)
            except OSError:
                continue
            for name in names:
                if name.startswith("."):
                    consider(str(place), name)
    return removed


_CLEANED: set[str] = set()
_CLEANED_LOCK = threading.Lock()


def mask_secrets(data: bytes, secrets: Iterable[str]) -> bytes:
    """DATA with each secret (3 characters or more) replaced by ``***``: as written, and
    its percent-encoded and JSON-escaped forms."""
    forms = [form.encode("utf-8", "surrogatepass") for form in _secret_forms(secrets)]
    # again until none is left: a mask next to a secret's own "*" may form a new one
    # (each round removes characters other than "*", so this ends)
    while any(form in data for form in forms):
        for form in forms:
            data = data.replace(form, b"***")
    return data


def mask_text(text: str, secrets: Iterable[str]) -> str:
    """:func:`mask_secrets` for text."""
    forms = _secret_forms(secrets)
    while any(form in text for form in forms):
        for form in forms:
            text = text.replace(form, "***")
    return text


def _secret_forms(secrets: Iterable[str]) -> list[str]:
    forms: set[str] = set()
    for secret in secrets:
        if not secret or len(secret) < 3:
            continue
        forms.update({secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1],
                      json.dumps(secret, ensure_ascii=False)[1:-1]})
    return sorted((f for f in forms if len(f) >= 3 and f.strip("*")), key=len, reverse=True)


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
    # the service's secrets: masked in every raw file and in product.json (set by the
    # query context; never stored)
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)
    data_dir: Path | None = field(default=None, repr=False, compare=False)
    store: Store | None = field(default=None, repr=False, compare=False)

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
        self,
        name: str,
        data: bytes,
        *,
        url: str | None = None,
        content_type: str | None = None,
        secrets: Iterable[str] = (),
    ) -> RawFile:
        """Keep DATA as raw/NAME, byte for byte (atomic write); returns its record.

        A secret of the service (``self.secrets``, and SECRETS) inside DATA is replaced
        by ``***`` first; the record then says ``redacted`` and has the sha256 of what was
        stored. A full disk is DiskFull (exit 75) and the product is marked failed.
        """
        if "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
            raise ValueError(f"bad raw file name {name!r}")
        every = (*self.secrets, *secrets)
        stored = mask_secrets(data, every)
        path = self.raw_dir / name
        try:
            if self.data_dir is not None:
                check_inside(self.data_dir, self.raw_dir, create=True)
            atomic_write(path, stored, data_dir=self.data_dir)
        except StdqError as exc:
            self.fail(exc.message)
            raise
        raw = RawFile(
            name=name,
            path=path,
            sha256=hashlib.sha256(stored).hexdigest(),
            bytes=len(stored),
            url=mask_text(url, every) if url else url,
            content_type=content_type,
            redacted=stored != data,
        )
        self.raw_files = [r for r in self.raw_files if r.name != name] + [raw]
        return raw

    def redact_text(self, text: str) -> str:
        """TEXT with the service's secrets masked (product.json goes through this)."""
        return mask_text(text, self.secrets)

    def fail(self, reason: str) -> None:
        """Mark the product failed with REASON (best effort: the disk may be full)."""
        if self.store is None:
            return
        # best effort: the error that brought us here is what the user sees
        with contextlib.suppress(Exception):
            self.store.mark_product(self.id, state="failed", error=reason)

    def leave_out(self, reason: str, count: int = 1) -> None:
        """Count COUNT rows left out for REASON."""
        if count:
            self.left_out[reason] = self.left_out.get(reason, 0) + int(count)


def check_inside(data_dir: Path, path: Path, *, create: bool = False) -> Path:
    """PATH, refused (ConfigError, exit 3, naming the link) when a symbolic link on its way
    from DATA_DIR leads outside DATA_DIR. With CREATE the missing folders are made first."""
    root = Path(os.path.realpath(data_dir))
    path = Path(path)
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            pass  # a file or a dangling link there: the check below names it
        except OSError as exc:
            raise write_error(exc, path / ".", data_dir) from exc
    real = Path(os.path.realpath(path))
    if real == root or real.is_relative_to(root):
        return path
    # name the first link on the way that leads out
    try:
        parts = path.relative_to(data_dir).parts
    except ValueError:
        parts = path.parts
    current = Path(data_dir)
    link = path
    for part in parts:
        current = current / part
        if current.is_symlink():
            link = current
            break
    raise ConfigError(
        f"{link} is a symbolic link that leads outside the data directory {data_dir}"
        f" (to {os.path.realpath(link)}); stdq does not write or read through it: remove it"
    )


class Store:
    """The data directory and its products catalog.

    DATABASE is the session's shared :class:`~stdq.db.Database`, or a data directory (the
    store then opens, and closes, a Database of its own). A writable store removes, once
    per process, the temporary files a killed write left in the top folder and in the
    folders of the products being written (:func:`remove_stale_temp_files`).
    """

    def __init__(self, database: db.Database | Path | str):
        if isinstance(database, db.Database):
            self.db, self._owned = database, False
        else:
            self.db, self._owned = db.Database(Path(database)), True
        self._clean_once()

    def _clean_once(self) -> None:
        key = os.path.realpath(self.data_dir)
        with _CLEANED_LOCK:
            if key in _CLEANED:
                return
            _CLEANED.add(key)
        if not (self.data_dir.is_dir() and self.db.writable and self.db.exists):
            return
        # a killed write leaves its temporary file in a product that was being written: one
        # not complete, or processed in the last day (a reprocess); not a walk of every folder
        since = self.db.clock() - TEMP_MAX_AGE
        try:
            folders = [
                row[0] for row in self.conn.execute(
                    "SELECT path FROM products WHERE path != '' AND (state != 'ready'"
                    " OR processed_at IS NULL OR processed_at > ?)", (since,)
                )
            ]
        except (StdqError, sqlite3.Error):
            return  # best effort: a database that cannot be read says so at its first use
        remove_stale_temp_files(self.data_dir, folders)

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
        for folder in (self.products_dir, self.products_dir / folder_target,
                       self.products_dir / folder_target / safe_name(service)):
            if folder.is_symlink() or folder.exists():
                check_inside(self.data_dir, folder)
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
        product = DataProduct(
            id=product_id,
            service=service,
            data_product_type=data_product_type,
            target=dict(target),
            params=dict(params),
            path=path,
            job_id=job_id,
            created_at=now,
            data_dir=self.data_dir,
            store=self,
        )
        try:
            check_inside(self.data_dir, path, create=True)
        except StdqError as exc:
            product.fail(exc.message)
            raise
        return product

    def load_product(self, product_id: int) -> DataProduct:
        """A stored product with its raw files, from its catalog row and product.json."""
        row = self.conn.execute("SELECT * FROM products WHERE id = ?", (product_id,)).fetchone()
        if row is None:
            raise BadInput(f"no product with id {product_id}", hint="list them: stdq products list")
        path = Path(row["path"])
        check_inside(self.data_dir, path)
        meta, _ = _read_meta(path / "product.json")  # unreadable: rebuilt from the catalog row
        product = DataProduct(
            id=row["id"],
            service=row["service"],
            data_product_type=row["data_product_type"],
            target=_mapping(meta.get("target"))
            or {"name": row["target"], "ra": row["ra"], "dec": row["dec"]},
            params=_mapping(_mapping(meta.get("query")).get("params")),
            path=path,
            job_id=row["job_id"],
            created_at=row["created_at"],
            data_dir=self.data_dir,
            store=self,
        )
        recorded = {
            r["name"]: r for r in _entries(meta.get("raw_files")) if isinstance(r, dict) and "name" in r
        }
        raw_dir = path / "raw"
        if raw_dir.is_symlink() or raw_dir.exists():
            check_inside(self.data_dir, raw_dir)
        names = sorted(p.name for p in raw_dir.iterdir() if not p.name.startswith(".")) if raw_dir.is_dir() else []
        for name in names:
            info = recorded.get(name, {})
            raw_path = raw_dir / name
            check_inside(self.data_dir, raw_path)
            product.raw_files.append(
                RawFile(
                    name=name,
                    path=raw_path,
                    sha256=info.get("sha256") or sha256_file(raw_path),
                    bytes=raw_path.stat().st_size,
                    url=info.get("url"),
                    content_type=info.get("content_type"),
                    redacted=bool(info.get("redacted", False)),
                )
            )
        product.notes = _mapping(meta.get("service_notes"))
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
        check_inside(self.data_dir, folder)
        meta, meta_problem = _read_meta(folder / "product.json")
        recorded = {r.get("name"): r for r in _entries(meta.get("raw_files")) if isinstance(r, dict)}
        raw_dir = folder / "raw"
        if raw_dir.is_symlink() or raw_dir.exists():
            check_inside(self.data_dir, raw_dir)
        on_disk = (
            sorted(p.name for p in raw_dir.iterdir() if not p.name.startswith("."))
            if raw_dir.is_dir() else []
        )
        raw_files: list[RawFile] = []
        problems: list[str] = []
        for name in sorted(set(recorded) | set(on_disk), key=str):
            info = recorded.get(name, {})
            path = raw_dir / str(name)
            if path.is_symlink():
                check_inside(self.data_dir, path)
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
                    redacted=bool(info.get("redacted", False)),
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


def _entries(value: Any) -> list[Any]:
    """VALUE when it is a list, else [] (product.json's raw_files, edited by hand)."""
    return list(value) if isinstance(value, list) else []


def _mapping(value: Any) -> dict[str, Any]:
    """VALUE when it is a dict (a product.json edited by hand may hold anything), else {}."""
    return dict(value) if isinstance(value, dict) else {}


def _read_meta(path: Path) -> tuple[dict[str, Any], str | None]:
    """product.json as a dict, and why it could not be read (None when fine or absent)."""
    if not path.is_file():
        return {}, None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {}, f"product.json cannot be read ({type(exc).__name__})"
    return (meta if isinstance(meta, dict) else {}), None
