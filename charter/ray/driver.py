"""The driver's side of a job on Ray: deal pending prompts to workers, commit what comes back.

The driving process keeps everything a job's identity and safety rest on: the store, the job's
lease, its id, and `charter.jobs.run`'s bookkeeping (attempts, failed prompts, the summary, a
stop). It deals the pending prompts to `--ray-workers` actors (`charter.ray.worker`) in shards
of `--ray-shard`, each worker holding enough shards to keep `--concurrency` prompts in flight.

Before a shard is dealt, the driver runs each of its prompts through the same per-prompt code
against the store alone (`StoreLookup`): a prompt whose every call is stored is finished right
here (no worker pays for anything), and the stored replies the others will need travel with
the shard. Workers stream back each call's reply as it comes and each prompt's outcome as it
finishes; the driver commits the calls, then settles the prompt, as the local run would.

A worker that dies mid-shard (a lost node, `ray.kill`) is replaced and its unfinished prompts
are dealt again: their calls already streamed back are stored, so only the calls it had in
flight are paid twice. A driver killed outright leaves the store as a killed local run does:
a resume (with or without Ray) finds every committed call and prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from charter.call_cache import CallStats, StoreLookup, keep_calls
from charter.jobs.run import JobRun, Outcome, attempt_prompt
from charter.jobs.session import LocalModels, Role, shares_judge
from charter.jobs.spec import JobSpec, needs_policy
from charter.jobs.stopping import STOP_GRACE_S
from charter.jobs.summary import CallCounts, JobCalls
from charter.judge.backends.base import (
    BackendError,
    ChatModel,
    ChatModelBase,
    Completion,
    GenerationRequest,
    Message,
)
from charter.judge.backends.options import BackendOptions
from charter.prompt_files import PromptRecord

from .cluster import NAMESPACE, RayUnavailable
from .options import RayOptions
from .worker import JobContext, PromptWorker, Report, WorkerModels

log = logging.getLogger(__name__)

MAX_DEALS = 3
"""A prompt lost with its worker this many times is recorded as failed (with why), so a prompt
that kills every worker it meets cannot stop the job."""
MAX_REPLACEMENTS = 3
"""Replacements per worker place; a place whose workers keep dying is given up."""

_LOOKING_UP: ContextVar[bool] = ContextVar("charter_ray_lookup", default=False)
#: Loggers that warn of a failed call: quiet during a lookup, where a call the store lacks
#: fails on purpose.
_QUIET = ("charter.judge.compare", "charter.judge.score", "charter.judge.critique",
          "charter.judge.rank", "charter.jobs.run")  # fmt: skip


def _not_looking_up(record: logging.LogRecord) -> bool:
    return not _LOOKING_UP.get()


for _name in _QUIET:  # a no-op outside a lookup; lookups of several lanes overlap
    logging.getLogger(_name).addFilter(_not_looking_up)


@contextlib.contextmanager
def _quiet_lookup() -> Iterator[None]:
    """Within it (this task and those it starts), failed calls are not logged."""
    token = _LOOKING_UP.set(True)
    try:
        yield
    finally:
        _LOOKING_UP.reset(token)


class _Place:
    """One worker place: its current actor, replaced when it dies."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.actor: Any = None
        self.generation = 0
        self.replacements = 0
        self.given_up = False
        self.lock = asyncio.Lock()


class RayExecutor:
    """Runs a job's pending prompts on Ray workers (see the module docstring). `start` the
    workers before the job is written (a model that does not open on them leaves no job),
    `execute` the run, and `close` (always)."""

    def __init__(self, ray: Any, options: RayOptions, models: WorkerModels, name: str) -> None:
        self.ray = ray
        self.options = options
        self.models = models
        self.name = name
        self.places = [_Place(i) for i in range(options.ray_workers)]
        self.remote = ray.remote(num_cpus=1, max_restarts=0)(PromptWorker)
        self.stats = {"judge": CallStats(), "policy": CallStats()}
        self.lost: Counter[int] = Counter()

    async def start(self) -> None:
        """Start every worker and open its models; `RayUnavailable` (one line) if one cannot."""
        await asyncio.gather(*(self._spawn(place) for place in self.places))

    async def close(self) -> None:
        for place in self.places:
            self._kill(place)

    async def _spawn(self, place: _Place) -> None:
        place.generation += 1
        place.actor = self.remote.options(
            name=f"{self.name}-w{place.index}-{place.generation}", namespace=NAMESPACE
        ).remote(self.models)
        try:
            await place.actor.open.remote()
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            text = str(cause).strip().splitlines()
            raise RayUnavailable(
                f"a Ray worker could not open the job's models: {text[0] if text else cause!r}"
            ) from None

    def _kill(self, place: _Place) -> None:
        if place.actor is not None:
            with contextlib.suppress(Exception):
                self.ray.kill(place.actor, no_restart=True)

    async def _replace(self, place: _Place, generation: int) -> None:
        """A new actor in `place`, unless another lane replaced the dead one already."""
        async with place.lock:
            if place.generation != generation or place.given_up:
                return
            self._kill(place)
            if place.replacements >= MAX_REPLACEMENTS:
                place.given_up = True
                log.error("Ray worker place %d: its workers kept dying; given up", place.index)
                return
            place.replacements += 1
            log.warning("Ray worker %d died; dealing its unfinished prompts again", place.index)
            try:
                await self._spawn(place)
            except Exception as exc:  # the cluster has no room or no models for it any more
                place.given_up = True
                log.error("Ray worker place %d could not be replaced: %s", place.index, exc)

    # ------------------------------------------------------------------ the run

    async def execute(self, run: JobRun) -> JobCalls:
        """Deal `run.pending` to the workers until every prompt is settled, the run halts, or
        a stop is requested (then the workers finish their calls in flight and send them back,
        for up to `STOP_GRACE_S`, or until a second request)."""
        context = self.ray.put(JobContext(run.job, run.nonce_key, run.calibration))
        run.activity.add(self.stats.values())  # calls and tokens as the workers report them
        queue: deque[tuple[int, PromptRecord]] = deque(run.pending)
        per_place = -(-self.models.prompts_in_flight // self.options.ray_shard) + 1
        lanes = [
            asyncio.ensure_future(self._lane(run, place, queue, context))
            for place in self.places
            for _ in range(per_place)
        ]
        work: asyncio.Future[Any] = asyncio.gather(*lanes)
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stop_when_asked(run))
        try:
            await asyncio.wait([work, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not work.done():  # a stop was asked: the workers are finishing their calls
                urgent: asyncio.Future[Any] = asyncio.ensure_future(self._urgent(run))
                await asyncio.wait(
                    [work, urgent], timeout=STOP_GRACE_S, return_when=asyncio.FIRST_COMPLETED
                )
                urgent.cancel()
            if work.done():
                work.result()  # what escaped a lane (a store that refused a write)
        finally:
            stopping.cancel()
            if not work.done():
                await self.close()  # abandon what is still in flight
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        if queue and not run.stopping.is_set() and not run.halted:
            raise RayUnavailable(
                f"every Ray worker died or could not be replaced; {len(queue)} prompt(s) left "
                "pending (resume to deal them again)"
            )
        return self._calls()

    async def _stop_when_asked(self, run: JobRun) -> None:
        await run.stopping.wait()
        await self._tell_workers(urgent=False)

    async def _urgent(self, run: JobRun) -> None:
        if run.stop_request is not None:
            await run.stop_request.urgent.wait()

    async def _tell_workers(self, urgent: bool) -> None:
        for place in self.places:
            if place.actor is not None and not place.given_up:
                with contextlib.suppress(Exception):
                    place.actor.stop.remote(urgent)

    async def _lane(
        self, run: JobRun, place: _Place, queue: deque[tuple[int, PromptRecord]], context: Any
    ) -> None:
        """One of a worker's shards at a time, until no prompt is left to deal."""
        while queue and not place.given_up and not run.stopping.is_set() and not run.halted:
            shard = [queue.popleft() for _ in range(min(self.options.ray_shard, len(queue)))]
            stored, to_deal = await self._look_up(run, shard)
            if not to_deal:
                continue
            unsettled = dict(to_deal)
            generation = place.generation
            try:
                stream = place.actor.run.remote(context, to_deal, stored)
                async for ref in stream:
                    self._commit(run, await ref, unsettled)
            except (self.ray.exceptions.RayActorError, self.ray.exceptions.ActorUnavailableError):
                if run.stopping.is_set():
                    return  # killed at the end of a stop: what it had stays pending
                self._deal_again(run, queue, unsettled)
                await self._replace(place, generation)

    def _deal_again(
        self,
        run: JobRun,
        queue: deque[tuple[int, PromptRecord]],
        unsettled: dict[int, PromptRecord],
    ) -> None:
        """Put a dead worker's unfinished prompts back at the front of the queue (a prompt
        lost `MAX_DEALS` times is recorded as failed instead)."""
        for position, record in sorted(unsettled.items(), reverse=True):
            self.lost[position] += 1
            if self.lost[position] >= MAX_DEALS:
                error = f"lost with its Ray worker {self.lost[position]} times"
                run.settle(position, Outcome([], {}, error))
            else:
                queue.appendleft((position, record))

    async def _look_up(
        self, run: JobRun, shard: list[tuple[int, PromptRecord]]
    ) -> tuple[dict[str, str], list[tuple[int, PromptRecord]]]:
        """The stored replies `shard`'s prompts will need, and the prompts still to deal: a
        prompt whose every call is stored is settled here, from the store."""
        stored: dict[str, str] = {}
        to_deal: list[tuple[int, PromptRecord]] = []
        m = self.models
        for position, record in shard:
            judge = StoreLookup(m.judge, run.db)
            policy = StoreLookup(m.policy, run.db) if m.policy is not None else None
            with _quiet_lookup():
                outcome = await attempt_prompt(
                    run.job, position, record, judge, policy, run.nonces, run.calibration
                )
            lookups = [(r, found) for r, found in (("judge", judge), ("policy", policy)) if found]
            if outcome is not None and not any(found.missing for _, found in lookups):
                for role, lookup in lookups:
                    self.stats[role].reused += lookup.stats.reused
                run.settle(position, outcome)
                continue
            for _, lookup in lookups:
                stored.update(lookup.found)
            to_deal.append((position, record))
        return stored, to_deal

    def _commit(self, run: JobRun, report: Report, unsettled: dict[int, PromptRecord]) -> None:
        """Store a report's calls, then settle its finished prompts (so a prompt is never
        marked done before its calls are kept)."""
        if report.calls:
            with run.db.conn:
                keep_calls(run.db, report.calls)
        for role, made in report.made.items():
            self.stats[role].made += made
        for role, reused in report.reused.items():
            self.stats[role].reused += reused
        for role, tokens in report.tokens.items():
            self.stats[role].tokens += tokens
        for position, outcome in report.outcomes:
            if unsettled.pop(position, None) is not None:
                run.settle(position, outcome)

    def _calls(self) -> JobCalls:
        def counts(role: str) -> CallCounts:
            return CallCounts(made=self.stats[role].made, reused=self.stats[role].reused)

        return JobCalls(
            judge=counts("judge"), policy=counts("policy") if self.models.policy else None
        )


class OnWorkers(ChatModelBase):
    """Stands, in a job session on Ray, for a model the workers open: the driver itself never
    asks it anything (its prompts run on the workers)."""

    def __init__(self, spec: str) -> None:
        self._spec = spec

    @property
    def spec(self) -> str:
        return self._spec

    async def generate(self, request: GenerationRequest) -> Completion:
        raise BackendError(f"{self._spec} is asked on the Ray workers, not by the driver")

    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion:
        raise BackendError(f"{self._spec} is asked on the Ray workers, not by the driver")

    async def aclose(self) -> None:
        return None


class RayWorkers:
    """A job session's `ModelSource` when the job runs on Ray: the models are the workers'.
    `start` starts them (each opening the job's models) before the job is written, so a model
    that does not open leaves no job behind, as a local run's would; `release` ends them."""

    def __init__(self, ray: Any, options: RayOptions, local: LocalModels, name: str) -> None:
        self.ray = ray
        self.options = options
        self.local = local
        self.name = name
        self.executor: RayExecutor | None = None

    def endpoint(self, spec: str, role: Role) -> str | None:
        return self.local.endpoint(spec, role)

    async def open(self, spec: str, role: Role) -> ChatModel:
        return OnWorkers(spec)

    async def release(self, model: ChatModel) -> None:
        if self.executor is not None:
            await self.executor.close()
            self.executor = None

    def _resolved(self, role: Role) -> BackendOptions:
        """`role`'s options with its endpoints read here (a worker has not this environment)."""
        options = self.local.options(role)
        urls = options.resolved_base_urls()
        return options.model_copy(update={"base_url": ",".join(urls) if urls else None})

    async def start(self, spec: JobSpec, records: Sequence[PromptRecord]) -> RayExecutor:
        needs = needs_policy(records)
        shared = needs and shares_judge(self, spec)
        models = WorkerModels(
            judge=spec.judge,
            judge_options=self._resolved("judge"),
            policy=spec.policy if needs else None,
            policy_options=self._resolved("policy") if needs and not shared else None,
            shared=shared,
            prompts_in_flight=self.local.max_concurrency,
        )
        self.executor = RayExecutor(self.ray, self.options, models, self.name)
        await self.executor.start()
        return self.executor
