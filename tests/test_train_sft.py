"""`charter train sft`, a job's training rows in the library, and model specs in training.

Jobs are made by `charter generate` against the scripted loopback server; models are tiny ones
the test builds. `smollm2` is checked against a cache entry planted where the judge's converter
would put it (the real 40 s conversion runs only in the slow test).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.generation import PROMPTS, bad, good, make_world, responder, revised
from tests.support.scripted_server import ScriptedJudgeServer
from tests.support.tiny_models import build_tiny_chat_model
from tests.test_row_quality import REVISE_PROMPTS, _revise_server
from tests.test_train import FAST, invoke, train
from tests.test_train_inputs import fail
from tests.test_train_inputs import no_training as forbid_training  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


def generate(world: dict[str, Path], server: ScriptedJudgeServer, *extra: str) -> str:
    code, out, err = invoke(
        ["generate", "--prompts", str(world["prompts"]), "--dir", str(world["principles"]),
         "--store", str(world["store"]), "--judge", "openai:scripted",
         "--policy", "openai:scripted", "--judge-base-url", server.base_url,
         "--policy-base-url", server.base_url, "--json", *extra]
    )  # fmt: skip
    assert code == 0, err
    job_id: str = json.loads(out)["job_id"]
    return job_id


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def revise_job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A revise job of 7 prompts: 5 revisions fail a quality gate, 1 (prompt 3) is judged worse
    than its original, 1 (prompt 6) is accepted."""
    world = make_world(tmp_path_factory.mktemp("revise"), REVISE_PROMPTS)
    with _revise_server() as server:
        job = generate(world, server, "--mode", "revise", "-n", "1")
    return {**world, "job": job}


@pytest.fixture(scope="module")
def compare_job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A compare job of three given responses per prompt, every decided pair kept: the revised
    text beats the good one, which beats the bad one."""
    world = make_world(tmp_path_factory.mktemp("compare"), PROMPTS[:4])
    world["prompts"].write_text(
        "".join(
            json.dumps({"prompt": p, "responses": [bad(p), good(p), revised(p)]}) + "\n"
            for p in PROMPTS[:4]
        )
    )
    with ScriptedJudgeServer(responder()) as server:
        job = generate(world, server, "--pairs", "margin")
    return {**world, "job": job}


def pairs(rows: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    return [(r["prompt"], r["completion"]) for r in rows]


# ------------------------------------------------------------- a job's rows, in the library


def test_sft_rows_of_a_revise_job_are_the_accepted_revisions_only(
    revise_job: dict[str, Any],
) -> None:
    from charter.jobs.store import load_preferences
    from charter.store import open_store
    from charter.training_data import load_job_data

    stored = load_preferences(open_store(revise_job["store"], create=False), revise_job["job"])
    # The judge's check stored the worse revision with a low p_chosen: the filter has work to do.
    assert {p.prompt for p in stored} == {REVISE_PROMPTS[3], REVISE_PROMPTS[6]}
    data = load_job_data(revise_job["store"], revise_job["job"], kind="sft")
    assert pairs(data.train) == [(REVISE_PROMPTS[6], revised(REVISE_PROMPTS[6]))]
    assert data.provenance.jobs == (revise_job["job"],)
    # `charter export --kind sft` picks the very same rows.
    out = revise_job["tmp"] / "sft.jsonl"
    code, _, err = invoke(["export", revise_job["job"], "--store", str(revise_job["store"]),
                           "--kind", "sft", "--out", str(out)])  # fmt: skip
    assert code == 0, err
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert pairs(exported) == pairs(data.train)


def test_sft_rows_of_a_compare_job_are_each_prompts_winner(compare_job: dict[str, Any]) -> None:
    from charter.training_data import load_job_data

    dpo = load_job_data(compare_job["store"], compare_job["job"], kind="preference")
    assert len(dpo.train) == 3 * 4  # the good text is chosen over the bad one too...
    data = load_job_data(compare_job["store"], compare_job["job"], kind="sft")
    # ...but it lost to the revised one, so only the winner is imitated.
    assert sorted(pairs(data.train)) == sorted((p, revised(p)) for p in PROMPTS[:4])
    chat = load_job_data(compare_job["store"], compare_job["job"], kind="sft", conversational=True)
    assert chat.conversational
    first = chat.train[0]
    assert first["completion"] == [{"role": "assistant", "content": revised(PROMPTS[0])}]
    assert first["prompt"] == [{"role": "user", "content": PROMPTS[0]}]


# ---------------------------------------------------------------------- training, for real


def test_sft_on_a_revise_job_lowers_the_loss_on_the_accepted_revision_alone(
    revise_job: dict[str, Any], tiny: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "sft"
    result = train("sft", "--data", revise_job["job"], "--store", str(revise_job["store"]),
                   "--model", str(tiny), "--out", str(out), "--max-steps", "8", "--lr", "1e-2",
                   "--set", "save_strategy='no'", *FAST)  # fmt: skip
    assert result["method"] == "sft" and result["global_step"] == 8
    metrics = result["metrics"]
    assert metrics["loss_last"] < metrics["loss_first"] * 0.8
    facts = json.loads((out / "charter_training.json").read_text())
    assert facts["trainer"] == "trl.SFTTrainer"
    assert facts["data"]["rows"] == 1 and facts["data"]["job_id"] == revise_job["job"]
    assert facts["data"]["constitution_versions"] == ["1.0"]
    base = AutoModelForCausalLM.from_pretrained(tiny).state_dict()
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert any(not w.equal(base[name]) for name, w in trained.items())


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sft_from_files_prompt_completion_and_messages(tiny: Path, tmp_path: Path) -> None:
    plain = write_jsonl(
        tmp_path / "plain.jsonl",
        [{"prompt": f"Question {i}?", "completion": f"Answer {i}."} for i in range(4)],
    )
    result = train("sft", "--data", str(plain), "--model", str(tiny), "--out",
                   str(tmp_path / "plain"), "--max-steps", "2", "--batch-size", "2",
                   "--set", "save_strategy='no'", *FAST)  # fmt: skip
    assert result["global_step"] == 2
    facts = json.loads((tmp_path / "plain" / "charter_training.json").read_text())
    assert facts["data"]["format"] == "standard" and facts["data"]["rows"] == 4

    chats = [
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": f"Question {i}?"},
                      {"role": "assistant", "content": f"Answer {i}."}]}
        for i in range(3)
    ] + [{"messages": [{"role": "user", "content": "No answer here."}]}]  # fmt: skip
    messages = write_jsonl(tmp_path / "chat.jsonl", chats)
    result = train("sft", "--data", str(messages), "--model", str(tiny), "--out",
                   str(tmp_path / "chat"), "--max-steps", "1", "--lora", "--lora-r", "4",
                   "--set", "save_strategy='no'", *FAST)  # fmt: skip
    assert result["global_step"] == 1
    assert (tmp_path / "chat" / "adapter_config.json").is_file()
    facts = json.loads((tmp_path / "chat" / "charter_training.json").read_text())
    assert facts["data"]["format"] == "conversational"
    assert facts["data"]["rows"] == 3 and facts["data"]["dropped_rows"] == 1


def test_training_beside_a_busy_process_takes_the_cores_it_leaves_free(
    tiny: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A torch process with a thread per core beside another busy one oversubscribes the cores
    (12 SFT steps: 280 s instead of 22 on 2 shared cores), so training takes the cores other
    processes leave free, and gives the caller its own thread count back afterwards."""
    import torch

    from charter.trainer import SFTRunConfig, train_sft

    monkeypatch.delenv("CHARTER_TORCH_THREADS", raising=False)
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Q?", "completion": "A."}] * 2)
    settings = {"max_steps": 1, "save_strategy": "no", "gradient_checkpointing": False}

    def threads_used(out: str) -> tuple[int, int]:
        caplog.clear()
        # The CLI sets charter.trainer's level for its own runs (`-q`): ask for INFO here.
        with (
            caplog.at_level(logging.INFO, logger="charter.trainer"),
            caplog.at_level(logging.INFO, logger="charter.common.threads"),
        ):
            train_sft(SFTRunConfig(data=str(data), model=str(tiny), output_dir=str(tmp_path / out),
                                   trl={**settings, "per_device_train_batch_size": 2}))  # fmt: skip
        used = re.search(r"torch uses (\d+) thread\(s\) of (\d+) cores", caplog.text)
        assert used, caplog.text
        # ... and that is the count in effect once training has begun.
        assert f"sft: training for 1 steps on {used[1]} torch thread(s)" in caplog.text
        return int(used[1]), int(used[2])

    before = torch.get_num_threads()
    # Two busy processes: at least one core's worth of CPU elsewhere even while this process
    # loads the model on every core (more load on the machine only lowers the share).
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.3)
        threads, cores = threads_used("busy")
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    assert threads <= max(1, cores - 1)
    assert torch.get_num_threads() == before
    monkeypatch.setenv("CHARTER_TORCH_THREADS", "3")
    assert threads_used("fixed")[0] == 3
    assert torch.get_num_threads() == before


def test_sft_split_of_messages_rows() -> None:
    from charter.trainer import PreferenceData

    row = {"messages": [{"role": "user", "content": "Hi?"},
                        {"role": "assistant", "content": "Hello."}], "id": 7}  # fmt: skip
    data = PreferenceData.from_rows([row], source="rows", kind="sft")
    assert data.train == [
        {"id": 7, "prompt": [{"role": "user", "content": "Hi?"}],
         "completion": [{"role": "assistant", "content": "Hello."}]}
    ]  # fmt: skip


# ----------------------------------------------------------------------- bad input, one line


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("broken.jsonl", '{"prompt": "a", "completion": "b"}\n{"prompt": \n', "broken.jsonl:2:"),
        (
            "pairs.jsonl",
            '{"prompt": "a", "chosen": "b", "rejected": "c"}\n',
            "no usable prompt-completion rows (1 rows: 1 missing completion)",
        ),
        (
            "chat.jsonl",
            '{"messages": [{"role": "user", "content": "a"}]}\n',
            "1 messages not ending in an assistant turn after another turn",
        ),
        ("rows.csv", "prompt,completion\na,b\n", "unsupported data file"),
        ("list.json", '[{"prompt": "a", "completion": "b"},\n 3]', "list.json:2: expected a JSON"),
    ],
)
@pytest.mark.usefixtures("forbid_training")
def test_malformed_sft_files_fail_in_one_line(
    name: str, text: str, expected: str, tiny: Path, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_text(text)
    error = fail("sft", "--data", str(path), "--model", str(tiny), "--out", str(tmp_path / "o"))
    assert expected in error
    assert str(path) in error
    assert not (tmp_path / "o").exists()


@pytest.mark.usefixtures("forbid_training")
def test_a_job_with_nothing_to_imitate(tmp_path: Path, tiny: Path) -> None:
    world = make_world(tmp_path, PROMPTS[:2])
    # A judge that always says "A": after position debiasing every pair is a tie.
    with ScriptedJudgeServer(responder(position_bias_a=1.0)) as server:
        job = generate(world, server)
    error = fail("sft", "--data", job, "--store", str(world["store"]), "--model", str(tiny),
                 "--out", str(tmp_path / "o"))  # fmt: skip
    assert f"job {job} has no rows to fine-tune on" in error


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("foo:bar", "model 'foo:bar': unknown model spec; expected smollm2, hf:PATH_OR_ID"),
        ("openai:gpt-4o-mini", "is a model behind an API, with no weights here to train"),
        ("hf:", "model: model spec 'hf:' names no model; expected hf:PATH_OR_ID"),
        ("hf:./no/such/model", "model path ./no/such/model does not exist"),
    ],
)
@pytest.mark.usefixtures("forbid_training")
def test_model_specs_that_name_no_trainable_model(spec: str, expected: str, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "completion": "b"}])
    error = fail("sft", "--data", str(data), "--model", spec, "--out", str(tmp_path / "o"))
    assert expected in error


@pytest.mark.usefixtures("forbid_training")
def test_a_bad_reference_model_spec_is_named_as_such(tmp_path: Path, tiny: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    error = fail("dpo", "--data", str(data), "--model", str(tiny), "--ref-model", "smolm2:x",
                 "--out", str(tmp_path / "o"))  # fmt: skip
    assert "reference model 'smolm2:x': unknown model spec" in error


# --------------------------------------------------------------- model specs, as the judge's


def test_dpo_with_an_hf_spec(tiny: Path, tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "prefs.jsonl",
        [{"prompt": f"Q{i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}."} for i in range(2)],
    )
    out = tmp_path / "dpo"
    result = train("dpo", "--data", str(data), "--model", f"hf:{tiny}", "--ref-model",
                   f"hf:{tiny}", "--out", str(out), "--max-steps", "1", "--batch-size", "2",
                   "--set", "save_strategy='no'", *FAST)  # fmt: skip
    assert result["global_step"] == 1
    facts = json.loads((out / "charter_training.json").read_text())
    assert facts["base_model"] == f"hf:{tiny}"
    assert facts["base_model_path"] == str(tiny)
    assert facts["hyperparameters"]["ref_model"] == str(tiny)
    assert f"- Base model: `hf:{tiny}` (loaded from `{tiny}`)" in (out / "README.md").read_text()


def plant_smollm2_cache(cache: Path, model: Path) -> Path:
    """A cache entry the judge's converter would accept as its finished conversion."""
    from charter.judge.backends import smollm2

    fingerprint = smollm2._source_fingerprint(smollm2.gguf_path())
    target = cache / smollm2.CACHE_NAME
    shutil.copytree(model, target)
    (target / smollm2.MARKER_NAME).write_text(json.dumps({"source": fingerprint}))
    return target


def test_smollm2_resolves_to_the_judges_cached_conversion(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charter.trainer.models import resolve_model_spec

    monkeypatch.setenv("CHARTER_CACHE_DIR", str(tmp_path / "cache"))
    # Planted before the run: the judge's converter is not run, its cache entry is used.
    target = plant_smollm2_cache(tmp_path / "cache", tiny)
    assert resolve_model_spec("smollm2") == str(target)
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Q?", "completion": "A."}])
    out = tmp_path / "sft"
    result = train("sft", "--data", str(data), "--model", "smollm2", "--out", str(out),
                   "--max-steps", "1", "--set", "save_strategy='no'", *FAST)  # fmt: skip
    assert result["global_step"] == 1
    facts = json.loads((out / "charter_training.json").read_text())
    assert facts["base_model"] == "smollm2" and facts["base_model_path"] == str(target)


@pytest.mark.slow
def test_dpo_on_the_embedded_smollm2(tmp_path: Path) -> None:
    """The issue's command: the model that made the data trains on it, offline (converts the
    GGUF into the user's cache on first use)."""
    data = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Hi?", "chosen": "Hello!",
                                                   "rejected": "Go away."}])  # fmt: skip
    out = tmp_path / "dpo"
    result = train("dpo", "--data", str(data), "--model", "smollm2", "--out", str(out),
                   "--max-steps", "1", "--batch-size", "1", "--lora", "--max-length", "64",
                   "--set", "save_strategy='no'", *FAST)  # fmt: skip
    assert result["global_step"] == 1
    assert (out / "adapter_config.json").is_file()


@pytest.mark.usefixtures("forbid_training")
def test_message_rows_need_a_chat_template(tiny: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain-model"
    shutil.copytree(tiny, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    row = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Yo"}]}
    data = write_jsonl(tmp_path / "chat.jsonl", [row])
    error = fail("sft", "--data", str(data), "--model", str(plain), "--out", str(tmp_path / "o"))
    assert "has no chat template, but the data is conversational" in error
