"""Bearer-token auth: everything under /v1 needs a token listed in CHARTER_API_TOKENS.

A token is known to the service only by its hash (`owner_of`), which is also the owner of
the jobs it submits. The OpenRLHF reward route also takes the token as the password of HTTP
Basic auth (`OwnerOrBasicDep`): OpenRLHF's client sends no headers of its own, but aiohttp turns
the user info of a URL (`http://charter:TOKEN@host/...`) into a Basic header.

Credentials are checked before anything else a request costs (`AuthFirst`): a caller without a
token gets 401 before its body is read or parsed, and an address past its limit of failed
tokens (`limits.FailureLimit`) gets 429 before its token is even looked at.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from starlette.responses import Response

from .errors import ApiError
from .settings import owner_of
from .state import Service, ServiceDep

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


def client_address(request: Request) -> str:
    """The address the failed-token limit counts against (the peer, or what a trusted proxy
    on loopback forwarded as the client)."""
    return request.client.host if request.client is not None else "unknown"


def check_rate(service: Service, address: str, what: str = "tokens") -> None:
    """429 with `Retry-After` while `address` is past its limit of failed credentials."""
    wait = service.auth_failures.retry_after(address)
    if wait is not None:
        raise ApiError(
            429,
            "rate_limited",
            f"too many failed {what} from this address; try again in {wait} s",
            {"Retry-After": str(wait)},
        )


async def request_owner(request: Request, service: Service, *, basic: bool) -> str:
    """The owner of the request's bearer token (or, with `basic`, its Basic password), read
    from the headers alone. 429 while the address is limited; 401 otherwise, a presented
    but wrong credential counting against the address."""
    address = client_address(request)
    check_rate(service, address)
    owner = None
    message = "missing or invalid bearer token"
    bearer = await _bearer(request)
    if bearer is not None:
        owner = authenticate(service.owners, bearer.credentials)
    elif basic:
        credentials = await _basic(request)
        if credentials is not None:
            owner = authenticate(service.owners, credentials.password)
            # the caller put the token in the URL: say so, not "bearer"
            message = (
                "invalid token in the URL (http://NAME:TOKEN@host/...): the password part "
                "must be a token listed in CHARTER_API_TOKENS"
            )
    if owner is None:
        if request.headers.get("authorization"):  # a guess, not a caller without a token
            service.auth_failures.failed(address)
        raise ApiError(401, "unauthorized", message)
    return owner


async def _owner(
    request: Request,
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    owner: str | None = getattr(request.state, "owner", None)  # checked by `AuthFirst`
    return owner or await request_owner(request, service, basic=False)


OwnerDep = Annotated[str, Depends(_owner)]


async def _owner_or_basic(
    request: Request,
    service: ServiceDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
) -> str:
    owner: str | None = getattr(request.state, "owner", None)
    return owner or await request_owner(request, service, basic=True)


OwnerOrBasicDep = Annotated[str, Depends(_owner_or_basic)]
"""As `OwnerDep`, or the token as a Basic auth password (the OpenRLHF reward route)."""


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


class AuthFirst(APIRoute):
    """A route whose credentials (`OwnerDep`, `OwnerOrBasicDep`) are checked before FastAPI
    reads and parses its body: no token is a 401, never a 422 about the body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        calls = set(_calls(self.dependant))
        if _owner_or_basic in calls:
            basic = True
        elif _owner in calls:
            basic = False
        else:
            return handler

        async def checked(request: Request) -> Response:
            service: Service = request.app.state.service
            request.state.owner = await request_owner(request, service, basic=basic)
            return await handler(request)

        return checked
