"""What an edit of the principles would do to a job, measured on a seeded sample of it.

A sample of the job's finished prompts is judged again, exactly as the job judged them (the
same candidates, settings and calibration, the same per-prompt code), under the edited
constitution. Model calls go through the store: a call's key holds its principle's text, so
only the questions asked under an edited principle reach the model, and what they answer is
kept, so applying the edit to the whole job later pays only for the prompts outside the
sample. The report compares old and new verdicts comparison by comparison (winners that
flip, with a Wilson interval on the rate, the change in p_chosen, rows entering or leaving
the export at the job's minimum confidence) and counts the calls the rest of the job would
take: exactly, by a dry pass that asks nothing and counts the questions the store cannot
answer (compare mode), or extrapolated from the sample (revise mode, where a new critique
changes which later calls are asked).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import sqlite_utils
from pydantic import BaseModel, ConfigDict, Field

from charter import calibrations
from charter.call_cache import CachedModel, store_secret
from charter.constitution import Constitution
from charter.jobs.impact_settings import ImpactSettings
from charter.jobs.modes import process_prompt
from charter.jobs.results import is_exportable, stored_judgments
from charter.jobs.spec import DEFAULT_MIN_CONFIDENCE
from charter.jobs.store import (
    JOB_PROMPTS,
    JobError,
    JobRecord,
    Preference,
    get_job,
    load_preferences,
)
from charter.jobs.summary import Prices
from charter.judge.agreement import wilson
from charter.judge.backends.base import (
    BackendError,
    ChatModel,
    ChatModelBase,
    Completion,
    GenerationRequest,
    Message,
    Usage,
)
from charter.judge.prompts import KeyedNonces
from charter.prompt_files import PromptRecord

Winner = Literal["a", "b", "tie"]


class FlippedRow(BaseModel):
    """A comparison whose winner changed side under the edit."""

    model_config = ConfigDict(extra="forbid")

    position: int
    prompt: str
    a: str
    b: str
    before: Winner | None
    after: Winner | None
    p_a_before: float | None
    p_a_after: float | None


class DeltaSummary(BaseModel):
    """The distribution of p_chosen(after) - p_chosen(before) over the sample's rows."""

    model_config = ConfigDict(extra="forbid")

    rows: int
    mean: float | None = None
    minimum: float | None = None
    p10: float | None = None
    median: float | None = None
    p90: float | None = None
    maximum: float | None = None
    histogram: list[int] = Field(
        default=[], description="Counts in 10 equal bins over [-1, 1], lowest first."
    )


class ImpactReport(BaseModel):
    """See the module docstring; every count is over the sampled prompts unless it says job."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    constitution_version: str
    edited_digest: str
    edited_version: str
    touched: list[str] = Field(description="Principles edited, added or removed.")
    defaults_changed: bool
    seed: int
    sampled_prompts: int
    job_prompts: int
    comparisons: int = Field(description="Comparisons found both before and after.")
    flipped: int
    flip_rate: float | None
    flip_interval: tuple[float, float] | None
    to_tie: int
    from_tie: int
    delta_p_chosen: DeltaSummary
    min_confidence: float
    exported_before: int
    exported_after: int
    entering: int
    leaving: int
    touched_in_sample: int = Field(
        description="Questions stored for the sampled prompts under the touched principles."
    )
    calls_made: int = Field(description="Model calls this preview made (the rest came stored).")
    calls_for_rest: int = Field(
        description="Model calls applying the edit to the job's other finished prompts takes."
    )
    calls_exact: bool = Field(description="False: calls_for_rest is extrapolated.")
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None = None
    cost_rest_usd: float | None = None
    flipped_rows: list[FlippedRow] = []


class _Counting(ChatModelBase):
    """Passes calls through, adding up what the replies cost."""

    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner
        self.usage = Usage()

    @property
    def spec(self) -> str:
        return self.inner.spec

    async def generate(self, request: GenerationRequest) -> Completion:
        reply = await self.inner.generate(request)
        self.usage = self.usage + reply.usage
        return reply

    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion:
        reply = await self.inner.choose(messages, options)
        self.usage = self.usage + reply.usage
        return reply

    async def aclose(self) -> None:
        return None  # the caller closes the model it lent


class _Unasked(ChatModelBase):
    """A model that answers nothing: behind a `CachedModel`, every call it is handed is one
    the store could not answer, which is what the dry pass counts."""

    def __init__(self, spec: str) -> None:
        self._spec = spec
        self.asked = 0

    @property
    def spec(self) -> str:
        return self._spec

    def _refuse(self) -> BackendError:
        self.asked += 1
        return BackendError(f"{self._spec}: not asked (counting only)")

    async def generate(self, request: GenerationRequest) -> Completion:
        raise self._refuse()

    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion:
        raise self._refuse()

    async def aclose(self) -> None:
        return None


_DRY: ContextVar[bool] = ContextVar("charter_impact_dry", default=False)
#: The judge's modules that log a failed call: quiet while the dry pass fails every call.
_JUDGE_LOGGERS = ("charter.judge.compare", "charter.judge.score", "charter.judge.critique",
                  "charter.judge.rank")  # fmt: skip


def _not_dry(record: logging.LogRecord) -> bool:
    return not _DRY.get()


@contextlib.contextmanager
def _dry_pass() -> Iterator[None]:
    """Within it (this task and the tasks it starts), the judge's failure warnings are
    dropped: every call fails on purpose there. Other tasks still log theirs."""
    token = _DRY.set(True)
    loggers = [logging.getLogger(name) for name in _JUDGE_LOGGERS]
    for logger in loggers:
        logger.addFilter(_not_dry)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(_not_dry)
        _DRY.reset(token)


def touched_principles(before: Constitution, after: Constitution) -> tuple[list[str], bool]:
    """Principles whose own digest differs (edited, added, removed), and whether the
    constitution's defaults changed (which can change every question)."""
    old = {p.id: p.digest for p in before.principles}
    new = {p.id: p.digest for p in after.principles}
    touched = sorted(pid for pid in old.keys() | new.keys() if old.get(pid) != new.get(pid))
    return touched, before.defaults != after.defaults


def _questions_under(result: dict[str, Any], touched: set[str]) -> int:
    """Stored questions (verdicts, scores, critiques, revisions) asked under `touched`."""
    count = sum(1 for q in stored_judgments(result) if q.get("principle_id") in touched)
    for chain in result.get("chains", []):
        for rnd in chain.get("rounds", []):
            if rnd.get("principle_id") in touched:
                count += sum(1 for step in (rnd.get("critique"), rnd.get("revision")) if step)
    return count


def _finished(
    db: sqlite_utils.Database, job_id: str
) -> list[tuple[int, PromptRecord, dict[str, Any]]]:
    return [
        (int(pos), PromptRecord.model_validate_json(record), json.loads(result or "{}"))
        for pos, record, result in db.execute(
            f"SELECT position, record, result FROM {JOB_PROMPTS} "
            "WHERE job_id = ? AND status = 'done' ORDER BY position",
            [job_id],
        )
    ]


def _replayed_policy(job: JobRecord, db: sqlite_utils.Database) -> ChatModel:
    """The job's policy as the store remembers it: the candidates it sampled come back as
    they were (with how each ended, so a text the token limit cut off is still rejected),
    and nothing is sampled anew (a call the store lacks fails that prompt)."""
    return CachedModel(_Unasked(job.spec.policy), db, job.spec.tenant)


def _comparisons(result: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (str(c.get("a")), str(c.get("b"))): c
        for c in result.get("comparisons", []) + result.get("verifications", [])
    }


def _p_chosen(comparisons: dict[tuple[str, str], dict[str, Any]], row: Preference) -> float | None:
    found = comparisons.get((row.chosen, row.rejected))
    if found is not None and found.get("p_a") is not None:
        return float(found["p_a"])
    found = comparisons.get((row.rejected, row.chosen))
    if found is not None and found.get("p_a") is not None:
        return 1.0 - float(found["p_a"])
    return None


def _summary(deltas: list[float]) -> DeltaSummary:
    if not deltas:
        return DeltaSummary(rows=0)
    ordered = sorted(deltas)
    deciles = statistics.quantiles(ordered, n=10, method="inclusive") if len(ordered) > 1 else []
    histogram = [0] * 10
    for d in ordered:
        histogram[min(9, int((d + 1.0) / 0.2))] += 1
    return DeltaSummary(
        rows=len(ordered),
        mean=statistics.fmean(ordered),
        minimum=ordered[0],
        p10=deciles[0] if deciles else ordered[0],
        median=statistics.median(ordered),
        p90=deciles[-1] if deciles else ordered[0],
        maximum=ordered[-1],
        histogram=histogram,
    )


def _row_id(row: Preference) -> tuple[int, str, str, str]:
    return (row.position, row.chosen, row.rejected, row.source)


@dataclass
class _Sampled:
    position: int
    record: PromptRecord
    before: dict[str, Any]


def _calibration(db: sqlite_utils.Database, job: JobRecord) -> calibrations.CalibrationFit | None:
    """The job's calibration as the edited job would apply it: verdicts under unchanged
    principles calibrated, those under an edited one raw (see `calibrations.fit_for`)."""
    if not job.spec.calibration:
        return None
    record = calibrations.get(db, job.spec.calibration)
    return calibrations.fit_for(record, job.constitution, job.spec.judge_config)


def sample_positions(positions: Sequence[int], settings: ImpactSettings) -> list[int]:
    """The seeded sample of prompt positions (sorted); all of them when there are fewer."""
    if len(positions) <= settings.sample:
        return sorted(positions)
    return sorted(random.Random(settings.seed).sample(list(positions), settings.sample))


async def preview_impact(
    db: sqlite_utils.Database,
    job_id: str,
    edited: Constitution,
    judge: ChatModel,
    settings: ImpactSettings = ImpactSettings(),  # noqa: B008 - frozen
    *,
    prices: Prices | None = None,
    concurrency: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImpactReport:
    """Judge a seeded sample of `job_id`'s finished prompts again under `edited` (see the
    module docstring). `judge` is the job's judge model; it is not closed here."""
    job = get_job(db, job_id)
    if job.spec.judge != judge.spec:
        raise JobError(f"job {job.id} was judged by {job.spec.judge}, not {judge.spec}")
    touched, defaults_changed = touched_principles(job.constitution, edited)
    finished = _finished(db, job.id)
    if not finished:
        raise JobError(f"job {job.id} has no finished prompt to judge again")
    chosen = set(sample_positions([pos for pos, _, _ in finished], settings))
    sampled = [_Sampled(pos, rec, res) for pos, rec, res in finished if pos in chosen]
    rest = [(pos, rec, res) for pos, rec, res in finished if pos not in chosen]
    edited_job = job.model_copy(update={"constitution": edited})
    calibration = _calibration(db, edited_job)
    nonces = KeyedNonces(store_secret(db))
    counting = _Counting(judge)
    cached = CachedModel(counting, db, job.spec.tenant)
    policy = _replayed_policy(job, db)
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def again(item: _Sampled) -> tuple[list[Preference], dict[str, Any]]:
        nonlocal done
        async with gate:
            prefs, result, _ = await process_prompt(
                edited_job, item.position, item.record, cached, policy, nonces, calibration
            )
        done += 1
        if on_progress:
            on_progress(done, len(sampled))
        return prefs, result

    if on_progress:
        on_progress(0, len(sampled))
    after = await asyncio.gather(*(again(item) for item in sampled))
    rows_before = [r for r in load_preferences(db, job.id) if r.position in chosen]
    report = _compare(job, edited, sampled, after, rows_before)
    rest_calls, exact = await _calls_for_rest(
        db, edited_job, rest, cached.stats.made, len(sampled), calibration, nonces
    )
    cost = cost_rest = None
    if prices is not None:
        cost = (
            counting.usage.prompt_tokens * prices.prompt
            + counting.usage.completion_tokens * prices.completion
        ) / 1e6
        cost_rest = cost / cached.stats.made * rest_calls if cached.stats.made else 0.0
    return report.model_copy(
        update={
            "touched": touched,
            "defaults_changed": defaults_changed,
            "seed": settings.seed,
            "job_prompts": len(finished),
            "touched_in_sample": sum(
                _questions_under(item.before, set(touched)) for item in sampled
            ),
            "calls_made": cached.stats.made,
            "calls_for_rest": rest_calls,
            "calls_exact": exact,
            "prompt_tokens": counting.usage.prompt_tokens,
            "completion_tokens": counting.usage.completion_tokens,
            "cost_usd": cost,
            "cost_rest_usd": cost_rest,
        }
    )


async def _calls_for_rest(
    db: sqlite_utils.Database,
    edited_job: JobRecord,
    rest: list[tuple[int, PromptRecord, dict[str, Any]]],
    made: int,
    sampled: int,
    calibration: calibrations.CalibrationFit | None,
    nonces: KeyedNonces,
) -> tuple[int, bool]:
    """Calls the job's other prompts would make under the edit: counted by a dry pass in
    compare mode (which questions a ranking asks does not depend on the answers), else
    extrapolated from the sample's."""
    if not rest:
        return 0, True
    if edited_job.spec.mode != "compare":
        return round(made / sampled * len(rest)) if sampled else 0, False
    unasked = _Unasked(edited_job.spec.judge)
    dry = CachedModel(unasked, db, edited_job.spec.tenant)
    policy = _replayed_policy(edited_job, db)
    with _dry_pass():
        for pos, record, _ in rest:
            await process_prompt(edited_job, pos, record, dry, policy, nonces, calibration)
    # Calls the store cannot answer, and (for a tenant) stored calls it has not had yet.
    return unasked.asked + dry.stats.made, True


def _compare(
    job: JobRecord,
    edited: Constitution,
    sampled: list[_Sampled],
    after: list[tuple[list[Preference], dict[str, Any]]],
    rows_before: list[Preference],
) -> ImpactReport:
    min_confidence = float(job.summary.get("min_confidence", DEFAULT_MIN_CONFIDENCE))
    flipped: list[FlippedRow] = []
    compared = to_tie = from_tie = 0
    new_by_position: dict[int, dict[tuple[str, str], dict[str, Any]]] = {}
    rows_after: list[Preference] = []
    for item, (prefs, result) in zip(sampled, after, strict=True):
        rows_after += prefs
        new = _comparisons(result)
        new_by_position[item.position] = new
        for pair, old in _comparisons(item.before).items():
            now = new.get(pair)
            if now is None or old.get("winner") is None or now.get("winner") is None:
                continue
            compared += 1
            before, later = old["winner"], now["winner"]
            to_tie += before != "tie" and later == "tie"
            from_tie += before == "tie" and later != "tie"
            if {before, later} == {"a", "b"}:
                flipped.append(
                    FlippedRow(
                        position=item.position,
                        prompt=item.record.text,
                        a=pair[0],
                        b=pair[1],
                        before=before,
                        after=later,
                        p_a_before=old.get("p_a"),
                        p_a_after=now.get("p_a"),
                    )
                )
    deltas = []
    for row in rows_before:
        now_p = _p_chosen(new_by_position.get(row.position, {}), row)
        if now_p is not None and row.p_chosen is not None:
            deltas.append(now_p - row.p_chosen)
    before_ids = {_row_id(r) for r in rows_before if is_exportable(r, min_confidence)}
    after_ids = {_row_id(r) for r in rows_after if is_exportable(r, min_confidence)}
    return ImpactReport(
        job_id=job.id,
        constitution_version=job.constitution.version,
        edited_digest=edited.digest,
        edited_version=edited.version,
        touched=[],
        defaults_changed=False,
        seed=0,
        sampled_prompts=len(sampled),
        job_prompts=0,
        comparisons=compared,
        flipped=len(flipped),
        flip_rate=len(flipped) / compared if compared else None,
        flip_interval=wilson(len(flipped), compared),
        to_tie=to_tie,
        from_tie=from_tie,
        delta_p_chosen=_summary(deltas),
        min_confidence=min_confidence,
        exported_before=len(before_ids),
        exported_after=len(after_ids),
        entering=len(after_ids - before_ids),
        leaving=len(before_ids - after_ids),
        touched_in_sample=0,
        calls_made=0,
        calls_for_rest=0,
        calls_exact=True,
        prompt_tokens=0,
        completion_tokens=0,
        flipped_rows=flipped,
    )
