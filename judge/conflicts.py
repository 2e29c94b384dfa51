"""Where two principles pull one verdict in opposite directions, computed from their votes.

A comparison's verdict averages its principles' own verdicts; two principles that are both
confident (|p_a - 0.5| at or over a margin) and on opposite sides cancel out, and the
constitution says nothing clear about that pair of texts (helpfulness against harmlessness is
the classic case). Counting this per pair of principles, over the comparisons both voted on,
shows the author which principles fight and where; counting how often each principle is
confidently against the comparison's overall winner names the odd one out.

Pure: the caller reads the votes from wherever they are kept (a job's stored results).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Winner = Literal["a", "b", "tie"]


class ConflictSettings(BaseModel):
    """What counts as a conflict, and which pairs of principles are worth a figure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    margin: float = Field(
        default=0.2,
        ge=0.0,
        le=0.5,
        description="A principle's verdict is confident when |p - 0.5| is at least this "
        "(0.2: p >= 0.7 or p <= 0.3); a conflict is two confident verdicts on opposite sides.",
    )
    min_shared: int = Field(
        default=5,
        ge=1,
        le=1_000_000,
        description="Report a pair of principles only when both voted on at least this many "
        "of the same comparisons.",
    )


DEFAULT_CONFLICTS = ConflictSettings()


class Votes(BaseModel):
    """One comparison's principle votes, and where to find it again.

    `votes` maps each principle that voted to its own P(a better); `winner` is the
    comparison's overall verdict; `row_key` the exported row it made, if it made one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    position: int = Field(description="The prompt's index in the job.")
    a: str
    b: str
    winner: Winner | None
    p_a: float | None
    votes: dict[str, float]
    row_key: str | None = None


class ConflictRow(BaseModel):
    """A comparison where the two principles conflicted: each one's P(a better)."""

    model_config = ConfigDict(extra="forbid")

    position: int
    a: str
    b: str
    winner: Winner | None
    p_a: float | None
    p_first: float
    p_second: float
    row_key: str | None


class PairConflicts(BaseModel):
    """A pair of principles (`first` < `second`): how often both were confident and opposite,
    over how many comparisons both voted on, and where."""

    model_config = ConfigDict(extra="forbid")

    first: str
    second: str
    shared: int
    conflicts: int
    rate: float | None
    rows: list[ConflictRow] = []


class Dissent(BaseModel):
    """How often a principle was confidently against its comparison's overall winner, over
    the decided comparisons it voted on."""

    model_config = ConfigDict(extra="forbid")

    principle_id: str
    voted: int
    against: int
    rate: float | None


class ConflictReport(BaseModel):
    """Every pair of principles with at least `min_shared` shared comparisons, most
    conflicting first; each principle's dissent from the overall verdict, most first, and the
    one that dissents most (None when none ever did)."""

    model_config = ConfigDict(extra="forbid")

    settings: ConflictSettings
    comparisons: int
    principles: list[str]
    pairs: list[PairConflicts]
    dissent: list[Dissent]
    most_dissenting: str | None

    def pair(self, first: str, second: str) -> PairConflicts | None:
        """The figures of a pair in either order (None: under `min_shared`, or never met)."""
        lo, hi = sorted((first, second))
        return next((p for p in self.pairs if (p.first, p.second) == (lo, hi)), None)


def _side(p: float) -> int:
    return (p > 0.5) - (p < 0.5)


def find_conflicts(
    comparisons: Iterable[Votes], settings: ConflictSettings = DEFAULT_CONFLICTS
) -> ConflictReport:
    """Count conflicts between every pair of principles over `comparisons` (see module)."""
    shared: dict[tuple[str, str], int] = {}
    rows: dict[tuple[str, str], list[ConflictRow]] = {}
    voted: dict[str, int] = {}
    against: dict[str, int] = {}
    seen = 0
    for c in comparisons:
        seen += 1
        confident = {
            pid: p for pid, p in c.votes.items() if abs(p - 0.5) >= settings.margin and p != 0.5
        }
        for first, second in itertools.combinations(sorted(c.votes), 2):
            shared[(first, second)] = shared.get((first, second), 0) + 1
            if first in confident and second in confident:
                p1, p2 = confident[first], confident[second]
                if _side(p1) != _side(p2):
                    rows.setdefault((first, second), []).append(
                        ConflictRow(
                            position=c.position,
                            a=c.a,
                            b=c.b,
                            winner=c.winner,
                            p_a=c.p_a,
                            p_first=p1,
                            p_second=p2,
                            row_key=c.row_key,
                        )
                    )
        if c.winner in ("a", "b"):
            overall = 1 if c.winner == "a" else -1
            for pid in c.votes:
                voted[pid] = voted.get(pid, 0) + 1
                if pid in confident and _side(confident[pid]) == -overall:
                    against[pid] = against.get(pid, 0) + 1
    pairs = [
        PairConflicts(
            first=first,
            second=second,
            shared=n,
            conflicts=len(rows.get((first, second), [])),
            rate=len(rows.get((first, second), [])) / n,
            rows=rows.get((first, second), []),
        )
        for (first, second), n in shared.items()
        if n >= settings.min_shared
    ]
    pairs.sort(key=lambda p: (-(p.rate or 0.0), -p.conflicts, p.first, p.second))
    dissent = [
        Dissent(
            principle_id=pid, voted=n, against=against.get(pid, 0), rate=against.get(pid, 0) / n
        )
        for pid, n in voted.items()
    ]
    dissent.sort(key=lambda d: (-(d.rate or 0.0), -d.against, d.principle_id))
    top = dissent[0] if dissent and dissent[0].against else None
    names = sorted({pid for pair in shared for pid in pair} | set(voted))
    return ConflictReport(
        settings=settings,
        comparisons=seen,
        principles=names,
        pairs=pairs,
        dissent=dissent,
        most_dissenting=top.principle_id if top else None,
    )


def votes_of(
    position: int, comparison: Mapping[str, object], row_key: str | None = None
) -> Votes | None:
    """A stored comparison (JSON, as a job keeps it) as `Votes`; None without texts."""
    a, b = comparison.get("a"), comparison.get("b")
    if not isinstance(a, str) or not isinstance(b, str):
        return None
    votes: dict[str, float] = {}
    found = comparison.get("principles")
    for v in found if isinstance(found, list) else []:
        if isinstance(v, dict) and isinstance(v.get("p_a"), int | float):
            votes[str(v.get("principle_id"))] = float(v["p_a"])
    winner = comparison.get("winner")
    p_a = comparison.get("p_a")
    return Votes(
        position=position,
        a=a,
        b=b,
        winner=winner if winner in ("a", "b", "tie") else None,  # type: ignore[arg-type]
        p_a=float(p_a) if isinstance(p_a, int | float) else None,
        votes=votes,
        row_key=row_key,
    )
