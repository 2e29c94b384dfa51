"""`charter principles ...`: list, lint and scaffold principle files."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from charter.judge.config import JudgeConfig
from charter.settings import JUDGE_BASE_URL_ENV

from .common import dir_option, echo_json, friendly_errors, json_option, store_option
from .fields import model_options
from .models import judge_options, open_model

if TYPE_CHECKING:
    from charter.judge.principle_tests import PrinciplesTestReport

TEST_FIELDS = {
    "protocol",
    "cot",
    "cot_clamp",
    "cot_max_tokens",
    "tie_margin",
    "parse_retries",
    "require_both_orders",
    "applies_threshold",
    "few_shot",
}
"""The `JudgeConfig` settings that change how one principle judges one example."""


@click.group()
def principles() -> None:
    """Edit and check the principle files of a constitution."""


@principles.command("list")
@dir_option
@json_option
@friendly_errors
def list_principles(directory: Path, as_json: bool) -> None:
    """List the principles in DIR (id, title, weight, tags, enabled)."""
    from charter.constitution import load_constitution

    constitution = load_constitution(directory)
    if as_json:
        echo_json([p.model_dump(mode="json") for p in constitution.principles])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "title", "weight", "tags", "enabled", box=None)
    for p in constitution.principles:
        table.add_row(
            p.id, p.title, f"{p.weight:g}", ", ".join(p.tags), "yes" if p.enabled else "no"
        )
    Console().print(table)


@principles.command("lint")
@dir_option
@json_option
@friendly_errors
def lint(directory: Path, as_json: bool) -> None:
    """Check every principle file in DIR; exit 1 if any error is found.

    Finds malformed TOML, files that are not UTF-8, missing or unknown fields, empty
    text, ids that don't match their file name, duplicate ids, comparison questions that
    don't ask to choose, and a constitution with every principle disabled.
    """
    from charter.constitution import inspect_directory

    inspection = inspect_directory(directory)
    if as_json:
        echo_json(
            {
                "ok": inspection.ok,
                "directory": str(directory),
                "digest": inspection.constitution.digest if inspection.constitution else None,
                "findings": [f.model_dump(mode="json") for f in inspection.findings],
            }
        )
    else:
        for finding in inspection.findings:
            click.echo(str(finding), err=True)
        if inspection.constitution is not None:
            c = inspection.constitution
            click.echo(
                f"ok: {len(c.principles)} principles ({len(c.enabled)} enabled) in {directory}, "
                f"digest {c.short_digest}"
            )
        else:
            click.echo(f"{len(inspection.errors)} error(s) in {directory}", err=True)
    if not inspection.ok:
        raise SystemExit(1)


@principles.command("new")
@click.argument("principle_id", metavar="ID")
@dir_option
@friendly_errors
def new(principle_id: str, directory: Path) -> None:
    """Create DIR/ID.toml from a template; fill it in, then run `charter principles lint`."""
    from charter.constitution import scaffold_principle

    path = scaffold_principle(directory, principle_id)
    click.echo(f"created {path}: fill in title, critique, revision and comparison")


@principles.command("test")
@click.argument("only", nargs=-1, metavar="[ID]...")
@click.option(
    "--max-fail",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Fraction of a principle's examples that may fail before the run fails (exit 1).",
)
@model_options(JudgeConfig, into="config", include=TEST_FIELDS)
@judge_options
@store_option
@dir_option
@json_option
@friendly_errors
def test(
    only: tuple[str, ...],
    max_fail: float,
    config: JudgeConfig,
    judge_spec: str,
    judge_base_url: str | None,
    timeout: float,
    concurrency: int,
    store_path: Path,
    directory: Path,
    as_json: bool,
) -> None:
    """Judge each principle's [[examples]] under that principle alone (or only the IDs given).

    Pairwise, both orders; pointwise, each response scored. An example passes when the judge
    decides for `better` and, where the example states `applies`, the principle's applies
    question gets that answer. Prints, per principle: examples passed / total, mean P(better),
    position consistency (pairwise) and applicability right / total. Exit 1 when any principle
    fails more than --max-fail of its examples. Calls are kept in the store: a re-run after
    editing one principle asks only that principle's examples again.
    """
    from charter.call_cache import CachedModel, store_secret
    from charter.constitution import load_constitution
    from charter.judge.principle_tests import run_principle_tests
    from charter.judge.prompts import KeyedNonces
    from charter.store import open_store

    constitution = load_constitution(directory)
    db = open_store(store_path)
    nonces = KeyedNonces(store_secret(db))
    judge = open_model(
        judge_spec, judge_base_url, timeout, concurrency, JUDGE_BASE_URL_ENV, option="--judge"
    )
    cached = CachedModel(judge, db)

    async def run() -> PrinciplesTestReport:
        try:
            return await run_principle_tests(
                cached, constitution, config, only=only, max_fail=max_fail, nonces=nonces
            )
        finally:
            await cached.aclose()

    try:
        report = asyncio.run(run())
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    report.calls_made, report.calls_reused = cached.stats.made, cached.stats.reused
    if as_json:
        echo_json(report)
    else:
        _print_test_report(report)
    if not report.ok:
        raise SystemExit(1)


def _print_test_report(report: PrinciplesTestReport) -> None:
    click.echo(f"judge {report.judge}, {report.protocol}; max fail {report.max_fail:g}")
    rows: list[tuple[Any, ...]] = []
    for p in report.principles:
        mean = "-" if p.mean_p_better is None else f"{p.mean_p_better:.2f}"
        consistency = "-" if p.position_consistency is None else f"{p.position_consistency:.2f}"
        applies = f"{p.applies_right}/{p.applies_total}" if p.applies_total else "-"
        rows.append(
            (
                p.principle_id,
                f"{p.passed}/{p.total}",
                mean,
                consistency,
                applies,
                "ok" if p.ok else "FAIL",
            )
        )
    header = ("principle", "passed", "P(better)", "consistent", "applies", "")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for p in report.principles:
        for e in p.examples:
            if e.passed:
                continue
            why = []
            if not e.decided_better:
                shown = "no verdict" if e.p_better is None else f"P(better) {e.p_better:.2f}"
                why.append(f"did not choose better ({shown})")
            if e.applies_right is False:
                got = "no answer" if e.applies_p is None else f"P(yes) {e.applies_p:.2f}"
                why.append(f"applies should be {str(e.applies_expected).lower()} ({got})")
            if e.error:
                why.append(e.error)
            click.echo(
                f"FAIL {p.principle_id} example {e.index} ({e.prompt[:60]!r}): {'; '.join(why)}",
                err=True,
            )
    failing = [p.principle_id for p in report.principles if not p.ok]
    click.echo(
        f"calls: {report.calls_made} made, {report.calls_reused} from the store; "
        + (f"failing: {', '.join(failing)}" if failing else "all principles pass")
    )
