"""Quality gates: texts that must never become the `chosen` side of a training row.

DPO learns whatever separates chosen from rejected. A chosen text cut off by the token limit
teaches a model to stop mid-sentence; one that repeats the prompt, the critique or our own
instructions teaches it to parrot. Small judges produce all of these (read in real outputs of
the embedded SmolLM2-135M: revisions that are a copy of the critique, the prompt echoed and then
cut off, a lone fragment of a fence marker, "The response does not rewrite it yet."). Each check
here names one such flaw; a text gets the first flaw found, or None.

The checks are deliberately plain (exact markers, word 4-gram overlap, the backend's finish
reason) so that a reader can predict them and a test can pin each one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .prompts import INSTRUCTION_TEXTS

Flaw = Literal[
    "failed",
    "cut_off",
    "empty",
    "markup",
    "marker",
    "echo_prompt",
    "echo_response",
    "echo_critique",
    "echo_instructions",
    "commentary",
    "repetitive",
    "unchanged",
    "not_preferred",
]

DESCRIPTIONS: dict[str, str] = {
    "failed": "the model call failed",
    "cut_off": "cut off by the token limit",
    "empty": "empty",
    "markup": "only punctuation or markup",
    "marker": "contained our fence markers",
    "echo_prompt": "echoed the prompt",
    "echo_response": "copied the response it critiques",
    "echo_critique": "echoed the critique",
    "echo_instructions": "echoed our instructions",
    "commentary": "talked about the response or prompt instead of answering",
    "repetitive": "repeated itself",
    "unchanged": "unchanged from (or an excerpt of) the text it revises",
    "not_preferred": "not preferred by the judge over the original",
}
"""Each flaw in words, as summaries and dataset cards print it."""

_MARKER = re.compile(r"<<<|>>>|\bEND_(?:PROMPT|RESPONSE|CRITIQUE)\w*|^\s*<<|<<\s*$")
_LABEL = re.compile(
    r"\b(?:critique|revision) request:"
    # A last line in the form our judge answers in: a verdict tacked on to an answer (SmolLM2
    # ends some answers so), which could sway a small judge and teaches the policy to emit it.
    r"|^[ \t]*answer:[ \t]*(?:yes|no|a|b)\.?\s*\Z",
    re.IGNORECASE | re.MULTILINE,
)
# How our critique and revision requests name their inputs; an answer has no reason to.
_COMMENTARY = re.compile(
    r"\b(?:the|this|that|your|user's|assistant's|original|revised|rewritten) "
    r"(?:(?:original|initial|previous|first|revised) )?"
    r"(?:response|critique|revision|prompt)s?\b"
    r"|\brequests? for (?:a |the )?(?:revision|critique)s?\b"
    # An answer speaks to the person; one that reports what "the user" did is about the exchange.
    r"|\bthe user (?:asked|requested|provided|wanted|is asking|was asking)\b",
    re.IGNORECASE,
)
_TOPIC = re.compile(r"\b(?:response|critique|revision|prompt|user)s?\b", re.IGNORECASE)
#: The `role: ` labels a conversation's prompt text carries: not the conversation's topic.
_ROLE_LABEL = re.compile(r"^(?:system|user|assistant|tool): ", re.MULTILINE)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_LETTERS = re.compile(r"[^\W\d_]{2,}")
_NGRAM = 4
#: Share of a text's word 4-grams found in a source for the text to count as an echo of it.
ECHO_SHARE = 0.5
#: A text whose first line matches the prompt this closely (difflib ratio) starts with an echo.
PROMPT_ECHO_RATIO = 0.8
#: A run of this many words said twice is a loop, not writing.
REPEAT_RUN = 8
#: Consecutive words shared with our instructions that make an instruction echo.
INSTRUCTION_RUN = 4


def answer_flaw(
    text: str,
    *,
    prompt: str,
    finish_reason: str | None = None,
    original: str | None = None,
    critique: str | None = None,
    instructions: Iterable[str] = INSTRUCTION_TEXTS,
) -> Flaw | None:
    """Why `text` may not be the chosen answer to `prompt`, or None if it may.

    `original` is the text a revision revises and `critique` the critique it answers (both
    None for a sampled candidate). `finish_reason` is the backend's; "length" means cut off.
    `instructions` are request texts the answer must not repeat (ours, and a revision's
    principle).
    """
    if finish_reason == "length":
        return "cut_off"
    if (shape := _shape_flaw(text)) is not None:
        return shape
    if original is not None and _copies(text, original):
        return "unchanged"
    if _echoes_prompt(text, prompt):
        return "echo_prompt"
    if critique is not None and _share_of_ngrams(text, critique, besides=original) >= ECHO_SHARE:
        return "echo_critique"
    if _LABEL.search(text) or any(
        _shared_run(text, source) >= INSTRUCTION_RUN for source in instructions
    ):
        return "echo_instructions"
    if _COMMENTARY.search(text) and not _TOPIC.search(_ROLE_LABEL.sub("", prompt)):
        return "commentary"
    if _repeats(text):
        return "repetitive"
    return None


def critique_flaw(text: str, *, prompt: str, response: str) -> Flaw | None:
    """Why `text` is no critique of `response` (a copy of it, of the prompt, or nothing)."""
    if (shape := _shape_flaw(text)) is not None:
        return shape
    if _share_of_ngrams(text, response) >= ECHO_SHARE or _copies(text, response):
        return "echo_response"
    if _echoes_prompt(text, prompt):
        return "echo_prompt"
    return None


def describe(counts: dict[str, int]) -> str:
    """`{"cut_off": 2, "echo_critique": 1}` as "2 cut off by the token limit, 1 echoed ..."."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{n} {DESCRIPTIONS.get(flaw, flaw)}" for flaw, n in ordered if n)


# ---------------------------------------------------------------------------- checks


def _shape_flaw(text: str) -> Flaw | None:
    if not text.strip():
        return "empty"
    if _MARKER.search(text):
        return "marker"
    if not _LETTERS.search(text):
        return "markup"
    return None


def _normal(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(text.split())


def _copies(text: str, source: str) -> bool:
    """Equal to `source` up to case, spacing and quotes, or a piece of it (an excerpt adds
    nothing)."""
    text, source = _normal(text).strip("\"'“”‘’ "), _normal(source)
    return bool(text) and text in source


def _echoes_prompt(text: str, prompt: str) -> bool:
    """The text is the prompt, or opens by restating it (small models often do)."""
    from difflib import SequenceMatcher

    prompt_n = _normal(prompt)
    if len(_words(prompt_n)) < 3:
        return False
    first_line = _normal(text.strip().splitlines()[0]) if text.strip() else ""
    if not first_line:
        return False
    ratio = SequenceMatcher(None, first_line, prompt_n, autojunk=False).ratio()
    return ratio >= PROMPT_ECHO_RATIO


def _words(text: str) -> list[str]:
    return _WORD.findall(_normal(text))


def _ngrams(words: list[str]) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + _NGRAM]) for i in range(len(words) - _NGRAM + 1)]


def _share_of_ngrams(text: str, source: str, *, besides: str | None = None) -> float:
    """Share of `text`'s word 4-grams that occur in `source` (and not in `besides`).

    `besides` discounts what both may have copied from a common text: a revision keeping the
    original's words is not echoing a critique that quoted the same words.
    """
    grams = _ngrams(_words(text))
    if not grams:
        return 0.0
    found = set(_ngrams(_words(source)))
    if besides is not None:
        found -= set(_ngrams(_words(besides)))
    return sum(1 for g in grams if g in found) / len(grams)


def _repeats(text: str) -> bool:
    """Whether some run of `REPEAT_RUN` words occurs twice."""
    words = _words(text)
    runs = [tuple(words[i : i + REPEAT_RUN]) for i in range(len(words) - REPEAT_RUN + 1)]
    return len(set(runs)) < len(runs)


def _shared_run(text: str, source: str) -> int:
    """The longest run of consecutive words `text` shares with `source`."""
    a, b = _words(text), _words(source)
    best = 0
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0] * (len(b) + 1)
        for j, other in enumerate(b, start=1):
            if word == other:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


class QualityConfig(BaseModel):
    """What a job does with texts that fail a gate, and whether revisions must win a check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    verify_revisions: bool = Field(
        default=True,
        description="revise mode: a revision is kept only if the judge prefers it over the "
        "original at the minimum confidence (its p_chosen); off: every revision, as in the "
        "CAI paper.",
    )
    rank_flawed_candidates: bool = Field(
        default=False,
        description="compare mode: also rank sampled candidates that fail a quality gate "
        "(cut off, empty, echoes); they can be rejected, never chosen.",
    )
