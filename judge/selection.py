"""Which principles a judgment uses: rendezvous (highest-random-weight) hashing.

Each enabled principle gets a score `sha256(seed, prompt, texts..., principle.id)` and the top
K win. A principle's score depends only on its own id and the item, so adding, removing or
editing one principle changes only the selections that involve it: every other
pair keeps its principles, and its cached judgments stay valid. Selection is by id, not
content, so editing a principle's wording re-asks only that principle's judgments.

With a `Relevance` (selection `relevant`, see `charter.judge.applicability`) the same ordering
runs over the principles that apply to the prompt first, then over those that always apply
(no `applies` question): the K picked are the top K of that list. It is never empty: when no
principle applies and none is universal, the one the judge thought likeliest to apply is used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from charter.constitution import Constitution, Principle

if TYPE_CHECKING:
    from .results import Relevance


def _length_prefixed(h: Any, fields: Sequence[str]) -> None:
    """Feed fields length-prefixed, so no two different inputs concatenate to the same bytes."""
    for field in fields:
        data = field.encode("utf-8")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)


def _score(seed: int, parts: Sequence[str], principle_id: str) -> bytes:
    """A principle's rendezvous score for these inputs."""
    h = hashlib.sha256()
    _length_prefixed(h, (str(seed), *parts, principle_id))
    return h.digest()


def rendezvous_order(
    principles: Sequence[Principle], seed: int, parts: Sequence[str]
) -> list[Principle]:
    """All principles, highest rendezvous score first (ties impossible in practice).

    The (long) shared inputs are hashed once; each principle continues from a copy.
    """
    shared = hashlib.sha256()
    _length_prefixed(shared, (str(seed), *parts))

    def score(principle: Principle) -> tuple[bytes, str]:
        h = shared.copy()
        _length_prefixed(h, (principle.id,))
        return h.digest(), principle.id

    return sorted(principles, key=score, reverse=True)


def fitting_order(
    principles: Sequence[Principle],
    seed: int,
    parts: Sequence[str],
    relevance: Relevance | None,
) -> list[Principle]:
    """The rendezvous order (`relevance` None: random selection), or with a `relevance`: the
    principles that apply, then the universal ones, each in rendezvous order; never empty."""
    order = rendezvous_order(principles, seed, parts)
    if relevance is None:
        return order
    applying = [p for p in order if p.conditional and relevance.applies(p.id)]
    universal = [p for p in order if not p.conditional]
    if applying or universal:
        return applying + universal
    return sorted(order, key=lambda p: -(relevance.p(p.id) or 0.0))[:1]  # stable: ties by order


def select_for_pair(
    constitution: Constitution,
    prompt: str,
    a: str,
    b: str,
    k: int,
    seed: int = 0,
    relevance: Relevance | None = None,
) -> list[Principle]:
    """The K principles for comparing `a` and `b` on `prompt`.

    The two texts are sorted before hashing, so comparing (a, b) and (b, a) asks the same
    principles: a swapped call mirrors the original instead of sampling a different subset.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    enabled = constitution.enabled
    if not enabled:
        raise ValueError("the constitution has no enabled principles")
    first, second = sorted((a, b))
    return fitting_order(enabled, seed, ("pair", prompt, first, second), relevance)[:k]


def select_for_prompt(
    constitution: Constitution,
    prompt: str,
    k: int,
    seed: int = 0,
    relevance: Relevance | None = None,
) -> list[Principle]:
    """The K principles every response to `prompt` is scored under (pointwise judging).

    Keyed by the prompt alone, so all candidates for one prompt share principles and a
    response's score can be compared with any rival's.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    enabled = constitution.enabled
    if not enabled:
        raise ValueError("the constitution has no enabled principles")
    return fitting_order(enabled, seed, ("score", prompt), relevance)[:k]


def revision_schedule(
    constitution: Constitution,
    prompt: str,
    response: str,
    rounds: int,
    seed: int = 0,
    relevance: Relevance | None = None,
) -> list[Principle]:
    """One principle per critique→revision round: no repeats until every principle has been used.

    Each pass through the principles is its own rendezvous ordering (the pass number is part
    of the key), so later passes are reshuffled rather than repeating the first; a pass that
    would start with the principle that ended the previous one rotates it to its end.
    """
    if rounds < 0:
        raise ValueError(f"rounds must be non-negative, got {rounds}")
    enabled = constitution.enabled
    if not enabled:
        raise ValueError("the constitution has no enabled principles")
    schedule: list[Principle] = []
    epoch = 0
    while len(schedule) < rounds:
        block = fitting_order(enabled, seed, ("revise", prompt, response, str(epoch)), relevance)
        if schedule and len(block) > 1 and block[0].id == schedule[-1].id:
            block.append(block.pop(0))  # never the same principle twice in a row
        schedule.extend(block)
        epoch += 1
    return schedule[:rounds]
