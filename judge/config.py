"""`JudgeConfig`: every setting of how the judge applies a constitution, declared once.

Each field carries its bounds and help here and nowhere else: the CLI builds its options from
these fields (`charter.cli.fields`), the service's request bodies inherit them, a job's id hashes
the whole config, and `compare`, `rank`, `score`, `critique_and_revise` and `evaluate` all take
one. Change a setting here and every front end follows.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from charter.constitution import Constitution

Protocol = Literal["pairwise", "pointwise"]
ProtocolChoice = Literal["auto", "pairwise", "pointwise"]
Selection = Literal["relevant", "random"]
SelectionChoice = Literal["auto", "relevant", "random"]

MAX_SEED = 2**31 - 1
MAX_JUDGE_TOKENS = 8192

RECOMMENDED_PROTOCOLS: dict[str, Protocol] = {"smollm2": "pointwise"}
"""Judges whose protocol was measured on the shipped labelled pairs (see BENCHMARKS.md).

The embedded SmolLM2-135M answers pairwise questions by slot, not content (position-consistent
on a few percent of pairs), but its pointwise Yes/No scores agree with people well above chance.
Every other judge defaults to pairwise until measured with `charter judge eval --protocol`.
"""

RECOMMENDED_SELECTIONS: dict[str, Selection] = {"smollm2": "random"}
"""Judges whose principle selection was measured on the shipped labelled pairs (BENCHMARKS.md,
"Principles that fit the conversation"). The embedded SmolLM2-135M cannot answer `applies`
questions (P(Yes) 0.17-0.50 whatever the prompt), so relevant selection leaves it the universal
principles alone and measured no better, at 8x the calls. Every other judge selects at random,
as before `applies` existed, until measured."""


class JudgeConfig(BaseModel):
    """How the judge is asked. Frozen: equal configs judge identically (and hash equally)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: ProtocolChoice = Field(
        default="auto",
        description="pairwise: ask which of two responses is better, in both orders. "
        "pointwise: score each response alone with a Yes/No question per principle, then "
        "compare scores (no position bias, N calls to rank N responses). auto: the protocol "
        "measured best for the judge (pointwise for smollm2, else pairwise).",
    )
    principles: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Principles asked per comparison or score (K); default: the "
        "constitution's principles_per_comparison.",
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=MAX_SEED,
        description="Seeds principle sampling and candidate sampling, so runs are reproducible.",
    )
    selection: SelectionChoice = Field(
        default="auto",
        description="Which K principles judge: relevant: picked among those whose `applies` "
        "question the judge answers Yes for the prompt (asked once per prompt), topped up from "
        "the principles that always apply. random: picked among all, by rendezvous hashing. "
        "auto: what measured best for the judge (see BENCHMARKS.md).",
    )
    applies_threshold: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="A principle applies to a prompt when the judge's P(Yes) to its `applies` "
        "question is at least this.",
    )
    applies_limit: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="Most `applies` questions asked per prompt (bounds the cost for large "
        "constitutions): beyond it, a per-prompt rendezvous order decides which are asked; "
        "the rest count as not applying.",
    )
    few_shot: int = Field(
        default=0,
        ge=0,
        le=8,
        description="Principle examples shown to the judge as demonstrations in score, "
        "comparison and critique prompts (0: none).",
    )
    cot: bool = Field(
        default=False, description="Pairwise judge reasons before its verdict (chain of thought)."
    )
    cot_clamp: float = Field(
        default=0.1,
        ge=0,
        le=0.5,
        description="Chain-of-thought verdicts are clamped to 0.5 ± this (CAI used 0.1).",
    )
    cot_max_tokens: int = Field(
        default=512,
        ge=1,
        le=MAX_JUDGE_TOKENS,
        description="Max tokens of chain-of-thought reasoning.",
    )
    tie_margin: float | None = Field(
        default=None,
        ge=0,
        lt=0.5,
        description="|p_a - 0.5| at or below this is a tie; default: the constitution's.",
    )
    parse_retries: int = Field(
        default=1,
        ge=0,
        le=5,
        description="Times an unparseable verdict is asked again before it is recorded as a "
        "failure (never counted as a verdict).",
    )
    require_both_orders: bool = Field(
        default=True,
        description="Pairwise: a principle votes only when both orders were answered, so a "
        "lone order cannot report the slot as a verdict.",
    )
    revisions: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="Critique -> revision rounds; default: the constitution's.",
    )
    critique_max_tokens: int = Field(
        default=256,
        ge=1,
        le=MAX_JUDGE_TOKENS,
        description="Max new tokens per critique or revision.",
    )
    critique_frequency_penalty: float = Field(
        default=0.0,
        ge=0.0,
        le=2.0,
        description="Critiques and revisions: OpenAI's frequency penalty (each token's logit "
        "lowered by this times its count so far in the reply); 1.0 keeps a small judge such "
        "as smollm2 from looping until the token limit.",
    )

    def resolved(self, judge_spec: str) -> JudgeConfig:
        """The config with `protocol` and `selection` decided for this judge (what a job
        records and hashes)."""
        update: dict[str, Any] = {}
        if self.protocol == "auto":
            update["protocol"] = RECOMMENDED_PROTOCOLS.get(judge_spec.strip(), "pairwise")
        if self.selection == "auto":
            update["selection"] = RECOMMENDED_SELECTIONS.get(judge_spec.strip(), "random")
        return self.model_copy(update=update) if update else self

    def selection_for(self, judge_spec: str) -> Selection:
        """How this config picks principles with the judge `judge_spec`."""
        selection = self.resolved(judge_spec).selection
        return "relevant" if selection == "relevant" else "random"

    def identity(self, include: set[str] | None = None) -> dict[str, Any]:
        """The settings as JSON data for hashing (a job's id, a calibration's key): settings
        that behave as before they existed are left out (random selection makes the
        `applies_*` settings moot; no demonstrations), so ids made before them still match."""
        data = self.model_dump(mode="json", include=include)
        if self.selection == "random":
            for name in ("selection", "applies_threshold", "applies_limit"):
                data.pop(name, None)
        if self.few_shot == 0:
            data.pop("few_shot", None)
        return data

    def protocol_for(self, judge_spec: str) -> Protocol:
        """The protocol this config runs with the judge `judge_spec`."""
        protocol = self.resolved(judge_spec).protocol
        return "pointwise" if protocol == "pointwise" else "pairwise"

    def k(self, constitution: Constitution) -> int:
        """Principles per comparison: this config's, else the constitution's default."""
        return self.principles or constitution.defaults.principles_per_comparison

    def margin(self, constitution: Constitution) -> float:
        """The tie margin: this config's, else the constitution's default."""
        return constitution.defaults.tie_margin if self.tie_margin is None else self.tie_margin

    def rounds(self, constitution: Constitution) -> int:
        """Critique -> revision rounds: this config's, else the constitution's default."""
        return constitution.defaults.revisions if self.revisions is None else self.revisions

    @property
    def clamp_band(self) -> tuple[float, float]:
        return (0.5 - self.cot_clamp, 0.5 + self.cot_clamp)


DEFAULT_CONFIG = JudgeConfig()

REVISION_FIELDS = frozenset({"revisions", "critique_max_tokens", "critique_frequency_penalty"})
"""Settings of critique -> revision alone: they never change a comparison."""
VERDICT_FIELDS = frozenset(JudgeConfig.model_fields) - REVISION_FIELDS
"""Settings that can change a comparison's verdict (what a calibration is keyed by)."""
