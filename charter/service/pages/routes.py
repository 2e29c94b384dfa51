"""The review pages: sign-in, jobs, a job's rows, one row, the audit, the constitution.

Reads need a session; every change (sign-out, a label, a calibration) is a POST carrying
the session's CSRF token from one of these pages (`guard`). A job is visible only to the
token that submitted it, as in the API. None of these routes is in the OpenAPI document.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from charter.calibrations import CalibrationError, calibrate_on_pairs, save, stored
from charter.constitution import Principle, diff_constitutions, history
from charter.jobs.conflicts import job_conflicts
from charter.jobs.impact import ImpactReport, preview_impact
from charter.jobs.impact_settings import ImpactSettings
from charter.jobs.spec import DEFAULT_MIN_CONFIDENCE
from charter.jobs.store import JobRecord, get_job, job_prompts
from charter.jobs.summary import job_qualification

from .. import records
from ..auth import authenticate, client_address
from ..errors import ApiError
from ..routes.jobs import JOB_ID
from ..state import Service, ServiceDep
from . import audit, charts, rows
from .detail import row_detail
from .guard import PAGE_HEADERS, SessionDep, check_csrf, check_same_origin, sessions_of
from .judge_stats import SAMPLE, judge_stats
from .previews import Preview, previews_of
from .render import HERE, page
from .sessions import COOKIE, Session

log = logging.getLogger(__name__)

KEY = r"^[0-9a-f]{64}$"
PRINCIPLE = r"^[a-z0-9][a-z0-9_-]*$"
STATIC = {"pages.css": "text/css", "live.js": "text/javascript"}
JobId = Annotated[str, PathParam(pattern=JOB_ID)]
RowKey = Annotated[str, PathParam(pattern=KEY)]
PreviewId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{16}$")]


async def _same_origin_posts(request: Request) -> None:
    """Every page POST, signed in or not, must come from a page of this site (checked before
    the session, so a cross-site POST is refused as such even when the browser withholds the
    cookie)."""
    if request.method == "POST":
        check_same_origin(request)


router = APIRouter(include_in_schema=False, dependencies=[Depends(_same_origin_posts)])


class PageNotFound(Exception):
    """A job or row that does not exist for this session's token."""


def _owned(service: Service, session: Session, job_id: str) -> JobRecord:
    if not records.owns(service.db, job_id, session.owner) and not (
        service.settings.is_operator(session.owner) and records.untenanted(service.db, job_id)
    ):
        raise PageNotFound(f"no job {job_id} for this token")
    return get_job(service.db, job_id)


def _visible_job_ids(service: Service, session: Session, limit: int) -> list[str]:
    """The session's jobs; an operator's also include the CLI's (which no token owns)."""
    ids = records.owned_job_ids(service.db, session.owner, limit)
    if service.settings.is_operator(session.owner):
        ids += records.untenanted_job_ids(service.db, limit)
    return ids


def _min_confidence(job: JobRecord) -> float:
    return float(job.summary.get("min_confidence", DEFAULT_MIN_CONFIDENCE))


def _safe_next(target: str | None) -> str:
    """Only a path of these pages: a sign-in link cannot send the browser elsewhere."""
    if target and re.fullmatch(r"/pages/[A-Za-z0-9/_.?=&%-]*", target) and "//" not in target:
        return target
    return "/pages/jobs"


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/pages/jobs", status_code=303)


@router.get("/pages/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        raise PageNotFound(f"no file {name}")
    body = (HERE / "static" / name).read_bytes()
    headers = {"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"}
    return Response(body, media_type=STATIC[name], headers=headers)


@router.get("/pages/sign-in")
async def sign_in_form(next: Annotated[str | None, Query(max_length=500)] = None) -> HTMLResponse:
    return page("sign_in.html", next=_safe_next(next), error=None)


@router.post("/pages/sign-in")
async def sign_in(request: Request, service: ServiceDep) -> Response:
    check_same_origin(request)
    address = client_address(request)
    wait = service.auth_failures.retry_after(address)  # before the form is even read
    if wait is not None:
        log.info("page sign-in refused: too many failures from one address")
        error = f"Too many failed sign-ins from this address: try again in {wait} s."
        limited = page("sign_in.html", status=429, next="/pages/jobs", error=error)
        limited.headers["Retry-After"] = str(wait)
        return limited
    form = await request.form()
    token, target = str(form.get("token") or ""), _safe_next(str(form.get("next") or ""))
    owner = authenticate(service.owners, token.strip()) if token.strip() else None
    if owner is None:
        log.info("page sign-in refused")
        service.auth_failures.failed(address)
        error = "That token is not one of this service's tokens."
        return page("sign_in.html", status=401, next=target, error=error)
    session_id = sessions_of(request).start(owner, service.settings.owner_name(owner))
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        session_id,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/pages/sign-out")
async def sign_out(request: Request, session: SessionDep) -> Response:
    form = await request.form()
    check_csrf(request, session, str(form.get("csrf") or ""))
    sessions_of(request).end(request.cookies.get(COOKIE))
    response = RedirectResponse("/pages/sign-in", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/pages/jobs")
async def jobs_page(service: ServiceDep, session: SessionDep) -> HTMLResponse:
    ids = _visible_job_ids(service, session, 200)
    views = [service.view(get_job(service.db, i)) for i in ids]
    return page("jobs.html", session=session, jobs=views)


@router.get("/pages/jobs/{job_id}/progress.json")
async def progress(job_id: JobId, service: ServiceDep, session: SessionDep) -> JSONResponse:
    view = service.view(_owned(service, session, job_id))
    body = {
        "state": "waiting" if view.waiting_for else view.state,
        "waiting_for": f"for {view.waiting_for}" if view.waiting_for else "",
        "total": view.prompts.total,
        "done": view.prompts.done,
        "failed": view.prompts.failed,
        "pending": view.prompts.pending,
        "preferences": view.preferences,
    }
    return JSONResponse(body, headers=PAGE_HEADERS)


@router.get("/pages/jobs/{job_id}")
async def job_page(job_id: JobId, service: ServiceDep, session: SessionDep) -> HTMLResponse:
    job = _owned(service, session, job_id)
    view = service.view(job)
    margin = job.spec.judge_config.margin(job.constitution)
    agreed = audit.agreement(service.db, job.id, margin)
    quality = agreed.quality
    reliability = None
    if quality is not None and quality.calibration is not None:
        reliability = charts.reliability_diagram(quality.calibration.reliability)
    stats = judge_stats(service.db, job.id)
    conflicts = job_conflicts(service.db, job.id, sample=SAMPLE)
    source = _labels_source(job.id)
    fitted = [r for r in stored(service.db) if r.pairs_source == source]
    _, labelled, sample = audit.next_pair(service.db, job.id, session.owner)
    return page(
        "job.html",
        session=session,
        job=view,
        texts=view.summary.get("texts"),
        histogram=charts.p_chosen_histogram(rows.p_chosen_histogram(service.db, job.id)),
        principles=charts.principle_bars(stats.principles) if stats.principles else None,
        stats=stats,
        qualification=job_qualification(service.db, job),
        agreement=agreed,
        by_principle=audit.principle_agreement(service.db, job.id, margin),
        conflicts=conflicts,
        matrix=(
            charts.conflict_matrix(conflicts.report, functools.partial(_conflict_link, job.id))
            if len(conflicts.report.principles) > 1
            else None
        ),
        reliability=reliability,
        calibrations=fitted,
        labelled=labelled,
        sample=sample,
        live=view.state in ("running", "queued"),
    )


def _conflict_link(job_id: str, first: str, second: str) -> str:
    return f"/pages/jobs/{job_id}/conflicts?{urlencode({'first': first, 'second': second})}"


@router.get("/pages/jobs/{job_id}/conflicts")
async def conflicts_page(
    job_id: JobId,
    service: ServiceDep,
    session: SessionDep,
    first: Annotated[str, Query(pattern=PRINCIPLE, max_length=64)],
    second: Annotated[str, Query(pattern=PRINCIPLE, max_length=64)],
) -> HTMLResponse:
    """The comparisons where two principles were both confident and opposite (the job
    page's matrix cell), from the same sample of prompts the matrix read."""
    job = _owned(service, session, job_id)
    found = job_conflicts(service.db, job.id, sample=SAMPLE)
    pair = found.report.pair(first, second)
    flipped = pair is not None and (pair.first, pair.second) != (first, second)
    positions = {r.position for r in pair.rows} if pair else set()
    prompts = {pos: r.text for pos, r in job_prompts(service.db, job.id) if pos in positions}
    return page(
        "conflicts.html",
        session=session,
        job=job,
        first=first,
        second=second,
        pair=pair,
        flipped=flipped,
        found=found,
        prompts=prompts,
    )


@router.get("/pages/jobs/{job_id}/rows")
async def rows_page(
    job_id: JobId, request: Request, service: ServiceDep, session: SessionDep
) -> HTMLResponse:
    job = _owned(service, session, job_id)
    try:
        given = {k: v for k, v in request.query_params.items() if v.strip()}  # a blank field
        filters = rows.RowFilter.model_validate(given)
        found = rows.rows_page(service.db, job.id, filters, _min_confidence(job))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return _message(session, 422, f"filter {where}: {first['msg']}")
    except rows.CursorError as exc:
        return _message(session, 422, f"after: {exc}")
    return page(
        "rows.html",
        session=session,
        job=job,
        filters=filters,
        found=found,
        principles=rows.job_principles(service.db, job.id),
        reasons=rows.REASONS,
        prompt_text=rows.prompt_text,
        min_confidence=_min_confidence(job),
    )


@router.get("/pages/jobs/{job_id}/rows/{key}")
async def row_page(
    job_id: JobId, key: RowKey, service: ServiceDep, session: SessionDep
) -> HTMLResponse:
    job = _owned(service, session, job_id)
    row = rows.get_row(service.db, job.id, key)
    if row is None:
        raise PageNotFound(f"no row {key} in job {job.id}")
    return page(
        "row.html",
        session=session,
        job=job,
        row=row,
        key=key,
        prompt=rows.prompt_text(row.prompt),
        detail=row_detail(service.db, row),
    )


@router.get("/pages/jobs/{job_id}/label")
async def label_page(job_id: JobId, service: ServiceDep, session: SessionDep) -> HTMLResponse:
    job = _owned(service, session, job_id)
    pair, labelled, sample = audit.next_pair(service.db, job.id, session.owner)
    return page("label.html", session=session, job=job, pair=pair, labelled=labelled, sample=sample)


@router.post("/pages/jobs/{job_id}/label")
async def label(
    job_id: JobId, request: Request, service: ServiceDep, session: SessionDep
) -> Response:
    form = await request.form()
    check_csrf(request, session, str(form.get("csrf") or ""))
    job = _owned(service, session, job_id)
    key, choice = str(form.get("key") or ""), str(form.get("choice") or "")
    if choice not in ("a", "b", "tie") or not re.fullmatch(KEY, key):
        return _message(session, 422, "label: choose A, B or can't tell for a pair of the sample")
    if not audit.record_label(service.db, job.id, key, session.owner, session.name, choice):  # type: ignore[arg-type]
        return _message(session, 422, f"label: pair {key[:12]} is not in this job's sample")
    return RedirectResponse(f"/pages/jobs/{job.id}/label", status_code=303)


def _labels_source(job_id: str) -> str:
    return f"people's labels of {job_id} (review pages)"


@router.get("/pages/jobs/{job_id}/labels.jsonl")
async def labels_export(job_id: JobId, service: ServiceDep, session: SessionDep) -> Response:
    job = _owned(service, session, job_id)
    body = "".join(audit.pairs_jsonl(audit.labelled_pairs(service.db, job.id)))
    headers = {
        **PAGE_HEADERS,
        "Content-Disposition": f'attachment; filename="{job.id}-labels.jsonl"',
    }
    return Response(body, media_type="application/x-ndjson", headers=headers)


@router.post("/pages/jobs/{job_id}/calibrate")
async def calibrate(
    job_id: JobId, request: Request, service: ServiceDep, session: SessionDep
) -> Response:
    """Fit the job's judge's calibration on the people's labels, as `charter judge calibrate`
    does on a labelled-pairs file: the judge answers each pair, a seeded part is fitted and
    the rest reports the held-out figures; the record is kept in the store."""
    form = await request.form()
    check_csrf(request, session, str(form.get("csrf") or ""))
    job = _owned(service, session, job_id)
    pairs = audit.labelled_pairs(service.db, job.id)
    try:
        async with service.judge(job.spec.judge) as model:
            run = await calibrate_on_pairs(
                model,
                job.constitution,
                pairs,
                job.spec.judge_config,
                pairs_source=_labels_source(job.id),
                concurrency=service.settings.job_concurrency,
            )
    except CalibrationError as exc:
        return _message(session, 422, f"calibration: {exc}")
    except ApiError as exc:
        return _message(session, exc.status, f"calibration: {exc.message}")
    save(service.db, run.record)
    return RedirectResponse(f"/pages/jobs/{job.id}#audit", status_code=303)


@router.get("/pages/constitution")
async def constitution_page(
    service: ServiceDep,
    session: SessionDep,
    a: Annotated[str | None, Query(max_length=100)] = None,
    b: Annotated[str | None, Query(max_length=100)] = None,
) -> HTMLResponse:
    versions = history(service.db)
    current = error = diff = None
    try:
        current = service.constitutions.current()
        if a and b:
            diff = diff_constitutions(service.constitutions.get(a), service.constitutions.get(b))
    except ApiError as exc:
        error = exc.message
    context: dict[str, Any] = {"a": a or "", "b": b or "", "error": error}
    if diff is not None:
        context["jobs"] = _visible_job_ids(service, session, 200)
        context["impact"] = ImpactSettings()
    return page(
        "constitution.html",
        session=session,
        current=current,
        show_applies="applies" in Principle.model_fields,  # shown once principles have it
        versions=versions,
        diff=diff,
        **context,
    )


@router.post("/pages/constitution/impact")
async def start_impact(request: Request, service: ServiceDep, session: SessionDep) -> Response:
    """Preview what constitution version `b` would change in one of the token's jobs (the
    `charter constitution impact` path), in the background; redirects to its page."""
    form = await request.form()
    check_csrf(request, session, str(form.get("csrf") or ""))
    job_id, version = str(form.get("job") or ""), str(form.get("b") or "")
    try:
        settings = ImpactSettings.model_validate(
            {k: form.get(k) for k in ImpactSettings.model_fields if form.get(k)}
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        return _message(session, 422, f"preview {first['loc'][0]}: {first['msg']}")
    if not re.fullmatch(JOB_ID, job_id):
        return _message(session, 422, "preview: choose one of your jobs")
    job = _owned(service, session, job_id)
    try:
        edited = service.constitutions.get(version or "current")
        judge = await service.hold_judge(job.spec.judge)  # released when the preview ends
    except ApiError as exc:
        return _message(session, exc.status, f"preview: {exc.message}")

    async def work(preview: Preview) -> ImpactReport:
        try:
            return await preview_impact(
                service.db,
                job.id,
                edited,
                judge,
                settings,
                concurrency=service.settings.job_concurrency,
                on_progress=preview.progress,
            )
        finally:
            service.pool.release(judge)

    preview = previews_of(request).start(session.owner, job.id, edited.version, settings, work)
    return RedirectResponse(f"/pages/impact/{preview.id}", status_code=303)


@router.get("/pages/impact/{preview_id}/progress.json")
async def impact_progress(
    preview_id: PreviewId, request: Request, session: SessionDep
) -> JSONResponse:
    preview = _preview(request, session, preview_id)
    body = {"state": preview.state, "total": preview.total, "done": preview.done}
    return JSONResponse(body, headers=PAGE_HEADERS)


@router.get("/pages/impact/{preview_id}")
async def impact_page(
    preview_id: PreviewId, request: Request, service: ServiceDep, session: SessionDep
) -> HTMLResponse:
    preview = _preview(request, session, preview_id)
    return page(
        "impact.html",
        session=session,
        preview=preview,
        report=preview.report,
        live=preview.state == "running",
    )


def _preview(request: Request, session: Session, preview_id: str) -> Preview:
    found = previews_of(request).get(preview_id, session.owner)
    if found is None:
        raise PageNotFound(f"no preview {preview_id} for this token")
    return found


def _message(session: Session | None, status: int, text: str) -> HTMLResponse:
    return page("message.html", status=status, session=session, text=text)
