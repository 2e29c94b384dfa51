"""How far each principle's own verdict agrees with people, with an interval and its count.

One agreement figure for the whole judge hides the principle that is wrong: a constitution
with one principle people disagree with and three they agree with looks merely mediocre.
Here each principle that voted on a labelled pair is scored on its own verdict (its `p_a`,
decided when |p_a - 0.5| is over the tie margin) against the person's, with a Wilson
interval, so an author can see which principle to prune or rewrite, and when a count is
too small to say.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from .results import PrincipleVerdict

Z_95 = 1.959964


def wilson(successes: float, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion: sound at the small n a sample has."""
    if n == 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


class AgreementSettings(BaseModel):
    """When a principle's count is large enough to tell anything."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_decided: int = Field(
        default=10,
        ge=1,
        le=100_000,
        description="A principle decided on fewer labelled pairs than this is 'too few to "
        "tell' (its 95% interval is then wider than about 0.5).",
    )


DEFAULT_AGREEMENT = AgreementSettings()


class PrincipleAgreement(BaseModel):
    """One principle's own verdicts against people's labels.

    `voted`: labelled pairs the principle answered; `decided`: those where its verdict was
    not a tie; `agreed`: decided ones naming the text the person preferred. `agreement` and
    its 95% Wilson `interval` are over `decided`; `too_few` when `decided` is under the
    settings' `min_decided`.
    """

    model_config = ConfigDict(extra="forbid")

    principle_id: str
    voted: int
    decided: int
    agreed: int
    agreement: float | None
    interval: tuple[float, float] | None
    too_few: bool


def principle_agreement(
    labelled: Iterable[tuple[Literal["a", "b"], Mapping[str, float | None]]],
    tie_margin: float,
    settings: AgreementSettings = DEFAULT_AGREEMENT,
) -> list[PrincipleAgreement]:
    """Per principle, from (the person's preferred side, each principle's P(a better) on that
    pair, None where it failed): least agreeing first (no decided verdict last), then by id."""
    counts: dict[str, list[int]] = {}  # principle -> [voted, decided, agreed]
    for preferred, verdicts in labelled:
        for pid, p_a in verdicts.items():
            if p_a is None:
                continue
            tally = counts.setdefault(pid, [0, 0, 0])
            tally[0] += 1
            if abs(p_a - 0.5) <= tie_margin:
                continue
            tally[1] += 1
            tally[2] += ("a" if p_a > 0.5 else "b") == preferred
    rows = [
        PrincipleAgreement(
            principle_id=pid,
            voted=voted,
            decided=decided,
            agreed=agreed,
            agreement=agreed / decided if decided else None,
            interval=wilson(agreed, decided),
            too_few=decided < settings.min_decided,
        )
        for pid, (voted, decided, agreed) in counts.items()
    ]
    return sorted(
        rows,
        key=lambda r: (r.agreement is None, r.agreement or 0.0, r.principle_id),
    )


def votes(verdicts: Sequence[PrincipleVerdict]) -> dict[str, float | None]:
    """Each principle's P(a better) from a comparison's verdicts."""
    return {v.principle_id: v.p_a for v in verdicts}
