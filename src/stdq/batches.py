"""Batch submissions shared by the jobs of several workers (issue 11 item 5: ZFPS).

ZFPS counts requests, not positions: many positions go in one batch submission. Jobs of the
same batch window join one row of ``batches`` (migration 6): the first job to join opens the
batch and leads it; the others join it (``batch_members``, each with its index) and are
postponed (their threads run other jobs). When the batch is full, or ``batch_window`` seconds
after its latest member joined (at most MAX_OPEN_WINDOWS windows after it opened), the leader
closes it, submits every member's position at once, marks it sent and makes its waiting members
due; each member then finds its own request in the service's listing by its position and JD
range, as a single job does. A batch whose leader ended without sending it is failed: its members join a
new one (nothing was sent for them). Stdlib only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from stdq.db import Database

OPEN, SENDING, SENT, FAILED = "open", "sending", "sent", "failed"
MAX_OPEN_WINDOWS = 10  # a batch that keeps getting members is sent this many windows after it opened


@dataclass(frozen=True)
class Batch:
    id: int
    state: str
    leader: int
    opened_at: float
    sent_at: float | None
    info: dict[str, Any]


class BatchBoard:
    """The batches of SCOPE (a service and account) in the data directory's database."""

    def __init__(self, db: Database, scope: str):
        self.db = db
        self.scope = scope

    def join(self, key: str, job_id: int, request: dict[str, Any], size: int,
             info: dict[str, Any]) -> tuple[Batch, bool]:
        """Join the open batch of KEY with room (or open one, with INFO, led by JOB_ID);
        (the batch, whether JOB_ID leads it). A job already in a batch of KEY gets that one."""
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT b.* FROM batches b JOIN batch_members m ON m.batch_id = b.id"
                " WHERE b.scope = ? AND m.job_id = ? AND b.state != ? ORDER BY b.id DESC LIMIT 1",
                (self.scope, job_id, FAILED),
            ).fetchone()
            if row is not None:
                batch = _batch(row)
                return batch, batch.leader == job_id
            row = conn.execute(
                "SELECT b.* FROM batches b WHERE b.scope = ? AND b.key = ? AND b.state = ? AND"
                " (SELECT COUNT(*) FROM batch_members m WHERE m.batch_id = b.id) < ?"
                " ORDER BY b.id LIMIT 1",
                (self.scope, key, OPEN, size),
            ).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO batches (scope, key, state, leader, opened_at, info_json)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (self.scope, key, OPEN, job_id, self.db.clock(), json.dumps(info)),
                )
                row = conn.execute("SELECT * FROM batches WHERE id = ?", (cur.lastrowid,)).fetchone()
            batch = _batch(row)
            count = conn.execute(
                "SELECT COUNT(*) FROM batch_members WHERE batch_id = ?", (batch.id,)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO batch_members (batch_id, job_id, idx, request_json) VALUES (?, ?, ?, ?)",
                (batch.id, job_id, int(count), json.dumps(request)),
            )
            conn.execute(  # when the latest member joined (the leader waits batch_window after it)
                "UPDATE batches SET info_json = json_set(COALESCE(info_json, '{}'), '$.last_join', ?)"
                " WHERE id = ?",
                (self.db.clock(), batch.id),
            )
            return batch, batch.leader == job_id

    def last_join(self, batch_id: int) -> float | None:
        """When the latest member of the batch joined (None for a batch from before this)."""
        row = self.db.conn.execute(
            "SELECT json_extract(info_json, '$.last_join') FROM batches WHERE id = ?", (batch_id,)
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def wake_members(self, batch_id: int) -> int:
        """Make the batch's members that wait (postponed, queued) due now: it has been sent."""
        with self.db.transaction() as conn:
            now = self.db.clock()
            cur = conn.execute(
                "UPDATE jobs SET run_after = ? WHERE state = 'queued' AND run_after > ? AND id IN"
                " (SELECT job_id FROM batch_members WHERE batch_id = ?)",
                (now, now, batch_id),
            )
            return int(cur.rowcount)

    def get(self, batch_id: int) -> Batch | None:
        row = self.db.conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return _batch(row) if row is not None else None

    def members(self, batch_id: int) -> list[tuple[int, dict[str, Any]]]:
        """(job id, request) of every member, in their index order."""
        rows = self.db.conn.execute(
            "SELECT job_id, request_json FROM batch_members WHERE batch_id = ? ORDER BY idx",
            (batch_id,),
        ).fetchall()
        return [(int(r[0]), json.loads(r[1])) for r in rows]

    def count(self, batch_id: int) -> int:
        row = self.db.conn.execute(
            "SELECT COUNT(*) FROM batch_members WHERE batch_id = ?", (batch_id,)
        ).fetchone()
        return int(row[0])

    def set_state(self, batch_id: int, state: str, *, info: dict[str, Any] | None = None) -> None:
        with self.db.transaction() as conn:
            sets: list[str] = ["state = ?"]
            args: list[Any] = [state]
            if state == SENT:
                sets.append("sent_at = ?")
                args.append(self.db.clock())
            if info is not None:
                sets.append("info_json = ?")
                args.append(json.dumps(info))
            conn.execute(f"UPDATE batches SET {', '.join(sets)} WHERE id = ?", (*args, batch_id))

    def leader_gone(self, batch: Batch) -> bool:
        """Whether the batch's leader job has ended (or is gone) without sending it."""
        row = self.db.conn.execute("SELECT state FROM jobs WHERE id = ?", (batch.leader,)).fetchone()
        return row is None or row[0] in ("succeeded", "failed", "cancelled")


def _batch(row: Any) -> Batch:
    return Batch(
        id=int(row["id"]), state=str(row["state"]), leader=int(row["leader"]),
        opened_at=float(row["opened_at"]),
        sent_at=None if row["sent_at"] is None else float(row["sent_at"]),
        info=json.loads(row["info_json"] or "{}"),
    )
