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
from .models import judge_options, open_model

if TYPE_CHECKING:
    from charter.evals.winrate import Generated, ModelEvalReport, WinRate

SPEC_PREFIXES = ("openai:", "hf:")


def resolve_spec(text: str, flag: str) -> str:
    """A model spec as given, or `hf:PATH` for a bare local path; fails fast on a missing path.

    Checked before anything is loaded, so a typo costs no model load or generation.
    """
    value = text.strip()
    if value.startswith(SPEC_PREFIXES) or value == "smollm2":
        if value.startswith("hf:"):
            _check_local(value[3:], flag)
        return value
    path = Path(value).expanduser()
    if path.exists():
        if not path.is_dir():
            raise click.BadParameter(f"{value!r} is not a model directory", param_hint=flag)
        return f"hf:{value}"
    raise click.BadParameter(
        f"model path {value!r} does not exist (give a model directory, hf:ORG/NAME for a model "
        "in the local Hugging Face cache, openai:MODEL, or smollm2)",
        param_hint=flag,
    )


def _check_local(path_or_id: str, flag: str) -> None:
    """`hf:` with something path-shaped (not a hub id) must exist."""
    looks_like_path = path_or_id.startswith(("/", ".", "~")) or path_or_id.count("/") > 1
    if looks_like_path and not Path(path_or_id).expanduser().exists():
        raise click.BadParameter(f"model path {path_or_id!r} does not exist", param_hint=flag)


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
    max_tokens, temperature = sampling.max_tokens, sampling.temperature
    resamples, confidence = sampling.resamples, sampling.confidence
    from charter.constitution import load_constitution
    from charter.evals.winrate import generate_completions, judge_pairs, summarise
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

    async def generate(spec: str, base_url: str | None, role: str) -> list[Generated]:
        say(f"{role}: loading {spec}")
        chat_model = open_model(
            spec, base_url, timeout, concurrency, POLICY_BASE_URL_ENV, option=f"--{role}"
        )
        try:
            say(f"{role}: answering {len(prompts)} prompts")
            return await generate_completions(
                chat_model,
                prompts,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=config.seed,
                concurrency=concurrency,
            )
        finally:
            await chat_model.aclose()

    async def run() -> ModelEvalReport:
        import time

        from charter.call_cache import CachedModel

        started = time.perf_counter()
        outputs_a = await generate(model, model_base_url, "model")
        outputs_b = await generate(baseline, baseline_base_url, "baseline")
        say(f"judge: loading {judge_spec}")
        judge = open_model(
            judge_spec, judge_base_url, timeout, concurrency, JUDGE_BASE_URL_ENV, option="--judge"
        )
        cached = CachedModel(judge, db) if db is not None else None
        try:
            say(f"judge: comparing {len(prompts)} pairs")
            pairs = await judge_pairs(
                cached or judge,
                constitution,
                prompts,
                outputs_a,
                outputs_b,
                config=config,
                concurrency=concurrency,
                nonces=nonces,
            )
        finally:
            await judge.aclose()
        return summarise(
            pairs,
            model=model,
            baseline=baseline,
            judge=judge.spec,
            constitution=constitution,
            config=config,
            temperature=temperature,
            max_tokens=max_tokens,
            resamples=resamples,
            confidence=confidence,
            judge_calls_reused=cached.stats.reused if cached is not None else None,
            latency_s=time.perf_counter() - started,
        )

    report = asyncio.run(run())
    if as_json:
        echo_json(report)
    else:
        _print_report(report, show_pairs)
    if report.overall.n == 0:
        first = next((p.error for p in report.pairs if p.error), "unknown")
        raise click.ClickException(f"no pair got a verdict; first error: {first}")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _interval(low: float | None, high: float | None) -> str:
    return "n/a" if low is None or high is None else f"[{_pct(low)}, {_pct(high)}]"


def _line(*cells: str) -> str:
    label, win, ci, lc, lc_ci, wtl, failed = cells
    return f"  {label:<22} {win:>6}  {ci:<16}  {lc:>6}  {lc_ci:<16}  {wtl:>9}  {failed:>6}"


def _row(label: str, r: WinRate) -> str:
    return _line(
        label,
        _pct(r.win_rate),
        _interval(r.ci_low, r.ci_high),
        _pct(r.length_controlled),
        _interval(r.length_controlled_ci_low, r.length_controlled_ci_high),
        f"{r.wins}/{r.ties}/{r.losses}",
        str(r.failures),
    )


def _print_report(r: ModelEvalReport, show_pairs: bool) -> None:
    o = r.overall
    lines = [
        f"model    {r.model}",
        f"baseline {r.baseline}",
        f"judge    {r.judge}, constitution {r.constitution_version} "
        f"({r.constitution_digest[:12]}), {r.k} principle(s) per pair, {r.protocol}",
        f"prompts  {r.prompts}: {o.n} scored ({r.identical} identical pairs scored as ties), "
        f"{o.failures} without a verdict",
        "",
        _line("", "win", f"{r.confidence:.0%} CI", "LC win", "LC CI", "W/T/L", "failed"),
        _row("overall", o),
    ]
    lines += [_row(p.principle_id, p) for p in r.principles]
    lines += [
        "",
        f"soft win rate (mean P(model better))  {_pct(o.soft_win_rate)}",
        "lengths  mean "
        + ("n/a" if r.mean_length_a is None else f"{r.mean_length_a:.0f}")
        + " chars (model) vs "
        + ("n/a" if r.mean_length_b is None else f"{r.mean_length_b:.0f}")
        + f" (baseline); model longer in {_pct(r.a_longer_rate)} of unequal pairs; "
        + "length coefficient "
        + ("n/a" if o.length_coefficient is None else f"{o.length_coefficient:+.2f}"),
        f"position consistency {_pct(r.position_consistency)} of judged pairs",
    ]
    if r.empty_a or r.empty_b:
        lines.append(
            f"empty completions: {r.empty_a} from the model, {r.empty_b} from the baseline"
        )
    failures = r.generation_failures_a + r.generation_failures_b
    if failures:
        lines.append(
            f"generation failures: {r.generation_failures_a} model, "
            f"{r.generation_failures_b} baseline"
        )
    t = r.tokens
    lines.append(
        f"tokens   {t['model'].completion_tokens} generated by the model, "
        f"{t['baseline'].completion_tokens} by the baseline; judge {t['judge'].prompt_tokens} "
        f"prompt + {t['judge'].completion_tokens} "
        "completion"
        + ("" if r.judge_calls_reused is None else f" ({r.judge_calls_reused} calls reused)")
    )
    if o.n and o.n < 30:
        lines.append(f"note: only {o.n} scored pairs; the interval is wide and approximate")
    click.echo("\n".join(lines))
    if show_pairs:
        click.echo("")
        for p in r.pairs:
            verdict = p.error or f"{p.winner} (p_a {p.p_a:.2f})"
            click.echo(f"  [{p.index}] {verdict}  {p.prompt[:50]!r}")
