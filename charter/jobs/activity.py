"""What a running job is doing right now, in model calls and tokens as well as prompts.

Prompts are a poor clock: batched local generation finishes a batch's prompts together, so a
job can show "0/12 prompts" for most of its life. A job's activity therefore also counts the
model calls answered and in flight, the tokens they cost, the tokens a local model has decoded
so far (before its batch's calls return), and the calls sitting out the delay of a call
another tenant paid for. `watch` reports it every few seconds, starting at once, for the CLI's
log lines (when stderr is not a terminal, a bar shows nothing) and the service's job view.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from charter.call_cache import CallStats
from charter.common.environment import model_from_env

PROGRESS_EVERY_ENV = "CHARTER_PROGRESS_EVERY_S"


class ActivitySettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    every_s: float = Field(
        default=10.0,
        ge=0.1,
        le=3600.0,
        description="Seconds between a running job's progress lines (the first comes at once).",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ActivitySettings:
        return model_from_env(cls, {"every_s": PROGRESS_EVERY_ENV}, env)


@dataclass(frozen=True)
class Activity:
    """One snapshot of a running job."""

    prompts_done: int
    prompts_total: int
    calls_made: int
    calls_reused: int
    in_flight: int
    waiting: int
    tokens: int
    decoded: int
    elapsed_s: float

    @property
    def tokens_per_s(self) -> float:
        return (self.tokens + self.decoded) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        """One log line: "42 s: prompts 0/12, calls 3 answered (+1 reused, 8 in flight), ...\""""
        parts = [
            f"{self.elapsed_s:.0f} s: prompts {self.prompts_done}/{self.prompts_total}",
            f"calls {self.calls_made} answered (+{self.calls_reused} from the store, "
            f"{self.in_flight} in flight)",
            f"tokens {self.tokens:,} answered",
        ]
        if self.decoded:
            parts.append(f"{self.decoded:,} decoded so far by the local model")
        parts.append(f"{self.tokens_per_s:.1f} tokens/s")
        if self.waiting:
            parts.append(
                f"waiting on {self.waiting} call(s) another token paid for (answered within the "
                "reuse delay cap)"
            )
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls_made": self.calls_made,
            "calls_reused": self.calls_reused,
            "calls_in_flight": self.in_flight,
            "calls_waiting": self.waiting,
            "tokens": self.tokens,
            "tokens_decoded": self.decoded,
            "tokens_per_s": round(self.tokens_per_s, 2),
            "elapsed_s": round(self.elapsed_s, 1),
        }


ActivityCallback = Callable[[Activity], None]
"""Called with a running job's `Activity`, at once and every `ActivitySettings.every_s`."""


def decoded_tokens(models: Iterable[Any]) -> int:
    """Tokens local models have decoded so far (each model counted once, wrappers unwrapped)."""
    seen: set[int] = set()
    total = 0
    for model in models:
        while model is not None and not hasattr(model, "decoded_tokens"):
            model = getattr(model, "inner", None)
        if model is not None and id(model) not in seen:
            seen.add(id(model))
            total += int(model.decoded_tokens)
    return total


class Tracker:
    """Takes snapshots of one run: its prompts, and the call counts and models its executor
    adds (`add`: the local executor's store-backed models, the Ray driver's counts of what
    its workers report)."""

    def __init__(self, prompts: Callable[[], tuple[int, int]]) -> None:
        self.prompts = prompts
        self.stats: list[CallStats] = []
        self.models: list[Any] = []
        self.started = time.monotonic()
        self.decoded_at_start = 0

    def add(self, stats: Iterable[CallStats], models: Iterable[Any] = ()) -> None:
        """Count `stats` and the tokens `models` decode from now on."""
        self.stats.extend(stats)
        self.decoded_at_start -= decoded_tokens(self.models)
        self.models.extend(m for m in models if m is not None)
        self.decoded_at_start += decoded_tokens(self.models)

    def snapshot(self) -> Activity:
        done, total = self.prompts()
        return Activity(
            prompts_done=done,
            prompts_total=total,
            calls_made=sum(s.made for s in self.stats),
            calls_reused=sum(s.reused for s in self.stats),
            in_flight=sum(s.in_flight for s in self.stats),
            waiting=sum(s.waiting for s in self.stats),
            tokens=sum(s.tokens for s in self.stats),
            decoded=decoded_tokens(self.models) - self.decoded_at_start,
            elapsed_s=time.monotonic() - self.started,
        )


@contextlib.asynccontextmanager
async def watch(
    tracker: Tracker,
    on_activity: ActivityCallback | None,
    settings: ActivitySettings | None = None,
) -> AsyncIterator[None]:
    """Report `tracker`'s snapshot at once, every `every_s` seconds, and once at the end."""
    if on_activity is None:
        yield
        return
    every = (settings or ActivitySettings.from_env()).every_s

    async def tick() -> None:
        while True:
            on_activity(tracker.snapshot())
            await asyncio.sleep(every)

    task = asyncio.create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        on_activity(tracker.snapshot())
