"""What a comparison returns: every judgment asked, per-principle verdicts, and the total.

These are the boundary types the CLI prints (`--json`), the store persists and the trainer's
triples cite, so everything needed to audit a verdict is here: the exact messages sent, the raw
reply, probabilities, cost and errors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from .backends.base import Completion, Message, Usage
from .config import Protocol

if TYPE_CHECKING:
    from charter.constitution import Constitution, Principle

Order = Literal["AB", "BA"]
Side = Literal["a", "b"]
Winner = Literal["a", "b", "tie"]
ErrorKind = Literal["parse", "backend"]


class Provenance(BaseModel):
    """What a verdict was made under: the constitution (digest and version label) and the
    judge's model spec. Every result the judge returns (`Comparison`, `ResponseScore`, `Ranking`,
    `RevisionChain`, the qualification report) and every row made from one (a job's preferences
    and prompt rows, eval runs, Ray columns) records these fields, built here once by `of`.

    The result types carry them as flat fields at their own place in each schema (the service's
    OpenAPI document and exported rows list them there), not as a nested object or base class;
    `tests/test_judge_logic.py` checks that each carries all of them, typed alike.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    constitution_digest: str
    constitution_version: str
    judge: str = Field(description="The judge's model spec, e.g. `openai:gpt-4o-mini`.")

    @classmethod
    def of(cls, constitution: Constitution, judge: str) -> Provenance:
        return cls(
            constitution_digest=constitution.digest,
            constitution_version=constitution.version,
            judge=judge,
        )

    def fields(self) -> dict[str, Any]:
        """The fields to spread into a result's constructor or a row, in this order."""
        return self.model_dump()


class Question(BaseModel):
    """What every question asked of the judge records: under which principle, the exact
    messages, the last reply, how many tries it took, what it cost, and any error.

    A failed question (`error` set) has no answer and counts for nothing.
    """

    model_config = ConfigDict(extra="ignore")  # computed fields round-trip

    principle_id: str
    principle_digest: str
    messages: tuple[Message, ...] = ()
    raw: str | None = Field(default=None, description="The last reply received.")
    option_probs: dict[str, float] | None = Field(
        default=None, description="Each option's probability from logprobs, renormalised."
    )
    attempts: int = 0
    replies: int = Field(default=0, description="Replies received, incl. retried.")
    parse_failures: int = Field(default=0, description="Unparseable replies seen, incl. retried.")
    latency_s: float = 0.0
    usage: Usage = Usage()
    error: str | None = None
    error_kind: ErrorKind | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return self.error is None and self.answered

    @property
    def answered(self) -> bool:
        """Whether a usable answer was recorded (each kind of question says what that is)."""
        raise NotImplementedError


@dataclass
class Tally:
    """What asking one question has cost so far: the record every `Question` keeps."""

    principle: Principle
    started: float = field(default_factory=time.perf_counter)
    usage: Usage = field(default_factory=Usage)
    attempts: int = 0
    replies: int = 0
    parse_failures: int = 0
    raw: str | None = None
    messages: tuple[Message, ...] = ()

    def ask(self, messages: tuple[Message, ...]) -> None:
        """A new attempt with these messages is about to be sent."""
        self.attempts += 1
        self.messages = messages

    def replied(self, reply: Completion) -> str:
        """Count a reply (and its cost); returns its text."""
        self.usage = self.usage + reply.usage
        self.replies += 1
        self.raw = reply.text
        return reply.text

    def fields(self) -> dict[str, Any]:
        """The `Question` fields so far, latency measured now."""
        return {
            "principle_id": self.principle.id,
            "principle_digest": self.principle.digest,
            "messages": self.messages,
            "raw": self.raw,
            "attempts": self.attempts,
            "replies": self.replies,
            "parse_failures": self.parse_failures,
            "latency_s": time.perf_counter() - self.started,
            "usage": self.usage,
        }


class Judgment(Question):
    """One pairwise question: one principle, one order.

    In order "AB" the original `a` is shown in slot A; in "BA" it is shown in slot B. `slot`
    is the letter the judge answered, `choice` and `p_a` translate it back to the original
    texts; `option_probs` are P(slot A), P(slot B). A failed judgment has no `slot`, `choice`
    or `p_a`: neither A, nor B, nor 0.5.
    """

    order: Order
    reasoning: str | None = Field(default=None, description="Chain-of-thought, when asked.")
    slot: Literal["A", "B"] | None = None
    choice: Side | None = None
    p_a: float | None = Field(default=None, description="P(original a is better).")

    @property
    def answered(self) -> bool:
        return self.p_a is not None


class ScoreJudgment(Question):
    """One pointwise question: one principle's Yes/No question about one response.

    `p_yes` is P(Yes) renormalised over the Yes/No tokens' logprobs (`option_probs`) where the
    backend gives them, else 1 or 0 from the parsed word.
    """

    answer: Literal["Yes", "No"] | None = None
    p_yes: float | None = None

    @property
    def answered(self) -> bool:
        return self.p_yes is not None


class ResponseScore(BaseModel):
    """A response scored alone under K principles: the pointwise verdict, and an RL reward.

    `p_yes` is sigmoid of the principle-weighted mean logit of the successful judgments'
    P(Yes); None when none succeeded.
    """

    model_config = ConfigDict(extra="ignore")  # computed fields round-trip

    prompt: str
    response: str
    p_yes: float | None
    judgments: list[ScoreJudgment]
    constitution_digest: str
    constitution_version: str
    judge: str
    seed: int
    k: int
    relevance: Relevance | None = Field(
        default=None,
        description="The prompt's `applies` answers, when asked for this score (relevant "
        "selection); None when random, or asked once by a caller that records them.",
    )
    usage: Usage = Usage()
    latency_s: float = 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def principle_scores(self) -> dict[str, float | None]:
        return {j.principle_id: j.p_yes for j in self.judgments}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def failed(self) -> int:
        return sum(1 for j in self.judgments if not j.ok)


class PrincipleVerdict(BaseModel):
    """Both orders of one principle, combined.

    `consistent` is True when both orders succeeded and named the same original response,
    False when both succeeded and disagreed (the judge followed the slot, not the content),
    and None when either order failed (nothing to compare), and always None pointwise.
    """

    model_config = ConfigDict(extra="ignore")  # computed fields round-trip

    principle_id: str
    principle_digest: str
    weight: float
    p_a: float | None = Field(default=None, description="Mean p_a of the orders that succeeded.")
    succeeded: int = 0
    consistent: bool | None = None


class Comparison(BaseModel):
    """A debiased, ensembled verdict on `a` versus `b` under a constitution.

    Pairwise, `p_a` is the principle-weight-weighted mean of the successful judgments' p_a (both
    orders, all sampled principles); pointwise, it is sigmoid of the weighted mean difference of
    the two responses' logit P(Yes) over the principles both were scored under. `winner` is
    "tie" when |p_a - 0.5| <= `tie_margin`, and None when no judgment succeeded.
    `position_consistent` is True when at least one principle got both orders answered and every
    such principle's two orders named the same response; False when any such principle's orders
    disagreed; None when no principle got both orders answered.
    """

    model_config = ConfigDict(extra="ignore")  # computed fields round-trip

    prompt: str
    a: str
    b: str
    p_a: float | None
    p_a_raw: float | None = Field(
        default=None, description="The judge's own p_a, when `p_a` went through a calibration."
    )
    winner: Winner | None
    position_consistent: bool | None
    tie_margin: float
    principles: list[PrincipleVerdict]
    judgments: list[Judgment]
    constitution_digest: str
    constitution_version: str
    judge: str
    seed: int
    k: int
    cot: bool = False
    protocol: Protocol = "pairwise"
    scores: list[ResponseScore] = Field(
        default=[],
        description="Pointwise: the scores of a and b this verdict was made from (empty when "
        "they are recorded once on the ranking that shares them).",
    )
    relevance: Relevance | None = Field(
        default=None,
        description="The prompt's `applies` answers, when asked for this comparison (relevant "
        "selection); None when random, or asked once by a ranking that records them.",
    )
    usage: Usage = Usage()
    latency_s: float = 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def principle_ids(self) -> list[str]:
        """The principles whose judgments counted (a principle whose every question failed
        did not vote)."""
        return [p.principle_id for p in self.principles if p.p_a is not None]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def failed(self) -> int:
        return sum(1 for j in self.judgments if not j.ok) + sum(s.failed for s in self.scores)

    @property
    def margin(self) -> float | None:
        """|p_a - 0.5|: how far the verdict is from a coin flip (0 to 0.5)."""
        return None if self.p_a is None else abs(self.p_a - 0.5)


class ApplicabilityJudgment(Question):
    """One principle's `applies` question about one prompt (the conversation alone).

    `p_yes` is P(Yes) from the Yes/No logprobs where the backend gives them, else 1 or 0 from
    the parsed word. A failed question has no `p_yes`: its principle counts as not applying.
    """

    question: str
    answer: Literal["Yes", "No"] | None = None
    p_yes: float | None = None

    @property
    def answered(self) -> bool:
        return self.p_yes is not None


class AppliedPrinciple(BaseModel):
    """A row's provenance: one principle that applied to its prompt, and the judge's P(Yes)
    (None for a principle without an `applies` question: it always applies)."""

    model_config = ConfigDict(extra="forbid")

    principle_id: str
    p: float | None = None


class Relevance(BaseModel):
    """Which principles apply to one prompt: every `applies` answer the judge gave for it.

    Asked once per prompt and shared by every candidate, comparison and revision of it. A
    conditional principle applies when its P(Yes) is at least `threshold`; one whose question
    failed, or was not asked (`unasked`: past `applies_limit`), does not.
    """

    model_config = ConfigDict(extra="ignore")  # computed fields round-trip

    prompt: str
    threshold: float
    judgments: list[ApplicabilityJudgment] = []
    universal: list[str] = Field(
        default=[], description="Enabled principles without an `applies` question."
    )
    unasked: list[str] = Field(
        default=[], description="Conditional principles not asked for this prompt (the limit)."
    )
    usage: Usage = Usage()
    latency_s: float = 0.0

    def p(self, principle_id: str) -> float | None:
        for judgment in self.judgments:
            if judgment.principle_id == principle_id:
                return judgment.p_yes
        return None

    def applies(self, principle_id: str) -> bool:
        if principle_id in self.universal:
            return True
        p = self.p(principle_id)
        return p is not None and p >= self.threshold

    @computed_field  # type: ignore[prop-decorator]
    @property
    def applied(self) -> list[AppliedPrinciple]:
        """The conditional principles that applied, likeliest first, then the universal ones."""
        conditional = sorted(
            (j for j in self.judgments if j.p_yes is not None and j.p_yes >= self.threshold),
            key=lambda j: (-(j.p_yes or 0.0), j.principle_id),
        )
        return [AppliedPrinciple(principle_id=j.principle_id, p=j.p_yes) for j in conditional] + [
            AppliedPrinciple(principle_id=pid) for pid in self.universal
        ]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def failed(self) -> int:
        return sum(1 for j in self.judgments if not j.ok)


ResponseScore.model_rebuild()
Comparison.model_rebuild()
