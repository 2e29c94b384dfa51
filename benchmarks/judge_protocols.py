"""Pairwise against pointwise judging, side by side, on the shipped labelled pairs.

For each judge (the embedded `smollm2`, and the scripted loopback server as a fixed-cost
reference) and each protocol, in one run:

- agreement with the human label over all pairs (a beats b when p_a > 0.5; a pair with no
  verdict or p_a exactly 0.5 counts as a coin flip), and on decided pairs (|p_a - 0.5| beyond
  the constitution's tie margin, as `charter judge eval` decides) with their coverage;
- expected calibration error (10 equal-width bins) raw, and after calibration on pairs not used
  to fit it: 5-fold cross-fitting (each pair's calibrated p_a comes from a temperature and bias
  fit on the other four folds) and a single 70/30 split as `charter judge calibrate` does;
- the ECE a perfectly calibrated judge would still show on the same number of pairs with the
  same probabilities (labels drawn from them, 200 draws): the noise floor of the estimate;
- comparisons per second, model calls per comparison, and model calls to rank 4 candidates.

The baseline is the pairwise protocol, measured in the same run on the same pairs and model.

    .venv/bin/python benchmarks/judge_protocols.py [--judges smollm2,scripted] [--principles 1]
        [--pairs N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from charter.constitution import load_constitution  # noqa: E402
from charter.judge import (  # noqa: E402
    BackendOptions,
    ChatModel,
    Completion,
    GenerationRequest,
    JudgeConfig,
    LabelledPair,
    Message,
    calibration_metrics,
    fit_calibration,
    judge_pairs,
    load_model,
    load_pairs,
    rank,
)
from charter.judge.calibration import holdout_split  # noqa: E402
from tests.support.scripted_server import PreferenceResponder, ScriptedJudgeServer  # noqa: E402

PAIRS_FILE = REPO / "examples" / "labelled-pairs.jsonl"
FOLDS = 5
BINS = 10


class Counting:
    """Wraps a model to count the calls made through it."""

    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner
        self.calls = 0

    @property
    def spec(self) -> str:
        return self.inner.spec

    async def generate(self, request: GenerationRequest) -> Completion:
        self.calls += 1
        return await self.inner.generate(request)

    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion:
        self.calls += 1
        return await self.inner.choose(messages, options)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Result:
    judge: str
    protocol: str
    pairs: int
    agreement_all: float
    agreement_decided: float | None
    coverage: float
    ece_raw: float
    ece_crossfit: float
    ece_split: float
    ece_floor_crossfit: float
    ece_floor_split: float
    temperature: float
    seconds: float
    calls: int
    rank_calls: int
    probs: list[float]

    def line(self) -> str:
        decided = "-" if self.agreement_decided is None else f"{self.agreement_decided:.3f}"
        return (
            f"{self.judge:<10} {self.protocol:<9} {self.pairs:>5} {self.agreement_all:>9.3f} "
            f"{decided:>8} {self.coverage:>8.1%} {self.ece_raw:>7.3f} {self.ece_crossfit:>9.3f} "
            f"{self.ece_split:>9.3f} {self.ece_floor_crossfit:>7.3f} {self.ece_floor_split:>7.3f} "
            f"{self.temperature:>6.2f} {self.pairs / self.seconds:>8.2f} "
            f"{self.calls / self.pairs:>10.1f} {self.rank_calls:>10}"
        )


HEADER = (
    f"{'judge':<10} {'protocol':<9} {'pairs':>5} {'agree.all':>9} {'decided':>8} "
    f"{'coverage':>8} {'ECE raw':>7} {'ECE 5fold':>9} {'ECE 70/30':>9} {'floor5f':>7} "
    f"{'floor30':>7} {'T':>6} "
    f"{'cmp/s':>8} {'calls/cmp':>10} {'rank4 calls':>10}"
)


def ece_floor(probs: list[float], draws: int = 200) -> float:
    """Mean ECE of a perfectly calibrated judge with these probabilities: labels drawn from
    them. What an ECE estimate on this many pairs cannot get below."""
    rng = random.Random(2)
    total = 0.0
    for _ in range(draws):
        labels = [rng.random() < p for p in probs]
        total += calibration_metrics(probs, labels, BINS).ece
    return total / draws


def crossfit(probs: list[float], labels: list[bool]) -> list[float]:
    """Each pair's p through a calibration fit on the other folds (deterministic folds)."""
    order = list(range(len(probs)))
    random.Random(1).shuffle(order)
    folds = [order[i::FOLDS] for i in range(FOLDS)]
    out = [0.5] * len(probs)
    for fold in folds:
        held = set(fold)
        fit = [i for i in range(len(probs)) if i not in held]
        calibration = fit_calibration(
            [probs[i] for i in fit], [labels[i] for i in fit], fit_bias=False
        )
        for i in fold:
            out[i] = calibration.apply(probs[i])
    return out


async def measure(
    model: ChatModel, name: str, pairs: list[LabelledPair], protocol: str, principles: int
) -> Result:
    constitution = load_constitution(REPO / "principles")
    config = JudgeConfig(protocol=protocol, principles=principles)  # type: ignore[arg-type]
    counting = Counting(model)
    started = time.perf_counter()
    comparisons = await judge_pairs(counting, constitution, pairs, config, concurrency=16)
    seconds = time.perf_counter() - started
    calls = counting.calls
    labels = [p.preferred == "a" for p in pairs]
    probs = [0.5 if c.p_a is None else c.p_a for c in comparisons]
    right = sum(
        1.0 if (p > 0.5) == y else 0.5 if p == 0.5 else 0.0
        for p, y in zip(probs, labels, strict=True)
    )
    margin = config.margin(constitution)
    decided = [(p > 0.5) == y for p, y in zip(probs, labels, strict=True) if abs(p - 0.5) > margin]
    fit_idx, held_idx = holdout_split(len(pairs), 0.3, seed=0)
    split_cal = fit_calibration(
        [probs[i] for i in fit_idx], [labels[i] for i in fit_idx], fit_bias=False
    )
    held_probs = split_cal.apply_many([probs[i] for i in held_idx])
    crossfitted = crossfit(probs, labels)
    # Calls to rank four candidates: two pairs' responses, under the first pair's prompt.
    four = [pairs[0].a, pairs[0].b, pairs[1].a, pairs[1].b]
    before = counting.calls
    await rank(counting, constitution, pairs[0].prompt, four, config)
    return Result(
        judge=name,
        protocol=protocol,
        pairs=len(pairs),
        agreement_all=right / len(pairs),
        agreement_decided=sum(decided) / len(decided) if decided else None,
        coverage=len(decided) / len(pairs),
        ece_raw=calibration_metrics(probs, labels, BINS).ece,
        ece_crossfit=calibration_metrics(crossfitted, labels, BINS).ece,
        ece_split=calibration_metrics(held_probs, [labels[i] for i in held_idx], BINS).ece,
        ece_floor_crossfit=ece_floor(crossfitted),
        ece_floor_split=ece_floor(held_probs),
        temperature=fit_calibration(probs, labels, fit_bias=False).temperature,
        seconds=seconds,
        calls=calls,
        rank_calls=counting.calls - before,
        probs=probs,
    )


async def run(judges: list[str], pairs: list[LabelledPair], principles: int) -> list[Result]:
    results: list[Result] = []
    for name in judges:
        if name == "scripted":
            # A judge that knows the label of every pair but is slot-biased 30% of the time.
            responder = PreferenceResponder(
                preferred=[p.a if p.preferred == "a" else p.b for p in pairs],
                others=[p.b if p.preferred == "a" else p.a for p in pairs],
                position_bias_a=0.3,
                bias_key="message",
            )
            with ScriptedJudgeServer(responder, latency_s=0.05) as server:
                model = load_model(
                    "openai:scripted", BackendOptions(base_url=server.base_url, max_concurrency=16)
                )
                for protocol in ("pairwise", "pointwise"):
                    results.append(await measure(model, name, pairs, protocol, principles))
                    print(results[-1].line(), flush=True)
                await model.aclose()
        else:
            model = load_model(name, BackendOptions(max_concurrency=16))
            for protocol in ("pairwise", "pointwise"):
                results.append(await measure(model, name, pairs, protocol, principles))
                print(results[-1].line(), flush=True)
            await model.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judges", default="smollm2,scripted")
    parser.add_argument("--principles", type=int, default=1, help="K per comparison or score")
    parser.add_argument("--pairs", type=int, default=0, help="first N labelled pairs (0: all)")
    parser.add_argument("--json", dest="json_path", help="also write the figures here")
    args = parser.parse_args()
    pairs = load_pairs(PAIRS_FILE)
    if args.pairs:
        pairs = pairs[: args.pairs]
    print(f"{len(pairs)} labelled pairs from {PAIRS_FILE.name}, K={args.principles}")
    print(HEADER, flush=True)
    results = asyncio.run(run(args.judges.split(","), pairs, args.principles))
    for name in dict.fromkeys(r.judge for r in results):
        pair = {r.protocol: r for r in results if r.judge == name}
        if {"pairwise", "pointwise"} <= set(pair):
            pw, pt = pair["pairwise"], pair["pointwise"]
            print(
                f"{name}: pointwise vs pairwise (baseline): agreement "
                f"{pt.agreement_all:.3f} vs {pw.agreement_all:.3f} "
                f"({pt.agreement_all / pw.agreement_all:.2f}x), calls to rank 4: "
                f"{pt.rank_calls} vs {pw.rank_calls} ({pw.rank_calls / pt.rank_calls:.1f}x fewer)"
            )
    if args.json_path:
        Path(args.json_path).write_text(json.dumps([r.__dict__ for r in results], indent=2))


if __name__ == "__main__":
    main()
