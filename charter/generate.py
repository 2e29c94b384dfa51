"""The main job: prompts in, preference triples out, resumable and never paying twice.

For each prompt still pending in a job: take its given candidates or sample `n` from the
policy; then either rank them with the judge (`compare`, RL-CAI) or run critique -> revision
chains on them (`revise`, SL-CAI); then write the prompt's preferences and mark it done in one
transaction (see `charter.jobs`). Every model call goes through `CachedModel`, so a killed
job resumes from its last completed call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from charter import calibrations
from charter.calibrations import CalibrationRecord
from charter.calls import CachedModel, CallStats, store_secret
from charter.inputs import PromptRecord
from charter.jobs import (
    JobRecord,
    Preference,
    ensure_tables,
    finish_prompt,
    job_prompts,
    load_preferences,
    prompt_counts,
    prompt_results,
    reset_failed,
    set_status,
)
from charter.judge import critique_and_revise, rank
from charter.judge.backends.base import ChatModel, GenerationRequest
from charter.judge.prompts import KeyedNonces

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called with (prompts finished, prompts in the job) as the job advances."""

DEFAULT_MIN_CONFIDENCE = 0.6
STOP_AFTER_FAILURES = 3


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


async def sample_candidates(
    policy: ChatModel, record: PromptRecord, n: int, temperature: float, max_tokens: int, seed: int
) -> list[str]:
    """`n` responses from the policy, sample i seeded with `seed + i` (reproducible)."""
    replies = await asyncio.gather(
        *(
            policy.generate(
                GenerationRequest(
                    messages=record.messages,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    seed=seed + i,
                )
            )
            for i in range(n)
        )
    )
    return [r.text.strip() for r in replies]


def distinct(texts: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for text in texts:
        if text.strip():
            seen.setdefault(text, None)
    return list(seen)


async def run_job(
    db: sqlite_utils.Database,
    job: JobRecord,
    judge: ChatModel,
    policy: ChatModel | None,
    *,
    concurrency: int = 8,
    on_progress: ProgressCallback | None = None,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    prices: Prices | None = None,
) -> dict[str, Any]:
    """Run (or resume) `job` to the end and return its summary.

    `concurrency` bounds the prompts in flight; the models bound their own requests.
    """
    ensure_tables(db)  # a store from an earlier release gains the columns rows now carry
    calibration = calibrations.get(db, job.spec.calibration) if job.spec.calibration else None
    retried = reset_failed(db, job.id)
    if retried:
        log.info("retrying %d prompt(s) that failed before", retried)
    cached_judge = CachedModel(judge, db)
    cached_policy = CachedModel(policy, db) if policy is not None else None
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
            if stop.is_set():
                return
            try:
                preferences, result, error = await _process(
                    job, position, record, cached_judge, cached_policy, nonces, calibration
                )
            except Exception as exc:  # a bug or an unexpected backend failure: keep going
                log.exception("prompt %d failed", position)
                preferences, result, error = [], {}, f"{type(exc).__name__}: {exc}"
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
    await asyncio.gather(*(one(pos, rec) for pos, rec in pending))

    summary = summarise(db, job, min_confidence=min_confidence, prices=prices)
    summary["calls"] = {
        "judge": {"made": cached_judge.stats.made, "reused": cached_judge.stats.reused},
        "policy": (
            {"made": cached_policy.stats.made, "reused": cached_policy.stats.reused}
            if cached_policy
            else None
        ),
    }
    if stop.is_set():
        error = (
            f"stopped after the first {len(failures)} prompts all failed; last error: "
            f"{failures[-1]}"
        )
        set_status(db, job.id, "failed", summary=summary, error=error)
        raise JobFailed(error)
    failed = summary["prompts"]["failed"]
    if failed:
        summary["error"] = (
            f"{failed} prompt(s) failed (last error: {failures[-1] if failures else 'unknown'}); "
            f"resume with `charter generate --resume {job.id}`"
        )
        set_status(db, job.id, "failed", summary=summary, error=summary["error"])
    else:
        set_status(db, job.id, "done", summary=summary)
    return summary


async def _process(
    job: JobRecord,
    position: int,
    record: PromptRecord,
    judge: ChatModel,
    policy: ChatModel | None,
    nonces: KeyedNonces,
    calibration: CalibrationRecord | None = None,
) -> tuple[list[Preference], dict[str, Any], str | None]:
    spec = job.spec
    if record.responses is not None:
        candidates = distinct(list(record.responses))
    else:
        if policy is None:
            raise ValueError("no candidate responses given and no policy model to sample them")
        candidates = distinct(
            await sample_candidates(
                policy, record, spec.n, spec.temperature, spec.max_tokens, spec.judge_config.seed
            )
        )
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
    if spec.mode == "compare":
        if len(candidates) < 2:
            return [], {"skipped": "fewer than two distinct candidates"}, None
        ranking = await rank(
            judge,
            job.constitution,
            record.text,
            candidates,
            spec.judge_config,
            strategy=spec.pairs,
            calibration=calibration.calibration if calibration else None,
            nonces=nonces,
        )
        result = ranking.model_dump(mode="json")
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
                calibration=calibration.id if calibration else None,
                protocol=ranking.protocol,
                margin=pair.margin,
                position_consistent=pair.position_consistent,
                principles=pair.principle_ids,
            )
            for pair in ranking.pairs
        ]
        return preferences, result, None

    chains = await asyncio.gather(
        *(
            critique_and_revise(
                judge,
                job.constitution,
                record.text,
                response,
                spec.judge_config,
                nonces=nonces,
            )
            for response in candidates
        )
    )
    result = {"chains": [c.model_dump(mode="json") for c in chains]}
    if candidates and all(c.completed == 0 for c in chains):
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
        )
        for chain in chains
        if chain.completed and chain.final.strip() and chain.final != chain.original
    ]
    return preferences, result, None


def stored_judgments(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every judge question in a stored ranking: pairwise judgments and pointwise scores."""
    pairwise = [j for c in result.get("comparisons", []) for j in c.get("judgments", [])]
    pointwise = [j for s in result.get("response_scores", []) for j in s.get("judgments", [])]
    return pairwise + pointwise


def _first_error(result: dict[str, Any]) -> str | None:
    for judgment in stored_judgments(result):
        if judgment.get("error"):
            return str(judgment["error"])
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
    results = prompt_results(db, job.id)
    preferences = load_preferences(db, job.id)
    comparisons = [c for r in results for c in r.get("comparisons", [])]
    judgments = [j for r in results for j in stored_judgments(r)]
    consistency = [
        c["position_consistent"] for c in comparisons if c.get("position_consistent") is not None
    ]
    steps = [
        step
        for r in results
        for chain in r.get("chains", [])
        for rnd in chain.get("rounds", [])
        for step in (rnd.get("critique"), rnd.get("revision"))
        if step
    ]
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
        "protocol": job.spec.judge_config.protocol if job.spec.mode == "compare" else None,
        "calibration": _calibration_summary(db, job.spec.calibration),
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
        "failed_judgments": sum(1 for j in judgments if j.get("error")),
        "position_consistency": (sum(consistency) / len(consistency) if consistency else None),
        "ties": sum(1 for c in comparisons if c.get("winner") == "tie"),
        "tokens": {"prompt": prompt_tokens, "completion": completion_tokens},
    }
    if prices is not None:
        summary["cost_usd"] = round(
            (prompt_tokens * prices.prompt + completion_tokens * prices.completion) / 1e6, 6
        )
    return summary


def _calibration_summary(
    db: sqlite_utils.Database, calibration_id: str | None
) -> dict[str, Any] | None:
    """What a reader of the job needs about its calibration: which, how strong, how good."""
    if calibration_id is None:
        return None
    record = calibrations.get(db, calibration_id)
    return {
        "id": record.id,
        "temperature": record.calibration.temperature,
        "bias": record.calibration.bias,
        "heldout": record.heldout,
    }


def is_exportable(preference: Preference, min_confidence: float) -> bool:
    """Revisions are preferred by construction; comparisons need p_chosen >= min_confidence."""
    if preference.source == "revision":
        return True
    return preference.p_chosen is not None and preference.p_chosen >= min_confidence
