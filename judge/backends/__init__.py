"""Model backends behind one async protocol.

Backends load only when used: the HTTP backend (and the openai SDK) on first use of
`OpenAIChatModel`, the local ones (and torch) when a spec names them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    BackendError,
    ChatModel,
    ChatModelBase,
    Completion,
    GenerationRequest,
    Message,
    Usage,
)
from .options import BackendOptions
from .registry import load_model

if TYPE_CHECKING:
    from .openai_http import OpenAIChatModel, RetryPolicy

__all__ = [
    "BackendError",
    "BackendOptions",
    "ChatModel",
    "ChatModelBase",
    "Completion",
    "GenerationRequest",
    "Message",
    "OpenAIChatModel",
    "RetryPolicy",
    "Usage",
    "load_model",
]


def __getattr__(name: str) -> Any:
    if name in ("OpenAIChatModel", "RetryPolicy"):
        from . import openai_http

        return getattr(openai_http, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
