"""Failed credentials, counted per client address: a guesser is slowed to a trickle.

Each address has a bucket of `per_minute` attempts that refills at `per_minute` a minute; a
failed API token or sign-in takes one. While the bucket is empty every request from that
address that needs credentials gets 429 with `Retry-After`, before its token is checked or its
body read: a correct token gets 429 too, or the limit would tell a guesser when it had won.
Successful requests take nothing, so a trainer's thousands of rewards a second are never
limited. The table of addresses is bounded: full buckets (no recent failure) are dropped first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_ADDRESSES = 10_000


@dataclass
class _Bucket:
    attempts: float
    at: float


class FailureLimit:
    """Per-address buckets of failed credentials (see the module docstring)."""

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_addresses = max_addresses
        self._buckets: dict[str, _Bucket] = {}

    def _refilled(self, address: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(address)
        if bucket is not None:
            bucket.attempts = min(self.capacity, bucket.attempts + (now - bucket.at) * self.rate)
            bucket.at = now
        return bucket

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until `address` may try again, or None if it may now."""
        bucket = self._refilled(address, self.clock())
        if bucket is None or bucket.attempts >= 1.0:
            return None
        return max(1, math.ceil((1.0 - bucket.attempts) / self.rate))

    def failed(self, address: str) -> None:
        """Count one failed attempt from `address`."""
        now = self.clock()
        bucket = self._refilled(address, now)
        if bucket is None:
            if len(self._buckets) >= self.max_addresses:
                self._prune(now)
            bucket = self._buckets[address] = _Bucket(self.capacity, now)
        bucket.attempts = max(0.0, bucket.attempts - 1.0)

    def _prune(self, now: float) -> None:
        for address in list(self._buckets):
            self._refilled(address, now)
            if self._buckets[address].attempts >= self.capacity:
                del self._buckets[address]
        while len(self._buckets) >= self.max_addresses:  # all hold failures: the fullest go
            fullest = max(self._buckets, key=lambda a: self._buckets[a].attempts)
            del self._buckets[fullest]
