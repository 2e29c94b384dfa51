"""Checks beyond the schema: the mistakes people make when editing principle files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Finding

if TYPE_CHECKING:
    from .models import Principle

_CHOOSE = re.compile(r"\b(which|choose|select|pick)\b", re.IGNORECASE)
_YES_NO = re.compile(
    r"^(does|is|do|did|has|have|would|will|can|could|was|are|were|should)\b", re.IGNORECASE
)


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
    comparison = data.get("comparison")
    if isinstance(comparison, str) and comparison.strip() and not _CHOOSE.search(comparison):
        findings.append(
            Finding(
                path=path,
                line=key_line(text, "comparison"),
                field="comparison",
                code="comparison-no-choice",
                message=(
                    "comparison does not ask the judge to choose between responses "
                    "(phrase it as 'Which response ...?' or 'Choose the response ...')"
                ),
            )
        )
    score = data.get("score")
    if isinstance(score, str) and score.strip():
        problem = _score_problem(score.strip())
        if problem:
            findings.append(
                Finding(
                    path=path,
                    line=key_line(text, "score"),
                    field="score",
                    code="score-not-yes-no",
                    message=problem,
                )
            )
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
