"""`charter.ray`'s Ray Data classes: the verdicts `charter judge compare --pairs` gives, added as
columns, in every batch format; and the reward of `charter.judge.score`.

The first tests call the classes as Ray Data would, on a batch, without starting Ray; the slow
one runs them through `ray.data.from_items(...).map_batches` on a local Ray (2 CPUs, loopback).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from charter.cli.main import cli
from charter.constitution import load_constitution
from charter.judge import BackendOptions, JudgeConfig
from charter.ray import DataJudgeSettings, PairJudge, RewardScorer
from tests.support.generation import bad, good, responder, write_constitution
from tests.support.ray_cluster import left_running, tagged_env
from tests.support.scripted_server import ScriptedJudgeServer

REPO = Path(__file__).resolve().parent.parent
PROMPTS = [f"Question {i}: how do I look after plant {i}?" for i in range(6)]
PAIRS = [  # the good answer in slot a for even rows and in slot b for odd ones
    {"prompt": p, "a": good(p), "b": bad(p)}
    if i % 2 == 0
    else {"prompt": p, "a": bad(p), "b": good(p)}
    for i, p in enumerate(PROMPTS)
]
VERDICT_KEYS = ("p_a", "winner", "position_consistent", "protocol", "judge")


@pytest.fixture
def principles(tmp_path: Path) -> Path:
    return write_constitution(tmp_path / "principles")


@pytest.fixture
def server() -> Iterator[ScriptedJudgeServer]:
    with ScriptedJudgeServer(responder(PROMPTS, position_bias_a=0.3)) as s:
        yield s


def settings(server: ScriptedJudgeServer, principles: Path, **config: Any) -> DataJudgeSettings:
    return DataJudgeSettings(
        judge="openai:scripted",
        backend=BackendOptions(base_url=server.base_url, timeout_s=5),
        constitution=load_constitution(principles),
        config=JudgeConfig(**config),
    )


def cli_verdicts(
    server: ScriptedJudgeServer, principles: Path, tmp_path: Path, *args: str
) -> list[dict[str, Any]]:
    """`charter judge compare --pairs` on `PAIRS`, as JSON."""
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in PAIRS))
    result = CliRunner().invoke(
        cli,
        [
            "judge", "compare", "--pairs", str(path), "--json", "--dir", str(principles),
            "--judge", "openai:scripted", "--judge-base-url", server.base_url, *args,
        ],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def same_verdicts(rows: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Row by row: the CLI's p_a, winner, consistency, protocol, judge and per-principle
    verdicts (the principles' ids, weights and p_a)."""
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected, strict=True):
        for key in VERDICT_KEYS:
            assert row[key] == pytest.approx(want[key]), key
        assert [
            (v["principle_id"], v["weight"], v["p_a"], v["consistent"]) for v in row["principles"]
        ] == [
            (v["principle_id"], v["weight"], v["p_a"], v["consistent"]) for v in want["principles"]
        ]
        assert row["constitution_digest"] == want["constitution_digest"]
        assert row["error"] is None


def as_rows(columns: dict[str, Any]) -> list[dict[str, Any]]:
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


@pytest.mark.parametrize("protocol", ["pairwise", "pointwise"])
def test_a_numpy_batch_gets_the_verdicts_of_judge_compare(
    server: ScriptedJudgeServer, principles: Path, tmp_path: Path, protocol: str
) -> None:
    import numpy as np

    expected = cli_verdicts(server, principles, tmp_path, "--protocol", protocol)
    assert {"a", "b"} <= {r["winner"] for r in expected}  # both slots win somewhere
    batch = {key: np.array([row[key] for row in PAIRS]) for key in ("prompt", "a", "b")}
    stage = PairJudge(settings(server, principles, protocol=protocol))
    try:
        out = stage(batch)
    finally:
        stage.close()
    assert out["p_a"].dtype == np.float64  # a number column, NaN where no verdict
    assert list(out["prompt"]) == PROMPTS  # the batch's own columns are kept
    same_verdicts(as_rows({k: list(v) for k, v in out.items()}), expected)


def test_pandas_and_arrow_batches_come_back_in_their_own_format(
    server: ScriptedJudgeServer, principles: Path, tmp_path: Path
) -> None:
    import pandas as pd
    import pyarrow as pa

    expected = cli_verdicts(server, principles, tmp_path, "--protocol", "pairwise")
    stage = PairJudge(settings(server, principles, protocol="pairwise"))
    try:
        frame = stage(pd.DataFrame(PAIRS))
        table = stage(pa.Table.from_pylist(PAIRS))
    finally:
        stage.close()
    assert isinstance(frame, pd.DataFrame) and isinstance(table, pa.Table)
    same_verdicts(frame.to_dict("records"), expected)
    same_verdicts(table.to_pylist(), expected)


def test_a_judge_that_never_answers_gives_nan_and_no_winner(principles: Path) -> None:
    from tests.support.scripted_server import Fault

    with ScriptedJudgeServer(responder(PROMPTS), fault_policy=lambda r: Fault.garbage()) as s:
        stage = PairJudge(settings(s, principles, protocol="pairwise", parse_retries=0))
        try:
            out = stage({key: [PAIRS[0][key]] for key in ("prompt", "a", "b")})
        finally:
            stage.close()
    assert math.isnan(out["p_a"][0]) and out["winner"][0] is None
    assert out["failed"][0] == 4 and "unparseable" in out["error"][0]


def test_a_batch_without_the_column_names_it(server: ScriptedJudgeServer, principles: Path) -> None:
    stage = PairJudge(settings(server, principles))
    with pytest.raises(KeyError, match="no 'b' column"):
        stage({"prompt": ["p"], "a": ["x"], "response_b": ["y"]})


def test_the_reward_is_the_pointwise_score(server: ScriptedJudgeServer, principles: Path) -> None:
    from charter.judge import score_sync

    s = settings(server, principles, protocol="pointwise")
    rows = [{"prompt": p, "response": good(p)} for p in PROMPTS[:2]]
    rows += [{"prompt": p, "response": bad(p)} for p in PROMPTS[:2]]
    stage = RewardScorer(s)
    try:
        out = stage({key: [row[key] for row in rows] for key in ("prompt", "response")})
    finally:
        stage.close()
    constitution = load_constitution(principles)
    for row, reward, fallback in zip(rows, out["reward"], out["reward_fallback"], strict=True):
        from charter.judge.backends.registry import load_model

        model = load_model("openai:scripted", s.backend)
        expected = score_sync(model, constitution, row["prompt"], row["response"], s.config)
        model.close()
        assert reward == pytest.approx(expected.p_yes) and not fallback
    assert out["reward"][0] > 0.5 > out["reward"][2]
    assert out["principle_scores"][0][0].keys() == {"principle_id", "score"}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """A Ray on this machine for this module's tests (2 CPUs, loopback), shut down after, and
    none of its processes left running."""
    import os

    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    ray = pytest.importorskip("ray")
    with tagged_env() as tag:
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            logging_level="WARNING",
        )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()
        assert left_running(tag) == [], "Ray processes outlived ray.shutdown()"


@pytest.mark.slow
def test_map_batches_on_a_ray_dataset_gives_the_verdicts_of_judge_compare(
    local_ray: Any, server: ScriptedJudgeServer, principles: Path, tmp_path: Path
) -> None:
    ray = local_ray
    expected = cli_verdicts(server, principles, tmp_path, "--protocol", "pairwise")
    ds = ray.data.from_items(PAIRS).map_batches(
        PairJudge,
        fn_constructor_kwargs={"settings": settings(server, principles, protocol="pairwise")},
        compute=ray.data.ActorPoolStrategy(size=2),
        batch_size=2,
    )
    rows = sorted(ds.take_all(), key=lambda r: PROMPTS.index(r["prompt"]))
    same_verdicts(rows, expected)

    scored = ray.data.from_items([{"prompt": p, "response": good(p)} for p in PROMPTS])
    scored = scored.map_batches(
        RewardScorer,
        fn_constructor_kwargs={"settings": settings(server, principles, protocol="pointwise")},
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_format="pandas",
    )
    frame = scored.to_pandas()
    assert (frame["reward"] > 0.5).all() and not frame["reward_fallback"].any()


@pytest.mark.slow
def test_the_example_judges_a_labelled_file(
    local_ray: Any, server: ScriptedJudgeServer, principles: Path, tmp_path: Path
) -> None:
    import runpy

    example = runpy.run_path(str(REPO / "examples" / "ray" / "judge_dataset.py"))
    labelled = tmp_path / "labelled.jsonl"
    preferred = ["a" if i % 2 == 0 else "b" for i in range(len(PAIRS))]
    labelled.write_text(
        "".join(
            json.dumps({**row, "id": f"row-{i}", "preferred": label}) + "\n"
            for i, (row, label) in enumerate(zip(PAIRS, preferred, strict=True))
        )
    )
    rows = example["main"](
        [
            "--pairs", str(labelled), "--principles", str(principles), "--limit", "0",
            "--judge", "openai:scripted", "--judge-base-url", server.base_url,
            "--protocol", "pointwise", "--out", str(tmp_path / "judged.parquet"),
        ]
    )  # fmt: skip
    assert sorted(r["id"] for r in rows) == [f"row-{i}" for i in range(len(PAIRS))]
    for row in rows:
        assert row["winner"] == row["preferred"]  # the scripted judge knows the good answer
        assert (row["reward"] > 0.5) == (row["preferred"] == "a")
