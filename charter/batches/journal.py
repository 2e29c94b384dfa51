"""The `batches` table: every batch submitted for a model, with the call keys it holds.

A batch is recorded the moment the provider has created it, so a process stopped or killed
while it is being answered resumes polling it on the next run instead of paying for another.
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
        f"SELECT id, keys FROM {BATCHES} WHERE model = ? AND base_url = ? "
        "AND collected_at IS NULL ORDER BY created_at, id",
        [model, base_url],
    ).fetchall()
    return [OpenBatch(id=row[0], keys=frozenset(json.loads(row[1]))) for row in rows]


def _now() -> str:
    return datetime.now(UTC).isoformat()
