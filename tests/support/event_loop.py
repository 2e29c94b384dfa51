"""How freely the event loop ran while some awaited work was going on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


def ticks_during(work: Callable[[], Awaitable[object]], every_s: float = 0.01) -> int:
    """Run `work` beside a task that ticks every `every_s`; the ticks it managed.

    A blocked event loop ticks not at all while blocked, so few ticks over long work mean the
    work held the loop.
    """

    async def scenario() -> int:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(every_s)

        task = asyncio.create_task(ticker())
        try:
            await work()
        finally:
            done.set()
            await task
        return ticks

    return asyncio.run(scenario())
