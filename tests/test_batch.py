"""`charter generate --batch` against a scripted Batch API on loopback (the real openai client).

Each test reads what the server was asked to do (uploads, batch creations, answered items:
what a provider charges for) and what the store holds, not what the CLI says it did.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from charter.batches.journal import ensure_table, record
from charter.batches.model import OpenAIBatchModel
from charter.batches.options import BatchOptions
from charter.call_cache import call_key, choose_payload, store_secret
from charter.judge import BackendOptions
from charter.judge.backends.base import Completion, Message
from charter.settings import LEASE_TTL_ENV
from charter.store import open_store
from tests.support.batch_server import ScriptedBatchServer
from tests.support.generation import PROMPTS, bad, good, make_world, responder
from tests.support.scripted_server import (
    ConstantResponder,
    ScriptedJudgeServer,
    last_user_message,
)
from tests.support.service import REPO
from tests.test_generate import export_rows, generate_args, invoke, run_generate
from tests.test_job_stops import wait_until

FAST = ("--batch", "--batch-window-s", "0.3", "--batch-poll-s", "0.05", "--batch-poll-max-s", "0.2")
CALLS_PER_RUN = len(PROMPTS) * 4  # 2 principles x both orders of the one pair


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """Prompts with their two candidates given, so every model call is the judge's."""
    world = make_world(tmp_path)
    world["prompts"].write_text(
        "".join(json.dumps({"prompt": p, "responses": [good(p), bad(p)]}) + "\n" for p in PROMPTS)
    )
    return world


def share_secret(*stores: Path) -> None:
    """Give stores one nonce secret, so the same question renders to the same prompt in each."""
    for store in stores:
        db = open_store(store)
        store_secret(db)
        with db.conn:
            db.execute("UPDATE secrets SET value = ? WHERE name = 'nonce-key'", ["ab" * 32])


def stored_keys(store: Path) -> set[str]:
    with sqlite3.connect(store) as conn:
        return {row[0] for row in conn.execute("SELECT key FROM calls")}


def journal(store: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(store) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM batches ORDER BY created_at")]


def about(prompt: str, line: dict[str, Any]) -> bool:
    return prompt in last_user_message(line["body"])


def triples(world: dict[str, Path], job_id: str) -> set[tuple[str, str, str]]:
    return {(r["prompt"], r["chosen"], r["rejected"]) for r in export_rows(world, job_id)}


EXPECTED = {(p, good(p), bad(p)) for p in PROMPTS}


def test_a_batch_run_makes_the_rows_a_direct_run_makes_and_pays_once(
    world: dict[str, Path], tmp_path: Path
) -> None:
    direct = make_world(tmp_path / "direct")
    direct["prompts"].write_text(world["prompts"].read_text())
    share_secret(world["store"], direct["store"])
    with ScriptedBatchServer(responder()) as server:
        summary = run_generate(world, server, *FAST)
        [lines] = server.batch_inputs()
        assert server.requests == []  # no direct chat completion
    assert (server.uploads, server.creations) == (1, 1)
    assert server.items_answered == len(lines) == CALLS_PER_RUN
    assert summary["batch"] == {
        "calls": CALLS_PER_RUN, "batches_created": 1, "batches_resumed": 0, "failed_items": 0
    }  # fmt: skip
    assert summary["prompts"]["done"] == len(PROMPTS)
    # Each line is the call the direct judge would send, under its store key.
    assert {line["custom_id"] for line in lines} == stored_keys(world["store"])
    for line in lines:
        assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
        assert line["body"]["logprobs"] is True and line["body"]["model"] == "scripted"
    [row] = journal(world["store"])
    assert row["status"] == "completed" and row["collected_at"]
    assert set(json.loads(row["keys"])) == stored_keys(world["store"])
    assert triples(world, summary["job_id"]) == EXPECTED

    with ScriptedJudgeServer(responder()) as plain:
        direct_summary = run_generate(direct, plain)
        assert {json.dumps(b, sort_keys=True) for b in plain.requests} == {
            json.dumps(line["body"], sort_keys=True) for line in lines
        }
    # Stored under the keys a direct run uses: either run reuses the other's answers.
    assert stored_keys(direct["store"]) == stored_keys(world["store"])
    assert export_rows(direct, direct_summary["job_id"]) == export_rows(world, summary["job_id"])


def test_a_killed_run_resumes_polling_its_batch_and_pays_nothing_twice(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ttl = 2.0
    monkeypatch.setenv(LEASE_TTL_ENV, str(ttl))
    with ScriptedBatchServer(responder(), hold=True) as server:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        args = [sys.executable, "-m", "charter.cli", *generate_args(world, server, *FAST)]
        proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=world["tmp"]
        )
        try:
            wait_until(lambda: world["store"].exists() and _has_batch(world["store"]))
            wait_until(lambda: sum(server.retrievals.values()) >= 1)  # it is polling
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        [killed] = journal(world["store"])
        assert killed["collected_at"] is None and killed["status"] == "in_progress"
        assert (server.uploads, server.creations, server.items_answered) == (1, 1, 0)
        polls_before = server.retrievals[killed["id"]]

        server.release()
        wait_until(lambda: _lease_free(world["store"]), timeout=ttl + 10)
        summary = run_generate(world, server, *FAST)
        assert server.retrievals[killed["id"]] > polls_before  # the re-run polled it
        assert (server.uploads, server.creations) == (1, 1)  # and paid for nothing new
        assert server.items_answered == CALLS_PER_RUN
        assert server.requests == []
    assert summary["batch"]["batches_resumed"] == 1 and summary["batch"]["batches_created"] == 0
    assert summary["batch"]["calls"] == CALLS_PER_RUN
    assert summary["prompts"]["done"] == len(PROMPTS)
    [row] = journal(world["store"])
    assert row["id"] == killed["id"] and row["collected_at"]
    assert triples(world, summary["job_id"]) == EXPECTED


def _has_batch(store: Path) -> bool:
    try:
        return bool(journal(store))
    except sqlite3.OperationalError:  # the table is not made yet
        return False


def _lease_free(store: Path) -> bool:
    code, out, _ = invoke(["jobs", "list", "--store", str(store), "--json"])
    return code == 0 and json.loads(out)[0]["runner"] is None


@pytest.mark.parametrize("listed", [True, False], ids=["listed", "unlisted"])
def test_expired_items_are_asked_again_in_a_new_batch(world: dict[str, Path], listed: bool) -> None:
    with ScriptedBatchServer(
        responder(), expire_batches=1, expire_keep=10, list_expired=listed
    ) as server:
        summary = run_generate(world, server, *FAST)
        first, second = server.batch_inputs()
    expired = {line["custom_id"] for line in first[10:]}
    assert {line["custom_id"] for line in second} == expired
    assert server.items_answered == CALLS_PER_RUN
    assert summary["batch"]["failed_items"] == len(expired)
    assert summary["prompts"]["done"] == len(PROMPTS)
    assert triples(world, summary["job_id"]) == EXPECTED
    assert [row["status"] for row in journal(world["store"])] == ["expired", "completed"]


def test_an_item_failing_with_a_server_error_is_asked_again(world: dict[str, Path]) -> None:
    failed: set[str] = set()

    def fail_once(body: dict[str, Any]) -> tuple[int, str] | None:
        message = last_user_message(body)
        if PROMPTS[0] in message and message not in failed:
            failed.add(message)
            return 500, "scripted overload"
        return None

    with ScriptedBatchServer(responder(), fail_item=fail_once) as server:
        summary = run_generate(world, server, *FAST)
        first, second = server.batch_inputs()
    assert {line["custom_id"] for line in second} == {
        line["custom_id"] for line in first if about(PROMPTS[0], line)
    }
    assert len(second) == 4 and summary["prompts"]["done"] == len(PROMPTS)
    assert triples(world, summary["job_id"]) == EXPECTED


def test_an_item_the_server_refuses_fails_its_prompt_in_one_line_and_is_asked_next_run(
    world: dict[str, Path],
) -> None:
    def refuse(body: dict[str, Any]) -> tuple[int, str] | None:
        return (400, "scripted refusal") if PROMPTS[0] in last_user_message(body) else None

    with ScriptedBatchServer(responder(), fail_item=refuse) as server:
        code, out, err = invoke(generate_args(world, server, *FAST, "--max-attempts", "2"))
        assert code == 1 and "Traceback" not in err
        [message] = [line for line in err.splitlines() if line.startswith("Error:")]
        assert "HTTP 400: scripted refusal" in message and "batch_" in message
        summary = json.loads(out)
        assert summary["prompts"]["failed"] == 1 and summary["prompts"]["done"] == len(PROMPTS) - 1
        refused = {
            line["custom_id"] for batch in server.batch_inputs() for line in batch
            if about(PROMPTS[0], line)
        }  # fmt: skip
        assert refused and not refused & stored_keys(world["store"])  # nothing kept for them
        creations = server.creations
        server.fail_item = None
        summary = run_generate(world, server, *FAST)
        assert server.creations == creations + 1
        [last] = server.batch_inputs()[-1:]
        assert {line["custom_id"] for line in last} <= refused
    assert summary["prompts"]["done"] == len(PROMPTS)
    assert triples(world, summary["job_id"]) == EXPECTED


def _break_two_lines(number: int, lines: list[str]) -> list[str]:
    if number:
        return lines
    unknown = json.loads(lines[1]) | {"custom_id": "not-a-call-of-this-batch"}
    return ["{not json", json.dumps(unknown), *lines[2:]]


def test_malformed_output_lines_are_reported_and_their_calls_asked_again(
    world: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="charter.batches")
    with ScriptedBatchServer(responder(), corrupt_output=_break_two_lines) as server:
        summary = run_generate(world, server, *FAST)
        first, second = server.batch_inputs()
    assert [line["custom_id"] for line in second] == [line["custom_id"] for line in first[:2]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("output file:1: not JSON" in w for w in warnings), warnings
    assert any("output file:2: unknown custom_id 'not-a-call-of-this" in w for w in warnings)
    assert summary["prompts"]["done"] == len(PROMPTS)
    assert stored_keys(world["store"]) == {line["custom_id"] for line in first}
    assert triples(world, summary["job_id"]) == EXPECTED


def test_output_that_stays_malformed_fails_its_call_with_a_clear_error(
    world: dict[str, Path],
) -> None:
    def always_bad_first_line(number: int, lines: list[str]) -> list[str]:
        return ["{not json", *lines[1:]]

    with ScriptedBatchServer(responder(), corrupt_output=always_bad_first_line) as server:
        code, out, err = invoke(generate_args(world, server, *FAST, "--max-attempts", "2"))
        inputs = server.batch_inputs()
    assert code == 1 and "Traceback" not in err
    [message] = [line for line in err.splitlines() if line.startswith("Error:")]
    assert "no result for this call in the batch's output" in message
    assert "output file:1: not JSON" in message
    never_answered = inputs[-1][0]["custom_id"]
    assert never_answered not in stored_keys(world["store"])
    assert json.loads(out)["prompts"]["done"] == len(PROMPTS) - 1


def test_batch_needs_an_openai_judge(world: dict[str, Path]) -> None:
    code, _, err = invoke(
        [
            "generate", "--prompts", str(world["prompts"]), "--dir", str(world["principles"]),
            "--store", str(world["store"]), "--judge", "smollm2", "--batch",
        ]
    )  # fmt: skip
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "Error: --batch: the Batch API needs an openai:MODEL judge; this job's judge is 'smollm2'"
    ]


def test_batch_takes_one_judge_endpoint(world: dict[str, Path]) -> None:
    code, _, err = invoke(
        [
            "generate", "--prompts", str(world["prompts"]), "--dir", str(world["principles"]),
            "--store", str(world["store"]), "--judge", "openai:judge", "--batch",
            "--judge-base-url", "http://127.0.0.1:9/v1,http://127.0.0.1:10/v1",
        ]
    )  # fmt: skip
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "Error: --batch: a batch goes to one endpoint; give one --judge-base-url"
    ]


def test_another_programs_batches_table_is_refused(world: dict[str, Path]) -> None:
    with sqlite3.connect(world["store"]) as conn:
        conn.execute("CREATE TABLE batches (name TEXT)")
    with ScriptedBatchServer(responder()) as server:
        code, _, err = invoke(generate_args(world, server, *FAST))
        assert server.uploads == 0
    assert code == 1 and "Traceback" not in err
    assert "has a `batches` table that is not charter's" in err


def test_a_recorded_batch_the_server_no_longer_knows_is_asked_again(tmp_path: Path) -> None:
    db = open_store(tmp_path / "store.db")
    messages = [Message(role="user", content="Is this recorded batch still there?")]
    with ScriptedBatchServer(ConstantResponder("B")) as server:
        settings = BatchOptions(batch=True, batch_window_s=0.05, batch_poll_s=0.05)

        async def ask() -> tuple[Completion, OpenAIBatchModel]:
            model = OpenAIBatchModel(
                "scripted", db, settings, BackendOptions(base_url=server.base_url)
            )
            try:
                return await model.choose(messages, ["A", "B"]), model
            finally:
                await model.aclose()

        key = call_key("openai:scripted", "choose", choose_payload(messages, ["A", "B"]))
        ensure_table(db)
        record(
            db,
            "batch_gone",
            model="openai:scripted",
            base_url=server.base_url,
            keys=[key],
            input_file_id="file-gone",
            status="in_progress",
        )
        completion, model = asyncio.run(ask())
        [lines] = server.batch_inputs()
    assert completion.text == "B" and completion.option_logprobs
    assert [line["custom_id"] for line in lines] == [key]
    assert model.stats.as_dict() == {
        "calls": 1, "batches_created": 1, "batches_resumed": 1, "failed_items": 0
    }  # fmt: skip
    assert all(row["collected_at"] for row in journal(tmp_path / "store.db"))


def test_only_the_judges_calls_go_by_batch(tmp_path: Path) -> None:
    world = make_world(tmp_path)  # no candidates given: the policy samples them
    with ScriptedBatchServer(responder()) as server:
        summary = run_generate(world, server, *FAST)
        lines = [line for batch in server.batch_inputs() for line in batch]
        direct = server.requests
    assert direct and all(body["max_tokens"] > 4 for body in direct)  # samples, not verdicts
    assert len(direct) == 2 * len(PROMPTS)
    assert lines and all(line["body"]["max_tokens"] == 1 for line in lines)
    assert summary["batch"]["calls"] == len(lines) == CALLS_PER_RUN
    assert triples(world, summary["job_id"]) == EXPECTED


def test_progress_and_summary_tell_what_went_by_batch(world: dict[str, Path]) -> None:
    with ScriptedBatchServer(responder()) as server:
        args = [a for a in generate_args(world, server, *FAST) if a != "--json"]
        code, out, err = invoke(args)
    assert code == 0, err
    assert "batch_2: completed, 32 of 32 done" in err
    assert f"batch        {CALLS_PER_RUN} judge calls answered by batch; 1 batches created" in out


def test_a_run_stopped_by_a_signal_leaves_its_batch_to_the_resume(
    world: dict[str, Path],
) -> None:
    with ScriptedBatchServer(responder(), hold=True) as server:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        args = [sys.executable, "-m", "charter.cli", *generate_args(world, server, *FAST)]
        proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=world["tmp"]
        )
        try:
            wait_until(lambda: sum(server.retrievals.values()) >= 1)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 128 + signal.SIGINT, err
        assert b"Traceback" not in err
        stopped = json.loads(out)
        assert stopped["prompts"]["pending"] == len(PROMPTS)
        assert stopped["batch"]["batches_created"] == 1
        [row] = journal(world["store"])
        assert row["collected_at"] is None  # not answered yet: the resume needs it

        server.release()
        summary = run_generate(world, server, *FAST, "--resume", stopped["job_id"])
        assert (server.uploads, server.creations) == (1, 1)
        assert server.items_answered == CALLS_PER_RUN
    assert summary["batch"]["batches_resumed"] == 1
    assert triples(world, summary["job_id"]) == EXPECTED


def test_a_run_killed_while_its_batch_is_created_finds_that_batch_and_pays_nothing_twice(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ttl = 2.0
    monkeypatch.setenv(LEASE_TTL_ENV, str(ttl))
    with ScriptedBatchServer(responder(), create_delay_s=30) as server:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        args = [sys.executable, "-m", "charter.cli", *generate_args(world, server, *FAST)]
        proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=world["tmp"]
        )
        try:
            wait_until(lambda: server.creations == 1)  # created; its answer not yet sent
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        [creating] = journal(world["store"])
        assert creating["id"].startswith("creating:") and creating["status"] == "creating"

        server.create_delay_s = 0
        wait_until(lambda: _lease_free(world["store"]), timeout=ttl + 10)
        summary = run_generate(world, server, *FAST)
        assert (server.uploads, server.creations) == (1, 1)
        assert server.items_answered == CALLS_PER_RUN
        [batch_id] = server.batches
    assert summary["batch"]["batches_resumed"] == 1 and summary["batch"]["batches_created"] == 0
    [row] = journal(world["store"])
    assert row["id"] == batch_id and row["collected_at"]
    assert triples(world, summary["job_id"]) == EXPECTED


def test_a_batch_whose_creation_never_happened_is_forgotten(world: dict[str, Path]) -> None:
    """A `creating:` row with no batch of its token at the provider: its calls are asked anew."""
    with ScriptedBatchServer(responder()) as server:
        run_generate(world, server, *FAST)  # makes the store (and the batches table)
        keys = json.loads(journal(world["store"])[0]["keys"])
        with sqlite3.connect(world["store"]) as conn:
            conn.execute("DELETE FROM calls")
            conn.execute("DELETE FROM batches")
            conn.execute(
                "INSERT INTO batches VALUES ('creating:nowhere', 'openai:scripted', ?, ?, "
                "'file-x', 'creating', datetime('now'), datetime('now'), NULL)",
                [server.base_url, json.dumps(keys)],
            )
            conn.execute("UPDATE job_prompts SET status = 'pending'")
            conn.execute("DELETE FROM preferences")
        summary = run_generate(world, server, *FAST)
        assert server.creations == 2
    assert summary["batch"]["batches_resumed"] == 0 and summary["batch"]["batches_created"] == 1
    assert [row["id"] for row in journal(world["store"])] == [max(server.batches)]
    assert triples(world, summary["job_id"]) == EXPECTED


def test_files_and_batches_requests_are_retried_as_direct_calls_are(
    world: dict[str, Path],
) -> None:
    """Uploads, status checks and downloads that fail with 5xx are sent again; a creation is
    sent again only when the server surely did not act on it (429), never after a 500."""
    faults = {"upload": [503, 502], "create": [429], "retrieve": [500], "download": [503]}
    with ScriptedBatchServer(responder(), route_faults=faults) as server:
        summary = run_generate(world, server, *FAST)
    assert all(codes == [] for codes in server.route_faults.values())  # each fault was met
    assert server.route_calls["upload"] == 3 and server.route_calls["create"] == 2
    assert (server.uploads, server.creations) == (1, 1)
    assert summary["batch"]["batches_created"] == 1 and summary["batch"]["failed_items"] == 0
    assert triples(world, summary["job_id"]) == EXPECTED

    retry_world = make_world(world["store"].parent / "again")
    retry_world["prompts"].write_text(world["prompts"].read_text())
    with ScriptedBatchServer(responder(), route_faults={"create": [500]}) as server:
        code, _, err = invoke(generate_args(retry_world, server, *FAST))
        assert server.route_calls["create"] == 1  # a 500 may have made the batch: not re-sent
    assert code == 1 and "Traceback" not in err
    assert "cannot create a batch: HTTP 500" in err


def test_a_server_without_the_batch_api_is_a_one_line_error(world: dict[str, Path]) -> None:
    with ScriptedJudgeServer(responder()) as server:  # chat completions only
        code, _, err = invoke(generate_args(world, server, *FAST))
        assert server.requests == []  # the judge's calls were not sent directly instead
    assert code == 1 and "Traceback" not in err
    [message] = [line for line in err.splitlines() if line.startswith("Error:")]
    assert "cannot upload a batch input file: HTTP 404" in message
    assert journal(world["store"]) == []  # no batch was made, so none is waited for


def test_a_batched_calls_latency_is_at_most_a_direct_calls_timeout(tmp_path: Path) -> None:
    """A call waits for its batch far longer than any request; a service tenant later served
    it from the store would be kept waiting that long (stored calls replay their latency)."""
    db = open_store(tmp_path / "store.db")
    messages = [Message(role="user", content="How long did this take?")]
    settings = BatchOptions(batch=True, batch_window_s=1.0, batch_poll_s=0.05)
    with ScriptedBatchServer(ConstantResponder("A")) as server:

        async def ask() -> Completion:
            options = BackendOptions(base_url=server.base_url, timeout_s=0.5)
            async with OpenAIBatchModel("scripted", db, settings, options) as model:
                return await model.choose(messages, ["A", "B"])

        started = time.monotonic()
        completion = asyncio.run(ask())
    assert time.monotonic() - started >= 1.0
    assert completion.text == "A" and completion.latency_s == 0.5


def test_a_full_window_is_submitted_at_once(world: dict[str, Path]) -> None:
    """A window that reaches --batch-max-calls is sent then, not when its time is up: with a
    60 s window and every batch full, each is created long before any window could end (a
    loaded machine cannot stretch a run's start to half a minute; a full batch kept waiting
    would be created a whole window after its first call)."""
    window_s = 60.0
    assert CALLS_PER_RUN % 8 == 0  # every batch full: none has to wait out its window
    with ScriptedBatchServer(responder()) as server:
        started = time.time()  # the server's clock for created_at
        summary = run_generate(
            world, server, *FAST, "--batch-window-s", str(window_s), "--batch-max-calls", "8"
        )
        sizes = [len(lines) for lines in server.batch_inputs()]
        batches = sorted(server.batches.values(), key=lambda b: b.number)
    assert sizes == [8] * (CALLS_PER_RUN // 8)
    assert all(b.created_at - started < window_s / 2 for b in batches)  # not kept waiting
    assert summary["prompts"]["done"] == len(PROMPTS)


def test_a_call_in_two_uncollected_batches_is_answered_from_the_newest(tmp_path: Path) -> None:
    """A call asked again after its batch expired, then the run killed before it collected
    either batch: the resume takes the answer the second batch holds and pays for nothing."""
    store = tmp_path / "store.db"
    db = open_store(store)
    messages = [Message(role="user", content="Which batch answers me?")]
    settings = BatchOptions(batch=True, batch_window_s=0.05, batch_poll_s=0.05)
    with ScriptedBatchServer(ConstantResponder("A"), expire_batches=1) as server:

        async def ask() -> tuple[Completion, OpenAIBatchModel]:
            options = BackendOptions(base_url=server.base_url)
            async with OpenAIBatchModel("scripted", db, settings, options) as model:
                return await model.choose(messages, ["A", "B"]), model

        first, _ = asyncio.run(ask())
        assert server.creations == 2  # expired, then asked again
        with db.conn:  # as if killed before collecting them
            db.execute("UPDATE batches SET collected_at = NULL")
        again, model = asyncio.run(ask())
        assert server.creations == 2 and server.items_answered == 1
    assert again.text == first.text == "A"
    assert model.stats.batches_resumed == 1 and model.stats.calls == 1
