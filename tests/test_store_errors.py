"""A store charter cannot write (locked, read-only, full, another program's file): real CLI
commands against a real SQLite file end in one line naming the store, exit 1, and lose nothing."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from charter.cli.main import cli
from tests.support.generation import PROMPTS, make_world, responder, write_prompts
from tests.support.scripted_server import ScriptedJudgeServer

Snapshot = dict[str, list[tuple[Any, ...]]]


@pytest.fixture
def server() -> Iterator[ScriptedJudgeServer]:
    with ScriptedJudgeServer(responder()) as srv:
        yield srv


@pytest.fixture
def world(tmp_path: Path, server: ScriptedJudgeServer) -> dict[str, Path]:
    """A store holding one finished job, and a second prompts file that makes a new job."""
    world = make_world(tmp_path / "project")
    code, err = generate(world, server, world["prompts"])
    assert code == 0, err
    gc.collect()  # the command's connections close: SQLite removes store.db-wal and -shm
    world["more"] = write_prompts(tmp_path / "more.jsonl", [p + " (again)" for p in PROMPTS[:3]])
    return world


LEASE_TTL_S = 2.0


def generate(world: dict[str, Path], server: ScriptedJudgeServer, prompts: Path) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli,
        [
            "generate", "--prompts", str(prompts), "--dir", str(world["principles"]),
            "--store", str(world["store"]), "--judge", "openai:scripted",
            "--policy", "openai:scripted", "--judge-base-url", server.base_url,
            "--policy-base-url", server.base_url, "--json",
        ],
        catch_exceptions=False,
    )  # fmt: skip
    return result.exit_code, result.stderr


def snapshot(store: Path) -> Snapshot:
    """Every table's rows, read through a connection of its own (closed: as the last one, it
    removes store.db-wal and -shm)."""
    conn = sqlite3.connect(store)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {name: sorted(conn.execute(f'SELECT * FROM "{name}"'), key=repr) for name in names}
    finally:
        conn.close()


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 1, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


@contextlib.contextmanager
def locked(store: Path) -> Iterator[None]:
    """Another process holds the store's write lock (BEGIN EXCLUSIVE) until the block ends."""
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sqlite3, sys\n"
            f"conn = sqlite3.connect({str(store)!r}, isolation_level=None)\n"
            "conn.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` (a file or a directory) made read-only for real: chmod for a normal user; for
    root, whom permissions do not stop, the immutable attribute (chattr +i)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        undo = [lambda: path.chmod(mode)]
    else:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: cannot make a path read-only")
        made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"chattr +i not supported here: {made.stderr.strip()}")
        undo = [lambda: subprocess.run(["chattr", "-i", str(path)], check=True)]
    try:
        probe = path / "probe" if path.is_dir() else path
        with pytest.raises(OSError):  # really read-only, or the test proves nothing
            probe.open("a").close()
        yield
    finally:
        for step in undo:
            step()


def test_locked_store_is_a_one_line_error_and_keeps_its_rows(
    world: dict[str, Path], server: ScriptedJudgeServer
) -> None:
    before, calls = snapshot(world["store"]), server.calls
    with locked(world["store"]):
        code, err = generate(world, server, world["more"])
    assert_one_line_error(code, err, str(world["store"]), "locked by another process")
    assert snapshot(world["store"]) == before
    assert server.calls == calls  # refused before any model call was paid for


def test_a_store_locked_mid_job_stops_it_in_one_line_and_the_job_resumes(
    world: dict[str, Path],
) -> None:
    """The lock is taken while the job runs, so the failing write is a model call's or a
    prompt's, deep inside the run, not the job's creation."""
    before = snapshot(world["store"])
    with ScriptedJudgeServer(responder(), latency_s=1.0) as slow:
        args = [
            sys.executable, "-m", "charter.cli", "generate", "--prompts", str(world["more"]),
            "--dir", str(world["principles"]), "--store", str(world["store"]),
            "--judge", "openai:scripted", "--policy", "openai:scripted",
            "--judge-base-url", slow.base_url, "--policy-base-url", slow.base_url, "--json",
        ]  # fmt: skip
        # The locked store cannot take the lease's release either: a short lease lapses soon.
        env = {**os.environ, "CHARTER_LEASE_TTL_S": str(LEASE_TTL_S)}
        run = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        while len(snapshot(world["store"])["jobs"]) == len(before["jobs"]):  # job being made
            assert run.poll() is None, run.communicate()
        with locked(world["store"]):
            started = time.monotonic()
            _, err = run.communicate(timeout=60)
            waited = time.monotonic() - started
    assert_one_line_error(run.returncode, err, str(world["store"]), "locked by another process")
    # A few statements wait out SQLite's 5 s busy timeout (the failing write, the lease's
    # renewal and its release: 15-20 s); the calls in flight then fail at once rather than each
    # waiting its own 5 s (6 of them: 30 s more, 45 s at the very least). The bound sits
    # between the two, with 20 s for a loaded machine (28.3 s measured under load).
    assert waited < 40
    after = snapshot(world["store"])
    assert all(set(rows) <= set(after[name]) for name, rows in before.items())  # nothing lost
    time.sleep(LEASE_TTL_S)
    with ScriptedJudgeServer(responder()) as server:
        code, err = generate(world, server, world["more"])
    assert code == 0, err


@pytest.mark.parametrize("what", ["file", "directory"])
def test_read_only_store_is_a_one_line_error_and_keeps_its_rows(
    world: dict[str, Path], server: ScriptedJudgeServer, what: str
) -> None:
    store = world["store"]
    before = snapshot(store)
    assert not Path(f"{store}-wal").exists()  # else SQLite could write through it
    with read_only(store if what == "file" else store.parent):
        code, err = generate(world, server, world["more"])
    assert_one_line_error(code, err, str(store), "read-only")
    assert snapshot(store) == before


def test_full_disk_is_a_one_line_error_and_keeps_its_rows(
    world: dict[str, Path], server: ScriptedJudgeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up: SQLite's own page limit on the store's connections makes every write
    that needs a new page fail with the real SQLITE_FULL ("database or disk is full")."""
    store = world["store"]
    connect = sqlite3.connect

    def connect_to_a_full_disk(target: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(target, *args, **kwargs)
        if Path(str(target)) == store:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    before = snapshot(store)
    monkeypatch.setattr(sqlite3, "connect", connect_to_a_full_disk)
    code, err = generate(world, server, world["more"])
    monkeypatch.undo()
    assert_one_line_error(code, err, str(store), "disk is full")
    assert snapshot(store) == before


@pytest.mark.parametrize(
    ("table", "columns"),
    [("calls", "id INTEGER PRIMARY KEY, caller TEXT, minutes INT"),
     ("jobs", "id INTEGER PRIMARY KEY, title TEXT, salary INT")],
)  # fmt: skip
def test_another_programs_table_is_refused_and_left_alone(
    tmp_path: Path, server: ScriptedJudgeServer, table: str, columns: str
) -> None:
    world = make_world(tmp_path)
    conn = sqlite3.connect(world["store"])
    conn.execute(f"CREATE TABLE {table} ({columns})")
    conn.execute(f"INSERT INTO {table} VALUES (1, 'theirs', 3)")
    conn.commit()
    conn.close()
    before = snapshot(world["store"])
    code, err = generate(world, server, world["prompts"])
    assert_one_line_error(code, err, str(world["store"]), f"has a `{table}` table that is not")
    result = CliRunner().invoke(cli, ["jobs", "list", "--store", str(world["store"]), "--json"])
    if table == "jobs":
        assert_one_line_error(result.exit_code, result.stderr, f"`{table}` table")
    else:
        assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert snapshot(world["store"]) == before  # no charter table was added, no row changed
    assert server.calls == 0
