"""Feedback calls that got nothing usable from the judge, answered as errors a client can act on.

The judge records a failed question in its result instead of raising: a comparison with some
failed judgments is still a verdict, and the result says how many failed. When every question
failed there is no verdict at all, and a 200 with `winner: null` would pass an outage off as
an answer. `JudgeWatch` notes how each call failed, so the error says which outage it was:

- 503 `judge_unreachable`: no connection could be made to the judge;
- 504 `judge_timeout`: the judge did not answer within the service's timeout;
- 502 `judge_failed`: the judge answered with an error, or with replies that could not be used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from charter.judge import BackendError, ChatModel, Comparison, Ranking, RevisionChain
from charter.judge.backends.base import Completion, FailureReason, GenerationRequest, Message
from charter.judge.results import ResponseScore


@dataclass(frozen=True)
class JudgeFailure:
    """The HTTP answer for a feedback call without a usable result."""

    status: int
    code: str
    message: str


class JudgeWatch:
    """The service's judge for one request, noting why each of its failed calls failed."""

    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner
        self.reasons: list[FailureReason] = []

    @property
    def spec(self) -> str:
        return self.inner.spec

    async def generate(self, request: GenerationRequest) -> Completion:
        try:
            return await self.inner.generate(request)
        except BackendError as exc:
            self.reasons.append(exc.reason)
            raise

    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion:
        try:
            return await self.inner.choose(messages, options)
        except BackendError as exc:
            self.reasons.append(exc.reason)
            raise

    async def aclose(self) -> None:
        """Nothing: the service's model pool owns the model and closes it at shutdown."""

    def failure(self, detail: str | None) -> JudgeFailure:
        """The answer for a result with no usable verdict; `detail` is its first error."""
        reasons = set(self.reasons)
        if reasons == {"timeout"}:
            status, code, what = 504, "judge_timeout", "the judge did not answer in time"
        elif reasons and reasons <= {"unreachable", "timeout"}:
            status, code, what = 503, "judge_unreachable", "the judge cannot be reached"
        elif reasons:
            status, code, what = 502, "judge_failed", "the judge answered with an error"
        else:
            status, code, what = 502, "judge_failed", "the judge's replies could not be used"
        message = f"no result: {what}"
        if detail:
            message += f" (first error: {' '.join(detail.split())})"
        return JudgeFailure(status, code, message)


def unanswered(result: Comparison | RevisionChain | Ranking) -> tuple[bool, str | None]:
    """Whether `result` holds nothing usable, and its first error.

    A comparison needs a verdict; a revision chain at least one completed round; a ranking at
    least one comparison that succeeded. Partly failed results are answers (they count their
    failures), so they pass.
    """
    if isinstance(result, Comparison):
        return result.p_a is None, _first_error(result)
    if isinstance(result, RevisionChain):
        return result.completed == 0 and result.error is not None, result.error
    failed = bool(result.comparisons) and result.failed_comparisons == len(result.comparisons)
    errors = [_first_error(c) for c in result.comparisons]
    errors.append(_first_score_error(result.response_scores))
    return failed, next((e for e in errors if e), None)


def _first_error(comparison: Comparison) -> str | None:
    for judgment in comparison.judgments:
        if judgment.error:
            return judgment.error
    return _first_score_error(comparison.scores)


def _first_score_error(scores: Sequence[ResponseScore]) -> str | None:
    for score in scores:
        for judgment in score.judgments:
            if judgment.error:
                return judgment.error
    return None
