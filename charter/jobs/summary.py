"""A job's figures, read back from what the store holds (so a resumed job's summary covers all
of it): the `JobSummary` a run ends with, `charter jobs show` prints, the service stores and the
dataset card states."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import sqlite_utils
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from charter import calibrations
from charter.calibrations import CalibrationFit
from charter.jobs.results import is_exportable, stored_judgments, stored_steps
from charter.jobs.spec import DEFAULT_MIN_CONFIDENCE, Mode
from charter.jobs.store import (
    JobRecord,
    Preference,
    load_preferences,
    prompt_counts,
    prompt_results,
)
from charter.judge.quality import describe
from charter.qualification import Qualification, qualification


@dataclass
class Prices:
    """USD per million tokens, for the cost line of the summary."""

    prompt: float = 0.0
    completion: float = 0.0


class _Figures(BaseModel):
    """A part of the summary; the fields in `absent_when_none` are left out of its JSON while
    None (the summary has carried them only when they apply: a cost when prices were given, an
    error when prompts failed)."""

    model_config = ConfigDict(extra="forbid")

    absent_when_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _leave_out_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in self.absent_when_none:
            if data.get(name) is None:
                data.pop(name, None)
        return data


class ConstitutionRef(_Figures):
    digest: str
    version: str


class CalibrationFigures(_Figures):
    """What a reader of the job needs about its calibration: which, how strong, how good."""

    id: str
    temperature: float
    bias: float
    heldout: dict[str, Any]
    stale_principles: list[str] = []
    note: str | None = None


class PromptFigures(_Figures):
    total: int
    done: int
    failed: int
    pending: int
    skipped: int = 0


class TextOutcomes(_Figures):
    """What became of each text that could have been `chosen`: kept, or rejected and why."""

    kind: Literal["candidates", "revisions"]
    total: int
    kept: int
    rejected: dict[str, int]

    def describe(self) -> str:
        """In words: "12 revisions: 9 kept, 2 cut off by the token limit"."""
        line = f"{self.total} {self.kind}: {self.kept} kept"
        rejected = describe(self.rejected)
        return f"{line}, {rejected}" if rejected else line


class Tokens(_Figures):
    prompt: int
    completion: int


class CallCounts(_Figures):
    """A model's calls made and reused, and with several endpoints, each one's share."""

    model_config = ConfigDict(extra="ignore")
    absent_when_none = frozenset({"endpoints"})

    made: int
    reused: int
    endpoints: list[dict[str, Any]] | None = None


class JobCalls(_Figures):
    """One run's model calls, by role (`policy` None: the job sampled nothing)."""

    model_config = ConfigDict(extra="ignore")

    judge: CallCounts
    policy: CallCounts | None = None

    @property
    def made(self) -> int:
        return self.judge.made + (self.policy.made if self.policy else 0)

    @property
    def reused(self) -> int:
        return self.judge.reused + (self.policy.reused if self.policy else 0)


class AppliedFigures(_Figures):
    principle_id: str
    rows: int
    mean_p: float | None

    def describe(self) -> str:
        p = "always" if self.mean_p is None else f"P {self.mean_p:.2f}"
        return f"{self.principle_id} ({self.rows} rows, {p})"


def applied_figures(preferences: list[Preference]) -> list[AppliedFigures] | None:
    """Which principles applied to the rows' prompts (None when no row selected by relevance)."""
    rows = [p for p in preferences if p.applicable is not None]
    if not rows:
        return None
    seen: dict[str, list[float | None]] = {}
    for row in rows:
        for applied in row.applicable or []:
            seen.setdefault(applied.principle_id, []).append(applied.p)
    figures = [
        AppliedFigures(
            principle_id=pid,
            rows=len(ps),
            mean_p=None if any(p is None for p in ps) else sum(p or 0.0 for p in ps) / len(ps),
        )
        for pid, ps in seen.items()
    ]
    return sorted(figures, key=lambda f: (-f.rows, f.principle_id))


class JobSummary(_Figures):
    """A job's figures. `calls` is the last run's (absent when read back without a run),
    `cost_usd` is there when prices were given, `error` when prompts failed, `batch` when the
    judge answered through the Batch API."""

    absent_when_none = frozenset({"cost_usd", "calls", "error", "batch", "applied"})

    job_id: str
    mode: Mode
    constitution: ConstitutionRef
    judge: str
    judge_qualification: Qualification | None = Field(
        default=None,
        description="How far the judge was measured to agree with people (`charter judge "
        "eval`, or a calibration's held-out pairs), or unqualified: its figures are only as "
        "good as that. None in summaries stored before it was recorded.",
    )
    policy: str
    protocol: str | None
    calibration: CalibrationFigures | None
    uncalibrated_because: str | None = None
    prompts: PromptFigures
    preferences: int
    exportable: int
    filtered: int
    min_confidence: float
    judgments: int
    parse_failures: int
    backend_failures: int
    failed_judgments: int
    incomplete_prompts: int
    texts: TextOutcomes
    position_consistency: float | None
    ties: int
    tokens: Tokens
    cost_usd: float | None = None
    calls: JobCalls | None = None
    error: str | None = None
    batch: dict[str, Any] | None = None
    applied: list[AppliedFigures] | None = Field(
        default=None,
        description="Relevant selection: each principle that applied to some row's prompt, in "
        "how many rows, and the judge's mean P(Yes) (None: it always applies).",
    )


def summarise_job(
    db: sqlite_utils.Database,
    job: JobRecord,
    *,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    prices: Prices | None = None,
) -> JobSummary:
    """Figures for a job from what is stored, so a resumed job's summary covers all of it."""
    counts = prompt_counts(db, job.id)
    attempted = prompt_results(db, job.id)
    results = [result for _, result in attempted]
    finished = [result for status, result in attempted if status == "done"]
    preferences = load_preferences(db, job.id)
    comparisons = [c for r in results for c in r.get("comparisons", [])]
    judgments = [j for r in results for j in stored_judgments(r)]
    consistency = [
        c["position_consistent"] for c in comparisons if c.get("position_consistent") is not None
    ]
    steps = [step for r in results for step in stored_steps(r)]
    usage = [j.get("usage", {}) for j in judgments] + [s.get("usage", {}) for s in steps]
    prompt_tokens = sum(u.get("prompt_tokens", 0) for u in usage)
    completion_tokens = sum(u.get("completion_tokens", 0) for u in usage)
    exportable = [p for p in preferences if is_exportable(p, min_confidence)]
    return JobSummary(
        job_id=job.id,
        mode=job.spec.mode,
        constitution=ConstitutionRef(
            digest=job.constitution.digest, version=job.constitution.version
        ),
        judge=job.spec.judge,
        judge_qualification=job_qualification(db, job),
        policy=job.spec.policy,
        protocol=(
            job.spec.judge_config.protocol
            if job.spec.mode == "compare" or job.spec.quality.verify_revisions
            else None
        ),
        calibration=_calibration_figures(db, job),
        uncalibrated_because=(
            None
            if job.spec.calibration is not None
            or (job.spec.mode == "revise" and not job.spec.quality.verify_revisions)
            else calibrations.why_none(db, job.spec.judge, job.constitution, job.spec.judge_config)
        ),
        prompts=PromptFigures(
            total=sum(counts.values()),
            done=counts.get("done", 0),
            failed=counts.get("failed", 0),
            pending=counts.get("pending", 0),
            skipped=sum(1 for r in results if "skipped" in r),
        ),
        preferences=len(preferences),
        exportable=len(exportable),
        filtered=len(preferences) - len(exportable),
        min_confidence=min_confidence,
        judgments=len(judgments),
        parse_failures=sum(1 for j in judgments if j.get("error_kind") == "parse"),
        backend_failures=sum(1 for j in judgments if j.get("error_kind") == "backend")
        + sum(1 for step in steps if step.get("error")),
        failed_judgments=sum(1 for j in judgments if j.get("error")),
        incomplete_prompts=sum(1 for r in results if r.get("incomplete")),
        texts=text_outcomes(job, finished, preferences, min_confidence),
        position_consistency=(sum(consistency) / len(consistency) if consistency else None),
        ties=sum(1 for c in comparisons if c.get("winner") == "tie"),
        tokens=Tokens(prompt=prompt_tokens, completion=completion_tokens),
        applied=applied_figures(preferences),
        cost_usd=(
            round((prompt_tokens * prices.prompt + completion_tokens * prices.completion) / 1e6, 6)
            if prices is not None
            else None
        ),
    )


def job_qualification(db: sqlite_utils.Database, job: JobRecord) -> Qualification:
    """The job's judge's qualification; a service tenant's job is not told of calibrations
    fitted in the store (another tenant's labels may be behind them)."""
    return qualification(db, job.spec.judge, store_calibrations=job.spec.tenant is None)


def text_outcomes(
    job: JobRecord,
    results: list[dict[str, Any]],
    preferences: list[Preference],
    min_confidence: float,
) -> TextOutcomes:
    """What became of each text that could have been `chosen` (in finished prompts' `results`):
    kept, or rejected and why.

    Compare mode counts the candidates (kept: flawless, so ranked and choosable); revise mode
    counts revision chains (kept: an exportable row; a row the judge did not prefer at
    `min_confidence` counts as `not_preferred`).
    """
    if job.spec.mode == "compare":
        flaws = [c.get("flaw") for r in results for c in r.get("candidates", [])]
        kept = flaws.count(None)
    else:
        flaws = [flaw for r in results for flaw in r.get("rejected", [])]
        rows = [p for p in preferences if p.source == "revision"]
        kept = sum(1 for p in rows if is_exportable(p, min_confidence))
        flaws = [f for f in flaws if f] + ["not_preferred"] * (len(rows) - kept) + [None] * kept
    rejected = Counter(f for f in flaws if f)
    return TextOutcomes(
        kind="candidates" if job.spec.mode == "compare" else "revisions",
        total=len(flaws),
        kept=kept,
        rejected=dict(rejected.most_common()),
    )


def calibration_fit(db: sqlite_utils.Database, job: JobRecord) -> CalibrationFit | None:
    """The job's calibration and the verdicts it may calibrate under the job's constitution."""
    if job.spec.calibration is None:
        return None
    record = calibrations.get(db, job.spec.calibration)
    return calibrations.fit_for(record, job.constitution, job.spec.judge_config)


def _calibration_figures(db: sqlite_utils.Database, job: JobRecord) -> CalibrationFigures | None:
    """What a reader of the job needs about its calibration: which, how strong, how good,
    and which principles' verdicts it leaves raw."""
    fit = calibration_fit(db, job)
    if fit is None:
        return None
    record = fit.record
    return CalibrationFigures(
        id=record.id,
        temperature=record.calibration.temperature,
        bias=record.calibration.bias,
        heldout=record.heldout,
        stale_principles=list(fit.stale),
        note=calibrations.stale_note(fit, job.spec.judge_config) if fit.partial else None,
    )
