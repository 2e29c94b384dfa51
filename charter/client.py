"""A small client for the charter HTTP service (`charter serve`), on httpx.

    with CharterClient("http://127.0.0.1:8000", token) as client:
        verdict = client.compare("How do I ...?", a=answer_1, b=answer_2)
        job = client.create_job(["prompt one", "prompt two"], judge="openai:gpt-4o-mini").job
        client.wait_for_job(job.id)
        rows = list(client.preferences(job.id))

`CharterClient` is synchronous; `AsyncCharterClient` has the same calls for asyncio code.
Errors the service reports raise `CharterAPIError` with its status, code and message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from charter.constitution import ConstitutionDiff
from charter.judge import Comparison, Ranking, RevisionChain
from charter.service.schemas import (
    ConstitutionDetail,
    ConstitutionList,
    JobCreated,
    JobList,
    JobView,
    Readiness,
)

__all__ = ["AsyncCharterClient", "CharterAPIError", "CharterClient", "PreferencePage"]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
FINAL_STATES = ("done", "failed", "cancelled", "stopped")


class CharterAPIError(Exception):
    """The service answered with an error (or not with JSON)."""

    def __init__(
        self, status: int, code: str, message: str, fields: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or []


@dataclass
class PreferencePage:
    rows: list[dict[str, Any]]
    next_cursor: str | None


@dataclass
class _Call(Generic[T]):
    """One API call, described once and sent by either client."""

    method: str
    path: str
    parse: Any  # Callable[[httpx.Response], T]
    json: Any = None
    params: Mapping[str, Any] | None = None
    files: Any = None
    data: Mapping[str, str] | None = None
    accept_status: tuple[int, ...] = ()

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        return http.build_request(
            self.method,
            self.path,
            json=self.json,
            params=self.params,
            files=self.files,
            data=self.data,
        )

    def result(self, response: httpx.Response) -> T:
        """The parsed reply, or `CharterAPIError` for an error status this call does not accept."""
        if response.status_code >= 400 and response.status_code not in self.accept_status:
            _raise_for(response)
        parsed: T = self.parse(response)
        return parsed


def _raise_for(response: httpx.Response) -> None:
    try:
        error = response.json()["error"]
        raise CharterAPIError(
            response.status_code, error["code"], error["message"], error.get("fields")
        )
    except (ValueError, KeyError, TypeError):
        text = response.text[:200]
        raise CharterAPIError(response.status_code, "http_error", text) from None


def _model(cls: type[M]) -> Any:
    return lambda response: cls.model_validate_json(response.content)


def _page(response: httpx.Response) -> PreferencePage:
    rows = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    return PreferencePage(rows, response.headers.get("X-Next-Cursor"))


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class _Calls:
    """The API's calls as `_Call` values; the clients only send them."""

    @staticmethod
    def compare(prompt: str, a: str, b: str, **options: Any) -> _Call[Comparison]:
        body = _drop_none({"prompt": prompt, "a": a, "b": b, **options})
        return _Call("POST", "/v1/feedback/compare", _model(Comparison), json=body)

    @staticmethod
    def critique(prompt: str, response: str, **options: Any) -> _Call[RevisionChain]:
        body = _drop_none({"prompt": prompt, "response": response, **options})
        return _Call("POST", "/v1/feedback/critique", _model(RevisionChain), json=body)

    @staticmethod
    def rank(prompt: str, responses: Sequence[str], **options: Any) -> _Call[Ranking]:
        body = _drop_none({"prompt": prompt, "responses": list(responses), **options})
        return _Call("POST", "/v1/feedback/rank", _model(Ranking), json=body)

    @staticmethod
    def create_job(prompts: Sequence[str | Mapping[str, Any]], **options: Any) -> _Call[JobCreated]:
        body = _drop_none({"prompts": list(prompts), **options})
        return _Call("POST", "/v1/jobs", _model(JobCreated), json=body)

    @staticmethod
    def upload_job(path: Path | str, **options: Any) -> _Call[JobCreated]:
        path = Path(path)
        files = {"file": (path.name, path.read_bytes(), "application/octet-stream")}
        data = {"options": json.dumps(_drop_none(options))}
        return _Call("POST", "/v1/jobs", _model(JobCreated), files=files, data=data)

    @staticmethod
    def job(job_id: str) -> _Call[JobView]:
        return _Call("GET", f"/v1/jobs/{job_id}", _model(JobView))

    @staticmethod
    def jobs(limit: int = 100) -> _Call[list[JobView]]:
        parse = _model(JobList)
        return _Call("GET", "/v1/jobs", lambda r: parse(r).jobs, params={"limit": limit})

    @staticmethod
    def cancel_job(job_id: str) -> _Call[JobView]:
        return _Call("POST", f"/v1/jobs/{job_id}/cancel", _model(JobView))

    @staticmethod
    def resume_job(job_id: str) -> _Call[JobView]:
        return _Call("POST", f"/v1/jobs/{job_id}/resume", _model(JobView))

    @staticmethod
    def preference_page(
        job_id: str, cursor: str | None = None, limit: int = 100, **options: Any
    ) -> _Call[PreferencePage]:
        params = _drop_none({"cursor": cursor, "limit": limit, **options})
        params = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in params.items()}
        return _Call("GET", f"/v1/jobs/{job_id}/preferences", _page, params=params)

    @staticmethod
    def constitutions() -> _Call[ConstitutionList]:
        return _Call("GET", "/v1/constitutions", _model(ConstitutionList))

    @staticmethod
    def constitution(ref: str) -> _Call[ConstitutionDetail]:
        return _Call("GET", f"/v1/constitutions/{ref}", _model(ConstitutionDetail))

    @staticmethod
    def diff(a: str, b: str = "current") -> _Call[ConstitutionDiff]:
        return _Call(
            "GET", "/v1/constitutions/diff", _model(ConstitutionDiff), params={"a": a, "b": b}
        )

    @staticmethod
    def healthz() -> _Call[bool]:
        return _Call("GET", "/healthz", lambda r: r.json().get("status") == "ok")

    @staticmethod
    def readyz() -> _Call[Readiness]:
        return _Call("GET", "/readyz", _model(Readiness), accept_status=(503,))


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class CharterClient:
    """Synchronous client; use as a context manager or call `close()`."""

    def __init__(self, base_url: str, token: str | None, *, timeout: float = 60.0) -> None:
        self.http = httpx.Client(base_url=base_url, headers=_headers(token), timeout=timeout)

    def _send(self, call: _Call[T]) -> T:
        return call.result(self.http.send(call.request(self.http)))

    def compare(self, prompt: str, a: str, b: str, **options: Any) -> Comparison:
        """Options: judge, constitution, and any `JudgeConfig` field (protocol, principles...)."""
        return self._send(_Calls.compare(prompt, a, b, **options))

    def critique(self, prompt: str, response: str, **options: Any) -> RevisionChain:
        """Options: judge, constitution, and any `JudgeConfig` field (revisions, seed...)."""
        return self._send(_Calls.critique(prompt, response, **options))

    def rank(self, prompt: str, responses: Sequence[str], **options: Any) -> Ranking:
        return self._send(_Calls.rank(prompt, responses, **options))

    def create_job(self, prompts: Sequence[str | Mapping[str, Any]], **options: Any) -> JobCreated:
        """Options: mode, judge, policy, n, temperature, max_tokens, pairs, constitution, and
        any `JudgeConfig` field (protocol, principles, seed, revisions...)."""
        return self._send(_Calls.create_job(prompts, **options))

    def upload_job(self, path: Path | str, **options: Any) -> JobCreated:
        """As `create_job`, with the prompts from a file (plus column, responses_column)."""
        return self._send(_Calls.upload_job(path, **options))

    def job(self, job_id: str) -> JobView:
        return self._send(_Calls.job(job_id))

    def jobs(self, limit: int = 100) -> list[JobView]:
        return self._send(_Calls.jobs(limit))

    def cancel_job(self, job_id: str) -> JobView:
        return self._send(_Calls.cancel_job(job_id))

    def resume_job(self, job_id: str) -> JobView:
        return self._send(_Calls.resume_job(job_id))

    def wait_for_job(self, job_id: str, *, timeout: float = 300.0, poll: float = 0.1) -> JobView:
        """Poll until the job is done, failed, cancelled or stopped (`FINAL_STATES`);
        `TimeoutError` after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.job(job_id)
            if view.state in FINAL_STATES:
                return view
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {view.state} after {timeout}s")
            time.sleep(poll)

    def preference_page(
        self, job_id: str, cursor: str | None = None, limit: int = 100, **options: Any
    ) -> PreferencePage:
        """One page of rows. Options: min_confidence, include_filtered, conversational."""
        return self._send(_Calls.preference_page(job_id, cursor, limit, **options))

    def preferences(
        self, job_id: str, limit: int = 100, **options: Any
    ) -> Iterator[dict[str, Any]]:
        """Every row of the job, page by page."""
        cursor: str | None = None
        while True:
            page = self.preference_page(job_id, cursor, limit, **options)
            yield from page.rows
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def constitutions(self) -> ConstitutionList:
        return self._send(_Calls.constitutions())

    def constitution(self, ref: str) -> ConstitutionDetail:
        return self._send(_Calls.constitution(ref))

    def diff(self, a: str, b: str = "current") -> ConstitutionDiff:
        return self._send(_Calls.diff(a, b))

    def healthz(self) -> bool:
        return self._send(_Calls.healthz())

    def readyz(self) -> Readiness:
        return self._send(_Calls.readyz())

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> CharterClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncCharterClient:
    """The asyncio client: the feedback and job calls, for many requests at once."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = 60.0,
        max_connections: int = 100,
    ) -> None:
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self.http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(token), timeout=timeout, limits=limits
        )

    async def _send(self, call: _Call[T]) -> T:
        return call.result(await self.http.send(call.request(self.http)))

    async def compare(self, prompt: str, a: str, b: str, **options: Any) -> Comparison:
        return await self._send(_Calls.compare(prompt, a, b, **options))

    async def critique(self, prompt: str, response: str, **options: Any) -> RevisionChain:
        return await self._send(_Calls.critique(prompt, response, **options))

    async def rank(self, prompt: str, responses: Sequence[str], **options: Any) -> Ranking:
        return await self._send(_Calls.rank(prompt, responses, **options))

    async def create_job(
        self, prompts: Sequence[str | Mapping[str, Any]], **options: Any
    ) -> JobCreated:
        return await self._send(_Calls.create_job(prompts, **options))

    async def job(self, job_id: str) -> JobView:
        return await self._send(_Calls.job(job_id))

    async def preference_page(
        self, job_id: str, cursor: str | None = None, limit: int = 100, **options: Any
    ) -> PreferencePage:
        return await self._send(_Calls.preference_page(job_id, cursor, limit, **options))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncCharterClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
