"""`charter jobs conflicts`: where a job's principles pull its verdicts in opposite directions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from charter.judge.conflicts import ConflictSettings

from .common import echo_json, friendly_errors, json_option, store_option
from .fields import model_options

if TYPE_CHECKING:
    from charter.conflicts import JobConflicts


@click.command("conflicts")
@click.argument("job_id")
@model_options(ConflictSettings, into="settings")
@click.option(
    "--rows",
    "show_rows",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="List at most this many conflicting comparisons per pair (--json lists all).",
)
@store_option
@json_option
@friendly_errors
def conflicts(
    job_id: str, settings: ConflictSettings, show_rows: int, store_path: Path, as_json: bool
) -> None:
    """For each pair of principles that voted on the same comparisons of JOB_ID: how often
    both were confident and opposite, over how many shared comparisons, and where; and the
    principle most often confidently against the overall verdict."""
    from charter.conflicts import job_conflicts
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
