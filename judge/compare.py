"""Pairwise comparison under a constitution (RL-CAI), debiased over both orders.

For each of K principles (rendezvous-selected, see `selection`), the judge is asked the
principle's comparison question twice, once with `a` in slot A and once with `b` in slot A,
all concurrently. Each answer becomes P(a is better); by default only principles whose two
orders both succeeded vote, weighted by principle weight, into `p_a` (see
`aggregate.weighted_p_a`). Unparseable replies are retried and then recorded as failures,
never counted (design §4).
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
from .backends.base import BackendError, ChatModel, GenerationRequest, Message, Usage
from .parse import Letter, parse_verdict
from .prompts import OPTIONS, RANDOM_NONCES, NonceSource, comparison_messages
from .results import Comparison, Judgment, Order
from .selection import select_for_pair

log = logging.getLogger(__name__)

ORDERS: tuple[Order, Order] = ("AB", "BA")
DEFAULT_COT_CLAMP = (0.4, 0.6)
DEFAULT_COT_MAX_TOKENS = 512


async def judge_once(
    model: ChatModel,
    principle: Principle,
    prompt: str,
    a: str,
    b: str,
    order: Order,
    *,
    seed: int = 0,
    cot: bool = False,
    cot_clamp: tuple[float, float] = DEFAULT_COT_CLAMP,
    cot_max_tokens: int = DEFAULT_COT_MAX_TOKENS,
    parse_retries: int = 1,
    nonces: NonceSource = RANDOM_NONCES,
) -> Judgment:
    """Ask one principle in one order; never raises for model failures, records them.

    With `cot`, the judge first reasons (`generate`), then a second call asks for the letter
    with that reasoning fenced as data; if that reply is unparseable the reasoning's own final
    `Answer: X` line is accepted. CoT probabilities are clamped to `cot_clamp`. A retry after
    an unparseable reply repeats only the verdict call, with a fresh nonce.
    """
    first, second = (a, b) if order == "AB" else (b, a)
    started = time.perf_counter()
    usage = Usage()
    attempts = 0
    replies = 0
    parse_failures = 0
    raw: str | None = None
    reasoning: str | None = None
    messages: tuple[Message, ...] = ()

    def result(**fields: Any) -> Judgment:
        return Judgment(
            principle_id=principle.id,
            principle_digest=principle.digest,
            order=order,
            messages=messages,
            reasoning=reasoning,
            raw=raw,
            attempts=attempts,
            replies=replies,
            parse_failures=parse_failures,
            latency_s=time.perf_counter() - started,
            usage=usage,
            **fields,
        )

    try:
        if cot:
            cot_messages = comparison_messages(
                principle, prompt, first, second, cot=True, nonces=nonces
            )
            messages = cot_messages
            thought = await model.generate(
                GenerationRequest(
                    messages=cot_messages, max_tokens=cot_max_tokens, temperature=0.0, seed=seed
                )
            )
            usage = usage + thought.usage
            reasoning = thought.text
        for _ in range(parse_retries + 1):
            attempts += 1
            messages = comparison_messages(
                principle,
                prompt,
                first,
                second,
                reasoning=reasoning,
                attempt=attempts,
                nonces=nonces,
            )
            reply = await model.choose(messages, OPTIONS)
            usage = usage + reply.usage
            replies += 1
            raw = reply.text
            letter: Letter | None = parse_verdict(raw)
            logprobs = reply.option_logprobs
            if letter is None:
                parse_failures += 1
                log.debug("unparseable verdict for %s/%s: %.80r", principle.id, order, raw)
                if reasoning is not None:
                    letter, logprobs = parse_verdict(reasoning, cot=True), None
            if letter is not None:
                p_slot_a, option_probs = slot_probabilities(letter, logprobs)
                if cot:
                    p_slot_a = clamp(p_slot_a, cot_clamp)
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
        error=f"unparseable verdict after {attempts} attempt(s): {raw!r:.200}",
        error_kind="parse",
    )


async def compare(
    model: ChatModel,
    constitution: Constitution,
    prompt: str,
    a: str,
    b: str,
    *,
    k: int | None = None,
    seed: int = 0,
    cot: bool = False,
    cot_clamp: tuple[float, float] = DEFAULT_COT_CLAMP,
    cot_max_tokens: int = DEFAULT_COT_MAX_TOKENS,
    tie_margin: float | None = None,
    parse_retries: int = 1,
    require_both_orders: bool = True,
    nonces: NonceSource = RANDOM_NONCES,
) -> Comparison:
    """Compare `a` and `b` as answers to `prompt` under `constitution`.

    `k` defaults to the constitution's `principles_per_comparison` (capped at the number of
    enabled principles), `tie_margin` to its `tie_margin`. See `aggregate.weighted_p_a` for
    `require_both_orders`.
    """
    margin = constitution.defaults.tie_margin if tie_margin is None else tie_margin
    if not 0.0 <= margin < 0.5:
        raise ValueError(f"tie_margin must be in [0, 0.5), got {margin}")
    if parse_retries < 0:
        raise ValueError(f"parse_retries must be non-negative, got {parse_retries}")
    if cot:
        clamp(0.5, cot_clamp)  # validates the band before any call is made
    wanted = constitution.defaults.principles_per_comparison if k is None else k
    principles = select_for_pair(constitution, prompt, a, b, wanted, seed)
    started = time.perf_counter()
    judgments = list(
        await asyncio.gather(
            *(
                judge_once(
                    model,
                    principle,
                    prompt,
                    a,
                    b,
                    order,
                    seed=seed,
                    cot=cot,
                    cot_clamp=cot_clamp,
                    cot_max_tokens=cot_max_tokens,
                    parse_retries=parse_retries,
                    nonces=nonces,
                )
                for principle in principles
                for order in ORDERS
            )
        )
    )
    verdicts = principle_verdicts(principles, judgments)
    p_a = weighted_p_a(principles, judgments, require_both_orders=require_both_orders)
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
        constitution_digest=constitution.digest,
        constitution_version=constitution.version,
        judge=model.spec,
        seed=seed,
        k=len(principles),
        cot=cot,
        usage=Usage.total(j.usage for j in judgments),
        latency_s=time.perf_counter() - started,
    )


compare_sync = synced(compare)
