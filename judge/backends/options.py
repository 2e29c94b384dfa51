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
            "OpenAI-compatible endpoint; else $CHARTER_JUDGE_BASE_URL, else $OPENAI_BASE_URL."
        ),
    )
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Env var holding the API key.")
    timeout_s: float = Field(default=60.0, gt=0)
    max_concurrency: int = Field(default=16, ge=1)
    max_retries: int = Field(default=4, ge=0)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    batch_size: int = Field(
        default=8, ge=1, description="Local backends: max prompts per forward pass."
    )

    def resolved_base_url(self) -> str | None:
        return (
            self.base_url
            or os.environ.get("CHARTER_JUDGE_BASE_URL")
            or os.environ.get("OPENAI_BASE_URL")
        )
