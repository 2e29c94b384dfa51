"""Few-shot demonstrations in critiques: what the revise step keeps, with and without them.

The embedded `smollm2` (135M) writes critiques and revisions no reader would trust, so their
quality cannot be graded here; what can be measured is what a revise job does with them. On a
handful of the shipped labelled pairs (the dispreferred answer as the candidate to revise), a
revise job's own prompt step (`charter.jobs.modes.process_prompt`: critique -> revision chains,
the quality gates, the judge's check of each revision against its original) runs with
`few_shot = 0` and with `few_shot = N` (each critique request, and the check's score questions,
first show N of the principle's examples), everything else equal: same principles (rendezvous
by prompt), same keyed nonces. Per setting: chains, why each made no row (the gates' reasons),
rows made and kept at the default `--min-confidence`, mean P(revision better), mean critique
length, model calls and seconds. No store: every call is made.

    nice .venv/bin/python benchmarks/few_shot_critiques.py [--prompts 6] [--shots 2]
        [--revisions 1] [--judge smollm2] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from charter.constitution import load_constitution  # noqa: E402
from charter.jobs.modes import process_prompt  # noqa: E402
from charter.jobs.results import is_exportable  # noqa: E402
from charter.jobs.spec import DEFAULT_MIN_CONFIDENCE, JobOptions  # noqa: E402
from charter.jobs.store import create_or_get_job  # noqa: E402
from charter.judge import BackendOptions, load_model, load_pairs  # noqa: E402
from charter.judge.prompts import KeyedNonces  # noqa: E402
from charter.prompt_files import PromptRecord  # noqa: E402
from charter.store import open_store  # noqa: E402

PAIRS_FILE = REPO / "examples" / "labelled-pairs.jsonl"
NONCES = KeyedNonces(b"few-shot-critiques-benchmark")


@dataclass
class Outcome:
    few_shot: int
    prompts: int
    chains: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    kept: int = 0
    mean_p_revision: float | None = None
    mean_critique_chars: float | None = None
    calls: int = 0
    seconds: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)


class Counting:
    """Counts the calls made through it (`generate` and `choose`)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    @property
    def spec(self) -> str:
        return str(self.inner.spec)

    async def generate(self, request: Any) -> Any:
        self.calls += 1
        return await self.inner.generate(request)

    async def choose(self, messages: Any, options: Any) -> Any:
        self.calls += 1
        return await self.inner.choose(messages, options)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def measure(
    judge: str, records: list[PromptRecord], few_shot: int, revisions: int, store: Path
) -> Outcome:
    constitution = load_constitution(REPO / "principles")
    db = open_store(store)
    options = JobOptions(
        mode="revise", protocol="pointwise", principles=1, revisions=revisions, few_shot=few_shot
    )
    spec = options.plan(db, records, constitution, default_judge=judge, default_policy=judge)
    job, _ = create_or_get_job(db, spec, constitution, records, PAIRS_FILE.name)
    model = Counting(load_model(judge, BackendOptions(max_concurrency=4)))
    outcome = Outcome(few_shot=few_shot, prompts=len(records))
    rejected: Counter[str] = Counter()
    p_revision: list[float] = []
    critiques: list[int] = []
    started = time.perf_counter()
    try:
        for position, record in enumerate(records):
            rows, result, _ = await process_prompt(job, position, record, model, None, NONCES)  # type: ignore[arg-type]
            for chain, reason in zip(result["chains"], result["rejected"], strict=True):
                outcome.chains += 1
                rejected[reason or "made a row"] += 1
                for rnd in chain["rounds"]:
                    text = (rnd.get("critique") or {}).get("text")
                    if text:
                        critiques.append(len(text))
                if len(outcome.samples) < 3 and chain["rounds"]:
                    first = chain["rounds"][0]
                    outcome.samples.append(
                        {
                            "principle": first["principle_id"],
                            "critique": ((first.get("critique") or {}).get("text") or "")[:300],
                            "revision": ((first.get("revision") or {}).get("text") or "")[:300],
                            "outcome": reason or "made a row",
                        }
                    )
            outcome.rows += len(rows)
            outcome.kept += sum(1 for r in rows if is_exportable(r, DEFAULT_MIN_CONFIDENCE))
            p_revision += [r.p_chosen for r in rows if r.p_chosen is not None]
    finally:
        await model.aclose()
    outcome.seconds = time.perf_counter() - started
    outcome.calls = model.calls
    outcome.rejected = dict(rejected.most_common())
    outcome.mean_p_revision = sum(p_revision) / len(p_revision) if p_revision else None
    outcome.mean_critique_chars = sum(critiques) / len(critiques) if critiques else None
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judge", default="smollm2")
    parser.add_argument("--prompts", type=int, default=6, help="labelled pairs, spread evenly")
    parser.add_argument("--shots", type=int, default=2, help="examples shown per principle")
    parser.add_argument("--revisions", type=int, default=1, help="critique -> revision rounds")
    parser.add_argument("--json", dest="json_path", help="also write the figures here")
    args = parser.parse_args()
    pairs = load_pairs(PAIRS_FILE)
    step = max(len(pairs) // args.prompts, 1)
    chosen = pairs[::step][: args.prompts]
    records = [
        PromptRecord(prompt=p.prompt, responses=(p.b if p.preferred == "a" else p.a,))
        for p in chosen
    ]
    print(f"{len(records)} prompts (every {step}th labelled pair); load {os.getloadavg()}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for few_shot in (0, args.shots):
            store = Path(tmp) / f"store-{few_shot}.db"
            outcome = asyncio.run(measure(args.judge, records, few_shot, args.revisions, store))
            results.append(outcome)
            print(
                json.dumps({k: v for k, v in asdict(outcome).items() if k != "samples"}),
                flush=True,
            )
    print(f"load {os.getloadavg()}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
