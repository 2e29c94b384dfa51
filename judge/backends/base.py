"""The one async protocol every model backend speaks.

Two calls cover everything the judge does:

- `generate`: a chat completion (critiques, revisions, chain-of-thought, policy sampling).
- `choose`: which of a few single-token options comes next (a verdict "A" or "B"). Backends
  that can see token probabilities return them in `option_logprobs`; the judge turns those
  into P(A). Backends that cannot return only the text, and the judge parses it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Literal, Protocol, Self, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: str
    content: str


class GenerationRequest(BaseModel):
    """A chat completion request; `seed` makes sampling reproducible where the backend allows."""

    model_config = ConfigDict(frozen=True)

    messages: tuple[Message, ...]
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0)
    seed: int | None = None
    frequency_penalty: float = Field(
        default=0.0,
        ge=-2.0,
        le=2.0,
        description="OpenAI's: lowers each token's logit by this times its count so far in the "
        "reply; small models looping on a phrase need it.",
    )


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )

    @classmethod
    def total(cls, usages: Iterable[Usage]) -> Usage:
        """The sum of several usages (zero for none)."""
        return sum(usages, cls())


class Completion(BaseModel):
    """What a backend answered, with what it cost.

    `option_logprobs` is set only by `choose`, and only when the backend exposes token
    probabilities: natural-log probability of each requested option as the next token
    (an option the model gave no probability to is absent).

    `finish_reason` says why generation stopped, as OpenAI-style APIs report it: `stop` (the
    model ended its turn), `length` (cut by `max_tokens`: the text is unfinished), or another
    reason the server gave (`content_filter`, ...); None when the backend did not say.
    """

    text: str
    option_logprobs: dict[str, float] | None = None
    finish_reason: str | None = None
    usage: Usage = Usage()
    latency_s: float = 0.0
    model: str = ""


FailureReason = Literal["timeout", "unreachable", "failed"]
"""How a model call failed: no answer in time, no connection at all, or an error answer."""


class BackendError(Exception):
    """A model call that failed for good (after any retries); the message is safe to show.

    `reason` lets a caller answer each kind differently (the service maps them to 504, 503
    and 502); a backend that cannot tell leaves it "failed".
    """

    def __init__(self, message: str = "", reason: FailureReason = "failed") -> None:
        super().__init__(message)
        self.reason: FailureReason = reason


@runtime_checkable
class ChatModel(Protocol):
    """A model the judge (or a policy sampler) can talk to."""

    @property
    def spec(self) -> str:
        """The spec string this model was made from, e.g. `openai:gpt-4o-mini` or `smollm2`."""
        ...

    async def generate(self, request: GenerationRequest) -> Completion: ...

    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion: ...

    async def aclose(self) -> None: ...


class ChatModelBase(ABC):
    """What every backend shares: `close()` / `aclose()`, and `with` / `async with`.

    A model holds connections, threads or weights until it is closed. `async with` (or
    `await model.aclose()`) closes it on the running event loop; `with` (or `model.close()`)
    closes it on charter's background loop, the one the sync wrappers (`compare_sync`, ...)
    run models on, so what they opened there is closed there. Closing twice is harmless.
    """

    @property
    @abstractmethod
    def spec(self) -> str:
        """The spec string this model was made from."""

    @abstractmethod
    async def generate(self, request: GenerationRequest) -> Completion: ...

    @abstractmethod
    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion: ...

    @abstractmethod
    async def aclose(self) -> None:
        """Free what the model holds (connections, threads, weights)."""

    def close(self) -> None:
        """`aclose` from synchronous code (see the class docstring for which loop)."""
        from .._sync import run_sync

        run_sync(self.aclose())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
