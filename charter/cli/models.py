"""The --judge / --policy options shared by every command that talks to a model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from charter.settings import (
    DEFAULT_MODEL,
    JUDGE_BASE_URL_ENV,
    JUDGE_ENV,
    POLICY_BASE_URL_ENV,
    POLICY_ENV,
)

if TYPE_CHECKING:
    import sqlite_utils

    from charter.batches.model import OpenAIBatchModel
    from charter.batches.options import BatchOptions
    from charter.judge import BackendOptions, ChatModel

F = TypeVar("F", bound=Callable[..., Any])

SPEC_HELP = "openai:MODEL (any OpenAI-compatible endpoint), hf:PATH (local transformers) or smollm2"


class _UrlList(click.ParamType[str]):
    """One or more URLs; an environment variable's value is split on commas, not spaces."""

    name = "URL[,URL...]"
    envvar_list_splitter = ","


def base_url_option(flag: str, envvar: str, help_text: str) -> Callable[[F], F]:
    """A base URL option that takes several endpoints (repeated and/or comma-separated),
    passed on as one comma-separated string, or None; a bad list is a one-line error naming
    the option or the environment variable it came from."""

    def joined(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> str | None:
        if not value:
            return None
        text = ",".join(value)
        from_env = ctx.get_parameter_source(str(param.name)) == ParameterSource.ENVIRONMENT
        from charter.judge.backends.options import split_base_urls

        try:
            split_base_urls(text, f"${envvar}" if from_env else flag)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        return text

    return click.option(
        flag,
        type=_UrlList(),
        multiple=True,
        envvar=envvar,
        show_envvar=True,
        callback=joined,
        help=f"{help_text} Several endpoints (repeat it, or separate with commas): each call "
        "goes to the one with the fewest in flight; one that fails is rested for "
        "$CHARTER_ENDPOINT_REST_S seconds and its calls go to the others.",
    )


def judge_options(func: F) -> F:
    """--judge, --judge-base-url, --timeout, --concurrency."""
    decorators = [
        click.option(
            "--judge",
            "judge_spec",
            default=DEFAULT_MODEL,
            envvar=JUDGE_ENV,
            show_envvar=True,
            show_default=True,
            help=f"Judge model: {SPEC_HELP}.",
        ),
        base_url_option(
            "--judge-base-url",
            JUDGE_BASE_URL_ENV,
            "Base URL for an openai: judge (else $OPENAI_BASE_URL). Key: $OPENAI_API_KEY.",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=60.0,
            show_default=True,
            help="Seconds per model request attempt; waiting for a free slot does not count.",
        ),
        click.option(
            "--concurrency",
            type=click.IntRange(min=1),
            default=16,
            show_default=True,
            help="Model requests in flight at once (per endpoint).",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def policy_options(func: F) -> F:
    """--policy and --policy-base-url."""
    func = base_url_option(
        "--policy-base-url",
        POLICY_BASE_URL_ENV,
        "Base URL for an openai: policy (else $OPENAI_BASE_URL).",
    )(func)
    return click.option(
        "--policy",
        "policy_spec",
        default=DEFAULT_MODEL,
        envvar=POLICY_ENV,
        show_envvar=True,
        show_default=True,
        help=f"Model that samples candidate responses: {SPEC_HELP}.",
    )(func)


def check_spec(spec: str, option: str) -> None:
    """A one-line error naming `option` and the accepted forms unless `spec` is one of them."""
    from charter.judge.backends.registry import parse_spec

    try:
        parse_spec(spec)
    except ValueError as exc:
        raise click.ClickException(f"{option}: {exc}") from None


def open_model(
    spec: str,
    base_url: str | None,
    timeout: float,
    concurrency: int,
    env_name: str,
    *,
    option: str,
) -> ChatModel:
    """Load the model `option` names, with a one-line error (no traceback) when that fails."""
    return load_for(spec, _backend_options(base_url, timeout, concurrency, env_name), option=option)


def load_for(spec: str, options: BackendOptions, *, option: str) -> ChatModel:
    """Load `spec` with `options`; a one-line error naming `option` when that fails."""
    from charter.judge import BackendError
    from charter.judge.backends.registry import load_model, uses_endpoint

    check_spec(spec, option)
    if not uses_endpoint(spec):
        # Our own progress bar owns the terminal; transformers' per-load bars are noise.
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        return load_model(spec, options)
    except (BackendError, OSError, ValueError) as exc:
        raise click.ClickException(f"{option}: cannot load {spec!r}: {exc}") from None


def open_batch_judge(
    spec: str,
    base_url: str | None,
    timeout: float,
    concurrency: int,
    db: sqlite_utils.Database,
    settings: BatchOptions,
) -> OpenAIBatchModel:
    """The judge for `--batch`: an openai: judge answering through the Batch API."""
    from charter.batches.model import OpenAIBatchModel
    from charter.judge.backends.registry import parse_spec

    check_spec(spec, "--judge")
    kind, name = parse_spec(spec)
    if kind != "openai":
        raise click.ClickException(
            f"--batch: the Batch API needs an openai:MODEL judge; this job's judge is {spec!r}"
        )
    options = _backend_options(base_url, timeout, concurrency, JUDGE_BASE_URL_ENV)
    if len(options.resolved_base_urls()) > 1:
        raise click.ClickException(
            "--batch: a batch goes to one endpoint; give one --judge-base-url"
        )
    return OpenAIBatchModel(name, db, settings, options)


def _backend_options(
    base_url: str | None, timeout: float, concurrency: int, env_name: str
) -> BackendOptions:
    from charter.judge import BackendOptions

    return BackendOptions.from_env(
        base_url=base_url,
        base_url_envs=(env_name, "OPENAI_BASE_URL"),
        timeout_s=timeout,
        max_concurrency=concurrency,
    )


def resolve_spec(text: str, flag: str) -> str:
    """A model spec as given, or `hf:PATH` for a bare local path; fails fast on a missing path.

    Checked before anything is loaded, so a typo costs no model load or generation.
    """
    from charter.judge.backends.registry import names_backend

    value = text.strip()
    if names_backend(value):
        if value.startswith("hf:"):
            _check_local(value[3:], flag)
        return value
    path = Path(value).expanduser()
    if path.exists():
        if not path.is_dir():
            raise click.BadParameter(f"{value!r} is not a model directory", param_hint=flag)
        return f"hf:{value}"
    raise click.BadParameter(
        f"model path {value!r} does not exist (give a model directory, hf:ORG/NAME for a model "
        "in the local Hugging Face cache, openai:MODEL, or smollm2)",
        param_hint=flag,
    )


def _check_local(path_or_id: str, flag: str) -> None:
    """`hf:` with something path-shaped (not a hub id) must exist."""
    looks_like_path = path_or_id.startswith(("/", ".", "~")) or path_or_id.count("/") > 1
    if looks_like_path and not Path(path_or_id).expanduser().exists():
        raise click.BadParameter(f"model path {path_or_id!r} does not exist", param_hint=flag)
