"""Critique → revision chains under a constitution (SL-CAI).

Each round samples a principle (seeded; no repeats until all have been used), asks for a
critique of the current response under it, then for a revision that answers the critique; the
revision feeds the next round. Every step is recorded with its messages, cost and any error.
A failed step ends the chain there: `final` is the last revision that succeeded.
"""

from __future__ import annotations

import logging
import re
import time

from pydantic import BaseModel, ConfigDict, Field, computed_field

from charter.constitution import Constitution

from ._sync import synced
from .backends.base import BackendError, ChatModel, GenerationRequest, Message, Usage
from .prompts import RANDOM_NONCES, NonceSource, critique_messages, revision_messages
from .selection import revision_schedule

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 512

# Our fence markers as a small model may echo them (sometimes with a `>` or two missing).
_MARKER = r"<<<\s*(?:END_)?{name} [0-9a-f]{{6,}}\s*>{{1,3}}"
# Inputs fenced in our prompts that a reply should never repeat: dropped whole, up to their
# closing marker or, if the model never closed them, the next blank line.
_ECHOED_INPUT = re.compile(
    _MARKER.format(name="(?P<name>PROMPT|CRITIQUE|REASONING)")
    + r".*?(?:<<<\s*END_(?P=name) [0-9a-f]{6,}\s*>{1,3}|\n\s*\n|\Z)",
    re.S,
)
_ANY_MARKER = re.compile(_MARKER.format(name="[A-Z_]+"))


class Step(BaseModel):
    """One model call in a chain (a critique or a revision)."""

    model_config = ConfigDict(extra="ignore")  # computed fields round-trip

    messages: tuple[Message, ...]
    text: str | None = None
    usage: Usage = Usage()
    latency_s: float = 0.0
    error: str | None = None


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
        return self.revision is not None and self.revision.error is None


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
    def principle_ids(self) -> list[str]:
        return [r.principle_id for r in self.rounds]


def clean_reply(text: str) -> str:
    """The reply without echoes of our prompt: fenced inputs it repeated, and stray markers.

    Small models often copy the prompt's fenced blocks into their answer; a revision that
    starts with the question it answers would poison an SFT or preference row.
    """
    text = _ECHOED_INPUT.sub("", text)
    text = _ANY_MARKER.sub("", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


async def _step(
    model: ChatModel, messages: tuple[Message, ...], max_tokens: int, temperature: float, seed: int
) -> Step:
    started = time.perf_counter()
    try:
        reply = await model.generate(
            GenerationRequest(
                messages=messages, max_tokens=max_tokens, temperature=temperature, seed=seed
            )
        )
    except BackendError as exc:
        log.warning("critique/revision call failed: %s", exc)
        return Step(
            messages=messages,
            latency_s=time.perf_counter() - started,
            error=str(exc) or type(exc).__name__,
        )
    text = clean_reply(reply.text)
    return Step(
        messages=messages,
        text=text,
        usage=reply.usage,
        latency_s=time.perf_counter() - started,
        error=None if text else "empty reply",
    )


async def critique_and_revise(
    model: ChatModel,
    constitution: Constitution,
    prompt: str,
    response: str,
    *,
    revisions: int | None = None,
    seed: int = 0,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float = 0.0,
    nonces: NonceSource = RANDOM_NONCES,
) -> RevisionChain:
    """Run `revisions` critique→revision rounds (default: the constitution's `revisions`)."""
    rounds_wanted = constitution.defaults.revisions if revisions is None else revisions
    schedule = revision_schedule(constitution, prompt, response, rounds_wanted, seed)
    started = time.perf_counter()
    current = response
    rounds: list[RevisionRound] = []
    usage = Usage()
    for index, principle in enumerate(schedule):
        critique = await _step(
            model,
            critique_messages(principle, prompt, current, nonces=nonces),
            max_tokens,
            temperature,
            seed,
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
        if critique.error or critique.text is None:
            break
        revision = await _step(
            model,
            revision_messages(principle, prompt, current, critique.text, nonces=nonces),
            max_tokens,
            temperature,
            seed,
        )
        usage = usage + revision.usage
        record.revision = revision
        if revision.error or revision.text is None:
            break
        current = revision.text
    return RevisionChain(
        prompt=prompt,
        original=response,
        rounds=rounds,
        requested=rounds_wanted,
        final=current,
        constitution_digest=constitution.digest,
        constitution_version=constitution.version,
        judge=model.spec,
        seed=seed,
        usage=usage,
        latency_s=time.perf_counter() - started,
    )


critique_and_revise_sync = synced(critique_and_revise)
