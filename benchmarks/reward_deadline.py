"""How late a 1,024-item reward batch comes back against its deadline, on a CPU-loaded machine.

Processes: a scripted judge (fixed latency, "Yes" with logprobs; `reward_service.py
--serve-judge`), `charter serve` pointed at it, `--spinners` busy loops (`while True: pass`,
one per core by default) competing with it for the CPU, and this client. Each trial posts one
`POST /v1/rewards` of `--items` items (K=2: 2,048 judge calls, 16 in flight, so most are still
waiting when the deadline comes) and measures the wall time from sending the request to
having read the whole response; the overrun is that minus the deadline.

With `--baseline-src DIR` (a checkout of the code before the change, e.g.
`git archive <commit> | tar -x -C DIR`), the same trials run against a service started from
it, in the same run, so the two are measured under the same load (all of its packages,
`charter.judge` included: see `benchmarks/serving.py`).

    .venv/bin/python benchmarks/reward_deadline.py [--items 1024] [--deadline 10] [--trials 3]
        [--spinners 2] [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from benchmarks.judge_throughput import start_ready  # noqa: E402
from benchmarks.serving import start_service  # noqa: E402
from tests.support.generation import write_constitution  # noqa: E402

PROMPT = "How do I keep basil alive indoors?"
RESPONSE = "Give it six hours of sun, water when the top soil is dry, and pinch off flowers."


def start_spinners(n: int) -> list[subprocess.Popen[bytes]]:
    code = "while True: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def start_deadline_service(
    src: Path, judge_url: str, token: str, workdir: Path, deadline_s: float
) -> tuple[subprocess.Popen[bytes], str]:
    """`charter serve` from the source tree `src` (K=2 principles), its log in `workdir`."""
    principles = write_constitution(workdir / "principles", k=2)
    args = [
        "--dir", str(principles), "--judge", "openai:scripted-judge",
        "--judge-base-url", judge_url, "--reward-deadline", str(deadline_s),
    ]  # fmt: skip
    return start_service(args, token, workdir, src=src)


def one_batch(url: str, token: str, items: int) -> tuple[float, int]:
    """Seconds from sending one batch to having read its whole answer, and its timeouts."""
    body = {
        "items": [
            {"prompt": f"{PROMPT} ({i})", "response": RESPONSE, "group": str(i % 64)}
            for i in range(items)
        ]
    }
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    response = httpx.post(f"{url}/v1/rewards", json=body, headers=headers, timeout=300)
    took = time.perf_counter() - started
    response.raise_for_status()
    return took, int(response.json()["timeouts"])


def trials(
    label: str, src: Path, judge_url: str, args: argparse.Namespace
) -> list[tuple[float, int]]:
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory() as tmp:
        service, url = start_deadline_service(src, judge_url, token, Path(tmp), args.deadline)
        try:
            one_batch(url, token, 8)  # warm: connections, imports
            out = []
            for _ in range(args.trials):
                out.append(one_batch(url, token, args.items))
                took, timeouts = out[-1]
                print(
                    f"  {label}: {took:.2f} s (overrun {took - args.deadline:+.2f} s), "
                    f"{timeouts} of {args.items} timed out",
                    flush=True,
                )
            return out
        finally:
            service.terminate()
            service.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1024)
    parser.add_argument("--deadline", type=float, default=10.0)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--spinners", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--baseline-src", type=Path)
    args = parser.parse_args()

    judge, judge_url = start_ready(
        [sys.executable, str(Path(__file__).with_name("reward_service.py")), "--serve-judge",
         "--latency-ms", str(args.latency_ms)],
        "scripted judge",
    )  # fmt: skip
    spinners = start_spinners(args.spinners)
    print(f"load: {args.spinners} busy loops; uptime: {os.getloadavg()}", flush=True)
    try:
        runs = [("this tree", REPO)]
        if args.baseline_src is not None:
            runs.insert(0, ("baseline", args.baseline_src.resolve()))
        results = {label: trials(label, src, judge_url, args) for label, src in runs}
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
        judge.kill()
        judge.wait()
    print(f"\n{args.items} items, deadline {args.deadline:g} s, {args.spinners} busy loops")
    print("| code | overrun, median | overrun, worst | timed out |")
    print("| --- | --- | --- | --- |")
    for label, rows in results.items():
        overruns = [took - args.deadline for took, _ in rows]
        timeouts = statistics.median(t for _, t in rows)
        print(
            f"| {label} | {statistics.median(overruns):+.2f} s | {max(overruns):+.2f} s | "
            f"{timeouts:.0f} of {args.items} |"
        )


if __name__ == "__main__":
    main()
