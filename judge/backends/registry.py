"""Turn a model spec string (CLI, config, service) into a `ChatModel`.

A spec is `KIND:NAME` (or a bare `KIND`); each kind is a backend found in the
`charter.backends` entry-point group, so a package adds `anthropic:` or `vllm:` specs by
registering a factory there, without touching charter:

    [project.entry-points."charter.backends"]
    anthropic = "my_package.backend:open_model"   # (name, BackendOptions) -> ChatModel

charter registers its own three the same way (`builtin`): `openai:MODEL` (an OpenAI-compatible
endpoint, or several: `EndpointPool`), `hf:PATH_OR_ID` (local transformers) and `smollm2` (the
embedded offline default). A backend is imported only when a spec names it, so using the HTTP
backend never imports torch.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import Protocol

from .base import ChatModelBase
from .options import BackendOptions

__all__ = [
    "GROUP",
    "SPEC_FORMS",
    "BackendFactory",
    "backend_kinds",
    "load_model",
    "names_backend",
    "parse_spec",
    "uses_endpoint",
]

GROUP = "charter.backends"
"""The entry-point group backends are registered in."""

SPEC_FORMS = ("openai:MODEL", "hf:PATH_OR_ID", "smollm2")
_BUILT_IN = {kind: f"charter.judge.backends.builtin:{kind}" for kind in ("openai", "hf", "smollm2")}
"""The built-in backends' entry points, as `pyproject.toml` registers them (used as they are
when the installed metadata predates them)."""


class BackendFactory(Protocol):
    """What an entry point of `GROUP` names: the model for the spec's NAME ("" for a bare
    KIND), built with `options`: a `ChatModelBase`, so callers may use it as a context
    manager."""

    def __call__(self, name: str, options: BackendOptions) -> ChatModelBase: ...


@functools.cache
def _registered() -> dict[str, str]:
    """Backend kind -> its entry point's `module:attribute`, from the installed packages."""
    return {ep.name.lower(): ep.value for ep in entry_points(group=GROUP)}


def backend_kinds() -> dict[str, str]:
    """Every backend kind a spec may name, with where its factory lives."""
    return {**_BUILT_IN, **{k: v for k, v in _registered().items() if k not in _BUILT_IN}}


def _forms() -> list[str]:
    return [*SPEC_FORMS, *(f"{kind}:NAME" for kind in backend_kinds() if kind not in _BUILT_IN)]


def parse_spec(spec: str) -> tuple[str, str]:
    """(kind, name) of a model spec: ("openai", MODEL), ("hf", PATH_OR_ID), ("smollm2", "")
    or (KIND, NAME) for a registered third-party backend.

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
    if kind not in _BUILT_IN and kind in backend_kinds():
        return kind, rest
    raise ValueError(f"unknown model spec {spec!r}; expected one of: {', '.join(_forms())}")


def _kind(text: str) -> tuple[str, bool]:
    """The kind a spec's text names, lower-cased, and whether a `:` follows it."""
    kind, sep, _ = text.strip().partition(":")
    return kind.strip().lower(), bool(sep)


def names_backend(text: str) -> bool:
    """Whether `text` is written as a model spec rather than a bare local path: `KIND:...`
    for a kind a backend is registered for, or the bare `smollm2`. It may still be malformed
    (`parse_spec` says how); the CLI and the pipeline make anything else `hf:PATH`."""
    kind, sep = _kind(text)
    return kind in backend_kinds() if sep else kind == "smollm2"


def uses_endpoint(spec: str) -> bool:
    """Whether the model `spec` answers over HTTP (`openai:`): its base URL says which model
    it is, and loading it costs nothing (a local model loads its weights)."""
    return _kind(spec) == ("openai", True)


def load_model(spec: str, options: BackendOptions | None = None) -> ChatModelBase:
    """Build the model a spec names; `ValueError` if no backend takes the spec.

    Close it when done (`with load_model(...) as model:`): it holds connections or weights.
    """
    kind, name = parse_spec(spec)
    factory: BackendFactory = EntryPoint(kind, backend_kinds()[kind], GROUP).load()
    return factory(name, options or BackendOptions())
