"""Readers of what a job stored: the judge questions and critique -> revision steps inside a
prompt's stored result, and which preference rows count as exportable."""

from __future__ import annotations

from typing import Any

from charter.jobs.store import Preference


def stored_judgments(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every judge question in a stored result: pairwise judgments and pointwise scores,
    of the ranking's comparisons and of the revisions' checks, and the `applies` questions
    asked for the prompt (once, at its top; a comparison asked on its own keeps its own)."""
    comparisons = result.get("comparisons", []) + result.get("verifications", [])
    scores = result.get("response_scores", []) + [
        s for c in comparisons for s in c.get("scores", [])
    ]
    pairwise = [j for c in comparisons for j in c.get("judgments", [])]
    pointwise = [j for s in scores for j in s.get("judgments", [])]
    relevances = [result.get("relevance")] + [c.get("relevance") for c in comparisons]
    applies = [j for r in relevances if r for j in r.get("judgments", [])]
    return pairwise + pointwise + applies


def stored_steps(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every critique and revision call in a stored result."""
    return [
        step
        for chain in result.get("chains", [])
        for rnd in chain.get("rounds", [])
        for step in (rnd.get("critique"), rnd.get("revision"))
        if step
    ]


def count_failed_calls(result: dict[str, Any]) -> int:
    """Model calls in a result that got no usable answer (backend errors, unparseable replies)."""
    return sum(1 for item in stored_judgments(result) + stored_steps(result) if item.get("error"))


def first_error(result: dict[str, Any]) -> str | None:
    """The first failed call's error in a stored result, if any."""
    for item in stored_judgments(result) + stored_steps(result):
        if item.get("error"):
            return str(item["error"])
    return None


def is_exportable(preference: Preference, min_confidence: float) -> bool:
    """A row needs p_chosen >= min_confidence; only an unchecked revision (the CAI paper's
    preference by construction, `--no-verify-revisions`) has no p_chosen and passes as is."""
    if preference.source == "revision" and preference.p_chosen is None:
        return True
    return preference.p_chosen is not None and preference.p_chosen >= min_confidence
