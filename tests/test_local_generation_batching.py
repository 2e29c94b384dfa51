"""Batched local generation: concurrent `generate` calls decode together, each as if alone."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from charter.judge.backends.base import Completion, GenerationRequest, Message
from charter.judge.backends.local import LocalTransformersModel
from charter.judge.backends.options import BackendOptions
from tests.support.event_loop import ticks_during
from tests.support.tiny_models import tiny_model_dir  # noqa: F401

TOPICS = (
    "Hi",
    "What is the capital of France?",
    "Explain how photosynthesis works in simple terms for a ten year old child.",
    "Tell me a joke about computers.",
    "Summarise the following text in one sentence and keep every important fact: plants use "
    "sunlight, water and carbon dioxide to make sugar and release oxygen.",
    "How do I bake bread at home?",
)


@pytest.fixture(scope="module")
def lively(tiny_model_dir: Path) -> tuple[Any, Any]:  # noqa: F811
    """The tiny chat model's tokenizer and config, with untied, larger random weights.

    The shared tiny model ties its output layer to its embeddings, so greedy decoding repeats
    the prompt's last token ("\\n") forever and every greedy text is empty: useless for telling
    a batched decode from a solo one. Untied weights at a larger scale make the next token
    depend on the context (letting rows attend to their padding does change these outputs).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    config = AutoConfig.from_pretrained(str(tiny_model_dir))
    config.tie_word_embeddings = False
    config.initializer_range = 0.3
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.eval()
    return model, tokenizer


def _backend(lively: tuple[Any, Any], batch_size: int = 8) -> LocalTransformersModel:
    model, tokenizer = lively
    return LocalTransformersModel(
        model, tokenizer, spec="tiny-lively", options=BackendOptions(batch_size=batch_size)
    )


@pytest.fixture
def backend(lively: tuple[Any, Any]) -> LocalTransformersModel:
    return _backend(lively)


def _request(
    i: int, max_tokens: int = 12, temperature: float = 0.0, seed: int | None = None
) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message(role="user", content=TOPICS[i % len(TOPICS)]),),
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
    )


def _alone(backend: LocalTransformersModel, requests: Sequence[GenerationRequest]) -> list[Any]:
    async def run() -> list[Completion]:
        return [await backend.generate(r) for r in requests]

    return asyncio.run(run())


def _together(backend: LocalTransformersModel, requests: Sequence[GenerationRequest]) -> list[Any]:
    async def run() -> list[Completion]:
        return list(await asyncio.gather(*(backend.generate(r) for r in requests)))

    return asyncio.run(run())


def _same(one: Completion, other: Completion) -> None:
    assert other.text == one.text
    assert other.usage == one.usage
    assert other.finish_reason == one.finish_reason


def _greedy_reference(backend: LocalTransformersModel, request: GenerationRequest) -> str:
    """Argmax decoding token by token with the bare model: no cache, no batch, no padding; the
    request's frequency penalty as OpenAI defines it (logit - penalty x count so far)."""
    import torch

    tok = backend.tokenizer
    prompt = tok.apply_chat_template(
        [m.model_dump() for m in request.messages], tokenize=False, add_generation_prompt=True
    )
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    new: list[int] = []
    with torch.inference_mode():
        for _ in range(request.max_tokens):
            logits = backend.model(input_ids=torch.tensor([ids + new])).logits[0, -1]
            counts = torch.bincount(torch.tensor(new, dtype=torch.long), minlength=len(logits))
            token = int((logits - request.frequency_penalty * counts[: len(logits)]).argmax())
            new.append(token)
            if token == tok.eos_token_id:
                break
    return str(tok.decode(new, skip_special_tokens=True)).strip()


def test_greedy_is_the_same_alone_or_in_a_padded_batch(backend: LocalTransformersModel) -> None:
    # Mixed prompt lengths (so rows are padded) and mixed max_tokens (so rows leave early).
    requests = [_request(i, max_tokens) for i, max_tokens in enumerate((3, 12, 7, 12, 1, 9))]
    alone = _alone(backend, requests)
    assert backend.generation_batches == len(requests)
    together = _together(backend, requests)
    assert backend.generation_batches == len(requests) + 1  # one batch for all six
    for one, many in zip(alone, together, strict=True):
        _same(one, many)
    for request, completion in zip(requests, alone, strict=True):
        assert completion.usage.completion_tokens == request.max_tokens
        assert completion.finish_reason == "length"
    assert len({c.text for c in alone}) == len(requests)  # the rows really differ
    # And it is argmax decoding: the bare model, token by token, agrees.
    for request, completion in zip(requests, together, strict=True):
        assert completion.text == _greedy_reference(backend, request)


def test_packed_weights_decode_like_the_model_as_it_is(lively: tuple[Any, Any]) -> None:
    requests = [_request(i, 10) for i in range(4)]
    packed = _backend(lively)
    plain = _backend(lively)
    plain.pack_weights = False
    with_packing = _together(packed, requests)
    assert packed._packed is not None and len(packed._packed) > 0
    for one, other in zip(with_packing, _together(plain, requests), strict=True):
        _same(one, other)
    assert plain._packed is None


def test_packed_weights_follow_a_weight_changed_in_place(lively: tuple[Any, Any]) -> None:
    import torch

    model = lively[0]
    backend = _backend(lively)
    request = _request(2, 10)
    before = _alone(backend, [request])[0]
    with torch.no_grad():
        model.lm_head.weight.mul_(-1)  # e.g. an optimizer step
    try:
        after = _alone(backend, [request])[0]
        plain = _backend(lively)
        plain.pack_weights = False
        _same(_alone(plain, [request])[0], after)
        assert after.text != before.text
    finally:
        with torch.no_grad():
            model.lm_head.weight.mul_(-1)


def test_seeded_sampling_is_the_same_alone_or_in_a_batch(backend: LocalTransformersModel) -> None:
    import torch

    requests = [
        _request(0, 16, temperature=1.0, seed=1),
        _request(1, 16, temperature=0.7, seed=2),
        _request(2, 8, temperature=0.0),  # a greedy row in the same batch
        _request(3, 16, temperature=1.3, seed=3),
        _request(1, 16, temperature=0.7, seed=2),  # the same request twice
        _request(4, 12, temperature=1.0, seed=1),  # a seed shared with another prompt
    ]
    rng = torch.random.get_rng_state()
    alone = _alone(backend, requests)
    together = _together(backend, requests)
    for one, many in zip(alone, together, strict=True):
        _same(one, many)
    assert together[1].text == together[4].text
    assert len({c.text for c in together}) == len(requests) - 1
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global RNG is left alone
    # Another seed, another text; no seed, a fresh draw each time.
    other = _alone(backend, [_request(0, 16, temperature=1.0, seed=4)])[0]
    assert other.text != alone[0].text
    unseeded = _together(backend, [_request(0, 24, temperature=1.0)] * 2)
    assert unseeded[0].text != unseeded[1].text


def _eos_at(model: Any, token_id: int, step: int) -> Any:
    """Make `token_id` every row's argmax at the `step`-th forward pass (the step-th new token)."""
    passes = [0]

    def hook(module: Any, args: Any, output: Any) -> Any:
        passes[0] += 1
        if passes[0] != step:
            return None
        output = output.clone()
        output[..., token_id] += 1e4
        return output

    return model.lm_head.register_forward_hook(hook)


def test_finish_reason_says_why_each_row_stopped(backend: LocalTransformersModel) -> None:
    eos = backend.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert eos in backend._eos_ids()
    requests = [
        _request(0, max_tokens=3),  # cut before the model ends its turn
        _request(1, max_tokens=20),  # ends its turn at the 5th token
        _request(2, max_tokens=5),  # ends its turn with its last allowed token
    ]
    handle = _eos_at(backend.model, eos, step=5)
    try:
        cut, ended, just = _together(backend, requests)
    finally:
        handle.remove()
    assert (cut.finish_reason, cut.usage.completion_tokens) == ("length", 3)
    # The stop token counts as a generated token (as before batching); it is not in the text.
    assert (ended.finish_reason, ended.usage.completion_tokens) == ("stop", 5)
    assert (just.finish_reason, just.usage.completion_tokens) == ("stop", 5)
    assert "im_end" not in ended.text
    # The row that ended did so alone, too: the stop token ends the text it would have had.
    full = _alone(backend, [_request(1, max_tokens=4)])[0]
    assert ended.text == full.text


def test_concurrent_calls_make_fewer_batches_than_calls(lively: tuple[Any, Any]) -> None:
    backend = _backend(lively, batch_size=4)
    requests = [_request(i, 6) for i in range(8)]
    together = _together(backend, requests)
    assert backend.generation_batches == 2  # 8 calls, 4 rows per batch
    for one, many in zip(_alone(backend, requests), together, strict=True):
        _same(one, many)


class _Pause:
    """Holds the worker before forward pass number `at`, until released: a fixed mid-decode."""

    def __init__(self, model: Any, at: int, loop: asyncio.AbstractEventLoop) -> None:
        self.rows: list[int] = []  # batch rows of each forward pass
        self.reached = asyncio.Event()
        self.release = threading.Event()
        self._at, self._loop = at, loop
        self._handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        self.rows.append(int(kwargs["input_ids"].shape[0]))
        if len(self.rows) == self._at:
            self._loop.call_soon_threadsafe(self.reached.set)
            assert self.release.wait(timeout=30)

    def remove(self) -> None:
        self._handle.remove()


def test_a_cancelled_caller_leaves_the_others_unharmed(lively: tuple[Any, Any]) -> None:
    backend = _backend(lively, batch_size=3)
    requests = [_request(i, 10) for i in range(3)]
    queued = _request(3, 10)  # waits for the next batch, and is cancelled there
    expected = _alone(backend, requests)
    batches = backend.generation_batches

    async def scenario() -> tuple[list[Any], _Pause]:
        pause = _Pause(backend.model, at=4, loop=asyncio.get_running_loop())
        try:
            tasks = [asyncio.create_task(backend.generate(r)) for r in [*requests, queued]]
            await pause.reached.wait()
            tasks[1].cancel()  # mid-decode
            tasks[3].cancel()  # still queued
            for _ in range(3):
                await asyncio.sleep(0)  # let the cancellations reach the worker's flags
            pause.release.set()
            return list(await asyncio.gather(*tasks, return_exceptions=True)), pause
        finally:
            pause.remove()

    results, pause = asyncio.run(scenario())
    assert isinstance(results[1], asyncio.CancelledError)
    assert isinstance(results[3], asyncio.CancelledError)
    _same(expected[0], results[0])
    _same(expected[2], results[2])
    # The cancelled row left the batch at the pause; the queued call never ran.
    assert pause.rows[:4] == [3, 3, 3, 3] and set(pause.rows[4:]) == {2}
    assert backend.generation_batches == batches + 1


def test_calls_arriving_mid_decode_join_the_next_batch(lively: tuple[Any, Any]) -> None:
    backend = _backend(lively, batch_size=4)
    first, later = [_request(i, 8) for i in range(2)], [_request(i, 8) for i in range(2, 5)]
    expected = _alone(backend, [*first, *later])
    batches = backend.generation_batches

    async def scenario() -> list[Completion]:
        pause = _Pause(backend.model, at=3, loop=asyncio.get_running_loop())
        try:
            running = [asyncio.create_task(backend.generate(r)) for r in first]
            await pause.reached.wait()
            joining = [asyncio.create_task(backend.generate(r)) for r in later]
            await asyncio.sleep(0)
            pause.release.set()
            return list(await asyncio.gather(*running, *joining))
        finally:
            pause.remove()

    for one, other in zip(expected, asyncio.run(scenario()), strict=True):
        _same(one, other)
    assert backend.generation_batches == batches + 2


def test_decoding_never_blocks_the_event_loop(backend: LocalTransformersModel) -> None:
    def slow(*_: Any) -> None:
        time.sleep(0.01)  # a slow forward pass, as on a big model

    handle = backend.model.register_forward_pre_hook(slow)

    async def work() -> None:
        await asyncio.gather(*(backend.generate(_request(i, 30)) for i in range(2)))

    try:
        assert ticks_during(work) >= 10  # the loop kept running through ~0.3 s of decoding
    finally:
        handle.remove()


def test_frequency_penalty_is_per_row_and_matches_its_definition(
    backend: LocalTransformersModel,
) -> None:
    """OpenAI's frequency penalty: logit - penalty x (count of the token so far in the reply)."""

    plain = _request(2, max_tokens=64)  # long enough for the plain reply to repeat tokens
    penalised = plain.model_copy(update={"frequency_penalty": 2.0})
    [base, alone] = _alone(backend, [plain, penalised])
    together = _together(backend, [plain, penalised, _request(0, max_tokens=5)])
    _same(base, together[0])  # a neighbour's penalty does not touch this row
    _same(alone, together[1])
    assert alone.text != base.text
    assert alone.text == _greedy_reference(backend, penalised)
