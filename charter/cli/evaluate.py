"""`charter eval`: win rate of a model over a baseline under the constitution.

The models are loaded one at a time (model, then baseline, then judge), each closed before the
next is loaded, so evaluating two local checkpoints needs memory for one model at a time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import click

from charter.evals.settings import SamplingSettings, SuiteSettings
from charter.judge.config import VERDICT_FIELDS, JudgeConfig
from charter.settings import (
    DEFAULT_STORE_PATH,
    JUDGE_BASE_URL_ENV,
    POLICY_BASE_URL_ENV,
    STORE_ENV,
)

from .common import dir_option, echo_json, friendly_errors, json_option
from .fields import model_options
from .models import judge_options, open_model, resolve_spec
from .winrate import print_winrate

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

    from charter.evals.winrate import ModelEvalReport


@click.command("eval")
@click.option(
    "--model",
    "model_spec",
    required=True,
    help="The model to evaluate (A): a model directory, hf:PATH_OR_ID, openai:MODEL or smollm2.",
)
@click.option(
    "--baseline",
    "baseline_spec",
    default=None,
    help="The model to compare against (B), in the same forms as --model. Needed for the win "
    "rate (no --suite, or --suite helpful); with harm/refusal it is evaluated alongside.",
)
@click.option(
    "--suite",
    type=click.Choice(["harm", "refusal", "helpful", "all"]),
    default=None,
    help="Run an evaluation suite instead of a win rate on --prompts: harm (attack success "
    "rate under jailbreak templates), refusal (over-refusal of benign prompts), helpful (win "
    "rate over --baseline on benign prompts) or all. Runs are kept in --store.",
)
@click.option(
    "--suite-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Your own prompts for the one --suite run (e.g. XSTest, HarmBench): .jsonl, .json, .csv "
    "or .tsv with a prompt column (--column) and an optional category column "
    "(--category-column).",
)
@click.option(
    "--templates-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Your own jailbreak templates for --suite harm: JSONL with id, name, template (holding "
    "{request} once) and optional encoding (base64 or leetspeak).",
)
@click.option(
    "--prompts",
    "prompts_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Prompts file for the win rate (without --suite): .jsonl, .json, .csv, .tsv, .txt, "
    ".parquet, or a saved datasets dir.",
)
@click.option(
    "--column",
    default="prompt",
    show_default=True,
    help="Field holding the prompt (in --prompts or --suite-file).",
)
@click.option(
    "--category-column",
    default="category",
    show_default=True,
    help="Field holding a prompt's category in --suite-file (optional in the file).",
)
@click.option(
    "--model-base-url",
    help="Base URL for an openai: --model (else $CHARTER_POLICY_BASE_URL / $OPENAI_BASE_URL).",
)
@click.option("--baseline-base-url", help="Base URL for an openai: --baseline (else as above).")
@model_options(JudgeConfig, into="config", include=VERDICT_FIELDS)
@model_options(SamplingSettings, into="sampling")
@model_options(SuiteSettings, into="suite_settings")
@click.option(
    "--store",
    "store_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="SQLite store: remembers judge calls, so a re-run pays only for new ones, and keeps "
    f"suite runs for `charter report` (with --suite, default ${STORE_ENV} or "
    f"{DEFAULT_STORE_PATH}).",
)
@click.option("--show-pairs", is_flag=True, help="Also print every pair's verdict.")
@judge_options
@dir_option
@json_option
@friendly_errors
def eval_models(
    model_spec: str,
    baseline_spec: str | None,
    suite: str | None,
    suite_file: Path | None,
    templates_file: Path | None,
    prompts_path: Path | None,
    column: str,
    category_column: str,
    model_base_url: str | None,
    baseline_base_url: str | None,
    config: JudgeConfig,
    sampling: SamplingSettings,
    suite_settings: SuiteSettings,
    store_path: Path | None,
    show_pairs: bool,
    judge_spec: str,
    judge_base_url: str | None,
    timeout: float,
    concurrency: int,
    directory: Path,
    as_json: bool,
) -> None:
    """Win rate of --model over --baseline under the constitution, or an evaluation --suite.

    Each model answers every prompt once (same settings and per-prompt seed); the judge
    compares each pair in both orders under K sampled principles. Reports the win rate (ties
    count half; failures are excluded and counted), a bootstrap confidence interval, a
    length-controlled win rate (what a logistic fit on the length difference predicts at equal
    length) and the same per principle.

    With --suite: harm reports the attack success rate (answers the harmlessness principles
    judge harmful) per jailbreak template, category and principle; refusal the over-refusal
    rate (answers the judge calls refusals) per category; helpful the win rate over
    --baseline on benign prompts. All with seeded bootstrap intervals.
    """
    if suite is not None:
        from .suites import run_suites

        run_suites(
            suite=suite,
            model_spec=model_spec,
            baseline_spec=baseline_spec,
            suite_file=suite_file,
            templates_file=templates_file,
            column=column,
            category_column=category_column,
            model_base_url=model_base_url,
            baseline_base_url=baseline_base_url,
            config=config,
            sampling=sampling,
            suite_settings=suite_settings,
            store_path=store_path,
            judge_spec=judge_spec,
            judge_base_url=judge_base_url,
            timeout=timeout,
            concurrency=concurrency,
            directory=directory,
            as_json=as_json,
        )
        return
    for given, flag in ((suite_file, "--suite-file"), (templates_file, "--templates-file")):
        if given is not None:
            raise click.UsageError(f"{flag} needs --suite")
    if prompts_path is None or baseline_spec is None:
        raise click.UsageError(
            "the win rate needs --prompts and --baseline (or choose an evaluation --suite)"
        )
    from charter.constitution import load_constitution
    from charter.evals.winrate import InTurn, evaluate_models
    from charter.judge.prompts import RANDOM_NONCES, KeyedNonces, NonceSource
    from charter.prompt_files import load_prompts

    # Everything a user can get wrong is checked before any model is loaded.
    constitution = load_constitution(directory)
    prompts = list(load_prompts(prompts_path, column=column))
    model = resolve_spec(model_spec, "--model")
    baseline = resolve_spec(baseline_spec, "--baseline")
    judge_spec = resolve_spec(judge_spec, "--judge")
    db = None
    nonces: NonceSource = RANDOM_NONCES
    if store_path is not None:
        from charter.call_cache import store_secret
        from charter.store import open_store

        db = open_store(store_path)
        nonces = KeyedNonces(store_secret(db))

    def say(message: str) -> None:
        if not as_json:
            click.echo(message, err=True)

    def in_turn(spec: str, base_url: str | None, role: str, env: str) -> InTurn:
        return InTurn(
            spec, lambda: open_model(spec, base_url, timeout, concurrency, env, option=f"--{role}")
        )

    def run() -> Coroutine[Any, Any, ModelEvalReport]:
        return evaluate_models(
            in_turn(model, model_base_url, "model", POLICY_BASE_URL_ENV),
            in_turn(baseline, baseline_base_url, "baseline", POLICY_BASE_URL_ENV),
            in_turn(judge_spec, judge_base_url, "judge", JUDGE_BASE_URL_ENV),
            constitution,
            prompts,
            config=config,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            resamples=sampling.resamples,
            confidence=sampling.confidence,
            concurrency=concurrency,
            nonces=nonces,
            store=db,
            say=say,
        )

    report = asyncio.run(run())
    if as_json:
        echo_json(report)
    else:
        print_winrate(report, show_pairs)
    if report.overall.n == 0:
        first = next((p.error for p in report.pairs if p.error), "unknown")
        raise click.ClickException(f"no pair got a verdict; first error: {first}")
