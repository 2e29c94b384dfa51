"""`charter generate` / `export` / `jobs` end to end, against the scripted loopback server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from charter.cli.main import cli
from charter.settings import LEASE_TTL_ENV
from tests.support.generation import (
    PROMPTS,
    bad,
    good,
    make_world,
    qualify_judge,
    responder,
    revised,
    write_constitution,
    write_prompts,
)
from tests.support.scripted_server import Reply, ScriptedJudgeServer
from tests.support.service import request_call, stored_calls

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    return make_world(tmp_path)


def generate_args(world: dict[str, Path], server: ScriptedJudgeServer, *extra: str) -> list[str]:
    return [
        "generate",
        "--prompts", str(world["prompts"]),
        "--dir", str(world["principles"]),
        "--store", str(world["store"]),
        "--judge", "openai:scripted",
        "--policy", "openai:scripted",
        "--judge-base-url", server.base_url,
        "--policy-base-url", server.base_url,
        "--json",
        *extra,
    ]  # fmt: skip


def invoke(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def run_generate(world: dict[str, Path], server: ScriptedJudgeServer, *extra: str) -> dict:
    return run_generate_args(generate_args(world, server, *extra))


def run_generate_args(args: list[str]) -> dict:
    code, out, err = invoke(args)
    assert code == 0, err
    return json.loads(out)


def export_rows(world: dict[str, Path], job_id: str, *extra: str) -> list[dict]:
    out = world["tmp"] / f"export-{job_id}-{len(extra)}.jsonl"
    code, _, err = invoke(
        ["export", job_id, "--store", str(world["store"]), "--out", str(out), *extra]
    )
    assert code == 0, err
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_compare_mode_makes_the_preferred_triples(world: dict[str, Path]) -> None:
    with ScriptedJudgeServer(responder()) as server:
        summary = run_generate(world, server)
    assert summary["prompts"] == {
        "total": len(PROMPTS), "done": len(PROMPTS), "failed": 0, "pending": 0, "skipped": 0
    }  # fmt: skip
    assert summary["preferences"] == summary["exportable"] == len(PROMPTS)
    assert summary["position_consistency"] == 1.0
    assert summary["parse_failures"] == 0
    assert summary["tokens"]["prompt"] > 0
    rows = export_rows(world, summary["job_id"])
    assert {(r["prompt"], r["chosen"], r["rejected"]) for r in rows} == {
        (p, good(p), bad(p)) for p in PROMPTS
    }
    assert all(r["p_chosen"] > 0.6 and r["position_consistent"] for r in rows)
    assert all(r["judge"] == "openai:scripted" and len(r["principles"]) == 2 for r in rows)


def test_second_identical_run_makes_no_model_call(world: dict[str, Path]) -> None:
    with ScriptedJudgeServer(responder()) as server:
        first = run_generate(world, server)
        calls = server.calls
        second = run_generate(world, server)
        assert server.calls == calls
    assert second["job_id"] == first["job_id"]
    assert second["calls"]["judge"]["made"] == 0
    assert second["preferences"] == first["preferences"]


def test_editing_one_principle_re_asks_only_its_judgments(world: dict[str, Path]) -> None:
    with ScriptedJudgeServer(responder()) as server:
        first = run_generate(world, server)
        before = server.calls
        path = world["principles"] / "honest.toml"
        path.write_text(path.read_text().replace("more honest", "more truthful"))
        second = run_generate(world, server)
        new_requests = server.requests[before:]
    assert second["job_id"] != first["job_id"]  # a new constitution is a new job
    # Each prompt's one pair was judged under two of the three principles, in both orders.
    rows = export_rows(world, first["job_id"])
    assert len(rows) == len(PROMPTS) and first["judgments"] == len(PROMPTS) * 2 * 2
    under_honest = sum("honest" in row["principles"] for row in rows)
    assert 0 < under_honest < len(PROMPTS), "the edited principle was sampled for some pairs"
    for body in new_requests:
        assert "Which response is more truthful?" in json.dumps(body)
    # Every judgment under the edited principle, both orders, was asked again: no more.
    assert len(new_requests) == second["calls"]["judge"]["made"] == 2 * under_honest
    assert second["calls"]["policy"]["made"] == 0
    assert [
        (r["prompt"], r["chosen"], r["principles"]) for r in export_rows(world, second["job_id"])
    ] == [(r["prompt"], r["chosen"], r["principles"]) for r in rows]


def test_editing_every_principle_re_asks_everything(world: dict[str, Path]) -> None:
    with ScriptedJudgeServer(responder()) as server:
        first = run_generate(world, server)
        before = server.calls
        for path in world["principles"].glob("h*.toml"):
            path.write_text(path.read_text().replace("Which response", "Which reply"))
        second = run_generate(world, server)
        assert server.calls - before == first["judgments"]
    assert second["calls"]["policy"]["made"] == 0  # candidates are reused
    assert second["calls"]["judge"]["made"] == first["judgments"]


def test_revise_mode_makes_revision_pairs_and_sft_rows(world: dict[str, Path]) -> None:
    with ScriptedJudgeServer(responder()) as server:
        summary = run_generate(world, server, "--mode", "revise", "-n", "1")
    assert summary["preferences"] == len(PROMPTS)
    rows = export_rows(world, summary["job_id"])
    for row in rows:
        assert row["chosen"] == f"Revised: {good(row['prompt'])}"
        assert row["rejected"] == good(row["prompt"])
        assert row["source"] == "revision" and row["critique"]
    sft = export_rows(world, summary["job_id"], "--kind", "sft")
    assert {r["completion"] for r in sft} == {r["chosen"] for r in rows}


def test_given_responses_skip_the_policy(world: dict[str, Path]) -> None:
    prompts = world["tmp"] / "with-responses.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": p, "responses": [bad(p), good(p)]}) + "\n" for p in PROMPTS[:3]
        )
    )
    with ScriptedJudgeServer(responder()) as server:
        code, out, err = invoke(
            [*generate_args(world, server)[:1], "--prompts", str(prompts),
             *generate_args(world, server)[3:]]
        )  # fmt: skip
        assert code == 0, err
        assert all("Principle:" in json.dumps(b) for b in server.requests)  # no policy calls
    summary = json.loads(out)
    assert summary["preferences"] == 3
    rows = export_rows(world, summary["job_id"])
    assert all(r["policy"] == "given" for r in rows)


def test_position_biased_judge_never_yields_a_wrong_pair(world: dict[str, Path]) -> None:
    with ScriptedJudgeServer(responder(position_bias_a=0.4)) as server:
        summary = run_generate(world, server)
    rows = export_rows(world, summary["job_id"], "--min-confidence", "0.5")
    assert all(r["chosen"] == good(r["prompt"]) for r in rows)
    assert summary["position_consistency"] < 1.0


def test_unreachable_judge_is_a_clear_error_and_resumable(world: dict[str, Path]) -> None:
    with ScriptedJudgeServer(responder()) as server:
        url = server.base_url
    args = generate_args(world, server, "--timeout", "0.5")
    args[args.index(url, args.index("--judge-base-url"))] = "http://127.0.0.1:9/v1"
    code, _, err = invoke(args)
    assert code == 1
    assert "stopped after the first" in err and "--resume" in err
    assert "Traceback" not in err


def test_judge_failing_every_call_keeps_finished_work(world: dict[str, Path]) -> None:
    from tests.support.scripted_server import Fault

    def garbage(record: object) -> Fault | None:
        body = getattr(record, "body", None) or {}
        return Fault.garbage() if "Principle:" in json.dumps(body) else None

    with ScriptedJudgeServer(responder()) as server:
        # Finish half the prompts, then make the judge answer garbage to every verdict.
        half = world["tmp"] / "half.jsonl"
        write_prompts(half, PROMPTS[:4])
        args = generate_args(world, server)
        args[args.index("--prompts") + 1] = str(half)
        first = run_generate_args(args)
        assert first["preferences"] == 4

        server.fault_policy = garbage
        code, out, err = invoke(generate_args(world, server))
        assert code == 1 and out, f"no prompt finished: {err}"
        failing = json.loads(out)
        # The finished half is answered from the store and done; only the new half failed.
        assert failing["prompts"]["done"] == 4 and failing["prompts"]["failed"] == 4
        assert failing["calls"]["judge"]["reused"] == first["calls"]["judge"]["made"]
        assert "every comparison failed" in err

        server.fault_policy = None
        before = server.calls
        code, out, err = invoke(generate_args(world, server))
        assert code == 0, err
        asked = [json.dumps(body) for body in server.requests[before:]]
    summary = json.loads(out)
    assert summary["prompts"]["done"] == len(PROMPTS)
    assert summary["preferences"] == len(PROMPTS)
    # The resumed run asks only the failed prompts' verdicts: their candidates were stored.
    assert summary["calls"]["policy"]["made"] == 0
    assert len(asked) == summary["calls"]["judge"]["made"] == first["calls"]["judge"]["made"]
    assert not any(p in body for p in PROMPTS[:4] for body in asked)


def test_bad_prompt_files_are_clean_errors(world: dict[str, Path]) -> None:
    empty = world["tmp"] / "empty.jsonl"
    empty.write_text("")
    broken = world["tmp"] / "broken.jsonl"
    broken.write_text('{"prompt": "ok"}\n{"prompt": \n')
    wrong_column = world["tmp"] / "wrong.jsonl"
    wrong_column.write_text('{"question": "hi"}\n')
    latin1 = world["tmp"] / "latin1.txt"
    latin1.write_bytes(b"caf\xe9\n")
    with ScriptedJudgeServer(responder()) as server:
        # Each needle names the file, the place and the fault (the file's directory is the
        # test's, whose name holds "prompt": a bare "prompt" would match any message).
        for path, needle in [
            (empty, "empty.jsonl: the file is empty"),
            (broken, "broken.jsonl:2:12: not valid JSON"),
            (wrong_column, "wrong.jsonl:1: no 'prompt' column"),
            (latin1, "latin1.txt:1:4: not valid UTF-8"),
        ]:
            args = generate_args(world, server)
            args[args.index("--prompts") + 1] = str(path)
            code, _, err = invoke(args)
            assert code == 1 and "Traceback" not in err
            [line] = err.strip().splitlines()
            assert needle in line, line
        assert server.calls == 0
    assert not world["store"].exists()  # bad inputs are refused before a store is created


@pytest.mark.parametrize("option", ["--judge", "--policy"])
@pytest.mark.parametrize(
    ("spec", "needle"),
    [("foo", "openai:MODEL, hf:PATH_OR_ID, smollm2"), ("openai:", "openai:MODEL"),
     ("smollm2:x", "openai:MODEL, hf:PATH_OR_ID, smollm2"),
     ("", "openai:MODEL, hf:PATH_OR_ID, smollm2"), ("hf:{dir}", "not a model directory")],
)  # fmt: skip
def test_a_model_that_cannot_load_is_one_line_and_leaves_no_job(
    world: dict[str, Path], option: str, spec: str, needle: str
) -> None:
    not_a_model = world["tmp"] / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("no weights here")
    with ScriptedJudgeServer(responder()) as server:
        args = generate_args(world, server)
        args[args.index(option) + 1] = spec.format(dir=not_a_model)
        code, _, err = invoke(args)
        assert server.calls == 0
    assert code == 1 and option in err and needle in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert _jobs(world) == []  # no job was made, so none is left marked running


def _tables(path: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("select name from sqlite_master where type='table'")]


def _jobs(world: dict[str, Path]) -> list[dict]:
    code, out, _ = invoke(["jobs", "list", "--store", str(world["store"]), "--json"])
    assert code == 0
    return json.loads(out)


def test_jobs_list_and_show(world: dict[str, Path]) -> None:
    with ScriptedJudgeServer(responder()) as server:
        summary = run_generate(world, server)
    [job] = _jobs(world)
    assert job["id"] == summary["job_id"] and job["status"] == "done"
    code, out, _ = invoke(["jobs", "show", job["id"][:10], "--store", str(world["store"]),
                           "--json"])  # fmt: skip
    assert code == 0
    shown = json.loads(out)
    assert shown["summary"]["preferences"] == summary["preferences"]
    code, _, err = invoke(["jobs", "show", "job-nope", "--store", str(world["store"])])
    assert code == 1 and "no job" in err


def test_jobs_show_carries_the_judges_qualification(world: dict[str, Path]) -> None:
    """A job's summary names how far its judge was measured to agree with people: unqualified
    until `charter judge eval` of that judge is in the store, then its agreement and n."""
    store = str(world["store"])
    with ScriptedJudgeServer(responder()) as server:
        summary = run_generate(world, server)
        assert summary["judge_qualification"]["qualified"] is False
        code, out, _ = invoke(["jobs", "show", summary["job_id"], "--store", store])
        assert code == 0 and "judge        judge openai:scripted: unqualified" in out, out
        qualify_judge(world["store"], "openai:scripted", server.base_url, world["principles"])
    code, out, _ = invoke(["jobs", "show", summary["job_id"], "--store", store, "--json"])
    shown = json.loads(out)["summary"]["judge_qualification"]
    assert shown["qualified"] is True and shown["agreement"] == 0.75 and shown["decided"] == 4
    code, out, _ = invoke(["jobs", "show", summary["job_id"], "--store", store])
    assert "judge openai:scripted: agreed with people on 75% of 4 decided labelled pairs" in out


def test_export_formats_splits_and_card(world: dict[str, Path]) -> None:
    import datasets

    # Three ranked candidates a prompt and every decided pair kept: three rows share each
    # prompt, so a split keyed by anything but the prompt would put a prompt on both sides.
    three_each = world["tmp"] / "three-each.jsonl"
    three_each.write_text(
        "".join(
            json.dumps({"prompt": p, "responses": [bad(p), good(p), revised(p)]}) + "\n"
            for p in PROMPTS
        )
    )
    with ScriptedJudgeServer(responder()) as server:
        args = generate_args(world, server, "--pairs", "margin")
        args[args.index("--prompts") + 1] = str(three_each)
        code, out, err = invoke(args)
    assert code == 0, err
    job_id = json.loads(out)["job_id"]
    store = ["--store", str(world["store"])]
    out = world["tmp"] / "hf"
    code, _, err = invoke(["export", job_id, "--format", "hf", "--out", str(out), "--split",
                           "test=0.25", "--conversational", *store])  # fmt: skip
    assert code == 0, err
    loaded = datasets.load_from_disk(str(out))
    assert set(loaded) == {"train", "test"}
    split_prompts = {name: [row["prompt"][0]["content"] for row in loaded[name]] for name in loaded}
    assert Counter(split_prompts["train"] + split_prompts["test"]) == dict.fromkeys(PROMPTS, 3)
    assert not set(split_prompts["train"]) & set(split_prompts["test"])  # split by prompt
    assert loaded["train"][0]["chosen"][0]["role"] == "assistant"
    card = (out / "README.md").read_text()
    assert "1.0" in card and "openai:scripted" in card and "position consistency" in card
    # The split is deterministic: the JSONL export puts the same prompts in test.
    again = world["tmp"] / "split"
    assert invoke(["export", job_id, "--out", str(again), "--split", "test=0.25", *store])[0] == 0
    test_prompts = [
        json.loads(x)["prompt"] for x in (again / "test.jsonl").read_text().splitlines()
    ]
    assert sorted(test_prompts) == sorted(split_prompts["test"])
    parquet = world["tmp"] / "prefs.parquet"
    assert invoke(["export", job_id, "--format", "parquet", "--out", str(parquet), *store])[0] == 0
    parquet_rows = datasets.load_dataset("parquet", data_files=str(parquet))["train"].num_rows
    assert parquet_rows == 3 * len(PROMPTS)
    code, _, err = invoke(["export", job_id, "--out", str(out), "--format", "hf", *store])
    assert code == 1 and "not empty" in err
    code, _, err = invoke(["export", job_id, "--out", "x.jsonl", "--split", "test=2", *store])
    assert code == 1 and "bad split" in err


def test_export_to_a_path_of_the_wrong_kind_is_a_clean_error(world: dict[str, Path]) -> None:
    with ScriptedJudgeServer(responder()) as server:
        job_id = run_generate(world, server)["job_id"]
    place = world["tmp"] / "out"
    place.mkdir()
    (place / "a-dir").mkdir()
    (place / "a-dir" / "theirs.txt").write_text("keep me")
    (place / "a-file").write_text("keep me too")
    cases = [
        (["--out", "a-dir"], "is a directory"),
        (["--out", "a-dir", "--format", "parquet"], "is a directory"),
        (["--out", "a-file", "--format", "hf"], "not a directory"),
        (["--out", "a-file", "--split", "test=0.25"], "not a directory"),
        (["--out", "a-file", "--format", "parquet", "--split", "test=0.25"], "not a directory"),
        (["--out", "a-file/rows.jsonl"], "a-file is a file"),
    ]
    before = sorted(str(p.relative_to(place)) for p in place.rglob("*"))
    for args, needle in cases:
        args[1] = str(place / args[1])
        code, _, err = invoke(["export", job_id, "--store", str(world["store"]), *args])
        assert code == 1 and needle in err and args[1] in err, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    # Nothing written, nothing left behind (no .tmp), nothing of theirs touched.
    assert sorted(str(p.relative_to(place)) for p in place.rglob("*")) == before
    assert (place / "a-dir" / "theirs.txt").read_text() == "keep me"
    assert (place / "a-file").read_text() == "keep me too"


def _server_env(server: ScriptedJudgeServer) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CHARTER_JUDGE_BASE_URL=server.base_url, CHARTER_POLICY_BASE_URL=server.base_url)
    return env


def test_sigkill_mid_job_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    world = {
        "principles": write_constitution(tmp_path / "principles"),
        "prompts": write_prompts(tmp_path / "prompts.jsonl"),
        "store": tmp_path / "killed.db",
        "tmp": tmp_path,
    }
    with ScriptedJudgeServer(responder(), latency_s=0.05) as server:
        args = [sys.executable, "-m", "charter.cli", *generate_args(world, server)]
        env = {**_server_env(server), LEASE_TTL_ENV: "1"}  # the killed run's lease: 1 s
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=tmp_path)  # fmt: skip
        deadline = time.monotonic() + 60
        while server.calls < 20 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, (
            "the job finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(1.1)  # until the lease it could not release has expired
        committed = stored_calls(world["store"])
        assert committed, "some calls were committed before the kill"
        completed = {request_call(r.body) for r in server.log if r.status == 200}
        killed_at = len(server.log)
        resumed = run_generate(world, server)
        second_run = {request_call(r.body) for r in server.log[killed_at:]}
        # Every call the store had committed is reused; only replies the server sent but the
        # killed client had not yet committed (at most the calls in flight) are asked again.
        assert not committed & second_run, "the resumed run repeated a committed call"
        assert len(completed & second_run) <= server.max_in_flight

        fresh = dict(world, store=tmp_path / "fresh.db")
        uninterrupted = run_generate(fresh, server)
    assert resumed["job_id"] == uninterrupted["job_id"]
    killed_rows = export_rows(world, resumed["job_id"])
    fresh_rows = export_rows(fresh, uninterrupted["job_id"])
    assert len(killed_rows) == len(PROMPTS)
    assert killed_rows == fresh_rows


def test_dpo_trains_on_the_export(world: dict[str, Path], tmp_path: Path) -> None:
    """Stock TRL (the installed, current release; no charter code in the loop) loads the
    preference export as it is and trains on it."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from tests.support.tiny_models import build_tiny_chat_model

    with ScriptedJudgeServer(responder()) as server:
        job_id = run_generate(world, server)["job_id"]
    rows = export_rows(world, job_id)
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = datasets.load_dataset("json", data_files=str(path))["train"]
    model_dir = build_tiny_chat_model(tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ref = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = DPOConfig(
        output_dir=str(tmp_path / "dpo"), max_steps=3, per_device_train_batch_size=4,
        learning_rate=1e-3, bf16=False, use_cpu=True, report_to=[], logging_steps=1,
        save_strategy="no",
    )  # fmt: skip
    trainer = DPOTrainer(
        model=model, ref_model=ref, args=config, train_dataset=dataset,
        processing_class=tokenizer,
    )  # fmt: skip
    result = trainer.train()
    assert result.global_step == 3


class _HeldResponder:
    """Answers as `inner`, but holds the first call until `first` is set and every call after
    the second until `later` is set (for at most `HOLD_S` in all, so a failing test ends)."""

    HOLD_S = 60.0

    def __init__(self, inner: Callable[[dict[str, Any]], Reply]) -> None:
        self.inner = inner
        self.first = threading.Event()
        self.later = threading.Event()
        self.calls = 0
        self.lock = threading.Lock()
        self.timed_out: list[str] = []

    def __call__(self, body: dict[str, Any]) -> Reply:
        with self.lock:
            self.calls += 1
            number = self.calls
        gate = self.first if number == 1 else self.later if number > 2 else None
        if gate is not None and not gate.wait(self.HOLD_S):
            self.timed_out.append("first" if gate is self.first else "later")
            self.first.set()  # given up: the rest of the job runs unheld
            self.later.set()
        return self.inner(body)


def test_progress_lines_come_within_seconds_when_stderr_is_not_a_terminal(
    tmp_path: Path,
) -> None:
    """With output redirected, a progress bar shows nothing: a job logs its calls, tokens and
    prompts instead, the first line at once and then every CHARTER_PROGRESS_EVERY_S.

    Counted in events, not seconds (the machine is shared): the server holds the job's first
    call until a progress line has appeared (so it came before any answer), then holds every
    call after the second until a line shows answered calls and their tokens while prompts
    are still pending. Without the lines the holds run out and the test says so."""
    world = make_world(tmp_path)
    held = _HeldResponder(responder())
    with ScriptedJudgeServer(held) as server:
        args = [sys.executable, "-m", "charter.cli",
                *[a for a in generate_args(world, server) if a != "--json"]]  # fmt: skip
        env = {**_server_env(server), "CHARTER_PROGRESS_EVERY_S": "0.2"}
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=tmp_path, text=True)  # fmt: skip
        assert proc.stderr is not None
        lines: list[str] = []
        opened_first = opened_later = ""
        try:
            for line in proc.stderr:
                lines.append(line.rstrip())
                if not line.startswith("prompts: "):
                    continue
                if not held.first.is_set():
                    opened_first = line
                    held.first.set()
                elif not held.later.is_set() and re.search(
                    r"calls [1-9]\d* answered.*tokens [1-9][\d,]* answered", line
                ):
                    opened_later = line
                    held.later.set()
        finally:
            held.first.set()
            held.later.set()
            proc.wait()
    assert proc.returncode == 0, "\n".join(lines)
    assert not held.timed_out, f"no progress line released the {held.timed_out} hold: {lines}"
    assert "calls 0 answered" in opened_first and "prompts 0/" in opened_first, opened_first
    done, total = map(int, re.search(r"prompts (\d+)/(\d+)", opened_later).groups())  # type: ignore[union-attr]
    assert done < total, opened_later  # shown while the job was still running
    last = [line for line in lines if line.startswith("prompts: ")][-1]
    assert re.search(r"prompts (\d+)/\1,", last), last


def test_stock_sft_trains_on_the_sft_export(world: dict[str, Path], tmp_path: Path) -> None:
    """Stock TRL's SFTTrainer (current release, no charter code in the loop) trains on
    `charter export --kind sft` as it is: prompt -> completion rows, loss on the completion."""
    import math

    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from tests.support.tiny_models import build_tiny_chat_model

    with ScriptedJudgeServer(responder()) as server:
        job_id = run_generate(world, server)["job_id"]
    rows = export_rows(world, job_id, "--kind", "sft")
    assert rows and all(set(r) >= {"prompt", "completion"} for r in rows)
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = datasets.load_dataset("json", data_files=str(path))["train"]
    model_dir = build_tiny_chat_model(tmp_path / "tiny")
    config = SFTConfig(
        output_dir=str(tmp_path / "sft"), max_steps=3, per_device_train_batch_size=4,
        learning_rate=1e-3, bf16=False, use_cpu=True, report_to=[], logging_steps=1,
        save_strategy="no",
    )  # fmt: skip
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir), args=config,
        train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(model_dir),
    )  # fmt: skip
    result = trainer.train()
    assert result.global_step == 3
    assert math.isfinite(result.training_loss)
