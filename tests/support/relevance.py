"""Not a test: a scripted judge that is right only under principles that fit the prompt.

For the scripted loopback server (`ScriptedJudgeServer`), the judge's one test fake. It is told,
for each prompt, which principles are relevant to it and which of its responses people prefer.
It knows the constitution's questions, so it can tell which principle a request asks under:

- an `applies` question about a known prompt: "Yes" exactly when the principle is relevant;
- a pointwise score question under a relevant principle: "Yes" for the preferred response, "No"
  for the other; under any other principle, a coin flip (a hash of principle and response),
  as a principle with nothing to say about the conversation would answer;
- a pairwise comparison: the preferred response's letter under a relevant principle, else a
  coin flip (`always_right`: right under every principle, for testing examples).

Every answer carries first-token logprobs at `p_confident`. It counts the `applies` questions it
is asked, per (principle, prompt), so tests can check they are asked once per prompt.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from charter.constitution import Constitution

from .scripted_server import Reply, last_user_message


@dataclass(frozen=True)
class Case:
    """One prompt: its preferred and other response, and the principles relevant to it."""

    prompt: str
    preferred: str
    other: str
    relevant: frozenset[str]


def _coin(*parts: str) -> bool:
    return hashlib.sha256("\x00".join(parts).encode()).digest()[0] % 2 == 0


class RelevanceResponder:
    """See the module docstring."""

    def __init__(
        self,
        constitution: Constitution,
        cases: Sequence[Case],
        *,
        p_confident: float = 0.9,
        always_right: bool = False,
    ) -> None:
        self.cases = {case.prompt: case for case in cases}
        self.always_right = always_right
        self.p_confident = p_confident
        self.applies = {p.applies.strip(): p.id for p in constitution.enabled if p.applies}
        self.scores = {p.score_question.strip(): p.id for p in constitution.enabled}
        self.comparisons = {p.comparison.strip(): p.id for p in constitution.enabled}
        self.applies_asked: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def _reply(self, answer: str, options: tuple[str, str]) -> Reply:
        other = options[1] if answer == options[0] else options[0]
        p = self.p_confident
        return Reply(answer, top_logprobs=[(answer, math.log(p)), (other, math.log1p(-p))])

    @staticmethod
    def _find(message: str, questions: Mapping[str, str]) -> str | None:
        for question, principle_id in questions.items():
            if question in message:
                return principle_id
        return None

    def _case(self, message: str) -> Case | None:
        found = [case for prompt, case in self.cases.items() if prompt in message]
        return max(found, key=lambda c: len(c.prompt)) if found else None

    def __call__(self, body: dict[str, Any]) -> Reply:
        message = last_user_message(body)
        case = self._case(message)
        if case is None:
            return Reply("I cannot tell which conversation this is.")
        applies = self._find(message, self.applies)
        has_preferred, has_other = case.preferred in message, case.other in message
        if applies is not None and not (has_preferred or has_other):
            with self._lock:
                self.applies_asked[(applies, case.prompt)] += 1
            return self._reply("Yes" if applies in case.relevant else "No", ("Yes", "No"))
        scored = self._find(message, self.scores)
        if scored is not None and has_preferred != has_other:
            response = case.preferred if has_preferred else case.other
            right = self.always_right or scored in case.relevant
            good = has_preferred if right else _coin(scored, response)
            return self._reply("Yes" if good else "No", ("Yes", "No"))
        compared = self._find(message, self.comparisons)
        if compared is not None and has_preferred and has_other:
            preferred_first = message.index(case.preferred) < message.index(case.other)
            relevant = self.always_right or compared in case.relevant
            first_wins = preferred_first if relevant else _coin(compared, case.prompt)
            return self._reply("A" if first_wins else "B", ("A", "B"))
        return Reply("Scripted critique: the response could say more.")
