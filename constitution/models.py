"""The data model: principles, defaults, and the constitution they make.

A constitution's identity is a content digest: sha256 over a canonical JSON form of what
changes the judge's behaviour (enabled principles, sorted by id, and the defaults). File
order, TOML formatting, surrounding whitespace and the human version label do not move it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]

PRINCIPLE_TEXT_FIELDS = ("title", "critique", "revision", "comparison")
EXAMPLE_FIELDS = ("prompt", "better", "worse", "why", "applies")


def canonical_digest(payload: Any) -> str:
    """sha256 of a canonical JSON serialisation (sorted keys, no insignificant whitespace)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Example(BaseModel):
    """A worked case of one principle: a prompt, a response that follows the principle better
    than another, and optionally why and whether the principle's `applies` question should say
    Yes for this prompt. `charter principles test` judges them; with `few_shot` the judge sees
    them as demonstrations."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: Text
    better: Text = Field(description="The response that follows the principle better.")
    worse: Text = Field(description="The response that follows it worse.")
    why: Text | None = Field(default=None, description="Why `better` is better (for people).")
    applies: bool | None = Field(
        default=None,
        description="What the principle's `applies` question should answer for this prompt.",
    )

    def canonical(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class Principle(BaseModel):
    """One value, as three requests the judge can act on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Slug
    title: Text
    critique: Text = Field(description="Asks the judge to critique a response under this value.")
    revision: Text = Field(
        description="Asks the judge to rewrite the response to answer the critique."
    )
    comparison: Text = Field(description="A question asking which of two responses is better.")
    score: Text | None = Field(
        default=None,
        description="A Yes/No question about one response, for pointwise judging "
        "(default: built from the title).",
    )
    applies: Text | None = Field(
        default=None,
        description="A Yes/No question about the conversation alone (not the response): does "
        "this principle have anything to say here? Without it the principle always applies.",
    )
    weight: float = Field(default=1.0, gt=0, description="Relative weight when averaging verdicts.")
    tags: tuple[str, ...] = ()
    enabled: bool = True
    examples: tuple[Example, ...] = Field(
        default=(),
        description="Worked cases: what the principle prefers, checked by "
        "`charter principles test`, shown to the judge with `few_shot`.",
    )

    @field_validator("tags")
    @classmethod
    def _normalise_tags(cls, tags: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(sorted({t.strip() for t in tags}))
        if any(not t for t in cleaned):
            raise ValueError("tags must be non-empty strings")
        return cleaned

    @property
    def score_question(self) -> str:
        """The pointwise question: the file's `score`, else one built from the title."""
        return self.score or f'Does the response follow the principle "{self.title}"?'

    @property
    def conditional(self) -> bool:
        """Whether the principle applies only where its `applies` question says Yes."""
        return self.applies is not None

    def canonical(self) -> dict[str, Any]:
        """The principle's meaning, as plain data (no `enabled`: that belongs to the set).

        Optional fields left out (`score`, `applies`, `examples`) are absent, so principles
        written before they existed keep their digests (and their stored judgments). Examples
        are part of the meaning: the judge is shown them as demonstrations (`few_shot`), so an
        edited example must change the digest like an edited question does.
        """
        data = self.model_dump(mode="json", exclude={"enabled", "examples"})
        for name in ("score", "applies"):
            if data[name] is None:
                del data[name]
        if self.examples:
            data["examples"] = [example.canonical() for example in self.examples]
        return data

    @property
    def digest(self) -> str:
        """Content digest of this principle alone; judgments are keyed by it."""
        return _digest_of(self)


class Defaults(BaseModel):
    """How the constitution is applied unless a caller says otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    principles_per_comparison: int = Field(default=4, ge=1)
    revisions: int = Field(default=1, ge=1)
    tie_margin: float = Field(default=0.05, ge=0, lt=0.5)


class Constitution(BaseModel):
    """The ordered set of enabled principles plus defaults, with a name and version label."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Text
    version: Text
    description: str = ""
    defaults: Defaults = Defaults()
    principles: tuple[Principle, ...]

    @field_validator("principles")
    @classmethod
    def _sorted_unique(cls, principles: tuple[Principle, ...]) -> tuple[Principle, ...]:
        ordered = tuple(sorted(principles, key=lambda p: p.id))
        ids = [p.id for p in ordered]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate principle ids: {', '.join(duplicates)}")
        return ordered

    @property
    def enabled(self) -> tuple[Principle, ...]:
        return tuple(p for p in self.principles if p.enabled)

    def canonical(self) -> dict[str, Any]:
        return {
            "defaults": self.defaults.model_dump(mode="json"),
            "principles": [p.canonical() for p in self.enabled],
        }

    @property
    def digest(self) -> str:
        return _digest_of(self)

    @property
    def short_digest(self) -> str:
        return self.digest[:12]

    def principle(self, principle_id: str) -> Principle:
        for p in self.principles:
            if p.id == principle_id:
                return p
        raise KeyError(principle_id)


@functools.lru_cache(maxsize=1024)
def _digest_of(model: Principle | Constitution) -> str:
    """Memoised digests: the judge reads them on every call. Keyed by the frozen model itself
    (equal by content), so a changed copy never gets a stale digest."""
    return canonical_digest(model.canonical())
