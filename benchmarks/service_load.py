"""Load on `POST /v1/feedback/compare` of `charter serve`, next to the judge alone, in one run.

Three processes: the scripted judge server (fixed latency, constant verdict), `charter serve`
pointed at it, and this load generator. At each client concurrency, closed-loop workers send
requests for a fixed time and record each latency. Two paths are measured the same way:

- `judge alone`: what one comparison costs at the judge: its 2 calls (K=1 principle, orders
  AB and BA) sent straight to the scripted server, concurrently, as the service sends them;
- `judge.compare`: `charter.judge.compare` called in this process (prompt building, the openai
  client, parsing, aggregation): the judge layer's own cost, no HTTP service in front;
- `service compare`: the same comparison through the service (HTTP, auth, validation, the
  judge layer, JSON of the full `Comparison`).

The differences in p50/p99 are the overheads; requests/s shows where each saturates. On 2 cores
the three processes share the CPU, so at high concurrency the figures measure CPU per request.

    .venv/bin/python benchmarks/service_load.py [--latency-ms 100] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from benchmarks.judge_throughput import (  # noqa: E402
    A_TEXT,
    B_TEXT,
    CALLS_PER_COMPARISON,
    PAIRWISE_K1,
    PROMPT,
    RAW_BODY,
    start_server,
)
from benchmarks.serving import start_service  # noqa: E402
from charter.constitution import load_constitution  # noqa: E402
from charter.judge import compare  # noqa: E402
from charter.judge.backends import BackendOptions, OpenAIChatModel  # noqa: E402
from tests.support.generation import write_constitution  # noqa: E402

CONCURRENCY = (1, 16, 64)


@dataclass
class Row:
    label: str
    concurrency: int
    latencies: list[float]
    seconds: float
    failures: int
    burst: list[float] = field(default_factory=list)
    """Latencies of `concurrency` requests sent at the same instant (after a warm-up round)."""
    unrecorded: int = 0
    """Requests sent but not measured (warm-up, settling)."""

    def line(self) -> str:
        n = len(self.latencies)
        return (
            f"{self.label:<18} {self.concurrency:>5} {n:>7} {n / self.seconds:>9.1f} "
            f"{self.p50_ms:>9.1f} {self.p99_ms:>9.1f} {self.failures:>5}"
        )

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")

    @property
    def p99_ms(self) -> float:
        ordered = sorted(self.latencies)
        n = len(ordered)
        return ordered[min(n - 1, int(0.99 * n))] * 1000 if ordered else float("nan")


HEADER = (
    f"{'path':<18} {'conc':>5} {'reqs':>7} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'fail':>5}"
)


def start_compare_service(
    judge_url: str, token: str, workdir: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """`charter serve` from this tree (K=1 principle, 512 comparisons at once)."""
    principles = write_constitution(workdir / "principles", k=1)
    args = [
        "--dir", str(principles), "--judge", "openai:scripted-judge",
        "--judge-base-url", judge_url, "--concurrency", "512",
    ]  # fmt: skip
    return start_service(args, token, workdir, timeout_s=60)


async def closed_loop(
    label: str,
    concurrency: int,
    seconds: float,
    one: Callable[[], Awaitable[bool]],
    *,
    settle_s: float = 0.0,
) -> Row:
    """`concurrency` workers, each sending its next request as soon as the last is answered.

    Two warm-up rounds send `concurrency` requests at the same instant (connections, caches);
    the second round's latencies are kept as the row's `burst`. With `settle_s`, the workers
    then start at random instants spread over that period (seeded) and only requests sent
    after it are measured. Otherwise they all start at once, and against a server of fixed
    latency they stay in step: every round is a burst, and its queueing is the tail.
    """
    latencies: list[float] = []
    failures = 0
    unrecorded = 0
    record_from = deadline = 0.0

    async def worker(delay_s: float) -> None:
        nonlocal failures, unrecorded
        await asyncio.sleep(delay_s)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            ok = await one()
            if started < record_from:
                unrecorded += 1
            elif ok:
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1

    async def timed() -> float:
        started = time.perf_counter()
        await one()
        return time.perf_counter() - started

    await asyncio.gather(*(one() for _ in range(concurrency)))
    burst = await asyncio.gather(*(timed() for _ in range(concurrency)))
    record_from = time.perf_counter() + settle_s
    deadline = record_from + seconds
    offsets = random.Random(concurrency)
    await asyncio.gather(*(worker(offsets.uniform(0, settle_s)) for _ in range(concurrency)))
    return Row(
        label,
        concurrency,
        latencies,
        time.perf_counter() - record_from,
        failures,
        burst=list(burst),
        unrecorded=unrecorded + 2 * concurrency,
    )


def _session(connections: int, headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
    """aiohttp: the cheapest client per request here, so the load generator's CPU (on the same
    cores as the servers) skews the figures least; every connection is kept alive."""
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers)


async def judge_alone(judge_url: str, concurrency: int, seconds: float) -> Row:
    async with _session(concurrency * CALLS_PER_COMPARISON) as session:

        async def call() -> bool:
            async with session.post(f"{judge_url}/chat/completions", json=RAW_BODY) as response:
                await response.read()
                return response.status == 200

        async def one() -> bool:
            return all(await asyncio.gather(*(call() for _ in range(CALLS_PER_COMPARISON))))

        return await closed_loop("judge alone", concurrency, seconds, one)


async def through_service(url: str, token: str, concurrency: int, seconds: float) -> Row:
    body = {"prompt": PROMPT, "a": A_TEXT, "b": B_TEXT, "principles": 1}
    async with _session(concurrency, {"Authorization": f"Bearer {token}"}) as session:

        async def one() -> bool:
            async with session.post(f"{url}/v1/feedback/compare", json=body) as response:
                data = await response.json()
                return response.status == 200 and data["winner"] is not None

        return await closed_loop("service compare", concurrency, seconds, one)


async def judge_layer(judge_url: str, principles: Path, concurrency: int, seconds: float) -> Row:
    """`charter.judge.compare` in this process: the judge layer's cost without HTTP in front."""
    constitution = load_constitution(principles)
    options = BackendOptions(base_url=judge_url, max_concurrency=512, timeout_s=30)
    model = OpenAIChatModel("scripted-judge", options)

    async def one() -> bool:
        result = await compare(model, constitution, PROMPT, A_TEXT, B_TEXT, PAIRWISE_K1)
        return result.winner is not None

    try:
        return await closed_loop("judge.compare", concurrency, seconds, one)
    finally:
        await model.aclose()


async def run(
    judge_url: str, url: str, token: str, principles: Path, seconds: float
) -> list[tuple[Row, Row, Row]]:
    rows = []
    for concurrency in CONCURRENCY:
        alone = await judge_alone(judge_url, concurrency, seconds)
        layer = await judge_layer(judge_url, principles, concurrency, seconds)
        served = await through_service(url, token, concurrency, seconds)
        rows.append((alone, layer, served))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=5.0, help="Time per measurement.")
    args = parser.parse_args()
    token = secrets.token_urlsafe(32)
    load_before = os.getloadavg()[0]
    judge_proc, judge_url = start_server(args.latency_ms)
    try:
        with tempfile.TemporaryDirectory(prefix="charter-bench-") as tmp:
            service_proc, url = start_compare_service(judge_url, token, Path(tmp))
            try:
                principles = Path(tmp) / "principles"
                rows = asyncio.run(run(judge_url, url, token, principles, args.seconds))
            finally:
                service_proc.terminate()
                service_proc.wait(timeout=15)
    finally:
        judge_proc.terminate()
        judge_proc.wait(timeout=10)
    print(
        f"service load: scripted judge at {args.latency_ms:.0f} ms per call (own process), "
        f"charter serve (own process), {os.cpu_count()} CPUs, python {sys.version.split()[0]}"
    )
    print(
        f"one comparison = {CALLS_PER_COMPARISON} concurrent judge calls (K=1, AB and BA); "
        f"{args.seconds:.0f} s per row; load average before/after: "
        f"{load_before:.2f}/{os.getloadavg()[0]:.2f}"
    )
    print(HEADER)
    for trio in rows:
        for row in trio:
            print(row.line())
    print("p50 added over the judge alone: by the judge layer (in-process), by the whole service")
    for alone, layer, served in rows:
        print(
            f"  concurrency {alone.concurrency:>3}: "
            f"judge layer {layer.p50_ms - alone.p50_ms:+.1f} ms,"
            f" service {served.p50_ms - alone.p50_ms:+.1f} ms"
        )


if __name__ == "__main__":
    main()
