"""The main job: prompts in, preference triples out, resumable and never paying twice.

For each prompt still pending in a job: take its given candidates or sample `n` from the
policy; then either rank them with the judge (`compare`, RL-CAI) or run critique -> revision
chains on them (`revise`, SL-CAI); then write the prompt's preferences and mark it done in one
transaction (see `charter.jobs`). Every model call goes through `CachedModel`, so a killed
job resumes from its last completed call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils
from pydantic import BaseModel

from charter import calibrations
from charter.calibrations import CalibrationFit
from charter.calls import CachedModel, CallStats, store_secret
from charter.inputs import PromptRecord
from charter.jobs import (
    JobRecord,
    JobSpec,
    Preference,
    ensure_tables,
    finish_prompt,
    job_prompts,
    load_preferences,
    prompt_attempts,
    prompt_counts,
    prompt_results,
    reset_failed,
    set_status,
)
from charter.judge import compare, critique_and_revise, rank
from charter.judge.backends.base import (
    BackendError,
    ChatModel,
    Completion,
    GenerationRequest,
    Message,
)
from charter.judge.backends.tally import tallying
from charter.judge.critique import RevisionChain
from charter.judge.prompts import KeyedNonces
from charter.judge.quality import Flaw, answer_flaw, describe
from charter.judge.rank import calibrated
from charter.judge.results import Comparison
from charter.leases import LeaseSettings, held
from charter.service.options import RunOptions
from charter.store import SqliteError, StoreError

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called with (prompts finished, prompts in the job) as the job advances."""

DEFAULT_MIN_CONFIDENCE: float = RunOptions.model_fields["min_confidence"].default
DEFAULT_MAX_ATTEMPTS: int = RunOptions.model_fields["max_attempts"].default
STOP_AFTER_FAILURES = 3
STOP_GRACE_S = 5.0
"""After a stop request, how long model calls already in flight get to finish (and be stored)."""


@dataclass
class Prices:
    """USD per million tokens, for the cost line of the summary."""

    prompt: float = 0.0
    completion: float = 0.0


@dataclass
class RunStats:
    judge: CallStats = field(default_factory=CallStats)
    policy: CallStats = field(default_factory=CallStats)


class JobFailed(Exception):
    """Every prompt attempted failed: the judge (or policy) is unreachable or always failing."""


class JobStopped(Exception):
    """The job stopped on request (a signal) before its end; it is stored as `stopped`."""

    def __init__(self, summary: dict[str, Any]) -> None:
        p = summary["prompts"]
        super().__init__(
            f"stopped {summary['job_id']}: {p['done']}/{p['total']} prompts done, "
            f"{summary['preferences']} preferences stored; resume with "
            f"`charter generate --resume {summary['job_id']}`"
        )
        self.summary = summary


class StopRequest:
    """Asks a running job to stop early (the CLI calls `request` on SIGINT or SIGTERM).

    The first request starts no new model call, lets the calls in flight finish and be stored
    (for up to `STOP_GRACE_S`), and leaves unfinished prompts pending; a second request
    abandons the calls still in flight at once.
    """

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.urgent = asyncio.Event()

    def request(self) -> None:
        (self.urgent if self.requested.is_set() else self.requested).set()


class _Stopping(Exception):
    """Raised instead of making a model call once the job is stopping; the prompt stays pending.
    The judge catches only `BackendError`, so this reaches `run_job` untouched."""


class _StopGate:
    """A model that makes no new call once `stopping` is set, and knows when none is in flight."""

    def __init__(self, inner: ChatModel, stopping: asyncio.Event) -> None:
        self.inner = inner
        self.stopping = stopping
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    @property
    def spec(self) -> str:
        return self.inner.spec

    async def generate(self, request: GenerationRequest) -> Completion:
        return await self._call(lambda: self.inner.generate(request))

    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion:
        return await self._call(lambda: self.inner.choose(messages, options))

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def _call(self, call: Callable[[], Awaitable[Completion]]) -> Completion:
        if self.stopping.is_set():
            raise _Stopping
        self.in_flight += 1
        self.idle.clear()
        try:
            return await call()
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()


class Candidate(BaseModel):
    """A response to rank or revise, with why its generation stopped and any flaw found."""

    text: str
    finish_reason: str | None = None
    flaw: Flaw | None = None


async def sample_candidates(
    policy: ChatModel, record: PromptRecord, spec: JobSpec
) -> list[Candidate]:
    """`spec.n` responses from the policy, sample i seeded with `seed + i` (reproducible)."""
    replies = await asyncio.gather(
        *(
            policy.generate(
                GenerationRequest(
                    messages=record.messages,
                    max_tokens=spec.max_tokens,
                    temperature=spec.temperature,
                    seed=spec.judge_config.seed + i,
                    frequency_penalty=spec.frequency_penalty,
                )
            )
            for i in range(spec.n)
        )
    )
    return [Candidate(text=r.text.strip(), finish_reason=r.finish_reason) for r in replies]


def checked(candidates: list[Candidate], prompt: str) -> list[Candidate]:
    """The distinct candidates, each with its quality flaw (if any) recorded."""
    seen: set[str] = set()
    result: list[Candidate] = []
    for candidate in candidates:
        if candidate.text in seen:
            continue
        seen.add(candidate.text)
        flaw = answer_flaw(candidate.text, prompt=prompt, finish_reason=candidate.finish_reason)
        result.append(candidate.model_copy(update={"flaw": flaw}))
    return result


async def run_job(
    db: sqlite_utils.Database,
    job: JobRecord,
    judge: ChatModel,
    policy: ChatModel | None,
    *,
    concurrency: int = 8,
    on_progress: ProgressCallback | None = None,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    prices: Prices | None = None,
    resume_with: str | None = None,
    stop_request: StopRequest | None = None,
    lease: LeaseSettings | None = None,
) -> dict[str, Any]:
    """Run (or resume) `job` to the end and return its summary.

    `concurrency` bounds the prompts in flight; the models bound their own requests. A prompt
    whose model calls did not all succeed is left failed, to be asked again (only the failed
    calls: the others are answered from the store) by the next run, until its `max_attempts`-th
    run, which keeps what succeeded and records what did not. `resume_with` is how the job's
    owner resumes it, for the error of a job left with failed prompts (default: the CLI's
    `charter generate --resume`).

    The job's lease (`charter.leases`, `lease` or the environment's settings) is held
    throughout: a second runner of the same job gets `LeaseHeld` instead of paying for the
    same calls. `stop_request` ends the run early with `JobStopped` (see `StopRequest`).
    """
    ensure_tables(db)  # a store from an earlier release gains the columns rows now carry
    async with held(db, job.id, lease):
        return await _run_held(
            db,
            job,
            judge,
            policy,
            concurrency=concurrency,
            on_progress=on_progress,
            min_confidence=min_confidence,
            max_attempts=max_attempts,
            prices=prices,
            resume_with=resume_with,
            stop_request=stop_request,
        )


async def _run_held(
    db: sqlite_utils.Database,
    job: JobRecord,
    judge: ChatModel,
    policy: ChatModel | None,
    *,
    concurrency: int,
    on_progress: ProgressCallback | None,
    min_confidence: float,
    max_attempts: int,
    prices: Prices | None,
    resume_with: str | None,
    stop_request: StopRequest | None,
) -> dict[str, Any]:
    """`run_job`'s work, done while holding the job's lease."""
    calibration = _calibration_fit(db, job)
    retried = reset_failed(db, job.id)
    if retried:
        log.info("retrying %d prompt(s) that failed before", retried)
    stopping = stop_request.requested if stop_request else asyncio.Event()
    gates = [_StopGate(model, stopping) for model in (judge, policy) if model is not None]
    cached_judge = CachedModel(gates[0], db, job.spec.tenant)
    cached_policy = CachedModel(gates[1], db, job.spec.tenant) if policy is not None else None
    nonces = KeyedNonces(store_secret(db))
    pending = job_prompts(db, job.id, status="pending")
    counts = prompt_counts(db, job.id)
    total = sum(counts.values())
    finished = total - len(pending)
    if on_progress:
        on_progress(finished, total)

    gate = asyncio.Semaphore(concurrency)
    successes = 0
    failures: list[str] = []
    stop = asyncio.Event()

    async def one(position: int, record: PromptRecord) -> None:
        nonlocal finished, successes
        async with gate:
            if stop.is_set() or stopping.is_set():
                return
            attempt = prompt_attempts(db, job.id, position) + 1
            try:
                preferences, result, error = await _process(
                    job, position, record, cached_judge, cached_policy, nonces, calibration
                )
            except _Stopping:  # left pending: the next run asks its remaining calls
                return
            except (SqliteError, StoreError):
                raise  # the store refused a write: no later prompt can be saved either
            except BackendError as exc:  # a model call that failed for good: asked again later
                log.warning("prompt %d failed: %s", position, exc)
                preferences, result, error = [], {}, str(exc)
            except Exception as exc:  # a bug: keep going, with its traceback in the log
                log.exception("prompt %d failed", position)
                preferences, result, error = [], {}, f"{type(exc).__name__}: {exc}"
            failed_calls = count_failed_calls(result)
            if error is None and failed_calls:
                if attempt < max_attempts:
                    preferences = []
                    error = (
                        f"{failed_calls} model call(s) failed (attempt {attempt} of "
                        f"{max_attempts}; the next run asks them again): {_first_error(result)}"
                    )
                else:
                    result["incomplete"] = failed_calls  # kept with what succeeded
            finish_prompt(db, job.id, position, preferences, result, error)
            if error:
                failures.append(error)
                if not successes and len(failures) >= STOP_AFTER_FAILURES:
                    stop.set()
            else:
                successes += 1
            finished += 1
            if on_progress:
                on_progress(finished, total)

    set_status(db, job.id, "running")
    with tallying() as endpoints:  # this run's calls to each endpoint of a shared fleet
        work = asyncio.ensure_future(asyncio.gather(*(one(pos, rec) for pos, rec in pending)))
        if stop_request is None:
            await work
        else:
            await _finish_or_stop(work, stop_request, gates)

    summary = summarise(db, job, min_confidence=min_confidence, prices=prices)
    summary["calls"] = {
        "judge": _call_counts(cached_judge.stats, endpoints.report(judge)),
        "policy": (
            _call_counts(cached_policy.stats, endpoints.report(policy)) if cached_policy else None
        ),
    }
    if stop.is_set():
        error = (
            f"stopped after the first {len(failures)} prompts all failed; last error: "
            f"{failures[-1]}"
        )
        set_status(db, job.id, "failed", summary=summary, error=error)
        raise JobFailed(error)
    if stopping.is_set() and summary["prompts"]["pending"]:
        set_status(db, job.id, "stopped", summary=summary)
        raise JobStopped(summary)
    failed = summary["prompts"]["failed"]
    if failed:
        resume = resume_with or f"`charter generate --resume {job.id}`"
        summary["error"] = (
            f"{failed} prompt(s) failed (last error: {failures[-1] if failures else 'unknown'}); "
            f"resume with {resume}"
        )
        set_status(db, job.id, "failed", summary=summary, error=summary["error"])
    else:
        set_status(db, job.id, "done", summary=summary)
    return summary


def _call_counts(stats: CallStats, endpoints: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A model's calls made and reused, and with several endpoints, each one's share."""
    counts: dict[str, Any] = {"made": stats.made, "reused": stats.reused}
    if endpoints is not None:
        counts["endpoints"] = endpoints
    return counts


async def _finish_or_stop(
    work: asyncio.Future[Any], stop_request: StopRequest, gates: list[_StopGate]
) -> None:
    """Await the job's prompts; once a stop is requested, give the model calls in flight up to
    `STOP_GRACE_S` (or until a second request) to finish and be stored, then abandon the rest."""
    requested = asyncio.ensure_future(stop_request.requested.wait())
    try:
        await asyncio.wait([work, requested], return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            work.result()  # raises what escaped a prompt (a store that refused a write)
            return

        async def drained() -> None:
            await asyncio.wait([work])
            for gate in gates:  # calls a prompt left behind when a sibling call stopped it
                await gate.idle.wait()

        finishing = asyncio.ensure_future(drained())
        urgent = asyncio.ensure_future(stop_request.urgent.wait())
        await asyncio.wait(
            [finishing, urgent], timeout=STOP_GRACE_S, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in (finishing, urgent):
            waiter.cancel()
        if work.done() and not work.cancelled():
            work.result()
    finally:
        requested.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work


async def _process(
    job: JobRecord,
    position: int,
    record: PromptRecord,
    judge: ChatModel,
    policy: ChatModel | None,
    nonces: KeyedNonces,
    calibration: CalibrationFit | None = None,
) -> tuple[list[Preference], dict[str, Any], str | None]:
    spec = job.spec
    if record.responses is not None:
        candidates = [Candidate(text=text) for text in record.responses]
    else:
        if policy is None:
            raise ValueError("no candidate responses given and no policy model to sample them")
        candidates = await sample_candidates(policy, record, spec)
    candidates = checked(candidates, record.text)
    common = {
        "job_id": job.id,
        "position": position,
        "prompt_key": record.key,
        "prompt": record.model_dump(mode="json")["prompt"],
        "judge": spec.judge,
        "policy": spec.policy if record.responses is None else "given",
        "constitution_digest": job.constitution.digest,
        "constitution_version": job.constitution.version,
    }
    judging = _Judging(judge, job, nonces, calibration)
    if spec.mode == "compare":
        return await _compare(judging, record, candidates, common)
    return await _revise(judging, record, candidates, common)


@dataclass
class _Judging:
    """What every judge call of one prompt needs."""

    judge: ChatModel
    job: JobRecord
    nonces: KeyedNonces
    calibration: CalibrationFit | None

    @property
    def calibration_id(self) -> str | None:
        return self.calibration.record.id if self.calibration else None


async def _compare(
    judging: _Judging, record: PromptRecord, candidates: list[Candidate], common: dict[str, Any]
) -> tuple[list[Preference], dict[str, Any], str | None]:
    """Rank the candidates (the flawless ones, unless the job ranks flawed ones too)."""
    spec = judging.job.spec
    ranked = [  # an empty text is nothing to rank, even on request
        c
        for c in candidates
        if c.flaw is None or (spec.quality.rank_flawed_candidates and c.flaw != "empty")
    ]
    flawed = {c.text for c in candidates if c.flaw is not None}
    listed = {"candidates": [c.model_dump(mode="json") for c in candidates]}
    if len(ranked) < 2:
        return [], {**listed, "skipped": "fewer than two usable candidates"}, None
    ranking = await rank(
        judging.judge,
        judging.job.constitution,
        record.text,
        [c.text for c in ranked],
        spec.judge_config,
        strategy=spec.pairs,
        calibration=judging.calibration.record.calibration if judging.calibration else None,
        calibrate_only=judging.calibration.only if judging.calibration else None,
        nonces=judging.nonces,
    )
    result = {**listed, **ranking.model_dump(mode="json")}
    if ranking.failed_comparisons == len(ranking.comparisons):
        return [], result, f"every comparison failed: {_first_error(result)}"
    preferences = [
        Preference(
            **common,
            chosen=pair.chosen,
            rejected=pair.rejected,
            source="comparison",
            p_chosen=pair.p_chosen,
            p_chosen_raw=pair.p_chosen if pair.p_chosen_raw is None else pair.p_chosen_raw,
            calibration=judging.calibration_id if pair.p_chosen_raw is not None else None,
            protocol=ranking.protocol,
            margin=pair.margin,
            position_consistent=pair.position_consistent,
            principles=pair.principle_ids,
        )
        for pair in ranking.pairs
        if pair.chosen not in flawed
    ]
    return preferences, result, None


async def _revise(
    judging: _Judging, record: PromptRecord, candidates: list[Candidate], common: dict[str, Any]
) -> tuple[list[Preference], dict[str, Any], str | None]:
    """Critique and revise every candidate; keep the revisions the judge prefers (if asked)."""
    job = judging.job
    originals = [c.text for c in candidates if c.flaw != "empty"]
    chains = await asyncio.gather(
        *(
            critique_and_revise(
                judging.judge,
                job.constitution,
                record.text,
                original,
                job.spec.judge_config,
                nonces=judging.nonces,
            )
            for original in originals
        )
    )
    revised = [c.completed > 0 and c.final != c.original for c in chains]
    checks: list[Comparison | None] = [None] * len(chains)
    if job.spec.quality.verify_revisions:
        to_check = [i for i, is_revised in enumerate(revised) if is_revised]
        verdicts = await asyncio.gather(*(_verify(judging, chains[i]) for i in to_check))
        for i, verdict in zip(to_check, verdicts, strict=True):
            checks[i] = verdict
    result: dict[str, Any] = {
        "candidates": [c.model_dump(mode="json") for c in candidates],
        "chains": [c.model_dump(mode="json") for c in chains],
        "verifications": [c.model_dump(mode="json") for c in checks if c is not None],
        "rejected": [
            _rejection(chain, is_revised, check)
            for chain, is_revised, check in zip(chains, revised, checks, strict=True)
        ],
    }
    if chains and all(c.error for c in chains):
        return [], result, f"every revision chain failed: {chains[0].error}"
    preferences = [
        Preference(
            **common,
            chosen=chain.final,
            rejected=chain.original,
            source="revision",
            principles=[r.principle_id for r in chain.rounds if r.ok],
            critique=next(
                (r.critique.text for r in reversed(chain.rounds) if r.ok and r.critique.text),
                None,
            ),
            **_verdict_fields(check, judging.calibration_id),
        )
        for chain, is_revised, check in zip(chains, revised, checks, strict=True)
        if is_revised and (check is None or check.p_a is not None)
    ]
    return preferences, result, None


def _rejection(chain: RevisionChain, revised: bool, check: Comparison | None) -> Flaw | None:
    """Why a chain made no row (None: it made one, which the judge may still not prefer)."""
    if chain.flaw is not None:
        return chain.flaw
    if not revised:
        return "unchanged"
    return "failed" if check is not None and check.p_a is None else None


async def _verify(judging: _Judging, chain: RevisionChain) -> Comparison:
    """The judge's verdict on the final revision (as `a`) against the original (as `b`)."""
    comparison = await compare(
        judging.judge,
        judging.job.constitution,
        chain.prompt,
        chain.final,
        chain.original,
        judging.job.spec.judge_config,
        nonces=judging.nonces,
    )
    if judging.calibration is not None:
        fit = judging.calibration
        comparison = calibrated(comparison, fit.record.calibration, fit.only)
    return comparison


def _verdict_fields(check: Comparison | None, calibration_id: str | None) -> dict[str, Any]:
    """A revision row's p_chosen and provenance from its check (nothing when unchecked)."""
    if check is None:
        return {}
    return {
        "p_chosen": check.p_a,
        "p_chosen_raw": check.p_a if check.p_a_raw is None else check.p_a_raw,
        "calibration": calibration_id if check.p_a_raw is not None else None,
        "protocol": check.protocol,
        "margin": check.margin,
        "position_consistent": check.position_consistent,
    }


def stored_judgments(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every judge question in a stored result: pairwise judgments and pointwise scores,
    of the ranking's comparisons and of the revisions' checks."""
    comparisons = result.get("comparisons", []) + result.get("verifications", [])
    scores = result.get("response_scores", []) + [
        s for c in comparisons for s in c.get("scores", [])
    ]
    pairwise = [j for c in comparisons for j in c.get("judgments", [])]
    pointwise = [j for s in scores for j in s.get("judgments", [])]
    return pairwise + pointwise


def stored_steps(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every critique and revision call in a stored result."""
    return [
        step
        for chain in result.get("chains", [])
        for rnd in chain.get("rounds", [])
        for step in (rnd.get("critique"), rnd.get("revision"))
        if step
    ]


def count_failed_calls(result: dict[str, Any]) -> int:
    """Model calls in a result that got no usable answer (backend errors, unparseable replies)."""
    return sum(1 for item in stored_judgments(result) + stored_steps(result) if item.get("error"))


def _first_error(result: dict[str, Any]) -> str | None:
    for item in stored_judgments(result) + stored_steps(result):
        if item.get("error"):
            return str(item["error"])
    return None


def summarise(
    db: sqlite_utils.Database,
    job: JobRecord,
    *,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    prices: Prices | None = None,
) -> dict[str, Any]:
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
    summary: dict[str, Any] = {
        "job_id": job.id,
        "mode": job.spec.mode,
        "constitution": {"digest": job.constitution.digest, "version": job.constitution.version},
        "judge": job.spec.judge,
        "policy": job.spec.policy,
        "protocol": (
            job.spec.judge_config.protocol
            if job.spec.mode == "compare" or job.spec.quality.verify_revisions
            else None
        ),
        "calibration": _calibration_summary(db, job),
        "uncalibrated_because": (
            None
            if job.spec.calibration is not None
            or (job.spec.mode == "revise" and not job.spec.quality.verify_revisions)
            else calibrations.why_none(db, job.spec.judge, job.constitution, job.spec.judge_config)
        ),
        "prompts": {
            "total": sum(counts.values()),
            "done": counts.get("done", 0),
            "failed": counts.get("failed", 0),
            "pending": counts.get("pending", 0),
            "skipped": sum(1 for r in results if "skipped" in r),
        },
        "preferences": len(preferences),
        "exportable": len(exportable),
        "filtered": len(preferences) - len(exportable),
        "min_confidence": min_confidence,
        "judgments": len(judgments),
        "parse_failures": sum(1 for j in judgments if j.get("error_kind") == "parse"),
        "backend_failures": sum(1 for j in judgments if j.get("error_kind") == "backend")
        + sum(1 for step in steps if step.get("error")),
        "failed_judgments": sum(1 for j in judgments if j.get("error")),
        "incomplete_prompts": sum(1 for r in results if r.get("incomplete")),
        "texts": text_outcomes(job, finished, preferences, min_confidence),
        "position_consistency": (sum(consistency) / len(consistency) if consistency else None),
        "ties": sum(1 for c in comparisons if c.get("winner") == "tie"),
        "tokens": {"prompt": prompt_tokens, "completion": completion_tokens},
    }
    if prices is not None:
        summary["cost_usd"] = round(
            (prompt_tokens * prices.prompt + completion_tokens * prices.completion) / 1e6, 6
        )
    return summary


def text_outcomes(
    job: JobRecord,
    results: list[dict[str, Any]],
    preferences: list[Preference],
    min_confidence: float,
) -> dict[str, Any]:
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
    return {
        "kind": "candidates" if job.spec.mode == "compare" else "revisions",
        "total": len(flaws),
        "kept": kept,
        "rejected": dict(rejected.most_common()),
    }


def describe_texts(texts: dict[str, Any]) -> str:
    """A summary's `texts` in words: "12 revisions: 9 kept, 2 cut off by the token limit"."""
    line = f"{texts['total']} {texts['kind']}: {texts['kept']} kept"
    rejected = describe(texts["rejected"])
    return f"{line}, {rejected}" if rejected else line


def _calibration_fit(db: sqlite_utils.Database, job: JobRecord) -> CalibrationFit | None:
    """The job's calibration and the verdicts it may calibrate under the job's constitution."""
    if job.spec.calibration is None:
        return None
    record = calibrations.get(db, job.spec.calibration)
    return calibrations.fit_for(record, job.constitution, job.spec.judge_config)


def _calibration_summary(db: sqlite_utils.Database, job: JobRecord) -> dict[str, Any] | None:
    """What a reader of the job needs about its calibration: which, how strong, how good,
    and which principles' verdicts it leaves raw."""
    fit = _calibration_fit(db, job)
    if fit is None:
        return None
    record = fit.record
    return {
        "id": record.id,
        "temperature": record.calibration.temperature,
        "bias": record.calibration.bias,
        "heldout": record.heldout,
        "stale_principles": list(fit.stale),
        "note": calibrations.stale_note(fit, job.spec.judge_config) if fit.partial else None,
    }


def is_exportable(preference: Preference, min_confidence: float) -> bool:
    """A row needs p_chosen >= min_confidence; only an unchecked revision (the CAI paper's
    preference by construction, `--no-verify-revisions`) has no p_chosen and passes as is."""
    if preference.source == "revision" and preference.p_chosen is None:
        return True
    return preference.p_chosen is not None and preference.p_chosen >= min_confidence
