"""Bearer-token auth: everything under /v1 needs a token listed in CHARTER_API_TOKENS.

A token is known to the service only by its hash (`owner_of`), which is also the owner of
the jobs it submits.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import ApiError
from .settings import owner_of
from .state import ServiceDep

_bearer = HTTPBearer(auto_error=False, description="A token listed in CHARTER_API_TOKENS.")


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
