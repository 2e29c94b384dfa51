"""Run a recipe's stages in order, each fed the previous stages' outputs, resuming from the store.

A stage that finished (its record is in the `pipelines` table) is skipped on a re-run; the
first one without a record runs. Inside a stage nothing is paid twice either: generation jobs
resume through the store (their ids are hashes of their inputs), every judge and policy call
of the suites goes through the stored calls, and a training stage whose output directory
already holds a model whose card matches its inputs is reused, not retrained. Each training
stage writes to a directory named after a digest of its inputs, so a model spec always names
one set of weights and a stored call made with it stays valid.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from charter.judge.backends.registry import names_backend
from charter.settings import JUDGE_BASE_URL_ENV, POLICY_BASE_URL_ENV

from . import state
from .recipe import EvalStage, GenerationStage, Recipe, TrainingStage, content_digest

if TYPE_CHECKING:
    import sqlite_utils

    from charter.jobs.summary import JobSummary
    from charter.judge import ChatModel

log = logging.getLogger("charter.pipeline")

Progress = Callable[[str], None]
TRAIN_KINDS = {
    "sft": "sft",
    "dpo": "preference",
    "reward": "preference",
    "ppo": "prompt",
    "rloo": "prompt",
}


class PipelineError(ValueError):
    """A stage that could not finish, in one line; finished stages stay recorded."""


class StageReport(BaseModel):
    """What one stage did this run: `ran`, `skipped` (finished earlier) or `reused` (a
    trained model whose card matches)."""

    name: str
    status: str
    seconds: float
    record: dict[str, Any]


class PipelineSummary(BaseModel):
    id: str
    recipe: str
    store: str
    stages: list[StageReport]
    seconds: float


def as_spec(model: str) -> str:
    """A model for the generation and eval stages: a bare directory becomes `hf:DIR`."""
    if names_backend(model):
        return model
    return f"hf:{model}"


@dataclass
class _Context:
    """What the stages so far have made, for the next ones."""

    recipe: Recipe
    store: Path
    db: sqlite_utils.Database
    say: Progress
    jobs: dict[str, str] = field(default_factory=dict)
    policy_dir: str | None = None
    reward_dir: str | None = None
    batch: str | None = None

    @property
    def policy_spec(self) -> str:
        return as_spec(self.policy_dir) if self.policy_dir else as_spec(self.recipe.pipeline.model)

    def absorb(self, name: str, record: dict[str, Any]) -> None:
        if "job_id" in record:
            self.jobs[name] = record["job_id"]
        if "model_dir" in record:
            if name == "reward":
                self.reward_dir = record["model_dir"]
            else:
                self.policy_dir = record["model_dir"]
        if "batch" in record:
            self.batch = record["batch"]


def run_pipeline(
    recipe: Recipe, *, store: Path | str, on_progress: Progress | None = None
) -> PipelineSummary:
    """Run the recipe's unfinished stages in order; see the module docstring."""
    from charter.jobs.store import check_tables
    from charter.store import open_store

    started = time.perf_counter()
    say = on_progress or log.info
    store = Path(store)
    db = open_store(store)
    check_tables(db)  # another program's tables are refused before anything is written
    state.start(db, recipe.id, recipe.path, recipe.digest)
    finished = state.load_stages(db, recipe.id)
    ctx = _Context(recipe=recipe, store=store, db=db, say=say)
    reports: list[StageReport] = []
    total = len(recipe.pipeline.stages)
    for number, name in enumerate(recipe.pipeline.stages, start=1):
        prefix = f"[{number}/{total}] {name}"
        if name in finished:
            record = finished[name]
            say(f"{prefix}: finished earlier, skipped ({_describe(record)})")
            ctx.absorb(name, record)
            reports.append(StageReport(name=name, status="skipped", seconds=0.0, record=record))
            continue
        say(f"{prefix}: running")
        began = time.perf_counter()
        try:
            record = _run_stage(ctx, name, recipe.stages[name])
        except BaseException:
            state.set_status(db, recipe.id, f"failed at {name}")
            raise
        state.finish_stage(db, recipe.id, name, record)
        ctx.absorb(name, record)
        seconds = time.perf_counter() - began
        status = "reused" if record.get("reused") else "ran"
        say(
            f"{prefix}: {'reused' if status == 'reused' else 'done'} in {seconds:.1f} s "
            f"({_describe(record)})"
        )
        reports.append(StageReport(name=name, status=status, seconds=seconds, record=record))
    state.set_status(db, recipe.id, "done")
    return PipelineSummary(
        id=recipe.id,
        recipe=recipe.path,
        store=str(store),
        stages=reports,
        seconds=time.perf_counter() - started,
    )


def _describe(record: dict[str, Any]) -> str:
    for key in ("job_id", "model_dir", "batch", "html"):
        if key in record:
            return f"{key.replace('_', ' ')} {record[key]}"
    return "no output"


def _run_stage(ctx: _Context, name: str, settings: Any) -> dict[str, Any]:
    if isinstance(settings, GenerationStage):
        return _generate(ctx, name, settings)
    if isinstance(settings, TrainingStage):
        return _train(ctx, name, settings)
    if isinstance(settings, EvalStage):
        return _evaluate(ctx, settings)
    return _report(ctx)


def _open(ctx: _Context, spec: str, base_url: str | None, env: str) -> ChatModel:
    from charter.judge import BackendOptions
    from charter.judge.backends.registry import load_model

    pipeline = ctx.recipe.pipeline
    options = BackendOptions.from_env(
        base_url=base_url,
        base_url_envs=(env, "OPENAI_BASE_URL"),
        timeout_s=pipeline.timeout_s,
        max_concurrency=pipeline.max_concurrency,
    )
    return load_model(spec, options)


# ------------------------------------------------------------------------- generation


def _generate(ctx: _Context, name: str, settings: GenerationStage) -> dict[str, Any]:
    """A `charter generate` job: revise with the recipe's policy, compare with the newest
    trained policy (the base model before any training)."""
    from charter.constitution import load_constitution
    from charter.jobs.leases import LeaseSettings
    from charter.jobs.run import JobFailed
    from charter.jobs.session import LocalModels, job_session
    from charter.prompt_files import load_prompts

    pipeline = ctx.recipe.pipeline
    assert pipeline.prompts is not None  # checked when the recipe was read
    records = list(load_prompts(pipeline.prompts))
    constitution = load_constitution(pipeline.principles)
    judge_spec = pipeline.judge
    if name == "revise":
        policy_spec = pipeline.policy or judge_spec
        policy_url = pipeline.policy_base_url if pipeline.policy else pipeline.judge_base_url
    else:
        policy_spec, policy_url = ctx.policy_spec, None
    options = settings.job.model_copy(update={"policy": policy_spec, "judge": judge_spec})
    spec = options.plan(
        ctx.db, records, constitution, default_judge=judge_spec, default_policy=policy_spec
    )
    models = LocalModels(
        judge_base_url=pipeline.judge_base_url,
        policy_base_url=policy_url,
        timeout_s=pipeline.timeout_s,
        max_concurrency=pipeline.max_concurrency,
    )

    async def go() -> JobSummary:
        async with job_session(ctx.db, models, spec, records) as session:
            job, created = session.start(spec, constitution, records, str(pipeline.prompts))
            ctx.say(
                f"  {'started' if created else 'resuming'} job {job.id} ({len(records)} "
                f"prompts, policy {policy_spec})"
            )
            return await session.run(
                job,
                concurrency=pipeline.max_concurrency,
                run=settings.run,
                lease=LeaseSettings.from_env(),
                resume_with=f"charter pipeline {ctx.recipe.path}",
                on_activity=lambda now: ctx.say(f"  {now.line()}"),
            )

    try:
        summary = asyncio.run(go())
    except JobFailed as exc:
        raise PipelineError(f"{name}: {exc}; run the pipeline again to resume") from None
    if summary.prompts.failed:
        raise PipelineError(f"{name}: {summary.error}")
    calls = summary.calls
    assert calls is not None  # a run's summary has its calls
    return {
        "job_id": summary.job_id,
        "preferences": summary.preferences,
        "exportable": summary.exportable,
        "calls_made": calls.made,
        "calls_reused": calls.reused,
    }


# ------------------------------------------------------------------------- training


def _train(ctx: _Context, name: str, settings: TrainingStage) -> dict[str, Any]:
    """`charter train NAME` on the previous stages' outputs, or their model reused."""
    import importlib

    from charter import trainer as T
    from charter.trainer.runtime import latest_checkpoint
    from charter.training_data import load_job_data

    pipeline = ctx.recipe.pipeline
    run: dict[str, Any] = dict(settings.run)
    data_job = ctx.jobs.get("revise" if name == "sft" else "compare")
    model = pipeline.model if name == "sft" else (ctx.policy_dir or pipeline.model)
    run["model"] = model
    if name == "ppo":
        run["reward_model"] = ctx.reward_dir
    if name == "rloo":  # the pipeline's judge and constitution are the reward
        run.update(
            judge=pipeline.judge,
            judge_base_url=pipeline.judge_base_url or os.environ.get(JUDGE_BASE_URL_ENV),
            judge_timeout=pipeline.timeout_s,
            judge_concurrency=pipeline.max_concurrency,
            constitution=pipeline.principles,
        )
    inputs = {"method": name, "data": data_job or run.get("data"), **run, "trl": settings.trl}
    if data_job is None and run.get("data"):
        inputs["data_digest"] = content_digest(Path(str(run["data"])))
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()
    out = Path(pipeline.out) / f"{name}-{digest[:10]}"
    run["output_dir"] = str(out)
    facts = T.read_training_facts(out)
    if facts is not None and _card_matches(facts, name, model, data_job, settings.trl):
        ctx.say(f"  {out} holds this model already (its card matches): reused")
        return {"model_dir": str(out), "reused": True, "metrics": facts.get("metrics", {})}
    if out.is_dir() and not run.get("resume") and not run.get("overwrite"):
        if facts is None and latest_checkpoint(out) is not None:
            run["resume"] = True  # a run killed mid-way: carry on from its checkpoint
        else:
            run["overwrite"] = True  # the directory is this stage's own
    if data_job is not None:
        run["data"] = load_job_data(
            ctx.store,
            data_job,
            kind=TRAIN_KINDS[name],  # type: ignore[arg-type]
            min_confidence=settings.min_confidence,
            conversational=run.get("conversational"),
        )
    module = importlib.import_module(f"charter.trainer.{name}")
    run_cls = {
        "sft": T.SFTRunConfig,
        "dpo": T.DPORunConfig,
        "reward": T.RewardRunConfig,
        "ppo": T.PPORunConfig,
        "rloo": T.RLOORunConfig,
    }[name]
    config = run_cls(**run, trl=dict(settings.trl))
    ctx.say(f"  training {name} from {model} into {out}")
    result = getattr(module, f"train_{name}")(config)
    return {
        "model_dir": str(out),
        "steps": result.global_step,
        "metrics": {k: v for k, v in result.metrics.items() if v is not None},
    }


def _card_matches(
    facts: dict[str, Any], method: str, model: str, job: str | None, trl: dict[str, Any]
) -> bool:
    """Whether a model's card says it was trained by `method` from `model` on `job` with the
    same values of every setting the card records."""
    data = facts.get("data") or {}
    hyper = facts.get("hyperparameters") or {}
    return (
        facts.get("method") == method
        and facts.get("base_model") == model
        and data.get("job_id") == job
        and all(hyper[key] == value for key, value in trl.items() if key in hyper)
    )


# ------------------------------------------------------------------------- eval and report


def _evaluate(ctx: _Context, settings: EvalStage) -> dict[str, Any]:
    """The suites on the newest trained policy, with the base model as the baseline; the
    answers are cached too, so a resumed stage asks no model anything twice."""
    from charter.call_cache import CachedModel
    from charter.constitution import load_constitution
    from charter.evals.plan import build_plan, expand
    from charter.evals.session import (
        NoVerdict,
        Role,
        answer_and_judge,
        check_store,
        store_outcome,
    )
    from charter.evals.suites import select_principles

    pipeline = ctx.recipe.pipeline
    constitution = load_constitution(pipeline.principles)
    model = ctx.policy_spec
    base = as_spec(pipeline.model)
    baseline = base if base != model else None
    plan = build_plan(
        expand(settings.suite, has_baseline=baseline is not None), settings.suite_settings
    )
    harm = select_principles(constitution, settings.suite_settings.harm_principles)
    check_store(ctx.db)

    def open_for(spec: str, role: Role) -> ChatModel:
        if role == "judge":
            return _open(ctx, spec, pipeline.judge_base_url, JUDGE_BASE_URL_ENV)
        url = None if spec != pipeline.judge else pipeline.judge_base_url
        return CachedModel(_open(ctx, spec, url, POLICY_BASE_URL_ENV), ctx.db)

    outcome = asyncio.run(
        answer_and_judge(
            ctx.db,
            plan,
            constitution,
            harm,
            open_model=open_for,
            model=model,
            baseline=baseline,
            judge=pipeline.judge,
            config=settings.config,
            sampling=settings.sampling,
            concurrency=pipeline.max_concurrency,
            say=lambda message: ctx.say(f"  {message}"),
        )
    )
    try:
        batch = store_outcome(
            ctx.db,
            outcome,
            plan,
            constitution,
            judge=pipeline.judge,
            config=settings.config,
            sampling=settings.sampling,
            suite_settings=settings.suite_settings,
        )
    except NoVerdict as exc:
        raise PipelineError(f"eval: {exc}") from None
    runs = len(outcome.judged) + (outcome.helpful is not None)
    figures = {f"{r.suite} {r.model}": r.overall.rate for r in outcome.judged} | (
        {"helpful win rate": outcome.helpful.overall.win_rate} if outcome.helpful else {}
    )
    return {"batch": batch, "runs": runs, "figures": figures}


def _report(ctx: _Context) -> dict[str, Any]:
    from charter.evals.report import render_report
    from charter.evals.runs import load_runs

    assert ctx.batch is not None  # the recipe check puts an eval stage before the report
    runs = load_runs(ctx.db, batches=[ctx.batch])
    files = render_report(runs, Path(ctx.recipe.pipeline.out) / "report")
    return {"html": str(files.html), "images": [str(p) for p in files.images]}
