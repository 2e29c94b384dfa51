"""How far one charter process goes, and what Ray adds (docs/scale.md, BENCHMARKS.md).

    .venv/bin/python benchmarks/scale.py ceiling [--calls 6000]
    .venv/bin/python benchmarks/scale.py commit [--calls 40000] [--feeders 2]
    .venv/bin/python benchmarks/scale.py scaling [--prompts 500] [--latency-ms 0]

`ceiling`: judge calls per second from one process against a judge that answers at once
(`benchmarks/instant_server.py`, its own process), at 256 and 512 calls in flight, through the
judge's HTTP client alone (`OpenAIChatModel.choose`) and through a whole job (`run_job`: the
judge's prompts, the call cache committing every reply to SQLite, the prompt's rows); with the
client's CPU per call (`time.process_time` of this process) and the server's (from /proc), so
a reader sees how the two cores were shared. One core's worth of client CPU divided by the
CPU per call is the ceiling a process has on a machine where the server runs elsewhere.

`commit`: the driver's side of a job on Ray alone. Feeder actors stream `Report`s shaped as a
worker's (8 judge calls of real size per prompt, then the prompt's outcome and row) as fast as
Ray carries them; the driver receives them and commits them exactly as `RayExecutor` does
(`keep_calls` per report, then `JobRun.settle` per prompt) into a real job's store. Calls per
second and the driver's CPU per call.

`scaling`: the same job (two given candidates per prompt, K=4 pairwise: 8 judge calls a
prompt) in one process, then on `--ray-workers 2` of a local Ray, against a judge in its own
process; only the run is timed (not Ray's start). Calls/s and efficiency (ratio / 2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.judge_throughput import cpu_steal, start_ready  # noqa: E402
from charter.constitution import load_constitution  # noqa: E402
from charter.jobs.run import run_job  # noqa: E402
from charter.jobs.spec import JobSpec, prompts_digest  # noqa: E402
from charter.jobs.store import create_or_get_job  # noqa: E402
from charter.judge.backends import BackendOptions, Message, OpenAIChatModel  # noqa: E402
from charter.judge.config import JudgeConfig  # noqa: E402
from charter.prompt_files import PromptRecord  # noqa: E402
from charter.store import open_store  # noqa: E402

K = 4
CALLS_PER_PROMPT = K * 2  # two given candidates: one comparison, K principles in both orders
A_TEXT = "Give it six hours of sun, water when the top soil is dry, and pinch off flowers."
B_TEXT = "Basil is a plant."


@dataclass
class Row:
    label: str
    in_flight: int
    calls: int
    seconds: float
    cpu_s: float
    server_cpu_s: float

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def line(self) -> str:
        return (
            f"{self.label:<34} {self.in_flight:>6} {self.calls:>7} {self.seconds:>7.2f} "
            f"{self.rate:>9.1f} {1000 * self.cpu_s / self.calls:>10.3f} "
            f"{1000 / (1000 * self.cpu_s / self.calls):>10.0f} "
            f"{1000 * self.server_cpu_s / self.calls:>10.3f}"
        )


HEADER = (
    f"{'path':<34} {'flight':>6} {'calls':>7} {'secs':>7} {'calls/s':>9} {'cpu ms/call':>10} "
    f"{'1-core cap':>10} {'srv ms/call':>10}"
)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def options(base_url: str, in_flight: int) -> BackendOptions:
    return BackendOptions(
        base_url=base_url, max_concurrency=in_flight, timeout_s=60, api_key_env="CHARTER_BENCH"
    )


async def measured(
    server_pid: int, work: Callable[[], Awaitable[int]]
) -> tuple[int, float, float, float]:
    """(calls, wall s, this process's CPU s, the server's CPU s) of one run of `work`."""
    srv0, cpu0, t0 = process_cpu_s(server_pid), time.process_time(), time.perf_counter()
    calls = await work()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return calls, wall, cpu, process_cpu_s(server_pid) - srv0


async def through_choose(base_url: str, server_pid: int, in_flight: int, n: int) -> Row:
    """`n` bare `choose` calls kept `in_flight` by closed-loop workers."""
    model = OpenAIChatModel("instant", options(base_url, in_flight))
    messages = [Message(role="user", content=f"Which is better?\n(A) {A_TEXT}\n(B) {B_TEXT}")]

    async def run(total: int) -> int:
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                reply = await model.choose(messages, ["A", "B"])
                assert reply.option_logprobs, "the instant judge gave no logprobs"

        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return total

    try:
        await run(in_flight)  # warm-up: open the connections
        calls, wall, cpu, srv = await measured(server_pid, lambda: run(n))
    finally:
        await model.aclose()
    return Row("OpenAIChatModel.choose", in_flight, calls, wall, cpu, srv)


async def through_job(base_url: str, server_pid: int, in_flight: int, n: int) -> Row:
    """A compare job of `n / CALLS_PER_PROMPT` prompts with two given candidates each, its
    prompts in flight chosen so `in_flight` judge calls are."""
    prompts = max(1, n // CALLS_PER_PROMPT)
    with tempfile.TemporaryDirectory() as tmp:
        db = open_store(Path(tmp) / "scale.db")
        job = given_job(db, prompts, "Scale")
        model = OpenAIChatModel("instant", options(base_url, in_flight))

        async def run() -> int:
            summary = await run_job(
                db, job, model, None, concurrency=max(1, in_flight // CALLS_PER_PROMPT)
            )
            assert summary.calls is not None
            made = summary.calls.judge.made
            assert made == prompts * CALLS_PER_PROMPT, summary.calls
            return made

        try:
            calls, wall, cpu, srv = await measured(server_pid, run)
        finally:
            await model.aclose()
    return Row("run_job (judge, cache, store)", in_flight, calls, wall, cpu, srv)


async def ceiling(calls: int) -> None:
    argv = [sys.executable, str(REPO / "benchmarks" / "instant_server.py")]
    proc, base_url = start_ready(argv, "instant server")
    steal0, total0 = cpu_steal()
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores)")
    rows: list[Row] = []
    try:
        for in_flight in (256, 512):
            rows.append(await through_choose(base_url, proc.pid, in_flight, calls))
            rows.append(await through_job(base_url, proc.pid, in_flight, calls))
    finally:
        proc.kill()
        proc.wait()
    steal1, total1 = cpu_steal()
    print(HEADER)
    for row in rows:
        print(row.line())
    if total1 > total0:
        print(f"CPU time stolen by the hypervisor: {(steal1 - steal0) / (total1 - total0):.1%}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def given_job(db: Any, prompts: int, tag: str) -> Any:
    """A compare job of `prompts` prompts with two given candidates each (8 judge calls)."""
    constitution = load_constitution(REPO / "principles")
    records = [
        PromptRecord(
            prompt=f"{tag} prompt {i}: how do I keep basil alive?", responses=(A_TEXT, B_TEXT)
        )
        for i in range(prompts)
    ]
    spec = JobSpec(
        judge="openai:instant",
        policy="given",
        judge_config=JudgeConfig(protocol="pairwise", principles=K),
        prompts_digest=prompts_digest(records),
        constitution_digest=constitution.digest,
    )
    job, _ = create_or_get_job(db, spec, constitution, records, "benchmark")
    return job


class Feeder:
    """Streams reports shaped as a worker's: per prompt, 8 calls of real size, then its
    outcome (one row)."""

    def __init__(self, job: Any, positions: list[int], per_report: int) -> None:
        from charter.call_cache import CallRecord
        from charter.jobs.run import Outcome
        from charter.jobs.store import Preference
        from charter.ray.worker import Report

        request = json.dumps(
            {"messages": [{"role": "user", "content": "q" * 1800}], "options": ["A", "B"]}
        )
        reply = json.dumps(
            {
                "text": "A",
                "option_logprobs": {"A": -0.22, "B": -1.6},
                "usage": {"prompt_tokens": 450, "completion_tokens": 1},
            }
        )
        self.reports: list[Any] = []
        for start in range(0, len(positions), per_report):
            report = Report()
            for position in positions[start : start + per_report]:
                for j in range(CALLS_PER_PROMPT):
                    key = f"{job.id}-{position}-{j}".ljust(64, "0")
                    report.calls.append(CallRecord(key, job.spec.judge, "choose", request, reply))
                row = Preference(
                    job_id=job.id, position=position, prompt_key=f"k{position}", prompt="p",
                    chosen=A_TEXT, rejected=B_TEXT, source="comparison", p_chosen=0.8,
                    judge=job.spec.judge, policy="given", constitution_digest="d",
                    constitution_version="1",
                )  # fmt: skip
                report.outcomes.append((position, Outcome([row], {"comparisons": []}, None)))
                report.made["judge"] = report.made.get("judge", 0) + CALLS_PER_PROMPT
            self.reports.append(report)

    async def run(self) -> Any:
        for report in self.reports:
            yield report


async def commit(calls: int, feeders: int, per_report: int) -> None:
    from charter.jobs.run import JobRun
    from charter.ray.cluster import connected
    from charter.ray.driver import RayExecutor
    from charter.ray.options import LOCAL, RayOptions
    from charter.ray.worker import WorkerModels

    prompts = calls // CALLS_PER_PROMPT
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores)")
    with tempfile.TemporaryDirectory() as tmp, connected(LOCAL, local_cpus=feeders) as ray:
        db = open_store(Path(tmp) / "commit.db")
        from charter.call_cache import ensure_tables

        ensure_tables(db)
        job = given_job(db, prompts, "commit")
        run = JobRun(db, job, max_attempts=3, on_progress=None, stop_request=None)
        models = WorkerModels(judge=job.spec.judge, judge_options=BackendOptions())
        driver = RayExecutor(ray, RayOptions(ray_workers=feeders), models, "bench")
        remote = ray.remote(num_cpus=1)(Feeder)
        share = [list(range(i, prompts, feeders)) for i in range(feeders)]
        actors = [remote.remote(job, positions, per_report) for positions in share]
        ray.get([a.__ray_ready__.remote() for a in actors])  # built before the clock starts

        async def drain(actor: Any) -> None:
            unsettled = {p: PromptRecord(prompt="p") for p in range(prompts)}
            async for ref in actor.run.remote():
                driver._commit(run, await ref, unsettled)  # type: ignore[arg-type]

        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(drain(a) for a in actors))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        stored = db.execute("SELECT count(*) FROM calls").fetchone()[0]
        done = db.execute("SELECT count(*) FROM job_prompts WHERE status = 'done'").fetchone()[0]
    assert stored == prompts * CALLS_PER_PROMPT and done == prompts, (stored, done)
    print(
        f"{feeders} feeders, {per_report} prompts per report: {stored} calls and {done} prompts "
        f"committed in {wall:.2f} s = {stored / wall:,.0f} calls/s "
        f"({done / wall:,.0f} prompts/s); driver CPU {1000 * cpu / stored:.3f} ms per call "
        f"(one core's ceiling {stored / cpu:,.0f} calls/s)"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


async def scaling(prompts: int, concurrency: int) -> None:
    from charter.jobs.session import LocalModels
    from charter.ray.cluster import connected
    from charter.ray.driver import RayWorkers
    from charter.ray.options import LOCAL, RayOptions

    argv = [sys.executable, str(REPO / "benchmarks" / "instant_server.py")]
    proc, base_url = start_ready(argv, "instant server")
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores)")
    rates: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = open_store(Path(tmp) / "one.db")
            job = given_job(db, prompts, "one")
            model = OpenAIChatModel("instant", options(base_url, concurrency))
            t0 = time.perf_counter()
            try:
                summary = await run_job(db, job, model, None, concurrency=concurrency)
            finally:
                await model.aclose()
            assert summary.calls is not None
            rates["1 process"] = summary.calls.judge.made / (time.perf_counter() - t0)
            with connected(LOCAL, local_cpus=2) as ray:
                db = open_store(Path(tmp) / "ray.db")
                job = given_job(db, prompts, "ray")
                local = LocalModels(base_url, None, 60.0, concurrency)
                source = RayWorkers(ray, RayOptions(ray_workers=2), local, "bench")
                executor = await source.start(job.spec, [])
                try:
                    t0 = time.perf_counter()
                    summary = await run_job(db, job, None, None, executor=executor)
                    assert summary.calls is not None
                    elapsed = time.perf_counter() - t0
                    rates["--ray-workers 2"] = summary.calls.judge.made / elapsed
                finally:
                    await executor.close()
    finally:
        proc.kill()
        proc.wait()
    one = rates["1 process"]
    ray_rate = rates["--ray-workers 2"]
    print(f"{'1 process':<18} {one:>9.1f} calls/s")
    print(
        f"{'--ray-workers 2':<18} {ray_rate:>9.1f} calls/s  ratio {ray_rate / one:.2f}  "
        f"efficiency {ray_rate / one / 2:.0%}"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    top = commands.add_parser("ceiling", help="one process's calls/s and CPU per call")
    top.add_argument("--calls", type=int, default=6000, help="calls per row")
    feed = commands.add_parser("commit", help="the driver's commit ceiling with Ray")
    feed.add_argument("--calls", type=int, default=40000)
    feed.add_argument("--feeders", type=int, default=2)
    feed.add_argument("--per-report", type=int, default=16, help="prompts per report")
    scale = commands.add_parser("scaling", help="1 process vs --ray-workers 2")
    scale.add_argument("--prompts", type=int, default=500)
    scale.add_argument("--concurrency", type=int, default=32, help="prompts in flight")
    ns = parser.parse_args()
    if ns.command == "ceiling":
        asyncio.run(ceiling(ns.calls))
    elif ns.command == "commit":
        asyncio.run(commit(ns.calls, ns.feeders, ns.per_report))
    else:
        asyncio.run(scaling(ns.prompts, ns.concurrency))


if __name__ == "__main__":
    main()
