"""Export a job's preferences as a dataset that loads in `datasets` and trains in TRL as is.

Rows are TRL's preference format: `prompt`, `chosen`, `rejected` as strings (standard) or as
message lists (conversational), followed by provenance columns. `--kind sft` writes prompt ->
the text worth imitating (an accepted revision, or a comparison winner) in TRL's
prompt-completion format instead; `charter.training_data` picks the rows for both. Splits are
assigned by a hash of the prompt, so they are deterministic and a prompt never straddles train
and test.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Literal

import sqlite_utils
from pydantic import BaseModel

from charter.jobs.spec import DEFAULT_MIN_CONFIDENCE
from charter.jobs.store import get_job, load_preferences
from charter.jobs.summary import CalibrationFigures, JobSummary, summarise_job
from charter.training_data import PROVENANCE, RowKind, select_rows, to_row

log = logging.getLogger(__name__)

Format = Literal["jsonl", "parquet", "hf"]
Kind = RowKind


class ExportError(Exception):
    """Nothing to export, or an export that cannot be written as asked."""


class ExportReport(BaseModel):
    job_id: str
    format: Format
    kind: Kind
    paths: list[str]
    rows: dict[str, int]
    excluded: int


def parse_split(text: str | None) -> dict[str, float]:
    """`test=0.1` -> {"test": 0.1}; the rest goes to `train`."""
    if not text:
        return {}
    splits: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            fraction = float(value)
        except ValueError:
            fraction = -1.0
        if not sep or not name.strip() or not 0 < fraction < 1:
            raise ExportError(f"bad split {part!r}: use NAME=FRACTION, e.g. test=0.1")
        splits[name.strip()] = fraction
    if "train" in splits or sum(splits.values()) >= 1:
        raise ExportError("split fractions must leave room for 'train' (e.g. test=0.1)")
    return splits


def assign_split(prompt_key: str, splits: dict[str, float]) -> str:
    point = int(hashlib.sha256(f"split:{prompt_key}".encode()).hexdigest()[:8], 16) / 2**32
    edge = 0.0
    for name, fraction in sorted(splits.items()):
        edge += fraction
        if point < edge:
            return name
    return "train"


def export_job(
    db: sqlite_utils.Database,
    job_id: str,
    out: Path | str,
    *,
    fmt: Format = "jsonl",
    kind: Kind = "preference",
    conversational: bool = False,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    split: dict[str, float] | None = None,
    push_to_hub: str | None = None,
) -> ExportReport:
    job = get_job(db, job_id)
    out = Path(out)
    preferences = load_preferences(db, job.id)
    chosen = select_rows(preferences, kind, min_confidence)
    excluded = len(preferences) - len(chosen)
    if not chosen:
        raise ExportError(
            f"job {job.id} has no rows to export ({len(preferences)} stored, {excluded} below "
            f"--min-confidence {min_confidence} or of another kind)"
        )
    by_split: dict[str, list[dict[str, Any]]] = {"train": []}
    for name in sorted(split or {}):
        by_split[name] = []
    for p in chosen:
        name = assign_split(p.prompt_key, split or {})
        by_split[name].append(to_row(p, conversational=conversational, kind=kind))

    _check_out(out, fmt, bool(split))
    paths = _write(by_split, out, fmt, bool(split))
    if fmt == "hf":
        summary = summarise_job(db, job, min_confidence=min_confidence)
        (out / "README.md").write_text(
            dataset_card(job.id, summary, {k: len(v) for k, v in by_split.items()}, kind),
            encoding="utf-8",
        )
        paths.append(str(out / "README.md"))
    if push_to_hub:
        _dataset_dict(by_split).push_to_hub(push_to_hub)
    return ExportReport(
        job_id=job.id,
        format=fmt,
        kind=kind,
        paths=paths,
        rows={k: len(v) for k, v in by_split.items()},
        excluded=excluded,
    )


def _check_out(out: Path, fmt: Format, has_splits: bool) -> None:
    """Refuse an --out that cannot take this export, before anything is written."""
    if fmt == "hf" or has_splits:
        what = "--format hf" if fmt == "hf" else "--split"
        if out.exists() and not out.is_dir():
            raise ExportError(f"{out}: exists and is not a directory ({what} writes a directory)")
        if fmt == "hf" and out.exists() and any(out.iterdir()):
            raise ExportError(f"{out}: directory exists and is not empty")
    elif out.is_dir():
        raise ExportError(
            f"{out}: is a directory; give a file path for --format {fmt} "
            "(a directory only with --split)"
        )
    above = out.parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise ExportError(f"{out}: {above} is a file, not a directory")


def _write(
    by_split: dict[str, list[dict[str, Any]]], out: Path, fmt: Format, has_splits: bool
) -> list[str]:
    if fmt == "hf":
        _dataset_dict(by_split).save_to_disk(str(out))
        return [str(out)]
    suffix = ".jsonl" if fmt == "jsonl" else ".parquet"
    if has_splits:
        out.mkdir(parents=True, exist_ok=True)
        targets = {name: out / f"{name}{suffix}" for name in by_split}
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        targets = {"train": out}
    for name, path in targets.items():
        if path.is_dir():
            raise ExportError(f"{path}: is a directory, in the way of the {name} split's file")
        rows = by_split[name]
        tmp = path.with_name(path.name + ".tmp")
        try:
            if fmt == "jsonl":
                with tmp.open("w", encoding="utf-8") as f:
                    for row in rows:
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(pa.Table.from_pylist(rows), tmp)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)  # a failed write leaves no half file behind
    return [str(p) for p in targets.values()]


def _dataset_dict(by_split: dict[str, list[dict[str, Any]]]) -> Any:
    from datasets import Dataset, DatasetDict

    return DatasetDict({name: Dataset.from_list(rows) for name, rows in by_split.items() if rows})


def _calibration_text(calibration: CalibrationFigures | None) -> str:
    if not calibration:
        return "raw: the judge's own probability (no calibration fits this judge)"
    text = f"calibrated by `{calibration.id}` (temperature {calibration.temperature:.2f}"
    held = (calibration.heldout or {}).get("calibrated")
    if held:
        agreement = held.get("agreement")
        text += f"; held-out ECE {held['ece']:.3f}, agreement " + (
            "n/a" if agreement is None else f"{agreement:.1%}"
        )
    return text + ")"


def _applied_text(summary: JobSummary) -> str:
    """Relevant selection: each principle that applied, in how many rows, with its mean P."""
    if summary.applied is None:
        return "not asked (principles picked at random)"
    if not summary.applied:
        return "none"
    return ", ".join(f.describe() for f in summary.applied)


def dataset_card(job_id: str, summary: JobSummary, rows: dict[str, int], kind: Kind) -> str:
    consistency = summary.position_consistency
    consistency_text = f"{consistency:.1%}" if consistency is not None else "n/a"
    lines = [
        "---",
        "tags: [charter, rlaif, constitutional-ai, "
        + ("dpo" if kind == "preference" else "sft")
        + "]",
        "---",
        "",
        f"# charter {kind} dataset ({job_id})",
        "",
        "AI-labelled data made by charter under a written constitution.",
        "",
        "| | |",
        "| --- | --- |",
        f"| constitution | {summary.constitution.version} (`{summary.constitution.digest[:12]}`) |",
        f"| judge | `{summary.judge}` |",
        f"| policy | `{summary.policy}` |",
        f"| mode | {summary.mode} |",
        f"| rows | {', '.join(f'{k}: {v}' for k, v in rows.items())} |",
        f"| prompts | {summary.prompts.total} ({summary.prompts.failed} failed) |",
        f"| preferences stored / exported | {summary.preferences} / {sum(rows.values())} |",
        f"| min confidence (p_chosen) | {summary.min_confidence} |",
        f"| judge protocol | {summary.protocol or 'n/a'} |",
        f"| p_chosen | {_calibration_text(summary.calibration)} |",
        f"| judge position consistency | {consistency_text} |",
        f"| principles that applied | {_applied_text(summary)} |",
        f"| quality gates | {summary.texts.describe()} |",
        f"| failed judge calls | {summary.parse_failures} unparseable, "
        f"{summary.backend_failures} backend errors, of {summary.judgments} judgments |",
        "",
        "Columns: `prompt`, "
        + ("`chosen`, `rejected`" if kind == "preference" else "`completion`")
        + ", then provenance: "
        + ", ".join(f"`{c}`" for c in PROVENANCE)
        + ".",
        "",
        "Load with `datasets.load_from_disk(PATH)`; the train split works with "
        + ("`trl.DPOTrainer`" if kind == "preference" else "`trl.SFTTrainer`")
        + " unchanged.",
        "",
    ]
    return "\n".join(lines)
