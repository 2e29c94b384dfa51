"""Settings shared by every backend; the CLI, config and service fill them in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from charter.common.environment import model_from_env

ENV_VARIABLES = {"endpoint_rest_s": "CHARTER_ENDPOINT_REST_S"}
"""Backend settings read from the environment by `BackendOptions.from_env`."""


def default_cache_dir() -> Path:
    """Where converted model weights are cached: $CHARTER_CACHE_DIR, else ~/.cache/charter."""
    env = os.environ.get("CHARTER_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "charter"


class BackendOptions(BaseModel):
    """How to reach and pace a model. Secrets are never held here: only the env var's name."""

    base_url: str | None = Field(
        default=None,
        description=(
            "OpenAI-compatible endpoint, or several separated by commas (calls go to the one "
            "with the fewest in flight); else the first env var of `base_url_envs` that is set."
        ),
    )
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Env var holding the API key.")
    timeout_s: float = Field(default=60.0, gt=0)
    max_concurrency: int = Field(
        default=16, ge=1, description="HTTP requests in flight at once, per endpoint."
    )
    max_retries: int = Field(default=4, ge=0)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    batch_size: int = Field(
        default=16, ge=1, description="Local backends: max prompts per forward pass."
    )

    base_url_envs: tuple[str, ...] = Field(
        default=("CHARTER_JUDGE_BASE_URL", "OPENAI_BASE_URL"),
        description="Env vars consulted in order when `base_url` is not set.",
    )

    endpoint_rest_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="With several endpoints: seconds one that failed a call is left out "
        "before a single call tries it again ($CHARTER_ENDPOINT_REST_S).",
    )

    @classmethod
    def from_env(cls, **values: Any) -> BackendOptions:
        """`values`, with the settings only the environment sets (`ENV_VARIABLES`) read from
        it; a bad value is a one-line `ValueError` naming its variable."""
        env = model_from_env(cls, ENV_VARIABLES)
        return cls.model_validate({**env.model_dump(include=set(ENV_VARIABLES)), **values})

    def resolved_base_url(self) -> str | None:
        if self.base_url:
            return self.base_url
        return next((os.environ[n] for n in self.base_url_envs if os.environ.get(n)), None)

    def resolved_base_urls(self) -> tuple[str, ...]:
        """Every endpoint `resolved_base_url` names (none: the SDK's default); `ValueError`
        in one line, naming where the list came from, when one is not an http(s) URL."""
        if self.base_url:
            return split_base_urls(self.base_url, "base_url")
        for name in self.base_url_envs:
            if os.environ.get(name):
                return split_base_urls(os.environ[name], f"${name}")
        return ()


def split_base_urls(text: str, source: str) -> tuple[str, ...]:
    """The URLs of one URL or a comma-separated list; `ValueError` naming `source` (the option,
    variable or field it came from; "" when the caller names it) and the bad item.

    One rule for one URL and for a list: spaces around an item are dropped; an empty item, a
    URL given twice, or one that is not `http(s)://host...` is an error, before any call is
    made (not a run whose every call fails, or is retried for minutes).
    """
    items = [item.strip() for item in text.split(",")]
    urls: list[str] = []
    for number, url in enumerate(items, start=1):
        where = source
        if len(items) > 1:
            where = f"{source}: " * bool(source) + f"item {number} of {len(items)}"
        prefix = f"{where}: " if where else ""
        if not url:
            hint = " (list URLs separated by single commas)" if len(items) > 1 else ""
            raise ValueError(f"{where or 'the URL'} is empty{hint}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{prefix}{url!r} is not an http:// or https:// URL with a host")
        try:
            parts.port  # noqa: B018 - raises on a port out of range or not a number
        except ValueError:
            raise ValueError(f"{prefix}{url!r} has a bad port") from None
        if url.rstrip("/") in (u.rstrip("/") for u in urls):
            raise ValueError(f"{prefix}{url!r} is listed twice")
        urls.append(url)
    return tuple(urls)
