"""Settings checked against the declared types of the dataclass fields they set.

TRL's configs (and `TrainingArguments` under them) are dataclasses that take any value: a
`max_steps = "six"` from a TOML file is accepted at construction and fails as a `TypeError`
deep inside training, after the stages before it were paid for. Each value is checked here
against its field's annotation before anything runs, so the error is one line naming the
field.

The check reads plain annotations (`int`, `float`, `bool`, `str`, `None`, `Literal`, enums,
unions, `list[...]`, `tuple[...]`, `dict`); an annotation it cannot read (a forward reference
to an uninstalled package, a class such as `torch.dtype`) accepts any value, so TRL's own
checks still apply there. An int is a float (`learning_rate = 1`); a bool is not a number.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any

from .errors import SettingError

_UNKNOWN = object()


_TYPES: dict[type[Any], dict[str, Any]] = {}


def field_types(cls: type[Any]) -> dict[str, Any]:
    """The annotation of each init field of dataclass `cls`, resolved where possible."""
    if cls in _TYPES:
        return _TYPES[cls]
    out: dict[str, Any] = {}
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # a forward reference that does not resolve: field by field below
        hints = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in hints:
            out[f.name] = hints[f.name]
            continue
        annotation = f.type
        if isinstance(annotation, str):
            owner = next(
                (k for k in cls.__mro__ if f.name in getattr(k, "__annotations__", {})), cls
            )
            namespace = vars(sys.modules.get(owner.__module__, types.ModuleType("_")))
            try:
                annotation = eval(annotation, dict(namespace))
            except Exception:
                annotation = _UNKNOWN
        out[f.name] = annotation
    _TYPES[cls] = out
    return out


def describe(tp: Any) -> str:
    """A type as a user reads it: 'an integer', 'a number or null', ..."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if str in args:  # an enum beside str is a list of known strings, not a limit
            args = [a for a in args if not (isinstance(a, type) and issubclass(a, enum.Enum))]
        parts = [describe(a) for a in args]
        nullable = len(args) < len(typing.get_args(tp))
        text = " or ".join(dict.fromkeys(parts))
        return text + (" (or unset)" if nullable else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        items = typing.get_args(tp)
        inner = describe(items[0]) if items and items[0] is not Ellipsis else "values"
        plural = {"a string": "strings", "an integer": "integers", "a number": "numbers"}
        return f"a list of {plural.get(inner, inner)}"
    if origin is dict or tp is dict:
        return "a table"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def matches(value: Any, tp: Any) -> bool:
    """Whether `value` (as TOML or a flag gives it) fits annotation `tp`."""
    if tp is _UNKNOWN or tp is Any or tp is object:
        return True
    if tp is None or tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return isinstance(value, tp) or value in {m.value for m in tp}
    if origin in (list, set, frozenset) or tp in (list, set, frozenset):
        # TRL turns a lone string into a one-item list where a list of strings is declared
        # (DPOConfig.loss_type); any other lone value is not a list.
        if args and args[0] is str and isinstance(value, str):
            return True
        return isinstance(value, list | tuple) and all(matches(v, args[0]) for v in value if args)
    if origin is tuple or tp is tuple:
        if not isinstance(value, list | tuple):
            return False
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return all(matches(v, args[0]) for v in value) if args else True
        return len(value) == len(args) and all(
            matches(v, a) for v, a in zip(value, args, strict=True)
        )
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if origin is not None:  # another generic (Callable, Sequence, ...): not ours to judge
        return True
    if isinstance(tp, type):
        return isinstance(value, tp) or tp.__module__ not in ("builtins",)
    return True


def check_field_types(
    values: Mapping[str, Any], cls: type[Any], *, source: str, owner: str
) -> None:
    """Raise `SettingError` for the first value that does not fit its field of `cls`;
    `owner` says whose setting it is in the message (`trl.SFTConfig`, `charter`)."""
    types_ = field_types(cls)
    for key, value in values.items():
        tp = types_.get(key, _UNKNOWN)
        if not matches(value, tp):
            raise SettingError(source, key, f"must be {describe(tp)} ({owner}), not {value!r}")
