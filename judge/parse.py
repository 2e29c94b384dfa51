"""Strict verdict parsing: a reply is `A`, `B`, or unparseable (None). Never a default.

Defaulting an unreadable reply to "A" or to 0.5 silently injects bias, so anything that is
not clearly one letter is rejected and the caller retries or records a failure. Accepted:

- the bare letter, with surrounding whitespace, quotes, brackets, markdown emphasis or
  trailing punctuation: `A`, ` B `, `A.`, `(A)`, `**B**`, `"A"`;
- the letter after a short label: `Answer: A`, `Final answer - B`, `Verdict: (A)`,
  optionally naming the slot: `Response A`, `Answer: Response B`.

With `cot=True` only the last non-empty line is read, so the reasoning above it may mention
both letters freely.
"""

from __future__ import annotations

import re
from typing import Literal

Letter = Literal["A", "B"]
YesNo = Literal["Yes", "No"]

_WRAP_OPEN = r"[\s\"'`*_(\[{<]*"
_WRAP_CLOSE = r"[\s\"'`*_)\]}>.,;:!]*"
_LABEL = r"(?:(?:final\s+)?(?:answer|verdict|choice)\s*(?:is\s*)?[:\-]?\s*)?"
_SLOT = r"(?:(?:response|option|slot)\s+)?"
_VERDICT = re.compile(
    rf"^{_WRAP_OPEN}(?i:{_LABEL}){_WRAP_OPEN}(?i:{_SLOT})(?P<letter>[AB]){_WRAP_CLOSE}$"
)


def parse_verdict(text: str | None, *, cot: bool = False) -> Letter | None:
    """The letter a judge reply names, or None when it is not exactly one verdict."""
    if text is None:
        return None
    candidate = text.strip()
    if cot:
        lines = [line for line in candidate.splitlines() if line.strip()]
        candidate = lines[-1].strip() if lines else ""
    match = _VERDICT.match(candidate)
    if match is None:
        return None
    letter = match.group("letter")
    return "A" if letter == "A" else "B"


_YES_NO = re.compile(rf"^{_WRAP_OPEN}(?i:{_LABEL}){_WRAP_OPEN}(?P<word>(?i:yes|no)){_WRAP_CLOSE}$")


def parse_yes_no(text: str | None) -> YesNo | None:
    """ "Yes" or "No" when a pointwise reply is exactly that word (any case, the same wrappers
    and labels as a letter verdict), else None: never a default."""
    if text is None:
        return None
    match = _YES_NO.match(text.strip())
    if match is None:
        return None
    return "Yes" if match.group("word").lower() == "yes" else "No"


def parse_option(text: str | None, options: tuple[str, ...] | list[str]) -> str | None:
    """The option a `choose` reply names, with the strict parser for that kind of question."""
    if set(options) == {"A", "B"}:
        return parse_verdict(text)
    if set(options) == {"Yes", "No"}:
        return parse_yes_no(text)
    stripped = (text or "").strip()
    return stripped if stripped in options else None
