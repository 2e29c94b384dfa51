"""What a row's page shows beyond the row: the judge's verdicts per principle, and the
critique and revision chain that made a revised text, read from the prompt's stored result."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from charter.jobs.store import JOB_PROMPTS, Preference


@dataclass
class Verdict:
    principle: str
    p_chosen: float | None
    consistent: bool | None
    answered: int


@dataclass
class Step:
    principle: str
    critique: str
    revision: str
    error: str | None


@dataclass
class RowDetail:
    verdicts: list[Verdict] = field(default_factory=list)
    chain: list[Step] = field(default_factory=list)
    original: str | None = None


def _stored_result(db: sqlite_utils.Database, job_id: str, position: int) -> dict[str, Any]:
    row = db.execute(
        f"SELECT result FROM {JOB_PROMPTS} WHERE job_id = ? AND position = ?", [job_id, position]
    ).fetchone()
    if row is None or not row[0]:
        return {}
    result: dict[str, Any] = json.loads(row[0])
    return result


def _verdicts(comparison: dict[str, Any], chosen_is_a: bool) -> list[Verdict]:
    out = []
    for v in comparison.get("principles", []):
        p_a = v.get("p_a")
        p = None if p_a is None else (p_a if chosen_is_a else 1.0 - p_a)
        out.append(
            Verdict(str(v.get("principle_id")), p, v.get("consistent"), int(v.get("succeeded", 0)))
        )
    return out


def row_detail(db: sqlite_utils.Database, preference: Preference) -> RowDetail:
    result = _stored_result(db, preference.job_id, preference.position)
    detail = RowDetail()
    for comparison in result.get("comparisons", []) + result.get("verifications", []):
        pair = (comparison.get("a"), comparison.get("b"))
        if pair == (preference.chosen, preference.rejected):
            detail.verdicts = _verdicts(comparison, chosen_is_a=True)
            break
        if pair == (preference.rejected, preference.chosen):
            detail.verdicts = _verdicts(comparison, chosen_is_a=False)
            break
    for chain in result.get("chains", []):
        if chain.get("final") in (preference.chosen, preference.rejected) and chain.get("rounds"):
            detail.original = chain.get("original")
            for rnd in chain["rounds"]:
                critique, revision = rnd.get("critique") or {}, rnd.get("revision") or {}
                detail.chain.append(
                    Step(
                        str(rnd.get("principle_id")),
                        str(critique.get("text") or ""),
                        str(revision.get("text") or ""),
                        critique.get("error") or revision.get("error"),
                    )
                )
            break
    return detail
