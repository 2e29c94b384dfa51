"""What a comparison returns: every judgment asked, per-principle verdicts, and the total.

These are the boundary types the CLI prints (`--json`), the store persists and the trainer's
triples cite, so everything needed to audit a verdict is here: the exact messages sent, the raw
reply, probabilities, cost and errors.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from .backends.base import Message, Usage

Order = Literal["AB", "BA"]
Side = Literal["a", "b"]
Winner = Literal["a", "b", "tie"]
ErrorKind = Literal["parse", "backend"]


class Judgment(BaseModel):
    """One question asked of the judge: one principle, one order.

    In order "AB" the original `a` is shown in slot A; in "BA" it is shown in slot B. `slot`
    is the letter the judge answered, `choice` and `p_a` translate it back to the original
    texts. A failed judgment (`error` set) has no `slot`, `choice` or `p_a` and counts for
    nothing: neither A, nor B, nor 0.5.
    """

    model_config = ConfigDict(extra="ignore")  # computed fields round-trip

    principle_id: str
    principle_digest: str
    order: Order
    messages: tuple[Message, ...] = ()
    reasoning: str | None = Field(default=None, description="Chain-of-thought, when asked.")
    raw: str | None = Field(default=None, description="The last verdict reply received.")
    slot: Literal["A", "B"] | None = None
    choice: Side | None = None
    p_a: float | None = Field(default=None, description="P(original a is better).")
    option_probs: dict[str, float] | None = Field(
        default=None, description="P(slot A), P(slot B) from logprobs, renormalised over the two."
    )
    attempts: int = 0
    replies: int = Field(default=0, description="Verdict replies received, incl. retried.")
    parse_failures: int = Field(default=0, description="Unparseable replies seen, incl. retried.")
    latency_s: float = 0.0
    usage: Usage = Usage()
    error: str | None = None
    error_kind: ErrorKind | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return self.error is None and self.p_a is not None


class PrincipleVerdict(BaseModel):
    """Both orders of one principle, combined.

    `consistent` is True when both orders succeeded and named the same original response,
    False when both succeeded and disagreed (the judge followed the slot, not the content),
    and None when either order failed (nothing to compare).
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

    `p_a` is the principle-weight-weighted mean of the successful judgments' p_a (both orders,
    all sampled principles). `winner` is "tie" when |p_a - 0.5| <= `tie_margin`, and None when
    no judgment succeeded. `position_consistent` is True when at least one principle got both
    orders answered and every such principle's two orders named the same response; False when
    any such principle's orders disagreed; None when no principle got both orders answered.
    """

    model_config = ConfigDict(extra="ignore")  # computed fields round-trip

    prompt: str
    a: str
    b: str
    p_a: float | None
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
    usage: Usage = Usage()
    latency_s: float = 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def principle_ids(self) -> list[str]:
        return [p.principle_id for p in self.principles]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def failed(self) -> int:
        return sum(1 for j in self.judgments if not j.ok)

    @property
    def margin(self) -> float | None:
        """|p_a - 0.5|: how far the verdict is from a coin flip (0 to 0.5)."""
        return None if self.p_a is None else abs(self.p_a - 0.5)
