"""The models the service talks to: loaded once, shared by requests and jobs, closed at exit.

A request names only a spec; its endpoint comes from the service's settings for the role
(judge or policy), so no client can make the service call an address of its choosing. Specs
outside `allowed_models` (local `hf:` paths, say) are refused. A local model is loaded once,
in a thread (it can take tens of seconds), and serves both roles, as in the CLI.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Literal

import httpx

from charter.judge import BackendError, BackendOptions, ChatModel
from charter.judge.backends.registry import load_model

from .settings import ServiceSettings

log = logging.getLogger(__name__)

Role = Literal["judge", "policy"]
_Key = tuple[str, str | None]


class ModelNotAllowed(ValueError):
    """A request named a model spec this service does not serve."""


class ModelUnavailable(Exception):
    """A model that cannot be loaded; the message is safe to show."""


class ModelPool:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self._models: dict[_Key, ChatModel] = {}
        self._loading: dict[_Key, asyncio.Lock] = {}

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
        remote = spec.startswith("openai:")
        return spec, (self.settings.base_url_for(role) if remote else None)

    def loaded(self, spec: str, role: Role = "judge") -> bool:
        return self._key(spec, role) in self._models

    async def get(self, spec: str, role: Role = "judge") -> ChatModel:
        """The model for `spec` in `role`, loading it on first use."""
        self.check(spec)
        key = self._key(spec, role)
        model = self._models.get(key)
        if model is not None:
            return model
        lock = self._loading.setdefault(key, asyncio.Lock())
        async with lock:
            model = self._models.get(key)
            if model is None:
                model = await self._load(spec, key[1])
                self._models[key] = model
        return model

    async def _load(self, spec: str, base_url: str | None) -> ChatModel:
        try:
            options = BackendOptions.from_env(
                base_url=base_url,
                timeout_s=self.settings.timeout_s,
                max_concurrency=self.settings.model_concurrency,
                max_retries=self.settings.max_retries,
            )
            if spec.startswith("openai:"):
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
        if not spec.startswith("openai:"):
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
        models, self._models = list(self._models.values()), {}
        for model in {id(m): m for m in models}.values():
            try:
                await model.aclose()
            except Exception as exc:  # closing must not stop the others closing
                log.warning("closing %s failed: %s", model.spec, type(exc).__name__)
