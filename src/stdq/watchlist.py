"""Watchlists: target files read (CSV, ECSV, plain names), imported into the local targets
table and onto named lists (table ``target_lists``).

A file is read in one of three forms, told apart by its first line:

- ECSV (``# %ECSV``): the commented YAML header, then a header line of column names;
- CSV with a header naming ``name`` and/or ``ra``/``dec`` (case ignored; also the columns
  of a TNS search export: ``"ID","Name","RA","DEC",...`` with sexagesimal positions);
- plain text: one name per line (blank lines and ``#`` comments skipped).

Names without coordinates are resolved (``Stdq.resolve``: local table, cache, resolvers).
Stdlib only at import.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stdq.errors import BadInput, ResolveError, TemporaryFailure
from stdq.records import coordinate_name

if TYPE_CHECKING:
    from stdq.core import Stdq
    from stdq.store import Store

NAME_COLUMNS = ("name", "target", "object", "objname", "obj_name", "object_name", "target_name")
RA_COLUMNS = ("ra", "ra_deg", "radeg", "raj2000", "ra (deg)", "ra_hms")
DEC_COLUMNS = ("dec", "dec_deg", "decdeg", "dej2000", "decj2000", "dec (deg)", "declination", "dec_dms")
_LIST_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,100}")


@dataclass(frozen=True)
class Entry:
    """One line of a target file: its line number, name and/or position as written."""

    line: int
    name: str | None
    ra: str | None = None
    dec: str | None = None


@dataclass(frozen=True)
class BadLine:
    line: int
    text: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "text": self.text, "reason": self.reason}


@dataclass
class ImportReport:
    """What ``targets import`` did (or, with bad lines and no --skip-bad, would not do)."""

    format: str
    list_name: str | None
    imported: list[dict[str, Any]] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)
    done: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "list": self.list_name,
            "imported": self.imported if self.done else [],
            "bad": [b.to_json() for b in self.bad],
            "done": self.done,
        }


def check_list_name(name: str) -> str:
    """NAME of a list, stripped; BadInput when empty, too long or with control characters."""
    clean = (name or "").strip()
    if not _LIST_NAME.fullmatch(clean):
        raise BadInput(f"--list {name!r}: a list name is 1 to 100 printable characters")
    return clean


# -- reading ------------------------------------------------------------------------------


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for wanted in names:
        if wanted in lowered:
            return lowered.index(wanted)
    return None


def _table(
    rows: list[tuple[int, list[str]]], header: list[str], fmt: str
) -> tuple[list[Entry], list[BadLine], str]:
    iname, ira, idec = _column(header, NAME_COLUMNS), _column(header, RA_COLUMNS), _column(header, DEC_COLUMNS)
    entries: list[Entry] = []
    bad: list[BadLine] = []
    for number, cells in rows:
        text = ",".join(cells)
        if len(cells) != len(header):
            bad.append(BadLine(number, text, f"{len(cells)} fields where the header has {len(header)}"))
            continue

        def cell(index: int | None, cells: list[str] = cells) -> str | None:
            value = cells[index].strip() if index is not None else ""
            return value or None

        name, ra, dec = cell(iname), cell(ira), cell(idec)
        if name is None and ra is None and dec is None:
            bad.append(BadLine(number, text, "no name and no coordinates"))
            continue
        entries.append(Entry(number, name, ra, dec))
    return entries, bad, fmt


def _is_header(cells: list[str]) -> bool:
    return (
        _column(cells, NAME_COLUMNS) is not None
        or (_column(cells, RA_COLUMNS) is not None and _column(cells, DEC_COLUMNS) is not None)
    )


def parse(text: str) -> tuple[list[Entry], list[BadLine], str]:
    """The entries and bad lines of a target file, and its format ("csv", "ecsv", "text")."""
    lines = text.lstrip("\ufeff").splitlines()
    numbered = [(i + 1, line) for i, line in enumerate(lines)]
    first = next((line for _, line in numbered if line.strip()), "")
    if first.startswith("# %ECSV"):
        delimiter = " "
        body: list[tuple[int, str]] = []
        for number, line in numbered:
            if line.startswith("#"):
                found = re.match(r"#\s*delimiter:\s*['\"]?(.)['\"]?\s*$", line)
                if found:
                    delimiter = found.group(1)
            elif line.strip():
                body.append((number, line))
        if not body:
            raise BadInput("the ECSV file has no header line of column names")
        parsed = [(n, next(csv.reader([line], delimiter=delimiter, skipinitialspace=True)))
                  for n, line in body]
        header = parsed[0][1]
        if not _is_header(header):
            raise BadInput(
                f"the ECSV columns {', '.join(header)} have no name, and no ra and dec",
                hint="name a column 'name', or columns 'ra' and 'dec'",
            )
        return _table(parsed[1:], header, "ecsv")
    content = [(n, line) for n, line in numbered if line.strip() and not line.lstrip().startswith("#")]
    if content:
        head = content[0][1]
        sep = "," if "," in head else "\t" if "\t" in head else None
        if sep:
            header = next(csv.reader([head], delimiter=sep))
            if _is_header(header):
                rows = [(n, next(csv.reader([line], delimiter=sep))) for n, line in content[1:]]
                return _table(rows, header, "csv")
            if any(h.strip().lower() in RA_COLUMNS + DEC_COLUMNS for h in header):
                raise BadInput(
                    f"line {content[0][0]}: the header {head.strip()!r} has ra or dec but not both",
                    hint="a CSV header names 'name' and/or both 'ra' and 'dec'",
                )
        elif head.strip().lower() in NAME_COLUMNS:
            content = content[1:]  # a one-column file with the header "name"
    return [Entry(n, line.strip()) for n, line in content], [], "text"


# -- importing ----------------------------------------------------------------------------


def import_text(
    sdq: Stdq, text: str, *, list_name: str | None = None, skip_bad: bool = False,
    warn: Any = None,
) -> ImportReport:
    """Read TEXT, resolve what needs it, then add every target (and put it on LIST_NAME) in
    one transaction. With bad lines and not SKIP_BAD nothing is added (``done`` False).

    A name no resolver knows, or a position that does not parse, is a bad line; every
    remote resolver down is TemporaryFailure (exit 75) and nothing is added.
    """
    from stdq.targets import parse_dec, parse_ra

    if list_name is not None:
        list_name = check_list_name(list_name)
    entries, bad, fmt = parse(text)
    report = ImportReport(format=fmt, list_name=list_name, bad=list(bad))
    chosen: dict[str, dict[str, Any]] = {}
    for entry in entries:
        try:
            if entry.ra is not None or entry.dec is not None:
                if entry.ra is None or entry.dec is None:
                    raise BadInput("ra and dec: give both, or neither")
                ra, dec = parse_ra(entry.ra, "ra"), parse_dec(entry.dec, "dec")
                name = entry.name or coordinate_name(ra, dec)
                row: dict[str, Any] = {
                    "name": name, "ra": ra, "dec": dec, "source": "import", "resolved": False,
                }
            else:
                assert entry.name is not None
                found = sdq.resolve(entry.name, warn=warn)
                row = {
                    "name": entry.name, "ra": found.ra, "dec": found.dec,
                    "source": found.resolver, "resolved": found.resolver != "local",
                }
        except TemporaryFailure:
            raise
        except (BadInput, ResolveError) as exc:
            report.bad.append(BadLine(entry.line, _shown(entry), exc.message))
            continue
        row["line"] = entry.line
        chosen[row["name"].casefold()] = row
    report.bad.sort(key=lambda b: b.line)
    report.imported = sorted(chosen.values(), key=lambda r: r["line"])
    if report.bad and not skip_bad:
        return report
    sdq.db.require_writable("import targets")
    now = sdq.db.clock()
    with sdq.db.transaction() as conn:
        for row in report.imported:
            if row["source"] != "local":  # a local target keeps its pinned position
                conn.execute(
                    "INSERT OR REPLACE INTO targets (name, ra, dec, source, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (row["name"].strip(), row["ra"], row["dec"], row["source"], now),
                )
            if list_name:
                conn.execute(
                    "INSERT OR IGNORE INTO target_lists (list, name, added_at) VALUES (?, ?, ?)",
                    (list_name, row["name"].strip(), now),
                )
    report.done = True
    return report


def _shown(entry: Entry) -> str:
    return ",".join(v for v in (entry.name, entry.ra, entry.dec) if v is not None)


# -- lists ----------------------------------------------------------------------------------


def lists_of(store: Store) -> dict[str, list[str]]:
    """Local target name -> the lists it is on."""
    found: dict[str, list[str]] = {}
    for row in store.conn.execute("SELECT list, name FROM target_lists ORDER BY list"):
        found.setdefault(row["name"].casefold(), []).append(row["list"])
    return found


def list_names(store: Store) -> list[str]:
    return [r[0] for r in store.conn.execute("SELECT DISTINCT list FROM target_lists ORDER BY list")]


def members(store: Store, list_name: str) -> list[dict[str, Any]]:
    """The targets rows of LIST_NAME, by name; BadInput (exit 2) for an unknown list."""
    rows = [
        dict(r)
        for r in store.conn.execute(
            "SELECT t.* FROM target_lists l JOIN targets t ON t.name = l.name"
            " WHERE l.list = ? ORDER BY t.name",
            (list_name.strip(),),
        )
    ]
    if not rows and not store.conn.execute(
        "SELECT 1 FROM target_lists WHERE list = ? LIMIT 1", (list_name.strip(),)
    ).fetchone():
        known = ", ".join(list_names(store)) or "none yet"
        raise BadInput(
            f"no target list called {list_name.strip()!r} (lists: {known})",
            hint="make one: stdq targets import FILE --list NAME",
        )
    return rows


def remove_from_list(store: Store, list_name: str, name: str) -> None:
    """Take NAME off LIST_NAME (the local target stays); BadInput when it is not on it."""
    with store.db.transaction() as conn:
        cur = conn.execute(
            "DELETE FROM target_lists WHERE list = ? AND name = ?", (list_name.strip(), name.strip())
        )
    if cur.rowcount == 0:
        raise BadInput(
            f"{name.strip()!r} is not on the list {list_name.strip()!r}",
            hint=f"see it: stdq targets list --list {list_name.strip()!r}",
        )


def forget_everywhere(store: Store, name: str) -> None:
    """Remove NAME from every list (its local target is being removed)."""
    with store.db.transaction() as conn:
        conn.execute("DELETE FROM target_lists WHERE name = ?", (name.strip(),))
