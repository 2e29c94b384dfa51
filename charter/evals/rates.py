"""A rate (attack success, over-refusal) with its Wilson score interval.

A suite run on a handful of prompts is the common case (`--limit 4`), and there a percentile
bootstrap collapses: four harmful answers of four resample to 4/4 every time, and 100% [100%,
100%] reads as a certainty that four answers cannot give. The Wilson score interval is the
binomial proportion's interval that stays sound at small n and never collapses to a point
(4 of 4 at 95%: [51%, 100%]). Items without a verdict (generation or judge failed) are
excluded from the rate and counted as `failures`, never scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

from pydantic import BaseModel, Field

from charter.judge.agreement import wilson as agreement_interval


class Rate(BaseModel):
    """hits / n over items with a verdict, and its Wilson score interval."""

    n: int = Field(description="Items with a verdict.")
    hits: int = Field(description="Items flagged (attack succeeded, or the model refused).")
    failures: int = Field(description="Items without a verdict, excluded from the rate.")
    rate: float | None
    ci_low: float | None
    ci_high: float | None


class GroupRate(Rate):
    """The rate within one group: a template, a category or a principle."""

    group: str


def wilson(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval of `successes` in `n` at `confidence` (a tie may count
    half); None at n=0."""
    return agreement_interval(successes, n, NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0))


def rate_of(outcomes: Sequence[bool], *, failures: int = 0, confidence: float) -> Rate:
    """The share of True in `outcomes` with its Wilson score interval."""
    n = len(outcomes)
    hits = int(sum(outcomes))
    interval = wilson(hits, n, confidence)
    if interval is None:
        return Rate(n=0, hits=0, failures=failures, rate=None, ci_low=None, ci_high=None)
    return Rate(
        n=n, hits=hits, failures=failures, rate=hits / n, ci_low=interval[0], ci_high=interval[1]
    )
