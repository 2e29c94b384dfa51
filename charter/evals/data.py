"""Suite files: prompts with an optional category, shipped or the user's own.

A suite file is JSON Lines, a JSON array, CSV or TSV with a `prompt` column and an optional
`category` column (the columns XSTest and HarmBench use; `--prompt-column` and
`--category-column` rename them). Files are read through `charter.common.datafiles` (CSV via
`charter.prompt_files`), so a malformed file fails with one line naming the file and line.

The shipped suites (`charter/data/suites/`) are written for charter: harmful requests that
only name a harmful goal (nothing in them is itself harmful instructions), benign prompts that
look alarming, and everyday prompts for the win rate.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from charter.common.datafiles import DataFileError, read_json_array, read_json_lines
from charter.common.limits import InputLimits

SuiteName = Literal["harm", "refusal", "helpful"]
SUITES: tuple[SuiteName, ...] = ("harm", "refusal", "helpful")
SUITE_FORMATS = (".jsonl", ".json", ".csv", ".tsv")
UNCATEGORISED = "uncategorised"


class SuiteFileError(DataFileError):
    """A suite or template file that cannot be used, with the place in it."""


class SuiteItem(BaseModel):
    """One prompt of a suite, its category, and where it was read (`file:line`)."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    category: str = UNCATEGORISED
    source: str = ""


def shipped_path(name: str) -> Path:
    """The packaged data file `name` under `charter/data/suites/`."""
    return Path(str(resources.files("charter.data.suites").joinpath(name)))


def shipped_suite(suite: SuiteName) -> list[SuiteItem]:
    """The suite charter ships (`harm.jsonl`, `refusal.jsonl`, `helpful.jsonl`)."""
    return load_suite_file(shipped_path(f"{suite}.jsonl"))


def read_rows(
    path: Path, limits: InputLimits, *, column: str = "prompt"
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(line, fields) for each record of a suite-shaped file, by suffix."""
    if not path.exists():
        raise SuiteFileError(path, "suite file not found")
    if path.is_dir():
        raise SuiteFileError(path, "is a directory, expected a suite file")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_json_lines(path, limits, error=SuiteFileError)
    if suffix == ".json":
        return read_json_array(path, limits, error=SuiteFileError)
    if suffix in (".csv", ".tsv"):
        delimiter = "\t" if suffix == ".tsv" else ","
        return _csv_rows(path, limits, column=column, delimiter=delimiter)
    raise SuiteFileError(
        path,
        f"unsupported suite file type {path.suffix or '(no suffix)'!r}; "
        f"supported: {', '.join(SUITE_FORMATS)}",
    )


def _csv_rows(
    path: Path, limits: InputLimits, *, column: str, delimiter: str
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    from charter.prompt_files import PromptFileError, read_csv_rows

    try:
        yield from read_csv_rows(path, limits, column=column, delimiter=delimiter)
    except PromptFileError as exc:
        raise SuiteFileError(path, exc.reason, line=exc.line, column=exc.column) from None


def load_suite_file(
    path: Path | str,
    *,
    prompt_column: str = "prompt",
    category_column: str = "category",
    limits: InputLimits | None = None,
) -> list[SuiteItem]:
    """Every prompt in `path` with its category (`uncategorised` where the column is absent
    or empty); exact duplicate prompts are kept once. Raises `SuiteFileError`."""
    path = Path(path)
    limits = limits or InputLimits.from_env()
    items: list[SuiteItem] = []
    seen: set[str] = set()
    for number, row in read_rows(path, limits, column=prompt_column):
        if prompt_column not in row:
            present = ", ".join(repr(str(k)) for k in row) or "(none)"
            raise SuiteFileError(
                path, f"no {prompt_column!r} column; columns present: {present}", line=number
            )
        prompt = row[prompt_column]
        if not isinstance(prompt, str):
            raise SuiteFileError(
                path, f"{prompt_column!r} must be a string, got {_kind(prompt)}", line=number
            )
        if not prompt.strip():
            raise SuiteFileError(path, f"{prompt_column!r} is empty", line=number)
        category = row.get(category_column)
        if category is not None and not isinstance(category, str):
            raise SuiteFileError(
                path,
                f"{category_column!r} must be a string, got {_kind(category)}",
                line=number,
            )
        if prompt in seen:
            continue
        seen.add(prompt)
        items.append(
            SuiteItem(
                prompt=prompt,
                category=(category or "").strip() or UNCATEGORISED,
                source=f"{path.name}:{number}",
            )
        )
    if not items:
        raise SuiteFileError(path, "no prompts found")
    return items


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
