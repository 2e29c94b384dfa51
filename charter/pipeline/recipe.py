"""A recipe file: the `[pipeline]` table and one table of settings per stage.

Each stage's table is checked by the classes its own command uses: `JobOptions` and
`RunOptions` for the generation stages (as `charter generate`), the method's run config and
TRL config for the training stages (as `charter train`), `JudgeConfig`, `SamplingSettings` and
`SuiteSettings` for the suites (as `charter eval --suite`). The settings that wire one stage to
the next (a job id, a model directory) are the pipeline's, never the recipe's. Every error is
one line naming the file, the line and the field.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from charter.common.datafiles import DataFileError, loads_toml, read_text
from charter.common.limits import InputLimits
from charter.evals.settings import SamplingSettings, SuiteSettings
from charter.jobs.spec import JobOptions, ModelSpec, RunOptions
from charter.judge.backends.options import BackendOptions
from charter.judge.config import VERDICT_FIELDS, JudgeConfig
from charter.settings import DEFAULT_MODEL, DEFAULT_PRINCIPLES_DIR

StageName = Literal["revise", "sft", "compare", "dpo", "reward", "ppo", "rloo", "eval", "report"]
STAGES: tuple[StageName, ...] = (
    "revise",
    "sft",
    "compare",
    "dpo",
    "reward",
    "ppo",
    "rloo",
    "eval",
    "report",
)
GENERATION_STAGES = ("revise", "compare")
TRAINING_STAGES = ("sft", "dpo", "reward", "ppo", "rloo")
# The stages that optimise the policy after SFT: a recipe has at most one of them.
POLICY_STAGES = ("dpo", "ppo", "rloo")
# Settings each stage gets from the pipeline (the previous stage's output), not from the recipe.
WIRED: dict[str, set[str]] = {
    "revise": {"mode", "policy", "judge"},
    "compare": {"mode", "policy", "judge"},
    "sft": {"model", "output_dir"},
    "dpo": {"data", "model", "output_dir"},
    "reward": {"data", "model", "output_dir"},
    "ppo": {"data", "model", "output_dir", "reward_model"},
    "rloo": {"data", "model", "output_dir", "judge", "judge_base_url", "constitution"},
}
SUITES = ("harm", "refusal", "helpful", "all")
RUN_CONFIGS = {
    "sft": "SFTRunConfig",
    "dpo": "DPORunConfig",
    "reward": "RewardRunConfig",
    "ppo": "PPORunConfig",
    "rloo": "RLOORunConfig",
}


class RecipeError(ValueError):
    """A recipe that cannot run: one line, `file:line: [table] field: reason`."""


def _backend(name: str) -> Any:
    return BackendOptions.model_fields[name]


class PipelineSettings(BaseModel):
    """The `[pipeline]` table: the stages, the base model, the judge and where things go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stages: list[StageName] = Field(
        min_length=1,
        description="The stages to run, in this order: revise, sft, compare, dpo (or reward "
        "then ppo, or rloo), eval, report.",
    )
    model: str = Field(
        min_length=1,
        description="The base model the first training stage starts from: smollm2, "
        "hf:PATH_OR_ID, or a directory.",
    )
    prompts: str | None = Field(
        default=None, min_length=1, description="Prompts file for the generation stages."
    )
    principles: str = Field(
        default=str(DEFAULT_PRINCIPLES_DIR), description="Directory of principle files."
    )
    judge: ModelSpec = Field(default=DEFAULT_MODEL, description="The judge of every stage.")
    judge_base_url: str | None = Field(default=None, description="Base URL of an openai: judge.")
    policy: ModelSpec | None = Field(
        default=None,
        description="The model whose answers the revise stage critiques (default: the judge, "
        "which is how SL-CAI starts from a helpful model).",
    )
    policy_base_url: str | None = Field(default=None, description="Base URL of an openai: policy.")
    out: str = Field(
        default="runs/pipeline", min_length=1, description="Directory for models and the report."
    )
    timeout_s: Annotated[float, _backend("timeout_s")]
    max_concurrency: Annotated[int, _backend("max_concurrency")]


class GenerationStage(BaseModel):
    """revise / compare: `charter generate`'s settings."""

    job: JobOptions
    run: RunOptions


class TrainingStage(BaseModel):
    """sft / dpo / reward / ppo / rloo: `charter train METHOD`'s settings, sorted as it sorts
    them."""

    run: dict[str, Any]
    trl: dict[str, Any]
    min_confidence: float | None = None


class EvalStage(BaseModel):
    """eval: `charter eval --suite`'s settings; the baseline is the pipeline's base model."""

    suite: Literal["harm", "refusal", "helpful", "all"]
    config: JudgeConfig
    sampling: SamplingSettings
    suite_settings: SuiteSettings


StageSettings = GenerationStage | TrainingStage | EvalStage | None


class Recipe(BaseModel):
    """A checked recipe: its pipeline settings, each stage's settings, and its content digest."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: str
    pipeline: PipelineSettings
    stages: dict[str, StageSettings]
    digest: str

    @property
    def id(self) -> str:
        return f"pipeline-{self.digest[:12]}"


class _Locator:
    """Line numbers of tables and keys in the recipe's text, for error messages."""

    HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_\-\"'.]+)\s*\]")

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line(self, table: str, key: str | None = None) -> int | None:
        current: str | None = None
        header_line: int | None = None
        pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=") if key else None
        for number, text in enumerate(self.lines, start=1):
            header = self.HEADER.match(text)
            if header:
                current = header.group(1).strip("\"'")
                if current == table and header_line is None:
                    header_line = number
                continue
            if current == table and pattern is not None and pattern.match(text):
                return number
        return header_line

    def error(self, table: str, key: str | None, reason: str) -> RecipeError:
        line = self.line(table, key)
        where = f"{self.path}:{line}" if line else str(self.path)
        field = f"[{table}] {key}" if key else f"[{table}]"
        return RecipeError(f"{where}: {field}: {reason}")


def _pydantic_reason(exc: ValidationError) -> tuple[str | None, str]:
    err = exc.errors()[0]
    loc = err["loc"]
    return (str(loc[0]) if loc else None), err["msg"]


def _suggest(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=3)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe file; `RecipeError` (one line) for anything that cannot run."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        text = read_text(path, InputLimits.from_env(), error=DataFileError)
        raw = loads_toml(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML: {exc}") from None
    except DataFileError as exc:
        raise RecipeError(str(exc)) from None
    where = _Locator(path, text)
    for name, value in raw.items():
        if name != "pipeline" and name not in STAGES:
            raise where.error(
                name,
                None,
                f"not a stage; stages are {', '.join(STAGES)}" + _suggest(name, set(STAGES)),
            )
        if not isinstance(value, dict):
            raise RecipeError(f"{path}:{where.line(name) or 1}: {name!r} must be a [{name}] table")
    if "pipeline" not in raw:
        raise RecipeError(f"{path}: no [pipeline] table (it names the stages and the base model)")
    defaults = {
        "timeout_s": BackendOptions.model_fields["timeout_s"].default,
        "max_concurrency": BackendOptions.model_fields["max_concurrency"].default,
    }
    try:
        pipeline = PipelineSettings.model_validate({**defaults, **raw["pipeline"]})
    except ValidationError as exc:
        key, reason = _pydantic_reason(exc)
        if key in PipelineSettings.model_fields or key is None:
            raise where.error("pipeline", key, reason) from None
        raise where.error(
            "pipeline", key, "unknown key" + _suggest(key, set(PipelineSettings.model_fields))
        ) from None
    _check_order(pipeline, raw, where)
    if "ppo" in pipeline.stages:
        from charter.trainer.ppo import ppo_unavailable

        missing = ppo_unavailable()
        if missing:
            raise where.error("pipeline", "stages", missing)
    stages: dict[str, StageSettings] = {
        name: _stage(name, raw.get(name, {}), raw, where) for name in pipeline.stages
    }
    _check_inputs(pipeline, stages, where)
    # The files a recipe names are part of its content: an edited prompts file, data file or
    # constitution is a new pipeline, never a finished one.
    named = [pipeline.prompts, pipeline.principles, raw.get("sft", {}).get("data")]
    files = {str(p): content_digest(Path(p)) for p in named if isinstance(p, str)}
    canonical = json.dumps([raw, files], sort_keys=True, separators=(",", ":"), default=str)
    return Recipe(
        path=str(path),
        pipeline=pipeline,
        stages=stages,
        digest=hashlib.sha256(canonical.encode()).hexdigest(),
    )


def content_digest(path: Path) -> str:
    """A digest of a data file's (or a data directory's files') bytes: an edited file is new
    data, so its stage trains again."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _check_order(pipeline: PipelineSettings, raw: dict[str, Any], where: _Locator) -> None:
    """Stages in the one order they can run, each with what it needs before it."""
    names = pipeline.stages
    for name in raw:
        if name != "pipeline" and name not in names:
            raise where.error(name, None, "settings for a stage that `stages` does not name")
    if len(set(names)) != len(names):
        raise where.error("pipeline", "stages", "a stage is named twice")
    order = [STAGES.index(n) for n in names]
    if order != sorted(order):
        raise where.error(
            "pipeline",
            "stages",
            f"stages run in the order {', '.join(STAGES)}; got {', '.join(names)}",
        )
    needs = {
        "dpo": "compare",
        "reward": "compare",
        "ppo": "reward",
        "rloo": "compare",
        "report": "eval",
    }
    for stage, needed in needs.items():
        if stage in names and needed not in names:
            raise where.error("pipeline", "stages", f"{stage} needs a {needed} stage before it")
    if "dpo" in names and "ppo" in names:
        raise where.error("pipeline", "stages", "dpo or reward + ppo, not both")
    if sum(n in names for n in POLICY_STAGES) > 1:
        raise where.error("pipeline", "stages", "one of dpo, reward + ppo or rloo, not several")
    if "sft" in names and "revise" not in names and "data" not in raw.get("sft", {}):
        raise where.error("sft", "data", "give the SFT data (a file) when there is no revise stage")
    if any(n in names for n in GENERATION_STAGES) and not pipeline.prompts:
        raise where.error("pipeline", "prompts", "the generation stages need a prompts file")
    paths = [
        ("pipeline", "prompts", pipeline.prompts),
        ("pipeline", "principles", pipeline.principles),
        ("sft", "data", raw.get("sft", {}).get("data")),
    ]
    for table, key, value in paths:
        if isinstance(value, str) and not Path(value).expanduser().exists():
            raise where.error(table, key, f"{value} does not exist")


def _check_inputs(
    pipeline: PipelineSettings, stages: dict[str, StageSettings], where: _Locator
) -> None:
    """Read what the stages will read (the constitution, the prompts, the suites), so a bad
    file or name fails now, not after an hour of training."""
    from charter.constitution import ConstitutionError, load_constitution
    from charter.evals.plan import build_plan, expand
    from charter.evals.suites import select_principles
    from charter.prompt_files import load_prompts

    try:
        constitution = load_constitution(pipeline.principles)
    except ConstitutionError as exc:
        findings = getattr(exc, "findings", None)
        reason = str(findings[0]) if findings else str(exc)
        raise where.error("pipeline", "principles", reason) from None
    if pipeline.prompts is not None and any(s in stages for s in GENERATION_STAGES):
        try:
            load_prompts(pipeline.prompts)
        except ValueError as exc:
            raise where.error("pipeline", "prompts", str(exc)) from None
    settings = stages.get("eval")
    if isinstance(settings, EvalStage):
        chosen = settings.suite_settings
        try:
            select_principles(constitution, chosen.harm_principles)
        except ValueError as exc:
            raise where.error("eval", "harm_principles", str(exc).split(": ", 1)[-1]) from None
        try:
            build_plan(expand(settings.suite, has_baseline=True), chosen)
        except ValueError as exc:
            raise where.error("eval", "templates", str(exc)) from None


def _stage(name: str, values: dict[str, Any], raw: dict[str, Any], where: _Locator) -> Any:
    for key in values:
        if key in WIRED.get(name, set()) and not (name == "sft" and key == "data"):
            raise where.error(name, key, "set by the pipeline from the previous stage's output")
    if name == "sft" and "data" in values and "revise" in raw["pipeline"].get("stages", []):
        raise where.error(name, "data", "set by the pipeline from the revise stage")
    if name in GENERATION_STAGES:
        return _generation(name, values, where)
    if name in TRAINING_STAGES:
        return _training(name, values, where)
    if name == "eval":
        return _evaluation(values, where)
    if values:
        key = next(iter(values))
        raise where.error(name, key, "this stage takes no settings")
    return None


def _generation(name: str, values: dict[str, Any], where: _Locator) -> GenerationStage:
    run_keys = set(RunOptions.model_fields)
    job_keys = set(JobOptions.model_fields) - WIRED[name]
    for key in values:
        if key not in run_keys | job_keys:
            hint = _suggest(key, run_keys | job_keys)
            raise where.error(name, key, "not a setting of `charter generate`" + hint)
    try:
        return GenerationStage(
            job=JobOptions.model_validate(
                {k: v for k, v in values.items() if k in job_keys} | {"mode": name}
            ),
            run=RunOptions.model_validate({k: v for k, v in values.items() if k in run_keys}),
        )
    except ValidationError as exc:
        for error in exc.errors():
            loc = [str(p) for p in error["loc"] if str(p) in values]
            if loc:
                raise where.error(name, loc[0], error["msg"]) from None
        raise where.error(name, None, str(exc.errors()[0]["msg"])) from None


def _training(name: str, values: dict[str, Any], where: _Locator) -> TrainingStage:
    import importlib

    from charter.trainer import TrainError
    from charter.trainer.config import ALIASES, canonical_keys, split_settings
    from charter.trainer.errors import SettingError

    module = importlib.import_module(f"charter.trainer.{name}")
    run_cls = getattr(module, RUN_CONFIGS[name])
    try:
        keys = canonical_keys(values, name)
        run, trl, extra = split_settings(
            keys,
            run_cls=run_cls,
            trl_cls=module.trl_config_class(),
            extra={"min_confidence"},
            source=name,
        )
    except SettingError as exc:
        spelt = next((k for k in values if ALIASES.get(k, k) == exc.key), exc.key)
        raise where.error(name, spelt, exc.reason) from None
    except TrainError as exc:
        found = re.search(r"key '([^']+)'", str(exc)) or re.search(r"'([^']+)'", str(exc))
        reason = str(exc).split(": ", 1)[-1]
        raise where.error(name, found.group(1) if found else None, reason) from None
    try:  # the run config's own checks (judge settings, reward mode), now rather than later
        run_cls(**{"data": "", "model": "", "output_dir": "", **run})
    except TrainError as exc:
        found = re.search(r"setting (\w+)", str(exc)) or re.search(r"^(\w+) ", str(exc))
        raise where.error(name, found.group(1) if found else None, str(exc)) from None
    confidence = extra.get("min_confidence")
    if confidence is not None:
        try:
            RunOptions.model_validate({"min_confidence": confidence})
        except ValidationError as exc:
            raise where.error(name, "min_confidence", _pydantic_reason(exc)[1]) from None
    return TrainingStage(run=run, trl=trl, min_confidence=confidence)


def _evaluation(values: dict[str, Any], where: _Locator) -> EvalStage:
    groups: dict[str, tuple[type[BaseModel], set[str]]] = {
        "config": (JudgeConfig, set(VERDICT_FIELDS)),
        "sampling": (SamplingSettings, set(SamplingSettings.model_fields)),
        "suite_settings": (SuiteSettings, set(SuiteSettings.model_fields)),
    }
    known = {"suite"} | {k for _, keys in groups.values() for k in keys}
    for key in values:
        if key not in known:
            raise where.error(
                "eval", key, "not a setting of `charter eval --suite`" + _suggest(key, known)
            )
    suite = values.get("suite", "all")
    if suite not in SUITES:
        raise where.error("eval", "suite", f"one of {', '.join(SUITES)}, not {suite!r}")
    built: dict[str, Any] = {}
    for attr, (cls, keys) in groups.items():
        try:
            built[attr] = cls.model_validate({k: v for k, v in values.items() if k in keys})
        except ValidationError as exc:
            field, reason = _pydantic_reason(exc)
            raise where.error("eval", field, reason) from None
    return EvalStage(suite=cast(Any, suite), **built)
