"""What a caller may choose about a generation job, shared by the service and the CLI.

`JobOptions` holds the knobs (mode, models, sampling, K, revisions); `JobOptions.to_spec` turns
them, with the prompts and the constitution, into the `JobSpec` whose hash is the job id. Both
front ends build jobs through it, so the same request makes the same job either way.
No FastAPI here: the CLI imports this module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from charter.constitution import Constitution
from charter.inputs import PromptRecord
from charter.jobs import JobSpec, prompts_digest

_SPEC = re.compile(r"^(openai:\S.*|hf:\S.*|smollm2)$")
MAX_SEED = 2**31 - 1


def _check_spec(value: str) -> str:
    value = value.strip()
    if not _SPEC.match(value):
        raise ValueError(
            f"unknown model spec {value!r}; expected openai:MODEL, hf:PATH_OR_ID or smollm2"
        )
    return value


ModelSpec = Annotated[
    str,
    Field(min_length=1, max_length=200, examples=["openai:gpt-4o-mini"]),
    AfterValidator(_check_spec),
]
"""A model spec string; the service decides where it runs (never the caller)."""


class JobOptions(BaseModel):
    """How to run a job. Models left out are the service's (or the CLI's) defaults."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["compare", "revise"] = Field(
        default="compare",
        description="compare: rank candidates with the judge (RL-CAI); revise: critique -> "
        "revision (SL-CAI).",
    )
    policy: ModelSpec | None = Field(default=None, description="Samples candidate responses.")
    judge: ModelSpec | None = None
    n: int = Field(default=2, ge=1, le=16, description="Candidates sampled per prompt.")
    temperature: float = Field(default=0.8, ge=0, le=2)
    max_tokens: int = Field(default=128, ge=1, le=4096)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    principles: int | None = Field(
        default=None, ge=1, le=64, description="Principles per comparison (K)."
    )
    revisions: int | None = Field(default=None, ge=1, le=16)
    cot: bool = False
    pairs: Literal["best_worst", "margin"] = "best_worst"

    def to_spec(
        self,
        records: Sequence[PromptRecord],
        constitution: Constitution,
        *,
        default_judge: str,
        default_policy: str,
    ) -> JobSpec:
        return JobSpec(
            mode=self.mode,
            policy=self.policy or default_policy,
            judge=self.judge or default_judge,
            n=self.n,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            seed=self.seed,
            principles=self.principles,
            revisions=self.revisions,
            cot=self.cot,
            pairs=self.pairs,
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
