"""Settings models read from `CHARTER_*` environment variables, with one-line errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def model_from_env(
    model: type[M],
    variables: Mapping[str, str],
    env: Mapping[str, str] | None = None,
    error: type[ValueError] = ValueError,
) -> M:
    """`model`'s defaults, with each field whose variable (`variables[field]`) is set in `env`
    (default: os.environ); a value out of the field's bounds is an `error` naming the variable."""
    env = os.environ if env is None else env
    values = {field: env[var] for field, var in variables.items() if env.get(var)}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0])
        raise error(f"{variables[field]}={values.get(field)!r}: {err['msg']}") from None
