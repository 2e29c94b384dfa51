"""A judge whose calls go through the OpenAI Batch API instead of one request each.

`OpenAIBatchModel` is the HTTP judge (`OpenAIChatModel`) with one thing changed: where a
direct judge sends a chat completion, this one adds the same body to a batch window, keyed by
the call's store key (`charter.call_cache`). A window is submitted when it holds
`batch_max_calls` calls or `batch_window_s` after its first call: the input file is uploaded
(`purpose=batch`), the batch created (24 h window) and recorded in the store
(`charter.batches.journal`), then polled with a doubling wait until it ends. Its output and
error files are read and every result goes back to the call that asked for it, so request
building, logprob reading and the fallback for servers without logprobs are the direct
judge's own.

A call that failed in a batch (an HTTP error, an expired batch, a result missing from the
output) is a failed call: asked again in a later batch when the direct judge would have
retried it (429, 5xx, expiry, a missing result), up to `max_retries` times, and otherwise
reported like any failed judgment. A batch recorded by an earlier run and not yet collected
is polled again, never submitted again: its calls are answered from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TypeVar

import openai
import sqlite_utils

from charter.call_cache import call_key, choose_payload, generate_payload
from charter.judge.backends.base import BackendError, Completion, GenerationRequest, Message
from charter.judge.backends.openai_http import (
    OpenAIChatModel,
    RetryPolicy,
    _CallFailed,
    _cannot_connect,
    _check_reply,
    _failure_reason,
    _GaveUp,
    _is_retryable,
    _MalformedReply,
    _Reply,
    _short_error,
)
from charter.judge.backends.options import BackendOptions
from charter.store import SqliteError

from . import journal
from .options import COMPLETION_WINDOW, BatchOptions
from .wire import ItemResult, ParsedResults, read_results, request_lines

log = logging.getLogger(__name__)

__all__ = ["BatchStats", "OpenAIBatchModel"]

T = TypeVar("T")
StatusCallback = Callable[[str], None]
"""Told what the batches are doing ("batch_1: in_progress, 12 of 40 done"), for progress."""

_CALL_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "charter_batch_call_key", default=None
)
_TOKEN = "charter_submission"
_CLOCK_SKEW_S = 600.0
"""How far the provider's clock may be behind ours when looking for a batch by its token."""
_TERMINAL = frozenset({"completed", "expired", "failed", "cancelled"})


@dataclass
class BatchStats:
    """What went by batch in one run, for the job summary."""

    calls: int = 0
    """Calls answered from a batch."""
    batches_created: int = 0
    batches_resumed: int = 0
    """Batches an earlier run created that this run polled (and did not pay for again)."""
    failed_items: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _Batch:
    """A batch at the provider: its calls, and its results once it has ended."""

    def __init__(self, batch_id: str, keys: frozenset[str], *, inherited: bool) -> None:
        self.id = batch_id
        self.keys = keys
        self.inherited = inherited  # created by an earlier run
        self.results: asyncio.Future[ParsedResults] = asyncio.get_running_loop().create_future()
        self.results.add_done_callback(_consume)
        self.missing = ItemResult(error="no result for this call", retryable=True)
        self.poller: asyncio.Task[None] | None = None


class _Window:
    """The calls gathered for the next batch, and the batch once it is created."""

    def __init__(self) -> None:
        self.calls: dict[str, dict[str, Any]] = {}
        self.submitted: asyncio.Future[_Batch] = asyncio.get_running_loop().create_future()
        self.submitted.add_done_callback(_consume)
        self.timer: asyncio.TimerHandle | None = None


class OpenAIBatchModel(OpenAIChatModel):
    """An `openai:` judge answering through the Batch API (see the module docstring).

    `spec` is the direct judge's, so its answers are stored under the same keys: a batch run
    and a direct run of one job reuse each other's calls.
    """

    def __init__(
        self,
        model: str,
        db: sqlite_utils.Database,
        settings: BatchOptions,
        options: BackendOptions | None = None,
        *,
        retry: RetryPolicy | None = None,
        on_status: StatusCallback | None = None,
    ) -> None:
        super().__init__(model, options, retry=retry)
        journal.ensure_table(db)
        self.db = db
        self.settings = settings
        self.on_status = on_status
        self.stats = BatchStats()
        self._endpoint = self.base_url or ""
        self._batches: dict[str, _Batch] = {}
        self._latest: dict[str, str] = {}  # call key -> the newest batch holding it
        self._window: _Window | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loaded = False
        self._loading = asyncio.Lock()

    def __repr__(self) -> str:
        return f"OpenAIBatchModel(model={self.model!r}, base_url={self.base_url!r})"

    async def generate(self, request: GenerationRequest) -> Completion:
        with _keyed(call_key(self.spec, "generate", generate_payload(request))):
            return await super().generate(request)

    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion:
        with _keyed(call_key(self.spec, "choose", choose_payload(messages, options))):
            return await super().choose(messages, options)

    async def aclose(self) -> None:
        """Stop polling; batches whose results were read are marked collected, the others
        stay recorded for the next run to resume."""
        window, self._window = self._window, None
        if window is not None and window.timer is not None:
            window.timer.cancel()
        for task in [*self._tasks, *(b.poller for b in self._batches.values() if b.poller)]:
            task.cancel()
        collected = [
            b.id
            for b in self._batches.values()
            if b.results.done() and not b.results.cancelled() and b.results.exception() is None
        ]
        if collected:
            try:
                journal.mark_collected(self.db, collected)
            except SqliteError as exc:  # they are polled again next run: harmless
                log.warning("could not mark batches collected: %s", exc)
        await super().aclose()

    # ------------------------------------------------------------------ one call

    async def _create(self, kwargs: dict[str, Any]) -> tuple[Any, float]:
        """The direct judge's one HTTP exchange, answered from a batch instead."""
        key = _CALL_KEY.get()
        if key is None:
            raise BackendError(f"{self.spec}: a batched call needs its store key")
        await self._load_journal()
        started = time.monotonic()
        batch = self._reusable(key)
        retries = 0
        while True:
            if batch is None:
                try:
                    batch = await self._submit(key, kwargs)
                except _CallFailed as exc:  # its status is the Files/Batches API's, not the call's
                    raise BackendError(str(exc), exc.reason) from None
            item = await self._result(batch, key)
            if item.body is not None:
                reply = _Reply(item.body)
                try:
                    _check_reply(reply)
                except _MalformedReply as exc:
                    item = ItemResult(error=str(exc), status=item.status, retryable=True)
                else:
                    self.stats.calls += 1
                    # Hours of waiting are no call's latency: a service tenant served this
                    # call from the store would be kept waiting that long (`CachedModel`).
                    return reply, min(time.monotonic() - started, self.options.timeout_s)
            if not batch.inherited:  # an earlier run's failure is not this run's attempt
                self.stats.failed_items += 1
                retries += 1
                error = f"batch {batch.id}: {item.error}"
                if not item.retryable or retries > self.options.max_retries:
                    raise _CallFailed(
                        f"{self.spec} at {self._where()}: {error}", item.status, error
                    )
                log.info("%s: %s; asking again in a new batch", self.spec, error)
            batch = None

    async def _load_journal(self) -> None:
        """Adopt the batches an earlier run left uncollected (polled when first needed)."""
        async with self._loading:
            if self._loaded:
                return
            for found in journal.open_batches(self.db, model=self.spec, base_url=self._endpoint):
                await self._adopt(found)
            self._loaded = True

    async def _adopt(self, found: journal.OpenBatch) -> None:
        batch_id = found.id
        token = found.creating_token
        if token is not None:  # the earlier run was stopped while the batch was created
            created = await self._find_created(token, found.created_at)
            if created is None:
                journal.forget(self.db, found.id)
                return
            journal.adopt(self.db, found.id, created.id, created.status)
            batch_id = created.id
        batch = _Batch(batch_id, found.keys, inherited=True)
        self._batches[batch.id] = batch
        for key in found.keys:  # oldest first: a call asked again is found in its newest
            self._latest[key] = batch.id

    async def _find_created(self, token: str, since: str) -> Any:
        """The batch created with `token` in its metadata, or None if there is none."""
        oldest = datetime.fromisoformat(since).timestamp() - _CLOCK_SKEW_S
        try:
            async for found in self._bind().batches.list(limit=100):
                if (found.metadata or {}).get(_TOKEN) == token:
                    return found
                if found.created_at < oldest:  # newest first: it is not further on
                    break
        except openai.OpenAIError as exc:
            log.warning(
                "%s: cannot list batches to find one a stopped run was creating (%s); its calls "
                "are asked again",
                self.spec,
                self._scrub(_short_error(exc)),
            )
        return None

    def _reusable(self, key: str) -> _Batch | None:
        """A batch that is answering `key` or has answered it well; None: submit it."""
        batch = self._batches.get(self._latest.get(key, ""))
        if batch is None or not batch.results.done():
            return batch
        if batch.results.exception() is not None:
            return batch  # its polling failed: the call fails, the next run resumes it
        item = batch.results.result().items.get(key)
        return batch if item is not None and item.body is not None else None

    async def _result(self, batch: _Batch, key: str) -> ItemResult:
        if batch.poller is None:
            batch.poller = asyncio.ensure_future(self._poll(batch))
        parsed = await asyncio.shield(batch.results)
        return parsed.items.get(key, batch.missing)

    # ------------------------------------------------------------------ windows

    async def _submit(self, key: str, body: dict[str, Any]) -> _Batch:
        """Add the call to the open window (or join a batch already answering it)."""
        answering = self._batches.get(self._latest.get(key, ""))
        if answering is not None and not answering.results.done():
            return answering
        window = self._window
        if window is None:
            window = self._window = _Window()
            window.timer = asyncio.get_running_loop().call_later(
                self.settings.batch_window_s, self._close, window
            )
        window.calls.setdefault(key, body)
        if len(window.calls) >= self.settings.batch_max_calls:
            self._close(window)
        return await asyncio.shield(window.submitted)

    def _close(self, window: _Window) -> None:
        """Stop gathering into `window` and submit it."""
        if self._window is window:
            self._window = None
        if window.timer is not None:
            window.timer.cancel()
        task = asyncio.ensure_future(self._submit_window(window))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _submit_window(self, window: _Window) -> None:
        try:
            batch = await self._create_batch(window.calls)
        except Exception as exc:
            window.submitted.set_exception(exc)
        else:
            window.submitted.set_result(batch)

    async def _create_batch(self, calls: dict[str, dict[str, Any]]) -> _Batch:
        client = self._bind()
        data = request_lines(calls)
        self._status(f"batch of {len(calls)} calls: uploading")
        uploaded = await self._api(
            "upload a batch input file",
            lambda: client.files.create(
                file=("charter-batch.jsonl", data, "application/jsonl"), purpose="batch"
            ),
        )
        # Recorded before it is created, under a token the provider keeps in its metadata: a
        # run stopped meanwhile finds it by the token next time (see `_adopt`).
        token = secrets.token_hex(12)
        creating = journal.CREATING + token
        journal.record(
            self.db,
            creating,
            model=self.spec,
            base_url=self._endpoint,
            keys=calls,
            input_file_id=uploaded.id,
            status="creating",
        )
        # Not retried where the batch may have been created (a timeout, a 5xx): that would
        # pay twice. A failed create leaves its calls failed, asked again next run.
        try:
            created = await self._api(
                "create a batch",
                lambda: client.batches.create(
                    input_file_id=uploaded.id,
                    endpoint="/v1/chat/completions",
                    completion_window=COMPLETION_WINDOW,
                    metadata={"created_by": "charter", "model": self.spec, _TOKEN: token},
                ),
                resend_safe=False,
            )
        except _CallFailed as exc:
            if exc.status is not None and exc.status < 500:  # refused: surely not created
                journal.forget(self.db, creating)
            raise
        journal.adopt(self.db, creating, created.id, created.status)
        self.stats.batches_created += 1
        batch = _Batch(created.id, frozenset(calls), inherited=False)
        self._batches[batch.id] = batch
        for key in calls:
            self._latest[key] = batch.id
        self._status(f"batch {batch.id}: submitted {len(calls)} calls")
        return batch

    # ------------------------------------------------------------------ polling

    async def _poll(self, batch: _Batch) -> None:
        """Check `batch` with a doubling wait until it ends, then read its results."""
        try:
            wait = 0.0
            if batch.inherited:
                self.stats.batches_resumed += 1
                self._status(f"batch {batch.id}: resuming (created by an earlier run)")
            else:
                wait = self.settings.batch_poll_s
            while True:
                await asyncio.sleep(wait)
                wait = min(
                    max(2 * wait, self.settings.batch_poll_s), self.settings.batch_poll_max_s
                )
                try:
                    info = await self._api(
                        f"check batch {batch.id}", lambda: self._bind().batches.retrieve(batch.id)
                    )
                except _CallFailed as exc:
                    if exc.status != 404:
                        raise
                    # Gone (deleted, or another account's): its calls have no answer there.
                    log.warning("%s; its calls are asked again", exc)
                    batch.missing = ItemResult(error=exc.detail, status=404, retryable=True)
                    batch.results.set_result(ParsedResults())
                    return
                journal.set_status(self.db, batch.id, info.status)
                counts = info.request_counts
                done = (counts.completed + counts.failed) if counts else 0
                total = counts.total if counts else len(batch.keys)
                self._status(f"batch {batch.id}: {info.status}, {done} of {total} done")
                if info.status in _TERMINAL:
                    batch.results.set_result(await self._collect(batch, info))
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            batch.results.set_exception(exc)

    async def _collect(self, batch: _Batch, info: Any) -> ParsedResults:
        """Read an ended batch's output and error files; say why a call has no result."""
        parsed = ParsedResults()
        for kind, file_id in (("output", info.output_file_id), ("error", info.error_file_id)):
            if file_id:
                content = await self._download(f"the {kind} file of batch {batch.id}", file_id)
                read_results(content, batch.keys, f"batch {batch.id} {kind} file", parsed)
        for problem in parsed.problems:
            log.warning("%s", problem)
        batch.missing = _missing(info, parsed)
        return parsed

    async def _download(self, what: str, file_id: str) -> str:
        content = await self._api(f"download {what}", lambda: self._bind().files.content(file_id))
        return content.text

    # ------------------------------------------------------------------ plumbing

    async def _api(
        self, what: str, call: Callable[[], Awaitable[T]], *, resend_safe: bool = True
    ) -> T:
        """One Files/Batches request under the direct calls' retry policy; a `BackendError`
        naming what failed when it fails for good. A request that is not `resend_safe` is
        re-sent only when the server surely never acted on it."""
        retryable = _is_retryable if resend_safe else _surely_not_received
        try:
            return await self._retried(call, retryable)
        except _GaveUp as gave_up:
            exc = gave_up.cause
            detail = f"cannot {what}: {self._scrub(_short_error(exc))}"
            status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
            raise _CallFailed(
                f"{self.spec} at {self._where()}: {detail}", status, detail, _failure_reason(exc)
            ) from None

    def _where(self) -> str:
        return self.base_url or "the default OpenAI endpoint"

    def _status(self, text: str) -> None:
        log.info("%s", text)
        if self.on_status is not None:
            self.on_status(text)


@contextlib.contextmanager
def _keyed(key: str) -> Iterator[None]:
    """Make `key` the store key of the call this task is making (read by `_create`)."""
    token = _CALL_KEY.set(key)
    try:
        yield
    finally:
        _CALL_KEY.reset(token)


def _surely_not_received(exc: BaseException) -> bool:
    """Whether the server cannot have acted on the request: no connection, or a rate limit."""
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429
    return _cannot_connect(exc) is not None


def _missing(info: Any, parsed: ParsedResults) -> ItemResult:
    """What a call of an ended batch with no result line failed with."""
    status = str(info.status)
    if status == "expired":
        return ItemResult(error="the batch expired before this call was answered", retryable=True)
    if status == "failed":
        errors = getattr(getattr(info, "errors", None), "data", None) or []
        said = "; ".join(str(getattr(e, "message", None) or e) for e in errors[:3])
        return ItemResult(error=f"the batch failed ({said or 'no reason given'})")
    if status == "cancelled":
        return ItemResult(error="the batch was cancelled")
    error = "no result for this call in the batch's output"
    if parsed.problems:
        more = len(parsed.problems) - 1
        error += f" ({parsed.problems[0]}" + (f"; {more} more unusable lines)" if more else ")")
    return ItemResult(error=error, retryable=True)


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen: the calls that await it report it themselves."""
    if not future.cancelled():
        future.exception()
