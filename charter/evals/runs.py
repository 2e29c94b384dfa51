"""Evaluation runs kept in the store (`eval_runs`), so a report can be made from them later.

One row per suite per model: which model (and baseline, for the win rate), the judge, the
constitution's digest and version, where the prompts came from, the settings, the figures and
every per-item verdict. Rows of one `charter eval` call share a `batch` id. The rows of a run
are written in one transaction: a failed write leaves none of them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlite_utils
from pydantic import BaseModel, Field

from charter.constitution import Constitution
from charter.judge.results import Provenance
from charter.store import check_table, write_lock

from .suites import SuiteOutcome

EVAL_RUNS = "eval_runs"
COLUMNS: dict[str, type] = {
    "id": str,
    "batch": str,
    "created_at": str,
    "suite": str,
    "model": str,
    "baseline": str,
    "judge": str,
    "constitution_digest": str,
    "constitution_version": str,
    "source": str,
    "settings": str,
    "figures": str,
    "verdicts": str,
}
JSON_COLUMNS = ("settings", "figures", "verdicts")


class EvalRun(BaseModel):
    """One suite evaluated for one model (the helpful suite: the model over a baseline)."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    batch: str
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    suite: str
    model: str
    baseline: str | None = None
    judge: str
    constitution_digest: str
    constitution_version: str
    source: str = Field(description="Where the prompts came from: a file, or shipped:SUITE.")
    settings: dict[str, Any]
    figures: dict[str, Any]
    verdicts: list[dict[str, Any]]


def new_batch() -> str:
    """An id shared by the runs of one evaluation call."""
    return uuid.uuid4().hex[:16]


def save_runs(db: sqlite_utils.Database, runs: Sequence[EvalRun]) -> None:
    """Write the runs in one transaction (creating the table on first use)."""
    with write_lock(db):
        if not check_table(db, EVAL_RUNS, COLUMNS):
            table = db.table(EVAL_RUNS)
            table.create(COLUMNS, pk="id", not_null={"id", "batch", "suite", "model"})
            table.create_index(["batch"])
        rows = []
        for run in runs:
            row = run.model_dump(mode="json")
            for name in JSON_COLUMNS:
                row[name] = json.dumps(row[name], ensure_ascii=False)
            rows.append(row)
        db.table(EVAL_RUNS).insert_all(rows)


def load_runs(
    db: sqlite_utils.Database, *, batches: Sequence[str] = (), suite: str | None = None
) -> list[EvalRun]:
    """Stored runs, oldest first, optionally only those of `batches` or one `suite`."""
    if not check_table(db, EVAL_RUNS, COLUMNS):
        return []
    where, params = [], []
    if batches:
        where.append(f"batch IN ({', '.join('?' for _ in batches)})")
        params += list(batches)
    if suite is not None:
        where.append("suite = ?")
        params.append(suite)
    sql = f"SELECT * FROM {EVAL_RUNS}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_at, rowid"
    runs = []
    for row in db.query(sql, params):
        for name in JSON_COLUMNS:
            row[name] = json.loads(row[name])
        runs.append(EvalRun.model_validate(row))
    return runs


def runs_of(
    outcome: SuiteOutcome,
    *,
    batch: str,
    sources: Mapping[str, str],
    judge: str,
    constitution: Constitution,
    settings: dict[str, Any],
) -> list[EvalRun]:
    """The rows to store for one evaluation: each judged suite per model, and the win rate."""
    common: dict[str, Any] = {
        "batch": batch,
        **Provenance.of(constitution, judge).fields(),
        "settings": settings,
    }
    runs = [
        EvalRun(
            suite=result.suite,
            model=result.model,
            source=sources[result.suite],
            figures=result.model_dump(mode="json", exclude={"items"}),
            verdicts=[v.model_dump(mode="json") for v in result.items],
            **common,
        )
        for result in outcome.judged
    ]
    if outcome.helpful is not None:
        report = outcome.helpful
        runs.append(
            EvalRun(
                suite="helpful",
                model=report.model,
                baseline=report.baseline,
                source=sources["helpful"],
                figures=report.model_dump(mode="json", exclude={"pairs"}),
                verdicts=[p.model_dump(mode="json") for p in report.pairs],
                **common,
            )
        )
    return runs
