"""Supervised fine-tuning on prompt -> completion rows, on `trl.SFTTrainer`.

Step 1 of the RLHF recipes and the first stage of Constitutional AI (SL-CAI): imitate the
revisions the judge accepted (or a compare job's winners). Rows are TRL's prompt-completion
format, so the loss falls on the completion alone (TRL's `completion_only_loss`).
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
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "packing",
    "completion_only_loss",
    "seed",
]


@dataclass
class SFTRunConfig(RunConfig):
    """SFT needs nothing beyond the shared settings and `trl.SFTConfig`'s own fields."""


def trl_config_class() -> type[Any]:
    from trl import SFTConfig  # type: ignore[attr-defined]

    return SFTConfig


def train_sft(config: SFTRunConfig) -> TrainResult:
    """Fine-tune a causal LM on prompt -> completion rows; save it, its tokenizer and its card."""
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    prepared = prepare(config, trl_cls=SFTConfig, kind="sft")
    config = prepared.config
    require_causal_lm(config.model)
    tokenizer = load_tokenizer(config.model, conversational=prepared.data.conversational)
    model = load_causal_lm(config.model, model_kwargs(config.trl))
    columns = ("prompt", "completion")
    eval_dataset = (
        prepared.data.dataset(prepared.data.test, columns=columns)
        if prepared.data.test and prepared.args.eval_strategy != "no"
        else None
    )
    trainer = SFTTrainer(
        model=model,
        args=prepared.args,
        train_dataset=prepared.data.dataset(columns=columns),
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config(config, "CAUSAL_LM"),
    )
    return train_to_card(
        trainer,
        prepared,
        method="sft",
        hyperparameters=HYPERPARAMETERS,
        logged=[("loss", None), ("mean_token_accuracy", "token_accuracy")],
    )
