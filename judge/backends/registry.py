"""Turn a model spec string (CLI, config, service) into a `ChatModel`.

Spec forms: `openai:MODEL` (an OpenAI-compatible endpoint, or several: `EndpointPool`),
`hf:PATH_OR_ID` (local transformers) and `smollm2` (the embedded offline default). Local
backends are imported only when named, so using the HTTP backend never imports torch.
"""

from __future__ import annotations

from .base import ChatModelBase
from .options import BackendOptions

__all__ = ["SPEC_FORMS", "load_model", "parse_spec"]

SPEC_FORMS = ("openai:MODEL", "hf:PATH_OR_ID", "smollm2")


def parse_spec(spec: str) -> tuple[str, str]:
    """(kind, name) of a model spec: ("openai", MODEL), ("hf", PATH_OR_ID) or ("smollm2", "").

    The one parser of spec strings: the CLI, the service's schemas and `load_model` use it.
    `ValueError` with a one-line message for anything else.
    """
    kind, sep, rest = spec.strip().partition(":")
    kind, rest = kind.strip().lower(), rest.strip()
    if kind in ("openai", "hf") and sep:
        if not rest:
            form = "openai:MODEL" if kind == "openai" else "hf:PATH_OR_ID"
            raise ValueError(f"model spec {spec!r} names no model; expected {form}")
        return kind, rest
    if kind == "smollm2" and not sep:
        return kind, ""
    raise ValueError(f"unknown model spec {spec!r}; expected one of: {', '.join(SPEC_FORMS)}")


def load_model(spec: str, options: BackendOptions | None = None) -> ChatModelBase:
    """Build the model a spec names; `ValueError` if the spec is not one of `SPEC_FORMS`.

    Close it when done (`with load_model(...) as model:`): it holds connections or weights.
    """
    options = options or BackendOptions()
    kind, name = parse_spec(spec)
    if kind == "openai":
        urls = options.resolved_base_urls()
        if len(urls) > 1:
            from .endpoints import EndpointPool

            return EndpointPool(name, urls, options)
        from .openai_http import OpenAIChatModel

        return OpenAIChatModel(name, options)
    if kind == "hf":
        from .local import LocalTransformersModel

        return LocalTransformersModel.load(name, options)
    from .smollm2 import load_smollm2

    return load_smollm2(options)
