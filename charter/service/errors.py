"""The service's error responses: one JSON shape (`ErrorBody`) for every failure a client sees.

Handlers raise `ApiError`; validation errors become `invalid_request` with the failing fields;
unknown paths and methods keep their status but get the same body.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .schemas import ErrorBody, FieldError

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or invalid bearer token."},
    422: {"model": ErrorBody, "description": "Invalid request; `fields` says where."},
    429: {
        "model": ErrorBody,
        "description": "`rate_limited`: too many failed tokens from this address; "
        "`Retry-After` says when to try again.",
    },
}
JUDGE_ERRORS: dict[int | str, dict[str, Any]] = {
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


class ApiError(Exception):
    """An error a client caused or must know about; its message is safe to show."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class InvalidFields(Exception):
    """Fields of a hand-parsed request part that failed validation; answered as `invalid`."""

    def __init__(self, fields: list[FieldError]) -> None:
        super().__init__("invalid fields")
        self.fields = fields


def field_errors(errors: list[Any]) -> list[FieldError]:
    """Pydantic's error dicts as `FieldError`s with dotted locations (`prompts[0].text`)."""
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


def invalid(fields: list[FieldError]) -> JSONResponse:
    """The 422 `invalid_request` response: the first field in the message, all in `fields`."""
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


def install_error_handlers(app: FastAPI) -> None:
    """Answer `ApiError`, validation and routing errors with an `ErrorBody`."""

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        return _error(exc.status, exc.code, exc.message, {**headers, **exc.headers})

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError | ValidationError)
        return invalid(field_errors(list(exc.errors())))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return _error(exc.status_code, codes.get(exc.status_code, "error"), message)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
