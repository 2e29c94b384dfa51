"""`charter serve`: the HTTP feedback service (FastAPI on uvicorn)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import click

from charter.judge.reward import RewardDeadline
from charter.service.settings import ServiceSettings

from .common import dir_option, friendly_errors, store_option
from .fields import field_option
from .models import check_spec, judge_options, policy_options

_SETTINGS = ServiceSettings.model_fields
"""The service's settings, each declared once: these options take their bounds and help."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """Bind first, so `--port 0` works and the real port can be announced."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    return sock


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--tokens-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    envvar="CHARTER_API_TOKENS_FILE",
    show_envvar=True,
    help="API tokens, one per line, each `token` or `name=token` (the name the review pages "
    "show); added to $CHARTER_API_TOKENS, comma-separated.",
)
@field_option("max_jobs", _SETTINGS["max_jobs"], unset_default=True)
@field_option(
    "deadline_s",
    RewardDeadline.model_fields["deadline_s"],
    flag="--reward-deadline",
    param="reward_deadline_s",
    unset_default=True,
)
@click.option(
    "--allow-model",
    "allowed_models",
    multiple=True,
    metavar="PATTERN",
    help=(_SETTINGS["allowed_models"].description or "")
    + " Repeat it for several; adds to $CHARTER_SERVICE_MODELS (comma-separated).",
)
@field_option("model_pool_size", _SETTINGS["model_pool_size"], unset_default=True)
@field_option("auth_failures_per_minute", _SETTINGS["auth_failures_per_minute"], unset_default=True)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@policy_options
@judge_options
@dir_option
@store_option
@friendly_errors
def serve(
    host: str,
    port: int,
    tokens_file: Path | None,
    max_jobs: int | None,
    reward_deadline_s: float | None,
    allowed_models: tuple[str, ...],
    model_pool_size: int | None,
    auth_failures_per_minute: int | None,
    log_level: str,
    policy_spec: str,
    policy_base_url: str | None,
    judge_spec: str,
    judge_base_url: str | None,
    timeout: float,
    concurrency: int,
    directory: Path,
    store_path: Path,
) -> None:
    """Serve constitutional feedback and preference datasets over HTTP (docs at /docs).

    Every /v1 endpoint needs `Authorization: Bearer TOKEN` with a token from
    $CHARTER_API_TOKENS or --tokens-file. Requests may name a model spec, never an endpoint:
    openai: models go to --judge-base-url / --policy-base-url. Jobs left running by a stopped
    service resume when it starts again.

    \b
    Example:
      CHARTER_API_TOKENS=$(python -c 'import secrets; print(secrets.token_urlsafe(32))') \\
        charter serve --judge openai:gpt-4o-mini
    """
    import logging.config

    import uvicorn

    from charter.constitution import load_constitution
    from charter.service.app import create_app
    from charter.service.middleware import logging_config
    from charter.service.settings import SettingsError
    from charter.store import open_store

    check_spec(judge_spec, "--judge")  # fail now, in one line, not when the models load
    check_spec(policy_spec, "--policy")
    try:
        settings = ServiceSettings.from_env(
            store_path=store_path,
            principles_dir=directory,
            judge=judge_spec,
            policy=policy_spec,
            judge_base_url=judge_base_url,
            policy_base_url=policy_base_url,
            timeout_s=timeout,
            model_concurrency=concurrency,
            max_jobs=max_jobs,
            reward_deadline_s=reward_deadline_s,
            allowed_models=allowed_models or None,
            model_pool_size=model_pool_size,
            auth_failures_per_minute=auth_failures_per_minute,
            tokens_file=tokens_file,
        )
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    load_constitution(settings.principles_dir)  # fail now, cleanly, not on the first request
    open_store(settings.store_path).close()

    config = logging_config(log_level.upper())
    logging.config.dictConfig(config)
    log = logging.getLogger("charter.service")
    if not _is_loopback(host):
        log.warning("listening on %s: reachable from other machines; put TLS in front of it", host)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"charter serve: listening on http://{shown}:{bound} (API docs at /docs)", err=True)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            log_config=config,
            timeout_graceful_shutdown=5,
            server_header=False,
        )
    )
    server.run(sockets=[sock])
