"""A job's preference rows for the pages: filtered, keyset-paged reads on indexed columns.

Pages follow (position, key), the order `charter export` writes, from the (job_id, position)
index, so page N costs what page 1 costs however large the job is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

import sqlite_utils
from pydantic import BaseModel, ConfigDict, Field

from charter.jobs.spec import DEFAULT_MIN_CONFIDENCE
from charter.jobs.store import PREFERENCES, Preference, preference_from_row

from ..records import Cursor, CursorError, decode_cursor, encode_cursor

PAGE_SIZE = 25
COUNT_CAP = 10_000  # a filtered count stops here ("10000+"): its cost is bounded by the cap

Reason = Literal["", "kept", "low_confidence", "position_inconsistent"]
REASONS: dict[str, str] = {
    "kept": "kept (exported)",
    "low_confidence": "below the confidence threshold",
    "position_inconsistent": "position-inconsistent verdict",
}


class RowFilter(BaseModel):
    """The filters of the rows page, read from its query string."""

    model_config = ConfigDict(extra="ignore")

    principle: str = Field(default="", max_length=100, description="A principle id.")
    source: Literal["", "comparison", "revision"] = ""
    min_p: float | None = Field(default=None, ge=0.0, le=1.0, description="Lowest p_chosen.")
    max_p: float | None = Field(default=None, ge=0.0, le=1.0, description="Highest p_chosen.")
    reason: Reason = ""
    after: str = Field(default="", max_length=200, description="Cursor of the previous page.")
    limit: int = Field(default=PAGE_SIZE, ge=1, le=200, description="Rows per page.")

    def query(self, **changes: Any) -> str:
        """This filter's query string, with `changes` applied (empty values left out)."""
        values = {**self.model_dump(), **changes}
        if values["limit"] == PAGE_SIZE:
            del values["limit"]
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})


@dataclass
class RowsPage:
    rows: list[tuple[str, Preference]]
    next_after: str | None
    matched: int
    capped: bool = False
    principles: list[str] = field(default_factory=list)


def _where(job_id: str, f: RowFilter, min_confidence: float) -> tuple[str, list[Any]]:
    where: list[str] = ["job_id = ?"]
    args: list[Any] = [job_id]
    if f.principle:
        where.append("principles LIKE ? ESCAPE '\\'")
        escaped = f.principle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        args.append(f'%"{escaped}"%')
    if f.source:
        where.append("source = ?")
        args.append(f.source)
    if f.min_p is not None:
        where.append("+p_chosen >= ?")  # `+`: pages follow the position index, not p_chosen's
        args.append(f.min_p)
    if f.max_p is not None:
        where.append("+p_chosen <= ?")
        args.append(f.max_p)
    exportable = "((source = 'revision' AND +p_chosen IS NULL) OR +p_chosen >= ?)"
    if f.reason == "kept":
        where.append(exportable)
        args.append(min_confidence)
    elif f.reason == "low_confidence":
        where.append(f"NOT {exportable}")
        args.append(min_confidence)
    elif f.reason == "position_inconsistent":
        where.append("position_consistent = 0")
    return " AND ".join(where), args


def rows_page(
    db: sqlite_utils.Database,
    job_id: str,
    f: RowFilter,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
) -> RowsPage:
    """One page of rows matching `f` after its cursor; `CursorError` for a cursor not ours."""
    where, args = _where(job_id, f, min_confidence)
    capped = False
    if args == [job_id]:  # no filter: the job_id index counts every row quickly
        matched = db.execute(f"SELECT COUNT(*) FROM {PREFERENCES} WHERE {where}", args)
        matched = matched.fetchone()[0]
    else:  # `ORDER BY position`: read the rows in the order they lie on disk
        matched = db.execute(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {PREFERENCES} WHERE {where} "
            "ORDER BY position LIMIT ?)",
            [*args, COUNT_CAP + 1],
        ).fetchone()[0]
        capped = matched > COUNT_CAP
        matched = min(matched, COUNT_CAP)
    after: Cursor | None = decode_cursor(f.after) if f.after else None
    if after is not None:
        where += " AND (position > ? OR (position = ? AND key > ?))"
        args += [after[0], after[0], after[1]]
    rows = list(
        db[PREFERENCES].rows_where(where, args, order_by="position, key", limit=f.limit + 1)
    )
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    page = [(str(r["key"]), preference_from_row(r)) for r in rows]
    next_after = None
    if more and rows:
        next_after = encode_cursor((int(rows[-1]["position"]), str(rows[-1]["key"])))
    return RowsPage(page, next_after, int(matched), capped)


def get_row(db: sqlite_utils.Database, job_id: str, key: str) -> Preference | None:
    rows = list(db[PREFERENCES].rows_where("key = ? AND job_id = ?", [key, job_id], limit=1))
    return preference_from_row(rows[0]) if rows else None


def prompt_text(prompt: str | list[dict[str, str]]) -> str:
    """A prompt as one text: a conversation shows each turn as `role: content`."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in prompt)


def p_chosen_histogram(db: sqlite_utils.Database, job_id: str, bins: int = 20) -> list[int]:
    """How many rows have p_chosen in each of `bins` equal-width bins of [0, 1]."""
    counts = [0] * bins
    for bucket, n in db.execute(
        f"SELECT MIN(CAST(p_chosen * ? AS INTEGER), ?), COUNT(*) FROM {PREFERENCES} "
        "WHERE job_id = ? AND p_chosen IS NOT NULL GROUP BY 1",
        [bins, bins - 1, job_id],
    ):
        counts[max(0, int(bucket))] += int(n)
    return counts


def job_principles(db: sqlite_utils.Database, job_id: str, sample: int = 200) -> list[str]:
    """Principle ids seen on the job's first rows, for the filter's choices."""
    seen: dict[str, None] = {}
    for (raw,) in db.execute(
        f"SELECT principles FROM {PREFERENCES} WHERE job_id = ? ORDER BY position LIMIT ?",
        [job_id, sample],
    ):
        for pid in json.loads(raw or "[]"):
            seen[str(pid)] = None
    return sorted(seen)


__all__ = ["CursorError", "RowFilter", "RowsPage", "get_row", "rows_page"]
