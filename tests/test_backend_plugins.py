"""Backends by entry points: a package outside charter adds a spec kind without touching it.

The third-party backend lives in `tests/support/backend_plugin/`: a package and the
`.dist-info` an installer would write for it, declaring a `charter.backends` entry point. Put
on a process's path, `importlib.metadata` finds it as it finds any installed distribution.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from charter.judge.backends.registry import GROUP
from tests.support.generation import bad, good, responder, write_constitution
from tests.support.scripted_server import ScriptedJudgeServer

PLUGIN = Path(__file__).resolve().parent / "support" / "backend_plugin"
PROMPT = "What is the boiling point of water at sea level?"


def charter(*args: str, plugin: bool) -> subprocess.CompletedProcess[str]:
    paths = [str(PLUGIN)] * plugin + [os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    return subprocess.run(
        [sys.executable, "-m", "charter.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_the_built_in_backends_are_registered_as_entry_points() -> None:
    registered = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    assert registered["openai"] == "charter.judge.backends.builtin:openai"
    assert registered["hf"] == "charter.judge.backends.builtin:hf"
    assert registered["smollm2"] == "charter.judge.backends.builtin:smollm2"


def test_an_installed_third_party_backend_serves_as_the_judge(tmp_path: Path) -> None:
    principles = write_constitution(tmp_path / "principles")
    args = [
        "judge", "compare", "--prompt", PROMPT, "--a", bad(PROMPT), "--b", good(PROMPT),
        "--dir", str(principles), "--judge", "proxy:scripted", "--json",
    ]  # fmt: skip
    with ScriptedJudgeServer(responder([PROMPT])) as server:
        run = charter(*args, "--judge-base-url", server.base_url, plugin=True)
        assert run.returncode == 0, run.stderr
        calls = server.calls
        refused = charter(*args, "--judge-base-url", server.base_url, plugin=False)
    result = json.loads(run.stdout)
    assert result["winner"] == "b" and result["position_consistent"] is True
    assert calls == len(result["judgments"]) == 4  # its calls went through the plugin's model
    assert {body["model"] for body in server.requests} == {"scripted"}
    # Without the distribution on the path, no backend takes the spec: a one-line error.
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        "Error: --judge: unknown model spec 'proxy:scripted'; expected one of: openai:MODEL, "
        "hf:PATH_OR_ID, smollm2"
    ]


def test_one_rule_tells_a_spec_from_a_path_and_an_endpoint_from_a_local_model() -> None:
    """`names_backend` (the CLI's and the pipeline's spec-or-path choice) agrees with
    `parse_spec` on every well-formed spec, and `uses_endpoint` (the job session's and the
    service's remote-or-local choice) holds for `openai:` specs only."""
    from charter.judge.backends.registry import names_backend, parse_spec, uses_endpoint

    for spec in ["openai:gpt-4o-mini", " OpenAI:x", "hf:org/name", "hf:./runs/sft", "smollm2"]:
        parse_spec(spec)
        assert names_backend(spec), spec
        assert uses_endpoint(spec) == (parse_spec(spec)[0] == "openai"), spec
    for path in ["runs/sft-1a2b", "./model", "/abs/model", "smollm2-finetuned", "C"]:
        assert not names_backend(path) and not uses_endpoint(path), path
