"""What every run does around the TRL trainer: precision, TRL args, checkpoints, logging, result.

Precision is decided here and only here: bf16 where the device supports it, fp32 otherwise,
and never bf16 or fp16 on the CPU (TRL configs default to `bf16=True`, which on a CPU is slow
at best). Progress goes through `logging` (stderr), never stdout, so `--json` output stays clean.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TrainError

log = logging.getLogger("charter.trainer")

CHECKPOINT_RE = re.compile(r"^checkpoint-\d+$")
MODEL_FILES = ("config.json", "adapter_config.json", "model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class Precision:
    """The precision a run trains in, and why."""

    device: str
    bf16: bool
    fp16: bool
    use_cpu: bool

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"


def is_main_process() -> bool:
    """Rank 0 of a distributed launch (accelerate/torchrun set RANK), or a plain single process."""
    return os.environ.get("RANK", "0") == "0"


def leave_process_group() -> None:
    """End a distributed launch's process cleanly: wait for every rank, then destroy the group.

    For a process about to exit (the CLI): left to interpreter shutdown, the gloo group's
    threads can outlive it and abort a rank ("terminate called without an active exception")
    after training succeeded, failing the whole launch. A no-op without a process group.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def detect_device(use_cpu: bool | None = None) -> str:
    """'cuda', 'xpu', 'mps' or 'cpu': where `Trainer` will put the model."""
    import torch

    if use_cpu:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return "xpu"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_precision(
    bf16: bool | None = None, fp16: bool | None = None, use_cpu: bool | None = None
) -> Precision:
    """bf16 when asked for or (unasked) when the device supports it; never on the CPU.

    An explicit `bf16 = true` or `fp16 = true` that the device cannot do is an error, not a
    silent downgrade: the user asked for it.
    """
    import torch

    device = detect_device(use_cpu)
    if device == "cpu":
        for name, value in (("bf16", bf16), ("fp16", fp16)):
            if value:
                raise TrainError(
                    f"{name} was asked for, but training runs on the CPU (no GPU found); charter "
                    f"trains in fp32 there. Remove {name} or set it false."
                )
        return Precision(device="cpu", bf16=False, fp16=False, use_cpu=True)
    if bf16 and fp16:
        raise TrainError("bf16 and fp16 are both set; choose one")
    supported = bool(torch.cuda.is_bf16_supported()) if device == "cuda" else device == "xpu"
    if bf16 and not supported:
        raise TrainError(f"bf16 was asked for, but this {device} device does not support it")
    use_bf16 = bool(bf16) if bf16 is not None else (supported and not fp16)
    return Precision(device=device, bf16=use_bf16, fp16=bool(fp16), use_cpu=False)


def build_trl_args(
    trl_cls: type[Any],
    output_dir: str | Path,
    settings: dict[str, Any],
    defaults: dict[str, Any] | None = None,
) -> tuple[Any, Precision]:
    """The TRL config: charter's defaults, then the user's settings, with precision resolved."""
    settings = dict(settings)
    precision = resolve_precision(
        settings.pop("bf16", None), settings.pop("fp16", None), settings.pop("use_cpu", None)
    )
    kwargs: dict[str, Any] = {**(defaults or {}), **settings}
    kwargs.update(
        output_dir=str(output_dir),
        bf16=precision.bf16,
        fp16=precision.fp16,
        use_cpu=precision.use_cpu,
    )
    try:
        args = trl_cls(**kwargs)
    except (TypeError, ValueError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainError(f"bad trl.{trl_cls.__name__} setting: {message}") from None
    return args, precision


def resolve_resume(output_dir: str | Path, resume: bool | str, overwrite: bool) -> str | None:
    """The checkpoint to resume from, or None for a fresh run into an output dir that is free.

    `resume=True` takes the newest `checkpoint-N` in `output_dir`; a string names one. A fresh
    run refuses an output dir that already holds a model or checkpoints unless `overwrite`.
    """
    out = Path(output_dir)
    if resume is True or resume == "last":
        last = latest_checkpoint(out)
        if last is None:
            raise TrainError(f"--resume: no checkpoint-N directory in {out} to resume from")
        return str(last)
    if isinstance(resume, str) and resume:
        path = Path(resume)
        if not path.is_dir():
            raise TrainError(f"--resume-from-checkpoint: {path} is not a directory")
        return str(path)
    if out.is_dir() and not overwrite:
        taken = [
            p.name for p in out.iterdir() if CHECKPOINT_RE.match(p.name) or p.name in MODEL_FILES
        ]
        if taken:
            shown = ", ".join(sorted(taken)[:3])
            raise TrainError(
                f"{out} already holds a trained model or checkpoints ({shown}); pass --resume to "
                "continue from the last checkpoint, or --overwrite, or another --out"
            )
    return None


def latest_checkpoint(out: Path) -> Path | None:
    if not out.is_dir():
        return None
    found = [p for p in out.iterdir() if p.is_dir() and CHECKPOINT_RE.match(p.name)]
    return max(found, key=lambda p: int(p.name.split("-")[1])) if found else None


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def progress_callback(method: str) -> Any:
    """A `TrainerCallback` that reports progress and metrics through `logging` (rank 0 only)."""
    from transformers import TrainerCallback

    class LogProgress(TrainerCallback):  # type: ignore[misc]
        """Replaces the tqdm/print callbacks: they write to stdout, which `--json` owns."""

        def __init__(self) -> None:
            self.started = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            import torch

            self.started = time.perf_counter()
            if state.is_world_process_zero:
                log.info(
                    "%s: training for %s steps on %d torch thread(s)",
                    method,
                    state.max_steps,
                    torch.get_num_threads(),
                )

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if not state.is_world_process_zero or not logs:
                return
            shown = " ".join(f"{k}={_format(v)}" for k, v in logs.items() if k != "total_flos")
            log.info("%s step %s/%s: %s", method, state.global_step, state.max_steps, shown)

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                log.info(
                    "%s: checkpoint at step %s in %s", method, state.global_step, args.output_dir
                )

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                took = time.perf_counter() - self.started
                log.info("%s: finished %s steps in %.1f s", method, state.global_step, took)

    return LogProgress()


def install_progress_logging(trainer: Any, method: str) -> None:
    """Swap the trainer's stdout progress bar / printer for the logging callback."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(progress_callback(method))


@dataclass
class TrainResult:
    """What a finished run reports: where the model is, how far it got, and its metrics."""

    method: str
    output_dir: str
    global_step: int
    metrics: dict[str, float | int | None]
    precision: str
    resumed_from: str | None = None
    card: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-ready, without the step-by-step history."""
        return {
            "method": self.method,
            "output_dir": self.output_dir,
            "global_step": self.global_step,
            "precision": self.precision,
            "resumed_from": self.resumed_from,
            "card": self.card,
            "metrics": self.metrics,
        }


def logged_series(history: list[dict[str, Any]], key: str) -> list[float]:
    """Every logged value of `key` in a trainer's `log_history`, in order."""
    return [float(entry[key]) for entry in history if isinstance(entry.get(key), int | float)]


def first_last(
    history: list[dict[str, Any]], key: str, name: str | None = None
) -> dict[str, float]:
    """`{name_first, name_last}` for a logged metric, when it was logged."""
    series = logged_series(history, key)
    name = name or key.replace("/", "_")
    return {f"{name}_first": series[0], f"{name}_last": series[-1]} if series else {}
