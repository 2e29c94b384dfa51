"""People labelling a blind sample of a job's pairs, and how far the judge agrees with them.

The sample is seeded by the job id, so every labeller of a job sees the same pairs; which of
a pair's texts is shown first ("A") is a seeded coin per pair, and the page never shows the
judge's verdict. Labels are stored by owner (a token hash) with the owner's name, in terms
of the row (`chosen`, `rejected` or `tie`), so agreement needs no second look at the order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import sqlite_utils

from charter.jobs.store import PREFERENCES, Preference, preference_from_row
from charter.judge.agreement import (
    DEFAULT_AGREEMENT,
    AgreementSettings,
    PrincipleAgreement,
    wilson,
)
from charter.judge.agreement import principle_agreement as by_principle
from charter.judge.qualify import LabelledPair, LabelQuality, label_quality
from charter.store import check_table, write_lock

from .detail import row_detail
from .rows import prompt_text

LABELS = "audit_labels"
_COLUMNS = ("job_id", "row_key", "owner", "owner_name", "label", "shown_first", "created_at")
SAMPLE_SIZE = 30

Label = Literal["chosen", "rejected", "tie"]
Choice = Literal["a", "b", "tie"]


def ensure_table(db: sqlite_utils.Database) -> None:
    """Create the labels table; `StoreError` if a table of its name is another program's."""
    with write_lock(db):
        if not check_table(db, LABELS, _COLUMNS):
            db[LABELS].create(  # type: ignore[union-attr]
                {c: str for c in _COLUMNS}, pk=("job_id", "row_key", "owner")
            )


def _coin(job_id: str, key: str) -> bool:
    """Whether the pair's chosen text is shown first: a fixed coin per (job, row)."""
    return hashlib.sha256(f"audit-order:{job_id}:{key}".encode()).digest()[0] % 2 == 0


def sample_keys(db: sqlite_utils.Database, job_id: str, size: int = SAMPLE_SIZE) -> list[str]:
    """A seeded random sample of the job's row keys (the same for every labeller).

    Row keys are SHA-256 digests, so the rows whose keys follow a seeded random point on
    the key index are a uniform sample, found without reading the whole job."""
    start = hashlib.sha256(f"audit-sample:{job_id}".encode()).hexdigest()
    keys = [
        r[0]
        for r in db.execute(
            # `+job_id`: walk the key index from the seeded point, not the job's rows
            f"SELECT key FROM {PREFERENCES} WHERE key >= ? AND +job_id = ? ORDER BY key LIMIT ?",
            [start, job_id, size],
        )
    ]
    if len(keys) < size:  # wrap around the key space
        keys += [
            r[0]
            for r in db.execute(
                f"SELECT key FROM {PREFERENCES} WHERE key < ? AND job_id = ? ORDER BY key LIMIT ?",
                [start, job_id, size - len(keys)],
            )
        ]
    return keys


@dataclass
class BlindPair:
    key: str
    prompt: str
    a: str
    b: str
    chosen_first: bool


def blind(job_id: str, key: str, preference: Preference) -> BlindPair:
    first = _coin(job_id, key)
    a, b = (
        (preference.chosen, preference.rejected)
        if first
        else (preference.rejected, preference.chosen)
    )
    return BlindPair(key, prompt_text(preference.prompt), a, b, first)


def _preferences(db: sqlite_utils.Database, job_id: str, keys: list[str]) -> dict[str, Preference]:
    if not keys:
        return {}
    marks = ",".join("?" * len(keys))
    rows = db[PREFERENCES].rows_where(f"job_id = ? AND key IN ({marks})", [job_id, *keys])
    return {str(r["key"]): preference_from_row(r) for r in rows}


def labelled_keys(db: sqlite_utils.Database, job_id: str, owner: str) -> set[str]:
    if LABELS not in db.table_names():
        return set()
    rows = db.execute(
        f"SELECT row_key FROM {LABELS} WHERE job_id = ? AND owner = ?", [job_id, owner]
    )
    return {r[0] for r in rows}


def next_pair(
    db: sqlite_utils.Database, job_id: str, owner: str
) -> tuple[BlindPair | None, int, int]:
    """The next sample pair `owner` has not labelled, with how many of the sample they have."""
    keys = sample_keys(db, job_id)
    done = labelled_keys(db, job_id, owner)
    todo = [k for k in keys if k not in done]
    labelled = len(keys) - len(todo)
    if not todo:
        return None, labelled, len(keys)
    preference = _preferences(db, job_id, todo[:1])[todo[0]]
    return blind(job_id, todo[0], preference), labelled, len(keys)


def record_label(
    db: sqlite_utils.Database, job_id: str, key: str, owner: str, name: str, choice: Choice
) -> bool:
    """Store `owner`'s verdict on a sample pair (a later one replaces theirs); False if the
    pair is not in the job's sample."""
    if key not in sample_keys(db, job_id):
        return False
    first = _coin(job_id, key)
    label: Label = "tie"
    if choice != "tie":
        label = "chosen" if (choice == "a") == first else "rejected"
    ensure_table(db)
    with db.conn:
        db[LABELS].upsert(  # type: ignore[union-attr]
            {
                "job_id": job_id,
                "row_key": key,
                "owner": owner,
                "owner_name": name,
                "label": label,
                "shown_first": "chosen" if first else "rejected",
                "created_at": datetime.now(UTC).isoformat(),
            },
            pk=("job_id", "row_key", "owner"),
        )
    return True


@dataclass
class HumanLabel:
    key: str
    owner_name: str
    label: Label
    preference: Preference


def human_labels(db: sqlite_utils.Database, job_id: str) -> list[HumanLabel]:
    if LABELS not in db.table_names():
        return []
    rows = list(
        db.execute(
            f"SELECT row_key, owner_name, label FROM {LABELS} WHERE job_id = ? ORDER BY created_at",
            [job_id],
        )
    )
    prefs = _preferences(db, job_id, sorted({r[0] for r in rows}))
    return [HumanLabel(k, n, lab, prefs[k]) for k, n, lab in rows if k in prefs]


@dataclass
class Agreement:
    labels: int
    ties: int
    people: dict[str, int]
    quality: LabelQuality | None
    interval: tuple[float, float] | None


def agreement(db: sqlite_utils.Database, job_id: str, tie_margin: float) -> Agreement:
    """The judge against the people on their decided labels: a pair counts as agreed when
    the person preferred the row's `chosen` text (the judge's pick)."""
    labels = human_labels(db, job_id)
    decided = [h for h in labels if h.label != "tie"]
    people: dict[str, int] = {}
    for h in labels:
        people[h.owner_name] = people.get(h.owner_name, 0) + 1
    quality = None
    interval = None
    if decided:
        preferred: list[Literal["a", "b"]] = ["a" if h.label == "chosen" else "b" for h in decided]
        quality = label_quality(preferred, [h.preference.p_chosen for h in decided], tie_margin)
        if quality.agreement is not None:
            interval = wilson(quality.correct, quality.decided)
    return Agreement(len(labels), len(labels) - len(decided), people, quality, interval)


def labelled_pairs(db: sqlite_utils.Database, job_id: str) -> list[LabelledPair]:
    """The people's decided labels as labelled pairs, in the order they were shown (A first),
    for `charter judge calibrate` and `charter judge eval`."""
    out = []
    for h in human_labels(db, job_id):
        if h.label == "tie":
            continue
        pair = blind(job_id, h.key, h.preference)
        picked_a = (h.label == "chosen") == pair.chosen_first
        out.append(
            LabelledPair(prompt=pair.prompt, a=pair.a, b=pair.b, preferred="a" if picked_a else "b")
        )
    return out


def pairs_jsonl(pairs: list[LabelledPair]) -> Iterator[str]:
    for pair in pairs:
        yield json.dumps(pair.model_dump(), ensure_ascii=False) + "\n"


def principle_agreement(
    db: sqlite_utils.Database,
    job_id: str,
    tie_margin: float,
    settings: AgreementSettings = DEFAULT_AGREEMENT,
) -> list[PrincipleAgreement]:
    """Each principle's own verdict on the labelled rows against the people's decided labels,
    least agreeing first (see `charter.judge.agreement`)."""
    labelled: list[tuple[Literal["a", "b"], dict[str, float | None]]] = []
    for h in human_labels(db, job_id):
        if h.label == "tie":
            continue
        verdicts = row_detail(db, h.preference).verdicts  # in terms of the row: a is chosen
        votes = {v.principle: v.p_chosen for v in verdicts}
        labelled.append(("a" if h.label == "chosen" else "b", votes))
    return by_principle(labelled, tie_margin, settings)
