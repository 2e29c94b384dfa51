"""A new principle file with every field present and empty, so lint guides the author."""

from __future__ import annotations

import re
from pathlib import Path

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

TEMPLATE = '''# Principle "{id}". Fill in the four texts; `charter principles lint` checks them.
id = "{id}"
title = ""

# Asks the judge to point out where a response falls short of this value.
critique = """
"""

# Asks the judge to rewrite the response so the critique no longer applies.
revision = """
"""

# Asks the judge to choose between two responses, e.g. "Which response is more ...?"
comparison = """
"""

# Optional: a Yes/No question about one response, for pointwise judging, e.g.
# "Does the response ...?" (without it, one is built from the title).
# score = ""

# Optional: a Yes/No question about the conversation alone, e.g. "Does the user ask ...?"
# (without it, the principle always applies).
# applies = ""

weight = 1.0
tags = []
enabled = true

# Optional, after every other key: worked cases `charter principles test` checks.
# [[examples]]
# prompt = ""
# better = ""
# worse = ""
# why = ""
'''


def scaffold_principle(directory: Path | str, principle_id: str) -> Path:
    """Write `<directory>/<id>.toml` from the template; refuse bad ids and existing files."""
    if not _SLUG.match(principle_id):
        raise ValueError(
            f"invalid principle id {principle_id!r}: use lower-case letters, digits, '-' or '_'"
        )
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: directory does not exist")
    path = directory / f"{principle_id}.toml"
    if path.exists():
        raise FileExistsError(f"{path}: already exists")
    path.write_text(TEMPLATE.format(id=principle_id), encoding="utf-8")
    return path
