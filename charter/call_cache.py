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

Where the store is not at hand the same keys travel: a Ray worker's `RecordingModel` answers
from the replies its driver looked up for it (with `StoreLookup`, which runs the prompt's own
code against the store and notes what it finds) and sends every new reply back as a
`CallRecord`, which the driver writes with `keep_calls`.

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
    BackendError,
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


@dataclass(frozen=True)
class CallRecord:
    """One completed call as the `calls` table keeps it (request and reply as JSON text), so
    it can travel (from a Ray worker to the driver that commits it) and be written as is."""

    key: str
    model: str
    kind: str
    request: str
    completion: str

    @classmethod
    def of(
        cls, key: str, model: str, kind: str, payload: dict[str, Any], completion: Completion
    ) -> CallRecord:
        return cls(
            key, model, kind, json.dumps(payload, ensure_ascii=False), completion.model_dump_json()
        )


def keep_calls(db: sqlite_utils.Database, records: Sequence[CallRecord]) -> None:
    """Write completed calls (those already kept are left as they are); call inside a
    transaction: the caller decides what commits with them."""
    at = datetime.now(UTC).isoformat()
    db.conn.executemany(
        f"INSERT OR IGNORE INTO {CALLS} (key, model, kind, request, completion, at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(r.key, r.model, r.kind, r.request, r.completion, at) for r in records],
    )


def stored_completions(db: sqlite_utils.Database, keys: Sequence[str]) -> dict[str, str]:
    """The stored reply (JSON) of each of `keys` the store has."""
    found: dict[str, str] = {}
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), 500):  # SQLite's bound on parameters per statement
        chunk = unique[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        rows = db.execute(f"SELECT key, completion FROM {CALLS} WHERE key IN ({marks})", chunk)
        found.update(dict(rows.fetchall()))
    return found


class CallCache(ChatModelBase):
    """A `ChatModel` that answers a call it has the reply of, and otherwise asks `inner` and
    keeps the reply when it is usable; closing it closes `inner`.

    Where replies are found and kept is the subclass's: the store (`CachedModel`), or calls
    handed over and sent back (`RecordingModel`, a Ray worker's). The keys, the usable rule
    and the counts are the same for all, so every path pays for the same calls.
    """

    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner
        self.stats = CallStats()

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
        stored = await self._stored(key)
        if stored is not None:
            return stored
        self._before_call()
        self.stats.in_flight += 1
        try:
            completion = await call()
        finally:
            self.stats.in_flight -= 1
        self.stats.made += 1
        self.stats.tokens += completion.usage.total_tokens
        if usable(completion):
            self._keep(CallRecord.of(key, self.spec, kind, payload, completion))
        return completion

    async def _stored(self, key: str) -> Completion | None:
        """The kept reply of call `key`, counted (None: the call must be made)."""
        raise NotImplementedError

    def _before_call(self) -> None:
        """Called before a call is made (a subclass may refuse it by raising)."""

    def _keep(self, record: CallRecord) -> None:
        """Keep a usable reply that was just paid for."""
        raise NotImplementedError


class CachedModel(CallCache):
    """Calls kept in the store, committed as each is answered. `tenant`: whose calls these
    are, so its counts and timings reveal nothing of other tenants' calls."""

    def __init__(
        self,
        inner: ChatModel,
        db: sqlite_utils.Database,
        tenant: str | None = None,
        reuse: ReuseSettings | None = None,
    ) -> None:
        ensure_tables(db)
        super().__init__(inner)
        self.db = db
        self.tenant = tenant
        self.reuse = reuse or (ReuseSettings.from_env() if tenant is not None else ReuseSettings())
        #: Set once the store refused a write (locked, read-only, full): later calls fail at
        #: once instead of paying for replies that could not be kept either.
        self._refused: Exception | None = None

    async def _stored(self, key: str) -> Completion | None:
        row = self.db.execute(f"SELECT completion FROM {CALLS} WHERE key = ?", [key]).fetchone()
        if row is None:
            return None
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

    def _before_call(self) -> None:
        self._raise_if_refused()

    def _keep(self, record: CallRecord) -> None:
        self._raise_if_refused()  # calls in flight when it happened need not wait to fail
        try:
            with self.db.conn:
                keep_calls(self.db, [record])
                self._note(record.key)
        except SqliteError as exc:
            self._refused = exc
            raise

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


class RecordingModel(CallCache):
    """Calls answered from `stored` (key -> reply JSON, looked up by whoever holds the store),
    the rest made with `inner` and each usable reply handed to `record` as it comes: a model
    for a process that never opens the store (a Ray worker, whose driver commits what it
    records)."""

    def __init__(
        self,
        inner: ChatModel,
        stored: Mapping[str, str],
        record: Callable[[CallRecord], None],
    ) -> None:
        super().__init__(inner)
        self.stored = dict(stored)
        self.record = record

    def add(self, stored: Mapping[str, str]) -> None:
        """More replies to answer from (the next shard's)."""
        self.stored.update(stored)

    async def _stored(self, key: str) -> Completion | None:
        found = self.stored.get(key)
        if found is None:
            return None
        self.stats.reused += 1
        return Completion.model_validate_json(found)

    def _keep(self, record: CallRecord) -> None:
        self.stored[record.key] = record.completion  # asked again within the shard: reused
        self.record(record)


class NotStored(BackendError):
    """A call a `StoreLookup` could not answer from the store."""


class StoreLookup(CallCache):
    """Answers only from the store and notes every reply it found (`found`): run the prompt's
    own code through it to learn which stored calls the prompt will need.

    A call the store lacks is not made. A `choose` gets an empty, unusable reply, so the judge
    goes on to its retries (whose replies may be stored); a `generate` fails with `NotStored`,
    since what follows depends on its text. So the lookup reaches every stored call that a run
    given the same replies would ask for.
    """

    def __init__(self, spec: str, db: sqlite_utils.Database) -> None:
        super().__init__(_Missing(spec))
        self.db = db
        self.found: dict[str, str] = {}
        self.missing = 0

    async def _stored(self, key: str) -> Completion | None:
        found = self.found.get(key)
        if found is None:
            row = self.db.execute(f"SELECT completion FROM {CALLS} WHERE key = ?", [key]).fetchone()
            if row is None:
                self.missing += 1
                return None
            found = self.found[key] = row[0]
        self.stats.reused += 1
        return Completion.model_validate_json(found)

    def _keep(self, record: CallRecord) -> None:
        raise AssertionError("a lookup makes no call")  # its inner model answers nothing usable


class _Missing(ChatModelBase):
    """What a `StoreLookup` asks when the store lacks a call: no model at all."""

    def __init__(self, spec: str) -> None:
        self._spec = spec

    @property
    def spec(self) -> str:
        return self._spec

    async def generate(self, request: GenerationRequest) -> Completion:
        raise NotStored(f"{self._spec}: not in the store")

    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion:
        return Completion(text="")  # unusable: the judge asks its next attempt

    async def aclose(self) -> None:
        return None


def _has_text(completion: Completion) -> bool:
    return bool(completion.text.strip())
