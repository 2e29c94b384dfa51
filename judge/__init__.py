"""The judge: applies a constitution through an AI model to compare, critique, revise and rank.

Imports stay light: every name here is imported from its module on first use, and model
backends only when `load_model` builds one, so `charter --help` never pays for them.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .aggregate import clamp, decide
    from .backends.base import (
        BackendError,
        ChatModel,
        Completion,
        GenerationRequest,
        Message,
        Usage,
    )
    from .backends.options import BackendOptions
    from .backends.registry import load_model
    from .bradley_terry import bradley_terry, win_probability
    from .calibration import Calibration, CalibrationMetrics, calibration_metrics, fit_calibration
    from .compare import compare, compare_sync, judge_once
    from .config import JudgeConfig
    from .critique import (
        RevisionChain,
        RevisionRound,
        Step,
        critique_and_revise,
        critique_and_revise_sync,
    )
    from .parse import parse_verdict
    from .prompts import comparison_messages, critique_messages, revision_messages
    from .qualify import (
        EvalReport,
        LabelledPair,
        LabelQuality,
        Pair,
        PairOutcome,
        PairsFileError,
        evaluate,
        evaluate_sync,
        judge_pairs,
        load_pairs,
        parse_pairs,
        qualification_report,
        recommend,
    )
    from .rank import RankedPair, Ranking, rank, rank_sync, select_pairs
    from .results import Comparison, Judgment, PrincipleVerdict, ResponseScore, ScoreJudgment
    from .score import score, score_sync
    from .selection import revision_schedule, select_for_pair, select_for_prompt

_EXPORTS: dict[str, str] = {
    "BackendError": ".backends.base",
    "BackendOptions": ".backends.options",
    "Calibration": ".calibration",
    "CalibrationMetrics": ".calibration",
    "ChatModel": ".backends.base",
    "Comparison": ".results",
    "Completion": ".backends.base",
    "EvalReport": ".qualify",
    "GenerationRequest": ".backends.base",
    "JudgeConfig": ".config",
    "Judgment": ".results",
    "LabelQuality": ".qualify",
    "LabelledPair": ".qualify",
    "Message": ".backends.base",
    "Pair": ".qualify",
    "PairOutcome": ".qualify",
    "PairsFileError": ".qualify",
    "PrincipleVerdict": ".results",
    "RankedPair": ".rank",
    "Ranking": ".rank",
    "ResponseScore": ".results",
    "RevisionChain": ".critique",
    "RevisionRound": ".critique",
    "ScoreJudgment": ".results",
    "Step": ".critique",
    "Usage": ".backends.base",
    "bradley_terry": ".bradley_terry",
    "calibration_metrics": ".calibration",
    "clamp": ".aggregate",
    "compare": ".compare",
    "compare_sync": ".compare",
    "comparison_messages": ".prompts",
    "critique_and_revise": ".critique",
    "critique_and_revise_sync": ".critique",
    "critique_messages": ".prompts",
    "decide": ".aggregate",
    "evaluate": ".qualify",
    "evaluate_sync": ".qualify",
    "fit_calibration": ".calibration",
    "judge_once": ".compare",
    "judge_pairs": ".qualify",
    "load_pairs": ".qualify",
    "parse_pairs": ".qualify",
    "parse_verdict": ".parse",
    "rank": ".rank",
    "rank_sync": ".rank",
    "recommend": ".qualify",
    "revision_messages": ".prompts",
    "revision_schedule": ".selection",
    "score": ".score",
    "score_sync": ".score",
    "select_for_pair": ".selection",
    "select_for_prompt": ".selection",
    "select_pairs": ".rank",
    "qualification_report": ".qualify",
    "win_probability": ".bradley_terry",
    "load_model": ".backends.registry",
}

__all__ = [
    "BackendError",
    "BackendOptions",
    "Calibration",
    "CalibrationMetrics",
    "ChatModel",
    "Comparison",
    "Completion",
    "EvalReport",
    "GenerationRequest",
    "JudgeConfig",
    "Judgment",
    "LabelQuality",
    "LabelledPair",
    "Message",
    "Pair",
    "PairOutcome",
    "PairsFileError",
    "PrincipleVerdict",
    "RankedPair",
    "Ranking",
    "ResponseScore",
    "RevisionChain",
    "RevisionRound",
    "ScoreJudgment",
    "Step",
    "Usage",
    "bradley_terry",
    "calibration_metrics",
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
    "fit_calibration",
    "judge_once",
    "judge_pairs",
    "load_model",
    "load_pairs",
    "parse_pairs",
    "parse_verdict",
    "qualification_report",
    "rank",
    "rank_sync",
    "recommend",
    "revision_messages",
    "revision_schedule",
    "score",
    "score_sync",
    "select_for_pair",
    "select_for_prompt",
    "select_pairs",
    "win_probability",
]


class _Package(types.ModuleType):
    """This package's module type: four functions share their module's name (`compare`,
    `evaluate`, `rank`, `score`). Importing such a submodule would rebind the package
    attribute to the module; here the function keeps the name (the module stays reachable
    through `sys.modules`, so `from charter.judge.compare import judge_once` works)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _SHADOWED:
            return
        super().__setattr__(name, value)


_SHADOWED = {name for name, module in _EXPORTS.items() if module == "." + name}


def __getattr__(name: str) -> Any:
    """Each name's module on first use, so importing one part of the judge (its config, say)
    never pulls in the rest, numpy or a backend."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


sys.modules[__name__].__class__ = _Package
