"""Rank N completions of one prompt by all-pairs comparison, and pick preference pairs.

Every pair is compared (pairwise: both orders, K principles, see `compare`; pointwise: from
each response's score, made once); the soft `p_a` values feed a
Bradley–Terry fit (see `bradley_terry`) and a soft win rate. Comparisons with no successful
judgment are left out of both, never counted as ties. Preference pairs come out as best vs
worst by default, or as every pair whose own comparison cleared a margin.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from charter.constitution import Constitution

from ._sync import synced
from .aggregate import decide
from .applicability import relevance_for
from .backends.base import ChatModel, Usage
from .bradley_terry import DEFAULT_PRIOR, bradley_terry
from .calibration import Calibration
from .compare import compare
from .config import DEFAULT_CONFIG, JudgeConfig, Protocol
from .prompts import RANDOM_NONCES, NonceSource, shared_within_call
from .results import Comparison, Provenance, Relevance, ResponseScore
from .score import score, versus

log = logging.getLogger(__name__)

PairStrategy = Literal["best_worst", "margin"]


class RankedPair(BaseModel):
    """A preference to train on, taken from one direct comparison."""

    model_config = ConfigDict(extra="forbid")

    chosen_index: int
    rejected_index: int
    chosen: str
    rejected: str
    p_chosen: float = Field(
        description="The comparison's debiased P(chosen is better), calibrated when it was."
    )
    p_chosen_raw: float | None = Field(
        default=None, description="The judge's own P(chosen), when p_chosen was calibrated."
    )
    margin: float = Field(description="p_chosen - 0.5, the distance from a coin flip (0-0.5).")
    score_gap: float = Field(description="Bradley–Terry score of chosen minus rejected.")
    position_consistent: bool | None
    principle_ids: list[str]
    comparison_index: int


class Ranking(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str
    responses: list[str]
    order: list[int] = Field(description="Response indices, best first.")
    scores: list[float] = Field(description="Bradley–Terry log-strength per response.")
    win_rates: list[float | None] = Field(
        description="Mean soft win probability over successful comparisons; None if none."
    )
    pairs: list[RankedPair]
    comparisons: list[Comparison]
    failed_comparisons: int
    protocol: Protocol = "pairwise"
    response_scores: list[ResponseScore] = Field(
        default=[],
        description="Pointwise: each response's score, once (the comparisons are made from them).",
    )
    relevance: Relevance | None = Field(
        default=None,
        description="The prompt's `applies` answers, asked once for every comparison (relevant "
        "selection); None when principles were picked at random.",
    )
    constitution_digest: str
    constitution_version: str
    judge: str
    seed: int
    usage: Usage = Usage()
    latency_s: float = 0.0


def calibrated(
    comparison: Comparison, calibration: Calibration, only: frozenset[str] | None = None
) -> Comparison:
    """The comparison with its p_a through `calibration`, and its winner decided on that.

    With `only` (principle digests), a comparison any other principle voted in stays raw: a
    calibration fit before that principle was edited says nothing about its verdicts.
    """
    if comparison.p_a is None:
        return comparison
    if (
        only is not None
        and not {p.principle_digest for p in comparison.principles if p.p_a is not None} <= only
    ):
        return comparison
    p_a = calibration.apply(comparison.p_a)
    return comparison.model_copy(
        update={
            "p_a": p_a,
            "p_a_raw": comparison.p_a,
            "winner": decide(p_a, comparison.tie_margin),
        }
    )


def select_pairs(
    responses: list[str],
    index_pairs: list[tuple[int, int]],
    comparisons: list[Comparison],
    scores: list[float],
    order: list[int],
    *,
    strategy: PairStrategy = "best_worst",
    min_margin: float | None = None,
) -> list[RankedPair]:
    """Preference pairs from the comparisons.

    `best_worst`: the top-ranked vs the bottom-ranked response, only if their direct comparison
    decided (not a tie, not failed) in favour of the top one. `margin`: every pair whose
    comparison was decided with margin |p_a - 0.5| > `min_margin` (default: the comparison's
    own tie margin), oriented by its winner, largest margin first.
    """
    by_pair = {pair: n for n, pair in enumerate(index_pairs)}

    def make(n: int, chosen: int, rejected: int) -> RankedPair:
        c = comparisons[n]
        if c.p_a is None:  # only decided comparisons reach here
            raise ValueError(f"comparison {n} has no verdict")
        chosen_is_a = index_pairs[n][0] == chosen
        p_chosen = c.p_a if chosen_is_a else 1.0 - c.p_a
        raw = None if c.p_a_raw is None else (c.p_a_raw if chosen_is_a else 1.0 - c.p_a_raw)
        return RankedPair(
            chosen_index=chosen,
            rejected_index=rejected,
            chosen=responses[chosen],
            rejected=responses[rejected],
            p_chosen=p_chosen,
            p_chosen_raw=raw,
            margin=p_chosen - 0.5,
            score_gap=scores[chosen] - scores[rejected],
            position_consistent=c.position_consistent,
            principle_ids=c.principle_ids,
            comparison_index=n,
        )

    pairs: list[RankedPair] = []
    if strategy == "best_worst":
        if len(order) < 2:
            return []
        best, worst = order[0], order[-1]
        n = by_pair.get((min(best, worst), max(best, worst)))
        if n is None:
            return []
        c = comparisons[n]
        side = "a" if index_pairs[n][0] == best else "b"
        if c.winner == side:
            pairs.append(make(n, best, worst))
        return pairs
    for n, (i, j) in enumerate(index_pairs):
        c = comparisons[n]
        if c.winner not in ("a", "b") or c.margin is None:
            continue
        threshold = c.tie_margin if min_margin is None else min_margin
        if c.margin > threshold:
            chosen, rejected = (i, j) if c.winner == "a" else (j, i)
            pairs.append(make(n, chosen, rejected))
    pairs.sort(key=lambda p: (-p.margin, p.chosen_index, p.rejected_index))
    return pairs


async def rank(
    model: ChatModel,
    constitution: Constitution,
    prompt: str,
    responses: list[str],
    config: JudgeConfig = DEFAULT_CONFIG,
    *,
    strategy: PairStrategy = "best_worst",
    min_margin: float | None = None,
    prior: float = DEFAULT_PRIOR,
    max_concurrency: int = 8,
    calibration: Calibration | None = None,
    calibrate_only: frozenset[str] | None = None,
    nonces: NonceSource = RANDOM_NONCES,
) -> Ranking:
    """Judge every pair of `responses` and rank them.

    Pairwise: each pair is compared (at most `max_concurrency` comparisons in flight; the
    backend bounds its own request concurrency too). Pointwise: each response is scored once
    (N x K calls) and every pair's comparison is computed from the scores. With a
    `calibration`, every comparison's p_a (and so its winner, the scores and the pairs) is the
    calibrated one (only those whose voting principles' digests are all in `calibrate_only`,
    when given); `p_a_raw` keeps the judge's own.
    """
    if len(responses) < 2:
        raise ValueError("ranking needs at least two responses")
    if max_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")
    index_pairs = list(itertools.combinations(range(len(responses)), 2))
    gate = asyncio.Semaphore(max_concurrency)
    started = time.perf_counter()
    scored: list[ResponseScore] = []
    nonces = shared_within_call(nonces)
    # Asked once for the prompt, shared by every candidate and comparison.
    relevance = await relevance_for(model, constitution, prompt, config, None, nonces=nonces)

    async def one(i: int, j: int) -> Comparison:
        async with gate:
            return await compare(
                model,
                constitution,
                prompt,
                responses[i],
                responses[j],
                config,
                nonces=nonces,
                relevance=relevance,
            )

    if config.protocol_for(model.spec) == "pointwise":
        scored = list(
            await asyncio.gather(
                *(
                    score(
                        model, constitution, prompt, r, config, nonces=nonces, relevance=relevance
                    )
                    for r in responses
                )
            )
        )
        comparisons = [
            versus(constitution, scored[i], scored[j], config, keep_scores=False)
            for i, j in index_pairs
        ]
        usage = Usage.total(s.usage for s in scored)
    else:
        comparisons = list(await asyncio.gather(*(one(i, j) for i, j in index_pairs)))
        usage = Usage.total(c.usage for c in comparisons)
    if relevance is not None:
        usage = usage + relevance.usage
    if calibration is not None:
        comparisons = [calibrated(c, calibration, calibrate_only) for c in comparisons]
    outcomes: list[tuple[int, int, float]] = []
    for (i, j), c in zip(index_pairs, comparisons, strict=True):
        if c.p_a is not None:
            outcomes.append((i, j, c.p_a))
    failed = len(index_pairs) - len(outcomes)
    if failed:
        log.warning("%d of %d comparisons failed and are excluded", failed, len(index_pairs))
    n = len(responses)
    scores = bradley_terry(n, outcomes, prior=prior)
    totals = [0.0] * n
    counts = [0] * n
    for i, j, p in outcomes:
        totals[i] += p
        totals[j] += 1.0 - p
        counts[i] += 1
        counts[j] += 1
    win_rates = [totals[i] / counts[i] if counts[i] else None for i in range(n)]
    order = sorted(range(n), key=lambda i: (-scores[i], i))
    return Ranking(
        prompt=prompt,
        responses=list(responses),
        order=order,
        scores=scores,
        win_rates=win_rates,
        pairs=select_pairs(
            list(responses),
            index_pairs,
            comparisons,
            scores,
            order,
            strategy=strategy,
            min_margin=min_margin,
        ),
        comparisons=comparisons,
        failed_comparisons=failed,
        response_scores=scored,
        relevance=relevance,
        protocol=config.protocol_for(model.spec),
        **Provenance.of(constitution, model.spec).fields(),
        seed=config.seed,
        usage=usage,
        latency_s=time.perf_counter() - started,
    )


rank_sync = synced(rank)
