"""Bradley–Terry strengths from soft pairwise outcomes (Hunter's MM algorithm).

Model: P(i beats j) = pi_i / (pi_i + pi_j). Soft outcomes are allowed: a comparison with
P(i better) = 0.7 counts as 0.7 of a win for i and 0.3 for j, which is what the debiased judge
produces. Without regularisation an item that wins everything has infinite strength and a
disconnected comparison graph has no unique answer, so every item also plays `prior` wins and
`prior` losses against a fixed virtual opponent of strength 1. That pulls scores gently toward
0, keeps them finite, and fixes the scale (no renormalisation step needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

DEFAULT_PRIOR = 0.1


def bradley_terry(
    n: int,
    outcomes: Sequence[tuple[int, int, float]],
    *,
    prior: float = DEFAULT_PRIOR,
    max_iter: int = 10_000,
    tol: float = 1e-10,
) -> list[float]:
    """Log-strengths (scores) of `n` items from `(i, j, p_i_beats_j)` outcomes.

    Each MM step is pi_i <- (W_i + prior) / (sum_j N_ij / (pi_i + pi_j) + 2 prior / (pi_i + 1)),
    where W_i is i's (soft) win total and N_ij the number of comparisons of i with j. Iterates
    until the largest change in a log-strength is below `tol`.
    """
    if prior <= 0:
        raise ValueError("prior must be positive (it keeps undefeated items finite)")
    wins = [0.0] * n
    games: list[dict[int, float]] = [{} for _ in range(n)]
    for i, j, p in outcomes:
        if i == j or not (0 <= i < n and 0 <= j < n):
            raise ValueError(f"bad comparison indices ({i}, {j}) for {n} items")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"outcome probability must be in [0, 1], got {p}")
        wins[i] += p
        wins[j] += 1.0 - p
        games[i][j] = games[i].get(j, 0.0) + 1.0
        games[j][i] = games[j].get(i, 0.0) + 1.0
    strength = [1.0] * n
    for _ in range(max_iter):
        updated = []
        for i in range(n):
            denom = sum(c / (strength[i] + strength[j]) for j, c in games[i].items())
            denom += 2.0 * prior / (strength[i] + 1.0)
            updated.append((wins[i] + prior) / denom)
        delta = max(
            (abs(math.log(u) - math.log(s)) for u, s in zip(updated, strength, strict=True)),
            default=0.0,
        )
        strength = updated
        if delta < tol:
            break
    return [math.log(s) for s in strength]


def win_probability(score_i: float, score_j: float) -> float:
    """P(i beats j) under the fitted model."""
    return 1.0 / (1.0 + math.exp(score_j - score_i))
