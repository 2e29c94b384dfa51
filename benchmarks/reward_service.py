"""Load on `POST /v1/rewards/openrlhf` of `charter serve`, next to the judge alone, in one run.

Three processes: a scripted judge (fixed latency, answers "Yes"; this file re-run with
`--serve-judge`), `charter serve` pointed at it (K=1: one judge call per single-response
reward request), and this load generator. At 16, 64 and 256 concurrent requests, closed-loop
workers send requests for a fixed time:

- `judge alone`: the reward's one judge call sent straight to the scripted judge;
- `reward route`: OpenRLHF's request (one query) through the service.

Each measured window follows a second of unrecorded load in which the workers start at random
instants: with all of them starting at once against a judge of fixed latency they would stay
in step, every round a burst of `concurrency` simultaneous requests. The steady-state p99
added is the route's p99 minus the judge's own; the burst is reported apart (the slowest of
`concurrency` requests sent at the same instant, against the judge's own slowest).

charter's CPU per request is the service process's CPU time (from /proc) over the requests
it answered, and where it goes is measured in this process, without the network: the route's
own work (OpenRLHF body validation, the prompt split, the response JSON), the reward core with
a model that answers at once (prompt building, parsing, the deadline's tasks), and the openai
SDK's HTTP work for one call to the scripted judge. The rest of the service's CPU is uvicorn
and FastAPI.

    .venv/bin/python benchmarks/reward_service.py [--latency-ms 100] [--seconds 5] \
        [--concurrency 16,64,256]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from benchmarks.judge_throughput import start_ready  # noqa: E402
from benchmarks.service_load import Row, closed_loop, start_compare_service  # noqa: E402
from charter.constitution import Constitution, load_constitution  # noqa: E402
from charter.judge.backends import BackendOptions, OpenAIChatModel  # noqa: E402
from charter.judge.backends.base import Completion, GenerationRequest, Message  # noqa: E402
from charter.judge.prompts import SCORE_OPTIONS  # noqa: E402
from charter.judge.reward import ConstitutionRewarder, RewardItem  # noqa: E402
from charter.service import openrlhf  # noqa: E402
from charter.service.reward_schemas import OpenRLHFRewardRequest  # noqa: E402
from tests.support.scripted_server import ConstantResponder, ScriptedJudgeServer  # noqa: E402

CONCURRENCY = (16, 64, 256)
SETTLE_S = 1.0
"""Unrecorded closed-loop time before each measured window: the steady state is measured."""
PROMPT = "<|im_start|>user\nHow do I keep basil alive indoors?<|im_end|>\n<|im_start|>assistant\n"
RESPONSE = "Give it six hours of sun, water when the top soil is dry, and pinch off flowers."
BODY = {"query": [PROMPT + RESPONSE + "<|im_end|>"], "prompts": [PROMPT], "labels": [None]}
JUDGE_BODY = {
    "model": "scripted-judge",
    "messages": [{"role": "user", "content": f"{PROMPT}\n{RESPONSE}\nDoes it? Yes or No."}],
    "max_tokens": 1,
    "logprobs": True,
    "top_logprobs": 5,
}


def serve_judge(latency_ms: float) -> None:
    """The scripted judge in this process until killed: "Yes" (with logprobs) to everything."""
    server = ScriptedJudgeServer(ConstantResponder("Yes", p=0.8), latency_s=latency_ms / 1000)
    server.start()
    sys.stdout.write(f"READY {server.base_url}\n")
    sys.stdout.flush()
    threading.Event().wait()


def start_judge(latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    return start_ready(
        [sys.executable, __file__, "--serve-judge", "--latency-ms", str(latency_ms)],
        "scripted judge",
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _session(connections: int, headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60), headers=headers
    )


async def judge_alone(judge_url: str, concurrency: int, seconds: float) -> Row:
    async with _session(concurrency) as session:

        async def one() -> bool:
            async with session.post(f"{judge_url}/chat/completions", json=JUDGE_BODY) as reply:
                await reply.read()
                return reply.status == 200

        return await closed_loop("judge alone", concurrency, seconds, one, settle_s=SETTLE_S)


async def reward_route(
    url: str, token: str, concurrency: int, seconds: float, pid: int
) -> tuple[Row, float]:
    """The route under load, and the service's CPU seconds per answered request."""
    async with _session(concurrency, {"Authorization": f"Bearer {token}"}) as session:

        async def one() -> bool:
            async with session.post(f"{url}/v1/rewards/openrlhf", json=BODY) as reply:
                data = await reply.json()
                return reply.status == 200 and data["extra_logs"]["charter/fallback"] == [0.0]

        cpu0 = cpu_seconds(pid)
        row = await closed_loop("reward route", concurrency, seconds, one, settle_s=SETTLE_S)
        answered = len(row.latencies) + row.failures + row.unrecorded
        return row, (cpu_seconds(pid) - cpu0) / answered


class AnswersAtOnce:
    """A model that says "Yes" with no I/O: isolates the reward core's own CPU."""

    spec = "instant"

    async def generate(self, request: GenerationRequest) -> Completion:
        return Completion(text="Yes")

    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion:
        return Completion(text="Yes", option_logprobs={"Yes": math.log(0.8), "No": math.log(0.2)})

    async def aclose(self) -> None:
        return None


def route_work_ms(constitution: Constitution, n: int = 2000) -> float:
    """CPU ms per request of the route's own work: validate, split, answer as JSON."""
    from charter.judge.reward import Reward

    reward = Reward(0.8, {constitution.enabled[0].id: 0.8})
    cpu0 = time.process_time()
    for _ in range(n):
        body = OpenRLHFRewardRequest.model_validate_json(_BODY_JSON)
        _, splits = openrlhf.items_of(body)
        openrlhf.response_of([reward], splits, constitution).model_dump_json()
    return (time.process_time() - cpu0) / n * 1000


_BODY_JSON = __import__("json").dumps(BODY)


async def core_ms(constitution: Constitution, n: int = 2000) -> float:
    """CPU ms per single-response reward in the core, with a model that answers at once."""
    rewarder = ConstitutionRewarder(AnswersAtOnce(), constitution)
    item = RewardItem(PROMPT, RESPONSE)
    await rewarder.rewards([item])
    cpu0 = time.process_time()
    for _ in range(n):
        await rewarder.rewards([item])
    return (time.process_time() - cpu0) / n * 1000


async def sdk_ms(judge_url: str, n: int = 300) -> float:
    """CPU ms per judge call in the openai SDK (HTTP, JSON), this process, one at a time."""
    model = OpenAIChatModel("scripted-judge", BackendOptions(base_url=judge_url, timeout_s=30))
    messages = [Message(role="user", content=JUDGE_BODY["messages"][0]["content"])]  # type: ignore[index]
    try:
        await model.choose(messages, SCORE_OPTIONS)
        cpu0 = time.process_time()
        for _ in range(n):
            await model.choose(messages, SCORE_OPTIONS)
        return (time.process_time() - cpu0) / n * 1000
    finally:
        await model.aclose()


def burst_max(row: Row) -> float:
    """The slowest of the requests sent at the same instant, in ms."""
    return max(row.burst) * 1000 if row.burst else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=5.0, help="Time per measurement.")
    parser.add_argument(
        "--concurrency",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        default=CONCURRENCY,
        help="Comma-separated concurrent request counts (default: 16,64,256).",
    )
    parser.add_argument("--serve-judge", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_judge:
        serve_judge(args.latency_ms)
        return
    token = secrets.token_urlsafe(32)
    load_before = os.getloadavg()[0]
    judge_proc, judge_url = start_judge(args.latency_ms)
    rows: list[tuple[Row, Row, float]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="charter-bench-") as tmp:
            service_proc, url = start_compare_service(judge_url, token, Path(tmp))
            constitution = load_constitution(Path(tmp) / "principles")
            try:
                for concurrency in args.concurrency:
                    alone = asyncio.run(judge_alone(judge_url, concurrency, args.seconds))
                    served, cpu = asyncio.run(
                        reward_route(url, token, concurrency, args.seconds, service_proc.pid)
                    )
                    rows.append((alone, served, cpu))
            finally:
                service_proc.terminate()
                service_proc.wait(timeout=15)
            route = route_work_ms(constitution)
            core = asyncio.run(core_ms(constitution))
    finally:
        judge_proc.terminate()
        judge_proc.wait(timeout=10)
    fast_proc, fast_url = start_judge(0.0)
    try:
        sdk = asyncio.run(sdk_ms(fast_url))
    finally:
        fast_proc.terminate()
        fast_proc.wait(timeout=10)

    print(
        f"reward service: scripted judge at {args.latency_ms:.0f} ms per call (own process), "
        f"charter serve (own process), {os.cpu_count()} CPUs, python {sys.version.split()[0]}; "
        f"one reward request = 1 query = 1 judge call (K=1); {args.seconds:.0f} s per row after "
        f"{SETTLE_S:.0f} s unrecorded (steady state); "
        f"load average before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f}"
    )
    print(f"{'path':<14} {'conc':>5} {'reqs':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'p99 added':>10} {'burst max':>10} {'added':>7} {'svc CPU ms/req':>15} "
          f"{'fail':>5}")  # fmt: skip
    for alone, served, cpu in rows:
        for row in (alone, served):
            n = len(row.latencies)
            added = f"{served.p99_ms - alone.p99_ms:+.1f}" if row is served else ""
            burst_added = f"{burst_max(served) - burst_max(alone):+.1f}" if row is served else ""
            cpu_text = f"{cpu * 1000:.2f}" if row is served else ""
            print(
                f"{row.label:<14} {row.concurrency:>5} {n:>7} {n / row.seconds:>8.1f} "
                f"{row.p50_ms:>8.1f} {row.p99_ms:>8.1f} "
                f"{added:>10} {burst_max(row):>10.1f} {burst_added:>7} {cpu_text:>15} "
                f"{row.failures:>5}"
            )
    print(
        "p99 added: the route's steady-state p99 minus the judge's own; burst max: the slowest "
        "of `conc` requests sent at the same instant (each waits for the CPU the others use)."
    )
    print("charter CPU per single-response reward, measured in one process (no network):")
    print(f"  route work (validate, split, JSON answer): {route:.3f} ms")
    print(f"  reward core (prompt, parse, deadline tasks), instant model: {core:.3f} ms")
    print(f"  openai SDK, one judge call over loopback HTTP (not charter's): {sdk:.3f} ms")


if __name__ == "__main__":
    main()
