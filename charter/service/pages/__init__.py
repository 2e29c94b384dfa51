"""The review pages served by `charter serve`: read a job's rows, audit a sample, see the
judge's quality. `install(app)` adds them to the service; the API routes are untouched."""

from __future__ import annotations

import logging
from urllib.parse import quote

import sqlite_utils
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from charter.jobs.store import JOB_PROMPTS, PREFERENCES

from . import audit
from .guard import CrossSiteRequest, SignInNeeded
from .render import page
from .routes import PageNotFound, router
from .sessions import Sessions

log = logging.getLogger(__name__)


def ensure_tables(db: sqlite_utils.Database) -> None:
    """The labels table, and the indexes that keep the pages fast on a large job: p_chosen
    for the histogram and the confidence filter, prompt status for the progress counts."""
    audit.ensure_table(db)
    with db.conn:
        db.execute(
            f"CREATE INDEX IF NOT EXISTS pages_preferences_p_chosen "
            f"ON {PREFERENCES} (job_id, p_chosen)"
        )
        db.execute(
            f"CREATE INDEX IF NOT EXISTS pages_job_prompts_status "
            f"ON {JOB_PROMPTS} (job_id, status, position)"
        )


def install(app: FastAPI) -> None:
    app.state.page_sessions = Sessions()
    app.include_router(router)

    @app.exception_handler(SignInNeeded)
    async def _sign_in(request: Request, exc: SignInNeeded) -> Response:
        target = request.url.path if request.method == "GET" else "/pages/jobs"
        return RedirectResponse(f"/pages/sign-in?next={quote(target)}", status_code=303)

    @app.exception_handler(CrossSiteRequest)
    async def _cross_site(request: Request, exc: CrossSiteRequest) -> Response:
        log.warning("refused a cross-site %s %s: %s", request.method, request.url.path, exc.reason)
        return page("message.html", status=403, text=f"Refused: {exc.reason}.")

    @app.exception_handler(PageNotFound)
    async def _not_found(request: Request, exc: PageNotFound) -> Response:
        return page("message.html", status=404, text=str(exc))
