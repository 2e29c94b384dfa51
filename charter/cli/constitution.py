"""`charter constitution ...`: show, freeze, log and diff versions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .common import dir_option, echo_json, friendly_errors, json_option, store_option
from .lazy import LazyGroup

if TYPE_CHECKING:
    from charter.constitution import ConstitutionDiff


@click.group(cls=LazyGroup, lazy_subcommands={"impact": "charter.cli.workbench:impact"})
def constitution() -> None:
    """Version the constitution: show it, freeze it into the store, compare versions."""


@constitution.command("show")
@dir_option
@json_option
@friendly_errors
def show(directory: Path, as_json: bool) -> None:
    """Show the constitution in DIR: name, version, digest and principles."""
    from charter.constitution import load_constitution

    c = load_constitution(directory)
    if as_json:
        echo_json(
            {
                "name": c.name,
                "version": c.version,
                "digest": c.digest,
                "description": c.description,
                "defaults": c.defaults.model_dump(),
                "principles": [
                    {**p.model_dump(mode="json"), "digest": p.digest} for p in c.principles
                ],
            }
        )
        return
    click.echo(f"{c.name} {c.version}")
    click.echo(f"digest     {c.digest}")
    if c.description:
        click.echo(c.description)
    click.echo(
        f"principles {len(c.principles)} ({len(c.enabled)} enabled); "
        + ", ".join(f"{k}={v}" for k, v in c.defaults.model_dump().items())
    )
    click.echo("")
    for p in c.principles:
        state = "" if p.enabled else "  (disabled)"
        click.echo(f"  {p.id:<24} {p.title}{state}")
        click.echo(f"  {'':<24} {p.comparison}")


@constitution.command("freeze")
@dir_option
@store_option
@click.option("-m", "--message", default="", help="Why this version exists.")
@json_option
@friendly_errors
def freeze(directory: Path, store_path: Path, message: str, as_json: bool) -> None:
    """Freeze the constitution in DIR into the store as an immutable version.

    Freezing unchanged content again does nothing. A version label already used by
    different content (frozen, or recorded by a job or eval run) is refused with the next
    free label to set as `version` in constitution.toml.
    """
    from charter.constitution import load_constitution
    from charter.store import open_store
    from charter.versions import freeze as freeze_version

    c = load_constitution(directory)
    result = freeze_version(open_store(store_path), c, message)
    if as_json:
        echo_json({"created": result.created, **_version_summary(result.frozen)})
        return
    frozen = result.frozen
    if result.created:
        click.echo(f"froze {frozen.name} {frozen.version} ({frozen.digest[:12]})")
    else:
        click.echo(
            f"unchanged: already frozen as {frozen.version} ({frozen.digest[:12]}) "
            f"on {frozen.frozen_at:%Y-%m-%d %H:%M}"
        )


@constitution.command("log")
@store_option
@json_option
@friendly_errors
def log(store_path: Path, as_json: bool) -> None:
    """List frozen versions, newest first."""
    from charter.constitution import history
    from charter.store import open_store

    versions = history(open_store(store_path, create=False))
    if as_json:
        echo_json([_version_summary(v) for v in versions])
        return
    if not versions:
        click.echo(f"no frozen versions in {store_path} (run `charter constitution freeze`)")
        return
    for v in versions:
        note = f"  {v.message}" if v.message else ""
        principles = len(v.constitution.principles)
        click.echo(
            f"{v.digest[:12]}  {v.version:<10} {v.frozen_at:%Y-%m-%d %H:%M:%S}  "
            f"{principles} principles{note}"
        )


@constitution.command("diff")
@click.argument("a")
@click.argument("b")
@store_option
@json_option
@friendly_errors
def diff(a: str, b: str, store_path: Path, as_json: bool) -> None:
    """Show what changed from A to B.

    A and B are each a frozen version label, a digest prefix (4+ hex digits), or a
    principles directory.
    """
    from charter.constitution import diff_constitutions, resolve
    from charter.store import open_store

    db = open_store(store_path, create=False)
    result = diff_constitutions(resolve(db, a), resolve(db, b))
    if as_json:
        echo_json({**result.model_dump(mode="json"), "same_meaning": result.same_meaning})
        return
    _print_diff(result)


def _version_summary(v: object) -> dict[str, object]:
    from charter.constitution import FrozenVersion

    assert isinstance(v, FrozenVersion)
    return {
        "digest": v.digest,
        "version": v.version,
        "name": v.name,
        "message": v.message,
        "frozen_at": v.frozen_at.isoformat(),
        "principles": [p.id for p in v.constitution.principles],
    }


def _print_diff(d: ConstitutionDiff) -> None:
    click.echo(f"{d.a_version} ({d.a_digest[:12]}) -> {d.b_version} ({d.b_digest[:12]})")
    if d.empty:
        click.echo("no differences")
        return
    for change in d.metadata:
        click.echo(f"~ {change.field}: {change.before!r} -> {change.after!r}")
    for pid in d.added:
        click.secho(f"+ {pid}", fg="green")
    for pid in d.removed:
        click.secho(f"- {pid}", fg="red")
    for pc in d.changed:
        click.secho(f"~ {pc.id}", fg="yellow")
        for fc in pc.changes:
            if fc.diff:
                click.echo(f"    {fc.field}:")
                for line in fc.diff.splitlines():
                    click.echo(f"      {line}")
            else:
                click.echo(f"    {fc.field}: {fc.before!r} -> {fc.after!r}")
    if d.same_meaning:
        click.echo("(same digest: no change of meaning)")
