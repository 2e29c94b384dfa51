"""Where charter finds things: defaults, overridable by environment variables and flags."""

from __future__ import annotations

from pathlib import Path

PRINCIPLES_ENV = "CHARTER_PRINCIPLES"
STORE_ENV = "CHARTER_STORE"

DEFAULT_PRINCIPLES_DIR = Path("principles")
DEFAULT_STORE_PATH = Path(".charter") / "charter.db"

JUDGE_ENV = "CHARTER_JUDGE"
POLICY_ENV = "CHARTER_POLICY"
JUDGE_BASE_URL_ENV = "CHARTER_JUDGE_BASE_URL"
POLICY_BASE_URL_ENV = "CHARTER_POLICY_BASE_URL"
DEFAULT_MODEL = "smollm2"
LEASE_TTL_ENV = "CHARTER_LEASE_TTL_S"
