"""Reading data files the one way every reader in charter does it, within `InputLimits`.

Prompt files (`charter.prompt_files`), labelled pairs (`charter.judge.qualify`), training data
(`charter.trainer.data`) and calibration files are all read here, so a problem reads the same
wherever it is met: one `DataFileError`, one line, `file:line:column: what`.

- Decoding: UTF-8, a leading byte-order mark dropped. A byte that is not UTF-8 is reported by
  line, column and byte offset, so a user can find it.
- Lines: JSON Lines records are separated by line feeds only (a trailing CR dropped).
  `str.splitlines` also breaks on U+2028, U+2029, U+0085 and a few control characters, all of
  which are legal unescaped inside a JSON string (`json.dumps(..., ensure_ascii=False)`, as
  charter's own exports write, leaves them raw).
- JSON: a syntax error names its line and column; nesting too deep for the parser (which
  recurses) is a `DataFileError`, never a `RecursionError`.
- TOML (principle and config files) gets the same guard against nesting too deep.
- Limits are checked before the work they bound: a file's size before it is read, a JSON
  line's size before it is read whole (at most `max_row_bytes` + 1 bytes of it are), every
  string of every row against `max_text_chars`. The items of a JSON array are measured as
  they are parsed (the file limit bounds that parse).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Literal

from .limits import InputLimits

Unit = Literal["line", "row"]
Record = tuple[int, dict[str, Any]]
"""A row as read: (its line, or row for table formats, numbered from 1; its fields)."""

BOM = b"\xef\xbb\xbf"
NESTED_TOO_DEEPLY = "JSON nested too deeply to read"


class DataFileError(ValueError):
    """A data file that cannot be used: the file, where in it (where known) and why.

    `unit` is "line" for text formats (shown `file:line:column: reason`) and "row" for table
    formats (`file: row N: reason`). Readers of one kind of file raise a subclass of their own,
    so a caller can tell a prompts file from a pairs file; every one reads the same.
    """

    def __init__(
        self,
        path: Path | str,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
        unit: Unit = "line",
    ) -> None:
        self.path = Path(path)
        self.reason = message
        self.line = line
        self.column = column
        self.unit: Unit = unit
        super().__init__(self.shown_as(str(self.path)))

    def shown_as(self, name: str) -> str:
        """The one-line message with the file called `name` (e.g. an upload's own name)."""
        if self.line is None:
            return f"{name}: {self.reason}"
        if self.unit == "row":
            return f"{name}: row {self.line}: {self.reason}"
        column = f":{self.column}" if self.column is not None else ""
        return f"{name}:{self.line}{column}: {self.reason}"


ErrorType = type[DataFileError]


class JsonSyntaxError(ValueError):
    """Text that is not JSON; `line` and `column` (1-based, within the text) where known."""

    def __init__(self, reason: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line
        self.column = column


def loads(text: str) -> Any:
    """`json.loads`, with every way it fails (nesting too deep included) a `JsonSyntaxError`."""
    value, end = _decode_at(text, 0)
    rest = _skip_space(text, end)
    if rest < len(text):
        raise JsonSyntaxError("not valid JSON (extra data)", *_position(text, rest))
    return value


_DECODER = json.JSONDecoder()


def _decode_at(text: str, pos: int) -> tuple[Any, int]:
    """One JSON value starting at `pos` (leading whitespace allowed) and where it ends."""
    pos = _skip_space(text, pos)
    try:
        return _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise JsonSyntaxError(f"not valid JSON ({exc.msg})", exc.lineno, exc.colno) from None
    except RecursionError:
        raise JsonSyntaxError(NESTED_TOO_DEEPLY, *_position(text, pos)) from None


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _position(text: str, pos: int) -> tuple[int, int]:
    """(line, column), both 1-based, of character `pos` in `text`."""
    line_start = text.rfind("\n", 0, pos) + 1
    return text.count("\n", 0, pos) + 1, pos - line_start + 1


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def text_lines(text: str) -> list[str]:
    """The lines of JSON Lines (or plain) text: split on line feeds only, a trailing CR dropped."""
    return [line.removesuffix("\r") for line in text.split("\n")]


# --- files -----------------------------------------------------------------------------------


def check_file_size(path: Path, limits: InputLimits, *, error: ErrorType = DataFileError) -> None:
    """Refuse a file (or a directory's files, together) over `max_file_bytes`, before reading."""
    try:
        if path.is_dir():
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        else:
            size = path.stat().st_size
    except OSError as exc:
        raise _cannot_read(path, exc, error) from None
    if size > limits.max_file_bytes:
        raise error(path, limits.exceeded("max_file_bytes", f"file is {size:,} bytes"))


def _cannot_read(path: Path, exc: OSError, error: ErrorType) -> DataFileError:
    if isinstance(exc, FileNotFoundError):
        return error(path, "file not found")
    if isinstance(exc, IsADirectoryError) or path.is_dir():
        return error(path, "is a directory, not a file")
    return error(path, f"cannot read ({exc.strerror or exc})")


def _open(path: Path, limits: InputLimits, error: ErrorType) -> BinaryIO:
    if path.is_dir():
        raise error(path, "is a directory, not a file")
    check_file_size(path, limits, error=error)
    try:
        return path.open("rb")
    except OSError as exc:
        raise _cannot_read(path, exc, error) from None


def read_bytes(path: Path, limits: InputLimits, *, error: ErrorType = DataFileError) -> bytes:
    """The whole file, once its size is known to be within `max_file_bytes`."""
    with _open(path, limits, error) as f:
        try:
            return f.read()
        except OSError as exc:
            raise _cannot_read(path, exc, error) from None


def decode(
    data: bytes,
    path: Path,
    *,
    error: ErrorType = DataFileError,
    first_line: int = 1,
    offset: int = 0,
) -> str:
    """`data` as text (a leading byte-order mark dropped), or an error naming the first bad byte.

    `data` may be part of a file: `first_line` is the line it starts on and `offset` its byte
    offset in the file, so the error points into the file.
    """
    skip = len(BOM) if offset == 0 and data.startswith(BOM) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = skip + exc.start
        line_start = max(data.rfind(b"\n", 0, bad) + 1, skip)
        column = len(data[line_start:bad].decode("utf-8", "replace")) + 1
        raise error(
            path,
            f"not valid UTF-8 (byte offset {offset + bad}); save the file as UTF-8",
            line=first_line + data.count(b"\n", 0, bad),
            column=column,
        ) from None


def read_text(path: Path, limits: InputLimits, *, error: ErrorType = DataFileError) -> str:
    """The whole file as text, within `max_file_bytes`."""
    return decode(read_bytes(path, limits, error=error), path, error=error)


# --- rows ------------------------------------------------------------------------------------


def check_row(
    path: Path,
    number: int,
    row: Mapping[str, Any],
    limits: InputLimits,
    *,
    error: ErrorType = DataFileError,
    unit: Unit = "line",
    size: int | None = None,
) -> None:
    """Refuse a row over `max_row_bytes` (`size`, or the UTF-8 size of its strings) or with a
    string over `max_text_chars`, naming the field."""
    if size is not None and size <= limits.max_text_chars <= limits.max_row_bytes:
        return  # a JSON text of `size` bytes holds no string longer than `size` characters
    total = 0
    for field, text in _strings(row):
        if len(text) > limits.max_text_chars:
            reason = limits.exceeded("max_text_chars", f"{field} is {len(text):,} characters")
            raise error(path, reason, line=number, unit=unit)
        if size is None:
            total += len(text.encode("utf-8"))
    total = total if size is None else size
    if total > limits.max_row_bytes:
        reason = limits.exceeded("max_row_bytes", f"row is {total:,} bytes")
        raise error(path, reason, line=number, unit=unit)


def _strings(row: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(field path, text) for every string in a row, in order: `prompt`, `responses[2]`, ...

    A loop, not recursion: a row nested as deep as the JSON parser allows must not overflow
    the stack here."""
    stack: list[tuple[str, Any]] = [("", row)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            yield repr(where or "value"), value
        elif isinstance(value, Mapping):
            items = [(f"{where}.{k}" if where else str(k), v) for k, v in value.items()]
            stack.extend(reversed(items))
        elif isinstance(value, list | tuple):
            stack.extend(reversed([(f"{where}[{i}]", v) for i, v in enumerate(value, start=1)]))


def _row_too_long(path: Path, number: int, limits: InputLimits, error: ErrorType) -> DataFileError:
    reason = limits.exceeded("max_row_bytes", "line is too long")
    return error(path, reason, line=number)


def _object(path: Path, number: int, value: Any, error: ErrorType) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise error(path, f"expected a JSON object, got {json_type(value)}", line=number)
    return value


def parse_json_lines(
    lines: Iterable[str],
    path: Path | str,
    limits: InputLimits,
    *,
    error: ErrorType = DataFileError,
) -> Iterator[Record]:
    """The objects of JSON Lines already in memory (blank lines skipped), each checked."""
    path = Path(path)
    for number, line in enumerate(lines, start=1):
        size = len(line.encode("utf-8"))
        if size > limits.max_row_bytes:
            raise _row_too_long(path, number, limits, error)
        row = _parse_line(path, number, line, error)
        if row is not None:
            check_row(path, number, row, limits, error=error, size=size)
            yield number, row


def _parse_line(path: Path, number: int, line: str, error: ErrorType) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        value = loads(line)
    except JsonSyntaxError as exc:
        raise error(path, exc.reason, line=number, column=exc.column) from None
    return _object(path, number, value, error)


def read_json_lines(
    path: Path, limits: InputLimits, *, error: ErrorType = DataFileError
) -> Iterator[Record]:
    """The objects of a JSON Lines file, line by line: no line over `max_row_bytes` is read
    whole, none is parsed, and the file is never held in memory at once."""
    with _open(path, limits, error) as f:
        offset = 0
        number = 0
        while True:
            number += 1
            try:
                raw = f.readline(limits.max_row_bytes + 1)
            except OSError as exc:
                raise _cannot_read(path, exc, error) from None
            if not raw:
                return
            if len(raw) > limits.max_row_bytes and not raw.endswith(b"\n"):
                raise _row_too_long(path, number, limits, error)
            text = decode(raw, path, error=error, first_line=number, offset=offset)
            offset += len(raw)
            row = _parse_line(path, number, text.removesuffix("\n").removesuffix("\r"), error)
            if row is not None:
                check_row(path, number, row, limits, error=error, size=len(raw.removesuffix(b"\n")))
                yield number, row


def read_json_array(
    path: Path,
    limits: InputLimits,
    *,
    error: ErrorType = DataFileError,
    or_lines: bool = False,
) -> Iterator[Record]:
    """The objects of a file holding one JSON array, each numbered by the line it starts on.

    `or_lines`: a file that does not start with `[` is read as JSON Lines (`datasets`'
    `to_json` writes JSON Lines under a .json name); otherwise it is an error.
    """
    if or_lines and not _starts_with_array(path, limits, error):
        yield from read_json_lines(path, limits, error=error)
        return
    text = read_text(path, limits, error=error)

    def fail(exc: JsonSyntaxError) -> DataFileError:
        return error(path, exc.reason, line=exc.line, column=exc.column)

    pos = _skip_space(text, 0)
    if pos == len(text):
        return
    if text[pos] != "[":
        try:
            value, _ = _decode_at(text, pos)
        except JsonSyntaxError as exc:
            raise fail(exc) from None
        raise error(
            path,
            f"expected a JSON array of objects, got {json_type(value)}"
            " (for one object per line, use .jsonl)",
            line=_position(text, pos)[0],
        )
    pos = _skip_space(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        pos += 1
    else:
        while True:
            number = _position(text, pos)[0]
            try:
                value, end = _decode_at(text, pos)
            except JsonSyntaxError as exc:
                raise fail(exc) from None
            row = _object(path, number, value, error)
            size = len(text[pos:end].encode("utf-8"))
            check_row(path, number, row, limits, error=error, size=size)
            yield number, row
            pos = _skip_space(text, end)
            if pos < len(text) and text[pos] == ",":
                pos = _skip_space(text, pos + 1)
                continue
            if pos < len(text) and text[pos] == "]":
                pos += 1
                break
            raise _syntax(path, "not valid JSON (expected ',' or ']')", text, pos, error)
    pos = _skip_space(text, pos)
    if pos < len(text):
        raise _syntax(path, "not valid JSON (extra data after the array)", text, pos, error)


def _syntax(path: Path, reason: str, text: str, pos: int, error: ErrorType) -> DataFileError:
    line, column = _position(text, pos)
    return error(path, reason, line=line, column=column)


def _starts_with_array(path: Path, limits: InputLimits, error: ErrorType) -> bool:
    with _open(path, limits, error) as f:
        head = f.read(4096).removeprefix(BOM).lstrip(b" \t\r\n")
    return head.startswith(b"[")


def read_json_document(path: Path, limits: InputLimits, *, error: ErrorType = DataFileError) -> Any:
    """The one JSON value a file holds (e.g. a calibration), within `max_file_bytes`."""
    text = read_text(path, limits, error=error)
    try:
        return loads(text)
    except JsonSyntaxError as exc:
        raise error(path, exc.reason, line=exc.line, column=exc.column) from None


def loads_toml(text: str) -> dict[str, Any]:
    """`tomllib.loads`, with nesting too deep for its recursive parser reported as malformed
    TOML (`tomllib.TOMLDecodeError`), never as a `RecursionError`."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError("TOML nested too deeply to read") from None
