"""The two ways `charter.rewards` gets rewards: from a `charter serve` URL, or in-process.

Both answer a batch of `RewardItem`s with `Reward`s within the deadline and never raise for a
judge that is slow, down or unusable: those items fall back (flagged). What does raise
(`RewardSetupError`) is a setup the caller must fix: a refused token, a bad request, a missing
principles directory.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from typing import Any, Protocol

import httpx

from charter.judge._sync import on_shared_loop, run_sync
from charter.judge.reward import (
    MAX_DEADLINE_S,
    ConstitutionRewarder,
    Reward,
    RewardCounts,
    RewardDeadline,
    RewardItem,
    fallen_back,
)

from .settings import TOKEN_ENV, RewardSettings, RewardSetupError

log = logging.getLogger(__name__)

HTTP_GRACE_S = 15.0
"""The HTTP client waits this long past the deadline: the service answers by the deadline, so
a request still open after it means the service or the network is in trouble."""


class RewardBackend(Protocol):
    counts: RewardCounts

    def rewards_sync(self, items: Sequence[RewardItem]) -> list[Reward]: ...

    async def rewards(self, items: Sequence[RewardItem]) -> list[Reward]: ...


def all_fallback(items: Sequence[RewardItem], error: str, counts: RewardCounts) -> list[Reward]:
    """Every item fell back without a judgment (the service could not be reached)."""
    rewards = fallen_back(items, error)
    counts.add(RewardCounts.of_batch(rewards, judged=0))
    return rewards


class RemoteRewards:
    """Rewards from `POST {url}/v1/rewards`, with the bearer token from the settings (or
    $CHARTER_API_TOKEN)."""

    def __init__(self, settings: RewardSettings) -> None:
        assert settings.url is not None
        self.settings = settings
        self.endpoint = settings.url.rstrip("/") + "/v1/rewards"
        token = settings.token.get_secret_value() if settings.token else None
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Unset here, the deadline is the service's (--reward-deadline), at most the bound.
        self.deadline_s = settings.deadline_s if "deadline_s" in settings.model_fields_set else None
        longest = self.deadline_s or MAX_DEADLINE_S
        self.timeout = httpx.Timeout(longest + HTTP_GRACE_S, connect=10.0)
        self.counts = RewardCounts()
        self._client: httpx.Client | None = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def _body(self, items: Sequence[RewardItem]) -> dict[str, Any]:
        body: dict[str, Any] = self.settings.judge_config.model_dump(exclude_defaults=True)
        if self.settings.judge:
            body["judge"] = self.settings.judge
        if self.deadline_s is not None:
            body["deadline_s"] = self.deadline_s
        body["items"] = [{k: v for k, v in vars(item).items() if v is not None} for item in items]
        return body

    def rewards_sync(self, items: Sequence[RewardItem]) -> list[Reward]:
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout, headers=self.headers)
        try:
            response = self._client.post(self.endpoint, json=self._body(items))
        except httpx.HTTPError as exc:
            return self._unreachable(items, exc)
        return self._read(items, response)

    async def rewards(self, items: Sequence[RewardItem]) -> list[Reward]:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:  # an AsyncClient belongs to the loop it was made on
            client = httpx.AsyncClient(timeout=self.timeout, headers=self.headers)
            self._async[loop] = client
        try:
            response = await client.post(self.endpoint, json=self._body(items))
        except httpx.HTTPError as exc:
            return self._unreachable(items, exc)
        return self._read(items, response)

    def _unreachable(self, items: Sequence[RewardItem], exc: Exception) -> list[Reward]:
        reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
        log.warning(
            "charter rewards: %s did not answer (%s); fallback rewards", self.endpoint, reason
        )
        return all_fallback(items, f"the reward service did not answer ({reason})", self.counts)

    def _read(self, items: Sequence[RewardItem], response: httpx.Response) -> list[Reward]:
        if response.status_code >= 500:
            log.warning(
                "charter rewards: %s answered HTTP %d; fallback rewards: %.200s",
                self.endpoint,
                response.status_code,
                response.text,
            )
            return all_fallback(
                items, f"the reward service answered HTTP {response.status_code}", self.counts
            )
        if response.status_code != 200:
            raise RewardSetupError(self._refusal(response))
        try:
            body = response.json()
            results = [
                Reward(
                    reward=float(r["reward"]),
                    principle_scores={k: float(v) for k, v in r["principle_scores"].items()},
                    fallback=bool(r["fallback"]),
                    timed_out=bool(r["timed_out"]),
                    error=r.get("error"),
                )
                for r in body["rewards"]
            ]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return self._unreachable(items, exc)
        if len(results) != len(items):
            return self._unreachable(
                items, ValueError(f"{len(results)} rewards for {len(items)} items")
            )
        self.counts.add(
            RewardCounts.of_batch(results, judged=sum(not r.timed_out for r in results))
        )
        return results

    def _refusal(self, response: httpx.Response) -> str:
        try:
            error = response.json()["error"]
            detail = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            detail = response.text[:200]
        hint = f"; set {TOKEN_ENV} to one of its tokens" if response.status_code == 401 else ""
        status = response.status_code
        where = f"the reward service at {self.endpoint}"
        return f"{where} refused the request: HTTP {status} {detail}{hint}"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class InProcessRewards:
    """Rewards from a judge loaded in this process, run on charter's shared background loop
    (so sync and async callers on any loop share one model and its connections)."""

    def __init__(self, settings: RewardSettings) -> None:
        from charter.constitution import ConstitutionError, load_constitution

        self.settings = settings
        try:
            self.constitution = load_constitution(settings.principles)
        except (ConstitutionError, OSError) as exc:
            raise RewardSetupError(f"cannot load principles {settings.principles}: {exc}") from None
        self.counts = RewardCounts()
        self._rewarder: ConstitutionRewarder | None = None

    async def _rewarder_here(self) -> ConstitutionRewarder:
        if self._rewarder is None:
            from charter.judge import BackendError, BackendOptions
            from charter.judge.backends.registry import load_model
            from charter.settings import DEFAULT_MODEL

            spec = self.settings.judge or DEFAULT_MODEL
            try:
                model = load_model(spec, BackendOptions(base_url=self.settings.judge_base_url))
            except (BackendError, OSError, ValueError) as exc:
                raise RewardSetupError(f"cannot load judge {spec!r}: {exc}") from None
            config = RewardDeadline(deadline_s=self.settings.deadline_s)
            self._rewarder = ConstitutionRewarder(
                model, self.constitution, self.settings.judge_config, config
            )
            self._rewarder.counts = self.counts
        return self._rewarder

    async def _rewards_here(self, items: Sequence[RewardItem]) -> list[Reward]:
        rewarder = await self._rewarder_here()
        return await rewarder.rewards(items)

    def rewards_sync(self, items: Sequence[RewardItem]) -> list[Reward]:
        return run_sync(self._rewards_here(items))

    async def rewards(self, items: Sequence[RewardItem]) -> list[Reward]:
        return await on_shared_loop(self._rewards_here(items))

    def close(self) -> None:
        if self._rewarder is not None:
            run_sync(self._rewarder.model.aclose())
            self._rewarder = None


def backend_for(settings: RewardSettings) -> RemoteRewards | InProcessRewards:
    """The service at `settings.url`, else a judge in this process."""
    return RemoteRewards(settings) if settings.url else InProcessRewards(settings)
