"""OpenAIChatModel against the scripted server: the real `openai` client over loopback HTTP."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from charter.judge.backends import (
    BackendError,
    BackendOptions,
    ChatModel,
    GenerationRequest,
    Message,
    OpenAIChatModel,
    RetryPolicy,
    load_model,
)
from tests.support.garbage import cyclic_garbage_after
from tests.support.scripted_server import (
    Fault,
    PreferenceResponder,
    Reply,
    ScriptedJudgeServer,
)

KEY_ENV = "CHARTER_TEST_JUDGE_KEY"
SECRET = "sk-test-Secret-0123456789"
FAST = RetryPolicy(initial_wait_s=0.01, max_wait_s=0.05, jitter_s=0.01, max_retry_after_s=5.0)
TRANSPORTS = [
    "httpx",
    pytest.param(
        "aiohttp",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("aiohttp") is None, reason="aiohttp not installed"
        ),
    ),
]
GOOD, BAD = "Water boils at 100 C at sea level.", "Water boils at 50 C."


def verdict_messages(first: str, second: str) -> list[Message]:
    return [
        Message(role="system", content="You are a careful judge."),
        Message(
            role="user",
            content=f"Which is more accurate?\n(A) {first}\n(B) {second}\nAnswer A or B.",
        ),
    ]


@pytest.fixture
def server() -> Iterator[ScriptedJudgeServer]:
    with ScriptedJudgeServer(PreferenceResponder([GOOD], [BAD])) as srv:
        yield srv


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


Factory = Callable[..., OpenAIChatModel]


@pytest.fixture(params=TRANSPORTS)
def make_model(request: pytest.FixtureRequest) -> Factory:
    """Builds models for a server; every test using it runs once per HTTP transport."""
    transport = request.param

    def make(server: ScriptedJudgeServer, **overrides: Any) -> OpenAIChatModel:
        options = BackendOptions(
            base_url=server.base_url,
            api_key_env=KEY_ENV,
            timeout_s=overrides.pop("timeout_s", 5.0),
            max_retries=overrides.pop("max_retries", 3),
            max_concurrency=overrides.pop("max_concurrency", 16),
        )
        retry = overrides.pop("retry", FAST)
        model = OpenAIChatModel("scripted-judge", options, retry=retry, transport=transport)
        assert model.transport == transport
        return model

    return make


def run_choose(model: OpenAIChatModel, first: str = BAD, second: str = GOOD) -> Any:
    async def go() -> Any:
        try:
            return await model.choose(verdict_messages(first, second), ["A", "B"])
        finally:
            await model.aclose()

    return asyncio.run(go())


def run_generate(model: OpenAIChatModel, **kw: Any) -> Any:
    request = GenerationRequest(
        messages=(Message(role="user", content="Critique this response."),), **kw
    )

    async def go() -> Any:
        try:
            return await model.generate(request)
        finally:
            await model.aclose()

    return asyncio.run(go())


# ----------------------------------------------------------------------------- happy paths


def test_choose_returns_option_logprobs_and_sends_a_verdict_request(
    server: ScriptedJudgeServer, make_model: Factory
) -> None:
    model = make_model(server)
    assert isinstance(model, ChatModel)
    done = run_choose(model, first=BAD, second=GOOD)
    assert done.text == "B"
    assert done.option_logprobs is not None
    assert math.exp(done.option_logprobs["B"]) == pytest.approx(0.9)
    assert math.exp(done.option_logprobs["A"]) == pytest.approx(0.1)
    assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens > 0
    assert done.latency_s > 0
    assert done.model == "scripted-judge"
    assert model.logprobs_supported is True
    body = server.requests[0]
    assert body["max_tokens"] == 1 and body["temperature"] == 0
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert server.log[0].headers["authorization"] == f"Bearer {SECRET}"


def test_choose_sums_whitespace_variants_of_an_option(make_model: Factory) -> None:
    def responder(body: dict[str, Any]) -> Reply:
        lp = [("A", 0.5), (" A", 0.2), ("B", 0.1), ("A\n", 0.05), ("a", 0.05), ("The", 0.1)]
        return Reply("A", top_logprobs=[(t, math.log(p)) for t, p in lp])

    with ScriptedJudgeServer(responder) as srv:
        done = run_choose(make_model(srv))
    assert done.option_logprobs is not None
    assert set(done.option_logprobs) == {"A", "B"}  # "a" and "The" are not options
    assert math.exp(done.option_logprobs["A"]) == pytest.approx(0.75)
    assert math.exp(done.option_logprobs["B"]) == pytest.approx(0.1)


def test_choose_without_logprobs_returns_text_only(make_model: Factory) -> None:
    with ScriptedJudgeServer(PreferenceResponder([GOOD], [BAD], logprobs=False)) as srv:
        done = run_choose(make_model(srv), first=GOOD, second=BAD)
    assert done.text == "A"
    assert done.option_logprobs is None


def test_server_rejecting_logprobs_is_asked_without_them_from_then_on(make_model: Factory) -> None:
    with ScriptedJudgeServer(PreferenceResponder([GOOD], [BAD]), reject_logprobs=True) as srv:
        model = make_model(srv)

        async def go() -> list[Any]:
            try:
                first = await model.choose(verdict_messages(BAD, GOOD), ["A", "B"])
                second = await model.choose(verdict_messages(GOOD, BAD), ["A", "B"])
                return [first, second]
            finally:
                await model.aclose()

        first, second = asyncio.run(go())
        bodies = srv.requests
    assert (first.text, second.text) == ("B", "A")
    assert first.option_logprobs is None and second.option_logprobs is None
    assert model.logprobs_supported is False
    assert [bool(b.get("logprobs")) for b in bodies] == [True, False, False]


def test_generate_sends_sampling_settings_and_reports_usage(
    server: ScriptedJudgeServer, make_model: Factory
) -> None:
    done = run_generate(make_model(server), max_tokens=64, temperature=0.7, seed=11)
    assert done.text.startswith("Scripted reply")
    assert done.option_logprobs is None
    assert done.usage.total_tokens > 0
    body = server.requests[0]
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (64, 0.7, 11)
    assert "logprobs" not in body and "frequency_penalty" not in body  # left at its default
    assert done.finish_reason == "stop"


def test_generate_sends_a_frequency_penalty_and_reads_a_cut_off_reply(
    make_model: Factory,
) -> None:
    cut = PreferenceResponder(text_reply=lambda body: Reply("Cut mid", finish_reason="length"))
    with ScriptedJudgeServer(cut) as srv:
        done = run_generate(make_model(srv), max_tokens=8, frequency_penalty=1.0)
        body = srv.requests[0]
    assert body["frequency_penalty"] == 1.0
    assert done.finish_reason == "length"


def test_a_model_survives_being_used_from_two_event_loops(
    server: ScriptedJudgeServer, make_model: Factory
) -> None:
    model = make_model(server)
    for _ in range(2):
        assert asyncio.run(model.choose(verdict_messages(GOOD, BAD), ["A", "B"])).text == "A"
    asyncio.run(model.aclose())
    assert server.calls == 2


# ----------------------------------------------------------------------------- faults


def test_429_waits_for_retry_after_then_succeeds(
    server: ScriptedJudgeServer, make_model: Factory
) -> None:
    server.enqueue(Fault.http(429, retry_after=1))
    done = run_choose(make_model(server))
    log = server.log
    assert done.text == "B"
    assert [r.status for r in log] == [429, 200]
    gap = log[1].received_at - log[0].received_at
    # FAST backoff alone would wait ~0.02 s; the upper bound only says it did not wait much
    # longer than asked (loose: a loaded machine adds its own delay).
    assert 0.9 <= gap < 10.0


def test_retry_after_is_capped(server: ScriptedJudgeServer, make_model: Factory) -> None:
    server.enqueue(Fault.http(429, retry_after=3600))
    retry = FAST.model_copy(update={"max_retry_after_s": 0.1})
    started = time.monotonic()
    done = run_choose(make_model(server, retry=retry))
    assert done.text == "B"
    assert server.calls == 2
    assert time.monotonic() - started < 60  # capped at 0.1 s, nowhere near the hour asked


def test_5xx_is_retried(server: ScriptedJudgeServer, make_model: Factory) -> None:
    server.enqueue(Fault.http(500), Fault.http(503))
    done = run_generate(make_model(server))
    assert done.text.startswith("Scripted reply")
    assert [r.status for r in server.log] == [500, 503, 200]


def test_persistent_5xx_ends_in_backend_error_after_all_attempts(
    server: ScriptedJudgeServer, make_model: Factory
) -> None:
    server.enqueue(*[Fault.http(502)] * 3)
    with pytest.raises(BackendError, match=r"after 3 attempts: HTTP 502"):
        run_generate(make_model(server, max_retries=2))
    assert server.calls == 3


def test_timeout_is_retried_then_succeeds(server: ScriptedJudgeServer, make_model: Factory) -> None:
    server.enqueue(Fault.delay(120.0))  # answered at last, if the client waited that long
    started = time.monotonic()
    done = run_choose(make_model(server, timeout_s=0.3))
    assert done.text == "B"
    assert server.calls == 2
    assert time.monotonic() - started < 60  # gave up on the slow reply at its timeout


def test_timeouts_until_attempts_run_out_raise_backend_error(
    server: ScriptedJudgeServer, make_model: Factory
) -> None:
    server.enqueue(*[Fault.delay(3.0)] * 3)
    with pytest.raises(BackendError, match="timed out"):
        run_choose(make_model(server, timeout_s=0.2, max_retries=2))
    assert server.calls == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_refused_connection_says_so_names_the_url_and_gives_up_soon(transport: str) -> None:
    with socket.socket() as port:
        port.bind(("127.0.0.1", 0))  # bound but never listening: every connection is refused
        url = f"http://127.0.0.1:{port.getsockname()[1]}/v1"
        options = BackendOptions(base_url=url, api_key_env=KEY_ENV, max_retries=4)
        model = OpenAIChatModel("m", options, retry=FAST, transport=transport)
        with pytest.raises(BackendError) as failure:
            run_choose(model)
    # One short retry (a server may be starting), not five backed-off attempts, and the cause.
    assert (
        str(failure.value) == f"openai:m: cannot connect to {url} (connection refused; 2 attempts)"
    )


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(
    server: ScriptedJudgeServer, status: int, make_model: Factory
) -> None:
    server.enqueue(Fault.http(status, retry_after=0))
    with pytest.raises(BackendError, match=f"after 1 attempt: HTTP {status}"):
        run_generate(make_model(server))
    assert server.calls == 1


def test_choose_does_not_retry_auth_errors(
    server: ScriptedJudgeServer, make_model: Factory
) -> None:
    server.enqueue(Fault.http(401))
    with pytest.raises(BackendError, match="HTTP 401"):
        run_choose(make_model(server))
    assert server.calls == 1


def test_bad_request_in_choose_is_probed_once_and_keeps_logprobs_on(
    server: ScriptedJudgeServer, make_model: Factory
) -> None:
    """A 400 that is not about logprobs (it fails without them too) must not switch them off."""
    server.enqueue(Fault.http(400, message="context too long"), Fault.http(400))
    model = make_model(server)
    with pytest.raises(BackendError, match="context too long"):
        run_choose(model)
    assert server.calls == 2
    assert model.logprobs_supported is None
    assert run_choose(model).option_logprobs is not None


def test_empty_choices_are_retried_then_fail(
    server: ScriptedJudgeServer, make_model: Factory
) -> None:
    server.enqueue(Fault.empty_choices())
    assert run_choose(make_model(server)).text == "B"
    assert server.calls == 2
    server.reset()
    server.enqueue(*[Fault.empty_choices()] * 4)
    with pytest.raises(BackendError, match="no choices"):
        run_choose(make_model(server, max_retries=3))
    assert server.calls == 4


def test_missing_message_is_a_backend_error(
    server: ScriptedJudgeServer, make_model: Factory
) -> None:
    server.enqueue(*[Fault.missing_message()] * 2)
    with pytest.raises(BackendError, match="without a message"):
        run_generate(make_model(server, max_retries=1))
    assert server.calls == 2


@pytest.mark.parametrize("fault", [Fault.truncated_json(), Fault.drop()], ids=lambda f: f.kind)
def test_truncated_json_and_dropped_connections_are_retried(
    server: ScriptedJudgeServer, fault: Fault, make_model: Factory
) -> None:
    server.enqueue(fault)
    done = run_choose(make_model(server))
    assert done.text == "B" and done.option_logprobs is not None
    assert server.calls == 2


def test_garbage_comes_back_as_text_for_the_judge_to_reject(
    server: ScriptedJudgeServer, make_model: Factory
) -> None:
    server.enqueue(Fault.garbage("Both are fine."))
    done = run_choose(make_model(server))
    assert done.text == "Both are fine."
    assert done.option_logprobs == {}  # logprobs were given, but neither option was among them
    assert server.calls == 1


def test_the_api_key_never_appears_in_errors_or_logs(
    server: ScriptedJudgeServer, caplog: pytest.LogCaptureFixture, make_model: Factory
) -> None:
    server.enqueue(
        Fault.http(500, message=f"upstream said: bad key {SECRET}"),
        Fault.http(401, message=f"Incorrect API key provided: {SECRET}"),
    )
    caplog.set_level(logging.DEBUG, logger="charter")
    model = make_model(server)
    with pytest.raises(BackendError) as info:
        run_generate(model)
    assert "HTTP 401" in str(info.value) and "[redacted]" in str(info.value)
    assert SECRET not in str(info.value)
    assert "attempt 1 failed" in caplog.text  # the 500 was logged, scrubbed
    assert SECRET not in caplog.text
    assert SECRET not in repr(model) and SECRET not in str(vars(model))


# ----------------------------------------------------------------------------- concurrency


def test_concurrency_is_bounded_by_max_concurrency(make_model: Factory) -> None:
    with ScriptedJudgeServer(PreferenceResponder([GOOD], [BAD]), latency_s=0.1) as srv:
        model = make_model(srv, max_concurrency=3)

        async def go() -> list[Any]:
            try:
                calls = [model.choose(verdict_messages(BAD, GOOD), ["A", "B"]) for _ in range(12)]
                return list(await asyncio.gather(*calls))
            finally:
                await model.aclose()

        results = asyncio.run(go())
        assert [r.text for r in results] == ["B"] * 12
        assert srv.max_in_flight == 3
        assert srv.calls == 12


def test_waiting_for_a_slot_counts_against_neither_timeout_nor_latency(
    make_model: Factory,
) -> None:
    """Four calls through one slot: the last waits ~1.2 s for it, past the 1 s timeout, yet
    none times out and each reports only its own exchange (~0.4 s) as latency, not the wait:
    counted from the first call's arrival at the server, the last would report over 1.2 s."""
    with ScriptedJudgeServer(PreferenceResponder([GOOD], [BAD]), latency_s=0.4) as srv:
        model = make_model(srv, max_concurrency=1, timeout_s=1.0, max_retries=0)

        async def go() -> list[Any]:
            try:
                calls = [model.choose(verdict_messages(BAD, GOOD), ["A", "B"]) for _ in range(4)]
                return list(await asyncio.gather(*calls))
            finally:
                await model.aclose()

        started = time.perf_counter()
        results = asyncio.run(go())
        elapsed = time.perf_counter() - started
        arrivals = sorted(r.received_at for r in srv.log)
    assert [r.text for r in results] == ["B"] * 4
    assert srv.calls == 4 and srv.max_in_flight == 1
    assert elapsed >= 1.6  # really one at a time
    latencies = [r.latency_s for r in results]
    assert all(r >= 0.4 for r in latencies), latencies  # the exchange itself is counted
    # ...and nothing before it: the last call's exchange began after three others' ended.
    assert max(latencies) < arrivals[-1] - arrivals[0], (latencies, arrivals)


def test_successful_calls_leave_no_reference_cycles(make_model: Factory) -> None:
    """tenacity's retry objects are cyclic, so they are only built once a first attempt failed."""
    with ScriptedJudgeServer(PreferenceResponder([GOOD], [BAD])) as srv:
        model = make_model(srv)

        async def calls() -> None:
            for _ in range(20):
                await model.choose(verdict_messages(BAD, GOOD), ["A", "B"])

        async def go() -> int:
            try:
                await model.choose(verdict_messages(BAD, GOOD), ["A", "B"])  # warm-up
                return await cyclic_garbage_after(calls)
            finally:
                await model.aclose()

        unreachable = asyncio.run(go())
    assert unreachable < 20, f"{unreachable} objects in cycles after 20 calls"


def test_server_and_client_sustain_64_concurrent_slow_requests(make_model: Factory) -> None:
    with ScriptedJudgeServer(PreferenceResponder([GOOD], [BAD]), latency_s=0.3) as srv:
        model = make_model(srv, max_concurrency=64)

        async def go() -> float:
            calls = [model.choose(verdict_messages(GOOD, BAD), ["A", "B"]) for _ in range(64)]
            started = time.perf_counter()
            try:
                results = await asyncio.gather(*calls)
            finally:
                await model.aclose()
            assert all(r.text == "A" for r in results)
            return time.perf_counter() - started

        elapsed = asyncio.run(go())
        assert srv.max_in_flight == 64
        # About one round of latency; one by one would take 19 s (the bound is loose: that all
        # 64 were in flight at once, above, is the proof).
        assert elapsed < 10.0


# ----------------------------------------------------------------------------- the fake itself


def test_preference_responder_bias_is_reproducible_and_near_its_rate() -> None:
    texts = [f"candidate {i}" for i in range(400)]
    judge = PreferenceResponder(texts[::2], texts[1::2], position_bias_a=0.4, seed=3)
    again = PreferenceResponder(texts[::2], texts[1::2], position_bias_a=0.4, seed=3)
    pairs = list(zip(texts[1::2], texts[::2], strict=True))  # dispreferred first: honest answer B
    answers = [judge.answer_for(a, b)[0] for a, b in pairs]
    assert answers == [again.answer_for(a, b)[0] for a, b in pairs]
    share_a = answers.count("A") / len(answers)
    assert 0.3 < share_a < 0.5
    # Every content-honest answer goes to the preferred text, whatever the prompt format says.
    body = {"max_tokens": 1, "messages": [{"role": "user", "content": "<x>bad</x><y>good</y>"}]}
    assert PreferenceResponder(["good"], ["bad"])(body).text == "B"
    assert PreferenceResponder(["good"], ["bad"])({**body, "max_tokens": 200}).text != "B"


# ----------------------------------------------------------------------------- registry


def test_load_model_parses_openai_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARTER_JUDGE_BASE_URL", "http://127.0.0.1:9/v1")
    model = load_model("openai:my-judge")
    assert isinstance(model, OpenAIChatModel)
    assert model.spec == "openai:my-judge"
    assert model.base_url == "http://127.0.0.1:9/v1"
    explicit = load_model("openai:m", BackendOptions(base_url="http://127.0.0.1:8/v1"))
    assert isinstance(explicit, OpenAIChatModel) and explicit.base_url == "http://127.0.0.1:8/v1"


@pytest.mark.parametrize("spec", ["openai:", "openai", "hf:", "smollm2:x", "gpt-4o", ""])
def test_load_model_rejects_malformed_specs(spec: str) -> None:
    with pytest.raises(ValueError, match=r"openai:MODEL|names no model"):
        load_model(spec)


def test_importing_the_backends_does_not_import_torch() -> None:
    code = (
        "import sys, charter.judge.backends as b; b.load_model('openai:x'); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_base_url_comes_from_the_named_env_vars_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARTER_JUDGE_BASE_URL", "http://judge.invalid/v1")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://openai.invalid/v1")
    monkeypatch.delenv("CHARTER_POLICY_BASE_URL", raising=False)
    assert BackendOptions().resolved_base_url() == "http://judge.invalid/v1"
    policy = BackendOptions(base_url_envs=("CHARTER_POLICY_BASE_URL", "OPENAI_BASE_URL"))
    assert policy.resolved_base_url() == "http://openai.invalid/v1"  # never the judge's URL
    monkeypatch.setenv("CHARTER_POLICY_BASE_URL", "http://policy.invalid/v1")
    assert policy.resolved_base_url() == "http://policy.invalid/v1"
    assert BackendOptions(base_url="http://given/v1").resolved_base_url() == "http://given/v1"


# ----------------------------------------------------------------------------- closing

README = Path(__file__).resolve().parent.parent / "README.md"
EGG, BOILED, NO_IDEA = "How do I boil an egg?", "Boil it 7 min.", "No idea."


def readme_python_example() -> str:
    """The code block of the README's "Python API" section, as a reader would copy it."""
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


def run_python(code: str, server: ScriptedJudgeServer, cwd: Path) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter where every warning is an error, the judge on `server`."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    env["CHARTER_JUDGE_BASE_URL"] = server.base_url
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def assert_nothing_left_open(run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, run.stderr
    assert "unclosed" not in run.stderr.lower(), run.stderr  # aiohttp's and asyncio's warnings
    assert "Exception ignored" not in run.stderr, run.stderr


def test_readme_python_example_prints_the_verdict_and_leaves_nothing_open(
    principles_dir: Path,
) -> None:
    with ScriptedJudgeServer(PreferenceResponder([BOILED], [NO_IDEA])) as server:
        run = run_python(readme_python_example(), server, cwd=principles_dir.parent)
        assert server.calls > 0
    assert_nothing_left_open(run)
    compared, scored = run.stdout.splitlines()
    winner, p_a, consistent = compared.split()
    assert (winner, consistent) == ("a", "True") and float(p_a) > 0.8
    assert float(scored.split()[0]) > 0.8  # p_yes of the good answer


CLOSING = {
    "async with": """
import asyncio
from charter.judge import compare, load_model
from charter.constitution import load_constitution

async def main():
    async with load_model("openai:scripted") as judge:
        result = await compare(judge, load_constitution("principles"), EGG, BOILED, NO_IDEA)
    print(result.winner)

asyncio.run(main())
""",
    "async with a cached model": """
import asyncio
from charter.call_cache import CachedModel
from charter.judge import compare, load_model
from charter.constitution import load_constitution
from charter.store import open_store

async def main():
    async with CachedModel(load_model("openai:scripted"), open_store("store.db")) as judge:
        result = await compare(judge, load_constitution("principles"), EGG, BOILED, NO_IDEA)
    print(result.winner)

asyncio.run(main())
""",
    "with": """
from charter.judge import compare_sync, load_model
from charter.constitution import load_constitution

with load_model("openai:scripted") as judge:
    print(compare_sync(judge, load_constitution("principles"), EGG, BOILED, NO_IDEA).winner)
""",
    "used sync, closed async": """
import asyncio
from charter.judge import compare_sync, load_model
from charter.constitution import load_constitution

judge = load_model("openai:scripted")
print(compare_sync(judge, load_constitution("principles"), EGG, BOILED, NO_IDEA).winner)
asyncio.run(judge.aclose())
""",
}


@pytest.mark.parametrize("form", list(CLOSING))
def test_models_close_their_connections_in_every_form(principles_dir: Path, form: str) -> None:
    texts = f"EGG, BOILED, NO_IDEA = {EGG!r}, {BOILED!r}, {NO_IDEA!r}\n"
    with ScriptedJudgeServer(PreferenceResponder([BOILED], [NO_IDEA])) as server:
        run = run_python(texts + CLOSING[form], server, cwd=principles_dir.parent)
    assert_nothing_left_open(run)
    assert run.stdout.strip() == "a"


def test_the_sync_wrappers_loop_is_stopped_and_closed_at_exit() -> None:
    code = """
import asyncio, atexit, threading

seen = {}
# Registered before charter's own exit handler, so it runs after it (last in, first out).
atexit.register(lambda: print(
    any(t.name == "charter-judge-loop" for t in threading.enumerate()), seen["loop"].is_closed()
))

from charter.judge._sync import run_sync

async def running_loop():
    return asyncio.get_running_loop()

seen["loop"] = run_sync(running_loop())
"""
    run = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "True"]  # the thread has ended, the loop is closed
