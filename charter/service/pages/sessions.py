"""Signed-in browsers: a random session id in an HttpOnly, SameSite=Strict cookie.

The server keeps only a hash of each id, with the owner (a token hash, as in the API), the
owner's name and the session's CSRF token. Neither the API token nor anything derived from it
that could be replayed against the API is ever put in the cookie or kept here. Sessions live
in memory: restarting the service signs everyone out.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

COOKIE = "charter_session"
LIFETIME_S = 12 * 3600
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class Session:
    owner: str
    name: str
    csrf: str
    expires: float


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    """Session id hash -> `Session`; expired ones are dropped when met or when full."""

    def __init__(self, lifetime_s: float = LIFETIME_S) -> None:
        self.lifetime_s = lifetime_s
        self._by_digest: dict[str, Session] = {}
        self._lock = threading.Lock()

    def start(self, owner: str, name: str) -> str:
        """A new session for `owner`; returns the id to set as the cookie."""
        session_id = secrets.token_urlsafe(32)
        session = Session(owner, name, secrets.token_urlsafe(32), time.time() + self.lifetime_s)
        with self._lock:
            if len(self._by_digest) >= MAX_SESSIONS:
                self._drop_expired()
            if len(self._by_digest) >= MAX_SESSIONS:  # still full: the oldest goes
                oldest = min(self._by_digest, key=lambda d: self._by_digest[d].expires)
                del self._by_digest[oldest]
            self._by_digest[_digest(session_id)] = session
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        digest = _digest(session_id)
        with self._lock:
            session = self._by_digest.get(digest)
            if session is not None and session.expires < time.time():
                del self._by_digest[digest]
                return None
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._by_digest.pop(_digest(session_id), None)

    def _drop_expired(self) -> None:
        now = time.time()
        for digest in [d for d, s in self._by_digest.items() if s.expires < now]:
            del self._by_digest[digest]
