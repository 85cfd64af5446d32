"""Rows of a light curve set aside by hand (``stdq mask``), kept across re-fetches.

A mask is stored in the ``masks`` table by (target label, service, source_row_id), not
by product: the same row fetched again later (same source_row_id) is masked too. A
row without a source_row_id is named by latest.csv's fallback key ``~<mjd>|<filter>``
(:func:`stdq.latest.row_keys`). Stdlib only at import.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stdq.errors import BadInput

if TYPE_CHECKING:
    import pandas as pd

    from stdq.db import Database

MASKED_COLUMN = "masked"


@dataclass(frozen=True)
class Mask:
    """One masked row: target label, service, source_row_id, reason, created_at (unix s)."""

    target: str
    service: str
    source_row_id: str
    reason: str | None
    created_at: float

    def to_json(self) -> dict[str, Any]:
        when = _dt.datetime.fromtimestamp(self.created_at, _dt.UTC)
        return {
            "target": self.target,
            "service": self.service,
            "source_row_id": self.source_row_id,
            "reason": self.reason,
            "created_at": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "created_at_unix": self.created_at,
        }


def masks(db: Database, target: str, service: str | None = None) -> list[Mask]:
    """TARGET's masks (case ignored), of SERVICE only when given, by service and id."""
    sql = "SELECT target, service, source_row_id, reason, created_at FROM masks WHERE target = ?"
    args: list[Any] = [target]
    if service is not None:
        sql += " AND service = ?"
        args.append(service)
    rows = db.conn.execute(sql + " ORDER BY service, source_row_id", args).fetchall()
    return [Mask(str(r[0]), str(r[1]), str(r[2]), r[3], float(r[4])) for r in rows]


def masked_ids(db: Database, target: str, service: str) -> set[str]:
    """The masked source_row_ids of TARGET and SERVICE."""
    rows = db.conn.execute(
        "SELECT source_row_id FROM masks WHERE target = ? AND service = ?", (target, service)
    ).fetchall()
    return {str(r[0]) for r in rows}


def add(db: Database, target: str, pairs: Sequence[tuple[str, str]], reason: str | None) -> list[Mask]:
    """Mask each (service, source_row_id) of PAIRS for TARGET (a repeated mask gets the new
    reason and time)."""
    db.require_writable("mask rows")
    now = db.clock()
    with db.transaction() as conn:
        for service, row_id in pairs:
            conn.execute(
                "INSERT OR REPLACE INTO masks (target, service, source_row_id, reason, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (target, service, row_id, reason, now),
            )
    return [Mask(target, s, r, reason, now) for s, r in pairs]


def remove(db: Database, target: str, pairs: Sequence[tuple[str, str]]) -> list[Mask]:
    """Unmask each (service, source_row_id) of PAIRS; BadInput (exit 2) naming the ones
    that were not masked (nothing is changed then)."""
    db.require_writable("unmask rows")
    known = {(m.service, m.source_row_id): m for m in masks(db, target)}
    missing = [f"{s}:{r}" for s, r in pairs if (s, r) not in known]
    if missing:
        raise BadInput(
            f"not masked for {target}: {', '.join(missing)}", hint=f"see: stdq mask {target!r} --list"
        )
    with db.transaction() as conn:
        for service, row_id in pairs:
            conn.execute(
                "DELETE FROM masks WHERE target = ? AND service = ? AND source_row_id = ?",
                (target, service, row_id),
            )
    return [known[p] for p in pairs]


def split_id(text: str, services: Iterable[str]) -> tuple[str | None, str]:
    """``SERVICE:ID`` -> (SERVICE, ID) when the part before the first colon is one of
    SERVICES; otherwise (None, TEXT) (ZTF ids ``oid:expid`` hold a colon themselves)."""
    head, sep, rest = text.partition(":")
    if sep and head in set(services) and rest:
        return head, rest
    return None, text


def resolve_ids(
    ids: Sequence[str], target: str, rows_by_service: dict[str, set[str]], *, service: str | None = None
) -> list[tuple[str, str]]:
    """(service, source_row_id) of each of IDS, found in ROWS_BY_SERVICE (service -> row
    keys of the target's light curve there). ``SERVICE:ID`` or SERVICE names the service;
    a bare id found in two services is ambiguous (BadInput, exit 2); an id found nowhere
    is BadInput too. ROWS_BY_SERVICE may hold masked ids of rows no longer stored."""
    pairs: list[tuple[str, str]] = []
    for text in ids:
        text = text.strip()
        named, row_id = split_id(text, rows_by_service)
        chosen = named or service
        if chosen is not None:
            if chosen not in rows_by_service:
                raise BadInput(f"{target} has no light curve from {chosen!r}",
                               hint=f"services with one: {', '.join(sorted(rows_by_service)) or 'none'}")
            if row_id not in rows_by_service[chosen]:
                raise BadInput(f"no row {row_id!r} in the {chosen} light curve of {target}")
            pairs.append((chosen, row_id))
            continue
        found = sorted(s for s, keys in rows_by_service.items() if row_id in keys)
        if not found:
            raise BadInput(f"no row {row_id!r} in the light curves of {target}",
                           hint="the ids are the source_row_id column of stdq lightcurve")
        if len(found) > 1:
            raise BadInput(
                f"row {row_id!r} is in the light curves of {' and '.join(found)}: say which",
                hint=f"write SERVICE:ID, e.g. {found[0]}:{row_id}, or use --service",
            )
        pairs.append((found[0], row_id))
    return list(dict.fromkeys(pairs))


def apply(table: pd.DataFrame, ids: set[str]) -> pd.DataFrame:
    """TABLE with a boolean ``masked`` column: True for the rows whose key is in IDS."""
    import numpy as np

    from stdq.latest import row_keys

    out = table.copy(deep=False)
    if not len(out) or not ids:
        out[MASKED_COLUMN] = np.zeros(len(out), dtype=bool)
    else:
        out[MASKED_COLUMN] = row_keys(out).isin(ids).to_numpy(dtype=bool)
    return out
