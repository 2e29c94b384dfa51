"""A scripted judge whose principles disagree where a test says they do.

`PrincipledResponder` holds one `PreferenceResponder` per principle, keyed by a marker text
that occurs only in that principle's question (e.g. its comparison question); a request is
answered by the responder whose marker it contains, so each principle prefers its own texts.
Requests naming no marker (a policy's generation, a critique) go to `default`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.support.scripted_server import PreferenceResponder, Reply, last_user_message


class PrincipledResponder:
    def __init__(
        self, by_marker: Mapping[str, PreferenceResponder], default: PreferenceResponder
    ) -> None:
        self.by_marker = dict(by_marker)
        self.default = default

    def pick(self, body: dict[str, Any]) -> PreferenceResponder:
        message = last_user_message(body)
        system = "".join(
            str(m.get("content", "")) for m in body.get("messages") or [] if m.get("role") != "user"
        )
        for marker, responder in self.by_marker.items():
            if marker in message or marker in system:
                return responder
        return self.default

    def __call__(self, body: dict[str, Any]) -> Reply:
        return self.pick(body)(body)
