"""The charter service on a loopback port for tests: in a thread, or as a killable process.

`running_service(settings)` runs a real uvicorn in a background thread of the test process
(fast to start, shares nothing with the test but the port). `ServiceProcess` runs
`charter serve` as a subprocess, for tests that SIGKILL it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from charter.service.app import create_app
from charter.service.settings import ServiceSettings

TOKEN_A = "token-a-0123456789abcdef"
TOKEN_B = "token-b-fedcba9876543210"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class RunningService:
    base_url: str
    server: uvicorn.Server


@contextmanager
def running_service(settings: ServiceSettings) -> Iterator[RunningService]:
    """A real uvicorn serving `create_app(settings)` on 127.0.0.1 in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_config=None, lifespan="on", loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.01)
    try:
        yield RunningService(f"http://127.0.0.1:{port}", server)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


class ServiceProcess:
    """`charter serve --port 0` in a subprocess; its log goes to `log_path`."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "charter.cli", "serve", "--port", "0", *self.args],
            env={**os.environ, "PYTHONPATH": str(REPO), **self.env},
            stdout=log,
            stderr=log,
            cwd=self.cwd,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self.base_url:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", text)
            if found:
                self.base_url = found.group(1)
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"charter serve did not start:\n{text}")
            else:
                time.sleep(0.05)
        while True:
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("charter serve never answered /healthz")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run, as in a crash or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.base_url = ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.base_url = ""

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def call_identity(messages: list[dict[str, Any]], seed: int | None) -> str:
    """What makes two model calls the same call: the exact messages and the sampling seed."""
    wire = [{"role": m["role"], "content": m["content"]} for m in messages]
    return json.dumps([wire, seed], sort_keys=True, ensure_ascii=False)


def stored_calls(store: Path) -> set[str]:
    """Identities of the model calls committed to the store: those a resumed job must reuse."""
    with sqlite3.connect(store) as conn:
        rows = conn.execute("SELECT kind, request FROM calls").fetchall()
    out = set()
    for kind, raw in rows:
        payload = json.loads(raw)
        if kind == "generate":
            out.add(call_identity(payload["request"]["messages"], payload["request"]["seed"]))
        else:
            out.add(call_identity(payload["messages"], None))
    return out


def request_call(body: dict[str, Any] | None) -> str:
    body = body or {}
    return call_identity(body.get("messages") or [], body.get("seed"))
