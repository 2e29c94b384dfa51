"""One run of one job, the same from every front end: open its models (the judge samples as the
policy too when both name the same model), create the job or find it, run it under its lease,
close the models.

`charter generate`, the service's job runner and `charter pipeline` all run jobs through
`JobSession`; they differ only in where their models come from (a `ModelSource`: opened in this
process, or the service's shared pool) and in what they tell their user along the way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

import sqlite_utils

from charter.constitution import Constitution
from charter.jobs.activity import ActivityCallback
from charter.jobs.leases import LeaseSettings
from charter.jobs.run import ProgressCallback, PromptExecutor, run_job
from charter.jobs.spec import JobSpec, RunOptions, needs_policy
from charter.jobs.stopping import StopRequest
from charter.jobs.store import JobRecord, create_or_get_job
from charter.jobs.summary import JobSummary, Prices
from charter.judge import BackendOptions, ChatModel
from charter.judge.backends.registry import load_model, uses_endpoint
from charter.prompt_files import PromptRecord
from charter.settings import JUDGE_BASE_URL_ENV, POLICY_BASE_URL_ENV

Role = Literal["judge", "policy"]


class ModelSource(Protocol):
    """Where a session's models come from."""

    def endpoint(self, spec: str, role: Role) -> str | None:
        """Where `role`'s calls to the model `spec` go; None for a model in this process."""
        ...

    async def open(self, spec: str, role: Role) -> ChatModel:
        """The model `spec`, ready for `role`'s calls."""
        ...

    async def release(self, model: ChatModel) -> None:
        """The session is done with `model` (close it, unless the source shares it on)."""
        ...


def shares_judge(source: ModelSource, spec: JobSpec) -> bool:
    """Whether the judge also samples the candidates: the same spec, answered at the same
    endpoint (a model in this process is one model whatever base URLs were given: one copy of
    a local model in memory, not two)."""
    return spec.policy == spec.judge and source.endpoint(spec.judge, "judge") == source.endpoint(
        spec.policy, "policy"
    )


@dataclass(frozen=True)
class LocalModels:
    """A `ModelSource` that opens models in this process, each role with its own base URL
    (else `$CHARTER_JUDGE_BASE_URL` / `$CHARTER_POLICY_BASE_URL`, then `$OPENAI_BASE_URL`)."""

    judge_base_url: str | None = None
    policy_base_url: str | None = None
    timeout_s: float = 60.0
    max_concurrency: int = 16

    def options(self, role: Role) -> BackendOptions:
        judge = role == "judge"
        return BackendOptions.from_env(
            base_url=self.judge_base_url if judge else self.policy_base_url,
            base_url_envs=(JUDGE_BASE_URL_ENV if judge else POLICY_BASE_URL_ENV, "OPENAI_BASE_URL"),
            timeout_s=self.timeout_s,
            max_concurrency=self.max_concurrency,
        )

    def endpoint(self, spec: str, role: Role) -> str | None:
        return self.options(role).resolved_base_url() if uses_endpoint(spec) else None

    async def open(self, spec: str, role: Role) -> ChatModel:
        return load_model(spec, self.options(role))

    async def release(self, model: ChatModel) -> None:
        await model.aclose()


@asynccontextmanager
async def job_session(
    db: sqlite_utils.Database,
    source: ModelSource,
    spec: JobSpec,
    records: Sequence[PromptRecord],
) -> AsyncIterator[JobSession]:
    """A session with the models `spec` needs for `records`: the judge, and a policy when some
    prompt came without candidates (the judge itself when `shares_judge`). They are opened
    before a job is written, so a model that does not load leaves no job behind, and released
    when the session ends, however it ends."""
    judge = await source.open(spec.judge, "judge")
    policy: ChatModel | None = None
    try:
        if needs_policy(records):
            shared = shares_judge(source, spec)
            policy = judge if shared else await source.open(spec.policy, "policy")
        yield JobSession(db, judge, policy)
    finally:
        await source.release(judge)
        if policy is not None and policy is not judge:
            await source.release(policy)


class JobSession:
    """A job's models, open for one run (see `job_session`): `start` a job (or take a stored
    one), then `run` it."""

    def __init__(
        self, db: sqlite_utils.Database, judge: ChatModel, policy: ChatModel | None
    ) -> None:
        self.db = db
        self.judge = judge
        self.policy = policy

    def start(
        self,
        spec: JobSpec,
        constitution: Constitution,
        records: list[PromptRecord],
        prompts_source: str,
    ) -> tuple[JobRecord, bool]:
        """The job for `spec`, and whether it was created (False: resumed)."""
        return create_or_get_job(self.db, spec, constitution, records, prompts_source)

    async def run(
        self,
        job: JobRecord,
        *,
        concurrency: int,
        resume_with: str | None = None,
        lease: LeaseSettings | None = None,
        run: RunOptions | None = None,
        prices: Prices | None = None,
        on_progress: ProgressCallback | None = None,
        on_activity: ActivityCallback | None = None,
        stop_request: StopRequest | None = None,
        executor: PromptExecutor | None = None,
    ) -> JobSummary:
        """Run (or resume) `job` to its end with this session's models (see `run_job`), or on
        `executor`'s (Ray workers); `run`'s settings default to `RunOptions`'."""
        run = run or RunOptions()
        return await run_job(
            self.db,
            job,
            self.judge,
            self.policy,
            concurrency=concurrency,
            on_progress=on_progress,
            on_activity=on_activity,
            min_confidence=run.min_confidence,
            max_attempts=run.max_attempts,
            prices=prices,
            resume_with=resume_with,
            stop_request=stop_request,
            lease=lease,
            executor=executor,
        )
