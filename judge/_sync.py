"""Run the judge's coroutines from synchronous code.

The async clients inside a model (httpx connection pools) belong to the event loop they were
first used on, so `asyncio.run` per call would break the second call on the same model. The
sync wrappers instead share one long-lived loop on a daemon thread: every sync call on a model
runs on the same loop, and the wrappers also work where a loop is already running (notebooks).
A model used through the sync wrappers should not also be awaited on another loop; close it
with `model.close()` (or a `with` block), which runs its `aclose` on this loop. At exit the
loop is stopped and closed, so it leaves nothing open behind it.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=_serve, args=(loop,), name="charter-judge-loop", daemon=True
            )
            thread.start()
            if _thread is None:
                atexit.register(shutdown)
            _loop, _thread = loop, thread
        return _loop


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """Run `loop` until `shutdown` stops it, then finish its tasks and close it."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


def shutdown() -> None:
    """Stop and close the background loop (done at exit); a later sync call starts a new one."""
    with _lock:
        loop, thread = _loop, _thread
    if loop is None or thread is None or loop.is_closed():
        return
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)  # its tasks are cancelled; only a blocked loop takes longer


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on the shared background loop and return its result."""
    loop = _background_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError("a sync wrapper was called from charter's own loop; await it instead")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


async def on_shared_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro` run on the shared background loop, from any other loop (so a model used
    through the sync wrappers can also be awaited from a caller's own loop)."""
    loop = _background_loop()
    if threading.current_thread() is _thread:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


def synced(func: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """A synchronous twin of an async function, same signature, run on the shared loop."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(func(*args, **kwargs))

    wrapper.__doc__ = f"Synchronous `{func.__name__}` (runs on charter's background loop)."
    return wrapper
