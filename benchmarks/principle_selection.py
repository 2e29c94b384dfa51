"""Principles that fit the conversation: `selection = random` against `relevant`, side by side.

On the shipped labelled pairs, per category (harmlessness / helpfulness / honesty) and over all:
agreement with the label (a beats b when p_a > 0.5; no verdict or exactly 0.5 = a coin flip),
agreement on decided pairs (beyond the tie margin) with their coverage, expected calibration
error (10 equal-width bins, raw), and model calls per comparison (score or comparison calls
plus `applies` calls) and `applies` calls per prompt.

Judges, in one run:
- the embedded `smollm2`, pointwise, K=1 and K=2, each with random and relevant selection, and
  K=1 random with two examples per principle shown as demonstrations (`few_shot = 2`) against
  the same configuration without them;
- the scripted loopback judge (`tests/support/relevance.py`), pointwise K=1 and K=2 and
  pairwise K=2: right under a principle whose tags name the pair's category, a coin flip under
  any other, and answering `applies` Yes exactly for those. It measures the machinery (what
  selection does with a judge whose relevance is known), not a model.

Every configuration renders its questions with the same keyed nonces, and a question asked by an
earlier configuration is answered from memory (counted as a call of each configuration that
asks it, made once): a small judge's answer moves with the marker text, so the configurations
differ only in which principles they ask.

    nice .venv/bin/python benchmarks/principle_selection.py [--judges smollm2,scripted]
        [--pairs N] [--every N] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from benchmarks.judge_protocols import Counting  # noqa: E402
from charter.constitution import Constitution, load_constitution  # noqa: E402
from charter.judge import (  # noqa: E402
    BackendOptions,
    ChatModel,
    Comparison,
    Completion,
    GenerationRequest,
    JudgeConfig,
    LabelledPair,
    Message,
    calibration_metrics,
    judge_pairs,
    load_model,
    load_pairs,
)
from charter.judge.prompts import KeyedNonces  # noqa: E402
from tests.support.relevance import Case, RelevanceResponder  # noqa: E402
from tests.support.scripted_server import ScriptedJudgeServer  # noqa: E402

PAIRS_FILE = REPO / "examples" / "labelled-pairs.jsonl"
CATEGORIES = ("harmlessness", "helpfulness", "honesty")
BINS = 10
NONCES = KeyedNonces(b"principle-selection-benchmark")


class Remembering(Counting):
    """Answers a `choose` asked before from memory; counts every call and the ones made."""

    def __init__(self, inner: ChatModel) -> None:
        super().__init__(inner)
        self.memory: dict[str, Completion] = {}
        self.made = 0

    async def generate(self, request: GenerationRequest) -> Completion:
        self.made += 1
        return await super().generate(request)

    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion:
        key = json.dumps([[m.role, m.content] for m in messages] + [list(options)])
        if key not in self.memory:
            self.made += 1
            self.memory[key] = await super().choose(messages, options)
        else:
            self.calls += 1
        return self.memory[key]


@dataclass
class Figures:
    pairs: int
    agreement_all: float
    agreement_decided: float | None
    coverage: float
    ece: float


@dataclass
class Result:
    judge: str
    protocol: str
    k: int
    selection: str
    few_shot: int
    seconds: float
    calls_per_comparison: float
    applies_per_prompt: float
    made: int
    figures: dict[str, Figures] = field(default_factory=dict)


def figures(
    comparisons: Sequence[Comparison], pairs: Sequence[LabelledPair], margin: float
) -> Figures:
    labels = [p.preferred == "a" for p in pairs]
    probs = [0.5 if c.p_a is None else c.p_a for c in comparisons]
    right = sum(
        1.0 if (p > 0.5) == y else 0.5 if p == 0.5 else 0.0
        for p, y in zip(probs, labels, strict=True)
    )
    decided = [(p > 0.5) == y for p, y in zip(probs, labels, strict=True) if abs(p - 0.5) > margin]
    return Figures(
        pairs=len(pairs),
        agreement_all=right / len(pairs),
        agreement_decided=sum(decided) / len(decided) if decided else None,
        coverage=len(decided) / len(pairs),
        ece=calibration_metrics(probs, labels, BINS).ece,
    )


async def measure(
    model: Remembering,
    name: str,
    constitution: Constitution,
    pairs: list[LabelledPair],
    categories: list[str],
    config: JudgeConfig,
) -> Result:
    calls, made = model.calls, model.made
    started = time.perf_counter()
    comparisons = await judge_pairs(model, constitution, pairs, config, nonces=NONCES)
    seconds = time.perf_counter() - started
    applies = sum(len(c.relevance.judgments) for c in comparisons if c.relevance is not None)
    result = Result(
        judge=name,
        protocol=str(config.protocol),
        k=config.k(constitution),
        selection=config.selection,
        few_shot=config.few_shot,
        seconds=seconds,
        calls_per_comparison=(model.calls - calls) / len(pairs),
        applies_per_prompt=applies / len(pairs),
        made=model.made - made,
    )
    margin = config.margin(constitution)
    result.figures["all"] = figures(comparisons, pairs, margin)
    for category in CATEGORIES:
        idx = [i for i, c in enumerate(categories) if c == category]
        result.figures[category] = figures(
            [comparisons[i] for i in idx], [pairs[i] for i in idx], margin
        )
    return result


def line(r: Result) -> str:
    cells = [
        f"{r.judge:<9} {r.protocol:<9} K={r.k} {r.selection:<8} shots={r.few_shot}",
        f"calls/cmp {r.calls_per_comparison:5.1f} (applies/prompt {r.applies_per_prompt:4.1f})",
        f"{r.seconds:6.1f}s made {r.made}",
    ]
    for name, f in r.figures.items():
        decided = "-" if f.agreement_decided is None else f"{f.agreement_decided:.3f}"
        cells.append(
            f"{name[:5]}: {f.agreement_all:.3f}/{decided}/{f.coverage:.0%}/ece {f.ece:.3f}"
        )
    return " | ".join(cells)


def configs(name: str) -> list[JudgeConfig]:
    if name == "scripted":
        return [
            JudgeConfig(protocol=protocol, principles=k, selection=selection)  # type: ignore[arg-type]
            for protocol, k in (("pointwise", 1), ("pointwise", 2), ("pairwise", 2))
            for selection in ("random", "relevant")
        ]
    runs = [
        JudgeConfig(protocol="pointwise", principles=k, selection=selection)
        for k in (1, 2)
        for selection in ("random", "relevant")
    ]
    runs.append(JudgeConfig(protocol="pointwise", principles=1, selection="random", few_shot=2))
    return runs


async def run(
    judges: list[str],
    all_pairs: list[LabelledPair],
    all_categories: list[str],
    every: int,
    json_path: str | None = None,
) -> list[Result]:
    constitution = load_constitution(REPO / "principles")
    results: list[Result] = []
    for name in judges:
        step = 1 if name == "scripted" else every
        pairs, categories = all_pairs[::step], all_categories[::step]
        print(f"{name}: {len(pairs)} pairs", flush=True)
        server: ScriptedJudgeServer | None = None
        if name == "scripted":
            cases = [
                Case(
                    prompt=p.prompt,
                    preferred=p.a if p.preferred == "a" else p.b,
                    other=p.b if p.preferred == "a" else p.a,
                    relevant=frozenset(q.id for q in constitution.enabled if category in q.tags),
                )
                for p, category in zip(pairs, categories, strict=True)
            ]
            server = ScriptedJudgeServer(RelevanceResponder(constitution, cases)).start()
            inner = load_model(
                "openai:scripted", BackendOptions(base_url=server.base_url, max_concurrency=16)
            )
        else:
            inner = load_model(name, BackendOptions(max_concurrency=16))
        model = Remembering(inner)
        try:
            for config in configs(name):
                results.append(await measure(model, name, constitution, pairs, categories, config))
                print(line(results[-1]), flush=True)
                if json_path:  # as it goes: a long run cut short keeps what it measured
                    write_json(json_path, results)
        finally:
            await model.aclose()
            if server is not None:
                server.stop()
    return results


def write_json(path: str, results: list[Result]) -> None:
    Path(path).write_text(
        json.dumps(
            [
                r.__dict__ | {"figures": {k: v.__dict__ for k, v in r.figures.items()}}
                for r in results
            ],
            indent=2,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judges", default="smollm2,scripted")
    parser.add_argument("--pairs", type=int, default=0, help="first N labelled pairs (0: all)")
    parser.add_argument(
        "--every",
        type=int,
        default=1,
        help="the embedded judge takes every Nth pair (the file interleaves nothing: this keeps "
        "each category's share); the scripted judge always takes them all",
    )
    parser.add_argument("--json", dest="json_path", help="also write the figures here")
    args = parser.parse_args()
    pairs = load_pairs(PAIRS_FILE)
    rows = [json.loads(text) for text in PAIRS_FILE.read_text().splitlines() if text.strip()]
    categories = [str(row["category"]) for row in rows]
    if args.pairs:
        pairs, categories = pairs[: args.pairs], categories[: args.pairs]
    print(f"{len(pairs)} labelled pairs from {PAIRS_FILE.name}; load {os.getloadavg()}")
    results = asyncio.run(
        run(args.judges.split(","), pairs, categories, args.every, args.json_path)
    )
    print(f"load {os.getloadavg()}")
    if args.json_path:
        write_json(args.json_path, results)


if __name__ == "__main__":
    main()
