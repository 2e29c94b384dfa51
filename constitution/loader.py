"""Read a principles directory into a Constitution, collecting every problem on the way.

`inspect_directory` never raises for bad content: it returns what it could build and a list
of findings, which is what `charter principles lint` shows. `load_constitution` is the strict
form every other caller uses: any error finding becomes a ConstitutionError.
"""

from __future__ import annotations

import re
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from charter.common.datafiles import loads_toml

from .errors import ConstitutionError, Finding, Severity
from .lint import check_constitution, check_principle, key_line
from .models import Constitution, Defaults, Principle

CONSTITUTION_FILE = "constitution.toml"
PRINCIPLE_SUFFIX = ".toml"
_TOML_LINE = re.compile(r"at line (\d+)")
_CODES = {
    "missing": "missing-field",
    "extra_forbidden": "unknown-key",
    "string_too_short": "empty-text",
}


@dataclass
class Inspection:
    """What a directory holds: the constitution if it could be built, and all findings."""

    directory: Path
    constitution: Constitution | None = None
    principles: list[Principle] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def ok(self) -> bool:
        return not self.errors


def principle_files(directory: Path) -> list[Path]:
    """The principle files of a directory, in name order (the order never affects meaning)."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix == PRINCIPLE_SUFFIX and p.name != CONSTITUTION_FILE
    )


def inspect_directory(directory: Path | str) -> Inspection:
    directory = Path(directory)
    result = Inspection(directory=directory)
    if not directory.exists():
        result.findings.append(
            Finding(path=directory, code="no-directory", message="directory does not exist")
        )
        return result
    if not directory.is_dir():
        result.findings.append(
            Finding(path=directory, code="not-a-directory", message="is not a directory")
        )
        return result

    header = _read_header(directory / CONSTITUTION_FILE, result.findings)
    files = principle_files(directory)
    if not files:
        result.findings.append(
            Finding(
                path=directory,
                code="no-principles",
                message=f"no principle files (*{PRINCIPLE_SUFFIX}) in directory",
            )
        )
    declared_ids: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        principle = _read_principle(path, result.findings, declared_ids)
        if principle is not None:
            result.principles.append(principle)

    result.findings.extend(check_constitution(directory, declared_ids, result.principles))
    if header is not None and result.ok:
        result.constitution = Constitution(principles=tuple(result.principles), **header)
    result.findings.sort(key=lambda f: (f.severity is not Severity.ERROR, str(f.path), f.line or 0))
    return result


def load_constitution(directory: Path | str) -> Constitution:
    """Load and validate a principles directory; raise ConstitutionError on any error."""
    inspection = inspect_directory(directory)
    if inspection.constitution is None:
        raise ConstitutionError(inspection.errors)
    return inspection.constitution


def _read_toml(path: Path, findings: list[Finding]) -> tuple[dict[str, Any], str] | None:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        findings.append(
            Finding(
                path=path,
                line=line,
                code="not-utf8",
                message=f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            )
        )
        return None
    try:
        return loads_toml(text), text
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_LINE.search(str(exc))
        line = int(match.group(1)) if match else text.count("\n") + 1  # "at end of document"
        findings.append(
            Finding(
                path=path,
                line=line,
                code="bad-toml",
                message=f"malformed TOML: {exc}",
            )
        )
        return None


def _read_principle(
    path: Path, findings: list[Finding], declared_ids: dict[str, list[Path]]
) -> Principle | None:
    parsed = _read_toml(path, findings)
    if parsed is None:
        return None
    data, text = parsed
    if isinstance(data.get("id"), str):
        declared_ids[data["id"]].append(path)
    before = len(findings)
    findings.extend(check_principle(path, data, text))
    try:
        principle = Principle.model_validate(data)
    except ValidationError as exc:
        reported = {f.field for f in findings[before:]}
        examples_reported = any((f.field or "").startswith("examples") for f in findings[before:])
        findings.extend(
            f
            for f in _validation_findings(path, text, exc)
            if f.field not in reported
            and not (examples_reported and (f.field or "").startswith("examples"))
        )
        return None
    return principle if len(findings) == before else None


def _read_header(path: Path, findings: list[Finding]) -> dict[str, Any] | None:
    if not path.exists():
        findings.append(
            Finding(
                path=path,
                code="no-header",
                message=f"missing {CONSTITUTION_FILE} (it names the constitution and its version)",
            )
        )
        return None
    parsed = _read_toml(path, findings)
    if parsed is None:
        return None
    data, text = parsed
    allowed = {"name", "version", "description", "defaults"}
    try:
        probe = {k: v for k, v in data.items() if k in allowed}
        Constitution.model_validate({**probe, "principles": ()})
        if "defaults" in data and isinstance(data["defaults"], dict):
            Defaults.model_validate(data["defaults"])
    except ValidationError as exc:
        findings.extend(_validation_findings(path, text, exc))
        return None
    unknown = sorted(set(data) - allowed)
    for key in unknown:
        findings.append(
            Finding(
                path=path,
                line=key_line(text, key),
                field=key,
                code="unknown-key",
                message=f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})",
            )
        )
    return None if unknown else probe


def _validation_findings(path: Path, text: str, exc: ValidationError) -> list[Finding]:
    out = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        name = ".".join(loc) if loc else None
        key = loc[-1] if loc else None
        code = _CODES.get(error["type"], "invalid-value")
        if code == "missing-field":
            message = f"missing required field {name!r}"
        elif code == "unknown-key":
            message = f"unknown key {name!r}"
        elif code == "empty-text":
            message = f"{name!r} is empty or whitespace-only"
        else:
            message = f"{name!r}: {error['msg']}"
        out.append(
            Finding(
                path=path,
                line=key_line(text, key) if key else None,
                field=name,
                code=code,
                message=message,
            )
        )
    return out
