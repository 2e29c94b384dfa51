"""/v1/jobs: generation jobs (submitted as JSON or as an uploaded prompts file), their state,
cancel/resume, and their preference rows as paged JSONL."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from charter.jobs.results import is_exportable
from charter.jobs.spec import DEFAULT_MIN_CONFIDENCE, JobOptions
from charter.jobs.store import get_job
from charter.prompt_files import FORMATS, PromptFileError, PromptRecord, load_prompts
from charter.training_data import to_row

from .. import records
from ..auth import AuthFirst, OwnerDep
from ..errors import ERRORS, ApiError, InvalidFields, field_errors, invalid
from ..schemas import ErrorBody, JobCreated, JobList, JobRequest, JobView, UploadOptions
from ..state import ServiceDep

JOB_ID = r"^job-[0-9a-f]{12}$"
UPLOAD_PART_BYTES = 1024 * 1024  # the `options` form field; the file part is bounded by BodyLimit

JobId = Annotated[str, PathParam(pattern=JOB_ID, description="A job id, e.g. job-0123456789ab.")]

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

router = APIRouter(route_class=AuthFirst)


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
            fields = field_errors(list(exc.errors()))
            for field in fields:
                field.loc = "options" + (f".{field.loc}" if field.loc != "body" else "")
            raise InvalidFields(fields) from None
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


@router.post(
    "/jobs",
    tags=["jobs"],
    response_class=Response,
    status_code=201,
    responses={
        200: {"model": JobCreated, "description": "This token already had this job."},
        201: {"model": JobCreated, "description": "Job created and started."},
        413: {"model": ErrorBody},
        415: {"model": ErrorBody},
        **ERRORS,
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
            fields = field_errors(list(exc.errors()))
            for field in fields:
                field.loc = "body" + (f".{field.loc}" if field.loc != "body" else "")
            return invalid(fields)
        records_in = [p.to_record(f"prompts[{i}]") for i, p in enumerate(body.prompts)]
        options = JobOptions.model_validate(body.model_dump(include=set(JobOptions.model_fields)))
        source = f"inline: {len(records_in)} prompts"
        return service.submit(owner, records_in, options, body.constitution, source)
    if content_type == "multipart/form-data":
        try:
            records_in, upload_options, name, dropped = await _read_upload(request)
        except InvalidFields as exc:
            return invalid(exc.fields)
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
    raise ApiError(415, "unsupported_media_type", "send application/json or multipart/form-data")


@router.get("/jobs", tags=["jobs"], response_model=JobList, responses=ERRORS)
async def list_jobs(
    service: ServiceDep,
    owner: OwnerDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> JobList:
    """This token's jobs, most recently updated first."""
    ids = records.owned_job_ids(service.db, owner, limit)
    return JobList(jobs=[service.view(get_job(service.db, i)) for i in ids])


@router.get("/jobs/{job_id}", tags=["jobs"], response_model=JobView, responses=ERRORS)
async def show_job(job_id: JobId, service: ServiceDep, owner: OwnerDep) -> JobView:
    """State, progress, counts and errors of one of this token's jobs."""
    return service.view(service.owned_job(job_id, owner))


@router.get(
    "/jobs/{job_id}/preferences",
    tags=["jobs"],
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/x-ndjson": {}},
            "description": "One TRL preference row per line (the rows `charter export` "
            "writes). `X-Next-Cursor` (and a `Link: rel=next`) is set when more follow.",
        },
        **ERRORS,
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


@router.post("/jobs/{job_id}/cancel", tags=["jobs"], response_model=JobView, responses=ERRORS)
async def cancel_job(job_id: JobId, service: ServiceDep, owner: OwnerDep) -> JobView:
    """Stop a running or queued job. What it finished stays stored; resume it later."""
    job = service.owned_job(job_id, owner)
    if job.status in ("done", "failed") and not service.runner.active(job.id):
        raise ApiError(409, "conflict", f"job {job.id} is not running (it is {job.status})")
    if job.status != "cancelled":
        await service.runner.cancel(job.id)
    return service.view(get_job(service.db, job.id))


@router.post("/jobs/{job_id}/resume", tags=["jobs"], response_model=JobView, responses=ERRORS)
async def resume_job(job_id: JobId, service: ServiceDep, owner: OwnerDep) -> JobView:
    """Carry on a failed or cancelled job; finished model calls are not made again."""
    job = service.owned_job(job_id, owner)
    if job.status == "done":
        raise ApiError(409, "conflict", f"job {job.id} is already done")
    service.runner.start(job.id)
    return service.view(get_job(service.db, job.id))
