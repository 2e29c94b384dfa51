"""Pointwise judging: each response scored alone, one Yes/No question per principle.

A response is shown with its prompt and nothing else, so there is no slot for the judge to
favour, and the question depends only on (principle, prompt, response): scored once, a response
is never asked about again when it meets a new rival (with a store, `charter.call_cache` replays the
call). K principles are picked per prompt by rendezvous hashing, so every candidate for a prompt
is scored under the same principles and ranking N candidates costs N x K calls, not N(N-1) x K.

A comparison's `p_a` combines the principles' score differences on the logit scale:
sigmoid(sum_i w_i (logit P(yes|a)_i - logit P(yes|b)_i) / sum_i w_i). Unparseable replies are
retried, then recorded as failures: never counted as Yes, No or 0.5.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from charter.constitution import Constitution, Principle

from . import calibration
from ._sync import synced
from .aggregate import decide, option_probability
from .applicability import relevance_for
from .backends.base import BackendError, ChatModel, Usage
from .calibration import sigmoid
from .config import DEFAULT_CONFIG, JudgeConfig
from .parse import parse_yes_no
from .prompts import (
    RANDOM_NONCES,
    SCORE_OPTIONS,
    NonceSource,
    score_messages,
    shared_within_call,
)
from .results import (
    Comparison,
    PrincipleVerdict,
    Provenance,
    Relevance,
    ResponseScore,
    ScoreJudgment,
    Tally,
)
from .selection import select_for_prompt

log = logging.getLogger(__name__)

P_FLOOR = 1e-3
"""Scores are clipped to [P_FLOOR, 1 - P_FLOOR] before taking logits: a parsed word (P = 1 or
0, no logprobs) then weighs as a strong but finite vote (logit ±6.9)."""


def logit(p: float) -> float:
    """The logit of a score, clipped to the floor (see `P_FLOOR`)."""
    return calibration.logit(min(max(p, P_FLOOR), 1.0 - P_FLOOR))


async def score_once(
    model: ChatModel,
    principle: Principle,
    prompt: str,
    response: str,
    *,
    parse_retries: int = 1,
    nonces: NonceSource = RANDOM_NONCES,
    few_shot: int = 0,
) -> ScoreJudgment:
    """Ask one principle's Yes/No question about one response; failures are recorded."""
    tally = Tally(principle)
    try:
        for _ in range(parse_retries + 1):
            tally.ask(
                score_messages(
                    principle,
                    prompt,
                    response,
                    attempt=tally.attempts,
                    nonces=nonces,
                    few_shot=few_shot,
                )
            )
            reply = await model.choose(tally.messages, SCORE_OPTIONS)
            word = parse_yes_no(tally.replied(reply))
            if word is None:
                tally.parse_failures += 1
                log.debug("unparseable score for %s: %.80r", principle.id, tally.raw)
                continue
            p_yes, option_probs = option_probability(word, reply.option_logprobs, SCORE_OPTIONS)
            return ScoreJudgment(
                **tally.fields(), answer=word, p_yes=p_yes, option_probs=option_probs
            )
    except BackendError as exc:
        log.warning("score call failed for %s: %s", principle.id, exc)
        return ScoreJudgment(
            **tally.fields(), error=str(exc) or type(exc).__name__, error_kind="backend"
        )
    return ScoreJudgment(
        **tally.fields(),
        error=f"unparseable Yes/No after {tally.attempts} attempt(s): {tally.raw!r:.200}",
        error_kind="parse",
    )


def combined_p_yes(
    principles: Sequence[Principle], judgments: Sequence[ScoreJudgment]
) -> float | None:
    """sigmoid of the weighted mean logit P(Yes) of the successful judgments."""
    weights = {p.id: p.weight for p in principles}
    good = [(weights.get(j.principle_id, 1.0), j.p_yes) for j in judgments if j.p_yes is not None]
    mass = sum(w for w, _ in good)
    if not good or mass <= 0:
        return None
    return sigmoid(sum(w * logit(p) for w, p in good) / mass)


async def score(
    model: ChatModel,
    constitution: Constitution,
    prompt: str,
    response: str,
    config: JudgeConfig = DEFAULT_CONFIG,
    *,
    nonces: NonceSource = RANDOM_NONCES,
    relevance: Relevance | None = None,
) -> ResponseScore:
    """Score one response under the config's K principles (for a prompt): a pointwise verdict,
    and a reward an RL trainer can use directly (`p_yes`, in [0, 1]).

    With relevant selection, `relevance` is the prompt's `applies` answers asked once by the
    caller for all its candidates; without it they are asked here (and recorded on the score).
    """
    started = time.perf_counter()
    asked = await relevance_for(model, constitution, prompt, config, relevance, nonces=nonces)
    principles = select_for_prompt(constitution, prompt, config.k(constitution), config.seed, asked)
    own = asked if relevance is None else None
    judgments = list(
        await asyncio.gather(
            *(
                score_once(
                    model,
                    principle,
                    prompt,
                    response,
                    parse_retries=config.parse_retries,
                    nonces=nonces,
                    few_shot=config.few_shot,
                )
                for principle in principles
            )
        )
    )
    return ResponseScore(
        prompt=prompt,
        response=response,
        p_yes=combined_p_yes(principles, judgments),
        judgments=judgments,
        **Provenance.of(constitution, model.spec).fields(),
        seed=config.seed,
        k=len(principles),
        relevance=own,
        usage=Usage.total([*(j.usage for j in judgments), own.usage if own else Usage()]),
        latency_s=time.perf_counter() - started,
    )


score_sync = synced(score)


def versus(
    constitution: Constitution,
    score_a: ResponseScore,
    score_b: ResponseScore,
    config: JudgeConfig = DEFAULT_CONFIG,
    *,
    keep_scores: bool = True,
) -> Comparison:
    """The pointwise comparison of two scored responses (no model call).

    Each principle that scored both votes sigmoid(logit P(yes|a) - logit P(yes|b)); `p_a`
    is sigmoid of the weighted mean logit difference. `keep_scores=False` leaves the scores
    out of the result (a ranking records them once for all its pairs).
    """
    by_id = {p.id: p for p in constitution.principles}
    a_yes = {j.principle_id: j.p_yes for j in score_a.judgments if j.p_yes is not None}
    b_yes = {j.principle_id: j.p_yes for j in score_b.judgments if j.p_yes is not None}
    verdicts: list[PrincipleVerdict] = []
    total = mass = 0.0
    for j in score_a.judgments:
        principle = by_id[j.principle_id]
        pa, pb = a_yes.get(principle.id), b_yes.get(principle.id)
        diff = None if pa is None or pb is None else logit(pa) - logit(pb)
        if diff is not None:
            total += principle.weight * diff
            mass += principle.weight
        verdicts.append(
            PrincipleVerdict(
                principle_id=principle.id,
                principle_digest=principle.digest,
                weight=principle.weight,
                p_a=None if diff is None else sigmoid(diff),
                succeeded=(pa is not None) + (pb is not None),
                consistent=None,
            )
        )
    p_a = sigmoid(total / mass) if mass > 0 else None
    return Comparison(
        prompt=score_a.prompt,
        a=score_a.response,
        b=score_b.response,
        p_a=p_a,
        winner=decide(p_a, config.margin(constitution)),
        position_consistent=None,
        tie_margin=config.margin(constitution),
        principles=verdicts,
        judgments=[],
        **Provenance.of(constitution, score_a.judge).fields(),
        seed=config.seed,
        k=len(verdicts),
        protocol="pointwise",
        scores=[score_a, score_b] if keep_scores else [],
        usage=score_a.usage + score_b.usage if keep_scores else Usage(),
        latency_s=max(score_a.latency_s, score_b.latency_s) if keep_scores else 0.0,
    )


async def compare_pointwise(
    model: ChatModel,
    constitution: Constitution,
    prompt: str,
    a: str,
    b: str,
    config: JudgeConfig = DEFAULT_CONFIG,
    *,
    nonces: NonceSource = RANDOM_NONCES,
    relevance: Relevance | None = None,
) -> Comparison:
    """Score `a` and `b` alone (concurrently) and compare the scores; with relevant selection
    the prompt's `applies` questions are asked once for both (unless `relevance` is given)."""
    nonces = shared_within_call(nonces)
    asked = await relevance_for(model, constitution, prompt, config, relevance, nonces=nonces)
    score_a, score_b = await asyncio.gather(
        score(model, constitution, prompt, a, config, nonces=nonces, relevance=asked),
        score(model, constitution, prompt, b, config, nonces=nonces, relevance=asked),
    )
    comparison = versus(constitution, score_a, score_b, config)
    if relevance is None and asked is not None:
        comparison = comparison.model_copy(
            update={"relevance": asked, "usage": comparison.usage + asked.usage}
        )
    return comparison
