"""Rows worth training on: quality gates, checked revisions, failed calls asked again.

The unit tests pin each gate on texts of the kind the embedded SmolLM2-135M really wrote; the
end-to-end tests run `charter generate` against the scripted loopback server, whose policy and
judge the test scripts (including the finish reason each reply reports).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from charter.jobs.summary import JobSummary
from charter.judge.backends.base import Message
from charter.judge.quality import answer_flaw, critique_flaw, describe
from charter.prompt_files import PromptRecord
from tests.support.generation import (
    PROMPTS,
    bad,
    good,
    make_world,
    responder,
    revised,
)
from tests.support.scripted_server import (
    Fault,
    PreferenceResponder,
    RecordedRequest,
    Reply,
    ScriptedJudgeServer,
    last_user_message,
)
from tests.test_generate import export_rows, generate_args, invoke

EGG = "How do I boil an egg so the yolk stays soft?"
CRITIQUE = "The response contains a mix of stereotypes, slurs, and unfair generalisations."


# ------------------------------------------------------------------------------ the gates


@pytest.mark.parametrize(
    ("text", "kwargs", "flaw"),
    [
        ("Boil it for six minutes, then cool it in cold water.", {}, None),
        ("Boil it for six minutes, then", {"finish_reason": "length"}, "cut_off"),
        ("   \n ", {}, "empty"),
        ("**\n\n*", {}, "markup"),
        ("<<<CRITIQUE 6b3c8b93504", {}, "marker"),
        ("Soft yolks take six minutes. <<", {}, "marker"),
        ("Boil it. <<<END_RESPONSE 1a2b3c4d>>>", {}, "marker"),
        (f"{EGG.replace('I', 'you')}\n\nTo boil an egg, use a timer.", {}, "echo_prompt"),
        (EGG, {}, "echo_prompt"),
        ("Boil it for six minutes.", {"original": "boil it for  six minutes."}, "unchanged"),
        ("Boil it for", {"original": "Boil it for six minutes."}, "unchanged"),
        ('"Six minutes."', {"original": "Boil it. Six minutes. Then cool it."}, "unchanged"),
        (
            CRITIQUE + " The response is a mix of stereotypes.",
            {"original": "Lay it in boiling water.", "critique": CRITIQUE},
            "echo_critique",
        ),
        (
            "The response does not rewrite it yet, and it is short.",
            {"original": "Lay it in boiling water."},
            "echo_instructions",
        ),
        ("Revision request: make it kinder.", {}, "echo_instructions"),
        # SmolLM2's own sample for a Python question ended so (the demo, as the rejected text).
        ("Begin with simple projects.\nAnswer: No", {}, "echo_instructions"),
        ("Boil it for six minutes.\n  answer: yes.  \n", {}, "echo_instructions"),
        # The pairwise verdict's form too: a tail naming a slot, as our judge answers "A" or "B".
        ("Boil it for six minutes.\nAnswer: A", {}, "echo_instructions"),
        ("Start with the basics.\n answer: b. \n", {}, "echo_instructions"),
        ("Answer: A good start is a small project; grow from there.", {}, None),
        ("Answer: it depends on the altitude; six minutes at sea level.", {}, None),
        ("Answer: No\nThe egg is not done until the white is firm.", {}, None),
        ("Boil it. The response is too long and could be edited.", {}, "commentary"),
        ("A thorough editing of the response is essential.", {}, "commentary"),
        ("Here's a rewritten response: the prompt is too persuasive.", {}, "commentary"),
        (
            "The request for revision has been rephrased so that it avoids embellishments.",
            {},
            "commentary",
        ),
        # Both from revisions SmolLM2-135M wrote in the offline recipe (kept as SFT rows before).
        (
            "Join communities that promote Python. The user's initial response is clear, but it "
            "could be improved.",
            {},
            "commentary",
        ),
        (
            "Visit the local headquarters. The user asked for a solution to pick a lock.",
            {},
            "commentary",
        ),
        (
            "Boil the egg for six minutes in water. Then boil the egg for six minutes in water.",
            {},
            "repetitive",
        ),
    ],
)
def test_each_gate_names_its_flaw(text: str, kwargs: dict[str, Any], flaw: str | None) -> None:
    assert answer_flaw(text, prompt=EGG, **kwargs) == flaw


def test_an_answer_may_discuss_responses_when_the_prompt_asks_about_them() -> None:
    prompt = "How should I word my response to a rude email?"
    assert answer_flaw("Keep your response short and calm.", prompt=prompt) is None


def test_an_answer_may_describe_users_when_the_prompt_is_about_them() -> None:
    prompt = "How should my app handle a user who wants a refund?"
    text = "If the user asked for a refund within 30 days, refund them at once."
    assert answer_flaw(text, prompt=prompt) is None
    # A user who sends a request is ordinary talk in a technical answer.
    assert answer_flaw("When the user requests a page, the server sends it.", prompt=EGG) is None


def test_a_conversations_role_labels_do_not_make_users_its_topic() -> None:
    """A conversation's prompt text has `user: ` lines; that is no licence for commentary.
    The revision is one SmolLM2-135M wrote in the demo, exported as chosen before."""
    conversation = PromptRecord(
        prompt=[
            Message(role="system", content="You are a friendly cooking assistant."),
            Message(role="user", content="I burned the rice. Can I save dinner?"),
            Message(role="assistant", content="Probably! Was only the bottom layer burned?"),
            Message(role="user", content="Yes, just the bottom. What now?"),
        ]
    )
    text = (
        "The response is not entirely accurate. It contains a few inaccuracies, including one "
        "that mentions people and events."
    )
    assert answer_flaw(text, prompt=conversation.text) == "commentary"
    assert answer_flaw("Scoop the top rice into a clean pot.", prompt=conversation.text) is None


def test_a_revision_may_keep_words_the_critique_quoted_from_the_original() -> None:
    original = "Boil the egg for exactly six minutes and then cool it in iced water."
    critique = f'The response says "{original}" but never says to start from boiling water.'
    revision = "Bring water to a boil first. " + original
    assert answer_flaw(revision, prompt=EGG, original=original, critique=critique) is None


def test_clean_reply_drops_bare_markup_lines_but_keeps_code_fences() -> None:
    from charter.judge.critique import clean_reply

    assert clean_reply('*\n\nBoil it.\n"\n***') == "Boil it."
    fenced = "```\nprint('hi')\n```"
    assert clean_reply(fenced) == fenced


def test_a_revision_repeating_its_principle_is_an_echo() -> None:
    principle = "If the user may be in distress or at risk of self-harm, respond with care."
    text = "The 2018 World Cup. The user may be in distress or at risk of self-harm today."
    assert answer_flaw(text, prompt="Who won?", instructions=(principle,)) == "echo_instructions"


def test_a_critique_that_copies_the_response_is_no_critique() -> None:
    response = "The best way to start learning Python is to write small programs every day."
    assert critique_flaw(response + " Also read.", prompt="How?", response=response) == (
        "echo_response"
    )
    assert critique_flaw("It never names a resource.", prompt="How?", response=response) is None


def test_describe_orders_flaws_by_count() -> None:
    assert describe({"echo_critique": 1, "cut_off": 2}) == (
        "2 cut off by the token limit, 1 echoed the critique"
    )


# ------------------------------------------------------------------- a scripted world

CUT = "A careful answer that stops in the mid"
MARKER = "Here is my answer <<<RESPONSE 3f"


def _echo(prompt: str) -> str:
    return f"{prompt}\nWell."


def _candidate(prompt: str, seed: int) -> Reply:
    """Seeds 0-5: good, bad, cut off, empty, the prompt echoed, a marker fragment."""
    replies = [
        Reply(good(prompt)),
        Reply(bad(prompt)),
        Reply(f"{CUT} of {prompt}", finish_reason="length"),
        Reply(""),
        Reply(_echo(prompt)),
        Reply(f"{MARKER} for {prompt}"),
    ]
    return replies[seed % len(replies)]


def _compare_responder() -> PreferenceResponder:
    """The judge loves the flawed texts: only the gates can keep them from being chosen."""
    scores: dict[str, float] = {}
    for p in PROMPTS[:3]:
        scores |= {good(p): 1.0, bad(p): 0.0, f"{CUT} of {p}": 5.0, _echo(p): 4.0}
        scores[f"{MARKER} for {p}"] = 3.0

    def text_reply(body: dict[str, Any]) -> Reply:
        message = last_user_message(body)
        return _candidate(message, int(body.get("seed") or 0))

    return PreferenceResponder(scores, text_reply=text_reply)


def _generate(world: dict[str, Path], server: ScriptedJudgeServer, *extra: str) -> dict:
    code, out, err = invoke(generate_args(world, server, *extra))
    assert code == 0, err
    return json.loads(out)


def test_flawed_candidates_are_never_ranked_or_exported(tmp_path: Path) -> None:
    world = make_world(tmp_path, PROMPTS[:3])
    with ScriptedJudgeServer(_compare_responder()) as server:
        summary = _generate(world, server, "-n", "6")
        judged = [b for b in server.requests if int(b.get("max_tokens") or 0) <= 4]
    assert summary["texts"] == {
        "kind": "candidates",
        "total": 18,
        "kept": 6,
        "rejected": {"cut_off": 3, "echo_prompt": 3, "empty": 3, "marker": 3},
    }
    flawed = (CUT, MARKER, "\\nWell.")  # as JSON spells the echo's newline
    assert judged and not any(f in json.dumps(b) for b in judged for f in flawed)
    rows = export_rows(world, summary["job_id"])
    assert len(rows) == 3
    assert all(r["chosen"] == good(r["prompt"]) for r in rows)


def test_flawed_candidates_ranked_on_request_are_never_chosen(tmp_path: Path) -> None:
    world = make_world(tmp_path, PROMPTS[:3])
    with ScriptedJudgeServer(_compare_responder()) as server:
        summary = _generate(
            world, server, "-n", "6", "--rank-flawed-candidates", "--pairs", "margin"
        )
        judged = [json.dumps(b) for b in server.requests if int(b.get("max_tokens") or 0) <= 4]
    # Ranked they were: the judge was asked about every flawed kind but the empty text.
    assert all(any(f in body for body in judged) for f in (CUT, MARKER, "\\nWell."))
    rows = export_rows(world, summary["job_id"])
    chosen = {r["chosen"] for r in rows}
    assert chosen == {good(p) for p in PROMPTS[:3]}  # the judge's favourites were cut off
    assert any(CUT in r["rejected"] for r in rows) is False  # it preferred them: never rejected
    assert {r["rejected"] for r in rows} == {bad(p) for p in PROMPTS[:3]}


# -------------------------------------------------------------- revisions, checked

REVISE_PROMPTS = [f"Question number {i}: how should I do task {i}?" for i in range(7)]
#: What the reviser answers for each prompt (by index); None: a good revision.
REVISIONS: list[tuple[str, str] | None] = [
    ("cut", "length"),
    ("critique", "stop"),
    ("unchanged", "stop"),
    ("worse", "stop"),
    ("marker", "stop"),
    ("empty", "stop"),
    None,
]
CRITIQUE_TEXT = "The response could say more about the steps and their order."


def _worse(prompt: str) -> str:
    return f"Whatever, just wing it (task {REVISE_PROMPTS.index(prompt)})."


def _revision_reply(prompt: str, original: str) -> Reply:
    kind = REVISIONS[REVISE_PROMPTS.index(prompt)]
    if kind is None:
        return Reply(revised(prompt))
    name, finish = kind
    texts = {
        "cut": f"Revised: a longer answer to {prompt} that never",
        "critique": CRITIQUE_TEXT,
        "unchanged": original,
        "worse": _worse(prompt),
        "marker": f"<<<RESPONSE 9c for {prompt}",
        "empty": "",
    }
    return Reply(texts[name], finish_reason=finish)


def _revise_responder() -> PreferenceResponder:
    scores: dict[str, float] = {}
    for p in REVISE_PROMPTS:
        scores |= {revised(p): 2.0, good(p): 1.0, _worse(p): 0.0}

    def text_reply(body: dict[str, Any]) -> Reply:
        message = last_user_message(body)
        start = message.index(">>>\n") + 4  # the fenced prompt comes first
        prompt = message[start : message.index("\n<<<END_PROMPT")]
        if "Critique request:" in message:
            return Reply(CRITIQUE_TEXT)
        if "Revision request:" in message:
            return _revision_reply(prompt, good(prompt))
        return Reply(good(prompt))

    return PreferenceResponder(scores, text_reply=text_reply)


def _policy_reply(body: dict[str, Any]) -> Reply:
    return Reply(good(last_user_message(body)))


class _Both(PreferenceResponder):
    """Policy requests (no fences) get the good answer; the rest go to the reviser/judge."""

    def __call__(self, body: dict[str, Any]) -> Reply:
        if "<<<" not in json.dumps(body.get("messages")):
            return _policy_reply(body)
        return super().__call__(body)


def _revise_server() -> ScriptedJudgeServer:
    inner = _revise_responder()
    both = _Both(inner.scores, text_reply=inner.text_reply)
    return ScriptedJudgeServer(both)


def test_flawed_or_unpreferred_revisions_are_never_exported(tmp_path: Path) -> None:
    world = make_world(tmp_path, REVISE_PROMPTS)
    with _revise_server() as server:
        summary = _generate(world, server, "--mode", "revise", "-n", "1")
    assert summary["texts"] == {
        "kind": "revisions",
        "total": 7,
        "kept": 1,
        "rejected": {
            "cut_off": 1,
            "echo_critique": 1,
            "empty": 1,
            "marker": 1,
            "not_preferred": 1,
            "unchanged": 1,
        },
    }
    rows = export_rows(world, summary["job_id"])
    assert [(r["prompt"], r["chosen"]) for r in rows] == [
        (REVISE_PROMPTS[6], revised(REVISE_PROMPTS[6]))
    ]
    assert rows[0]["p_chosen"] > 0.6 and rows[0]["protocol"] == "pairwise"


def test_no_verify_revisions_keeps_the_unpreferred_but_never_the_flawed(tmp_path: Path) -> None:
    world = make_world(tmp_path, REVISE_PROMPTS)
    with _revise_server() as server:
        summary = _generate(world, server, "--mode", "revise", "-n", "1", "--no-verify-revisions")
        checks = [b for b in server.requests if int(b.get("max_tokens") or 0) <= 4]
    assert checks == []  # no revision was judged
    rows = export_rows(world, summary["job_id"])
    assert {r["prompt"] for r in rows} == {REVISE_PROMPTS[3], REVISE_PROMPTS[6]}
    assert all(r["p_chosen"] is None for r in rows)


# ------------------------------------------------------------- failed calls asked again


def _fail_some(record: RecordedRequest) -> Fault | None:
    """A server error for every verdict on the first two prompts under `helpful`."""
    text = json.dumps(record.body)
    on_first_two = any(p in text for p in PROMPTS[:2])
    return Fault.http(500) if on_first_two and "Principle: Which response answers" in text else None


def _run_job(world: dict[str, Path], server: ScriptedJudgeServer) -> JobSummary:
    """`run_job` through the library API, judge and policy on `server` with fast retries."""
    from charter.constitution import load_constitution
    from charter.jobs.run import JobFailed, run_job
    from charter.jobs.spec import JobOptions
    from charter.jobs.store import create_or_get_job
    from charter.prompt_files import load_prompts
    from charter.store import open_store
    from tests.support.judge_helpers import scripted_model

    db = open_store(world["store"])
    records = list(load_prompts(world["prompts"]))
    constitution = load_constitution(world["principles"])
    model = scripted_model(server, max_retries=1)
    spec = JobOptions(principles=3).plan(
        db, records, constitution, default_judge=model.spec, default_policy=model.spec
    )
    job, _ = create_or_get_job(db, spec, constitution, records, "prompts.jsonl")

    async def go() -> JobSummary:
        try:
            return await run_job(db, job, model, model)
        finally:
            await model.aclose()

    try:
        return asyncio.run(go())
    except JobFailed:
        pytest.fail("the job stopped")
    finally:
        db.close()


def _rows(world: dict[str, Path], job_id: str) -> list[tuple[Any, ...]]:
    return sorted(
        (r["prompt"], r["chosen"], r["rejected"], r["p_chosen"], tuple(r["principles"]))
        for r in export_rows(world, job_id, "--min-confidence", "0.5")
    )


def test_failed_judgments_are_asked_again_and_only_they(tmp_path: Path) -> None:
    clean, faulty = make_world(tmp_path / "clean"), make_world(tmp_path / "faulty")
    with ScriptedJudgeServer(responder()) as server:
        reference = _run_job(clean, server)
    with ScriptedJudgeServer(responder(), fault_policy=_fail_some) as server:
        first = _run_job(faulty, server)
        failed = [r.body for r in server.log if r.fault is not None]
    assert first.prompts.failed == 2 and first.error and "attempt 1 of 3" in first.error
    assert first.error.endswith(f"resume with `charter generate --resume {first.job_id}`")
    assert first.backend_failures == len(failed) // 2 > 0  # each failed call was tried twice
    assert len(_rows(faulty, first.job_id)) == len(PROMPTS) - 2

    with ScriptedJudgeServer(responder()) as server:
        second = _run_job(faulty, server)
        asked = server.requests
    assert sorted(map(json.dumps, asked)) == sorted(set(map(json.dumps, failed)))
    assert second.prompts.done == len(PROMPTS) and second.backend_failures == 0
    assert _rows(faulty, second.job_id) == _rows(clean, reference.job_id)


def _fail_policy_on_first(record: RecordedRequest) -> Fault | None:
    """A server error for the policy's samples of the first prompt (its messages are the prompt)."""
    messages = record.body.get("messages", [])
    asks_first = [m.get("content") for m in messages] == [PROMPTS[0]]
    return Fault.http(500) if asks_first else None


def test_a_failed_policy_call_is_a_readable_prompt_error(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    with ScriptedJudgeServer(responder(), fault_policy=_fail_policy_on_first) as server:
        summary = _run_job(world, server)
    assert summary.prompts.failed == 1 and summary.error is not None
    assert "HTTP 500" in summary.error and "_CallFailed" not in summary.error


def test_after_the_last_attempt_a_prompt_keeps_only_the_principles_that_voted(
    tmp_path: Path,
) -> None:
    world = make_world(tmp_path)
    with ScriptedJudgeServer(responder(), fault_policy=_fail_some) as server:
        for attempt in (1, 2):
            summary = _run_job(world, server)
            assert f"attempt {attempt} of 3" in (summary.error or "")
        summary = _run_job(world, server)
    assert summary.prompts.done == len(PROMPTS) and summary.incomplete_prompts == 2
    assert summary.backend_failures > 0
    rows = {r["prompt"]: r for r in export_rows(world, summary.job_id, "--min-confidence", "0.5")}
    for prompt in PROMPTS[:2]:
        assert "helpful" not in rows[prompt]["principles"] and rows[prompt]["principles"]
    assert all("helpful" in rows[p]["principles"] for p in PROMPTS[2:])


def test_calls_stored_before_the_frequency_penalty_existed_are_still_reused(
    tmp_path: Path,
) -> None:
    from charter.call_cache import CALLS, CachedModel, call_key
    from charter.judge.backends.base import Completion, GenerationRequest, Message
    from charter.store import open_store

    class Unreachable:
        spec = "openai:old"

        async def generate(self, request: GenerationRequest) -> Completion:
            raise AssertionError("asked again")

    db = open_store(tmp_path / "store.db")
    request = GenerationRequest(messages=(Message(role="user", content="Hi"),), seed=3)
    old = request.model_dump(mode="json")
    del old["frequency_penalty"]  # the request as an earlier release stored it
    cached = CachedModel(Unreachable(), db)  # type: ignore[arg-type]
    db[CALLS].insert(
        {
            "key": call_key("openai:old", "generate", {"request": old}),
            "model": "openai:old",
            "kind": "generate",
            "request": json.dumps({"request": old}),
            "completion": Completion(text="Hello.").model_dump_json(),
            "at": "2026-01-01T00:00:00+00:00",
        }
    )
    assert asyncio.run(cached.generate(request)).text == "Hello."
    assert cached.stats.reused == 1
