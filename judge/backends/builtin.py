"""The three backends charter ships, each a factory registered in the `charter.backends`
entry-point group (see `pyproject.toml`) exactly as a third-party backend registers its own.

A factory takes the name after the spec's `KIND:` ("" for a bare `KIND`) and the
`BackendOptions`, and returns a `ChatModel`. Each imports its backend only when called, so
using the HTTP backend never imports torch.
"""

from __future__ import annotations

from .base import ChatModelBase
from .options import BackendOptions


def openai(name: str, options: BackendOptions) -> ChatModelBase:
    """`openai:MODEL`: an OpenAI-compatible endpoint, or several (`EndpointPool`)."""
    urls = options.resolved_base_urls()
    if len(urls) > 1:
        from .endpoints import EndpointPool

        return EndpointPool(name, urls, options)
    from .openai_http import OpenAIChatModel

    return OpenAIChatModel(name, options)


def hf(name: str, options: BackendOptions) -> ChatModelBase:
    """`hf:PATH_OR_ID`: a transformers model run in this process."""
    from .local import LocalTransformersModel

    return LocalTransformersModel.load(name, options)


def smollm2(name: str, options: BackendOptions) -> ChatModelBase:
    """`smollm2`: the embedded offline default."""
    from .smollm2 import load_smollm2

    return load_smollm2(options)
