"""The service's own rows in the store: who owns which job, and paged reads of a job's output.

Jobs themselves live in `charter.jobs`' tables, shared with the CLI. A service job's spec names
its owner (`JobSpec.tenant`), so its id differs from every other token's job for the same
request; the (job, owner) table lists each owner's jobs. Owners are token hashes
(`settings.owner_of`), never tokens.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import sqlite_utils

from charter.jobs.store import JOB_PROMPTS, JOBS, PREFERENCES, Preference, preference_from_row
from charter.jobs.store import ensure_tables as ensure_job_tables

log = logging.getLogger(__name__)

OWNERS = "service_job_owners"
PAGE_SCAN = 500

Cursor = tuple[int, str]
"""(position, key) of the last preference row a page scanned: rows sort by it."""


class CursorError(ValueError):
    """A pagination cursor this service did not make."""


def ensure_tables(db: sqlite_utils.Database) -> None:
    ensure_job_tables(db)
    if OWNERS not in db.table_names():
        db[OWNERS].create(  # type: ignore[union-attr]
            {"job_id": str, "owner": str, "added_at": str}, pk=("job_id", "owner")
        )
        db[OWNERS].create_index(["owner"])  # type: ignore[union-attr]
    dropped = drop_co_owners(db)
    if dropped:
        log.warning("%d later co-owner(s) of shared jobs no longer see them", dropped)


def drop_co_owners(db: sqlite_utils.Database) -> int:
    """Leave each job to the owner that submitted it first.

    Stores from before tenants let a second token that sent the same request co-own the job;
    its rows stay, but only the first owner sees it now (the other gets its own job, with
    the same calls reused, by sending the request again).
    """
    with db.conn:
        cursor = db.execute(
            f"DELETE FROM {OWNERS} WHERE EXISTS (SELECT 1 FROM {OWNERS} first "
            f"WHERE first.job_id = {OWNERS}.job_id AND (first.added_at < {OWNERS}.added_at "
            f"OR (first.added_at = {OWNERS}.added_at AND first.owner < {OWNERS}.owner)))"
        )
    return cursor.rowcount


def add_owner(db: sqlite_utils.Database, job_id: str, owner: str) -> bool:
    """Record `owner` as an owner of the job; False if it already was."""
    with db.conn:
        cursor = db.execute(
            f"INSERT OR IGNORE INTO {OWNERS} (job_id, owner, added_at) VALUES (?, ?, ?)",
            [job_id, owner, datetime.now(UTC).isoformat()],
        )
    return cursor.rowcount == 1


def owns(db: sqlite_utils.Database, job_id: str, owner: str) -> bool:
    row = db.execute(
        f"SELECT 1 FROM {OWNERS} WHERE job_id = ? AND owner = ?", [job_id, owner]
    ).fetchone()
    return row is not None


def owned_job_ids(db: sqlite_utils.Database, owner: str, limit: int) -> list[str]:
    """The owner's jobs, most recently updated first."""
    rows = db.execute(
        f"SELECT j.id FROM {JOBS} j JOIN {OWNERS} o ON o.job_id = j.id WHERE o.owner = ? "
        "ORDER BY j.updated_at DESC LIMIT ?",
        [owner, limit],
    ).fetchall()
    return [r[0] for r in rows]


def untenanted_job_ids(db: sqlite_utils.Database, limit: int) -> list[str]:
    """Jobs no token owns (made with the CLI or the pipeline), most recently updated first:
    what an operator sees besides its own."""
    rows = db.execute(
        f"SELECT j.id FROM {JOBS} j WHERE NOT EXISTS "
        f"(SELECT 1 FROM {OWNERS} o WHERE o.job_id = j.id) ORDER BY j.updated_at DESC LIMIT ?",
        [limit],
    ).fetchall()
    return [r[0] for r in rows]


def untenanted(db: sqlite_utils.Database, job_id: str) -> bool:
    """Whether the job exists and no token owns it."""
    row = db.execute(
        f"SELECT 1 FROM {JOBS} j WHERE j.id = ? AND NOT EXISTS "
        f"(SELECT 1 FROM {OWNERS} o WHERE o.job_id = j.id)",
        [job_id],
    ).fetchone()
    return row is not None


def interrupted_job_ids(db: sqlite_utils.Database) -> list[str]:
    """Service jobs still marked running: a previous process stopped before finishing them."""
    rows = db.execute(
        f"SELECT DISTINCT j.id FROM {JOBS} j JOIN {OWNERS} o ON o.job_id = j.id "
        "WHERE j.status = 'running' ORDER BY j.created_at"
    ).fetchall()
    return [r[0] for r in rows]


def prompt_errors(db: sqlite_utils.Database, job_id: str, limit: int = 5) -> list[str]:
    rows = db.execute(
        f"SELECT error FROM {JOB_PROMPTS} WHERE job_id = ? AND status = 'failed' "
        "AND error IS NOT NULL ORDER BY position DESC LIMIT ?",
        [job_id, limit],
    ).fetchall()
    return [r[0] for r in rows]


def preferences_page(
    db: sqlite_utils.Database,
    job_id: str,
    after: Cursor | None,
    limit: int,
    keep: Callable[[Preference], bool],
) -> tuple[list[Preference], Cursor | None]:
    """Up to `limit` kept rows after `after`, and the cursor to the next page (None at the end).

    Rows are scanned in (position, key) order, the order `charter export` writes, in batches,
    so a page costs a bounded read however large the job is.
    """
    page: list[Preference] = []
    cursor = after
    while True:
        where, args = "job_id = ?", [job_id]
        if cursor is not None:
            where += " AND (position > ? OR (position = ? AND key > ?))"
            args += [cursor[0], cursor[0], cursor[1]]  # type: ignore[list-item]
        rows = list(
            db[PREFERENCES].rows_where(where, args, order_by="position, key", limit=PAGE_SCAN)
        )
        for row in rows:
            position, key = int(row["position"]), str(row["key"])
            preference = preference_from_row(row)
            if keep(preference):
                if len(page) == limit:
                    return page, cursor  # a further kept row exists: there is a next page
                page.append(preference)
            cursor = (position, key)
        if len(rows) < PAGE_SCAN:
            return page, None


def encode_cursor(cursor: Cursor) -> str:
    raw = json.dumps([cursor[0], cursor[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        position, key = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise CursorError("invalid cursor: pass back the X-Next-Cursor header unchanged") from None
    if not isinstance(position, int) or not isinstance(key, str):
        raise CursorError("invalid cursor: pass back the X-Next-Cursor header unchanged")
    return position, key
