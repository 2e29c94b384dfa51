"""In-process transformers backend: verdicts from one forward pass, batched; generation on demand.

A verdict needs only the next-token distribution, so `choose` never generates: it runs one
forward pass over the chat-templated prompt and reads the option tokens' log-probabilities.
Concurrent `choose` calls are gathered into micro-batches (left padding, attention mask) so a
small CPU is used well. All model work runs on one dedicated worker thread, so the event loop
is never blocked and the model is never entered by two threads at once.

torch and transformers are imported lazily, inside functions, so that importing
`charter.judge` stays fast and torch-free unless a local model is actually used.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .base import BackendError, Completion, GenerationRequest, Message, Usage
from .options import BackendOptions

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class ModelNotFoundError(BackendError, FileNotFoundError):
    """A local model path (or a hub id absent from the local cache) that cannot be loaded.

    Both a `BackendError` (what the judge catches) and a `FileNotFoundError` (what a caller
    checking paths expects).
    """


def _looks_like_path(path_or_id: str) -> bool:
    """A hub id is `name` or `org/name`; anything else (absolute, relative, ~, deeper) is a path."""
    if path_or_id.startswith(("/", ".", "~")) or "\\" in path_or_id:
        return True
    return path_or_id.count("/") > 1


@dataclass
class _Pending:
    """One queued `choose` call awaiting its micro-batch."""

    input_ids: list[int]
    option_tokens: dict[str, tuple[int, ...]]
    future: asyncio.Future[dict[str, float]]


@dataclass
class _Batcher:
    """Per-event-loop queue of `choose` calls, drained by one task into micro-batches."""

    pending: list[_Pending] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class LocalTransformersModel:
    """A transformers causal LM served in-process; implements `ChatModel`.

    Build it with `LocalTransformersModel.load(...)`; the constructor takes an already loaded
    model and tokenizer (useful for tests and for the trainer, which owns its models).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        spec: str,
        options: BackendOptions | None = None,
    ) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise BackendError(
                f"model {spec!r} has no chat template; charter needs an instruction-tuned chat "
                "model whose tokenizer ships one"
            )
        self._model: Any = model
        self._tokenizer: Any = tokenizer
        self._spec = spec
        self._options = options or BackendOptions()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="charter-local-model"
        )
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = (
            weakref.WeakKeyDictionary()
        )
        self._option_cache: dict[str, tuple[int, ...]] = {}
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self._pad_id: int = int(pad_id)
        #: Forward passes run by `choose` (one per micro-batch); read by tests and benchmarks.
        self.forward_passes = 0

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        path_or_id: str,
        options: BackendOptions | None = None,
        *,
        spec: str | None = None,
    ) -> LocalTransformersModel:
        """Load a local model directory, or a hub id already in the local HF cache; no downloads.

        Blocking (seconds); from async code call it through `asyncio.to_thread`.
        """
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        options = options or BackendOptions()
        spec = spec or f"hf:{path_or_id}"
        path = Path(path_or_id).expanduser()
        from_hub_cache = False
        if path.exists():
            if not path.is_dir():
                raise ModelNotFoundError(f"model path {str(path)!r} is not a directory")
            source = str(path)
        elif _looks_like_path(path_or_id):
            raise ModelNotFoundError(f"model directory {str(path)!r} does not exist")
        else:
            source, from_hub_cache = path_or_id, True
        started = time.perf_counter()
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                source, local_files_only=True, dtype=torch.float32
            )
        except (OSError, ValueError) as exc:
            if from_hub_cache:
                raise ModelNotFoundError(
                    f"model {path_or_id!r} is neither a local directory nor in the local "
                    "Hugging Face cache (charter never downloads models; fetch it yourself, or "
                    "pass a directory)"
                ) from exc
            raise ModelNotFoundError(
                f"cannot load a transformers model from {source!r}: {exc}"
            ) from exc
        except Exception as exc:  # e.g. an architecture this transformers does not know
            raise BackendError(f"cannot load a transformers model from {source!r}: {exc}") from exc
        model.eval()  # type: ignore[no-untyped-call]
        logger.info("loaded %s in %.1f s", spec, time.perf_counter() - started)
        return cls(model, tokenizer, spec=spec, options=options)

    # ------------------------------------------------------------------ protocol

    @property
    def spec(self) -> str:
        return self._spec

    @property
    def model(self) -> Any:
        """The underlying transformers model (do not call it concurrently with this backend)."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion:
        """Score each option as the next token from one (batched) forward pass."""
        if not options:
            raise BackendError("choose needs at least one option")
        started = time.perf_counter()
        input_ids = self._encode_chat(messages)
        option_tokens = {opt: self._option_token_ids(opt) for opt in options}
        _drop_shared_tokens(option_tokens)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, float]] = loop.create_future()
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = self._batchers[loop] = _Batcher()
        batcher.pending.append(_Pending(input_ids, option_tokens, future))
        if batcher.task is None or batcher.task.done():
            batcher.task = loop.create_task(self._drain(batcher))
        logprobs = await future
        text = max(logprobs, key=logprobs.__getitem__) if logprobs else ""
        return Completion(
            text=text,
            option_logprobs=logprobs,
            usage=Usage(prompt_tokens=len(input_ids), completion_tokens=0),
            latency_s=time.perf_counter() - started,
            model=self._spec,
        )

    async def generate(self, request: GenerationRequest) -> Completion:
        """Chat completion: greedy at temperature 0, else seeded sampling; returns new text only."""
        started = time.perf_counter()
        input_ids = self._encode_chat(request.messages)
        try:
            new_ids = await self._run(self._generate_sync, input_ids, request)
        except Exception as exc:
            raise _as_backend_error(exc, f"generation with {self._spec!r} failed") from exc
        # Decoded here, not on the worker: the tokenizer is only ever used from one thread.
        text = str(self._tokenizer.decode(new_ids, skip_special_tokens=True)).strip()
        return Completion(
            text=text,
            usage=Usage(prompt_tokens=len(input_ids), completion_tokens=len(new_ids)),
            latency_s=time.perf_counter() - started,
            model=self._spec,
        )

    async def aclose(self) -> None:
        """Free the model; later calls fail with `BackendError`."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True)
        with self._lock:
            self._model = None
        gc.collect()

    # ------------------------------------------------------------------ internals

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run model work on the dedicated worker thread (keeps the event loop free)."""
        executor = self._executor
        if executor is None:
            raise BackendError(f"model {self._spec!r} is closed")
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(executor, fn, *args)
        except RuntimeError as exc:  # shut down by a concurrent aclose()
            raise BackendError(f"model {self._spec!r} is closed") from exc
        return await future

    def _encode_chat(self, messages: Sequence[Message]) -> list[int]:
        if self._executor is None:
            raise BackendError(f"model {self._spec!r} is closed")
        chat = [{"role": m.role, "content": m.content} for m in messages]
        try:
            prompt = self._tokenizer.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # jinja errors, e.g. a template that rejects a role
            raise BackendError(f"chat template of {self._spec!r} failed: {exc}") from exc
        ids: list[int] = self._tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return ids

    def _option_token_ids(self, option: str) -> tuple[int, ...]:
        """Token ids that start `option`: the bare form and the leading-space form ("A", " A").

        A variant counts only if its first token carries part of the option itself (a lone
        space token would credit every option with the probability of a space).
        """
        cached = self._option_cache.get(option)
        if cached is not None:
            return cached
        core = option.strip()
        ids: list[int] = []
        for variant in dict.fromkeys((option, core, " " + core)):
            encoded = self._tokenizer(variant, add_special_tokens=False)["input_ids"]
            if not encoded:
                continue
            first = int(encoded[0])
            piece = self._tokenizer.decode([first]).strip()
            if piece and core.startswith(piece) and first not in ids:
                ids.append(first)
        result = tuple(ids)
        self._option_cache[option] = result
        return result

    async def _drain(self, batcher: _Batcher) -> None:
        """Feed queued `choose` calls to the model in micro-batches until the queue is empty."""
        await asyncio.sleep(0)  # let calls scheduled in the same tick join the first batch
        while batcher.pending:
            size = self._options.batch_size
            batch, batcher.pending = batcher.pending[:size], batcher.pending[size:]
            batch = [p for p in batch if not p.future.done()]  # skip cancelled callers
            if not batch:
                continue
            try:
                results = await self._run(self._score_batch, batch)
            except asyncio.CancelledError:
                for p in [*batch, *batcher.pending]:
                    p.future.cancel()
                batcher.pending.clear()
                raise
            except Exception as exc:
                error = _as_backend_error(exc, f"forward pass of {self._spec!r} failed")
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(error)
                continue
            for p, logprobs in zip(batch, results, strict=True):
                if not p.future.done():
                    p.future.set_result(logprobs)

    def _score_batch(self, batch: list[_Pending]) -> list[dict[str, float]]:
        """One forward pass over left-padded prompts; option logprobs of each next token."""
        import torch

        width = max(len(p.input_ids) for p in batch)
        ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, p in enumerate(batch):
            n = len(p.input_ids)
            ids[row, width - n :] = torch.tensor(p.input_ids, dtype=torch.long)
            mask[row, width - n :] = 1
        # Positions count real tokens only, so a padded row scores exactly like an unpadded one.
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        with self._lock:
            if self._model is None:
                raise BackendError(f"model {self._spec!r} is closed")
            with torch.inference_mode():
                out = self._model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=False,
                    logits_to_keep=1,
                )
            self.forward_passes += 1
        logprobs = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
        results: list[dict[str, float]] = []
        for row, p in enumerate(batch):
            scores: dict[str, float] = {}
            for opt, token_ids in p.option_tokens.items():
                if not token_ids:
                    continue
                value = float(torch.logsumexp(logprobs[row, list(token_ids)], dim=0))
                if math.isfinite(value):
                    scores[opt] = value
            results.append(scores)
        return results

    def _generate_sync(self, input_ids: list[int], request: GenerationRequest) -> list[int]:
        import torch
        from transformers import GenerationConfig

        sample = request.temperature > 0
        ids = torch.tensor([input_ids], dtype=torch.long)
        mask = torch.ones_like(ids)
        with self._lock:
            if self._model is None:
                raise BackendError(f"model {self._spec!r} is closed")
            config = GenerationConfig(  # type: ignore[no-untyped-call]
                max_new_tokens=request.max_tokens,
                do_sample=sample,
                # Plain temperature sampling, as an OpenAI-style API means it; no top-k/top-p.
                temperature=request.temperature if sample else None,
                top_p=1.0 if sample else None,
                top_k=0 if sample else None,
                eos_token_id=self._eos_ids() or None,
                pad_token_id=self._pad_id,
            )
            with torch.random.fork_rng(devices=[]), torch.inference_mode():
                if sample and request.seed is not None:
                    torch.manual_seed(request.seed)
                elif sample:
                    torch.seed()
                out = self._model.generate(
                    input_ids=ids, attention_mask=mask, generation_config=config
                )
        new: list[int] = out[0, len(input_ids) :].tolist()
        return new

    def _eos_ids(self) -> list[int]:
        """Every token that ends a turn: the model's eos ids plus the tokenizer's eos."""
        found: list[int] = []
        configured = getattr(self._model.generation_config, "eos_token_id", None)
        if isinstance(configured, int):
            found.append(configured)
        elif configured:
            found.extend(int(i) for i in configured)
        if self._tokenizer.eos_token_id is not None:
            found.append(int(self._tokenizer.eos_token_id))
        return list(dict.fromkeys(found))


def _drop_shared_tokens(option_tokens: dict[str, tuple[int, ...]]) -> None:
    """Remove token ids claimed by more than one option: they say nothing about which is next."""
    counts: dict[int, int] = {}
    for ids in option_tokens.values():
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
    shared = {i for i, c in counts.items() if c > 1}
    if shared:
        logger.warning("options share first tokens %s; those tokens are ignored", sorted(shared))
        for opt, ids in option_tokens.items():
            option_tokens[opt] = tuple(i for i in ids if i not in shared)


def _as_backend_error(exc: Exception, context: str) -> BackendError:
    """Keep a `BackendError` as is; wrap anything else with what was being attempted."""
    if isinstance(exc, BackendError):
        return exc
    return BackendError(f"{context}: {exc!r}")
