"""A reward model from charter's preferences, on `trl.RewardTrainer`.

The judge's soft label enters through TRL's `margin` column: the loss becomes
`-log σ(r_chosen - r_rejected - margin)`, so a pair the judge was sure of (charter's
`margin = p_chosen - 0.5`, up to 0.5) must be separated by more than a near-tie. Rows without
a margin (critique -> revision rows) get 0, the plain Bradley–Terry loss.

Pairwise accuracy (the share of pairs whose chosen response scores higher) is measured after
training on the held-out split (the data's own test split, else a deterministic split by prompt
hash) and on the training pairs, with the trained model itself rather than logged batch means.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .common import peft_config, prepare, train_to_card
from .config import RunConfig
from .data import split_holdout
from .errors import TrainError
from .models import (
    architectures,
    inspect_model,
    load_sequence_classifier,
    load_tokenizer,
    model_kwargs,
)
from .runtime import TrainResult

log = logging.getLogger("charter.trainer")

HYPERPARAMETERS = [
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "center_rewards_coefficient",
    "seed",
]


@dataclass
class RewardRunConfig(RunConfig):
    """Reward-model settings beyond `trl.RewardConfig`.

    `eval_fraction`: share of prompts held out when the data has no test split.
    `use_margin`: train with the judge's margins (when the data has them).
    """

    eval_fraction: float = 0.1
    use_margin: bool = True


def trl_config_class() -> type[Any]:
    from trl import RewardConfig  # type: ignore[attr-defined]

    return RewardConfig


def _check_base(spec: str) -> None:
    config = inspect_model(spec)
    is_classifier = any(a.endswith("ForSequenceClassification") for a in architectures(config))
    if is_classifier and getattr(config, "num_labels", 1) != 1:
        raise TrainError(
            f"model {spec} is a classifier with {config.num_labels} outputs; a reward model needs "
            "one: start from the causal LM (charter adds the reward head)"
        )


def train_reward(config: RewardRunConfig) -> TrainResult:
    """Train a one-output reward model on preference pairs and report its pairwise accuracy."""
    from trl import RewardConfig, RewardTrainer  # type: ignore[attr-defined]

    prepared = prepare(config, trl_cls=RewardConfig, kind="preference")
    config = prepared.config  # model specs resolved
    _check_base(config.model)
    tokenizer = load_tokenizer(config.model, conversational=prepared.data.conversational)
    data = prepared.data
    train_rows, held_rows = data.train, data.test
    if held_rows is None:
        try:
            train_rows, held_rows = split_holdout(data.train, config.eval_fraction)
        except TrainError as exc:
            log.warning("no held-out split (%s); accuracy is reported on training pairs only", exc)
            held_rows = []
    use_margin = config.use_margin and any(r.get("margin") is not None for r in data.train)
    columns = ["prompt", "chosen", "rejected"] + (["margin"] if use_margin else [])

    def rows_for(rows: list[dict[str, Any]]) -> Any:
        if use_margin:
            rows = [{**r, "margin": float(r.get("margin") or 0.0)} for r in rows]
        return data.dataset(rows, columns=columns)

    train_dataset = rows_for(train_rows)
    held_dataset = rows_for(held_rows) if held_rows else None
    model = load_sequence_classifier(config.model, model_kwargs(config.trl))
    model.config.pad_token_id = tokenizer.pad_token_id
    trainer = RewardTrainer(
        model=model,
        args=prepared.args,
        train_dataset=train_dataset,
        eval_dataset=held_dataset if prepared.args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=peft_config(config, "SEQ_CLS"),
    )

    def measure() -> dict[str, Any]:
        train_acc, train_n = pairwise_accuracy(trainer, train_dataset, "train pairs")
        held_acc, held_n = (
            pairwise_accuracy(trainer, held_dataset, "held-out pairs")
            if held_dataset
            else (None, 0)
        )
        log.info(
            "reward model: pairwise accuracy %s on %d held-out pairs, %.3f on %d training pairs",
            "n/a" if held_acc is None else f"{held_acc:.3f}",
            held_n,
            train_acc,
            train_n,
        )
        return {
            "heldout_accuracy": held_acc,
            "heldout_pairs": held_n,
            "train_accuracy": train_acc,
            "train_pairs": train_n,
            "used_margin": use_margin,
        }

    return train_to_card(
        trainer,
        prepared,
        method="reward",
        hyperparameters=HYPERPARAMETERS,
        settings={"eval_fraction": config.eval_fraction},
        measure=measure,
    )


def pairwise_accuracy(
    trainer: Any, dataset: Any, name: str, batch_size: int = 16
) -> tuple[float, int]:
    """Share of pairs whose chosen response the trained model scores strictly higher."""
    import torch

    prepared = trainer._prepare_dataset(dataset, trainer.processing_class, trainer.args, name)
    rows = [dict(r) for r in prepared]
    if not rows:
        return 0.0, 0
    model = trainer.model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    wins = 0
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                batch = [
                    {"chosen_ids": r["chosen_ids"], "rejected_ids": r["rejected_ids"]}
                    for r in rows[start : start + batch_size]
                ]
                inputs = trainer.data_collator(batch)
                logits = model(
                    input_ids=inputs["input_ids"].to(device),
                    attention_mask=inputs["attention_mask"].to(device),
                    use_cache=False,
                ).logits.squeeze(-1)
                chosen, rejected = torch.chunk(logits, chunks=2)
                wins += int((chosen > rejected).sum().item())
    finally:
        model.train(was_training)
    return wins / len(rows), len(rows)
