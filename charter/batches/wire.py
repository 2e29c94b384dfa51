"""The Batch API's file formats: request lines out, result lines back.

A request line is `{"custom_id", "method", "url", "body"}` with the call's store key as its
custom_id and the body the judge would have sent directly. A result line carries the same
custom_id and either the HTTP response (`status_code`, `body`) or a batch-level error (such as
`batch_expired`). Reading results never raises: a line that cannot be used is a `problem`
(one line naming the file and line number), and the calls it might have answered count as
unanswered.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

CHAT_COMPLETIONS = "/v1/chat/completions"
_RETRY_STATUSES = frozenset({408, 429})  # plus every 5xx, as for direct calls
_RETRY_CODES = frozenset({"batch_expired", "server_error", "rate_limit_exceeded", "timeout"})


@dataclass(frozen=True)
class ItemResult:
    """One call's outcome in a batch: a chat completion `body`, or an `error` to report."""

    body: dict[str, Any] | None = None
    error: str | None = None
    status: int | None = None
    retryable: bool = False


@dataclass
class ParsedResults:
    """The results found in a batch's files, by call key, and every line that was unusable."""

    items: dict[str, ItemResult] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def request_lines(calls: Mapping[str, dict[str, Any]]) -> bytes:
    """The JSONL input file for `calls` (call key -> chat completion body)."""
    lines = [
        json.dumps(
            {"custom_id": key, "method": "POST", "url": CHAT_COMPLETIONS, "body": body},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for key, body in calls.items()
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def read_results(
    text: str, keys: Collection[str], where: str, into: ParsedResults | None = None
) -> ParsedResults:
    """Add the results in one output or error file (`where` names it in problems)."""
    parsed = into if into is not None else ParsedResults()
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        problem = _read_line(line, keys, parsed.items)
        if problem is not None:
            parsed.problems.append(f"{where}:{number}: {problem}")
    return parsed


def _read_line(line: str, keys: Collection[str], items: dict[str, ItemResult]) -> str | None:
    """Store one line's result in `items`; the reason it is unusable, or None."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    key = data.get("custom_id")
    if not isinstance(key, str):
        return "no custom_id"
    if key not in keys:
        return f"unknown custom_id {_shorten(key)!r} (not a call of this batch)"
    if key in items:
        return f"a second result for custom_id {_shorten(key)!r} (the first is kept)"
    items[key] = _item(data)
    return None


def _item(data: dict[str, Any]) -> ItemResult:
    response = data.get("response")
    if isinstance(response, dict) and isinstance(response.get("status_code"), int):
        status = int(response["status_code"])
        body = response.get("body")
        if status == 200 and isinstance(body, dict):
            return ItemResult(body=body, status=status)
        retryable = status in _RETRY_STATUSES or status >= 500
        return ItemResult(
            error=f"HTTP {status}: {_message(body)}", status=status, retryable=retryable
        )
    error = data.get("error")
    if isinstance(error, dict):
        code = str(error.get("code") or "error")
        return ItemResult(error=f"{code}: {_message(error)}", retryable=code in _RETRY_CODES)
    return ItemResult(error="the result line has neither a response nor an error", retryable=True)


def _message(body: object) -> str:
    """The error message inside an error body (`{"error": {"message": ...}}` or flat)."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return "no message"


def _shorten(key: str) -> str:
    return key if len(key) <= 24 else key[:24] + "…"
