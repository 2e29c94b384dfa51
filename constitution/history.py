"""Frozen versions: immutable rows in the store, looked up by version label or digest.

This module owns the `constitutions` table and receives an open `sqlite_utils.Database`,
so the constitution package needs nothing from the rest of charter.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping, Set
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
    relabelled_from: str | None = None
    """The label constitution.toml gave, when it named other content and the next free label
    was taken instead (`freeze_for_run`)."""


LabelsSeen = Mapping[str, Set[str]]
"""Version label -> the digests it was recorded with outside this table (jobs, eval runs,
model cards made from them): a label seen with one content never names another."""


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
    db: sqlite_utils.Database,
    constitution: Constitution,
    message: str = "",
    *,
    seen: LabelsSeen | None = None,
) -> FreezeResult:
    """Store `constitution` as an immutable version. Freezing the same content twice is a no-op.

    A version label already frozen with different content, or recorded with different
    content anywhere in `seen`, is refused with the next free label to use: a label someone
    has read on a job or a model card must keep naming what they read.
    """
    ensure_table(db)
    existing = _row_by_digest(db, constitution.digest)
    if existing is not None:
        return FreezeResult(frozen=existing, created=False)
    clash = _clash(db, constitution, seen or {})
    if clash:
        free = next_free_label(db, constitution.version, seen or {})
        raise VersionError(
            f"version {constitution.version!r} already names other content ({clash}); "
            f'set version = "{free}" in constitution.toml (the next free label) and freeze again'
        )
    return FreezeResult(frozen=_insert(db, constitution, message), created=True)


def freeze_for_run(
    db: sqlite_utils.Database,
    constitution: Constitution,
    *,
    seen: LabelsSeen | None = None,
    message: str = "frozen by the first run under it",
) -> FreezeResult:
    """The frozen version a run (a job, an eval) records: this content's own if it was frozen
    before, else a new one under the directory's label, else, when that label already names
    other content (the principles were edited without bumping `version`), under the next free
    label. The returned version's label is the one to record, never the stale one."""
    ensure_table(db)
    for _ in range(5):  # another run may freeze the same content or take the label meanwhile
        try:
            return _freeze_for_run(db, constitution, seen or {}, message)
        except sqlite3.IntegrityError:
            continue
    raise VersionError(f"could not freeze {constitution.digest[:12]}: its label kept being taken")


def _freeze_for_run(
    db: sqlite_utils.Database, constitution: Constitution, seen: LabelsSeen, message: str
) -> FreezeResult:
    existing = _row_by_digest(db, constitution.digest)
    if existing is not None:
        return FreezeResult(frozen=existing, created=False)
    if not _clash(db, constitution, seen or {}):
        return FreezeResult(frozen=_insert(db, constitution, message), created=True)
    label = next_free_label(db, constitution.version, seen or {})
    relabelled = constitution.model_copy(update={"version": label})
    note = f"{message}; constitution.toml says {constitution.version!r}, which names other content"
    return FreezeResult(
        frozen=_insert(db, relabelled, note), created=True, relabelled_from=constitution.version
    )


def next_free_label(db: sqlite_utils.Database, label: str, seen: LabelsSeen) -> str:
    """The first label after `label` that names nothing yet: its last number counted up
    (1.0.0 -> 1.0.1, v2 -> v3), or `.1`, `.2`, ... appended when it has no number."""
    match = re.search(r"(\d+)(\D*)$", label)
    for step in range(1, 10_000):
        if match:
            number = int(match.group(1)) + step
            candidate = f"{label[: match.start(1)]}{number}{match.group(2)}"
        else:
            candidate = f"{label}.{step}"
        if candidate not in seen and not list(db[TABLE].rows_where("version = ?", [candidate])):
            return candidate
    raise VersionError(f"no free version label after {label!r}")


def _clash(db: sqlite_utils.Database, constitution: Constitution, seen: LabelsSeen) -> str:
    """What already holds this constitution's label with other content ('' if nothing)."""
    frozen = list(db[TABLE].rows_where("version = ?", [constitution.version]))
    if frozen:
        return f"frozen as digest {frozen[0]['digest'][:12]}"
    others = sorted(d for d in seen.get(constitution.version, ()) if d != constitution.digest)
    if others:
        return f"recorded by a job or eval run under digest {others[0][:12]}"
    return ""


def _insert(db: sqlite_utils.Database, constitution: Constitution, message: str) -> FrozenVersion:
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
    return frozen


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
