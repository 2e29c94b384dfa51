"""The top-level `charter` group. Subcommands live in one module per noun."""

from __future__ import annotations

import logging

import click

from charter import __version__

from .lazy import LazyGroup

# Each subcommand's module is imported only when that subcommand runs (or for `--help`).
SUBCOMMANDS = {
    "constitution": "charter.cli.constitution:constitution",
    "eval": "charter.cli.evaluate:eval_models",
    "export": "charter.cli.generate:export",
    "generate": "charter.cli.generate:generate",
    "jobs": "charter.cli.generate:jobs",
    "judge": "charter.cli.judge:judge",
    "pipeline": "charter.cli.pipeline:pipeline",
    "principles": "charter.cli.principles:principles",
    "report": "charter.cli.report:report",
    "serve": "charter.cli.serve:serve",
    "train": "charter.cli.train:train",
}


@click.group(
    cls=LazyGroup,
    lazy_subcommands=SUBCOMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
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


def main() -> None:
    cli()
