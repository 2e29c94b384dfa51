"""In-process transformers backend: verdicts from one forward pass, generation by batched decoding.

A verdict needs only the next-token distribution, so `choose` never generates: it runs one
forward pass over the chat-templated prompt and reads the option tokens' log-probabilities.
Concurrent `choose` calls are gathered into micro-batches (left padding, attention mask) so a
small CPU is used well.

Concurrent `generate` calls are gathered the same way and decoded together, one token of every
row per forward pass over a KV cache. On a CPU, decoding one sequence is bound by streaming the
weights from memory, so a batch of 8 costs little more per step than a single row. Each row keeps
its own stopping point and its own seeded random generator, so what a request gets does not
depend on which requests it was batched with.

All model work runs on one dedicated worker thread, so the event loop is never blocked and the
model is never entered by two threads at once.

torch and transformers are imported lazily, inside functions, so that importing
`charter.judge` stays fast and torch-free unless a local model is actually used.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import inspect
import logging
import math
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from charter.common.threads import use_torch_threads

from .base import BackendError, ChatModelBase, Completion, GenerationRequest, Message, Usage
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


#: A directory holding one of these is a saved model (or a PEFT adapter over one).
_MODEL_FILES = ("config.json", "adapter_config.json")


def _one_line(exc: BaseException) -> str:
    """transformers' messages span lines (numbered lists of causes): one line for the user."""
    return " ".join(str(exc).split())


def _looks_like_path(path_or_id: str) -> bool:
    """A hub id is `name` or `org/name`; anything else (absolute, relative, ~, deeper) is a path."""
    if path_or_id.startswith(("/", ".", "~")) or "\\" in path_or_id:
        return True
    return path_or_id.count("/") > 1


class _Queued(Protocol):
    """What `_drain` needs of a queued call: the future its caller awaits."""

    @property
    def future(self) -> asyncio.Future[Any]: ...


_Q = TypeVar("_Q", bound=_Queued)


@dataclass
class _Pending:
    """One queued `choose` call awaiting its micro-batch."""

    input_ids: list[int]
    option_tokens: dict[str, tuple[int, ...]]
    future: asyncio.Future[dict[str, float]]


@dataclass(frozen=True)
class _Generated:
    """One row's new token ids (a stop token included, if one was produced) and why it ended."""

    token_ids: list[int]
    finish_reason: str


@dataclass
class _Generation:
    """One queued `generate` call awaiting its decoding batch."""

    input_ids: list[int]
    request: GenerationRequest
    future: asyncio.Future[_Generated]
    #: Set (from the event loop) once nobody awaits the result: the worker drops the row.
    abandoned: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Queue(Generic[_Q]):
    """Calls of one kind on one event loop, drained by one task into batches."""

    pending: list[_Q] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


@dataclass
class _Batcher:
    """Per-event-loop queues: `choose` calls and `generate` calls are batched separately."""

    scores: _Queue[_Pending] = field(default_factory=_Queue)
    generations: _Queue[_Generation] = field(default_factory=_Queue)


class LocalTransformersModel(ChatModelBase):
    """A transformers causal LM served in-process; implements `ChatModel`.

    It holds the weights and a worker thread until closed (see `ChatModelBase`).

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
        #: Batches decoded by `generate` (one prefill, then one pass per new token of the batch).
        self.generation_batches = 0
        #: Tokens decoded so far, counted as they are made: a batch's calls all return at its
        #: end, and this is how a job shows progress before they do.
        self.decoded_tokens = 0
        #: Decode with oneDNN pre-packed copies of the linear weights: ~1.8x faster on a CPU,
        #: for a second copy of the weights in memory (see `_PackedLinears`).
        self.pack_weights = True
        self._packed: _PackedLinears | None = None
        self._packing_failed = False
        #: torch's threads on the worker: a fair share of the cores (see `threads`).
        self.torch_threads = self._executor.submit(use_torch_threads).result()

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
            if not any((path / name).is_file() for name in _MODEL_FILES):
                raise ModelNotFoundError(
                    f"{str(path)!r} is not a model directory (no {' or '.join(_MODEL_FILES)}: "
                    "give a directory saved by transformers' save_pretrained)"
                )
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
                f"cannot load a transformers model from {source!r}: {_one_line(exc)}"
            ) from exc
        except Exception as exc:  # e.g. an architecture this transformers does not know
            raise BackendError(
                f"cannot load a transformers model from {source!r}: {_one_line(exc)}"
            ) from exc
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
        future: asyncio.Future[dict[str, float]] = asyncio.get_running_loop().create_future()
        queue = self._batcher().scores
        self._enqueue(
            queue, _Pending(input_ids, option_tokens, future), self._score_batch, "forward pass"
        )
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
        """Chat completion: greedy at temperature 0, else seeded sampling; returns new text only.

        Concurrent calls are decoded together in batches of up to `batch_size` rows.
        `usage.completion_tokens` counts every new token, the stop token included;
        `finish_reason` is "stop" when the model ended its turn, "length" when cut by
        `max_tokens`.
        """
        started = time.perf_counter()
        input_ids = self._encode_chat(request.messages)
        future: asyncio.Future[_Generated] = asyncio.get_running_loop().create_future()
        job = _Generation(input_ids, request, future)
        # However the future ends (a result, or a cancelled caller), the worker may drop the row.
        future.add_done_callback(lambda _: job.abandoned.set())
        self._enqueue(self._batcher().generations, job, self._generate_batch, "generation")
        generated = await future
        # Decoded here, not on the worker: the tokenizer is only ever used from one thread.
        text = str(self._tokenizer.decode(generated.token_ids, skip_special_tokens=True)).strip()
        return Completion(
            text=text,
            finish_reason=generated.finish_reason,
            usage=Usage(prompt_tokens=len(input_ids), completion_tokens=len(generated.token_ids)),
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
            self._packed = None
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

    def _batcher(self) -> _Batcher:
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = self._batchers[loop] = _Batcher()
        return batcher

    def _enqueue(
        self, queue: _Queue[_Q], item: _Q, work: Callable[[list[_Q]], list[Any]], what: str
    ) -> None:
        """Queue a call; start the task that drains its queue if none is running."""
        queue.pending.append(item)
        if queue.task is None or queue.task.done():
            queue.task = asyncio.get_running_loop().create_task(self._drain(queue, work, what))

    async def _drain(
        self, queue: _Queue[_Q], work: Callable[[list[_Q]], list[Any]], what: str
    ) -> None:
        """Feed queued calls to the model in batches until the queue is empty.

        Calls that arrive while a batch runs wait for the next one.
        """
        await asyncio.sleep(0)  # let calls scheduled in the same tick join the first batch
        while queue.pending:
            size = self._options.batch_size
            batch, queue.pending = queue.pending[:size], queue.pending[size:]
            batch = [p for p in batch if not p.future.done()]  # skip cancelled callers
            if not batch:
                continue
            try:
                results = await self._run(work, batch)
            except asyncio.CancelledError:
                for p in [*batch, *queue.pending]:
                    p.future.cancel()
                queue.pending.clear()
                raise
            except Exception as exc:
                error = _as_backend_error(exc, f"{what} with {self._spec!r} failed")
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(error)
                continue
            for p, result in zip(batch, results, strict=True):
                if not p.future.done():
                    p.future.set_result(result)

    def _left_pad(self, prompts: list[list[int]]) -> tuple[Any, Any, Any]:
        """Token ids, attention mask and position ids of left-padded prompts.

        Positions count real tokens only, so a padded row computes exactly like an unpadded one.
        """
        import torch

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        return ids, mask, positions

    def _score_batch(self, batch: list[_Pending]) -> list[dict[str, float]]:
        """One forward pass over left-padded prompts; option logprobs of each next token."""
        import torch

        ids, mask, positions = self._left_pad([p.input_ids for p in batch])
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

    def _generate_batch(self, batch: list[_Generation]) -> list[_Generated]:
        """Decode a batch of generation requests together (see `_decode`)."""
        import torch

        ids, mask, positions = self._left_pad([g.input_ids for g in batch])
        with self._lock:
            model = self._model
            if model is None:
                raise BackendError(f"model {self._spec!r} is closed")
            stop_ids = set(self._eos_ids())
            with torch.inference_mode(), self._packed_linears(model):
                generated = _decode(model, batch, ids, mask, positions, stop_ids, self._decoded)
            self.generation_batches += 1
        return generated

    def _decoded(self, tokens: int) -> None:
        self.decoded_tokens += tokens

    def _packed_linears(self, model: Any) -> contextlib.AbstractContextManager[None]:
        """Route the model's linear layers through pre-packed weights while decoding, if we can."""
        import torch

        if not self.pack_weights or self._packing_failed:
            self._packed = None
            return contextlib.nullcontext()
        if self._packed is None or not self._packed.fits(model):
            self._packed = None  # free a stale copy before building its successor
            try:
                self._packed = _PackedLinears(model, self._options.batch_size)
            except Exception as exc:  # no oneDNN, an op this torch lacks, a wrong result
                self._packing_failed = True
                logger.info("decoding %s with its weights as they are: %s", self._spec, exc)
                return contextlib.nullcontext()
            logger.debug(
                "packed %d linear layers of %s; decoding on %d torch threads",
                len(self._packed),
                self._spec,
                torch.get_num_threads(),
            )
        return self._packed.installed()

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


def _decode(
    model: Any,
    batch: list[_Generation],
    ids: Any,
    mask: Any,
    positions: Any,
    stop_ids: set[int],
    on_tokens: Callable[[int], None] | None = None,
) -> list[_Generated]:
    """Decode left-padded prompts together over a KV cache: one forward pass per new token.

    A row leaves the batch (and the cache) as soon as it ends: at a stop token, at its own
    `max_tokens`, or when its caller has gone, so finished rows cost the others nothing. Each
    sampling row draws from its own generator, seeded from its request, so its text does not
    depend on the rest of the batch. Call under `torch.inference_mode()`.
    """
    import torch

    cache = _new_cache(model)
    cache_arg = _cache_kwarg(model)
    generators = [_generator(g.request) for g in batch]
    produced: list[list[int]] = [[] for _ in batch]
    reasons = ["length"] * len(batch)
    live = list(range(len(batch)))  # the batch row behind each row of the cache
    logits = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **{cache_arg: cache},
    ).logits[:, -1, :]
    next_position = positions[:, -1:] + 1
    penalties = torch.tensor([g.request.frequency_penalty for g in batch])
    counts = torch.zeros((len(batch), logits.shape[-1])) if penalties.any() else None
    while True:
        if counts is not None:  # OpenAI's frequency penalty: tokens already in the reply
            logits = logits - penalties[live, None] * counts[live]
        tokens = logits.argmax(dim=-1)
        for slot, row in enumerate(live):
            if generators[row] is not None:
                temperature = batch[row].request.temperature
                tokens[slot] = _sample(logits[slot], temperature, generators[row])
        keep: list[int] = []
        if on_tokens is not None:
            on_tokens(len(live))
        for slot, token in enumerate(tokens.tolist()):
            row, job = live[slot], batch[live[slot]]
            produced[row].append(token)
            if counts is not None:
                counts[row, token] += 1
            if token in stop_ids:
                reasons[row] = "stop"
            elif len(produced[row]) < job.request.max_tokens and not job.abandoned.is_set():
                keep.append(slot)
        if not keep:
            break
        if len(keep) < len(live):
            index = torch.tensor(keep, dtype=torch.long)
            cache.batch_select_indices(index)
            tokens, mask, next_position = tokens[index], mask[index], next_position[index]
            live = [live[slot] for slot in keep]
        mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
        logits = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=next_position,
            use_cache=True,
            **{cache_arg: cache},
        ).logits[:, -1, :]
        next_position = next_position + 1
    return [_Generated(new, reason) for new, reason in zip(produced, reasons, strict=True)]


class _PackedLinears:
    """oneDNN copies of a model's float32 linear weights, reordered once for small batches.

    Why: each decoding step multiplies a few rows by every weight matrix, so on a CPU it is
    bound by streaming the weights from memory. On the project's machine, at 8 rows, MKL's
    sgemm (what `F.linear` calls) streamed SmolLM2's weights at ~9 GB/s and oneDNN's linear on
    weights reordered into its blocked layout at ~21 GB/s (a plain read: ~32 GB/s), which made
    decoding ~1.8x faster (BENCHMARKS.md, issue 11). The cost is a second copy of the weights
    while this object lives; it is rebuilt when a weight changes (a model being trained). The
    ops are torch internals (what torch.compile's CPU backend uses), so the first copy is
    checked against `F.linear` when built, and any failure means decoding without them.
    """

    def __init__(self, model: Any, batch_size: int) -> None:
        import torch

        self._layers = [m for m in model.modules() if _packable(m)]
        if not self._layers:
            raise BackendError("no float32 linear layers to pack")
        self._signature = _weights_signature(self._layers)
        reorder = torch.ops.mkldnn._reorder_linear_weight
        self._weights = [reorder(m.weight.detach(), batch_size) for m in self._layers]
        first = self._layers[0]
        probe = torch.randn(3, first.in_features, generator=torch.Generator().manual_seed(0))
        expected = torch.nn.functional.linear(probe, first.weight, first.bias)
        got = _packed_linear(self._weights[0], first.bias, probe)
        if not torch.allclose(got, expected, rtol=1e-4, atol=1e-4):
            raise BackendError("pre-packed weights disagree with F.linear")

    def __len__(self) -> int:
        return len(self._layers)

    def fits(self, model: Any) -> bool:
        """Whether these copies still match the model's linear layers and their weights."""
        layers = [m for m in model.modules() if _packable(m)]
        return layers == self._layers and _weights_signature(layers) == self._signature

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Make each linear layer compute with its packed copy until the block ends."""
        try:
            for layer, weight in zip(self._layers, self._weights, strict=True):
                layer.forward = functools.partial(_packed_linear, weight, layer.bias)
            yield
        finally:
            for layer in self._layers:
                layer.__dict__.pop("forward", None)


def _packable(module: Any) -> bool:
    import torch

    weight = getattr(module, "weight", None)
    return (
        isinstance(module, torch.nn.Linear)
        and "forward" not in module.__dict__  # someone else (e.g. accelerate) wraps it
        and isinstance(weight, torch.Tensor)
        and weight.dtype == torch.float32
        and weight.device.type == "cpu"
    )


def _weights_signature(layers: list[Any]) -> list[tuple[int, int]]:
    """Where each weight lives and how often it was changed in place."""
    return [(m.weight.data_ptr(), m.weight._version) for m in layers]


def _packed_linear(weight: Any, bias: Any, x: Any) -> Any:
    import torch

    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


def _generator(request: GenerationRequest) -> Any:
    """A private random generator for a sampling request (seeded if it has a seed); None if greedy.

    Private, so that neither the global RNG nor the other rows of a batch affect the draws.
    """
    import torch

    if request.temperature <= 0:
        return None
    generator = torch.Generator()
    if request.seed is None:
        generator.seed()
    else:
        generator.manual_seed(request.seed)
    return generator


def _sample(logits: Any, temperature: float, generator: Any) -> Any:
    """One token drawn from softmax(logits / temperature): plain sampling, no top-k or top-p."""
    import torch

    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[0]


def _new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def _cache_kwarg(model: Any) -> str:
    """transformers 5 names the forward argument `cache`; older versions `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


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
