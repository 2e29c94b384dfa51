"""Text must be valid Unicode: a lone surrogate is refused where the text comes in.

JSON can spell a lone surrogate (`"\\ud800"`) and Python's `json` decodes it into a `str`, but
no UTF-8 encoder can write it: left in, it fails later, far from its cause (a judge request
that cannot be encoded, a store row that cannot be written). Refusing it at the boundary gives
the one-line error saying where it is.
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def check_unicode(text: str) -> str:
    """`text` unchanged, or `ValueError` naming the first lone surrogate and its position."""
    found = _SURROGATE.search(text)
    if found is not None:
        raise ValueError(
            f"holds a lone surrogate (U+{ord(found.group()):04X}) at character "
            f"{found.start() + 1}: not valid Unicode text"
        )
    return text


def valid_unicode(value: object) -> object:
    """`check_unicode` for a value that may not be text yet (a pydantic before-validator: it
    must run before pydantic reads the text, which fails on a surrogate with a vaguer error)."""
    return check_unicode(value) if isinstance(value, str) else value
