"""A competing torch process: matrix products on torch's default threads until killed (or
for --seconds), to measure charter on cores another torch job is using.

    python benchmarks/busy_torch.py --seconds 3600 &

With --report-every S it prints "MONOTONIC_TIME PRODUCTS" every S seconds (flushed), so a
benchmark can measure its rate over a window (`time.monotonic` is the same clock in every
process on the machine).
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3600.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--report-every", type=float, default=0.0)
    args = parser.parse_args()
    a = torch.randn(args.size, args.size)
    deadline = time.monotonic() + args.seconds
    products = 0
    next_report = time.monotonic()
    while (now := time.monotonic()) < deadline:
        if args.report_every and now >= next_report:
            print(f"{now:.3f} {products}", flush=True)
            next_report = now + args.report_every
        a = torch.tanh(a @ a)
        products += 1
    print(f"{products} products on {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
