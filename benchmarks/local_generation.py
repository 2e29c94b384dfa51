"""Batched local generation (issue 11): concurrent `generate` calls on the embedded SmolLM2.

All in one run, with the model loaded once:

- baseline: the path before issue 11, HF `model.generate` one request at a time on the
  backend's single worker thread (`baseline_generate_sync` below is a faithful copy of the old
  `_generate_sync`), `--requests` concurrent requests of `--tokens` new tokens each;
- the batched `LocalTransformersModel.generate`: the same requests, decoded together, with
  its oneDNN pre-packed weights (the default) and without them (`pack_weights = False`);
- a 2048x2048 fp32 matmul, for this CPU's GFLOP/s, and the fraction of it each path reaches.

Both paths generate exactly `--tokens` new tokens per request (asserted): the baseline passes
`min_new_tokens` (HF masks the stop tokens until then), and the batched path runs with the
backend's stop tokens emptied (`_eos_ids` returns []), so each row runs to its `max_tokens`.
Greedy decoding on both; prompts of different lengths, so the batch is really padded.

FLOPs per generated token are approximated as 2 x parameters (every weight multiplies and
adds once; the tied embedding counted once, as the output projection) plus attention,
4 x layers x hidden size x context, at the mean context of the run; prompt tokens are not counted.

    .venv/bin/python benchmarks/local_generation.py [--requests 8] [--tokens 256]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from charter.judge.backends import BackendOptions, GenerationRequest, Message  # noqa: E402
from charter.judge.backends.base import BackendError  # noqa: E402
from charter.judge.backends.local import LocalTransformersModel  # noqa: E402

TOPICS = (
    "Why is the sky blue?",
    "Write a short poem about the sea.",
    "Explain how photosynthesis works in simple terms for a ten year old child.",
    "What should I pack for a weekend of hiking in the mountains in early spring?",
    "Give me three tips for learning a new language.",
    "Describe the water cycle, step by step, and say why each step matters for plants, "
    "animals and people who live far from the sea.",
    "How do I bake bread at home?",
    "Tell me a story about a cat who wants to become a sailor.",
)


def requests(n: int, tokens: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            messages=(Message(role="user", content=TOPICS[i % len(TOPICS)]),),
            max_tokens=tokens,
            temperature=0,
        )
        for i in range(n)
    ]


def baseline_generate_sync(
    backend: LocalTransformersModel, input_ids: list[int], request: GenerationRequest
) -> list[int]:
    """The old `LocalTransformersModel._generate_sync`, with `min_new_tokens` added."""
    import torch
    from transformers import GenerationConfig

    sample = request.temperature > 0
    ids = torch.tensor([input_ids], dtype=torch.long)
    mask = torch.ones_like(ids)
    with backend._lock:
        if backend._model is None:
            raise BackendError(f"model {backend._spec!r} is closed")
        config = GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=request.max_tokens,
            min_new_tokens=request.max_tokens,  # benchmark only: exactly max_tokens new tokens
            do_sample=sample,
            temperature=request.temperature if sample else None,
            top_p=1.0 if sample else None,
            top_k=0 if sample else None,
            eos_token_id=backend._eos_ids() or None,
            pad_token_id=backend._pad_id,
        )
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            if sample and request.seed is not None:
                torch.manual_seed(request.seed)
            elif sample:
                torch.seed()
            out = backend._model.generate(
                input_ids=ids, attention_mask=mask, generation_config=config
            )
    new: list[int] = out[0, len(input_ids) :].tolist()
    return new


async def baseline_generate(backend: LocalTransformersModel, request: GenerationRequest) -> int:
    """The old `generate`: one `model.generate` per call on the worker; new tokens made."""
    input_ids = backend._encode_chat(request.messages)
    new_ids = await backend._run(baseline_generate_sync, backend, input_ids, request)
    backend.tokenizer.decode(new_ids, skip_special_tokens=True)
    return len(new_ids)


async def batched_generate(backend: LocalTransformersModel, request: GenerationRequest) -> int:
    completion = await backend.generate(request)
    return completion.usage.completion_tokens


async def timed(backend: LocalTransformersModel, fn: Any, reqs: list[GenerationRequest]) -> float:
    started = time.perf_counter()
    made = await asyncio.gather(*(fn(backend, r) for r in reqs))
    wall = time.perf_counter() - started
    expected = [r.max_tokens for r in reqs]
    assert list(made) == expected, f"new tokens {made} != {expected}"
    return wall


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def flops_per_token(model: Any, mean_context: float) -> float:
    config = model.config
    params = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    attention = 4 * config.num_hidden_layers * config.hidden_size * mean_context
    return float(2 * params + attention)


async def main_async(n: int, tokens: int, skip_baseline: bool) -> None:
    import torch

    from charter.judge.backends.smollm2 import load_smollm2

    backend = load_smollm2(BackendOptions(batch_size=n))
    threads = await backend._run(torch.get_num_threads)
    reqs = requests(n, tokens)
    prompt_tokens = [len(backend._encode_chat(r.messages)) for r in reqs]
    mean_context = sum(prompt_tokens) / n + tokens / 2
    total = n * tokens
    gflops = await backend._run(matmul_gflops)
    per_token = flops_per_token(backend.model, mean_context)
    load_before = os.getloadavg()[0]

    warm = requests(1, 8)
    await timed(backend, baseline_generate, warm)
    baseline_s = 0.0 if skip_baseline else await timed(backend, baseline_generate, reqs)
    backend._eos_ids = list  # type: ignore[method-assign]  # no stop token: exactly max_tokens
    started = time.perf_counter()
    await timed(backend, batched_generate, warm)  # packs the weights, once per model
    first_call_s = time.perf_counter() - started
    batches_before = backend.generation_batches
    batched_s = await timed(backend, batched_generate, reqs)
    batches = backend.generation_batches - batches_before
    backend.pack_weights = False
    unpacked_s = await timed(backend, batched_generate, reqs)
    await backend.aclose()

    print(
        f"local generation: embedded smollm2, {n} concurrent requests x {tokens} new tokens "
        f"(greedy), prompts of {min(prompt_tokens)}-{max(prompt_tokens)} tokens; "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} with {threads} threads on the worker; "
        f"load average before/after {load_before:.2f}/{os.getloadavg()[0]:.2f}"
    )
    print(
        f"fp32 matmul 2048x2048: {gflops:.1f} GFLOP/s; FLOPs per new token ~ 2 x params + "
        f"attention at mean context {mean_context:.0f} = {per_token / 1e6:.0f} MFLOP"
    )
    print(f"{'path':<52} {'seconds':>8} {'tokens/s':>9} {'GFLOP/s':>8} {'% of matmul':>12}")
    rows = [
        ("HF model.generate, one request at a time (old)", baseline_s),
        (f"batched generate, {batches} batch (issue 11)", batched_s),
        ("batched generate, weights not pre-packed", unpacked_s),
    ]
    for label, seconds in rows[1 if skip_baseline else 0 :]:
        rate = total / seconds
        achieved = rate * per_token / 1e9
        print(
            f"{label:<52} {seconds:>8.2f} {rate:>9.1f} {achieved:>8.1f} {achieved / gflops:>12.1%}"
        )
    print(f"first batched call (8 new tokens), packing the weights once: {first_call_s:.2f} s")
    if not skip_baseline:
        print(
            f"speed-up over the old path: {baseline_s / batched_s:.2f}x (target >= 8x); "
            f"without pre-packed weights {baseline_s / unpacked_s:.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=8, help="Concurrent requests (batch size).")
    parser.add_argument("--tokens", type=int, default=256, help="New tokens per request.")
    parser.add_argument(
        "--skip-baseline", action="store_true", help="Measure only the batched path (quicker)."
    )
    args = parser.parse_args()
    asyncio.run(main_async(args.requests, args.tokens, args.skip_baseline))


if __name__ == "__main__":
    main()
