"""End-to-end generation speed against the scripted server, and the store's write throughput.

All in one run:

- prompts per minute through `charter.jobs.run.run_job` (compare mode, n=2 candidates, K=4
  principles in both orders: 2 policy calls + 8 judge calls per prompt) against the scripted
  server at a fixed latency, next to the ideal for that latency and concurrency;
- the same job run again: every call answered from the store (the re-run speed-up);
- the store's write throughput: completed calls recorded per second through `CachedModel`,
  next to bare `INSERT`s of rows the same size into the same kind of SQLite file.

    .venv/bin/python benchmarks/generate.py [--prompts 64] [--latency-ms 100] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.judge_throughput import start_server  # noqa: E402
from charter.call_cache import CachedModel  # noqa: E402
from charter.constitution import load_constitution  # noqa: E402
from charter.jobs.run import run_job  # noqa: E402
from charter.jobs.spec import JobSpec, prompts_digest  # noqa: E402
from charter.jobs.store import create_or_get_job  # noqa: E402
from charter.jobs.summary import CallCounts, JobSummary  # noqa: E402
from charter.judge.backends import BackendOptions, Completion, Message, OpenAIChatModel  # noqa: E402
from charter.judge.rank import PairStrategy  # noqa: E402
from charter.prompt_files import PromptRecord  # noqa: E402
from charter.store import open_store  # noqa: E402

CALLS_PER_PROMPT = 2 + 4 * 2


async def one_run(
    db_path: Path, base_url: str, prompts: int, concurrency: int, pairs: PairStrategy = "best_worst"
) -> tuple[float, JobSummary]:
    db = open_store(db_path)
    constitution = load_constitution(REPO / "principles")
    records = [
        PromptRecord(prompt=f"Benchmark prompt {i}: explain topic {i}.") for i in range(prompts)
    ]
    spec = JobSpec(
        policy="openai:scripted",
        judge="openai:scripted",
        n=2,
        pairs=pairs,
        prompts_digest=prompts_digest(records),
        constitution_digest=constitution.digest,
    )
    job, _ = create_or_get_job(db, spec, constitution, records, "benchmark")
    options = BackendOptions(base_url=base_url, max_concurrency=concurrency, timeout_s=30,
                             api_key_env="CHARTER_BENCH")  # fmt: skip
    model = OpenAIChatModel("scripted", options)
    started = time.perf_counter()
    try:
        summary = await run_job(db, job, model, model, concurrency=concurrency)
    finally:
        await model.aclose()
    return time.perf_counter() - started, summary


class _Instant:
    """Answers at once, so only the store's own cost is measured."""

    spec = "bench:instant"

    async def choose(self, messages: object, options: object) -> Completion:
        return Completion(text="A", option_logprobs={"A": -0.1, "B": -2.3})

    async def generate(self, request: object) -> Completion:
        return Completion(text="x" * 400)

    async def aclose(self) -> None:
        return None


async def store_writes(db_path: Path, n: int) -> float:
    cached = CachedModel(_Instant(), open_store(db_path))  # type: ignore[arg-type]
    started = time.perf_counter()
    for i in range(n):
        await cached.choose(
            (Message(role="user", content=f"question {i} " + "q" * 600),), ("A", "B")
        )
    return n / (time.perf_counter() - started)


def bare_inserts(db_path: Path, n: int) -> float:
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t (key TEXT PRIMARY KEY, request TEXT, completion TEXT)")
    body = json.dumps({"messages": [{"role": "user", "content": "q" * 600}]})
    started = time.perf_counter()
    for i in range(n):
        with conn:
            conn.execute("INSERT INTO t VALUES (?, ?, ?)", (f"k{i}", body, '{"text": "A"}'))
    rate = n / (time.perf_counter() - started)
    conn.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--writes", type=int, default=2000)
    ns = parser.parse_args()
    proc, base_url = start_server(ns.latency_ms)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.db"
            first_s, summary = asyncio.run(one_run(db, base_url, ns.prompts, ns.concurrency))
            again_s, again = asyncio.run(one_run(db, base_url, ns.prompts, ns.concurrency))
            # A different job (another pair strategy) that asks exactly the same model calls.
            other_s, other = asyncio.run(
                one_run(db, base_url, ns.prompts, ns.concurrency, pairs="margin")
            )
            writes = asyncio.run(store_writes(Path(tmp) / "writes.db", ns.writes))
            bare = bare_inserts(Path(tmp) / "bare.db", ns.writes)
    finally:
        proc.kill()
    latency = ns.latency_ms / 1000
    ideal = ns.concurrency / latency / CALLS_PER_PROMPT * 60
    made = summary.calls.judge.made if summary.calls else 0
    print(
        f"scripted server latency {ns.latency_ms:.0f} ms, concurrency {ns.concurrency}, "
        f"{ns.prompts} prompts, {CALLS_PER_PROMPT} calls per prompt"
    )
    print(f"{'run':<28} {'seconds':>8} {'prompts/min':>12} {'calls made':>11} {'reused':>7}")
    runs = (
        ("first run", first_s, summary),
        ("same command again (done)", again_s, again),
        ("new job, same calls", other_s, other),
    )
    for label, secs, s in runs:
        calls = s.calls.judge if s.calls else CallCounts(made=0, reused=0)
        print(
            f"{label:<28} {secs:>8.2f} {ns.prompts / secs * 60:>12.1f} "
            f"{calls.made:>11} {calls.reused:>7}"
        )
    print(
        f"ideal at this latency/concurrency: {ideal:.1f} prompts/min; first run reaches "
        f"{ns.prompts / first_s * 60 / ideal:.1%} of it ({made} calls)"
    )
    print(f"new job answered from the store: {first_s / other_s:.1f}x faster than the first run")
    print(
        f"store writes: {writes:,.0f} calls/s through CachedModel vs {bare:,.0f} bare "
        f"INSERT transactions/s ({writes / bare:.2f}x of bare)"
    )


if __name__ == "__main__":
    main()
