"""Judge a dataset of response pairs on Ray Data with charter's constitution, then reward one side.

Each row holds a prompt and two responses (`prompt`, `a`, `b`), as `charter judge compare
--pairs` reads them; `PairJudge` adds `p_a`, `winner`, `position_consistent`, the per-principle
verdicts and provenance, the same verdicts the CLI gives. `RewardScorer` then adds the
constitution's reward for response `a` (P(yes) of it alone). Rows that carry a human label
(`preferred`, as in examples/labelled-pairs.jsonl) are scored against it.

    pip install 'charter[ray]'
    python examples/ray/judge_dataset.py --limit 8                       # embedded judge, offline
    python examples/ray/judge_dataset.py --judge openai:gpt-4o-mini --workers 4 --out judged.parquet
    python examples/ray/judge_dataset.py --ray auto --judge openai:MODEL \\
        --judge-base-url http://vllm-1:8000/v1,http://vllm-2:8000/v1      # a cluster and a fleet

Each actor of the pool opens its own judge client; `--concurrency` requests are in flight per
actor and endpoint. See docs/scale.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from charter.constitution import load_constitution
from charter.judge import BackendOptions, JudgeConfig
from charter.ray import DataJudgeSettings, PairJudge, RewardScorer

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pairs", type=Path, default=REPO / "examples" / "labelled-pairs.jsonl")
    parser.add_argument("--limit", type=int, default=8, help="Rows to judge (0: all).")
    parser.add_argument("--principles", type=Path, default=REPO / "principles")
    parser.add_argument("--judge", default="smollm2", help="Judge model spec.")
    parser.add_argument("--judge-base-url", default=None, help="Endpoint(s), comma-separated.")
    parser.add_argument("--protocol", default="auto", choices=["auto", "pairwise", "pointwise"])
    parser.add_argument("--principles-per-pair", type=int, default=None, help="K.")
    parser.add_argument("--workers", type=int, default=1, help="Actors in the pool.")
    parser.add_argument("--concurrency", type=int, default=16, help="Requests per actor.")
    parser.add_argument("--ray", default="local", help="local, auto or a cluster address.")
    parser.add_argument("--out", type=Path, default=None, help="Write the rows as Parquet.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Judge the pairs; print each verdict and the agreement with the labels; return the rows."""
    import ray

    ns = parse(argv)
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    started = not ray.is_initialized()
    if started:
        local = ns.ray == "local"
        ray.init(
            address=ns.ray,
            include_dashboard=False,
            logging_level="WARNING",
            **({"_node_ip_address": "127.0.0.1"} if local else {}),
        )
    ray.data.DataContext.get_current().enable_progress_bars = False
    settings = DataJudgeSettings(
        judge=ns.judge,
        backend=BackendOptions(base_url=ns.judge_base_url, max_concurrency=ns.concurrency),
        constitution=load_constitution(ns.principles),  # travels to the actors as is
        config=JudgeConfig(protocol=ns.protocol, principles=ns.principles_per_pair),
    )
    try:
        ds = ray.data.read_json(str(ns.pairs))
        if ns.limit:
            ds = ds.limit(ns.limit)
        # An actor mostly waits on HTTP: half a CPU each lets both stages' pools run at once
        # on a small machine (give the embedded judge, which computes, a whole one). Arrow
        # batches keep the nested `principles` column as it is from one stage to the next.
        stage: dict[str, Any] = {
            "compute": ray.data.ActorPoolStrategy(size=ns.workers),
            "num_cpus": 0.5,
            "batch_size": 4,
            "batch_format": "pyarrow",
        }
        judged = ds.map_batches(PairJudge, fn_constructor_kwargs={"settings": settings}, **stage)
        reward_a = settings.model_copy(update={"response_column": "a"})
        rewarded = judged.map_batches(
            RewardScorer, fn_constructor_kwargs={"settings": reward_a}, **stage
        )
        if ns.out is not None:
            rewarded.write_parquet(str(ns.out))
            rows = ray.data.read_parquet(str(ns.out)).take_all()
        else:
            rows = rewarded.take_all()
    finally:
        if started:
            ray.shutdown()
    report(rows)
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    agree = decided = 0
    for row in rows:
        p_a = "n/a" if row["p_a"] != row["p_a"] else f"{row['p_a']:.2f}"  # NaN: no verdict
        label = row.get("preferred")
        print(
            f"{row.get('id', '')!s:<10} winner {row['winner']!s:<5} p_a {p_a:<5} "
            f"reward(a) {row['reward']:.2f}  label {label or '-'}"
        )
        if label in ("a", "b") and row["winner"] in ("a", "b"):
            decided += 1
            agree += row["winner"] == label
    judge = rows[0]["judge"] if rows else "?"
    print(
        f"{len(rows)} rows judged by {judge}; agreement with the labels {agree}/{decided} decided"
    )


if __name__ == "__main__":
    main()
