"""Model backends behind one async protocol; local (torch) backends load only when named."""

from .base import BackendError, ChatModel, Completion, GenerationRequest, Message, Usage
from .openai_http import OpenAIChatModel, RetryPolicy
from .options import BackendOptions
from .registry import load_model

__all__ = [
    "BackendError",
    "BackendOptions",
    "ChatModel",
    "Completion",
    "GenerationRequest",
    "Message",
    "OpenAIChatModel",
    "RetryPolicy",
    "Usage",
    "load_model",
]
