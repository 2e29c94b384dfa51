"""One judge on several endpoints: least-in-flight routing, resting, rerouting, counts, errors.

Every endpoint is a real scripted OpenAI-compatible server on loopback; the CLI runs end to end
on a real SQLite store.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from charter.cli.main import cli
from charter.judge import BackendError, BackendOptions, Message
from charter.judge.backends.endpoints import AllEndpointsFailed, EndpointPool
from charter.judge.backends.registry import load_model
from tests.support.generation import make_world
from tests.support.judge_helpers import FAST_RETRY
from tests.support.scripted_server import (
    ConstantResponder,
    Fault,
    PreferenceResponder,
    RecordedRequest,
    Reply,
    Responder,
    ScriptedJudgeServer,
)

PROMPTS = [f"Question number {i}: how should I do task {i}?" for i in range(16)]
VERDICT = [Message(role="user", content="Which is better, A or B?")]


def closed_port_url() -> str:
    """An endpoint on a loopback port nothing listens on: connections to it are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def good(prompt: str) -> str:
    return f"Plan it (number {PROMPTS.index(prompt)}): list the steps, check each, ask for help."


def bad(prompt: str) -> str:
    return f"Just wing it, whatever (number {PROMPTS.index(prompt)})."


def judge_responder() -> PreferenceResponder:
    """Prefers each prompt's good candidate over its bad one, whichever slot it is in."""
    return PreferenceResponder(
        preferred={good(p): 1.0 for p in PROMPTS}, others=[bad(p) for p in PROMPTS]
    )


def with_candidates(world: dict[str, Path], prompts: list[str]) -> dict[str, Path]:
    """The prompts file with a good and a bad candidate for each: only the judge is asked."""
    lines = [json.dumps({"prompt": p, "responses": [bad(p), good(p)]}) for p in prompts]
    world["prompts"].write_text("\n".join(lines) + "\n")
    return world


def invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def generate_args(world: dict[str, Path], judge_urls: list[str], policy_url: str) -> list[str]:
    args = [
        "generate",
        "--prompts", str(world["prompts"]),
        "--dir", str(world["principles"]),
        "--store", str(world["store"]),
        "--judge", "openai:scripted",
        "--policy", "openai:scripted",
        "--policy-base-url", policy_url,
        "--json",
    ]  # fmt: skip
    for url in judge_urls:
        args += ["--judge-base-url", url]
    return args


def export_rows(world: dict[str, Path], job_id: str) -> list[dict[str, str]]:
    out = world["tmp"] / f"{job_id}.jsonl"
    code, _, err = invoke(["export", job_id, "--store", str(world["store"]), "--out", str(out)])
    assert code == 0, err
    return [json.loads(line) for line in out.read_text().splitlines()]


def stop_after(calls: int, server_box: list[ScriptedJudgeServer]) -> object:
    """A fault policy that drops the `calls`-th request and stops its server (as if killed:
    the listening socket closes and every open connection is shut)."""
    seen = 0
    lock = threading.Lock()

    def policy(record: RecordedRequest) -> Fault | None:
        nonlocal seen
        with lock:
            seen += 1
            if seen != calls:
                return None
        threading.Thread(target=server_box[0].stop, daemon=True).start()
        return Fault.drop()

    return policy


def test_an_endpoint_killed_mid_run_hands_its_share_to_the_others(tmp_path: Path) -> None:
    world = with_candidates(make_world(tmp_path), PROMPTS)
    box: list[ScriptedJudgeServer] = []
    dying = ScriptedJudgeServer(
        judge_responder(),
        latency_s=0.02,
        fault_policy=stop_after(6, box),  # type: ignore[arg-type]
    )
    box.append(dying)
    with (
        ScriptedJudgeServer(judge_responder(), latency_s=0.02) as first,
        ScriptedJudgeServer(judge_responder(), latency_s=0.02) as second,
        dying,
        ScriptedJudgeServer(judge_responder()) as policy,
    ):
        # Repeated and comma-separated forms together.
        urls = [first.base_url, f"{second.base_url},{dying.base_url}"]
        # Two prompts (8 calls) in flight at a time: the kill comes early in the run.
        args = [*generate_args(world, urls, policy.base_url), "--concurrency", "2"]
        code, out, err = invoke(args)
        assert code == 0, err
        summary = json.loads(out)
        answered = [sum(r.status == 200 for r in s.log) for s in (first, second, dying)]
    assert summary["prompts"]["done"] == len(PROMPTS) and summary["prompts"]["failed"] == 0
    rows = export_rows(world, summary["job_id"])
    assert {(r["prompt"], r["chosen"], r["rejected"]) for r in rows} == {
        (p, good(p), bad(p)) for p in PROMPTS
    }
    endpoints = summary["calls"]["judge"]["endpoints"]
    assert [e["url"] for e in endpoints] == [first.base_url, second.base_url, dying.base_url]
    # Every call an endpoint did not fail, its server answered; the dying server may also have
    # logged a reply that its stop cut off on the way to the client (a failure there).
    succeeded = [e["calls"] - e["failures"] for e in endpoints]
    assert succeeded[:2] == answered[:2], endpoints
    assert succeeded[2] <= answered[2], endpoints
    live, dead = endpoints[:2], endpoints[2]
    assert dead["failures"] >= 1 and dead["rested"] == 1  # rested once: no call tried it again
    assert all(e["failures"] == 0 and e["rested"] == 0 for e in live)
    made = summary["calls"]["judge"]["made"]
    assert made == len(PROMPTS) * 4  # two principles, both orders
    # Each failed call was asked again elsewhere; the live two made the rest, in halves.
    assert sum(e["calls"] for e in endpoints) == made + dead["failures"]
    assert answered[2] <= 8, endpoints
    assert all(e["calls"] >= (made - answered[2]) / 2 - 4 for e in live), endpoints
    assert summary["calls"]["policy"] is None

    code, out, err = invoke(["jobs", "show", summary["job_id"], "--store", str(world["store"])])
    assert code == 0, err
    assert "judge endpoints" in out
    assert (
        f"{dying.base_url}  {dead['calls']} calls, {dead['failures']} failed, rested 1 times" in out
    )


def test_which_endpoint_made_a_call_is_not_part_of_its_key(tmp_path: Path) -> None:
    from charter.call_cache import CachedModel
    from charter.store import open_store

    db = open_store(tmp_path / "store.db")
    with (
        ScriptedJudgeServer(ConstantResponder()) as a,
        ScriptedJudgeServer(ConstantResponder()) as b,
        ScriptedJudgeServer(ConstantResponder()) as c,
    ):

        async def ask(urls: str) -> tuple[int, int]:
            async with CachedModel(
                load_model("openai:scripted", BackendOptions(base_url=urls)), db
            ) as model:
                await model.choose(VERDICT, ["A", "B"])
                return model.stats.made, model.stats.reused

        made_by_pool = asyncio.run(ask(f"{a.base_url},{b.base_url}"))
        from_one = asyncio.run(ask(c.base_url))  # the same call, another endpoint: stored
        from_other_pool = asyncio.run(ask(f"{c.base_url},{b.base_url}"))
        asked = a.calls + b.calls + c.calls
    assert made_by_pool == (1, 0) and from_one == (0, 1) and from_other_pool == (0, 1)
    assert asked == 1


class HeldCalls:
    """Test harness: makes one endpoint slow by causality, not latency. It answers its i-th
    call only once the fast endpoints have answered `per_call * i` calls between them (it
    holds a call for that many fast ones), or when nothing else can happen: every worker is
    waiting on it, or the work has run out. A loaded machine slows every server alike, so the
    share it leaves the slow one does not move with the load."""

    def __init__(self, workers: int, per_call: int) -> None:
        self.workers = workers
        self.per_call = per_call
        self.cond = threading.Condition()
        self.fast = self.slow = self.waiting = 0
        self.drained = False

    def fast_responder(self) -> Responder:
        inner = ConstantResponder()

        def respond(body: dict[str, Any]) -> Reply:
            with self.cond:
                self.fast += 1
                self.cond.notify_all()
            return inner(body)

        return respond

    def slow_responder(self) -> Responder:
        inner = ConstantResponder()

        def respond(body: dict[str, Any]) -> Reply:
            with self.cond:
                self.slow += 1
                turn = self.slow
                self.waiting += 1
                self.cond.notify_all()
                released = self.cond.wait_for(
                    lambda: (
                        self.fast >= self.per_call * turn
                        or self.drained
                        or self.waiting == self.workers
                    ),
                    timeout=60,  # a hang is a failure: the counts below say why
                )
                self.waiting -= 1
            assert released, "held call never released"
            return inner(body)

        return respond

    def drain(self) -> None:
        with self.cond:
            self.drained = True
            self.cond.notify_all()


def test_a_slow_endpoint_gets_fewer_calls() -> None:
    """Least-in-flight routing: a call the slow endpoint holds keeps it from being picked.
    Round robin would send it 40 of 120 calls; holding each for 25 fast ones, it answers at
    most 4 before the work runs out and holds at most 2 then (6 workers cannot pile more on
    it while two fast endpoints have fewer in flight)."""
    workers, total = 6, 120
    held = HeldCalls(workers, per_call=25)
    with (
        ScriptedJudgeServer(held.fast_responder()) as fast_a,
        ScriptedJudgeServer(held.fast_responder()) as fast_b,
        ScriptedJudgeServer(held.slow_responder()) as slow,
    ):
        pool = EndpointPool(
            "scripted", [fast_a.base_url, fast_b.base_url, slow.base_url], retry=FAST_RETRY
        )
        left = total

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                if left == 0:
                    held.drain()
                await pool.choose(VERDICT, ["A", "B"])

        async def go() -> None:
            async with pool:
                await asyncio.gather(*(worker() for _ in range(workers)))

        asyncio.run(go())
        counts = [e["calls"] for e in pool.counts()]
    assert counts == [fast_a.calls, fast_b.calls, slow.calls]
    assert sum(counts) == total
    assert counts[2] <= 6, counts
    assert min(counts[:2]) >= 45, counts  # the fast two share the rest about evenly


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_rested_endpoint_is_tried_again_after_its_rest() -> None:
    clock = Clock()
    with (
        ScriptedJudgeServer(ConstantResponder()) as healthy,
        ScriptedJudgeServer(ConstantResponder(), faults=[Fault.http(503)]) as flaky,
    ):
        options = BackendOptions(max_retries=0, endpoint_rest_s=30)
        pool = EndpointPool(
            "scripted", [flaky.base_url, healthy.base_url], options, retry=FAST_RETRY, clock=clock
        )

        async def go() -> list[int]:
            seen = []
            async with pool:
                await pool.choose(VERDICT, ["A", "B"])  # flaky answers 503: healthy answers
                seen.append(flaky.calls)
                for _ in range(5):
                    await pool.choose(VERDICT, ["A", "B"])  # flaky rests: none go there
                seen.append(flaky.calls)
                clock.now += 29.0
                await pool.choose(VERDICT, ["A", "B"])
                seen.append(flaky.calls)
                clock.now += 1.0  # the rest is over: the next call tries flaky again
                await pool.choose(VERDICT, ["A", "B"])
                seen.append(flaky.calls)
                for _ in range(4):  # it answered, so it is back in the rotation
                    await pool.choose(VERDICT, ["A", "B"])
                seen.append(flaky.calls)
            return seen

        seen = asyncio.run(go())
    assert seen == [1, 1, 1, 2, 4]
    flaky_counts = pool.counts()[0]
    assert flaky_counts == {
        "endpoint": 1, "url": flaky.base_url, "calls": 4, "failures": 1, "rested": 1
    }  # fmt: skip


def test_an_endpoint_back_from_its_rest_gets_one_call_until_it_answers() -> None:
    clock = Clock()
    with (
        ScriptedJudgeServer(ConstantResponder(), latency_s=0.1) as healthy,
        ScriptedJudgeServer(ConstantResponder(), latency_s=0.1, faults=[Fault.http(503)]) as flaky,
    ):
        options = BackendOptions(max_retries=0, endpoint_rest_s=30)
        pool = EndpointPool(
            "scripted", [flaky.base_url, healthy.base_url], options, retry=FAST_RETRY, clock=clock
        )

        async def go() -> None:
            async with pool:
                await pool.choose(VERDICT, ["A", "B"])  # flaky fails it and rests
                clock.now += 31.0
                await asyncio.gather(*(pool.choose(VERDICT, ["A", "B"]) for _ in range(4)))

        asyncio.run(go())
        # On trial, it gets one of the four concurrent calls; the rest wait for no verdict on it.
        assert (flaky.calls, healthy.calls) == (2, 4)


@pytest.mark.parametrize(
    "fault",
    [Fault.http(500), Fault.http(429), Fault.drop(), Fault.delay(2.0), Fault.truncated_json()],
    ids=["5xx", "429", "dropped", "timeout", "malformed"],
)
def test_a_call_an_endpoint_fails_is_answered_by_another(fault: Fault) -> None:
    with (
        ScriptedJudgeServer(ConstantResponder(), fault_policy=lambda record: fault) as failing,
        ScriptedJudgeServer(ConstantResponder()) as healthy,
    ):
        options = BackendOptions(max_retries=1, timeout_s=0.3)
        pool = EndpointPool(
            "scripted", [failing.base_url, healthy.base_url], options, retry=FAST_RETRY
        )

        async def go() -> str:
            async with pool:
                return (await pool.choose(VERDICT, ["A", "B"])).text

        assert asyncio.run(go()) == "A"
        assert (failing.calls, healthy.calls) == (2, 1)  # its retries, then the other
    assert [(e["calls"], e["failures"], e["rested"]) for e in pool.counts()] == [
        (1, 1, 1), (1, 0, 0)
    ]  # fmt: skip


def test_every_endpoint_dead_fails_the_call_naming_each() -> None:
    urls = [closed_port_url() for _ in range(3)]
    pool = EndpointPool("scripted", urls, BackendOptions(max_retries=1), retry=FAST_RETRY)

    async def go() -> None:
        async with pool:
            await pool.choose(VERDICT, ["A", "B"])

    with pytest.raises(AllEndpointsFailed) as caught:
        asyncio.run(go())
    message = str(caught.value)
    assert message.startswith("openai:scripted: all 3 endpoints failed this call: ")
    assert "\n" not in message and caught.value.reason == "unreachable"
    for url in urls:
        assert f"cannot connect to {url} (connection refused; 2 attempts)" in message


def test_every_endpoint_dead_in_the_cli_is_a_clean_error(tmp_path: Path) -> None:
    world = with_candidates(make_world(tmp_path), PROMPTS[:3])
    urls = [closed_port_url() for _ in range(3)]
    with ScriptedJudgeServer(judge_responder()) as policy:
        code, _, err = invoke(generate_args(world, [",".join(urls)], policy.base_url))
    assert code == 1 and "Traceback" not in err
    first = err.splitlines()[0]
    assert first.startswith("Error: ") and "all 3 endpoints failed this call" in first
    assert all(url in first for url in urls)


def test_a_refused_request_is_not_sent_to_another_endpoint() -> None:
    with (
        ScriptedJudgeServer(ConstantResponder(), faults=[Fault.http(401, message="bad key")]) as a,
        ScriptedJudgeServer(ConstantResponder()) as b,
    ):
        pool = EndpointPool("scripted", [a.base_url, b.base_url], retry=FAST_RETRY)

        async def ask() -> None:
            async with pool:
                await pool.choose(VERDICT, ["A", "B"])

        with pytest.raises(BackendError) as caught:
            asyncio.run(ask())
        assert (a.calls, b.calls) == (1, 0)
    assert str(caught.value) == (
        f"openai:scripted at {a.base_url} failed after 1 attempt: HTTP 401: bad key"
    )
    assert pool.counts()[0]["failures"] == 0  # the request's fault, not the endpoint's


def test_a_list_of_urls_loads_a_pool_and_one_url_loads_one_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHARTER_JUDGE_BASE_URL", "http://127.0.0.1:9/v1, http://127.0.0.1:8/v1")
    pool = load_model("openai:m")
    assert isinstance(pool, EndpointPool) and pool.spec == "openai:m"
    assert pool.urls == ("http://127.0.0.1:9/v1", "http://127.0.0.1:8/v1")
    one = load_model("openai:m", BackendOptions(base_url="http://127.0.0.1:9/v1"))
    assert not isinstance(one, EndpointPool) and one.spec == pool.spec


@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [
        (["--judge-base-url", "http://127.0.0.1:9/v1,,http://127.0.0.1:8/v1"], {},
         "Error: --judge-base-url: item 2 of 3 is empty"),
        (["--judge-base-url", "http://127.0.0.1:9/v1,"], {},
         "Error: --judge-base-url: item 2 of 2 is empty"),
        (["--judge-base-url", "http://127.0.0.1:9/v1", "--judge-base-url", "127.0.0.1:8/v1"], {},
         "Error: --judge-base-url: item 2 of 2: '127.0.0.1:8/v1' is not an http:// or https://"),
        (["--judge-base-url", "http://a:9/v1,http://a:9/v1/"], {},
         "Error: --judge-base-url: item 2 of 2: 'http://a:9/v1/' is listed twice"),
        (["--judge-base-url", "http://a:99999/v1,http://b/v1"], {},
         "Error: --judge-base-url: item 1 of 2: 'http://a:99999/v1' has a bad port"),
        ([], {"CHARTER_JUDGE_BASE_URL": "http://a/v1, ftp://b/v1"},
         "Error: $CHARTER_JUDGE_BASE_URL: item 2 of 2: 'ftp://b/v1' is not an http://"),
        (["--policy-base-url", "http://a/v1,,"], {},
         "Error: --policy-base-url: item 2 of 3 is empty"),
        ([], {"CHARTER_ENDPOINT_REST_S": "-1"},
         "Error: CHARTER_ENDPOINT_REST_S='-1': Input should be greater than 0"),
    ],
)  # fmt: skip
def test_a_bad_list_of_urls_is_a_one_line_error(
    tmp_path: Path, flags: list[str], env: dict[str, str], expected: str
) -> None:
    world = make_world(tmp_path, PROMPTS[:2])
    args = [
        "generate", "--prompts", str(world["prompts"]), "--dir", str(world["principles"]),
        "--store", str(world["store"]), "--judge", "openai:scripted", "--policy", "openai:x",
        *flags,
    ]  # fmt: skip
    code, out, err = invoke(args, env={"CHARTER_JUDGE_BASE_URL": "", **env})
    assert code == 1, (out, err)
    assert err.startswith(expected) and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    if "CHARTER_ENDPOINT_REST_S" not in env:  # read when the models load
        assert not world["store"].exists()  # refused before a store was made


@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [
        (["--judge-base-url", "ftp://judge.example/v1"], {},
         "Error: --judge-base-url: 'ftp://judge.example/v1' is not an http:// or https:// URL"),
        (["--judge-base-url", "notaurl"], {},
         "Error: --judge-base-url: 'notaurl' is not an http:// or https:// URL with a host"),
        (["--judge-base-url", "http://a:99999/v1"], {},
         "Error: --judge-base-url: 'http://a:99999/v1' has a bad port"),
        ([], {"CHARTER_JUDGE_BASE_URL": "ftp://judge.example/v1"},
         "Error: $CHARTER_JUDGE_BASE_URL: 'ftp://judge.example/v1' is not an http://"),
        (["--policy-base-url", "notaurl"], {},
         "Error: --policy-base-url: 'notaurl' is not an http:// or https:// URL"),
        ([], {"OPENAI_BASE_URL": "notaurl"},
         "Error: --judge: cannot load 'openai:scripted': $OPENAI_BASE_URL: 'notaurl' is not an"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["generate", "judge compare"])
def test_one_bad_url_is_the_same_one_line_error_as_a_bad_list(
    tmp_path: Path, flags: list[str], env: dict[str, str], expected: str, command: str
) -> None:
    """One URL follows the list's rule: no run whose every call fails, or is retried for
    minutes, and no 'every judgment failed' with exit 0."""
    world = make_world(tmp_path, PROMPTS[:2])
    common = ["--dir", str(world["principles"]), "--judge", "openai:scripted", *flags]
    if command == "generate":
        args = ["generate", "--prompts", str(world["prompts"]), "--store", str(world["store"]),
                "--policy", "openai:x", *common]  # fmt: skip
    else:
        if "--policy-base-url" in flags:
            pytest.skip("judge compare has no policy")
        args = ["judge", "compare", "--prompt", "p", "--a", "x", "--b", "y", *common]
    blank = {"CHARTER_JUDGE_BASE_URL": "", "CHARTER_POLICY_BASE_URL": "", "OPENAI_BASE_URL": ""}
    started = time.monotonic()
    code, out, err = invoke(args, env={**blank, **env})
    assert code == 1, (out, err)
    assert err.startswith(expected) and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and out == ""
    assert time.monotonic() - started < 30  # refused, not retried (for minutes)
    if "OPENAI_BASE_URL" not in env:
        assert not world["store"].exists()  # before a store was made
    elif world["store"].exists():  # read when the model loads: still before any job
        with sqlite3.connect(world["store"]) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            assert "jobs" not in tables or not db.execute("SELECT * FROM jobs").fetchall()


def test_the_service_job_view_gives_each_endpoint_s_share_without_its_url(
    tmp_path: Path,
) -> None:
    from charter.client import CharterClient
    from charter.service.settings import ServiceSettings
    from tests.support.generation import PROMPTS as SAMPLED_PROMPTS
    from tests.support.generation import responder, write_constitution
    from tests.support.service import TOKEN_A, TOKEN_B, running_service

    with (
        ScriptedJudgeServer(responder()) as a,
        ScriptedJudgeServer(responder()) as b,
        ScriptedJudgeServer(responder()) as policy,
    ):
        settings = ServiceSettings.model_validate(
            {
                "store_path": tmp_path / "service.db",
                "principles_dir": write_constitution(tmp_path / "principles"),
                "judge": "openai:scripted",
                "policy": "openai:scripted",
                "judge_base_url": f"{a.base_url}, {b.base_url}",
                "policy_base_url": policy.base_url,
                "timeout_s": 5,
                "tokens": (TOKEN_A, TOKEN_B),
            }
        )
        with running_service(settings) as running, CharterClient(running.base_url, TOKEN_A) as c:
            view = c.wait_for_job(c.create_job(SAMPLED_PROMPTS[:4], seed=0).job.id, timeout=60)
            raw = c.http.get(f"/v1/jobs/{view.id}").text
            served = [a.calls, b.calls]
            # A second job on the same shared model reports its own calls, not the model's.
            later = c.wait_for_job(c.create_job(SAMPLED_PROMPTS[4:6], seed=0).job.id, timeout=60)
            served_later = [a.calls - served[0], b.calls - served[1]]
    later_counts = [e["calls"] for e in later.summary["calls"]["judge"]["endpoints"]]
    assert later.state == "done" and later_counts == served_later and sum(served_later) > 0
    assert view.state == "done", view.errors
    endpoints = view.summary["calls"]["judge"]["endpoints"]
    assert [e["calls"] for e in endpoints] == served and min(served) > 0
    assert [(e["endpoint"], e["url"]) for e in endpoints] == [
        (1, "the configured endpoint"), (2, "the configured endpoint")
    ]  # fmt: skip
    assert a.base_url not in raw and b.base_url not in raw
    assert "endpoints" not in view.summary["calls"]["policy"]


def test_the_service_is_ready_while_one_endpoint_answers(tmp_path: Path) -> None:
    import httpx

    from charter.service.settings import ServiceSettings
    from tests.support.generation import write_constitution
    from tests.support.service import TOKEN_A, running_service

    dead = closed_port_url()
    with ScriptedJudgeServer(ConstantResponder()) as live:
        values = {
            "store_path": tmp_path / "service.db",
            "principles_dir": write_constitution(tmp_path / "principles"),
            "judge": "openai:scripted",
            "tokens": (TOKEN_A,),
        }
        for urls, expected in [(f"{dead},{live.base_url}", 200), (f"{dead},{dead}x", 503)]:
            settings = ServiceSettings.model_validate({**values, "judge_base_url": urls})
            with running_service(settings) as running:
                ready = httpx.get(f"{running.base_url}/readyz")
            assert ready.status_code == expected, ready.text
            assert dead not in ready.text


def test_the_service_refuses_a_bad_list_of_endpoints_in_one_line(tmp_path: Path) -> None:
    from charter.service.settings import ServiceSettings, SettingsError
    from tests.support.service import TOKEN_A

    env = {"CHARTER_JUDGE_BASE_URL": "http://a/v1,,http://b/v1", "CHARTER_API_TOKENS": TOKEN_A}
    with pytest.raises(SettingsError) as caught:
        ServiceSettings.from_env(env)
    assert str(caught.value) == (
        "$CHARTER_JUDGE_BASE_URL: item 2 of 3 is empty (list URLs separated by single commas)"
    )
    for name, url in [("CHARTER_JUDGE_BASE_URL", "ftp://a/v1"), ("OPENAI_BASE_URL", "notaurl")]:
        with pytest.raises(SettingsError) as caught:
            ServiceSettings.from_env({name: url, "CHARTER_API_TOKENS": TOKEN_A})
        expected = f"${name}: {url!r} is not an http:// or https:// URL with a host"
        assert str(caught.value) == expected
    with pytest.raises(SettingsError) as caught:
        ServiceSettings.from_env({"CHARTER_API_TOKENS": TOKEN_A}, judge_base_url="notaurl")
    assert str(caught.value) == (
        "judge_base_url: 'notaurl' is not an http:// or https:// URL with a host"
    )
    with pytest.raises(SettingsError) as caught:
        ServiceSettings.from_env({"CHARTER_ENDPOINT_REST_S": "soon", "CHARTER_API_TOKENS": TOKEN_A})
    assert str(caught.value).startswith("CHARTER_ENDPOINT_REST_S='soon': ")
