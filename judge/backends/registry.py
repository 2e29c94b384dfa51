"""Turn a model spec string (CLI, config, service) into a `ChatModel`.

Spec forms: `openai:MODEL` (an OpenAI-compatible endpoint), `hf:PATH_OR_ID` (local transformers)
and `smollm2` (the embedded offline default). Local backends are imported only when named, so
using the HTTP backend never imports torch.
"""

from __future__ import annotations

from .base import ChatModel
from .options import BackendOptions

__all__ = ["SPEC_FORMS", "load_model"]

SPEC_FORMS = ("openai:MODEL", "hf:PATH_OR_ID", "smollm2")


def load_model(spec: str, options: BackendOptions | None = None) -> ChatModel:
    """Build the model a spec names; `ValueError` if the spec is not one of `SPEC_FORMS`."""
    options = options or BackendOptions()
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    kind = kind.strip().lower()
    rest = rest.strip()
    if kind == "openai" and sep:
        if not rest:
            raise ValueError(f"model spec {spec!r} names no model; expected openai:MODEL")
        from .openai_http import OpenAIChatModel

        return OpenAIChatModel(rest, options)
    if kind == "hf" and sep:
        if not rest:
            raise ValueError(f"model spec {spec!r} names no model; expected hf:PATH_OR_ID")
        from .local import LocalTransformersModel

        return LocalTransformersModel.load(rest, options)
    if kind == "smollm2" and not sep:
        from .smollm2 import load_smollm2

        return load_smollm2(options)
    raise ValueError(f"unknown model spec {spec!r}; expected one of: {', '.join(SPEC_FORMS)}")
