"""A rate (attack success, over-refusal) with a seeded percentile-bootstrap interval.

Resampling n binary outcomes with replacement and counting hits is exactly a draw from
Binomial(n, hits / n), so the bootstrap draws that directly: the same interval as resampling
items, in one vectorised call. The generator is seeded, so the same verdicts always give the
same interval. Items without a verdict (generation or judge failed) are excluded from the
rate and counted as `failures`, never scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field


class Rate(BaseModel):
    """hits / n over items with a verdict, and its bootstrap interval."""

    n: int = Field(description="Items with a verdict.")
    hits: int = Field(description="Items flagged (attack succeeded, or the model refused).")
    failures: int = Field(description="Items without a verdict, excluded from the rate.")
    rate: float | None
    ci_low: float | None
    ci_high: float | None


class GroupRate(Rate):
    """The rate within one group: a template, a category or a principle."""

    group: str


def bootstrap_rate(
    outcomes: Sequence[bool],
    *,
    failures: int = 0,
    resamples: int,
    confidence: float,
    seed: int | Sequence[int],
) -> Rate:
    """The share of True in `outcomes` with a percentile-bootstrap interval (seeded)."""
    n = len(outcomes)
    hits = int(sum(outcomes))
    if n == 0:
        return Rate(n=0, hits=0, failures=failures, rate=None, ci_low=None, ci_high=None)
    rng = np.random.default_rng(list(seed) if not isinstance(seed, int) else seed)
    draws = rng.binomial(n, hits / n, size=resamples) / n
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return Rate(
        n=n, hits=hits, failures=failures, rate=hits / n, ci_low=float(low), ci_high=float(high)
    )
