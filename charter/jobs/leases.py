"""Who is running a job: a lease in the store, so two runners never pay for the same calls.

A runner (a `charter generate` process, or a job task of the service) takes the job's lease
before it touches the job: one UPDATE that succeeds only while the lease is free, expired or
already its own, so of two runners starting at once exactly one gets it. The holder renews the
lease while it runs and releases it when it ends or stops. A runner killed with `kill -9` cannot
release it; its lease then expires `ttl_s` after the last renewal and the next run takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlite_utils
from pydantic import BaseModel, ConfigDict, Field

from charter.common.environment import model_from_env
from charter.jobs.store import JOBS, JobError
from charter.settings import LEASE_TTL_ENV
from charter.store import SqliteError

log = logging.getLogger(__name__)

RENEWALS_PER_TTL = 3
"""Renew every third of the TTL: two renewals in a row can miss (a busy store) before it lapses."""


class LeaseSettings(BaseModel):
    """How long a job's lease lasts; from `CHARTER_LEASE_TTL_S`, for the CLI and the service."""

    model_config = ConfigDict(frozen=True)

    ttl_s: float = Field(
        default=30.0,
        ge=1.0,
        le=3600.0,
        description="Seconds a job's lease lasts unless renewed (its runner renews it every "
        "third of that): how long a job whose runner was killed stays blocked.",
    )

    @property
    def renew_every_s(self) -> float:
        return self.ttl_s / RENEWALS_PER_TTL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LeaseSettings:
        return model_from_env(cls, {"ttl_s": LEASE_TTL_ENV}, env)


@dataclass(frozen=True)
class Lease:
    job_id: str
    holder: str
    expires_at: float
    """Unix time."""

    @property
    def until(self) -> str:
        return datetime.fromtimestamp(self.expires_at, UTC).isoformat(timespec="seconds")


class LeaseHeld(JobError):
    """Another runner holds the job's lease: running it here too would pay twice."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(
            f"job {lease.job_id} is already being run by {lease.holder} (host:pid:run), which "
            f"holds it until {lease.until} and renews that while it runs; wait for that run to "
            f"end, or stop it (Ctrl-C or SIGTERM), then `charter generate --resume "
            f"{lease.job_id}` (a runner killed with kill -9 frees the job when its lease expires)"
        )
        self.lease = lease


class LeaseLost(JobError):
    """This runner's lease expired (its renewals stalled) and another runner took the job."""


def new_holder() -> str:
    """A runner's identity: host and pid to find it, and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def current(db: sqlite_utils.Database, job_id: str) -> Lease | None:
    """The job's live lease, or None when no runner holds it."""
    rows = list(db[JOBS].rows_where("id = ?", [job_id])) if JOBS in db.table_names() else []
    if not rows:
        return None
    holder, expires = rows[0].get("lease_holder"), rows[0].get("lease_expires")
    if holder is None or expires is None or expires <= time.time():
        return None
    return Lease(job_id, str(holder), float(expires))


def ensure_free(db: sqlite_utils.Database, job_id: str) -> None:
    """Fail now, before loading models, if another runner holds the job (`take` decides)."""
    lease = current(db, job_id)
    if lease is not None:
        raise LeaseHeld(lease)


def take(db: sqlite_utils.Database, job_id: str, holder: str, settings: LeaseSettings) -> Lease:
    """The job's lease for `holder`, in one atomic UPDATE; `LeaseHeld` if another holds it."""
    for _ in range(3):  # the holder may release between our UPDATE and our look at it
        now = time.time()
        with db.conn:
            cursor = db.execute(
                f"UPDATE {JOBS} SET lease_holder = ?, lease_expires = ? WHERE id = ? AND "
                "(lease_holder IS NULL OR lease_holder = ? OR lease_expires IS NULL "
                "OR lease_expires <= ?)",
                [holder, now + settings.ttl_s, job_id, holder, now],
            )
        if cursor.rowcount == 1:
            return Lease(job_id, holder, now + settings.ttl_s)
        lease = current(db, job_id)
        if lease is not None:
            raise LeaseHeld(lease)
        if db.execute(f"SELECT 1 FROM {JOBS} WHERE id = ?", [job_id]).fetchone() is None:
            raise JobError(f"no job {job_id!r} in this store (see 'charter jobs list')")
    raise JobError(f"job {job_id}: its lease keeps changing hands; try again")


def renew(db: sqlite_utils.Database, lease: Lease, settings: LeaseSettings) -> bool:
    """Push the lease's expiry on; False if `lease.holder` no longer holds it."""
    with db.conn:
        cursor = db.execute(
            f"UPDATE {JOBS} SET lease_expires = ? WHERE id = ? AND lease_holder = ?",
            [time.time() + settings.ttl_s, lease.job_id, lease.holder],
        )
    return cursor.rowcount == 1


def release(db: sqlite_utils.Database, lease: Lease) -> None:
    """Free the job at once (only if `lease.holder` still holds it)."""
    with db.conn:
        db.execute(
            f"UPDATE {JOBS} SET lease_holder = NULL, lease_expires = NULL "
            "WHERE id = ? AND lease_holder = ?",
            [lease.job_id, lease.holder],
        )


@contextlib.asynccontextmanager
async def held(
    db: sqlite_utils.Database, job_id: str, settings: LeaseSettings | None = None
) -> AsyncIterator[Lease]:
    """Hold the job's lease for the body, renewing it in a background task.

    Should a renewal find the lease gone (the loop stalled past the TTL and another runner took
    the job), the body is cancelled and `LeaseLost` raised: the other runner carries on.
    """
    settings = settings or LeaseSettings.from_env()
    lease = take(db, job_id, new_holder(), settings)
    body = asyncio.current_task()
    taken_by: list[Lease | None] = []

    async def keep() -> None:
        while True:
            await asyncio.sleep(settings.renew_every_s)
            try:
                if renew(db, lease, settings):
                    continue
            except SqliteError as exc:  # a busy store: the next renewal tries again
                log.info("could not renew the lease of %s: %s", job_id, exc)
                continue
            taken_by.append(current(db, job_id))
            if body is not None:
                body.cancel()
            return

    keeper = asyncio.create_task(keep(), name=f"lease {job_id}")
    try:
        yield lease
    except asyncio.CancelledError:
        if taken_by and body is not None and body.uncancel() == 0:
            other = taken_by[0]
            raise LeaseLost(
                f"job {job_id}: this run's lease lapsed (no renewal for {settings.ttl_s:g} s) "
                f"and {other.holder if other else 'another runner'} took the job; this run "
                "stopped and left it to that one"
            ) from None
        raise
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        try:
            release(db, lease)
        except SqliteError as exc:  # the store refuses writes: the lease lapses on its own
            log.info(
                "could not release the lease of %s (it lapses in %g s): %s",
                job_id,
                settings.ttl_s,
                exc,
            )
