"""Findings about principle files, and the error that carries them.

Every problem names the file it is in, and the line or field where known, so that
a user can jump straight to it.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


class Finding(BaseModel):
    """One problem found in a principles directory."""

    path: Path
    message: str
    code: str
    line: int | None = None
    field: str | None = None
    severity: Severity = Severity.ERROR

    def location(self) -> str:
        where = str(self.path)
        if self.line is not None:
            where += f":{self.line}"
        if self.field is not None:
            where += f" [{self.field}]"
        return where

    def __str__(self) -> str:
        return f"{self.location()}: {self.severity.value}: {self.message} ({self.code})"


class ConstitutionError(Exception):
    """A principles directory that cannot be loaded; carries every finding, errors first."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        first = findings[0] if findings else None
        summary = str(first) if first else "invalid constitution"
        more = len(findings) - 1
        if more > 0:
            summary += f" (and {more} more problem{'s' if more > 1 else ''})"
        super().__init__(summary)


class VersionError(Exception):
    """A frozen version that cannot be found, is ambiguous, or cannot be frozen."""
