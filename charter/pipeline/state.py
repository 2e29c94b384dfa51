"""A pipeline's progress in the store: the `pipelines` table, one row per recipe content.

Each finished stage records its output (a job id, a model directory, an eval batch) as soon as
it finishes, so a killed pipeline resumes at the first stage with no record.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from charter.store import check_table, write_lock

PIPELINES = "pipelines"
COLUMNS = {
    "id": str,
    "recipe_path": str,
    "recipe_digest": str,
    "status": str,
    "stages": str,
    "created_at": str,
    "updated_at": str,
}


def _now() -> str:
    return datetime.now(UTC).isoformat()


def ensure_table(db: sqlite_utils.Database) -> None:
    """Create the table on first use; another program's `pipelines` table is refused."""
    with write_lock(db):
        if not check_table(db, PIPELINES, COLUMNS):
            db.table(PIPELINES).create(COLUMNS, pk="id", not_null={"id", "recipe_digest", "stages"})


def load_stages(db: sqlite_utils.Database, pipeline_id: str) -> dict[str, dict[str, Any]]:
    """The finished stages' records of a pipeline (empty for a new one)."""
    ensure_table(db)
    rows = list(db.query(f"SELECT stages FROM {PIPELINES} WHERE id = ?", [pipeline_id]))
    if not rows:
        return {}
    stages: dict[str, dict[str, Any]] = json.loads(rows[0]["stages"])
    return stages


def start(db: sqlite_utils.Database, pipeline_id: str, path: str, digest: str) -> None:
    """Record the pipeline (if new) as running."""
    ensure_table(db)
    now = _now()
    with write_lock(db):
        db.execute(
            f"INSERT INTO {PIPELINES} (id, recipe_path, recipe_digest, status, stages, "
            "created_at, updated_at) VALUES (?, ?, ?, 'running', '{}', ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET status = 'running', recipe_path = excluded.recipe_path, "
            "updated_at = excluded.updated_at",
            [pipeline_id, path, digest, now, now],
        )


def finish_stage(
    db: sqlite_utils.Database, pipeline_id: str, stage: str, record: dict[str, Any]
) -> None:
    """Record `stage` as finished with its output, in one transaction."""
    with write_lock(db):
        row = next(db.query(f"SELECT stages FROM {PIPELINES} WHERE id = ?", [pipeline_id]))
        stages = json.loads(row["stages"])
        stages[stage] = {**record, "finished_at": _now()}
        db.execute(
            f"UPDATE {PIPELINES} SET stages = ?, updated_at = ? WHERE id = ?",
            [json.dumps(stages, sort_keys=True), _now(), pipeline_id],
        )


def set_status(db: sqlite_utils.Database, pipeline_id: str, status: str) -> None:
    with write_lock(db):
        db.execute(
            f"UPDATE {PIPELINES} SET status = ?, updated_at = ? WHERE id = ?",
            [status, _now(), pipeline_id],
        )
