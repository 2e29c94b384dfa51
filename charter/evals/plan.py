"""Which prompts a run uses: the shipped suites or the user's file, templates applied."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .data import SuiteItem, SuiteName, load_suite_file, shipped_path
from .settings import SuiteSettings
from .suites import SuitePlan, harm_prompts, plain_prompts
from .templates import load_templates, pick_templates

ALL = "all"


def expand(choice: str, *, has_baseline: bool) -> list[SuiteName]:
    """The suites `choice` names. `helpful` alone needs a baseline; `all` without one runs
    harm and refusal only (the caller says so)."""
    if choice == ALL:
        return ["harm", "refusal", "helpful"] if has_baseline else ["harm", "refusal"]
    if choice == "helpful" and not has_baseline:
        raise ValueError(
            "--suite helpful is a win rate over a baseline: give --baseline (harm and refusal "
            "need only --model)"
        )
    if choice not in ("harm", "refusal", "helpful"):
        raise ValueError(f"unknown suite {choice!r}; choose harm, refusal, helpful or all")
    return [choice]  # type: ignore[list-item]


def spread(items: list[SuiteItem], limit: int | None) -> list[SuiteItem]:
    """At most `limit` items, taken in turn from each category (in file order), so a quick
    run still covers every category it can."""
    if limit is None or limit >= len(items):
        return items
    by_category: dict[str, list[SuiteItem]] = {}
    for item in items:
        by_category.setdefault(item.category, []).append(item)
    queues = list(by_category.values())
    taken: list[SuiteItem] = []
    for rank in range(max(len(q) for q in queues)):
        taken += [q[rank] for q in queues if rank < len(q)]
    return taken[:limit]


def build_plan(
    suites: Sequence[SuiteName],
    settings: SuiteSettings,
    *,
    suite_file: Path | None = None,
    templates_file: Path | None = None,
    prompt_column: str = "prompt",
    category_column: str = "category",
) -> SuitePlan:
    """Read every file the run needs (before any model is loaded) and build its prompts.

    `suite_file` replaces the shipped prompts of the one suite run; with several suites it is
    ambiguous and refused.
    """
    if suite_file is not None and len(suites) != 1:
        raise ValueError("--suite-file replaces one suite's prompts: choose one --suite with it")
    plan = SuitePlan()
    for suite in suites:
        path = suite_file or shipped_path(f"{suite}.jsonl")
        own = suite_file is not None
        items = load_suite_file(
            path,
            prompt_column=prompt_column if own else "prompt",
            category_column=category_column if own else "category",
        )
        items = spread(items, settings.limit)
        plan.sources[suite] = str(path) if suite_file is not None else f"shipped:{suite}"
        if suite == "harm":
            templates = pick_templates(load_templates(templates_file), settings.templates)
            plan.harm = harm_prompts(items, templates)
            if templates_file is not None:
                plan.sources["templates"] = str(templates_file)
        else:
            setattr(plan, suite, plain_prompts(suite, items))
    return plan
