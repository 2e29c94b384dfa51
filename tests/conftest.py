"""Shared fixtures: a private copy of the default principles, and a store path in tmp."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PRINCIPLES = REPO / "principles"


@pytest.fixture
def principles_dir(tmp_path: Path) -> Path:
    """A writable copy of the shipped default constitution."""
    target = tmp_path / "principles"
    shutil.copytree(DEFAULT_PRINCIPLES, target)
    return target


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / ".charter" / "charter.db"
