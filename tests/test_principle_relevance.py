"""Principles that fit the conversation: `applies` asked once per prompt, relevant selection,
and the settings in `JudgeConfig`, against the scripted loopback judge and a real store."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from charter.call_cache import CachedModel, store_secret
from charter.cli.main import cli
from charter.constitution import Constitution, Defaults, Principle, load_constitution
from charter.judge import (
    BackendOptions,
    JudgeConfig,
    compare,
    critique_and_revise,
    load_model,
    rank,
)
from charter.judge.prompts import KeyedNonces
from charter.judge.results import ApplicabilityJudgment, Relevance
from charter.judge.selection import fitting_order, select_for_pair, select_for_prompt
from charter.store import open_store
from tests.support.relevance import Case, RelevanceResponder
from tests.support.scripted_server import ScriptedJudgeServer

TOPICS = ("cooking", "money", "health", "travel")


def topic_principle(topic: str, applies: bool = True, question: str | None = None) -> Principle:
    return Principle(
        id=topic,
        title=f"Care about {topic}",
        critique=f"Critique the {topic} advice.",
        revision=f"Revise the {topic} advice.",
        comparison=f"Which response gives better {topic} advice?",
        score=f"Does the response give good {topic} advice?",
        applies=(question or f"Does the user ask about {topic}?") if applies else None,
    )


def topic_constitution(k: int = 1, universal: bool = True) -> Constitution:
    principles = [topic_principle(t) for t in TOPICS]
    if universal:
        principles.append(topic_principle("manners", applies=False))
    return Constitution(
        name="topics",
        version="1",
        defaults=Defaults(principles_per_comparison=k, tie_margin=0.05),
        principles=tuple(principles),
    )


def cases() -> list[Case]:
    """Three prompts per topic, each relevant to its topic alone."""
    return [
        Case(
            prompt=f"A {topic} question, number {n}?",
            preferred=f"A good {topic} answer {n}.",
            other=f"A poor {topic} answer {n}.",
            relevant=frozenset({topic}),
        )
        for topic in TOPICS
        for n in range(3)
    ]


def scripted(server: ScriptedJudgeServer) -> object:
    return load_model("openai:scripted", BackendOptions(base_url=server.base_url, timeout_s=2))


async def agreement(constitution: Constitution, config: JudgeConfig, protocol: str) -> float:
    config = config.model_copy(update={"protocol": protocol})
    with ScriptedJudgeServer(RelevanceResponder(constitution, cases())) as server:
        model = scripted(server)
        try:
            results = await asyncio.gather(
                *(
                    compare(model, constitution, c.prompt, c.preferred, c.other, config)  # type: ignore[arg-type]
                    for c in cases()
                )
            )
        finally:
            await model.aclose()  # type: ignore[attr-defined]
    return sum(r.winner == "a" for r in results) / len(results)


@pytest.mark.parametrize("protocol", ["pointwise", "pairwise"])
def test_relevant_selection_gets_every_pair_right_and_random_does_not(protocol: str) -> None:
    constitution = topic_constitution(k=1)
    relevant = asyncio.run(agreement(constitution, JudgeConfig(selection="relevant"), protocol))
    random = asyncio.run(agreement(constitution, JudgeConfig(selection="random"), protocol))
    assert relevant == 1.0
    assert random < 0.75


def test_applies_is_asked_once_per_prompt_however_many_candidates(tmp_path: Path) -> None:
    constitution = topic_constitution(k=1)
    case = cases()[4]  # a money question
    # The scripted judge reads a text holding the preferred (other) one as preferred (other).
    candidates = [case.preferred, case.other, case.preferred + " Indeed.", case.other + " Alas."]
    config = JudgeConfig(selection="relevant", protocol="pointwise")
    db = open_store(tmp_path / "store.db")
    nonces = KeyedNonces(store_secret(db))
    responder = RelevanceResponder(constitution, [case])
    with ScriptedJudgeServer(responder) as server:

        async def go() -> object:
            model = scripted(server)  # no store: every question asked twice would reach it
            try:
                return await rank(model, constitution, case.prompt, candidates, config)  # type: ignore[arg-type]
            finally:
                await model.aclose()  # type: ignore[attr-defined]

        ranking = asyncio.run(go())
        # One question per conditional principle, however many candidates and pairs.
        assert responder.applies_asked == Counter({(t, case.prompt): 1 for t in TOPICS})
        assert server.calls == len(TOPICS) + len(candidates)  # applies + one score each
        assert ranking.order[0] == 0  # type: ignore[attr-defined]
        relevance = ranking.relevance  # type: ignore[attr-defined]
        assert [(a.principle_id, a.p) for a in relevance.applied] == [
            ("money", pytest.approx(0.9)),
            ("manners", None),
        ]
        # With a store, then pairwise (two candidates the scripted judge can tell apart, in
        # both orders): applicability comes from the store, and the selection is the same.
        asyncio.run(_rank(server, db, nonces, constitution, case.prompt, candidates, config))
        made = server.calls
        pairwise = config.model_copy(update={"protocol": "pairwise"})
        two = candidates[:2]
        ranking = asyncio.run(_rank(server, db, nonces, constitution, case.prompt, two, pairwise))
        assert server.calls - made == 2  # one pair, both orders, one principle
        assert ranking.comparisons[0].principle_ids == ["money"]
        # A re-run makes no call at all.
        made = server.calls
        asyncio.run(_rank(server, db, nonces, constitution, case.prompt, candidates, config))
        asyncio.run(_rank(server, db, nonces, constitution, case.prompt, two, pairwise))
        assert server.calls == made


async def _rank(server, db, nonces, constitution, prompt, candidates, config):  # type: ignore[no-untyped-def]
    model = CachedModel(scripted(server), db)  # type: ignore[arg-type]
    try:
        return await rank(model, constitution, prompt, candidates, config, nonces=nonces)
    finally:
        await model.aclose()


def test_editing_one_applies_question_re_asks_only_its_calls(tmp_path: Path) -> None:
    constitution = topic_constitution(k=1)
    config = JudgeConfig(selection="relevant", protocol="pointwise")
    db = open_store(tmp_path / "store.db")
    nonces = KeyedNonces(store_secret(db))
    all_cases = cases()

    async def judge_all(server: ScriptedJudgeServer, c: Constitution) -> None:
        model = CachedModel(scripted(server), db)  # type: ignore[arg-type]
        try:
            for case in all_cases:
                await compare(
                    model, c, case.prompt, case.preferred, case.other, config, nonces=nonces
                )
        finally:
            await model.aclose()

    with ScriptedJudgeServer(RelevanceResponder(constitution, all_cases)) as server:
        asyncio.run(judge_all(server, constitution))
        made = server.calls
        edited = constitution.model_copy(
            update={
                "principles": tuple(
                    topic_principle(p.id, question="Is the user's question about health?")
                    if p.id == "health"
                    else p
                    for p in constitution.principles
                )
            }
        )
        assert [
            p.id for p in edited.principles if p.digest != constitution.principle(p.id).digest
        ] == ["health"]
        responder = RelevanceResponder(edited, all_cases)
        server.responder = responder
        asyncio.run(judge_all(server, edited))
        asked = server.calls - made
        assert asked == len(all_cases)  # the edited question, once per prompt; nothing else
        assert set(responder.applies_asked) == {("health", c.prompt) for c in all_cases}


def test_selection_is_never_empty_and_tops_up_from_universal_principles() -> None:
    constitution = topic_constitution(k=3)

    def relevance(p_yes: dict[str, float], universal: list[str]) -> Relevance:
        return Relevance(
            prompt="p",
            threshold=0.5,
            universal=universal,
            judgments=[
                ApplicabilityJudgment(
                    principle_id=pid, principle_digest="d", question="q?", p_yes=p
                )
                for pid, p in p_yes.items()
            ],
        )

    some = relevance({"cooking": 0.2, "money": 0.8, "health": 0.6, "travel": 0.1}, ["manners"])
    picked = select_for_prompt(constitution, "p", 3, 0, some)
    assert [p.id for p in picked][:2] in (["money", "health"], ["health", "money"])
    assert picked[2].id == "manners"  # topped up from the always-apply principles
    assert [p.id for p in select_for_pair(constitution, "p", "a", "b", 4, 0, some)][-1] == "manners"
    none_apply = relevance({"cooking": 0.2, "money": 0.3, "health": 0.1, "travel": 0.4}, [])
    alone = topic_constitution(universal=False)
    assert [p.id for p in fitting_order(alone.enabled, 0, ("x",), none_apply)] == ["travel"]
    # Random selection ignores `applies`: the rendezvous order over every principle.
    assert len(fitting_order(constitution.enabled, 0, ("x",), None)) == 5


def test_critique_rounds_use_principles_that_apply() -> None:
    constitution = topic_constitution(k=1)
    case = cases()[7]  # health
    config = JudgeConfig(selection="relevant", revisions=2)
    with ScriptedJudgeServer(RelevanceResponder(constitution, [case])) as server:

        async def go():  # type: ignore[no-untyped-def]
            model = scripted(server)
            try:
                return await critique_and_revise(
                    model, constitution, case.prompt, case.other, config
                )  # type: ignore[arg-type]
            finally:
                await model.aclose()  # type: ignore[attr-defined]

        chain = asyncio.run(go())
    assert set(chain.principle_ids) <= {"health", "manners"}
    assert chain.relevance is not None and chain.relevance.applies("health")


def test_selection_settings_resolve_and_keep_old_identities() -> None:
    config = JudgeConfig()
    assert config.selection == "auto"
    assert config.resolved("openai:gpt-4o-mini").selection == "random"
    assert config.resolved("smollm2").selection == "random"  # measured: BENCHMARKS.md
    # Random selection (as before `applies` existed) dumps for identity exactly as before it.
    identity = config.resolved("openai:x").identity()
    assert not {"selection", "applies_threshold", "applies_limit", "few_shot"} & set(identity)
    relevant = JudgeConfig(selection="relevant").identity()
    assert relevant["selection"] == "relevant" and "applies_threshold" in relevant
    assert (
        JudgeConfig(selection="random").model_dump()["selection"] == "random"
    )  # plain dumps keep it


def test_applies_questions_per_prompt_are_bounded_by_the_limit() -> None:
    from charter.judge.applicability import to_ask

    many = Constitution(
        name="many",
        version="1",
        principles=tuple(topic_principle(f"t{n:03d}") for n in range(100)),
    )
    config = JudgeConfig(applies_limit=10)
    first = to_ask(many, "prompt one", config)
    assert len(first) == 10 and len(to_ask(many, "prompt two", config)) == 10
    assert {p.id for p in first} != {p.id for p in to_ask(many, "prompt two", config)}
    assert len(to_ask(many, "p", JudgeConfig())) == 32


# ------------------------------------------------------------------ in a job: rows, show, card


def write_topics(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "constitution.toml").write_text(
        'name = "topics"\nversion = "1"\n[defaults]\nprinciples_per_comparison = 1\n'
    )
    for p in topic_constitution().principles:
        lines = [f"{name} = {json.dumps(getattr(p, name))}" for name in (
            "id", "title", "critique", "revision", "comparison", "score"
        )]  # fmt: skip
        if p.applies:
            lines.append(f"applies = {json.dumps(p.applies)}")
        (directory / f"{p.id}.toml").write_text("\n".join(lines) + "\n")
    return directory


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("mode", ["compare", "revise"])
def test_a_job_asks_applies_once_per_prompt_and_rows_record_what_applied(
    tmp_path: Path, mode: str
) -> None:
    principles = write_topics(tmp_path / "principles")
    chosen = [cases()[1], cases()[4], cases()[7]]  # cooking, money, health
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": c.prompt, "responses": [c.other, c.preferred]}) + "\n"
            for c in chosen
        )
    )
    store = tmp_path / "store.db"
    responder = RelevanceResponder(load_constitution(principles), chosen)
    with ScriptedJudgeServer(responder if mode == "compare" else Revising(responder)) as server:
        code, out, err = invoke(
            "generate", "--prompts", str(prompts), "--dir", str(principles),
            "--store", str(store), "--judge", "openai:scripted",
            "--judge-base-url", server.base_url, "--mode", mode, "--protocol", "pointwise",
            "--selection", "relevant", "--json",
        )  # fmt: skip
    assert code == 0, err
    job_id = json.loads(out)["job_id"]
    # A fresh store answered nothing from memory: no question was asked twice.
    assert json.loads(out)["calls"]["judge"]["reused"] == 0
    # Once per prompt and conditional principle, however many candidates, chains and checks.
    assert responder.applies_asked == Counter({(t, c.prompt): 1 for t in TOPICS for c in chosen})
    code, out, err = invoke("jobs", "show", job_id, "--store", str(store))
    assert code == 0, err
    summary = json.loads(invoke("jobs", "show", job_id, "--store", str(store), "--json")[1])
    assert summary["summary"]["preferences"] > 0
    applied = {f["principle_id"]: f for f in summary["summary"]["applied"]}
    assert applied["manners"]["mean_p"] is None and applied["manners"]["rows"] >= 1
    if mode == "compare":
        assert "cooking (1 rows, P 0.90)" in out and "manners (3 rows, always)" in out
    exported = tmp_path / "out.jsonl"
    # (A scripted revision keeps the text it revises, so its check is a tie: export them all.)
    everything = ["--min-confidence", "0.5"] if mode == "revise" else []
    code, _, err = invoke(
        "export", job_id, "--store", str(store), "--out", str(exported), *everything
    )
    assert code == 0, err
    for line in exported.read_text().splitlines():
        row = json.loads(line)
        topic = next(c for c in chosen if c.prompt == row["prompt"]).relevant
        got = {a["principle_id"]: a["p"] for a in row["applicable"]}
        assert set(got) == set(topic) | {"manners"}
        assert got["manners"] is None
    # The review page's row view shows them, rendered by the page's own template.
    from charter.jobs.store import get_job, load_preferences
    from charter.service.pages.detail import row_detail
    from charter.service.pages.render import page
    from charter.service.pages.rows import prompt_text
    from charter.store import open_store

    db = open_store(store)
    row = load_preferences(db, job_id)[0]
    html = page(
        "row.html",
        job=get_job(db, job_id),
        row=row,
        key=row.key,
        prompt=prompt_text(row.prompt),
        detail=row_detail(db, row),
    ).body.decode()
    cell = html[html.index('class="applicable"') :].split("</td>")[0]
    assert "manners (always)" in cell and "(P 0.90)" in cell
    card = tmp_path / "card"
    code, _, err = invoke(
        "export", job_id, "--store", str(store), "--out", str(card), "--format", "hf", *everything
    )
    assert code == 0, err
    assert "| principles that applied | " in (card / "README.md").read_text()


def test_a_job_selecting_at_random_keeps_its_id_and_asks_nothing(tmp_path: Path) -> None:
    from charter.jobs.spec import JobOptions
    from charter.prompt_files import PromptRecord

    records = [PromptRecord(prompt="Q?", responses=("a", "b"))]
    c = topic_constitution()
    random = JobOptions(selection="random").to_spec(
        records, c, default_judge="openai:j", default_policy="openai:p"
    )
    auto = JobOptions().to_spec(records, c, default_judge="openai:j", default_policy="openai:p")
    assert random.judge_config.selection == "random" and auto.job_id == random.job_id
    blob = random.model_dump(mode="json", exclude={"tenant"})
    for name in ("selection", "applies_threshold", "applies_limit", "few_shot"):
        del blob["judge_config"][name]
    import hashlib

    before = "job-" + hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]
    assert random.job_id == before  # the id the same spec had before these settings existed
    relevant = JobOptions(selection="relevant").to_spec(
        records, c, default_judge="openai:j", default_policy="openai:p"
    )
    assert relevant.job_id != random.job_id


def _fail_applies(record: object) -> object:
    """For the first prompt alone: garbage for its `money` applies question, a server error
    for its `health` one."""
    from tests.support.scripted_server import Fault, last_user_message

    message = last_user_message(record.body)  # type: ignore[attr-defined]
    if cases()[1].prompt not in message or cases()[1].preferred in message:
        return None
    if "Does the user ask about money?" in message:
        return Fault.garbage("Perhaps.")
    if "Does the user ask about health?" in message:
        return Fault.http(500)
    return None


def test_failed_applies_calls_are_counted_and_asked_again(tmp_path: Path) -> None:
    from charter.jobs.run import run_job
    from charter.jobs.spec import JobOptions
    from charter.jobs.store import create_or_get_job
    from charter.prompt_files import PromptRecord
    from tests.support.judge_helpers import scripted_model

    chosen = [cases()[1], cases()[4], cases()[7]]  # cooking, money, health
    records = [PromptRecord(prompt=c.prompt, responses=(c.other, c.preferred)) for c in chosen]
    constitution = topic_constitution(k=1)
    store = tmp_path / "store.db"
    db = open_store(store)

    def run(server: ScriptedJudgeServer) -> None:
        model = scripted_model(server, max_retries=1)
        options = JobOptions(mode="compare", protocol="pointwise", selection="relevant")
        spec = options.plan(
            db, records, constitution, default_judge=model.spec, default_policy=model.spec
        )
        job, _ = create_or_get_job(db, spec, constitution, records, "prompts.jsonl")

        async def go() -> None:
            try:
                await run_job(db, job, model, None)
            finally:
                await model.aclose()

        asyncio.run(go())

    with ScriptedJudgeServer(
        RelevanceResponder(constitution, chosen),
        fault_policy=_fail_applies,  # type: ignore[arg-type]
    ) as server:
        run(server)
    [job_id] = [r["id"] for r in db["jobs"].rows]

    def shown() -> dict[str, object]:
        code, out, err = invoke("jobs", "show", job_id, "--store", str(store), "--json")
        assert code == 0, err
        return json.loads(out)["summary"]  # type: ignore[no-any-return]

    summary = shown()
    # The first prompt's failed `money` and `health` questions are failed judge calls.
    assert (summary["parse_failures"], summary["backend_failures"]) == (1, 1), summary
    assert summary["failed_judgments"] == 2
    assert summary["judgments"] == 3 * (len(TOPICS) + 2)  # applies + one score per response
    assert summary["prompts"] == {"total": 3, "done": 2, "failed": 1, "pending": 0, "skipped": 0}
    text = invoke("jobs", "show", job_id, "--store", str(store))[1]
    assert "1 parse failures, 1 backend failures" in text, text
    # The next run asks the failed questions again, and only them.
    responder = RelevanceResponder(constitution, chosen)
    with ScriptedJudgeServer(responder) as server:
        run(server)
        assert server.calls == 2
    assert set(responder.applies_asked) == {(t, chosen[0].prompt) for t in ("money", "health")}
    summary = shown()
    assert summary["prompts"]["done"] == 3  # type: ignore[index]
    assert summary["parse_failures"] == summary["backend_failures"] == 0


class Revising:
    """Test fake: `RelevanceResponder`, except that a revision request is answered with the
    response it revises and one sentence more (so every chain runs all its rounds)."""

    def __init__(self, inner: RelevanceResponder) -> None:
        self.inner = inner

    def __call__(self, body: dict[str, object]) -> object:
        from tests.support.scripted_server import Reply, last_user_message

        message = last_user_message(body)
        if "Revision request:" not in message:
            return self.inner(body)
        response = message.split("<<<RESPONSE ")[1].split(">>>\n", 1)[1].split("\n<<<END_")[0]
        return Reply(response + " It also helps to plan ahead.")


def test_a_revise_job_asks_applies_once_per_prompt_with_no_store_to_hide_repeats(
    tmp_path: Path,
) -> None:
    """The job's own prompt step (`process_prompt`), revise mode, against a judge with no call
    store: a question the job asked again (per chain, per round, per check) reaches the server
    and is counted there."""
    from charter.jobs.modes import process_prompt
    from charter.jobs.spec import JobOptions
    from charter.jobs.store import create_or_get_job
    from charter.prompt_files import PromptRecord
    from tests.support.judge_helpers import scripted_model

    constitution = topic_constitution(k=1)
    case = cases()[4]  # a money question
    candidates = (case.preferred, case.other, case.preferred + " Indeed.", case.other + " Alas.")
    record = PromptRecord(prompt=case.prompt, responses=candidates)
    db = open_store(tmp_path / "store.db")
    options = JobOptions(mode="revise", protocol="pointwise", selection="relevant", revisions=2)
    spec = options.plan(db, [record], constitution, default_judge="openai:j", default_policy="x")
    job, _ = create_or_get_job(db, spec, constitution, [record], "prompts.jsonl")
    assert job.spec.quality.verify_revisions
    responder = RelevanceResponder(constitution, [case])
    with ScriptedJudgeServer(Revising(responder)) as server:

        async def go() -> dict[str, object]:
            model = scripted_model(server)  # the bare backend: nothing answered from a store
            try:
                _, result, _ = await process_prompt(
                    job, 0, record, model, None, KeyedNonces(b"no store")
                )
                return result
            finally:
                await model.aclose()

        result = asyncio.run(go())
    chains = result["chains"]
    rounds = [r for chain in chains for r in chain["rounds"]]  # type: ignore[attr-defined]
    assert len(chains) == len(candidates) and len(rounds) == 2 * len(candidates)
    assert len(result["verifications"]) == len(candidates)  # type: ignore[arg-type]
    # Once per prompt and conditional principle: not per chain, round or check.
    assert responder.applies_asked == Counter({(t, case.prompt): 1 for t in TOPICS})
