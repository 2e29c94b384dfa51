"""DPO on charter's preference triples, on `trl.DPOTrainer`.

The reference model is loaded explicitly as a second copy of the base model (TRL's own copy of
an in-memory model is a known pitfall), except with LoRA, where the base model with its
adapter switched off is the reference and no second copy is needed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .common import peft_config, prepare, train_to_card
from .config import RunConfig
from .models import load_causal_lm, load_tokenizer, model_kwargs, require_causal_lm
from .runtime import TrainResult

log = logging.getLogger("charter.trainer")

HYPERPARAMETERS = [
    "beta",
    "loss_type",
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "precompute_ref_log_probs",
    "seed",
]


@dataclass
class DPORunConfig(RunConfig):
    """DPO settings beyond `trl.DPOConfig`: `ref_model` defaults to `model` itself."""

    ref_model: str | None = None


def trl_config_class() -> type[Any]:
    from trl import DPOConfig  # type: ignore[attr-defined]

    return DPOConfig


def train_dpo(config: DPORunConfig) -> TrainResult:
    """Train a policy with DPO on preference pairs; save it, its tokenizer and its card."""
    from trl import DPOConfig, DPOTrainer  # type: ignore[attr-defined]

    prepared = prepare(config, trl_cls=DPOConfig, kind="preference")
    config = prepared.config  # model specs resolved
    require_causal_lm(config.model)
    ref_spec = config.ref_model or config.model
    if config.ref_model:
        require_causal_lm(config.ref_model, "reference model")
    tokenizer = load_tokenizer(config.model, conversational=prepared.data.conversational)
    kwargs = model_kwargs(config.trl)
    model = load_causal_lm(config.model, kwargs)
    # With LoRA the base model, adapter off, is the reference, unless one is named.
    needs_ref = not config.use_peft or config.ref_model is not None
    ref_model = load_causal_lm(ref_spec, kwargs, "reference model") if needs_ref else None
    train_dataset = prepared.data.dataset(columns=("prompt", "chosen", "rejected"))
    eval_dataset = (
        prepared.data.dataset(prepared.data.test, columns=("prompt", "chosen", "rejected"))
        if prepared.data.test and prepared.args.eval_strategy != "no"
        else None
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=prepared.args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config(config, "CAUSAL_LM"),
    )
    return train_to_card(
        trainer,
        prepared,
        method="dpo",
        hyperparameters=HYPERPARAMETERS,
        settings={"ref_model": ref_spec},
        logged=[
            ("loss", None),
            ("rewards/margins", "reward_margin"),
            ("rewards/accuracies", "reward_accuracy"),
        ],
    )
