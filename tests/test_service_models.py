"""Which models a request can make the service open, how many stay open, and what loading one
costs a reward batch: a real uvicorn (or `charter serve`) on loopback, the scripted judge
behind it, a tiny local model built by the tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from charter.service.state import Service
from tests.support.generation import PROMPTS, good, responder, write_constitution
from tests.support.scripted_server import Fault, RecordedRequest, ScriptedJudgeServer
from tests.support.service import TOKEN_A, RunningService, ServiceProcess, running_service
from tests.support.tiny_models import tiny_model_dir  # noqa: F401
from tests.test_service import settings_for

PROMPT = PROMPTS[0]
AUTH = {"Authorization": f"Bearer {TOKEN_A}"}


@pytest.fixture
def judge_server() -> Iterator[ScriptedJudgeServer]:
    with ScriptedJudgeServer(responder()) as server:
        yield server


def service_of(running: RunningService) -> Service:
    """The running app's shared state (the test reads it; the service's loop owns it)."""
    service: Service = running.server.config.app.state.service
    return service


def established_to(port: int) -> int:
    """Open TCP connections to `port` on loopback, client side (/proc/net/tcp): the HTTP
    clients the service holds to the judge, each open model keeping its own."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state = fields[2], fields[3]
        if state == "01" and int(remote.split(":")[1], 16) == port:
            count += 1
    return count


def reward(base_url: str, judge: str | None = None, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"items": [{"prompt": PROMPT, "response": good(PROMPT)}], **extra}
    if judge is not None:
        body["judge"] = judge
    return httpx.post(f"{base_url}/v1/rewards", json=body, headers=AUTH, timeout=60)


def test_a_request_may_name_only_the_models_the_service_was_started_with(
    tmp_path: Path, judge_server: ScriptedJudgeServer
) -> None:
    """No allow-list given: the service's own judge and policy, nothing else (no stream of
    names to fill memory with, no local model to load on a request's say)."""
    settings = settings_for(tmp_path, judge_server, judge="openai:scripted", policy="openai:pol")
    with running_service(settings) as running:
        assert reward(running.base_url, "openai:scripted").status_code == 200
        assert reward(running.base_url, "openai:pol").status_code == 200  # the policy too
        for spec in ("openai:probe-1", "smollm2", "hf:/tmp/any-model"):
            refused = reward(running.base_url, spec)
            assert refused.status_code == 422, refused.text
            error = refused.json()["error"]
            assert error["code"] == "model_not_allowed"
            assert error["message"] == (
                f"model {spec!r} is not served here; allowed: openai:pol, openai:scripted"
            )
        assert service_of(running).pool.size == 2


def test_distinct_model_names_keep_the_pool_at_its_cap_and_close_what_it_drops(
    tmp_path: Path, judge_server: ScriptedJudgeServer
) -> None:
    """An operator who allows `openai:*` still has a bounded service: each name past the cap
    closes the least recently used model and its connections."""
    cap, names = 2, 16
    settings = settings_for(
        tmp_path, judge_server, allowed_models=("openai:*",), model_pool_size=cap
    )
    port = int(judge_server.base_url.split(":")[2].split("/")[0])
    with running_service(settings) as running:
        pool = service_of(running).pool
        held = []  # every model stays referenced: only closing it drops its connections
        for i in range(names):
            answer = reward(running.base_url, f"openai:probe-{i}")
            assert answer.status_code == 200 and answer.json()["fallbacks"] == 0, answer.text
            assert pool.size <= cap + 1, (i, pool.size)  # + the service's own judge
            held.append(pool.model(f"openai:probe-{i}"))
            # The model dropped is closed: its keep-alive connections (one per principle
            # asked at once, K=2) go with it.
            wait_until = time.monotonic() + 1
            while established_to(port) > 2 * cap and time.monotonic() < wait_until:
                time.sleep(0.05)
            assert established_to(port) <= 2 * cap, (i, established_to(port))
        assert all(held) and len({id(m) for m in held}) == names
        assert {r["model"] for r in judge_server.requests} >= {f"probe-{i}" for i in range(names)}
        # The most recent ones are still open and answer without loading again.
        assert pool.loaded(f"openai:probe-{names - 1}") and not pool.loaded("openai:probe-0")
        assert reward(running.base_url, f"openai:probe-{names - 1}").status_code == 200


def test_a_model_dropped_while_a_request_uses_it_is_closed_when_that_request_is_done(
    tmp_path: Path,
) -> None:
    """Eviction never pulls a model from under a request: the slow batch still being judged
    by `probe-0` when newer names push it out finishes with every verdict, and only then is
    `probe-0` closed."""

    def slow_probe_0(record: RecordedRequest) -> Fault | None:
        body = record.body if isinstance(record.body, dict) else {}
        return Fault.delay(2.0) if body.get("model") == "probe-0" else None

    cap = 1
    with ScriptedJudgeServer(responder(), fault_policy=slow_probe_0) as server:
        settings = settings_for(
            tmp_path, server, allowed_models=("openai:*",), model_pool_size=cap, max_retries=0
        )
        with running_service(settings) as running, ThreadPoolExecutor(1) as background:
            pool = service_of(running).pool
            slow = background.submit(reward, running.base_url, "openai:probe-0")
            while not pool.loaded("openai:probe-0"):
                time.sleep(0.01)
            held = pool.model("openai:probe-0")
            for i in range(1, 4):  # each pushes the one before out of the pool
                assert reward(running.base_url, f"openai:probe-{i}").status_code == 200
            assert not pool.loaded("openai:probe-0") and not slow.done()
            answer = slow.result(timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.json()["fallbacks"] == 0, answer.text  # judged, not cut off
            assert held is not None
            # Then it is closed: only the newest model's connections (K=2) are left.
            port = int(server.base_url.split(":")[2].split("/")[0])
            wait_until = time.monotonic() + 2
            while established_to(port) > 2 and time.monotonic() < wait_until:
                time.sleep(0.05)
            assert established_to(port) <= 2, established_to(port)


@pytest.mark.slow
def test_a_local_model_load_counts_against_the_reward_deadline(
    tmp_path: Path,
    judge_server: ScriptedJudgeServer,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    """A fresh `charter serve` allowed to load `hf:` models: the first batch naming one is
    answered by its deadline (the load, seconds of importing torch and reading weights, goes
    on), flagged as timed out; once loaded, the model judges."""
    principles = write_constitution(tmp_path / "principles")
    spec = f"hf:{tiny_model_dir}"
    deadline_s = 2.0
    process = ServiceProcess(
        ["--judge", "openai:scripted", "--judge-base-url", judge_server.base_url,
         "--dir", str(principles), "--store", str(tmp_path / "service.db"),
         "--allow-model", "hf:*", "--reward-deadline", str(deadline_s)],
        env={"CHARTER_API_TOKENS": TOKEN_A, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        log_path=tmp_path / "serve.log",
        cwd=tmp_path,
    )  # fmt: skip
    process.start()
    try:
        started = time.monotonic()
        first = reward(process.base_url, spec)
        took = time.monotonic() - started
        assert first.status_code == 200, first.text
        assert took <= deadline_s * 1.1 + 0.3, took
        body = first.json()
        assert body["timeouts"] == 1 and body["rewards"][0]["fallback"]
        assert body["rewards"][0]["error"] == f"model {spec!r} is still loading at the deadline"
        # The load went on: a later batch is judged by the model (random weights, so any
        # verdict; what matters is that it no longer waits for a load).
        give_up = time.monotonic() + 180
        while True:
            later = reward(process.base_url, spec, deadline_s=60).json()
            if "still loading" not in str(later["rewards"][0]["error"]):
                break
            assert time.monotonic() < give_up, process.log
            time.sleep(1)
        assert later["timeouts"] == 0
    finally:
        process.stop()
    assert "Traceback" not in process.log
