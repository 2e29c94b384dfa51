"""`charter eval`: two tiny local models, a scripted judge, and the win rate the script implies.

The judge is a loopback server whose responder reads the two fenced responses out of each
comparison prompt and answers from a score table the test wrote: model A's completion wins on
some prompts, loses on others, ties on one. The reported win rate must be exactly the fraction
that table implies, in both orders of presentation, overall and per principle.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from charter.cli.main import cli
from charter.constitution import load_constitution
from charter.evals.winrate import (
    Generated,
    evaluate_models_sync,
    generate_completions,
    judge_pairs,
    win_rate,
)
from charter.judge import BackendOptions, ChatModel, Completion, GenerationRequest, Message
from charter.judge.backends.local import LocalTransformersModel
from charter.judge.backends.openai_http import OpenAIChatModel
from charter.judge.config import JudgeConfig
from charter.prompt_files import PromptRecord, load_prompts
from tests.support.generation import PRINCIPLES, write_constitution, write_prompts
from tests.support.scripted_server import Fault, Reply, ScriptedJudgeServer, last_user_message
from tests.support.tiny_models import build_tiny_chat_model

PROMPTS = [f"Tell me about topic {i} in a few words." for i in range(8)]
SETTINGS = {"max_tokens": 8, "temperature": 1.0, "seed": 3}
WIN, LOSE, TIE = range(5), range(5, 7), range(7, 8)  # model A: 5 wins, 2 losses, 1 tie
EXPECTED = (len(WIN) + 0.5 * len(TIE)) / len(PROMPTS)  # 0.6875

_FENCE = re.compile(r"<<<(RESPONSE_[AB]) (\w+)>>>\n(.*?)\n<<<END_\1 \2>>>", re.DOTALL)


class FencedScores:
    """A judge that prefers the higher-scored of the two fenced responses, whichever slot.

    It reads the texts between the real markers (so any text, even an empty one, is found
    exactly) and answers the letter with logprobs; equal scores give P = 0.5, a tie.
    """

    def __init__(self, scores: dict[str, float], p: float = 0.9) -> None:
        self.scores, self.p = scores, p
        self.verdicts = 0

    def __call__(self, body: dict[str, Any]) -> Reply:
        slots = dict((m[0], m[2]) for m in _FENCE.findall(last_user_message(body)))
        if set(slots) != {"RESPONSE_A", "RESPONSE_B"}:
            return Reply("I see no responses to compare.")
        score_a, score_b = self.scores[slots["RESPONSE_A"]], self.scores[slots["RESPONSE_B"]]
        self.verdicts += 1
        p_slot_a = 0.5 if score_a == score_b else (self.p if score_a > score_b else 1 - self.p)
        letter = "A" if p_slot_a >= 0.5 else "B"
        return Reply(letter, top_logprobs=[("A", math.log(p_slot_a)), ("B", math.log1p(-p_slot_a))])


def sharpen(model_dir: Path, factor: float = 5.0) -> Path:
    """Scale the (tied) embeddings so the model's next-token distribution is peaked.

    Two freshly initialised tiny models are both near-uniform, so sampled with the same
    per-prompt seed (as `charter eval` does, for fairness) they write nearly the same text.
    A peaked model writes its own text, as a trained model would.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(factor)
    model.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two different tiny models, prompts, a constitution, and what each model answers."""
    root = tmp_path_factory.mktemp("eval")
    model_a = sharpen(build_tiny_chat_model(root / "model-a", seed=1))
    model_b = build_tiny_chat_model(root / "model-b", seed=2)
    prompts_path = write_prompts(root / "prompts.jsonl", PROMPTS)
    records = list(load_prompts(prompts_path))

    async def answers(path: Path) -> list[str]:
        model = LocalTransformersModel.load(str(path))
        try:
            out = await generate_completions(model, records, **SETTINGS)  # type: ignore[arg-type]
        finally:
            await model.aclose()
        return [g.text or "" for g in out]

    texts_a = asyncio.run(answers(model_a))
    texts_b = asyncio.run(answers(model_b))
    # The script below needs every pair to differ; seeded sampling makes this deterministic.
    assert all(a != b for a, b in zip(texts_a, texts_b, strict=True))
    return {
        "root": root,
        "a": model_a,
        "b": model_b,
        "prompts": prompts_path,
        "records": records,
        "principles": write_constitution(root / "principles", k=len(PRINCIPLES)),
        "texts_a": texts_a,
        "texts_b": texts_b,
    }


def scripted_scores(world: dict[str, Any]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for i, (a, b) in enumerate(zip(world["texts_a"], world["texts_b"], strict=True)):
        if i in WIN:
            scores[a], scores[b] = 1.0, 0.0
        elif i in LOSE:
            scores[a], scores[b] = 0.0, 1.0
        else:
            scores[a] = scores[b] = 0.5
    return scores


def eval_args(world: dict[str, Any], server: ScriptedJudgeServer, *extra: str) -> list[str]:
    return [
        "eval",
        "--model", str(world["a"]),  # a bare directory means hf:DIR
        "--baseline", f"hf:{world['b']}",
        "--prompts", str(world["prompts"]),
        "--dir", str(world["principles"]),
        "--judge", "openai:scripted",
        "--judge-base-url", server.base_url,
        "--max-tokens", str(SETTINGS["max_tokens"]),
        "--temperature", str(SETTINGS["temperature"]),
        "--seed", str(SETTINGS["seed"]),
        "--resamples", "500",
        *extra,
    ]  # fmt: skip


def invoke(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_eval_reports_the_scripted_win_rate(world: dict[str, Any]) -> None:
    store = world["root"] / "store.db"
    responder = FencedScores(scripted_scores(world))
    with ScriptedJudgeServer(responder) as server:
        code, out, err = invoke(eval_args(world, server, "--json", "--store", str(store)))
        assert code == 0, err
        judge_calls = server.calls
        # Again, as text, on the same store: every judge call is answered from the store.
        code, text, err = invoke(eval_args(world, server, "--store", str(store)))
        assert code == 0, err
        assert server.calls == judge_calls
    report = json.loads(out)
    overall = report["overall"]
    assert (overall["wins"], overall["ties"], overall["losses"]) == (5, 1, 2)
    assert overall["failures"] == 0
    assert overall["win_rate"] == pytest.approx(EXPECTED)
    assert overall["ci_low"] <= EXPECTED <= overall["ci_high"]
    assert overall["ci_low"] < overall["ci_high"]  # 8 mixed outcomes: a real interval
    assert 0.0 < overall["length_controlled"] < 1.0
    assert overall["length_controlled_ci_low"] <= overall["length_controlled_ci_high"]
    # The soft win rate is the mean P(A better): 0.9 for wins, 0.1 for losses, 0.5 for the tie.
    assert overall["soft_win_rate"] == pytest.approx((5 * 0.9 + 2 * 0.1 + 0.5) / 8)
    # Every principle judged every pair, in both orders, and agreed.
    assert {p["principle_id"] for p in report["principles"]} == set(PRINCIPLES)
    for principle in report["principles"]:
        assert principle["n"] == len(PROMPTS)
        assert principle["win_rate"] == pytest.approx(EXPECTED)
        assert principle["ci_low"] <= EXPECTED <= principle["ci_high"]
    assert responder.verdicts == len(PROMPTS) * len(PRINCIPLES) * 2 == judge_calls
    # The tied pair's judge says "A" (at P = 0.5) in both orders: not position-consistent.
    assert report["position_consistency"] == pytest.approx(7 / 8)
    # The CLI's completions are the ones the script was written against (seeded sampling).
    assert [p["a"] for p in report["pairs"]] == world["texts_a"]
    assert [p["b"] for p in report["pairs"]] == world["texts_b"]
    assert report["model"] == f"hf:{world['a']}"
    assert report["tokens"]["model"]["completion_tokens"] > 0
    assert report["tokens"]["judge"]["prompt_tokens"] > 0
    # The text report says the same.
    assert "68.8%" in text and "5/1/2" in text
    assert all(pid in text for pid in PRINCIPLES)
    assert f"({judge_calls} calls reused)" in text


class _Fixed:
    """A policy that answers from a table: fast stand-ins for the library test."""

    def __init__(self, spec: str, texts: dict[str, str]) -> None:
        self.spec, self.texts = spec, texts

    async def generate(self, request: GenerationRequest) -> Completion:
        return Completion(text=self.texts[request.messages[-1].content])

    async def choose(self, messages: Any, options: Any) -> Completion:
        raise AssertionError("a policy is never asked for a verdict")

    async def aclose(self) -> None:
        return None


def test_library_sync_api_model_always_preferred(world: dict[str, Any]) -> None:
    records = world["records"]
    good = {r.text: f"A careful answer to {r.text}" for r in records}
    bad = {r.text: "no" * (i + 1) for i, r in enumerate(records)}
    scores = dict.fromkeys(good.values(), 1.0) | dict.fromkeys(bad.values(), 0.0)
    constitution = load_constitution(world["principles"])
    with ScriptedJudgeServer(FencedScores(scores)) as server:
        judge = OpenAIChatModel("scripted", BackendOptions(base_url=server.base_url))
        report = evaluate_models_sync(
            _Fixed("fixed:good", good),
            _Fixed("fixed:bad", bad),
            judge,
            constitution,
            records,
            config=JudgeConfig(principles=2),
            resamples=200,
        )
    assert (report.model, report.baseline, report.judge) == (
        "fixed:good",
        "fixed:bad",
        "openai:scripted",
    )
    assert report.overall.win_rate == 1.0
    # Won every pair, yet a handful of prompts is no certainty: the bootstrap's point interval
    # is widened to the Wilson interval of the wins.
    n = report.overall.n
    assert report.overall.ci_high == 1.0 and report.overall.ci_low == pytest.approx(
        n / (n + 3.8415), abs=1e-3
    )
    assert report.k == 2
    # k=2 of 3 principles per pair: each principle saw some pairs, and won all it saw.
    assert sum(p.n for p in report.principles) == 2 * len(PROMPTS)
    assert all(p.win_rate == 1.0 for p in report.principles)
    # Separated outcomes: the ridge keeps the length fit finite, just below 1.
    assert report.overall.length_controlled is not None
    assert 0.95 < report.overall.length_controlled < 1.0
    # Lengths in characters: every good answer is longer than its "no" repeated.
    assert report.a_longer_rate == 1.0
    assert report.mean_length_a == pytest.approx(sum(map(len, good.values())) / len(good))
    assert report.mean_length_b == pytest.approx(sum(map(len, bad.values())) / len(bad))


# ---------------------------------------------------------------------------- bad input


def test_missing_prompts_file(world: dict[str, Any], tmp_path: Path) -> None:
    with ScriptedJudgeServer(FencedScores({})) as server:
        args = eval_args(world, server)
        args[args.index("--prompts") + 1] = str(tmp_path / "nope.jsonl")
        code, _, err = invoke(args)
        assert server.calls == 0
    assert code == 1
    assert "nope.jsonl" in err and "not found" in err


@pytest.mark.parametrize("flag", ["--model", "--baseline", "--judge"])
@pytest.mark.parametrize("form", ["{}", "hf:{}"])
def test_missing_model_path(world: dict[str, Any], tmp_path: Path, flag: str, form: str) -> None:
    missing = str(tmp_path / "no-such-model")
    with ScriptedJudgeServer(FencedScores({})) as server:
        args = eval_args(world, server)
        args[args.index(flag) + 1] = form.format(missing)
        code, _, err = invoke(args)
    assert code == 2
    assert "does not exist" in err and "no-such-model" in err and flag in err


def test_judge_that_always_fails_is_an_error(world: dict[str, Any]) -> None:
    server = ScriptedJudgeServer(FencedScores({}), fault_policy=lambda _: Fault.http(401))
    with server:
        code, _, err = invoke(eval_args(world, server))
    assert code == 1
    assert "no pair got a verdict" in err


def test_a_failed_completion_names_its_model_once() -> None:
    """A policy call refused for good is recorded, not raised, and its error names the model
    once (the backend's message already does; it was once prefixed a second time)."""
    server = ScriptedJudgeServer(FencedScores({}), fault_policy=lambda _: Fault.http(401))
    prompts = [PromptRecord(prompt="Say hello.")]
    with server:
        model = OpenAIChatModel("policy-x", BackendOptions(base_url=server.base_url, max_retries=0))
        try:
            [result] = asyncio.run(generate_completions(model, prompts))
        finally:
            asyncio.run(model.aclose())
    assert result.text is None and result.error is not None
    assert result.error.count("openai:policy-x") == 1, result.error
    assert "401" in result.error


# ---------------------------------------------------------------------------- the arithmetic


class _NoJudge:
    """A judge that must not be asked: identical completions are ties without a call."""

    spec = "stub:no-judge"

    async def generate(self, request: GenerationRequest) -> Completion:
        raise AssertionError("the judge was asked to generate")

    async def choose(self, messages: Any, options: Any) -> Completion:
        raise AssertionError("the judge was asked to compare identical completions")

    async def aclose(self) -> None:
        return None


class _PrefersNonEmpty(_NoJudge):
    """Chooses whichever slot holds the non-empty response."""

    async def choose(self, messages: Any, options: Any) -> Completion:
        user: Message = messages[-1]
        slots = dict((m[0], m[2]) for m in _FENCE.findall(user.content))
        letter = "A" if slots["RESPONSE_A"] else "B"
        return Completion(text=letter)


def test_identical_completions_tie_without_the_judge(world: dict[str, Any]) -> None:
    constitution = load_constitution(world["principles"])
    records = world["records"][:3]
    same = [Generated(text="same answer"), Generated(text=""), Generated(text=None, error="x")]
    judge: ChatModel = _NoJudge()
    pairs = asyncio.run(
        judge_pairs(judge, constitution, records, same, same, config=JudgeConfig(principles=2))
    )
    assert [p.winner for p in pairs] == ["tie", "tie", None]
    assert pairs[0].identical and pairs[1].identical
    assert pairs[2].error == "x"
    assert all(len(p.principles) == 2 for p in pairs[:2])


def test_empty_completion_is_judged(world: dict[str, Any]) -> None:
    constitution = load_constitution(world["principles"])
    records = world["records"][:2]
    a = [Generated(text=""), Generated(text="something")]
    b = [Generated(text="an answer"), Generated(text="")]
    judge: ChatModel = _PrefersNonEmpty()
    pairs = asyncio.run(
        judge_pairs(judge, constitution, records, a, b, config=JudgeConfig(principles=1))
    )
    assert [p.winner for p in pairs] == ["b", "a"]


def test_win_rate_counts_ties_half_and_excludes_failures() -> None:
    r = win_rate([1, 1, 0.5, 0], [0.9, 0.8, 0.5, 0.2], [0, 0, 0, 0], failures=3, resamples=300)
    assert (r.n, r.wins, r.ties, r.losses, r.failures) == (4, 2, 1, 1, 3)
    assert r.win_rate == pytest.approx(2.5 / 4)
    assert r.soft_win_rate == pytest.approx(0.6)
    # No length variation: the length term has nothing to explain, LC equals the raw rate.
    assert r.length_controlled == pytest.approx(2.5 / 4, abs=0.01)
    assert r.length_coefficient == 0.0
    empty = win_rate([], [], [], failures=2)
    assert empty.win_rate is None and empty.ci_low is None and empty.failures == 2


def test_win_rate_is_reproducible_for_a_seed() -> None:
    args = ([1, 0, 1, 0.5, 1, 0], [0.9, 0.1, 0.9, 0.5, 0.9, 0.1], [5, -3, 8, 0, 2, -1])
    assert win_rate(*args, seed=4) == win_rate(*args, seed=4)
    assert win_rate(*args, seed=4).ci_low is not None


def test_length_control_removes_a_pure_length_preference() -> None:
    """A judge that only rewards length: raw win rate well above 0.5, LC close to 0.5."""
    rng = np.random.default_rng(0)
    diff = rng.normal(40.0, 60.0, 400)  # the model tends to write longer answers
    x = np.tanh(diff / diff.std())
    scores = (rng.random(400) < 1.0 / (1.0 + np.exp(-3.0 * x))).astype(float)
    r = win_rate(list(scores), list(scores), list(diff), resamples=300)
    assert r.win_rate is not None and r.win_rate > 0.62
    assert r.length_controlled == pytest.approx(0.5, abs=0.06)
    assert r.length_controlled_ci_low is not None and r.length_controlled_ci_high is not None
    assert r.length_controlled_ci_low < 0.5 < r.length_controlled_ci_high
    assert r.length_coefficient is not None and r.length_coefficient > 1.0


def test_length_control_keeps_a_preference_unrelated_to_length() -> None:
    rng = np.random.default_rng(1)
    diff = rng.normal(40.0, 60.0, 400)
    scores = (rng.random(400) < 0.7).astype(float)
    r = win_rate(list(scores), list(scores), list(diff), resamples=300)
    assert r.win_rate is not None and r.length_controlled is not None
    assert r.length_controlled == pytest.approx(r.win_rate, abs=0.04)
