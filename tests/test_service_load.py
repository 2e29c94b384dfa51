"""200 concurrent feedback requests through the service: every one answered, and correctly."""

from __future__ import annotations

import asyncio
from pathlib import Path

from charter.client import AsyncCharterClient
from charter.judge import Comparison
from charter.service.settings import ServiceSettings
from tests.support.generation import bad, good, responder, write_constitution
from tests.support.scripted_server import ScriptedJudgeServer
from tests.support.service import TOKEN_A, running_service

REQUESTS = 200
K = 2  # principles per comparison (the test constitution's default), each asked in 2 orders


def test_200_concurrent_compare_requests_all_answered_correctly(tmp_path: Path) -> None:
    prompts = [f"Load question {i}: what should I do about case {i}?" for i in range(REQUESTS)]
    with ScriptedJudgeServer(responder(prompts), latency_s=0.02) as server:
        settings = ServiceSettings.model_validate(
            {
                "store_path": tmp_path / "service.db",
                "principles_dir": write_constitution(tmp_path / "principles", k=K),
                "judge": "openai:scripted",
                "judge_base_url": server.base_url,
                "model_concurrency": 64,
                "tokens": (TOKEN_A,),
            }
        )
        with running_service(settings) as service:

            async def one(client: AsyncCharterClient, i: int) -> Comparison:
                p = prompts[i]
                a, b = (good(p), bad(p)) if i % 2 == 0 else (bad(p), good(p))
                return await client.compare(p, a, b, seed=i)

            async def all_at_once() -> list[Comparison]:
                async with AsyncCharterClient(
                    service.base_url, TOKEN_A, timeout=60, max_connections=REQUESTS
                ) as client:
                    return await asyncio.gather(*(one(client, i) for i in range(REQUESTS)))

            results = asyncio.run(asyncio.wait_for(all_at_once(), timeout=90))
        assert server.calls == REQUESTS * K * 2  # none lost, none repeated
        assert server.max_in_flight > 8  # the requests really overlapped

    assert len(results) == REQUESTS
    for i, result in enumerate(results):
        assert result.prompt == prompts[i] and result.seed == i
        assert result.winner == ("a" if i % 2 == 0 else "b"), i
        assert result.position_consistent is True
        assert len(result.judgments) == K * 2 and not any(j.error for j in result.judgments)
