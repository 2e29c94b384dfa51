"""How much input charter reads: per file, per row and per text, each overridable by environment.

One oversized input must fail fast with a clear message instead of costing gigabytes of memory
and a megabyte-long judge request. Each limit is a field of `InputLimits`; its environment
variable is derived from its name (`max_text_chars` -> `CHARTER_MAX_TEXT_CHARS`), as the
other `CHARTER_*` settings are read from the environment, and a value that is not a whole
number in the field's bounds is a one-line `LimitsError`.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from .environment import model_from_env

ENV_PREFIX = "CHARTER_"
MIB = 1024 * 1024


def env_var(field: str) -> str:
    """The environment variable that sets the limit `field`."""
    return ENV_PREFIX + field.upper()


class LimitsError(ValueError):
    """A limit set in the environment is not usable; the message names the variable."""


class InputLimits(BaseModel):
    """The limits on data files, rows and texts, with defaults that no real input reaches.

    - `max_text_chars` (100,000 characters, about 25,000 tokens): one prompt, response or
      candidate. The judge reads the prompt and two responses in one request, so three texts at
      the limit already fill a long-context judge; a text of a few hundred KB is a mistake (a
      whole document pasted into a cell), not a prompt. The service's request schemas take
      the same limit.
    - `max_row_bytes` (8 MiB): one row (a JSON line, a CSV record, a Parquet row). It holds a
      prompt with 16 candidate responses at the text limit even in a 3-byte UTF-8 script, so
      the text limit, not this one, is what a real row meets; it bounds what one `json.loads`
      may cost. A row is measured before it is parsed. It is below the service's request
      body limit (`CHARTER_SERVICE_MAX_BODY`, 10 MiB), so an upload can carry any row allowed.
    - `max_file_bytes` (512 MiB): one data file, checked before it is read. 100,000 prompt
      rows of 5 KB each fit; files are read whole (JSON Lines line by line), so this bounds
      the memory a load takes. Service uploads are bounded first by the request body limit.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_file_bytes: int = Field(
        default=512 * MIB,
        ge=1,
        le=2**40,
        description="Largest data file read, in bytes (a saved dataset directory: all its files).",
    )
    max_row_bytes: int = Field(
        default=8 * MIB,
        ge=1,
        le=2**31,
        description="Largest row (JSON line, CSV record, Parquet row) read, in bytes.",
    )
    max_text_chars: int = Field(
        default=100_000,
        ge=1,
        le=2**31,
        description="Longest text (a prompt, response or candidate, or any other string field) "
        "read, in characters.",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> InputLimits:
        """The defaults, with each limit whose variable is set in `env` (default: os.environ)."""
        variables = {name: env_var(name) for name in cls.model_fields}
        return model_from_env(cls, variables, env, LimitsError)

    def exceeded(self, field: str, what: str) -> str:
        """A one-line reason: `what` passed the limit `field`, and how to raise it."""
        limit: int = getattr(self, field)
        unit = "characters" if field.endswith("_chars") else "bytes"
        return f"{what}, over the limit of {limit:,} {unit}; set {env_var(field)} to raise it"
