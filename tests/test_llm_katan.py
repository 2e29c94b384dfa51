"""Wire compatibility with a real third-party OpenAI-compatible server: llm-katan.

llm-katan (PyPI) serves a local transformers model behind the OpenAI chat API. Nobody here wrote
it, so a call that works against it proves the HTTP backend speaks the protocol, not just our
own scripted server's idea of it. It needs an `Authorization: Bearer` header (any value).
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from charter.judge.backends.base import Completion, GenerationRequest, Message
from charter.judge.backends.openai_http import OpenAIChatModel
from charter.judge.backends.options import BackendOptions
from tests.support.tiny_models import tiny_model_dir  # noqa: F401

pytest.importorskip("llm_katan", reason="llm-katan is not installed (pip install llm-katan)")

SERVED_NAME = "tiny-chat"
KEY_ENV = "CHARTER_TEST_KATAN_KEY"
READY_TIMEOUT_S = 90.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def katan_url(
    tiny_model_dir: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """Start llm-katan on a free loopback port serving the tiny model; always stop it."""
    workdir = tmp_path_factory.mktemp("llm-katan")
    log_path = workdir / "server.log"
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "llm_katan.cli",
        "--model",
        str(tiny_model_dir),
        "--served-model-name",
        SERVED_NAME,
        "--backend",
        "transformers",
        "--device",
        "cpu",
        "--no-quantize",  # keep float32: its int8 path uses torch APIs deprecated in 2.13
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--stats-file",
        str(workdir / "stats.json"),
        "--disable-dashboard",
        "--log-level",
        "warning",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llm-katan exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"llm-katan not ready in {READY_TIMEOUT_S:.0f} s:\n{log_path.read_text()}"
                )
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _prompt_tokens(model_dir: Path, messages: list[Message]) -> int:
    """What the server should count: the chat-templated prompt in the model's own tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    text = tok.apply_chat_template(
        [m.model_dump() for m in messages], tokenize=False, add_generation_prompt=True
    )
    return len(tok(text)["input_ids"])


def test_generate_and_choose_against_llm_katan(
    katan_url: str,
    tiny_model_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test-anything")
    options = BackendOptions(
        base_url=f"{katan_url}/v1", api_key_env=KEY_ENV, timeout_s=60, max_retries=1
    )
    model = OpenAIChatModel(SERVED_NAME, options)
    messages = [
        Message(role="system", content="You are a careful judge."),
        Message(role="user", content="Which is better, A or B? Answer with one letter."),
    ]

    async def scenario() -> tuple[Completion, Completion]:
        try:
            # Sampling, so the random tiny model says something other than whitespace.
            reply = await model.generate(
                GenerationRequest(messages=tuple(messages), max_tokens=12, temperature=1.0)
            )
            verdict = await model.choose(messages, ["A", "B"])
            return reply, verdict
        finally:
            await model.aclose()

    reply, verdict = asyncio.run(scenario())
    expected_prompt = _prompt_tokens(tiny_model_dir, messages)

    assert isinstance(reply.text, str) and reply.text.strip()
    assert reply.usage.prompt_tokens == expected_prompt
    assert 0 < reply.usage.completion_tokens <= 12
    assert reply.latency_s > 0
    assert reply.model == SERVED_NAME

    assert isinstance(verdict.text, str)
    assert verdict.usage.prompt_tokens == expected_prompt
    assert verdict.usage.completion_tokens == 1  # choose asks for a single token
    # llm-katan 0.22 ignores `logprobs`; if a later version returns them they must be valid.
    if verdict.option_logprobs is not None:
        assert set(verdict.option_logprobs) <= {"A", "B"}
        assert all(v <= 0 and math.isfinite(v) for v in verdict.option_logprobs.values())
