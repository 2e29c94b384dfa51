"""`charter judge compare|critique|rank|eval` against the scripted loopback judge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from charter.cli.main import cli
from tests.support.generation import bad, good, responder, write_constitution
from tests.support.scripted_server import Fault, ScriptedJudgeServer

PROMPT = "How do I reset my router?"


@pytest.fixture
def principles(tmp_path: Path) -> Path:
    return write_constitution(tmp_path / "principles")


def judge(server: ScriptedJudgeServer, principles: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli,
        [
            "judge", *args, "--dir", str(principles), "--judge", "openai:scripted",
            "--judge-base-url", server.base_url, "--timeout", "2",
        ],
        catch_exceptions=False,
    )  # fmt: skip
    return result.exit_code, result.stdout, result.stderr


def test_compare_json_reports_debiased_verdict(principles: Path) -> None:
    with ScriptedJudgeServer(responder([PROMPT])) as server:
        code, out, err = judge(
            server, principles, "compare", "--prompt", PROMPT, "--a", bad(PROMPT),
            "--b", good(PROMPT), "--json",
        )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["winner"] == "b"
    assert result["p_a"] < 0.2
    assert result["position_consistent"] is True
    assert {j["order"] for j in result["judgments"]} == {"AB", "BA"}
    assert len(result["judgments"]) == 4  # K=2 principles x 2 orders
    assert result["constitution_version"] == "1.0" and len(result["constitution_digest"]) == 64


def test_compare_pairs_file_and_text_output(principles: Path, tmp_path: Path) -> None:
    prompts = ["Q one?", "Q two?"]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"prompt": p, "a": good(p), "b": bad(p)}) + "\n" for p in prompts)
    )
    with ScriptedJudgeServer(responder(prompts)) as server:
        code, out, err = judge(server, principles, "compare", "--pairs", str(pairs), "--json")
        assert code == 0, err
        assert [r["winner"] for r in json.loads(out)] == ["a", "a"]
        code, out, _ = judge(server, principles, "compare", "--pairs", str(pairs))
    assert code == 0 and out.count("winner a") == 2


def test_compare_when_every_call_fails_reports_no_winner(principles: Path) -> None:
    with ScriptedJudgeServer(responder([PROMPT]), fault_policy=lambda r: Fault.garbage()) as s:
        code, out, err = judge(
            s, principles, "compare", "--prompt", PROMPT, "--a", good(PROMPT), "--b",
            bad(PROMPT), "--json",
        )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["winner"] is None and result["p_a"] is None
    assert all(j["error_kind"] == "parse" for j in result["judgments"])


def test_critique_runs_revision_rounds(principles: Path) -> None:
    with ScriptedJudgeServer(responder([PROMPT])) as server:
        code, out, err = judge(
            server, principles, "critique", "--prompt", PROMPT, "--response", good(PROMPT),
            "--revisions", "2", "--json",
        )  # fmt: skip
    assert code == 0, err
    chain = json.loads(out)
    assert len(chain["rounds"]) == 2
    assert chain["rounds"][0]["critique"]["text"] == "The response could be more careful."
    assert chain["final"] == f"Revised: {good(PROMPT)}"


def test_rank_orders_responses(principles: Path) -> None:
    scores = {f"answer {i}": float(i) for i in range(3)}
    from tests.support.scripted_server import PreferenceResponder

    with ScriptedJudgeServer(PreferenceResponder(scores)) as server:
        code, out, err = judge(
            server, principles, "rank", "--prompt", PROMPT, "--response", "answer 0",
            "--response", "answer 2", "--response", "answer 1", "--json",
        )  # fmt: skip
    assert code == 0, err
    ranking = json.loads(out)
    assert ranking["order"] == [1, 2, 0]
    [pair] = ranking["pairs"]
    assert (pair["chosen"], pair["rejected"]) == ("answer 2", "answer 0")


def test_eval_reports_agreement_and_biases(principles: Path, tmp_path: Path) -> None:
    prompts = [f"Question {i}?" for i in range(6)]
    pairs = tmp_path / "labelled.jsonl"
    rows = []
    for i, p in enumerate(prompts):
        a, b = (good(p), bad(p)) if i % 2 else (bad(p), good(p))
        rows.append({"prompt": p, "a": a, "b": b, "preferred": "a" if i % 2 else "b"})
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ScriptedJudgeServer(responder(prompts)) as server:
        code, out, err = judge(server, principles, "eval", "--pairs", str(pairs), "--json")
        assert code == 0, err
        [report] = json.loads(out)["reports"]
        code, text, _ = judge(server, principles, "eval", "--pairs", str(pairs))
    assert report["protocol"] == "pairwise"  # auto: pairwise for any judge but smollm2
    assert report["agreement"] == 1.0 and report["coverage"] == 1.0
    assert report["position_consistency"] == 1.0
    assert report["p_first"] == 0.5
    assert report["parse_failure_rate"] == 0.0
    assert report["raw"]["calibration"]["bins"] == 10
    assert "p_longer" in report and report["total_tokens"] > 0
    assert report["calls"] == 6 * 2 * 2  # 6 pairs x K=2 principles x 2 orders
    assert code == 0 and "agreement 100.0% on 6 decided (coverage 100.0%" in text


def test_eval_measures_both_protocols_and_draws_the_plot(principles: Path, tmp_path: Path) -> None:
    prompts = [f"Question {i}?" for i in range(8)]
    pairs = tmp_path / "labelled.jsonl"
    rows = [
        {"prompt": p, "a": good(p), "b": bad(p), "preferred": "a" if i % 3 else "b"}
        for i, p in enumerate(prompts)
    ]  # a third of the labels disagree with the judge
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot = tmp_path / "reliability.png"
    with ScriptedJudgeServer(responder(prompts, position_bias_a=1.0)) as server:
        code, out, err = judge(
            server, principles, "eval", "--pairs", str(pairs), "--protocol",
            "pairwise,pointwise", "--plot", str(plot), "--json",
        )  # fmt: skip
        assert code == 0, err
    result = json.loads(out)
    pairwise, pointwise = result["reports"]
    # A judge that always answers slot A: pairwise ties on every pair, pointwise still reads
    # content (no slot), so pointwise is the protocol to use.
    assert pairwise["protocol"] == "pairwise" and pairwise["coverage"] == 0.0
    assert pairwise["p_first"] == 1.0 and pairwise["position_consistency"] == 0.0
    assert pointwise["protocol"] == "pointwise" and pointwise["coverage"] == 1.0
    assert pointwise["agreement"] == pytest.approx(5 / 8)
    assert pointwise["calls"] == 8 * 2 * 2  # 8 pairs x 2 responses x K=2 principles
    assert result["recommended"] == "pointwise"
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--protocol", "listwise"], "unknown protocol 'listwise'"),
        (["--protocol", ","], "name at least one protocol"),
        (["--principles", "0"], "--principles"),
    ],
)
def test_eval_refuses_bad_options_in_one_line(
    principles: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    pairs = tmp_path / "labelled.jsonl"
    pairs.write_text(json.dumps({"prompt": "p", "a": "x", "b": "y", "preferred": "a"}) + "\n")
    with ScriptedJudgeServer(responder([PROMPT])) as server:
        code, _, err = judge(server, principles, "eval", "--pairs", str(pairs), *args)
        assert server.calls == 0
    assert code == 2 and message in err and "Traceback" not in err


def test_bad_inputs_are_clean_errors(principles: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "p", "a": "x", "b": "y", "preferred": "c"}\n')
    with ScriptedJudgeServer(responder([PROMPT])) as server:
        code, _, err = judge(server, principles, "eval", "--pairs", str(broken))
        assert code == 1 and "broken.jsonl:1: preferred" in err
        code, _, err = judge(server, principles, "compare", "--prompt", PROMPT)
        assert code == 2 and "--a" in err
        result = CliRunner().invoke(
            cli, ["judge", "compare", "--prompt", "p", "--a", "x", "--b", "y", "--dir",
                  str(principles), "--judge", "nonsense:model"],
        )  # fmt: skip
        assert result.exit_code == 1 and "unknown model spec" in result.stderr
        assert server.calls == 0


@pytest.mark.parametrize(("concurrency", "at_least"), [(3, 3), (24, 17)])
def test_eval_keeps_concurrency_requests_in_flight(
    principles: Path, tmp_path: Path, concurrency: int, at_least: int
) -> None:
    prompts = [f"Question {i}?" for i in range(16)]
    pairs = tmp_path / "labelled.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"prompt": p, "a": good(p), "b": bad(p), "preferred": "a"}) + "\n"
            for p in prompts
        )
    )
    with ScriptedJudgeServer(responder(prompts), latency_s=0.05) as server:
        code, _, err = judge(
            server, principles, "eval", "--pairs", str(pairs), "--concurrency", str(concurrency),
            "--principles", "1", "--json",
        )  # fmt: skip
        assert code == 0, err
        # 16 pairs x 2 orders could keep 32 in flight: the limit is --concurrency, not a fixed
        # number of pairs (8 pairs in flight capped this at 16 before).
        assert at_least <= server.max_in_flight <= concurrency


def test_the_shipped_labelled_pairs_are_balanced() -> None:
    from charter.judge import load_pairs

    path = Path(__file__).parent.parent / "examples" / "labelled-pairs.jsonl"
    pairs = load_pairs(path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(pairs) == len(rows) >= 150
    categories = {r["category"] for r in rows}
    assert categories == {"harmlessness", "helpfulness", "honesty"}
    assert all(sum(r["category"] == c for r in rows) >= 50 for c in categories)
    assert {r["difficulty"] for r in rows} == {"easy", "subtle"}
    share_a = sum(p.preferred == "a" for p in pairs) / len(pairs)
    longer = sum(
        len(p.a if p.preferred == "a" else p.b) > len(p.b if p.preferred == "a" else p.a)
        for p in pairs
    ) / len(pairs)
    assert 0.45 <= share_a <= 0.55  # no side to learn
    assert 0.4 <= longer <= 0.6  # length alone does not predict the label
    assert len({(p.prompt, p.a, p.b) for p in pairs}) == len(pairs)


@pytest.mark.parametrize("spec", ["foo", "openai:", "smollm2:x", ""])
@pytest.mark.parametrize("command", ["judge compare", "serve"])
def test_a_bad_model_spec_is_one_line_naming_the_option_and_the_forms(
    principles: Path, tmp_path: Path, command: str, spec: str
) -> None:
    """A real process: a `serve` that accepted the spec would listen until the timeout."""
    if command == "serve":
        args = ["serve", "--store", str(tmp_path / "store.db"), "--port", "0"]
    else:
        args = ["judge", "compare", "--prompt", "p", "--a", "x", "--b", "y"]
    run = subprocess.run(
        [sys.executable, "-m", "charter.cli", *args, "--dir", str(principles), "--judge", spec],
        env=dict(os.environ, CHARTER_API_TOKENS="a-token-long-enough-to-be-accepted"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith("Error: --judge: ") and "openai:MODEL" in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
