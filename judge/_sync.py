"""Run the judge's coroutines from synchronous code.

The async clients inside a model (httpx connection pools) belong to the event loop they were
first used on, so `asyncio.run` per call would break the second call on the same model. The
sync wrappers instead share one long-lived loop on a daemon thread: every sync call on a model
runs on the same loop, and the wrappers also work where a loop is already running (notebooks).
A model used through the sync wrappers should not also be awaited on another loop.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="charter-judge-loop", daemon=True
            )
            thread.start()
            _loop = loop
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on the shared background loop and return its result."""
    return asyncio.run_coroutine_threadsafe(coro, _background_loop()).result()


def synced(func: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """A synchronous twin of an async function, same signature, run on the shared loop."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(func(*args, **kwargs))

    wrapper.__doc__ = f"Synchronous `{func.__name__}` (runs on charter's background loop)."
    return wrapper
