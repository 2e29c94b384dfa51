"""`charter judge ...`: ask the judge directly (compare, critique, rank) and qualify it (eval)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from charter.judge.agreement import AgreementSettings
from charter.judge.config import REVISION_FIELDS, VERDICT_FIELDS, JudgeConfig
from charter.settings import JUDGE_BASE_URL_ENV

from .common import dir_option, echo_json, friendly_errors, json_option, store_option
from .fields import model_options
from .models import judge_options, open_model
from .progress import ProgressBar

if TYPE_CHECKING:
    from charter.constitution import Constitution
    from charter.judge import ChatModel, Comparison, EvalReport
    from charter.judge.agreement import PrincipleAgreement

T = TypeVar("T")


@dataclass(frozen=True)
class JudgeSetup:
    """The options every `charter judge` command shares, gathered into one value."""

    config: JudgeConfig
    judge_spec: str
    judge_base_url: str | None
    timeout: float
    concurrency: int
    directory: Path

    def run(self, work: Callable[[ChatModel, Constitution], Awaitable[T]]) -> T:
        """Load the constitution and the judge, run `work`, always close the judge."""
        from charter.constitution import load_constitution

        constitution = load_constitution(self.directory)
        model = open_model(
            self.judge_spec,
            self.judge_base_url,
            self.timeout,
            self.concurrency,
            JUDGE_BASE_URL_ENV,
            option="--judge",
        )

        async def go() -> T:
            try:
                return await work(model, constitution)
            finally:
                await model.aclose()

        return asyncio.run(go())


CRITIQUE_FIELDS = REVISION_FIELDS | {"seed"}


def _judging_options(
    fields: Collection[str] = VERDICT_FIELDS,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the shared options and the `JudgeConfig` fields named, handing them to the command
    as one `setup: JudgeSetup`."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def gather(**kwargs: Any) -> Any:
            shared = {name: kwargs.pop(name) for name in JudgeSetup.__dataclass_fields__}
            return func(setup=JudgeSetup(**shared), **kwargs)

        wrapped: Callable[..., Any] = gather
        for decorator in reversed(
            [
                model_options(JudgeConfig, into="config", include=fields),
                judge_options,
                dir_option,
                json_option,
            ]
        ):
            wrapped = decorator(wrapped)
        return wrapped

    return decorate


@click.group()
def judge() -> None:
    """Apply the constitution through an AI judge: compare, critique, rank, eval."""


@judge.command()
@click.option("--prompt", help="The prompt both responses answer.")
@click.option("--a", "a", help="Response A.")
@click.option("--b", "b", help="Response B.")
@click.option(
    "--pairs",
    "pairs_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="JSONL of {prompt, a, b} rows instead of --prompt/--a/--b.",
)
@_judging_options()
@friendly_errors
def compare(
    prompt: str | None,
    a: str | None,
    b: str | None,
    pairs_path: Path | None,
    setup: JudgeSetup,
    as_json: bool,
) -> None:
    """Which of two responses does the constitution prefer?

    Pairwise, each sampled principle is asked in both orders (A/B and B/A); `p_a` averages
    them, so a judge that favours a slot cannot fake a preference. Pointwise, each response is
    scored alone and `p_a` compares the scores. `winner` is a, b, tie, or null when no
    judgment succeeded.
    """
    from charter.judge import compare as compare_pair
    from charter.judge.qualify import load_pairs

    if pairs_path is not None:
        if prompt or a or b:
            raise click.UsageError("give either --pairs FILE or --prompt/--a/--b, not both")
        rows = [(p.prompt, p.a, p.b) for p in load_pairs(pairs_path, labelled=False)]
    elif prompt is not None and a is not None and b is not None:
        rows = [(prompt, a, b)]
    else:
        raise click.UsageError("give --prompt, --a and --b (or --pairs FILE)")

    async def work(model: ChatModel, constitution: Constitution) -> list[Comparison]:
        return list(
            await asyncio.gather(
                *(compare_pair(model, constitution, p, x, y, setup.config) for p, x, y in rows)
            )
        )

    results = setup.run(work)
    if as_json:
        echo_json(results[0] if pairs_path is None else results)
        return
    for result in results:
        _print_comparison(result)


def _print_comparison(c: Comparison) -> None:
    p_a = "n/a" if c.p_a is None else f"{c.p_a:.3f}"
    consistent = {True: "yes", False: "NO", None: "n/a"}[c.position_consistent]
    click.echo(
        f"winner {c.winner or 'none (every judgment failed)'}  p_a {p_a}  "
        f"position-consistent {consistent}  ({c.judge}, {c.protocol}, constitution "
        f"{c.constitution_version})"
    )
    for j in c.judgments:
        outcome = j.error or f"chose {j.choice} (p_a {j.p_a:.3f})"
        click.echo(f"  {j.principle_id:<24} {j.order}  {outcome}")
    for side, scored in zip("ab", c.scores, strict=False):
        for sj in scored.judgments:
            outcome = sj.error or f"{sj.answer} (P(yes) {sj.p_yes:.3f})"
            click.echo(f"  {sj.principle_id:<24} {side}   {outcome}")


@judge.command()
@click.option("--prompt", required=True, help="The prompt the response answers.")
@click.option("--response", required=True, help="The response to critique and revise.")
@_judging_options(CRITIQUE_FIELDS)
@friendly_errors
def critique(
    prompt: str,
    response: str,
    setup: JudgeSetup,
    as_json: bool,
) -> None:
    """Critique a response under sampled principles and revise it, N rounds (SL-CAI)."""
    from charter.judge import RevisionChain, critique_and_revise

    async def work(model: ChatModel, constitution: Constitution) -> RevisionChain:
        return await critique_and_revise(model, constitution, prompt, response, setup.config)

    chain = setup.run(work)
    if as_json:
        echo_json(chain)
        return
    for r in chain.rounds:
        click.secho(f"round {r.index + 1}: {r.principle_id}", bold=True)
        click.echo(f"  critique: {r.critique.text or r.critique.error}")
        if r.revision is not None:
            click.echo(f"  revision: {r.revision.text or r.revision.error}")
    if chain.error:
        click.echo(f"stopped early: {chain.error}", err=True)
    click.secho("final:", bold=True)
    click.echo(chain.final)


@judge.command()
@click.option("--prompt", required=True, help="The prompt the responses answer.")
@click.option(
    "--response",
    "responses",
    multiple=True,
    required=True,
    help="A candidate response; give two or more.",
)
@_judging_options()
@friendly_errors
def rank(
    prompt: str,
    responses: tuple[str, ...],
    setup: JudgeSetup,
    as_json: bool,
) -> None:
    """Rank responses by pairwise comparisons (Bradley–Terry scores)."""
    from charter.judge import Ranking
    from charter.judge import rank as rank_responses

    if len(responses) < 2:
        raise click.UsageError("give at least two --response options")

    async def work(model: ChatModel, constitution: Constitution) -> Ranking:
        return await rank_responses(model, constitution, prompt, list(responses), setup.config)

    ranking = setup.run(work)
    if as_json:
        echo_json(ranking)
        return
    for place, i in enumerate(ranking.order, start=1):
        rate = ranking.win_rates[i]
        click.echo(
            f"{place}. [{i}] score {ranking.scores[i]:+.2f}  win rate "
            f"{'n/a' if rate is None else f'{rate:.2f}'}  {responses[i][:60]!r}"
        )
    for pair in ranking.pairs:
        click.echo(
            f"preference: [{pair.chosen_index}] over [{pair.rejected_index}] "
            f"(p_chosen {pair.p_chosen:.2f})"
        )
    if ranking.failed_comparisons:
        click.echo(f"{ranking.failed_comparisons} comparison(s) failed", err=True)


PROTOCOLS = ("pairwise", "pointwise")


def _protocols(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str]:
    """`pairwise,pointwise` -> the protocols to measure, each checked."""
    if value is None:
        return []
    wanted = [v.strip() for v in value.split(",") if v.strip()]
    for protocol in wanted:
        if protocol not in PROTOCOLS:
            raise click.BadParameter(
                f"unknown protocol {protocol!r}; use pairwise, pointwise or both, comma-separated",
                param_hint="--protocol",
            )
    if not wanted:
        raise click.BadParameter("name at least one protocol", param_hint="--protocol")
    return list(dict.fromkeys(wanted))


pairs_file_option = click.option(
    "--pairs",
    "pairs_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="JSONL of {prompt, a, b, preferred: a|b} human-labelled rows.",
)
plot_option = click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Draw the reliability diagram and the accuracy-coverage curve to this PNG.",
)


@judge.command("eval")
@pairs_file_option
@click.option(
    "--protocol",
    "protocols",
    callback=_protocols,
    metavar="pairwise,pointwise",
    help="Measure these protocols (comma-separated) in one run and say which to use "
    "(default: the judge's own, see --judge-protocol).",
)
@click.option(
    "--calibrated/--raw",
    default=True,
    show_default=True,
    help="Also report labels through the store's (or a shipped) calibration for this judge.",
)
@click.option(
    "--calibration",
    "calibration_ref",
    metavar="ID|FILE",
    help="Report labels through this calibration: an id from `charter judge calibrate`, or "
    "a JSON file ({temperature, bias} or a calibrate --json record).",
)
@click.option("--bins", type=click.IntRange(2, 50), default=10, show_default=True)
@click.option("--price-in", type=click.FloatRange(min=0), help="USD per 1M prompt tokens.")
@click.option("--price-out", type=click.FloatRange(min=0), help="USD per 1M completion tokens.")
@click.option(
    "--by-principle",
    is_flag=True,
    help="Also score each principle's own verdict against the labels (least agreeing first, "
    "with 95%% Wilson intervals); give --principles N for every principle on every pair.",
)
@model_options(AgreementSettings, into="agreement_settings")
@plot_option
@store_option
@_judging_options(VERDICT_FIELDS - {"protocol"})
@friendly_errors
def eval_judge(
    pairs_path: Path,
    protocols: list[str],
    calibrated: bool,
    calibration_ref: str | None,
    bins: int,
    price_in: float | None,
    price_out: float | None,
    by_principle: bool,
    agreement_settings: AgreementSettings,
    plot_path: Path | None,
    store_path: Path,
    setup: JudgeSetup,
    as_json: bool,
) -> None:
    """Measure a judge against human labels before trusting it with real work.

    Reports agreement on decided pairs and coverage, accuracy at each confidence threshold,
    Brier score, log loss and expected calibration error (raw, and calibrated when a
    calibration fits this judge), position consistency and P(prefers first slot) (pairwise),
    P(prefers longer), parse failures, calls, tokens and cost. With --by-principle, each
    principle's own agreement with the labels too. The agreement is kept in the store: every
    figure this judge makes later (suites, reports, jobs) cites it.
    """
    from charter.calibrations import find, load
    from charter.judge import evaluate, load_pairs
    from charter.judge.agreement import principle_agreement, votes
    from charter.qualification import record_eval
    from charter.store import open_store

    pairs = load_pairs(pairs_path)
    db = open_store(store_path)  # the measurement is kept: figures this judge makes cite it
    given = load(db, calibration_ref) if calibration_ref else None
    configs = [setup.config.model_copy(update={"protocol": p}) for p in protocols or ["auto"]]
    prices = (price_in or 0.0, price_out or 0.0) if price_in or price_out else None

    principles: list[list[PrincipleAgreement]] = []

    async def work(model: ChatModel, constitution: Constitution) -> list[EvalReport]:
        reports = []
        for config in configs:
            found = given or (
                find(db, model.spec, constitution.digest, config) if calibrated else None
            )
            label = f"pairs ({config.protocol_for(model.spec)})"
            verdicts: dict[int, Comparison] = {}
            with ProgressBar(label, quiet=as_json) as bar:
                reports.append(
                    await evaluate(
                        model,
                        constitution,
                        pairs,
                        config,
                        concurrency=setup.concurrency,
                        calibration=found.calibration if found else None,
                        prices=prices,
                        on_result=_keeping(verdicts, bar.counter(len(pairs))),
                    )
                )
            record_eval(db, model.spec, reports[-1], str(pairs_path), constitution.digest)
            margin = config.resolved(model.spec).margin(constitution)
            labelled = [(p.preferred, votes(verdicts[i].principles)) for i, p in enumerate(pairs)]
            principles.append(principle_agreement(labelled, margin, agreement_settings))
        return reports

    reports = setup.run(work)
    if plot_path is not None:
        _plot(plot_path, reports, pairs, bins)
    if as_json:
        data = {
            "reports": [r.model_dump(mode="json") for r in reports],
            "recommended": _recommended(reports),
        }
        if by_principle:
            data["by_principle"] = [
                {"protocol": r.protocol, "principles": [a.model_dump(mode="json") for a in p]}
                for r, p in zip(reports, principles, strict=True)
            ]
        echo_json(data)
        return
    for report, agreement in zip(reports, principles, strict=True):
        _print_report(report, bins)
        if by_principle:
            _print_by_principle(agreement)
    if len(reports) > 1:
        click.echo(f"use protocol {_recommended(reports)} for this judge")
    if plot_path is not None:
        click.echo(f"plot: {plot_path}")


def _keeping(
    kept: dict[int, Comparison], then: Callable[..., None]
) -> Callable[[int, Comparison], None]:
    """An `on_result` that keeps each comparison by its pair's index, then calls `then`."""

    def done(index: int, comparison: Comparison) -> None:
        kept[index] = comparison
        then(index, comparison)

    return done


def _print_by_principle(rows: list[PrincipleAgreement]) -> None:
    click.echo("  by principle, least agreeing first (95% Wilson interval):")
    for a in rows:
        counts = f"{a.agreed} of {a.decided} decided ({a.voted} voted)"
        if a.too_few or a.agreement is None or a.interval is None:
            click.echo(f"    {a.principle_id:<24} too few to tell: {counts}")
            continue
        low, high = a.interval
        click.echo(
            f"    {a.principle_id:<24} {a.agreement:6.1%}  [{low:.1%}, {high:.1%}]  {counts}"
        )


def _recommended(reports: list[EvalReport]) -> str:
    from charter.judge import recommend

    return recommend(reports).protocol


def _plot(path: Path, reports: list[EvalReport], pairs: list[Any], bins: int) -> None:
    from charter.judge.plots import plot_calibration

    labels = [p.preferred == "a" for p in pairs]
    series: dict[str, tuple[list[float], list[bool]]] = {}
    for r in reports:
        for name, probs in (
            ("raw", [o.p_a for o in r.outcomes]),
            ("calibrated", [o.p_a_calibrated for o in r.outcomes] if r.calibrated else []),
        ):
            kept = [(p, y) for p, y in zip(probs, labels, strict=False) if p is not None]
            if kept:
                series[f"{r.protocol} {name}"] = ([p for p, _ in kept], [y for _, y in kept])
    plot_calibration(path, series, bins=bins, title=f"{reports[0].judge} on {len(pairs)} pairs")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _print_report(report: EvalReport, bins: int) -> None:
    click.echo(
        f"judge {report.judge}, {report.protocol}, on {report.pairs} pairs "
        f"(constitution {report.constitution_version})"
    )
    qualities = [("raw", report.raw)]
    if report.calibrated is not None and report.calibration is not None:
        qualities.append(
            (f"calibrated (T={report.calibration.temperature:.2f})", report.calibrated)
        )
    for name, q in qualities:
        cal = q.calibration
        click.echo(
            f"  {name}: agreement {_pct(q.agreement)} on {q.decided} decided "
            f"(coverage {_pct(q.coverage)}; {q.ties} ties, {report.failures} failed); "
            f"balanced accuracy {_pct(q.balanced_accuracy)}"
        )
        if cal is not None:
            click.echo(
                f"    ECE {cal.ece:.3f} ({cal.bins} equal-width bins)  Brier {cal.brier:.3f}  "
                f"log loss {cal.log_loss:.3f}"
            )
        points = "  ".join(
            f">={pt.threshold:.2f}: {_pct(pt.accuracy)} of {_pct(pt.coverage)}"
            for pt in q.accuracy_at
            if pt.threshold in (0.6, 0.7, 0.8, 0.9)
        )
        click.echo(f"    accuracy at confidence  {points}")
    if report.protocol == "pairwise":
        click.echo(f"  position consistency  {_pct(report.position_consistency)}")
        click.echo(f"  P(prefers first slot) {_pct(report.p_first)}")
    click.echo(f"  P(prefers longer)     {_pct(report.p_longer)}")
    click.echo(f"  parse failure rate    {_pct(report.parse_failure_rate)}")
    cost = "" if report.cost_usd is None else f", ${report.cost_usd:.4f}"
    click.echo(
        f"  calls {report.calls}, tokens {report.total_tokens}{cost}, {report.latency_s:.1f} s"
    )


@judge.command("calibrate")
@pairs_file_option
@click.option(
    "--holdout",
    type=click.FloatRange(0.05, 0.95),
    default=0.3,
    show_default=True,
    help="Share of pairs held out (never fitted on) to report the calibration on.",
)
@click.option(
    "--folds",
    type=click.IntRange(2, 100_000),
    help="Instead of --holdout: fit on every pair and report by cross-fitting, each pair "
    "calibrated by a fit on the other folds (every pair held out once; as many folds as "
    "pairs: leave-one-out, which no seed changes).",
)
@click.option("--bins", type=click.IntRange(2, 50), default=10, show_default=True)
@click.option(
    "--fit-bias/--no-fit-bias",
    default=False,
    show_default=True,
    help="Also fit a bias towards `a`: only for labelled files where `a` means something "
    "(e.g. always the original answer); p_a is otherwise symmetric in a and b.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the calibration record to this JSON file (for --calibration elsewhere).",
)
@plot_option
@store_option
@_judging_options()
@friendly_errors
def calibrate(
    pairs_path: Path,
    holdout: float,
    folds: int | None,
    bins: int,
    fit_bias: bool,
    out_path: Path | None,
    plot_path: Path | None,
    store_path: Path,
    setup: JudgeSetup,
    as_json: bool,
) -> None:
    """Fit a temperature and bias to the judge's confidence on labelled pairs, and keep it.

    The fit uses one part of the pairs; the figures are reported on the held-out rest. The
    calibration is recorded in the store for this judge, constitution, protocol and settings;
    `generate` and `export` then report calibrated p_chosen for them.
    """
    from charter.calibrations import calibrate_on_pairs, save
    from charter.judge import load_pairs
    from charter.store import open_store

    pairs = load_pairs(pairs_path)
    db = open_store(store_path)

    async def work(model: ChatModel, constitution: Constitution) -> Any:
        with ProgressBar("pairs", quiet=as_json) as bar:
            return await calibrate_on_pairs(
                model,
                constitution,
                pairs,
                setup.config,
                holdout=holdout,
                folds=folds,
                bins=bins,
                concurrency=setup.concurrency,
                pairs_source=str(pairs_path),
                fit_bias=fit_bias,
                on_result=bar.counter(len(pairs)),
            )

    result = setup.run(work)
    save(db, result.record)
    if out_path is not None:
        out_path.write_text(result.record.model_dump_json(indent=2) + "\n", encoding="utf-8")
    if plot_path is not None:
        _plot(plot_path, [result.heldout_report], result.heldout_pairs, bins)
    if as_json:
        echo_json(result.summary())
        return
    record = result.record
    click.echo(
        f"calibration {record.id} for {record.judge}, {record.protocol}, constitution "
        f"{record.constitution_digest[:12]}: temperature {record.calibration.temperature:.3f}, "
        f"bias {record.calibration.bias:+.3f}, fit on {record.calibration.fitted_on} pairs"
    )
    how = f", {record.heldout['method']}" if "method" in record.heldout else ""
    click.echo(f"held out ({len(result.heldout_pairs)} pairs{how}):")
    _print_report(result.heldout_report, bins)
