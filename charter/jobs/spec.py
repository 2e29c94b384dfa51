"""What a generation job is (`JobSpec`) and what a caller may choose about it (`JobOptions`,
`RunOptions`), shared by the CLI, the service and the pipeline.

`JobOptions` holds the knobs (mode, models, sampling, and every `JudgeConfig` setting);
`JobOptions.plan` turns them, with the prompts, the constitution and the calibration the store
has for them, into the `JobSpec` whose hash is the job id. Every front end builds jobs through
it, so the same request makes the same job either way; the CLI's options and the service's
request schema are built from its fields.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from charter.judge.backends.registry import parse_spec
from charter.judge.config import MAX_JUDGE_TOKENS, JudgeConfig
from charter.judge.quality import QualityConfig

if TYPE_CHECKING:  # the CLI builds its options from this module: keep its imports light
    import sqlite_utils

    from charter.constitution import Constitution
    from charter.prompt_files import PromptRecord

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MIN_CONFIDENCE",
    "JobOptions",
    "JobSpec",
    "Mode",
    "ModelSpec",
    "RunOptions",
    "dedupe",
    "needs_policy",
    "prompts_digest",
]

Mode = Literal["compare", "revise"]


def _check_spec(value: str) -> str:
    kind, name = parse_spec(value)
    return f"{kind}:{name}" if name else kind


ModelSpec = Annotated[
    str,
    Field(min_length=1, max_length=200, examples=["openai:gpt-4o-mini"]),
    AfterValidator(_check_spec),
]
"""A model spec string; the service decides where it runs (never the caller)."""


class RunOptions(BaseModel):
    """How to run a job that do not change its rows (so not part of its id)."""

    min_confidence: float = Field(
        default=0.6,
        ge=0.5,
        le=1.0,
        description="p_chosen a row needs to count as exportable (comparisons and checked "
        "revisions).",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Runs a prompt gets for its failed model calls to succeed; the last one "
        "keeps what succeeded and records what did not.",
    )


DEFAULT_MIN_CONFIDENCE: float = RunOptions.model_fields["min_confidence"].default
DEFAULT_MAX_ATTEMPTS: int = RunOptions.model_fields["max_attempts"].default


_LEGACY_JUDGE_FIELDS = ("seed", "principles", "revisions", "cot")


class JobSpec(BaseModel):
    """Everything that determines a job's output, and whose job it is. Equal specs make the
    same job.

    `judge_config` is the whole effective `JudgeConfig` (its protocol resolved for the judge)
    and `calibration` the id of the calibration its `p_chosen` went through, so changing any
    setting that changes the rows changes the job id. `tenant` keeps the service's tenants
    apart: two tokens sending the same request get two jobs (their model calls are still
    shared underneath, through the `calls` table).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode = "compare"
    policy: str = "smollm2"
    judge: str = "smollm2"
    n: int = Field(default=2, ge=1, description="Candidates per prompt (sampled when not given).")
    temperature: float = Field(default=0.8, ge=0)
    max_tokens: int = Field(default=128, ge=1)
    frequency_penalty: float = 0.0
    pairs: Literal["best_worst", "margin"] = "best_worst"
    judge_config: JudgeConfig = JudgeConfig(protocol="pairwise")
    quality: QualityConfig = QualityConfig()
    calibration: str | None = None
    prompts_digest: str
    constitution_digest: str
    tenant: str | None = Field(
        default=None,
        description="The service owner (a token's hash) the job belongs to; None for the CLI's.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_older_release(cls, data: Any) -> Any:
        """Specs stored before `JudgeConfig` kept the judge's settings at the top level (and
        always judged pairwise, with critiques as long as the candidates): read them so."""
        if not isinstance(data, dict) or "judge_config" in data:
            return data
        data = dict(data)
        config = {name: data.pop(name) for name in _LEGACY_JUDGE_FIELDS if name in data}
        if "max_tokens" in data:  # the old CLI had no upper bound; JudgeConfig has one
            config["critique_max_tokens"] = min(data["max_tokens"], MAX_JUDGE_TOKENS)
        data["judge_config"] = {"protocol": "pairwise", "selection": "random", **config}
        return data

    @classmethod
    def from_store(cls, stored: str) -> JobSpec:
        """A spec as the store holds it. Specs stored before quality settings existed ran
        without checking revisions: they resume so (a new spec defaults to checking)."""
        data = json.loads(stored)
        data.setdefault("quality", {"verify_revisions": False})
        if isinstance(data.get("judge_config"), dict):  # before `selection`: at random
            data["judge_config"].setdefault("selection", "random")
        return cls.model_validate(data)

    @property
    def job_id(self) -> str:
        """A hash of the spec; a job without a tenant hashes as before tenants existed, and one
        selecting principles at random as before `selection` existed, so jobs keep their ids."""
        untenanted = {"tenant"} if self.tenant is None else None
        data = self.model_dump(mode="json", exclude=untenanted)
        data["judge_config"] = self.judge_config.identity()  # as before settings it lacked
        blob = json.dumps(data, sort_keys=True)
        return "job-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


class JobOptions(JudgeConfig, QualityConfig):
    """How to run a job: the judge's settings (`JudgeConfig`) and what to do with flawed texts
    (`QualityConfig`), both inherited field for field, plus the job's own. Models left out are
    the service's (or the CLI's) defaults."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    mode: Literal["compare", "revise"] = Field(
        default="compare",
        description="compare: rank candidates with the judge (RL-CAI); revise: critique -> "
        "revision (SL-CAI).",
    )
    policy: ModelSpec | None = Field(default=None, description="Samples candidate responses.")
    judge: ModelSpec | None = None
    n: int = Field(default=2, ge=1, le=16, description="Candidates sampled per prompt.")
    temperature: float = Field(
        default=0.8, ge=0, le=2, description="Sampling temperature of the policy's candidates."
    )
    max_tokens: int = Field(
        default=256,
        ge=1,
        le=4096,
        description="Max new tokens per sampled candidate (an answer cut off at the limit is "
        "never chosen: 128 cut off every answer of the embedded model, and gave no rows).",
    )
    frequency_penalty: float = Field(
        default=0.0,
        ge=0.0,
        le=2.0,
        description="Sampled candidates: OpenAI's frequency penalty (see "
        "--critique-frequency-penalty).",
    )
    pairs: Literal["best_worst", "margin"] = Field(
        default="best_worst",
        description="Which ranked pairs become preferences: best vs worst, or every pair "
        "decided beyond the tie margin.",
    )

    def judge_config(self, judge: str) -> JudgeConfig:
        """The judge's settings alone, with the protocol resolved for `judge`."""
        fields = self.model_dump(include=set(JudgeConfig.model_fields))
        return JudgeConfig.model_validate(fields).resolved(judge)

    def plan(
        self,
        db: sqlite_utils.Database,
        records: Sequence[PromptRecord],
        constitution: Constitution,
        *,
        default_judge: str,
        default_policy: str,
    ) -> JobSpec:
        """The job spec, with the calibration the store (or charter) has for this judge,
        constitution and settings, if any (one fit before some principles were edited counts:
        it calibrates the verdicts under the others): what `charter generate` and the service
        run."""
        from charter.calibrations import find_fit

        judge = self.judge or default_judge
        found = find_fit(db, judge, constitution, self.judge_config(judge))
        return self.to_spec(
            records,
            constitution,
            default_judge=default_judge,
            default_policy=default_policy,
            calibration=found.record.id if found else None,
        )

    def to_spec(
        self,
        records: Sequence[PromptRecord],
        constitution: Constitution,
        *,
        default_judge: str,
        default_policy: str,
        calibration: str | None = None,
    ) -> JobSpec:
        """The job these options make; `calibration` is the id its p_chosen will go through."""
        judge = self.judge or default_judge
        return JobSpec(
            mode=self.mode,
            policy=self.policy or default_policy,
            judge=judge,
            n=self.n,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            frequency_penalty=self.frequency_penalty,
            pairs=self.pairs,
            judge_config=self.judge_config(judge),
            quality=QualityConfig.model_validate(
                self.model_dump(include=set(QualityConfig.model_fields))
            ),
            calibration=calibration if self.mode == "compare" or self.verify_revisions else None,
            prompts_digest=prompts_digest(list(records)),
            constitution_digest=constitution.digest,
        )


def needs_policy(records: Sequence[PromptRecord]) -> bool:
    """Whether any prompt came without candidates, so the policy must sample them."""
    return any(r.responses is None for r in records)


def dedupe(records: Sequence[PromptRecord]) -> tuple[list[PromptRecord], int]:
    """First occurrence of each prompt, and how many repeats were dropped (as `load_prompts`)."""
    seen: set[str] = set()
    kept: list[PromptRecord] = []
    for record in records:
        if record.key not in seen:
            seen.add(record.key)
            kept.append(record)
    return kept, len(records) - len(kept)


def prompts_digest(records: list[PromptRecord]) -> str:
    """Identity of a job's input: every prompt and any given responses, in order."""
    payload = [[r.key, list(r.responses) if r.responses is not None else None] for r in records]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()
