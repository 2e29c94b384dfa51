"""Bearer-token auth: everything under /v1 needs a token listed in CHARTER_API_TOKENS.

A token is known to the service only by its hash (`owner_of`), which is also the owner of
the jobs it submits. The OpenRLHF reward route also takes the token as the password of HTTP
Basic auth (`OwnerOrBasicDep`): OpenRLHF's client sends no headers of its own, but aiohttp turns
the user info of a URL (`http://charter:TOKEN@host/...`) into a Basic header.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)

from .errors import ApiError
from .settings import owner_of
from .state import ServiceDep

_bearer = HTTPBearer(auto_error=False, description="A token listed in CHARTER_API_TOKENS.")


class _LenientBasic(HTTPBasic):
    """HTTP Basic that answers None for a malformed header (the route then says 401 as for
    any bad token) instead of raising its own error."""

    async def __call__(self, request: Request) -> HTTPBasicCredentials | None:  # type: ignore[override]
        try:
            return await super().__call__(request)
        except HTTPException:
            return None


_basic = _LenientBasic(
    auto_error=False,
    description="Any user name, a token listed in CHARTER_API_TOKENS as the password "
    "(for clients that can only put credentials in the URL).",
)


def authenticate(owners: Iterable[str], token: str) -> str | None:
    """The owner `token` stands for, or None if it is not one of `owners`."""
    digest = owner_of(token)
    match = False
    for owner in owners:  # compare with every one: no early exit to time
        match |= hmac.compare_digest(digest, owner)
    return digest if match else None


async def _owner(
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    owner = None
    if credentials is not None:
        owner = authenticate(service.owners, credentials.credentials)
    if owner is None:
        raise ApiError(401, "unauthorized", "missing or invalid bearer token")
    return owner


OwnerDep = Annotated[str, Depends(_owner)]


async def _owner_or_basic(
    service: ServiceDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
) -> str:
    owner = None
    if bearer is not None:
        owner = authenticate(service.owners, bearer.credentials)
    elif basic is not None:
        owner = authenticate(service.owners, basic.password)
        if owner is None:  # the caller put the token in the URL: say so, not "bearer"
            raise ApiError(
                401,
                "unauthorized",
                "invalid token in the URL (http://NAME:TOKEN@host/...): the password part "
                "must be a token listed in CHARTER_API_TOKENS",
            )
    if owner is None:
        raise ApiError(401, "unauthorized", "missing or invalid bearer token")
    return owner


OwnerOrBasicDep = Annotated[str, Depends(_owner_or_basic)]
"""As `OwnerDep`, or the token as a Basic auth password (the OpenRLHF reward route)."""
