"""The judge: applies a constitution through an AI model to compare, critique, revise and rank.

Imports stay light (no torch): model backends are loaded lazily through
`charter.judge.backends.registry.load_model`, also reachable here as `load_model`.
"""

from __future__ import annotations

from typing import Any

from .aggregate import clamp, decide
from .backends.base import BackendError, ChatModel, Completion, GenerationRequest, Message, Usage
from .backends.options import BackendOptions
from .bradley_terry import bradley_terry, win_probability
from .compare import compare, compare_sync, judge_once
from .critique import (
    RevisionChain,
    RevisionRound,
    Step,
    critique_and_revise,
    critique_and_revise_sync,
)
from .evaluate import (
    EvalReport,
    LabelledPair,
    Pair,
    PairOutcome,
    PairsFileError,
    evaluate,
    evaluate_sync,
    load_pairs,
    parse_pairs,
    summarise,
)
from .parse import parse_verdict
from .prompts import comparison_messages, critique_messages, revision_messages
from .rank import RankedPair, Ranking, rank, rank_sync, select_pairs
from .results import Comparison, Judgment, PrincipleVerdict
from .selection import revision_schedule, select_for_pair

__all__ = [
    "BackendError",
    "BackendOptions",
    "ChatModel",
    "Comparison",
    "Completion",
    "EvalReport",
    "GenerationRequest",
    "Judgment",
    "LabelledPair",
    "Message",
    "Pair",
    "PairOutcome",
    "PairsFileError",
    "PrincipleVerdict",
    "RankedPair",
    "Ranking",
    "RevisionChain",
    "RevisionRound",
    "Step",
    "Usage",
    "bradley_terry",
    "clamp",
    "compare",
    "compare_sync",
    "comparison_messages",
    "critique_and_revise",
    "critique_and_revise_sync",
    "critique_messages",
    "decide",
    "evaluate",
    "evaluate_sync",
    "judge_once",
    "load_model",
    "load_pairs",
    "parse_pairs",
    "parse_verdict",
    "rank",
    "rank_sync",
    "revision_messages",
    "revision_schedule",
    "select_for_pair",
    "select_pairs",
    "summarise",
    "win_probability",
]


def __getattr__(name: str) -> Any:
    """`load_model` on first use, so importing the judge never pulls in a backend."""
    if name == "load_model":
        from .backends.registry import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
