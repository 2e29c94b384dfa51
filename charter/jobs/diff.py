"""A job made again under an edited constitution: the job it came from, and how its rows moved.

`derive_job` makes the edited job from the old one: the same prompts (and so, through the
store, the same sampled candidates), the same settings and calibration, only the
constitution changed. Running it asks the model only the questions under the edited
principles; everything else is answered by the store. `diff_jobs` then sets the two jobs'
rows side by side, prompt by prompt.
"""

from __future__ import annotations

from typing import Literal

import sqlite_utils
from pydantic import BaseModel, ConfigDict

from charter.constitution import Constitution
from charter.jobs.results import is_exportable
from charter.jobs.spec import DEFAULT_MIN_CONFIDENCE
from charter.jobs.store import (
    JobError,
    JobRecord,
    Preference,
    create_or_get_job,
    get_job,
    job_prompts,
    load_preferences,
)

Change = Literal["flipped", "changed", "gone", "new"]


def derive_job(
    db: sqlite_utils.Database, job_id: str, edited: Constitution
) -> tuple[JobRecord, JobRecord, bool]:
    """(the old job, the edited job, whether it was created now). The edited job's spec is
    the old one's with the edited constitution's digest (its calibration id kept, so the rows
    differ only by the edit); `JobError` when the edit changes nothing."""
    old = get_job(db, job_id)
    if edited.digest == old.constitution.digest:
        raise JobError(f"the constitution is unchanged from job {old.id}'s: nothing to re-run")
    spec = old.spec.model_copy(update={"constitution_digest": edited.digest})
    records = [record for _, record in job_prompts(db, old.id)]
    new, created = create_or_get_job(db, spec, edited, records, old.prompts_source)
    return old, new, created


class RowChange(BaseModel):
    """One prompt's row before and after (None on the side that has none)."""

    model_config = ConfigDict(extra="forbid")

    change: Change
    position: int
    prompt: str
    chosen_before: str | None = None
    rejected_before: str | None = None
    p_before: float | None = None
    chosen_after: str | None = None
    rejected_after: str | None = None
    p_after: float | None = None


class JobDiff(BaseModel):
    """How the rows of `before` became those of `after`: the same pair kept its side
    (`same`, of which `changed` moved p_chosen), swapped sides (`flipped`), or exists on one
    side only (`gone`, `new`); and which rows the export gains or loses at `min_confidence`."""

    model_config = ConfigDict(extra="forbid")

    before: str
    after: str
    min_confidence: float
    rows_before: int
    rows_after: int
    same: int
    changed: int
    flipped: int
    gone: int
    new: int
    exported_before: int
    exported_after: int
    entering: int
    leaving: int
    rows: list[RowChange]


def _pair(row: Preference) -> tuple[int, str, frozenset[str]]:
    return (row.position, row.source, frozenset((row.chosen, row.rejected)))


def _text(row: Preference) -> str:
    if isinstance(row.prompt, str):
        return row.prompt
    return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in row.prompt)


def diff_jobs(
    db: sqlite_utils.Database, before_id: str, after_id: str, min_confidence: float | None = None
) -> JobDiff:
    """Set two jobs' rows side by side (see `JobDiff`); the threshold defaults to the
    `after` job's own (its summary's), else charter's default."""
    before, after = get_job(db, before_id), get_job(db, after_id)
    if min_confidence is None:
        min_confidence = float(after.summary.get("min_confidence", DEFAULT_MIN_CONFIDENCE))
    old = {_pair(r): r for r in load_preferences(db, before.id)}
    new = {_pair(r): r for r in load_preferences(db, after.id)}
    changes: list[RowChange] = []
    same = changed = 0
    for key in sorted(old.keys() | new.keys(), key=lambda k: (k[0], k[1], sorted(k[2]))):
        was, now = old.get(key), new.get(key)
        if was is not None and now is not None and was.chosen == now.chosen:
            same += 1
            if was.p_chosen == now.p_chosen:
                continue
            changed += 1
            kind: Change = "changed"
        elif was is not None and now is not None:
            kind = "flipped"
        else:
            kind = "gone" if now is None else "new"
        row = was or now
        assert row is not None
        changes.append(
            RowChange(
                change=kind,
                position=row.position,
                prompt=_text(row),
                chosen_before=was.chosen if was else None,
                rejected_before=was.rejected if was else None,
                p_before=was.p_chosen if was else None,
                chosen_after=now.chosen if now else None,
                rejected_after=now.rejected if now else None,
                p_after=now.p_chosen if now else None,
            )
        )

    def exported(
        rows: dict[tuple[int, str, frozenset[str]], Preference],
    ) -> set[tuple[object, ...]]:
        return {
            (r.position, r.source, r.chosen, r.rejected)
            for r in rows.values()
            if is_exportable(r, min_confidence)
        }

    out_before, out_after = exported(old), exported(new)
    return JobDiff(
        before=before.id,
        after=after.id,
        min_confidence=min_confidence,
        rows_before=len(old),
        rows_after=len(new),
        same=same,
        changed=changed,
        flipped=sum(1 for c in changes if c.change == "flipped"),
        gone=sum(1 for c in changes if c.change == "gone"),
        new=sum(1 for c in changes if c.change == "new"),
        exported_before=len(out_before),
        exported_after=len(out_after),
        entering=len(out_after - out_before),
        leaving=len(out_before - out_after),
        rows=changes,
    )
