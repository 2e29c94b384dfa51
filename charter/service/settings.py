"""The service's configuration: one object, built from flags and the environment at start-up.

Everything a client cannot choose lives here (store, principles directory, model endpoints,
tokens, limits), so no request can point the service at a file or an address of its choosing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from charter.common.datafiles import DataFileError, read_text
from charter.common.environment import model_from_env
from charter.common.limits import InputLimits
from charter.judge.backends.options import ENV_VARIABLES, BackendOptions, split_base_urls
from charter.judge.reward import DEADLINE_FIELD
from charter.settings import (
    DEFAULT_MODEL,
    DEFAULT_PRINCIPLES_DIR,
    DEFAULT_STORE_PATH,
    JUDGE_BASE_URL_ENV,
    JUDGE_ENV,
    POLICY_BASE_URL_ENV,
    POLICY_ENV,
    PRINCIPLES_ENV,
    STORE_ENV,
)

TOKENS_ENV = "CHARTER_API_TOKENS"
TOKENS_FILE_ENV = "CHARTER_API_TOKENS_FILE"
OPERATORS_ENV = "CHARTER_OPERATORS"
MODELS_ENV = "CHARTER_SERVICE_MODELS"
MAX_BODY_ENV = "CHARTER_SERVICE_MAX_BODY"
MAX_JOBS_ENV = "CHARTER_SERVICE_MAX_JOBS"
REWARD_DEADLINE_ENV = "CHARTER_REWARD_DEADLINE_S"

MIN_TOKEN_LENGTH = 16
_OWNER_NAME = re.compile(r"[\w][\w .@-]{0,63}")


class SettingsError(ValueError):
    """The service cannot start with this configuration; the message says what to fix."""


def split_token_entry(entry: str) -> tuple[str | None, str]:
    """`name=token` gives (name, token), a bare token (None, token). The name is who the
    review pages say labelled a pair; a token that itself holds `=` needs a name in front."""
    name, sep, token = entry.partition("=")
    if sep and _OWNER_NAME.fullmatch(name.strip()) and token.strip().strip("="):
        return name.strip(), token.strip()
    return None, entry.strip()


def owner_of(token: str) -> str:
    """The stored identity of a token: a hash, so the store never holds a usable credential."""
    return hashlib.sha256(f"charter-api-token:{token}".encode()).hexdigest()


def read_tokens_file(path: Path) -> list[str]:
    """One token (or `name=token`) per line; blank lines and `#` comments are ignored."""
    try:
        text = read_text(path, InputLimits.from_env())
    except DataFileError as exc:
        raise SettingsError(f"tokens file {exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


class ServiceSettings(BaseModel):
    """What `create_app` needs. Tokens are `SecretStr`, so a repr or a log never shows them."""

    model_config = ConfigDict(frozen=True)

    store_path: Path = DEFAULT_STORE_PATH
    principles_dir: Path = DEFAULT_PRINCIPLES_DIR
    judge: str = DEFAULT_MODEL
    policy: str = DEFAULT_MODEL
    judge_base_url: str | None = Field(
        default=None,
        description="Endpoint(s) for openai: judges; several separated by commas.",
    )
    policy_base_url: str | None = Field(
        default=None,
        description="Endpoint(s) for openai: policies; several separated by commas.",
    )
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(
        default=BackendOptions.model_fields["max_retries"].default,
        ge=0,
        le=10,
        description="Retries of a failed model call (with backoff) before it counts as failed.",
    )
    model_concurrency: int = Field(default=16, ge=1, description="Requests in flight per model.")
    tokens: tuple[SecretStr, ...] = ()
    owner_names: dict[str, str] = Field(
        default_factory=dict,
        description="A person's name per token hash, from `name=token` entries of the tokens; "
        "the review pages show it as who labelled a pair (never the token).",
    )
    operators: tuple[str, ...] = Field(
        default=(),
        description="Names, from `name=token` entries of the tokens, of operators: in the "
        "review pages they also see the jobs made with the CLI, which belong to no token (no "
        "other token does). From CHARTER_OPERATORS, comma-separated.",
    )
    allowed_models: tuple[str, ...] = Field(
        default=(),
        description="fnmatch patterns of further model specs a request may name (e.g. "
        "'openai:*'); the service's judge and policy always may. Default: none, so no request "
        "makes the service load a model it was not started with.",
    )
    model_pool_size: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Models named by requests kept open at once, besides the service's judge "
        "and policy; past it the least recently used is closed.",
    )
    auth_failures_per_minute: int = Field(
        default=30,
        ge=1,
        le=100_000,
        description="Failed API tokens or sign-ins one client address may make per minute; "
        "past it, its requests get 429 with Retry-After until the count drains.",
    )
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_prompts: int = Field(default=10_000, ge=1, description="Prompts per job.")
    max_jobs: int = Field(
        default=2,
        ge=1,
        le=256,
        description="Generation jobs running at once; the rest queue. From "
        "CHARTER_SERVICE_MAX_JOBS.",
    )
    job_concurrency: int = Field(default=8, ge=1, description="Prompts in flight per job.")
    reward_deadline_s: float = DEADLINE_FIELD
    preload_judge: bool = Field(
        default=True, description="Load the default judge at start-up (local models are slow)."
    )

    @model_validator(mode="before")
    @classmethod
    def _named_tokens(cls, data: Any) -> Any:
        """Split `name=token` entries of `tokens` into the token and its owner's name."""
        if not isinstance(data, dict) or not data.get("tokens"):
            return data
        tokens, names = [], dict(data.get("owner_names") or {})
        for entry in data["tokens"]:
            text = entry.get_secret_value() if isinstance(entry, SecretStr) else str(entry)
            name, token = split_token_entry(text)
            tokens.append(token)
            if name is not None:
                names[owner_of(token)] = name
        return {**data, "tokens": tuple(dict.fromkeys(tokens)), "owner_names": names}

    @field_validator("tokens")
    @classmethod
    def _strong_tokens(cls, tokens: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        if not tokens:
            raise ValueError(
                f"no API tokens: set {TOKENS_ENV} (comma-separated) or {TOKENS_FILE_ENV}"
            )
        short = sum(1 for t in tokens if len(t.get_secret_value()) < MIN_TOKEN_LENGTH)
        if short:
            raise ValueError(
                f"{short} API token(s) shorter than {MIN_TOKEN_LENGTH} characters; use random "
                "tokens, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return tokens

    @model_validator(mode="after")
    def _operators_are_named_tokens(self) -> ServiceSettings:
        unknown = sorted(set(self.operators) - set(self.owner_names.values()))
        if unknown:
            raise ValueError(
                f"operators {', '.join(unknown)}: no token is named so; list the operator's "
                f"token as NAME=TOKEN in {TOKENS_ENV} or {TOKENS_FILE_ENV}"
            )
        return self

    @field_validator("judge_base_url", "policy_base_url")
    @classmethod
    def _url_list(cls, value: str | None) -> str | None:
        if value:
            split_base_urls(value, "")  # the error names the field
        return value

    @property
    def owners(self) -> frozenset[str]:
        return frozenset(owner_of(t.get_secret_value()) for t in self.tokens)

    def is_operator(self, owner: str) -> bool:
        """Whether the token hash `owner` is an operator's (sees the CLI's jobs)."""
        return self.owner_names.get(owner) in self.operators

    def owner_name(self, owner: str) -> str:
        """Who a token hash stands for: its declared name, else a short form of the hash."""
        return self.owner_names.get(owner) or f"token {owner[:8]}"

    def base_url_for(self, role: str) -> str | None:
        """The endpoint for `openai:` models in a role, as the CLI resolves it."""
        if role == "policy":
            return self.policy_base_url or os.environ.get("OPENAI_BASE_URL")
        return self.judge_base_url or os.environ.get("OPENAI_BASE_URL")

    def model_allowed(self, spec: str) -> bool:
        if spec in (self.judge, self.policy):
            return True
        return any(fnmatch.fnmatchcase(spec, pattern) for pattern in self.allowed_models)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ServiceSettings:
        """Settings from the environment, with explicit values (e.g. CLI flags) winning.

        Raises `SettingsError` with a one-line reason when the result is unusable.
        """
        env = os.environ if env is None else env
        try:  # the backends read theirs when a model loads: a bad one stops the start instead
            model_from_env(BackendOptions, ENV_VARIABLES, env)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        values: dict[str, Any] = {}
        for key, name in [
            ("store_path", STORE_ENV),
            ("principles_dir", PRINCIPLES_ENV),
            ("judge", JUDGE_ENV),
            ("policy", POLICY_ENV),
            ("judge_base_url", JUDGE_BASE_URL_ENV),
            ("policy_base_url", POLICY_BASE_URL_ENV),
            ("max_body_bytes", MAX_BODY_ENV),
            ("max_jobs", MAX_JOBS_ENV),
            ("reward_deadline_s", REWARD_DEADLINE_ENV),
        ]:
            if env.get(name):
                values[key] = env[name]
        for name in (JUDGE_BASE_URL_ENV, POLICY_BASE_URL_ENV, "OPENAI_BASE_URL"):
            if env.get(name):  # one rule for one URL and a list; the error names the variable
                try:
                    split_base_urls(env[name], f"${name}")
                except ValueError as exc:
                    raise SettingsError(str(exc)) from None
        if env.get(OPERATORS_ENV):
            values["operators"] = tuple(
                n.strip() for n in env[OPERATORS_ENV].split(",") if n.strip()
            )
        if env.get(MODELS_ENV):
            values["allowed_models"] = tuple(
                p.strip() for p in env[MODELS_ENV].split(",") if p.strip()
            )
        if "tokens" not in overrides:
            tokens = [t.strip() for t in env.get(TOKENS_ENV, "").split(",") if t.strip()]
            tokens_file = overrides.pop("tokens_file", None) or env.get(TOKENS_FILE_ENV)
            if tokens_file:
                tokens += read_tokens_file(Path(tokens_file))
            values["tokens"] = tuple(dict.fromkeys(tokens))
        else:
            overrides.pop("tokens_file", None)
        if overrides.get("allowed_models"):  # flags add to the variable's patterns
            given = tuple(overrides.pop("allowed_models"))
            values["allowed_models"] = (*values.get("allowed_models", ()), *given)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise SettingsError(_first_error(exc)) from None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", exc)).removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    return str(exc)
