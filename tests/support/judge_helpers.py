"""Not tests: helpers shared by the judge test files (a small constitution and a fake judge)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from charter.constitution import Constitution, Defaults, Principle
from charter.judge import BackendError, Completion, GenerationRequest, Message, Usage


def principle(pid: str, weight: float = 1.0, comparison: str | None = None) -> Principle:
    return Principle(
        id=pid,
        title=f"Principle {pid}",
        critique=f"Identify ways the response fails {pid}.",
        revision=f"Rewrite the response so it satisfies {pid}.",
        comparison=comparison or f"Which response better satisfies {pid}?",
        weight=weight,
    )


def constitution(
    ids: Sequence[str] = ("harmless", "honest", "helpful", "concise", "kind"),
    *,
    k: int = 2,
    revisions: int = 1,
    tie_margin: float = 0.05,
) -> Constitution:
    return Constitution(
        name="test",
        version="0.0.1",
        defaults=Defaults(principles_per_comparison=k, revisions=revisions, tie_margin=tie_margin),
        principles=tuple(principle(i) for i in ids),
    )


_SLOT = re.compile(r"<<<RESPONSE_(A|B) ([0-9a-f]+)>>>\n(.*?)\n<<<END_RESPONSE_\1 \2>>>", re.S)


def slots(messages: Sequence[Message]) -> dict[str, str]:
    """The fenced slot texts of a comparison prompt, read the way a parser of our format would."""
    return {m.group(1): m.group(3) for m in _SLOT.finditer(messages[-1].content)}


Verdict = Callable[[str, str, Sequence[Message]], Completion | Exception]


class FakeJudge:
    """An in-process ChatModel: `verdict(slot_a, slot_b, messages)` answers each `choose`."""

    def __init__(
        self,
        verdict: Verdict | None = None,
        text: Callable[[Sequence[Message]], str | Exception] | None = None,
    ) -> None:
        self.verdict = verdict or (lambda a, b, m: Completion(text="A"))
        self.text = text or (lambda m: "Reasoning.\nAnswer: A")
        self.choose_calls: list[tuple[Message, ...]] = []
        self.generate_calls: list[GenerationRequest] = []

    @property
    def spec(self) -> str:
        return "fake:judge"

    async def generate(self, request: GenerationRequest) -> Completion:
        self.generate_calls.append(request)
        out = self.text(request.messages)
        if isinstance(out, Exception):
            raise out
        return Completion(text=out, usage=Usage(prompt_tokens=10, completion_tokens=5))

    async def choose(self, messages: Sequence[Message], options: Sequence[str]) -> Completion:
        assert tuple(options) == ("A", "B")
        self.choose_calls.append(tuple(messages))
        found = slots(messages)
        out = self.verdict(found["A"], found["B"], messages)
        if isinstance(out, Exception):
            raise out
        return out.model_copy(update={"usage": Usage(prompt_tokens=10, completion_tokens=1)})

    async def aclose(self) -> None:
        return None


def prefers(good: set[str], *, bias_a: Callable[[str, str], bool] = lambda a, b: False) -> Verdict:
    """A verdict function preferring texts in `good`; `bias_a(slot_a, slot_b)` forces "A"."""

    def verdict(a: str, b: str, messages: Sequence[Message]) -> Completion:
        if bias_a(a, b):
            return Completion(text="A")
        return Completion(text="A" if a in good else "B")

    return verdict


__all__ = ["BackendError", "FakeJudge", "constitution", "prefers", "principle", "slots"]
