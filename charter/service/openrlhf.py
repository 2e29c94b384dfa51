"""OpenRLHF's remote reward protocol, translated to and from `charter.judge.reward`.

OpenRLHF posts `query[i]`, the policy's prompt and response decoded together with special
tokens kept, and `prompts[i]`, the prompt as given to the policy. The response is what follows
the prompt:

- `query` starts with `prompt`: the rest is the response (the usual case);
- `prompt` occurs later in `query` (e.g. a BOS token decoded before it): the response is what
  follows its first occurrence, flagged `charter/prefix_mismatch`;
- `prompt` is not in `query` at all (e.g. OpenRLHF cut a long prompt from the left, or the
  tokenizer does not round-trip the text): the whole query is scored as the response, flagged
  `charter/prefix_mismatch` and `charter/prompt_not_found`.

Queries with the same prompt in one request are one group for the fallback (their mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from charter.constitution import Constitution
from charter.judge.reward import Reward, RewardItem

from .reward_schemas import OpenRLHFRewardRequest, OpenRLHFRewardResponse

FALLBACK = "charter/fallback"
TIMED_OUT = "charter/timed_out"
PREFIX_MISMATCH = "charter/prefix_mismatch"
PROMPT_NOT_FOUND = "charter/prompt_not_found"
PRINCIPLE = "charter/principle/"


@dataclass(frozen=True)
class Split:
    """A query cut into its response, and how well the prompt matched."""

    response: str
    prefix: bool
    found: bool


def split_query(query: str, prompt: str) -> Split:
    """The response in `query` after `prompt` (see the module docstring for mismatches)."""
    if query.startswith(prompt):
        return Split(query[len(prompt) :], prefix=True, found=True)
    at = query.find(prompt) if prompt else -1
    if at >= 0:
        return Split(query[at + len(prompt) :], prefix=False, found=True)
    return Split(query, prefix=False, found=False)


def reference_of(label: Any) -> str | None:
    """A label that is a non-empty string is a reference answer; anything else is none."""
    return label if isinstance(label, str) and label.strip() else None


def items_of(body: OpenRLHFRewardRequest) -> tuple[list[RewardItem], list[Split]]:
    """The reward items of an OpenRLHF request, and how each query was split."""
    labels = body.labels or [None] * len(body.query)
    splits = [split_query(q, p) for q, p in zip(body.query, body.prompts, strict=True)]
    items = [
        RewardItem(prompt, split.response, reference_of(label), group=prompt)
        for prompt, split, label in zip(body.prompts, splits, labels, strict=True)
    ]
    return items, splits


def response_of(
    rewards: Sequence[Reward], splits: Sequence[Split], constitution: Constitution
) -> OpenRLHFRewardResponse:
    """OpenRLHF's answer. Every key of `extra_logs` has a value per query (OpenRLHF logs each
    key's mean over samples): a principle not asked about a response (K of N) or whose
    judgment failed takes the response's reward, so it does not pull the mean to a constant."""
    values = [r.reward for r in rewards]
    logs: dict[str, list[float]] = {
        FALLBACK: [float(r.fallback) for r in rewards],
        TIMED_OUT: [float(r.timed_out) for r in rewards],
        PREFIX_MISMATCH: [float(not s.prefix) for s in splits],
        PROMPT_NOT_FOUND: [float(not s.found) for s in splits],
    }
    for principle in constitution.enabled:
        logs[PRINCIPLE + principle.id] = [
            r.principle_scores.get(principle.id, r.reward) for r in rewards
        ]
    return OpenRLHFRewardResponse(rewards=values, scores=values, extra_logs=logs)
