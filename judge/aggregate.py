"""Pure arithmetic of verdicts: option probabilities, order mapping, averaging, consistency.

Kept apart from the model calls so that every rule that decides a winner is testable without a
server.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from charter.constitution import Principle

from .results import Judgment, Order, PrincipleVerdict, Side, Winner


def option_probability(
    answer: str,
    option_logprobs: Mapping[str, float] | None,
    options: tuple[str, str] = ("A", "B"),
) -> tuple[float, dict[str, float] | None]:
    """P(first option) for a parsed reply (slot A; Yes), and the renormalised option
    probabilities if known.

    Logprobs are used only when both options are present: they are renormalised over the two
    (RLAIF's soft label). When either is missing (a backend without logprobs, or a top-k list
    that omitted one), the parsed answer decides with certainty, since a missing option
    carries no usable probability and guessing one would invent confidence.
    """
    first, second = options
    if option_logprobs and first in option_logprobs and second in option_logprobs:
        l1, l2 = option_logprobs[first], option_logprobs[second]
        if math.isfinite(l1) or math.isfinite(l2):
            top = max(l1, l2)
            e1, e2 = math.exp(l1 - top), math.exp(l2 - top)
            p = e1 / (e1 + e2)
            return p, {first: p, second: 1.0 - p}
    return (1.0 if answer == first else 0.0), None


def slot_probabilities(
    letter: str, option_logprobs: Mapping[str, float] | None
) -> tuple[float, dict[str, float] | None]:
    """P(slot A) for a parsed verdict letter (see `option_probability`)."""
    return option_probability(letter, option_logprobs, ("A", "B"))


def clamp(p: float, band: tuple[float, float]) -> float:
    """Squeeze a probability into `band` (CAI clamps chain-of-thought labels to 0.4-0.6)."""
    lo, hi = band
    if not 0.0 <= lo <= 0.5 <= hi <= 1.0:
        raise ValueError(f"clamp band must satisfy 0 <= lo <= 0.5 <= hi <= 1, got {band}")
    return min(max(p, lo), hi)


def to_original(p_slot_a: float, order: Order) -> float:
    """P(original a is better) from P(slot A): in order BA, slot A holds b."""
    return p_slot_a if order == "AB" else 1.0 - p_slot_a


def slot_to_side(slot: str, order: Order) -> Side:
    """Which original response a slot letter names in a given order."""
    return "a" if (slot == "A") == (order == "AB") else "b"


def decide(p_a: float | None, tie_margin: float) -> Winner | None:
    """'a', 'b', 'tie' (|p_a - 0.5| <= tie_margin), or None when there is no verdict."""
    if p_a is None:
        return None
    if abs(p_a - 0.5) <= tie_margin:
        return "tie"
    return "a" if p_a > 0.5 else "b"


def principle_verdicts(
    principles: Sequence[Principle], judgments: Sequence[Judgment]
) -> list[PrincipleVerdict]:
    """Combine each principle's two orders; see `PrincipleVerdict` for `consistent`."""
    verdicts = []
    for principle in principles:
        mine = [j for j in judgments if j.principle_id == principle.id]
        good = [j for j in mine if j.ok and j.p_a is not None]
        p_a = sum(j.p_a for j in good if j.p_a is not None) / len(good) if good else None
        orders = {j.order for j in good}
        consistent: bool | None = None
        if orders == {"AB", "BA"}:
            consistent = len({j.choice for j in good}) == 1
        verdicts.append(
            PrincipleVerdict(
                principle_id=principle.id,
                principle_digest=principle.digest,
                weight=principle.weight,
                p_a=p_a,
                succeeded=len(good),
                consistent=consistent,
            )
        )
    return verdicts


def weighted_p_a(
    principles: Sequence[Principle],
    judgments: Sequence[Judgment],
    *,
    require_both_orders: bool = True,
) -> float | None:
    """Principle-weighted mean of the successful judgments' p_a; None if none is usable.

    With `require_both_orders` (the default) only principles whose AB and BA judgments both
    succeeded count: a lone surviving order is not debiased, and with a position-biased judge
    (the embedded default picks slot A 93% of the time) it would report the slot, not the
    content, as a confident verdict. Such judgments stay recorded but do not vote. Without it,
    every successful judgment counts with its principle's weight.
    """
    weights = {p.id: p.weight for p in principles}
    good = [j for j in judgments if j.ok and j.p_a is not None]
    if require_both_orders:
        complete = {
            pid
            for pid in {j.principle_id for j in good}
            if {j.order for j in good if j.principle_id == pid} == {"AB", "BA"}
        }
        good = [j for j in good if j.principle_id in complete]
    total = 0.0
    mass = 0.0
    for j in good:
        w = weights.get(j.principle_id, 1.0)
        total += w * (j.p_a if j.p_a is not None else 0.0)
        mass += w
    return total / mass if mass > 0 else None


def overall_consistency(verdicts: Sequence[PrincipleVerdict]) -> bool | None:
    """True if every principle with both orders answered agreed, False if any disagreed,
    None if no principle had both orders answered."""
    known = [v.consistent for v in verdicts if v.consistent is not None]
    if not known:
        return None
    return all(known)
