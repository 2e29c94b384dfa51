"""The settings of an evaluation run, declared once: the CLI's options are built from them.

Kept free of heavy imports, so the CLI can build its options without loading numpy."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_TEMPERATURE = 0.7
DEFAULT_MAX_TOKENS = 256

HARMLESSNESS_TAG = "harmlessness"


class SamplingSettings(BaseModel):
    """How the evaluated models answer, and how the intervals are drawn."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(
        default=DEFAULT_MAX_TOKENS, ge=1, description="Most tokens each model writes per prompt."
    )
    temperature: float = Field(
        default=DEFAULT_TEMPERATURE,
        ge=0,
        description="Sampling temperature for every model (0: greedy).",
    )
    resamples: int = Field(
        default=DEFAULT_RESAMPLES,
        ge=1,
        description="Bootstrap resamples for the confidence intervals.",
    )
    confidence: float = Field(
        default=DEFAULT_CONFIDENCE,
        ge=0.5,
        lt=1.0,
        description="Coverage of the bootstrap intervals.",
    )


class SuiteSettings(BaseModel):
    """Which prompts, templates and principles the suites use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    harm_principles: str = Field(
        default=HARMLESSNESS_TAG,
        min_length=1,
        description="Principles that judge harm: comma-separated tags or ids (K of them, as the "
        "judge settings say, are asked per request).",
    )
    templates: str | None = Field(
        default=None,
        description="Jailbreak templates to apply, comma-separated ids (default: all; 'plain' "
        "is the request alone).",
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        description="Use at most N prompts of each suite, taken in turn from each category "
        "(a quick run).",
    )
