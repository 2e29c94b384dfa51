"""Stopping a job and overlapping runs of it: SIGTERM/SIGINT, `--resume JOB_ID`, the job's lease.

Real `charter generate` processes against the scripted judge on loopback, one real store file.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from charter.constitution import load_constitution
from charter.jobs.leases import LeaseLost, LeaseSettings, current, held
from charter.jobs.spec import JobOptions
from charter.jobs.store import create_or_get_job, get_job
from charter.prompt_files import PromptRecord
from charter.service.models import ModelPool
from charter.service.runner import JobRunner
from charter.service.settings import ServiceSettings
from charter.settings import LEASE_TTL_ENV
from charter.store import open_store
from tests.support.generation import make_world, responder, write_constitution
from tests.support.scripted_server import Reply, ScriptedJudgeServer
from tests.support.service import REPO, request_call, stored_calls
from tests.test_generate import export_rows, generate_args, invoke, run_generate

PROMPTS = [f"Question number {i}: how should I do task {i}?" for i in range(16)]


def spawn(
    world: dict[str, Path],
    server: ScriptedJudgeServer,
    *extra: str,
    ttl: float | None = None,
    grace_s: float | None = None,
) -> subprocess.Popen[bytes]:
    """`charter generate` as a process of its own (so it can be signalled or killed);
    `grace_s` replaces the time a first stop signal gives the calls in flight."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if ttl is not None:
        env[LEASE_TTL_ENV] = str(ttl)
    launch = ["-m", "charter.cli"]
    if grace_s is not None:
        launch = ["-c", "import charter.jobs.stopping as s; "
                  f"s.STOP_GRACE_S = {grace_s!r}; import charter.cli.__main__"]  # fmt: skip
    args = [sys.executable, *launch, *generate_args(world, server, *extra)]
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=world["tmp"]
    )


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def stored_counts(store: Path, job_id: str) -> tuple[int, int, int]:
    """(prompts done, prompts in the job, preference rows): what the store really holds."""
    with sqlite3.connect(store) as conn:
        done, total = conn.execute(
            "SELECT sum(status = 'done'), count(*) FROM job_prompts WHERE job_id = ?", [job_id]
        ).fetchone()
        (rows,) = conn.execute(
            "SELECT count(*) FROM preferences WHERE job_id = ?", [job_id]
        ).fetchone()
    return int(done or 0), int(total), int(rows)


def jobs_list(store: Path) -> tuple[list[dict[str, Any]], str]:
    code, out, err = invoke(["jobs", "list", "--store", str(store), "--json"])
    assert code == 0, err
    code, text, err = invoke(["jobs", "list", "--store", str(store)])
    assert code == 0, err
    return json.loads(out), text


def holding(inner: Callable[[dict[str, Any]], Reply]) -> tuple[Any, threading.Event]:
    """A responder that answers nothing until the returned event is set."""
    release = threading.Event()

    def respond(body: dict[str, Any]) -> Reply:
        release.wait(60)
        return inner(body)

    return respond, release


def uninterrupted_rows(tmp_path: Path, server: ScriptedJudgeServer) -> tuple[list[dict], int]:
    """The job's rows from a run on a fresh store, and the model calls that run made."""
    fresh = make_world(tmp_path / "fresh", PROMPTS)
    before = server.calls
    summary = run_generate(fresh, server, "--concurrency", "2")
    return export_rows(fresh, summary["job_id"]), server.calls - before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_job_cleanly_and_resume_by_id_matches_an_uninterrupted_run(
    tmp_path: Path, sig: signal.Signals
) -> None:
    world = make_world(tmp_path / "stopped", PROMPTS)
    with ScriptedJudgeServer(responder(PROMPTS), latency_s=0.05) as server:
        proc = spawn(world, server, "--concurrency", "2")
        wait_until(lambda: server.calls >= 14 or proc.poll() is not None)
        assert proc.poll() is None, "the job ended before the signal"
        proc.send_signal(sig)
        _, err_bytes = proc.communicate(timeout=60)
        err = err_bytes.decode()
        [job] = jobs_list(world["store"])[0]

        assert proc.returncode == 128 + sig.value
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"{sig.name}: stopped {job['id']}: ")
        assert f"resume with `charter generate --resume {job['id']}`" in last
        assert job["status"] == "stopped" and job["runner"] is None
        done, total, rows = stored_counts(world["store"], job["id"])
        assert 0 < done < total, "stopped part way"
        assert job["prompts"]["done"] == done and job["preferences"] == rows
        assert (
            f"stopped     compare  {done}/{total} prompts  {rows} prefs"
            in jobs_list(world["store"])[1]
        )
        # The calls in flight were let finish and stored: the resume asks none of them again.
        answered = {request_call(r.body) for r in server.log if r.status == 200}
        assert answered <= stored_calls(world["store"])
        stopped_at = len(server.log)

        resumed = run_generate(world, server, "--resume", job["id"][:10])
        asked_again = {request_call(r.body) for r in server.log[stopped_at:]}
        assert asked_again, "the resume had calls left to make"
        assert not answered & asked_again, "the resumed run repeated a call made before"
        assert resumed["job_id"] == job["id"] and resumed["prompts"]["done"] == len(PROMPTS)
        fresh_rows, _ = uninterrupted_rows(tmp_path, server)
    assert export_rows(world, job["id"]) == fresh_rows
    [job] = jobs_list(world["store"])[0]
    assert job["status"] == "done" and job["preferences"] == len(fresh_rows)


def test_a_second_signal_abandons_calls_that_do_not_finish(tmp_path: Path) -> None:
    world = make_world(tmp_path, PROMPTS)
    respond, release = holding(responder(PROMPTS))
    with ScriptedJudgeServer(respond) as server:
        # A grace longer than this test waits: only the second signal can end the run in time.
        proc = spawn(world, server, "--concurrency", "2", grace_s=600.0)
        wait_until(lambda: server.in_flight == 2)  # both calls wait on the server
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None, "the calls in flight were given time to finish"
        proc.send_signal(signal.SIGTERM)
        # The server holds both calls for 60 s, and the grace outlasts them: a run that ends
        # within 30 s, while both are still held, abandoned them.
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("the second signal did not end the run: it waited on its calls")
        held = server.in_flight
        release.set()
    assert proc.returncode == 128 + signal.SIGTERM.value, err.decode()
    assert held == 2, "the run ended with both calls still unanswered"
    assert "abandoning the model calls in flight" in err.decode()
    [job] = jobs_list(world["store"])[0]
    assert job["status"] == "stopped" and job["prompts"] == {"pending": len(PROMPTS)}


def test_two_concurrent_runs_of_one_job_pay_once(tmp_path: Path) -> None:
    world = make_world(tmp_path / "twice", PROMPTS)
    respond, release = holding(responder(PROMPTS))
    with ScriptedJudgeServer(respond) as server:
        # Both start on a new store at once; no call is answered until one of them has ended,
        # so neither can finish the job before the other has tried to run it.
        procs = [spawn(world, server, "--concurrency", "2") for _ in range(2)]
        try:
            wait_until(lambda: any(p.poll() is not None for p in procs), timeout=30)
        finally:
            release.set()
        outcomes = [(p, *p.communicate(timeout=60)) for p in procs]
        two_runs_calls = server.calls
        server.responder = responder(PROMPTS)
        fresh_rows, one_run_calls = uninterrupted_rows(tmp_path, server)
    [(winner, out, _)] = [o for o in outcomes if o[0].returncode == 0]
    [(loser, _, err)] = [o for o in outcomes if o[0] is not winner]
    summary = json.loads(out)
    message = err.decode().strip()
    assert loser.returncode == 1 and "Traceback" not in message
    assert len(message.splitlines()) == 1 and message.startswith(
        f"Error: job {summary['job_id']} is already being run by "
    )
    assert f":{winner.pid}:" in message and "--resume" in message
    assert two_runs_calls == one_run_calls
    assert export_rows(world, summary["job_id"]) == fresh_rows


def test_a_lease_left_by_kill_9_blocks_until_it_expires_then_resume_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ttl = 4.0
    monkeypatch.setenv(LEASE_TTL_ENV, str(ttl))
    world = make_world(tmp_path / "killed", PROMPTS)
    with ScriptedJudgeServer(responder(PROMPTS), latency_s=0.05) as server:
        proc = spawn(world, server, "--concurrency", "2", ttl=ttl)
        wait_until(lambda: server.calls >= 14 or proc.poll() is not None)
        assert proc.poll() is None, "the job ended before the kill"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = len(server.log)
        committed = stored_calls(world["store"])
        [job] = jobs_list(world["store"])[0]
        assert job["runner"] and f":{proc.pid}:" in job["runner"]["holder"]
        done, _, rows = stored_counts(world["store"], job["id"])
        assert rows > 0 and job["preferences"] == rows and job["prompts"]["done"] == done

        code, _, err = invoke(generate_args(world, server, "--resume", job["id"]))
        assert code == 1 and f":{proc.pid}:" in err and job["runner"]["lease_until"] in err
        assert len(server.log) == killed_at, "the refused run made no call"

        wait_until(lambda: jobs_list(world["store"])[0][0]["runner"] is None, timeout=ttl + 5)
        jobs, text = jobs_list(world["store"])
        assert jobs[0]["status"] == "running" and "interrupted" in text
        resumed = run_generate(world, server, "--resume", job["id"])
        assert not committed & {request_call(r.body) for r in server.log[killed_at:]}
        fresh_rows, _ = uninterrupted_rows(tmp_path, server)
    assert resumed["prompts"]["done"] == len(PROMPTS)
    assert export_rows(world, job["id"]) == fresh_rows


def test_the_service_waits_for_a_cli_run_and_the_cli_refuses_a_service_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LEASE_TTL_ENV, "3")  # the service checks the lease every second
    world = make_world(tmp_path / "shared", PROMPTS)
    others = [f"Another question {i}: what is step {i} of the plan?" for i in range(4)]
    respond, release = holding(responder(PROMPTS + others))
    with ScriptedJudgeServer(respond) as server:
        settings = ServiceSettings(
            tokens=("t" * 16,), store_path=world["store"], principles_dir=world["principles"],
            judge="openai:scripted", policy="openai:scripted", judge_base_url=server.base_url,
            policy_base_url=server.base_url, preload_judge=False,
        )  # fmt: skip
        db = open_store(world["store"])
        constitution = load_constitution(world["principles"])

        def new_job(prompts: list[str]) -> str:
            records = [PromptRecord(prompt=p) for p in prompts]
            spec = JobOptions().plan(
                db, records, constitution, default_judge=settings.judge,
                default_policy=settings.policy,
            )  # fmt: skip
            return create_or_get_job(db, spec, constitution, records, "test")[0].id

        by_cli, by_service = new_job(PROMPTS), new_job(others)

        async def until(condition: Callable[[], bool]) -> None:
            deadline = time.monotonic() + 60
            while not condition():
                assert time.monotonic() < deadline, "timed out waiting"
                await asyncio.sleep(0.02)

        async def scenario() -> tuple[int, int, str]:
            runner = JobRunner(db, ModelPool(settings), settings, lambda text: text)
            # The CLI runs a job (its calls held at the server): the service waits for it.
            cli = spawn(world, server, "--resume", by_cli, "--concurrency", "2")
            await until(lambda: server.in_flight > 0)
            before = server.calls
            runner.start(by_cli)
            await asyncio.sleep(2.5)  # the service tried the lease more than once
            assert runner.active(by_cli) and server.calls == before
            release.set()
            await until(lambda: cli.poll() is not None and not runner.active(by_cli))
            assert cli.returncode == 0
            cli_calls = server.calls

            # The service runs the other job (held again): a CLI run of it is refused.
            release.clear()
            runner.start(by_service)
            await until(lambda: server.in_flight > 0)
            refused = spawn(world, server, "--resume", by_service)
            await until(lambda: refused.poll() is not None)
            release.set()
            await until(lambda: not runner.active(by_service))
            assert refused.stderr is not None
            return cli_calls, refused.returncode, refused.stderr.read().decode()

        cli_calls, refused_code, refused_err = asyncio.run(scenario())
        service_calls = server.calls - cli_calls
        one_run = uninterrupted_rows(tmp_path, server)[1]
        fresh = make_world(tmp_path / "fresh-service", others)
        before = server.calls
        run_generate(fresh, server)
        one_service_run = server.calls - before
    assert refused_code == 1 and f":{os.getpid()}:" in refused_err
    assert refused_err.startswith(f"Error: job {by_service} is already being run by ")
    assert get_job(db, by_cli).status == get_job(db, by_service).status == "done"
    assert cli_calls == one_run  # the service joined the CLI's run without a call of its own
    assert service_calls == one_service_run  # the refused CLI made none


def test_a_store_from_before_leases_still_lists_and_resumes(tmp_path: Path) -> None:
    world = make_world(tmp_path, PROMPTS[:4])
    with ScriptedJudgeServer(responder(PROMPTS)) as server:
        first = run_generate(world, server)
        with sqlite3.connect(world["store"]) as conn:  # the jobs table as it was before
            conn.execute("ALTER TABLE jobs DROP COLUMN lease_holder")
            conn.execute("ALTER TABLE jobs DROP COLUMN lease_expires")
        [job] = jobs_list(world["store"])[0]
        assert job["status"] == "done" and job["runner"] is None and job["preferences"] == 4
        before = server.calls
        again = run_generate(world, server, "--resume", first["job_id"])
        assert server.calls == before
    assert again["preferences"] == first["preferences"]


def test_a_bad_lease_ttl_is_a_one_line_error(tmp_path: Path) -> None:
    world = make_world(tmp_path, PROMPTS[:2])
    with ScriptedJudgeServer(responder(PROMPTS)) as server:
        for value in ("0.1", "soon"):
            env = {**os.environ, "PYTHONPATH": str(REPO), LEASE_TTL_ENV: value}
            args = [sys.executable, "-m", "charter.cli", *generate_args(world, server)]
            done = subprocess.run(args, env=env, capture_output=True, cwd=tmp_path)
            err = done.stderr.decode().strip()
            assert done.returncode == 1 and len(err.splitlines()) == 1, err
            assert err.startswith(f"Error: {LEASE_TTL_ENV}={value!r}: ")
        assert server.calls == 0
    assert LeaseSettings().renew_every_s == LeaseSettings().ttl_s / 3


def test_a_run_whose_lease_another_runner_took_stops_and_leaves_the_job_to_it(
    tmp_path: Path,
) -> None:
    db = open_store(tmp_path / "store.db")
    constitution = load_constitution(write_constitution(tmp_path / "principles"))
    records = [PromptRecord(prompt=p) for p in PROMPTS[:2]]
    spec = JobOptions().to_spec(records, constitution, default_judge="j", default_policy="p")
    job_id = create_or_get_job(db, spec, constitution, records, "test")[0].id
    settings = LeaseSettings(ttl_s=1.0)

    async def run_while_another_takes_over() -> None:
        async with held(db, job_id, settings):
            # As if this loop had stalled past the TTL and another runner had taken the job.
            db.execute(
                "UPDATE jobs SET lease_holder = 'other:1:abc', lease_expires = ?",
                [time.time() + 30],
            )
            db.conn.commit()
            await asyncio.sleep(10)  # the next renewal finds the lease gone and stops this

    with pytest.raises(LeaseLost, match="other:1:abc took the job"):
        asyncio.run(run_while_another_takes_over())
    lease = current(db, job_id)
    assert lease is not None and lease.holder == "other:1:abc"  # not released by the loser


def test_two_processes_creating_one_job_on_a_new_store_both_get_it_whole(tmp_path: Path) -> None:
    """Both front ends create a job before running it: two at once on a new store once failed
    with 'database is locked' (creating tables) or a duplicate key (the job row)."""
    constitution = load_constitution(write_constitution(tmp_path / "principles"))
    records = [PromptRecord(prompt=p) for p in PROMPTS]
    spec = JobOptions().to_spec(records, constitution, default_judge="j", default_policy="p")
    for attempt in range(30):
        store = tmp_path / f"store-{attempt}.db"
        start = threading.Barrier(2, timeout=60)  # a thread that fails fails the test, not hangs
        created: list[bool] = []
        errors: list[BaseException] = []

        def create(
            store: Path = store,
            start: threading.Barrier = start,
            created: list[bool] = created,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                db = open_store(store)  # both open the new file at once too
                start.wait()
                created.append(create_or_get_job(db, spec, constitution, records, "t")[1])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=create) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, f"attempt {attempt}: {errors[0]!r}"
        assert sorted(created) == [False, True]
        assert stored_counts(store, spec.job_id)[1] == len(PROMPTS)
