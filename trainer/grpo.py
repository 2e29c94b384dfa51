"""Direct RLAIF: `trl.GRPOTrainer` with the constitution judge itself as the reward.

The judge, its two ways to score a group and the run around the trainer are shared with RLOO
(`charter.trainer.online`); GRPO's advantage is a completion's reward minus its group's mean,
with an optional KL term (`beta`, 0 by default) in the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .online import JudgedRunConfig, train_judged
from .runtime import TrainResult

HYPERPARAMETERS = [
    "learning_rate",
    "beta",
    "num_generations",
    "max_completion_length",
    "temperature",
    "loss_type",
    "scale_rewards",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "seed",
]


@dataclass
class GRPORunConfig(JudgedRunConfig):
    """GRPO settings beyond `trl.GRPOConfig`: the judge's (`JudgedRunConfig`)."""


def trl_config_class() -> type[Any]:
    from trl import GRPOConfig  # type: ignore[attr-defined]

    return GRPOConfig


def train_grpo(config: GRPORunConfig) -> TrainResult:
    """Train the policy online with GRPO, the constitution judge scoring every completion."""
    from trl import GRPOConfig, GRPOTrainer  # type: ignore[attr-defined]

    return train_judged(
        config,
        method="grpo",
        trl_cls=GRPOConfig,
        trainer_cls=GRPOTrainer,
        hyperparameters=HYPERPARAMETERS,
        logged=[("reward", None)],
    )
