"""The project's SQLite store (one file, WAL mode), opened through sqlite-utils.

Each package owns its own tables and receives the open database; this module only opens it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils


class StoreError(Exception):
    """The store file cannot be opened or is not a charter store."""


def open_store(path: Path | str, *, create: bool = True) -> sqlite_utils.Database:
    """Open (and by default create) the store at `path`.

    With `create=False` a missing file opens as an empty in-memory database, so read-only
    commands never leave a store behind in a directory that had none.
    """
    path = Path(path)
    if not path.exists() and not create:
        return sqlite_utils.Database(memory=True)
    if path.exists() and path.is_dir():
        raise StoreError(f"{path}: is a directory, expected a SQLite file")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite_utils.Database(path)
        db.enable_wal()
        # In WAL mode, NORMAL still survives a killed process (kill -9) intact; it only
        # skips the fsync per commit, so a power cut could lose the last few commits.
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA busy_timeout = 5000")
        db.table_names()  # touches the header: fails now on a file that is not SQLite
    except Exception as exc:  # sqlite3.DatabaseError and friends
        raise StoreError(f"{path}: cannot open as a SQLite store ({exc})") from exc
    return db


@contextlib.contextmanager
def write_lock(db: sqlite_utils.Database) -> Iterator[None]:
    """A transaction holding the store's write lock from its start (BEGIN IMMEDIATE).

    For read-then-write steps such as creating missing tables: two processes doing them at once
    then take turns, where a plain transaction's upgrade from reading to writing fails at once
    with "database is locked" (SQLite does not wait there, to avoid a deadlock).
    """
    if db.conn.in_transaction:
        yield
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.conn.rollback()
        raise
    db.conn.commit()
