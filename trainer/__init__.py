"""Training on charter's data with TRL: SFT, DPO, reward model, PPO, and GRPO and RLOO (the
judge as reward).

Everything TRL-specific lives in this package, so moving TRL versions is this package's work
alone. It runs on current TRL; PPO needs TRL 1.12.0, the last release with `PPOTrainer`
(`pip install 'charter[ppo]'`, see `charter.trainer.ppo`). One run config and one function per
method:

    from charter.trainer import DPORunConfig, train_dpo
    result = train_dpo(DPORunConfig(data="prefs.jsonl", model="base", output_dir="runs/dpo",
                                    trl={"beta": 0.1, "learning_rate": 5e-6}))

`trl` holds fields of the method's TRL config by their TRL names. Names are imported lazily:
importing this package does not import torch or TRL.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import TrainError

if TYPE_CHECKING:
    from .card import read_training_facts, write_model_card
    from .config import RunConfig, read_config_file, split_settings
    from .data import PreferenceData, Provenance, load_preference_data
    from .dpo import DPORunConfig, train_dpo
    from .grpo import GRPORunConfig, train_grpo
    from .online import ConstitutionReward, JudgedRunConfig
    from .ppo import PPORunConfig, train_ppo
    from .reward import RewardRunConfig, train_reward
    from .rloo import RLOORunConfig, train_rloo
    from .runtime import Precision, TrainResult, resolve_precision
    from .sft import SFTRunConfig, train_sft

_LAZY = {
    "RunConfig": "config",
    "read_config_file": "config",
    "split_settings": "config",
    "PreferenceData": "data",
    "Provenance": "data",
    "load_preference_data": "data",
    "DPORunConfig": "dpo",
    "train_dpo": "dpo",
    "RewardRunConfig": "reward",
    "train_reward": "reward",
    "PPORunConfig": "ppo",
    "train_ppo": "ppo",
    "GRPORunConfig": "grpo",
    "ConstitutionReward": "online",
    "JudgedRunConfig": "online",
    "train_grpo": "grpo",
    "RLOORunConfig": "rloo",
    "train_rloo": "rloo",
    "SFTRunConfig": "sft",
    "train_sft": "sft",
    "Precision": "runtime",
    "TrainResult": "runtime",
    "resolve_precision": "runtime",
    "read_training_facts": "card",
    "write_model_card": "card",
}

METHODS = ("sft", "dpo", "reward", "ppo", "grpo", "rloo")

__all__ = [
    "METHODS",
    "ConstitutionReward",
    "DPORunConfig",
    "GRPORunConfig",
    "JudgedRunConfig",
    "PPORunConfig",
    "Precision",
    "PreferenceData",
    "Provenance",
    "RLOORunConfig",
    "RewardRunConfig",
    "RunConfig",
    "SFTRunConfig",
    "TrainError",
    "TrainResult",
    "load_preference_data",
    "read_config_file",
    "read_training_facts",
    "resolve_precision",
    "split_settings",
    "train_dpo",
    "train_grpo",
    "train_ppo",
    "train_reward",
    "train_rloo",
    "train_sft",
    "write_model_card",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
