"""OpenAI's Files and Batches routes on the scripted judge server (loopback, real HTTP).

`ScriptedBatchServer` is a `ScriptedJudgeServer` (so chat completions still work, for the
policy) that also takes `/v1/files` uploads (multipart, `purpose=batch`), serves
`/v1/files/{id}/content`, and creates and retrieves `/v1/batches`. A batch stays
`in_progress` until `complete_after_s` has passed since its creation (or until `release()`
when `hold=True`), then, on the next retrieve, is answered line by line by the same
responder the chat route uses. Tests script the faults: `fail_item(body)` gives an item an HTTP
error, `expire_batches` ends the first batches `expired` after `expire_keep` answered items,
(listing the unanswered ones in the error file unless `list_expired=False`),
and `corrupt_output(batch_number, lines)` rewrites a batch's output lines (bad JSON, unknown
custom_ids); `create_delay_s` holds the answer to a batch creation (a client killed meanwhile
never learns the id); `route_faults` makes a route answer the given HTTP statuses before it
works. It lists batches newest first. It counts uploads, batch creations,
retrievals and answered items: what a real provider would charge for.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support.scripted_server import (
    Responder,
    ScriptedJudgeServer,
    _completion_body,
    _error_body,
    _Handler,
)

__all__ = ["ScriptedBatchServer"]

ItemFault = Callable[[dict[str, Any]], tuple[int, str] | None]
OutputCorruption = Callable[[int, list[str]], list[str]]


@dataclass
class _StoredBatch:
    id: str
    number: int  # 0 for the first batch created
    input_file_id: str
    created_at: float
    metadata: dict[str, Any] | None
    status: str = "in_progress"
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(
        default_factory=lambda: {"total": 0, "completed": 0, "failed": 0}
    )


class ScriptedBatchServer(ScriptedJudgeServer):
    def __init__(
        self,
        responder: Responder | None = None,
        *,
        complete_after_s: float = 0.0,
        hold: bool = False,
        fail_item: ItemFault | None = None,
        expire_batches: int = 0,
        expire_keep: int = 0,
        list_expired: bool = True,
        corrupt_output: OutputCorruption | None = None,
        create_delay_s: float = 0.0,
        route_faults: dict[str, list[int]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(responder, **kwargs)
        self._httpd.RequestHandlerClass = _BatchHandler
        self.complete_after_s = complete_after_s
        self.fail_item = fail_item
        self.expire_batches = expire_batches
        self.expire_keep = expire_keep
        self.list_expired = list_expired
        self.corrupt_output = corrupt_output
        self.create_delay_s = create_delay_s
        # Statuses each route ("upload", "create", "retrieve", "download") answers first, in
        # order, before it works; every request is counted in `route_calls`, refused or not.
        self.route_faults = {route: list(codes) for route, codes in (route_faults or {}).items()}
        self.route_calls: dict[str, int] = {}
        self._batch_lock = threading.Lock()  # not the base class's: answering takes that
        self._released = threading.Event()
        if not hold:
            self._released.set()
        self._ids = itertools.count(1)
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, _StoredBatch] = {}
        self.uploads = 0
        self.creations = 0
        self.retrievals: dict[str, int] = {}
        self.items_answered = 0
        self.answered_ids: list[str] = []  # custom_ids, in the order they were answered

    def refuses(self, route: str) -> int | None:
        """Count a request to `route`; the status to refuse it with, if one is scripted."""
        with self._batch_lock:
            self.route_calls[route] = self.route_calls.get(route, 0) + 1
            faults = self.route_faults.get(route)
            return faults.pop(0) if faults else None

    def release(self) -> None:
        """Let held batches end (at their next retrieve)."""
        self._released.set()

    def batch_inputs(self) -> list[list[dict[str, Any]]]:
        """Each batch's request lines, in creation order."""
        with self._batch_lock:
            batches = sorted(self.batches.values(), key=lambda b: b.number)
            return [_lines(self.files[b.input_file_id]) for b in batches]

    # ------------------------------------------------------------------ routes

    def upload(self, purpose: str, filename: str, data: bytes) -> dict[str, Any]:
        with self._batch_lock:
            file_id = f"file-{next(self._ids)}"
            self.files[file_id] = data
            self.uploads += 1
        return _file_object(file_id, filename, len(data), purpose)

    def create_batch(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        file_id = body.get("input_file_id")
        with self._batch_lock:
            if file_id not in self.files:
                return 400, _error_body(f"no file {file_id!r}", "invalid_request_error")
            batch = _StoredBatch(
                id=f"batch_{next(self._ids)}",
                number=len(self.batches),
                input_file_id=str(file_id),
                created_at=time.time(),
                metadata=body.get("metadata"),
            )
            batch.counts["total"] = len(_lines(self.files[batch.input_file_id]))
            self.batches[batch.id] = batch
            self.creations += 1
        if self.create_delay_s:  # created, but the client hears of it late (or never)
            self._stop.wait(self.create_delay_s)
        return 200, _batch_object(batch)

    def list_batches(self) -> dict[str, Any]:
        """Every batch, newest first, on one page."""
        with self._batch_lock:
            batches = sorted(self.batches.values(), key=lambda b: -b.number)
            data = [_batch_object(b) for b in batches]
        return {"object": "list", "data": data, "has_more": False}

    def retrieve_batch(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self._batch_lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return 404, _error_body(f"no batch {batch_id!r}", "not_found_error")
            self.retrievals[batch_id] = self.retrievals.get(batch_id, 0) + 1
            due = time.time() >= batch.created_at + self.complete_after_s
            if batch.status == "in_progress" and due and self._released.is_set():
                self._finish(batch)
            return 200, _batch_object(batch)

    def _finish(self, batch: _StoredBatch) -> None:
        """Answer every line of a batch (called with the lock held)."""
        expiring = batch.number < self.expire_batches
        output: list[str] = []
        errors: list[str] = []
        for index, line in enumerate(_lines(self.files[batch.input_file_id])):
            custom_id, body = line["custom_id"], line["body"]
            result: dict[str, Any] = {"id": f"batch_req_{index}", "custom_id": custom_id}
            if expiring and index >= self.expire_keep:
                result |= {
                    "response": None,
                    "error": {"code": "batch_expired", "message": "not answered in time"},
                }
                if self.list_expired:  # OpenAI lists them; a compatible server may not
                    errors.append(json.dumps(result))
                continue
            fault = self.fail_item(body) if self.fail_item is not None else None
            if fault is not None:
                status, message = fault
                response = {"status_code": status, "body": _error_body(message, "scripted")}
                errors.append(json.dumps(result | {"response": response, "error": None}))
                continue
            reply = self.responder(body)
            completion = _completion_body(self, body, reply)
            response = {"status_code": 200, "request_id": f"req_{index}", "body": completion}
            output.append(json.dumps(result | {"response": response, "error": None}))
            self.items_answered += 1
            self.answered_ids.append(custom_id)
        batch.counts.update(completed=len(output), failed=len(errors))
        if self.corrupt_output is not None:
            output = self.corrupt_output(batch.number, output)
        if output:
            batch.output_file_id = f"file-{next(self._ids)}"
            self.files[batch.output_file_id] = ("\n".join(output) + "\n").encode()
        if errors:
            batch.error_file_id = f"file-{next(self._ids)}"
            self.files[batch.error_file_id] = ("\n".join(errors) + "\n").encode()
        batch.status = "expired" if expiring else "completed"


class _BatchHandler(_Handler):
    server: Any

    def _refused(self, route: str) -> bool:
        """Answer a scripted fault for `route` instead of serving it (True if so)."""
        status = self.server.owner.refuses(route)
        if status is None:
            return False
        self._send_json(status, _error_body(f"scripted {route} fault", "server_error"))
        return True

    def do_GET(self) -> None:
        owner: ScriptedBatchServer = self.server.owner
        parts = self.path.split("?")[0].rstrip("/").split("/")
        is_batch = parts[:3] == ["", "v1", "batches"] and len(parts) == 4
        is_content = parts[:3] == ["", "v1", "files"] and len(parts) == 5 and parts[4] == "content"
        if (is_batch and self._refused("retrieve")) or (is_content and self._refused("download")):
            return
        if parts == ["", "v1", "batches"]:
            self._send_json(200, owner.list_batches())
        elif parts[:3] == ["", "v1", "batches"] and len(parts) == 4:
            status, payload = owner.retrieve_batch(parts[3])
            self._send_json(status, payload)
        elif parts[:3] == ["", "v1", "files"] and len(parts) == 5 and parts[4] == "content":
            with owner._batch_lock:
                data = owner.files.get(parts[3])
            if data is None:
                self._send_json(404, _error_body("no such file", "not_found_error"))
            else:
                self._send_bytes(200, data, "application/octet-stream")
        else:
            super().do_GET()

    def do_POST(self) -> None:
        owner: ScriptedBatchServer = self.server.owner
        path = self.path.rstrip("/")
        route = {"/v1/files": "upload", "/v1/batches": "create"}.get(path)
        if route is not None and self._refused(route):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            return
        if path == "/v1/files":
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            fields = _multipart(self.headers.get("Content-Type", ""), raw)
            if "file" not in fields or fields.get("purpose", (b"", ""))[0] != b"batch":
                self._send_json(400, _error_body("need a file and purpose=batch", "invalid"))
                return
            data, filename = fields["file"]
            self._send_json(200, owner.upload("batch", filename, data))
        elif path == "/v1/batches":
            length = int(self.headers.get("Content-Length") or 0)
            status, payload = owner.create_batch(json.loads(self.rfile.read(length)))
            self._send_json(status, payload)
        else:
            super().do_POST()


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[bytes, str]]:
    """name -> (content, filename) of a multipart/form-data body."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    fields: dict[str, tuple[bytes, str]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = (payload, str(part.get_filename() or ""))
    return fields


def _lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def _file_object(file_id: str, filename: str, size: int, purpose: str) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": int(time.time()),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
    }


def _batch_object(batch: _StoredBatch) -> dict[str, Any]:
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "errors": None,
        "input_file_id": batch.input_file_id,
        "completion_window": "24h",
        "status": batch.status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": int(batch.created_at),
        "request_counts": dict(batch.counts),
        "metadata": batch.metadata,
    }
