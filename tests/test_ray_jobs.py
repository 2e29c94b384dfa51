"""`charter generate --ray`: a job dealt to Ray workers, the store and the lease kept by the driver.

Real `charter generate` processes, a real Ray on this machine (2 CPUs; one started by the
driver, or one head process the module's tests join), the scripted judge on loopback, real
stores. The server can hold every new request at a gate, so a test can take a moment where
everything answered has been committed and the only calls not yet answered are the ones held:
those are the calls in flight, and a fault then may cost at most those.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from charter.settings import LEASE_TTL_ENV
from tests.support.generation import make_world, responder
from tests.support.ray_cluster import TAG, RayHead, left_running, new_tag
from tests.support.scripted_server import RecordedRequest, ScriptedJudgeServer
from tests.support.service import REPO, request_call, stored_calls
from tests.test_generate import export_rows, generate_args, invoke, run_generate

PROMPTS = [f"Question number {i}: how should I do task {i}?" for i in range(16)]


class Gate:
    """Holds each new request at the server while closed (a `fault_policy` that never faults)."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.opened.set()

    def __call__(self, record: RecordedRequest) -> None:
        self.opened.wait(timeout=120)

    def close(self) -> None:
        self.opened.clear()

    def open(self) -> None:
        self.opened.set()


def wait_until(condition: Callable[[], bool], timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting{': ' + what if what else ''}")
        time.sleep(0.02)


def answered(server: ScriptedJudgeServer) -> int:
    return sum(1 for r in server.log if r.status == 200 and r.completed_at is not None)


def committed(store: Path) -> int:
    if not store.exists():
        return 0
    with sqlite3.connect(store) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def mid_job(proc: subprocess.Popen[bytes], server: ScriptedJudgeServer, calls: int) -> None:
    """Wait until the server has had `calls` calls, the run still going."""
    wait_until(lambda: server.calls >= calls or proc.poll() is not None, what="mid-job")
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""


def hold_when_settled(server: ScriptedJudgeServer, gate: Gate, store: Path) -> int:
    """Close the gate, then wait until every reply the server sent is committed to the store:
    the calls in flight are then exactly the requests held at the gate; their number."""
    gate.close()
    wait_until(
        lambda: committed(store) == answered(server) and server.in_flight > 0,
        what="every answered call committed",
    )
    time.sleep(0.3)  # requests already past the gate would show up by now
    assert committed(store) == answered(server)
    return server.in_flight


def asked_twice(server: ScriptedJudgeServer) -> int:
    counts = collections.Counter(request_call(r.body) for r in server.log if r.status == 200)
    return sum(n - 1 for n in counts.values() if n > 1)


def spawn(
    world: dict[str, Path], server: ScriptedJudgeServer, *extra: str, tag: str, ttl: float = 30
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), TAG: tag, LEASE_TTL_ENV: str(ttl)}
    env.update(RAY_DISABLE_USAGE_STATS="1", RAY_AUTH_MODE="token")  # as Ray asks of a joiner
    args = [sys.executable, "-m", "charter.cli", *generate_args(world, server, *extra)]
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=world["tmp"]
    )


def finished(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    summary: dict[str, Any] = json.loads(out)
    return summary


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    cluster = RayHead(cpus=2)
    try:
        yield cluster
    finally:
        assert cluster.stop() == [], "the Ray head left processes running"


KILL_ONE = """
import logging, os, sys
import ray
ray.init(address=sys.argv[1], namespace="charter", logging_level=logging.WARNING)
names = sorted(name for name in ray.util.list_named_actors() if "-w0-" in name)
ray.kill(ray.get_actor(names[-1]))
print(names[-1])
ray.shutdown()
"""


def kill_a_worker(head: RayHead) -> str:
    """`ray.kill` the job's first worker, from a driver of its own joined to the cluster."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_DISABLE_USAGE_STATS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", KILL_ONE, head.address],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def uninterrupted(tmp_path: Path, server: ScriptedJudgeServer) -> tuple[dict[str, Any], list]:
    """The same job in one process, in a store of its own: what every run must equal."""
    world = make_world(tmp_path / "one-process", PROMPTS)
    summary = run_generate(world, server)
    return summary, export_rows(world, summary["job_id"])


@pytest.mark.slow
def test_two_workers_make_the_rows_ids_and_counts_of_one_process(tmp_path: Path) -> None:
    world = make_world(tmp_path / "ray", PROMPTS)
    tag = new_tag()
    with ScriptedJudgeServer(responder(PROMPTS)) as server:
        on_ray = finished(spawn(world, server, "--ray", "--ray-workers", "2", tag=tag))
        assert left_running(tag) == [], "the run's local Ray left processes running"
        one, rows = uninterrupted(tmp_path, server)
    assert on_ray["job_id"] == one["job_id"]
    assert export_rows(world, on_ray["job_id"]) == rows and len(rows) >= len(PROMPTS) // 2
    for key in ("prompts", "preferences", "exportable", "judgments", "texts", "tokens"):
        assert on_ray[key] == one[key], key
    assert on_ray["calls"]["judge"]["made"] == one["calls"]["judge"]["made"]
    assert on_ray["calls"]["policy"]["made"] == one["calls"]["policy"]["made"]


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_only_its_calls_in_flight_are_paid_twice(
    tmp_path: Path, head: RayHead
) -> None:
    world = make_world(tmp_path / "ray", PROMPTS)
    gate = Gate()
    with ScriptedJudgeServer(responder(PROMPTS), latency_s=0.02, fault_policy=gate) as server:
        proc = spawn(
            world, server, "--ray", head.address, "--ray-workers", "2", "--ray-shard", "2",
            "--concurrency", "3", tag=new_tag(),
        )  # fmt: skip
        mid_job(proc, server, calls=40)
        in_flight = hold_when_settled(server, gate, world["store"])
        killed = kill_a_worker(head)
        gate.open()
        summary = finished(proc)
        repaid = asked_twice(server)
        one, rows = uninterrupted(tmp_path, server)
    assert killed.endswith("-w0-1"), killed
    assert repaid <= in_flight, f"{repaid} calls paid twice, {in_flight} were in flight"
    assert summary["prompts"] == one["prompts"]
    assert export_rows(world, summary["job_id"]) == rows


@pytest.mark.slow
def test_driver_killed_then_resumed_without_ray_gives_exact_rows(
    tmp_path: Path, head: RayHead
) -> None:
    world = make_world(tmp_path / "ray", PROMPTS)
    gate = Gate()
    with ScriptedJudgeServer(responder(PROMPTS), latency_s=0.02, fault_policy=gate) as server:
        proc = spawn(
            world, server, "--ray", head.address, "--ray-workers", "2", tag=new_tag(), ttl=1
        )
        mid_job(proc, server, calls=40)
        hold_when_settled(server, gate, world["store"])
        kept = stored_calls(world["store"])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = len(server.log)
        gate.open()
        time.sleep(1.2)  # the killed driver's lease expires
        resumed = run_generate(world, server)  # in one process, no Ray
        again = {request_call(r.body) for r in server.log[killed_at:] if r.status == 200}
        one, rows = uninterrupted(tmp_path, server)
    assert kept and not kept & again, "the resumed run asked a committed call again"
    assert resumed["job_id"] == one["job_id"]
    assert export_rows(world, resumed["job_id"]) == rows


@pytest.mark.slow
def test_sigterm_stops_the_workers_and_keeps_what_came_back(tmp_path: Path, head: RayHead) -> None:
    world = make_world(tmp_path / "ray", PROMPTS)
    gate = Gate()
    with ScriptedJudgeServer(responder(PROMPTS), latency_s=0.02, fault_policy=gate) as server:
        proc = spawn(
            world, server, "--ray", head.address, "--ray-workers", "2", "--ray-shard", "2",
            "--concurrency", "2", tag=new_tag(),
        )  # fmt: skip
        mid_job(proc, server, calls=30)
        hold_when_settled(server, gate, world["store"])
        proc.send_signal(signal.SIGTERM)
        time.sleep(2.0)  # the stop reaches the workers (well inside the 5 s grace period)
        gate.open()  # the calls in flight finish, within the grace period
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-3000:]
        stopped = json.loads(out)
        # Every call answered came back and was stored, the held ones included.
        assert committed(world["store"]) == answered(server) == len(server.log)
        assert stopped["prompts"]["pending"] > 0
        listed = invoke(["jobs", "list", "--store", str(world["store"]), "--json"])[1]
        assert json.loads(listed)[0]["status"] == "stopped"
        kept = stored_calls(world["store"])
        before = len(server.log)
        resumed = run_generate(world, server)
        again = {request_call(r.body) for r in server.log[before:] if r.status == 200}
        one, rows = uninterrupted(tmp_path, server)
    assert not kept & again
    assert resumed["prompts"] == one["prompts"]
    assert export_rows(world, resumed["job_id"]) == rows


@pytest.mark.slow
def test_a_job_on_ray_whose_calls_are_stored_makes_no_model_call(
    tmp_path: Path, head: RayHead
) -> None:
    world = make_world(tmp_path / "ray", PROMPTS)
    with ScriptedJudgeServer(responder(PROMPTS)) as server:
        first = finished(spawn(world, server, "--ray", head.address, tag=new_tag()))
        asked = server.calls
        # Another job (another pair strategy) that asks exactly the same calls, on Ray too:
        # every call was sent back by a worker and committed, and is looked up before dealing.
        second = finished(
            spawn(world, server, "--ray", head.address, "--pairs", "margin", tag=new_tag())
        )
    assert first["calls"]["judge"]["made"] > 0 and second["job_id"] != first["job_id"]
    assert server.calls == asked, "a job whose calls are stored paid for some"
    assert second["calls"]["judge"] == {"made": 0, "reused": first["calls"]["judge"]["made"]}
    assert second["prompts"]["done"] == len(PROMPTS)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ray", "127.0.0.1:9"], "cannot reach a Ray cluster there"),
        (["--ray", "not-an-address"], "not a cluster address"),
    ],
)
def test_an_unreachable_cluster_is_one_line_and_leaves_no_job(
    tmp_path: Path, args: list[str], message: str
) -> None:
    world = make_world(tmp_path, PROMPTS)
    with ScriptedJudgeServer(responder(PROMPTS)) as server:
        code, _, err = invoke(generate_args(world, server, *args))
    assert code == 1 and server.calls == 0
    assert err.strip().count("\n") == 0 and message in err and "Traceback" not in err
    assert _jobs(world) == []


def test_without_the_ray_extra_is_one_line_saying_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    world = make_world(tmp_path, PROMPTS)
    with ScriptedJudgeServer(responder(PROMPTS)) as server:
        code, _, err = invoke(generate_args(world, server, "--ray"))
    assert code == 1 and server.calls == 0 and "Traceback" not in err
    assert err.strip() == "Error: --ray needs Ray, which is an optional extra of charter: " + (
        "pip install 'charter[ray]'"
    )
    assert _jobs(world) == []


def _jobs(world: dict[str, Path]) -> list[dict[str, Any]]:
    if not world["store"].exists():
        return []
    code, out, err = invoke(["jobs", "list", "--store", str(world["store"]), "--json"])
    assert code == 0, err
    jobs: list[dict[str, Any]] = json.loads(out)
    return jobs


@pytest.mark.slow
def test_a_job_on_ray_logs_the_calls_and_tokens_its_workers_report(tmp_path: Path) -> None:
    """Progress lines on Ray count what the workers send back: the last line (at the run's
    end) shows every call they made and the tokens those cost, as a local run's would."""
    world = make_world(tmp_path / "ray", PROMPTS[:4])
    tag = new_tag()
    with ScriptedJudgeServer(responder(PROMPTS)) as server:
        env = {**os.environ, "PYTHONPATH": str(REPO), TAG: tag, "RAY_DISABLE_USAGE_STATS": "1"}
        args = [sys.executable, "-m", "charter.cli",
                *[a for a in generate_args(world, server, "--ray", "--ray-workers", "1")
                  if a != "--json"]]  # fmt: skip
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300,
                              cwd=world["tmp"])  # fmt: skip
        made = server.calls
    assert done.returncode == 0, done.stderr[-3000:]
    assert left_running(tag) == [], "the run's local Ray left processes running"
    lines = [line for line in done.stderr.splitlines() if line.startswith("prompts: ")]
    assert lines, done.stderr[-3000:]
    last = re.search(r"calls (\d+) answered .*tokens ([\d,]+) answered", lines[-1])
    assert last, lines[-1]
    assert int(last.group(1)) == made > 0 and int(last.group(2).replace(",", "")) > 0, lines[-1]
