"""/v1/feedback: one judge call per request (compare, critique, rank), answered synchronously."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from charter.judge import Comparison, Ranking, RevisionChain
from charter.judge import compare as judge_compare
from charter.judge import critique_and_revise as judge_critique
from charter.judge import rank as judge_rank

from ..auth import AuthFirst, OwnerDep
from ..errors import ERRORS, JUDGE_ERRORS, ApiError
from ..feedback import JudgeWatch
from ..schemas import CompareRequest, CritiqueRequest, RankRequest
from ..state import ServiceDep

router = APIRouter(route_class=AuthFirst)


@router.post(
    "/feedback/compare",
    tags=["feedback"],
    response_class=Response,
    responses={200: {"model": Comparison}, **ERRORS, **JUDGE_ERRORS},
)
async def compare(body: CompareRequest, service: ServiceDep, owner: OwnerDep) -> Response:
    """Which of `a` and `b` the constitution prefers: pairwise, debiased over both orders;
    pointwise, from each one's score (as `charter judge compare --json`)."""
    constitution = service.constitutions.get(body.constitution)
    async with service.judge(body.judge) as judge:
        model = JudgeWatch(judge)
        result = await judge_compare(
            model, constitution, body.prompt, body.a, body.b, body.judge_config()
        )
    return service.feedback(model, result)


@router.post(
    "/feedback/critique",
    tags=["feedback"],
    response_class=Response,
    responses={200: {"model": RevisionChain}, **ERRORS, **JUDGE_ERRORS},
)
async def critique(body: CritiqueRequest, service: ServiceDep, owner: OwnerDep) -> Response:
    """Critique -> revision rounds under sampled principles (as `charter judge critique`)."""
    constitution = service.constitutions.get(body.constitution)
    async with service.judge(body.judge) as judge:
        model = JudgeWatch(judge)
        chain = await judge_critique(
            model, constitution, body.prompt, body.response, body.judge_config()
        )
    return service.feedback(model, chain)


@router.post(
    "/feedback/rank",
    tags=["feedback"],
    response_class=Response,
    responses={200: {"model": Ranking}, **ERRORS, **JUDGE_ERRORS},
)
async def rank(body: RankRequest, service: ServiceDep, owner: OwnerDep) -> Response:
    """Rank responses by pairwise comparisons (as `charter judge rank --json`)."""
    constitution = service.constitutions.get(body.constitution)
    async with service.judge(body.judge) as judge:
        model = JudgeWatch(judge)
        try:
            ranking = await judge_rank(
                model, constitution, body.prompt, list(body.responses), body.judge_config()
            )
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
    return service.feedback(model, ranking)
