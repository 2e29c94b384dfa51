"""Model calls remembered in the store, so a re-run or a resumed job never pays twice.

`CachedModel` wraps any `ChatModel`. Each call is keyed by a hash of everything that
determines its answer: the model spec, the kind of call, the exact messages, the options and
the sampling settings. A completed call is committed at once, so a process killed at any
point loses only the calls in flight.

The judge's prompts carry nonces that fence untrusted text; for those prompts to be
repeatable (and so cacheable) the judge draws nonces from a keyed hash of each question's
inputs (see `charter.judge.prompts.KeyedNonces`) with a secret kept in the store. The key
thus includes the principle's own text: editing one principle changes only the calls asked
under it, which are the only ones asked again.

Failed calls and unusable replies (a verdict that names no option, an empty text) are not
remembered: a re-run asks them again, so a judge that misbehaved for a while is given another
chance rather than having its bad answers replayed.

The service's tenants share the stored calls (no call is paid twice), but what one tenant
learns from its job must not tell it what another asked. A `CachedModel` with a `tenant`
therefore counts a stored call as `reused` only if that tenant has had it before (the
`call_tenants` table); a call first made for someone else counts as `made`, and is answered
after as long as it first took, as a call of its own would be, but never later than
`CHARTER_REUSED_CALL_DELAY_S` (10 s): a call first made on a loaded machine can have taken
minutes, and a job should not sit silent that long for an answer already in the store. While
a call waits so, its model's `stats.waiting` counts it, and a job shows that it is waiting.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlite_utils
from pydantic import BaseModel, ConfigDict, Field

from charter.common.environment import model_from_env
from charter.judge.backends.base import (
    ChatModel,
    ChatModelBase,
    Completion,
    GenerationRequest,
    Message,
)
from charter.judge.parse import parse_option
from charter.store import SqliteError, check_table, write_lock

CALLS = "calls"
CALL_TENANTS = "call_tenants"
SECRETS = "secrets"
#: `GenerationRequest` fields newer than the store format: keyed only when set.
_ADDED_LATER = ("frequency_penalty",)


@dataclass
class CallStats:
    """How many calls were answered from the store and how many went to the model (for a
    tenant: how many it had had before, and how many were new to it)."""

    reused: int = 0
    made: int = 0
    waiting: int = 0
    """Calls answered from the store that are sitting out their delay right now."""
    waited_s: float = 0.0
    """Seconds spent in those delays, in total."""
    in_flight: int = 0
    """Calls sent to the model and not answered yet."""
    tokens: int = 0
    """Prompt and completion tokens of the calls the model answered (not of reused ones)."""


REUSED_CALL_DELAY_ENV = "CHARTER_REUSED_CALL_DELAY_S"


class ReuseSettings(BaseModel):
    """How a tenant is answered a stored call another tenant paid for."""

    model_config = ConfigDict(frozen=True)

    max_delay_s: float = Field(
        default=10.0,
        ge=0.0,
        le=600.0,
        description="The longest a tenant waits for a stored call another tenant paid for: it "
        "is answered after as long as that call first took, up to this (so the timing does "
        "not tell who asked first, and a call that took minutes under load does not stall a "
        "job for minutes).",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReuseSettings:
        return model_from_env(cls, {"max_delay_s": REUSED_CALL_DELAY_ENV}, env)


def call_key(spec: str, kind: str, payload: dict[str, Any]) -> str:
    blob = json.dumps({"spec": spec, "kind": kind, **payload}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def generate_payload(request: GenerationRequest) -> dict[str, Any]:
    """What identifies a `generate` call, besides the model (see `call_key`)."""
    payload = {"request": request.model_dump(mode="json")}
    for name in _ADDED_LATER:  # at their defaults, calls stored before keep their keys
        if payload["request"][name] == GenerationRequest.model_fields[name].default:
            del payload["request"][name]
    return payload


def choose_payload(messages: Sequence[Message], options: Sequence[str]) -> dict[str, Any]:
    """What identifies a `choose` call, besides the model (see `call_key`)."""
    return {"messages": [m.model_dump(mode="json") for m in messages], "options": list(options)}


def ensure_tables(db: sqlite_utils.Database) -> None:
    """Create the tables if missing; `StoreError`, before creating any, if one of their names
    is another program's table. Two processes starting on a new store at once take turns."""
    tables: dict[str, tuple[dict[str, Any], str | tuple[str, ...]]] = {
        CALLS: (
            {"key": str, "model": str, "kind": str, "request": str, "completion": str, "at": str},
            "key",
        ),
        SECRETS: ({"name": str, "value": str}, "name"),
        CALL_TENANTS: ({"key": str, "tenant": str}, ("key", "tenant")),
    }
    present = {name for name, (columns, _) in tables.items() if check_table(db, name, columns)}
    if present == set(tables):
        return
    with write_lock(db):
        for name, (columns, pk) in tables.items():
            if name not in db.table_names():
                db[name].create(columns, pk=pk)  # type: ignore[union-attr]


def store_secret(db: sqlite_utils.Database, name: str = "nonce-key") -> bytes:
    """A random secret made once per store; it never leaves the store."""
    ensure_tables(db)
    with db.conn:
        db.execute(
            f"INSERT OR IGNORE INTO {SECRETS} (name, value) VALUES (?, ?)",
            [name, secrets.token_hex(32)],
        )
    row = db.execute(f"SELECT value FROM {SECRETS} WHERE name = ?", [name]).fetchone()
    return bytes.fromhex(row[0])


class CachedModel(ChatModelBase):
    """A `ChatModel` that answers repeated calls from the store; closing it closes `inner`.
    `tenant`: whose calls these are, so its counts and timings reveal nothing of other
    tenants' calls."""

    def __init__(
        self,
        inner: ChatModel,
        db: sqlite_utils.Database,
        tenant: str | None = None,
        reuse: ReuseSettings | None = None,
    ) -> None:
        ensure_tables(db)
        self.inner = inner
        self.db = db
        self.tenant = tenant
        self.reuse = reuse or (ReuseSettings.from_env() if tenant is not None else ReuseSettings())
        self.stats = CallStats()
        #: Set once the store refused a write (locked, read-only, full): later calls fail at
        #: once instead of paying for replies that could not be kept either.
        self._refused: Exception | None = None

    @property
    def spec(self) -> str:
        return self.inner.spec

    async def generate(self, request: GenerationRequest) -> Completion:
        payload = generate_payload(request)
        key = call_key(self.spec, "generate", payload)
        return await self._cached(
            key, "generate", payload, lambda: self.inner.generate(request), _has_text
        )

    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion:
        payload = choose_payload(messages, options)
        key = call_key(self.spec, "choose", payload)
        return await self._cached(
            key,
            "choose",
            payload,
            lambda: self.inner.choose(messages, options),
            lambda completion: parse_option(completion.text, list(options)) is not None,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def _cached(
        self,
        key: str,
        kind: str,
        payload: dict[str, Any],
        call: Callable[[], Awaitable[Completion]],
        usable: Callable[[Completion], bool],
    ) -> Completion:
        row = self.db.execute(f"SELECT completion FROM {CALLS} WHERE key = ?", [key]).fetchone()
        if row is not None:
            stored = Completion.model_validate_json(row[0])
            if self._had(key):
                self.stats.reused += 1
                return stored
            delay = min(stored.latency_s, self.reuse.max_delay_s)  # as slow as its call, capped
            self.stats.waiting += 1
            try:
                await asyncio.sleep(delay)
            finally:
                self.stats.waiting -= 1
                self.stats.waited_s += delay
            with self.db.conn:
                self._note(key)
            self.stats.made += 1
            return stored
        self._raise_if_refused()
        self.stats.in_flight += 1
        try:
            completion = await call()
        finally:
            self.stats.in_flight -= 1
        self.stats.made += 1
        self.stats.tokens += completion.usage.total_tokens
        if not usable(completion):
            return completion
        self._raise_if_refused()  # calls in flight when it happened need not wait to fail
        try:
            with self.db.conn:
                self.db.execute(
                    f"INSERT OR IGNORE INTO {CALLS} (key, model, kind, request, completion, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        key,
                        self.spec,
                        kind,
                        json.dumps(payload, ensure_ascii=False),
                        completion.model_dump_json(),
                        datetime.now(UTC).isoformat(),
                    ],
                )
                self._note(key)
        except SqliteError as exc:
            self._refused = exc
            raise
        return completion

    def _raise_if_refused(self) -> None:
        if self._refused is not None:
            raise self._refused.with_traceback(None)

    def _had(self, key: str) -> bool:
        """Whether this model's tenant has had the stored call `key` before (always, without
        a tenant: the CLI's store is its own)."""
        if self.tenant is None:
            return True
        row = self.db.execute(
            f"SELECT 1 FROM {CALL_TENANTS} WHERE key = ? AND tenant = ?", [key, self.tenant]
        ).fetchone()
        return row is not None

    def _note(self, key: str) -> None:
        """Record that this model's tenant has had the call `key` (inside a transaction)."""
        if self.tenant is not None:
            self.db.execute(
                f"INSERT OR IGNORE INTO {CALL_TENANTS} (key, tenant) VALUES (?, ?)",
                [key, self.tenant],
            )


def _has_text(completion: Completion) -> bool:
    return bool(completion.text.strip())
