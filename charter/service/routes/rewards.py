"""/v1/rewards: the constitution as an RL reward, each batch answered within its deadline.

`POST /v1/rewards` is charter's own form (what `charter.rewards` sends);
`POST /v1/rewards/openrlhf` is OpenRLHF's remote reward protocol (`--reward.remote_url`);
`GET /v1/rewards/stats` the totals since the service started. A judgment not back by the
deadline, or with no verdict, gets the fallback reward, flagged; it never fails the request.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from charter.constitution import Constitution
from charter.judge.config import JudgeConfig
from charter.judge.reward import (
    ConstitutionRewarder,
    Reward,
    RewardCounts,
    RewardDeadline,
    RewardItem,
    fallen_back,
)

from .. import openrlhf
from ..auth import AuthFirst, OwnerDep, OwnerOrBasicDep
from ..errors import ERRORS, JUDGE_ERRORS, ApiError
from ..middleware import arrived_at
from ..models import ModelLoading
from ..reward_schemas import (
    OpenRLHFRewardRequest,
    OpenRLHFRewardResponse,
    RewardOut,
    RewardRequest,
    RewardResponse,
    RewardStats,
)
from ..state import Service, ServiceDep

router = APIRouter(route_class=AuthFirst)


async def _rewards(
    service: Service,
    request: Request,
    judge: str | None,
    constitution: Constitution,
    config: JudgeConfig,
    items: list[RewardItem],
    deadline_s: float | None,
) -> tuple[list[Reward], float]:
    """The items' rewards under the service's deadline (or the request's), counted from the
    request's arrival: reading its body and loading its judge count against it."""
    deadline = service.settings.reward_deadline_s if deadline_s is None else deadline_s
    ends = arrived_at(request.state) + deadline
    try:
        async with service.judge(judge, within=ends - time.monotonic()) as model:
            rewarder = ConstitutionRewarder(
                model, constitution, config, RewardDeadline(deadline_s=deadline)
            )
            results = await rewarder.rewards(items, deadline_s=ends - time.monotonic())
    except ModelLoading as exc:  # the load carries on for the next batch
        results = fallen_back(items, f"{exc} at the deadline", timed_out=True)
        service.reward_counts.add(RewardCounts.of_batch(results, judged=0))
        return results, deadline
    service.reward_counts.add(rewarder.counts)
    return results, deadline


@router.post(
    "/rewards",
    tags=["rewards"],
    response_class=Response,
    responses={200: {"model": RewardResponse}, **ERRORS, **JUDGE_ERRORS},
)
async def rewards(
    body: RewardRequest, request: Request, service: ServiceDep, owner: OwnerDep
) -> Response:
    """A reward in [0, 1] per item: P(yes) under the constitution, or with a reference
    answer P(response beats it); a judgment not back by the deadline gets its group's mean
    (else 0.5), flagged."""
    constitution = service.constitutions.get(body.constitution)
    items = [RewardItem(i.prompt, i.response, i.reference, i.group) for i in body.items]
    results, deadline = await _rewards(
        service, request, body.judge, constitution, body.judge_config(), items, body.deadline_s
    )
    answer = RewardResponse(
        rewards=[
            RewardOut(
                reward=r.reward,
                principle_scores=r.principle_scores,
                fallback=r.fallback,
                timed_out=r.timed_out,
                error=service.scrub(r.error) if r.error else None,
            )
            for r in results
        ],
        deadline_s=deadline,
        fallbacks=sum(r.fallback for r in results),
        timeouts=sum(r.timed_out for r in results),
        judge=body.judge or service.settings.judge,
        judge_qualification=service.qualification(body.judge),
    )
    return service.json(answer)


@router.post(
    "/rewards/openrlhf",
    tags=["rewards"],
    response_class=Response,
    responses={200: {"model": OpenRLHFRewardResponse}, **ERRORS},
)
async def openrlhf_rewards(
    body: OpenRLHFRewardRequest, request: Request, service: ServiceDep, owner: OwnerOrBasicDep
) -> Response:
    """OpenRLHF's remote reward protocol: the response is `query[i]` after `prompts[i]`; a
    string label is a reference answer. The service's judge, constitution and deadline apply.
    Fallbacks, timeouts, prompt mismatches and per-principle scores are in `extra_logs`."""
    constitution = service.constitutions.current()
    items, splits = openrlhf.items_of(body)
    try:
        results, _ = await _rewards(
            service, request, None, constitution, JudgeConfig(), items, None
        )
    except ApiError as exc:
        if exc.status < 500:
            raise
        results = fallen_back(items, exc.message)  # a reward, not a failed step
        service.reward_counts.add(RewardCounts.of_batch(results, judged=0))
    return service.json(openrlhf.response_of(results, splits, constitution))


@router.get(
    "/rewards/stats",
    tags=["rewards"],
    response_model=RewardStats,
    responses={**ERRORS},
)
async def reward_stats(service: ServiceDep, owner: OwnerDep) -> RewardStats:
    """Reward totals since the service started: batches, items, judged, failed, timeouts and
    fallbacks, and the default deadline."""
    counts = service.reward_counts
    return RewardStats(**counts.as_dict(), deadline_s=service.settings.reward_deadline_s)
