"""Model and tokenizer loading with checks that fail before training, in one clear line.

Model specs mean what they mean to the judge (`charter.judge.backends.registry.parse_spec` is
the one parser): `smollm2` is the embedded SmolLM2-135M-Instruct, converted once into the cache
as the judge converts it; `hf:PATH_OR_ID` is a directory or Hub id; a spec with no prefix is a
directory or a Hub id in the local cache, as before. `resolve_model_spec` turns each into what
transformers loads.

Checked up front: the path exists and holds a transformers model; a causal LM is not a
classifier and a reward model is a one-output sequence classifier (not a causal LM); the
tokenizer has a chat template when the data is conversational; PPO's reward model reads the
same vocabulary as the policy (TRL feeds it the policy's token ids).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

from .errors import TrainError

log = logging.getLogger("charter.trainer")

TRAIN_SPEC_FORMS = "smollm2, hf:PATH_OR_ID, or a model directory (or Hub id in the local cache)"
# `name:` at the start: a spec's prefix (no directory or Hub id looks like that).
_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_.+-]*:")


def resolve_model_spec(spec: str, role: str = "model") -> str:
    """The directory or Hub id a model spec names, `TrainError` (one line) for a spec that names
    no weights to train. An existing path is a path, whatever it is called."""
    from charter.judge.backends.registry import SPEC_FORMS, parse_spec

    if Path(spec).expanduser().exists():
        return spec
    try:
        kind, name = parse_spec(spec)
    except ValueError as exc:
        prefix = _PREFIX.match(spec)
        if prefix is None:
            return spec  # a directory that does not exist, or a Hub id: checked when read
        if prefix.group(0)[:-1].strip().lower() in {f.split(":")[0] for f in SPEC_FORMS}:
            raise TrainError(f"{role}: {exc}") from None
        raise TrainError(
            f"{role} {spec!r}: unknown model spec; expected {TRAIN_SPEC_FORMS}"
        ) from None
    if kind == "hf":
        return name
    if kind == "openai":
        raise TrainError(
            f"{role} {spec!r} is a model behind an API, with no weights here to train; "
            f"expected {TRAIN_SPEC_FORMS}"
        )
    from charter.judge.backends.base import BackendError
    from charter.judge.backends.options import default_cache_dir
    from charter.judge.backends.smollm2 import smollm2_model_dir

    try:
        return str(smollm2_model_dir(default_cache_dir()))
    except BackendError as exc:
        raise TrainError(f"{role} {spec}: {_first_line(exc)}") from None


def _looks_like_path(spec: str) -> bool:
    """A hub id is `name` or `org/name`; anything else that does not exist is a bad path."""
    return (
        spec.startswith(("/", "./", "../", "~", "."))
        or spec.count("/") > 1
        or (os.sep != "/" and os.sep in spec)
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _base_of_adapter(path: Path) -> str | None:
    config = path / "adapter_config.json"
    if not config.is_file():
        return None
    try:
        base = json.loads(config.read_text()).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError):
        return None
    return str(base) if base else None


def inspect_model(spec: str, role: str = "model") -> Any:
    """The model's `PretrainedConfig`; `TrainError` if it cannot be found or read.

    A PEFT adapter directory (what `--lora` training saves) resolves to its base model's config.
    """
    from transformers import AutoConfig

    spec = resolve_model_spec(spec, role)
    path = Path(spec).expanduser()
    target = spec
    if path.exists():
        if not path.is_dir():
            raise TrainError(f"{role} {spec}: not a directory")
        base = _base_of_adapter(path)
        if base is not None:
            target = base
        elif not (path / "config.json").is_file():
            raise TrainError(f"{role} {spec}: no config.json there; not a saved transformers model")
        else:
            target = str(path)
    elif _looks_like_path(spec):
        raise TrainError(f"{role} path {spec} does not exist")
    try:
        return AutoConfig.from_pretrained(target)
    except (OSError, ValueError) as exc:
        if path.exists():
            raise TrainError(f"{role} {spec}: cannot read its config: {_first_line(exc)}") from None
        raise TrainError(
            f"{role} {spec!r} does not exist locally and could not be loaded from the Hugging Face "
            f"Hub ({_first_line(exc)})"
        ) from None


def architectures(config: Any) -> list[str]:
    return [str(a) for a in (getattr(config, "architectures", None) or [])]


def require_causal_lm(spec: str, role: str = "model") -> Any:
    """Config of a model that can generate; a classifier (reward model) is refused."""
    config = inspect_model(spec, role)
    heads = [a for a in architectures(config) if a.endswith("ForSequenceClassification")]
    if heads:
        raise TrainError(
            f"{role} {spec} is a sequence classifier ({heads[0]}), not a causal language model; "
            "pass the policy (chat) model here"
        )
    return config


def require_reward_model(spec: str, role: str = "reward model") -> Any:
    """Config of a one-output sequence classifier, as `charter train reward` saves."""
    config = inspect_model(spec, role)
    archs = architectures(config)
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        head = archs[0] if archs else "no recorded architecture"
        kind = "a language-model head" if any("CausalLM" in a for a in archs) else "no reward head"
        raise TrainError(
            f"{role} {spec} has {kind} ({head}), not a reward head "
            "(a ...ForSequenceClassification with one output); "
            "train one with `charter train reward`"
        )
    labels = getattr(config, "num_labels", None)
    if labels != 1:
        raise TrainError(
            f"{role} {spec} has {labels} outputs; a reward model has exactly one (num_labels=1)"
        )
    return config


def load_tokenizer(
    spec: str,
    *,
    conversational: bool,
    padding_side: Literal["left", "right"] | None = None,
    role: str = "model",
) -> Any:
    """The model's tokenizer with a pad token; a chat template is required for message data."""
    from transformers import AutoTokenizer

    path = Path(spec).expanduser()
    source = _base_of_adapter(path) if path.is_dir() and _has_no_tokenizer(path) else None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source or spec)
    except (OSError, ValueError, TypeError) as exc:
        raise TrainError(
            f"cannot load the tokenizer of {role} {spec!r}: {_first_line(exc)}"
        ) from None
    if conversational and not getattr(tokenizer, "chat_template", None):
        raise TrainError(
            f"the tokenizer of {role} {spec} has no chat template, but the data is conversational "
            "(message lists); use a chat model, or train on plain-text prompts with --standard"
        )
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise TrainError(f"the tokenizer of {role} {spec} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
        log.info("%s: no pad token; padding with the EOS token %r", spec, tokenizer.eos_token)
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    return tokenizer


def _has_no_tokenizer(path: Path) -> bool:
    return not any(
        (path / name).is_file()
        for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    )


def model_kwargs(trl_settings: dict[str, Any]) -> dict[str, Any]:
    """`from_pretrained` keyword arguments: fp32 weights unless `model_init_kwargs` says otherwise.

    Mixed precision (bf16) autocasts on top of fp32 master weights, the safe default for
    training; a user who wants bf16 weights sets `model_init_kwargs = {dtype = "bfloat16"}`.
    """
    import torch

    given = trl_settings.get("model_init_kwargs") or {}
    if isinstance(given, str):
        try:
            given = json.loads(given)
        except json.JSONDecodeError:
            raise TrainError("model_init_kwargs must be a table (dict)") from None
    kwargs: dict[str, Any] = dict(given)
    if "dtype" not in kwargs and "torch_dtype" not in kwargs:
        kwargs["dtype"] = torch.float32
    return kwargs


def load_causal_lm(spec: str, kwargs: dict[str, Any], role: str = "model") -> Any:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(spec, **kwargs)
    except (OSError, ValueError) as exc:
        raise TrainError(
            f"cannot load {role} {spec!r} as a causal LM: {_first_line(exc)}"
        ) from None


def load_sequence_classifier(spec: str, kwargs: dict[str, Any], role: str = "model") -> Any:
    """A one-output sequence classifier; a causal LM checkpoint gets a fresh reward head."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    # "Newly initialized: score.weight" is the point here, not news.
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        return AutoModelForSequenceClassification.from_pretrained(spec, num_labels=1, **kwargs)
    except (OSError, ValueError) as exc:
        raise TrainError(
            f"cannot load {role} {spec!r} with a reward head: {_first_line(exc)}"
        ) from None
    finally:
        hf_logging.set_verbosity(previous)


def require_same_vocabulary(tokenizer: Any, spec: str, role: str = "reward model") -> None:
    """PPO scores the policy's token ids with the reward model: the vocabularies must match."""
    from transformers import AutoTokenizer

    path = Path(spec).expanduser()
    if path.is_dir() and _has_no_tokenizer(path):
        config = inspect_model(spec, role)
        size = getattr(config, "vocab_size", None)
        if size is not None and size < len(tokenizer):
            raise TrainError(
                f"{role} {spec} has a vocabulary of {size} tokens, the policy's tokenizer "
                f"{len(tokenizer)}"
            )
        return
    try:
        other = AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError, TypeError) as exc:
        raise TrainError(
            f"cannot load the tokenizer of {role} {spec!r}: {_first_line(exc)}"
        ) from None
    if other.get_vocab() != tokenizer.get_vocab():
        raise TrainError(
            f"{role} {spec} uses a different tokenizer from the policy; PPO scores the policy's "
            "tokens with it, so train the reward model from the same base model"
        )


def lora_config(
    *, r: int, alpha: int, dropout: float, target_modules: str | list[str], task_type: str
) -> Any:
    """A `peft.LoraConfig`; peft is imported only when LoRA is asked for."""
    try:
        from peft import LoraConfig
    except ImportError:
        raise TrainError("--lora needs the `peft` package: pip install peft") from None
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type=task_type,
    )
