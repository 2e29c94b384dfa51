"""Conflicts between a job's principles, read from its stored results.

Each finished prompt keeps its comparisons (a ranking's, or a revision's checks) with every
principle's own verdict; `charter.judge.conflicts` counts them. A comparison that made an
exported row is tied to the row's key, so the review pages can link a conflict to its row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from charter.jobs.store import JOB_PROMPTS, PREFERENCES, get_job
from charter.judge.conflicts import (
    DEFAULT_CONFLICTS,
    ConflictReport,
    ConflictSettings,
    Votes,
    find_conflicts,
    votes_of,
)


@dataclass
class JobConflicts:
    job_id: str
    report: ConflictReport
    prompts_read: int
    prompts_done: int


def done_results(
    db: sqlite_utils.Database, job_id: str, sample: int | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(position, stored result) of the job's finished prompts, in order; with `sample`, an
    even spread of at most that many (every k-th position), so a page's cost stays fixed."""
    step = 1
    if sample is not None:
        done = db.execute(
            f"SELECT COUNT(*) FROM {JOB_PROMPTS} WHERE job_id = ? AND status = 'done'", [job_id]
        ).fetchone()[0]
        step = max(1, -(-int(done) // sample))
    limit = -1 if sample is None else sample
    for position, raw in db.execute(
        f"SELECT position, result FROM {JOB_PROMPTS} WHERE job_id = ? AND status = 'done' "
        "AND position % ? = 0 ORDER BY position LIMIT ?",
        [job_id, step, limit],
    ):
        yield int(position), json.loads(raw or "{}")


def _row_keys(db: sqlite_utils.Database, job_id: str, position: int) -> dict[tuple[str, str], str]:
    if PREFERENCES not in db.table_names():
        return {}
    return {
        (chosen, rejected): key
        for key, chosen, rejected in db.execute(
            f"SELECT key, chosen, rejected FROM {PREFERENCES} WHERE job_id = ? AND position = ?",
            [job_id, position],
        )
    }


def job_votes(
    db: sqlite_utils.Database, job_id: str, sample: int | None = None
) -> tuple[list[Votes], int]:
    """Every stored comparison's principle votes (see `done_results` for `sample`), and how
    many prompts they came from."""
    found: list[Votes] = []
    read = 0
    for position, result in done_results(db, job_id, sample):
        read += 1
        keys = _row_keys(db, job_id, position)
        for comparison in result.get("comparisons", []) + result.get("verifications", []):
            a, b = comparison.get("a"), comparison.get("b")
            key = keys.get((a, b)) or keys.get((b, a))
            votes = votes_of(position, comparison, key)
            if votes is not None:
                found.append(votes)
    return found, read


def job_conflicts(
    db: sqlite_utils.Database,
    job_id: str,
    settings: ConflictSettings = DEFAULT_CONFLICTS,
    sample: int | None = None,
) -> JobConflicts:
    """The conflict report of a job (`JobError` if there is no such job)."""
    job = get_job(db, job_id)
    votes, read = job_votes(db, job.id, sample)
    done = db.execute(
        f"SELECT COUNT(*) FROM {JOB_PROMPTS} WHERE job_id = ? AND status = 'done'", [job.id]
    ).fetchone()[0]
    return JobConflicts(job.id, find_conflicts(votes, settings), read, int(done))
