"""Version labels never drift: a job records a frozen constitution, and a label a job has
recorded never names other content, whether the next freeze is a user's or a job's."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.support.generation import make_world, responder
from tests.support.scripted_server import ScriptedJudgeServer
from tests.test_generate import export_rows, invoke, run_generate


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    return make_world(tmp_path)


def _log(world: dict[str, Path]) -> list[dict]:
    code, out, err = invoke(["constitution", "log", "--store", str(world["store"]), "--json"])
    assert code == 0, err
    return json.loads(out)


def _show(world: dict[str, Path]) -> dict:
    code, out, err = invoke(["constitution", "show", "--dir", str(world["principles"]), "--json"])
    assert code == 0, err
    return json.loads(out)


def _edit_helpful(world: dict[str, Path]) -> None:
    helpful = world["principles"] / "helpful.toml"
    helpful.write_text(helpful.read_text().replace("more helpfully", "more usefully"))


def test_a_job_records_a_frozen_version(world: dict[str, Path]) -> None:
    with ScriptedJudgeServer(responder()) as server:
        summary = run_generate(world, server)
    [frozen] = _log(world)
    assert frozen["digest"] == _show(world)["digest"] and frozen["version"] == "1.0"
    rows = export_rows(world, summary["job_id"])
    assert rows and {(r["constitution_version"], r["constitution_digest"]) for r in rows} == {
        ("1.0", frozen["digest"])
    }


def test_a_freeze_after_an_edit_cannot_reuse_a_label_a_job_recorded(
    world: dict[str, Path],
) -> None:
    with ScriptedJudgeServer(responder()) as server:
        run_generate(world, server)
    _edit_helpful(world)
    freeze = ["constitution", "freeze", "--dir", str(world["principles"])]
    code, out, err = invoke([*freeze, "--store", str(world["store"])])
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "'1.0' already names other content" in err
    assert 'set version = "1.1" in constitution.toml' in err
    assert [v["version"] for v in _log(world)] == ["1.0"]  # nothing stored
    # A store from before jobs froze: the job's label is still taken.
    with sqlite3.connect(world["store"]) as db:
        db.execute("DELETE FROM constitutions")
    code, _, err = invoke([*freeze, "--store", str(world["store"])])
    assert code == 1 and "recorded by a job or eval run" in err and '"1.1"' in err
    # Doing what it says works.
    meta = world["principles"] / "constitution.toml"
    meta.write_text(meta.read_text().replace('version = "1.0"', 'version = "1.1"'))
    code, out, err = invoke([*freeze, "--store", str(world["store"])])
    assert code == 0, err


def test_a_job_after_an_edit_freezes_the_next_label_and_diff_works(
    world: dict[str, Path],
) -> None:
    with ScriptedJudgeServer(responder()) as server:
        first = run_generate(world, server)
        _edit_helpful(world)
        second = run_generate(world, server)
    assert first["job_id"] != second["job_id"]
    log = _log(world)
    assert [v["version"] for v in log] == ["1.1", "1.0"]
    assert log[0]["digest"] == _show(world)["digest"]
    rows = export_rows(world, second["job_id"])
    assert {r["constitution_version"] for r in rows} == {"1.1"}
    assert {r["constitution_version"] for r in export_rows(world, first["job_id"])} == {"1.0"}
    store = ["--store", str(world["store"]), "--json"]
    code, out, err = invoke(["constitution", "diff", "1.0", str(world["principles"]), *store])
    assert code == 0, err
    diff = json.loads(out)
    assert [c["id"] for c in diff["changed"]] == ["helpful"]
    code, out, err = invoke(["constitution", "diff", "1.0", "1.1", *store])
    assert code == 0 and [c["id"] for c in json.loads(out)["changed"]] == ["helpful"], err
