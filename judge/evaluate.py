"""Judge qualification: how far to trust a judge, measured on human-labelled pairs.

Input is JSONL, one object per line: `prompt`, `a`, `b`, `preferred` ("a" or "b"); other keys
are ignored. Each pair is compared exactly as production comparisons are (both orders, K
principles) and the report gives agreement with the labels alongside the known failure modes
(design §4): position bias, verbosity bias and parse failures.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from charter.constitution import Constitution
from charter.jsonl import NotUtf8Error, decode_utf8, jsonl_lines

from ._sync import synced
from .backends.base import ChatModel, Usage
from .compare import compare
from .prompts import RANDOM_NONCES, NonceSource
from .results import Comparison, Winner


class PairsFileError(ValueError):
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
    lines: Iterable[str], source: str = ..., *, labelled: Literal[True] = ...
) -> list[LabelledPair]: ...


@overload
def parse_pairs(
    lines: Iterable[str], source: str = ..., *, labelled: Literal[False]
) -> list[Pair]: ...


def parse_pairs(
    lines: Iterable[str], source: str = "<pairs>", *, labelled: bool = True
) -> list[LabelledPair] | list[Pair]:
    """Validate JSONL lines (blank lines skipped); errors read `source:line: problem`.

    `labelled=False` reads rows to compare, where `preferred` is not needed.
    """
    row_type: type[Pair] = LabelledPair if labelled else Pair
    pairs: list[Pair] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PairsFileError(f"{source}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise PairsFileError(f"{source}:{number}: expected a JSON object")
        try:
            pairs.append(row_type.model_validate(row))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'row'}: {err['msg']}"
                for err in exc.errors()
            )
            raise PairsFileError(f"{source}:{number}: {problems}") from None
    if not pairs:
        raise PairsFileError(f"{source}: no {'labelled ' if labelled else ''}pairs found")
    if labelled:
        return [p for p in pairs if isinstance(p, LabelledPair)]
    return pairs


@overload
def load_pairs(path: Path | str, *, labelled: Literal[True] = ...) -> list[LabelledPair]: ...


@overload
def load_pairs(path: Path | str, *, labelled: Literal[False]) -> list[Pair]: ...


def load_pairs(path: Path | str, *, labelled: bool = True) -> list[LabelledPair] | list[Pair]:
    """Read and validate a pairs JSONL file (`labelled=False`: `preferred` not required)."""
    path = Path(path)
    try:
        text = decode_utf8(path.read_bytes())
    except OSError as exc:
        raise PairsFileError(f"{path}: cannot read ({exc})") from None
    except NotUtf8Error as exc:
        raise PairsFileError(f"{path}:{exc.line}: {exc}") from None
    if labelled:
        return parse_pairs(jsonl_lines(text), str(path))
    return parse_pairs(jsonl_lines(text), str(path), labelled=False)


class PairOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    preferred: Literal["a", "b"]
    winner: Winner | None
    p_a: float | None
    correct: bool | None = Field(description="None for ties and failures.")
    position_consistent: bool | None


class EvalReport(BaseModel):
    """Agreement with human labels and the judge's measured biases.

    - `agreement`: correct / decided (ties and failures excluded; their counts are given).
    - `position_consistency`: over swap tests (a pair x principle with both orders answered),
      the fraction whose two orders named the same response. `pairs_position_consistent` is
      the fraction of pairs with `position_consistent` True among pairs where it is known.
    - `p_first`: fraction of successful single judgments that chose slot A.
    - `p_longer`: fraction of successful single judgments that chose the longer response
      (pairs of equal length excluded).
    - `parse_failure_rate`: unparseable verdict replies / verdict replies (retries included).
    - `failed_judgment_rate`: judgments that ended without a verdict / all judgments.
    A rate is None when its denominator is zero.
    """

    model_config = ConfigDict(extra="forbid")

    pairs: int
    decided: int
    correct: int
    ties: int
    failures: int
    agreement: float | None
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
    judge: str
    constitution_digest: str
    constitution_version: str
    seed: int
    latency_s: float = 0.0
    outcomes: list[PairOutcome] = []


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def summarise(
    pairs: Sequence[LabelledPair],
    comparisons: Sequence[Comparison],
    *,
    judge: str,
    constitution: Constitution,
    seed: int = 0,
    latency_s: float = 0.0,
) -> EvalReport:
    """The report for already-made comparisons (pure; `evaluate` calls it)."""
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
        for j in c.judgments:
            judgments += 1
            replies += j.replies
            parse_failures += j.parse_failures
            if not j.ok:
                failed_judgments += 1
                continue
            ok_judgments += 1
            first += j.slot == "A"
            if longer_side is not None:
                length_known += 1
                longer += j.choice == longer_side
    decided_outcomes = [o for o in outcomes if o.correct is not None]
    known_consistency = [
        o.position_consistent for o in outcomes if o.position_consistent is not None
    ]
    return EvalReport(
        pairs=len(outcomes),
        decided=len(decided_outcomes),
        correct=sum(1 for o in decided_outcomes if o.correct),
        ties=sum(1 for o in outcomes if o.winner == "tie"),
        failures=sum(1 for o in outcomes if o.winner is None),
        agreement=_rate(sum(1 for o in decided_outcomes if o.correct), len(decided_outcomes)),
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
        judge=judge,
        constitution_digest=constitution.digest,
        constitution_version=constitution.version,
        seed=seed,
        latency_s=latency_s,
        outcomes=outcomes,
    )


async def evaluate(
    model: ChatModel,
    constitution: Constitution,
    pairs: Sequence[LabelledPair],
    *,
    k: int | None = None,
    seed: int = 0,
    cot: bool = False,
    tie_margin: float | None = None,
    parse_retries: int = 1,
    concurrency: int = 8,
    on_result: Callable[[int, Comparison], None] | None = None,
    nonces: NonceSource = RANDOM_NONCES,
) -> EvalReport:
    """Compare every labelled pair (at most `concurrency` pairs in flight) and report.

    `on_result(index, comparison)` is called as each pair finishes (progress, persistence).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def one(index: int, pair: LabelledPair) -> Comparison:
        async with gate:
            result = await compare(
                model,
                constitution,
                pair.prompt,
                pair.a,
                pair.b,
                k=k,
                seed=seed,
                cot=cot,
                tie_margin=tie_margin,
                parse_retries=parse_retries,
                nonces=nonces,
            )
        if on_result is not None:
            on_result(index, result)
        return result

    comparisons = await asyncio.gather(*(one(i, p) for i, p in enumerate(pairs)))
    return summarise(
        pairs,
        comparisons,
        judge=model.spec,
        constitution=constitution,
        seed=seed,
        latency_s=time.perf_counter() - started,
    )


evaluate_sync = synced(evaluate)
