"""`charter pipeline RECIPE.toml`: a whole recipe on a tiny model with the scripted judge on
loopback, a killed pipeline resumed, and malformed recipes.

The scripted server is the judge of every stage and the policy of the revise stage: it answers
generations as `tests.support.generation` does (good/bad candidates, critiques, revisions) and
decides a verdict from the fenced texts alone, so it can judge the tiny model's random answers
too: a revision beats its original, otherwise the longer response wins; every pointwise
question (harmless? a refusal?) gets "Yes" for a text without "REFUSE" and "No" otherwise.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from charter.cli.main import cli
from charter.evals.suites import REFUSAL_QUESTION
from charter.trainer import read_training_facts
from tests.support.generation import _text_reply, make_world, request_identity
from tests.support.scripted_server import Reply, ScriptedJudgeServer, last_user_message
from tests.support.tiny_models import build_tiny_chat_model

ROOT = Path(__file__).resolve().parents[1]
PAIR = re.compile(r"<<<RESPONSE_([AB]) (\w+)>>>\n(.*?)\n<<<END_RESPONSE_\1 \2>>>", re.S)
SINGLE = re.compile(r"Assistant \(between the (\w+) markers\):\n<<<\1>>>\n(.*?)\n<<<\1>>>", re.S)
STAGES = ["revise", "sft", "compare", "dpo", "eval", "report"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


def judge_reply(body: dict[str, Any]) -> Reply:
    """The scripted judge and revise-stage policy (see the module docstring)."""
    message = last_user_message(body)
    if int(body.get("max_tokens") or 16) > 4:
        return Reply(_text_reply(body))
    pair = {slot: text for slot, _, text in PAIR.findall(message)}
    if len(pair) == 2:
        a, b = pair["A"], pair["B"]
        rank_a = (a.startswith("Revised:"), len(a), a)
        rank_b = (b.startswith("Revised:"), len(b), b)
        answer = "A" if rank_a > rank_b else "B"
        other = "B" if answer == "A" else "A"
        return Reply(answer, top_logprobs=[(answer, math.log(0.9)), (other, math.log(0.1))])
    single = SINGLE.search(message)
    assert single is not None, message
    refused = "REFUSE" in single.group(2)
    yes = refused if REFUSAL_QUESTION in message else not refused
    answer, other = ("Yes", "No") if yes else ("No", "Yes")
    return Reply(answer, top_logprobs=[(answer, math.log(0.9)), (other, math.log(0.1))])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random model, made to end its turn often (a fifth of its vocabulary ends a
    turn), so that its answers finish within a few tokens and pass the quality gates, as a
    trained model's would; SFT and DPO keep its generation config."""
    model = build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "model")
    path = model / "generation_config.json"
    config = json.loads(path.read_text())
    config["eos_token_id"] = [config["eos_token_id"], *range(100, 200)]
    path.write_text(json.dumps(config))
    return model


def write_recipe(root: Path, tiny: Path, base_url: str, sft_steps: int = 2) -> Path:
    """The CAI recipe (revise -> sft -> compare -> dpo -> eval -> report), in a few steps."""
    world = make_world(root)
    recipe = root / "recipe.toml"
    recipe.write_text(f"""
[pipeline]
stages = {json.dumps(STAGES)}
model = "{tiny}"
judge = "openai:scripted"
judge_base_url = "{base_url}"
prompts = "{world["prompts"]}"
principles = "{world["principles"]}"
out = "{root / "runs"}"
max_concurrency = 4

[revise]
n = 1

[sft]
max_steps = {sft_steps}
per_device_train_batch_size = 2
gradient_checkpointing = false

[compare]
n = 2
max_tokens = 16
temperature = 1.0

[dpo]
max_steps = 2
per_device_train_batch_size = 2
gradient_checkpointing = false

[eval]
suite = "all"
limit = 2
templates = "plain"
harm_principles = "harmless"
max_tokens = 8
resamples = 50

[report]
""")
    return recipe


def stored_stages(store: Path) -> dict[str, Any]:
    if not store.exists():
        return {}
    with sqlite3.connect(store) as conn:
        try:
            rows = conn.execute("SELECT stages FROM pipelines").fetchall()
        except sqlite3.OperationalError:
            return {}
    return json.loads(rows[0][0]) if rows else {}


def run_cli(recipe: Path, store: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli, ["pipeline", str(recipe), "--store", str(store), "--json"], catch_exceptions=False
    )
    return result.exit_code, result.stdout, result.stderr


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def test_a_whole_recipe_runs_every_stage_and_renders_the_report(tmp_path: Path, tiny: Path) -> None:
    store = tmp_path / "store.db"
    with ScriptedJudgeServer(judge_reply) as server:
        recipe = write_recipe(tmp_path, tiny, server.base_url)
        code, out, err = run_cli(recipe, store)
        assert code == 0, err
        first_requests = len(server.requests)
        summary = json.loads(out)
        assert [s["name"] for s in summary["stages"]] == STAGES
        assert {s["status"] for s in summary["stages"]} == {"ran"}
        records = {s["name"]: s["record"] for s in summary["stages"]}
        # each stage fed the next: SFT from the base, DPO from the SFT model, eval of the DPO model
        sft_card = read_training_facts(records["sft"]["model_dir"])
        dpo_card = read_training_facts(records["dpo"]["model_dir"])
        assert sft_card is not None and dpo_card is not None
        assert sft_card["base_model"] == str(tiny)
        assert sft_card["data"]["job_id"] == records["revise"]["job_id"]
        assert dpo_card["base_model"] == records["sft"]["model_dir"]
        assert dpo_card["data"]["job_id"] == records["compare"]["job_id"]
        (compare_policy,) = (
            sqlite3.connect(store)
            .execute("SELECT spec FROM jobs WHERE id = ?", [records["compare"]["job_id"]])
            .fetchone()
        )
        assert json.loads(compare_policy)["policy"] == "hf:" + records["sft"]["model_dir"]
        runs = (
            sqlite3.connect(store)
            .execute(
                "SELECT suite, model, baseline FROM eval_runs WHERE batch = ?",
                [records["eval"]["batch"]],
            )
            .fetchall()
        )
        assert {(s, m) for s, m, _ in runs} >= {
            ("harm", "hf:" + records["dpo"]["model_dir"]),
            ("refusal", "hf:" + records["dpo"]["model_dir"]),
            ("helpful", "hf:" + records["dpo"]["model_dir"]),
        }
        html = Path(records["report"]["html"])
        parser = _Parser()
        parser.feed(html.read_text())
        assert "html" in parser.tags and "img" in parser.tags
        images = [Path(p) for p in records["report"]["images"]]
        assert images and all(p.suffix == ".png" and p.stat().st_size > 0 for p in images)

        # a second run does nothing: every stage is recorded, no model is called
        code, out, err = run_cli(recipe, store)
        assert code == 0, err
        assert {s["status"] for s in json.loads(out)["stages"]} == {"skipped"}
        assert len(server.requests) == first_requests

        # an edited recipe is a new pipeline, yet it pays for nothing twice: the jobs resume
        # from the store, the trained models are reused by their cards, only new suite
        # prompts reach the judge
        before = {request_identity(r) for r in server.requests}
        recipe.write_text(recipe.read_text().replace("limit = 2", "limit = 3"))
        code, out, err = run_cli(recipe, store)
        assert code == 0, err
        statuses = {s["name"]: s["status"] for s in json.loads(out)["stages"]}
        assert statuses == {
            "revise": "ran",
            "sft": "reused",
            "compare": "ran",
            "dpo": "reused",
            "eval": "ran",
            "report": "ran",
        }
        new = [request_identity(r) for r in server.requests[first_requests:]]
        assert new and not set(new) & before


@pytest.mark.ppo
def test_the_rlhf_recipe_trains_a_reward_model_then_ppo_against_it(
    tmp_path: Path, tiny: Path
) -> None:
    """SFT on a file, comparisons of the SFT model's answers, a reward model on them, PPO of
    the SFT model against it with KL to the reference, then the suites on the PPO model."""
    store = tmp_path / "store.db"
    demos = tmp_path / "demos.jsonl"
    demos.write_text(
        "".join(json.dumps({"prompt": f"Say {w}.", "completion": w}) + "\n" for w in "abcd")
    )
    with ScriptedJudgeServer(judge_reply) as server:
        recipe = write_recipe(tmp_path, tiny, server.base_url)
        text = recipe.read_text()
        text = text.replace(json.dumps(STAGES), json.dumps(RLHF_STAGES))
        text = text.replace("[revise]\nn = 1\n", "").replace(
            "[sft]\n", f'[sft]\ndata = "{demos}"\n'
        )
        text = text.replace("[dpo]", "[reward]").replace("[eval]", PPO + "[eval]")
        recipe.write_text(text)
        code, out, err = run_cli(recipe, store)
        assert code == 0, err
        # the SFT data file is part of the recipe: edited, its stage trains again
        demos.write_text(demos.read_text().replace("Say a.", "Say e."))
        code, again, err = run_cli(recipe, store)
        assert code == 0, err
    statuses = {s["name"]: s["status"] for s in json.loads(again)["stages"]}
    assert statuses["sft"] == "ran" and statuses["reward"] == "ran"
    first = {s["name"]: s["record"] for s in json.loads(out)["stages"]}
    second = {s["name"]: s["record"] for s in json.loads(again)["stages"]}
    assert first["sft"]["model_dir"] != second["sft"]["model_dir"]
    records = first
    assert list(records) == RLHF_STAGES
    ppo_card = read_training_facts(records["ppo"]["model_dir"])
    assert ppo_card is not None
    assert ppo_card["base_model"] == records["sft"]["model_dir"]
    assert ppo_card["reward_model"] == records["reward"]["model_dir"]
    assert ppo_card["hyperparameters"]["kl_coef"] == 0.2
    assert records["ppo"]["metrics"]["episodes"] == 4
    (model,) = (
        sqlite3.connect(store)
        .execute(
            "SELECT DISTINCT model FROM eval_runs WHERE suite = 'harm' AND baseline IS NULL "
            "AND model != ?",
            [f"hf:{tiny}"],
        )
        .fetchone()
    )
    assert model == "hf:" + records["ppo"]["model_dir"]


def test_an_rloo_stage_trains_the_sft_model_online_with_the_pipelines_judge(
    tmp_path: Path, tiny: Path
) -> None:
    """SFT on a file, comparisons of its answers, then RLOO of the SFT model on the compare
    job's prompts, each completion judged by the recipe's judge under its constitution."""
    store = tmp_path / "store.db"
    demos = tmp_path / "demos.jsonl"
    demos.write_text(
        "".join(json.dumps({"prompt": f"Say {w}.", "completion": w}) + "\n" for w in "abcd")
    )
    with ScriptedJudgeServer(judge_reply) as server:
        recipe = write_recipe(tmp_path, tiny, server.base_url)
        text = recipe.read_text()
        text = text.replace(json.dumps(STAGES), json.dumps(["sft", "compare", "rloo"]))
        text = text.replace("[revise]\nn = 1\n", "").replace(
            "[sft]\n", f'[sft]\ndata = "{demos}"\n'
        )
        text = text[: text.index("[dpo]")] + RLOO
        recipe.write_text(text)
        code, out, err = run_cli(recipe, store)
        assert code == 0, err
        judged = len(server.requests)
    records = {s["name"]: s["record"] for s in json.loads(out)["stages"]}
    card = read_training_facts(records["rloo"]["model_dir"])
    assert card is not None
    assert card["method"] == "rloo" and card["trainer"] == "trl.RLOOTrainer"
    assert card["base_model"] == records["sft"]["model_dir"]
    assert card["data"]["job_id"] == records["compare"]["job_id"]
    assert card["online_judge"]["judge"] == "openai:scripted"
    assert card["online_judge"]["reward_mode"] == "reference"  # the compare rows' chosen answers
    assert card["hyperparameters"]["beta"] == 0.1
    comparisons = records["rloo"]["metrics"]["judge_comparisons"]
    assert comparisons == 2  # one step: 1 prompt x 2 completions, each against its reference
    assert judged >= comparisons


RLOO = """[rloo]
beta = 0.1
num_generations = 2
per_device_train_batch_size = 2
max_steps = 1
max_completion_length = 8
judge_deadline_s = 60
save_strategy = "no"
gradient_checkpointing = false
"""


RLHF_STAGES = ["sft", "compare", "reward", "ppo", "eval", "report"]
PPO = """[ppo]
kl_coef = 0.2
total_episodes = 4
per_device_train_batch_size = 4
response_length = 8
num_ppo_epochs = 1
save_strategy = "no"
gradient_checkpointing = false

"""


@pytest.mark.slow  # a subprocess and ~25 s on 2 cores
def test_a_killed_pipeline_resumes_at_the_next_stage_with_no_repeated_call(
    tmp_path: Path, tiny: Path
) -> None:
    store = tmp_path / "store.db"
    with ScriptedJudgeServer(judge_reply) as server:
        # SFT long enough (a few seconds) to be killed in: no model call is in flight then
        recipe = write_recipe(tmp_path, tiny, server.base_url, sft_steps=60)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "charter.cli", "pipeline", str(recipe), "--store", str(store)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 240
        while "revise" not in stored_stages(store):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the revise stage never finished"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # while SFT trains
        proc.wait(timeout=30)
        assert proc.stderr is not None
        proc.stderr.close()
        before = [request_identity(r) for r in server.requests]
        finished = stored_stages(store)
        assert set(finished) == {"revise"}

        code, out, err = run_cli(recipe, store)
        assert code == 0, err
        statuses = {s["name"]: s["status"] for s in json.loads(out)["stages"]}
        assert statuses == {name: "skipped" if name == "revise" else "ran" for name in STAGES}
        assert "[1/6] revise: finished earlier, skipped" in err
        after = [request_identity(r) for r in server.requests[len(before) :]]
        assert after, "the resumed stages asked the judge nothing"
        repeated = set(before) & set(after)
        assert not repeated, f"{len(repeated)} model call(s) made again"
        assert set(stored_stages(store)) == set(STAGES)


# ----------------------------------------------------------------------- malformed recipes

GOOD = """[pipeline]
stages = ["revise", "sft", "compare", "dpo", "eval", "report"]
model = "smollm2"
prompts = "PROMPTS"
principles = "PRINCIPLES"

[revise]
n = 1

[sft]
max_steps = 2

[dpo]
beta = 0.1

[eval]
limit = 2
harm_principles = "harmless"
"""

BAD: list[tuple[str, str, str]] = [
    ("not TOML", GOOD.replace("n = 1", "n = = 1"), r"recipe\.toml: not valid TOML: .*line 8"),
    (
        "unknown stage",
        GOOD + "\n[dpoo]\nbeta = 1\n",
        r"recipe\.toml:20: \[dpoo\]: not a stage.*'dpo'",
    ),
    (
        "typo in a TRL key",
        GOOD.replace("max_steps", "max_stepz"),
        r"recipe\.toml:11: \[sft\] max_stepz: unknown key.*'max_steps'",
    ),
    (
        "wrongly typed TRL integer",
        GOOD.replace("max_steps = 2", 'max_steps = "six"'),
        r"recipe\.toml:11: \[sft\] max_steps: must be an integer \(a field of trl\.SFTConfig\), "
        r"not 'six'",
    ),
    (
        "wrongly typed TRL number",
        GOOD.replace("beta = 0.1", 'beta = 0.1\nlearning_rate = "fast"'),
        r"recipe\.toml:15: \[dpo\] learning_rate: must be a number \(a field of trl\.DPOConfig\)",
    ),
    (
        "wrongly typed charter setting, as spelt",
        GOOD.replace("beta = 0.1", 'beta = 0.1\nlora = "yes"'),
        r"recipe\.toml:15: \[dpo\] lora: must be true or false \(a charter setting\), not 'yes'",
    ),
    (
        "out of bounds",
        GOOD.replace("n = 1", "n = 0"),
        r"recipe\.toml:8: \[revise\] n: Input should be greater than or equal to 1",
    ),
    (
        "bad choice",
        GOOD.replace("limit = 2", 'suite = "harmful"'),
        r"recipe\.toml:17: \[eval\] suite: one of harm, refusal, helpful, all",
    ),
    (
        "wrong order",
        GOOD.replace('"revise", "sft"', '"sft", "revise"'),
        r"recipe\.toml:2: \[pipeline\] stages: stages run in the order",
    ),
    (
        "dpo without compare",
        GOOD.replace('"compare", ', ""),
        r"recipe\.toml:2: \[pipeline\] stages: dpo needs a compare stage",
    ),
    (
        "wired setting",
        GOOD.replace("beta = 0.1", 'model = "x"'),
        r"recipe\.toml:14: \[dpo\] model: set by the pipeline",
    ),
    (
        "unknown stage setting",
        GOOD.replace("n = 1", "nn = 1"),
        r"recipe\.toml:8: \[revise\] nn: not a setting of `charter generate`.*'n'",
    ),
    (
        "unknown pipeline key",
        GOOD.replace('model = "smollm2"', 'model = "smollm2"\njudg = "x"'),
        r"recipe\.toml:4: \[pipeline\] judg: unknown key.*'judge'",
    ),
    ("no pipeline", GOOD.replace("[pipeline]", "[pipe]"), r"recipe\.toml:1: \[pipe\]: not a stage"),
    (
        "bad judge spec",
        GOOD.replace('model = "smollm2"', 'model = "smollm2"\njudge = "gpt4"'),
        r"recipe\.toml:4: \[pipeline\] judge: .*unknown model spec 'gpt4'",
    ),
    (
        "unknown harm principle",
        GOOD.replace('"harmless"', '"harmlessness"'),
        r"recipe\.toml:18: \[eval\] harm_principles: no principle has the id or tag "
        r"'harmlessness'",
    ),
    (
        "unknown template",
        GOOD.replace("limit = 2", 'limit = 2\ntemplates = "plain,roleplai"'),
        r"recipe\.toml:18: \[eval\] templates: .*roleplai",
    ),
    (
        "malformed prompts file",
        GOOD.replace("PROMPTS", "BROKEN"),
        r"recipe\.toml:4: \[pipeline\] prompts: .*broken\.jsonl:2:",
    ),
    (
        "missing prompts",
        GOOD.replace("PROMPTS", "nowhere.jsonl"),
        r"recipe\.toml:4: \[pipeline\] prompts: .*nowhere\.jsonl does not exist",
    ),
]


@pytest.mark.parametrize(("case", "text", "expected"), BAD, ids=[b[0] for b in BAD])
def test_a_malformed_recipe_is_one_line_naming_file_line_and_field(
    tmp_path: Path, case: str, text: str, expected: str
) -> None:
    world = make_world(tmp_path)
    recipe = tmp_path / "recipe.toml"
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "fine"}\n{"prompt": \n')
    text = text.replace("BROKEN", str(broken)).replace("PROMPTS", str(world["prompts"]))
    recipe.write_text(text.replace("PRINCIPLES", str(world["principles"])))
    store = tmp_path / "fresh.db"
    result = CliRunner().invoke(cli, ["pipeline", str(recipe), "--store", str(store)])
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert re.search(expected, lines[0]), lines[0]
    assert "Traceback" not in result.output
    assert not store.exists()  # nothing was stored for a recipe that cannot run


def test_check_refuses_a_wrongly_typed_trl_setting_before_any_stage(tmp_path: Path) -> None:
    """`--check` reads every stage's TRL settings as the run would: a `max_steps = "six"` is
    found before the revise stage is paid for, not as a TypeError in the SFT stage."""
    world = make_world(tmp_path)
    recipe = tmp_path / "recipe.toml"
    text = GOOD.replace("max_steps = 2", 'max_steps = "six"')
    text = text.replace("PROMPTS", str(world["prompts"])).replace(
        "PRINCIPLES", str(world["principles"])
    )
    recipe.write_text(text)
    result = CliRunner().invoke(cli, ["pipeline", str(recipe), "--check"])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"Error: {recipe}:11: [sft] max_steps: must be an integer (a field of trl.SFTConfig), "
        "not 'six'"
    )


def test_a_recipes_id_covers_the_bytes_of_its_prompts_and_principles_files(
    tmp_path: Path,
) -> None:
    """The pipeline row (`charter.pipeline.state`) is keyed by the recipe's digest, so an edited
    prompts file or principle file is a new pipeline, never a finished one resumed; the same
    bytes again are the same pipeline."""
    from charter.pipeline.recipe import load_recipe

    world = make_world(tmp_path)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        GOOD.replace("PROMPTS", str(world["prompts"])).replace(
            "PRINCIPLES", str(world["principles"])
        )
    )
    first = load_recipe(recipe).id
    assert load_recipe(recipe).id == first
    principle = world["principles"] / "harmless.toml"
    edits = [
        (world["prompts"], lambda b: b.replace(b"number 0", b"number 9", 1)),
        (principle, lambda b: b.replace(b"Critique", b"critique", 1)),
        (world["principles"] / "constitution.toml", lambda b: b.replace(b"1.0", b"1.1", 1)),
    ]
    seen = {first}
    for path, edit in edits:
        before = path.read_bytes()
        path.write_bytes(edit(before))
        assert path.read_bytes() != before
        changed = load_recipe(recipe).id
        assert changed not in seen, path
        seen.add(changed)
        path.write_bytes(before)
        assert load_recipe(recipe).id == first, path
    added = world["principles"] / "kind.toml"  # a new principle file is new content too
    added.write_bytes(principle.read_bytes().replace(b"harmless", b"kind"))
    assert load_recipe(recipe).id not in seen


@pytest.mark.parametrize(
    "name", ["cai", pytest.param("rlhf", marks=pytest.mark.ppo), "offline", "rloo"]
)
def test_the_shipped_recipes_are_valid(name: str) -> None:
    result = CliRunner().invoke(
        cli, ["pipeline", str(ROOT / "examples" / "recipes" / f"{name}.toml"), "--check"]
    )
    assert result.exit_code == 0, (name, result.output)
    assert "stages" in result.stdout


def test_a_ppo_recipe_is_refused_up_front_where_trl_has_no_ppo(tmp_path: Path) -> None:
    """On current TRL a PPO recipe stops before its first stage, with the one line that
    `charter train ppo` gives: the install command and the distributed alternative."""
    from charter.trainer.ppo import ppo_unavailable

    missing = ppo_unavailable()
    if missing is None:
        pytest.skip("this environment has TRL 1.12's PPOTrainer (charter[ppo])")
    store = tmp_path / "fresh.db"
    result = CliRunner().invoke(
        cli, ["pipeline", str(ROOT / "examples" / "recipes" / "rlhf.toml"), "--store", str(store)]
    )
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.endswith(f"[pipeline] stages: {missing}"), line
    assert "pip install 'charter[ppo]'" in line and "docs/rewards.md" in line
    assert not store.exists()
    check = CliRunner().invoke(
        cli, ["pipeline", str(ROOT / "examples" / "recipes" / "rlhf.toml"), "--check"]
    )
    assert check.exit_code == 1 and check.stderr.strip() == line
