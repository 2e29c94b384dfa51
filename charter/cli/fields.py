"""Click options built from a pydantic model's fields, so a setting is declared only once.

As TRL's parser builds its CLI from its config dataclasses, `model_options(JudgeConfig)` turns
each field into an option: its name (`critique_max_tokens` -> `--critique-max-tokens`), type
and bounds (`ge`/`le` -> an `IntRange`), choices (`Literal` -> `Choice`), flags (`bool` ->
`--x/--no-x`), default and help all come from the field; a field whose `json_schema_extra`
names a `flag_value` is an option whose value may be left out (`--ray` alone, or `--ray
ADDRESS`). The command receives one validated model instead of a dozen loose arguments.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

import annotated_types
import click
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

F = TypeVar("F", bound=Callable[..., Any])


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _bounds(info: FieldInfo) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for meta in info.metadata:
        if isinstance(meta, annotated_types.Ge):
            bounds["min"] = meta.ge
        elif isinstance(meta, annotated_types.Gt):
            bounds.update(min=meta.gt, min_open=True)
        elif isinstance(meta, annotated_types.Le):
            bounds["max"] = meta.le
        elif isinstance(meta, annotated_types.Lt):
            bounds.update(max=meta.lt, max_open=True)
    return bounds


def _click_type(info: FieldInfo) -> Any:
    kind = _unwrap_optional(info.annotation)
    if typing.get_origin(kind) is typing.Literal:
        return click.Choice([str(v) for v in typing.get_args(kind)])
    if kind is int:
        return click.IntRange(**_bounds(info))
    if kind is float:
        return click.FloatRange(**_bounds(info))
    return str


def field_option(
    name: str,
    info: FieldInfo,
    *,
    flag: str | None = None,
    param: str | None = None,
    unset_default: bool = False,
) -> Callable[[F], F]:
    """One click option for one model field (see the module docstring).

    `param` renames the command's argument; `unset_default` leaves the option None when not
    given (for commands that merge settings from several sources), naming the default in help.
    """
    dashed = flag or "--" + name.replace("_", "-")
    help_text = info.description or ""
    default = None if unset_default else info.default
    if unset_default and info.default is not None:
        help_text += f" [default: {info.default}]"
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "flag_value" in extra:  # `--x` alone means `flag_value`; `--x VALUE` gives a value
        return click.option(
            dashed,
            param or name,
            is_flag=False,
            flag_value=extra["flag_value"],
            default=default,
            metavar=str(extra.get("metavar", "[VALUE]")),
            help=help_text,
        )
    if _unwrap_optional(info.annotation) is bool:
        return click.option(
            f"{dashed}/--no-{dashed[2:]}",
            param or name,
            default=default,
            show_default=not unset_default,
            help=help_text,
        )
    return click.option(
        dashed,
        param or name,
        type=_click_type(info),
        default=default,
        show_default=default is not None,
        help=help_text,
    )


def model_options(
    model: type[BaseModel],
    *,
    into: str,
    include: Collection[str] | None = None,
    exclude: Collection[str] = (),
    flags: Mapping[str, str] | None = None,
) -> Callable[[F], F]:
    """Options for `model`'s fields, handed to the command as one validated `into=` model.

    `include`/`exclude` pick fields; fields left out keep the model's defaults. `flags`
    renames an option (`{"n": "-n"}`). A combination the model rejects is a usage error
    naming the option.
    """
    names = [
        n for n in model.model_fields if (include is None or n in include) and n not in exclude
    ]
    flags = dict(flags or {})

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def gather(*args: Any, **kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
            try:
                kwargs[into] = model.model_validate(values)
            except ValidationError as exc:
                err = exc.errors()[0]
                field = str(err["loc"][0]) if err["loc"] else ""
                option = flags.get(field, "--" + field.replace("_", "-"))
                raise click.BadParameter(err["msg"], param_hint=option) from None
            return func(*args, **kwargs)

        wrapped: Any = gather
        for n in reversed(names):
            wrapped = field_option(n, model.model_fields[n], flag=flags.get(n))(wrapped)
        return typing.cast(F, wrapped)

    return decorate
