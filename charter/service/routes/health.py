"""/healthz and /readyz: liveness and readiness probes, outside /v1 and without a token."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import Response

from ..errors import ApiError
from ..schemas import Health, Readiness
from ..state import ServiceDep

log = logging.getLogger(__name__)

router = APIRouter()


@router.get("/healthz", tags=["health"], response_model=Health)
async def healthz() -> Health:
    """Liveness: the process answers."""
    return Health()


@router.get(
    "/readyz",
    tags=["health"],
    response_model=Readiness,
    responses={503: {"model": Readiness}},
)
async def readyz(service: ServiceDep) -> Response:
    """Readiness: the store answers, the principles load, the default judge is reachable."""
    checks: dict[str, str] = {}
    try:
        service.db.execute("SELECT 1").fetchone()
        checks["store"] = "ok"
    except Exception as exc:  # any failure means "not ready"; the type is enough to log
        log.warning("readiness: store check failed: %s", type(exc).__name__)
        checks["store"] = "unavailable"
    try:
        service.constitutions.current()
        checks["constitution"] = "ok"
    except ApiError:
        checks["constitution"] = "invalid"
    checks["judge"] = await service.pool.reachable(service.settings.judge)
    ready = all(v == "ok" for v in checks.values())
    body = Readiness(status="ready" if ready else "unavailable", checks=checks)
    return service.json(body, 200 if ready else 503)
