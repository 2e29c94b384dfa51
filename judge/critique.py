"""Critique → revision chains under a constitution (SL-CAI).

Each round samples a principle (seeded; no repeats until all have been used), asks for a
critique of the current response under it, then for a revision that answers the critique; the
revision feeds the next round. Every step is recorded with its messages, cost and any error.
A failed step ends the chain there: `final` is the last revision that succeeded.

Each text is also checked (`charter.judge.quality`): a critique that copies the response, or
a revision that is cut off, echoes the prompt or the critique, or leaves the response
unchanged, is asked once more with a fresh sample and, if still flawed, ends the chain with the
flaw recorded; it never becomes `final`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field, computed_field

from charter.constitution import Constitution, Principle

from ._sync import synced
from .applicability import relevance_for
from .backends.base import BackendError, ChatModel, GenerationRequest, Message, Usage
from .config import DEFAULT_CONFIG, JudgeConfig
from .prompts import (
    INSTRUCTION_TEXTS,
    RANDOM_NONCES,
    NonceSource,
    critique_messages,
    revision_messages,
)
from .quality import Flaw, answer_flaw, critique_flaw
from .results import Provenance, Relevance
from .selection import revision_schedule

log = logging.getLogger(__name__)

# Our fence markers as a small model may echo them (with a `>` too many or too few).
_MARKER = re.compile(r"<<<\s*(?:END_)?[A-Z_]+ [0-9a-f]{6,}\s*>{1,4}")
# Lines of bare markup ("*", "**", "---") a small model opens with before the text itself.
# Not backticks: a code fence is structure, not noise.
_LEADING_MARKUP = re.compile(r"\A(?:[^\w\n`]*\n)+")
_TRAILING_MARKUP = re.compile(r"(?:\n[^\w\n`]*)+\Z")
RETRY_TEMPERATURE = 0.7


class Step(BaseModel):
    """One model call in a chain (a critique or a revision)."""

    model_config = ConfigDict(extra="ignore")  # computed fields round-trip

    messages: tuple[Message, ...]
    text: str | None = None
    finish_reason: str | None = Field(default=None, description="The backend's, e.g. length.")
    flaw: Flaw | None = Field(default=None, description="Why the text was not accepted.")
    usage: Usage = Usage()
    latency_s: float = 0.0
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.error is None and self.flaw is None and self.text is not None


class RevisionRound(BaseModel):
    model_config = ConfigDict(extra="ignore")  # computed fields round-trip

    index: int
    principle_id: str
    principle_digest: str
    response: str = Field(description="The text this round critiqued.")
    critique: Step
    revision: Step | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return self.revision is not None and self.revision.accepted


class RevisionChain(BaseModel):
    """Every critique and revision of one response, in order."""

    model_config = ConfigDict(extra="ignore")  # computed fields round-trip

    prompt: str
    original: str
    rounds: list[RevisionRound]
    requested: int
    final: str = Field(description="The last successful revision, else the original.")
    constitution_digest: str
    constitution_version: str
    judge: str
    seed: int
    relevance: Relevance | None = Field(
        default=None,
        description="The prompt's `applies` answers the rounds' principles were picked with "
        "(relevant selection); None when random.",
    )
    usage: Usage = Usage()
    latency_s: float = 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def completed(self) -> int:
        return sum(1 for r in self.rounds if r.ok)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def error(self) -> str | None:
        for r in self.rounds:
            for step in (r.critique, r.revision):
                if step is not None and step.error:
                    return f"round {r.index}: {step.error}"
        return None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def flaw(self) -> Flaw | None:
        """Why the chain ended early: the flaw of its last step, "failed" after an error."""
        last = self.rounds[-1] if self.rounds else None
        step = None if last is None else (last.revision or last.critique)
        if step is None or step.accepted:
            return None
        return "failed" if step.error else step.flaw

    @computed_field  # type: ignore[prop-decorator]
    @property
    def principle_ids(self) -> list[str]:
        return [r.principle_id for r in self.rounds]


def clean_reply(text: str, echoes: Sequence[str] = ()) -> str:
    """The reply without our markers, leading or trailing lines of bare markup, or a leading
    copy of the inputs in `echoes`.

    Small models often copy the prompt's fenced blocks (or just their markers) into their
    answer; a revision that starts with the question it answers would poison a training row.
    """
    text = _MARKER.sub("", text).strip()
    changed = True
    while changed:
        changed = False
        for echo in echoes:
            echo = echo.strip()
            if echo and text.startswith(echo):
                text = text[len(echo) :].strip()
                changed = True
    text = _TRAILING_MARKUP.sub("", _LEADING_MARKUP.sub("", text))
    return re.sub(r"\n{3,}", "\n\n", text)


Check = Callable[[str, str | None], Flaw | None]
"""Judges a cleaned reply and the backend's finish reason: the reply's flaw, or None."""


def _critique_check(prompt: str, response: str) -> Check:
    """A critique may be cut off (it only guides the revision) but must not copy its inputs."""
    return lambda text, _finish: critique_flaw(text, prompt=prompt, response=response)


def _revision_check(prompt: str, original: str, critique: str, principle: Principle) -> Check:
    """A revision must be a whole, new answer: not a copy of its inputs or of our requests."""
    requests = (*INSTRUCTION_TEXTS, principle.critique, principle.revision)
    return lambda text, finish: answer_flaw(
        text,
        prompt=prompt,
        finish_reason=finish,
        original=original,
        critique=critique,
        instructions=requests,
    )


async def _step(
    model: ChatModel,
    messages: tuple[Message, ...],
    config: JudgeConfig,
    temperature: float,
    echoes: Sequence[str],
    check: Check,
) -> Step:
    """One critique or revision call. A reply that `check` finds flawed is asked once more,
    sampled with the next seed (a new request, so a store never replays the flawed one)."""
    started = time.perf_counter()
    usage = Usage()
    seed = config.seed
    attempts = ((temperature, seed), (max(temperature, RETRY_TEMPERATURE), seed + 1))
    text, finish_reason, flaw = "", None, None
    for attempt_temperature, attempt_seed in attempts:
        try:
            reply = await model.generate(
                GenerationRequest(
                    messages=messages,
                    max_tokens=config.critique_max_tokens,
                    temperature=attempt_temperature,
                    seed=attempt_seed,
                    frequency_penalty=config.critique_frequency_penalty,
                )
            )
        except BackendError as exc:
            log.warning("critique/revision call failed: %s", exc)
            return Step(
                messages=messages,
                usage=usage,
                latency_s=time.perf_counter() - started,
                error=str(exc) or type(exc).__name__,
            )
        usage = usage + reply.usage
        text, finish_reason = clean_reply(reply.text, echoes), reply.finish_reason
        # A reply that was nothing but an echo is judged as written, so the flaw names the echo.
        flaw = check(text or clean_reply(reply.text), finish_reason)
        if flaw is None:
            break
    return Step(
        messages=messages,
        text=text,
        finish_reason=finish_reason,
        flaw=flaw,
        usage=usage,
        latency_s=time.perf_counter() - started,
    )


async def critique_and_revise(
    model: ChatModel,
    constitution: Constitution,
    prompt: str,
    response: str,
    config: JudgeConfig = DEFAULT_CONFIG,
    *,
    temperature: float = 0.0,
    nonces: NonceSource = RANDOM_NONCES,
    relevance: Relevance | None = None,
) -> RevisionChain:
    """Run the config's critique→revision rounds (default: the constitution's `revisions`),
    each call at most `config.critique_max_tokens` new tokens. With relevant selection the
    rounds' principles are picked among those that apply to the prompt (`relevance`, else
    asked here)."""
    rounds_wanted = config.rounds(constitution)
    seed = config.seed
    started = time.perf_counter()
    relevance = await relevance_for(model, constitution, prompt, config, relevance, nonces=nonces)
    schedule = revision_schedule(constitution, prompt, response, rounds_wanted, seed, relevance)
    current = response
    rounds: list[RevisionRound] = []
    usage = relevance.usage if relevance is not None else Usage()
    for index, principle in enumerate(schedule):
        critique = await _step(
            model,
            critique_messages(principle, prompt, current, nonces=nonces, few_shot=config.few_shot),
            config,
            temperature,
            echoes=(prompt,),
            check=_critique_check(prompt, current),
        )
        usage = usage + critique.usage
        record = RevisionRound(
            index=index,
            principle_id=principle.id,
            principle_digest=principle.digest,
            response=current,
            critique=critique,
        )
        rounds.append(record)
        if not critique.accepted or critique.text is None:
            break
        revision = await _step(
            model,
            revision_messages(principle, prompt, current, critique.text, nonces=nonces),
            config,
            temperature,
            echoes=(prompt, critique.text),
            check=_revision_check(prompt, current, critique.text, principle),
        )
        usage = usage + revision.usage
        record.revision = revision
        if not revision.accepted or revision.text is None:
            break
        current = revision.text
    return RevisionChain(
        prompt=prompt,
        original=response,
        rounds=rounds,
        requested=rounds_wanted,
        final=current,
        **Provenance.of(constitution, model.spec).fields(),
        seed=seed,
        relevance=relevance,
        usage=usage,
        latency_s=time.perf_counter() - started,
    )


critique_and_revise_sync = synced(critique_and_revise)
