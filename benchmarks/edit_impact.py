"""Does the edit-impact preview predict the re-run? (issue 22's measurement)

A job of N prompts (two given answers, X and Y, each) is judged pairwise under three
principles by the scripted judge on loopback, each principle preferring Y on its own seeded
random share of prompts. The edit rewrites the harmless principle's question; the scripted
judge answers the new question with the opposite of harmless's old preference on every
prompt, so the edit flips one principle's preference, and a winner flips wherever the other
two principles disagreed. For each seed, in a fresh store:

1. `charter constitution impact --sample N/5` (a 20% sample): its flip rate and 95% Wilson
   interval, the calls it made (and the calls the scripted server counted), and the calls it
   says the rest of the job takes;
2. `charter jobs rerun` (the full re-run): the calls the server counted, and its flip rate
   (`charter jobs diff`: flipped rows over all rows);

and says whether the full flip rate fell inside the preview's interval, whether the preview's
calls equal what the edit touched in its sample, and whether the re-run made exactly the
remaining touched calls.

    .venv/bin/python benchmarks/edit_impact.py [--prompts 200] [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from click.testing import CliRunner  # noqa: E402

from charter.cli.main import cli  # noqa: E402
from tests.support.generation import write_constitution  # noqa: E402
from tests.support.scripted_server import ScriptedJudgeServer  # noqa: E402
from tests.support.workbench import (  # noqa: E402
    EDITED_MARKER,
    edit_harmless,
    principled_judge,
    x_text,
    y_text,
)

SHARES = {"helpful": 0.3, "honest": 0.4, "harmless": 0.5}  # of prompts where each prefers Y


def run(args: list[str]) -> dict[str, Any]:
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(f"charter {' '.join(args[:2])} failed: {result.stderr}")
    found: dict[str, Any] = json.loads(result.stdout)
    return found


@dataclass
class Outcome:
    seed: int
    preview_rate: float
    low: float
    high: float
    full_rate: float
    preview_calls: int
    preview_server_calls: int
    touched_in_sample: int
    calls_for_rest: int
    rerun_server_calls: int

    @property
    def inside(self) -> bool:
        return self.low <= self.full_rate <= self.high

    @property
    def calls_match(self) -> bool:
        return (
            self.preview_calls == self.preview_server_calls == self.touched_in_sample
            and self.rerun_server_calls == self.calls_for_rest
        )


def one_seed(root: Path, prompts: int, seed: int) -> Outcome:
    rng = random.Random(seed)
    table = {p: {i for i in range(prompts) if rng.random() < share} for p, share in SHARES.items()}
    table[EDITED_MARKER] = set(range(prompts)) - table["harmless"]  # the opposite everywhere
    principles = write_constitution(root / "principles", k=3)
    edited = edit_harmless(principles, root / "edited")
    items = root / "prompts.jsonl"
    items.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": f"Workbench question {i}: what now?",
                    "responses": [x_text(i), y_text(i)],
                }
            )
            + "\n"
            for i in range(prompts)
        )
    )
    store = ["--store", str(root / "store.db")]
    with ScriptedJudgeServer(principled_judge(table, count=prompts)) as server:
        url = ["--judge-base-url", server.base_url]
        made = run(["generate", "--prompts", str(items), "--dir", str(principles), *store,
                    "--judge", "openai:scripted", *url, "--protocol", "pairwise"])  # fmt: skip
        job = made["job_id"]
        before = server.calls
        sample = ["--sample", str(prompts // 5), "--seed", str(seed)]
        preview = run(["constitution", "impact", "--job", str(job), "--dir", str(edited),
                       *store, *url, *sample])  # fmt: skip
        preview_server = server.calls - before
        before = server.calls
        rerun = run(["jobs", "rerun", str(job), "--dir", str(edited), *store, *url])
        rerun_server = server.calls - before
    diff = run(["jobs", "diff", str(job), str(rerun["job_id"]), *store])
    low, high = preview["flip_interval"]
    return Outcome(
        seed=seed,
        preview_rate=preview["flip_rate"],
        low=low,
        high=high,
        full_rate=diff["flipped"] / diff["rows_before"],
        preview_calls=preview["calls_made"],
        preview_server_calls=preview_server,
        touched_in_sample=preview["touched_in_sample"],
        calls_for_rest=preview["calls_for_rest"],
        rerun_server_calls=rerun_server,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=5)
    options = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    for seed in range(options.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(one_seed(Path(tmp), options.prompts, seed))
    print(f"{options.prompts} prompts, preview on a 20% sample ({options.prompts // 5} prompts)")
    print("seed  preview flip rate [95% interval]   full re-run   inside  "
          "calls: preview (server, touched)  rest said  re-run (server)")  # fmt: skip
    for r in rows:
        print(
            f"{r.seed:>4}  {r.preview_rate:.3f} [{r.low:.3f}, {r.high:.3f}]"
            f"{r.full_rate:>17.3f}   {'yes' if r.inside else 'NO':>5}  "
            f"{r.preview_calls:>8} ({r.preview_server_calls}, {r.touched_in_sample})"
            f"{r.calls_for_rest:>18} {r.rerun_server_calls:>9}"
            f"  {'' if r.calls_match else 'MISMATCH'}"
        )
    inside = sum(1 for r in rows if r.inside)
    print(f"full re-run flip rate inside the preview's interval: {inside} of {len(rows)} seeds")
    print(f"calls exactly as counted: {sum(1 for r in rows if r.calls_match)} of {len(rows)}")


if __name__ == "__main__":
    main()
