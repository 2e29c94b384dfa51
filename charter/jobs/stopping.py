"""Stopping a running job early and cleanly: no new model call starts, the calls in flight get
`STOP_GRACE_S` to finish and be stored, and unfinished prompts stay pending for the next run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from charter.judge.backends.base import ChatModel, Completion, GenerationRequest, Message

STOP_GRACE_S = 5.0
"""After a stop request, how long model calls already in flight get to finish (and be stored)."""


class StopRequest:
    """Asks a running job to stop early (the CLI calls `request` on SIGINT or SIGTERM).

    The first request starts no new model call, lets the calls in flight finish and be stored
    (for up to `STOP_GRACE_S`), and leaves unfinished prompts pending; a second request
    abandons the calls still in flight at once.
    """

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.urgent = asyncio.Event()

    def request(self) -> None:
        (self.urgent if self.requested.is_set() else self.requested).set()


class Stopping(Exception):
    """Raised instead of making a model call once the job is stopping; the prompt stays pending.
    The judge catches only `BackendError`, so this reaches `run_job` untouched."""


class StopGate:
    """A model that makes no new call once `stopping` is set, and knows when none is in flight."""

    def __init__(self, inner: ChatModel, stopping: asyncio.Event) -> None:
        self.inner = inner
        self.stopping = stopping
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    @property
    def spec(self) -> str:
        return self.inner.spec

    async def generate(self, request: GenerationRequest) -> Completion:
        return await self._call(lambda: self.inner.generate(request))

    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion:
        return await self._call(lambda: self.inner.choose(messages, options))

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def _call(self, call: Callable[[], Awaitable[Completion]]) -> Completion:
        if self.stopping.is_set():
            raise Stopping
        self.in_flight += 1
        self.idle.clear()
        try:
            return await call()
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()


async def finish_or_stop(
    work: asyncio.Future[Any], stop_request: StopRequest, gates: list[StopGate]
) -> None:
    """Await the job's prompts; once a stop is requested, give the model calls in flight up to
    `STOP_GRACE_S` (or until a second request) to finish and be stored, then abandon the rest."""
    requested = asyncio.ensure_future(stop_request.requested.wait())
    try:
        await asyncio.wait([work, requested], return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            work.result()  # raises what escaped a prompt (a store that refused a write)
            return

        async def drained() -> None:
            await asyncio.wait([work])
            for gate in gates:  # calls a prompt left behind when a sibling call stopped it
                await gate.idle.wait()

        finishing = asyncio.ensure_future(drained())
        urgent = asyncio.ensure_future(stop_request.urgent.wait())
        await asyncio.wait(
            [finishing, urgent], timeout=STOP_GRACE_S, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in (finishing, urgent):
            waiter.cancel()
        if work.done() and not work.cancelled():
            work.result()
    finally:
        requested.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
