"""`charter judge ...`: ask the judge directly (compare, critique, rank) and qualify it (eval)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from charter.settings import JUDGE_BASE_URL_ENV

from .common import dir_option, echo_json, friendly_errors, json_option
from .models import judge_options, open_model

if TYPE_CHECKING:
    from charter.constitution import Constitution
    from charter.judge import ChatModel, Comparison

T = TypeVar("T")


@dataclass(frozen=True)
class JudgeSetup:
    """The options every `charter judge` command shares, gathered into one value."""

    k: int | None
    seed: int
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
            self.judge_spec, self.judge_base_url, self.timeout, self.concurrency, JUDGE_BASE_URL_ENV
        )

        async def go() -> T:
            try:
                return await work(model, constitution)
            finally:
                await model.aclose()

        return asyncio.run(go())


def _judging_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the shared options, handing them to `func` as one `setup: JudgeSetup`."""

    @functools.wraps(func)
    def gather(**kwargs: Any) -> Any:
        shared = {name: kwargs.pop(name) for name in JudgeSetup.__dataclass_fields__}
        return func(setup=JudgeSetup(**shared), **kwargs)

    wrapped: Callable[..., Any] = gather
    for decorator in reversed(
        [
            click.option(
                "--principles",
                "k",
                type=click.IntRange(min=1),
                default=None,
                help="Principles sampled per comparison (default: the constitution's).",
            ),
            click.option(
                "--seed",
                type=int,
                default=0,
                show_default=True,
                help="Seeds principle sampling, so runs are reproducible.",
            ),
            judge_options,
            dir_option,
            json_option,
        ]
    ):
        wrapped = decorator(wrapped)
    return wrapped


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
@click.option("--cot", is_flag=True, help="Reason first, then answer (probabilities clamped).")
@_judging_options
@friendly_errors
def compare(
    prompt: str | None,
    a: str | None,
    b: str | None,
    pairs_path: Path | None,
    cot: bool,
    setup: JudgeSetup,
    as_json: bool,
) -> None:
    """Which of two responses does the constitution prefer?

    Each sampled principle is asked in both orders (A/B and B/A); `p_a` averages them, so a
    judge that favours a slot cannot fake a preference. `winner` is a, b, tie, or null when
    no judgment succeeded.
    """
    from charter.judge import compare as compare_pair
    from charter.judge.evaluate import load_pairs

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
                *(
                    compare_pair(model, constitution, p, x, y, k=setup.k, seed=setup.seed, cot=cot)
                    for p, x, y in rows
                )
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
        f"position-consistent {consistent}  ({c.judge}, constitution "
        f"{c.constitution_version})"
    )
    for j in c.judgments:
        outcome = j.error or f"chose {j.choice} (p_a {j.p_a:.3f})"
        click.echo(f"  {j.principle_id:<24} {j.order}  {outcome}")


@judge.command()
@click.option("--prompt", required=True, help="The prompt the response answers.")
@click.option("--response", required=True, help="The response to critique and revise.")
@click.option(
    "--revisions",
    type=click.IntRange(min=1),
    default=None,
    help="Critique -> revision rounds (default: the constitution's).",
)
@click.option("--max-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@_judging_options
@friendly_errors
def critique(
    prompt: str,
    response: str,
    revisions: int | None,
    max_tokens: int,
    setup: JudgeSetup,
    as_json: bool,
) -> None:
    """Critique a response under sampled principles and revise it, N rounds (SL-CAI)."""
    from charter.judge import RevisionChain, critique_and_revise

    async def work(model: ChatModel, constitution: Constitution) -> RevisionChain:
        return await critique_and_revise(
            model,
            constitution,
            prompt,
            response,
            revisions=revisions,
            seed=setup.seed,
            max_tokens=max_tokens,
        )

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
@_judging_options
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
        return await rank_responses(
            model, constitution, prompt, list(responses), k=setup.k, seed=setup.seed
        )

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


@judge.command("eval")
@click.option(
    "--pairs",
    "pairs_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="JSONL of {prompt, a, b, preferred: a|b} human-labelled rows.",
)
@click.option("--cot", is_flag=True, help="Reason first, then answer.")
@_judging_options
@friendly_errors
def eval_judge(
    pairs_path: Path,
    cot: bool,
    setup: JudgeSetup,
    as_json: bool,
) -> None:
    """Measure a judge against human labels before trusting it with real work.

    Reports agreement, position consistency, P(prefers first slot), P(prefers longer),
    parse-failure rate and tokens used.
    """
    from charter.judge import EvalReport, evaluate, load_pairs

    pairs = load_pairs(pairs_path)

    async def work(model: ChatModel, constitution: Constitution) -> EvalReport:
        return await evaluate(model, constitution, pairs, k=setup.k, seed=setup.seed, cot=cot)

    report = setup.run(work)
    if as_json:
        echo_json(
            report.model_dump(mode="json", exclude={"outcomes"})
            | {"outcomes": [o.model_dump(mode="json") for o in report.outcomes]}
        )
        return

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1%}"

    click.echo(
        f"judge {report.judge} on {report.pairs} pairs (constitution {report.constitution_version})"
    )
    click.echo(
        f"  agreement             {pct(report.agreement)}  ({report.correct}/"
        f"{report.decided} decided; {report.ties} ties, {report.failures} failed)"
    )
    click.echo(f"  position consistency  {pct(report.position_consistency)}")
    click.echo(f"  P(prefers first slot) {pct(report.p_first)}")
    click.echo(f"  P(prefers longer)     {pct(report.p_longer)}")
    click.echo(f"  parse failure rate    {pct(report.parse_failure_rate)}")
    click.echo(f"  tokens                {report.total_tokens}")
