"""The steps every method shares: check inputs, build TRL args, train, save, write the card."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from charter.common.threads import CpuSample, ThreadSettings, torch_threads_for_block

from .card import card_facts, write_model_card
from .config import RunConfig
from .data import Kind, PreferenceData, load_preference_data
from .errors import TrainError
from .models import lora_config, resolve_model_spec
from .runtime import (
    Precision,
    TrainResult,
    build_trl_args,
    first_last,
    install_progress_logging,
    is_main_process,
    resolve_resume,
)

log = logging.getLogger("charter.trainer")

# A run config's fields that name a model, and the model's role in messages.
MODEL_FIELDS = {
    "model": "model",
    "ref_model": "reference model",
    "reward_model": "reward model",
    "value_model": "value model",
}


C = TypeVar("C", bound=RunConfig)


class Prepared(Generic[C]):
    """A run's checked inputs: data, TRL args, precision and the checkpoint to resume from.

    `config` has its model specs resolved to what transformers loads; `specs` holds the specs
    as given, for the card. `cpu_sample` starts once the checks pass: from it to the first step
    (loading the models) is the window that says how busy the other processes are.
    """

    def __init__(
        self,
        config: C,
        data: PreferenceData,
        args: Any,
        precision: Precision,
        resume_from: str | None,
        specs: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.specs = specs or {}
        self.data = data
        self.args = args
        self.precision = precision
        self.resume_from = resume_from
        self.cpu_sample = CpuSample.start()


def prepare(
    config: C,
    *,
    trl_cls: type[Any],
    kind: Kind,
    defaults: dict[str, Any] | None = None,
) -> Prepared[C]:
    """Everything that can fail cheaply, before a model is loaded: data, settings, output dir."""
    if not config.model:
        raise TrainError("no model given (--model, or `model` in the config file)")
    if not config.output_dir:
        raise TrainError("no output directory given (--out, or `output_dir` in the config file)")
    settings = dict(config.trl)
    resume = config.resume
    if not resume and settings.get("resume_from_checkpoint"):
        resume = str(settings["resume_from_checkpoint"])
    settings.pop("resume_from_checkpoint", None)
    settings.pop("output_dir", None)
    settings.pop("model_init_kwargs", None)  # charter loads the models (models.model_kwargs)
    data = load_preference_data(config.data, kind=kind, conversational=config.conversational)
    resume_from = resolve_resume(config.output_dir, resume, config.overwrite)
    args, precision = build_trl_args(trl_cls, config.output_dir, settings, defaults)
    specs = {
        name: str(getattr(config, name))
        for name in MODEL_FIELDS
        if isinstance(getattr(config, name, None), str) and getattr(config, name)
    }
    config = resolve_models(config)
    if is_main_process():
        log.info(
            "data: %d rows from %s (%s format), precision %s on %s",
            len(data.train),
            data.source,
            "conversational" if data.conversational else "standard",
            precision.name,
            precision.device,
        )
    return Prepared(config, data, args, precision, resume_from, specs)


def resolve_models(config: C) -> C:
    """`config` with each model spec (`smollm2`, `hf:PATH_OR_ID`, a path) resolved to a
    directory or Hub id, so every command reads a spec the same way."""
    resolved: dict[str, Any] = {
        name: resolve_model_spec(getattr(config, name), role)
        for name, role in MODEL_FIELDS.items()
        if isinstance(getattr(config, name, None), str) and getattr(config, name)
    }
    return dataclasses.replace(config, **resolved)


def peft_config(config: RunConfig, task_type: str) -> Any:
    if not config.use_peft:
        return None
    return lora_config(
        r=config.lora_r,
        alpha=config.lora_alpha,
        dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        task_type=task_type,
    )


def hyperparameters_of(prepared: Prepared[Any], names: list[str]) -> dict[str, Any]:
    """The key settings for the card: the named TRL fields, precision and LoRA."""
    args = prepared.args
    out: dict[str, Any] = {name: getattr(args, name, None) for name in names}
    out["precision"] = prepared.precision.name
    out["device"] = prepared.precision.device
    if prepared.config.use_peft:
        out.update(
            lora_r=prepared.config.lora_r,
            lora_alpha=prepared.config.lora_alpha,
            lora_dropout=prepared.config.lora_dropout,
            lora_target_modules=prepared.config.lora_target_modules,
        )
    return out


def run_and_save(
    trainer: Any,
    prepared: Prepared[Any],
    *,
    method: str,
    train_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Train (resuming if asked), then save the final model and tokenizer to the output dir."""
    install_progress_logging(trainer, method)
    if prepared.resume_from:
        log.info("%s: resuming from %s", method, prepared.resume_from)
    # TRL prints some progress (PPO's banner, sample tables) to stdout, which --json owns.
    with contextlib.redirect_stdout(sys.stderr), fair_threads(prepared):
        output = trainer.train(**(train_kwargs or {}))
    trainer.save_model(str(prepared.config.output_dir))
    return output


def fair_threads(prepared: Prepared[Any]) -> contextlib.AbstractContextManager[int]:
    """Torch on the cores other processes left free while this run loaded (or
    `CHARTER_TORCH_THREADS`) while the block runs: training beside another torch process with a
    thread per core oversubscribes the cores, and both slow down many times over."""
    settings = ThreadSettings.from_env()
    sample = prepared.cpu_sample
    fixed = settings.torch_threads is not None
    busy = sample.busy_elsewhere() if sample is not None and not fixed else None
    return torch_threads_for_block(settings, busy)


def train_to_card(
    trainer: Any,
    prepared: Prepared[Any],
    *,
    method: str,
    hyperparameters: list[str],
    logged: Sequence[tuple[str, str | None]] = (("loss", None),),
    measure: Callable[[], dict[str, Any]] | None = None,
    settings: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    resumable: bool = True,
    cleanup: Callable[[], None] | None = None,
) -> TrainResult:
    """The ending every method shares: train (resuming from `prepared.resume_from` when the
    trainer can), save, collect the metrics, write the card and build the result.

    `hyperparameters` names the TRL fields the card records, `settings` adds charter's own;
    `logged` names the logged series reported as first/last values (`(key, name)`, name
    defaulting to the key); `measure` returns the method's own metrics once training is done;
    `cleanup` runs after training whether or not it succeeded (closing a judge's client).
    """
    train_kwargs = {"resume_from_checkpoint": prepared.resume_from} if resumable else {}
    try:
        output = run_and_save(trainer, prepared, method=method, train_kwargs=train_kwargs)
    finally:
        if cleanup is not None:
            cleanup()
    history = trainer.state.log_history
    metrics: dict[str, Any] = dict(measure() if measure is not None else {})
    if output is not None:  # TRL 1.12's PPO returns nothing from train()
        metrics["train_loss"] = output.training_loss
        metrics["train_runtime_s"] = output.metrics.get("train_runtime")
    for key, name in logged:
        metrics.update(first_last(history, key, name))
    hyper = hyperparameters_of(prepared, hyperparameters) | (settings or {})
    return finish(trainer, prepared, method=method, hyper=hyper, metrics=metrics, extra=extra)


def finish(
    trainer: Any,
    prepared: Prepared[Any],
    *,
    method: str,
    hyper: dict[str, Any],
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> TrainResult:
    """Write the model card (main process only) and build the result."""
    out = Path(prepared.config.output_dir)
    epoch = getattr(trainer.state, "epoch", None)
    metrics = {**metrics, "epoch": round(float(epoch), 4) if epoch is not None else None}
    card: Path | None = None
    is_main = getattr(trainer, "is_world_process_zero", lambda: True)()
    if is_main:
        processing_class = getattr(trainer, "processing_class", None)
        if processing_class is not None and not (out / "tokenizer_config.json").exists():
            processing_class.save_pretrained(str(out))
        given = prepared.specs.get("model", prepared.config.model)
        if given != prepared.config.model:
            extra = {**(extra or {}), "base_model_path": prepared.config.model}
        facts = card_facts(
            method=method,
            base_model=given,
            data=prepared.data,
            hyperparameters=hyper,
            metrics=metrics,
            extra=extra,
        )
        card = write_model_card(out, facts)
    history = list(getattr(trainer.state, "log_history", []))
    return TrainResult(
        method=method,
        output_dir=str(out),
        global_step=int(trainer.state.global_step),
        metrics=metrics,
        precision=prepared.precision.name,
        resumed_from=prepared.resume_from,
        card=str(card) if card else None,
        history=history,
    )
