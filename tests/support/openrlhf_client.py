"""OpenRLHF's remote reward client, two ways: its own code, and one written from its source.

`openrlhf_executor(url)` loads only `openrlhf/utils/agent.py` (and the logging helper it
imports) from an installed `openrlhf` (`pip install --no-deps openrlhf`), without running
`openrlhf/utils/__init__.py`, which pulls in its GPU stack; None when it is not installed.

`post_like_openrlhf` is a client written from OpenRLHF 0.11's
`SingleTurnAgentExecutor._fetch_rewards_via_http`: the same JSON body (`query`, `prompts`,
`labels`), aiohttp with a 180 s total timeout and no headers of its own, `raise_for_status`,
then `response.json()`; the caller reads `rewards`, `scores` (else `rewards`) and `extra_logs`.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import aiohttp

OPENRLHF_TIMEOUT_S = 180


def openrlhf_executor(url: str) -> Any | None:
    """OpenRLHF's `SingleTurnAgentExecutor(url)`, or None when openrlhf is not installed."""
    spec = importlib.util.find_spec("openrlhf")
    if spec is None or not spec.submodule_search_locations:
        return None
    utils_dir = Path(next(iter(spec.submodule_search_locations))) / "utils"
    if not (utils_dir / "agent.py").exists():
        return None
    saved = {k: sys.modules.get(k) for k in ("openrlhf.utils", "openrlhf.utils.logging_utils")}
    try:
        package = types.ModuleType("openrlhf.utils")
        package.__path__ = [str(utils_dir)]
        sys.modules["openrlhf.utils"] = package
        for name in ("logging_utils", "agent"):
            module_spec = importlib.util.spec_from_file_location(
                f"openrlhf.utils.{name}", utils_dir / f"{name}.py"
            )
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module
            module_spec.loader.exec_module(module)
        return module.SingleTurnAgentExecutor(url)
    finally:
        sys.modules.pop("openrlhf.utils.agent", None)
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value


async def post_like_openrlhf(
    url: str, queries: list[str], prompts: list[str], labels: list[Any]
) -> dict[str, Any]:
    """One reward request exactly as OpenRLHF's client sends it (a client written from its
    source; credentials only in the URL, which aiohttp sends as Basic auth)."""
    payload = {"query": queries, "prompts": prompts, "labels": labels}
    timeout = aiohttp.ClientTimeout(total=OPENRLHF_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, json=payload) as response,
    ):
        response.raise_for_status()
        body: dict[str, Any] = await response.json()
        return body


def read_like_openrlhf(rewards_info: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """(reward, scores, extra_logs) as OpenRLHF's executor reads a reply."""
    score_value = rewards_info.get("scores")
    if score_value is None:
        score_value = rewards_info.get("rewards")
    return rewards_info.get("rewards"), score_value, rewards_info.get("extra_logs") or {}
