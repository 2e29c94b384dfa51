"""Which principles fit a conversation: each principle's `applies` question, asked once per
prompt.

A principle may carry `applies`, a Yes/No question about the conversation alone ("Does the user
ask for something that could hurt someone?"). With `selection = relevant` the judge answers the
conditional principles' questions for a prompt once, before any candidate is judged, and every
candidate, comparison and revision of that prompt picks its principles among those that apply
(`charter.judge.selection`). The question depends only on (principle, prompt), so with a store
(`charter.call_cache`) it is asked once ever: editing one principle's `applies` re-asks only that
question.

Cost is bounded per prompt, whatever the number of candidates, pairs or K: at most
`applies_limit` questions, picked by a rendezvous order keyed by the prompt when a constitution
has more conditional principles than that (each principle is then considered for its share of
prompts, and selections stay stable as principles are added or removed).
"""

from __future__ import annotations

import asyncio
import logging
import time

from charter.constitution import Constitution, Principle

from .aggregate import option_probability
from .backends.base import BackendError, ChatModel, Usage
from .config import JudgeConfig
from .parse import parse_yes_no
from .prompts import RANDOM_NONCES, SCORE_OPTIONS, NonceSource, applies_messages
from .results import ApplicabilityJudgment, Relevance, Tally
from .selection import rendezvous_order

log = logging.getLogger(__name__)


async def ask_applies(
    model: ChatModel,
    principle: Principle,
    prompt: str,
    *,
    parse_retries: int = 1,
    nonces: NonceSource = RANDOM_NONCES,
) -> ApplicabilityJudgment:
    """Ask one principle's `applies` question about one prompt; failures are recorded."""
    question = principle.applies or ""
    tally = Tally(principle)
    try:
        for _ in range(parse_retries + 1):
            tally.ask(applies_messages(principle, prompt, attempt=tally.attempts, nonces=nonces))
            reply = await model.choose(tally.messages, SCORE_OPTIONS)
            word = parse_yes_no(tally.replied(reply))
            if word is None:
                tally.parse_failures += 1
                continue
            p_yes, option_probs = option_probability(word, reply.option_logprobs, SCORE_OPTIONS)
            return ApplicabilityJudgment(
                **tally.fields(),
                question=question,
                answer=word,
                p_yes=p_yes,
                option_probs=option_probs,
            )
    except BackendError as exc:
        log.warning("applies call failed for %s: %s", principle.id, exc)
        return ApplicabilityJudgment(
            **tally.fields(),
            question=question,
            error=str(exc) or type(exc).__name__,
            error_kind="backend",
        )
    return ApplicabilityJudgment(
        **tally.fields(),
        question=question,
        error=f"unparseable Yes/No after {tally.attempts} attempt(s): {tally.raw!r:.200}",
        error_kind="parse",
    )


def to_ask(constitution: Constitution, prompt: str, config: JudgeConfig) -> list[Principle]:
    """The conditional principles whose question is asked for `prompt`: all of them, or the
    first `applies_limit` in the prompt's rendezvous order."""
    conditional = [p for p in constitution.enabled if p.conditional]
    if len(conditional) <= config.applies_limit:
        return conditional
    return rendezvous_order(conditional, config.seed, ("applies", prompt))[: config.applies_limit]


async def assess(
    model: ChatModel,
    constitution: Constitution,
    prompt: str,
    config: JudgeConfig,
    *,
    nonces: NonceSource = RANDOM_NONCES,
) -> Relevance:
    """Ask the prompt's `applies` questions (concurrently) and say which principles apply."""
    started = time.perf_counter()
    asked = to_ask(constitution, prompt, config)
    judgments = list(
        await asyncio.gather(
            *(
                ask_applies(
                    model, principle, prompt, parse_retries=config.parse_retries, nonces=nonces
                )
                for principle in asked
            )
        )
    )
    asked_ids = {p.id for p in asked}
    return Relevance(
        prompt=prompt,
        threshold=config.applies_threshold,
        judgments=judgments,
        universal=[p.id for p in constitution.enabled if not p.conditional],
        unasked=[p.id for p in constitution.enabled if p.conditional and p.id not in asked_ids],
        usage=Usage.total(j.usage for j in judgments),
        latency_s=time.perf_counter() - started,
    )


async def relevance_for(
    model: ChatModel,
    constitution: Constitution,
    prompt: str,
    config: JudgeConfig,
    given: Relevance | None,
    *,
    nonces: NonceSource = RANDOM_NONCES,
) -> Relevance | None:
    """The relevance a judgment selects with: `given` (asked once for the prompt by the caller),
    else asked now when the config selects `relevant` for this judge; None for `random`."""
    if config.selection_for(model.spec) == "random":
        return None
    if given is not None:
        return given
    return await assess(model, constitution, prompt, config, nonces=nonces)
