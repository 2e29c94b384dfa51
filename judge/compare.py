"""Pairwise comparison under a constitution (RL-CAI), debiased over both orders.

For each of K principles (rendezvous-selected, see `selection`), the judge is asked the
principle's comparison question twice, once with `a` in slot A and once with `b` in slot A,
all concurrently. Each answer becomes P(a is better); by default only principles whose two
orders both succeeded vote, weighted by principle weight, into `p_a` (see
`aggregate.weighted_p_a`). Unparseable replies are retried and then recorded as failures,
never counted. With `JudgeConfig.protocol` "pointwise" the comparison is made from
each response's own score instead (`charter.judge.score`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from charter.constitution import Constitution, Principle

from ._sync import synced
from .aggregate import (
    clamp,
    decide,
    overall_consistency,
    principle_verdicts,
    slot_probabilities,
    slot_to_side,
    to_original,
    weighted_p_a,
)
from .applicability import relevance_for
from .backends.base import BackendError, ChatModel, GenerationRequest, Usage
from .config import DEFAULT_CONFIG, JudgeConfig
from .parse import Letter, parse_verdict
from .prompts import OPTIONS, RANDOM_NONCES, NonceSource, comparison_messages
from .results import Comparison, Judgment, Order, Provenance, Relevance, Tally
from .score import compare_pointwise
from .selection import select_for_pair

log = logging.getLogger(__name__)

ORDERS: tuple[Order, Order] = ("AB", "BA")


async def judge_once(
    model: ChatModel,
    principle: Principle,
    prompt: str,
    a: str,
    b: str,
    order: Order,
    config: JudgeConfig = DEFAULT_CONFIG,
    *,
    nonces: NonceSource = RANDOM_NONCES,
) -> Judgment:
    """Ask one principle in one order; never raises for model failures, records them.

    With `config.cot`, the judge first reasons (`generate`), then a second call asks for the
    letter with that reasoning fenced as data; if that reply is unparseable the reasoning's own
    final `Answer: X` line is accepted. CoT probabilities are clamped to 0.5 ± `cot_clamp`. A
    retry after an unparseable reply repeats only the verdict call, with a fresh nonce.
    """
    first, second = (a, b) if order == "AB" else (b, a)
    tally = Tally(principle)
    reasoning: str | None = None

    def result(**fields: Any) -> Judgment:
        return Judgment(**tally.fields(), order=order, reasoning=reasoning, **fields)

    try:
        if config.cot:
            tally.messages = comparison_messages(
                principle, prompt, first, second, cot=True, nonces=nonces, few_shot=config.few_shot
            )
            thought = await model.generate(
                GenerationRequest(
                    messages=tally.messages,
                    max_tokens=config.cot_max_tokens,
                    temperature=0.0,
                    seed=config.seed,
                )
            )
            tally.usage = tally.usage + thought.usage
            reasoning = thought.text
        for _ in range(config.parse_retries + 1):
            tally.ask(
                comparison_messages(
                    principle,
                    prompt,
                    first,
                    second,
                    reasoning=reasoning,
                    attempt=tally.attempts + 1,
                    nonces=nonces,
                    few_shot=config.few_shot,
                )
            )
            reply = await model.choose(tally.messages, OPTIONS)
            letter: Letter | None = parse_verdict(tally.replied(reply))
            logprobs = reply.option_logprobs
            if letter is None:
                tally.parse_failures += 1
                log.debug("unparseable verdict for %s/%s: %.80r", principle.id, order, tally.raw)
                if reasoning is not None:
                    letter, logprobs = parse_verdict(reasoning, cot=True), None
            if letter is not None:
                p_slot_a, option_probs = slot_probabilities(letter, logprobs)
                if config.cot:
                    p_slot_a = clamp(p_slot_a, config.clamp_band)
                return result(
                    slot=letter,
                    choice=slot_to_side(letter, order),
                    p_a=to_original(p_slot_a, order),
                    option_probs=option_probs,
                )
    except BackendError as exc:
        log.warning("judge call failed for %s/%s: %s", principle.id, order, exc)
        return result(error=str(exc) or type(exc).__name__, error_kind="backend")
    return result(
        error=f"unparseable verdict after {tally.attempts} attempt(s): {tally.raw!r:.200}",
        error_kind="parse",
    )


async def compare(
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
    """Compare `a` and `b` as answers to `prompt` under `constitution`, as `config` says.

    Pairwise: K principles, each asked in both orders (see `aggregate.weighted_p_a` for
    `require_both_orders`). Pointwise: each response scored alone (see `charter.judge.score`).
    K and the tie margin default to the constitution's. With relevant selection the K are
    picked among the principles that apply to the prompt: `relevance` when the caller asked
    once for the prompt (a ranking), else asked here and recorded on the comparison.
    """
    if config.protocol_for(model.spec) == "pointwise":
        return await compare_pointwise(
            model, constitution, prompt, a, b, config, nonces=nonces, relevance=relevance
        )
    margin = config.margin(constitution)
    started = time.perf_counter()
    asked = await relevance_for(model, constitution, prompt, config, relevance, nonces=nonces)
    own = asked if relevance is None else None
    principles = select_for_pair(
        constitution, prompt, a, b, config.k(constitution), config.seed, asked
    )
    judgments = list(
        await asyncio.gather(
            *(
                judge_once(model, principle, prompt, a, b, order, config, nonces=nonces)
                for principle in principles
                for order in ORDERS
            )
        )
    )
    verdicts = principle_verdicts(principles, judgments)
    p_a = weighted_p_a(principles, judgments, require_both_orders=config.require_both_orders)
    return Comparison(
        prompt=prompt,
        a=a,
        b=b,
        p_a=p_a,
        winner=decide(p_a, margin),
        position_consistent=overall_consistency(verdicts),
        tie_margin=margin,
        principles=verdicts,
        judgments=judgments,
        **Provenance.of(constitution, model.spec).fields(),
        seed=config.seed,
        k=len(principles),
        cot=config.cot,
        protocol="pairwise",
        relevance=own,
        usage=Usage.total([*(j.usage for j in judgments), own.usage if own else Usage()]),
        latency_s=time.perf_counter() - started,
    )


compare_sync = synced(compare)
