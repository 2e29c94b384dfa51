"""Training data: load preference rows, check them, normalise their format, keep their provenance.

Rows are TRL's preference format (`prompt`, `chosen`, `rejected`, each a string or, in the
conversational format, a message list) plus whatever provenance columns `charter export` wrote.
Unusable rows (a missing or empty field, `chosen == rejected`) are dropped and counted; a
dataset with none left is an error before any model is loaded. Prompt-only data (`prompt`
alone) feeds the online methods (PPO, GRPO). SFT data is `prompt` and `completion`, or a
`messages` list ending in the assistant's turn (split into the earlier turns as the prompt and
that turn as the completion, so the loss is on the answer alone).

Job ids are resolved by the `charter` layer (it owns the store) into `PreferenceData.from_rows`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from charter.common.datafiles import (
    check_file_size,
    check_row,
    read_json_array,
    read_json_lines,
)
from charter.common.limits import InputLimits

from .errors import TrainDataError, TrainError

log = logging.getLogger("charter.trainer")

Kind = Literal["preference", "prompt", "sft"]
Messages = list[dict[str, str]]

PROVENANCE_COLUMNS = ("job_id", "constitution_digest", "constitution_version", "judge", "policy")
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class Provenance:
    """Where preference rows came from, read off their provenance columns (distinct values)."""

    jobs: tuple[str, ...] = ()
    constitution_digests: tuple[str, ...] = ()
    constitution_versions: tuple[str, ...] = ()
    judges: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    sources: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> Provenance:
        seen: dict[str, dict[str, None]] = {name: {} for name in PROVENANCE_COLUMNS}
        sources: Counter[str] = Counter()
        for row in rows:
            for name in PROVENANCE_COLUMNS:
                value = row.get(name)
                if value not in (None, ""):
                    seen[name][str(value)] = None
            if row.get("source"):
                sources[str(row["source"])] += 1
        return cls(
            jobs=tuple(seen["job_id"]),
            constitution_digests=tuple(seen["constitution_digest"]),
            constitution_versions=tuple(seen["constitution_version"]),
            judges=tuple(seen["judge"]),
            policies=tuple(seen["policy"]),
            sources=tuple(sorted(sources.items())),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobs": list(self.jobs),
            "constitution_digests": list(self.constitution_digests),
            "constitution_versions": list(self.constitution_versions),
            "judges": list(self.judges),
            "policies": list(self.policies),
            "sources": dict(self.sources),
        }


@dataclass
class PreferenceData:
    """Checked rows ready for a trainer, with where they came from.

    `source` says how the data was named (a path, or a job in a store); `test` is a held-out
    split when the data came with one (an export made with `--split test=...`).
    """

    source: str
    kind: Kind
    conversational: bool
    train: list[dict[str, Any]]
    test: list[dict[str, Any]] | None = None
    dropped: int = 0
    provenance: Provenance = field(default_factory=Provenance)

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[Mapping[str, Any]],
        *,
        source: str,
        kind: Kind = "preference",
        conversational: bool | None = None,
        test: Sequence[Mapping[str, Any]] | None = None,
    ) -> PreferenceData:
        """Check and normalise rows; `TrainError` when none is usable."""
        if kind == "sft":
            rows = [_split_messages(row) for row in rows]
            test = [_split_messages(row) for row in test] if test else test
        fmt = conversational if conversational is not None else _detect_format(rows, test)
        train, dropped, reasons = _clean(rows, kind, fmt)
        held: list[dict[str, Any]] | None = None
        if test:
            held, test_dropped, test_reasons = _clean(test, kind, fmt)
            dropped += test_dropped
            reasons.update(test_reasons)
        if not train:
            what = {
                "preference": "preference pairs",
                "prompt": "prompts",
                "sft": "prompt-completion rows",
            }[kind]
            why = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common()) or "it is empty"
            raise TrainError(f"{source}: no usable {what} ({len(rows)} rows: {why})")
        if dropped:
            log.warning("%s: dropped %d unusable rows (%s)", source, dropped, dict(reasons))
        return cls(
            source=source,
            kind=kind,
            conversational=fmt,
            train=train,
            test=held or None,
            dropped=dropped,
            provenance=Provenance.from_rows([*train, *(held or [])]),
        )

    @property
    def job_id(self) -> str | None:
        return self.provenance.jobs[0] if len(self.provenance.jobs) == 1 else None

    def prompts(self) -> list[str | Messages]:
        """Distinct prompts, first occurrence order (online methods sample their own answers)."""
        seen: dict[str, str | Messages] = {}
        for row in self.train:
            seen.setdefault(json.dumps(row["prompt"], sort_keys=True), row["prompt"])
        return list(seen.values())

    def dataset(self, rows: list[dict[str, Any]] | None = None, columns: Iterable[str] = ()) -> Any:
        """A `datasets.Dataset` of `rows` (default: train) with only `columns` kept."""
        from datasets import Dataset

        keep = list(columns)
        chosen = self.train if rows is None else rows
        return Dataset.from_list([{c: row.get(c) for c in keep} for row in chosen])


def load_preference_data(
    source: str | Path | PreferenceData,
    *,
    kind: Kind = "preference",
    conversational: bool | None = None,
) -> PreferenceData:
    """Load and check data from a path (or pass loaded data through, re-formatted if asked)."""
    if isinstance(source, PreferenceData):
        same_format = conversational is None or conversational == source.conversational
        if same_format and (source.kind == kind or kind == "prompt"):
            return source
        return PreferenceData.from_rows(
            source.train,
            source=source.source,
            kind=kind,
            conversational=conversational,
            test=source.test,
        )
    path = Path(source).expanduser()
    train, test = read_rows(path, InputLimits.from_env())
    return PreferenceData.from_rows(
        train, source=str(path), kind=kind, conversational=conversational, test=test
    )


def read_rows(
    path: Path, limits: InputLimits
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(train rows, test rows or None) from a file, a saved `datasets` dir, or an export dir."""
    if not path.exists():
        raise TrainError(
            f"--data {path}: no such file or directory (and not a job id in the store)"
        )
    if path.is_dir():
        if any((path / name).exists() for name in ("dataset_dict.json", "dataset_info.json")):
            return _read_saved_dataset(path, limits)
        for suffix in FILE_SUFFIXES:
            if (path / f"train{suffix}").is_file():
                test = path / f"test{suffix}"
                return _read_file(path / f"train{suffix}", limits), (
                    _read_file(test, limits) if test.is_file() else None
                )
        raise TrainError(
            f"{path} is a directory but neither a saved datasets directory nor an export with "
            f"train.jsonl / train.parquet"
        )
    return _read_file(path, limits), None


def _read_file(path: Path, limits: InputLimits) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        check_file_size(path, limits, error=TrainDataError)
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise TrainDataError(path, f"cannot read as Parquet: {exc}") from None
        return _checked(path, table.to_pylist(), limits)
    if suffix == ".jsonl":
        return [row for _, row in read_json_lines(path, limits, error=TrainDataError)]
    if suffix == ".json":
        rows = read_json_array(path, limits, error=TrainDataError, or_lines=True)
        return [row for _, row in rows]
    raise TrainError(f"{path}: unsupported data file; use .jsonl, .json or .parquet")


def _checked(path: Path, rows: list[dict[str, Any]], limits: InputLimits) -> list[dict[str, Any]]:
    """`rows` of a table format, each within the row and text limits."""
    for number, row in enumerate(rows, start=1):
        check_row(path, number, row, limits, error=TrainDataError, unit="row")
    return rows


def _read_saved_dataset(
    path: Path, limits: InputLimits
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    from datasets import Dataset, DatasetDict, load_from_disk

    check_file_size(path, limits, error=TrainDataError)
    try:
        loaded = load_from_disk(str(path))
    except Exception as exc:  # FileNotFoundError and friends from a damaged dataset directory
        raise TrainDataError(
            path, f"not a dataset saved with datasets' save_to_disk ({exc})"
        ) from None
    if isinstance(loaded, Dataset):
        return _checked(path, list(loaded), limits), None
    if isinstance(loaded, DatasetDict):
        if "train" not in loaded:
            raise TrainError(f"{path}: saved dataset has no 'train' split ({', '.join(loaded)})")
        test = next((loaded[s] for s in ("test", "validation", "eval") if s in loaded), None)
        return _checked(path, list(loaded["train"]), limits), (
            _checked(path, list(test), limits) if test is not None else None
        )
    raise TrainError(f"{path}: not a saved Dataset or DatasetDict")


def is_messages(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)
    )


def _detect_format(
    rows: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]] | None
) -> bool:
    for row in [*rows, *(test or [])]:
        prompt = row.get("prompt")
        if is_messages(prompt):
            return True
        if isinstance(prompt, str) and prompt.strip():
            return False
    return False


def as_text(value: Any) -> str | None:
    """A prompt or completion as plain text (message contents joined), None if unusable."""
    if isinstance(value, str):
        return value if value.strip() else None
    if is_messages(value):
        text = "\n\n".join(str(m["content"]) for m in value)
        return text if text.strip() else None
    return None


def _as_messages(value: Any, role: str) -> Messages | None:
    if isinstance(value, str):
        return [{"role": role, "content": value}] if value.strip() else None
    if is_messages(value) and any(str(m["content"]).strip() for m in value):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]
    return None


def _convert(value: Any, role: str, conversational: bool) -> Any:
    return _as_messages(value, role) if conversational else as_text(value)


def _clean(
    rows: Iterable[Mapping[str, Any]], kind: Kind, conversational: bool
) -> tuple[list[dict[str, Any]], int, Counter[str]]:
    """Usable rows in the target format; unusable ones counted by reason."""
    out: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    fields = {
        "preference": ("prompt", "chosen", "rejected"),
        "prompt": ("prompt",),
        "sft": ("prompt", "completion"),
    }[kind]
    for row in rows:
        missing = [name for name in fields if row.get(name) in (None, "", [])]
        if missing and kind == "sft" and "messages" in row:
            reasons["messages not ending in an assistant turn after another turn"] += 1
            continue
        if missing:
            reasons[f"missing {'/'.join(missing)}"] += 1
            continue
        clean = dict(row)
        bad = False
        for name in fields:
            role = "user" if name == "prompt" else "assistant"
            clean[name] = _convert(row[name], role, conversational)
            if clean[name] is None:
                reasons[f"empty or malformed {name}"] += 1
                bad = True
                break
        if bad:
            continue
        if kind == "preference" and as_text(clean["chosen"]) == as_text(clean["rejected"]):
            reasons["chosen == rejected"] += 1
            continue
        out.append(clean)
    return out, sum(reasons.values()), reasons


def _split_messages(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """An SFT row given as `messages` -> `prompt` (the turns before the last) and `completion`
    (the last, the assistant's); a row that cannot be split is left as is, to be dropped."""
    if "messages" not in row or "prompt" in row or "completion" in row:
        return row
    messages = row["messages"]
    if not is_messages(messages) or len(messages) < 2 or messages[-1]["role"] != "assistant":
        return row
    rest = {k: v for k, v in row.items() if k != "messages"}
    return {**rest, "prompt": messages[:-1], "completion": messages[-1:]}


def prompt_key(row: Mapping[str, Any]) -> str:
    """Identity of a row's prompt (charter's own key when the export wrote one)."""
    key = row.get("prompt_key")
    return str(key) if key else json.dumps(row.get("prompt"), sort_keys=True)


def split_holdout(
    rows: list[dict[str, Any]], fraction: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held-out) by a hash of the prompt, so a prompt never straddles the two.

    Deterministic. With at least two distinct prompts, each side gets at least one prompt,
    so a small dataset still has a held-out figure.
    """
    if not 0 < fraction < 1:
        raise TrainError(f"held-out fraction must be in (0, 1), got {fraction}")

    def point(key: str) -> float:
        digest = hashlib.sha256(f"holdout:{key}".encode()).hexdigest()[:8]
        return int(digest, 16) / 2**32

    keys = sorted({prompt_key(r) for r in rows}, key=point)
    if len(keys) < 2:
        raise TrainError("a held-out split needs at least two distinct prompts")
    held = {k for k in keys if point(k) < fraction} or {keys[0]}
    if len(held) == len(keys):
        held.discard(keys[-1])
    train = [r for r in rows if prompt_key(r) not in held]
    test = [r for r in rows if prompt_key(r) in held]
    return train, test
