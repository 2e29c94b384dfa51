"""Not tests: helpers shared by the judge test files (a small constitution, and a judge script
for the scripted loopback server, the judge's one test fake)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from charter.constitution import Constitution, Defaults, Principle
from charter.judge import BackendOptions, Message, Usage
from charter.judge.backends.openai_http import OpenAIChatModel, RetryPolicy

from .scripted_server import Fault, RecordedRequest, Reply, ScriptedJudgeServer, _approx_tokens

MODEL = "scripted-judge"
FAST_RETRY = RetryPolicy(initial_wait_s=0.01, max_wait_s=0.05, jitter_s=0.0, max_retry_after_s=1)
VERDICT_MAX_TOKENS = 4  # a request asking for at most this many tokens wants a verdict letter


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


# ---------------------------------------------------------------- scripting the loopback server

Outcome = Reply | str | Fault
"""What a script answers: a reply (text, optional first-token logprobs), bare text, or a fault
the server injects instead (e.g. `Fault.http(500)`, which the backend turns into BackendError)."""
Verdict = Callable[[str, str, Sequence[Message]], Outcome]
Text = Callable[[Sequence[Message]], Outcome]


def letter(text: str, probs: dict[str, float] | None = None) -> Reply:
    """A verdict reply; `probs`: option -> logprob, sent as the first token's top logprobs."""
    return Reply(text, top_logprobs=None if probs is None else list(probs.items()))


def is_verdict(body: dict[str, Any]) -> bool:
    """Whether a chat request asks for a verdict letter (`choose`) rather than text."""
    return int(body.get("max_tokens") or 16) <= VERDICT_MAX_TOKENS


def wire_messages(body: dict[str, Any]) -> tuple[Message, ...]:
    return tuple(Message(role=m["role"], content=m["content"]) for m in body["messages"])


def billed(body: dict[str, Any], text: str) -> Usage:
    """The usage the scripted server reports for answering `body` with `text`."""
    prompt = "".join(str(m.get("content", "")) for m in body["messages"])
    return Usage(prompt_tokens=_approx_tokens(prompt), completion_tokens=_approx_tokens(text))


@dataclass
class Served:
    body: dict[str, Any]
    outcome: Reply | Fault

    @property
    def usage(self) -> Usage:
        assert isinstance(self.outcome, Reply), "a fault bills nothing"
        return billed(self.body, self.outcome.text)


class JudgeScript:
    """A responder (and fault policy) for `ScriptedJudgeServer` that answers like a judge model.

    A verdict request (`max_tokens` <= 4) is answered by `verdict(slot_a, slot_b, messages)`,
    with the fenced slot texts parsed from the last user message; any other request by
    `text(messages)`. Either may return a `Fault`, which the server injects in place of an
    answer. Calls are serialised; an exception in a script is recorded in `errors` (and answered
    with HTTP 500) so the test can re-raise it instead of seeing only a failed request.
    """

    def __init__(self, verdict: Verdict | None = None, text: Text | None = None) -> None:
        self.verdict: Verdict = verdict or (lambda a, b, m: "A")
        self.text: Text = text or (lambda m: "Reasoning.\nAnswer: A")
        self.served: list[Served] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._pending: dict[int, Served] = {}

    def install(self, server: ScriptedJudgeServer) -> None:
        server.responder = self
        server.fault_policy = self.fault_policy

    def _run(self, body: dict[str, Any]) -> Served:
        messages = wire_messages(body)
        with self._lock:
            try:
                if is_verdict(body):
                    found = slots(messages)
                    out = self.verdict(found["A"], found["B"], messages)
                else:
                    out = self.text(messages)
            except Exception as exc:
                self.errors.append(exc)
                out = Fault.http(500, message=f"the test's script raised {exc!r}")
            served = Served(body, Reply(out) if isinstance(out, str) else out)
            self.served.append(served)
            return served

    def fault_policy(self, record: RecordedRequest) -> Fault | None:
        """Runs the script before the server answers, so its faults are the server's."""
        if not isinstance(record.body, dict):
            return None
        served = self._run(record.body)
        if isinstance(served.outcome, Fault) and served.outcome.kind in ("http_error", "drop"):
            return served.outcome  # the server will not call the responder
        with self._lock:
            self._pending[id(record.body)] = served  # `served` keeps the body, so the id holds
        return served.outcome if isinstance(served.outcome, Fault) else None

    def __call__(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            served = self._pending.pop(id(body), None)
        if served is None:  # a queued fault took the policy's turn: script it now
            served = self._run(body)
        # A fault that still answers (delay, garbage, ...) answers with empty text.
        return served.outcome if isinstance(served.outcome, Reply) else Reply("")

    def billed(self) -> Usage:
        """The total usage the server reported for every answer it gave."""
        total = Usage()
        for s in self.served:
            if isinstance(s.outcome, Reply):
                total = total + s.usage
        return total


def scripted_model(
    server: ScriptedJudgeServer, *, max_retries: int = 2, timeout_s: float = 10.0
) -> OpenAIChatModel:
    """The real OpenAI backend pointed at `server`, with millisecond backoff."""
    options = BackendOptions(base_url=server.base_url, max_retries=max_retries, timeout_s=timeout_s)
    return OpenAIChatModel(MODEL, options, retry=FAST_RETRY)


class Loopback:
    """A test's handle on the shared scripted server: `loopback(verdict, text)` installs a new
    `JudgeScript` and returns the real backend talking to the server."""

    def __init__(self, server: ScriptedJudgeServer) -> None:
        self.server = server
        self.scripts: list[JudgeScript] = []

    def __call__(
        self, verdict: Verdict | None = None, text: Text | None = None, *, max_retries: int = 2
    ) -> OpenAIChatModel:
        script = JudgeScript(verdict, text)
        script.install(self.server)
        self.scripts.append(script)
        return scripted_model(self.server, max_retries=max_retries)

    @property
    def script(self) -> JudgeScript:
        return self.scripts[-1]

    @property
    def verdict_requests(self) -> list[dict[str, Any]]:
        return [b for b in self.server.requests if is_verdict(b)]

    @property
    def generation_requests(self) -> list[dict[str, Any]]:
        return [b for b in self.server.requests if not is_verdict(b)]

    def check(self) -> None:
        """Re-raise the first exception any script raised."""
        for script in self.scripts:
            if script.errors:
                raise script.errors[0]


def prefers(good: set[str], *, bias_a: Callable[[str, str], bool] = lambda a, b: False) -> Verdict:
    """A verdict function preferring texts in `good`; `bias_a(slot_a, slot_b)` forces "A"."""

    def verdict(a: str, b: str, messages: Sequence[Message]) -> Outcome:
        if bias_a(a, b):
            return "A"
        return "A" if a in good else "B"

    return verdict


__all__ = [
    "FAST_RETRY",
    "MODEL",
    "JudgeScript",
    "Loopback",
    "Served",
    "billed",
    "constitution",
    "is_verdict",
    "letter",
    "prefers",
    "principle",
    "scripted_model",
    "slots",
    "wire_messages",
]
