"""The constitution as an RL reward: the core's deadline and fallbacks, the service's reward
routes (OpenRLHF's protocol among them) and `charter.rewards` (verl and TRL forms), against a
real uvicorn and the scripted judge server on loopback."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from charter.constitution import load_constitution
from charter.judge.reward import ConstitutionRewarder, RewardCounts, RewardDeadline, RewardItem
from charter.rewards import (
    ConstitutionRewards,
    RewardSettings,
    RewardSetupError,
    compute_score,
    compute_score_async,
    compute_score_batch,
)
from charter.service.settings import ServiceSettings, SettingsError
from tests.support.generation import (
    PRINCIPLES,
    PROMPTS,
    bad,
    good,
    qualify_judge,
    write_constitution,
)
from tests.support.judge_helpers import scripted_model
from tests.support.openrlhf_client import (
    openrlhf_executor,
    post_like_openrlhf,
    read_like_openrlhf,
)
from tests.support.scripted_server import (
    ConstantResponder,
    Fault,
    PreferenceResponder,
    RecordedRequest,
    ScriptedJudgeServer,
    last_user_message,
)
from tests.support.service import TOKEN_A, RunningService, ServiceProcess, running_service

P1, P2, P3 = PROMPTS[0], PROMPTS[1], PROMPTS[2]
SLOW = "A slow answer that the judge takes ages over."
SLOW_S = 30.0
DEADLINE_S = 3.0
"""The deadline where an item must be judged in time: a judgment of a fast answer takes tens
of ms, the first of a fresh process up to ~1 s at load 14 on 2 cores (1 s once failed there);
a slow one (`SLOW_S`) never makes it. Tests with no slow item do not wait for it."""
ANSWER_BOUND_S = 3.0
"""What a batch may take past its deadline in a test: the cancelled judgments, the rewards as
JSON and the round trip, on a 2-core machine under a busy loop and other developers' load
(measured: 0.7 s for 1,024 items at load 7). Far below `SLOW_S`: an answer within it did not
wait for the slow judgments. The deadline's 10% target is measured in BENCHMARKS.md, not here."""


def by_the_deadline(took: float, deadline_s: float) -> bool:
    """Whether an answer that had late judgments came at the deadline: not before it (it
    waited for them that long), and not after the slow judgments (it did not wait for them)."""
    return deadline_s - 0.01 <= took <= deadline_s + ANSWER_BOUND_S


def judge_responder() -> PreferenceResponder:
    texts: dict[str, float] = {SLOW: 1.0}
    for prompt in PROMPTS:
        texts[good(prompt)] = 1.0
        texts[bad(prompt)] = 0.0
    return PreferenceResponder(texts, p_confident=0.9)


def slow_on(marker: str) -> Any:
    """A fault policy delaying every judge request that mentions `marker` past any deadline."""

    def policy(record: RecordedRequest) -> Fault | None:
        body = record.body if isinstance(record.body, dict) else {}
        return Fault.delay(SLOW_S) if marker in last_user_message(body) else None

    return policy


@pytest.fixture
def judge_server() -> Iterator[ScriptedJudgeServer]:
    with ScriptedJudgeServer(judge_responder(), fault_policy=slow_on(SLOW)) as server:
        yield server


@pytest.fixture
def principles(tmp_path: Path) -> Path:
    return write_constitution(tmp_path / "principles")


def service_settings(
    tmp_path: Path, server: ScriptedJudgeServer, principles: Path, **overrides: Any
) -> ServiceSettings:
    values: dict[str, Any] = {
        "store_path": tmp_path / "service.db",
        "principles_dir": principles,
        "judge": "openai:scripted",
        "policy": "openai:scripted",
        "judge_base_url": server.base_url,
        "timeout_s": 60,
        "max_retries": 0,
        "tokens": (TOKEN_A,),
        "reward_deadline_s": DEADLINE_S,
    }
    values.update(overrides)
    return ServiceSettings.model_validate(values)


@pytest.fixture
def service(
    tmp_path: Path, judge_server: ScriptedJudgeServer, principles: Path
) -> Iterator[RunningService]:
    with running_service(service_settings(tmp_path, judge_server, principles)) as running:
        yield running


def with_credentials(url: str, token: str) -> str:
    """`url` with `charter:token@` in it: how an OpenRLHF user passes the token."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"charter:{token}@{parts.netloc}"))


# ---------------------------------------------------------------- the core


def _run(
    server: ScriptedJudgeServer, constitution: Any, items: list[RewardItem], deadline_s: float
) -> tuple[list[Any], float, ConstitutionRewarder]:
    async def go() -> tuple[list[Any], float, ConstitutionRewarder]:
        model = scripted_model(server, max_retries=0, timeout_s=60)
        rewarder = ConstitutionRewarder(
            model, constitution, reward_config=RewardDeadline(deadline_s=deadline_s)
        )
        try:
            started = time.perf_counter()
            results = await rewarder.rewards(items)
            return results, time.perf_counter() - started, rewarder
        finally:
            await model.aclose()

    return asyncio.run(go())


def test_rewards_are_p_yes_alone_or_p_beats_the_reference(
    judge_server: ScriptedJudgeServer, principles: Path
) -> None:
    constitution = load_constitution(principles)
    items = [
        RewardItem(P1, good(P1)),
        RewardItem(P1, bad(P1)),
        RewardItem(P2, good(P2), reference=bad(P2)),
        RewardItem(P2, bad(P2), reference=good(P2)),
        RewardItem(P2, bad(P2), reference=bad(P2)),  # equal texts tie without a call
    ]
    results, _, rewarder = _run(judge_server, constitution, items, 20.0)
    assert results[0].reward > 0.8 and results[1].reward < 0.2
    assert results[2].reward > 0.8 and results[3].reward < 0.2 and results[4].reward == 0.5
    assert not any(r.fallback or r.timed_out for r in results)
    for r in results[:4]:  # K=2 of the constitution's principles, each with its score
        assert len(r.principle_scores) == 2 and set(r.principle_scores) <= set(PRINCIPLES)
    assert results[0].principle_scores == pytest.approx(
        dict.fromkeys(results[0].principle_scores, 0.9)
    )
    assert rewarder.counts.judged == 4 and rewarder.counts.fallbacks == 0


def test_a_judge_slower_than_the_deadline_gives_fallbacks_within_the_deadline(
    judge_server: ScriptedJudgeServer, principles: Path
) -> None:
    constitution = load_constitution(principles)
    items = [RewardItem(P1, SLOW, group=P1), RewardItem(P2, SLOW), RewardItem(P2, SLOW, bad(P2))]
    results, took, rewarder = _run(judge_server, constitution, items, 1.0)
    assert by_the_deadline(took, 1.0), took
    assert [r.reward for r in results] == [0.5, 0.5, 0.5]
    assert all(r.fallback and r.timed_out for r in results)
    assert results[0].error == "no verdict by the deadline"
    assert rewarder.counts.timeouts == 3 and rewarder.counts.fallbacks == 3


def test_a_late_item_gets_its_groups_mean_and_a_lone_one_the_neutral_value(
    judge_server: ScriptedJudgeServer, principles: Path
) -> None:
    constitution = load_constitution(principles)
    items = [
        RewardItem(P1, good(P1), group=P1),
        RewardItem(P1, bad(P1), group=P1),
        RewardItem(P1, good(P3), group=P1),
        RewardItem(P1, SLOW, group=P1),
        RewardItem(P2, SLOW, group=P2),  # its whole group is late
        RewardItem(P2, good(P2)),  # no group: judged, not affected
    ]
    results, took, rewarder = _run(judge_server, constitution, items, DEADLINE_S)
    assert by_the_deadline(took, DEADLINE_S), took
    mean = sum(r.reward for r in results[:3]) / 3
    assert results[3].reward == pytest.approx(mean) and mean > 0.6  # not the neutral 0.5
    assert results[3].fallback and results[3].timed_out
    assert results[4].reward == 0.5 and results[4].fallback
    assert not results[5].fallback and results[5].reward > 0.8
    assert rewarder.counts.as_dict() == {
        "batches": 1, "items": 6, "judged": 4, "failed": 0, "timeouts": 2, "fallbacks": 2,
    }  # fmt: skip


def test_a_judgment_with_no_verdict_falls_back_without_a_timeout(principles: Path) -> None:
    constitution = load_constitution(principles)
    with ScriptedJudgeServer(judge_responder(), faults=[Fault.http(500)] * 4) as server:
        items = [RewardItem(P1, good(P1), group=P1), RewardItem(P1, bad(P1), group=P1)]
        results, _, rewarder = _run(server, constitution, items, 20.0)
    # Both principles of both items failed (4 calls, no retries): no verdict, group mean 0.5.
    assert all(r.fallback and not r.timed_out for r in results)
    assert [r.reward for r in results] == [0.5, 0.5]
    assert results[0].error is not None and "500" in results[0].error
    assert rewarder.counts.failed == 2 and rewarder.counts.timeouts == 0


def test_the_deadline_setting_is_bounded_and_reaches_the_service(tmp_path: Path) -> None:
    env = {"CHARTER_API_TOKENS": TOKEN_A, "CHARTER_REWARD_DEADLINE_S": "500"}
    with pytest.raises(SettingsError, match=r"reward_deadline_s: Input should be less than or"):
        ServiceSettings.from_env(env)
    settings = ServiceSettings.from_env({**env, "CHARTER_REWARD_DEADLINE_S": "12.5"})
    assert settings.reward_deadline_s == 12.5
    assert ServiceSettings.from_env({"CHARTER_API_TOKENS": TOKEN_A}).reward_deadline_s == 60.0
    assert RewardSettings.from_env({"CHARTER_REWARD_DEADLINE_S": "3"}).deadline_s == 3.0
    with pytest.raises(RewardSetupError) as caught:
        RewardSettings.from_env({"CHARTER_REWARD_DEADLINE_S": "0"})
    assert str(caught.value) == (
        "charter.rewards: CHARTER_REWARD_DEADLINE_S='0': Input should be greater than 0"
    )
    with pytest.raises(RewardSetupError, match=r"^charter.rewards: deadline_s: Input should be"):
        ConstitutionRewards(url="http://127.0.0.1:9", deadline_s=0)
    with pytest.raises(RewardSetupError, match=r"^charter.rewards: colour: Extra inputs"):
        ConstitutionRewards(colour="red")


# ---------------------------------------------------------------- OpenRLHF's protocol


def openrlhf_clients() -> list[str]:
    return ["openrlhf", "written-from-source"]


async def openrlhf_post(
    client: str, url: str, queries: list[str], prompts: list[str], labels: list[Any]
) -> dict[str, Any]:
    """What OpenRLHF's client gets back for one request (`client`: its code, or ours)."""
    if client == "openrlhf":
        executor = openrlhf_executor(url)
        if executor is None:
            pytest.skip("openrlhf is not installed (pip install --no-deps openrlhf)")
        replies = await executor._fetch_rewards_via_http(queries, prompts, labels)
        assert len(replies) == 1
        reply: dict[str, Any] = replies[0]
        return reply
    return await post_like_openrlhf(url, queries, prompts, labels)


@pytest.mark.parametrize("client", openrlhf_clients())
def test_openrlhfs_client_gets_rewards_scores_and_extra_logs(
    service: RunningService, judge_server: ScriptedJudgeServer, client: str
) -> None:
    url = with_credentials(service.base_url, TOKEN_A) + "/v1/rewards/openrlhf"
    template = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    prompts = [template.format(P1), template.format(P1), template.format(P2)]
    queries = [
        prompts[0] + good(P1) + "<|im_end|>",
        prompts[1] + bad(P1) + "<|im_end|>",
        prompts[2] + good(P2) + "<|im_end|>",
    ]
    labels = [None, None, bad(P2)]  # a string label is a reference answer
    body = asyncio.run(openrlhf_post(client, url, queries, prompts, labels))
    reward, scores, extra_logs = read_like_openrlhf(body)
    assert reward == scores and len(reward) == 3
    assert reward[0] > 0.8 and reward[1] < 0.2 and reward[2] > 0.8
    assert extra_logs["charter/fallback"] == [0.0, 0.0, 0.0]
    assert extra_logs["charter/timed_out"] == [0.0, 0.0, 0.0]
    assert extra_logs["charter/prefix_mismatch"] == [0.0, 0.0, 0.0]
    principle_keys = {k for k in extra_logs if k.startswith("charter/principle/")}
    assert principle_keys == {f"charter/principle/{p}" for p in PRINCIPLES}
    assert all(len(v) == 3 for v in extra_logs.values())
    # The third was a comparison with its label (both orders per principle, K=2).
    messages = [last_user_message(b) for b in judge_server.requests]
    assert sum(good(P2) in m and bad(P2) in m for m in messages) == 4


def test_a_query_that_does_not_start_with_its_prompt_is_flagged(service: RunningService) -> None:
    url = service.base_url + "/v1/rewards/openrlhf"
    prompt = f"User: {P1}\nAssistant: "
    queries = [
        prompt + good(P1),  # the usual case
        "<s>" + prompt + good(P1),  # a BOS decoded before the prompt: cut after its occurrence
        good(P1),  # the prompt is not there at all: the whole query is the response
    ]
    body = {"query": queries, "prompts": [prompt] * 3, "labels": [None] * 3}
    answer = httpx.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN_A}"}).json()
    logs = answer["extra_logs"]
    assert logs["charter/prefix_mismatch"] == [0.0, 1.0, 1.0]
    assert logs["charter/prompt_not_found"] == [0.0, 0.0, 1.0]
    assert answer["rewards"][0] == answer["rewards"][1] > 0.8
    assert answer["rewards"][2] > 0.8 and logs["charter/fallback"] == [0.0, 0.0, 0.0]


def test_the_openrlhf_route_answers_by_its_deadline_with_flagged_fallbacks(
    service: RunningService,
) -> None:
    url = with_credentials(service.base_url, TOKEN_A) + "/v1/rewards/openrlhf"
    prompts = [P1, P1, P2]
    queries = [P1 + good(P1), P1 + SLOW, P2 + SLOW]
    started = time.perf_counter()
    body = asyncio.run(post_like_openrlhf(url, queries, prompts, [None] * 3))
    took = time.perf_counter() - started
    assert by_the_deadline(took, DEADLINE_S), took  # the service's deadline
    rewards, _, logs = read_like_openrlhf(body)
    assert logs["charter/timed_out"] == [0.0, 1.0, 1.0]
    assert logs["charter/fallback"] == [0.0, 1.0, 1.0]
    assert rewards[1] == rewards[0] > 0.8  # its group's mean: the one judged in time
    assert rewards[2] == 0.5
    stats = httpx.get(
        service.base_url + "/v1/rewards/stats", headers={"Authorization": f"Bearer {TOKEN_A}"}
    ).json()
    assert stats == {
        "batches": 1, "items": 3, "judged": 1, "failed": 0, "timeouts": 2, "fallbacks": 2,
        "deadline_s": DEADLINE_S,
    }  # fmt: skip


def test_reward_responses_carry_the_judges_qualification(
    tmp_path: Path, judge_server: ScriptedJudgeServer, principles: Path
) -> None:
    """A reward is only as good as its judge: each response names the judge and how far it
    was measured to agree with people, unqualified until a `charter judge eval` of it is in
    the service's store."""
    settings = service_settings(tmp_path, judge_server, principles, reward_deadline_s=30.0)
    body = {"items": [{"prompt": P1, "response": good(P1)}]}
    auth = {"Authorization": f"Bearer {TOKEN_A}"}

    def rewarded(running: RunningService) -> dict[str, Any]:
        answer = httpx.post(running.base_url + "/v1/rewards", json=body, headers=auth, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["rewards"][0]["reward"] > 0.8
        return dict(answer.json())

    with running_service(settings) as running:
        first = rewarded(running)
        schema = httpx.get(running.base_url + "/openapi.json").json()
    assert first["judge"] == "openai:scripted"
    assert first["judge_qualification"]["qualified"] is False
    assert "judge openai:scripted: unqualified" in first["judge_qualification"]["text"]
    fields = schema["components"]["schemas"]["RewardResponse"]["properties"]
    assert {"rewards", "deadline_s", "judge", "judge_qualification"} <= set(fields)
    qualify_judge(settings.store_path, "openai:scripted", judge_server.base_url, principles)
    with running_service(settings) as running:
        later = rewarded(running)["judge_qualification"]
    assert later["qualified"] is True and later["agreement"] == 0.75 and later["pairs"] == 4
    assert "agreed with people on 75% of 4 decided labelled pairs" in later["text"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": "Basic Y2hhcnRlcjp3cm9uZy10b2tlbg=="},  # charter:wrong-token
        {"Authorization": f"Basic {TOKEN_A}"},  # not base64
    ],
    ids=["none", "wrong-bearer", "wrong-basic", "malformed-basic"],
)
def test_the_reward_routes_refuse_a_missing_or_bad_token(
    service: RunningService, judge_server: ScriptedJudgeServer, headers: dict[str, str]
) -> None:
    bodies = {
        "/v1/rewards/openrlhf": {"query": [P1 + good(P1)], "prompts": [P1], "labels": [None]},
        "/v1/rewards": {"items": [{"prompt": P1, "response": good(P1)}]},
    }
    for path, body in bodies.items():
        response = httpx.post(service.base_url + path, json=body, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
    assert judge_server.calls == 0


def test_a_wrong_token_in_the_url_is_not_called_a_bearer_token(
    service: RunningService, judge_server: ScriptedJudgeServer
) -> None:
    """OpenRLHF users put the token in the URL; a 401 that says "bearer" sends them looking
    for a header they never set."""
    url = with_credentials(service.base_url, "wrong-token-0123456789") + "/v1/rewards/openrlhf"
    body = {"query": [P1 + good(P1)], "prompts": [P1], "labels": [None]}
    response = httpx.post(url, json=body)
    assert response.status_code == 401
    message = response.json()["error"]["message"]
    assert "bearer" not in message.lower() and "URL" in message, message
    bearer = httpx.post(
        service.base_url + "/v1/rewards/openrlhf",
        json=body,
        headers={"Authorization": "Bearer wrong-token-0123456789"},
    )
    assert "bearer" in bearer.json()["error"]["message"]
    assert judge_server.calls == 0


def test_openrlhf_requests_that_do_not_fit_are_one_line_422s(service: RunningService) -> None:
    url = service.base_url + "/v1/rewards/openrlhf"
    auth = {"Authorization": f"Bearer {TOKEN_A}"}
    cases = [
        ({"query": ["a", "b"], "prompts": ["a"]}, "prompts has 1 items and query 2"),
        ({"query": ["a"], "prompts": ["a"], "labels": [1, 2]}, "labels has 2 items and query 1"),
        ({"query": [], "prompts": []}, "query: List should have at least 1 item"),
        ({"query": "a", "prompts": ["a"]}, "query: Input should be a valid list"),
    ]
    for body, message in cases:
        response = httpx.post(url, json=body, headers=auth)
        assert response.status_code == 422, body
        error = response.json()["error"]
        assert message in error["message"] and "\n" not in error["message"], error


LONE = "hi \\ud800 there"
"""A lone surrogate as JSON spells it: Python's json decodes it, no UTF-8 encoder writes it."""


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/v1/rewards/openrlhf", f'{{"query": ["{LONE}"], "prompts": ["hi"]}}', "body.query: [0]"),
        ("/v1/rewards/openrlhf", f'{{"query": ["a b"], "prompts": ["{LONE}"]}}',
         "body.prompts: [0]"),
        ("/v1/rewards/openrlhf",
         f'{{"query": ["a b"], "prompts": ["a"], "labels": ["{LONE}"]}}', "body.labels: [0]"),
        ("/v1/rewards", f'{{"items": [{{"prompt": "p", "response": "{LONE}"}}]}}',
         "body.items[0].response"),
        ("/v1/rewards", f'{{"items": [{{"prompt": "{LONE}", "response": "r"}}]}}',
         "body.items[0].prompt"),
        ("/v1/feedback/compare", f'{{"prompt": "p", "a": "{LONE}", "b": "y"}}', "body.a"),
        # The jobs route reads its body with pydantic's own JSON parser, which refuses it.
        ("/v1/jobs", f'{{"prompts": ["{LONE}"]}}', "body: Invalid JSON: unexpected end of hex"),
    ],
)  # fmt: skip
def test_a_lone_surrogate_is_a_one_line_422_naming_where(
    service: RunningService,
    judge_server: ScriptedJudgeServer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: str,
    where: str,
) -> None:
    """A body no client could have encoded from real text (OpenRLHF decodes tokens to valid
    text) is refused as the docs promise, not judged into a fallback and an encoding error."""
    headers = {"Authorization": f"Bearer {TOKEN_A}", "Content-Type": "application/json"}
    response = httpx.post(service.base_url + path, content=body.encode(), headers=headers)
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert message.startswith(where) and "\n" not in message, message
    if "Invalid JSON" not in where:
        assert "lone surrogate (U+D800) at character 4" in message, message
    assert judge_server.calls == 0
    assert "UnicodeEncodeError" not in caplog.text


# ---------------------------------------------------------------- verl and TRL


def verl_row(prompt: str, response: str, ground_truth: Any = None) -> dict[str, Any]:
    """The keyword arguments verl's naive reward manager passes `compute_score`."""
    return {
        "data_source": "charter/test",
        "solution_str": response,
        "ground_truth": ground_truth,
        "extra_info": {"prompt": prompt, "index": 0, "split": "train"},
    }


@pytest.fixture(params=["url", "in-process"])
def rewards(
    request: pytest.FixtureRequest,
    service: RunningService,
    judge_server: ScriptedJudgeServer,
    principles: Path,
) -> Iterator[ConstitutionRewards]:
    if request.param == "url":
        found = ConstitutionRewards(url=service.base_url, token=TOKEN_A, deadline_s=DEADLINE_S)
    else:
        found = ConstitutionRewards(
            judge="openai:scripted",
            judge_base_url=judge_server.base_url,
            principles=principles,
            deadline_s=DEADLINE_S,
        )
    yield found
    found.close()


def test_verl_compute_score_sync_async_and_batch(rewards: ConstitutionRewards) -> None:
    high = rewards.compute_score(**verl_row(P1, good(P1)))
    low = rewards.compute_score(**verl_row(P1, bad(P1)))
    assert isinstance(high, dict) and isinstance(low, dict)
    assert high["score"] > 0.8 > 0.2 > low["score"]
    assert high["fallback"] == 0.0 and high["timed_out"] == 0.0
    # A string ground truth is a reference answer: P(response beats it); equal texts tie.
    assert rewards.compute_score(**verl_row(P1, bad(P1), good(P1)))["score"] < 0.2  # type: ignore[index]
    assert rewards.compute_score(**verl_row(P1, good(P1), good(P1)))["score"] == 0.5  # type: ignore[index]

    assert inspect.iscoroutinefunction(rewards.compute_score_async)  # what verl checks
    awaited = asyncio.run(rewards.compute_score_async(**verl_row(P1, good(P1))))
    assert awaited == high

    batch = rewards.compute_score_batch(
        data_sources=["charter/test"] * 5,
        solution_strs=[good(P1), bad(P1), good(P3), SLOW, SLOW],
        ground_truths=[None] * 5,
        extra_infos=[{"prompt": P1}] * 4 + [{"prompt": P2}],
    )
    scores = [b["score"] for b in batch]  # type: ignore[index]
    assert scores[0] > 0.8 and scores[1] < 0.2
    mean = sum(scores[:3]) / 3
    assert scores[3] == pytest.approx(mean) and mean > 0.6  # late: its prompt's mean
    assert scores[4] == 0.5  # late, alone with its prompt
    assert [b["timed_out"] for b in batch] == [0.0, 0.0, 0.0, 1.0, 1.0]  # type: ignore[index]
    assert rewards.counts.timeouts == 2


def test_trl_reward_func_form(rewards: ConstitutionRewards) -> None:
    func = rewards.trl_reward_func()
    conversational = [[{"role": "assistant", "content": good(P2)}]]
    values = func(prompts=[P1, P1, [{"role": "user", "content": P2}]],
                  completions=[good(P1), bad(P1), *conversational])  # fmt: skip
    assert len(values) == 3 and all(isinstance(v, float) for v in values)
    assert values[0] is not None and values[1] is not None and values[2] is not None
    assert values[0] > 0.8 and values[1] < 0.2 and values[2] > 0.8
    against = func(prompts=[P1, P1], completions=[bad(P1), good(P1)], reference=[good(P1)] * 2)
    assert against[0] is not None and against[0] < 0.2
    assert against[1] == 0.5  # equal to its reference: a tie (pointwise it would score 0.9)


def test_verl_module_functions_read_reward_kwargs_and_the_environment(
    service: RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARTER_API_TOKEN", TOKEN_A)
    kwargs = {"url": service.base_url, "deadline_s": DEADLINE_S, "reward_router_address": None}
    result = compute_score(**verl_row(P1, good(P1)), **kwargs)
    assert isinstance(result, dict) and result["score"] > 0.8
    assert asyncio.run(compute_score_async(**verl_row(P1, good(P1)), **kwargs)) == result
    batch = compute_score_batch(
        data_sources=["d"], solution_strs=[bad(P1)], ground_truths=[None],
        extra_infos=[{"question": "q", "prompt": P1}], **kwargs, return_dict=False,
    )  # fmt: skip
    assert isinstance(batch[0], float) and batch[0] < 0.2


def test_verl_rows_without_a_prompt_are_a_clear_error(service: RunningService) -> None:
    rewards = ConstitutionRewards(url=service.base_url, token=TOKEN_A)
    row = verl_row(P1, good(P1))
    row["extra_info"] = {"question": P1, "index": 3}
    with pytest.raises(RewardSetupError) as caught:
        rewards.compute_score(**row)
    assert str(caught.value) == (
        "charter.rewards: extra_info has no 'prompt' (keys: ['index', 'question']); put each "
        "row's prompt in extra_info['prompt'] when preparing the data, or name its key with "
        "prompt_key="
    )
    by_key = ConstitutionRewards(url=service.base_url, token=TOKEN_A, prompt_key="question")
    assert by_key.compute_score(**row)["score"] > 0.8  # type: ignore[index]
    row["extra_info"] = None
    with pytest.raises(RewardSetupError, match=r"extra_info has no 'prompt' \(keys: none\)"):
        rewards.compute_score(**row)


def test_url_mode_falls_back_when_the_service_is_down_and_stops_on_a_bad_token(
    service: RunningService,
) -> None:
    down = ConstitutionRewards(url="http://127.0.0.1:9", token=TOKEN_A, deadline_s=1.0)
    result = down.compute_score(**verl_row(P1, good(P1)))
    assert result == {"score": 0.5, "fallback": 1.0, "timed_out": 0.0}
    assert down.counts.fallbacks == 1
    refused = ConstitutionRewards(url=service.base_url, token="not-a-token-0123456789")
    with pytest.raises(RewardSetupError, match=r"HTTP 401 unauthorized: .*CHARTER_API_TOKEN"):
        refused.compute_score(**verl_row(P1, good(P1)))


def test_verl_and_trl_against_charter_serve_started_from_the_cli(
    tmp_path: Path, judge_server: ScriptedJudgeServer, principles: Path
) -> None:
    service = ServiceProcess(
        ["--store", str(tmp_path / "s.db"), "--dir", str(principles),
         "--reward-deadline", str(DEADLINE_S),
         "--judge", "openai:scripted", "--judge-base-url", judge_server.base_url],
        {"CHARTER_API_TOKENS": TOKEN_A, "CHARTER_REWARD_DEADLINE_S": "100"},  # the flag wins
        tmp_path / "service.log",
        tmp_path,
    )  # fmt: skip
    try:
        service.start()
        rewards = ConstitutionRewards(url=service.base_url, token=TOKEN_A)
        row = verl_row(P1, good(P1))
        # The deadline counts from a request's arrival: a fresh process's first judge call
        # (imports, connections) can use it up on a loaded machine, so warm it once.
        rewards.compute_score(**verl_row(P2, good(P2)))
        assert rewards.compute_score(**row)["score"] > 0.8  # type: ignore[index]
        started = time.perf_counter()
        late = rewards.compute_score(**verl_row(P1, SLOW))
        assert by_the_deadline(time.perf_counter() - started, DEADLINE_S)  # --reward-deadline
        assert late == {"score": 0.5, "fallback": 1.0, "timed_out": 1.0}
        trl = rewards.trl_reward_func()(prompts=[P1, P1], completions=[bad(P1), SLOW])
        assert trl[0] is not None and trl[0] < 0.2 and trl[1] == trl[0]  # late: the group mean
        stats = httpx.get(
            service.base_url + "/v1/rewards/stats", headers={"Authorization": f"Bearer {TOKEN_A}"}
        ).json()
        assert (
            stats["deadline_s"] == DEADLINE_S and stats["timeouts"] == 2 and stats["batches"] == 4
        )  # with the warm-up
        rewards.close()
    finally:
        service.stop()


def test_a_reward_request_deadline_is_held_to_the_settings_bounds(service: RunningService) -> None:
    auth = {"Authorization": f"Bearer {TOKEN_A}"}
    item = {"prompt": P1, "response": good(P1)}
    response = httpx.post(
        service.base_url + "/v1/rewards", json={"items": [item], "deadline_s": 500}, headers=auth
    )
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert message == "body.deadline_s: Input should be less than or equal to 170"
    ok = httpx.post(
        service.base_url + "/v1/rewards", json={"items": [item], "deadline_s": 5}, headers=auth
    ).json()
    assert ok["deadline_s"] == 5 and ok["rewards"][0]["reward"] > 0.8


def test_reward_counts_add_up_when_threads_add_at_once() -> None:
    """verl's threaded reward manager calls one client from several threads; every batch's
    counts must reach the totals (without the lock this lost about a third of them)."""
    totals = RewardCounts()
    one_batch = RewardCounts(batches=1, items=2, judged=2, timeouts=1)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to expose a race
    try:
        threads = [
            threading.Thread(target=lambda: [totals.add(one_batch) for _ in range(5000)])
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    assert totals.as_dict() == {
        "batches": 40_000, "items": 80_000, "judged": 80_000, "failed": 0, "timeouts": 40_000,
        "fallbacks": 40_000,
    }  # fmt: skip


# ---------------------------------------------------------------- the deadline at scale

BATCH = 1024  # the most a request may hold
BATCH_DEADLINE_S = 2.0
"""When every judge request of a batch was built up front, that blocked the event loop for
6-7 s here (under the busy loop, load 7): no item was judged, the answer came 4-5 s late."""


@pytest.fixture
def busy_loop() -> Iterator[None]:
    """A competing process spinning on the CPU for the test's duration."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def test_a_full_batch_under_cpu_load_answers_by_its_deadline_with_fallbacks(
    tmp_path: Path, principles: Path, busy_loop: None
) -> None:
    # 2,048 judge calls (K=2), 16 in flight at 50 ms each: a few hundred fit in the deadline.
    judge = ScriptedJudgeServer(ConstantResponder("Yes", p=0.8), latency_s=0.05)
    with judge, running_service(service_settings(tmp_path, judge, principles)) as service:
        items = [
            {"prompt": f"{P1} ({i})", "response": good(P1), "group": str(i % 64)}
            for i in range(BATCH)
        ]
        body = {"items": items, "deadline_s": BATCH_DEADLINE_S}
        auth = {"Authorization": f"Bearer {TOKEN_A}"}
        started = time.perf_counter()
        url = service.base_url + "/v1/rewards"
        response = httpx.post(url, json=body, headers=auth, timeout=120)
        took = time.perf_counter() - started
    assert response.status_code == 200
    answer = response.json()
    assert by_the_deadline(took, BATCH_DEADLINE_S), (took, answer["timeouts"])
    rewards = answer["rewards"]
    judged = [i for i, r in enumerate(rewards) if not r["timed_out"]]
    late = [i for i, r in enumerate(rewards) if r["timed_out"]]
    assert judged and late, len(judged)  # the judge answered; the deadline cut the rest off
    assert answer["timeouts"] == answer["fallbacks"] == len(late)
    yes = rewards[judged[0]]["reward"]
    assert yes > 0.9 and all(rewards[i]["reward"] == yes for i in judged)  # the judge's P(yes)
    assert not any(rewards[i]["fallback"] or rewards[i]["error"] for i in judged)
    judged_groups = {i % 64 for i in judged}
    for i in late:  # the documented fallback: its group's mean, else the neutral 0.5
        assert rewards[i]["fallback"] and rewards[i]["error"] == "no verdict by the deadline"
        assert rewards[i]["reward"] == pytest.approx(yes if i % 64 in judged_groups else 0.5)
