"""What changed between two constitutions, principle by principle and field by field."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel

from .models import Constitution, Principle


class FieldChange(BaseModel):
    field: str
    before: Any
    after: Any
    diff: str = ""


class PrincipleChange(BaseModel):
    id: str
    changes: list[FieldChange]


class ConstitutionDiff(BaseModel):
    a_digest: str
    b_digest: str
    a_version: str
    b_version: str
    added: list[str]
    removed: list[str]
    changed: list[PrincipleChange]
    metadata: list[FieldChange]

    @property
    def same_meaning(self) -> bool:
        return self.a_digest == self.b_digest

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.metadata)


def diff_constitutions(a: Constitution, b: Constitution) -> ConstitutionDiff:
    a_by_id = {p.id: p for p in a.principles}
    b_by_id = {p.id: p for p in b.principles}
    changed = []
    for pid in sorted(a_by_id.keys() & b_by_id.keys()):
        changes = _principle_changes(a_by_id[pid], b_by_id[pid])
        if changes:
            changed.append(PrincipleChange(id=pid, changes=changes))
    metadata = [
        _field_change(name, getattr(a, name), getattr(b, name))
        for name in ("name", "version", "description")
        if getattr(a, name) != getattr(b, name)
    ]
    for name, before in a.defaults.model_dump().items():
        after = getattr(b.defaults, name)
        if before != after:
            metadata.append(_field_change(f"defaults.{name}", before, after))
    return ConstitutionDiff(
        a_digest=a.digest,
        b_digest=b.digest,
        a_version=a.version,
        b_version=b.version,
        added=sorted(b_by_id.keys() - a_by_id.keys()),
        removed=sorted(a_by_id.keys() - b_by_id.keys()),
        changed=changed,
        metadata=metadata,
    )


def _principle_changes(a: Principle, b: Principle) -> list[FieldChange]:
    return [
        _field_change(name, getattr(a, name), getattr(b, name))
        for name in Principle.model_fields
        if getattr(a, name) != getattr(b, name)
    ]


def _field_change(name: str, before: Any, after: Any) -> FieldChange:
    text_diff = ""
    if isinstance(before, str) and isinstance(after, str):
        text_diff = "\n".join(
            difflib.unified_diff(
                before.splitlines(), after.splitlines(), "before", "after", lineterm="", n=2
            )
        )
    return FieldChange(field=name, before=before, after=after, diff=text_diff)
