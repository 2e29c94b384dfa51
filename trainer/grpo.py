"""Direct RLAIF: `trl.GRPOTrainer` with the constitution judge itself as the reward.

The judge, its two ways to score a group and the run around the trainer are shared with RLOO
(`charter.trainer.online`); GRPO's advantage is a completion's reward minus its group's mean,
with an optional KL term (`beta`, 0 by default) in the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .online import JudgedRunConfig, OnlineMethod
from .runtime import TrainResult

GRPO = OnlineMethod(
    "grpo",
    "GRPOConfig",
    "GRPOTrainer",
    own=("loss_type", "scale_rewards"),
    logged=(("reward", None),),
)
HYPERPARAMETERS = GRPO.hyperparameters


@dataclass
class GRPORunConfig(JudgedRunConfig):
    """GRPO settings beyond `trl.GRPOConfig`: the judge's (`JudgedRunConfig`)."""


def trl_config_class() -> type[Any]:
    return GRPO.trl_config_class()


def train_grpo(config: GRPORunConfig) -> TrainResult:
    """Train the policy online with GRPO, the constitution judge scoring every completion."""
    return GRPO.train(config)
