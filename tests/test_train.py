"""`charter train`: DPO, reward model, PPO, GRPO and RLOO end to end on tiny models, on the CPU.

One generation job (scripted loopback judge, `charter generate`) feeds every trainer through
its job id, as a user would run it. Models are built by the test (no hub, no network).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from charter.cli.main import cli
from tests.support.generation import PROMPTS, bad, good, responder, write_constitution
from tests.support.generation import write_prompts as write_prompt_file
from tests.support.scripted_server import (
    Fault,
    RecordedRequest,
    Reply,
    ScriptedJudgeServer,
    last_user_message,
)
from tests.support.tiny_models import build_tiny_chat_model

SLOT = re.compile(r"<<<RESPONSE_([AB]) (\w+)>>>\n(.*?)\n<<<END_RESPONSE_\1 \2>>>", re.S)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


def invoke(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def train(*args: str) -> dict[str, Any]:
    code, out, err = invoke(["train", "-q", *args, "--json"])
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny chat model and a finished generation job (8 preference pairs) in a store."""
    tmp = tmp_path_factory.mktemp("train-world")
    principles = write_constitution(tmp / "principles")
    prompts = write_prompt_file(tmp / "prompts.jsonl")
    store = tmp / "store.db"
    with ScriptedJudgeServer(responder()) as server:
        code, out, err = invoke(
            ["generate", "--prompts", str(prompts), "--dir", str(principles),
             "--store", str(store), "--judge", "openai:scripted", "--policy", "openai:scripted",
             "--judge-base-url", server.base_url, "--policy-base-url", server.base_url, "--json"]
        )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["exportable"] == len(PROMPTS)
    return {
        "tmp": tmp,
        "model": build_tiny_chat_model(tmp / "tiny"),
        "principles": principles,
        "prompts": prompts,
        "store": store,
        "job": summary["job_id"],
    }


def job_args(world: dict[str, Any]) -> list[str]:
    return ["--data", world["job"], "--store", str(world["store"]), "--model", str(world["model"])]


FAST = ["--set", "gradient_checkpointing=false", "--logging-steps", "1"]


def test_dpo_on_a_job_raises_the_margin_checkpoints_reload_and_resume(
    world: dict[str, Any], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "dpo"
    config = tmp_path / "dpo.toml"
    # File values mirror TRL's names; the --max-steps flag must win over the file's max_steps.
    config.write_text(
        "beta = 0.2\nlearning_rate = 1e-3\nper_device_train_batch_size = 4\nmax_steps = 100\n"
        "save_steps = 3\n"
    )
    result = train("dpo", *job_args(world), "--out", str(out), "--config", str(config),
                   "--max-steps", "6", *FAST)  # fmt: skip
    assert result["global_step"] == 6
    metrics = result["metrics"]
    assert metrics["reward_margin_last"] > metrics["reward_margin_first"]
    assert metrics["loss_last"] < metrics["loss_first"]
    assert result["precision"] == "fp32"

    # A checkpoint reloads as a model, and differs from the base it started from.
    assert (out / "checkpoint-3").is_dir() and (out / "checkpoint-6").is_dir()
    base = AutoModelForCausalLM.from_pretrained(world["model"])
    ckpt = AutoModelForCausalLM.from_pretrained(out / "checkpoint-3")
    final = AutoModelForCausalLM.from_pretrained(out)
    name = "model.layers.0.self_attn.q_proj.weight"
    base_w, ckpt_w, final_w = (m.state_dict()[name] for m in (base, ckpt, final))
    assert not ckpt_w.equal(base_w) and not final_w.equal(ckpt_w)

    # The card traces the model back to its job, constitution and judge.
    facts = json.loads((out / "charter_training.json").read_text())
    assert facts["data"]["job_id"] == world["job"]
    assert facts["data"]["judges"] == ["openai:scripted"]
    assert facts["data"]["constitution_versions"] == ["1.0"]
    assert len(facts["data"]["constitution_digests"][0]) == 64
    assert facts["hyperparameters"]["beta"] == 0.2
    assert facts["hyperparameters"]["max_steps"] == 6
    card = (out / "README.md").read_text()
    for text in (world["job"], facts["data"]["constitution_digests"][0], "openai:scripted", "beta"):
        assert text in card
    # The TRL release is the method's provenance: the same method trains differently across them.
    import trl

    assert facts["trl_version"] == trl.__version__
    assert f"- Method: dpo (`trl.DPOTrainer`, TRL {trl.__version__})" in card

    # --resume continues from the last checkpoint to the new step budget.
    resumed = train("dpo", *job_args(world), "--out", str(out), "--config", str(config),
                    "--max-steps", "8", "--resume", *FAST)  # fmt: skip
    assert resumed["resumed_from"].endswith("checkpoint-6")
    assert resumed["global_step"] == 8


def test_dpo_with_lora_precomputed_reference_and_chat_messages(
    world: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "dpo-lora"
    result = train("dpo", *job_args(world), "--out", str(out), "--lora", "--lora-r", "4",
                   "--precompute-ref-log-probs", "--max-steps", "2", "--batch-size", "4",
                   "--lr", "1e-2", "--conversational", "--set", "save_strategy='no'",
                   *FAST)  # fmt: skip
    assert result["global_step"] == 2
    assert (out / "adapter_config.json").is_file()
    facts = json.loads((out / "charter_training.json").read_text())
    assert facts["data"]["format"] == "conversational"  # through the chat template
    assert facts["hyperparameters"]["lora_r"] == 4
    assert facts["hyperparameters"]["precompute_ref_log_probs"] is True


@pytest.fixture(scope="module")
def reward_model(world: dict[str, Any]) -> dict[str, Any]:
    out = world["tmp"] / "rm"
    result = train("reward", *job_args(world), "--out", str(out), "--max-steps", "16",
                   "--batch-size", "4", "--lr", "1e-3", "--set", "save_strategy='no'",
                   *FAST)  # fmt: skip
    return {"dir": out, "result": result}


def test_reward_model_beats_chance_on_its_pairs(reward_model: dict[str, Any]) -> None:
    metrics = reward_model["result"]["metrics"]
    assert metrics["train_pairs"] + metrics["heldout_pairs"] == len(PROMPTS)
    assert metrics["heldout_pairs"] >= 1
    assert metrics["train_accuracy"] > 0.5
    assert metrics["heldout_accuracy"] is not None
    assert metrics["used_margin"] is True  # the job's comparison rows carry margins
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(reward_model["dir"])
    assert config.architectures[0].endswith("ForSequenceClassification")
    assert config.num_labels == 1


def test_reward_model_scores_chosen_above_rejected(reward_model: dict[str, Any]) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(reward_model["dir"])
    tokenizer = AutoTokenizer.from_pretrained(reward_model["dir"])
    wins = 0
    with torch.no_grad():
        for prompt in PROMPTS:
            scores = [
                model(**tokenizer(prompt + text + tokenizer.eos_token, return_tensors="pt"))
                .logits[0, 0]
                .item()
                for text in (good(prompt), bad(prompt))
            ]
            wins += scores[0] > scores[1]
    assert wins > len(PROMPTS) / 2


@pytest.mark.ppo
def test_ppo_runs_updates_with_the_trained_reward_model(
    world: dict[str, Any], reward_model: dict[str, Any], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "ppo"
    result = train("ppo", *job_args(world), "--reward-model", str(reward_model["dir"]),
                   "--out", str(out), "--batch-size", "4", "--total-episodes", "8",
                   "--response-length", "8", "--num-ppo-epochs", "1", "--lr", "1e-4",
                   "--kl-coef", "0.1", "--set", "save_strategy='no'", *FAST)  # fmt: skip
    assert result["global_step"] == 2  # 8 episodes / rollout batch of 4
    metrics = result["metrics"]
    assert metrics["episodes"] == 8
    assert math.isfinite(metrics["score_last"]) and math.isfinite(metrics["kl_last"])
    # The policy, saved alone, is the base model moved by the updates.
    base = AutoModelForCausalLM.from_pretrained(world["model"]).state_dict()
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert trained.keys() == base.keys()
    moved = [name for name, w in trained.items() if not w.equal(base[name])]
    assert any(".layers." in name for name in moved), moved
    assert all(w.isfinite().all() for w in trained.values())
    facts = json.loads((out / "charter_training.json").read_text())
    assert facts["reward_model"] == str(reward_model["dir"])
    assert facts["reward_model_data"]["jobs"] == [world["job"]]
    assert facts["hyperparameters"]["kl_coef"] == 0.1


def prefers_by_digest(body: dict[str, Any]) -> Reply:
    """A consistent judge whose preference does not track length, so short sampled completions
    win against a long reference about half the time and GRPO's rewards vary within a group."""
    slots = {name: text for name, _, text in SLOT.findall(last_user_message(body))}
    if set(slots) != {"A", "B"}:
        return Reply("Scripted text.")
    digest = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in slots.items()}
    answer, other = ("A", "B") if digest["A"] > digest["B"] else ("B", "A")
    return Reply(answer, top_logprobs=[(answer, math.log(0.9)), (other, math.log(0.1))])


def longer_is_better(body: dict[str, Any]) -> Reply:
    """A judge that prefers the longer response (ties even); anything else is not a verdict."""
    slots = {name: text for name, _, text in SLOT.findall(last_user_message(body))}
    if set(slots) != {"A", "B"}:
        return Reply("Scripted text.")
    a, b = len(slots["A"]), len(slots["B"])
    if a == b:
        return Reply("A", top_logprobs=[("A", math.log(0.5)), ("B", math.log(0.5))])
    answer, other = ("A", "B") if a > b else ("B", "A")
    return Reply(answer, top_logprobs=[(answer, math.log(0.9)), (other, math.log(0.1))])


def test_grpo_uses_the_judge_as_reward(world: dict[str, Any], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "grpo"
    with ScriptedJudgeServer(prefers_by_digest) as server:
        result = train("grpo", *job_args(world), "--out", str(out), "--dir",
                       str(world["principles"]), "--judge", "openai:scripted",
                       "--judge-base-url", server.base_url, "--num-generations", "4",
                       "--batch-size", "4", "--max-completion-length", "8", "--max-steps", "2",
                       "--lr", "1e-4", "--conversational", "--set", "save_strategy='no'",
                       "--judge-deadline", "90", *FAST)  # fmt: skip
        requests = server.requests
    assert result["global_step"] == 2
    metrics = result["metrics"]
    # The job's rows carry a chosen answer: each completion is judged against it.
    assert metrics["judge_comparisons"] == 2 * 4  # steps x completions
    assert metrics["judge_failed_comparisons"] == 0
    assert 0.0 <= metrics["reward_last"] <= 1.0
    assert len(requests) == metrics["judge_comparisons"] * 2 * 2  # K=2 principles, both orders
    # The judge's rewards reached the optimiser: the saved policy moved from the base.
    base = AutoModelForCausalLM.from_pretrained(world["model"]).state_dict()
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert any(".layers." in n and not w.equal(base[n]) for n, w in trained.items())
    facts = json.loads((out / "charter_training.json").read_text())
    assert facts["online_judge"]["judge"] == "openai:scripted"
    assert facts["online_judge"]["reward_mode"] == "reference"
    assert facts["online_judge"]["judge_deadline_s"] == 90  # the step's rewards waited <= 90 s
    # The judge's whole config is recorded, its protocol resolved for this judge.
    assert facts["online_judge"]["judge_config"]["protocol"] == "pairwise"
    assert facts["online_judge"]["judge_config"]["principles"] is None
    assert facts["online_judge"]["constitution_version"] == "1.0"
    assert facts["data"]["format"] == "conversational"


def test_rloo_uses_the_judge_as_reward_with_kl_to_the_reference(
    world: dict[str, Any], tmp_path: Path
) -> None:
    import trl
    from transformers import AutoModelForCausalLM

    out = tmp_path / "rloo"
    with ScriptedJudgeServer(prefers_by_digest) as server:
        result = train("rloo", *job_args(world), "--out", str(out), "--dir",
                       str(world["principles"]), "--judge", "openai:scripted",
                       "--judge-base-url", server.base_url, "--num-generations", "4",
                       "--batch-size", "4", "--max-completion-length", "8", "--max-steps", "2",
                       "--lr", "1e-4", "--beta", "0.1", "--reward-mode", "group",
                       "--set", "save_strategy='no'", *FAST)  # fmt: skip
        requests = server.requests
    assert result["global_step"] == 2
    metrics = result["metrics"]
    # Round robin in each group of 4: 6 comparisons per prompt, one prompt per step.
    assert metrics["judge_comparisons"] == 2 * 6
    assert metrics["judge_failed_comparisons"] == 0
    assert len(requests) == metrics["judge_comparisons"] * 2 * 2  # K=2 principles, both orders
    assert 0.0 <= metrics["reward_last"] <= 1.0
    assert math.isfinite(metrics["kl_last"])  # the KL to the reference was measured
    base = AutoModelForCausalLM.from_pretrained(world["model"]).state_dict()
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert any(".layers." in n and not w.equal(base[n]) for n, w in trained.items())
    facts = json.loads((out / "charter_training.json").read_text())
    assert facts["method"] == "rloo" and facts["trainer"] == "trl.RLOOTrainer"
    assert facts["trl_version"] == trl.__version__
    assert facts["hyperparameters"]["beta"] == 0.1
    assert facts["online_judge"]["reward_mode"] == "group"
    assert facts["data"]["job_id"] == world["job"]
    assert "trl.RLOOTrainer" in (out / "README.md").read_text()


async def _score(reward: Any, prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
    return list(await reward.score(prompts, completions, **kw))


def test_judge_reward_ranks_a_group_and_scores_against_a_reference(world: dict[str, Any]) -> None:
    import asyncio

    from charter.constitution import load_constitution
    from charter.judge import BackendOptions
    from charter.judge.backends.registry import load_model
    from charter.trainer import ConstitutionReward

    constitution = load_constitution(world["principles"])
    prompts = ["P1"] * 3 + ["P2"] * 3
    completions = ["x", "xxx", "xx", "yy", "yy", "y"]
    with ScriptedJudgeServer(longer_is_better) as server:

        async def go() -> tuple[list[float], list[float]]:
            model = load_model("openai:scripted", BackendOptions(base_url=server.base_url))
            try:
                group = ConstitutionReward(model, constitution, mode="group")
                ref = ConstitutionReward(model, constitution, mode="reference")
                return (
                    await _score(group, prompts, completions),
                    await _score(ref, prompts, completions, references=["xx"] * 3 + ["yy"] * 3),
                )
            finally:
                await model.aclose()

        group_rewards, ref_rewards = asyncio.run(go())
    # Round robin: longer wins; equal texts tie without a judge call.
    assert group_rewards[1] > group_rewards[2] > group_rewards[0]
    assert group_rewards[3] == group_rewards[4] > group_rewards[5]
    # Against a reference: P(beats it), 0.5 for a text equal to it.
    assert ref_rewards[1] > 0.5 and ref_rewards[0] < 0.5 and ref_rewards[2] == 0.5
    assert ref_rewards[3] == ref_rewards[4] == 0.5 and ref_rewards[5] < 0.5


def test_judge_reward_failures_get_the_group_mean_and_a_dead_judge_stops(
    world: dict[str, Any],
) -> None:
    import asyncio

    from charter.constitution import load_constitution
    from charter.judge import BackendOptions
    from charter.judge.backends.registry import load_model
    from charter.trainer import ConstitutionReward
    from charter.trainer.online import JudgeFailed

    constitution = load_constitution(world["principles"])

    def flaky(body: dict[str, Any]) -> Reply:
        slots = {n: t for n, _, t in SLOT.findall(last_user_message(body))}
        if "broken" in slots.values():
            return Reply("I refuse to choose.")  # unparseable: the comparison fails
        return longer_is_better(body)

    with ScriptedJudgeServer(flaky) as server:

        async def go(completions: list[str]) -> list[float]:
            model = load_model(
                "openai:scripted", BackendOptions(base_url=server.base_url, max_retries=0)
            )
            try:
                reward = ConstitutionReward(model, constitution, mode="reference")
                refs = ["ref!"] * len(completions)
                return await _score(reward, ["P"] * len(completions), completions, references=refs)
            finally:
                await model.aclose()

        rewards = asyncio.run(go(["a", "aaaaaaa", "aaaaaaaa", "broken"]))
        assert rewards[3] == pytest.approx(sum(rewards[:3]) / 3)
        assert rewards[3] != pytest.approx(0.5)  # the group's mean, not a neutral constant
        with pytest.raises(JudgeFailed, match="none of the 2 comparisons"):
            asyncio.run(go(["broken", "broken"]))


def test_a_grpo_steps_rewards_wait_no_longer_than_the_deadline(world: dict[str, Any]) -> None:
    import asyncio
    import time

    from charter.constitution import load_constitution
    from charter.judge import BackendOptions
    from charter.judge.backends.registry import load_model
    from charter.trainer import ConstitutionReward

    constitution = load_constitution(world["principles"])

    def sleepy_is_slow(record: RecordedRequest) -> Fault | None:
        slow = record.body is not None and "sleepy" in last_user_message(record.body)
        return Fault.delay(60.0) if slow else None

    with ScriptedJudgeServer(longer_is_better, fault_policy=sleepy_is_slow) as server:

        async def go(completions: list[str]) -> tuple[list[float], float]:
            model = load_model("openai:scripted", BackendOptions(base_url=server.base_url))
            try:
                reward = ConstitutionReward(model, constitution, mode="reference", deadline_s=1.0)
                refs = ["ref!"] * len(completions)
                started = time.perf_counter()
                rewards = await _score(reward, ["P"] * 4, completions, references=refs)
                return rewards, time.perf_counter() - started
            finally:
                await model.aclose()

        rewards, elapsed = asyncio.run(go(["a", "aaaaaaa", "aaaaaaaa", "sleepy"]))
    assert elapsed < 30, elapsed  # the 1 s deadline, not the 60 s judge (loose: loaded machine)
    assert rewards[3] == pytest.approx(sum(rewards[:3]) / 3)  # the late one: its group's mean
    assert rewards[3] != pytest.approx(0.5)


@pytest.mark.slow
def test_dpo_runs_unchanged_under_accelerate_launch_with_two_processes(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """The documented multi-GPU config, two processes: on this CPU machine, DDP over gloo."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    accelerate = Path(sys.executable).parent / "accelerate"
    out = tmp_path / "ddp"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc = subprocess.run(
        [str(accelerate), "launch", "--config_file",
         str(repo / "examples" / "accelerate" / "multi-gpu.yaml"), "--num_processes", "2",
         "-m", "charter.cli", "train", "-q", "dpo", *job_args(world), "--out", str(out),
         "--max-steps", "4", "--batch-size", "2", "--lr", "1e-3", "--set", "save_strategy='no'",
         *FAST, "--json"],
        capture_output=True, text=True, timeout=600, env=env, cwd=repo,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # one summary: only the main process reports
    assert result["global_step"] == 4
    # Two processes x batch 2 x 4 steps = 16 pairs = 2 epochs of the job's 8 pairs.
    assert result["metrics"]["epoch"] == pytest.approx(2.0)
    facts = json.loads((out / "charter_training.json").read_text())
    assert facts["data"]["job_id"] == world["job"]
    assert (out / "model.safetensors").is_file()
