"""Prompt files in: the prompts (and any ready-made candidate responses) a generation job runs on.

Supported inputs, chosen by suffix: `.jsonl`, `.json` (an array of objects), `.csv`/`.tsv`
(header row), `.txt` (one prompt per line), `.parquet`, or a directory holding a `datasets`
dataset written by `save_to_disk`. A prompt is a plain string or a conversation (a list of
`{"role", "content"}` messages ending with the user's turn).

Every record carries a `key`, a hash of the prompt alone, so the store recognises the same
prompt whichever file it came from. Every problem raises `PromptFileError` naming the file and,
where known, the line and column (text formats) or row (table formats), so a user can jump
straight to it. Files are read through `charter.common.datafiles`, within `InputLimits` (the
size of the file, of each row and of each text), in every format.

`load_prompts` returns a `PromptSet`: a read-only sequence of `PromptRecord`s in file order,
with exact duplicate prompts dropped (the first occurrence kept) and counted in
`duplicates_dropped`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from pydantic import BaseModel, ConfigDict, field_validator

from charter.common.datafiles import (
    DataFileError,
    JsonSyntaxError,
    Unit,
    check_file_size,
    check_row,
    loads,
    read_json_array,
    read_json_lines,
    read_text,
    text_lines,
)
from charter.common.limits import InputLimits
from charter.judge.backends.base import Message

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
FORMATS = (".jsonl", ".json", ".csv", ".tsv", ".txt", ".parquet")
"""Supported file suffixes; a directory is read as a `datasets` dataset saved to disk."""

Prompt = str | tuple[Message, ...]


class PromptFileError(DataFileError):
    """A prompts file that cannot be used, with the place in it where known."""


class _BadValue(ValueError):
    """A value in one record is invalid; the loader adds the file and line."""


def _describe(value: object) -> str:
    return "null" if value is None else type(value).__name__


def check_prompt(value: object) -> Prompt:
    """Validate a raw prompt (string or message list) and return its normal form.

    Strings are kept exactly as written (not stripped), so a prompt's key depends only on its
    text; message lists become a tuple of `Message`.
    """
    if isinstance(value, str):
        if not value.strip():
            raise _BadValue("prompt is empty")
        return value
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise _BadValue(f"prompt must be a string or a list of messages, got {_describe(value)}")
    if not value:
        raise _BadValue("prompt is an empty list of messages")
    messages: list[Message] = []
    for i, raw in enumerate(value, start=1):
        if isinstance(raw, Message):
            raw = raw.model_dump()
        if not isinstance(raw, Mapping):
            raise _BadValue(
                f"message {i} must be an object with 'role' and 'content', got {_describe(raw)}"
            )
        extra = sorted(str(k) for k, v in raw.items() if k not in ("role", "content") and v)
        if extra:
            raise _BadValue(f"message {i} has unsupported keys: {', '.join(extra)}")
        role, content = raw.get("role"), raw.get("content")
        if role not in ROLES:
            raise _BadValue(f"message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise _BadValue(f"message {i} content must be a string, got {_describe(content)}")
        messages.append(Message(role=role, content=content))
    if messages[-1].role != "user":
        raise _BadValue(f"the last message must be from the user, not {messages[-1].role!r}")
    if not messages[-1].content.strip():
        raise _BadValue("the last (user) message is empty")
    return tuple(messages)


def check_responses(value: object) -> tuple[str, ...] | None:
    """Validate ready-made candidate responses: a list of non-empty strings.

    Null or an empty list means "none given" (charter samples candidates instead).
    """
    if value is None:
        return None
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise _BadValue(f"responses must be a list of strings, got {_describe(value)}")
    for i, item in enumerate(value, start=1):
        if not isinstance(item, str):
            raise _BadValue(f"response {i} must be a string, got {_describe(item)}")
        if not item.strip():
            raise _BadValue(f"response {i} is empty")
    return tuple(value) or None


def _canonical(prompt: Prompt) -> Any:
    if isinstance(prompt, str):
        return prompt
    return [{"role": m.role, "content": m.content} for m in prompt]


def prompt_key(prompt: Prompt) -> str:
    """sha256 hex of the prompt's canonical JSON: equal prompts get equal keys, in any file."""
    text = json.dumps(_canonical(prompt), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PromptRecord(BaseModel):
    """One prompt to run, with any candidate responses that came with it and where it was read."""

    model_config = ConfigDict(frozen=True)

    prompt: str | tuple[Message, ...]
    responses: tuple[str, ...] | None = None
    source: str = ""

    @field_validator("prompt", mode="before")
    @classmethod
    def _valid_prompt(cls, value: object) -> Prompt:
        return check_prompt(value)

    @field_validator("responses", mode="before")
    @classmethod
    def _valid_responses(cls, value: object) -> tuple[str, ...] | None:
        return check_responses(value)

    @property
    def key(self) -> str:
        """Identity of the prompt alone (responses and source excluded)."""
        return prompt_key(self.prompt)

    @property
    def is_conversational(self) -> bool:
        return not isinstance(self.prompt, str)

    @property
    def messages(self) -> tuple[Message, ...]:
        """The prompt as chat messages; a plain prompt is one user message."""
        if isinstance(self.prompt, str):
            return (Message(role="user", content=self.prompt),)
        return self.prompt

    @property
    def text(self) -> str:
        """The prompt as plain text for display: a conversation becomes `role: content` lines."""
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n".join(f"{m.role}: {m.content}" for m in self.prompt)


@dataclass(frozen=True)
class PromptSet(Sequence[PromptRecord]):
    """The prompts read from one file, in file order, duplicates removed."""

    path: Path
    records: tuple[PromptRecord, ...]
    duplicates_dropped: int = 0

    @overload
    def __getitem__(self, index: int) -> PromptRecord: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[PromptRecord, ...]: ...
    def __getitem__(self, index: int | slice) -> PromptRecord | tuple[PromptRecord, ...]:
        return self.records[index]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[PromptRecord]:
        return iter(self.records)


# A raw record: (line or row number, the field mapping read from the file).
_Row = tuple[int, Mapping[str, Any]]


def load_prompts(
    path: Path | str,
    *,
    column: str = "prompt",
    responses_column: str = "responses",
    limits: InputLimits | None = None,
) -> PromptSet:
    """Read the prompts in `path` (format chosen by suffix, or a saved `datasets` directory).

    `column` names the prompt field and `responses_column` the optional list of candidate
    responses (absent, null or empty means none given). `.txt` files have neither: each
    non-blank line, stripped, is a prompt. `limits` default to `InputLimits.from_env()`.
    Raises `PromptFileError` on any problem.
    """
    path = Path(path)
    if not path.exists():
        raise PromptFileError(path, "prompts file not found")
    limits = limits or InputLimits.from_env()
    suffix = path.suffix.lower()
    unit: Unit = "line"
    rows: Iterator[_Row]
    if path.is_dir():
        unit = "row"
        rows = _read_dataset_dir(path, limits)
    elif suffix == ".txt":
        rows = _read_txt(path, column, limits)
    elif suffix == ".jsonl":
        rows = read_json_lines(path, limits, error=PromptFileError)
    elif suffix == ".json":
        rows = read_json_array(path, limits, error=PromptFileError)
    elif suffix in (".csv", ".tsv"):
        delimiter = "\t" if suffix == ".tsv" else ","
        rows = _read_csv(path, column, responses_column, limits, delimiter=delimiter)
    elif suffix == ".parquet":
        unit = "row"
        rows = _read_parquet(path, limits)
    else:
        raise PromptFileError(
            path,
            f"unsupported prompts file type {path.suffix or '(no suffix)'!r}; supported: "
            f"{', '.join(FORMATS)}, or a directory saved by datasets' save_to_disk",
        )

    records: list[PromptRecord] = []
    seen: dict[str, str] = {}
    dropped = 0
    for number, row in rows:
        record = _to_record(path, number, unit, row, column, responses_column)
        key = record.key
        first = seen.get(key)
        if first is not None:
            dropped += 1
            logger.debug("%s duplicates the prompt at %s; dropped", record.source, first)
            continue
        seen[key] = record.source
        records.append(record)
    if not records:
        empty = path.is_file() and path.stat().st_size == 0
        raise PromptFileError(path, "the file is empty" if empty else "no prompts found")
    if dropped:
        logger.warning(
            "%s: dropped %d duplicate prompt%s (kept the first occurrence of each)",
            path,
            dropped,
            "" if dropped == 1 else "s",
        )
    logger.info("%s: loaded %d prompts", path, len(records))
    return PromptSet(path=path, records=tuple(records), duplicates_dropped=dropped)


def _to_record(
    path: Path,
    number: int,
    unit: Unit,
    row: Mapping[str, Any],
    column: str,
    responses_column: str,
) -> PromptRecord:
    if column not in row:
        present = ", ".join(repr(str(k)) for k in row) or "(none)"
        raise PromptFileError(
            path, f"no {column!r} column; columns present: {present}", line=number, unit=unit
        )
    try:
        prompt = check_prompt(row[column])
        responses = check_responses(row.get(responses_column))
    except _BadValue as exc:
        raise PromptFileError(path, str(exc), line=number, unit=unit) from None
    return PromptRecord(prompt=prompt, responses=responses, source=f"{path.name}:{number}")


def _read_txt(path: Path, column: str, limits: InputLimits) -> Iterator[_Row]:
    for number, line in enumerate(text_lines(read_text(path, limits, error=PromptFileError)), 1):
        if line.strip():
            row = {column: line.strip()}
            check_row(path, number, row, limits, error=PromptFileError, size=len(line.encode()))
            yield number, row


def _read_csv(
    path: Path, column: str, responses_column: str, limits: InputLimits, *, delimiter: str
) -> Iterator[_Row]:
    """Rows keyed by the header; cells are strings, `responses_column` a JSON-encoded list."""
    text = read_text(path, limits, error=PromptFileError)
    # The csv module refuses a cell over its own field limit (128 KiB by default, process-wide)
    # with a message that names no setting; let it read up to a row's limit, and check here.
    csv.field_size_limit(max(csv.field_size_limit(), limits.max_row_bytes))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            return
        if column not in header:
            present = ", ".join(repr(h) for h in header)
            raise PromptFileError(
                path, f"no {column!r} column in the header; columns present: {present}", line=1
            )
        start = reader.line_num + 1
        for cells in reader:
            number, start = start, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue
            while len(cells) > len(header) and not cells[-1].strip():
                cells.pop()  # trailing empty cells, as spreadsheets write them
            if len(cells) != len(header):
                raise PromptFileError(
                    path,
                    f"row has {len(cells)} fields but the header has {len(header)}"
                    " (quote fields that contain the delimiter or line breaks)",
                    line=number,
                )
            row: dict[str, Any] = dict(zip(header, cells, strict=True))
            check_row(path, number, row, limits, error=PromptFileError)
            raw = row.get(responses_column)
            if raw is not None:
                row[responses_column] = _decode_responses_cell(path, number, raw)
            yield number, row
    except csv.Error as exc:
        raise PromptFileError(path, f"malformed CSV ({exc})", line=reader.line_num) from None


def read_csv_rows(
    path: Path, limits: InputLimits, *, column: str = "prompt", delimiter: str = ","
) -> Iterator[_Row]:
    """The records of a CSV/TSV file with a header holding `column`, as `load_prompts` reads
    them (other readers of prompt-shaped files, such as evaluation suites, share it)."""
    return _read_csv(path, column, "responses", limits, delimiter=delimiter)


def _decode_responses_cell(path: Path, number: int, raw: str) -> Any:
    if not raw.strip():
        return None
    try:
        return loads(raw)
    except JsonSyntaxError as exc:
        raise PromptFileError(
            path,
            f'responses must be a JSON-encoded list of strings, e.g. ["a", "b"]: {exc.reason}',
            line=number,
        ) from None


def _read_parquet(path: Path, limits: InputLimits) -> Iterator[_Row]:
    import pyarrow.parquet as pq

    check_file_size(path, limits, error=PromptFileError)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # ArrowInvalid, OSError, ...: all mean "not a readable parquet file"
        raise PromptFileError(path, f"cannot read as Parquet: {exc}") from None
    yield from _checked_rows(path, table.to_pylist(), limits)


def _checked_rows(path: Path, rows: list[dict[str, Any]], limits: InputLimits) -> Iterator[_Row]:
    for number, row in enumerate(rows, start=1):
        check_row(path, number, row, limits, error=PromptFileError, unit="row")
        yield number, row


def _read_dataset_dir(path: Path, limits: InputLimits) -> Iterator[_Row]:
    import datasets

    check_file_size(path, limits, error=PromptFileError)
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # FileNotFoundError and friends from a non-dataset directory
        raise PromptFileError(
            path, f"not a dataset saved with datasets' save_to_disk ({exc})"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if "train" in loaded:
            split = "train"
        elif len(splits) == 1:
            split = splits[0]
        else:
            raise PromptFileError(
                path,
                f"dataset has splits {', '.join(splits)} and no 'train' split; "
                "save the split you want on its own",
            )
        logger.info("%s: using split %r", path, split)
        loaded = loaded[split]
    yield from _checked_rows(path, loaded.to_list(), limits)
