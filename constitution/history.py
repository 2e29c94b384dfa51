"""Frozen versions: immutable rows in the store, looked up by version label or digest.

This module owns the `constitutions` table and receives an open `sqlite_utils.Database`,
so the constitution package needs nothing from the rest of charter.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from .errors import VersionError
from .loader import load_constitution
from .models import Constitution

if TYPE_CHECKING:
    import sqlite_utils

TABLE = "constitutions"
MIN_PREFIX = 4


class FrozenVersion(BaseModel):
    """One frozen constitution, as stored."""

    digest: str
    version: str
    name: str
    message: str
    frozen_at: datetime
    constitution: Constitution


class FreezeResult(BaseModel):
    frozen: FrozenVersion
    created: bool


def ensure_table(db: sqlite_utils.Database) -> None:
    if TABLE not in db.table_names():
        db[TABLE].create(  # type: ignore[union-attr]
            {
                "digest": str,
                "version": str,
                "name": str,
                "message": str,
                "frozen_at": str,
                "body": str,
            },
            pk="digest",
        )
        db[TABLE].create_index(["version"], unique=True)  # type: ignore[union-attr]


def freeze(
    db: sqlite_utils.Database, constitution: Constitution, message: str = ""
) -> FreezeResult:
    """Store `constitution` as an immutable version. Freezing the same content twice is a no-op.

    A version label already used by different content is refused: bump `version` in
    constitution.toml, so that every label names exactly one constitution.
    """
    ensure_table(db)
    existing = _row_by_digest(db, constitution.digest)
    if existing is not None:
        return FreezeResult(frozen=existing, created=False)
    clash = list(db[TABLE].rows_where("version = ?", [constitution.version]))
    if clash:
        raise VersionError(
            f"version {constitution.version!r} is already frozen with different content "
            f"(digest {clash[0]['digest'][:12]}); bump 'version' in constitution.toml"
        )
    frozen = FrozenVersion(
        digest=constitution.digest,
        version=constitution.version,
        name=constitution.name,
        message=message,
        frozen_at=datetime.now(UTC),
        constitution=constitution,
    )
    with db.conn:
        db[TABLE].insert(  # type: ignore[union-attr]
            {
                "digest": frozen.digest,
                "version": frozen.version,
                "name": frozen.name,
                "message": frozen.message,
                "frozen_at": frozen.frozen_at.isoformat(),
                "body": constitution.model_dump_json(),
            }
        )
    return FreezeResult(frozen=frozen, created=True)


def history(db: sqlite_utils.Database) -> list[FrozenVersion]:
    """Every frozen version, newest first."""
    if TABLE not in db.table_names():
        return []
    return [_from_row(r) for r in db[TABLE].rows_where(order_by="frozen_at desc, rowid desc")]


def get_version(db: sqlite_utils.Database, ref: str) -> FrozenVersion:
    """A frozen version by exact version label or by digest prefix (at least 4 hex digits)."""
    if TABLE in db.table_names():
        by_label = list(db[TABLE].rows_where("version = ?", [ref]))
        if by_label:
            return _from_row(by_label[0])
        prefix = ref.lower()
        if len(prefix) >= MIN_PREFIX and all(c in "0123456789abcdef" for c in prefix):
            matches = list(db[TABLE].rows_where("digest like ?", [prefix + "%"]))
            if len(matches) == 1:
                return _from_row(matches[0])
            if len(matches) > 1:
                raise VersionError(f"digest prefix {ref!r} is ambiguous ({len(matches)} versions)")
    raise VersionError(
        f"no frozen version or digest matches {ref!r} (see 'charter constitution log')"
    )


def resolve(db: sqlite_utils.Database, ref: str) -> Constitution:
    """A constitution from a directory path, a frozen version label, or a digest prefix."""
    if Path(ref).is_dir():
        return load_constitution(ref)
    return get_version(db, ref).constitution


def _row_by_digest(db: sqlite_utils.Database, digest: str) -> FrozenVersion | None:
    if TABLE not in db.table_names():
        return None
    rows = list(db[TABLE].rows_where("digest = ?", [digest]))
    return _from_row(rows[0]) if rows else None


def _from_row(row: dict[str, str]) -> FrozenVersion:
    return FrozenVersion(
        digest=row["digest"],
        version=row["version"],
        name=row["name"],
        message=row["message"],
        frozen_at=datetime.fromisoformat(row["frozen_at"]),
        constitution=Constitution.model_validate(json.loads(row["body"])),
    )
