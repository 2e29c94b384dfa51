"""Where the time of a whole recipe goes: the shipped CAI recipe on a tiny model, on the CPU.

`examples/recipes/cai.toml` as shipped (revise -> sft -> compare -> dpo -> eval -> report, its
stage settings unchanged) with four substitutions so it runs offline in seconds: the base model
is a tiny random Llama built here (its generation config ends a turn on a fifth of its
vocabulary, so its answers finish), the judge is the scripted OpenAI-compatible server of the
tests (in its own process, `--latency-ms` per request), the prompts are the tests' 8, and the
suites are cut to `--limit` prompts each with `--max-tokens`.

The pipeline runs once in this process under cProfile (main thread). Its time is split by the
file of the function it was spent in (tottime): charter's own code (charter/, judge/, trainer/,
constitution/), the training stack (trl, transformers, torch, accelerate, peft, datasets,
tokenizers, safetensors), waiting on model calls (the event loop's poll and lock waits while
requests to the judge or the local policy's generation thread are out; the HTTP client), and the
rest (standard library, pydantic, sqlite). Wall time per stage comes from the pipeline summary.

    .venv/bin/python benchmarks/pipeline.py [--latency-ms 0] [--limit 6] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.generation import make_world  # noqa: E402
from tests.support.tiny_models import build_tiny_chat_model  # noqa: E402

SERVER = """
import sys, threading
sys.path.insert(0, {repo!r})
from tests.support.scripted_server import ScriptedJudgeServer
from tests.test_pipeline import judge_reply
server = ScriptedJudgeServer(judge_reply, latency_s={latency})
server.start()
print("READY", server.base_url, flush=True)
threading.Event().wait()
"""

OWN = ("charter", "judge", "trainer", "constitution")
STACK = ("trl", "transformers", "torch", "accelerate", "peft", "datasets", "tokenizers",
         "safetensors", "huggingface_hub")  # fmt: skip
CLIENT = ("httpx", "httpcore", "openai", "aiohttp", "anyio", "h11")
WAITS = ("poll' of 'select.epoll", "acquire' of '_thread.lock", "select.select", "_thread.lock")


def category(filename: str, name: str) -> str:
    parts = Path(filename).parts
    if "site-packages" in parts:
        package = parts[parts.index("site-packages") + 1]
        if package.startswith(STACK):
            return "TRL and the training stack"
        if package.startswith(CLIENT):
            return "model calls (HTTP client)"
        return f"other libraries: {package.split('.')[0].split('-')[0]}"
    if filename.startswith(str(REPO)):
        rel = Path(filename).relative_to(REPO).parts
        return "charter" if rel and rel[0] in OWN else "other libraries"
    if filename == "~" and any(w in name for w in WAITS):
        return "model calls (waiting)"
    if filename.startswith("<frozen") or name in (
        "<built-in method builtins.exec>",
        "<built-in method _imp.create_dynamic>",
    ):
        return "importing modules"
    return "python and stdlib"


def _where(stats: dict[Any, Any], func: tuple[str, int, str], depth: int = 0) -> dict[str, float]:
    """Category shares of one function's own time: a built-in (a C function: torch's kernels,
    gc.collect, sqlite3) is charged to the code that called it, split by its callers' calls."""
    filename, _, name = func
    own = category(filename, name)
    if filename != "~" or own == "model calls (waiting)" or depth > 3:
        return {own: 1.0}
    callers = stats[func][4]
    total = sum(c[2] for c in callers.values())
    if not callers or total <= 0:
        return {own: 1.0}
    out: dict[str, float] = {}
    for caller, row in callers.items():
        for key, part in _where(stats, caller, depth + 1).items():
            out[key] = out.get(key, 0.0) + part * row[2] / total
    return out


def shares(profile: cProfile.Profile) -> dict[str, float]:
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for func, row in stats.items():
        for key, part in _where(stats, func).items():
            out[key] = out.get(key, 0.0) + row[2] * part
    return out


def recipe_text(world: dict[str, Path], model: Path, url: str, args: argparse.Namespace) -> str:
    shipped = tomllib.loads((REPO / "examples" / "recipes" / "cai.toml").read_text())
    shipped["pipeline"].update(
        model=str(model),
        judge="openai:scripted",
        judge_base_url=url,
        prompts=str(world["prompts"]),
        out=str(world["tmp"] / "runs"),
    )
    shipped["eval"].update(limit=args.limit, max_tokens=args.max_tokens)
    lines: list[str] = []
    for table, values in shipped.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--limit", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")

    from charter.pipeline import load_recipe, run_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        world = make_world(root)
        model = build_tiny_chat_model(root / "tiny")
        config_path = model / "generation_config.json"
        config = json.loads(config_path.read_text())
        config["eos_token_id"] = [config["eos_token_id"], *range(100, 200)]
        config_path.write_text(json.dumps(config))
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER.format(repo=str(REPO), latency=args.latency_ms / 1000)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().split()[1]
            recipe_path = root / "cai.toml"
            recipe_path.write_text(recipe_text(world, model, url, args))
            cwd = os.getcwd()
            os.chdir(REPO)  # the recipe's `principles` is relative to the repository
            try:
                began = time.perf_counter()
                recipe = load_recipe(recipe_path)
                check_s = time.perf_counter() - began
                profile = cProfile.Profile()
                started = time.perf_counter()
                profile.enable()
                summary = run_pipeline(recipe, store=root / "store.db", on_progress=lambda _: None)
                profile.disable()
                wall = time.perf_counter() - started
            finally:
                os.chdir(cwd)
        finally:
            server.terminate()
            server.wait()
    split = shares(profile)
    profiled = sum(split.values())
    print(f"reading and checking the recipe (imports TRL for its configs): {check_s:.1f} s")
    print(f"wall time {wall:.1f} s (profiled main thread {profiled:.1f} s)")
    print("| stage | wall s | share |\n| --- | ---: | ---: |")
    for stage in summary.stages:
        print(f"| {stage.name} | {stage.seconds:.2f} | {stage.seconds / wall:.1%} |")
    print("| where | s | share |\n| --- | ---: | ---: |")
    small = {k: v for k, v in split.items() if k.startswith("other") and v / profiled < 0.01}
    split = {k: v for k, v in split.items() if k not in small}
    split["other libraries: the rest"] = sum(small.values())
    for key, seconds in sorted(split.items(), key=lambda kv: -kv[1]):
        print(f"| {key} | {seconds:.2f} | {seconds / profiled:.1%} |")
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    rows: list[tuple[float, str]] = []
    for func, row in stats.items():
        charged = row[2] * _where(stats, func).get("charter", 0.0)
        if charged > 0:
            filename, line, name = func
            shown = Path(filename).name if filename != "~" else ""
            rows.append((charged, f"{shown}:{line} {name}" if shown else name))
    print("charter's time by function (built-ins charged to their charter callers):")
    for seconds, where in sorted(rows, reverse=True)[:6]:
        print(f"  {seconds:.3f} s  {where}")


if __name__ == "__main__":
    main()
