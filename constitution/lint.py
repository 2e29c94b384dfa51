"""Checks beyond the schema: the mistakes people make when editing principle files."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Finding

if TYPE_CHECKING:
    from .models import Principle

_CHOOSE = re.compile(r"\b(which|choose|select|pick)\b", re.IGNORECASE)
_YES_NO = re.compile(
    r"^(does|is|do|did|has|have|would|will|can|could|was|are|were|should)\b", re.IGNORECASE
)


_EXAMPLE_HEADER = re.compile(r"^\s*\[\[\s*[\"']?examples[\"']?\s*\]\]")
_TABLE_HEADER = re.compile(r"^\s*\[")
_ABOUT_RESPONSE = re.compile(r"\bresponses?\b", re.IGNORECASE)
EXAMPLE_TEXTS = ("prompt", "better", "worse")


def principle_keys() -> set[str]:
    from .models import Principle

    return set(Principle.model_fields)


def check_principle(path: Path, data: dict[str, Any], text: str) -> list[Finding]:
    """File-level checks on one parsed principle file."""
    findings: list[Finding] = []
    allowed = principle_keys()
    for key in sorted(set(data) - allowed):
        findings.append(
            Finding(
                path=path,
                line=key_line(text, key),
                field=key,
                code="unknown-key",
                message=f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})",
            )
        )
    principle_id = data.get("id")
    if isinstance(principle_id, str) and principle_id != path.stem:
        findings.append(
            Finding(
                path=path,
                line=key_line(text, "id"),
                field="id",
                code="id-mismatch",
                message=f"id {principle_id!r} does not match the file name {path.stem!r}",
            )
        )
    for key, code, problem_of in _QUESTION_CHECKS:
        question = data.get(key)
        if not isinstance(question, str) or not question.strip():
            continue  # missing or empty: the schema says so
        problem = problem_of(question.strip())
        if problem:
            findings.append(
                Finding(path=path, line=key_line(text, key), field=key, code=code, message=problem)
            )
    findings.extend(check_examples(path, data, text))
    return findings


def _comparison_problem(question: str) -> str | None:
    """Why a `comparison` question does not ask the judge to choose, if it doesn't."""
    if _CHOOSE.search(question):
        return None
    return (
        "comparison does not ask the judge to choose between responses "
        "(phrase it as 'Which response ...?' or 'Choose the response ...')"
    )


def _applies_problem(question: str) -> str | None:
    """Why an `applies` question is not a Yes/No question about the conversation, if it isn't."""
    if not _YES_NO.match(question) or not question.endswith("?") or _CHOOSE.search(question):
        return (
            "applies must be a Yes/No question ending in '?' about the conversation, e.g. "
            "'Does the user ask for something that could hurt someone?'"
        )
    if _ABOUT_RESPONSE.search(question):
        return (
            "applies is asked of the conversation before any response is judged; it must not "
            "mention the response (ask about the user's request instead)"
        )
    return None


def example_lines(text: str) -> list[tuple[int, int | None]]:
    """(first line, next table's line) of each `[[examples]]` table, in order (1-based)."""
    lines = text.splitlines()
    starts = [n for n, line in enumerate(lines, start=1) if _EXAMPLE_HEADER.match(line)]
    spans: list[tuple[int, int | None]] = []
    for start in starts:
        end = next(
            (n for n in range(start + 1, len(lines) + 1) if _TABLE_HEADER.match(lines[n - 1])),
            None,
        )
        spans.append((start, end))
    return spans


def _line_in(text: str, key: str, span: tuple[int, int | None]) -> int:
    """The line of `key = ...` inside a table's span, else the table's first line."""
    start, end = span
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for number, line in enumerate(text.splitlines()[start - 1 : end and end - 1], start=start):
        if pattern.match(line):
            return number
    return start


def check_examples(path: Path, data: dict[str, Any], text: str) -> list[Finding]:
    """Each `[[examples]]` table: its fields present, non-empty text, `better` unlike `worse`,
    no example twice, and `applies` only where the principle asks an `applies` question."""
    examples = data.get("examples")
    if examples is None:
        return []
    top = key_line(text, "examples")
    if not isinstance(examples, list) or not all(isinstance(e, dict) for e in examples):
        spans = example_lines(text)
        return [
            Finding(
                path=path,
                line=top or (spans[0][0] if spans else None),
                field="examples",
                code="invalid-value",
                message="examples must be [[examples]] tables (prompt, better, worse, why, "
                "applies)",
            )
        ]
    spans = example_lines(text)
    if len(spans) != len(examples):  # written inline (`examples = [...]`): the key's line
        spans = [(top or 1, (top or 1) + 1)] * len(examples)
    allowed = {"prompt", "better", "worse", "why", "applies"}
    conditional = isinstance(data.get("applies"), str) and bool(data["applies"].strip())
    findings: list[Finding] = []
    seen: dict[tuple[str, str, str], int] = {}

    def add(number: int, key: str | None, code: str, message: str) -> None:
        span = spans[number - 1]
        field = f"examples[{number}]" + (f".{key}" if key else "")
        line = _line_in(text, key, span) if key else span[0]
        findings.append(Finding(path=path, line=line, field=field, code=code, message=message))

    for number, example in enumerate(examples, start=1):
        for key in sorted(set(example) - allowed):
            if key in principle_keys():
                message = (
                    f"{key!r} belongs to the principle, but TOML puts every key after an "
                    "[[examples]] header into that example: move it above the first [[examples]]"
                )
            else:
                message = f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})"
            add(number, key, "unknown-key", message)
        texts: dict[str, str] = {}
        for key in (*EXAMPLE_TEXTS, "why"):
            if key not in example:
                if key != "why":
                    add(number, None, "missing-field", f"missing required field {key!r}")
                continue
            value = example[key]
            if not isinstance(value, str):
                add(number, key, "invalid-value", f"{key!r} must be text")
            elif not value.strip():
                add(number, key, "empty-text", f"{key!r} is empty or whitespace-only")
            else:
                texts[key] = value.strip()
        if "applies" in example:
            if not isinstance(example["applies"], bool):
                add(number, "applies", "invalid-value", "'applies' must be true or false")
            elif not conditional:
                add(
                    number,
                    "applies",
                    "applies-without-question",
                    "'applies' is set but the principle has no applies question (it always "
                    "applies)",
                )
        if "better" in texts and texts.get("better") == texts.get("worse"):
            add(number, "worse", "same-better-worse", "'better' and 'worse' are the same text")
        if all(key in texts for key in EXAMPLE_TEXTS):
            triple = (texts["prompt"], texts["better"], texts["worse"])
            if triple in seen:
                add(
                    number,
                    None,
                    "duplicate-example",
                    f"the same prompt, better and worse as examples[{seen[triple]}]",
                )
            else:
                seen[triple] = number
    return findings


def _score_problem(question: str) -> str | None:
    """Why a `score` question cannot be answered Yes or No about one response, if it can't."""
    if _CHOOSE.search(question):
        return (
            "score asks to choose; it must be a Yes/No question about one response "
            "(e.g. 'Does the response avoid ...?')"
        )
    if not _YES_NO.match(question) or not question.endswith("?"):
        return (
            "score must be a Yes/No question ending in '?' that starts like 'Does the "
            "response ...' or 'Is the response ...'"
        )
    return None


def check_constitution(
    directory: Path, declared_ids: dict[str, list[Path]], principles: list[Principle]
) -> list[Finding]:
    """Set-level checks: duplicate ids (as declared in the files), nothing enabled."""
    findings: list[Finding] = []
    for principle_id, paths in sorted(declared_ids.items()):
        if len(paths) > 1:
            for path in paths:
                others = ", ".join(p.name for p in paths if p != path)
                findings.append(
                    Finding(
                        path=path,
                        field="id",
                        code="duplicate-id",
                        message=f"duplicate id {principle_id!r} (also in {others})",
                    )
                )
    if principles and not any(p.enabled for p in principles):
        findings.append(
            Finding(
                path=directory,
                code="all-disabled",
                message="every principle is disabled; enable at least one",
            )
        )
    return findings


def key_line(text: str, key: str) -> int | None:
    """The 1-based line where `key = ...` first appears, if it does."""
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


# Each question a principle may ask: its key, the finding's code, and what is wrong with it.
_QUESTION_CHECKS: tuple[tuple[str, str, Callable[[str], str | None]], ...] = (
    ("comparison", "comparison-no-choice", _comparison_problem),
    ("score", "score-not-yes-no", _score_problem),
    ("applies", "applies-not-yes-no", _applies_problem),
)
