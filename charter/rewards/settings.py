"""Where `charter.rewards` gets its rewards: a `charter serve` URL, or a judge in this process.

Declared once here; each field can come from the environment (`from_env`) or from keyword
arguments (verl's `reward_kwargs`, or code). A URL wins: with `url` set, the service's judge
and principles apply and `judge`/`principles` only name which of the service's to use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from charter.judge.config import JudgeConfig
from charter.judge.reward import DEADLINE_FIELD
from charter.settings import DEFAULT_PRINCIPLES_DIR, JUDGE_BASE_URL_ENV, JUDGE_ENV, PRINCIPLES_ENV

URL_ENV = "CHARTER_REWARD_URL"
TOKEN_ENV = "CHARTER_API_TOKEN"
DEADLINE_ENV = "CHARTER_REWARD_DEADLINE_S"

ENV: dict[str, str] = {
    "url": URL_ENV,
    "token": TOKEN_ENV,
    "deadline_s": DEADLINE_ENV,
    "judge": JUDGE_ENV,
    "judge_base_url": JUDGE_BASE_URL_ENV,
    "principles": PRINCIPLES_ENV,
}
"""The environment variable of each setting that has one."""


class RewardSetupError(RuntimeError):
    """The rewards cannot be had as configured (the message says what to fix)."""


class RewardSettings(BaseModel):
    """How `charter.rewards` reaches a judge, and how it reads verl's rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(
        default=None,
        description="A `charter serve` base URL (http://host:port); unset: judge in-process.",
    )
    token: SecretStr | None = Field(
        default=None, description="The service's bearer token (URL mode)."
    )
    judge: str | None = Field(
        default=None,
        description="Judge model spec; in-process default: smollm2; URL mode: the service's.",
    )
    judge_base_url: str | None = Field(
        default=None, description="In-process: the endpoint of an openai: judge."
    )
    principles: Path = Field(
        default=DEFAULT_PRINCIPLES_DIR, description="In-process: the principles directory."
    )
    judge_config: JudgeConfig = Field(
        default=JudgeConfig(), description="How the judge is asked (every JudgeConfig field)."
    )
    deadline_s: float = DEADLINE_FIELD
    """In URL mode only a deadline given here (or in the environment) is sent; else the
    service's --reward-deadline applies."""
    prompt_key: str = Field(
        default="prompt",
        min_length=1,
        description="verl: the key of `extra_info` holding the prompt text (or chat messages).",
    )
    return_dict: bool = Field(
        default=True,
        description='verl: return {"score": reward, "fallback": 0/1, "timed_out": 0/1} (verl '
        "logs the extra keys); off: the bare reward, for reward managers that take only numbers.",
    )
    ground_truth_is_reference: bool = Field(
        default=True,
        description="verl: a non-empty string ground_truth is a reference answer, and the "
        "reward is P(response beats it); off: always the pointwise P(yes).",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> RewardSettings:
        """Settings from the environment, keyword arguments winning (None means unset)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {k: env[v] for k, v in ENV.items() if env.get(v)}
        given = {k: v for k, v in overrides.items() if v is not None}
        values.update(given)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else ""
            where = ".".join(str(p) for p in error["loc"])
            if field in ENV and field not in given:  # as charter.common.environment says it
                where = f"{ENV[field]}={values[field]!r}"
            raise RewardSetupError(f"charter.rewards: {where}: {error['msg']}") from None
