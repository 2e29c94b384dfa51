"""Bodies of the reward routes (pydantic only, so `charter.rewards` can share them).

`RewardRequest` is charter's own form (what `charter.rewards` sends); `OpenRLHFRewardRequest`
and `OpenRLHFRewardResponse` are exactly what OpenRLHF's remote reward client posts and reads.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from charter.common.unicode import check_unicode, valid_unicode
from charter.judge.reward import RewardDeadline
from charter.qualification import Qualification

from .schemas import MAX_TEXT_CHARS, Content, FeedbackRequest, Text

MAX_REWARD_ITEMS = 1024
"""Items per reward request: a large RL batch in one call, well under the body limit."""

Group = Annotated[
    str, Field(min_length=1, max_length=MAX_TEXT_CHARS), BeforeValidator(valid_unicode)
]


def check_deadline(value: float | None) -> float | None:
    """A deadline a request asks for, held to `RewardDeadline.deadline_s`'s bounds."""
    if value is not None:
        try:
            RewardDeadline.model_validate({"deadline_s": value})
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"]) from None
    return value


class RewardItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: Text
    response: Content
    reference: Text | None = Field(
        default=None, description="A reference answer: the reward is P(response beats it)."
    )
    group: Group | None = Field(
        default=None,
        description="Items of one group (e.g. completions of one prompt) share a fallback: "
        "the group's mean reward.",
    )


class RewardRequest(FeedbackRequest):
    """Rewards for a batch of responses: every `JudgeConfig` field, the judge, the
    constitution, and an optional deadline (the service's by default; at most 170 s)."""

    items: list[RewardItemIn] = Field(min_length=1, max_length=MAX_REWARD_ITEMS)
    deadline_s: float | None = Field(
        default=None,
        description="Seconds this batch may take; default: the service's --reward-deadline.",
    )

    _deadline = field_validator("deadline_s")(check_deadline)


class RewardOut(BaseModel):
    reward: float = Field(description="In [0, 1]; the fallback when `fallback` is true.")
    principle_scores: dict[str, float] = Field(
        description="Per principle asked: P(yes), or P(beats the reference)."
    )
    fallback: bool = Field(description="No verdict: the group's mean reward, else 0.5.")
    timed_out: bool = Field(description="The judgment was not back by the deadline.")
    error: str | None = None


class RewardResponse(BaseModel):
    rewards: list[RewardOut]
    deadline_s: float
    fallbacks: int
    timeouts: int
    judge: str = Field(description="The judge whose verdicts these rewards are (its spec).")
    judge_qualification: Qualification = Field(
        description="How far that judge was measured to agree with people (`charter judge "
        "eval` on labelled pairs, or a shipped calibration's held-out pairs), or unqualified: "
        "a reward is only as good as its judge."
    )


class RewardStats(BaseModel):
    """Reward totals since the service started."""

    batches: int
    items: int
    judged: int
    failed: int
    timeouts: int
    fallbacks: int
    deadline_s: float


class OpenRLHFRewardRequest(BaseModel):
    """What OpenRLHF's remote reward client posts: `query[i]` is the decoded prompt and
    response (special tokens kept), `prompts[i]` the prompt, `labels[i]` the dataset's label."""

    model_config = ConfigDict(extra="forbid")

    query: list[str] = Field(min_length=1, max_length=MAX_REWARD_ITEMS)
    prompts: list[str] = Field(min_length=1, max_length=MAX_REWARD_ITEMS)
    labels: list[Any] | None = Field(
        default=None,
        max_length=MAX_REWARD_ITEMS,
        description="A non-empty string label is a reference answer (reward: P(response "
        "beats it)); anything else is ignored.",
    )

    @field_validator("query", "prompts")
    @classmethod
    def _texts(cls, texts: list[str]) -> list[str]:
        for i, text in enumerate(texts):
            if len(text) > 2 * MAX_TEXT_CHARS:  # a query is a prompt plus a response
                raise ValueError(
                    f"[{i}] is {len(text):,} characters, over the limit of "
                    f"{2 * MAX_TEXT_CHARS:,}; set CHARTER_MAX_TEXT_CHARS to raise it"
                )
            try:
                check_unicode(text)
            except ValueError as exc:  # OpenRLHF decodes tokens to valid text: never its body
                raise ValueError(f"[{i}] {exc}") from None
        return texts

    @model_validator(mode="after")
    def _same_lengths(self) -> OpenRLHFRewardRequest:
        if len(self.prompts) != len(self.query):
            raise ValueError(
                f"prompts has {len(self.prompts)} items and query {len(self.query)}; "
                "they must match"
            )
        if self.labels is not None and len(self.labels) != len(self.query):
            raise ValueError(
                f"labels has {len(self.labels)} items and query {len(self.query)}; they must match"
            )
        return self

    @field_validator("labels")
    @classmethod
    def _label_texts(cls, labels: list[Any] | None) -> list[Any] | None:
        for i, label in enumerate(labels or []):
            if not isinstance(label, str):
                continue
            if len(label) > MAX_TEXT_CHARS:
                raise ValueError(f"[{i}] is over the limit of {MAX_TEXT_CHARS:,} characters")
            try:
                check_unicode(label)
            except ValueError as exc:
                raise ValueError(f"[{i}] {exc}") from None
        return labels


class OpenRLHFRewardResponse(BaseModel):
    """What OpenRLHF reads: `rewards` (the reward), `scores` (for dynamic filtering; the same
    values), and `extra_logs` (logged per sample; every key has one value per query)."""

    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]
