"""Reading JSON Lines files the one way every reader here does it.

`str.splitlines` also breaks on U+2028, U+2029, U+0085 and a few control characters, all of
which are legal unescaped inside a JSON string (`json.dumps(..., ensure_ascii=False)`, as
charter's own exports write, leaves them raw). JSON Lines separates records by line feeds only.
A byte that is not UTF-8 is reported by line and byte offset, so a user can find it.
"""

from __future__ import annotations


class NotUtf8Error(ValueError):
    """The data is not UTF-8; `line` (1-based) and `offset` say where the first bad byte is."""

    def __init__(self, line: int, offset: int) -> None:
        super().__init__(f"not valid UTF-8 (byte offset {offset}); save the file as UTF-8")
        self.line = line
        self.offset = offset


def decode_utf8(data: bytes) -> str:
    """`data` as text (a leading byte-order mark dropped), or `NotUtf8Error`."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotUtf8Error(data[: exc.start].count(b"\n") + 1, exc.start) from None


def jsonl_lines(text: str) -> list[str]:
    """The lines of JSON Lines text: split on line feeds only, a trailing CR dropped."""
    return [line.removesuffix("\r") for line in text.split("\n")]
