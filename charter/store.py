"""The project's SQLite store (one file, WAL mode), opened through sqlite-utils.

Each package owns its own tables and receives the open database; this module opens it, says
in one line what went wrong when SQLite refuses (`explain`), and lets an owner check that a
table of its name is really its own (`check_table`) before writing to it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import sqlite_utils
import sqlite_utils.utils

#: The error class of the sqlite3 module sqlite-utils uses (the stdlib's, or pysqlite3's).
SqliteError: type[Exception] = getattr(sqlite_utils.utils, "sqlite3", sqlite3).Error


class StoreError(Exception):
    """The store file cannot be opened or written, or is not a charter store."""


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{path}: cannot create its directory ({exc.strerror})") from None
    try:
        db = sqlite_utils.Database(path)
        db.execute("PRAGMA busy_timeout = 5000")
        _enable_wal(db)
        # In WAL mode, NORMAL still survives a killed process (kill -9) intact; it only
        # skips the fsync per commit, so a power cut could lose the last few commits.
        db.execute("PRAGMA synchronous = NORMAL")
        db.table_names()  # touches the header: fails now on a file that is not SQLite
    except SqliteError as exc:
        raise explain(exc, path) from None
    return db


def _enable_wal(db: sqlite_utils.Database, wait_s: float = 5.0) -> None:
    """Switch to WAL mode, waiting while another connection switches the same new file.

    Changing the journal mode needs the file to itself, and SQLite answers "database is locked"
    at once, without its busy wait, when another connection holds it meanwhile (two processes
    opening a new store together): so wait here, as the busy timeout would.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            db.enable_wal()
            return
        except SqliteError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


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


def explain(exc: Exception, path: Path | str | None) -> StoreError:
    """A one-line `StoreError` for what SQLite said about the store at `path`: what happened
    and what to do. A failed statement changes nothing: SQLite rolls it back."""
    where = str(path) if path is not None else "the store"
    name = getattr(exc, "sqlite_errorname", "") or ""
    said = str(exc) or name or type(exc).__name__
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in said:
        advice = "the store is locked by another process writing to it; retry when it is done"
    elif name.startswith("SQLITE_READONLY") or "readonly" in said:
        advice = "the store is read-only; make the file and its directory writable"
    elif name == "SQLITE_FULL" or "disk is full" in said:
        advice = "the disk is full; free some space and retry (the failed change was not written)"
    elif name.startswith("SQLITE_CANTOPEN") or "unable to open" in said:
        advice = _cannot_open(Path(where)) if path is not None else "check the path"
    elif name.startswith("SQLITE_IOERR"):
        advice = "the disk failed a read or write; check the disk and retry"
    elif name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "not a database" in said:
        advice = "cannot open as a SQLite store: the file is not one, or is damaged"
    else:
        return StoreError(f"{where}: {said}")
    return StoreError(f"{where}: {advice} ({said})")


def _cannot_open(path: Path) -> str:
    """Why SQLite could not open `path`: it also needs to create `NAME-wal` and `NAME-shm`."""
    directory = path.parent
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return (
            f"its directory {directory} is read-only, and SQLite must create "
            f"{path.name}-wal and {path.name}-shm there; make it writable"
        )
    if path.exists() and not os.access(path, os.R_OK):
        return "the file is not readable"
    return "check that the file and its directory exist and are writable"


def store_path(db: sqlite_utils.Database) -> str:
    """The file behind `db` (":memory:" for an in-memory database)."""
    for _, name, file in db.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return str(file) or ":memory:"
    return ":memory:"


def check_table(db: sqlite_utils.Database, name: str, columns: Iterable[str]) -> bool:
    """Whether charter's table `name` exists in `db`. A table of that name without all of
    `columns` belongs to some other program: refused with a `StoreError`, never written to."""
    if name not in db.table_names():
        return False
    have = set(db[name].columns_dict)
    missing = [column for column in columns if column not in have]
    if missing:
        raise StoreError(
            f"{store_path(db)} has a `{name}` table that is not charter's (it has no "
            f"{', '.join(missing)} column{'s' if len(missing) > 1 else ''}); "
            "give charter its own store file (--store)"
        )
    return True
