"""Edit-impact previews started from the constitution page, run in the background.

A preview (`charter.jobs.impact.preview_impact`) judges a sample of one of the signed-in token's
jobs again under a constitution version; it takes as long as the calls the edit touched, so
it runs as a task of the service and its page shows progress like a job's. Previews live in
memory (a restart forgets them; their model calls stay in the store, so starting one again
costs nothing) and belong to the token that started them: another token's is a 404.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from fastapi import Request

from charter.jobs.impact import ImpactReport
from charter.jobs.impact_settings import ImpactSettings

log = logging.getLogger(__name__)

KEEP = 50  # previews remembered at once; the oldest finished one is forgotten first


@dataclass
class Preview:
    id: str
    owner: str
    job_id: str
    edited_version: str
    settings: ImpactSettings
    state: Literal["running", "done", "failed"] = "running"
    done: int = 0
    total: int = 0
    report: ImpactReport | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total


Work = Callable[[Preview], Awaitable[ImpactReport]]


class Previews:
    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._items: OrderedDict[str, Preview] = OrderedDict()

    def start(
        self, owner: str, job_id: str, edited_version: str, settings: ImpactSettings, work: Work
    ) -> Preview:
        """Run `work` for a new preview in the background and return it."""
        preview = Preview(secrets.token_hex(8), owner, job_id, edited_version, settings)
        self._items[preview.id] = preview
        self._forget_old()
        preview.task = asyncio.create_task(self._run(preview, work))
        return preview

    async def _run(self, preview: Preview, work: Work) -> None:
        try:
            preview.report = await work(preview)
            preview.state = "done"
        except Exception as exc:  # shown on the preview's page, one line
            log.exception("preview %s of %s failed", preview.id, preview.job_id)
            preview.error = str(exc) or type(exc).__name__
            preview.state = "failed"

    def get(self, preview_id: str, owner: str) -> Preview | None:
        found = self._items.get(preview_id)
        return found if found is not None and found.owner == owner else None

    def _forget_old(self) -> None:
        finished = [pid for pid, p in self._items.items() if p.state != "running"]
        while len(self._items) > self.keep and finished:
            del self._items[finished.pop(0)]


def previews_of(request: Request) -> Previews:
    """The app's previews (made on first use)."""
    state = request.app.state
    if not hasattr(state, "impact_previews"):
        state.impact_previews = Previews()
    found: Previews = state.impact_previews
    return found
