"""The top-level `charter` group. Subcommands live in one module per noun."""

from __future__ import annotations

import logging

import click

from charter import __version__

from .constitution import constitution
from .evaluate import eval_models
from .generate import export, generate, jobs
from .judge import judge
from .pipeline import pipeline
from .principles import principles
from .report import report
from .serve import serve
from .train import train
from .workbench import conflicts, diff, impact, rerun


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="charter")
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """charter: constitutional AI feedback.

    Write your values as principle files, freeze them into a versioned constitution,
    and apply it through an AI judge to make preference data for DPO and PPO.

    \b
    Start here:
      charter principles lint        check the principle files in ./principles
      charter constitution show      name, version, digest and principles
      charter constitution freeze    record this version in the store
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


cli.add_command(principles)
cli.add_command(constitution)
cli.add_command(judge)
cli.add_command(generate)
cli.add_command(export)
cli.add_command(jobs)
jobs.add_command(conflicts)
jobs.add_command(rerun)
jobs.add_command(diff)
constitution.add_command(impact)
cli.add_command(serve)
cli.add_command(eval_models)
cli.add_command(train)
cli.add_command(report)
cli.add_command(pipeline)


def main() -> None:
    cli()
