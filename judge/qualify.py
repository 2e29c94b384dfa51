"""Judge qualification: how far to trust a judge, measured on human-labelled pairs.

Input is JSONL, one object per line: `prompt`, `a`, `b`, `preferred` ("a" or "b"); other keys
are ignored. Each pair is compared exactly as production comparisons are (the same
`JudgeConfig`), and the report says what a buyer of labels needs: agreement on decided pairs
*and* coverage (a judge that ties on everything must not look good), accuracy at each
confidence threshold, Brier score, log loss and expected calibration error, raw and after a
`Calibration`, beside the known failure modes: position bias (pairwise), verbosity bias and
parse failures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from charter.common.datafiles import DataFileError, Record, parse_json_lines, read_json_lines
from charter.common.limits import InputLimits
from charter.constitution import Constitution

from ._sync import synced
from .aggregate import decide
from .backends.base import ChatModel, Usage
from .calibration import (
    Calibration,
    CalibrationMetrics,
    CoveragePoint,
    accuracy_coverage,
    calibration_metrics,
)
from .compare import compare
from .config import DEFAULT_CONFIG, JudgeConfig, Protocol
from .prompts import RANDOM_NONCES, NonceSource
from .results import Comparison, Provenance, Question, Winner


class PairsFileError(DataFileError):
    """A labelled-pairs file that cannot be read; the message names the file and line."""


class Pair(BaseModel):
    """A prompt and two responses to compare (extra keys ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    prompt: str
    a: str
    b: str


class LabelledPair(Pair):
    """A pair with a human verdict, for judge qualification."""

    preferred: Literal["a", "b"]


@overload
def parse_pairs(
    lines: Iterable[str],
    source: str = ...,
    *,
    labelled: Literal[True] = ...,
    limits: InputLimits | None = ...,
) -> list[LabelledPair]: ...


@overload
def parse_pairs(
    lines: Iterable[str],
    source: str = ...,
    *,
    labelled: Literal[False],
    limits: InputLimits | None = ...,
) -> list[Pair]: ...


def parse_pairs(
    lines: Iterable[str],
    source: str = "<pairs>",
    *,
    labelled: bool = True,
    limits: InputLimits | None = None,
) -> list[LabelledPair] | list[Pair]:
    """Validate JSONL lines (blank lines skipped); errors read `source:line: problem`.

    `labelled=False` reads rows to compare, where `preferred` is not needed. `limits` default
    to `InputLimits.from_env()`.
    """
    limits = limits or InputLimits.from_env()
    records = parse_json_lines(lines, source, limits, error=PairsFileError)
    return _validate(records, Path(source), labelled)


def _validate(
    records: Iterable[Record], source: Path, labelled: bool
) -> list[LabelledPair] | list[Pair]:
    row_type: type[Pair] = LabelledPair if labelled else Pair
    pairs: list[Pair] = []
    for number, row in records:
        try:
            pairs.append(row_type.model_validate(row))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'row'}: {err['msg']}"
                for err in exc.errors()
            )
            raise PairsFileError(source, problems, line=number) from None
    if not pairs:
        raise PairsFileError(source, f"no {'labelled ' if labelled else ''}pairs found")
    if labelled:
        return [p for p in pairs if isinstance(p, LabelledPair)]
    return pairs


@overload
def load_pairs(
    path: Path | str, *, labelled: Literal[True] = ..., limits: InputLimits | None = ...
) -> list[LabelledPair]: ...


@overload
def load_pairs(
    path: Path | str, *, labelled: Literal[False], limits: InputLimits | None = ...
) -> list[Pair]: ...


def load_pairs(
    path: Path | str, *, labelled: bool = True, limits: InputLimits | None = None
) -> list[LabelledPair] | list[Pair]:
    """Read and validate a pairs JSONL file (`labelled=False`: `preferred` not required)."""
    path = Path(path)
    records = read_json_lines(path, limits or InputLimits.from_env(), error=PairsFileError)
    return _validate(records, path, labelled)


DEFAULT_BINS = 10


class PairOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    preferred: Literal["a", "b"]
    winner: Winner | None
    p_a: float | None
    p_a_calibrated: float | None = None
    correct: bool | None = Field(description="None for ties and failures.")
    position_consistent: bool | None


class LabelQuality(BaseModel):
    """How far one set of soft labels (raw or calibrated) can be trusted.

    - `agreement`: correct / decided; `coverage`: decided / all pairs. Ties (|p_a - 0.5| within
      the tie margin) and failures are undecided.
    - `balanced_accuracy`: (correct + half of the undecided) / all pairs: an undecided pair is
      a coin flip, so tying everything scores 0.5, never better.
    - `calibration`: Brier score, log loss and expected calibration error of P(a better)
      against the label over pairs with a verdict, with the reliability bins (equal width).
    - `accuracy_at`: for each confidence threshold t, the share of all pairs whose
      max(p, 1 - p) >= t (ties never count) and the agreement on them.
    """

    model_config = ConfigDict(extra="forbid")

    decided: int
    correct: int
    ties: int
    agreement: float | None
    coverage: float
    balanced_accuracy: float
    calibration: CalibrationMetrics | None
    accuracy_at: list[CoveragePoint]


class EvalReport(BaseModel):
    """Agreement with human labels, how well confidence matches it, and the judge's biases.

    - `agreement`, `coverage` and the counts: the raw labels' (see `LabelQuality`); `raw`
      and `calibrated` give the full picture for each (`calibrated` when a calibration is given).
    - `position_consistency` (pairwise): over swap tests (a pair x principle with both orders
      answered), the fraction whose two orders named the same response.
      `pairs_position_consistent` is the fraction of pairs with `position_consistent` True
      among pairs where it is known.
    - `p_first` (pairwise): fraction of successful single judgments that chose slot A.
    - `p_longer`: fraction of verdicts that chose the longer response (pairs of equal length
      excluded): single judgments pairwise, decided pairs pointwise.
    - `parse_failure_rate`: unparseable replies / replies (retries included).
    - `failed_judgment_rate`: judgments that ended without a verdict / all judgments.
    A rate is None when its denominator is zero.
    """

    model_config = ConfigDict(extra="forbid")

    protocol: Protocol
    pairs: int
    decided: int
    correct: int
    ties: int
    failures: int
    agreement: float | None
    coverage: float
    raw: LabelQuality
    calibrated: LabelQuality | None = None
    calibration: Calibration | None = None
    swap_tests: int
    position_consistency: float | None
    pairs_position_consistent: float | None
    judgments: int
    p_first: float | None
    p_longer: float | None
    parse_failure_rate: float | None
    failed_judgment_rate: float | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    calls: int = Field(description="Model calls made (replies received, retries included).")
    cost_usd: float | None = None
    judge: str
    config: JudgeConfig
    constitution_digest: str
    constitution_version: str
    seed: int
    latency_s: float = 0.0
    outcomes: list[PairOutcome] = []


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def label_quality(
    preferred: Sequence[Literal["a", "b"]],
    probs: Sequence[float | None],
    tie_margin: float,
    *,
    bins: int = DEFAULT_BINS,
) -> LabelQuality:
    """Agreement, coverage and calibration of soft labels P(a better) (None: no verdict)."""
    n = len(preferred)
    scored = [(p, pref == "a") for p, pref in zip(probs, preferred, strict=True) if p is not None]
    winners = [decide(p, tie_margin) for p in probs]
    decided = [(w == pref) for w, pref in zip(winners, preferred, strict=True) if w in ("a", "b")]
    correct = sum(decided)
    points = accuracy_coverage([p for p, _ in scored], [y for _, y in scored]) if scored else []
    return LabelQuality(
        decided=len(decided),
        correct=correct,
        ties=sum(1 for w in winners if w == "tie"),
        agreement=_rate(correct, len(decided)),
        coverage=len(decided) / n if n else 0.0,
        balanced_accuracy=(correct + 0.5 * (n - len(decided))) / n if n else 0.0,
        calibration=(
            calibration_metrics([p for p, _ in scored], [y for _, y in scored], bins)
            if scored
            else None
        ),
        # Coverage over every pair, not only those with a verdict: failures cover nothing.
        accuracy_at=[
            pt.model_copy(update={"coverage": pt.covered / n if n else 0.0}) for pt in points
        ],
    )


def qualification_report(
    pairs: Sequence[LabelledPair],
    comparisons: Sequence[Comparison],
    *,
    judge: str,
    constitution: Constitution,
    config: JudgeConfig = DEFAULT_CONFIG,
    calibration: Calibration | None = None,
    prices: tuple[float, float] | None = None,
    latency_s: float = 0.0,
) -> EvalReport:
    """The report for already-made comparisons (pure; `evaluate` calls it).

    `prices`: USD per million prompt and completion tokens, for `cost_usd`.
    """
    config = config.resolved(judge)
    margin = config.margin(constitution)
    preferred = [p.preferred for p in pairs]
    raw_probs = [c.p_a for c in comparisons]
    calibrated_probs = (
        [None if p is None else calibration.apply(p) for p in raw_probs] if calibration else None
    )
    outcomes: list[PairOutcome] = []
    usage = Usage()
    judgments = first = ok_judgments = longer = length_known = 0
    replies = parse_failures = failed_judgments = 0
    swap_tests = swap_consistent = 0
    for index, (pair, c) in enumerate(zip(pairs, comparisons, strict=True)):
        decided = c.winner in ("a", "b")
        outcomes.append(
            PairOutcome(
                index=index,
                preferred=pair.preferred,
                winner=c.winner,
                p_a=c.p_a,
                p_a_calibrated=calibrated_probs[index] if calibrated_probs else None,
                correct=(c.winner == pair.preferred) if decided else None,
                position_consistent=c.position_consistent,
            )
        )
        usage = usage + c.usage
        for v in c.principles:
            if v.consistent is not None:
                swap_tests += 1
                swap_consistent += v.consistent
        longer_side = (
            None if len(pair.a) == len(pair.b) else ("a" if len(pair.a) > len(pair.b) else "b")
        )
        every: list[Question] = [
            *c.judgments,
            *(j for s in c.scores for j in s.judgments),
        ]
        for j in every:
            judgments += 1
            replies += j.replies
            parse_failures += j.parse_failures
            failed_judgments += not j.ok
        for pj in c.judgments:
            if pj.ok:
                ok_judgments += 1
                first += pj.slot == "A"
                if longer_side is not None:
                    length_known += 1
                    longer += pj.choice == longer_side
        if c.protocol == "pointwise" and decided and longer_side is not None:
            length_known += 1
            longer += c.winner == longer_side
    raw = label_quality(preferred, raw_probs, margin)
    known_consistency = [
        o.position_consistent for o in outcomes if o.position_consistent is not None
    ]
    cost = (
        (usage.prompt_tokens * prices[0] + usage.completion_tokens * prices[1]) / 1e6
        if prices is not None
        else None
    )
    return EvalReport(
        protocol=config.protocol_for(judge),
        pairs=len(outcomes),
        decided=raw.decided,
        correct=raw.correct,
        ties=raw.ties,
        failures=sum(1 for o in outcomes if o.winner is None),
        agreement=raw.agreement,
        coverage=raw.coverage,
        raw=raw,
        calibrated=(
            label_quality(preferred, calibrated_probs, margin) if calibrated_probs else None
        ),
        calibration=calibration,
        swap_tests=swap_tests,
        position_consistency=_rate(swap_consistent, swap_tests),
        pairs_position_consistent=_rate(sum(known_consistency), len(known_consistency)),
        judgments=judgments,
        p_first=_rate(first, ok_judgments),
        p_longer=_rate(longer, length_known),
        parse_failure_rate=_rate(parse_failures, replies),
        failed_judgment_rate=_rate(failed_judgments, judgments),
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        calls=replies,
        cost_usd=cost,
        config=config,
        **Provenance.of(constitution, judge).fields(),
        seed=config.seed,
        latency_s=latency_s,
        outcomes=outcomes,
    )


async def judge_pairs(
    model: ChatModel,
    constitution: Constitution,
    pairs: Sequence[Pair],
    config: JudgeConfig = DEFAULT_CONFIG,
    *,
    concurrency: int = 16,
    on_result: Callable[[int, Comparison], None] | None = None,
    nonces: NonceSource = RANDOM_NONCES,
) -> list[Comparison]:
    """Compare every pair, at most `concurrency` pairs in flight.

    Each pair makes at least two requests, so with the backend bounded at the same number
    this keeps `concurrency` requests in flight. `on_result(index, comparison)` is called as
    each pair finishes (progress, persistence).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, pair: Pair) -> Comparison:
        async with gate:
            result = await compare(
                model, constitution, pair.prompt, pair.a, pair.b, config, nonces=nonces
            )
        if on_result is not None:
            on_result(index, result)
        return result

    return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(pairs))))


async def evaluate(
    model: ChatModel,
    constitution: Constitution,
    pairs: Sequence[LabelledPair],
    config: JudgeConfig = DEFAULT_CONFIG,
    *,
    concurrency: int = 16,
    calibration: Calibration | None = None,
    prices: tuple[float, float] | None = None,
    on_result: Callable[[int, Comparison], None] | None = None,
    nonces: NonceSource = RANDOM_NONCES,
) -> EvalReport:
    """Judge every labelled pair as production would and report (see `EvalReport`)."""
    started = time.perf_counter()
    comparisons = await judge_pairs(
        model,
        constitution,
        pairs,
        config,
        concurrency=concurrency,
        on_result=on_result,
        nonces=nonces,
    )
    return qualification_report(
        pairs,
        comparisons,
        judge=model.spec,
        constitution=constitution,
        config=config,
        calibration=calibration,
        prices=prices,
        latency_s=time.perf_counter() - started,
    )


evaluate_sync = synced(evaluate)


def recommend(reports: Sequence[EvalReport]) -> EvalReport:
    """The report of the protocol to use: highest balanced accuracy (agreement that counts
    undecided pairs as coin flips), then lower raw log loss."""
    if not reports:
        raise ValueError("no reports to choose from")

    def key(r: EvalReport) -> tuple[float, float]:
        loss = r.raw.calibration.log_loss if r.raw.calibration else float("inf")
        return (r.raw.balanced_accuracy, -loss)

    return max(reports, key=key)
