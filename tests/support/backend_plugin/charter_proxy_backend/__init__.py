"""A third-party charter backend, as a package outside charter would ship one: `proxy:MODEL`
is a model behind an OpenAI-compatible endpoint, reached through charter's own client under
its own spec. Found by charter through the `charter.backends` entry point its distribution
declares (`charter_proxy_backend-0.1.dist-info/entry_points.txt` beside this directory)."""

from __future__ import annotations

from charter.judge.backends.openai_http import OpenAIChatModel
from charter.judge.backends.options import BackendOptions


class ProxyModel(OpenAIChatModel):
    @property
    def spec(self) -> str:
        return f"proxy:{self.model}"


def open_model(name: str, options: BackendOptions) -> ProxyModel:
    return ProxyModel(name, options)
