"""Run configuration shared by every method, and TOML config files that mirror TRL's names.

A run has two halves: charter's own settings (`RunConfig` and its per-method subclasses: where
the data and models are, LoRA, resuming) and TRL's config for the method (`trl.DPOConfig`,
`trl.RewardConfig`, ...), carried as a plain dict of field names so that every TRL knob works
without charter naming it. A config file is flat TOML whose keys are either kind:

    data = "job-3f2a9c0d1e2b"         # charter: a job id or a path
    model = "models/base"             # charter
    output_dir = "runs/dpo"           # charter (also TRL's name)
    lora = true                       # charter (TRL's ModelConfig calls it use_peft)
    beta = 0.1                        # trl.DPOConfig
    learning_rate = 5e-6              # trl.DPOConfig
    per_device_train_batch_size = 4   # trl.DPOConfig

A key that is neither is an error naming the key, so a typo never silently does nothing.
Command-line flags override file values.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charter.common.datafiles import loads_toml, read_text
from charter.common.limits import InputLimits

from .errors import TrainDataError, TrainError
from .fieldtypes import check_field_types

if TYPE_CHECKING:
    from .data import PreferenceData

# Friendlier spellings accepted in files and mapped to the canonical key.
ALIASES: dict[str, str] = {
    "lora": "use_peft",
    "out": "output_dir",
    "epochs": "num_train_epochs",
    "batch_size": "per_device_train_batch_size",
    "lr": "learning_rate",
}


@dataclass
class RunConfig:
    """What every method needs besides TRL's own arguments.

    `data` is a path (jsonl, json, parquet, a saved `datasets` directory, or an export directory
    with train/test files) or an already loaded `PreferenceData` (the CLI resolves job ids in
    the store to that). `trl` holds fields of the method's TRL config by their TRL names;
    precision (`bf16`, `fp16`, `use_cpu`) is resolved for the machine when not given.
    """

    data: str | Path | PreferenceData
    model: str
    output_dir: str | Path
    conversational: bool | None = None
    use_peft: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] = "all-linear"
    resume: bool | str = False
    overwrite: bool = False
    trl: dict[str, Any] = field(default_factory=dict)


def run_config_keys(run_cls: type[RunConfig]) -> set[str]:
    """Keys a config file may set for `run_cls` itself (everything but the `trl` dict)."""
    return {f.name for f in dataclasses.fields(run_cls) if f.name != "trl"}


def trl_config_keys(trl_cls: type[Any]) -> set[str]:
    """The init fields of a TRL config dataclass (TrainingArguments included)."""
    return {f.name for f in dataclasses.fields(trl_cls) if f.init}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a TOML config file into a flat dict with aliases resolved."""
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"config file {path} does not exist")
    text = read_text(path, InputLimits.from_env(), error=TrainDataError)
    try:
        raw = loads_toml(text)
    except tomllib.TOMLDecodeError as exc:
        raise TrainError(f"config file {path}: not valid TOML: {exc}") from None
    return canonical_keys(raw, str(path))


def canonical_keys(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Resolve aliases; two spellings of one key is an error."""
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in values.items():
        name = ALIASES.get(key, key)
        if name in out:
            first, second = sorted((spelled[name], key))
            raise TrainError(f"{source}: {first!r} and {second!r} set the same thing; keep one")
        out[name] = value
        spelled[name] = key
    return out


def split_settings(
    values: Mapping[str, Any],
    *,
    run_cls: type[RunConfig],
    trl_cls: type[Any],
    extra: Iterable[str] = (),
    source: str,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Sort keys into (charter run settings, TRL config fields, caller's extra keys).

    Unknown keys raise `TrainError` naming the key and the closest known names; a value of
    the wrong type for its field (`max_steps = "six"`) raises `SettingError` naming the field.
    """
    run_keys = run_config_keys(run_cls)
    extra_keys = set(extra)
    trl_keys = trl_config_keys(trl_cls)
    run: dict[str, Any] = {}
    trl: dict[str, Any] = {}
    other: dict[str, Any] = {}
    for key, value in values.items():
        if key in run_keys:
            run[key] = value
        elif key in extra_keys:
            other[key] = value
        elif key in trl_keys:
            trl[key] = value
        else:
            known = run_keys | extra_keys | trl_keys | set(ALIASES)
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise TrainError(
                f"{source}: unknown key {key!r}: not a charter setting for this method and not "
                f"a field of trl.{trl_cls.__name__}{hint}"
            )
    check_field_types(run, run_cls, source=source, owner="a charter setting")
    check_field_types(trl, trl_cls, source=source, owner=f"a field of trl.{trl_cls.__name__}")
    return run, trl, other


def parse_assignment(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` from `--set`: VALUE is read as a TOML value, else taken as a string."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise TrainError(f"--set {text!r}: use KEY=VALUE, e.g. --set warmup_ratio=0.1")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return ALIASES.get(key, key), parsed
