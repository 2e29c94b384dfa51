"""ASGI guards and logging: bounded request bodies, no stack trace in any response or log.

`ErrorShield` answers an unexpected exception with a plain 500 and logs one line (the
exception's type), so neither the client nor the log gets a traceback; being outermost, it
also stamps when each request arrived (`arrived_at`), from which the reward deadline counts.
`BodyLimit` refuses a body over the limit with 413, by its Content-Length or, for a streamed
body, as soon as it has read too much. `OneLineFormatter` renders any exception a library logs
as one line.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


async def send_error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "fields": []}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


ARRIVED = "charter_arrived"
"""Key in the request's state: `time.monotonic()` when the request reached the app."""


def arrived_at(state: Any) -> float:
    """When the request whose `request.state` this is arrived (now, if it was not stamped)."""
    value = getattr(state, ARRIVED, None)
    return float(value) if value is not None else time.monotonic()


class ErrorShield:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Stamped first, before the body is read: a deadline counts from here.
        scope.setdefault("state", {})[ARRIVED] = time.monotonic()
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error(
                "%s %s failed: %s", scope.get("method"), scope.get("path"), type(exc).__name__
            )
            if not started:
                await send_error(send, 500, "internal_error", "internal error; see the service log")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"request body too large (limit {self.max_bytes} bytes)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await send_error(send, 400, "bad_request", "invalid Content-Length")
                    return
                if declared > self.max_bytes:
                    await send_error(send, 413, "too_large", self._message())
                    return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    await send_error(send, 413, "too_large", self._message())
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise


class OneLineFormatter(logging.Formatter):
    """Log lines without tracebacks: an exception becomes ` [Type: message]` on the same line."""

    def format(self, record: logging.LogRecord) -> str:
        exc_info, record.exc_info, record.exc_text = record.exc_info, None, None
        stack_info, record.stack_info = record.stack_info, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.stack_info = exc_info, stack_info
        if exc_info and exc_info[1] is not None:
            line += f" [{type(exc_info[1]).__name__}: {exc_info[1]}]"
        return line.replace("\n", " | ")


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` for the service and uvicorn: one line per event, stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "line": {
                "()": f"{__name__}.OneLineFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s: %(message)s",
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True},
            # One line per model request is noise at INFO; their failures are logged by charter.
            "httpx": {"level": "WARNING"},
            "httpx2": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }
