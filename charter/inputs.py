"""Prompt files in: the prompts (and any ready-made candidate responses) a generation job runs on.

Supported inputs, chosen by suffix: `.jsonl`, `.json` (an array of objects), `.csv`/`.tsv`
(header row), `.txt` (one prompt per line), `.parquet`, or a directory holding a `datasets`
dataset written by `save_to_disk`. A prompt is a plain string or a conversation (a list of
`{"role", "content"}` messages ending with the user's turn).

Every record carries a `key`, a hash of the prompt alone, so the store recognises the same
prompt whichever file it came from. Every problem raises `PromptFileError` naming the file and,
where known, the line (text formats) or row (table formats), so a user can jump straight to it.

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
from typing import Any, Literal, overload

from pydantic import BaseModel, ConfigDict, field_validator

from charter.jsonl import NotUtf8Error, decode_utf8, jsonl_lines
from charter.judge.backends.base import Message

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
FORMATS = (".jsonl", ".json", ".csv", ".tsv", ".txt", ".parquet")
"""Supported file suffixes; a directory is read as a `datasets` dataset saved to disk."""

Prompt = str | tuple[Message, ...]
Unit = Literal["line", "row"]


class PromptFileError(ValueError):
    """A prompts file that cannot be used, with the place in it where known."""

    def __init__(
        self, path: Path | str, message: str, *, line: int | None = None, unit: Unit = "line"
    ) -> None:
        self.path = Path(path)
        self.line = line
        self.unit: Unit = unit
        self.reason = message
        where = str(self.path) if line is None else f"{self.path}: {unit} {line}"
        super().__init__(f"{where}: {message}")


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
    path: Path | str, *, column: str = "prompt", responses_column: str = "responses"
) -> PromptSet:
    """Read the prompts in `path` (format chosen by suffix, or a saved `datasets` directory).

    `column` names the prompt field and `responses_column` the optional list of candidate
    responses (absent, null or empty means none given). `.txt` files have neither: each
    non-blank line, stripped, is a prompt. Raises `PromptFileError` on any problem.
    """
    path = Path(path)
    if not path.exists():
        raise PromptFileError(path, "prompts file not found")
    suffix = path.suffix.lower()
    unit: Unit = "line"
    rows: Iterator[_Row]
    if path.is_dir():
        unit = "row"
        rows = _read_dataset_dir(path)
    elif suffix == ".txt":
        rows = _read_txt(path, column)
    elif suffix == ".jsonl":
        rows = _read_jsonl(path)
    elif suffix == ".json":
        rows = _read_json_array(path)
    elif suffix in (".csv", ".tsv"):
        delimiter = "\t" if suffix == ".tsv" else ","
        rows = _read_csv(path, column, responses_column, delimiter=delimiter)
    elif suffix == ".parquet":
        unit = "row"
        rows = _read_parquet(path)
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


def _read_text(path: Path) -> str:
    """The file as text; a byte that is not UTF-8 is reported by line and byte offset."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PromptFileError(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        return decode_utf8(data)
    except NotUtf8Error as exc:
        raise PromptFileError(path, str(exc), line=exc.line) from None


def _read_txt(path: Path, column: str) -> Iterator[_Row]:
    for number, line in enumerate(jsonl_lines(_read_text(path)), start=1):
        if line.strip():
            yield number, {column: line.strip()}


def _read_jsonl(path: Path) -> Iterator[_Row]:
    for number, line in enumerate(jsonl_lines(_read_text(path)), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptFileError(
                path, f"malformed JSON ({exc.msg}, column {exc.colno})", line=number
            ) from None
        if not isinstance(value, dict):
            raise PromptFileError(
                path, f"expected a JSON object, got {_json_type(value)}", line=number
            )
        yield number, value


def _read_json_array(path: Path) -> Iterator[_Row]:
    """Items of a top-level JSON array, each numbered by the line it starts on."""
    text = _read_text(path)
    decoder = json.JSONDecoder()

    def fail(exc: json.JSONDecodeError) -> PromptFileError:
        return PromptFileError(
            path, f"malformed JSON ({exc.msg}, column {exc.colno})", line=exc.lineno
        )

    def skip_ws(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    pos = skip_ws(0)
    if pos == len(text):
        return
    if text[pos] != "[":
        try:
            value, _ = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise fail(exc) from None
        raise PromptFileError(
            path,
            f"expected a JSON array of objects, got {_json_type(value)}"
            " (for one object per line, use .jsonl)",
            line=text.count("\n", 0, pos) + 1,
        )
    pos = skip_ws(pos + 1)
    if pos < len(text) and text[pos] == "]":
        pos += 1
    else:
        while True:
            number = text.count("\n", 0, pos) + 1
            try:
                value, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise fail(exc) from None
            if not isinstance(value, dict):
                raise PromptFileError(
                    path, f"expected a JSON object, got {_json_type(value)}", line=number
                )
            yield number, value
            pos = skip_ws(pos)
            if pos < len(text) and text[pos] == ",":
                pos = skip_ws(pos + 1)
                continue
            if pos < len(text) and text[pos] == "]":
                pos += 1
                break
            line = text.count("\n", 0, pos) + 1
            raise PromptFileError(path, "malformed JSON (expected ',' or ']')", line=line)
    pos = skip_ws(pos)
    if pos < len(text):
        line = text.count("\n", 0, pos) + 1
        raise PromptFileError(path, "malformed JSON (extra data after the array)", line=line)


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _read_csv(path: Path, column: str, responses_column: str, *, delimiter: str) -> Iterator[_Row]:
    """Rows keyed by the header; cells are strings, `responses_column` a JSON-encoded list."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter=delimiter)
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
            raw = row.get(responses_column)
            if raw is not None:
                row[responses_column] = _decode_responses_cell(path, number, raw)
            yield number, row
    except csv.Error as exc:
        raise PromptFileError(path, f"malformed CSV ({exc})", line=reader.line_num) from None


def _decode_responses_cell(path: Path, number: int, raw: str) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise PromptFileError(
            path, 'responses must be a JSON-encoded list of strings, e.g. ["a", "b"]', line=number
        ) from None


def _read_parquet(path: Path) -> Iterator[_Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # ArrowInvalid, OSError, ...: all mean "not a readable parquet file"
        raise PromptFileError(path, f"cannot read as Parquet: {exc}") from None
    yield from enumerate(table.to_pylist(), start=1)


def _read_dataset_dir(path: Path) -> Iterator[_Row]:
    import datasets

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
    yield from enumerate(loaded.to_list(), start=1)
