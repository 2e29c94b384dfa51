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
from dataclasses import dataclass
from typing import Any, Protocol

import sqlite_utils

from charter.calibrations import CalibrationFit
from charter.call_cache import CachedModel, CallStats, store_secret
from charter.jobs.activity import ActivityCallback, Tracker, watch
from charter.jobs.leases import LeaseSettings, held
from charter.jobs.modes import process_prompt
from charter.jobs.results import count_failed_calls, first_error
from charter.jobs.spec import DEFAULT_MAX_ATTEMPTS, DEFAULT_MIN_CONFIDENCE
from charter.jobs.stopping import StopGate, Stopping, StopRequest, finish_or_stop
from charter.jobs.store import (
    JobRecord,
    Preference,
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


@dataclass
class Outcome:
    """What one attempt at a prompt gave: its rows, its stored result, and its error (None:
    every call got an answer, or the prompt has its last attempt)."""

    preferences: list[Preference]
    result: dict[str, Any]
    error: str | None


async def attempt_prompt(
    job: JobRecord,
    position: int,
    record: PromptRecord,
    judge: ChatModel,
    policy: ChatModel | None,
    nonces: KeyedNonces,
    calibration: CalibrationFit | None,
) -> Outcome | None:
    """One attempt at a prompt, the same wherever it runs (this process, or a Ray worker):
    its outcome, or None when the job is stopping (the prompt stays pending; the next run
    asks its remaining calls). A model call that failed for good, or a bug, is the prompt's
    error (asked again by a later run); a store that refused a write is raised."""
    try:
        preferences, result, error = await process_prompt(
            job, position, record, judge, policy, nonces, calibration
        )
    except Stopping:
        return None
    except (SqliteError, StoreError):
        raise  # the store refused a write: no later prompt can be saved either
    except BackendError as exc:  # a model call that failed for good: asked again later
        log.warning("prompt %d failed: %s", position, exc)
        return Outcome([], {}, str(exc))
    except Exception as exc:  # a bug: keep going, with its traceback in the log
        log.exception("prompt %d failed", position)
        return Outcome([], {}, f"{type(exc).__name__}: {exc}")
    return Outcome(preferences, result, error)


class JobRun:
    """One run of a job, whoever executes its prompts: what is pending, what every prompt
    needs (nonces, calibration), and `settle`, which stores a prompt's outcome as the job's
    rules say (attempts, failed calls, the first failures stopping the run)."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        job: JobRecord,
        *,
        max_attempts: int,
        on_progress: ProgressCallback | None,
        stop_request: StopRequest | None,
    ) -> None:
        self.db = db
        self.job = job
        self.max_attempts = max_attempts
        self.on_progress = on_progress
        self.stop_request = stop_request
        self.stopping = stop_request.requested if stop_request else asyncio.Event()
        self.calibration = calibration_fit(db, job)
        retried = reset_failed(db, job.id)
        if retried:
            log.info("retrying %d prompt(s) that failed before", retried)
        self.nonce_key = store_secret(db)
        self.nonces = KeyedNonces(self.nonce_key)
        self.pending = job_prompts(db, job.id, status="pending")
        self.total = sum(prompt_counts(db, job.id).values())
        self.finished = self.total - len(self.pending)
        self.successes = 0
        self.failures: list[str] = []
        self.halt = asyncio.Event()
        """Set when the first prompts all failed: no new prompt is started."""
        self.activity = Tracker(lambda: (self.finished, self.total))
        """What the run is doing, in calls and tokens: its executor adds what it counts."""
        if on_progress:
            on_progress(self.finished, self.total)

    @property
    def halted(self) -> bool:
        return self.halt.is_set()

    def settle(self, position: int, outcome: Outcome) -> None:
        """Store `outcome` for the prompt at `position`: its rows and `done`, or `failed` while
        some call failed and the prompt has attempts left (its last attempt keeps what
        succeeded and records what did not)."""
        attempt = prompt_attempts(self.db, self.job.id, position) + 1
        preferences, result, error = outcome.preferences, outcome.result, outcome.error
        failed_calls = count_failed_calls(result)
        if error is None and failed_calls:
            if attempt < self.max_attempts:
                preferences = []
                error = (
                    f"{failed_calls} model call(s) failed (attempt {attempt} of "
                    f"{self.max_attempts}; the next run asks them again): {first_error(result)}"
                )
            else:
                result["incomplete"] = failed_calls  # kept with what succeeded
        finish_prompt(self.db, self.job.id, position, preferences, result, error)
        if error:
            self.failures.append(error)
            if not self.successes and len(self.failures) >= STOP_AFTER_FAILURES:
                self.halt.set()
        else:
            self.successes += 1
        self.finished += 1
        if self.on_progress:
            self.on_progress(self.finished, self.total)


class PromptExecutor(Protocol):
    """Runs a job's pending prompts, settling each as it finishes: in this process
    (`LocalExecutor`) or on Ray workers (`charter.ray.driver.RayExecutor`)."""

    async def execute(self, run: JobRun) -> JobCalls:
        """Run until every pending prompt is settled, the run halts, or a stop is asked;
        return the calls made and reused."""
        ...


class LocalExecutor:
    """The prompts run here, `concurrency` at a time, every call through the store
    (`CachedModel`: committed as it is answered)."""

    def __init__(self, judge: ChatModel, policy: ChatModel | None, concurrency: int) -> None:
        self.judge = judge
        self.policy = policy
        self.concurrency = concurrency

    async def execute(self, run: JobRun) -> JobCalls:
        judge, policy = self.judge, self.policy
        gates = [StopGate(model, run.stopping) for model in (judge, policy) if model is not None]
        cached_judge = CachedModel(gates[0], run.db, run.job.spec.tenant)
        cached_policy = (
            CachedModel(gates[1], run.db, run.job.spec.tenant) if policy is not None else None
        )
        cached = [m for m in (cached_judge, cached_policy) if m is not None]
        run.activity.add([m.stats for m in cached], [judge, policy])
        gate = asyncio.Semaphore(self.concurrency)

        async def one(position: int, record: PromptRecord) -> None:
            async with gate:
                if run.halted or run.stopping.is_set():
                    return
                outcome = await attempt_prompt(
                    run.job, position, record, cached_judge, cached_policy, run.nonces,
                    run.calibration,
                )  # fmt: skip
                if outcome is not None:
                    run.settle(position, outcome)

        with tallying() as endpoints:  # this run's calls to each endpoint of a shared fleet
            work = asyncio.ensure_future(
                asyncio.gather(*(one(pos, rec) for pos, rec in run.pending))
            )
            if run.stop_request is None:
                await work
            else:
                await finish_or_stop(work, run.stop_request, gates)
        return JobCalls(
            judge=_call_counts(cached_judge.stats, endpoints.report(judge)),
            policy=(
                _call_counts(cached_policy.stats, endpoints.report(policy))
                if cached_policy and policy is not None
                else None
            ),
        )


async def run_job(
    db: sqlite_utils.Database,
    job: JobRecord,
    judge: ChatModel | None,
    policy: ChatModel | None,
    *,
    concurrency: int = 8,
    on_progress: ProgressCallback | None = None,
    on_activity: ActivityCallback | None = None,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    prices: Prices | None = None,
    resume_with: str | None = None,
    stop_request: StopRequest | None = None,
    lease: LeaseSettings | None = None,
    executor: PromptExecutor | None = None,
) -> JobSummary:
    """Run (or resume) `job` to the end and return its summary.

    `concurrency` bounds the prompts in flight; the models bound their own requests. A prompt
    whose model calls did not all succeed is left failed, to be asked again (only the failed
    calls: the others are answered from the store) by the next run, until its `max_attempts`-th
    run, which keeps what succeeded and records what did not. `resume_with` is how the job's
    owner resumes it, for the error of a job left with failed prompts (default: the CLI's
    `charter generate --resume`).

    The prompts run here with `judge` and `policy` (`LocalExecutor`), or wherever `executor`
    runs them (Ray workers): the lease, the bookkeeping and the summary are this process's
    either way. The job's lease (`charter.jobs.leases`, `lease` or the environment's settings)
    is held throughout: a second runner of the same job gets `LeaseHeld` instead of paying for
    the same calls. `stop_request` ends the run early with `JobStopped` (see `StopRequest`).
    `on_activity` hears the run's calls, tokens and prompts at once and every few seconds
    (`charter.jobs.activity`).
    """
    ensure_tables(db)  # a store from an earlier release gains the columns rows now carry
    if executor is None:
        assert judge is not None, "a local run needs its judge"
        executor = LocalExecutor(judge, policy, concurrency)
    async with held(db, job.id, lease):
        run = JobRun(
            db, job, max_attempts=max_attempts, on_progress=on_progress, stop_request=stop_request
        )
        set_status(db, job.id, "running")
        async with watch(run.activity, on_activity):
            calls = await executor.execute(run)
        return _ended(run, calls, min_confidence, prices, resume_with)


def _ended(
    run: JobRun,
    calls: JobCalls,
    min_confidence: float,
    prices: Prices | None,
    resume_with: str | None,
) -> JobSummary:
    """The run's summary, with the job's status stored as its end says (raising `JobFailed` or
    `JobStopped` where it did not run to its end)."""
    db, job, failures = run.db, run.job, run.failures
    summary = summarise_job(db, job, min_confidence=min_confidence, prices=prices)
    summary.calls = calls
    if run.halted:
        error = (
            f"stopped after the first {len(failures)} prompts all failed; last error: "
            f"{failures[-1]}"
        )
        set_status(db, job.id, "failed", summary=summary, error=error)
        raise JobFailed(error)
    if run.stopping.is_set() and summary.prompts.pending:
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
