"""Generation jobs in the store: what a job is, which prompts it has finished, what it made.

A job's id is a hash of its spec (prompts, mode, models, sampling, constitution digest), so
running the same command again finds the same job and carries on where it stopped. Each
prompt is the unit of commit: its preferences and its `done` mark are written in one
transaction, so a killed job never leaves half a prompt's rows, and a resumed one never
writes a row twice (every preference row is also keyed by a hash of its content).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

import sqlite_utils
from pydantic import BaseModel, ConfigDict, Field

from charter.constitution import Constitution
from charter.jobs.spec import JobSpec
from charter.judge.results import AppliedPrinciple
from charter.prompt_files import PromptRecord
from charter.store import check_table, write_lock
from charter.versions import frozen_for_run

JOBS = "jobs"
JOB_PROMPTS = "job_prompts"
PREFERENCES = "preferences"

JobStatus = Literal["running", "done", "failed", "cancelled", "stopped"]
PromptStatus = Literal["pending", "done", "failed"]


class JobError(Exception):
    """A job that cannot be found, started or resumed as asked."""


class Preference(BaseModel):
    """One preference triple with its provenance: the row every export is made of."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    position: int = Field(description="The prompt's index in the job's input.")
    prompt_key: str
    prompt: str | list[dict[str, str]]
    chosen: str
    rejected: str
    source: Literal["comparison", "revision"]
    p_chosen: float | None = Field(
        default=None, description="P(chosen is better): calibrated when `calibration` is set."
    )
    p_chosen_raw: float | None = Field(default=None, description="The judge's own P(chosen).")
    calibration: str | None = Field(
        default=None, description="Id of the calibration applied to p_chosen; None: raw."
    )
    protocol: str | None = Field(default=None, description="pairwise or pointwise.")
    margin: float | None = None
    position_consistent: bool | None = None
    principles: list[str] = []
    applicable: list[AppliedPrinciple] | None = Field(
        default=None,
        description="The principles that applied to the prompt (relevant selection), with the "
        "judge's P(Yes) to each `applies` question (None: always applies); None: principles "
        "were picked at random.",
    )
    critique: str | None = None
    judge: str
    policy: str
    constitution_digest: str
    constitution_version: str
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def key(self) -> str:
        blob = json.dumps(
            [self.job_id, self.prompt_key, self.chosen, self.rejected, self.source],
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JobRecord(BaseModel):
    """A stored job. `summary` is its figures as stored when a run last ended (a
    `JobSummary`'s JSON; a store from an earlier release may hold fewer of them)."""

    id: str
    spec: JobSpec
    constitution: Constitution
    status: JobStatus
    prompts_source: str
    created_at: str
    updated_at: str
    summary: dict[str, Any] = {}
    error: str | None = None


#: Columns each table has had since the first release: a table of one of these names without
#: them is another program's, and is never written to (see `check_table`).
_IDENTITY = {
    JOBS: ("id", "spec", "constitution", "status", "summary"),
    JOB_PROMPTS: ("job_id", "position", "prompt_key", "record", "status", "result"),
    PREFERENCES: ("key", "job_id", "position", "prompt_key", "prompt", "chosen", "rejected"),
}


def _has_table(db: sqlite_utils.Database, name: str) -> bool:
    """Whether the store has charter's table `name`; `StoreError` if it has another's."""
    return check_table(db, name, _IDENTITY[name])


def check_tables(db: sqlite_utils.Database) -> set[str]:
    """The job tables the store has; `StoreError`, before anything is written, if one of
    their names is another program's table."""
    return {name for name in _IDENTITY if _has_table(db, name)}


def ensure_tables(db: sqlite_utils.Database) -> None:
    with write_lock(db):  # two processes starting on a new store at once take turns
        _ensure_tables(db)


def _ensure_tables(db: sqlite_utils.Database) -> None:
    names = check_tables(db)
    if JOBS not in names:
        db[JOBS].create(  # type: ignore[union-attr]
            {
                "id": str,
                "spec": str,
                "constitution": str,
                "constitution_digest": str,
                "constitution_version": str,
                "status": str,
                "prompts_source": str,
                "created_at": str,
                "updated_at": str,
                "summary": str,
                "error": str,
                "lease_holder": str,
                "lease_expires": float,
            },
            pk="id",
        )
    else:  # a store from an earlier release: add the lease (see `charter.jobs.leases`)
        have = set(db[JOBS].columns_dict)
        for name, kind in (("lease_holder", str), ("lease_expires", float)):
            if name not in have:
                db[JOBS].add_column(name, kind)  # type: ignore[union-attr]
    if JOB_PROMPTS not in names:
        db[JOB_PROMPTS].create(  # type: ignore[union-attr]
            {
                "job_id": str,
                "position": int,
                "prompt_key": str,
                "record": str,
                "status": str,
                "error": str,
                "result": str,
                "attempts": int,
            },
            pk=("job_id", "position"),
        )
    elif "attempts" not in db[JOB_PROMPTS].columns_dict:  # a store from an earlier release
        db[JOB_PROMPTS].add_column("attempts", int, not_null_default=0)  # type: ignore[union-attr]
    columns: dict[str, Any] = {name: str for name in Preference.model_fields}
    columns.update(
        position=int, p_chosen=float, p_chosen_raw=float, margin=float, position_consistent=int
    )
    if PREFERENCES not in names:
        db[PREFERENCES].create({"key": str, **columns}, pk="key")  # type: ignore[union-attr]
        db[PREFERENCES].create_index(["job_id", "position"])  # type: ignore[union-attr]
    else:  # a store from an earlier release: add the columns rows have gained since
        table = db[PREFERENCES]
        have = set(table.columns_dict)
        for name, kind in columns.items():
            if name not in have:
                table.add_column(name, kind)  # type: ignore[union-attr]


def create_or_get_job(
    db: sqlite_utils.Database,
    spec: JobSpec,
    constitution: Constitution,
    records: list[PromptRecord],
    prompts_source: str,
) -> tuple[JobRecord, bool]:
    """The job for `spec`: created with its prompts if new, else the stored one. Two
    processes creating the same job at once both get it (one creates it, the other finds it)."""
    ensure_tables(db)
    if spec.constitution_digest != constitution.digest:
        raise JobError("spec and constitution disagree on the constitution digest")
    try:
        return get_job(db, spec.job_id), False
    except JobError:
        pass
    constitution = frozen_for_run(db, constitution)  # the label it records names only it
    now = datetime.now(UTC).isoformat()
    before = db.execute("SELECT total_changes()").fetchone()[0]
    with write_lock(db):  # one transaction: a job is never seen without its prompts
        db[JOBS].insert(  # type: ignore[union-attr]
            {
                "id": spec.job_id,
                "spec": spec.model_dump_json(),
                "constitution": constitution.model_dump_json(),
                "constitution_digest": constitution.digest,
                "constitution_version": constitution.version,
                "status": "running",
                "prompts_source": prompts_source,
                "created_at": now,
                "updated_at": now,
                "summary": "{}",
                "error": None,
            },
            ignore=True,
        )
        created = db.execute("SELECT total_changes()").fetchone()[0] > before
        if created:
            db[JOB_PROMPTS].insert_all(  # type: ignore[union-attr]
                {
                    "job_id": spec.job_id,
                    "position": i,
                    "prompt_key": r.key,
                    "record": r.model_dump_json(),
                    "status": "pending",
                    "error": None,
                    "result": None,
                    "attempts": 0,
                }
                for i, r in enumerate(records)
            )
    return get_job(db, spec.job_id), created


def get_job(db: sqlite_utils.Database, job_id: str) -> JobRecord:
    if _has_table(db, JOBS):
        rows = list(db[JOBS].rows_where("id = ?", [job_id]))
        if not rows:
            rows = list(db[JOBS].rows_where("id like ?", [job_id + "%"]))
            if len(rows) > 1:
                raise JobError(f"job id prefix {job_id!r} is ambiguous")
        if rows:
            return _job_from_row(rows[0])
    raise JobError(f"no job {job_id!r} in this store (see 'charter jobs list')")


def list_jobs(db: sqlite_utils.Database) -> list[JobRecord]:
    if not _has_table(db, JOBS):
        return []
    return [_job_from_row(r) for r in db[JOBS].rows_where(order_by="updated_at desc")]


def job_prompts(
    db: sqlite_utils.Database, job_id: str, status: PromptStatus | None = None
) -> list[tuple[int, PromptRecord]]:
    where = "job_id = ?" + (" and status = ?" if status else "")
    args = [job_id, status] if status else [job_id]
    return [
        (r["position"], PromptRecord.model_validate_json(r["record"]))
        for r in db[JOB_PROMPTS].rows_where(where, args, order_by="position")
    ]


def prompt_counts(db: sqlite_utils.Database, job_id: str) -> dict[str, int]:
    rows = db.execute(
        f"SELECT status, count(*) FROM {JOB_PROMPTS} WHERE job_id = ? GROUP BY status", [job_id]
    ).fetchall()
    return {status: count for status, count in rows}


def preference_count(db: sqlite_utils.Database, job_id: str) -> int:
    """Rows stored for the job so far: true while it runs, unlike a summary written at its end."""
    if PREFERENCES not in db.table_names():
        return 0
    row = db.execute(f"SELECT count(*) FROM {PREFERENCES} WHERE job_id = ?", [job_id]).fetchone()
    return int(row[0])


def prompt_results(
    db: sqlite_utils.Database, job_id: str
) -> list[tuple[PromptStatus, dict[str, Any]]]:
    """Each attempted prompt's status and stored result (its ranking or revision chains)."""
    return [
        (r["status"], json.loads(r["result"]))
        for r in db[JOB_PROMPTS].rows_where(
            "job_id = ? and result is not null", [job_id], order_by="position"
        )
    ]


def finish_prompt(
    db: sqlite_utils.Database,
    job_id: str,
    position: int,
    preferences: list[Preference],
    result: dict[str, Any],
    error: str | None = None,
) -> None:
    """Write a prompt's preferences and mark it finished, in one transaction."""
    status: PromptStatus = "failed" if error else "done"
    with db.conn:
        db.execute(
            f"UPDATE {JOB_PROMPTS} SET status = ?, error = ?, result = ?, "
            "attempts = coalesce(attempts, 0) + 1 WHERE job_id = ? AND position = ?",
            [status, error, json.dumps(result, ensure_ascii=False), job_id, position],
        )
        for pref in preferences:
            row = pref.model_dump(mode="json")
            row["prompt"] = json.dumps(row["prompt"], ensure_ascii=False)
            row["principles"] = json.dumps(row["principles"])
            if row["applicable"] is not None:
                row["applicable"] = json.dumps(row["applicable"])
            db.execute(
                f"INSERT OR IGNORE INTO {PREFERENCES} ({', '.join(['key', *row])}) "
                f"VALUES ({', '.join('?' * (len(row) + 1))})",
                [pref.key, *row.values()],
            )


def prompt_attempts(db: sqlite_utils.Database, job_id: str, position: int) -> int:
    """How many runs have finished (or failed) this prompt so far."""
    row = db.execute(
        f"SELECT attempts FROM {JOB_PROMPTS} WHERE job_id = ? AND position = ?", [job_id, position]
    ).fetchone()
    return int(row[0] or 0) if row else 0


def reset_failed(db: sqlite_utils.Database, job_id: str) -> int:
    """Put failed prompts back to pending so a resumed job tries them again."""
    with db.conn:
        cursor = db.execute(
            f"UPDATE {JOB_PROMPTS} SET status = 'pending', error = NULL "
            "WHERE job_id = ? AND status = 'failed'",
            [job_id],
        )
    return cursor.rowcount


def set_status(
    db: sqlite_utils.Database,
    job_id: str,
    status: JobStatus,
    *,
    summary: BaseModel | None = None,
    error: str | None = None,
) -> None:
    """Record the job's status; `summary`, its figures (a `JobSummary`), when it has them."""
    updates: dict[str, Any] = {
        "status": status,
        "updated_at": datetime.now(UTC).isoformat(),
        "error": error,
    }
    if summary is not None:
        updates["summary"] = json.dumps(summary.model_dump(mode="json"))
    with db.conn:
        db[JOBS].update(job_id, updates)  # type: ignore[union-attr]


def load_preferences(db: sqlite_utils.Database, job_id: str) -> list[Preference]:
    if not _has_table(db, PREFERENCES):
        return []
    return [
        preference_from_row(row)
        for row in db[PREFERENCES].rows_where("job_id = ?", [job_id], order_by="position, key")
    ]


def preference_from_row(row: dict[str, Any]) -> Preference:
    """A stored `preferences` row back into a `Preference` (the inverse of `finish_prompt`)."""
    data = dict(row)
    data.pop("key")
    data["prompt"] = json.loads(data["prompt"])
    data["principles"] = json.loads(data["principles"])
    data["applicable"] = json.loads(data["applicable"]) if data.get("applicable") else None
    if data["position_consistent"] is not None:
        data["position_consistent"] = bool(data["position_consistent"])
    return Preference.model_validate(data)


def _job_from_row(row: dict[str, Any]) -> JobRecord:
    return JobRecord(
        id=row["id"],
        spec=JobSpec.from_store(row["spec"]),
        constitution=Constitution.model_validate_json(row["constitution"]),
        status=row["status"],
        prompts_source=row["prompts_source"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        summary=json.loads(row["summary"] or "{}"),
        error=row["error"],
    )
