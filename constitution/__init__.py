"""Principles, loaded from files, frozen into versioned constitutions, linted and diffed.

This package imports nothing else of charter.
"""

from .diff import ConstitutionDiff, FieldChange, PrincipleChange, diff_constitutions
from .errors import ConstitutionError, Finding, Severity, VersionError
from .history import (
    FreezeResult,
    FrozenVersion,
    LabelsSeen,
    freeze,
    freeze_for_run,
    get_version,
    history,
    next_free_label,
    resolve,
)
from .loader import CONSTITUTION_FILE, Inspection, inspect_directory, load_constitution
from .models import Constitution, Defaults, Example, Principle, canonical_digest
from .scaffold import scaffold_principle

__all__ = [
    "CONSTITUTION_FILE",
    "Constitution",
    "ConstitutionDiff",
    "ConstitutionError",
    "Defaults",
    "Example",
    "FieldChange",
    "Finding",
    "FreezeResult",
    "FrozenVersion",
    "Inspection",
    "LabelsSeen",
    "Principle",
    "PrincipleChange",
    "Severity",
    "VersionError",
    "canonical_digest",
    "diff_constitutions",
    "freeze",
    "freeze_for_run",
    "get_version",
    "history",
    "inspect_directory",
    "load_constitution",
    "next_free_label",
    "resolve",
    "scaffold_principle",
]
