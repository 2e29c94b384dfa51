"""`charter train` input handling: bad input fails in one line before training; config, precision
and data rules hold. Training itself is forbidden in these tests (it would mean a check came late).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from charter.cli.main import cli
from tests.support.generation import PROMPTS, responder, write_constitution, write_prompts
from tests.support.scripted_server import ScriptedJudgeServer
from tests.support.tiny_models import build_tiny_chat_model


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any call into a trainer's train() fails the test: checks must come first."""
    import warnings

    import transformers

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("training started before the bad input was caught")

    monkeypatch.setattr(transformers.Trainer, "train", forbidden)
    try:  # PPO's trainer is TRL 1.12's (charter[ppo]), not a transformers.Trainer
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from trl.experimental.ppo import PPOTrainer
    except ImportError:
        return
    monkeypatch.setattr(PPOTrainer, "train", forbidden)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def no_template(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its chat template removed."""
    target = tmp_path_factory.mktemp("plain") / "model"
    shutil.copytree(tiny, target)
    (target / "chat_template.jinja").unlink(missing_ok=True)
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))
    return target


@pytest.fixture(scope="module")
def prefs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "prefs.jsonl"
    rows = [
        {"prompt": f"Question {i}?", "chosen": f"Good answer {i}.", "rejected": f"Bad {i}."}
        for i in range(4)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fail(*args: str) -> str:
    """Run `charter train ...`, expect exit 1 with one clean error line; return the line."""
    result = CliRunner().invoke(cli, ["train", "-q", *args], catch_exceptions=False)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_data_with_no_usable_pairs(tmp_path: Path, tiny: Path, no_training: None) -> None:
    data = tmp_path / "useless.jsonl"
    rows = [
        {"prompt": "Q1", "chosen": "same", "rejected": "same"},
        {"prompt": "Q2", "chosen": "same", "rejected": "same"},
        {"prompt": "Q3", "chosen": "only one answer"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    error = fail("dpo", "--data", str(data), "--model", str(tiny), "--out", str(tmp_path / "o"))
    assert "no usable preference pairs" in error
    assert "2 chosen == rejected" in error and "1 missing rejected" in error
    assert not (tmp_path / "o").exists()


def test_job_with_no_usable_pairs(tmp_path: Path, tiny: Path, no_training: None) -> None:
    principles = write_constitution(tmp_path / "principles")
    prompts = write_prompts(tmp_path / "prompts.jsonl", PROMPTS[:3])
    store = tmp_path / "store.db"
    # A judge that always says "A": after position debiasing every pair is a tie.
    with ScriptedJudgeServer(responder(position_bias_a=1.0)) as server:
        result = CliRunner().invoke(
            cli,
            ["generate", "--prompts", str(prompts), "--dir", str(principles), "--store",
             str(store), "--judge", "openai:scripted", "--policy", "openai:scripted",
             "--judge-base-url", server.base_url, "--policy-base-url", server.base_url, "--json"],
        )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    job = json.loads(result.stdout)["job_id"]
    error = fail("reward", "--data", job, "--store", str(store), "--model", str(tiny),
                 "--out", str(tmp_path / "o"))  # fmt: skip
    assert f"job {job} has no usable preference pairs" in error
    assert "p_chosen >= 0.6" in error


def test_data_that_is_neither_a_file_nor_a_job(tmp_path: Path, tiny: Path) -> None:
    store = tmp_path / "store.db"
    store.touch()
    error = fail("dpo", "--data", "job-nope", "--store", str(store), "--model", str(tiny),
                 "--out", str(tmp_path / "o"))  # fmt: skip
    assert "no such file, and no job 'job-nope'" in error


def test_model_path_that_does_not_exist(tmp_path: Path, prefs: Path, no_training: None) -> None:
    missing = tmp_path / "no" / "such" / "model"
    error = fail("dpo", "--data", str(prefs), "--model", str(missing), "--out", str(tmp_path / "o"))
    assert f"model path {missing} does not exist" in error


def test_an_api_model_as_the_model_to_train_says_what_to_give(
    tmp_path: Path, prefs: Path, no_training: None
) -> None:
    # smollm2 and hf:PATH train (tests/test_train_sft.py); a model behind an API cannot.
    model = "openai:gpt-4o-mini"
    error = fail("dpo", "--data", str(prefs), "--model", model, "--out", str(tmp_path / "o"))
    assert f"model {model!r} is a model behind an API" in error and "hf:PATH_OR_ID" in error


@pytest.mark.parametrize("method", ["dpo", "reward"])
def test_conversational_data_needs_a_chat_template(
    method: str, tmp_path: Path, prefs: Path, no_template: Path, no_training: None
) -> None:
    error = fail(method, "--data", str(prefs), "--model", str(no_template), "--conversational",
                 "--out", str(tmp_path / "o"))  # fmt: skip
    assert "has no chat template, but the data is conversational" in error


def test_message_data_needs_a_chat_template(
    tmp_path: Path, no_template: Path, no_training: None
) -> None:
    data = tmp_path / "chat.jsonl"
    row = {
        "prompt": [{"role": "user", "content": "Hi?"}],
        "chosen": [{"role": "assistant", "content": "Hello."}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
    }
    data.write_text(json.dumps(row) + "\n")
    error = fail("dpo", "--data", str(data), "--model", str(no_template), "--out",
                 str(tmp_path / "o"))  # fmt: skip
    assert "no chat template" in error
    # Plain-text training of the same data works without a template (up to the forbidden train()).
    with pytest.raises(AssertionError, match="training started"):
        CliRunner().invoke(
            cli,
            ["train", "-q", "dpo", "--data", str(data), "--model", str(no_template),
             "--standard", "--out", str(tmp_path / "o2")],
            catch_exceptions=False,
        )  # fmt: skip


@pytest.mark.ppo
def test_reward_model_with_the_wrong_head(
    tmp_path: Path, prefs: Path, tiny: Path, no_training: None
) -> None:
    error = fail("ppo", "--data", str(prefs), "--model", str(tiny), "--reward-model", str(tiny),
                 "--out", str(tmp_path / "o"))  # fmt: skip
    assert "has a language-model head (LlamaForCausalLM), not a reward head" in error


@pytest.mark.ppo
def test_reward_model_with_a_different_tokenizer(
    tmp_path: Path, prefs: Path, tiny: Path, no_training: None
) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rm = tmp_path / "rm"
    AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1).save_pretrained(rm)
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    tokenizer.add_tokens(["<|brand-new|>"])
    tokenizer.save_pretrained(rm)
    error = fail("ppo", "--data", str(prefs), "--model", str(tiny), "--reward-model", str(rm),
                 "--out", str(tmp_path / "o"))  # fmt: skip
    assert "different tokenizer" in error


def test_policy_that_is_a_classifier(tmp_path: Path, prefs: Path, tiny: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    rm = tmp_path / "rm"
    AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1).save_pretrained(rm)
    error = fail("dpo", "--data", str(prefs), "--model", str(rm), "--out", str(tmp_path / "o"))
    assert "is a sequence classifier" in error


def test_unknown_config_key_is_named(tmp_path: Path, prefs: Path, tiny: Path) -> None:
    config = tmp_path / "train.toml"
    config.write_text(f'data = "{prefs}"\nmodel = "{tiny}"\nbetta = 0.1\n')
    error = fail("dpo", "--config", str(config), "--out", str(tmp_path / "o"))
    assert "unknown key 'betta'" in error and "'beta'" in error


def test_bad_trl_value_is_a_clean_error(tmp_path: Path, prefs: Path, tiny: Path) -> None:
    error = fail("dpo", "--data", str(prefs), "--model", str(tiny), "--out", str(tmp_path / "o"),
                 "--set", "lr_scheduler_type='sideways'")  # fmt: skip
    assert "bad trl.DPOConfig setting" in error


def test_bf16_on_the_cpu_is_refused(tmp_path: Path, prefs: Path, tiny: Path) -> None:
    error = fail("dpo", "--data", str(prefs), "--model", str(tiny), "--out", str(tmp_path / "o"),
                 "--set", "bf16=true")  # fmt: skip
    assert "bf16 was asked for, but training runs on the CPU" in error


def test_resume_without_a_checkpoint(tmp_path: Path, prefs: Path, tiny: Path) -> None:
    error = fail("dpo", "--data", str(prefs), "--model", str(tiny), "--out", str(tmp_path / "o"),
                 "--resume")  # fmt: skip
    assert "no checkpoint-N directory" in error


def test_output_dir_holding_a_model_needs_overwrite(
    tmp_path: Path, prefs: Path, tiny: Path, no_training: None
) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "config.json").write_text("{}")
    error = fail("dpo", "--data", str(prefs), "--model", str(tiny), "--out", str(out))
    assert "already holds a trained model" in error and "--overwrite" in error


@pytest.mark.ppo
def test_ppo_needs_a_full_rollout_batch(tmp_path: Path, prefs: Path, tiny: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rm = tmp_path / "rm"
    AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1).save_pretrained(rm)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(rm)
    error = fail("ppo", "--data", str(prefs), "--model", str(tiny), "--reward-model", str(rm),
                 "--batch-size", "8", "--out", str(tmp_path / "o"))  # fmt: skip
    assert "4 usable prompts" in error


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_judged_reference_mode_needs_references(tmp_path: Path, tiny: Path, method: str) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", PROMPTS[:4])
    principles = write_constitution(tmp_path / "principles")
    error = fail(method, "--data", str(prompts), "--model", str(tiny), "--dir", str(principles),
                 "--judge", "openai:scripted", "--judge-base-url", "http://127.0.0.1:9/v1",
                 "--reward-mode", "reference", "--out", str(tmp_path / "o"))  # fmt: skip
    assert "needs a reference answer per prompt" in error


def test_train_help_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from charter.cli.main import cli\n"
        "for method in ('sft', 'dpo', 'reward', 'ppo', 'grpo', 'rloo'):\n"
        "    r = CliRunner().invoke(cli, ['train', method, '--help'])\n"
        "    assert r.exit_code == 0 and '--config' in r.output, r.output\n"
        "heavy = {'torch', 'transformers', 'trl', 'openai', 'datasets'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ppo_without_trl_1_12_is_one_line_with_the_install_and_the_alternative(
    tmp_path: Path, prefs: Path, tiny: Path
) -> None:
    from charter.trainer.ppo import ppo_unavailable

    missing = ppo_unavailable()
    if missing is None:
        pytest.skip("this environment has TRL 1.12's PPOTrainer (charter[ppo])")
    import trl

    config = tmp_path / "ppo.toml"
    config.write_text("kl_coef = 0.1\n")
    error = fail("ppo", "--data", str(prefs), "--model", str(tiny), "--reward-model", str(tiny),
                 "--config", str(config), "--out", str(tmp_path / "o"))  # fmt: skip
    assert error == f"Error: {missing}"
    assert f"this environment has TRL {trl.__version__}" in error
    assert "pip install 'charter[ppo]'" in error
    assert "OpenRLHF" in error and "docs/rewards.md" in error
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_judged_methods_need_two_completions_per_prompt(
    tmp_path: Path, tiny: Path, method: str, no_training: None
) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", PROMPTS[:4])
    principles = write_constitution(tmp_path / "principles")
    error = fail(method, "--data", str(prompts), "--model", str(tiny), "--dir", str(principles),
                 "--judge", "openai:scripted", "--judge-base-url", "http://127.0.0.1:9/v1",
                 "--set", "num_generations=1", "--out", str(tmp_path / "o"))  # fmt: skip
    # TRL's own check, reported as one line before any model is loaded.
    assert f"bad trl.{method.upper()}Config setting: {method.upper()} requires at least 2" in error


def test_missing_required_settings_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["train", "dpo", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "give --data" in result.stderr


# --- config files, precision, data: the rules themselves -------------------------------------


def test_settings_sort_into_charter_and_trl_with_aliases() -> None:
    from trl import DPOConfig

    from charter.trainer import TrainError
    from charter.trainer.config import canonical_keys, parse_assignment, split_settings
    from charter.trainer.dpo import DPORunConfig

    values = canonical_keys({"lora": True, "epochs": 2, "beta": 0.3, "store": "x"}, "test")
    run, trl, extra = split_settings(
        values, run_cls=DPORunConfig, trl_cls=DPOConfig, extra={"store"}, source="test"
    )
    assert run == {"use_peft": True}
    assert trl == {"num_train_epochs": 2, "beta": 0.3}
    assert extra == {"store": "x"}
    with pytest.raises(TrainError, match="'lora' and 'use_peft' set the same thing"):
        canonical_keys({"lora": True, "use_peft": False}, "test")
    assert parse_assignment("warmup-ratio=0.1") == ("warmup_ratio", 0.1)
    assert parse_assignment("loss_type=['ipo']") == ("loss_type", ["ipo"])
    assert parse_assignment("optim=adamw_torch") == ("optim", "adamw_torch")


def test_precision_is_bf16_only_where_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from charter.trainer import TrainError, resolve_precision

    cpu = resolve_precision()
    assert (cpu.device, cpu.name, cpu.use_cpu) == ("cpu", "fp32", True)
    with pytest.raises(TrainError, match="fp16 was asked for"):
        resolve_precision(fp16=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision().name == "bf16"
    assert resolve_precision(use_cpu=True).name == "fp32"  # an explicit CPU run stays fp32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision().name == "fp32"
    with pytest.raises(TrainError, match="does not support it"):
        resolve_precision(bf16=True)


def test_data_formats_convert_and_provenance_is_kept() -> None:
    from charter.trainer import PreferenceData

    rows = [
        {"prompt": "Q1", "chosen": "a", "rejected": "b", "job_id": "job-1", "judge": "j"},
        {
            "prompt": [{"role": "user", "content": "Q2"}],
            "chosen": [{"role": "assistant", "content": "c"}],
            "rejected": [{"role": "assistant", "content": "d"}],
            "job_id": "job-1",
            "judge": "j",
        },
    ]
    chat = PreferenceData.from_rows(rows, source="t", conversational=True)
    assert chat.train[0]["prompt"] == [{"role": "user", "content": "Q1"}]
    assert chat.train[0]["chosen"] == [{"role": "assistant", "content": "a"}]
    plain = PreferenceData.from_rows(rows, source="t", conversational=False)
    assert plain.train[1]["prompt"] == "Q2" and plain.train[1]["rejected"] == "d"
    assert plain.job_id == "job-1" and plain.provenance.judges == ("j",)
    assert PreferenceData.from_rows(rows, source="t").conversational is False  # first row decides


def test_holdout_split_is_by_prompt_and_deterministic() -> None:
    from charter.trainer.data import split_holdout

    rows = [{"prompt": f"Q{i % 10}", "chosen": "a", "rejected": f"b{i}"} for i in range(40)]
    train, test = split_holdout(rows, 0.2)
    assert test and train
    assert {r["prompt"] for r in train}.isdisjoint({r["prompt"] for r in test})
    assert split_holdout(rows, 0.2) == (train, test)
    tiny_train, tiny_test = split_holdout(rows[:2], 0.01)  # two prompts: one each side
    assert len(tiny_train) == len(tiny_test) == 1


def test_saved_dataset_and_export_dirs_load_with_their_test_split(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    from charter.trainer import load_preference_data

    row = {"prompt": "Q", "chosen": "a", "rejected": "b"}
    DatasetDict(
        {"train": Dataset.from_list([row] * 3), "test": Dataset.from_list([row])}
    ).save_to_disk(str(tmp_path / "hf"))
    data = load_preference_data(tmp_path / "hf")
    assert len(data.train) == 3 and data.test is not None and len(data.test) == 1
    export = tmp_path / "export"
    export.mkdir()
    held = [{**row, "prompt": f"Held {i}"} for i in range(2)]  # told apart from the train row
    (export / "train.jsonl").write_text(json.dumps(row) + "\n")
    (export / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    data = load_preference_data(export)
    assert [r["prompt"] for r in data.train] == ["Q"]
    assert data.test is not None and [r["prompt"] for r in data.test] == ["Held 0", "Held 1"]


def test_line_separator_characters_inside_strings_do_not_split_rows(tmp_path: Path) -> None:
    """charter's exports write U+2028/U+2029 raw (ensure_ascii=False); they are not line ends."""
    from charter.trainer import load_preference_data

    row = {"prompt": "Q\u2028two", "chosen": "a\u2029b\x85c", "rejected": "b"}
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    data = load_preference_data(path)
    assert len(data.train) == 1
    assert data.train[0]["chosen"] == "a\u2029b\x85c"


def test_data_that_is_not_utf8_names_the_line_and_byte(tmp_path: Path) -> None:
    from charter.trainer import TrainError, load_preference_data

    good = json.dumps({"prompt": "Q", "chosen": "a", "rejected": "b"}).encode()
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(good + b"\n" + good.replace(b'"a"', b'"\xe9"') + b"\n")
    offset = len(good) + 1 + good.index(b'"a"') + 1
    with pytest.raises(
        TrainError, match=f"prefs.jsonl:2:28: not valid UTF-8 .byte offset {offset}"
    ):
        load_preference_data(path)


@pytest.mark.parametrize(
    "method", ["sft", "dpo", "reward", pytest.param("ppo", marks=pytest.mark.ppo), "grpo", "rloo"]
)
def test_example_configs_use_only_known_keys(method: str) -> None:
    import importlib

    from charter.cli.train import CLI_KEYS
    from charter.trainer.config import read_config_file, split_settings

    module = importlib.import_module(f"charter.trainer.{method}")
    run_cls = next(
        getattr(module, name)
        for name in dir(module)
        if name.endswith("RunConfig") and name != "RunConfig"
    )
    values = read_config_file(Path(__file__).parent.parent / "examples" / f"train-{method}.toml")
    run, trl, _ = split_settings(
        values, run_cls=run_cls, trl_cls=module.trl_config_class(), extra=CLI_KEYS, source=method
    )
    assert {"data", "model", "output_dir"} <= set(run)
    assert trl


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "judge_protocol='listwise'",
            "bad judge setting judge_protocol: Input should be 'auto', 'pairwise' or 'pointwise'",
        ),
        ("judge_principles=0", "bad judge setting judge_principles: Input should be greater"),
        ("judge_deadline_s=0", "bad judge setting judge_deadline_s: Input should be greater"),
        ("judge_deadline_s=500", "bad judge setting judge_deadline_s: Input should be less"),
    ],
)
def test_grpo_bad_judge_settings_are_one_line_errors(
    tmp_path: Path, tiny: Path, setting: str, message: str
) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", PROMPTS[:4])
    principles = write_constitution(tmp_path / "principles")
    error = fail("grpo", "--data", str(prompts), "--model", str(tiny), "--dir", str(principles),
                 "--judge", "openai:scripted", "--judge-base-url", "http://127.0.0.1:9/v1",
                 "--set", setting, "--out", str(tmp_path / "o"))  # fmt: skip
    assert message in error
    flag = CliRunner().invoke(cli, ["train", "grpo", "--judge-protocol", "listwise"])
    assert flag.exit_code == 2 and "--judge-protocol" in flag.stderr


def test_grpo_takes_judge_settings_as_one_judge_config() -> None:
    from charter.judge import JudgeConfig
    from charter.trainer import GRPORunConfig

    config = GRPORunConfig(
        data="d", model="m", output_dir="o", judge_config={"protocol": "pointwise", "principles": 2}
    )
    assert config.judge_config == JudgeConfig(protocol="pointwise", principles=2)
    assert GRPORunConfig(data="d", model="m", output_dir="o").judge_config == JudgeConfig()


@pytest.mark.parametrize(
    ("method", "lines", "message"),
    [
        (
            "sft",
            'max_steps = "six"',
            r"max_steps: must be an integer \(a field of trl\.SFTConfig\)"
            r", not 'six'",
        ),
        (
            "dpo",
            'learning_rate = "fast"',
            r"learning_rate: must be a number \(a field of "
            r"trl\.DPOConfig\), not 'fast'",
        ),
        ("dpo", "beta = true", r"beta: must be a number .*not True"),
        ("dpo", "lora_r = 1.5", r"lora_r: must be an integer \(a charter setting\), not 1\.5"),
        ("sft", "report_to = 3", r"report_to: must be a string or a list of strings.*not 3"),
    ],
)
def test_a_wrongly_typed_setting_in_a_config_file_is_one_line_naming_file_and_field(
    tmp_path: Path, tiny: Path, no_training: None, method: str, lines: str, message: str
) -> None:
    import re

    data = tmp_path / "d.jsonl"
    row = {"prompt": "Q?", "completion": "A.", "chosen": "Good.", "rejected": "Bad."}
    data.write_text(json.dumps(row) + "\n")
    config = tmp_path / "train.toml"
    config.write_text(f'data = "{data}"\nmodel = "{tiny}"\n{lines}\n')
    error = fail(method, "--config", str(config), "--out", str(tmp_path / "o"))
    assert error.startswith(f"Error: config file {config}: "), error
    assert re.search(message, error), error
    assert not (tmp_path / "o").exists()
    # The same through --set, named as such.
    key, _, value = lines.partition(" = ")
    error = fail(method, "--data", str(data), "--model", str(tiny), "--set", f"{key}={value}",
                 "--out", str(tmp_path / "o"))  # fmt: skip
    assert error.startswith("Error: --set: ") and re.search(message, error), error


def test_settings_of_the_right_type_pass_the_type_check() -> None:
    """Every shape TRL's configs declare takes its values: unions, lists, enums, optionals."""
    from trl import DPOConfig, GRPOConfig  # type: ignore[attr-defined]

    from charter.trainer.config import split_settings
    from charter.trainer.dpo import DPORunConfig
    from charter.trainer.grpo import GRPORunConfig

    good = {"learning_rate": 1, "max_steps": 3, "loss_type": "ipo", "report_to": ["none"],
            "lr_scheduler_type": "cosine", "eval_strategy": "no", "max_length": None,
            "gradient_checkpointing": False, "model_init_kwargs": {"dtype": "float32"},
            "use_peft": True, "lora_target_modules": ["q_proj"], "resume": "last"}  # fmt: skip
    split_settings(good, run_cls=DPORunConfig, trl_cls=DPOConfig, source="test")
    split_settings({"reward_mode": "group", "judge_deadline_s": 5, "temperature": 0.7},
                   run_cls=GRPORunConfig, trl_cls=GRPOConfig, source="test")  # fmt: skip
