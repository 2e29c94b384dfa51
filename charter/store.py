"""The project's SQLite store (one file, WAL mode), opened through sqlite-utils.

Each package owns its own tables and receives the open database; this module only opens it.
"""

from __future__ import annotations

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
