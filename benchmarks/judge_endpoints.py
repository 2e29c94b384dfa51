"""Judge throughput on three endpoints against one, when the endpoints are the bottleneck.

Each endpoint is the scripted OpenAI-compatible server in its own process, answering every
request after a fixed latency with at most `--server-slots` requests being answered at once
(the rest wait, as on a model server with a bounded batch), so one endpoint serves at most
slots / latency calls per second however many the client sends. The client keeps `--workers`
`choose` calls in flight (closed-loop workers, enough to fill three endpoints) through
`load_model("openai:...")`: one URL gives an `OpenAIChatModel` (the baseline, measured in the
same run), three give an `EndpointPool`.

    .venv/bin/python benchmarks/judge_endpoints.py [--latency-ms 100] [--server-slots 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.judge_throughput import start_ready  # noqa: E402
from charter.judge import BackendOptions, Message  # noqa: E402
from charter.judge.backends.endpoints import EndpointPool  # noqa: E402
from charter.judge.backends.registry import load_model  # noqa: E402
from tests.support import scripted_server  # noqa: E402

TARGET_RATIO = 2.7
VERDICT = [Message(role="user", content="(A) six hours of sun\n(B) a plant\nWhich is better?")]


@dataclass
class Row:
    label: str
    endpoints: int
    calls: int
    seconds: float
    cpu_s: float
    ideal: float
    failures: int

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def line(self) -> str:
        return (
            f"{self.label:<26} {self.endpoints:>9} {self.calls:>6} {self.seconds:>7.2f} "
            f"{self.rate:>8.1f} {self.ideal:>7.1f} {self.rate / self.ideal:>7.1%} "
            f"{1000 * self.cpu_s / self.calls:>10.2f} {self.failures:>5}"
        )


HEADER = (
    f"{'judge':<26} {'endpoints':>9} {'calls':>6} {'secs':>7} {'calls/s':>8} {'ideal':>7} "
    f"{'%ideal':>7} {'cpu ms/call':>10} {'fail':>5}"
)


def start_server(latency_ms: float, slots: int) -> tuple[subprocess.Popen[str], str]:
    """One scripted server in its own process; returns it and its base URL."""
    argv = [
        sys.executable, "-m", scripted_server.__name__,
        "--latency-ms", str(latency_ms), "--max-concurrency", str(slots),
    ]  # fmt: skip
    return start_ready(argv, "scripted server")


async def measure(label: str, urls: list[str], workers: int, calls: int, ideal: float) -> Row:
    """`calls` choose calls by `workers` closed-loop workers through the model `urls` make."""
    options = BackendOptions(base_url=",".join(urls), max_concurrency=workers, timeout_s=60)
    model = load_model("openai:scripted-judge", options)
    remaining, failures = calls, 0

    async def worker() -> None:
        nonlocal remaining, failures
        while remaining > 0:
            remaining -= 1
            completion = await model.choose(VERDICT, ["A", "B"])
            failures += completion.text.strip() != "A"

    async with model:
        await model.choose(VERDICT, ["A", "B"])  # connections and the client, warmed up
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if isinstance(model, EndpointPool):
            shares = ", ".join(f"{e['calls']}" for e in model.counts())
            print(f"  {label}: calls per endpoint (warm-up included): {shares}")
    return Row(label, len(urls), calls, wall, cpu, ideal, failures)


async def main_async(latency_ms: float, slots: int, workers: int, seconds: float) -> None:
    latency_s = latency_ms / 1000.0
    per_endpoint = slots / latency_s  # what one endpoint can serve, calls per second
    load_before = os.getloadavg()[0]
    servers = [start_server(latency_ms, slots) for _ in range(3)]
    urls = [url for _, url in servers]
    try:
        one = await measure(
            "OpenAIChatModel (1 URL)", urls[:1], workers, round(seconds * per_endpoint),
            per_endpoint,
        )  # fmt: skip
        three = await measure(
            "EndpointPool (3 URLs)", urls, workers, round(seconds * 3 * per_endpoint),
            3 * per_endpoint,
        )  # fmt: skip
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(timeout=10)
    print(
        f"judge endpoints: 3 scripted servers (own processes), {latency_ms:.0f} ms per request, "
        f"at most {slots} answered at once each; {workers} calls kept in flight; "
        f"{os.cpu_count()} CPUs; load average before/after {load_before:.2f}/"
        f"{os.getloadavg()[0]:.2f}"
    )
    print("ideal = endpoints x slots / latency")
    print(HEADER)
    print(one.line())
    print(three.line())
    ratio = three.rate / one.rate
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(f"throughput ratio, 3 endpoints / 1: {ratio:.2f}x ({verdict} the {TARGET_RATIO}x target)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument(
        "--server-slots", type=int, default=4, help="Requests each answers at once."
    )
    parser.add_argument(
        "--workers", type=int, default=24, help="Calls in flight (enough to fill 3 endpoints)."
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="Target time per measurement.")
    args = parser.parse_args()
    asyncio.run(main_async(args.latency_ms, args.server_slots, args.workers, args.seconds))


if __name__ == "__main__":
    main()
