"""Settings shared by every backend; the CLI, config and service fill them in."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field


def default_cache_dir() -> Path:
    """Where converted model weights are cached: $CHARTER_CACHE_DIR, else ~/.cache/charter."""
    env = os.environ.get("CHARTER_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "charter"


class BackendOptions(BaseModel):
    """How to reach and pace a model. Secrets are never held here: only the env var's name."""

    base_url: str | None = Field(
        default=None,
        description=(
            "OpenAI-compatible endpoint; else the first env var of `base_url_envs` that is set."
        ),
    )
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Env var holding the API key.")
    timeout_s: float = Field(default=60.0, gt=0)
    max_concurrency: int = Field(default=16, ge=1)
    max_retries: int = Field(default=4, ge=0)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    batch_size: int = Field(
        default=16, ge=1, description="Local backends: max prompts per forward pass."
    )

    base_url_envs: tuple[str, ...] = Field(
        default=("CHARTER_JUDGE_BASE_URL", "OPENAI_BASE_URL"),
        description="Env vars consulted in order when `base_url` is not set.",
    )

    def resolved_base_url(self) -> str | None:
        if self.base_url:
            return self.base_url
        return next((os.environ[n] for n in self.base_url_envs if os.environ.get(n)), None)
