"""`charter principles ...`: list, lint and scaffold principle files."""

from __future__ import annotations

from pathlib import Path

import click

from .common import dir_option, echo_json, friendly_errors, json_option


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
