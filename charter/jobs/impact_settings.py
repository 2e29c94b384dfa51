"""The edit-impact preview's settings, declared once (the CLI's options and the review
pages' form come from them); kept apart so the CLI can build options without importing the
preview's machinery."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ImpactSettings(BaseModel):
    """Which of the job's prompts the preview judges again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample: int = Field(
        default=50,
        ge=1,
        le=1_000_000,
        description="Finished prompts of the job to judge again under the edit (a seeded "
        "random sample; all of them when the job has fewer).",
    )
    seed: int = Field(default=0, ge=0, description="Seeds which prompts are sampled.")
