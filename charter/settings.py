"""Where charter finds things: defaults, overridable by environment variables and flags."""

from __future__ import annotations

from pathlib import Path

PRINCIPLES_ENV = "CHARTER_PRINCIPLES"
STORE_ENV = "CHARTER_STORE"

DEFAULT_PRINCIPLES_DIR = Path("principles")
DEFAULT_STORE_PATH = Path(".charter") / "charter.db"
