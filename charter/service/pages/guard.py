"""What every page request is checked for: a session, and for a change, that it came from
one of charter's own pages (CSRF token of the session, Origin and Sec-Fetch-Site headers)."""

from __future__ import annotations

import hmac
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request

from .sessions import COOKIE, Session, Sessions

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class SignInNeeded(Exception):
    """No valid session: the handler answers with the sign-in page."""


class CrossSiteRequest(Exception):
    """A state-changing request that did not come from one of charter's pages."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sessions_of(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.page_sessions
    return sessions


async def _session(request: Request) -> Session:
    session = sessions_of(request).get(request.cookies.get(COOKIE))
    if session is None:
        raise SignInNeeded()
    return session


SessionDep = Annotated[Session, Depends(_session)]


def check_same_origin(request: Request) -> None:
    """Refuse a request a browser marks as sent from another site, or whose Origin is not ours.

    A browser sends Sec-Fetch-Site and (on a POST) Origin; a request without either did not
    come from a browser page, and still needs the session's CSRF token to change anything."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise CrossSiteRequest(f"sent from a {fetch_site} page")
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        parts = urlsplit(origin)
        if origin == "null" or parts.netloc != host or parts.scheme != request.url.scheme:
            raise CrossSiteRequest(f"sent from {origin}")


def check_csrf(request: Request, session: Session, token: str | None) -> None:
    """A change needs the session's CSRF token (from the form) and a same-origin request."""
    check_same_origin(request)
    if not token or not hmac.compare_digest(token, session.csrf):
        raise CrossSiteRequest("the form's CSRF token is missing or not this session's")
