"""A suite run end to end, as `charter eval --suite` and a recipe's eval stage both make it:
answer with each model in turn, judge, check that there are verdicts, store the runs.

Models are opened one at a time (the model, the baseline, then the judge), each closed before
the next, so a laptop never holds two local models at once. The caller says how a model is
opened (`Opener`): the CLI names the option in its errors, a pipeline caches the answers too.
The judge's calls always go through the store, so a re-run pays for none of them twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import sqlite_utils

from charter.call_cache import CachedModel, store_secret
from charter.constitution import Constitution
from charter.judge.backends.base import ChatModel
from charter.judge.config import JudgeConfig
from charter.judge.prompts import KeyedNonces
from charter.qualification import qualification
from charter.store import check_table
from charter.versions import frozen_for_run

from .runs import COLUMNS, EVAL_RUNS, new_batch, runs_of, save_runs
from .settings import SamplingSettings, SuiteSettings
from .suites import Answers, SuiteOutcome, SuitePlan, answer_plan, judge_plan

Role = Literal["model", "baseline", "judge"]
Opener = Callable[[str, Role], ChatModel]
"""Opens the model a spec names, for a role; the session closes it when done with it."""


class NoVerdict(ValueError):
    """A suite got no verdict at all: nothing is stored (the judge's calls stay cached)."""


def check_store(db: sqlite_utils.Database) -> None:
    """Refuse another program's `eval_runs` table before any model runs."""
    check_table(db, EVAL_RUNS, COLUMNS)


async def answer_and_judge(
    db: sqlite_utils.Database,
    plan: SuitePlan,
    constitution: Constitution,
    harm_principles: Constitution,
    *,
    open_model: Opener,
    model: str,
    baseline: str | None,
    judge: str,
    config: JudgeConfig,
    sampling: SamplingSettings,
    concurrency: int,
    say: Callable[[str], None] = lambda message: None,
) -> SuiteOutcome:
    """Answer the plan with `model` (and `baseline`), then judge every answer."""

    async def answers_of(spec: str, role: Role) -> Answers:
        say(f"{role}: loading {spec}")
        chat = open_model(spec, role)
        try:
            wanted = [s for s in plan.suites if role == "model" or baseline is not None]
            total = sum(len(plan.prompts(s)) for s in wanted)
            say(f"{role}: answering {total} prompts ({', '.join(wanted)})")
            return await answer_plan(
                chat, plan, sampling=sampling, seed=config.seed, concurrency=concurrency
            )
        finally:
            await chat.aclose()

    answers = {model: await answers_of(model, "model")}
    if baseline is not None:
        answers[baseline] = await answers_of(baseline, "baseline")
    say(f"judge: loading {judge}")
    judge_model = CachedModel(open_model(judge, "judge"), db)
    try:
        say("judge: judging")
        return await judge_plan(
            judge_model,
            constitution,
            plan,
            answers,
            harm_principles=harm_principles,
            config=config,
            sampling=sampling,
            model=model,
            baseline=baseline,
            concurrency=concurrency,
            nonces=KeyedNonces(store_secret(db)),
        )
    finally:
        await judge_model.aclose()


def check_verdicts(outcome: SuiteOutcome) -> None:
    """`NoVerdict` when a suite got no verdict: its rates would be empty, not zero."""
    empty = [r for r in outcome.judged if r.overall.n == 0]
    if not empty and (outcome.helpful is None or outcome.helpful.overall.n > 0):
        return
    first = next(
        (v.error for r in empty for v in r.items if v.error),
        "no pair of the helpful suite got a verdict",
    )
    which = f"{empty[0].suite} for {empty[0].model}" if empty else "helpful"
    raise NoVerdict(f"{which} got no verdict, so nothing was stored; first error: {first}")


def store_outcome(
    db: sqlite_utils.Database,
    outcome: SuiteOutcome,
    plan: SuitePlan,
    constitution: Constitution,
    *,
    judge: str,
    config: JudgeConfig,
    sampling: SamplingSettings,
    suite_settings: SuiteSettings,
) -> str:
    """Store one run per suite per model under a new batch id, and return the id."""
    check_verdicts(outcome)
    batch = new_batch()
    qualified = qualification(db, judge)
    settings = {
        "judge_qualification": {**qualified.model_dump(mode="json"), "text": qualified.text},
        "judge": config.model_dump(mode="json"),
        "sampling": sampling.model_dump(mode="json"),
        "suites": suite_settings.model_dump(mode="json"),
    }
    runs = runs_of(
        outcome,
        batch=batch,
        sources=plan.sources,
        judge=judge,
        constitution=frozen_for_run(db, constitution),
        settings=settings,
    )
    save_runs(db, runs)
    return batch
