"""The constitution author's workbench: `charter jobs conflicts` (where a job's principles
pull its verdicts apart), `charter constitution impact` (what an edit would change, on a
sample), `charter jobs rerun` (the edited job, paying only for what the edit touched) and
`charter jobs diff` (two jobs' rows side by side)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from charter.jobs.impact_settings import ImpactSettings
from charter.judge.conflicts import ConflictSettings
from charter.settings import JUDGE_BASE_URL_ENV

from .common import dir_option, echo_json, friendly_errors, json_option, store_option
from .fields import model_options
from .generate import generate
from .models import base_url_option, open_model
from .progress import ProgressBar

F = TypeVar("F", bound=Callable[..., Any])


def listing_option(flag: str, dest: str, default: int, what: str) -> Callable[[F], F]:
    """How many of `what` a command prints at most (its `--json` lists all)."""
    return click.option(
        flag,
        dest,
        type=click.IntRange(min=0),
        default=default,
        show_default=True,
        help=f"List at most this many {what} (--json lists all).",
    )


if TYPE_CHECKING:
    from charter.jobs.conflicts import JobConflicts
    from charter.jobs.diff import JobDiff
    from charter.jobs.impact import ImpactReport


@click.command("conflicts")
@click.argument("job_id")
@model_options(ConflictSettings, into="settings")
@listing_option("--rows", "show_rows", 5, "conflicting comparisons per pair")
@store_option
@json_option
@friendly_errors
def conflicts(
    job_id: str, settings: ConflictSettings, show_rows: int, store_path: Path, as_json: bool
) -> None:
    """For each pair of principles that voted on the same comparisons of JOB_ID: how often
    both were confident and opposite, over how many shared comparisons, and where; and the
    principle most often confidently against the overall verdict."""
    from charter.jobs.conflicts import job_conflicts
    from charter.store import open_store

    found = job_conflicts(open_store(store_path, create=False), job_id, settings)
    if as_json:
        echo_json(
            {
                "job_id": found.job_id,
                "prompts_read": found.prompts_read,
                **found.report.model_dump(mode="json"),
            }
        )
        return
    _print(found, show_rows)


def _print(found: JobConflicts, show_rows: int) -> None:
    report = found.report
    click.echo(
        f"{found.job_id}: {report.comparisons} comparisons from {found.prompts_read} prompts; "
        f"confident means |p - 0.5| >= {report.settings.margin}"
    )
    if not report.pairs:
        click.echo(
            f"no two principles voted on {report.settings.min_shared} or more of the same "
            "comparisons (ask several principles per comparison, or lower --min-shared)"
        )
    for pair in report.pairs:
        rate = f"{pair.rate:.0%}" if pair.rate is not None else "n/a"
        click.echo(
            f"{pair.first} vs {pair.second}: {pair.conflicts} of {pair.shared} shared ({rate})"
        )
        for row in pair.rows[:show_rows]:
            where = f"row {row.row_key[:12]}" if row.row_key else "no row"
            click.echo(
                f"    prompt {row.position}: {pair.first} P(a) {row.p_first:.2f}, "
                f"{pair.second} P(a) {row.p_second:.2f}, verdict {row.winner} ({where})"
            )
        if len(pair.rows) > show_rows:
            click.echo(f"    ... {len(pair.rows) - show_rows} more (--rows N, or --json)")
    if report.most_dissenting:
        top = report.dissent[0]
        click.echo(
            f"most often against the overall verdict: {top.principle_id}, confidently on the "
            f"losing side in {top.against} of {top.voted} decided comparisons ({top.rate:.0%})"
        )


@click.command("impact")
@click.option("--job", "job_id", required=True, help="The job whose prompts to judge again.")
@dir_option
@model_options(ImpactSettings, into="settings")
@click.option("--price-in", type=click.FloatRange(min=0), help="USD per 1M prompt tokens.")
@click.option("--price-out", type=click.FloatRange(min=0), help="USD per 1M completion tokens.")
@listing_option("--flipped", "show_flipped", 10, "flipped comparisons side by side")
@base_url_option(
    "--judge-base-url",
    JUDGE_BASE_URL_ENV,
    "Base URL for the job's openai: judge (else $OPENAI_BASE_URL). Key: $OPENAI_API_KEY.",
)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0)
@click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True)
@store_option
@json_option
@friendly_errors
def impact(
    job_id: str,
    directory: Path,
    settings: ImpactSettings,
    price_in: float | None,
    price_out: float | None,
    show_flipped: int,
    judge_base_url: str | None,
    timeout: float,
    concurrency: int,
    store_path: Path,
    as_json: bool,
) -> None:
    """What the principles in DIR would change in JOB, before paying for a re-run.

    Judges a seeded sample of the job's prompts again under the edited principles (only the
    questions under an edited principle reach the model; the rest come from the store, and
    what is asked is kept for the re-run) and reports the winners that flip, how p_chosen
    moves, the rows entering or leaving the export at the job's minimum confidence, and the
    calls (and cost) applying the edit to the whole job takes.
    """
    from charter.constitution import load_constitution
    from charter.jobs.impact import preview_impact
    from charter.jobs.store import get_job
    from charter.jobs.summary import Prices
    from charter.store import open_store

    edited = load_constitution(directory)
    db = open_store(store_path, create=False)
    job = get_job(db, job_id)
    prices = (
        Prices(prompt=price_in or 0.0, completion=price_out or 0.0)
        if price_in is not None or price_out is not None
        else None
    )
    judge = open_model(
        job.spec.judge, judge_base_url, timeout, concurrency, JUDGE_BASE_URL_ENV, option="--judge"
    )

    async def go() -> ImpactReport:
        try:
            with ProgressBar("prompts", quiet=as_json) as bar:
                return await preview_impact(
                    db, job.id, edited, judge, settings, prices=prices, on_progress=bar
                )
        finally:
            await judge.aclose()

    report = asyncio.run(go())
    if as_json:
        echo_json(report)
        return
    _print_impact(report, show_flipped)


def _print_impact(r: ImpactReport, show_flipped: int) -> None:
    touched = ", ".join(r.touched) or "no principle"
    if r.defaults_changed:
        touched += " (and the defaults)"
    click.echo(
        f"{r.job_id} under constitution {r.edited_version} ({r.edited_digest[:12]}): edits "
        f"{touched}; {r.sampled_prompts} of {r.job_prompts} prompts judged again (seed {r.seed})"
    )
    rate = "n/a"
    if r.flip_rate is not None and r.flip_interval is not None:
        low, high = r.flip_interval
        rate = f"{r.flip_rate:.1%} (95% interval {low:.1%}-{high:.1%})"
    click.echo(
        f"  winners flipped: {r.flipped} of {r.comparisons} comparisons, {rate}; "
        f"{r.to_tie} became ties, {r.from_tie} stopped being ties"
    )
    d = r.delta_p_chosen
    if d.rows and d.mean is not None:
        click.echo(
            f"  change in p_chosen over {d.rows} rows: mean {d.mean:+.3f}, min {d.minimum:+.3f}, "
            f"10% {d.p10:+.3f}, median {d.median:+.3f}, 90% {d.p90:+.3f}, max {d.maximum:+.3f}"
        )
    click.echo(
        f"  export at p_chosen >= {r.min_confidence}: {r.exported_before} -> {r.exported_after} "
        f"rows ({r.entering} entering, {r.leaving} leaving)"
    )
    cost = "" if r.cost_usd is None else f" (${r.cost_usd:.4f})"
    rest_cost = "" if r.cost_rest_usd is None else f" (about ${r.cost_rest_usd:.4f})"
    how = "counted" if r.calls_exact else "extrapolated from the sample"
    click.echo(
        f"  calls: {r.calls_made} made now{cost} ({r.touched_in_sample} stored questions were "
        f"under the edited principles); the rest of the job takes {r.calls_for_rest} more "
        f"({how}){rest_cost}"
    )
    for row in r.flipped_rows[:show_flipped]:
        click.echo(f"  prompt {row.position}: {row.prompt[:70]!r}")
        for side, text in (("a", row.a), ("b", row.b)):
            mark = "won before" if row.before == side else "wins now" if row.after == side else ""
            click.echo(f"    {side}: {text[:70]!r} {mark}")
        click.echo(f"    p_a {_p(row.p_a_before)} -> {_p(row.p_a_after)}")
    if len(r.flipped_rows) > show_flipped:
        click.echo(f"  ... {len(r.flipped_rows) - show_flipped} more (--flipped N, or --json)")
    if r.touched:
        click.echo(f"  apply it: charter jobs rerun {r.job_id} --dir DIR")


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


#: `charter generate`'s options that `charter jobs rerun` takes and hands on.
_GENERATE_PASSED = (
    "judge_base_url", "policy_base_url", "timeout", "concurrency", "min_confidence",
    "max_attempts", "price_in", "price_out", "store_path", "as_json",
)  # fmt: skip


@click.command("rerun")
@click.argument("job_id")
@dir_option
@click.pass_context
@friendly_errors
def rerun(ctx: click.Context, /, job_id: str, directory: Path, **_: object) -> None:
    """Make JOB_ID again under the principles in DIR: the same prompts, candidates and
    settings, the new constitution. Only the questions under edited principles are asked
    (the rest come from the store); then the rows are set beside the old job's.

    Takes `charter generate`'s model options (--judge-base-url, --policy-base-url, --timeout,
    --concurrency, --json...)."""
    from charter.constitution import load_constitution
    from charter.jobs.diff import derive_job, diff_jobs
    from charter.store import open_store

    from .generate import generate

    store_path = ctx.params["store_path"]
    edited = load_constitution(directory)
    old, new, created = derive_job(open_store(store_path), job_id, edited)
    as_json = bool(ctx.params.get("as_json"))
    if not as_json:
        click.echo(f"{'made' if created else 'resuming'} {new.id} from {old.id}", err=True)
    passed = {k: v for k, v in ctx.params.items() if k in _GENERATE_PASSED}
    ctx.invoke(generate, resume_id=new.id, **passed)
    if not as_json:
        _print_diff(diff_jobs(open_store(store_path), old.id, new.id), 10)


rerun.params += [p for p in generate.params if p.name in _GENERATE_PASSED]


@click.command("diff")
@click.argument("before_id")
@click.argument("after_id")
@click.option(
    "--min-confidence",
    type=click.FloatRange(0.0, 1.0),
    help="The export threshold to compare at (default: the second job's own).",
)
@listing_option("--rows", "show_rows", 10, "changed rows side by side")
@store_option
@json_option
@friendly_errors
def diff(
    before_id: str,
    after_id: str,
    min_confidence: float | None,
    show_rows: int,
    store_path: Path,
    as_json: bool,
) -> None:
    """Set two jobs' rows side by side, prompt by prompt: the same pair kept, moved, flipped,
    gone or new, and the rows the export gains or loses (e.g. a job and its `rerun`)."""
    from charter.jobs.diff import diff_jobs
    from charter.store import open_store

    found = diff_jobs(open_store(store_path, create=False), before_id, after_id, min_confidence)
    if as_json:
        echo_json(found)
        return
    _print_diff(found, show_rows)


def _print_diff(d: JobDiff, show_rows: int) -> None:
    click.echo(
        f"{d.before} -> {d.after}: {d.rows_before} -> {d.rows_after} rows; {d.same} kept their "
        f"side ({d.changed} with a new p_chosen), {d.flipped} flipped, {d.gone} gone, {d.new} new"
    )
    click.echo(
        f"  export at p_chosen >= {d.min_confidence}: {d.exported_before} -> {d.exported_after} "
        f"({d.entering} entering, {d.leaving} leaving)"
    )
    shown = [c for c in d.rows if c.change != "changed"] + [
        c for c in d.rows if c.change == "changed"
    ]
    for c in shown[:show_rows]:
        click.echo(f"  {c.change} at prompt {c.position}: {c.prompt[:70]!r}")
        if c.chosen_before is not None:
            click.echo(
                f"    before: chosen {c.chosen_before[:50]!r} over {str(c.rejected_before)[:50]!r}"
                f" (p {_p(c.p_before)})"
            )
        if c.chosen_after is not None:
            click.echo(
                f"    after:  chosen {c.chosen_after[:50]!r} over {str(c.rejected_after)[:50]!r}"
                f" (p {_p(c.p_after)})"
            )
    if len(shown) > show_rows:
        click.echo(f"  ... {len(shown) - show_rows} more (--rows N, or --json)")
