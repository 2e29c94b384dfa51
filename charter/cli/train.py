"""`charter train sft|dpo|reward|ppo|grpo|rloo`: train on the data charter generated, with TRL.

Every command takes `--config FILE.toml` (flat keys named as in TRL's configs, plus charter's
own: see `charter.trainer.config`) and flags; a flag given on the command line or through its
environment variable overrides the file. `--data` is a job id in the store or a path; a job's
rows are picked by `charter.training_data`, as `charter export` picks them. `--model` (and
every other model) is a spec read as the judge reads it: `smollm2`, `hf:PATH_OR_ID`, a path.
Anything that can be wrong with the inputs is checked before training starts and reported in
one line.

Heavy imports (torch, TRL) happen inside the commands so `charter --help` stays fast.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from charter.judge.config import VERDICT_FIELDS, JudgeConfig
from charter.judge.reward import RewardDeadline

from .common import (
    echo_json,
    friendly_errors,
    json_option,
    principles_dir_option,
    store_option,
)
from .fields import field_option
from .models import judge_options

if TYPE_CHECKING:
    from charter.trainer import PreferenceData, TrainResult
    from charter.training_data import TrainKind

F = TypeVar("F", bound=Callable[..., Any])

# Parameters that steer the command rather than name a setting.
CONTROL_PARAMS = {"config_path", "assignments", "as_json", "resume_last", "resume_path"}
# Methods whose reward is the constitution judge (charter.trainer.online).
JUDGED = ("grpo", "rloo")
# Setting keys the CLI itself consumes (allowed in config files too).
CLI_KEYS = {"store", "min_confidence"}
# CLI parameter name -> setting key, where they differ.
RENAMES = {
    "store_path": "store",
    "judge_spec": "judge",
    "timeout": "judge_timeout",
    "concurrency": "judge_concurrency",
    "directory": "constitution",
}

ACCELERATE_HELP = """
\b
Multi-GPU, DeepSpeed or FSDP: run the same command under accelerate, e.g.
  accelerate launch --config_file examples/accelerate/multi-gpu.yaml \\
      -m charter.cli train dpo --data JOB_ID --model BASE --out runs/dpo
"""


@click.group(epilog=ACCELERATE_HELP)
@click.option("-q", "--quiet", is_flag=True, help="Log only warnings (no per-step metrics).")
@click.pass_context
def train(ctx: click.Context, quiet: bool) -> None:
    """Train models on charter's preference data with TRL.

    \b
      sft      supervised fine-tuning on accepted revisions or winners (trl.SFTTrainer)
      dpo      DPO on the preference pairs (trl.DPOTrainer)
      reward   a reward model on the pairs, with the judge's margins (trl.RewardTrainer)
      ppo      PPO against a reward model, KL-anchored to the base (TRL 1.12's
               PPOTrainer: pip install 'charter[ppo]')
      grpo     online RLAIF: the constitution judge is the reward (trl.GRPOTrainer)
      rloo     online RLAIF, REINFORCE leave-one-out with KL to the base (trl.RLOOTrainer)

    Settings come from --config FILE.toml (TRL's field names, e.g. beta, learning_rate,
    per_device_train_batch_size) and flags, flags winning; --set KEY=VALUE sets any other
    TRL field. Precision is picked for the machine: bf16 where supported, fp32 on the CPU.
    The output directory gets the model, its tokenizer and a model card (README.md) naming
    the job, constitution digest and version, and judge it came from.
    """
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet


def common_options(func: F) -> F:
    """--data, --model, --out, --config and the settings every method shares."""
    decorators = [
        click.option(
            "--data", help="A job id in the store, or a .jsonl/.json/.parquet file or dir."
        ),
        click.option(
            "--model",
            help="Base model: smollm2 (the embedded model), hf:PATH_OR_ID, or a directory.",
        ),
        click.option(
            "--out", "output_dir", type=click.Path(path_type=Path), help="Output directory."
        ),
        click.option(
            "--config",
            "config_path",
            type=click.Path(path_type=Path, dir_okay=False),
            help="TOML file of settings (TRL's field names); flags override it.",
        ),
        store_option,
        click.option(
            "--min-confidence",
            type=click.FloatRange(0.5, 1.0),
            help="For a job id: p_chosen a comparison or checked revision needs (default 0.6).",
        ),
        click.option(
            "--conversational/--standard",
            default=None,
            help="Train on chat messages (needs a chat template) or plain text. Default: as the "
            "data is (jobs: plain text, as `charter export`).",
        ),
        click.option(
            "--lora/--no-lora", "use_peft", default=None, help="Train a LoRA adapter (peft)."
        ),
        click.option("--lora-r", type=click.IntRange(min=1), help="LoRA rank (default 16)."),
        click.option("--lora-alpha", type=click.IntRange(min=1), help="LoRA alpha (default 32)."),
        click.option("--learning-rate", "--lr", "learning_rate", type=float),
        click.option("--epochs", "num_train_epochs", type=float, help="num_train_epochs"),
        click.option(
            "--max-steps", type=int, help="Stop after this many steps (overrides epochs)."
        ),
        click.option(
            "--batch-size",
            "per_device_train_batch_size",
            type=click.IntRange(min=1),
            help="per_device_train_batch_size",
        ),
        click.option("--gradient-accumulation-steps", type=click.IntRange(min=1)),
        click.option("--save-steps", type=float, help="Checkpoint every N steps."),
        click.option("--logging-steps", type=float, help="Log metrics every N steps."),
        click.option("--seed", type=int),
        click.option(
            "--resume",
            "resume_last",
            is_flag=True,
            help="Continue from the last checkpoint in --out.",
        ),
        click.option(
            "--resume-from-checkpoint",
            "resume_path",
            type=click.Path(path_type=Path, file_okay=False),
            help="Continue from this checkpoint directory.",
        ),
        click.option(
            "--overwrite",
            is_flag=True,
            default=None,
            help="Train into an --out that holds a model.",
        ),
        click.option(
            "--set",
            "assignments",
            multiple=True,
            metavar="KEY=VALUE",
            help="Any TRL config field, e.g. --set warmup_ratio=0.1 (repeatable).",
        ),
        json_option,
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _given(ctx: click.Context) -> dict[str, Any]:
    """Setting keys the user gave on the command line or through an environment variable."""
    out: dict[str, Any] = {}
    for name, value in ctx.params.items():
        if name in CONTROL_PARAMS or value is None:
            continue
        source = ctx.get_parameter_source(name)
        if source in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None):
            continue
        out[RENAMES.get(name, name)] = str(value) if isinstance(value, Path) else value
    if ctx.params.get("resume_path"):
        out["resume"] = str(ctx.params["resume_path"])
    elif ctx.params.get("resume_last"):
        out["resume"] = True
    return out


def _defaults(ctx: click.Context) -> dict[str, Any]:
    """Values of options left at their defaults (used only where no file value exists)."""
    out: dict[str, Any] = {}
    for name, value in ctx.params.items():
        if name in CONTROL_PARAMS or value is None:
            continue
        if ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
            out[RENAMES.get(name, name)] = str(value) if isinstance(value, Path) else value
    return out


def _configure_output(ctx: click.Context) -> None:
    """Per-step metrics through logging on stderr; library progress bars and chatter off."""
    root = ctx.find_root()
    verbose = int(root.params.get("verbose") or 0)
    quiet = bool((ctx.obj or {}).get("quiet"))
    logging.getLogger("charter.trainer").setLevel(logging.WARNING if quiet else logging.INFO)
    # TRL's usage pings: off unless the user opted in.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if verbose == 0:
        import warnings

        import datasets

        # Deprecation notices from transformers/TRL internals are not the user's to act on.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()


GRPO_JUDGE_FIELDS = [name for name in JudgeConfig.model_fields if name in VERDICT_FIELDS]


def judge_config_options(func: F) -> F:
    """`--judge-<field>` for each verdict setting of `JudgeConfig` (`--principles` for K, as
    elsewhere); they reach the run as `judge_<field>` keys, like the config file's."""
    for name in reversed(GRPO_JUDGE_FIELDS):
        flag = "--principles" if name == "principles" else "--judge-" + name.replace("_", "-")
        func = field_option(
            name, JudgeConfig.model_fields[name], flag=flag, param="judge_" + name,
            unset_default=True,
        )(func)  # fmt: skip
    return func


def _take_judge_config(values: dict[str, Any]) -> dict[str, Any]:
    """Move the `judge_<field>` keys of `JudgeConfig` fields out of `values`, as its fields."""
    return {
        key[len("judge_") :]: values.pop(key)
        for key in list(values)
        if key.startswith("judge_") and key[len("judge_") :] in JudgeConfig.model_fields
    }


def _run(ctx: click.Context, method: str) -> TrainResult:
    """Merge defaults < config file < --set < flags, resolve the data, and train."""
    import importlib

    from charter import trainer as T
    from charter.trainer.config import canonical_keys, parse_assignment, split_settings
    from charter.trainer.runtime import leave_process_group

    module = importlib.import_module(f"charter.trainer.{method}")
    run_cls = {
        "sft": T.SFTRunConfig,
        "dpo": T.DPORunConfig,
        "reward": T.RewardRunConfig,
        "ppo": T.PPORunConfig,
        "grpo": T.GRPORunConfig,
        "rloo": T.RLOORunConfig,
    }[method]
    trl_cls = module.trl_config_class()
    _configure_output(ctx)

    def check(values: dict[str, Any], source: str) -> dict[str, Any]:
        rest = dict(values)
        if method in JUDGED:
            _take_judge_config(rest)
        split_settings(rest, run_cls=run_cls, trl_cls=trl_cls, extra=CLI_KEYS, source=source)
        return values

    config_path = ctx.params.get("config_path")
    file_values = T.read_config_file(config_path) if config_path else {}
    set_values = dict(parse_assignment(text) for text in ctx.params.get("assignments") or ())
    values: dict[str, Any] = {
        **_defaults(ctx),
        **check(file_values, f"config file {config_path}"),
        **check(set_values, "--set"),
        **canonical_keys(_given(ctx), "command line"),
    }
    judge_config = _take_judge_config(values) if method in JUDGED else {}
    run, trl, cli = split_settings(
        values, run_cls=run_cls, trl_cls=trl_cls, extra=CLI_KEYS, source="settings"
    )
    if method in JUDGED:
        run["judge_config"] = {k: v for k, v in judge_config.items() if v is not None}
    for key, flag in (("data", "--data"), ("model", "--model"), ("output_dir", "--out")):
        if not run.get(key):
            raise click.UsageError(f"give {flag} (or `{key}` in the --config file)")
    kinds: dict[str, TrainKind] = {"sft": "sft", "dpo": "preference", "reward": "preference"}
    kind = kinds.get(method, "prompt")
    run["data"] = resolve_data(
        str(run["data"]),
        store=Path(cli.get("store") or ctx.params["store_path"]),
        min_confidence=cli.get("min_confidence"),
        kind=kind,
        conversational=run.get("conversational"),
    )
    if method in JUDGED and not run.get("judge_base_url"):
        run["judge_base_url"] = os.environ.get("OPENAI_BASE_URL")
    try:
        config = run_cls(**run, trl=trl)
    except TypeError as exc:
        raise T.TrainError(f"bad settings: {exc}") from None
    train_fn = getattr(T, f"train_{method}")
    result: TrainResult = train_fn(config)
    leave_process_group()
    return result


def resolve_data(
    value: str,
    *,
    store: Path,
    min_confidence: float | None,
    kind: TrainKind,
    conversational: bool | None,
) -> str | PreferenceData:
    """A path passes through; anything else is looked up as a job id in the store."""
    if Path(value).expanduser().exists():
        return value
    from charter.training_data import load_job_data  # the store's modules, only for a job id

    return load_job_data(
        store, value, kind=kind, min_confidence=min_confidence, conversational=conversational
    )


def _report(result: TrainResult, as_json: bool) -> None:
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    if as_json:
        echo_json(result.summary())
        return
    click.echo(f"trained {result.method}: {result.global_step} steps ({result.precision})")
    click.echo(f"  model  {result.output_dir}")
    if result.card:
        click.echo(f"  card   {result.card}")
    for key, value in result.metrics.items():
        if value is None:
            continue
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        click.echo(f"  {key:<28} {shown}")


@train.command()
@common_options
@click.option("--max-length", type=click.IntRange(min=1), help="Max tokens of prompt + answer.")
@click.option(
    "--packing/--no-packing",
    default=None,
    help="Pack several short rows into each sequence of --max-length tokens.",
)
@click.pass_context
@friendly_errors
def sft(ctx: click.Context, /, **_: Any) -> None:
    """Supervised fine-tuning on prompt -> completion rows (trl.SFTTrainer).

    From a job id: revise mode trains on the final revisions that passed the quality gates and
    the judge's check (SL-CAI); compare mode on each prompt's winners. From a file: rows with
    `prompt` and `completion`, or `messages` ending in the assistant's turn. The loss is on the
    completion alone.

    \b
    Examples:
      charter train sft --data JOB_ID --model smollm2 --out runs/sft
      charter train sft --data sft.jsonl --model hf:models/base --out runs/sft --lora
    """
    _report(_run(ctx, "sft"), ctx.params["as_json"])


@train.command()
@common_options
@click.option("--ref-model", help="Reference model, a spec like --model (default: --model).")
@click.option("--beta", type=float, help="KL strength: higher stays closer to the reference (0.1).")
@click.option(
    "--loss-type",
    callback=lambda ctx, param, value: [v.strip() for v in value.split(",")] if value else None,
    help="sigmoid (default), ipo, hinge, robust, ...; comma-separated to combine.",
)
@click.option("--max-length", type=click.IntRange(min=1), help="Max tokens of prompt + answer.")
@click.option(
    "--precompute-ref-log-probs/--no-precompute-ref-log-probs",
    default=None,
    help="Score the data with the reference model once, before training.",
)
@click.pass_context
@friendly_errors
def dpo(ctx: click.Context, /, **_: Any) -> None:
    """DPO on preference pairs (trl.DPOTrainer).

    \b
    Examples:
      charter train dpo --data JOB_ID --model models/base --out runs/dpo
      charter train dpo --config examples/train-dpo.toml --lora --beta 0.05
      charter train dpo --config examples/train-dpo.toml --resume
    """
    _report(_run(ctx, "dpo"), ctx.params["as_json"])


@train.command()
@common_options
@click.option(
    "--eval-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Share of prompts held out when the data has no test split (0.1).",
)
@click.option(
    "--margin/--no-margin",
    "use_margin",
    default=None,
    help="Use the judge's margin column in the loss (default: when present).",
)
@click.option("--max-length", type=click.IntRange(min=1), help="Max tokens of prompt + answer.")
@click.pass_context
@friendly_errors
def reward(ctx: click.Context, /, **_: Any) -> None:
    """A reward model on preference pairs (trl.RewardTrainer); reports pairwise accuracy.

    \b
    Example:
      charter train reward --data JOB_ID --model models/base --out runs/rm
    """
    _report(_run(ctx, "reward"), ctx.params["as_json"])


@train.command()
@common_options
@click.option(
    "--reward-model", help="Reward model: its directory or hf:PATH (from `charter train reward`)."
)
@click.option("--value-model", help="Initial value model, a spec (default: the reward model).")
@click.option("--kl-coef", type=float, help="KL penalty to the reference policy (0.05).")
@click.option("--response-length", type=click.IntRange(min=1), help="Max new tokens (53).")
@click.option("--num-ppo-epochs", type=click.IntRange(min=1), help="PPO epochs per rollout (4).")
@click.option("--num-mini-batches", type=click.IntRange(min=1), help="Minibatches per rollout (1).")
@click.option(
    "--total-episodes", type=click.IntRange(min=1), help="Episodes (default: epochs x prompts)."
)
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), help="Sampling (0.7).")
@click.pass_context
@friendly_errors
def ppo(ctx: click.Context, /, **_: Any) -> None:
    """PPO against a reward model (TRL 1.12 experimental PPOTrainer), KL to the reference.

    Needs TRL 1.12.0, the last release with PPO: pip install 'charter[ppo]' into its own
    environment. Elsewhere: PPO on OpenRLHF with charter's reward route (docs/rewards.md).

    \b
    Example:
      charter train ppo --data JOB_ID --model models/base --reward-model runs/rm --out runs/ppo
    """
    _report(_run(ctx, "ppo"), ctx.params["as_json"])


def judged_options(func: F) -> F:
    """The judge, the constitution and how a group is scored: grpo's and rloo's options."""
    decorators = [
        judge_options,
        principles_dir_option("Directory of principle files: the constitution the judge applies."),
        click.option(
            "--reward-mode",
            type=click.Choice(["auto", "reference", "group"]),
            help="reference: each completion vs the prompt's reference answer; group: round "
            "robin within the prompt's completions. auto (default): reference when the data "
            "has one.",
        ),
        judge_config_options,
        field_option(
            "deadline_s",
            RewardDeadline.model_fields["deadline_s"],
            flag="--judge-deadline",
            param="judge_deadline_s",
            unset_default=True,
        ),
        click.option(
            "--num-generations", type=click.IntRange(min=2), help="Completions per prompt."
        ),
        click.option("--max-completion-length", type=click.IntRange(min=1), help="Max new tokens."),
        click.option(
            "--temperature", type=click.FloatRange(min=0, min_open=True), help="Sampling (1.0)."
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


@train.command()
@common_options
@judged_options
@click.option("--beta", type=float, help="KL coefficient to the reference (0.0: none).")
@click.pass_context
@friendly_errors
def grpo(ctx: click.Context, /, **_: Any) -> None:
    """Online RLAIF: GRPO with the constitution judge as the reward (trl.GRPOTrainer).

    Every completion is judged under the constitution (K principles, both orders); its reward
    is its win probability against the prompt's reference answer, or against the other
    completions of its prompt. A step's judge calls go out together.

    \b
    Example:
      charter train grpo --data JOB_ID --model models/base --out runs/grpo \\
          --judge openai:gpt-4o-mini --num-generations 4
    """
    _report(_run(ctx, "grpo"), ctx.params["as_json"])


@train.command()
@common_options
@judged_options
@click.option(
    "--beta", type=float, help="KL penalty to the reference, taken off the reward (0.05)."
)
@click.pass_context
@friendly_errors
def rloo(ctx: click.Context, /, **_: Any) -> None:
    """Online RLAIF: RLOO with the constitution judge as the reward (trl.RLOOTrainer).

    The judge scores each completion as for grpo; RLOO's advantage is a completion's reward
    (less a KL penalty to the reference model) minus the mean of the other completions of its
    prompt.

    \b
    Example:
      charter train rloo --data JOB_ID --model models/base --out runs/rloo \\
          --judge openai:gpt-4o-mini --num-generations 4
    """
    _report(_run(ctx, "rloo"), ctx.params["as_json"])
