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
