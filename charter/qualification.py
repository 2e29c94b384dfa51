"""A judge's measured qualification: how often it agreed with people on labelled pairs.

Every figure a judge makes (a suite's attack success, a win rate, a job's p_chosen, a report's
chart) is only as good as the judge, so each carries this line: the judge's agreement with
human labels where it was measured (by `charter judge eval`, or on the held-out pairs of
`charter judge calibrate`, shipped calibrations included), or "unqualified" where it never
was. `judge eval` records its measurement here (`judge_evals`); calibrations keep theirs.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlite_utils
from pydantic import BaseModel, ConfigDict, Field, computed_field

from charter import calibrations
from charter.judge.qualify import EvalReport
from charter.store import check_table

JUDGE_EVALS = "judge_evals"
COLUMNS = {
    "judge": str,
    "protocol": str,
    "constitution_digest": str,
    "pairs_source": str,
    "pairs": int,
    "decided": int,
    "agreement": float,
    "coverage": float,
    "created_at": str,
}


class Qualification(BaseModel):
    """How far a judge was measured to agree with people (None figures: never measured)."""

    model_config = ConfigDict(frozen=True)

    judge: str
    qualified: bool = Field(description="Whether any agreement on labelled pairs was measured.")
    agreement: float | None = None
    coverage: float | None = None
    pairs: int | None = Field(default=None, description="Labelled pairs it was measured on.")
    decided: int | None = None
    source: str | None = Field(default=None, description="Which measurement, and on what.")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def text(self) -> str:
        """One line, for a figure's caption."""
        if not self.qualified or self.agreement is None:
            return (
                f"judge {self.judge}: unqualified (its agreement with people was never "
                "measured; run `charter judge eval --pairs FILE`)"
            )
        coverage = "" if self.coverage is None else f", deciding {self.coverage:.0%}"
        return (
            f"judge {self.judge}: agreed with people on {self.agreement:.0%} of "
            f"{self.decided} decided labelled pairs ({self.pairs} pairs{coverage}; {self.source})"
        )


def record_eval(
    db: sqlite_utils.Database, judge: str, report: EvalReport, pairs_source: str, digest: str
) -> None:
    """Keep what `charter judge eval` measured, so later figures can cite it."""
    check_table(db, JUDGE_EVALS, tuple(COLUMNS))
    if JUDGE_EVALS not in db.table_names():
        db[JUDGE_EVALS].create(COLUMNS)  # type: ignore[union-attr]
    with db.conn:
        db[JUDGE_EVALS].insert(  # type: ignore[union-attr]
            {
                "judge": judge,
                "protocol": report.protocol,
                "constitution_digest": digest,
                "pairs_source": pairs_source,
                "pairs": report.pairs,
                "decided": report.decided,
                "agreement": report.agreement,
                "coverage": report.coverage,
                "created_at": datetime.now(UTC).isoformat(),
            }
        )


def qualification(
    db: sqlite_utils.Database | None, judge: str, *, store_calibrations: bool = True
) -> Qualification:
    """The newest measurement of `judge` against people: a `judge eval`, else a calibration's
    held-out figures (the store's, then shipped); unqualified when there is none.

    `store_calibrations=False` leaves out calibrations fitted in the store: in the service
    they may come from another tenant's labels (their source names that tenant's job)."""
    if db is not None and JUDGE_EVALS in db.table_names():
        rows = list(
            db[JUDGE_EVALS].rows_where(
                "judge = ? AND agreement IS NOT NULL", [judge], order_by="created_at desc", limit=1
            )
        )
        if rows:
            row = rows[0]
            return Qualification(
                judge=judge,
                qualified=True,
                agreement=row["agreement"],
                coverage=row["coverage"],
                pairs=row["pairs"],
                decided=row["decided"],
                source=f"charter judge eval {row['protocol']} on {row['pairs_source']}",
            )
    found = calibrations.stored(db) if db is not None and store_calibrations else []
    for record in [*found, *calibrations.shipped()]:
        if record.judge != judge:
            continue
        held = record.heldout
        figures = held.get("raw") or {}
        if figures.get("agreement") is None or not held.get("pairs"):
            continue
        pairs = int(held["pairs"])
        coverage = figures.get("coverage")
        return Qualification(
            judge=judge,
            qualified=True,
            agreement=figures["agreement"],
            coverage=coverage,
            pairs=pairs,
            decided=round(pairs * coverage) if coverage is not None else None,
            source=f"held out by calibration {record.id}, {record.protocol}, "
            f"from {record.pairs_source}",
        )
    return Qualification(judge=judge, qualified=False)
