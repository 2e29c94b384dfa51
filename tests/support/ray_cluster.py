"""Not tests: Ray on this machine for the tests, and proof that none of it is left running.

Every Ray process a test starts (in-process `ray.init`, or a `charter generate --ray`
subprocess and the raylet, GCS, agents and workers it spawns) inherits the environment, so a
tag set there finds them all in /proc afterwards, whoever their parent became.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

TAG = "CHARTER_TEST_RAY_TAG"
"""The environment variable that marks a test's Ray processes."""

SETTLE_S = 60.0
"""How long a test gives its Ray's processes to end after the driver is gone: an agent whose
raylet died checks for its parent every few seconds, and a loaded 2-core machine is slow."""


def new_tag() -> str:
    return uuid.uuid4().hex


def tagged(tag: str) -> list[int]:
    """Process ids whose environment carries `TAG=tag` (this process excluded)."""
    needle = f"{TAG}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def left_running(tag: str, settle_s: float = SETTLE_S) -> list[int]:
    """The tagged processes still alive after `settle_s` (ended with SIGKILL, so a failing test
    leaves nothing behind either); [] when every one ended by itself."""
    deadline = time.monotonic() + settle_s
    while True:
        alive = [pid for pid in tagged(tag) if _alive(pid)]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for pid in alive:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return alive


@contextlib.contextmanager
def tagged_env() -> Iterator[str]:
    """Tag this process's environment (so an in-process `ray.init` tags what it starts) for the
    block; the tag is yielded."""
    tag = new_tag()
    before = os.environ.get(TAG)
    os.environ[TAG] = tag
    try:
        yield tag
    finally:
        if before is None:
            os.environ.pop(TAG, None)
        else:
            os.environ[TAG] = before


HEAD_SCRIPT = """
import logging, os, sys
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
import ray
ray.init(address="local", num_cpus=int(sys.argv[1]), include_dashboard=False,
         _node_ip_address="127.0.0.1", log_to_driver=False, logging_level=logging.WARNING)
print("READY " + ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes it
ray.shutdown()
"""


class RayHead:
    """A Ray cluster on this machine for a test module, started by a process of its own (as
    `ray start --head` would be) so `charter generate --ray ADDRESS` processes can join it;
    `stop` ends it and returns the processes it left running (none, or the test fails)."""

    def __init__(self, cpus: int = 2) -> None:
        import subprocess
        import sys

        self.tag = new_tag()
        env = {**os.environ, TAG: self.tag, "RAY_DISABLE_USAGE_STATS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", HEAD_SCRIPT, str(cpus)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("READY "):
            self.process.kill()
            raise RuntimeError(f"the Ray head did not start: {line!r}")
        self.address = line.split(" ", 1)[1]

    def stop(self) -> list[int]:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except Exception:
            self.process.kill()
        return left_running(self.tag)
