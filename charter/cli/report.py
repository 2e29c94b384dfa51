"""`charter report`: an HTML page (and PNG charts) from the evaluation runs in the store."""

from __future__ import annotations

from pathlib import Path

import click

from .common import echo_json, friendly_errors, json_option, store_option


@click.command("report")
@store_option
@click.option(
    "--batch",
    "batches",
    multiple=True,
    help="Only the runs of this `charter eval --suite` call (its batch id); repeatable. "
    "Default: the newest run of each suite and model in the store.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("charter-report"),
    show_default=True,
    help="Directory for report.html and the PNG charts beside it.",
)
@json_option
@friendly_errors
def report(store_path: Path, batches: tuple[str, ...], out_dir: Path, as_json: bool) -> None:
    """Compare models side by side from stored evaluation runs, in one self-contained page.

    Attack success rate by jailbreak template and by principle, over-refusal by category,
    and win rates with intervals, overall and per principle. The page embeds its charts, so
    it opens offline; the same charts are written as PNGs beside it.
    """
    from charter.evals.report import render_report
    from charter.evals.runs import load_runs
    from charter.store import open_store

    if not store_path.exists():
        raise click.ClickException(f"{store_path}: no store here; run `charter eval --suite` first")
    runs = load_runs(open_store(store_path, create=False), batches=batches)
    if not runs:
        which = f" of batch {', '.join(batches)}" if batches else ""
        raise click.ClickException(
            f"{store_path} holds no evaluation runs{which}; run `charter eval --suite` first"
        )
    files = render_report(runs, out_dir)
    if as_json:
        echo_json({"html": files.html, "images": files.images, "runs": files.runs})
    else:
        click.echo(f"wrote {files.html} ({files.runs} runs, {len(files.images)} charts)")
