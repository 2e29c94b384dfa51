"""Online RLAIF with REINFORCE leave-one-out: `trl.RLOOTrainer`, the constitution judge as reward.

The judge, its two ways to score a group and the run around the trainer are GRPO's
(`charter.trainer.online`); RLOO differs in how a reward becomes an advantage: each completion's
reward minus the mean of the other completions of its prompt, after a KL penalty to the
reference model (`beta`, 0.05 by default) is taken off the reward itself.
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
    "normalize_advantages",
    "num_iterations",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "seed",
]


@dataclass
class RLOORunConfig(JudgedRunConfig):
    """RLOO settings beyond `trl.RLOOConfig`: the judge's (`JudgedRunConfig`)."""


def trl_config_class() -> type[Any]:
    from trl import RLOOConfig  # type: ignore[attr-defined]

    return RLOOConfig


def train_rloo(config: RLOORunConfig) -> TrainResult:
    """Train the policy online with RLOO, the constitution judge scoring every completion."""
    from trl import RLOOConfig, RLOOTrainer  # type: ignore[attr-defined]

    return train_judged(
        config,
        method="rloo",
        trl_cls=RLOOConfig,
        trainer_cls=RLOOTrainer,
        hyperparameters=HYPERPARAMETERS,
        logged=[("reward", None), ("kl", None)],
    )
