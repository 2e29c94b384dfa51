"""Shared CLI pieces: the --dir/--store/--json options, JSON output, and error handling.

Heavy imports (pydantic models, sqlite-utils, rich) happen inside commands, so that
`charter --help` stays fast.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from charter.settings import (
    DEFAULT_PRINCIPLES_DIR,
    DEFAULT_STORE_PATH,
    PRINCIPLES_ENV,
    STORE_ENV,
)

F = TypeVar("F", bound=Callable[..., Any])

dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_PRINCIPLES_DIR,
    envvar=PRINCIPLES_ENV,
    show_envvar=True,
    show_default=True,
    help="Directory of principle files.",
)

store_option = click.option(
    "--store",
    "store_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_STORE_PATH,
    envvar=STORE_ENV,
    show_envvar=True,
    show_default=True,
    help="SQLite store file.",
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def echo_json(data: Any) -> None:
    """Print `data` (pydantic models included) as indented JSON."""
    click.echo(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def friendly_errors(func: F) -> F:
    """Turn the errors a user can cause into one-line messages and exit code 1, no traceback.

    The error types are imported only when something was raised, so commands stay fast.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            from charter.constitution import ConstitutionError, VersionError
            from charter.jobs import JobError
            from charter.store import StoreError

            if isinstance(exc, ConstitutionError):
                for finding in exc.findings:
                    click.echo(f"Error: {finding}", err=True)
                raise SystemExit(1) from None
            user_errors = (
                VersionError, JobError, StoreError, FileExistsError, FileNotFoundError, ValueError
            )  # fmt: skip
            if isinstance(exc, user_errors):
                click.echo(f"Error: {exc}", err=True)
                raise SystemExit(1) from None
            raise

    return wrapper  # type: ignore[return-value]
