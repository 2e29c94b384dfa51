"""`charter pipeline RECIPE.toml`: the CLI skin over `charter.pipeline` (progress and summary)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import echo_json, friendly_errors, json_option, store_option


@click.command("pipeline")
@click.argument("recipe_path", metavar="RECIPE.toml", type=click.Path(path_type=Path))
@store_option
@click.option("--check", is_flag=True, help="Read and check the recipe, then stop.")
@json_option
@friendly_errors
def pipeline(recipe_path: Path, store_path: Path, check: bool, as_json: bool) -> None:
    """Run a recipe's stages in order: revise -> sft -> compare -> dpo (or reward -> ppo)
    -> eval -> report.

    Each stage takes the settings its own command takes (its table in the recipe) and the
    previous stages' outputs. The pipeline's progress is kept in --store under the recipe's
    content: running it again skips the finished stages and resumes the first unfinished one,
    reusing every stored model call and every trained model whose card matches.

    \b
    Examples:
      charter pipeline examples/recipes/offline.toml
      charter pipeline examples/recipes/cai.toml --store .charter/cai.db
    """
    from charter.pipeline import load_recipe, run_pipeline

    from .train import _configure_output

    recipe = load_recipe(recipe_path)
    if check:
        click.echo(f"{recipe_path}: {recipe.id}, stages {' -> '.join(recipe.pipeline.stages)}")
        return
    _configure_output(click.get_current_context())

    def say(line: str) -> None:
        click.echo(line, err=True)

    summary = run_pipeline(recipe, store=store_path, on_progress=say)
    if as_json:
        echo_json(summary)
        return
    click.echo(f"pipeline {summary.id} ({summary.recipe}) done in {summary.seconds:.1f} s")
    for stage in summary.stages:
        shown = ", ".join(
            f"{k} {v}" for k, v in stage.record.items() if k not in ("metrics", "images", "figures")
        )
        click.echo(f"  {stage.name:<8} {stage.status:<8} {stage.seconds:7.1f} s  {shown}")
        for key, value in (stage.record.get("figures") or {}).items():
            click.echo(f"           {key}: " + ("n/a" if value is None else f"{value:.1%}"))
