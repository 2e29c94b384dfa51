"""Module-level reward functions, configured by keyword arguments and the environment.

verl names a file and a function (`custom_reward_function.path` / `.name`) and passes
`custom_reward_function.reward_kwargs` as keyword arguments: point it at this file and one of
`compute_score`, `compute_score_async` or `compute_score_batch`. TRL takes
`constitution_reward` (configured from the environment only: TRL passes dataset columns as
keyword arguments).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from charter.rewards.api import VerlScore, rewards_for


def compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: Any = None,
    **kwargs: Any,
) -> VerlScore:
    """verl's reward function: the constitution's reward for one response."""
    return rewards_for(kwargs).compute_score(data_source, solution_str, ground_truth, extra_info)


async def compute_score_async(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: Any = None,
    **kwargs: Any,
) -> VerlScore:
    """verl's reward function for its async reward loop (awaited there)."""
    rewards = rewards_for(kwargs)
    return await rewards.compute_score_async(data_source, solution_str, ground_truth, extra_info)


def compute_score_batch(
    data_sources: Sequence[Any],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Any] | None = None,
    **kwargs: Any,
) -> list[VerlScore]:
    """verl's batch reward function (`reward_manager=batch`): one request per batch."""
    return rewards_for(kwargs).compute_score_batch(
        data_sources, solution_strs, ground_truths, extra_infos
    )


def constitution_reward(
    prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
) -> list[float | None]:
    """TRL's reward function form, from the environment's settings."""
    return rewards_for({}).trl_reward_func()(prompts, completions, **kwargs)
