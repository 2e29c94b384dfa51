"""Shared CLI pieces: the --dir/--store/--json options, JSON output, and error handling.

Heavy imports (pydantic models, sqlite-utils, rich) happen inside commands, so that
`charter --help` stays fast.
"""

from __future__ import annotations

import functools
import json
import sys
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


def principles_dir_option(help: str = "Directory of principle files.") -> Callable[[F], F]:
    """`--dir`, the principles directory (a command may say what it uses it for)."""
    return click.option(
        "--dir",
        "directory",
        type=click.Path(path_type=Path, file_okay=False),
        default=DEFAULT_PRINCIPLES_DIR,
        envvar=PRINCIPLES_ENV,
        show_envvar=True,
        show_default=True,
        help=help,
    )


dir_option = principles_dir_option()

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


def _user_errors() -> tuple[type[BaseException], ...]:
    """Error types a user can cause, from the modules already loaded (an error whose module was
    never imported cannot have been raised), so catching them imports nothing."""
    names = {
        "charter.constitution.errors": ("ConstitutionError", "VersionError"),
        "charter.jobs.store": ("JobError",),
        "charter.store": ("StoreError",),
        "charter.trainer.errors": ("TrainError",),
    }
    found: list[type[BaseException]] = [FileExistsError, FileNotFoundError, ValueError]
    for module, classes in names.items():
        loaded = sys.modules.get(module)
        found += [getattr(loaded, c) for c in classes if loaded is not None and hasattr(loaded, c)]
    return tuple(found)


def _from_store(exc: Exception) -> Exception:
    """An error SQLite raised about the store (locked, read-only, disk full...) as the
    `StoreError` that names the command's --store file; any other error as it is."""
    store = sys.modules.get("charter.store")
    if store is None or not isinstance(exc, store.SqliteError):
        return exc
    ctx = click.get_current_context(silent=True)
    path = ctx.params.get("store_path") if ctx is not None else None
    return store.explain(exc, path)  # type: ignore[no-any-return]


def friendly_errors(func: F) -> F:
    """Turn the errors a user can cause into one-line messages and exit code 1, no traceback.

    An error carrying `findings` (a constitution that does not load) prints one line each.
    SQLite's errors, wherever a command meets them, are reported against its --store file.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as raised:
            exc = _from_store(raised)
            if not isinstance(exc, _user_errors()):
                raise
            findings = getattr(exc, "findings", None)
            for line in [str(f) for f in findings] if findings else [str(exc)]:
                click.echo(f"Error: {line}", err=True)
            raise SystemExit(1) from None

    return wrapper  # type: ignore[return-value]
