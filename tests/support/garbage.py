"""Counting reference cycles a piece of async work leaves behind.

Cyclic garbage is freed only by the collector, whose pauses stall every request in flight; the
judge's hot paths must free everything by reference counting.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable


async def cyclic_garbage_after(work: Callable[[], Awaitable[object]]) -> int:
    """Objects the collector finds unreachable after `work` ran with collection disabled."""
    gc.collect()
    gc.disable()
    try:
        await work()
        return gc.collect()
    finally:
        gc.enable()
