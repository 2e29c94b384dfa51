"""The `batches` table: every batch submitted for a model, with the call keys it holds.

A batch is recorded the moment the provider has created it, so a process stopped or killed
while it is being answered resumes polling it on the next run instead of paying for another.
Before a batch is created it is recorded under a `creating:TOKEN` id, the token going to the
provider in the batch's metadata: a process killed while the provider creates it leaves that
row, and the next run finds the batch by its token instead of creating another.
A batch is marked collected once a run has had its results; collected batches are never looked
at again (the answers they gave are in `calls`, the failures are asked again).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlite_utils

from charter.store import check_table, write_lock

BATCHES = "batches"
CREATING = "creating:"
"""Id prefix of a batch being created, before the provider has given it an id."""
_COLUMNS: dict[str, type] = {
    "id": str,
    "model": str,
    "base_url": str,
    "keys": str,
    "input_file_id": str,
    "status": str,
    "created_at": str,
    "updated_at": str,
    "collected_at": str,
}


@dataclass(frozen=True)
class OpenBatch:
    """A batch a run has not collected yet: its id and the call keys it holds."""

    id: str
    keys: frozenset[str]
    created_at: str

    @property
    def creating_token(self) -> str | None:
        """The metadata token of a batch whose creation was not confirmed; None once it was."""
        return self.id.removeprefix(CREATING) if self.id.startswith(CREATING) else None


def ensure_table(db: sqlite_utils.Database) -> None:
    """Create the table if missing; `StoreError` if a `batches` table is another program's."""
    if check_table(db, BATCHES, _COLUMNS):
        return
    with write_lock(db):
        if BATCHES not in db.table_names():
            db[BATCHES].create(_COLUMNS, pk="id")  # type: ignore[union-attr]


def record(
    db: sqlite_utils.Database,
    batch_id: str,
    *,
    model: str,
    base_url: str,
    keys: Iterable[str],
    input_file_id: str,
    status: str,
) -> None:
    """Remember a batch the provider has just created."""
    now = _now()
    with db.conn:
        db.execute(
            f"INSERT OR IGNORE INTO {BATCHES} (id, model, base_url, keys, input_file_id, status, "
            "created_at, updated_at, collected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            [batch_id, model, base_url, json.dumps(sorted(keys)), input_file_id, status, now, now],
        )


def adopt(db: sqlite_utils.Database, creating_id: str, batch_id: str, status: str) -> None:
    """The provider created the batch recorded as `creating_id`: record its real id."""
    with db.conn:
        db.execute(
            f"UPDATE {BATCHES} SET id = ?, status = ?, updated_at = ? WHERE id = ?",
            [batch_id, status, _now(), creating_id],
        )


def forget(db: sqlite_utils.Database, batch_id: str) -> None:
    """A batch that was never created: its calls belong to no batch."""
    with db.conn:
        db.execute(f"DELETE FROM {BATCHES} WHERE id = ?", [batch_id])


def set_status(db: sqlite_utils.Database, batch_id: str, status: str) -> None:
    """The provider's latest status of a batch (for `sqlite3` readers and progress)."""
    with db.conn:
        db.execute(
            f"UPDATE {BATCHES} SET status = ?, updated_at = ? WHERE id = ?",
            [status, _now(), batch_id],
        )


def mark_collected(db: sqlite_utils.Database, batch_ids: Iterable[str]) -> None:
    """These batches' results have been handed to their callers: not to be resumed again."""
    now = _now()
    with db.conn:
        db.conn.executemany(
            f"UPDATE {BATCHES} SET collected_at = ?, updated_at = ? WHERE id = ?",
            [(now, now, batch_id) for batch_id in batch_ids],
        )


def open_batches(db: sqlite_utils.Database, *, model: str, base_url: str) -> list[OpenBatch]:
    """The batches of this model at this endpoint that no run has collected, oldest first."""
    rows = db.execute(
        f"SELECT id, keys, created_at FROM {BATCHES} WHERE model = ? AND base_url = ? "
        "AND collected_at IS NULL ORDER BY created_at, id",
        [model, base_url],
    ).fetchall()
    return [OpenBatch(row[0], frozenset(json.loads(row[1])), row[2]) for row in rows]


def _now() -> str:
    return datetime.now(UTC).isoformat()
