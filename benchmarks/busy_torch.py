"""A competing torch process: matrix products on torch's default threads until killed (or
for --seconds), to measure charter on cores another torch job is using.

    python benchmarks/busy_torch.py --seconds 3600 &
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3600.0)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    a = torch.randn(args.size, args.size)
    deadline = time.monotonic() + args.seconds
    products = 0
    while time.monotonic() < deadline:
        a = torch.tanh(a @ a)
        products += 1
    print(f"{products} products on {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
