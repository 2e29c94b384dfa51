"""What the handlers share: the store, the models, the job runner and the principles.

One `Service` lives on `app.state.service` for the app's lifetime; handlers get it through
`ServiceDep`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import sqlite_utils
from fastapi import Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel

from charter.constitution import (
    Constitution,
    ConstitutionError,
    VersionError,
    get_version,
    load_constitution,
)
from charter.jobs.spec import JobOptions, dedupe, needs_policy
from charter.jobs.store import (
    JobError,
    JobRecord,
    create_or_get_job,
    get_job,
    preference_count,
    prompt_counts,
)
from charter.judge import ChatModel, Comparison, Ranking, RevisionChain
from charter.judge.results import Provenance
from charter.judge.reward import RewardCounts
from charter.prompt_files import PromptRecord
from charter.qualification import Qualification, qualification

from . import records
from .errors import ApiError
from .feedback import JudgeWatch, unanswered
from .limits import FailureLimit
from .models import ModelNotAllowed, ModelPool, ModelUnavailable
from .runner import JobRunner
from .schemas import JobCreated, JobView, PromptProgress
from .settings import ServiceSettings

log = logging.getLogger(__name__)


class Scrubber:
    """Removes the service's endpoints from text bound for clients (backend errors name them)."""

    def __init__(self, settings: ServiceSettings) -> None:
        urls = {settings.base_url_for("judge"), settings.base_url_for("policy")}
        urls |= {os.environ.get("OPENAI_BASE_URL"), os.environ.get("CHARTER_JUDGE_BASE_URL")}
        # A list of endpoints is scrubbed whole, and each of its URLs on its own.
        urls |= {part.strip() for url in set(urls) if url for part in url.split(",")}
        self.urls = sorted((u for u in urls if u), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for url in self.urls:
            text = text.replace(url, "the configured endpoint")
        return text


class Constitutions:
    """The service's principles directory, reloaded when a file in it changes; frozen versions."""

    RECHECK_S = 1.0  # stat the directory at most this often: edits show within a second

    def __init__(self, db: sqlite_utils.Database, directory: Path) -> None:
        self.db = db
        self.directory = directory
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._current: Constitution | None = None
        self._checked = 0.0

    def _stat(self) -> tuple[tuple[str, int, int], ...]:
        try:
            files = sorted(self.directory.iterdir())
        except OSError:
            return ()
        out = []
        for path in files:
            with contextlib.suppress(OSError):
                st = path.stat()
                out.append((path.name, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def current(self) -> Constitution:
        now = time.monotonic()
        if self._current is not None and now - self._checked < self.RECHECK_S:
            return self._current
        signature = self._stat()
        if self._current is None or signature != self._signature:
            try:
                self._current = load_constitution(self.directory)
            except ConstitutionError as exc:
                for finding in exc.findings:
                    log.error("principles: %s", finding)
                raise ApiError(
                    503, "constitution_invalid", "the service's principles are invalid; see its log"
                ) from None
            self._signature = signature
        self._checked = now
        return self._current

    def get(self, ref: str | None) -> Constitution:
        if ref is None or ref == "current":
            return self.current()
        try:
            return get_version(self.db, ref).constitution
        except VersionError as exc:
            raise ApiError(404, "not_found", str(exc)) from None


class Service:
    """What the handlers share; lives on `app.state.service` for the app's lifetime."""

    def __init__(self, settings: ServiceSettings, db: sqlite_utils.Database) -> None:
        self.settings = settings
        self.db = db
        self.owners = sorted(settings.owners)
        self.scrub = Scrubber(settings)
        self.pool = ModelPool(settings)
        self.runner = JobRunner(db, self.pool, settings, self.scrub)
        self.constitutions = Constitutions(db, settings.principles_dir)
        self.reward_counts = RewardCounts()
        self.auth_failures = FailureLimit(settings.auth_failures_per_minute)
        self._qualified: dict[str, tuple[float, Qualification]] = {}

    async def hold_judge(self, spec: str | None, *, within: float | None = None) -> ChatModel:
        """The judge a request asked for (or the default), held open until
        `self.pool.release(model)`; an API error if it is not served here or cannot load.
        `within`: seconds to wait for a judge still loading, else `ModelLoading`."""
        try:
            return await self.pool.acquire(spec or self.settings.judge, "judge", within=within)
        except ModelNotAllowed as exc:
            raise ApiError(422, "model_not_allowed", str(exc)) from None
        except ModelUnavailable as exc:
            raise ApiError(503, "model_unavailable", str(exc)) from None

    QUALIFICATION_RECHECK_S = 30.0
    """A `charter judge eval` recorded while the service runs shows within this long."""

    def qualification(self, spec: str | None) -> Qualification:
        """The qualification of judge `spec` (default: the service's), read at most every
        `QUALIFICATION_RECHECK_S` (rewards carry it, and must stay cheap). Calibrations fitted
        in the store are left out: another tenant's labels may be behind them."""
        spec = spec or self.settings.judge
        now = time.monotonic()
        kept = self._qualified.get(spec)
        if kept is None or now - kept[0] > self.QUALIFICATION_RECHECK_S:
            kept = self._qualified[spec] = (
                now,
                qualification(self.db, spec, store_calibrations=False),
            )
        return kept[1]

    @contextlib.asynccontextmanager
    async def judge(
        self, spec: str | None, *, within: float | None = None
    ) -> AsyncIterator[ChatModel]:
        """`hold_judge` for the length of a block."""
        model = await self.hold_judge(spec, within=within)
        try:
            yield model
        finally:
            self.pool.release(model)

    def feedback(self, judge: JudgeWatch, result: Comparison | RevisionChain | Ranking) -> Response:
        """The result of a feedback call, or the 5xx error saying why it holds no answer."""
        empty, detail = unanswered(result)
        if empty:
            failure = judge.failure(detail)
            raise ApiError(failure.status, failure.code, self.scrub(failure.message))
        return self.json(result)

    def json(self, model: BaseModel, status: int = 200) -> Response:
        return Response(
            self.scrub(model.model_dump_json()), status_code=status, media_type="application/json"
        )

    def owned_job(self, job_id: str, owner: str) -> JobRecord:
        if records.owns(self.db, job_id, owner):
            with contextlib.suppress(JobError):
                return get_job(self.db, job_id)
        raise ApiError(404, "not_found", f"no job {job_id!r} for this token")

    def view(self, job: JobRecord) -> JobView:
        counts = prompt_counts(self.db, job.id)
        summary = json.loads(self.scrub(json.dumps(job.summary)))
        return JobView(
            id=job.id,
            state="queued" if self.runner.queued(job.id) else job.status,
            mode=job.spec.mode,
            policy=job.spec.policy,
            **Provenance.of(job.constitution, job.spec.judge).fields(),
            prompts=PromptProgress(
                total=sum(counts.values()),
                done=counts.get("done", 0),
                failed=counts.get("failed", 0),
                pending=counts.get("pending", 0),
            ),
            preferences=preference_count(self.db, job.id),
            error=self.scrub(job.error) if job.error else None,
            errors=[self.scrub(e) for e in records.prompt_errors(self.db, job.id)],
            waiting_for=self.runner.waiting_for(job.id) if job.status == "running" else None,
            prompts_source=job.prompts_source,
            created_at=job.created_at,
            updated_at=job.updated_at,
            summary=summary,
        )

    def submit(
        self,
        owner: str,
        records_in: list[PromptRecord],
        options: JobOptions,
        constitution_ref: str | None,
        source: str,
        *,
        dropped: int = 0,
    ) -> Response:
        """Create (or find) this token's job for this request and start it unless done.

        The owner is part of the job's spec, so another token's identical request is another
        job: it neither sees nor controls this one, though both reuse the same stored calls."""
        records_in, repeats = dedupe(records_in)
        dropped += repeats
        if len(records_in) > self.settings.max_prompts:
            raise ApiError(
                422,
                "too_many_prompts",
                f"{len(records_in)} prompts; this service takes at most "
                f"{self.settings.max_prompts} per job",
            )
        try:
            self.pool.check(options.judge or self.settings.judge)
            if needs_policy(records_in):
                self.pool.check(options.policy or self.settings.policy)
        except ModelNotAllowed as exc:
            raise ApiError(422, "model_not_allowed", str(exc)) from None
        constitution = self.constitutions.get(constitution_ref)
        spec = options.plan(
            self.db,
            records_in,
            constitution,
            default_judge=self.settings.judge,
            default_policy=self.settings.policy,
        ).model_copy(update={"tenant": owner})
        job, _ = create_or_get_job(self.db, spec, constitution, records_in, source)
        newly_owned = records.add_owner(self.db, job.id, owner)
        if job.status != "done":
            self.runner.start(job.id)
            job = get_job(self.db, job.id)
        body = JobCreated(job=self.view(job), created=newly_owned, duplicates_dropped=dropped)
        return self.json(body, 201 if newly_owned else 200)


async def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(_service)]
