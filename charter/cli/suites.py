"""`charter eval --suite`: the CLI skin over `charter.evals` (load, answer, judge, store, print).

Models are loaded one at a time (model, baseline, then the judge), each closed before the
next, as the plain win rate does. Every file is read and every name checked before any model
is loaded, so a typo costs nothing.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from charter.settings import DEFAULT_STORE_PATH, JUDGE_BASE_URL_ENV, POLICY_BASE_URL_ENV, STORE_ENV

from .common import echo_json
from .models import open_model

if TYPE_CHECKING:
    from charter.evals.rates import GroupRate, Rate
    from charter.evals.settings import SamplingSettings, SuiteSettings
    from charter.evals.suites import SuiteOutcome, SuiteResult
    from charter.judge.config import JudgeConfig


def run_suites(
    *,
    suite: str,
    model_spec: str,
    baseline_spec: str | None,
    suite_file: Path | None,
    templates_file: Path | None,
    column: str,
    category_column: str,
    model_base_url: str | None,
    baseline_base_url: str | None,
    config: JudgeConfig,
    sampling: SamplingSettings,
    suite_settings: SuiteSettings,
    store_path: Path | None,
    judge_spec: str,
    judge_base_url: str | None,
    timeout: float,
    concurrency: int,
    directory: Path,
    as_json: bool,
) -> None:
    """Run the chosen suites, store the runs and print the figures."""
    from charter.constitution import load_constitution
    from charter.evals.plan import build_plan, expand
    from charter.evals.session import (
        NoVerdict,
        Role,
        answer_and_judge,
        check_store,
        store_outcome,
    )
    from charter.evals.suites import select_principles
    from charter.judge.backends.base import ChatModel
    from charter.qualification import qualification
    from charter.store import open_store

    from .models import resolve_spec

    constitution = load_constitution(directory)
    suites = expand(suite, has_baseline=baseline_spec is not None)
    if templates_file is not None and "harm" not in suites:
        raise click.UsageError("--templates-file applies to --suite harm")
    plan = build_plan(
        suites,
        suite_settings,
        suite_file=suite_file,
        templates_file=templates_file,
        prompt_column=column,
        category_column=category_column,
    )
    harm = select_principles(constitution, suite_settings.harm_principles)
    model = resolve_spec(model_spec, "--model")
    baseline = resolve_spec(baseline_spec, "--baseline") if baseline_spec else None
    judge_spec = resolve_spec(judge_spec, "--judge")
    store_path = store_path or Path(os.environ.get(STORE_ENV) or DEFAULT_STORE_PATH)
    db = open_store(store_path)
    check_store(db)  # another program's table: refused before any model runs
    urls = {"model": model_base_url, "baseline": baseline_base_url, "judge": judge_base_url}

    def open_for(spec: str, role: Role) -> ChatModel:
        env = JUDGE_BASE_URL_ENV if role == "judge" else POLICY_BASE_URL_ENV
        return open_model(spec, urls[role], timeout, concurrency, env, option=f"--{role}")

    def say(message: str) -> None:
        if not as_json:
            click.echo(message, err=True)

    if suite == "all" and baseline is None:
        say("helpful: skipped (the win rate needs --baseline)")
    outcome = asyncio.run(
        answer_and_judge(
            db,
            plan,
            constitution,
            harm,
            open_model=open_for,
            model=model,
            baseline=baseline,
            judge=judge_spec,
            config=config,
            sampling=sampling,
            concurrency=concurrency,
            say=say,
        )
    )
    try:
        batch = store_outcome(
            db,
            outcome,
            plan,
            constitution,
            judge=judge_spec,
            config=config,
            sampling=sampling,
            suite_settings=suite_settings,
        )
    except NoVerdict as exc:
        raise click.ClickException(str(exc)) from None
    qualified = qualification(db, judge_spec)
    if as_json:
        echo_json(
            {
                "batch": batch,
                "store": str(store_path),
                "judge_qualification": {
                    **qualified.model_dump(mode="json"),
                    "text": qualified.text,
                },
                **outcome.model_dump(mode="json"),
            }
        )
    else:
        click.echo(f"Every figure below is the verdict of {qualified.text}\n")
        _print(outcome, batch, store_path)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _rate_cells(r: Rate) -> str:
    interval = (
        "n/a"
        if r.ci_low is None or r.ci_high is None
        else (f"[{_pct(r.ci_low)}, {_pct(r.ci_high)}]")
    )
    return f"{_pct(r.rate):>7}  {interval:<18} {r.hits:>4}/{r.n:<4} {r.failures:>6}"


def _table(title: str, groups: list[GroupRate], overall: Rate | None = None) -> list[str]:
    lines = [f"  {title:<30} {'rate':>7}  {'interval':<18} {'hits/n':>9} {'failed':>6}"]
    if overall is not None:
        lines.append(f"  {'overall':<30} {_rate_cells(overall)}")
    lines += [f"    {g.group:<28} {_rate_cells(g)}" for g in groups]
    return lines


def _print_judged(result: SuiteResult) -> list[str]:
    if result.suite == "harm":
        lines = [f"harm: attack success rate of {result.model}"]
        lines += _table("by template", result.by_template, result.overall)
        lines += _table("by category", result.by_category)
        lines += _table("by principle (judged harmful)", result.by_principle)
        return lines
    lines = [f"refusal: over-refusal rate of {result.model} on benign prompts"]
    lines += _table("by category", result.by_category, result.overall)
    return lines


def _print(outcome: SuiteOutcome, batch: str, store: Path) -> None:
    from .winrate import print_winrate

    for result in outcome.judged:
        click.echo("\n".join(_print_judged(result)) + "\n")
    if outcome.helpful is not None:
        click.echo("helpful: win rate on benign prompts")
        print_winrate(outcome.helpful, show_pairs=False)
        click.echo("")
    click.echo(f"stored as batch {batch} in {store}")
