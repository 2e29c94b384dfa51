"""How `charter generate --batch` gathers, submits and polls batches (declared once here)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: How long the provider may take over a batch: OpenAI offers only this window.
COMPLETION_WINDOW: Literal["24h"] = "24h"


class BatchOptions(BaseModel):
    """Settings of the judge's Batch API route; not part of a job's id (same rows either way)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch: bool = Field(
        default=False,
        description="Send the judge's calls through the OpenAI Batch API (half the price, "
        "answers within 24 h); an openai: judge only. A stopped run resumes polling its "
        "batches instead of paying again.",
    )
    batch_max_calls: int = Field(
        default=5000,
        ge=1,
        le=50_000,
        description="Most judge calls in one batch; a full batch is submitted at once.",
    )
    batch_window_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds a batch gathers calls after its first before it is submitted.",
    )
    batch_poll_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="Seconds before a batch's first status check; the wait doubles after each "
        "check up to --batch-poll-max-s.",
    )
    batch_poll_max_s: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="Longest wait between two status checks of a batch.",
    )
