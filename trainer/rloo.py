"""Online RLAIF with REINFORCE leave-one-out: `trl.RLOOTrainer`, the constitution judge as reward.

The judge, its two ways to score a group and the run around the trainer are GRPO's
(`charter.trainer.online`); RLOO differs in how a reward becomes an advantage: each completion's
reward minus the mean of the other completions of its prompt, after a KL penalty to the
reference model (`beta`, 0.05 by default) is taken off the reward itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .online import JudgedRunConfig, OnlineMethod
from .runtime import TrainResult

RLOO = OnlineMethod(
    "rloo",
    "RLOOConfig",
    "RLOOTrainer",
    own=("normalize_advantages", "num_iterations"),
    logged=(("reward", None), ("kl", None)),
)
HYPERPARAMETERS = RLOO.hyperparameters


@dataclass
class RLOORunConfig(JudgedRunConfig):
    """RLOO settings beyond `trl.RLOOConfig`: the judge's (`JudgedRunConfig`)."""


def trl_config_class() -> type[Any]:
    return RLOO.trl_config_class()


def train_rloo(config: RLOORunConfig) -> TrainResult:
    """Train the policy online with RLOO, the constitution judge scoring every completion."""
    return RLOO.train(config)
