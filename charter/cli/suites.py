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
    from charter.calls import CachedModel, store_secret
    from charter.constitution import load_constitution
    from charter.evals.plan import build_plan, expand
    from charter.evals.runs import COLUMNS, EVAL_RUNS, new_batch, runs_of, save_runs
    from charter.evals.suites import Answers, answer_plan, judge_plan, select_principles
    from charter.judge.prompts import KeyedNonces
    from charter.store import check_table, open_store

    from .evaluate import resolve_spec

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
    check_table(db, EVAL_RUNS, COLUMNS)  # another program's table: refused before any model runs
    nonces = KeyedNonces(store_secret(db))

    def say(message: str) -> None:
        if not as_json:
            click.echo(message, err=True)

    if suite == "all" and baseline is None:
        say("helpful: skipped (the win rate needs --baseline)")

    async def answers_of(spec: str, base_url: str | None, role: str) -> Answers:
        say(f"{role}: loading {spec}")
        chat_model = open_model(
            spec, base_url, timeout, concurrency, POLICY_BASE_URL_ENV, option=f"--{role}"
        )
        try:
            wanted = [s for s in plan.suites if role == "model" or baseline is not None]
            total = sum(len(plan.prompts(s)) for s in wanted)
            say(f"{role}: answering {total} prompts ({', '.join(wanted)})")
            return await answer_plan(
                chat_model, plan, sampling=sampling, seed=config.seed, concurrency=concurrency
            )
        finally:
            await chat_model.aclose()

    async def run() -> SuiteOutcome:
        answers = {model: await answers_of(model, model_base_url, "model")}
        if baseline is not None:
            answers[baseline] = await answers_of(baseline, baseline_base_url, "baseline")
        say(f"judge: loading {judge_spec}")
        judge = open_model(
            judge_spec, judge_base_url, timeout, concurrency, JUDGE_BASE_URL_ENV, option="--judge"
        )
        try:
            say("judge: judging")
            return await judge_plan(
                CachedModel(judge, db),
                constitution,
                plan,
                answers,
                harm_principles=harm,
                config=config,
                sampling=sampling,
                model=model,
                baseline=baseline,
                concurrency=concurrency,
                nonces=nonces,
            )
        finally:
            await judge.aclose()

    outcome = asyncio.run(run())
    empty = [r for r in outcome.judged if r.overall.n == 0]
    if empty or (outcome.helpful is not None and outcome.helpful.overall.n == 0):
        first = next(
            (v.error for r in empty for v in r.items if v.error),
            "no pair of the helpful suite got a verdict",
        )
        raise click.ClickException(
            f"{(empty[0].suite + ' for ' + empty[0].model) if empty else 'helpful'} got no "
            f"verdict, so nothing was stored; first error: {first}"
        )
    batch = new_batch()
    settings = {
        "judge": config.model_dump(mode="json"),
        "sampling": sampling.model_dump(mode="json"),
        "suites": suite_settings.model_dump(mode="json"),
    }
    runs = runs_of(
        outcome,
        batch=batch,
        sources=plan.sources,
        judge=judge_spec,
        constitution=constitution,
        settings=settings,
    )
    save_runs(db, runs)
    if as_json:
        echo_json({"batch": batch, "store": str(store_path), **outcome.model_dump(mode="json")})
    else:
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
    from .evaluate import _print_report

    for result in outcome.judged:
        click.echo("\n".join(_print_judged(result)) + "\n")
    if outcome.helpful is not None:
        click.echo("helpful: win rate on benign prompts")
        _print_report(outcome.helpful, show_pairs=False)
        click.echo("")
    click.echo(f"stored as batch {batch} in {store}")
