"""Classic RLHF with a learned reward: PPO on TRL 1.12's `trl.experimental.ppo.PPOTrainer`.

TRL removed PPO in 1.13; charter runs everything else on current TRL, so PPO needs an
environment with TRL 1.12.0 (`pip install 'charter[ppo]'`). Without it, `charter train ppo` and
a recipe with a ppo stage are refused up front with `ppo_unavailable()`'s one line.

Four models: the policy (trained), a frozen reference copy of it (the KL penalty, `kl_coef`,
keeps the policy near it), the reward model from `charter train reward` (scores each sampled
response), and a value model (initialised from the reward model, as in TRL's recipe, and
trained alongside the policy). TRL feeds the policy's token ids to the reward model, so both
must share a tokenizer; that and the reward head are checked before anything is loaded.

Prompts come from any charter data (the `prompt` column); they are tokenized up front
(`input_ids`, left padding), as this trainer requires. TRL 1.12's PPO cannot resume from a
checkpoint, so `--resume` is refused here.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

from .card import read_training_facts
from .common import peft_config, prepare, train_to_card
from .config import RunConfig
from .errors import TrainError
from .models import (
    load_causal_lm,
    load_sequence_classifier,
    load_tokenizer,
    model_kwargs,
    require_causal_lm,
    require_reward_model,
    require_same_vocabulary,
)
from .runtime import TrainResult

log = logging.getLogger("charter.trainer")

HYPERPARAMETERS = [
    "learning_rate",
    "kl_coef",
    "kl_estimator",
    "num_ppo_epochs",
    "num_mini_batches",
    "total_episodes",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "response_length",
    "temperature",
    "stop_token",
    "cliprange",
    "vf_coef",
    "gamma",
    "lam",
    "seed",
]

# Charter's defaults where TRL's do not suit a chat policy or a terminal.
PPO_DEFAULTS: dict[str, Any] = {
    "stop_token": "eos",  # a reply ends at EOS, as it will when the model is used
    "num_sample_generations": 0,  # TRL's sample tables print to stdout
}


@dataclass
class PPORunConfig(RunConfig):
    """PPO settings beyond `trl.experimental.ppo.PPOConfig`.

    `reward_model`: a directory saved by `charter train reward` (one-output classifier).
    `value_model`: initial value model; defaults to the reward model.
    `max_prompt_length`: prompts longer than this many tokens are skipped.
    """

    reward_model: str = ""
    value_model: str | None = None
    max_prompt_length: int | None = 512


# The TRL release `charter[ppo]` pins (pyproject.toml): the last one with PPOTrainer.
PPO_TRL_VERSION = "1.12.0"


def ppo_unavailable() -> str | None:
    """Why PPO cannot run in this environment, in one line; None when it can."""
    import importlib.util
    from importlib.metadata import version

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # trl.experimental's import notice
            if importlib.util.find_spec("trl.experimental.ppo") is not None:
                return None
    except ImportError:
        pass
    return (
        f"PPO needs TRL {PPO_TRL_VERSION}, the last release with PPOTrainer (this environment "
        f"has TRL {version('trl')}): pip install 'charter[ppo]' into its own environment; or "
        "run PPO on OpenRLHF with charter's reward route (docs/rewards.md)"
    )


def trl_config_class() -> type[Any]:
    missing = ppo_unavailable()
    if missing:
        raise TrainError(missing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" notice: pinned on purpose
        from trl.experimental.ppo import PPOConfig
    config: type[Any] = PPOConfig
    return config


def encode_prompts(
    prompts: list[Any], tokenizer: Any, conversational: bool, max_length: int | None
) -> list[list[int]]:
    """Token ids per prompt (chat template with a generation prompt for message data)."""
    encoded: list[list[int]] = []
    for prompt in prompts:
        if conversational:
            ids = tokenizer.apply_chat_template(
                prompt, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        else:
            ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if max_length is None or len(ids) <= max_length:
            encoded.append(list(ids))
    return encoded


def train_ppo(config: PPORunConfig) -> TrainResult:
    """Optimise the policy against the reward model with PPO, KL-anchored to the reference."""
    from datasets import Dataset

    ppo_config = trl_config_class()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from trl.experimental.ppo import PPOTrainer

    if config.resume:
        raise TrainError("TRL 1.12's PPO trainer cannot resume from a checkpoint; start a new run")
    if not config.reward_model:
        raise TrainError("no reward model given (--reward-model DIR from `charter train reward`)")
    prepared = prepare(config, trl_cls=ppo_config, kind="prompt", defaults=PPO_DEFAULTS)
    config = prepared.config  # model specs resolved
    args = prepared.args
    require_causal_lm(config.model)
    require_reward_model(config.reward_model)
    value_spec = config.value_model or config.reward_model
    if config.value_model:
        require_reward_model(config.value_model, "value model")
    tokenizer = load_tokenizer(
        config.model, conversational=prepared.data.conversational, padding_side="left"
    )
    require_same_vocabulary(tokenizer, config.reward_model)

    ids = encode_prompts(
        prepared.data.prompts(), tokenizer, prepared.data.conversational, config.max_prompt_length
    )
    rollout = args.per_device_train_batch_size * args.gradient_accumulation_steps
    if len(ids) < rollout:
        raise TrainError(
            f"PPO needs at least one full rollout batch: {len(ids)} usable prompts (after "
            f"max_prompt_length={config.max_prompt_length}) < per_device_train_batch_size x "
            f"gradient_accumulation_steps = {rollout}"
        )
    if rollout % args.num_mini_batches:
        raise TrainError(
            f"per_device_train_batch_size x gradient_accumulation_steps ({rollout}) must be a "
            f"multiple of num_mini_batches ({args.num_mini_batches})"
        )
    train_dataset = Dataset.from_dict({"input_ids": ids})
    eval_dataset = Dataset.from_dict({"input_ids": ids[: args.per_device_eval_batch_size]})

    kwargs = model_kwargs(config.trl)
    policy = load_causal_lm(config.model, kwargs)
    ref_policy = None if config.use_peft else load_causal_lm(config.model, kwargs, "reference")
    reward_model = load_sequence_classifier(config.reward_model, kwargs, "reward model")
    value_model = load_sequence_classifier(value_spec, kwargs, "value model")
    for m in (reward_model, value_model):
        m.config.pad_token_id = tokenizer.pad_token_id
    trainer = PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        train_dataset=train_dataset,
        value_model=value_model,
        eval_dataset=eval_dataset,
        peft_config=peft_config(config, "CAUSAL_LM"),
    )
    return train_to_card(
        trainer,
        prepared,
        method="ppo",
        hyperparameters=HYPERPARAMETERS,
        settings={"value_model": value_spec},
        resumable=False,
        measure=lambda: {
            "updates": trainer.state.global_step,
            "episodes": getattr(trainer.state, "episode", None),
            "prompts": len(ids),
        },
        logged=[
            ("objective/scores", "score"),
            ("objective/kl", "kl"),
            ("objective/rlhf_reward", "rlhf_reward"),
        ],
        extra={
            "reward_model": config.reward_model,
            "reward_model_data": (read_training_facts(config.reward_model) or {}).get("data"),
        },
    )
