"""/v1/constitutions: the service's current principles, frozen versions, and diffs between them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from charter.constitution import (
    Constitution,
    ConstitutionDiff,
    VersionError,
    diff_constitutions,
    get_version,
    history,
)

from ..auth import AuthFirst, OwnerDep
from ..errors import ERRORS, ApiError
from ..schemas import ConstitutionDetail, ConstitutionList, ConstitutionSummary, ErrorBody
from ..state import ServiceDep

router = APIRouter(route_class=AuthFirst)


def _summary(c: Constitution, frozen: Any = None) -> dict[str, Any]:
    return {
        "digest": c.digest,
        "version": c.version,
        "name": c.name,
        "message": frozen.message if frozen is not None else "",
        "frozen_at": frozen.frozen_at.isoformat() if frozen is not None else None,
        "principles": [p.id for p in c.enabled],
    }


@router.get(
    "/constitutions", tags=["constitutions"], response_model=ConstitutionList, responses=ERRORS
)
async def list_constitutions(service: ServiceDep, owner: OwnerDep) -> ConstitutionList:
    """Frozen versions (newest first) and the service's current principles."""
    current = service.constitutions.current()
    return ConstitutionList(
        current=ConstitutionSummary(**_summary(current)),
        frozen=[ConstitutionSummary(**_summary(v.constitution, v)) for v in history(service.db)],
    )


@router.get(
    "/constitutions/diff",
    tags=["constitutions"],
    response_class=Response,
    responses={200: {"model": ConstitutionDiff}, 404: {"model": ErrorBody}, **ERRORS},
)
async def diff(
    service: ServiceDep,
    owner: OwnerDep,
    a: Annotated[str, Query(min_length=1, max_length=80)],
    b: Annotated[str, Query(min_length=1, max_length=80)] = "current",
) -> Response:
    """What changed from `a` to `b` (version labels, digest prefixes or `current`)."""
    result = diff_constitutions(service.constitutions.get(a), service.constitutions.get(b))
    return service.json(result)


@router.get(
    "/constitutions/{ref}",
    tags=["constitutions"],
    response_model=ConstitutionDetail,
    responses={404: {"model": ErrorBody}, **ERRORS},
)
async def show_constitution(ref: str, service: ServiceDep, owner: OwnerDep) -> ConstitutionDetail:
    """A frozen version by digest (prefix) or version label; `current` for the live one."""
    if ref == "current":
        current = service.constitutions.current()
        return ConstitutionDetail(**_summary(current), constitution=current)
    try:
        frozen = get_version(service.db, ref)
    except VersionError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    return ConstitutionDetail(
        **_summary(frozen.constitution, frozen), constitution=frozen.constitution
    )
