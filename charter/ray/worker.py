"""A Ray worker: runs the prompts it is dealt exactly as one process runs them, without the store.

The driver (`charter.ray.driver`) holds the store. A worker opens its own model clients (the
job's specs and endpoints, `--concurrency` requests in flight per endpoint and prompts in
flight), and for each shard it is dealt runs `charter.jobs.run.attempt_prompt`, the code the
local path runs, through a `RecordingModel` instead of the store-backed `CachedModel`: calls
the driver found stored are answered from the replies it sent along, every other call is made
and its reply streamed back at once, and so is each finished prompt's outcome. A worker killed
mid-shard loses only the calls it had in flight; the driver deals its unfinished prompts again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

from charter.calibrations import CalibrationFit
from charter.call_cache import CallRecord, RecordingModel
from charter.jobs.run import Outcome, attempt_prompt
from charter.jobs.stopping import StopGate
from charter.jobs.store import JobRecord
from charter.judge.backends.base import ChatModel
from charter.judge.backends.options import BackendOptions
from charter.judge.prompts import KeyedNonces
from charter.prompt_files import PromptRecord

Role = Literal["judge", "policy"]


class WorkerModels(BaseModel):
    """What a worker opens: the job's specs with each role's endpoints, timeout and
    concurrency, resolved by the driver (a worker reads only its API key from its own
    environment). `shared`: the judge also samples the candidates (one model, not two)."""

    model_config = ConfigDict(frozen=True)

    judge: str
    judge_options: BackendOptions
    policy: str | None = None
    policy_options: BackendOptions | None = None
    shared: bool = False
    prompts_in_flight: int = 16


@dataclass(frozen=True)
class JobContext:
    """What every shard of a job needs; the driver puts it in Ray's object store once."""

    job: JobRecord
    nonce_key: bytes
    calibration: CalibrationFit | None


@dataclass
class Report:
    """What a worker streams back: the calls it paid for, the prompts it finished, and how
    many calls each role made and reused and the tokens it paid for since its last report (in
    order: a prompt's calls come before or with its outcome)."""

    calls: list[CallRecord] = field(default_factory=list)
    outcomes: list[tuple[int, Outcome]] = field(default_factory=list)
    made: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)


class PromptWorker:
    """The actor (made remote by the driver: `ray.remote(PromptWorker)`)."""

    def __init__(self, models: WorkerModels) -> None:
        self.models = models
        self.judge: ChatModel | None = None
        self.policy: ChatModel | None = None
        self._stopping: asyncio.Event | None = None
        self._gate: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._models: list[ChatModel] = []

    async def open(self) -> None:
        """Open the model clients (a spec or endpoint that does not load raises here, before
        any prompt is dealt)."""
        from charter.judge.backends.registry import load_model

        m = self.models
        self._stopping = asyncio.Event()
        self._gate = asyncio.Semaphore(m.prompts_in_flight)
        self._models = [load_model(m.judge, m.judge_options)]
        if m.policy is not None and not m.shared:
            self._models.append(load_model(m.policy, m.policy_options))
        # One gate per role, as the local run has, over one model when the judge samples too.
        self.judge = StopGate(self._models[0], self._stopping)
        if m.policy is not None:
            self.policy = StopGate(self._models[-1], self._stopping)

    async def stop(self, urgent: bool = False) -> None:
        """Start no new model call; the calls in flight finish and their prompts are sent
        back. `urgent`: abandon the prompts in flight at once."""
        assert self._stopping is not None
        self._stopping.set()
        if urgent:
            for task in list(self._tasks):
                task.cancel()

    async def close(self) -> None:
        for model in self._models:
            await model.aclose()

    async def run(
        self, context: JobContext, shard: list[tuple[int, PromptRecord]], stored: dict[str, str]
    ) -> AsyncIterator[Report]:
        """Run `shard`'s prompts, streaming `Report`s as calls and prompts finish."""
        assert self.judge is not None and self._gate is not None and self._stopping is not None
        events: asyncio.Queue[CallRecord | tuple[int, Outcome] | None] = asyncio.Queue()
        judge = RecordingModel(self.judge, stored, events.put_nowait)
        policy = None
        if self.policy is not None:
            policy = RecordingModel(self.policy, stored, events.put_nowait)
        nonces = KeyedNonces(context.nonce_key)
        gate, stopping = self._gate, self._stopping

        async def one(position: int, record: PromptRecord) -> None:
            async with gate:
                if stopping.is_set():
                    return
                outcome = await attempt_prompt(
                    context.job, position, record, judge, policy, nonces, context.calibration
                )
            if outcome is not None:  # None: stopped, the prompt stays pending
                events.put_nowait((position, outcome))

        tasks = [asyncio.ensure_future(one(position, record)) for position, record in shard]
        self._tasks.update(tasks)
        everything = asyncio.gather(*tasks, return_exceptions=True)
        everything.add_done_callback(lambda _: events.put_nowait(None))
        counted = {"judge": (0, 0, 0), "policy": (0, 0, 0)}
        try:
            ended = False
            while not ended:
                report = Report()
                item = await events.get()
                while True:  # everything already waiting goes in one report
                    if item is None:
                        ended = True
                    elif isinstance(item, CallRecord):
                        report.calls.append(item)
                    else:
                        report.outcomes.append(item)
                    if events.empty():
                        break
                    item = events.get_nowait()
                for role, model in (("judge", judge), ("policy", policy)):
                    if model is None:
                        continue
                    now = (model.stats.made, model.stats.reused, model.stats.tokens)
                    before = counted[role]
                    report.made[role] = now[0] - before[0]
                    report.reused[role] = now[1] - before[1]
                    report.tokens[role] = now[2] - before[2]
                    counted[role] = now
                if report.calls or report.outcomes or any(report.made.values()):
                    yield report
        finally:
            self._tasks.difference_update(tasks)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await everything
