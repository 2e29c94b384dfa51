"""The models the service talks to: loaded once, shared by requests and jobs, closed at exit.

A request names only a spec; its endpoint comes from the service's settings for the role
(judge or policy), so no client can make the service call an address of its choosing. A
request may name the service's own judge and policy, and further specs only where the
operator allowed them (`allowed_models`): by default none, so no request makes the service
load a model (a local one costs ~800 MB and tens of seconds) it was not started with.

The service's judge and policy stay open for its lifetime. Models that requests named besides
them are kept in a least-recently-used pool of `model_pool_size`: past it the oldest is closed
(at once if no request is using it, else when its last user is done), so no stream of
distinct names can grow the service's memory. A model loads once, in a task that concurrent
requests share and that carries on when a request stops waiting for it (`lease(within=...)`:
the reward routes wait at most their deadline).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import httpx

from charter.judge import BackendError, BackendOptions, ChatModel
from charter.judge.backends.registry import load_model, uses_endpoint

from .settings import ServiceSettings

log = logging.getLogger(__name__)

Role = Literal["judge", "policy"]
_Key = tuple[str, str | None]


class ModelNotAllowed(ValueError):
    """A request named a model spec this service does not serve."""


class ModelUnavailable(Exception):
    """A model that cannot be loaded; the message is safe to show."""


class ModelLoading(TimeoutError):
    """A model still loading when its request stopped waiting; the load carries on."""


@dataclass(eq=False)
class _Entry:
    model: ChatModel
    users: int = 0
    evicted: bool = False


class ModelPool:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self._pinned: dict[_Key, _Entry] = {}  # the service's judge and policy
        self._pool: OrderedDict[_Key, _Entry] = OrderedDict()  # oldest use first
        self._loading: dict[_Key, asyncio.Task[ChatModel]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._in_use: dict[int, _Entry] = {}  # by id(model): entries with users

    def check(self, spec: str) -> str:
        """`spec` if a request may use it, else `ModelNotAllowed` saying what is allowed."""
        if not self.settings.model_allowed(spec):
            allowed = sorted(
                {*self.settings.allowed_models, self.settings.judge, self.settings.policy}
            )
            raise ModelNotAllowed(
                f"model {spec!r} is not served here; allowed: {', '.join(allowed)}"
            )
        return spec

    def _key(self, spec: str, role: Role) -> _Key:
        remote = uses_endpoint(spec)
        return spec, (self.settings.base_url_for(role) if remote else None)

    def _pinned_keys(self) -> set[_Key]:
        return {self._key(self.settings.judge, "judge"), self._key(self.settings.policy, "policy")}

    def _entry(self, key: _Key) -> _Entry | None:
        entry = self._pinned.get(key)
        if entry is None:
            entry = self._pool.get(key)
            if entry is not None:
                self._pool.move_to_end(key)
        return entry

    def loaded(self, spec: str, role: Role = "judge") -> bool:
        key = self._key(spec, role)
        return key in self._pinned or key in self._pool

    def model(self, spec: str, role: Role = "judge") -> ChatModel | None:
        """The open model for `spec` in `role`, if it is loaded (nothing is loaded for it)."""
        key = self._key(spec, role)
        entry = self._pinned.get(key) or self._pool.get(key)
        return entry.model if entry is not None else None

    @property
    def size(self) -> int:
        """Models open now, the service's own included (evicted ones still in use are not)."""
        return len(self._pinned) + len(self._pool)

    async def get(self, spec: str, role: Role = "judge") -> ChatModel:
        """The model for `spec` in `role`, loading it on first use, for a caller that does not
        hold it (start-up's preload); a user holds it with `acquire` or `lease`."""
        self.check(spec)
        key = self._key(spec, role)
        return (await self._acquire(key, spec, None)).model

    async def acquire(
        self, spec: str, role: Role = "judge", *, within: float | None = None
    ) -> ChatModel:
        """The model for `spec` in `role`, kept open until `release`d (a job holds it for its
        run). `within`: seconds to wait for a model still loading, else `ModelLoading` (the
        load carries on)."""
        self.check(spec)
        entry = await self._acquire(self._key(spec, role), spec, within)
        entry = self._in_use.setdefault(id(entry.model), entry)
        entry.users += 1
        return entry.model

    def release(self, model: ChatModel) -> None:
        """Done with a model from `acquire`: one that was dropped meanwhile is closed now."""
        entry = self._in_use.get(id(model))
        if entry is None:
            return
        entry.users -= 1
        if entry.users <= 0:
            del self._in_use[id(model)]
            if entry.evicted:
                self._close_later(entry)

    @asynccontextmanager
    async def lease(
        self, spec: str, role: Role = "judge", *, within: float | None = None
    ) -> AsyncIterator[ChatModel]:
        """`acquire` for the length of a block."""
        model = await self.acquire(spec, role, within=within)
        try:
            yield model
        finally:
            self.release(model)

    async def _acquire(self, key: _Key, spec: str, within: float | None) -> _Entry:
        entry = self._entry(key)
        if entry is not None:
            return entry
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(self._load(spec, key[1]))
            self._loading[key] = task
            task.add_done_callback(lambda done: self._loaded(key, done))
        try:  # the shield keeps the load going for the next request when this one gives up
            await asyncio.wait_for(asyncio.shield(task), within)
        except TimeoutError:
            raise ModelLoading(f"model {spec!r} is still loading") from None
        entry = self._entry(key)
        if entry is None:  # loaded, then evicted by the loads of others before we ran
            entry = _Entry(task.result(), evicted=True)
        return entry

    def _loaded(self, key: _Key, task: asyncio.Task[ChatModel]) -> None:
        self._loading.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return
        entry = _Entry(task.result())
        if key in self._pinned_keys():
            self._pinned[key] = entry
            return
        self._pool[key] = entry
        while len(self._pool) > self.settings.model_pool_size:
            _, oldest = self._pool.popitem(last=False)
            oldest.evicted = True
            log.info("model pool full (%d): closing %s", len(self._pool), oldest.model.spec)
            if oldest.users == 0:
                self._close_later(oldest)

    def _close_later(self, entry: _Entry) -> None:
        task = asyncio.get_running_loop().create_task(self._close(entry.model))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, model: ChatModel) -> None:
        try:
            await model.aclose()
        except Exception as exc:  # closing must not stop the others closing
            log.warning("closing %s failed: %s", model.spec, type(exc).__name__)

    async def _load(self, spec: str, base_url: str | None) -> ChatModel:
        try:
            options = BackendOptions.from_env(
                base_url=base_url,
                timeout_s=self.settings.timeout_s,
                max_concurrency=self.settings.model_concurrency,
                max_retries=self.settings.max_retries,
            )
            if uses_endpoint(spec):
                return load_model(spec, options)  # instant; its client binds to this loop
            log.info("loading %s (local models can take a while)", spec)
            return await asyncio.to_thread(load_model, spec, options)
        except (BackendError, OSError, ValueError) as exc:
            log.error("cannot load model %s: %s", spec, type(exc).__name__)
            raise ModelUnavailable(f"model {spec!r} cannot be loaded on this service") from None

    async def reachable(self, spec: str, role: Role = "judge") -> str:
        """'ok', 'loading' or 'unreachable': is the model ready to answer right now?

        A remote model is asked for its model list (any HTTP answer below 500 means the
        endpoint is up); a local one is ready once it is loaded.
        """
        if not uses_endpoint(spec):
            return "ok" if self.loaded(spec, role) else "loading"
        options = BackendOptions(base_url=self.settings.base_url_for(role))
        key = os.environ.get(options.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # With several endpoints, one that answers is enough: calls go to those that do.
        try:
            urls = options.resolved_base_urls() or ("https://api.openai.com/v1",)
        except ValueError:  # $OPENAI_BASE_URL holds a bad list: no model can load either
            return "unreachable"
        for url in urls:
            try:
                async with httpx.AsyncClient(timeout=2.0) as client:
                    response = await client.get(f"{url.rstrip('/')}/models", headers=headers)
            except httpx.HTTPError:
                continue
            if response.status_code < 500:
                return "ok"
        return "unreachable"

    async def aclose(self) -> None:
        for task in self._loading.values():
            task.cancel()
        entries = [*self._pinned.values(), *self._pool.values()]
        self._pinned, self._pool = {}, OrderedDict()
        for entry in {id(e.model): e for e in entries}.values():
            await self._close(entry.model)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
