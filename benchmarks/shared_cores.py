"""Local generation on cores another torch process is using (issue 26, item 9): torch's old
thread count (one per core) against the choice a local model now makes (`ThreadSettings`: the
cores other processes leave free, sampled from /proc).

One `benchmarks/busy_torch.py` process runs matrix products on torch's default threads
throughout. After `--warmup-s`, the embedded SmolLM2, loaded
once, generates `--prompts` concurrent requests of exactly `--tokens` new tokens (greedy, no
stop token) in `--rounds` rounds, each round once with the old count and once with the count
`ThreadSettings().threads()` picks at that moment, alternating which goes first. Reported:
tokens/s of each, the ratio new/old, and the competitor's products/s in the same windows (both
sides of the sharing), with the other processes' CPU use the choice saw.

    nice .venv/bin/python benchmarks/shared_cores.py [--rounds 3] [--prompts 4] [--tokens 64]

Run it with OMP_NUM_THREADS unset: the old count is torch's default on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.local_generation import requests  # noqa: E402
from charter.common.threads import (  # noqa: E402
    ThreadSettings,
    available_cores,
    busy_elsewhere,
)
from charter.judge.backends import BackendOptions  # noqa: E402
from charter.judge.backends.local import LocalTransformersModel  # noqa: E402


class Competitor:
    """busy_torch.py in its own process, its progress read as it reports it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "benchmarks" / "busy_torch.py"), "--report-every", "0.5"],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.reports: list[tuple[float, int]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            at, products = line.split()
            if at.replace(".", "", 1).isdigit():
                self.reports.append((float(at), int(products)))

    def rate(self, start: float, end: float) -> float:
        """Products per second between two monotonic times (from its reports inside them)."""
        inside = [r for r in self.reports if start <= r[0] <= end]
        if len(inside) < 2:
            return float("nan")
        (t0, p0), (t1, p1) = inside[0], inside[-1]
        return (p1 - p0) / (t1 - t0)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


async def generate_with(
    model: LocalTransformersModel, threads: int, prompts: int, tokens: int
) -> tuple[float, float, float]:
    """(seconds, start, end) of one concurrent batch with torch on `threads` threads."""
    import torch

    await model._run(torch.set_num_threads, threads)
    reqs = requests(prompts, tokens)
    start = time.monotonic()
    done = await asyncio.gather(*(model.generate(r) for r in reqs))
    end = time.monotonic()
    made = [c.usage.completion_tokens for c in done]
    assert made == [tokens] * prompts, made
    return end - start, start, end


async def main_async(rounds: int, prompts: int, tokens: int, warmup_s: float) -> None:
    import torch

    from charter.judge.backends.smollm2 import load_smollm2

    old = torch.get_num_threads()  # this thread's count: torch's default, never set here
    cores = available_cores()
    model = load_smollm2(BackendOptions(batch_size=prompts))
    model._eos_ids = list  # type: ignore[method-assign]  # no stop token: exactly max_tokens
    load_before = os.getloadavg()
    competitor = Competitor()
    rows: dict[str, list[tuple[float, float, int, float]]] = {"old": [], "new": []}
    try:
        await generate_with(model, old, prompts, 8)  # packs the weights, once
        time.sleep(warmup_s)  # the competitor settles into its work
        for round_ in range(rounds):
            order = ("old", "new") if round_ % 2 == 0 else ("new", "old")
            for name in order:
                load = busy_elsewhere()  # cores' worth other processes use now
                threads = old if name == "old" else ThreadSettings().threads(cores, load)
                seconds, start, end = await generate_with(model, threads, prompts, tokens)
                rate = prompts * tokens / seconds
                rows[name].append((rate, competitor.rate(start, end), threads, load))
                print(
                    f"round {round_ + 1} {name}: {threads} thread(s), {load:.2f} cores busy "
                    f"elsewhere: "
                    f"{seconds:.2f} s, {rate:.1f} tokens/s; competitor "
                    f"{rows[name][-1][1]:.1f} products/s",
                    flush=True,
                )
    finally:
        competitor.stop()
        await model.aclose()
    print(
        f"\nshared cores: embedded smollm2, {prompts} concurrent requests x {tokens} new tokens "
        f"(greedy), {rounds} rounds; {cores} cores, torch {torch.__version__}; one busy_torch "
        f"process competing; load average before (1/5/15 min) "
        f"{'/'.join(f'{x:.2f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(f"{'threads':<34} {'tokens/s (median)':>18} {'competitor products/s':>22}")
    medians = {}
    for name, label in (("old", "old: one per core"), ("new", "new: the load's free cores")):
        rates = [r[0] for r in rows[name]]
        theirs = [r[1] for r in rows[name]]
        counts = sorted({r[2] for r in rows[name]})
        medians[name] = (statistics.median(rates), statistics.median(theirs))
        print(
            f"{label + ' (' + ','.join(map(str, counts)) + ')':<34} "
            f"{medians[name][0]:>18.1f} {medians[name][1]:>22.1f}"
        )
    print(
        f"ratio new/old: generation {medians['new'][0] / medians['old'][0]:.2f}x, "
        f"competitor {medians['new'][1] / medians['old'][1]:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--warmup-s", type=float, default=45.0)
    args = parser.parse_args()
    asyncio.run(main_async(args.rounds, args.prompts, args.tokens, args.warmup_s))


if __name__ == "__main__":
    main()
