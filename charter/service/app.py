"""The FastAPI app: constitutional feedback and preference datasets over HTTP.

`create_app(settings)` builds it; `charter serve` runs it on uvicorn. One event loop owns the
store connection, the models and the job tasks: handlers are `async`, store calls are short
synchronous SQLite statements, and model calls are awaited, so nothing blocks for long.
Everything under /v1 needs a bearer token; a job is visible only to the token that submitted it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import sqlite_utils
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from charter import __version__
from charter.constitution import (
    Constitution,
    ConstitutionDiff,
    ConstitutionError,
    VersionError,
    diff_constitutions,
    get_version,
    history,
    load_constitution,
)
from charter.export import to_row
from charter.generate import DEFAULT_MIN_CONFIDENCE, is_exportable
from charter.inputs import FORMATS, PromptFileError, PromptRecord, load_prompts
from charter.jobs import (
    JobError,
    JobRecord,
    create_or_get_job,
    get_job,
    preference_count,
    prompt_counts,
)
from charter.judge import ChatModel, Comparison, Ranking, RevisionChain
from charter.judge import compare as judge_compare
from charter.judge import critique_and_revise as judge_critique
from charter.judge import rank as judge_rank
from charter.store import open_store

from . import records
from .feedback import JudgeWatch, unanswered
from .middleware import BodyLimit, ErrorShield
from .models import ModelNotAllowed, ModelPool, ModelUnavailable
from .options import JobOptions, dedupe, needs_policy
from .runner import JobRunner
from .schemas import (
    CompareRequest,
    ConstitutionDetail,
    ConstitutionList,
    ConstitutionSummary,
    CritiqueRequest,
    ErrorBody,
    FieldError,
    Health,
    JobCreated,
    JobList,
    JobRequest,
    JobView,
    PromptProgress,
    RankRequest,
    Readiness,
    UploadOptions,
)
from .settings import ServiceSettings, owner_of

log = logging.getLogger(__name__)

JOB_ID = r"^job-[0-9a-f]{12}$"
UPLOAD_PART_BYTES = 1024 * 1024  # the `options` form field; the file part is bounded by BodyLimit


class ApiError(Exception):
    """An error a client caused or must know about; its message is safe to show."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Scrubber:
    """Removes the service's endpoints from text bound for clients (backend errors name them)."""

    def __init__(self, settings: ServiceSettings) -> None:
        urls = {settings.base_url_for("judge"), settings.base_url_for("policy")}
        urls |= {os.environ.get("OPENAI_BASE_URL"), os.environ.get("CHARTER_JUDGE_BASE_URL")}
        self.urls = sorted((u for u in urls if u), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for url in self.urls:
            text = text.replace(url, "the configured endpoint")
        return text


class _Constitutions:
    """The service's principles directory, reloaded when a file in it changes; frozen versions."""

    RECHECK_S = 1.0  # stat the directory at most this often: edits show within a second

    def __init__(self, db: sqlite_utils.Database, directory: Path) -> None:
        self.db = db
        self.directory = directory
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._current: Constitution | None = None
        self._checked = 0.0

    def _stat(self) -> tuple[tuple[str, int, int], ...]:
        try:
            files = sorted(self.directory.iterdir())
        except OSError:
            return ()
        out = []
        for path in files:
            with contextlib.suppress(OSError):
                st = path.stat()
                out.append((path.name, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def current(self) -> Constitution:
        now = time.monotonic()
        if self._current is not None and now - self._checked < self.RECHECK_S:
            return self._current
        signature = self._stat()
        if self._current is None or signature != self._signature:
            try:
                self._current = load_constitution(self.directory)
            except ConstitutionError as exc:
                for finding in exc.findings:
                    log.error("principles: %s", finding)
                raise ApiError(
                    503, "constitution_invalid", "the service's principles are invalid; see its log"
                ) from None
            self._signature = signature
        self._checked = now
        return self._current

    def get(self, ref: str | None) -> Constitution:
        if ref is None or ref == "current":
            return self.current()
        try:
            return get_version(self.db, ref).constitution
        except VersionError as exc:
            raise ApiError(404, "not_found", str(exc)) from None


class Service:
    """What the handlers share; lives on `app.state.service` for the app's lifetime."""

    def __init__(self, settings: ServiceSettings, db: sqlite_utils.Database) -> None:
        self.settings = settings
        self.db = db
        self.owners = sorted(settings.owners)
        self.scrub = Scrubber(settings)
        self.pool = ModelPool(settings)
        self.runner = JobRunner(db, self.pool, settings, self.scrub)
        self.constitutions = _Constitutions(db, settings.principles_dir)

    def authenticate(self, token: str) -> str | None:
        digest = owner_of(token)
        match = False
        for owner in self.owners:  # compare with every one: no early exit to time
            match |= hmac.compare_digest(digest, owner)
        return digest if match else None

    async def judge(self, spec: str | None) -> ChatModel:
        """The judge a feedback request asked for (or the default), as an API error if not."""
        try:
            return await self.pool.get(spec or self.settings.judge, "judge")
        except ModelNotAllowed as exc:
            raise ApiError(422, "model_not_allowed", str(exc)) from None
        except ModelUnavailable as exc:
            raise ApiError(503, "model_unavailable", str(exc)) from None

    def feedback(self, judge: JudgeWatch, result: Comparison | RevisionChain | Ranking) -> Response:
        """The result of a feedback call, or the 5xx error saying why it holds no answer."""
        empty, detail = unanswered(result)
        if empty:
            failure = judge.failure(detail)
            raise ApiError(failure.status, failure.code, self.scrub(failure.message))
        return self.json(result)

    def json(self, model: BaseModel, status: int = 200) -> Response:
        return Response(
            self.scrub(model.model_dump_json()), status_code=status, media_type="application/json"
        )

    def owned_job(self, job_id: str, owner: str) -> JobRecord:
        if records.owns(self.db, job_id, owner):
            with contextlib.suppress(JobError):
                return get_job(self.db, job_id)
        raise ApiError(404, "not_found", f"no job {job_id!r} for this token")

    def view(self, job: JobRecord) -> JobView:
        counts = prompt_counts(self.db, job.id)
        summary = json.loads(self.scrub(json.dumps(job.summary)))
        return JobView(
            id=job.id,
            state="queued" if self.runner.queued(job.id) else job.status,
            mode=job.spec.mode,
            judge=job.spec.judge,
            policy=job.spec.policy,
            constitution_digest=job.constitution.digest,
            constitution_version=job.constitution.version,
            prompts=PromptProgress(
                total=sum(counts.values()),
                done=counts.get("done", 0),
                failed=counts.get("failed", 0),
                pending=counts.get("pending", 0),
            ),
            preferences=preference_count(self.db, job.id),
            error=self.scrub(job.error) if job.error else None,
            errors=[self.scrub(e) for e in records.prompt_errors(self.db, job.id)],
            prompts_source=job.prompts_source,
            created_at=job.created_at,
            updated_at=job.updated_at,
            summary=summary,
        )

    def submit(
        self,
        owner: str,
        records_in: list[PromptRecord],
        options: JobOptions,
        constitution_ref: str | None,
        source: str,
        *,
        dropped: int = 0,
    ) -> Response:
        """Create (or find) this token's job for this request and start it unless done.

        The owner is part of the job's spec, so another token's identical request is another
        job: it neither sees nor controls this one, though both reuse the same stored calls."""
        records_in, repeats = dedupe(records_in)
        dropped += repeats
        if len(records_in) > self.settings.max_prompts:
            raise ApiError(
                422,
                "too_many_prompts",
                f"{len(records_in)} prompts; this service takes at most "
                f"{self.settings.max_prompts} per job",
            )
        try:
            self.pool.check(options.judge or self.settings.judge)
            if needs_policy(records_in):
                self.pool.check(options.policy or self.settings.policy)
        except ModelNotAllowed as exc:
            raise ApiError(422, "model_not_allowed", str(exc)) from None
        constitution = self.constitutions.get(constitution_ref)
        spec = options.plan(
            self.db,
            records_in,
            constitution,
            default_judge=self.settings.judge,
            default_policy=self.settings.policy,
        ).model_copy(update={"tenant": owner})
        job, _ = create_or_get_job(self.db, spec, constitution, records_in, source)
        newly_owned = records.add_owner(self.db, job.id, owner)
        if job.status != "done":
            self.runner.start(job.id)
            job = get_job(self.db, job.id)
        body = JobCreated(job=self.view(job), created=newly_owned, duplicates_dropped=dropped)
        return self.json(body, 201 if newly_owned else 200)


async def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(_service)]
_bearer = HTTPBearer(auto_error=False, description="A token listed in CHARTER_API_TOKENS.")


async def _owner(
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    owner = service.authenticate(credentials.credentials) if credentials is not None else None
    if owner is None:
        raise ApiError(401, "unauthorized", "missing or invalid bearer token")
    return owner


OwnerDep = Annotated[str, Depends(_owner)]
JobId = Annotated[str, PathParam(pattern=JOB_ID, description="A job id, e.g. job-0123456789ab.")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or invalid bearer token."},
    422: {"model": ErrorBody, "description": "Invalid request; `fields` says where."},
}
_JUDGE_ERRORS: dict[int | str, dict[str, Any]] = {
    502: {
        "model": ErrorBody,
        "description": "`judge_failed`: the judge answered with errors or unusable replies only.",
    },
    503: {
        "model": ErrorBody,
        "description": "`judge_unreachable`: the judge cannot be reached; "
        "`model_unavailable`: it cannot be loaded.",
    },
    504: {"model": ErrorBody, "description": "`judge_timeout`: the judge did not answer in time."},
}


def _field_errors(errors: list[Any]) -> list[FieldError]:
    out = []
    for error in errors:
        loc = ""
        for part in error.get("loc", ()):
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        context = error.get("ctx", {}).get("error") if error.get("type") == "json_invalid" else None
        if context:
            message += f" ({context})"
        out.append(FieldError(loc=loc or "body", message=message))
    return out


def _invalid(fields: list[FieldError]) -> JSONResponse:
    first = fields[0] if fields else FieldError(loc="body", message="invalid")
    more = f" (and {len(fields) - 1} more)" if len(fields) > 1 else ""
    body = {
        "error": {
            "code": "invalid_request",
            "message": f"{first.loc}: {first.message}{more}",
            "fields": [f.model_dump() for f in fields],
        }
    }
    return JSONResponse(body, status_code=422)


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "fields": []}}
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, exc.code, exc.message, headers)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError | ValidationError)
        return _invalid(_field_errors(list(exc.errors())))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return _error(exc.status_code, codes.get(exc.status_code, "error"), message)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


def _feedback_routes(v1: APIRouter) -> None:
    @v1.post(
        "/feedback/compare",
        tags=["feedback"],
        response_class=Response,
        responses={200: {"model": Comparison}, **_ERRORS, **_JUDGE_ERRORS},
    )
    async def compare(body: CompareRequest, service: ServiceDep, owner: OwnerDep) -> Response:
        """Which of `a` and `b` the constitution prefers: pairwise, debiased over both orders;
        pointwise, from each one's score (as `charter judge compare --json`)."""
        constitution = service.constitutions.get(body.constitution)
        model = JudgeWatch(await service.judge(body.judge))
        result = await judge_compare(
            model, constitution, body.prompt, body.a, body.b, body.judge_config()
        )
        return service.feedback(model, result)

    @v1.post(
        "/feedback/critique",
        tags=["feedback"],
        response_class=Response,
        responses={200: {"model": RevisionChain}, **_ERRORS, **_JUDGE_ERRORS},
    )
    async def critique(body: CritiqueRequest, service: ServiceDep, owner: OwnerDep) -> Response:
        """Critique -> revision rounds under sampled principles (as `charter judge critique`)."""
        constitution = service.constitutions.get(body.constitution)
        model = JudgeWatch(await service.judge(body.judge))
        chain = await judge_critique(
            model, constitution, body.prompt, body.response, body.judge_config()
        )
        return service.feedback(model, chain)

    @v1.post(
        "/feedback/rank",
        tags=["feedback"],
        response_class=Response,
        responses={200: {"model": Ranking}, **_ERRORS, **_JUDGE_ERRORS},
    )
    async def rank(body: RankRequest, service: ServiceDep, owner: OwnerDep) -> Response:
        """Rank responses by pairwise comparisons (as `charter judge rank --json`)."""
        constitution = service.constitutions.get(body.constitution)
        model = JudgeWatch(await service.judge(body.judge))
        try:
            ranking = await judge_rank(
                model, constitution, body.prompt, list(body.responses), body.judge_config()
            )
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        return service.feedback(model, ranking)


async def _read_upload(request: Request) -> tuple[list[PromptRecord], UploadOptions, str, int]:
    """The prompts file and options of a multipart job request, read as `charter generate`
    reads a prompts file (same formats, same errors), from a private temporary copy."""
    async with request.form(max_files=1, max_fields=4, max_part_size=UPLOAD_PART_BYTES) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(
                422, "invalid_request", "file: a prompts file part named 'file' is required"
            )
        raw_options = form.get("options") or "{}"
        if not isinstance(raw_options, str):
            raise ApiError(422, "invalid_request", "options: must be a JSON text field")
        try:
            options = UploadOptions.model_validate_json(raw_options)
        except ValidationError as exc:
            fields = _field_errors(list(exc.errors()))
            for field in fields:
                field.loc = "options" + (f".{field.loc}" if field.loc != "body" else "")
            raise _InvalidFields(fields) from None
        name = Path(upload.filename or "prompts").name
        suffix = Path(name).suffix.lower()
        if suffix not in FORMATS:
            raise ApiError(
                422,
                "invalid_request",
                f"file: unsupported prompts file type {suffix or '(no suffix)'!r}; "
                f"supported: {', '.join(FORMATS)}",
            )
        data = await upload.read()
    with tempfile.TemporaryDirectory(prefix="charter-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            prompt_set = await asyncio.to_thread(
                load_prompts,
                path,
                column=options.column,
                responses_column=options.responses_column,
            )
        except PromptFileError as exc:
            message = _as_uploaded(exc.shown_as(name), path, name)
            raise ApiError(422, "invalid_prompts", message) from None
    return list(prompt_set), options, name, prompt_set.duplicates_dropped


def _as_uploaded(text: str, copy: Path, name: str) -> str:
    """`text` (a reader's error) naming the client's file where it named our temporary copy."""
    for shown in sorted({str(copy.resolve()), str(copy)}, key=len, reverse=True):
        text = text.replace(shown, name)
    for folder in sorted({str(copy.parent.resolve()), str(copy.parent)}, key=len, reverse=True):
        text = text.replace(folder, "(upload)")
    return text


class _InvalidFields(Exception):
    def __init__(self, fields: list[FieldError]) -> None:
        super().__init__("invalid fields")
        self.fields = fields


def _job_routes(v1: APIRouter) -> None:
    @v1.post(
        "/jobs",
        tags=["jobs"],
        response_class=Response,
        status_code=201,
        responses={
            200: {"model": JobCreated, "description": "This token already had this job."},
            201: {"model": JobCreated, "description": "Job created and started."},
            413: {"model": ErrorBody},
            415: {"model": ErrorBody},
            **_ERRORS,
        },
        openapi_extra={"requestBody": _JOB_REQUEST_BODY},
    )
    async def create_job(request: Request, service: ServiceDep, owner: OwnerDep) -> Response:
        """Start a generation job: JSON with `prompts` inline, or multipart/form-data with a
        prompts `file` (.jsonl, .json, .csv, .tsv, .txt, .parquet) and an `options` JSON field.

        The job id is a hash of the inputs and the token: sending the same request again with
        the same token returns the same job, and resumes it if it had failed or was cancelled;
        another token gets a job of its own."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            try:
                body = JobRequest.model_validate_json(await request.body())
            except ValidationError as exc:
                fields = _field_errors(list(exc.errors()))
                for field in fields:
                    field.loc = "body" + (f".{field.loc}" if field.loc != "body" else "")
                return _invalid(fields)
            records_in = [p.to_record(f"prompts[{i}]") for i, p in enumerate(body.prompts)]
            options = JobOptions.model_validate(
                body.model_dump(include=set(JobOptions.model_fields))
            )
            source = f"inline: {len(records_in)} prompts"
            return service.submit(owner, records_in, options, body.constitution, source)
        if content_type == "multipart/form-data":
            try:
                records_in, upload_options, name, dropped = await _read_upload(request)
            except _InvalidFields as exc:
                return _invalid(exc.fields)
            options = JobOptions.model_validate(
                upload_options.model_dump(include=set(JobOptions.model_fields))
            )
            return service.submit(
                owner,
                records_in,
                options,
                upload_options.constitution,
                f"upload: {name}",
                dropped=dropped,
            )
        raise ApiError(
            415, "unsupported_media_type", "send application/json or multipart/form-data"
        )

    @v1.get("/jobs", tags=["jobs"], response_model=JobList, responses=_ERRORS)
    async def list_jobs(
        service: ServiceDep,
        owner: OwnerDep,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> JobList:
        """This token's jobs, most recently updated first."""
        ids = records.owned_job_ids(service.db, owner, limit)
        return JobList(jobs=[service.view(get_job(service.db, i)) for i in ids])

    @v1.get("/jobs/{job_id}", tags=["jobs"], response_model=JobView, responses=_ERRORS)
    async def show_job(job_id: JobId, service: ServiceDep, owner: OwnerDep) -> JobView:
        """State, progress, counts and errors of one of this token's jobs."""
        return service.view(service.owned_job(job_id, owner))

    @v1.get(
        "/jobs/{job_id}/preferences",
        tags=["jobs"],
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"application/x-ndjson": {}},
                "description": "One TRL preference row per line (the rows `charter export` "
                "writes). `X-Next-Cursor` (and a `Link: rel=next`) is set when more follow.",
            },
            **_ERRORS,
        },
    )
    async def preferences(
        job_id: JobId,
        request: Request,
        service: ServiceDep,
        owner: OwnerDep,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        min_confidence: Annotated[float, Query(ge=0.5, le=1.0)] = DEFAULT_MIN_CONFIDENCE,
        include_filtered: bool = False,
        conversational: bool = False,
    ) -> StreamingResponse:
        """A page of the job's preference rows as JSONL, in export order. Rows below
        `min_confidence` are left out (as `charter export` does) unless `include_filtered`."""
        job = service.owned_job(job_id, owner)
        try:
            after = records.decode_cursor(cursor) if cursor else None
        except records.CursorError as exc:
            raise ApiError(422, "invalid_request", f"cursor: {exc}") from None

        def keep(p: Any) -> bool:
            return include_filtered or is_exportable(p, min_confidence)

        page, next_cursor = records.preferences_page(service.db, job.id, after, limit, keep)
        headers = {}
        if next_cursor is not None:
            token = records.encode_cursor(next_cursor)
            headers["X-Next-Cursor"] = token
            next_url = request.url.include_query_params(cursor=token)
            headers["Link"] = f'<{next_url.path}?{next_url.query}>; rel="next"'

        async def lines() -> AsyncIterator[bytes]:
            for p in page:
                row = to_row(p, conversational=conversational, kind="preference")
                yield (json.dumps(row, ensure_ascii=False) + "\n").encode()

        return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)

    @v1.post("/jobs/{job_id}/cancel", tags=["jobs"], response_model=JobView, responses=_ERRORS)
    async def cancel_job(job_id: JobId, service: ServiceDep, owner: OwnerDep) -> JobView:
        """Stop a running or queued job. What it finished stays stored; resume it later."""
        job = service.owned_job(job_id, owner)
        if job.status in ("done", "failed") and not service.runner.active(job.id):
            raise ApiError(409, "conflict", f"job {job.id} is not running (it is {job.status})")
        if job.status != "cancelled":
            await service.runner.cancel(job.id)
        return service.view(get_job(service.db, job.id))

    @v1.post("/jobs/{job_id}/resume", tags=["jobs"], response_model=JobView, responses=_ERRORS)
    async def resume_job(job_id: JobId, service: ServiceDep, owner: OwnerDep) -> JobView:
        """Carry on a failed or cancelled job; finished model calls are not made again."""
        job = service.owned_job(job_id, owner)
        if job.status == "done":
            raise ApiError(409, "conflict", f"job {job.id} is already done")
        service.runner.start(job.id)
        return service.view(get_job(service.db, job.id))


def _summary(c: Constitution, frozen: Any = None) -> dict[str, Any]:
    return {
        "digest": c.digest,
        "version": c.version,
        "name": c.name,
        "message": frozen.message if frozen is not None else "",
        "frozen_at": frozen.frozen_at.isoformat() if frozen is not None else None,
        "principles": [p.id for p in c.enabled],
    }


def _constitution_routes(v1: APIRouter) -> None:
    @v1.get(
        "/constitutions", tags=["constitutions"], response_model=ConstitutionList, responses=_ERRORS
    )
    async def list_constitutions(service: ServiceDep, owner: OwnerDep) -> ConstitutionList:
        """Frozen versions (newest first) and the service's current principles."""
        current = service.constitutions.current()
        return ConstitutionList(
            current=ConstitutionSummary(**_summary(current)),
            frozen=[
                ConstitutionSummary(**_summary(v.constitution, v)) for v in history(service.db)
            ],
        )

    @v1.get(
        "/constitutions/diff",
        tags=["constitutions"],
        response_class=Response,
        responses={200: {"model": ConstitutionDiff}, 404: {"model": ErrorBody}, **_ERRORS},
    )
    async def diff(
        service: ServiceDep,
        owner: OwnerDep,
        a: Annotated[str, Query(min_length=1, max_length=80)],
        b: Annotated[str, Query(min_length=1, max_length=80)] = "current",
    ) -> Response:
        """What changed from `a` to `b` (version labels, digest prefixes or `current`)."""
        result = diff_constitutions(service.constitutions.get(a), service.constitutions.get(b))
        return service.json(result)

    @v1.get(
        "/constitutions/{ref}",
        tags=["constitutions"],
        response_model=ConstitutionDetail,
        responses={404: {"model": ErrorBody}, **_ERRORS},
    )
    async def show_constitution(
        ref: str, service: ServiceDep, owner: OwnerDep
    ) -> ConstitutionDetail:
        """A frozen version by digest (prefix) or version label; `current` for the live one."""
        if ref == "current":
            current = service.constitutions.current()
            return ConstitutionDetail(**_summary(current), constitution=current)
        try:
            frozen = get_version(service.db, ref)
        except VersionError as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        return ConstitutionDetail(
            **_summary(frozen.constitution, frozen), constitution=frozen.constitution
        )


def _health_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"], response_model=Health)
    async def healthz() -> Health:
        """Liveness: the process answers."""
        return Health()

    @app.get(
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


_UPLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "The prompts file."},
        "options": {
            "type": "string",
            "description": "JSON object: the job options of JobRequest (without `prompts`), "
            "plus `column` and `responses_column`.",
        },
    },
}
_JOB_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}},
        "multipart/form-data": {"schema": _UPLOAD_SCHEMA},
    },
}


def _add_schemas(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Put models that no route declares (the hand-parsed job body) into the OpenAPI schema."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _, defs = models_json_schema(
                [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in defs.get("$defs", {}).items():
                components.setdefault(name, definition)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: ServiceSettings) -> FastAPI:
    """The service for `settings`: store, models and job workers start with the app."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = open_store(settings.store_path)
        records.ensure_tables(db)
        service = Service(settings, db)
        app.state.service = service
        resumed = service.runner.resume_interrupted()
        if resumed:
            log.info("resumed %d interrupted job(s)", len(resumed))
        preload: asyncio.Task[Any] | None = None
        if settings.preload_judge:
            preload = asyncio.create_task(_preload(service))
        try:
            yield
        finally:
            if preload is not None:
                preload.cancel()
            await service.runner.aclose()
            await service.pool.aclose()
            db.close()

    app = FastAPI(
        title="charter",
        version=__version__,
        summary="Constitutional AI feedback and preference datasets over HTTP.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    v1 = APIRouter(prefix="/v1")
    _feedback_routes(v1)
    _job_routes(v1)
    _constitution_routes(v1)
    app.include_router(v1)
    _health_routes(app)
    _add_schemas(app, [JobRequest])
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ErrorShield)
    return app


async def _preload(service: Service) -> None:
    """Load the default judge in the background, so the first request does not wait for it."""
    with contextlib.suppress(ApiError):
        await service.judge(None)
