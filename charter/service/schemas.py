"""The service's request and response bodies (pydantic only, so `charter.client` can share them).

Requests forbid unknown fields: a typo, or an attempt to pass `base_url`, is a 422, not ignored.
Feedback responses are the judge's own models (`Comparison`, `RevisionChain`, `Ranking`), so
their JSON is exactly what `charter judge ... --json` prints.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from charter.common.limits import InputLimits
from charter.common.unicode import valid_unicode
from charter.constitution import Constitution
from charter.jobs.spec import JobOptions, ModelSpec
from charter.judge.config import JudgeConfig
from charter.prompt_files import PromptRecord, check_prompt, check_responses

MAX_TEXT_CHARS = InputLimits.from_env().max_text_chars
"""Texts in requests obey the limit on texts in files (`CHARTER_MAX_TEXT_CHARS`, read once)."""
Content = Annotated[str, Field(max_length=MAX_TEXT_CHARS), BeforeValidator(valid_unicode)]
Text = Annotated[
    str, Field(min_length=1, max_length=MAX_TEXT_CHARS), BeforeValidator(valid_unicode)
]
ConstitutionRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=80,
        pattern=r"^[A-Za-z0-9._+-]+$",
        description="A frozen version label or digest prefix; omitted or 'current' means the "
        "service's principles directory as it is now.",
    ),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeedbackRequest(JudgeConfig):
    """A synchronous judge call: every `JudgeConfig` field (inherited, with its bounds and
    help), the judge and the constitution."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    judge: ModelSpec | None = Field(default=None, description="Model spec; default: the service's.")
    constitution: ConstitutionRef | None = None

    def judge_config(self) -> JudgeConfig:
        """The request's judge settings alone."""
        return JudgeConfig.model_validate(self.model_dump(include=set(JudgeConfig.model_fields)))


class CompareRequest(FeedbackRequest):
    prompt: Text
    a: Text
    b: Text


class CritiqueRequest(FeedbackRequest):
    prompt: Text
    response: Text


class RankRequest(FeedbackRequest):
    prompt: Text
    responses: list[Text] = Field(min_length=2, max_length=16)


class ChatMessage(_Request):
    role: Literal["system", "user", "assistant"]
    content: Content


class InlinePrompt(_Request):
    """A prompt (text or chat messages) with optional ready-made candidate responses."""

    prompt: Content | list[ChatMessage]
    responses: list[Content] | None = Field(default=None, max_length=16)

    @model_validator(mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return {"prompt": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _valid(self) -> InlinePrompt:
        check_prompt(self._raw_prompt())
        check_responses(self.responses)
        return self

    def _raw_prompt(self) -> Any:
        if isinstance(self.prompt, str):
            return self.prompt
        return [m.model_dump() for m in self.prompt]

    def to_record(self, source: str) -> PromptRecord:
        responses = tuple(self.responses) if self.responses is not None else None
        return PromptRecord(prompt=self._raw_prompt(), responses=responses, source=source)


class JobRequest(JobOptions):
    """A generation job with its prompts inline."""

    prompts: list[InlinePrompt] = Field(
        min_length=1,
        description='Each a string (a one-turn prompt) or {"prompt": text or messages, '
        '"responses": [...]} (ready-made candidates; else the policy samples `n`).',
    )
    constitution: ConstitutionRef | None = None


class UploadOptions(JobOptions):
    """The `options` form field of an upload: the job's options and how to read the file."""

    constitution: ConstitutionRef | None = None
    column: str = Field(default="prompt", min_length=1, max_length=100)
    responses_column: str = Field(default="responses", min_length=1, max_length=100)


JobState = Literal["queued", "running", "done", "failed", "cancelled", "stopped"]


class PromptProgress(BaseModel):
    total: int
    done: int
    failed: int
    pending: int


class JobView(BaseModel):
    """A job as its owner sees it. `summary` is filled in when a run ends."""

    id: str
    state: JobState
    mode: str
    judge: str
    policy: str
    constitution_digest: str
    constitution_version: str
    prompts: PromptProgress
    preferences: int = Field(description="Rows stored so far (before any confidence filter).")
    error: str | None = None
    errors: list[str] = Field(default=[], description="Recent per-prompt errors, newest first.")
    waiting_for: str | None = Field(
        default=None,
        description="While `running`: what the job is waiting for, if it is not making "
        "progress (the run holding its lease, its models, answers to its calls).",
    )
    prompts_source: str
    created_at: str
    updated_at: str
    summary: dict[str, Any] = {}


class JobCreated(BaseModel):
    job: JobView
    created: bool = Field(description="False when this token already had this exact job.")
    duplicates_dropped: int = 0


class JobList(BaseModel):
    jobs: list[JobView]


class ConstitutionSummary(BaseModel):
    digest: str
    version: str
    name: str
    message: str = ""
    frozen_at: str | None = None
    principles: list[str]


class ConstitutionDetail(ConstitutionSummary):
    constitution: Constitution


class ConstitutionList(BaseModel):
    current: ConstitutionSummary = Field(description="The service's principles directory now.")
    frozen: list[ConstitutionSummary] = Field(description="Frozen versions, newest first.")


class FieldError(BaseModel):
    loc: str
    message: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: list[FieldError] = []


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]
