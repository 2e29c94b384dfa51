"""Online RLAIF with the constitution judge as the reward: what GRPO and RLOO share.

No reward model: every sampled completion is judged under the constitution (K principles, both
orders, position-debiased, see `charter.judge.compare`) and its reward is a probability of
winning, in [0, 1]. GRPO and RLOO both use rewards relative to the other completions of the same
prompt (GRPO: minus the group mean; RLOO: minus the mean of the others), so two ways to score a
group make sense:

- `reference`: each completion against a fixed reference answer for its prompt (the data's
  `reference` column, or `chosen` for preference data); reward = P(completion beats reference).
  G comparisons per prompt for G completions. The default when every row has a reference.
- `group`: round robin inside the group; reward = mean P(beats each other completion).
  G(G-1)/2 comparisons per prompt, and no reference needed. The default otherwise.

All of a step's comparisons are issued at once (one `asyncio.gather` on TRL's reward event
loop), so the judge backend's concurrency limit, not the step structure, bounds throughput.
A comparison with no successful judgment gets the mean reward of its group (zero advantage:
neither rewarded nor punished, never a silent 0 or 0.5 bias; `charter.judge.reward`, shared with
`charter.rewards` and the service); a step in which every comparison fails stops the run, since
training on no signal is worse than stopping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from charter.judge.config import JudgeConfig
from charter.judge.reward import DEFAULT_REWARD_DEADLINE, RewardDeadline

from .common import peft_config, prepare, train_to_card
from .config import RunConfig
from .data import as_text
from .errors import TrainError
from .models import load_causal_lm, load_tokenizer, model_kwargs, require_causal_lm
from .runtime import TrainResult

if TYPE_CHECKING:
    from charter.constitution import Constitution
    from charter.judge import ChatModel
    from charter.judge.reward import Judged

log = logging.getLogger("charter.trainer")

RewardMode = Literal["auto", "reference", "group"]


class JudgeFailed(TrainError):
    """Every comparison of a training step failed: the judge is down or unusable."""


@dataclass
class JudgedRunConfig(RunConfig):
    """Settings of a run rewarded by the judge, beyond its TRL config: the judge and how it
    scores a group.

    `judge`: a model spec (`openai:MODEL`, `hf:PATH`, `smollm2`) or a ready `ChatModel`.
    `constitution`: a principles directory or a loaded `Constitution`.
    `judge_config`: how the judge is asked (a `JudgeConfig`, or a dict of its fields); the
    CLI and config files give its fields as `judge_<field>` keys (`judge_protocol`, ...).
    `judge_deadline_s`: `RewardDeadline.deadline_s` for each step's rewards: a judgment not
    back by then gets its group's mean (zero advantage), so a slow judge never stalls a step.
    """

    judge: Any = "smollm2"
    judge_base_url: str | None = None
    judge_timeout: float = 60.0
    judge_concurrency: int = 16
    constitution: Any = "principles"
    reward_mode: RewardMode = "auto"
    judge_config: Any = None
    judge_deadline_s: float = DEFAULT_REWARD_DEADLINE.deadline_s

    def __post_init__(self) -> None:
        try:
            RewardDeadline(deadline_s=self.judge_deadline_s)
        except ValidationError as exc:
            raise TrainError(
                f"bad judge setting judge_deadline_s: {exc.errors()[0]['msg']}"
            ) from None
        if not isinstance(self.judge_config, JudgeConfig):
            try:
                self.judge_config = JudgeConfig.model_validate(self.judge_config or {})
            except ValidationError as exc:
                err = exc.errors()[0]
                key = "judge_" + ".".join(str(p) for p in err["loc"])
                raise TrainError(f"bad judge setting {key}: {err['msg']}") from None


class ConstitutionReward:
    """The constitution judge as a GRPO or RLOO reward; `reward_func` is what TRL calls.

    Judging, deadlines and fallbacks are `charter.judge.reward`'s; this adds the two ways
    to score a group, counts comparisons and failures so the run can report them, and stops
    the run when a step gets no verdict at all.
    """

    def __init__(
        self,
        model: ChatModel,
        constitution: Constitution,
        config: JudgeConfig | None = None,
        *,
        mode: RewardMode = "auto",
        deadline_s: float | None = None,
    ) -> None:
        from charter.judge.reward import ConstitutionRewarder

        self.rewarder = ConstitutionRewarder(model, constitution, config or JudgeConfig())
        self.mode = mode
        self.deadline_s = deadline_s
        self.failures = 0
        self.steps = 0
        self.last_failed_fraction = 0.0

    @property
    def comparisons(self) -> int:
        """Comparisons the judge was asked (identical texts tie without one)."""
        return self.rewarder.counts.judged

    @property
    def reward_func(self) -> Callable[..., Any]:
        """An async function (TRL detects coroutine functions, not async `__call__`)."""

        async def constitution_judge(
            prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
        ) -> list[float]:
            rewards = await self.score(prompts, completions, kwargs.get("reference"))
            log_metric = kwargs.get("log_metric")
            if callable(log_metric):
                log_metric("judge/failed_fraction", self.last_failed_fraction)
            return rewards

        return constitution_judge

    async def score(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        references: Sequence[Any] | None = None,
    ) -> list[float]:
        """One reward per completion: a win probability under the constitution."""
        from charter.judge.reward import RewardItem, fill_by_group, within_deadline

        prompt_texts = [as_text(p) or "" for p in prompts]
        texts = [as_text(c) or "" for c in completions]
        ref_texts = [as_text(r) for r in references] if references is not None else None
        mode = self.mode
        if mode == "auto":
            mode = "reference" if ref_texts and all(ref_texts) else "group"

        if mode == "reference":
            if not ref_texts or not all(ref_texts):
                raise TrainError(
                    "reward_mode 'reference' needs a reference answer for every prompt"
                )
            items = [
                RewardItem(prompt_texts[i], texts[i], ref_texts[i] or "", group=prompt_texts[i])
                for i in range(len(texts))
            ]
            results = await self.rewarder.rewards(items, deadline_s=self.deadline_s)
            failed = sum(r.fallback for r in results)
            total = len(results)
            rewards = [r.reward for r in results]
            first_error = next((r.error for r in results if r.error), None)
        else:
            groups: dict[str, list[int]] = {}
            for i, p in enumerate(prompt_texts):
                groups.setdefault(p, []).append(i)
            pairs = [
                (a, b)
                for members in groups.values()
                for n, a in enumerate(members)
                for b in members[n + 1 :]
            ]
            outcomes = await within_deadline(
                [self._beats(prompt_texts[a], texts[a], texts[b]) for a, b in pairs],
                self.deadline_s,
            )
            wins: dict[int, list[float]] = {i: [] for i in range(len(texts))}
            for (a, b), outcome in zip(pairs, outcomes, strict=True):
                p_a = outcome.result.value if outcome.result is not None else None
                if p_a is not None:
                    wins[a].append(p_a)
                    wins[b].append(1.0 - p_a)
            raw = [sum(w) / len(w) if w else None for w in (wins[i] for i in range(len(texts)))]
            rewards = fill_by_group(raw, prompt_texts)
            unanswered = [o for o in outcomes if o.result is None or o.result.value is None]
            failed, total = len(unanswered), len(outcomes)
            first_error = next((o.result.error for o in unanswered if o.result), None)

        self.failures += failed
        self.steps += 1
        self.last_failed_fraction = failed / total if total else 0.0
        if total and failed == total:
            raise JudgeFailed(
                f"the judge answered none of the {total} comparisons of a training step "
                f"({first_error or 'no verdict'}); check --judge / --judge-base-url"
            )
        if failed:
            log.warning("judge: %d of %d comparisons failed this step", failed, total)
        return rewards

    def _beats(self, prompt: str, a: str, b: str) -> Callable[[], Awaitable[Judged]]:
        return lambda: self.rewarder.beats(prompt, a, b)


def load_judged_constitution(value: Any) -> Constitution:
    from charter.constitution import Constitution, load_constitution

    if isinstance(value, Constitution):
        return value
    return load_constitution(Path(value))


def _load_judge(config: JudgedRunConfig) -> tuple[ChatModel, bool]:
    """(judge model, whether this run made it and so must close it)."""
    from charter.judge import BackendError, BackendOptions
    from charter.judge.backends.registry import load_model

    if not isinstance(config.judge, str):
        return config.judge, False
    options = BackendOptions.from_env(
        base_url=config.judge_base_url,
        timeout_s=config.judge_timeout,
        max_concurrency=config.judge_concurrency,
    )
    try:
        return load_model(config.judge, options), True
    except (BackendError, OSError, ValueError) as exc:
        raise TrainError(f"cannot load judge {config.judge!r}: {exc}") from None


def _reference_column(rows: list[dict[str, Any]]) -> list[str] | None:
    """Per-row reference answers: a `reference` column, else preference data's `chosen`."""
    for name in ("reference", "chosen"):
        values = [as_text(r.get(name)) for r in rows]
        if all(values):
            return [v for v in values if v is not None]
    return None


_SAMPLING = ("learning_rate", "beta", "num_generations", "max_completion_length", "temperature")
_SCHEDULE = (
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "seed",
)


@dataclass(frozen=True)
class OnlineMethod:
    """One online-RL method run by `train_judged`: its TRL config and trainer classes (by
    name in `trl`, imported when used), the settings its model card records (`own` between the
    ones every method records) and the metrics it logs. GRPO and RLOO differ only in these."""

    name: str
    trl_config: str
    trl_trainer: str
    own: tuple[str, ...]
    logged: tuple[tuple[str, str | None], ...]

    @property
    def hyperparameters(self) -> list[str]:
        return [*_SAMPLING, *self.own, *_SCHEDULE]

    def trl_config_class(self) -> type[Any]:
        import trl

        return getattr(trl, self.trl_config)  # type: ignore[no-any-return]

    def train(self, config: JudgedRunConfig) -> TrainResult:
        import trl

        return train_judged(
            config,
            method=self.name,
            trl_cls=self.trl_config_class(),
            trainer_cls=getattr(trl, self.trl_trainer),
            hyperparameters=self.hyperparameters,
            logged=self.logged,
        )


def train_judged(
    config: JudgedRunConfig,
    *,
    method: str,
    trl_cls: type[Any],
    trainer_cls: type[Any],
    hyperparameters: list[str],
    logged: Sequence[tuple[str, str | None]],
) -> TrainResult:
    """Train the policy online with `trainer_cls` (GRPO, RLOO), the judge scoring every
    completion; the checks, the judge's lifetime and the card are the same for both."""
    if config.reward_mode not in ("auto", "reference", "group"):
        raise TrainError(
            f"reward_mode must be auto, reference or group, not {config.reward_mode!r}"
        )
    prepared = prepare(config, trl_cls=trl_cls, kind="prompt")
    config = prepared.config  # model specs resolved
    constitution = load_judged_constitution(config.constitution)
    require_causal_lm(config.model)
    tokenizer = load_tokenizer(config.model, conversational=prepared.data.conversational)

    rows = prepared.data.train
    references = _reference_column(rows)
    mode = config.reward_mode
    if mode == "auto":
        mode = "reference" if references is not None else "group"
    if mode == "reference" and references is None:
        raise TrainError(
            f"{prepared.data.source}: reward_mode 'reference' needs a reference answer per prompt "
            "(a `reference` column, or preference data's `chosen`); or use --reward-mode group"
        )
    columns: dict[str, list[Any]] = {"prompt": [r["prompt"] for r in rows]}
    if mode == "reference" and references is not None:
        columns["reference"] = references
    from datasets import Dataset

    train_dataset = Dataset.from_dict(columns)

    judge, owned = _load_judge(config)
    reward = ConstitutionReward(
        judge, constitution, config.judge_config, mode=mode, deadline_s=config.judge_deadline_s
    )
    policy = load_causal_lm(config.model, model_kwargs(config.trl))
    trainer = trainer_cls(
        model=policy,
        reward_funcs=[reward.reward_func],
        args=prepared.args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=peft_config(config, "CAUSAL_LM"),
    )
    judge_spec = config.judge if isinstance(config.judge, str) else getattr(judge, "spec", "model")
    return train_to_card(
        trainer,
        prepared,
        method=method,
        hyperparameters=hyperparameters,
        settings={"reward_mode": mode},
        logged=logged,
        measure=lambda: {
            "judge_comparisons": reward.comparisons,
            "judge_failed_comparisons": reward.failures,
        },
        cleanup=(lambda: _close_on_loop(trainer, judge)) if owned else None,
        extra={
            "online_judge": {
                "judge": judge_spec,
                "constitution_digest": constitution.digest,
                "constitution_version": constitution.version,
                "constitution_name": constitution.name,
                "reward_mode": mode,
                "judge_deadline_s": reward.deadline_s,
                "judge_config": config.judge_config.resolved(judge_spec).model_dump(mode="json"),
            }
        },
    )


def _close_on_loop(trainer: Any, judge: ChatModel) -> None:
    """Close the judge's client on the event loop that used it (TRL's reward loop)."""
    loop = getattr(trainer, "async_loop", None)
    try:
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(judge.aclose(), loop).result(timeout=30)
        else:
            asyncio.run(judge.aclose())
    except Exception as exc:  # closing is best effort; the run's result matters more
        log.debug("closing the judge failed: %s", exc)
