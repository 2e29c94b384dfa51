"""The constitution as a reward for RL frameworks: verl's `compute_score` forms and TRL's
`reward_funcs` form, talking to a `charter serve` URL or to a judge in this process.

verl (`custom_reward_function.path` = this package's `verl.py`, or import these):

    compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs) -> dict
    async compute_score_async(...)          # verl's async reward loop awaits it
    compute_score_batch(data_sources=, solution_strs=, ground_truths=, extra_infos=, **kwargs)

Each reads the prompt from `extra_info["prompt"]` and its settings from `kwargs` (verl's
`reward_kwargs`) and the environment: `CHARTER_REWARD_URL` + `CHARTER_API_TOKEN` for a
service, else `CHARTER_JUDGE` / `CHARTER_PRINCIPLES` in-process (see `RewardSettings`).

TRL: `GRPOTrainer(reward_funcs=[constitution_reward], ...)`, or
`ConstitutionRewards(url=..., token=...).trl_reward_func()`.
"""

from __future__ import annotations

from .api import ConstitutionRewards, rewards_for
from .settings import RewardSettings, RewardSetupError
from .verl import compute_score, compute_score_async, compute_score_batch, constitution_reward

__all__ = [
    "ConstitutionRewards",
    "RewardSettings",
    "RewardSetupError",
    "compute_score",
    "compute_score_async",
    "compute_score_batch",
    "constitution_reward",
    "rewards_for",
]
