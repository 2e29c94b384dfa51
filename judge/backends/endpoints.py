"""One model served by several OpenAI-compatible endpoints (a fleet of vLLM servers, say).

Each call goes to the endpoint with the fewest calls in flight (ties: the one picked longest
ago), so a slow endpoint, whose calls pile up, gets fewer. Each endpoint is an `OpenAIChatModel`
with its own retries and its own `max_concurrency` slots. A call that fails there for a reason
that says the endpoint is unwell (`endpoint_at_fault`: no connection, a timeout, a dropped or
malformed reply, 408, 429 or 5xx, after that endpoint's usual retries) is sent to another
endpoint, and the failing one is rested: left out for `endpoint_rest_s`, after which a single
call tries it again (more follow once it answers). A call fails only when every endpoint has
failed it, with one error naming each; a request error (400, 401, 404, 422) fails at once, as
with one endpoint, since every endpoint would refuse it alike.

The spec is the model's alone (`openai:MODEL`): which endpoint served a call is not part of
its identity, so the store answers a repeated call whichever endpoint made it first.

Per-endpoint counts (calls, failures, rests) are kept for the pool's life (`counts`) and per
context (`tally.tallying`), so a job sharing the pool with others reports its own.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .base import (
    BackendError,
    ChatModelBase,
    Completion,
    FailureReason,
    GenerationRequest,
    Message,
)
from .openai_http import OpenAIChatModel, RetryPolicy, endpoint_at_fault, failure_where
from .options import BackendOptions
from .tally import EndpointCounts, Event, record, report

logger = logging.getLogger(__name__)

__all__ = ["AllEndpointsFailed", "EndpointPool"]


class AllEndpointsFailed(BackendError):
    """Every endpoint failed one call; the message names each and what it did."""


class _Endpoint:
    def __init__(self, url: str, model: OpenAIChatModel) -> None:
        self.url = url
        self.model = model
        self.in_flight = 0
        self.rest_until: float | None = None  # set while resting or on trial after a rest
        self.picked = 0  # when it was last picked, in picks: ties go to the oldest
        self.counts = EndpointCounts()

    def ready(self, now: float) -> bool:
        """Serving, or back from a rest with no trial call out yet."""
        if self.rest_until is None:
            return True
        return now >= self.rest_until and self.in_flight == 0


class EndpointPool(ChatModelBase):
    """A `ChatModel` for one model name on several OpenAI-compatible endpoints."""

    def __init__(
        self,
        model: str,
        urls: Sequence[str],
        options: BackendOptions | None = None,
        *,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(urls) < 2:
            raise ValueError("an endpoint pool needs at least two URLs")
        self.model = model
        self.options = options or BackendOptions()
        self.urls = tuple(urls)
        self._clock = clock
        self._endpoints = [
            _Endpoint(
                url,
                OpenAIChatModel(
                    model, self.options.model_copy(update={"base_url": url}), retry=retry
                ),
            )
            for url in self.urls
        ]
        self._picks = itertools.count(1)

    def __repr__(self) -> str:
        return f"EndpointPool(model={self.model!r}, urls={self.urls!r})"

    @property
    def spec(self) -> str:
        return f"openai:{self.model}"

    def counts(self) -> list[dict[str, Any]]:
        """Each endpoint's counts over the pool's life, in the order the URLs were given."""
        return report(self.urls, [e.counts for e in self._endpoints])

    async def generate(self, request: GenerationRequest) -> Completion:
        return await self._route(lambda model: model.generate(request))

    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion:
        return await self._route(lambda model: model.choose(messages, options))

    async def aclose(self) -> None:
        for endpoint in self._endpoints:
            await endpoint.model.aclose()

    # ------------------------------------------------------------------ internals

    async def _route(self, call: Callable[[OpenAIChatModel], Awaitable[Completion]]) -> Completion:
        tried: set[int] = set()
        failures: list[str] = []
        reasons: set[FailureReason] = set()
        while (index := self._pick(tried)) is not None:
            tried.add(index)
            endpoint = self._endpoints[index]
            endpoint.in_flight += 1
            self._count(index, "calls")
            try:
                completion = await call(endpoint.model)
            except BackendError as exc:
                if not endpoint_at_fault(exc):
                    raise  # the request itself is refused: as with one endpoint
                self._count(index, "failures")
                self._rest(index, exc)
                failures.append(failure_where(exc))
                reasons.add(exc.reason)
                continue
            finally:
                endpoint.in_flight -= 1
            if endpoint.rest_until is not None:
                logger.info("%s: %s answers again", self.spec, endpoint.url)
                endpoint.rest_until = None
            return completion
        reason: FailureReason = reasons.pop() if len(reasons) == 1 else "failed"
        raise AllEndpointsFailed(
            f"{self.spec}: all {len(self._endpoints)} endpoints failed this call: "
            + "; ".join(failures),
            reason,
        )

    def _pick(self, tried: set[int]) -> int | None:
        """The untried endpoint with the fewest calls in flight, preferring ready ones; a
        resting one is tried only when every untried one rests (a call fails only when every
        endpoint has failed it)."""
        now = self._clock()
        untried = [i for i in range(len(self._endpoints)) if i not in tried]
        if not untried:
            return None
        ready = [i for i in untried if self._endpoints[i].ready(now)] or untried
        index = min(ready, key=lambda i: (self._endpoints[i].in_flight, self._endpoints[i].picked))
        self._endpoints[index].picked = next(self._picks)
        return index

    def _rest(self, index: int, exc: BackendError) -> None:
        endpoint = self._endpoints[index]
        now = self._clock()
        if endpoint.rest_until is None or now >= endpoint.rest_until:
            self._count(index, "rested")
            logger.warning(
                "%s: resting %s for %g s: %s",
                self.spec,
                endpoint.url,
                self.options.endpoint_rest_s,
                failure_where(exc),
            )
        endpoint.rest_until = now + self.options.endpoint_rest_s

    def _count(self, index: int, event: Event) -> None:
        counts = self._endpoints[index].counts
        setattr(counts, event, getattr(counts, event) + 1)
        record(self, index, event)
