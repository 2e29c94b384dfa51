"""The constitution as an RL reward, with a deadline: one core for every trainer and front end.

An RL step waits on its slowest reward, so every batch of rewards has a deadline
(`RewardDeadline.deadline_s`). Each item is judged concurrently:

- without a reference answer, its reward is the pointwise P(yes) under the constitution
  (`charter.judge.score`, K principles per prompt);
- with one, it is P(response beats the reference) (`charter.judge.compare`, the config's
  protocol); a response equal to its reference ties (0.5) without a model call.

A judgment not back by the deadline is cancelled (or, in a large batch, never started: at most
`JUDGMENTS_AT_ONCE` run at a time); one that came back with no verdict failed.
Either way the item gets a fallback, flagged, never an exception: the mean reward of its
group (items the caller grouped, e.g. completions of one prompt: zero advantage, neither
rewarded nor punished), else `NEUTRAL` (0.5). `RewardCounts` keeps the totals to report.
GRPO (`charter.trainer.grpo`), `charter.rewards` and the service's reward routes all use this.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from charter.constitution import Constitution

from .backends.base import ChatModel
from .config import DEFAULT_CONFIG, JudgeConfig

log = logging.getLogger(__name__)


NEUTRAL = 0.5
"""The fallback reward of an item with no group (or whose whole group fell back)."""

OPENRLHF_CLIENT_TIMEOUT_S = 180.0
"""OpenRLHF's remote reward client gives up on a request after this long (aiohttp total)."""
MAX_DEADLINE_S = OPENRLHF_CLIENT_TIMEOUT_S - 10.0
"""The longest deadline: a reply still reaches OpenRLHF's client before it gives up."""


class RewardDeadline(BaseModel):
    """How long rewards may take: declared once, read by the CLI, the service and the clients.
    (Not `RewardConfig`: that is TRL's reward-model trainer config, which `trainer.reward`
    uses.)"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deadline_s: float = Field(
        default=60.0,
        gt=0,
        le=MAX_DEADLINE_S,
        description="Seconds a batch of rewards may take; a judgment not back by then is "
        "cancelled and its item gets the fallback reward (its group's mean, else 0.5), "
        "flagged. At most 170, under OpenRLHF's 180 s client timeout.",
    )


DEFAULT_REWARD_DEADLINE = RewardDeadline()

DEADLINE_FIELD: Any = RewardDeadline.model_fields["deadline_s"]
"""The deadline's one declaration, for settings models that carry it (the service's, the
clients'): `deadline_s: float = DEADLINE_FIELD` keeps its default, bounds and help."""


@dataclass(frozen=True)
class RewardItem:
    """One response to reward; `group` names items to average over when one falls back."""

    prompt: str
    response: str
    reference: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class Reward:
    """An item's reward in [0, 1], its per-principle scores, and whether it fell back."""

    reward: float
    principle_scores: dict[str, float] = field(default_factory=dict)
    fallback: bool = False
    timed_out: bool = False
    error: str | None = None


_COUNTING = threading.Lock()
"""Held while totals are added (one lock for all: an addition takes microseconds)."""


@dataclass
class RewardCounts:
    """Totals since the rewarder was made: what a run reports.

    `items`: rewards given; `judged`: judgments asked that came back by the deadline (with a
    verdict or not; a response equal to its reference needs none); `failed`: rewards with no
    verdict (every question failed, or the judge could not be had); `timeouts`: judgments
    not back by the deadline; `fallbacks` = `failed` + `timeouts`.
    """

    batches: int = 0
    items: int = 0
    judged: int = 0
    failed: int = 0
    timeouts: int = 0

    @classmethod
    def of_batch(cls, rewards: Sequence[Reward], *, judged: int) -> RewardCounts:
        """One batch's counts, of which `judged` judgments came back by the deadline."""
        return cls(
            batches=1,
            items=len(rewards),
            judged=judged,
            failed=sum(r.fallback and not r.timed_out for r in rewards),
            timeouts=sum(r.timed_out for r in rewards),
        )

    @property
    def fallbacks(self) -> int:
        return self.failed + self.timeouts

    def as_dict(self) -> dict[str, int]:
        return {**vars(self), "fallbacks": self.fallbacks}

    def add(self, other: RewardCounts) -> None:
        """Add `other`'s totals to these (a service sums its requests' counts). Safe from
        several threads at once: verl's threaded reward manager calls one client so."""
        with _COUNTING:
            for name, value in vars(other).items():
                setattr(self, name, getattr(self, name) + value)


@dataclass(frozen=True)
class Judged:
    """What one judgment gave: a value (None: no verdict), its principle scores, its error."""

    value: float | None
    principle_scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Outcome:
    """One awaited judgment under a deadline: its result, or why there is none."""

    result: Judged | None
    timed_out: bool = False


JUDGMENTS_AT_ONCE = 256
"""Judgments of one batch running at once; each further one starts as one ends, and none
after the deadline. Starting a 1,024-item batch all at once builds every judge prompt up
front, blocking the event loop (and so the deadline) under CPU load; 256 keeps any backend's
slots full (K >= 1 calls each). The first ones start one per turn of the loop, for the same
reason."""


async def within_deadline(
    jobs: Sequence[Callable[[], Awaitable[Judged]]],
    deadline_s: float | None,
    *,
    at_once: int = JUDGMENTS_AT_ONCE,
) -> list[Outcome]:
    """Run the jobs, `at_once` at a time, in order; those not done after `deadline_s` are
    timed out: the running ones cancelled, the rest never started.

    A job that raises (other than cancellation of the caller) is an outcome with an error,
    so one bad item never takes the batch down with it.
    """

    async def guarded(job: Callable[[], Awaitable[Judged]]) -> Judged:
        try:
            return await job()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("reward judgment raised %s: %s", type(exc).__name__, exc)
            return Judged(None, error=f"{type(exc).__name__}: {exc}")

    if not jobs:
        return []
    loop = asyncio.get_running_loop()
    ends = None if deadline_s is None else loop.time() + deadline_s
    results: list[Judged | None] = [None] * len(jobs)
    running: dict[asyncio.Task[Judged], int] = {}
    all_done: asyncio.Future[None] = loop.create_future()
    next_job = 0

    def start_next() -> bool:
        """Start the next job, if any is left and the deadline has not passed."""
        nonlocal next_job
        if next_job < len(jobs) and (ends is None or loop.time() < ends):
            task = asyncio.ensure_future(guarded(jobs[next_job]))
            running[task] = next_job
            next_job += 1
            task.add_done_callback(finished)
            return True
        if not running and not all_done.done():
            all_done.set_result(None)
        return False

    def finished(task: asyncio.Task[Judged]) -> None:
        index = running.pop(task)
        if not task.cancelled():
            results[index] = task.result()
        if not all_done.done():
            start_next()

    def fill() -> None:  # one job per turn of the loop: replies are read between starts
        if len(running) < at_once and not all_done.done() and start_next():
            loop.call_soon(fill)

    fill()
    try:
        await asyncio.wait([all_done], timeout=None if ends is None else ends - loop.time())
    except asyncio.CancelledError:
        all_done.cancel()
        for task in running:
            task.cancel()
        raise
    if not all_done.done():
        all_done.cancel()  # no job starts from here on
    late = list(running)
    for task in late:
        task.cancel()
    if late:
        await asyncio.gather(*late, return_exceptions=True)
    return [
        Outcome(result) if result is not None else Outcome(None, timed_out=True)
        for result in results
    ]


def fallen_back(
    items: Sequence[RewardItem], error: str, *, timed_out: bool = False
) -> list[Reward]:
    """Every item's reward when the judge could not be had at all (`timed_out`: not by the
    deadline, e.g. still loading): the neutral value, flagged (no group has a known reward to
    take the mean of)."""
    return [Reward(NEUTRAL, fallback=True, timed_out=timed_out, error=error) for _ in items]


def fill_by_group(raw: Sequence[float | None], groups: Sequence[str | None]) -> list[float]:
    """Missing rewards get their group's mean of the known ones (zero advantage), else 0.5."""
    known: dict[str, list[float]] = {}
    for value, group in zip(raw, groups, strict=True):
        if value is not None and group is not None:
            known.setdefault(group, []).append(value)
    out = []
    for value, group in zip(raw, groups, strict=True):
        if value is not None:
            out.append(value)
            continue
        members = known.get(group) if group is not None else None
        out.append(sum(members) / len(members) if members else NEUTRAL)
    return out


class ConstitutionRewarder:
    """Rewards under one constitution and judge, each batch bounded by the deadline."""

    def __init__(
        self,
        model: ChatModel,
        constitution: Constitution,
        config: JudgeConfig = DEFAULT_CONFIG,
        reward_config: RewardDeadline = DEFAULT_REWARD_DEADLINE,
    ) -> None:
        self.model = model
        self.constitution = constitution
        self.config = config
        self.reward_config = reward_config
        self.counts = RewardCounts()
        self.last_error: str | None = None

    async def rewards(
        self, items: Sequence[RewardItem], *, deadline_s: float | None = None
    ) -> list[Reward]:
        """One `Reward` per item, in order, within the deadline (this call's, else the config's)."""
        deadline = self.reward_config.deadline_s if deadline_s is None else deadline_s
        started = time.perf_counter()
        outcomes = await within_deadline([self._job(item) for item in items], deadline)
        values = [o.result.value if o.result is not None else None for o in outcomes]
        filled = fill_by_group(values, [item.group for item in items])
        out: list[Reward] = []
        for outcome, value in zip(outcomes, filled, strict=True):
            result = outcome.result
            error = "no verdict by the deadline" if outcome.timed_out else None
            if result is not None:
                error = result.error or "no verdict"
            out.append(
                Reward(
                    reward=value,
                    principle_scores=result.principle_scores if result is not None else {},
                    fallback=result is None or result.value is None,
                    timed_out=outcome.timed_out,
                    error=error if result is None or result.value is None else None,
                )
            )
        self._count(out)
        timeouts = sum(r.timed_out for r in out)
        if timeouts:
            log.warning(
                "rewards: %d of %d judgments not back within %.1f s (took %.2f s); "
                "they got the fallback",
                timeouts,
                len(out),
                deadline,
                time.perf_counter() - started,
            )
        return out

    def _count(self, rewards: Sequence[Reward]) -> None:
        self.counts.add(RewardCounts.of_batch(rewards, judged=0))  # judged: as each is asked
        failed = [r for r in rewards if r.fallback and not r.timed_out]
        if failed:
            self.last_error = failed[0].error

    def _job(self, item: RewardItem) -> Callable[[], Awaitable[Judged]]:
        async def judge() -> Judged:
            if item.reference is not None:
                return await self.beats(item.prompt, item.response, item.reference)
            return await self.pointwise(item.prompt, item.response)

        return judge

    async def pointwise(self, prompt: str, response: str) -> Judged:
        """P(yes) of the response alone under the constitution."""
        from .score import score  # not at import: the CLI reads `RewardDeadline` (no numpy)

        result = await score(self.model, self.constitution, prompt, response, self.config)
        self.counts.judged += 1
        scores = {pid: p for pid, p in result.principle_scores.items() if p is not None}
        error = next((j.error for j in result.judgments if j.error), None)
        return Judged(result.p_yes, scores, error)

    async def beats(self, prompt: str, response: str, other: str) -> Judged:
        """P(response beats `other`); identical texts tie without a model call."""
        if response == other:
            return Judged(NEUTRAL)
        from .compare import compare

        result = await compare(self.model, self.constitution, prompt, response, other, self.config)
        self.counts.judged += 1
        scores = {v.principle_id: v.p_a for v in result.principles if v.p_a is not None}
        errors = [j.error for j in result.judgments if j.error]
        errors += [j.error for s in result.scores for j in s.judgments if j.error]
        return Judged(result.p_a, scores, errors[0] if errors else None)
