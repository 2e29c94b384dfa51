"""`charter serve` in a subprocess for the benchmarks, from this tree or a baseline's source.

A baseline is a checkout of older code (`git archive <commit> | tar -x -C DIR`). Putting DIR on
`PYTHONPATH` is not enough: `charter.judge`, `charter.constitution` and `charter.trainer` live
in top-level folders (`[tool.setuptools.package-dir]`), which only the editable install maps,
and it maps them to *this* tree, so a baseline would run this tree's judge. `source_path`
builds a folder where `charter/` holds those packages, each a link into DIR.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def source_path(src: Path, workdir: Path) -> Path:
    """A folder to put on `PYTHONPATH` so that every `charter` package comes from `src`."""
    src = src.resolve()
    mapping = tomllib.loads((src / "pyproject.toml").read_text())["tool"]["setuptools"]
    top = workdir / "source" / "charter"
    top.mkdir(parents=True, exist_ok=True)
    for entry in (src / "charter").iterdir():
        (top / entry.name).symlink_to(entry)
    for package, folder in mapping.get("package-dir", {}).items():
        parts = package.split(".")
        if len(parts) == 2 and not (top / parts[1]).exists():  # nested ones follow their parent
            (top / parts[1]).symlink_to(src / folder)
    return top.parent


def start_service(
    args: list[str], token: str, workdir: Path, *, src: Path = REPO, timeout_s: float = 120
) -> tuple[subprocess.Popen[bytes], str]:
    """`charter serve --port 0 --store WORKDIR/service.db --log-level warning ARGS`, from the
    source tree `src`, its log in `workdir`; returns once `/readyz` answers, with its URL."""
    log_path = workdir / "service.log"
    path = REPO if src.resolve() == REPO else source_path(src, workdir)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "charter.cli", "serve", "--port", "0",
                "--store", str(workdir / "service.db"), "--log-level", "warning", *args,
            ],
            cwd=workdir,
            env={**os.environ, "CHARTER_API_TOKENS": token, "PYTHONPATH": str(path)},
            stdout=log,
            stderr=log,
        )  # fmt: skip
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        found = re.search(r"listening on (http://[\d.:]+)", log_path.read_text(errors="replace"))
        if found:
            try:
                if httpx.get(f"{found.group(1)}/readyz", timeout=2).status_code == 200:
                    return proc, found.group(1)
            except httpx.HTTPError:
                pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"charter serve did not start:\n{log_path.read_text(errors='replace')}")
