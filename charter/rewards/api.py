"""`ConstitutionRewards`: verl's and TRL's reward-function forms over one backend.

verl calls `compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)` per
response (naive reward manager; `compute_score_async` for its async reward loop) or
`compute_score_batch(data_sources=, solution_strs=, ground_truths=, extra_infos=, **kwargs)`
per batch (batch reward manager). The prompt is `extra_info[prompt_key]` ("prompt"): verl's
rows do not give it to the reward function otherwise. TRL calls `f(prompts, completions,
**columns)`; a `reference` column is a reference answer.
A batch groups responses by prompt, so a response that falls back gets its group's mean.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from charter.judge.reward import Reward, RewardCounts, RewardItem

from .backends import backend_for
from .settings import RewardSettings, RewardSetupError

VerlScore = float | dict[str, float]


def _text(value: Any, what: str) -> str:
    """A prompt or completion as text: a string, or chat messages' contents joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and all(
        isinstance(m, Mapping) and "content" in m for m in value
    ):
        return "\n\n".join(str(m["content"]) for m in value)
    raise RewardSetupError(
        f"charter.rewards: {what} is a {type(value).__name__}, not text or chat messages"
    )


class ConstitutionRewards:
    """The constitution as a reward, for verl and TRL, from one `RewardSettings`."""

    def __init__(self, settings: RewardSettings | None = None, **values: Any) -> None:
        self.settings = settings or RewardSettings.from_env(**values)
        self.backend = backend_for(self.settings)

    @property
    def counts(self) -> RewardCounts:
        """Rewards, judgments, failures, timeouts and fallbacks so far."""
        return self.backend.counts

    # ---------------------------------------------------------------- verl

    def verl_item(
        self, solution_str: str, ground_truth: Any, extra_info: Any, group: bool = False
    ) -> RewardItem:
        """One verl row as a reward item; its prompt from `extra_info[prompt_key]`."""
        key = self.settings.prompt_key
        if not isinstance(extra_info, Mapping) or extra_info.get(key) is None:
            keys = sorted(extra_info) if isinstance(extra_info, Mapping) else []
            raise RewardSetupError(
                f"charter.rewards: extra_info has no {key!r} (keys: {keys or 'none'}); "
                f"put each row's prompt in extra_info[{key!r}] when preparing the data, "
                "or name its key with prompt_key="
            )
        prompt = _text(extra_info[key], f"extra_info[{key!r}]")
        reference = None
        if self.settings.ground_truth_is_reference and isinstance(ground_truth, str):
            reference = ground_truth if ground_truth.strip() else None
        return RewardItem(
            prompt, _text(solution_str, "solution_str"), reference, prompt if group else None
        )

    def _verl(self, reward: Reward) -> VerlScore:
        if not self.settings.return_dict:
            return reward.reward
        return {
            "score": reward.reward,
            "fallback": float(reward.fallback),
            "timed_out": float(reward.timed_out),
        }

    def compute_score(
        self,
        data_source: Any,
        solution_str: str,
        ground_truth: Any,
        extra_info: Any = None,
        **kwargs: Any,
    ) -> VerlScore:
        """verl's per-response reward function (synchronous)."""
        item = self.verl_item(solution_str, ground_truth, extra_info)
        return self._verl(self.backend.rewards_sync([item])[0])

    async def compute_score_async(
        self,
        data_source: Any,
        solution_str: str,
        ground_truth: Any,
        extra_info: Any = None,
        **kwargs: Any,
    ) -> VerlScore:
        """verl's per-response reward function for its async reward loop."""
        item = self.verl_item(solution_str, ground_truth, extra_info)
        return self._verl((await self.backend.rewards([item]))[0])

    def compute_score_batch(
        self,
        data_sources: Sequence[Any],
        solution_strs: Sequence[str],
        ground_truths: Sequence[Any],
        extra_infos: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> list[VerlScore]:
        """verl's batch reward function: one request, grouped by prompt, for the whole batch."""
        extras = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
        items = [
            self.verl_item(s, g, e, group=True)
            for s, g, e in zip(solution_strs, ground_truths, extras, strict=True)
        ]
        return [self._verl(r) for r in self.backend.rewards_sync(items)]

    # ---------------------------------------------------------------- TRL

    def trl_items(
        self, prompts: Sequence[Any], completions: Sequence[Any], reference: Any = None
    ) -> list[RewardItem]:
        refs = list(reference) if reference is not None else [None] * len(completions)
        items = []
        for prompt, completion, ref in zip(prompts, completions, refs, strict=True):
            text = _text(prompt, "a prompt")
            ref_text = _text(ref, "a reference") if ref is not None else None
            items.append(
                RewardItem(text, _text(completion, "a completion"), ref_text or None, text)
            )
        return items

    def trl_reward_func(self) -> Callable[..., list[float | None]]:
        """TRL's `reward_funcs` form: `f(prompts, completions, **columns)`, one float each."""

        def constitution(
            prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
        ) -> list[float | None]:
            items = self.trl_items(prompts, completions, kwargs.get("reference"))
            results = self.backend.rewards_sync(items)
            log_metric = kwargs.get("log_metric")
            if callable(log_metric) and results:
                log_metric(
                    "charter/fallback_fraction", sum(r.fallback for r in results) / len(results)
                )
            return [r.reward for r in results]

        return constitution

    def close(self) -> None:
        """Close the judge or the HTTP client (a finished run's resources)."""
        self.backend.close()


_cache: dict[str, ConstitutionRewards] = {}


def rewards_for(kwargs: Mapping[str, Any]) -> ConstitutionRewards:
    """The `ConstitutionRewards` for the settings in `kwargs` (verl's `reward_kwargs`: any
    `RewardSettings` field; others are verl's own and ignored) and the environment; one per
    distinct settings, kept for the process."""
    fields = RewardSettings.model_fields
    values = {k: v for k, v in kwargs.items() if k in fields}
    settings = RewardSettings.from_env(**values)
    token = settings.token.get_secret_value() if settings.token else ""
    key = settings.model_dump_json() + "\0" + token
    found = _cache.get(key)
    if found is None:
        found = _cache[key] = ConstitutionRewards(settings)
    return found
