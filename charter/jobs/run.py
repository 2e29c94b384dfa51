"""The main job: prompts in, preference triples out, resumable and never paying twice.

For each prompt still pending in a job: take its given candidates or sample `n` from the
policy; then either rank them with the judge (`compare`, RL-CAI) or run critique -> revision
chains on them (`revise`, SL-CAI) (`charter.jobs.modes`); then write the prompt's preferences
and mark it done in one transaction (`charter.jobs.store`). Every model call goes through
`CachedModel`, so a killed job resumes from its last completed call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import sqlite_utils

from charter.call_cache import CachedModel, CallStats, store_secret
from charter.jobs.activity import Activity, Tracker, watch
from charter.jobs.leases import LeaseSettings, held
from charter.jobs.modes import process_prompt
from charter.jobs.results import count_failed_calls, first_error
from charter.jobs.spec import DEFAULT_MAX_ATTEMPTS, DEFAULT_MIN_CONFIDENCE
from charter.jobs.stopping import StopGate, Stopping, StopRequest, finish_or_stop
from charter.jobs.store import (
    JobRecord,
    ensure_tables,
    finish_prompt,
    job_prompts,
    prompt_attempts,
    prompt_counts,
    reset_failed,
    set_status,
)
from charter.jobs.summary import (
    CallCounts,
    JobCalls,
    JobSummary,
    Prices,
    calibration_fit,
    summarise_job,
)
from charter.judge.backends.base import BackendError, ChatModel
from charter.judge.backends.tally import tallying
from charter.judge.prompts import KeyedNonces
from charter.prompt_files import PromptRecord
from charter.store import SqliteError, StoreError

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called with (prompts finished, prompts in the job) as the job advances."""

STOP_AFTER_FAILURES = 3


class JobFailed(Exception):
    """Every prompt attempted failed: the judge (or policy) is unreachable or always failing."""


class JobStopped(Exception):
    """The job stopped on request (a signal) before its end; it is stored as `stopped`."""

    def __init__(self, summary: JobSummary) -> None:
        p = summary.prompts
        super().__init__(
            f"stopped {summary.job_id}: {p.done}/{p.total} prompts done, "
            f"{summary.preferences} preferences stored; resume with "
            f"`charter generate --resume {summary.job_id}`"
        )
        self.summary = summary


async def run_job(
    db: sqlite_utils.Database,
    job: JobRecord,
    judge: ChatModel,
    policy: ChatModel | None,
    *,
    concurrency: int = 8,
    on_progress: ProgressCallback | None = None,
    on_activity: Callable[[Activity], None] | None = None,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    prices: Prices | None = None,
    resume_with: str | None = None,
    stop_request: StopRequest | None = None,
    lease: LeaseSettings | None = None,
) -> JobSummary:
    """Run (or resume) `job` to the end and return its summary.

    `concurrency` bounds the prompts in flight; the models bound their own requests. A prompt
    whose model calls did not all succeed is left failed, to be asked again (only the failed
    calls: the others are answered from the store) by the next run, until its `max_attempts`-th
    run, which keeps what succeeded and records what did not. `resume_with` is how the job's
    owner resumes it, for the error of a job left with failed prompts (default: the CLI's
    `charter generate --resume`).

    The job's lease (`charter.jobs.leases`, `lease` or the environment's settings) is held
    throughout: a second runner of the same job gets `LeaseHeld` instead of paying for the
    same calls. `stop_request` ends the run early with `JobStopped` (see `StopRequest`).
    `on_activity` hears the run's calls, tokens and prompts at once and every few seconds
    (`charter.jobs.activity`).
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
            on_activity=on_activity,
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
    on_activity: Callable[[Activity], None] | None,
    min_confidence: float,
    max_attempts: int,
    prices: Prices | None,
    resume_with: str | None,
    stop_request: StopRequest | None,
) -> JobSummary:
    """`run_job`'s work, done while holding the job's lease."""
    calibration = calibration_fit(db, job)
    retried = reset_failed(db, job.id)
    if retried:
        log.info("retrying %d prompt(s) that failed before", retried)
    stopping = stop_request.requested if stop_request else asyncio.Event()
    gates = [StopGate(model, stopping) for model in (judge, policy) if model is not None]
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
                preferences, result, error = await process_prompt(
                    job, position, record, cached_judge, cached_policy, nonces, calibration
                )
            except Stopping:  # left pending: the next run asks its remaining calls
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
                        f"{max_attempts}; the next run asks them again): {first_error(result)}"
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
    cached = [m for m in (cached_judge, cached_policy) if m is not None]
    tracker = Tracker([m.stats for m in cached], [judge, policy], lambda: (finished, total))
    with tallying() as endpoints:  # this run's calls to each endpoint of a shared fleet
        async with watch(tracker, on_activity):
            work = asyncio.ensure_future(asyncio.gather(*(one(pos, rec) for pos, rec in pending)))
            if stop_request is None:
                await work
            else:
                await finish_or_stop(work, stop_request, gates)

    summary = summarise_job(db, job, min_confidence=min_confidence, prices=prices)
    summary.calls = JobCalls(
        judge=_call_counts(cached_judge.stats, endpoints.report(judge)),
        policy=(
            _call_counts(cached_policy.stats, endpoints.report(policy)) if cached_policy else None
        ),
    )
    if stop.is_set():
        error = (
            f"stopped after the first {len(failures)} prompts all failed; last error: "
            f"{failures[-1]}"
        )
        set_status(db, job.id, "failed", summary=summary, error=error)
        raise JobFailed(error)
    if stopping.is_set() and summary.prompts.pending:
        set_status(db, job.id, "stopped", summary=summary)
        raise JobStopped(summary)
    failed = summary.prompts.failed
    if failed:
        resume = resume_with or f"`charter generate --resume {job.id}`"
        summary.error = (
            f"{failed} prompt(s) failed (last error: {failures[-1] if failures else 'unknown'}); "
            f"resume with {resume}"
        )
        set_status(db, job.id, "failed", summary=summary, error=summary.error)
    else:
        set_status(db, job.id, "done", summary=summary)
    return summary


def _call_counts(stats: CallStats, endpoints: list[dict[str, Any]] | None) -> CallCounts:
    """A model's calls made and reused, and with several endpoints, each one's share."""
    return CallCounts(made=stats.made, reused=stats.reused, endpoints=endpoints)
