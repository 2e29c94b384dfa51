"""`charter pipeline RECIPE.toml`: the stages of an alignment recipe, run in order and resumable.

    from charter.pipeline import load_recipe, run_pipeline
    summary = run_pipeline(load_recipe("examples/recipes/cai.toml"))

A recipe names its stages (revise -> sft -> compare -> dpo, or reward + ppo -> eval -> report)
and gives each the settings its own command takes, checked by the same classes. Each stage's
output (a job id, a model directory, an eval batch) feeds the next; the pipeline's state is kept
in the store, so a re-run resumes at the first unfinished stage.
"""

from __future__ import annotations

from .recipe import STAGES, Recipe, RecipeError, load_recipe
from .run import PipelineSummary, run_pipeline

__all__ = ["STAGES", "PipelineSummary", "Recipe", "RecipeError", "load_recipe", "run_pipeline"]
