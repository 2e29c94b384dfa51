"""Jailbreak templates: the same harmful request, plain and wrapped the ways attackers wrap it.

A template is a text with one `{request}` slot (role-play, the "grandmother" story, prefix
injection, fiction, refusal suppression, ...). An `encoding` template first transforms the
request in code (base64, leetspeak), so the file holds only the wording around it. Templates
live in a JSONL file (`id`, `name`, `template`, optional `encoding`); charter ships
`harm_templates.jsonl`, and `--templates-file` takes a user's own.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from charter.common.limits import InputLimits

from .data import SuiteFileError, read_rows, shipped_path

Encoding = Literal["base64", "leetspeak"]
SLOT = "{request}"
PLAIN = "plain"

_LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})


def encode(request: str, encoding: Encoding | None) -> str:
    """The request as the template's encoding writes it (unchanged without one)."""
    if encoding == "base64":
        return base64.b64encode(request.encode("utf-8")).decode("ascii")
    if encoding == "leetspeak":
        return request.lower().translate(_LEET)
    return request


class Template(BaseModel):
    """One way of asking: wording around a `{request}` slot, and an optional encoding."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    template: str
    encoding: Encoding | None = None

    def apply(self, request: str) -> str:
        """The prompt the model sees for `request` under this template."""
        return self.template.replace(SLOT, encode(request, self.encoding))


def load_templates(
    path: Path | str | None = None, *, limits: InputLimits | None = None
) -> list[Template]:
    """The templates in `path` (default: the shipped ones), each with exactly one slot and a
    unique id. Raises `SuiteFileError` naming the file and line."""
    path = Path(path) if path is not None else shipped_path("harm_templates.jsonl")
    limits = limits or InputLimits.from_env()
    templates: list[Template] = []
    for number, row in read_rows(path, limits, column="id"):
        try:
            template = Template.model_validate(dict(row))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(part) for part in err["loc"]) or "row"
            raise SuiteFileError(path, f"{where}: {err['msg']}", line=number) from None
        if template.template.count(SLOT) != 1:
            raise SuiteFileError(
                path, f"template {template.id!r} must hold {SLOT} exactly once", line=number
            )
        if any(t.id == template.id for t in templates):
            raise SuiteFileError(path, f"duplicate template id {template.id!r}", line=number)
        templates.append(template)
    if not templates:
        raise SuiteFileError(path, "no templates found")
    return templates


def pick_templates(templates: list[Template], wanted: str | None) -> list[Template]:
    """The templates named in the comma-separated `wanted` (all of them when None)."""
    if wanted is None:
        return templates
    names = [w.strip() for w in wanted.split(",") if w.strip()]
    known = {t.id: t for t in templates}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(
            f"unknown template(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"known: {', '.join(known)}"
        )
    return [known[n] for n in dict.fromkeys(names)]
