"""`ChatModel` over any OpenAI-compatible HTTP endpoint (OpenAI, vLLM, Ollama, llama.cpp, TGI).

One retry policy, ours: the SDK's own retries are off (`max_retries=0`) and `tenacity` retries
rate limits (429, honouring `Retry-After`), server errors (5xx), timeouts, dropped connections and
malformed replies (truncated JSON, an empty choice list), with exponential backoff and jitter.
Client errors (400, 401, 403, 404, 422) fail at once: asking again cannot help and wastes money.
A server that cannot be reached (connection refused, host not found) gets one short retry, in
case it is just starting, and then an error that says so and names its URL.
A semaphore bounds HTTP exchanges in flight, so a judge run cannot flood a small local server.
It is held inside the HTTP client's `send` (`_Pacing`), around the exchange alone: the SDK
builds the request before a slot is taken and the reply is decoded after it is given back, so
at high concurrency slots are not spent on this process's CPU work. The per-attempt timeout
lives there too, so time spent queueing for a slot never counts against a request. Building a
request costs ~1 ms of CPU, so a caller that starts thousands of calls at once (a 1,024-item
reward batch) must not have them all built up front: that blocks the event loop for seconds,
and under CPU load for tens of seconds, and nothing (a deadline included) runs meanwhile.
A second, wider semaphore (`_Pacing.ADMITTED` times the slots) admits a call to be built;
the rest wait on it, which costs nothing and is cancelled at once.

The API key is read from the environment variable `BackendOptions.api_key_env` when the client
is built; this object never keeps it, and error messages and logs are scrubbed of it.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import importlib.util
import json
import logging
import math
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

import httpx2
import openai
import pydantic
from openai import AsyncOpenAI
from pydantic import BaseModel, ConfigDict, Field
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
)

from .base import (
    BackendError,
    ChatModelBase,
    Completion,
    FailureReason,
    GenerationRequest,
    Message,
    Usage,
)
from .options import BackendOptions

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["OpenAIChatModel", "RetryPolicy", "endpoint_at_fault", "failure_where"]

_PLACEHOLDER_KEY = "not-needed"  # local servers (vLLM, llama.cpp, Ollama) ignore the key
_RETRY_STATUSES = frozenset({408, 429})  # plus every 5xx
_MAYBE_LOGPROBS_REJECTED = frozenset({400, 422})
_UNREACHABLE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH})


class RetryPolicy(BaseModel):
    """How long to wait between attempts; the number of attempts is `BackendOptions.max_retries`.

    Tests shrink these so fault scenarios run in milliseconds.
    """

    model_config = ConfigDict(frozen=True)

    initial_wait_s: float = Field(default=0.5, ge=0, description="First backoff before jitter.")
    max_wait_s: float = Field(default=20.0, ge=0, description="Cap on the exponential backoff.")
    jitter_s: float = Field(default=0.5, ge=0, description="Uniform random extra wait.")
    max_retry_after_s: float = Field(
        default=60.0,
        ge=0,
        description="Cap on a server's Retry-After: a bad header must not stall a run.",
    )
    connect_attempts: int = Field(
        default=2,
        ge=1,
        description="Attempts at a server that cannot be reached (connection refused, host not "
        "found) before giving up; never more than the retries allow.",
    )


class _GaveUp(Exception):
    """A call that failed for good under the retry policy: its last error and attempts."""

    def __init__(self, cause: Exception, attempts: int) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.attempts = attempts


class _CallFailed(BackendError):
    """A `BackendError` keeping the HTTP status, so `choose` can spot a rejected parameter,
    and `where`: what failed where, without the model's name (for a list of endpoints)."""

    def __init__(
        self,
        message: str,
        status: int | None,
        detail: str,
        reason: FailureReason = "failed",
        where: str = "",
    ) -> None:
        super().__init__(message, reason)
        self.status = status
        self.detail = detail
        self.where = where or message


def endpoint_at_fault(exc: BaseException) -> bool:
    """Whether a call that failed for good says the endpoint is unwell, not the request bad:
    no connection, a timeout, a dropped or malformed reply, 408, 429 or 5xx, each after the
    usual retries. Another endpoint may answer such a call; a 4xx would fail there too."""
    if not isinstance(exc, _CallFailed):
        return False
    return exc.status is None or exc.status in _RETRY_STATUSES or exc.status >= 500


def failure_where(exc: BaseException) -> str:
    """What failed where ('cannot connect to URL (...)', 'URL failed after N attempts: ...')."""
    return exc.where if isinstance(exc, _CallFailed) else str(exc)


class _MalformedReply(Exception):
    """The server answered 200 with something that is not a usable completion (a server fault)."""


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def _retry_after_seconds(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, `Retry-After` seconds or date)."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _cannot_connect(exc: BaseException) -> str | None:
    """Why no connection could be made ("connection refused", "host not found"), from the OS
    error under the SDK's; None when a connection was made (or the cause is not an OS error).

    The aiohttp transport reports a refused connection as a connect *timeout*: only the OS
    error at the bottom of the chain says what happened.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    found: str | None = None  # a transport's connect error, unless the OS error says more
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, httpx2.ConnectError):
            found = "connection failed"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host not found"
        if isinstance(cause, OSError) and cause.errno in _UNREACHABLE:
            return "no route to host"
        cause = cause.__cause__ or cause.__context__
    return found


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRY_STATUSES or exc.status_code >= 500
    return isinstance(
        exc,
        openai.APIConnectionError  # includes APITimeoutError
        | TimeoutError
        | _MalformedReply
        | json.JSONDecodeError
        | openai.APIResponseValidationError
        | pydantic.ValidationError,
    )


def extract_option_logprobs(
    choice_logprobs: Any, options: Sequence[str]
) -> dict[str, float] | None:
    """Each option's logprob as the first non-blank generated token, from `top_logprobs`.

    Tokens are compared after stripping whitespace ("A", " A", "A\\n" all count for "A"); the
    variants are different tokens, so their probabilities add (logsumexp). The sampled token
    counts too when a server leaves it out of its own top list. None when there are no logprobs.
    """
    content = getattr(choice_logprobs, "content", None) if choice_logprobs is not None else None
    if not content:
        return None
    position = next((p for p in content if str(getattr(p, "token", "")).strip()), content[0])
    entries: list[tuple[str, float]] = [
        (str(t.token), float(t.logprob)) for t in (getattr(position, "top_logprobs", None) or [])
    ]
    sampled = getattr(position, "token", None)
    if sampled is not None and all(tok != sampled for tok, _ in entries):
        entries.append((str(sampled), float(position.logprob)))
    wanted = {opt.strip(): opt for opt in options}
    found: dict[str, list[float]] = {}
    for token, logprob in entries:
        option = wanted.get(token.strip())
        if option is not None and not math.isnan(logprob):
            found.setdefault(option, []).append(logprob)
    return {option: _logsumexp(lps) for option, lps in found.items()}


class OpenAIChatModel(ChatModelBase):
    """A `ChatModel` for one model name on one OpenAI-compatible endpoint.

    Its HTTP connections stay open until it is closed: `with` / `async with` it, or call
    `close()` / `aclose()` (see `ChatModelBase`).
    """

    def __init__(
        self,
        model: str,
        options: BackendOptions | None = None,
        *,
        retry: RetryPolicy | None = None,
        top_logprobs: int = 20,
        choose_max_tokens: int = 1,
        transport: Literal["auto", "httpx", "aiohttp"] = "auto",
    ) -> None:
        if not model.strip():
            raise ValueError("model name must not be empty")
        self.model = model
        self.options = options or BackendOptions()
        self.retry = retry or RetryPolicy()
        self.top_logprobs = top_logprobs
        self.choose_max_tokens = choose_max_tokens
        self.base_url = self.options.resolved_base_url()
        self.transport = _resolve_transport(transport)
        self._logprobs_supported: bool | None = None  # None: not known yet
        # The client (and the semaphore in its HTTP client) is tied to an event loop: built
        # lazily and rebuilt if the loop changes.
        self._client: AsyncOpenAI | None = None
        self._pacing: _Pacing | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"OpenAIChatModel(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def spec(self) -> str:
        return f"openai:{self.model}"

    @property
    def logprobs_supported(self) -> bool | None:
        """False once the server rejected the logprobs parameter; None until it is known."""
        return self._logprobs_supported

    # ------------------------------------------------------------------ protocol

    async def generate(self, request: GenerationRequest) -> Completion:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": _wire_messages(request.messages),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if request.frequency_penalty:
            kwargs["frequency_penalty"] = request.frequency_penalty
        response, latency = await self._create(kwargs)
        return self._completion(response, latency, option_logprobs=None)

    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion:
        """The next token among `options`, with each option's logprob where the server gives it.

        A server that rejects the logprobs parameter (400/422) is asked again without it; if that
        works, later calls no longer ask, and only the text comes back for the judge to parse.
        """
        if not options:
            raise ValueError("choose needs at least one option")
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": _wire_messages(messages),
            "max_tokens": self.choose_max_tokens,
            "temperature": 0.0,
        }
        if self._logprobs_supported is False:
            response, latency = await self._create(kwargs)
            return self._completion(response, latency, option_logprobs=None)
        asking = {**kwargs, "logprobs": True, "top_logprobs": self.top_logprobs}
        try:
            response, latency = await self._create(asking)
        except _CallFailed as first:
            if first.status not in _MAYBE_LOGPROBS_REJECTED:
                raise
            # The logprobs parameter, or the request itself? Ask once without it to tell.
            try:
                response, latency = await self._create(kwargs)
            except _CallFailed as second:
                if second.status in _MAYBE_LOGPROBS_REJECTED:
                    raise first from None  # the request itself is bad
                raise
            self._logprobs_supported = False
            logger.warning(
                "%s at %s rejected the logprobs parameter (%s); verdicts will be parsed "
                "from text only",
                self.spec,
                self.base_url,
                first.detail,
            )
            return self._completion(response, latency, option_logprobs=None)
        choice = response.choices[0]
        option_logprobs = extract_option_logprobs(getattr(choice, "logprobs", None), options)
        if option_logprobs is not None:
            self._logprobs_supported = True
        return self._completion(response, latency, option_logprobs=option_logprobs)

    async def aclose(self) -> None:
        """Close the HTTP client, on the loop it was opened on if that one still runs."""
        client, loop = self._client, self._loop
        self._client, self._loop = None, None
        if client is None or loop is None:
            return
        if loop is asyncio.get_running_loop():
            await client.close()
        elif loop.is_running():  # e.g. opened by the sync wrappers, closed from async code
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(client.close(), loop))
        # A client from a finished loop cannot be closed; its sockets died with that loop.

    # ------------------------------------------------------------------ internals

    def _bind(self) -> AsyncOpenAI:
        return self._bound()[0]

    def _bound(self) -> tuple[AsyncOpenAI, _Pacing]:
        """The client for the running loop and the `_Pacing` in its HTTP client."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._pacing is None or self._loop is not loop:
            # A client from a finished loop holds dead connections; it cannot be closed from here.
            pacing = _Pacing(self.options.max_concurrency, self.options.timeout_s)
            http_client_class = (
                _PacedAioHttpClient if self.transport == "aiohttp" else _PacedHttpxClient
            )
            self._client = AsyncOpenAI(
                api_key=os.environ.get(self.options.api_key_env) or _PLACEHOLDER_KEY,
                base_url=self.base_url,
                timeout=self.options.timeout_s,
                max_retries=0,
                http_client=http_client_class(pacing, timeout=self.options.timeout_s),
            )
            self._pacing, self._loop = pacing, loop
        return self._client, self._pacing

    async def _create(self, kwargs: dict[str, Any]) -> tuple[Any, float]:
        """One chat completion with retries: (reply, latency of the successful attempt)."""
        client, pacing = self._bound()
        try:
            return await self._retried(lambda: self._attempt(client, pacing, kwargs))
        except _GaveUp as gave_up:
            raise self._failure(gave_up.cause, gave_up.attempts) from None

    async def _retried(
        self,
        call: Callable[[], Awaitable[T]],
        retryable: Callable[[BaseException], bool] = _is_retryable,
    ) -> T:
        """`call()` under this model's retry policy (backoff with jitter, Retry-After, the
        connect-attempt limit); `_GaveUp` with the last error once it fails for good.

        The first attempt runs without tenacity: its retry objects form reference cycles that
        only the garbage collector frees, and one per call made collections, not HTTP, the cost
        that grew with concurrency. Only a failed first attempt starts the retry loop.
        """
        try:
            return await call()
        except Exception as exc:
            if not (retryable(exc) and self.options.max_retries > 0):
                raise _GaveUp(exc, attempts=1) from None
            first_failure: Exception | None = exc
        retrying = AsyncRetrying(
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception(retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if first_failure is not None:
                        # Replayed so tenacity counts it, waits on it (Retry-After) and logs it.
                        failure, first_failure = first_failure, None
                        raise failure
                    return await call()
        except Exception as exc:
            attempts = int(retrying.statistics.get("attempt_number", 1))
            raise _GaveUp(exc, attempts) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _attempt(
        self, client: AsyncOpenAI, pacing: _Pacing, kwargs: dict[str, Any]
    ) -> tuple[Any, float]:
        # `post` rather than the typed `create`: our params are already in wire form, and
        # create's per-call param transform costs ~1 ms of CPU. The reply comes back as the raw
        # HTTP response (the SDK still raises its typed errors for 4xx/5xx) and is read as plain
        # JSON through `_Reply`: building the SDK's pydantic models costs ~0.8 ms more per call.
        async with pacing.admitted:
            http_response = await client.post(
                "/chat/completions", body=kwargs, cast_to=httpx2.Response
            )
            reply = _Reply(json.loads(http_response.content))
        _check_reply(reply)
        return reply, float(http_response.extensions[_Pacing.LATENCY])

    def _failure(self, exc: BaseException, attempts: int) -> _CallFailed:
        url = self.base_url or "the default OpenAI endpoint"
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        unreachable = _cannot_connect(exc)
        if unreachable is not None:
            detail = f"cannot connect to {url} ({unreachable})"
            where = f"cannot connect to {url} ({unreachable}; {tries})"
            return _CallFailed(f"{self.spec}: {where}", None, detail, "unreachable", where)
        detail = self._scrub(_short_error(exc))
        status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
        return _CallFailed(
            f"{self.spec} at {url} failed after {tries}: {detail}",
            status,
            detail,
            _failure_reason(exc),
            f"{url} failed after {tries}: {detail}",
        )

    def _stop(self, state: RetryCallState) -> bool:
        """After `max_retries` retries; at a server that cannot be reached, after
        `connect_attempts` (a short retry covers one just starting; more only delays the error)."""
        if state.attempt_number > self.options.max_retries:
            return True
        exc = state.outcome.exception() if state.outcome is not None else None
        return (
            exc is not None
            and _cannot_connect(exc) is not None
            and state.attempt_number >= self.retry.connect_attempts
        )

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        retry_after = _retry_after_seconds(exc) if exc is not None else None
        if retry_after is not None:
            return min(retry_after, self.retry.max_retry_after_s)
        exponent = min(state.attempt_number - 1, 30)
        backoff = min(self.retry.max_wait_s, self.retry.initial_wait_s * 2.0**exponent)
        return backoff + random.uniform(0.0, self.retry.jitter_s)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        logger.info(
            "%s: attempt %d failed (%s); retrying in %.2fs",
            self.spec,
            state.attempt_number,
            self._scrub(_short_error(exc)) if exc is not None else "?",
            wait,
        )

    def _completion(
        self, response: Any, latency: float, option_logprobs: dict[str, float] | None
    ) -> Completion:
        choice = response.choices[0]
        usage = getattr(response, "usage", None)
        finish_reason = getattr(choice, "finish_reason", None)
        return Completion(
            text=str(getattr(choice.message, "content", None) or ""),
            option_logprobs=option_logprobs,
            finish_reason=str(finish_reason) if finish_reason else None,
            usage=Usage(
                prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            ),
            latency_s=latency,
            model=str(getattr(response, "model", None) or self.model),
        )

    def _scrub(self, text: str) -> str:
        """Remove the API key from text bound for users or logs (servers sometimes echo it)."""
        key = os.environ.get(self.options.api_key_env)
        if key and len(key) >= 4:
            text = text.replace(key, "[redacted]")
        return text


class _Pacing:
    """At most `max_in_flight` HTTP exchanges at once, each bounded by `timeout_s` in all, and
    at most `ADMITTED` times as many calls being built, in flight or decoded (`admitted`).

    Each exchange's wall time (send to last byte of the reply) goes into the response's
    `extensions[LATENCY]`: the latency a judgment reports, without any wait for a slot.
    """

    LATENCY = "charter.latency_s"
    ADMITTED = 2
    """Calls admitted per slot: the next slot's request is built while the slots are busy."""

    def __init__(self, max_in_flight: int, timeout_s: float) -> None:
        self.admitted = asyncio.Semaphore(self.ADMITTED * max_in_flight)
        self.slots = asyncio.Semaphore(max_in_flight)
        self.timeout_s = timeout_s

    async def send(
        self,
        send: Callable[..., Awaitable[httpx2.Response]],
        request: httpx2.Request,
        kwargs: dict[str, Any],
    ) -> httpx2.Response:
        async with self.slots:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.timeout_s):
                    response = await send(request, **kwargs)  # stream=False: reads the body
            except TimeoutError:
                # The SDK turns httpx timeouts into `openai.APITimeoutError`.
                raise httpx2.TimeoutException("request timed out", request=request) from None
            response.extensions[self.LATENCY] = time.perf_counter() - started
        return response


class _PacedAioHttpClient(openai.DefaultAioHttpClient):
    """The SDK's aiohttp-backed HTTP client, with every exchange paced by `_Pacing`."""

    def __init__(self, pacing: _Pacing, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pacing = pacing

    async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        return await self._pacing.send(super().send, request, kwargs)


class _PacedHttpxClient(openai.DefaultAsyncHttpxClient):
    """The SDK's default httpx client, with every exchange paced by `_Pacing`."""

    def __init__(self, pacing: _Pacing, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pacing = pacing

    async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        return await self._pacing.send(super().send, request, kwargs)


def _resolve_transport(transport: str) -> Literal["httpx", "aiohttp"]:
    """aiohttp when installed (`openai[aiohttp]`): its connection pool costs far less CPU per
    request than httpx's at 64+ connections, which decides throughput at high concurrency."""
    has_aiohttp = importlib.util.find_spec("aiohttp") is not None and hasattr(
        openai, "DefaultAioHttpClient"
    )
    if transport == "aiohttp":
        if not has_aiohttp:
            raise ValueError("transport='aiohttp' needs aiohttp: pip install 'openai[aiohttp]'")
        return "aiohttp"
    if transport == "httpx":
        return "httpx"
    if transport != "auto":
        raise ValueError(f"unknown transport {transport!r}; expected auto, httpx or aiohttp")
    return "aiohttp" if has_aiohttp else "httpx"


def _wire_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


class _Reply:
    """Attribute access over a reply's JSON (`reply.choices[0].message.content`), like the SDK's
    `ChatCompletion` but without building models; a missing field reads as None."""

    __slots__ = ("_data",)

    def __init__(self, data: object) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        value = self._data.get(name) if isinstance(self._data, dict) else None
        return _wrap(value)


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return _Reply(value)
    if isinstance(value, list):
        return [_wrap(item) for item in value]
    return value


def _check_reply(response: Any) -> None:
    choices = getattr(response, "choices", None)
    if not choices:
        raise _MalformedReply("the server returned no choices")
    if getattr(choices[0], "message", None) is None:
        raise _MalformedReply("the server returned a choice without a message")


def _failure_reason(exc: BaseException) -> FailureReason:
    if _cannot_connect(exc) is not None:
        return "unreachable"
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "unreachable"
    return "failed"


def _short_error(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        detail = exc.message
        if isinstance(exc.body, dict):
            inner = exc.body.get("message") or exc.body.get("error")
            if isinstance(inner, dict):
                inner = inner.get("message")
            if isinstance(inner, str) and inner:
                detail = inner
        return f"HTTP {exc.status_code}: {detail}"
    unreachable = _cannot_connect(exc)
    if unreachable is not None:
        return f"cannot connect ({unreachable})"
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return "request timed out"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return f"connection error ({type(cause).__name__})" if cause else "connection error"
    if isinstance(exc, json.JSONDecodeError):
        return f"malformed JSON in the reply ({exc.msg})"
    if isinstance(exc, _MalformedReply):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
