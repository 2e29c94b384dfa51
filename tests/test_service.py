"""The HTTP service against a real uvicorn on loopback, the scripted judge behind it."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from charter.cli.main import cli
from charter.client import CharterAPIError, CharterClient
from charter.constitution import freeze, load_constitution
from charter.export import export_job
from charter.service.settings import ServiceSettings, SettingsError, owner_of
from charter.store import open_store
from tests.support.generation import PROMPTS, bad, good, responder, write_constitution
from tests.support.scripted_server import Fault, ScriptedJudgeServer
from tests.support.service import (
    TOKEN_A,
    TOKEN_B,
    RunningService,
    request_call,
    running_service,
    stored_calls,
)

PROMPT = PROMPTS[0]


def settings_for(tmp_path: Path, server: ScriptedJudgeServer, **overrides: Any) -> ServiceSettings:
    values: dict[str, Any] = {
        "store_path": tmp_path / "service.db",
        "principles_dir": tmp_path / "principles",
        "judge": "openai:scripted",
        "policy": "openai:scripted",
        "judge_base_url": server.base_url,
        "policy_base_url": server.base_url,
        "timeout_s": 5,
        "tokens": (TOKEN_A, TOKEN_B),
    }
    values.update(overrides)
    if not Path(values["principles_dir"]).exists():
        write_constitution(Path(values["principles_dir"]))
    return ServiceSettings.model_validate(values)


@pytest.fixture
def judge_server() -> Iterator[ScriptedJudgeServer]:
    with ScriptedJudgeServer(responder()) as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, judge_server: ScriptedJudgeServer) -> ServiceSettings:
    return settings_for(tmp_path, judge_server)


@pytest.fixture
def service(settings: ServiceSettings) -> Iterator[RunningService]:
    with running_service(settings) as running:
        yield running


@pytest.fixture
def client(service: RunningService) -> Iterator[CharterClient]:
    with CharterClient(service.base_url, TOKEN_A, timeout=30) as c:
        yield c


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


# ---------------------------------------------------------------- health, auth


def test_health_and_readiness_need_no_token(service: RunningService) -> None:
    assert httpx.get(f"{service.base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{service.base_url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"store": "ok", "constitution": "ok", "judge": "ok"},
    }
    assert httpx.get(f"{service.base_url}/openapi.json").json()["info"]["title"] == "charter"


def test_readiness_fails_when_the_judge_is_unreachable(tmp_path: Path) -> None:
    with ScriptedJudgeServer(responder()) as server:
        dead = settings_for(tmp_path, server, judge_base_url="http://127.0.0.1:9/v1")
    with running_service(dead) as running:
        ready = httpx.get(f"{running.base_url}/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["judge"] == "unreachable"
    assert "127.0.0.1:9" not in ready.text


V1_ENDPOINTS = [
    ("POST", "/v1/feedback/compare"),
    ("POST", "/v1/feedback/critique"),
    ("POST", "/v1/feedback/rank"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/job-000000000000"),
    ("GET", "/v1/jobs/job-000000000000/preferences"),
    ("POST", "/v1/jobs/job-000000000000/cancel"),
    ("POST", "/v1/jobs/job-000000000000/resume"),
    ("GET", "/v1/constitutions"),
    ("GET", "/v1/constitutions/current"),
    ("GET", "/v1/constitutions/diff?a=current"),
]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Basic {TOKEN_A}"},
        {"Authorization": f"Bearer {TOKEN_A}x"},
        {"Authorization": "Bearer"},
    ],
    ids=["none", "wrong", "basic", "suffix", "empty"],
)
def test_every_v1_endpoint_refuses_a_missing_or_bad_token(
    service: RunningService, judge_server: ScriptedJudgeServer, headers: dict[str, str]
) -> None:
    body = {"prompt": PROMPT, "a": good(PROMPT), "b": bad(PROMPT), "prompts": [PROMPT]}
    for method, path in V1_ENDPOINTS:
        response = httpx.request(method, service.base_url + path, headers=headers, json=body)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert error_of(response)["code"] == "unauthorized"
    assert judge_server.calls == 0


# ---------------------------------------------------------------- feedback


def test_compare_answers_with_the_cli_json(
    client: CharterClient, settings: ServiceSettings, judge_server: ScriptedJudgeServer
) -> None:
    raw = client.http.post(
        "/v1/feedback/compare", json={"prompt": PROMPT, "a": bad(PROMPT), "b": good(PROMPT)}
    )
    assert raw.status_code == 200
    served = raw.json()
    result = CliRunner().invoke(
        cli,
        ["judge", "compare", "--prompt", PROMPT, "--a", bad(PROMPT), "--b", good(PROMPT),
         "--dir", str(settings.principles_dir), "--judge", "openai:scripted",
         "--judge-base-url", judge_server.base_url, "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert set(served) == set(printed)
    for key in ("winner", "p_a", "position_consistent", "constitution_digest", "judge", "k"):
        assert served[key] == printed[key], key
    assert served["winner"] == "b" and served["position_consistent"] is True
    assert len(served["judgments"]) == 4  # K=2 principles x both orders
    typed = client.compare(PROMPT, good(PROMPT), bad(PROMPT), seed=3, principles=1)
    assert typed.winner == "a" and typed.k == 1 and typed.seed == 3
    # Every JudgeConfig field is a request field: the pointwise protocol, for one.
    pointwise = client.compare(PROMPT, good(PROMPT), bad(PROMPT), protocol="pointwise")
    assert pointwise.protocol == "pointwise" and pointwise.winner == "a"
    assert pointwise.judgments == [] and len(pointwise.scores) == 2


def test_critique_and_rank(client: CharterClient) -> None:
    chain = client.critique(PROMPT, good(PROMPT), revisions=2)
    assert [r.index for r in chain.rounds] == [0, 1]
    assert chain.final == f"Revised: {good(PROMPT)}"
    assert all(r.critique.text == "The response could be more careful." for r in chain.rounds)
    ranking = client.rank(PROMPT, [bad(PROMPT), good(PROMPT)])
    assert ranking.order == [1, 0]
    assert [(p.chosen, p.rejected) for p in ranking.pairs] == [(good(PROMPT), bad(PROMPT))]
    assert ranking.failed_comparisons == 0


def test_named_constitution_and_model(
    client: CharterClient, settings: ServiceSettings, judge_server: ScriptedJudgeServer
) -> None:
    result = client.compare(PROMPT, good(PROMPT), bad(PROMPT), judge="openai:other-model")
    assert result.judge == "openai:other-model"
    assert {b["model"] for b in judge_server.requests[-4:]} == {"other-model"}
    with pytest.raises(CharterAPIError) as missing:
        client.compare(PROMPT, good(PROMPT), bad(PROMPT), constitution="9.9")
    assert missing.value.status == 404 and "9.9" in missing.value.message


INVALID = [
    ("/v1/feedback/compare", {"prompt": PROMPT, "a": "x"}, "body.b: Field required"),
    ("/v1/feedback/compare", {"prompt": 3, "a": "x", "b": "y"}, "body.prompt: Input should be"),
    ("/v1/feedback/compare", {"prompt": "", "a": "x", "b": "y"}, "body.prompt: String should"),
    (
        "/v1/feedback/compare",
        {"prompt": "p", "a": "x", "b": "y", "base_url": "http://evil.example/v1"},
        "body.base_url: Extra inputs are not permitted",
    ),
    (
        "/v1/feedback/compare",
        {"prompt": "p", "a": "x", "b": "y", "judge": "http://evil.example"},
        "body.judge: unknown model spec",
    ),
    ("/v1/feedback/compare", {"prompt": "p", "a": "x", "b": "y", "seed": -1}, "body.seed"),
    (
        "/v1/feedback/compare",
        {"prompt": "p", "a": "x", "b": "y", "protocol": "listwise"},
        "body.protocol: Input should be 'auto', 'pairwise' or 'pointwise'",
    ),
    (
        "/v1/feedback/compare",
        {"prompt": "p", "a": "x", "b": "y", "tie_margin": 0.5},
        "body.tie_margin: Input should be less than 0.5",
    ),
    ("/v1/feedback/rank", {"prompt": "p", "responses": ["one"]}, "body.responses: List should"),
    ("/v1/feedback/critique", {"prompt": "p", "response": "r", "revisions": 0}, "revisions"),
    ("/v1/jobs", {"prompts": []}, "body.prompts: List should have at least 1 item"),
    ("/v1/jobs", {"prompts": ["  "]}, "body.prompts[0]"),
    (
        "/v1/jobs",
        {"prompts": [{"prompt": [{"role": "assistant", "content": "hi"}]}]},
        "the last message must be from the user",
    ),
    ("/v1/jobs", {"prompts": ["p"], "n": 1000}, "body.n: Input should be less than or equal"),
    ("/v1/jobs", {"prompts": ["p"], "mode": "train"}, "body.mode: Input should be 'compare'"),
    ("/v1/jobs", {"prompts": ["p"], "policy_base_url": "http://x"}, "Extra inputs"),
]


@pytest.mark.parametrize(("path", "body", "needle"), INVALID)
def test_invalid_bodies_are_422_with_a_clear_message(
    client: CharterClient,
    judge_server: ScriptedJudgeServer,
    path: str,
    body: dict[str, Any],
    needle: str,
) -> None:
    response = client.http.post(path, json=body)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert needle in error["message"] or any(needle in f["loc"] for f in error["fields"])
    assert "Traceback" not in response.text and 'evil.example/v1"' not in error["message"]
    assert judge_server.calls == 0


def test_other_bad_requests(client: CharterClient, judge_server: ScriptedJudgeServer) -> None:
    http = client.http
    malformed = http.post(
        "/v1/feedback/compare", content=b'{"prompt": ', headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 422 and "JSON" in error_of(malformed)["message"]
    local = http.post("/v1/feedback/compare", json={"prompt": "p", "a": "x", "b": "y",
                                                     "judge": "hf:/etc"})  # fmt: skip
    assert local.status_code == 422
    assert error_of(local)["code"] == "model_not_allowed" and "openai:*" in local.text
    text = http.post("/v1/jobs", content=b"prompt", headers={"content-type": "text/plain"})
    assert text.status_code == 415
    bad_id = http.get("/v1/jobs/not-a-job")
    assert bad_id.status_code == 422 and "job_id" in error_of(bad_id)["message"]
    assert http.get("/v1/nothing").status_code == 404
    cursor = http.get("/v1/jobs/job-000000000000/preferences", params={"cursor": "zz"})
    assert cursor.status_code == 404  # ownership is checked before anything else
    assert judge_server.calls == 0


def test_request_bodies_over_the_limit_are_refused(tmp_path: Path) -> None:
    with ScriptedJudgeServer(responder()) as server:
        small = settings_for(tmp_path, server, max_body_bytes=4096)
        with running_service(small) as running, CharterClient(running.base_url, TOKEN_A) as c:
            big = {"prompt": "p", "a": "x" * 5000, "b": "y"}
            declared = c.http.post("/v1/feedback/compare", json=big)
            assert declared.status_code == 413 and "limit 4096" in error_of(declared)["message"]

            def chunks() -> Iterator[bytes]:  # no Content-Length: a chunked body
                yield b'{"prompt": "p", "a": "'
                for _ in range(10):
                    yield b"x" * 1000
                yield b'", "b": "y"}'

            streamed = c.http.post(
                "/v1/feedback/compare",
                content=chunks(),
                headers={"content-type": "application/json"},
            )
            assert streamed.status_code == 413
            assert c.compare("p", good(PROMPT), bad(PROMPT)).judge == "openai:scripted"
        assert server.calls == 4  # only the last, small request reached the judge


def test_no_stack_trace_or_secret_in_responses_or_logs(
    client: CharterClient,
    settings: ServiceSettings,
    judge_server: ScriptedJudgeServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    judge_server.fault_policy = lambda record: Fault.http(401, message="bad key sk-live-123")
    failed = client.compare(PROMPT, good(PROMPT), bad(PROMPT))
    assert failed.winner is None and all(j.error for j in failed.judgments)
    raw = client.http.post("/v1/feedback/compare", json={"prompt": "p", "a": "x", "b": "y"})
    assert settings.judge_base_url and settings.judge_base_url not in raw.text
    assert "the configured endpoint" in raw.text

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("internal detail sk-secret-999")

    monkeypatch.setattr("charter.service.app.judge_compare", broken)
    crash = client.http.post("/v1/feedback/compare", json={"prompt": "p", "a": "x", "b": "y"})
    assert crash.status_code == 500
    assert error_of(crash) == {
        "code": "internal_error",
        "message": "internal error; see the service log",
        "fields": [],
    }
    assert "RuntimeError: internal" not in caplog.text and "sk-secret-999" not in caplog.text
    assert "Traceback" not in caplog.text
    assert all(record.exc_info is None for record in caplog.records)
    assert TOKEN_A not in caplog.text and TOKEN_B not in caplog.text


# ---------------------------------------------------------------- jobs


def test_job_from_submission_to_export(
    client: CharterClient, settings: ServiceSettings, judge_server: ScriptedJudgeServer
) -> None:
    created = client.create_job(PROMPTS, seed=0)
    assert created.created and created.job.prompts.total == len(PROMPTS)
    assert created.job.state in ("queued", "running")
    view = client.wait_for_job(created.job.id, timeout=60)
    assert view.state == "done" and view.error is None and view.errors == []
    assert view.prompts.model_dump() == {"total": 8, "done": 8, "failed": 0, "pending": 0}
    assert view.preferences == 8 and view.summary["exportable"] == 8

    first = client.preference_page(view.id, limit=3)
    assert len(first.rows) == 3 and first.next_cursor is not None
    raw = client.http.get(f"/v1/jobs/{view.id}/preferences", params={"limit": 3})
    assert raw.headers["content-type"] == "application/x-ndjson"
    assert 'rel="next"' in raw.headers["link"]
    rows = list(client.preferences(view.id, limit=3))
    assert rows[:3] == first.rows
    assert {(r["prompt"], r["chosen"], r["rejected"]) for r in rows} == {
        (p, good(p), bad(p)) for p in PROMPTS
    }
    exported = settings.store_path.parent / "export.jsonl"
    export_job(open_store(settings.store_path), view.id, exported)
    assert rows == [json.loads(line) for line in exported.read_text().splitlines()]
    chat = client.preference_page(view.id, limit=1, conversational=True).rows[0]
    assert chat["prompt"] == [{"role": "user", "content": PROMPTS[0]}]
    assert client.preference_page(view.id, min_confidence=0.95).rows == []
    assert (
        len(client.preference_page(view.id, min_confidence=0.95, include_filtered=True).rows) == 8
    )

    calls = judge_server.calls
    again = client.http.post("/v1/jobs", json={"prompts": PROMPTS})
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["job"]["id"] == view.id and again.json()["job"]["state"] == "done"
    assert [j.id for j in client.jobs()] == [view.id]
    assert judge_server.calls == calls  # a done job is not run again


def test_upload_job_and_bad_uploads(
    client: CharterClient, tmp_path: Path, judge_server: ScriptedJudgeServer
) -> None:
    given = tmp_path / "given.jsonl"
    given.write_text(
        "".join(json.dumps({"q": p, "responses": [bad(p), good(p)]}) + "\n" for p in PROMPTS[:3])
        + json.dumps({"q": PROMPTS[0], "responses": [bad(PROMPTS[0]), good(PROMPTS[0])]})
        + "\n"
    )
    created = client.upload_job(given, column="q")
    assert created.duplicates_dropped == 1 and created.job.prompts_source == "upload: given.jsonl"
    view = client.wait_for_job(created.job.id, timeout=60)
    assert view.state == "done" and view.prompts.done == 3
    rows = list(client.preferences(view.id))
    assert {r["chosen"] for r in rows} == {good(p) for p in PROMPTS[:3]}
    assert all(r["policy"] == "given" for r in rows)
    assert all("Principle:" in json.dumps(b) for b in judge_server.requests)  # no policy calls

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "ok"}\n{"prompt": \n')
    response = client.http.post("/v1/jobs", files={"file": ("broken.jsonl", broken.read_bytes())})
    assert response.status_code == 422
    assert error_of(response)["message"].startswith("broken.jsonl: line 2: not valid JSON")
    assert "charter-upload" not in response.text  # the temporary path never shows
    exe = client.http.post("/v1/jobs", files={"file": ("run.exe", b"MZ")})
    assert exe.status_code == 422 and "unsupported prompts file type" in exe.text
    options = client.http.post(
        "/v1/jobs", files={"file": ("p.txt", b"hello\n")}, data={"options": '{"n": 0}'}
    )
    assert options.status_code == 422 and error_of(options)["fields"][0]["loc"] == "options.n"
    nofile = client.http.post("/v1/jobs", data={"options": "{}"}, files={"other": ("x", b"")})
    assert nofile.status_code == 422 and "file" in error_of(nofile)["message"]


def test_a_job_is_visible_only_to_its_owner(
    service: RunningService, client: CharterClient, settings: ServiceSettings
) -> None:
    job = client.create_job(PROMPTS[:2]).job
    client.wait_for_job(job.id, timeout=60)
    with CharterClient(service.base_url, TOKEN_B) as other:
        for call in (
            lambda: other.job(job.id),
            lambda: other.preference_page(job.id),
            lambda: other.cancel_job(job.id),
            lambda: other.resume_job(job.id),
        ):
            with pytest.raises(CharterAPIError) as refused:
                call()
            assert refused.value.status == 404 and refused.value.code == "not_found"
        assert other.jobs() == []
    assert [j.id for j in client.jobs()] == [job.id]
    with sqlite3.connect(settings.store_path) as conn:
        owners = {r[0] for r in conn.execute("SELECT owner FROM service_job_owners")}
    assert owners == {owner_of(TOKEN_A)}
    for path in settings.store_path.parent.glob("service.db*"):
        data = path.read_bytes()
        assert TOKEN_A.encode() not in data and TOKEN_B.encode() not in data


def test_cancel_then_resume_finishes_without_repeating_calls(tmp_path: Path) -> None:
    with ScriptedJudgeServer(responder(), latency_s=0.05) as server:
        slow = settings_for(tmp_path, server, job_concurrency=1)
        with running_service(slow) as running, CharterClient(running.base_url, TOKEN_A) as c:
            job = c.create_job(PROMPTS).job
            deadline = time.monotonic() + 30
            while c.job(job.id).prompts.done < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            cancelled = c.cancel_job(job.id)
            assert cancelled.state == "cancelled"
            assert 2 <= cancelled.prompts.done < len(PROMPTS)
            calls_at_cancel = server.calls
            time.sleep(0.2)
            assert server.calls == calls_at_cancel  # nothing runs after a cancel
            assert c.cancel_job(job.id).state == "cancelled"  # idempotent
            finished = stored_calls(slow.store_path)
            assert finished
            resumed = c.resume_job(job.id)
            assert resumed.state in ("queued", "running")
            done = c.wait_for_job(job.id, timeout=60)
            assert done.state == "done" and done.preferences == len(PROMPTS)
            again = [request_call(r.body) for r in server.log[calls_at_cancel:]]
            assert again and not finished & set(again)
            with pytest.raises(CharterAPIError) as conflict:
                c.cancel_job(job.id)
            assert conflict.value.status == 409


def test_a_stopped_service_resumes_its_running_job_on_start(tmp_path: Path) -> None:
    with ScriptedJudgeServer(responder(), latency_s=0.05) as server:
        slow = settings_for(tmp_path, server, job_concurrency=1)
        with running_service(slow) as running, CharterClient(running.base_url, TOKEN_A) as c:
            job_id = c.create_job(PROMPTS).job.id
            deadline = time.monotonic() + 30
            while c.job(job_id).prompts.done < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
        with running_service(slow) as running, CharterClient(running.base_url, TOKEN_A) as c:
            view = c.job(job_id)
            assert view.state in ("queued", "running") and view.prompts.done >= 2
            done = c.wait_for_job(job_id, timeout=60)
    assert done.state == "done" and done.preferences == len(PROMPTS)


def test_a_failing_judge_fails_the_job_with_a_clean_error(tmp_path: Path) -> None:
    with ScriptedJudgeServer(responder()) as server:
        failing = settings_for(tmp_path, server)
        server.fault_policy = lambda record: Fault.http(400, message="nope")
        with running_service(failing) as running, CharterClient(running.base_url, TOKEN_A) as c:
            view = c.wait_for_job(c.create_job(PROMPTS).job.id, timeout=60)
            assert view.state == "failed"
            assert view.error and "stopped after the first" in view.error
            assert view.errors and server.base_url not in json.dumps(view.model_dump())
            server.fault_policy = None
            c.resume_job(view.id)
            assert c.wait_for_job(view.id, timeout=60).state == "done"


# ---------------------------------------------------------------- constitutions


def test_constitution_endpoints(tmp_path: Path, judge_server: ScriptedJudgeServer) -> None:
    settings = settings_for(tmp_path, judge_server)
    db = open_store(settings.store_path)
    v1 = freeze(db, load_constitution(settings.principles_dir), "first").frozen
    honest = settings.principles_dir / "honest.toml"
    honest.write_text(honest.read_text().replace("more honest", "more truthful"))
    toml = settings.principles_dir / "constitution.toml"
    toml.write_text(toml.read_text().replace('"1.0"', '"1.1"'))
    v2 = freeze(db, load_constitution(settings.principles_dir), "truthful").frozen
    db.close()
    with running_service(settings) as running, CharterClient(running.base_url, TOKEN_A) as c:
        listed = c.constitutions()
        assert [v.version for v in listed.frozen] == ["1.1", "1.0"]
        assert listed.frozen[1].message == "first" and listed.current.digest == v2.digest
        assert c.constitution(v1.digest[:8]).constitution.digest == v1.digest
        assert c.constitution("1.1").digest == v2.digest
        assert c.constitution("current").frozen_at is None
        diff = c.diff("1.0", "1.1")
        assert diff.a_digest == v1.digest and [p.id for p in diff.changed] == ["honest"]
        assert c.diff("1.1").changed == []  # b defaults to the live principles
        with pytest.raises(CharterAPIError) as missing:
            c.constitution("7.7")
        assert missing.value.status == 404
        judged = c.compare(PROMPT, good(PROMPT), bad(PROMPT), constitution="1.0")
        assert judged.constitution_digest == v1.digest


# ---------------------------------------------------------------- settings, CLI


def test_settings_need_strong_tokens(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no API tokens"):
        ServiceSettings.from_env({})
    with pytest.raises(SettingsError, match="shorter than 16"):
        ServiceSettings.from_env({"CHARTER_API_TOKENS": "short"})
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# team tokens\n{TOKEN_A}\n\n{TOKEN_B}\n")
    settings = ServiceSettings.from_env({"CHARTER_API_TOKENS_FILE": str(tokens)})
    assert settings.owners == {owner_of(TOKEN_A), owner_of(TOKEN_B)}
    assert TOKEN_A not in repr(settings)
    env = {"CHARTER_API_TOKENS": f"{TOKEN_A}, {TOKEN_B}", "CHARTER_JUDGE": "openai:j"}
    assert ServiceSettings.from_env(env).judge == "openai:j"
    assert ServiceSettings.from_env(env, judge="openai:flag").judge == "openai:flag"


def test_serve_refuses_to_start_without_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHARTER_API_TOKENS", raising=False)
    monkeypatch.delenv("CHARTER_API_TOKENS_FILE", raising=False)
    principles = write_constitution(tmp_path / "p")
    result = CliRunner().invoke(
        cli, ["serve", "--dir", str(principles), "--store", str(tmp_path / "s.db")]
    )
    assert result.exit_code == 1
    assert "no API tokens" in result.stderr and "Traceback" not in result.stderr
    default_host = next(p for p in cli.commands["serve"].params if p.name == "host").default
    assert default_host == "127.0.0.1"
