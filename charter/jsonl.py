"""Splitting JSON Lines text into lines, the one way every reader here does it.

`str.splitlines` also breaks on U+2028, U+2029, U+0085 and a few control characters, all of
which are legal unescaped inside a JSON string (`json.dumps(..., ensure_ascii=False)`, as
charter's own exports write, leaves them raw). JSON Lines separates records by line feeds only.
"""

from __future__ import annotations


def jsonl_lines(text: str) -> list[str]:
    """The lines of JSON Lines text: split on line feeds only, a trailing CR dropped."""
    return [line.removesuffix("\r") for line in text.split("\n")]
