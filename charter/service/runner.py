"""Generation jobs run as tasks inside the service, with the CLI's store and resume rules.

Each job runs in a `charter.jobs.session` (its models from the service's shared pool), which
commits prompt by prompt and reuses every stored model call; so a job stopped at any point
(cancelled, service shut down, process killed) loses at most the calls in flight. A job stays
`running` in the store until it ends, which is how a restarted service finds the jobs to
resume. At most `max_jobs` run at once; the rest queue. A job another runner (a
`charter generate`) holds the lease of waits until that run ends or its lease expires, then
runs here: the two never both run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import sqlite_utils

from charter.jobs.activity import Activity
from charter.jobs.leases import LeaseHeld, LeaseLost, LeaseSettings
from charter.jobs.run import JobFailed
from charter.jobs.session import Role, job_session
from charter.jobs.store import JobError, get_job, job_prompts, set_status
from charter.jobs.summary import summarise_job
from charter.judge import ChatModel
from charter.judge.backends.registry import uses_endpoint

from .models import ModelPool, ModelUnavailable
from .records import interrupted_job_ids
from .settings import ServiceSettings

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 10.0


class JobRunner:
    def __init__(
        self,
        db: sqlite_utils.Database,
        pool: ModelPool,
        settings: ServiceSettings,
        scrub: Callable[[str], str],
    ) -> None:
        self.db = db
        self.pool = pool
        self.settings = settings
        self.scrub = scrub
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._queued: set[str] = set()
        self._waiting: dict[str, str] = {}
        self._activity: dict[str, Activity] = {}
        self._gate = asyncio.Semaphore(settings.max_jobs)
        self.lease = LeaseSettings.from_env()

    def active(self, job_id: str) -> bool:
        return job_id in self._tasks

    def queued(self, job_id: str) -> bool:
        return job_id in self._queued

    def waiting_for(self, job_id: str) -> str | None:
        """What a running job is waiting for (None: it is making progress): the run that
        holds its lease, its models, or answers to its calls, none having come since its
        last activity report (`CHARTER_PROGRESS_EVERY_S`). A call answered from the store
        after a delay counts as a call awaiting its answer, like any other, so the state
        tells a tenant nothing of other tenants' calls."""
        return self._waiting.get(job_id)

    def start(self, job_id: str) -> bool:
        """Run (or resume) the job unless it is already running here; False if it was."""
        if job_id in self._tasks:
            return False
        set_status(self.db, job_id, "running")
        self._queued.add(job_id)
        task = asyncio.create_task(self._run(job_id), name=f"charter {job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._forget(job_id))
        return True

    def resume_interrupted(self) -> list[str]:
        """Start every service job a previous process left running."""
        ids = interrupted_job_ids(self.db)
        for job_id in ids:
            log.info("resuming %s, interrupted by a restart", job_id)
            self.start(job_id)
        return ids

    async def cancel(self, job_id: str) -> None:
        """Stop the job's task and mark it cancelled; finished prompts stay stored."""
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=CANCEL_WAIT_S)
        job = get_job(self.db, job_id)
        set_status(self.db, job_id, "cancelled", summary=summarise_job(self.db, job))

    async def aclose(self) -> None:
        """Stop every task but leave the jobs `running`, so the next start resumes them."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_WAIT_S)

    def _forget(self, job_id: str) -> None:
        self._tasks.pop(job_id, None)
        self._queued.discard(job_id)
        self._waiting.pop(job_id, None)
        self._activity.pop(job_id, None)

    def _heard(self, job_id: str, now: Activity) -> None:
        """A running job's activity: waiting when calls are outstanding and none has been
        answered (nor a token decoded, nor a prompt finished) since the last report."""
        before = self._activity.get(job_id)
        self._activity[job_id] = now
        outstanding = now.in_flight + now.waiting
        progressed = before is None or (
            now.calls_made + now.calls_reused,
            now.decoded,
            now.prompts_done,
        ) != (before.calls_made + before.calls_reused, before.decoded, before.prompts_done)
        if outstanding and not progressed:
            self._waiting[job_id] = (
                f"answers to {outstanding} model call(s); none came in the last "
                f"{now.elapsed_s - before.elapsed_s if before else 0:.0f} s"
            )
        else:
            self._waiting.pop(job_id, None)

    async def _run(self, job_id: str) -> None:
        held_by: str | None = None
        while True:
            async with self._gate:
                self._queued.discard(job_id)
                try:
                    await self._execute(job_id)
                    return
                except LeaseHeld as exc:  # another runner has it: wait, without a job slot
                    self._waiting[job_id] = "the run that holds its lease to end"
                    if held_by != exc.lease.holder:
                        log.info("%s is being run by %s: waiting for it", job_id, exc.lease.holder)
                    held_by = exc.lease.holder
                except asyncio.CancelledError:
                    log.info("%s stopped", job_id)
                    raise
                except LeaseLost as exc:  # the job is the other runner's now: leave its status
                    log.warning("%s", self.scrub(str(exc)))
                    return
                except JobFailed as exc:  # run_job has stored the failure
                    log.warning("%s failed: %s", job_id, self.scrub(str(exc)))
                    return
                except (ModelUnavailable, JobError) as exc:
                    self._fail(job_id, str(exc))
                    return
                except Exception as exc:  # a bug: keep the service up, say little
                    log.error("%s crashed: %s", job_id, type(exc).__name__)
                    self._fail(
                        job_id, f"internal error ({type(exc).__name__}); see the service log"
                    )
                    return
            await asyncio.sleep(self.lease.renew_every_s)

    async def _execute(self, job_id: str) -> None:
        job = get_job(self.db, job_id)
        records = [r for _, r in job_prompts(self.db, job_id)]
        self._waiting[job_id] = "its models to load"
        async with job_session(self.db, _PoolModels(self.pool), job.spec, records) as session:
            self._waiting.pop(job_id, None)
            self._activity.pop(job_id, None)
            summary = await session.run(
                job,
                concurrency=self.settings.job_concurrency,
                resume_with=f"POST /v1/jobs/{job_id}/resume",
                lease=self.lease,
                on_activity=lambda now: self._heard(job_id, now),
            )
        log.info("%s ended: %s preference rows", job_id, summary.preferences)

    def _fail(self, job_id: str, message: str) -> None:
        log.warning("%s failed: %s", job_id, self.scrub(message))
        with contextlib.suppress(JobError):
            set_status(self.db, job_id, "failed", error=self.scrub(message))


class _PoolModels:
    """Where a service job's session gets its models: the service's pool, which loads each
    model once and shares it with every request and job; the job holds it while it runs, so
    the pool closes a model it dropped meanwhile only when the job is done with it."""

    def __init__(self, pool: ModelPool) -> None:
        self.pool = pool

    def endpoint(self, spec: str, role: Role) -> str | None:
        return self.pool.settings.base_url_for(role) if uses_endpoint(spec) else None

    async def open(self, spec: str, role: Role) -> ChatModel:
        return await self.pool.acquire(spec, role)

    async def release(self, model: ChatModel) -> None:
        """Hand the model back to the pool (which closes it only if it dropped it)."""
        self.pool.release(model)
