"""The HTTP service against a real uvicorn on loopback, the scripted judge behind it."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner

from charter.call_cache import CachedModel, CallStats, ReuseSettings
from charter.cli.main import cli
from charter.client import CharterAPIError, CharterClient
from charter.constitution import freeze, load_constitution
from charter.export import export_job
from charter.jobs.spec import JobOptions, JobSpec
from charter.jobs.store import create_or_get_job, set_status
from charter.judge.backends.base import GenerationRequest, Message
from charter.prompt_files import PromptRecord
from charter.service import records
from charter.service.app import create_app
from charter.service.limits import FailureLimit
from charter.service.settings import ServiceSettings, SettingsError, owner_of
from charter.store import open_store
from tests.support.generation import PROMPTS, bad, good, responder, write_constitution
from tests.support.judge_helpers import scripted_model
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


PATH_SAMPLES = {"job_id": "job-000000000000", "ref": "current"}
"""A valid value for each path parameter of a /v1 route (a new parameter needs one here)."""


def v1_endpoints(settings: ServiceSettings) -> list[tuple[str, str]]:
    """Every (method, path) the app serves under /v1, read from its route table (its OpenAPI
    paths), so a route added later is covered without anyone remembering to list it."""
    endpoints = []
    for template, operations in create_app(settings).openapi()["paths"].items():
        if template.startswith("/v1/"):
            path = re.sub(r"\{(\w+)\}", lambda m: PATH_SAMPLES[m.group(1)], template)
            endpoints += [(method.upper(), path) for method in sorted(operations)]
    return endpoints


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
    service: RunningService,
    settings: ServiceSettings,
    judge_server: ScriptedJudgeServer,
    headers: dict[str, str],
) -> None:
    body = {"prompt": PROMPT, "a": good(PROMPT), "b": bad(PROMPT), "prompts": [PROMPT]}
    endpoints = v1_endpoints(settings)
    assert {("POST", "/v1/jobs"), ("GET", "/v1/constitutions/diff")} <= set(endpoints)
    assert len(endpoints) >= 12
    for method, path in endpoints:
        response = httpx.request(method, service.base_url + path, headers=headers, json=body)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert error_of(response)["code"] == "unauthorized"
    assert judge_server.calls == 0


MALFORMED_BODIES = [
    (b'{"prompt": ', "application/json"),  # cut short
    (b"\xff\xfe not json", "application/json"),
    (b'{"query": "x", "items": 3}', "application/json"),  # JSON, but no route's shape
    (b"--x\r\nContent-Disposition: form-data; name=file\r\n\r\n", "multipart/form-data"),
]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0123456789"}])
def test_credentials_are_checked_before_the_body_on_every_route(
    tmp_path: Path, judge_server: ScriptedJudgeServer, headers: dict[str, str]
) -> None:
    """A caller without a valid token learns nothing about the body it sent: 401, never a 422
    that parsed it (every /v1 route, read from the route table)."""
    settings = settings_for(tmp_path, judge_server, auth_failures_per_minute=10_000)
    endpoints = v1_endpoints(settings)
    assert ("POST", "/v1/rewards/openrlhf") in endpoints
    with running_service(settings) as running:
        for method, path in endpoints:
            for body, kind in MALFORMED_BODIES:
                if kind == "multipart/form-data":
                    kind += "; boundary=x"
                response = httpx.request(
                    method,
                    running.base_url + path,
                    content=body,
                    headers={**headers, "content-type": kind},
                )
                assert response.status_code == 401, (method, path, body, response.text)
                assert error_of(response)["code"] == "unauthorized"
    assert judge_server.calls == 0


def test_failed_tokens_are_limited_per_address_with_a_429_and_retry_after(
    tmp_path: Path, judge_server: ScriptedJudgeServer
) -> None:
    """Guessing tokens (API or sign-in) is slowed to the limit: past it every request from the
    address that needs a token gets 429 and Retry-After, before its token or body is looked
    at (a right token too, or the limit would say when a guess was right). Another address is
    not limited, and requests with a valid token never count."""
    limit = 4  # one attempt back every 15 s: none comes back while the test runs
    settings = settings_for(tmp_path, judge_server, auth_failures_per_minute=limit)
    wrong = {"Authorization": "Bearer wrong-token-0123456789"}
    right = {"Authorization": f"Bearer {TOKEN_A}"}
    compare = {"prompt": PROMPT, "a": good(PROMPT), "b": bad(PROMPT)}
    with running_service(settings) as running:
        url = running.base_url
        for _ in range(3 * limit):  # valid tokens are never counted
            assert httpx.get(f"{url}/v1/jobs", headers=right).status_code == 200
        for i in range(limit - 1):
            assert httpx.get(f"{url}/v1/jobs", headers=wrong).status_code == 401, i
        refused = httpx.post(f"{url}/pages/sign-in", data={"token": "not-a-token-0123456789"})
        assert refused.status_code == 401  # a failed sign-in counts the same: the limit's last
        for method, path, headers, body in [
            ("GET", "/v1/jobs", wrong, None),
            ("GET", "/v1/jobs", right, None),
            ("POST", "/v1/feedback/compare", right, compare),
            ("POST", "/v1/rewards/openrlhf", {}, {"query": 3}),  # no body is read
        ]:
            limited = httpx.request(method, url + path, headers=headers, json=body)
            assert limited.status_code == 429, (path, limited.text)
            error = error_of(limited)
            assert error["code"] == "rate_limited"
            wait = int(limited.headers["retry-after"])
            assert 1 <= wait <= 60 / limit + 1
            assert error["message"] == (
                f"too many failed tokens from this address; try again in {wait} s"
            )
        page = httpx.post(f"{url}/pages/sign-in", data={"token": TOKEN_A})
        assert page.status_code == 429 and 1 <= int(page.headers["retry-after"]) <= 60 / limit + 1
        assert "Too many failed sign-ins from this address" in page.text
        assert judge_server.calls == 0
        # Health needs no token and is never limited; another address is not limited.
        assert httpx.get(f"{url}/healthz").status_code == 200
        other = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=other) as elsewhere:
            assert elsewhere.get(f"{url}/v1/jobs", headers=right).status_code == 200
            assert elsewhere.get(f"{url}/v1/jobs", headers=wrong).status_code == 401


def test_the_failure_limit_refills_and_stays_bounded() -> None:
    now = [0.0]
    limit = FailureLimit(60, clock=lambda: now[0], max_addresses=100)
    for _ in range(60):
        assert limit.retry_after("a") is None
        limit.failed("a")
    assert limit.retry_after("a") == 1  # one attempt a second comes back
    now[0] += 1.0
    assert limit.retry_after("a") is None
    limit.failed("a")
    assert limit.retry_after("a") == 1
    for i in range(1000):  # a stream of addresses cannot grow the table without bound
        limit.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(limit._buckets) <= 100


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


def test_named_constitution_and_model(tmp_path: Path, judge_server: ScriptedJudgeServer) -> None:
    settings = settings_for(tmp_path, judge_server, allowed_models=("openai:other-*",))
    with running_service(settings) as running, CharterClient(running.base_url, TOKEN_A) as client:
        result = client.compare(PROMPT, good(PROMPT), bad(PROMPT), judge="openai:other-model")
        assert result.judge == "openai:other-model"
        assert {b["model"] for b in judge_server.requests[-4:]} == {"other-model"}
        with pytest.raises(CharterAPIError) as refused:  # not an allowed pattern
            client.compare(PROMPT, good(PROMPT), bad(PROMPT), judge="openai:another")
        assert refused.value.status == 422 and "openai:other-*" in refused.value.message
        with pytest.raises(CharterAPIError) as missing:
            client.compare(PROMPT, good(PROMPT), bad(PROMPT), constitution="9.9")
        assert missing.value.status == 404 and "9.9" in missing.value.message


def closed_port_url() -> str:
    """An endpoint on a loopback port nothing listens on: connections to it are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


FEEDBACK_CALLS = {
    "compare": ("/v1/feedback/compare", {"prompt": PROMPT, "a": good(PROMPT), "b": bad(PROMPT)}),
    "critique": ("/v1/feedback/critique", {"prompt": PROMPT, "response": good(PROMPT)}),
    "rank": ("/v1/feedback/rank", {"prompt": PROMPT, "responses": [bad(PROMPT), good(PROMPT)]}),
}
JUDGE_FAULTS = {  # what the judge does, and the answer the service then gives
    "down": (None, 503, "judge_unreachable"),
    "http_500": (Fault.http(500, message="upstream exploded"), 502, "judge_failed"),
    "slow": (Fault.delay(60.0), 504, "judge_timeout"),
}


@pytest.mark.parametrize("fault", list(JUDGE_FAULTS))
def test_feedback_without_a_usable_answer_is_a_5xx_saying_why(tmp_path: Path, fault: str) -> None:
    injected, status, code = JUDGE_FAULTS[fault]
    with ScriptedJudgeServer(responder()) as server:
        endpoint = closed_port_url() if fault == "down" else server.base_url
        settings = settings_for(
            tmp_path, server, judge_base_url=endpoint, timeout_s=0.5, max_retries=0
        )
        server.fault_policy = lambda record: injected
        with running_service(settings) as running, CharterClient(running.base_url, TOKEN_A) as c:
            for name, (path, body) in FEEDBACK_CALLS.items():
                started = time.monotonic()
                response = c.http.post(path, json=body)
                assert response.status_code == status, (name, response.text)
                error = error_of(response)
                assert error["code"] == code, name
                assert error["message"].startswith("no result: the judge"), error
                assert "\n" not in error["message"] and "Traceback" not in response.text
                assert endpoint not in response.text and "the configured endpoint" in response.text
                # Bounded by timeout_s (0.5 s), not by the judge's 60 s (loose: a loaded machine).
                assert time.monotonic() - started < 30, name
        if fault == "down":
            assert server.calls == 0
        else:
            assert server.calls > 0 and all(r.fault == injected for r in server.log)


def test_unusable_verdicts_are_a_502(tmp_path: Path) -> None:
    with ScriptedJudgeServer(responder(), fault_policy=lambda r: Fault.garbage()) as server:
        settings = settings_for(tmp_path, server, max_retries=0)
        with running_service(settings) as running, CharterClient(running.base_url, TOKEN_A) as c:
            for name in ("compare", "rank"):
                path, body = FEEDBACK_CALLS[name]
                response = c.http.post(path, json=body)
                assert response.status_code == 502, response.text
                error = error_of(response)
                assert error["code"] == "judge_failed"
                assert error["message"].startswith("no result: the judge's replies could not")


def test_a_partly_failed_comparison_is_still_an_answer(
    client: CharterClient, judge_server: ScriptedJudgeServer
) -> None:
    judge_server.enqueue(Fault.http(403, message="one refused question"))
    result = client.compare(PROMPT, good(PROMPT), bad(PROMPT))
    assert result.winner == "a" and result.failed == 1 and len(result.judgments) == 4


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
    # The Batch API is the CLI's (`generate --batch`): the service refuses to be asked for it.
    ("/v1/jobs", {"prompts": ["p"], "batch": True}, "body.batch: Extra inputs are not permitted"),
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
    assert error_of(local)["code"] == "model_not_allowed"
    assert error_of(local)["message"] == (
        "model 'hf:/etc' is not served here; allowed: openai:scripted"
    )
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
    tmp_path: Path,
    judge_server: ScriptedJudgeServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "sk-live-123"
    monkeypatch.setenv("OPENAI_API_KEY", key)  # the service's real key, which a server echoes
    caplog.set_level(logging.DEBUG)
    settings = settings_for(tmp_path, judge_server)
    judge_server.fault_policy = lambda record: Fault.http(401, message=f"bad key {key}")
    with running_service(settings) as running, CharterClient(running.base_url, TOKEN_A) as client:
        raw = client.http.post("/v1/feedback/compare", json={"prompt": "p", "a": "x", "b": "y"})
        assert judge_server.log[-1].headers["authorization"] == f"Bearer {key}"  # the key is live
        assert raw.status_code == 502 and error_of(raw)["code"] == "judge_failed"
        assert "HTTP 401: bad key [redacted]" in error_of(raw)["message"]
        assert key not in raw.text
        assert settings.judge_base_url and settings.judge_base_url not in raw.text
        assert "the configured endpoint" in raw.text

        async def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("internal detail sk-secret-999")

        monkeypatch.setattr("charter.service.routes.feedback.judge_compare", broken)
        crash = client.http.post("/v1/feedback/compare", json={"prompt": "p", "a": "x", "b": "y"})
    assert crash.status_code == 500
    assert error_of(crash) == {
        "code": "internal_error",
        "message": "internal error; see the service log",
        "fields": [],
    }
    assert "bad key [redacted]" in caplog.text  # the judge's failure was logged, scrubbed
    assert key not in caplog.text
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
    assert error_of(response)["message"].startswith("broken.jsonl:2:12: not valid JSON")
    assert "charter-upload" not in response.text  # the temporary path never shows
    exe = client.http.post("/v1/jobs", files={"file": ("run.exe", b"MZ")})
    assert exe.status_code == 422 and "unsupported prompts file type" in exe.text
    options = client.http.post(
        "/v1/jobs", files={"file": ("p.txt", b"hello\n")}, data={"options": '{"n": 0}'}
    )
    assert options.status_code == 422 and error_of(options)["fields"][0]["loc"] == "options.n"
    nofile = client.http.post("/v1/jobs", data={"options": "{}"}, files={"other": ("x", b"")})
    assert nofile.status_code == 422 and "file" in error_of(nofile)["message"]


def test_a_corrupt_parquet_upload_names_the_clients_file(client: CharterClient) -> None:
    name = "my prompts.parquet"
    response = client.http.post("/v1/jobs", files={"file": (name, b"PAR1 not really parquet")})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_prompts"
    assert error["message"].startswith(f"{name}: cannot read as Parquet"), error
    assert f"'{name}'" in error["message"]  # where the reader named the file, it is the client's
    assert tempfile.gettempdir() not in response.text and "charter-upload" not in response.text
    assert "upload.parquet" not in response.text


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


def test_another_tokens_identical_request_is_a_job_of_its_own(
    service: RunningService,
    client: CharterClient,
    settings: ServiceSettings,
    judge_server: ScriptedJudgeServer,
) -> None:
    mine = client.wait_for_job(client.create_job(PROMPTS[:3]).job.id, timeout=60)
    assert mine.state == "done"
    paid = judge_server.calls
    with CharterClient(service.base_url, TOKEN_B) as other:
        created = other.http.post("/v1/jobs", json={"prompts": PROMPTS[:3]})
        assert created.status_code == 201 and created.json()["created"] is True
        theirs = created.json()["job"]
        assert theirs["id"] != mine.id and theirs["state"] in ("queued", "running")
        done = other.wait_for_job(theirs["id"], timeout=60)
        assert done.state == "done" and done.preferences == mine.preferences
        assert judge_server.calls == paid  # the shared calls were not paid for twice
        # To B, every call is new: the counts say nothing of A having asked first.
        assert done.summary["calls"] == mine.summary["calls"]
        assert done.summary["calls"]["judge"]["reused"] == 0
        assert done.summary["calls"]["judge"]["made"] > 0
        rows = [(r["prompt"], r["chosen"], r["job_id"]) for r in other.preferences(done.id)]
        assert {r[2] for r in rows} == {done.id}
        assert [(r["prompt"], r["chosen"]) for r in client.preferences(mine.id)] == [
            r[:2] for r in rows
        ]
        for call in (
            lambda: other.job(mine.id),
            lambda: other.preference_page(mine.id),
            lambda: other.cancel_job(mine.id),
            lambda: other.resume_job(mine.id),
            lambda: client.job(done.id),
            lambda: client.cancel_job(done.id),
        ):
            with pytest.raises(CharterAPIError) as refused:
                call()
            assert refused.value.status == 404
        again = other.http.post("/v1/jobs", json={"prompts": PROMPTS[:3]})
        assert again.status_code == 200 and again.json()["created"] is False
        assert again.json()["job"]["id"] == done.id  # the same token: the same job
        assert [j.id for j in other.jobs()] == [done.id]
    assert [j.id for j in client.jobs()] == [mine.id]
    with sqlite3.connect(settings.store_path) as conn:
        owners = dict(conn.execute("SELECT job_id, owner FROM service_job_owners").fetchall())
    assert owners == {mine.id: owner_of(TOKEN_A), done.id: owner_of(TOKEN_B)}


def test_a_call_first_made_for_another_tenant_counts_and_takes_as_a_new_call(
    tmp_path: Path,
) -> None:
    """Shared calls are not paid twice, yet neither a tenant's counts nor its waiting tell it
    that someone else asked first; a tenant's own repeats (and the CLI's) are plain reuse."""
    request = GenerationRequest(messages=(Message(role="user", content=PROMPT),), max_tokens=32)
    db = open_store(tmp_path / "calls.db")

    async def timed(tenant: str | None) -> tuple[float, CallStats]:
        cached = CachedModel(scripted_model(server), db, tenant)
        started = time.monotonic()
        await cached.generate(request)
        elapsed = time.monotonic() - started
        await cached.aclose()
        return elapsed, cached.stats

    with ScriptedJudgeServer(responder(), latency_s=0.6) as server:
        first, made = asyncio.run(timed("tenant-a"))
        assert server.calls == 1 and (made.made, made.reused) == (1, 0) and first >= 0.6
        other, new_to_b = asyncio.run(timed("tenant-b"))
        assert server.calls == 1  # answered from the store
        assert (new_to_b.made, new_to_b.reused) == (1, 0) and other >= 0.55
        again, reused = asyncio.run(timed("tenant-a"))
        assert (reused.made, reused.reused) == (0, 1) and again < 0.3
        cli, cli_stats = asyncio.run(timed(None))
        assert (cli_stats.made, cli_stats.reused) == (0, 1) and cli < 0.3
        assert server.calls == 1
    db.close()


def test_a_reused_cross_tenant_call_waits_at_most_the_cap_and_says_it_waits(
    tmp_path: Path,
) -> None:
    """A call another tenant paid for is answered after as long as it first took, but never
    later than the cap: a first call that took minutes under load must not stall a job."""
    request = GenerationRequest(messages=(Message(role="user", content=PROMPT),), max_tokens=32)
    db = open_store(tmp_path / "calls.db")
    seen_waiting: list[int] = []

    async def timed(tenant: str, reuse: ReuseSettings | None = None) -> float:
        cached = CachedModel(scripted_model(server), db, tenant, reuse)

        async def watch() -> None:
            while True:
                seen_waiting.append(cached.stats.waiting)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        started = time.monotonic()
        await cached.generate(request)
        elapsed = time.monotonic() - started
        watcher.cancel()
        await cached.aclose()
        assert cached.stats.waiting == 0
        return elapsed

    with ScriptedJudgeServer(responder(), latency_s=2.0) as server:
        assert asyncio.run(timed("tenant-a")) >= 2.0
        seen_waiting.clear()
        capped = asyncio.run(timed("tenant-b", ReuseSettings(max_delay_s=0.4)))
        assert server.calls == 1 and 0.35 <= capped < 1.2
        assert max(seen_waiting) == 1  # the job can show it is waiting, not silent
    assert ReuseSettings.from_env({"CHARTER_REUSED_CALL_DELAY_S": "3"}).max_delay_s == 3.0
    with pytest.raises(ValueError, match="CHARTER_REUSED_CALL_DELAY_S='-1'"):
        ReuseSettings.from_env({"CHARTER_REUSED_CALL_DELAY_S": "-1"})
    db.close()


def test_a_token_cannot_cancel_anothers_running_job(tmp_path: Path) -> None:
    with ScriptedJudgeServer(responder(), latency_s=0.05) as server:
        slow = settings_for(tmp_path, server, job_concurrency=1)
        with running_service(slow) as running, CharterClient(running.base_url, TOKEN_A) as a:
            job = a.create_job(PROMPTS).job
            with CharterClient(running.base_url, TOKEN_B) as b:
                copy = b.create_job(PROMPTS).job
                assert copy.id != job.id
                with pytest.raises(CharterAPIError) as refused:
                    b.cancel_job(job.id)
                assert refused.value.status == 404
                assert b.cancel_job(copy.id).state == "cancelled"
            assert a.job(job.id).state in ("queued", "running")
            assert a.wait_for_job(job.id, timeout=60).state == "done"


def test_jobs_without_a_tenant_keep_their_ids() -> None:
    """The CLI's job ids are hashes of their specs: adding tenants must not change them."""
    spec = JobSpec(prompts_digest="0" * 64, constitution_digest="1" * 64)
    assert spec.job_id == "job-80e787cfb990"
    revise = JobSpec(mode="revise", n=3, prompts_digest="a" * 64, constitution_digest="b" * 64)
    assert revise.job_id == "job-a51cf26e1cdf"
    assert spec.model_copy(update={"tenant": owner_of(TOKEN_A)}).job_id != spec.job_id


def test_jobs_shared_before_tenants_are_left_to_their_first_owner(
    tmp_path: Path, judge_server: ScriptedJudgeServer
) -> None:
    """A store from before tenants may hold a job two tokens co-own: only the first keeps it."""
    settings = settings_for(tmp_path, judge_server)
    db = open_store(settings.store_path)
    records.ensure_tables(db)
    constitution = load_constitution(settings.principles_dir)
    prompts = [PromptRecord(prompt=PROMPT, responses=(good(PROMPT), bad(PROMPT)), source="x")]
    spec = JobOptions().to_spec(
        prompts, constitution, default_judge="openai:scripted", default_policy="openai:scripted"
    )
    shared, _ = create_or_get_job(db, spec, constitution, prompts, "inline")
    set_status(db, shared.id, "cancelled")
    first, later = (owner_of(TOKEN_A), "2024-01-01"), (owner_of(TOKEN_B), "2024-02-01")
    with db.conn:  # the old service's co-ownership: B sent A's request a month later
        db.conn.executemany(
            "INSERT INTO service_job_owners (job_id, owner, added_at) VALUES (?, ?, ?)",
            [(shared.id, *later), (shared.id, *first)],
        )
    db.close()
    with running_service(settings) as running:
        with CharterClient(running.base_url, TOKEN_A) as a:
            assert [j.id for j in a.jobs()] == [shared.id]
            assert a.job(shared.id).state == "cancelled"
        with CharterClient(running.base_url, TOKEN_B) as b:
            assert b.jobs() == []
            for call in (lambda: b.job(shared.id), lambda: b.cancel_job(shared.id)):
                with pytest.raises(CharterAPIError) as refused:
                    call()
                assert refused.value.status == 404
    with sqlite3.connect(settings.store_path) as conn:
        kept = conn.execute("SELECT count(*) FROM job_prompts WHERE job_id = ?", [shared.id])
        assert kept.fetchone()[0] == 1  # the job itself is kept


class HoldAfterDone:
    """A `fault_policy` that never faults: once `prompts` prompts are done in the store, it
    holds every request until released, so the job is mid-way when the test acts on it, however
    slowly the test gets there."""

    def __init__(self, store: Path, prompts: int) -> None:
        self.store, self.prompts = store, prompts
        self.released = threading.Event()

    def __call__(self, record: Any) -> None:
        if self.released.is_set() or not self.store.exists():
            return
        with sqlite3.connect(self.store) as db:
            try:
                (done,) = db.execute("SELECT count(*) FROM job_prompts WHERE status = 'done'")
            except sqlite3.OperationalError:  # no jobs yet
                return
        if done[0] >= self.prompts:
            self.released.wait(60)


def test_cancel_then_resume_finishes_without_repeating_calls(tmp_path: Path) -> None:
    with ScriptedJudgeServer(responder(), latency_s=0.05) as server:
        slow = settings_for(tmp_path, server, job_concurrency=1)
        hold = HoldAfterDone(slow.store_path, prompts=2)
        server.fault_policy = hold
        with running_service(slow) as running, CharterClient(running.base_url, TOKEN_A) as c:
            job = c.create_job(PROMPTS).job
            deadline = time.monotonic() + 30
            while c.job(job.id).prompts.done < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            cancelled = c.cancel_job(job.id)
            assert cancelled.state == "cancelled"
            assert 2 <= cancelled.prompts.done < len(PROMPTS)
            calls_at_cancel = server.calls
            hold.released.set()  # the call held in flight is answered; no other may start
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


def test_a_failed_service_job_names_the_resume_endpoint(tmp_path: Path) -> None:
    unlucky = PROMPTS[1]

    def fail_one(record: Any) -> Fault | None:
        return Fault.http(400, message="nope") if unlucky in json.dumps(record.body) else None

    with ScriptedJudgeServer(responder(), fault_policy=fail_one) as server:
        settings = settings_for(tmp_path, server)
        with running_service(settings) as running, CharterClient(running.base_url, TOKEN_A) as c:
            view = c.wait_for_job(c.create_job(PROMPTS[:2]).job.id, timeout=60)
            assert view.state == "failed" and view.prompts.failed == 1 and view.prompts.done == 1
            assert view.error and view.error.endswith(
                f"resume with POST /v1/jobs/{view.id}/resume"
            ), view.error
            assert "charter generate" not in json.dumps(view.model_dump())
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
    serve = cli.get_command(click.Context(cli), "serve")
    assert serve is not None
    default_host = next(p for p in serve.params if p.name == "host").default
    assert default_host == "127.0.0.1"


def test_serve_takes_max_jobs_from_the_settings_declaration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--max-jobs` is the settings field's option (its help and bounds), not a second
    declaration with its own; $CHARTER_SERVICE_MAX_JOBS is read by the settings, flag first."""
    serve = cli.get_command(click.Context(cli), "serve")
    assert serve is not None
    option = next(p for p in serve.params if p.name == "max_jobs")
    field = ServiceSettings.model_fields["max_jobs"]
    assert field.description and (option.help or "").startswith(field.description)
    assert isinstance(option.type, click.IntRange) and (option.type.min, option.type.max) == (
        1, 256
    )  # fmt: skip
    monkeypatch.setenv("CHARTER_API_TOKENS", TOKEN_A)
    monkeypatch.setenv("CHARTER_SERVICE_MAX_JOBS", "300")
    args = ["serve", "--dir", str(tmp_path / "none"), "--store", str(tmp_path / "s.db")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("max_jobs: Input should be less than or equal to 256")
    monkeypatch.setenv("CHARTER_SERVICE_MAX_JOBS", "5")
    assert ServiceSettings.from_env(max_jobs=None).max_jobs == 5
    assert ServiceSettings.from_env(max_jobs=3).max_jobs == 3  # the flag wins


def test_the_default_answer_length_is_the_one_the_demo_gives_rows_with() -> None:
    """An answer cut off at its token limit is never chosen: at 128 tokens every answer of the
    embedded model was cut off and a job made 0 rows. The API's (and the CLI's) default is
    the length the demo runs with."""
    demo = (Path(__file__).resolve().parent.parent / "scripts" / "demo").read_text()
    lengths = {int(n) for n in re.findall(r"--max-tokens (\d+)", demo)}
    assert lengths == {JobOptions().max_tokens} == {256}
