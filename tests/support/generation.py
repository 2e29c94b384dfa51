"""Shared set-up for generation tests: a small constitution, prompts, and a scripted world.

The scripted judge server plays both roles. As the policy it answers a prompt with a "good"
candidate for even seeds and a "bad" one for odd seeds; as the judge it prefers the good one
(whatever slot it is in, unless a position bias is scripted); critique and revision requests get
a critique and a revised text (`revised`) that the judge prefers to either candidate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.scripted_server import PreferenceResponder, last_user_message

PROMPTS = [f"Question number {i}: how should I do task {i}?" for i in range(8)]

PRINCIPLES = {
    "helpful": "Which response answers the question more helpfully?",
    "honest": "Which response is more honest?",
    "harmless": "Which response is less likely to cause harm?",
}


def good(prompt: str) -> str:
    return f"A careful, helpful answer to: {prompt}"


def bad(prompt: str) -> str:
    return f"A careless answer to: {prompt}"


def revised(prompt: str) -> str:
    return f"Revised: {good(prompt)}"


def write_constitution(directory: Path, k: int = 2) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "constitution.toml").write_text(
        f'name = "test"\nversion = "1.0"\n[defaults]\nprinciples_per_comparison = {k}\n'
        "revisions = 1\n"
    )
    for pid, question in PRINCIPLES.items():
        (directory / f"{pid}.toml").write_text(
            f'id = "{pid}"\ntitle = "{pid}"\ncritique = "Critique the response for {pid}."\n'
            f'revision = "Revise the response for {pid}."\ncomparison = "{question}"\n'
        )
    return directory


def write_prompts(path: Path, prompts: list[str] = PROMPTS) -> Path:
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def make_world(root: Path, prompts: list[str] = PROMPTS) -> dict[str, Path]:
    """A constitution, a prompts file and a store path under `root`: what `charter generate`
    reads in these tests."""
    return {
        "principles": write_constitution(root / "principles"),
        "prompts": write_prompts(root / "prompts.jsonl", prompts),
        "store": root / "store.db",
        "tmp": root,
    }


def _text_reply(body: dict[str, Any]) -> str:
    message = last_user_message(body)
    if "Critique request:" in message:
        return "The response could be more careful."
    if "Revision request:" in message:
        start = message.index(">>>\n") + 4  # the fenced prompt comes first
        prompt = message[start : message.index("\n<<<END_PROMPT")]
        return revised(prompt)
    seed = int(body.get("seed") or 0)
    return good(message) if seed % 2 == 0 else bad(message)


def responder(prompts: list[str] = PROMPTS, position_bias_a: float = 0.0) -> PreferenceResponder:
    scores = {revised(p): 2.0 for p in prompts} | {good(p): 1.0 for p in prompts}
    return PreferenceResponder(
        preferred=scores,
        others=[bad(p) for p in prompts],
        position_bias_a=position_bias_a,
        text_reply=_text_reply,
    )


def request_identity(body: dict[str, Any] | None) -> str:
    """What makes two requests the same call: messages, sampling settings and seed."""
    body = body or {}
    keep = {k: body.get(k) for k in ("messages", "max_tokens", "temperature", "seed")}
    return json.dumps(keep, sort_keys=True)


def qualify_judge(store: Path, judge: str, base_url: str, principles: Path) -> None:
    """`charter judge eval` of `judge` (a scripted server that prefers `good` texts) on four
    labelled pairs, one of them labelled against it: agreement 3 of 4, kept in `store`."""
    from click.testing import CliRunner

    from charter.cli.main import cli

    pairs = [
        {"prompt": p, "a": good(p), "b": bad(p), "preferred": "a" if i else "b"}
        for i, p in enumerate(PROMPTS[:4])
    ]
    labelled = store.parent / "labelled-pairs.jsonl"
    labelled.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    result = CliRunner().invoke(
        cli,
        ["judge", "eval", "--pairs", str(labelled), "--judge", judge, "--judge-base-url",
         base_url, "--protocol", "pointwise", "--dir", str(principles), "--store", str(store),
         "--json"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
