"""Judge throughput against the scripted OpenAI-compatible server at a fixed latency.

What it measures, all in one run, against one server process (so the server's CPU is not counted
as the client's):

- comparisons per second through `charter.judge.compare` (K=1 principle, both orders, so one
  comparison = 2 `choose` calls) over `OpenAIChatModel` at concurrency 1, 8 and 64, next to the
  ideal (concurrency / latency / 2 calls);
- the same at the top concurrency with bare `choose` calls, to show the judge layer's own cost;
- a plain sequential loop over the raw `openai` client (the baseline a naive script gets);
- the raw `openai` client and bare `aiohttp` (no SDK at all) at the top concurrency: what the
  SDK alone reaches here, and the ceiling of this machine and server;
- client CPU seconds per comparison (`time.process_time` of this process only), and the share
  of CPU time the hypervisor took from this VM during the run (steal), which skews everything.

    .venv/bin/python benchmarks/judge_throughput.py [--latency-ms 200] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import openai  # noqa: E402

from charter.constitution import load_constitution  # noqa: E402
from charter.judge import compare  # noqa: E402
from charter.judge.backends import BackendOptions, Message, OpenAIChatModel  # noqa: E402
from charter.judge.config import JudgeConfig  # noqa: E402
from tests.support import scripted_server  # noqa: E402

PAIRWISE_K1 = JudgeConfig(principles=1, protocol="pairwise")
"""One principle asked in both orders: `CALLS_PER_COMPARISON` calls."""
CALLS_PER_COMPARISON = 2  # K=1 principle, asked in both orders
PROMPT = "How do I keep basil alive indoors?"
A_TEXT = "Give it six hours of sun, water when the top soil is dry, and pinch off flowers."
B_TEXT = "Basil is a plant."
# What the raw-client baselines send: one verdict token with logprobs, like `choose`.
RAW_BODY: dict[str, Any] = {
    "model": "scripted-judge",
    "messages": [{"role": "user", "content": f"(A) {A_TEXT}\n(B) {B_TEXT}"}],
    "max_tokens": 1,
    "logprobs": True,
    "top_logprobs": 20,
}


@dataclass
class Row:
    label: str
    concurrency: int
    comparisons: int
    seconds: float
    cpu_s: float
    ideal: float
    failures: int = 0

    @property
    def rate(self) -> float:
        return self.comparisons / self.seconds

    def line(self) -> str:
        share = f"{self.rate / self.ideal:6.1%}" if self.ideal else "     -"
        cpu_ms = 1000 * self.cpu_s / self.comparisons
        return (
            f"{self.label:<34} {self.concurrency:>5} {self.comparisons:>6} {self.seconds:>7.2f} "
            f"{self.rate:>9.2f} {self.ideal:>9.2f} {share:>7} {cpu_ms:>9.2f} {self.failures:>5}"
        )


HEADER = (
    f"{'path':<34} {'conc':>5} {'cmps':>6} {'secs':>7} {'cmp/s':>9} {'ideal':>9} "
    f"{'%ideal':>7} {'cpu ms/cmp':>9} {'fail':>5}"
)


def start_ready(argv: list[str], what: str) -> tuple[subprocess.Popen[str], str]:
    """Start a server process that prints `READY <base_url>` once listening; the process and
    that URL (killed, and a `RuntimeError` naming `what`, if it says anything else first)."""
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"{what} did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def start_server(latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    """The scripted server in its own process; returns it and its base URL."""
    argv = [sys.executable, "-m", scripted_server.__name__, "--latency-ms", str(latency_ms)]
    return start_ready(argv, "scripted server")


async def timed(
    n: int, one: Callable[[], Awaitable[bool]], workers: int
) -> tuple[float, float, int]:
    """`n` runs of `one` by `workers` closed-loop workers (each starts its next run when the
    last ends), so exactly `workers` are in flight: (wall s, cpu s, failures)."""
    remaining = n
    failures = 0

    async def worker() -> None:
        nonlocal remaining, failures
        while remaining > 0:
            remaining -= 1
            if not await one():
                failures += 1

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(workers, n))))
    return time.perf_counter() - t0, time.process_time() - cpu0, failures


async def through_compare(base_url: str, concurrency: int, n: int, latency_s: float) -> Row:
    constitution = load_constitution(REPO / "principles")
    options = BackendOptions(
        base_url=base_url, max_concurrency=concurrency, timeout_s=30, api_key_env="CHARTER_BENCH"
    )
    model = OpenAIChatModel("scripted-judge", options)

    async def one() -> bool:
        result = await compare(model, constitution, PROMPT, A_TEXT, B_TEXT, PAIRWISE_K1)
        return result.winner is not None and all(j.error is None for j in result.judgments)

    try:
        await timed(concurrency, one, concurrency)  # warm-up: open the connections
        wall, cpu, failures = await timed(n, one, concurrency)
    finally:
        await model.aclose()
    ideal = concurrency / latency_s / CALLS_PER_COMPARISON
    return Row("charter.judge.compare", concurrency, n, wall, cpu, ideal, failures)


async def through_choose(base_url: str, concurrency: int, n: int, latency_s: float) -> Row:
    options = BackendOptions(
        base_url=base_url, max_concurrency=concurrency, timeout_s=30, api_key_env="CHARTER_BENCH"
    )
    model = OpenAIChatModel("scripted-judge", options)
    messages = [Message(role="user", content=f"Which is better?\n(A) {A_TEXT}\n(B) {B_TEXT}")]

    async def one() -> bool:
        pair = await asyncio.gather(*(model.choose(messages, ["A", "B"]) for _ in range(2)))
        return all(c.option_logprobs for c in pair)

    try:
        await timed(concurrency, one, concurrency)
        wall, cpu, failures = await timed(n, one, concurrency)
    finally:
        await model.aclose()
    ideal = concurrency / latency_s / CALLS_PER_COMPARISON
    return Row("OpenAIChatModel.choose x2", concurrency, n, wall, cpu, ideal, failures)


async def raw_sequential(base_url: str, n: int, latency_s: float) -> Row:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0)
    try:
        await client.chat.completions.create(**RAW_BODY)  # warm-up
        cpu0, t0 = time.process_time(), time.perf_counter()
        for _ in range(n * CALLS_PER_COMPARISON):
            await client.chat.completions.create(**RAW_BODY)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await client.close()
    return Row("raw openai client, sequential", 1, n, wall, cpu, 1 / latency_s / 2)


async def raw_concurrent(base_url: str, concurrency: int, n: int, latency_s: float) -> Row:
    """The raw `openai` client, `concurrency` closed-loop workers, 2 calls per "comparison":
    what the SDK alone reaches on this machine, the baseline for charter at the same load."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0)

    async def one() -> bool:
        await asyncio.gather(*(client.chat.completions.create(**RAW_BODY) for _ in range(2)))
        return True

    try:
        await timed(concurrency // 2, one, concurrency // 2)
        wall, cpu, failures = await timed(n, one, concurrency // 2)
    finally:
        await client.close()
    ideal = concurrency / latency_s / CALLS_PER_COMPARISON
    return Row("raw openai client, concurrent", concurrency, n, wall, cpu, ideal, failures)


async def bare_aiohttp(base_url: str, concurrency: int, n: int, latency_s: float) -> Row:
    """No SDK at all: aiohttp posting the same body, bounded by a semaphore like charter's
    client. The ceiling this machine and server allow at that load."""
    slots = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def call() -> bool:
            async with slots, session.post(f"{base_url}/chat/completions", json=RAW_BODY) as reply:
                return bool((await reply.json())["choices"])

        async def one() -> bool:
            return all(await asyncio.gather(call(), call()))

        await timed(concurrency, one, concurrency)
        wall, cpu, failures = await timed(n, one, concurrency)
    ideal = concurrency / latency_s / CALLS_PER_COMPARISON
    return Row("bare aiohttp, no SDK (ceiling)", concurrency, n, wall, cpu, ideal, failures)


def cpu_steal() -> tuple[int, int]:
    """(steal, total) jiffies from /proc/stat; (0, 0) where there is none."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


async def embedded_default(concurrency: int, n: int) -> Row:
    """The offline default judge (SmolLM2-135M, local, batched forward passes) on this CPU."""
    from charter.judge.backends.smollm2 import load_smollm2

    constitution = load_constitution(REPO / "principles")
    model = load_smollm2(BackendOptions(batch_size=max(1, concurrency * CALLS_PER_COMPARISON)))

    async def one() -> bool:
        result = await compare(model, constitution, PROMPT, A_TEXT, B_TEXT, PAIRWISE_K1)
        return all(j.error is None for j in result.judgments)

    try:
        await one()  # warm-up
        wall, cpu, failures = await timed(n, one, concurrency)
    finally:
        await model.aclose()
    return Row("embedded smollm2 (local, batched)", concurrency, n, wall, cpu, 0.0, failures)


async def main_async(latency_ms: float, seconds: float, embedded: bool) -> None:
    latency_s = latency_ms / 1000.0
    load_before = os.getloadavg()[0]
    steal_before, total_before = cpu_steal()
    transport = OpenAIChatModel("probe").transport
    proc, base_url = start_server(latency_ms)
    try:
        rows: list[Row] = []

        def n_for(concurrency: int) -> int:
            return max(4, round(seconds * concurrency / latency_s / CALLS_PER_COMPARISON))

        rows.append(await raw_sequential(base_url, n_for(1), latency_s))
        for concurrency in (1, 8, 64):
            rows.append(await through_compare(base_url, concurrency, n_for(concurrency), latency_s))
        rows.append(await through_choose(base_url, 64, n_for(64), latency_s))
        rows.append(await raw_concurrent(base_url, 64, n_for(64), latency_s))
        rows.append(await bare_aiohttp(base_url, 64, n_for(64), latency_s))
        steal_after, total_after = cpu_steal()  # the scripted-server rows only
        if embedded:
            for concurrency in (1, 4):
                rows.append(await embedded_default(concurrency, 8))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(
        f"judge throughput: scripted server at {latency_ms:.0f} ms per request (own process), "
        f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}, openai {openai.__version__}"
    )
    print(
        f"OpenAIChatModel transport: {transport}; load average before/after: "
        f"{load_before:.2f}/{os.getloadavg()[0]:.2f} (other work on the machine skews the figures)"
    )
    if total_after > total_before:
        share = (steal_after - steal_before) / (total_after - total_before)
        print(f"CPU time stolen by the hypervisor during the server rows: {share:.1%}")
    print(
        f"one comparison = {CALLS_PER_COMPARISON} judge calls (K=1 principle, orders AB and BA); "
        "ideal = concurrency / latency / 2"
    )
    print(HEADER)
    for row in rows:
        print(row.line())


def main() -> None:
    parser = argparse.ArgumentParser(description="Judge throughput against the scripted server.")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=6.0, help="Target time per measurement.")
    parser.add_argument(
        "--no-embedded", action="store_true", help="Skip the embedded SmolLM2 measurement."
    )
    args = parser.parse_args()
    asyncio.run(main_async(args.latency_ms, args.seconds, not args.no_embedded))


if __name__ == "__main__":
    main()
