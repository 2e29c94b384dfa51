"""What a caller may choose about a generation job, shared by the service and the CLI.

`JobOptions` holds the knobs (mode, models, sampling, and every `JudgeConfig` setting);
`JobOptions.plan` turns them, with the prompts, the constitution and the calibration the store
has for them, into the `JobSpec` whose hash is the job id. Both front ends build jobs through
it, so the same request makes the same job either way; the CLI's options are built from its
fields.
No FastAPI here: the CLI imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from charter.judge.backends.registry import parse_spec
from charter.judge.config import JudgeConfig
from charter.judge.quality import QualityConfig

if TYPE_CHECKING:  # the CLI builds its options from this module: keep its imports light
    import sqlite_utils

    from charter.constitution import Constitution
    from charter.inputs import PromptRecord
    from charter.jobs import JobSpec

__all__ = ["JobOptions", "ModelSpec", "RunOptions", "dedupe", "needs_policy"]


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
        default=128, ge=1, le=4096, description="Max new tokens per sampled candidate."
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
        from charter.jobs import JobSpec, prompts_digest

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
