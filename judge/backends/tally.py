"""Per-endpoint counts of calls, per context: what a job's summary reports of its endpoints.

A service shares one model (and its endpoints) among the jobs it runs; counting in a context
variable set for the length of one job's run gives each job its own calls. Kept apart from the
endpoint pool so counting imports no HTTP client.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["EndpointCounts", "EndpointTally", "Fleet", "record", "report", "tallying"]

Event = Literal["calls", "failures", "rested"]


@dataclass
class EndpointCounts:
    """What one endpoint did: calls sent to it, calls it failed (each then sent elsewhere, or
    failed for good), and times it was rested."""

    calls: int = 0
    failures: int = 0
    rested: int = 0


@runtime_checkable
class Fleet(Protocol):
    """A model served by several endpoints (`EndpointPool`)."""

    @property
    def urls(self) -> tuple[str, ...]: ...


class EndpointTally:
    """The per-endpoint counts of every fleet's calls made in one context."""

    def __init__(self) -> None:
        self._counts: dict[int, list[EndpointCounts]] = {}

    def add(self, fleet: Fleet, index: int, event: Event) -> None:
        counts = self._counts.setdefault(id(fleet), [EndpointCounts() for _ in fleet.urls])
        setattr(counts[index], event, getattr(counts[index], event) + 1)

    def report(self, model: object) -> list[dict[str, Any]] | None:
        """`model`'s per-endpoint counts in this context; None unless it is a `Fleet`."""
        if not isinstance(model, Fleet):
            return None
        counts = self._counts.get(id(model)) or [EndpointCounts() for _ in model.urls]
        return report(model.urls, counts)


_TALLY: ContextVar[EndpointTally | None] = ContextVar("charter_endpoint_tally", default=None)


@contextlib.contextmanager
def tallying() -> Iterator[EndpointTally]:
    """Count the fleets' calls made in this context (and in the tasks it starts)."""
    tally = EndpointTally()
    token = _TALLY.set(tally)
    try:
        yield tally
    finally:
        _TALLY.reset(token)


def record(fleet: Fleet, index: int, event: Event) -> None:
    """Count `event` for endpoint `index` of `fleet` in the current context's tally, if any."""
    tally = _TALLY.get()
    if tally is not None:
        tally.add(fleet, index, event)


def report(urls: Sequence[str], counts: Sequence[EndpointCounts]) -> list[dict[str, Any]]:
    """Rows of {endpoint (1-based), url, calls, failures, rested}, in the order of `urls`."""
    return [
        {"endpoint": number, "url": url, **asdict(c)}
        for number, (url, c) in enumerate(zip(urls, counts, strict=True), start=1)
    ]
