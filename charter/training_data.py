"""A job's stored preferences as training rows: the one selection `export` and `train` share.

Which rows a job yields depends on what they train:

- `preference` (DPO, reward model): every pair whose p_chosen reaches `min_confidence` (an
  unchecked revision, `--no-verify-revisions`, passes by construction);
- `sft` (supervised fine-tuning, SL-CAI): prompt -> the text worth imitating. In revise mode,
  the final revisions that passed the quality gates and the judge's check (a revision the judge
  did not prefer over its original is never imitated; a flawed one never made a row); in
  compare mode, each chosen text that lost none of its prompt's usable comparisons;
- `prompt` (PPO, GRPO): the preference rows (their `chosen` is GRPO's reference answer), or
  the job's prompts alone when it has no usable pair.

    from charter.training_data import load_job_data
    from charter.trainer import SFTRunConfig, train_sft
    data = load_job_data(".charter/charter.db", "job-3f2a9c0d1e2b", kind="sft")
    train_sft(SFTRunConfig(data=data, model="smollm2", output_dir="runs/sft"))
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import sqlite_utils

from charter.jobs.results import is_exportable
from charter.jobs.spec import DEFAULT_MIN_CONFIDENCE
from charter.jobs.store import (
    JobError,
    JobRecord,
    Preference,
    get_job,
    job_prompts,
    load_preferences,
)
from charter.judge.results import Provenance

if TYPE_CHECKING:
    from charter.trainer import PreferenceData

RowKind = Literal["preference", "sft"]
TrainKind = Literal["preference", "sft", "prompt"]

PROVENANCE = (  # the columns after the data in every exported row
    "source",
    "p_chosen",
    "p_chosen_raw",
    "calibration",
    "protocol",
    "margin",
    "position_consistent",
    "principles",
    "applicable",
    "critique",
    "judge",
    "policy",
    "constitution_digest",
    "constitution_version",
    "job_id",
    "prompt_key",
)


def select_rows(
    preferences: list[Preference], kind: RowKind, min_confidence: float
) -> list[Preference]:
    """The stored preferences a `kind` of dataset is made of, in stored order."""
    usable = [p for p in preferences if is_exportable(p, min_confidence)]
    if kind == "preference":
        return usable
    beaten = {(p.prompt_key, p.rejected) for p in usable if p.source == "comparison"}
    seen: set[tuple[str, str]] = set()
    rows: list[Preference] = []
    for p in usable:
        key = (p.prompt_key, p.chosen)
        if key in seen or (p.source == "comparison" and key in beaten):
            continue
        seen.add(key)
        rows.append(p)
    return rows


def to_row(p: Preference, *, conversational: bool, kind: RowKind) -> dict[str, Any]:
    """A stored preference as a TRL row of `kind`, plain or conversational, with its
    provenance columns."""
    prompt: Any = p.prompt
    if conversational and isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    elif not conversational and not isinstance(prompt, str):
        prompt = "\n\n".join(m["content"] for m in prompt)
    provenance = {name: getattr(p, name) for name in PROVENANCE}
    if p.applicable is not None:
        provenance["applicable"] = [a.model_dump(mode="json") for a in p.applicable]
    if kind == "sft":
        completion: Any = p.chosen
        if conversational:
            completion = [{"role": "assistant", "content": p.chosen}]
        return {"prompt": prompt, "completion": completion, **provenance}
    if conversational:
        return {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
            **provenance,
        }
    return {"prompt": prompt, "chosen": p.chosen, "rejected": p.rejected, **provenance}


def job_rows(
    db: sqlite_utils.Database,
    job: JobRecord,
    *,
    kind: TrainKind,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    conversational: bool = False,
) -> list[dict[str, Any]]:
    """The job's rows in TRL's format (see the module docstring), provenance columns included."""
    stored = load_preferences(db, job.id)
    row_kind: RowKind = "sft" if kind == "sft" else "preference"
    rows = [
        to_row(p, conversational=conversational, kind=row_kind)
        for p in select_rows(stored, row_kind, min_confidence)
    ]
    if rows or kind != "prompt":
        return rows
    provenance = {
        "job_id": job.id,
        **Provenance.of(job.constitution, job.spec.judge).fields(),
        "policy": job.spec.policy,
    }
    return [
        {"prompt": p if isinstance(p, str) else [m.model_dump() for m in p], **provenance}
        for p in (record.prompt for _, record in job_prompts(db, job.id))
    ]


def load_job_data(
    store: str | Path,
    job_id: str,
    *,
    kind: TrainKind,
    min_confidence: float | None = None,
    conversational: bool | None = None,
) -> PreferenceData:
    """A job's training rows, checked, as the trainers take them; `TrainError` (one line) for a
    missing store or job, or a job with nothing to train on."""
    from charter.store import open_store
    from charter.trainer import PreferenceData, TrainError

    store = Path(store)
    if not store.is_file():
        raise TrainError(
            f"--data {job_id}: no such file, and no store at {store} to look up a job id in"
        )
    db = open_store(store, create=False)
    try:
        job = get_job(db, job_id)
    except JobError:
        raise TrainError(
            f"--data {job_id}: no such file, and no job {job_id!r} in {store} "
            "(see `charter jobs list`)"
        ) from None
    threshold = DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence
    rows = job_rows(
        db, job, kind=kind, min_confidence=threshold, conversational=bool(conversational)
    )
    if not rows:
        stored = len(load_preferences(db, job.id))
        if kind == "sft":
            raise TrainError(
                f"job {job.id} has no rows to fine-tune on: {stored} stored, none a revision "
                f"that passed the judge's check or a comparison winner with p_chosen >= "
                f"{threshold} (see `charter jobs show {job.id}`)"
            )
        raise TrainError(
            f"job {job.id} has no usable preference pairs: {stored} stored, none a revision "
            f"or a comparison with p_chosen >= {threshold} (see `charter jobs show {job.id}`)"
        )
    return PreferenceData.from_rows(
        rows, source=f"job {job.id} ({store})", kind=kind, conversational=conversational
    )
