"""The service's memory when every reward request names a different model (issue 26, item 1).

Processes: the scripted judge (`reward_service.py --serve-judge`), `charter serve` pointed at
it, and this client, which sends `--requests` `POST /v1/rewards` (one item each), request i
naming `"judge": "openai:probe-<i>"`, and reads the service's resident memory (VmRSS, and
its peak VmHWM, from /proc) before and after. Three services, in one run:

- `default allow-list`: only the models the service was started with may be named, so every
  request is refused (422) before anything is built;
- `openai:* allowed, pool 8`: an operator allows any OpenAI-compatible name; the pool keeps
  the 8 most recently used open and closes the rest (`--model-pool-size 8`, the default);
- `openai:* allowed, pool 1024`: the same with the largest pool the setting allows: the
  growth of a pool that never drops an entry, up to 1,024 names (the baseline).

    .venv/bin/python benchmarks/model_pool_rss.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from benchmarks.judge_throughput import start_ready  # noqa: E402
from benchmarks.serving import start_service  # noqa: E402
from tests.support.generation import write_constitution  # noqa: E402

MODES = {
    "default allow-list": [],
    "openai:* allowed, pool 8": ["--allow-model", "openai:*", "--model-pool-size", "8"],
    "openai:* allowed, pool 1024": ["--allow-model", "openai:*", "--model-pool-size", "1024"],
}


@dataclass
class Row:
    before_mb: float
    after_mb: float
    peak_mb: float
    statuses: dict[int, int]
    thirds_mb: list[float]
    """RSS after each third of the requests: flat once a bounded pool is full."""


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """The process's resident memory (`VmRSS`) or its peak (`VmHWM`), in MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def run_mode(label: str, flags: list[str], judge_url: str, requests: int) -> Row:
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory() as tmp:
        principles = write_constitution(Path(tmp) / "principles", k=1)
        args = [
            "--dir", str(principles), "--judge", "openai:scripted-judge",
            "--judge-base-url", judge_url, "--reward-deadline", "5", *flags,
        ]  # fmt: skip
        service, url = start_service(args, token, Path(tmp))
        try:
            headers = {"Authorization": f"Bearer {token}"}
            item = {"prompt": "How do I keep basil alive?", "response": "Sun and water."}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                # Warm: the service's own judge once, so imports are in the "before" figure.
                client.post("/v1/rewards", json={"items": [item]}).raise_for_status()
                before = memory_mb(service.pid)
                statuses: dict[int, int] = {}
                thirds: list[float] = []
                started = time.perf_counter()
                for i in range(requests):
                    body = {"items": [item], "judge": f"openai:probe-{i}"}
                    status = client.post("/v1/rewards", json=body).status_code
                    statuses[status] = statuses.get(status, 0) + 1
                    if (i + 1) % max(1, requests // 3) == 0 and len(thirds) < 3:
                        thirds.append(memory_mb(service.pid))
                took = time.perf_counter() - started
            after, peak = memory_mb(service.pid), memory_mb(service.pid, "VmHWM")
        finally:
            service.terminate()
            service.wait(timeout=30)
    print(
        f"  {label}: RSS {before:.0f} -> {' -> '.join(f'{m:.0f}' for m in thirds)} MB "
        f"(peak {peak:.0f}), statuses {statuses}, "
        f"{took:.1f} s",
        flush=True,
    )
    return Row(before, after, peak, statuses, thirds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    judge, judge_url = start_ready(
        [sys.executable, str(Path(__file__).with_name("reward_service.py")), "--serve-judge",
         "--latency-ms", "0"],
        "scripted judge",
    )  # fmt: skip
    print(f"uptime before: {os.getloadavg()}", flush=True)
    try:
        rows = {
            label: run_mode(label, flags, judge_url, args.requests)
            for label, flags in MODES.items()
        }
    finally:
        judge.kill()
        judge.wait()
    print(f"uptime after: {os.getloadavg()}")
    print(f"\n{args.requests} POST /v1/rewards, each naming a different model")
    print("| service | RSS before | after each third | growth | per name | peak | answers |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for label, row in rows.items():
        growth = row.after_mb - row.before_mb
        thirds = " / ".join(f"{m:.0f}" for m in row.thirds_mb)
        print(
            f"| {label} | {row.before_mb:.0f} MB | {thirds} MB | {growth:+.0f} MB | "
            f"{growth * 1024 / args.requests:+.1f} KB | {row.peak_mb:.0f} MB | {row.statuses} |"
        )


if __name__ == "__main__":
    main()
