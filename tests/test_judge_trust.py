"""Judge trust: pointwise scores, calibration, and the JudgeConfig a job is identified by.

Every model here is the real OpenAI backend talking real HTTP to the scripted loopback server
(the judge's one test fake), whose Yes/No answers and probabilities each test sets.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from click.testing import CliRunner

from charter.call_cache import CachedModel, store_secret
from charter.cli.main import cli as main_cli
from charter.constitution import Constitution, Defaults
from charter.jobs.spec import JobOptions
from charter.judge import (
    JudgeConfig,
    LabelledPair,
    compare,
    fit_calibration,
    judge_pairs,
    qualification_report,
    rank,
    score,
)
from charter.judge.calibration import logit, sigmoid
from charter.judge.prompts import KeyedNonces
from charter.prompt_files import PromptRecord

from .support.generation import responder, write_constitution
from .support.judge_helpers import constitution, principle, scripted_model
from .support.scripted_server import (
    Fault,
    Reply,
    ScriptedJudgeServer,
    last_user_message,
)

POINTWISE = JudgeConfig(protocol="pointwise")


class YesProbabilities:
    """Test fake: answers a pointwise question about one known response with P(Yes) given
    per response (as first-token logprobs, or the bare word with `logprobs=False`)."""

    def __init__(self, p_yes: Mapping[str, float], *, logprobs: bool = True) -> None:
        self.p_yes = dict(p_yes)
        self.logprobs = logprobs

    def __call__(self, body: dict[str, Any]) -> Reply:
        message = last_user_message(body)
        found = [text for text in self.p_yes if f"\n{text}\n" in message]
        if len(found) != 1:
            return Reply("I see no single response to judge.")
        p = self.p_yes[found[0]]
        answer, other = ("Yes", "No") if p >= 0.5 else ("No", "Yes")
        if not self.logprobs:
            return Reply(answer)
        p_answer = max(p, 1 - p)
        return Reply(
            answer, top_logprobs=[(answer, math.log(p_answer)), (other, math.log1p(-p_answer))]
        )


def run_on(server: ScriptedJudgeServer, work: Any) -> Any:
    async def go() -> Any:
        model = scripted_model(server)
        try:
            return await work(model)
        finally:
            await model.aclose()

    return asyncio.run(go())


def test_pointwise_scores_come_from_yes_no_logprobs() -> None:
    c = constitution(k=2)
    fake = YesProbabilities({"Paris.": 0.8, "Lyon.": 0.3})
    with ScriptedJudgeServer(fake) as server:
        good = run_on(server, lambda m: score(m, c, "Capital of France?", "Paris.", POINTWISE))
        result = run_on(
            server, lambda m: compare(m, c, "Capital of France?", "Paris.", "Lyon.", POINTWISE)
        )
    assert good.p_yes == pytest.approx(0.8)
    assert [j.p_yes for j in good.judgments] == pytest.approx([0.8, 0.8])
    assert all(j.option_probs is not None for j in good.judgments)
    # p_a is sigmoid of the logit difference of the two scores, for each principle alike.
    assert result.protocol == "pointwise" and result.winner == "a"
    assert result.p_a == pytest.approx(sigmoid(logit(0.8) - logit(0.3)))
    assert result.position_consistent is None and result.judgments == []
    assert len(result.scores) == 2 and result.k == 2
    # Both responses were asked under the same (random) markers, principle by principle.
    tags = [
        [
            re.search(r"between the ([0-9a-f]+) markers", j.messages[-1].content).group(1)
            for j in s.judgments
        ]  # type: ignore[union-attr]
        for s in result.scores
    ]
    assert tags[0] == tags[1]


class YesByPrinciple(YesProbabilities):
    """Test fake: P(Yes) given per (principle, response); the principle is read from the
    question (`Principle ID`, the title `principle()` gives it)."""

    def __init__(self, p_yes: Mapping[tuple[str, str], float]) -> None:
        super().__init__({})
        self.by_principle = dict(p_yes)

    def __call__(self, body: dict[str, Any]) -> Reply:
        message = last_user_message(body)
        [(pid, text)] = [k for k in self.by_principle if f'"Principle {k[0]}"' in message
                         and f"\n{k[1]}\n" in message]  # fmt: skip
        self.p_yes = {text: self.by_principle[(pid, text)]}
        return super().__call__(body)


@pytest.mark.parametrize(("w_alpha", "w_beta", "winner"), [(3.0, 1.0, "a"), (1.0, 3.0, "b")])
def test_pointwise_principle_weights_move_the_score(
    w_alpha: float, w_beta: float, winner: str
) -> None:
    """A principle's weight weighs its logit in a score's P(Yes) and its logit difference in
    the pointwise p_a (README, principle files: "weights this principle's verdicts"): alpha
    prefers a, beta prefers b by as much, so the heavier one decides."""
    c = Constitution(
        name="weighted",
        version="0.0.1",
        defaults=Defaults(principles_per_comparison=2),
        principles=(principle("alpha", weight=w_alpha), principle("beta", weight=w_beta)),
    )
    p_yes = {("alpha", "A."): 0.9, ("alpha", "B."): 0.1, ("beta", "A."): 0.1, ("beta", "B."): 0.9}
    with ScriptedJudgeServer(YesByPrinciple(p_yes)) as server:
        scored = run_on(server, lambda m: score(m, c, "Q?", "A.", POINTWISE))
        result = run_on(server, lambda m: compare(m, c, "Q?", "A.", "B.", POINTWISE))
    weight = {"alpha": w_alpha, "beta": w_beta}
    mass = w_alpha + w_beta
    want_yes = sigmoid(sum(weight[pid] * logit(p_yes[(pid, "A.")]) for pid in weight) / mass)
    assert scored.p_yes == pytest.approx(want_yes)
    assert abs(scored.p_yes - 0.5) > 0.2  # unweighted, the two principles would cancel out
    diffs = {pid: logit(p_yes[(pid, "A.")]) - logit(p_yes[(pid, "B.")]) for pid in weight}
    assert result.p_a == pytest.approx(sigmoid(sum(weight[p] * diffs[p] for p in weight) / mass))
    assert result.winner == winner
    assert {v.principle_id: v.weight for v in result.principles} == weight


def test_pointwise_without_logprobs_uses_the_parsed_word() -> None:
    c = constitution(k=1)
    fake = YesProbabilities({"Paris.": 0.8, "Lyon.": 0.3}, logprobs=False)
    with ScriptedJudgeServer(fake) as server:
        result = run_on(server, lambda m: compare(m, c, "Capital?", "Paris.", "Lyon.", POINTWISE))
    [a, b] = result.scores
    assert (a.judgments[0].answer, a.judgments[0].p_yes) == ("Yes", 1.0)
    assert (b.judgments[0].answer, b.judgments[0].p_yes) == ("No", 0.0)
    assert a.judgments[0].option_probs is None
    assert result.winner == "a" and result.p_a is not None and result.p_a > 0.99


@pytest.mark.parametrize(
    ("fault", "kind"),
    [(Fault.garbage("Both have merit."), "parse"), (Fault.http(500), "backend")],
)
def test_faults_end_in_recorded_failures_never_in_a_score(fault: Fault, kind: str) -> None:
    c = constitution(k=2)
    fake = YesProbabilities({"Paris.": 0.8, "Lyon.": 0.3})
    with ScriptedJudgeServer(fake, fault_policy=lambda r: fault) as server:
        result = run_on(server, lambda m: compare(m, c, "Capital?", "Paris.", "Lyon.", POINTWISE))
    every = [j for s in result.scores for j in s.judgments]
    assert len(every) == 4 and all(j.p_yes is None and j.answer is None for j in every)
    assert {j.error_kind for j in every} == {kind}
    assert result.p_a is None and result.winner is None and result.failed == 4
    if kind == "parse":  # asked again once (parse_retries=1), then recorded
        assert all(j.attempts == 2 and j.parse_failures == 2 for j in every)


def test_one_failed_principle_leaves_the_others_voting() -> None:
    c = constitution(k=2)
    fake = YesProbabilities({"Paris.": 0.8, "Lyon.": 0.3})

    def fail_one_principle(record: Any) -> Fault | None:
        return Fault.http(500) if "harmless" in str(record.body) else None

    with ScriptedJudgeServer(fake, fault_policy=fail_one_principle) as server:
        result = run_on(
            server,
            lambda m: compare(m, c, "Capital?", "Paris.", "Lyon.", JudgeConfig(
                protocol="pointwise", principles=5)),
        )  # fmt: skip
    voted = [v for v in result.principles if v.p_a is not None]
    assert len(voted) == 4 and result.p_a == pytest.approx(sigmoid(logit(0.8) - logit(0.3)))


def test_a_response_scored_once_is_not_asked_again_against_a_new_rival(tmp_path: Path) -> None:
    """With the store, a response's scores are reused when it meets a new rival; ranking N
    responses costs N x K calls, not N(N-1) x K."""
    c = constitution(k=2)
    texts = {"Paris.": 0.9, "Lyon.": 0.4, "Nice.": 0.2, "Metz.": 0.6}
    db = sqlite_utils.Database(tmp_path / "store.db")
    with ScriptedJudgeServer(YesProbabilities(texts)) as server:

        async def work(model: Any) -> Any:
            cached = CachedModel(model, db)
            nonces = KeyedNonces(store_secret(db))  # as a job asks: repeatable prompts
            first = await compare(
                cached, c, "Capital?", "Paris.", "Lyon.", POINTWISE, nonces=nonces
            )
            after_first = server.calls
            second = await compare(
                cached, c, "Capital?", "Paris.", "Nice.", POINTWISE, nonces=nonces
            )
            return first, after_first, second, server.calls

        first, after_first, second, after_second = run_on(server, work)
        assert after_first == 4  # 2 responses x K=2
        assert after_second - after_first == 2  # only "Nice." is new
        assert second.winner == "a" and first.winner == "a"

        ranking = run_on(
            server, lambda m: rank(m, c, "Ranked?", list(texts), POINTWISE, strategy="margin")
        )
        assert server.calls - after_second == len(texts) * 2  # N x K, not N(N-1) x K
    assert ranking.protocol == "pointwise" and len(ranking.response_scores) == 4
    assert [ranking.responses[i] for i in ranking.order] == ["Paris.", "Metz.", "Lyon.", "Nice."]
    assert len(ranking.comparisons) == 6 and all(cmp.scores == [] for cmp in ranking.comparisons)
    assert ranking.usage.total_tokens == sum(s.usage.total_tokens for s in ranking.response_scores)


def test_auto_protocol_is_pointwise_for_the_embedded_judge_only() -> None:
    auto = JudgeConfig()
    assert auto.protocol_for("smollm2") == "pointwise"
    assert auto.protocol_for("openai:gpt-4o-mini") == "pairwise"
    assert JudgeConfig(protocol="pairwise").protocol_for("smollm2") == "pairwise"


def _overconfident_world(
    levels: list[float], per_level: int, tag: str, temperature: float, bias: float
) -> tuple[list[LabelledPair], dict[str, float]]:
    """Labelled pairs whose true P(a better) at level z is sigmoid(z), with exactly that share
    of `a` labels, judged by a fake whose p_a is sigmoid(temperature * z + bias)."""
    pairs: list[LabelledPair] = []
    p_yes: dict[str, float] = {}
    for level, z in enumerate(levels):
        positives = round(per_level * sigmoid(z))
        for i in range(per_level):
            a, b = f"answer {tag}-{level}-{i} A", f"answer {tag}-{level}-{i} B"
            p_yes[a] = sigmoid(temperature * z + bias)
            p_yes[b] = 0.5  # logit 0: p_a is a's own score
            pairs.append(
                LabelledPair(
                    prompt=f"Question {tag} {level} {i}?",
                    a=a,
                    b=b,
                    preferred="a" if i < positives else "b",
                )
            )
    return pairs, p_yes


def test_calibration_recovers_a_deliberately_wrong_confidence() -> None:
    levels = [-2.0, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0]
    fit_pairs, fit_yes = _overconfident_world(levels, 40, "fit", temperature=2.5, bias=0.3)
    held_pairs, held_yes = _overconfident_world(levels, 40, "held", temperature=2.5, bias=0.3)
    c = constitution(k=1)
    with ScriptedJudgeServer(YesProbabilities(fit_yes | held_yes)) as server:
        fit_judged = run_on(server, lambda m: judge_pairs(m, c, fit_pairs, POINTWISE))
        held_judged = run_on(server, lambda m: judge_pairs(m, c, held_pairs, POINTWISE))
    calibration = fit_calibration(
        [x.p_a for x in fit_judged if x.p_a is not None], [p.preferred == "a" for p in fit_pairs]
    )
    assert calibration.temperature == pytest.approx(2.5, rel=0.10)
    assert calibration.bias == pytest.approx(-0.3 / 2.5, abs=0.05)
    report = qualification_report(
        held_pairs,
        held_judged,
        judge="openai:scripted",
        constitution=c,
        config=POINTWISE,
        calibration=calibration,
    )
    assert report.raw.calibration is not None and report.calibrated is not None
    assert report.calibrated.calibration is not None
    assert report.raw.calibration.ece > 0.1  # over-confident before
    assert report.calibrated.calibration.ece <= 0.03  # on pairs the fit never saw
    assert report.calibrated.calibration.log_loss < report.raw.calibration.log_loss


# ------------------------------------------------------------------ the CLI: calibrate, jobs


def test_calibrate_with_folds_reports_every_pair_held_out_once(tmp_path: Path) -> None:
    levels = [-2.0, -1.0, -0.5, 0.5, 1.0, 2.0]
    pairs, p_yes = _overconfident_world(levels, 30, "folds", temperature=3.0, bias=0.0)
    labelled = _labelled_file(tmp_path / "labelled.jsonl", pairs)
    principles = write_constitution(tmp_path / "principles")
    args = [
        "judge", "calibrate", "--pairs", str(labelled), "--judge", "openai:scripted",
        "--protocol", "pointwise", "--principles", "1", "--dir", str(principles),
        "--store", str(tmp_path / "store.db"), "--folds", "5",
    ]  # fmt: skip
    with ScriptedJudgeServer(YesProbabilities(p_yes)) as server:
        code, out, err = cli(*args, "--json", "--judge-base-url", server.base_url)
        assert code == 0, err
        code, text, err = cli(*args, "--judge-base-url", server.base_url)
    assert code == 0, err
    result = json.loads(out)
    record, held = result["record"], result["heldout"]
    assert record["heldout"]["pairs"] == held["pairs"] == len(pairs)
    assert record["heldout"]["method"] == "5-fold cross-fitting (seed 0)"
    assert record["calibration"]["fitted_on"] == len(pairs) and record["calibration"][
        "temperature"
    ] == pytest.approx(3.0, rel=0.15)
    assert held["calibrated"]["calibration"]["ece"] < held["raw"]["calibration"]["ece"]
    assert f"held out ({len(pairs)} pairs, 5-fold cross-fitting (seed 0)):" in text
    code, _, err = cli(*args[:-2], "--folds", "1")
    assert code == 2 and "--folds" in err


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main_cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _labelled_file(path: Path, pairs: list[LabelledPair]) -> Path:
    path.write_text("".join(p.model_dump_json() + "\n" for p in pairs))
    return path


def test_calibrate_then_generate_reports_calibrated_p_chosen(tmp_path: Path) -> None:
    levels = [-2.0, -1.0, -0.5, 0.5, 1.0, 2.0]
    pairs, p_yes = _overconfident_world(levels, 30, "cal", temperature=3.0, bias=0.0)
    labelled = _labelled_file(tmp_path / "labelled.jsonl", pairs)
    principles = write_constitution(tmp_path / "principles")
    store = tmp_path / "store.db"
    # A job over some of the same kind of pairs, with their candidates given.
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": p.prompt, "responses": [p.a, p.b]}) + "\n" for p in pairs[:12]
        )
    )
    judged = ("--judge", "openai:scripted", "--protocol", "pointwise", "--principles", "1")
    with ScriptedJudgeServer(YesProbabilities(p_yes)) as server:
        where = (
            "--dir",
            str(principles),
            "--store",
            str(store),
            "--judge-base-url",
            server.base_url,
        )
        before_code, before_out, err = cli(
            "generate", "--prompts", str(prompts), *judged, *where, "--json"
        )
        assert before_code == 0, err
        code, out, err = cli(
            "judge", "calibrate", "--pairs", str(labelled), *judged, *where, "--json"
        )
        assert code == 0, err
        calibrated = json.loads(out)
        calls_before_second_job = server.calls
        code, out, err = cli("generate", "--prompts", str(prompts), *judged, *where, "--json")
        assert code == 0, err
        assert server.calls == calls_before_second_job  # the calibrated job re-asks nothing
    record = calibrated["record"]
    assert record["protocol"] == "pointwise" and record["judge"] == "openai:scripted"
    assert record["calibration"]["temperature"] > 2.0  # the over-confidence was found
    held = calibrated["heldout"]
    assert held["calibrated"]["calibration"]["ece"] < held["raw"]["calibration"]["ece"]
    first, second = json.loads(before_out), json.loads(out)
    assert first["job_id"] != second["job_id"]  # the calibration is part of the job
    exported = tmp_path / "rows.jsonl"
    assert cli("export", second["job_id"], "--out", str(exported), "--store", str(store),
               "--min-confidence", "0.5")[0] == 0  # fmt: skip
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert rows and all(r["calibration"] == record["id"] for r in rows)
    assert all(r["protocol"] == "pointwise" for r in rows)
    for r in rows:  # T > 1 pulls an over-confident p_chosen towards 0.5
        assert 0.5 < r["p_chosen"] < r["p_chosen_raw"]


def test_a_calibration_survives_an_edit_to_another_principle(tmp_path: Path) -> None:
    """Editing one principle leaves the calibration on the verdicts under the others (their raw
    p_a is what it was when the calibration was fit); rows that involve the edited principle
    stay raw and the job says which principle and how to re-fit. An edit to every principle
    leaves nothing calibrated and the job says which calibration no longer fits and why."""
    levels = [-2.0, -1.0, -0.5, 0.5, 1.0, 2.0]
    pairs, p_yes = _overconfident_world(levels, 30, "edit", temperature=3.0, bias=0.0)
    labelled = _labelled_file(tmp_path / "labelled.jsonl", pairs)
    principles = write_constitution(tmp_path / "principles")
    store = tmp_path / "store.db"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": p.prompt, "responses": [p.a, p.b]}) + "\n"
            for p in pairs[::4][:24]
        )
    )
    judged = ("--judge", "openai:scripted", "--protocol", "pointwise", "--principles", "1")

    def edit(pid: str) -> None:
        path = principles / f"{pid}.toml"
        path.write_text(path.read_text() + f'score = "Is the response {pid} enough?"\n')

    with ScriptedJudgeServer(YesProbabilities(p_yes)) as server:
        where = ("--dir", str(principles), "--store", str(store))
        where += ("--judge-base-url", server.base_url)
        code, out, err = cli(
            "judge", "calibrate", "--pairs", str(labelled), *judged, *where, "--json"
        )
        assert code == 0, err
        record = json.loads(out)["record"]
        edit("helpful")
        code, out, err = cli("generate", "--prompts", str(prompts), *judged, *where, "--json")
        assert code == 0, err
        summary = json.loads(out)
        exported = tmp_path / "rows.jsonl"
        assert cli("export", summary["job_id"], "--out", str(exported), "--store", str(store),
                   "--min-confidence", "0.5")[0] == 0  # fmt: skip
        rows = [json.loads(line) for line in exported.read_text().splitlines()]
        edit("honest")
        edit("harmless")
        code, out, err = cli("generate", "--prompts", str(prompts), *judged, *where, "--json")
        assert code == 0, err
        none_fits = json.loads(out)
    assert summary["calibration"]["id"] == record["id"]
    assert summary["calibration"]["stale_principles"] == ["helpful"]
    assert "helpful" in summary["calibration"]["note"]
    assert "charter judge calibrate --pairs" in summary["calibration"]["note"]
    assert "--principles 1" in summary["calibration"]["note"]
    kept = [r for r in rows if r["principles"] != ["helpful"]]
    raw = [r for r in rows if r["principles"] == ["helpful"]]
    assert kept and raw, [r["principles"] for r in rows]
    for r in kept:  # calibrated as before the edit: T > 1 pulls p_chosen towards 0.5
        assert r["calibration"] == record["id"] and 0.5 < r["p_chosen"] < r["p_chosen_raw"]
    for r in raw:
        assert r["calibration"] is None and r["p_chosen"] == r["p_chosen_raw"]
    assert none_fits["calibration"] is None
    why = none_fits["uncalibrated_because"]
    assert record["id"] in why and "every principle changed" in why
    assert "harmless, helpful, honest" in why
    assert "charter judge calibrate --pairs " + str(labelled) in why
    assert "--judge openai:scripted" in why and "--principles 1" in why


def test_a_job_id_covers_every_judge_config_field() -> None:
    records = [PromptRecord(prompt="Q?", responses=("a", "b"))]
    c = constitution()
    base = JobOptions().to_spec(records, c, default_judge="openai:j", default_policy="openai:p")
    changed = {
        "protocol": "pointwise",
        "principles": 3,
        "seed": 7,
        "cot": True,
        "cot_clamp": 0.2,
        "cot_max_tokens": 64,
        "tie_margin": 0.1,
        "parse_retries": 3,
        "require_both_orders": False,
        "selection": "relevant",
        "applies_threshold": 0.7,
        "applies_limit": 5,
        "few_shot": 2,
        "revisions": 4,
        "critique_max_tokens": 99,
        "critique_frequency_penalty": 1.0,
        "verify_revisions": False,
        "rank_flawed_candidates": True,
        "mode": "revise",
        "policy": "openai:other",
        "judge": "openai:other-judge",
        "n": 3,
        "temperature": 0.5,
        "max_tokens": 77,
        "frequency_penalty": 0.5,
        "pairs": "margin",
    }
    assert set(changed) == set(JobOptions.model_fields)  # a new field must be added here
    # The applies_* settings only matter when principles are selected by relevance.
    alongside = {name: {"selection": "relevant"} for name in ("applies_threshold", "applies_limit")}
    ids = {base.job_id}
    for field, value in changed.items():
        spec = JobOptions(**{field: value}, **alongside.get(field, {})).to_spec(  # type: ignore[arg-type]
            records, c, default_judge="openai:j", default_policy="openai:p"
        )
        assert spec.job_id not in ids, field
        ids.add(spec.job_id)
    calibrated = JobOptions().to_spec(
        records, c, default_judge="openai:j", default_policy="openai:p", calibration="cal-1"
    )
    assert calibrated.job_id not in ids
    # "auto" is resolved before hashing: saying the judge's protocol aloud is the same job.
    auto = JobOptions().to_spec(records, c, default_judge="smollm2", default_policy="smollm2")
    said = JobOptions(protocol="pointwise").to_spec(
        records, c, default_judge="smollm2", default_policy="smollm2"
    )
    assert auto.job_id == said.job_id


OLD_SPEC = {  # a JobSpec as the release before JudgeConfig stored it
    "mode": "compare",
    "policy": "openai:scripted",
    "judge": "openai:scripted",
    "n": 2,
    "temperature": 0.8,
    "max_tokens": 64,
    "seed": 3,
    "principles": 2,
    "revisions": None,
    "cot": False,
    "pairs": "best_worst",
}


def _old_store(path: Path, principles: Path, prompts: list[str]) -> str:
    """A store written by the previous release: its jobs, job_prompts and preferences tables
    as they were, one job with its first prompt done and the rest pending."""
    from charter.constitution import load_constitution

    c = load_constitution(principles)
    db = sqlite_utils.Database(path)
    records = [PromptRecord(prompt=p) for p in prompts]
    spec = {**OLD_SPEC, "prompts_digest": "d" * 64, "constitution_digest": c.digest}
    job_id = "job-0123456789ab"
    db["jobs"].insert(
        {
            "id": job_id, "spec": json.dumps(spec), "constitution": c.model_dump_json(),
            "constitution_digest": c.digest, "constitution_version": c.version,
            "status": "running", "prompts_source": "old.jsonl", "created_at": "2026-01-01",
            "updated_at": "2026-01-01", "summary": "{}", "error": None,
        },
        pk="id",
    )  # fmt: skip
    db["job_prompts"].insert_all(
        (
            {
                "job_id": job_id, "position": i, "prompt_key": r.key,
                "record": r.model_dump_json(), "status": "done" if i == 0 else "pending",
                "error": None, "result": "{}" if i == 0 else None,
            }
            for i, r in enumerate(records)
        ),
        pk=("job_id", "position"),
    )  # fmt: skip
    old_columns = [
        "job_id", "position", "prompt_key", "prompt", "chosen", "rejected", "source",
        "p_chosen", "margin", "position_consistent", "principles", "critique", "judge",
        "policy", "constitution_digest", "constitution_version", "created_at",
    ]  # fmt: skip
    row = dict.fromkeys(old_columns) | {
        "job_id": job_id, "position": 0, "prompt_key": records[0].key,
        "prompt": json.dumps(prompts[0]), "chosen": "old chosen", "rejected": "old rejected",
        "source": "comparison", "p_chosen": 0.9, "margin": 0.4, "position_consistent": 1,
        "principles": "[]", "judge": "openai:scripted", "policy": "openai:scripted",
        "constitution_digest": c.digest, "constitution_version": c.version,
        "created_at": "2026-01-01",
    }  # fmt: skip
    db["preferences"].insert({"key": "k" * 64, **row}, pk="key")
    return job_id


def test_a_store_from_the_previous_release_lists_and_resumes_its_jobs(tmp_path: Path) -> None:
    principles = write_constitution(tmp_path / "principles")
    store = tmp_path / "old.db"
    prompts = [f"Old question {i}?" for i in range(3)]
    job_id = _old_store(store, principles, prompts)
    code, out, err = cli("jobs", "list", "--store", str(store), "--json")
    assert code == 0, err
    [listed] = json.loads(out)
    assert listed["id"] == job_id and listed["status"] == "running"
    code, out, err = cli("jobs", "show", job_id, "--store", str(store), "--json")
    assert code == 0, err
    spec = json.loads(out)["spec"]
    assert spec["judge_config"]["protocol"] == "pairwise"  # what the old release did
    assert spec["judge_config"]["seed"] == 3 and spec["judge_config"]["principles"] == 2
    with ScriptedJudgeServer(responder(prompts)) as server:
        code, out, err = cli(
            "generate", "--resume", job_id, "--store", str(store), "--dir", str(principles),
            "--judge-base-url", server.base_url, "--policy-base-url", server.base_url, "--json",
        )  # fmt: skip
        assert code == 0, err
    summary = json.loads(out)
    assert summary["job_id"] == job_id and summary["prompts"]["done"] == 3
    exported = tmp_path / "rows.jsonl"
    assert cli("export", job_id, "--out", str(exported), "--store", str(store))[0] == 0
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert rows[0]["chosen"] == "old chosen" and rows[0]["calibration"] is None
    assert len(rows) == 3 and all(r["chosen"].startswith("A careful") for r in rows[1:])


ROW = {"prompt": "Q?", "a": "yes", "b": "no", "preferred": "a"}


@pytest.mark.parametrize(
    ("content", "where"),
    [
        (b'{"prompt": "Q?", "a": "x"\n', ":1:26: not valid JSON (Expecting ',' delimiter)"),
        (json.dumps(ROW).encode() + b"\n[1, 2]\n", ":2: expected a JSON object"),
        (json.dumps({**ROW, "preferred": "c"}).encode() + b"\n", ":1: preferred"),
        (json.dumps({k: v for k, v in ROW.items() if k != "b"}).encode() + b"\n", ":1: b"),
        (b"\n\n", ": no labelled pairs found"),
        (json.dumps(ROW).encode() + b'\n{"prompt": "\xff"}\n', ":2:13: not valid UTF-8"),
    ],
    ids=["bad-json", "not-object", "bad-label", "missing-field", "empty", "not-utf8"],
)
def test_bad_labelled_rows_are_one_line_errors_naming_file_and_line(
    tmp_path: Path, content: bytes, where: str
) -> None:
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_bytes(content)
    principles = write_constitution(tmp_path / "principles")
    store = tmp_path / "store.db"
    with ScriptedJudgeServer(responder()) as server:
        for command in ("calibrate", "eval"):
            code, _, err = cli(
                "judge", command, "--pairs", str(labelled), "--dir", str(principles),
                "--store", str(store), "--judge", "openai:scripted",
                "--judge-base-url", server.base_url,
            )  # fmt: skip
            assert code == 1 and "Traceback" not in err
            [line] = err.strip().splitlines()
            assert f"labelled.jsonl{where}" in line, line
        assert server.calls == 0
    assert not store.exists() or "calibrations" not in sqlite_utils.Database(store).table_names()


def test_too_few_pairs_to_calibrate_is_said_before_any_judge_call(tmp_path: Path) -> None:
    labelled = tmp_path / "labelled.jsonl"
    pair = {"prompt": "P", "a": "x", "b": "y", "preferred": "a"}
    labelled.write_text((json.dumps(pair) + "\n") * 2)  # 1 to fit on, 1 held out
    principles = write_constitution(tmp_path / "principles")
    with ScriptedJudgeServer(responder()) as server:
        code, _, err = cli(
            "judge", "calibrate", "--pairs", str(labelled), "--dir", str(principles),
            "--store", str(tmp_path / "store.db"), "--judge", "openai:scripted",
            "--judge-base-url", server.base_url,
        )  # fmt: skip
        assert server.calls == 0
    assert code == 1 and "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("Error:")]
    assert "labelled.jsonl: 2 labelled pair(s) leave 1 to fit on" in line, err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not a JSON calibration"),
        ('{"bias": 0.1}', "temperature: Field required"),
        ('{"temperature": -2}', "temperature: Input should be greater than 0"),
        ('{"temperature": 1, "colour": "red"}', "colour: Extra inputs are not permitted"),
        (None, "no such calibration file"),
    ],
    ids=["not-json", "no-temperature", "negative", "extra-key", "missing-file"],
)
def test_bad_calibration_files_are_one_line_errors(
    tmp_path: Path, content: str | None, message: str
) -> None:
    given = tmp_path / "cal.json"
    if content is not None:
        given.write_text(content)
    labelled = _labelled_file(tmp_path / "labelled.jsonl", [LabelledPair(**ROW)])  # type: ignore[arg-type]
    principles = write_constitution(tmp_path / "principles")
    with ScriptedJudgeServer(responder()) as server:
        code, _, err = cli(
            "judge", "eval", "--pairs", str(labelled), "--dir", str(principles),
            "--calibration", str(given), "--judge", "openai:scripted",
            "--judge-base-url", server.base_url, "--store", str(tmp_path / "s.db"),
        )  # fmt: skip
        assert server.calls == 0
    assert code == 1 and "Traceback" not in err
    [line] = err.strip().splitlines()
    assert "cal.json" in line and message in line, line


def test_an_unknown_calibration_id_and_a_bad_protocol_are_one_line_errors(tmp_path: Path) -> None:
    labelled = _labelled_file(tmp_path / "labelled.jsonl", [LabelledPair(**ROW)])  # type: ignore[arg-type]
    principles = write_constitution(tmp_path / "principles")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Q?", "responses": ["a", "b"]}) + "\n")
    common = ("--dir", str(principles), "--store", str(tmp_path / "s.db"))
    code, _, err = cli("judge", "eval", "--pairs", str(labelled), "--calibration", "cal-nope",
                       *common)  # fmt: skip
    assert code == 1 and err.strip() == "Error: no calibration 'cal-nope' in this store or shipped"
    code, _, err = cli("generate", "--prompts", str(prompts), "--protocol", "listwise", *common)
    assert code == 2 and "--protocol" in err and "listwise" in err and "Traceback" not in err
    code, _, err = cli("judge", "compare", "--prompt", "p", "--a", "x", "--b", "y",
                       "--principles", "0", "--dir", str(principles))  # fmt: skip
    assert code == 2 and "--principles" in err


def test_a_principle_without_a_score_question_keeps_its_digest_and_gets_one() -> None:
    from charter.constitution import Principle, canonical_digest

    fields = {
        "id": "kind", "title": "Be kind", "critique": "Find unkind words.",
        "revision": "Rewrite kindly.", "comparison": "Which response is kinder?",
    }  # fmt: skip
    old = Principle(**fields)  # type: ignore[arg-type]
    # The digest the release before `score` gave this principle.
    assert old.digest == canonical_digest({**fields, "weight": 1.0, "tags": []})
    assert old.score_question == 'Does the response follow the principle "Be kind"?'
    asked = Principle(**fields, score="Is the response kind?")  # type: ignore[arg-type]
    assert asked.digest != old.digest and asked.score_question == "Is the response kind?"


def test_the_shipped_calibration_fits_the_default_constitution_and_demo_settings() -> None:
    """The demo judges with smollm2, pointwise, K=1, on `principles/`: editing a default
    principle changes the digest, and this fails until the calibration is fitted again
    (`charter judge calibrate ... --out charter/data/calibrations/...`, see BENCHMARKS.md)."""
    from charter.calibrations import find
    from charter.constitution import load_constitution

    digest = load_constitution(Path(__file__).parent.parent / "principles").digest
    empty = sqlite_utils.Database(memory=True)
    found = find(empty, "smollm2", digest, JudgeConfig(principles=1))
    assert found is not None and found.shipped and found.protocol == "pointwise"
    # Reported by cross-fitting on all the shipped pairs: each pair calibrated by a fit that
    # never saw it (a 30% hold-out is 57 pairs, whose ECE is mostly noise).
    held = found.heldout
    assert held["pairs"] == 191 and "cross-fitting" in held["method"]
    assert held["calibrated"]["ece"] <= 0.1
    assert held["calibrated"]["log_loss"] < held["raw"]["log_loss"]
    assert find(empty, "smollm2", digest, JudgeConfig(principles=2)) is None
    assert find(empty, "openai:other", digest, JudgeConfig(principles=1)) is None
