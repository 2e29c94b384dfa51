"""Version labels that never drift: every run records a frozen constitution.

A job or an eval run records the constitution it ran under, and its rows, dataset cards and
model cards repeat the label. So a run freezes that constitution first (`frozen_for_run`),
and the label it records is the frozen one: when the principles were edited without bumping
`version` in constitution.toml, the edited content is frozen under the next free label rather
than reusing one that already names other content. `charter constitution freeze` refuses
such a label the same way (`freeze`), counting labels jobs and eval runs recorded before this
rule existed.
"""

from __future__ import annotations

import logging

import sqlite_utils

from charter.constitution import Constitution, FreezeResult, LabelsSeen
from charter.constitution import freeze as freeze_version
from charter.constitution import freeze_for_run as freeze_run_version
from charter.store import write_lock

log = logging.getLogger(__name__)

RECORDERS = ("jobs", "eval_runs")
"""Tables whose rows record a constitution's label beside its digest."""


def labels_seen(db: sqlite_utils.Database) -> LabelsSeen:
    """Every label a job or eval run recorded, with the digests it was recorded with."""
    seen: dict[str, set[str]] = {}
    tables = set(db.table_names())
    for table in RECORDERS:
        if table not in tables:
            continue
        columns = set(db[table].columns_dict)
        if not {"constitution_version", "constitution_digest"} <= columns:
            continue
        rows = db.execute(
            f"SELECT DISTINCT constitution_version, constitution_digest FROM {table}"
        ).fetchall()
        for label, digest in rows:
            seen.setdefault(label, set()).add(digest)
    return seen


def freeze(
    db: sqlite_utils.Database, constitution: Constitution, message: str = ""
) -> FreezeResult:
    """`charter constitution freeze`: refuses a label any frozen version, job or eval run has
    used for other content, saying which label to use instead."""
    return freeze_version(db, constitution, message, seen=labels_seen(db))


def frozen_for_run(db: sqlite_utils.Database, constitution: Constitution) -> Constitution:
    """The constitution as a run must record it: frozen, and labelled as frozen."""
    with write_lock(db):  # reads labels then writes: two runs starting at once take turns
        result = freeze_run_version(db, constitution, seen=labels_seen(db))
    frozen = result.frozen
    if result.relabelled_from is not None:
        log.warning(
            "constitution.toml says version %s, which already names other content; this "
            "edited constitution (%s) is frozen as %s (set version = %r to name it yourself)",
            result.relabelled_from,
            frozen.digest[:12],
            frozen.version,
            frozen.version,
        )
    elif result.created:
        log.info("froze constitution %s (%s)", frozen.version, frozen.digest[:12])
    if frozen.version == constitution.version:
        return constitution
    return constitution.model_copy(update={"version": frozen.version})
