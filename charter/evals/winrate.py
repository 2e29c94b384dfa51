"""Did the constitution move the model? Win rate of a model over a baseline, judged pairwise.

For each prompt, the model (A) and the baseline (B) each write one completion with the same
sampling settings and the same per-prompt seed; the judge then compares the two exactly as a
production comparison does (the same `JudgeConfig`: pairwise, K rendezvous-selected principles
each asked in both orders, so a judge's slot preference cancels out; or pointwise scores).
From the verdicts:

- **Win rate** = (wins + 0.5 x ties) / (wins + losses + ties). Pairs with no verdict (a model
  or every judgment failed) are excluded and counted as `failures`, never scored as 0.5.
- **Confidence interval**: percentile bootstrap, resampling prompts with replacement from a
  seeded generator, so the same run reports the same interval; never narrower than the Wilson
  interval of the wins (ties half), which a bootstrap of a few prompts can be.
- **Length-controlled win rate**: judges are known to favour longer answers, so a model can
  "win" by rambling. Following AlpacaEval 2's length-controlled win rate, fit a logistic
  regression of the outcome (1, 0.5, 0) on x = tanh(d / sd(d)), d = len(A) - len(B) in
  characters (characters, because A and B may not share a tokenizer), and report
  sigmoid(intercept): the win rate the fit predicts when both answers are the same length. A
  small ridge penalty (prior sd 10 on the intercept, 1 on the slope) keeps the fit finite when
  outcomes separate perfectly (e.g. A wins every pair: LC is then just below 1). Its interval
  refits the same model on each bootstrap resample.
- All three figures overall and **per principle** (the principle's own debiased verdict on each
  pair it was sampled for), plus the soft win rate (mean P(A better)), position consistency,
  lengths and tokens.

Decisions worth knowing:

- An empty completion is still a completion: a model that says nothing has answered badly, and
  the judge sees an empty response. It is judged like any other and counted in `empty_a/b`.
- Two identical completions (including both empty) are a tie without asking the judge: any other
  verdict could only be position bias. They count as ties for every principle that would have
  been sampled for the pair.
- Generations are never cached (a checkpoint directory can change under the same spec); judge
  calls can be, via `CachedModel` and `KeyedNonces`, because they are keyed by the exact texts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import numpy as np
import sqlite_utils
from pydantic import BaseModel, ConfigDict, Field

from charter.call_cache import CachedModel
from charter.constitution import Constitution
from charter.evals.rates import wilson
from charter.evals.settings import (
    DEFAULT_CONFIDENCE,
    DEFAULT_MAX_TOKENS,
    DEFAULT_RESAMPLES,
    DEFAULT_TEMPERATURE,
)
from charter.judge import compare
from charter.judge._sync import synced
from charter.judge.aggregate import decide
from charter.judge.backends.base import BackendError, ChatModel, GenerationRequest, Usage
from charter.judge.config import DEFAULT_CONFIG, JudgeConfig
from charter.judge.prompts import RANDOM_NONCES, NonceSource
from charter.judge.results import Provenance, Question, Winner
from charter.judge.selection import select_for_pair, select_for_prompt
from charter.prompt_files import PromptRecord

log = logging.getLogger(__name__)

INTERCEPT_PENALTY = 0.01
"""Ridge penalty on the LC intercept (a N(0, 10^2) prior): only keeps separable fits finite."""
SLOPE_PENALTY = 1.0
"""Ridge penalty on the LC length coefficient (a N(0, 1) prior on logit per standardised unit)."""

ProgressCallback = Callable[[str, int, int], None]
"""Called with (phase, done, total); phases: "model", "baseline", "judge"."""


class Generated(BaseModel):
    """One completion from one model for one prompt, or why there is none."""

    model_config = ConfigDict(frozen=True)

    text: str | None
    error: str | None = None
    usage: Usage = Usage()


class PairResult(BaseModel):
    """One prompt: both completions and the judge's verdict on them (`p_a` = P(model better))."""

    index: int
    key: str
    prompt: str
    a: str | None = Field(description="The model's completion (None if generation failed).")
    b: str | None = Field(description="The baseline's completion (None if generation failed).")
    length_a: int | None = None
    length_b: int | None = None
    identical: bool = False
    winner: Winner | None = None
    p_a: float | None = None
    position_consistent: bool | None = None
    principles: dict[str, float | None] = Field(
        default_factory=dict,
        description="Sampled principle id -> its debiased p_a; None when an order failed.",
    )
    usage_a: Usage = Usage()
    usage_b: Usage = Usage()
    judge_usage: Usage = Usage()
    error: str | None = None

    @property
    def score(self) -> float | None:
        """1 for a model win, 0.5 for a tie, 0 for a loss, None for no verdict."""
        return None if self.winner is None else _SCORES[self.winner]


_SCORES: dict[Winner, float] = {"a": 1.0, "tie": 0.5, "b": 0.0}


class WinRate(BaseModel):
    """Win rate of the model over the baseline on one set of verdicts, with its uncertainty."""

    n: int = Field(description="Scored pairs: wins + losses + ties.")
    wins: int
    losses: int
    ties: int
    failures: int = Field(description="Pairs with no verdict, excluded from every rate.")
    win_rate: float | None
    ci_low: float | None
    ci_high: float | None
    soft_win_rate: float | None = Field(description="Mean P(model better) over scored pairs.")
    length_controlled: float | None = Field(
        description="Win rate the length regression predicts at equal lengths."
    )
    length_controlled_ci_low: float | None
    length_controlled_ci_high: float | None
    length_coefficient: float | None = Field(
        description="Logit change per tanh-standardised length difference (A minus B)."
    )


class PrincipleWinRate(WinRate):
    principle_id: str


class ModelEvalReport(BaseModel):
    """Everything `charter eval` reports; `pairs` holds every completion and verdict."""

    model: str
    baseline: str
    judge: str
    constitution_digest: str
    constitution_version: str
    prompts: int
    k: int
    seed: int
    protocol: str = "pairwise"
    temperature: float
    max_tokens: int
    resamples: int
    confidence: float
    tie_margin: float
    overall: WinRate
    principles: list[PrincipleWinRate]
    identical: int = Field(description="Pairs where both completions were the same (ties).")
    empty_a: int
    empty_b: int
    generation_failures_a: int
    generation_failures_b: int
    position_consistency: float | None = Field(
        description="Fraction of judged pairs whose every principle agreed across both orders."
    )
    mean_length_a: float | None
    mean_length_b: float | None
    a_longer_rate: float | None = Field(description="Pairs where A is longer / unequal pairs.")
    tokens: dict[str, Usage]
    judge_calls_reused: int | None = None
    latency_s: float = 0.0
    pairs: list[PairResult] = []


# ---------------------------------------------------------------------------- generation


def completion_seed(seed: int, key: str) -> int:
    """The sampling seed for one prompt: from the run seed and the prompt's key alone.

    Both models get the same seed for the same prompt (common random numbers), and adding or
    reordering prompts changes no other prompt's completions.
    """
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


async def generate_completions(
    model: ChatModel,
    prompts: Sequence[PromptRecord],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float = DEFAULT_TEMPERATURE,
    seed: int = 0,
    concurrency: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Generated]:
    """One completion per prompt; a failed call is recorded (`error`), never raised."""
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(record: PromptRecord) -> Generated:
        nonlocal done
        request = GenerationRequest(
            messages=record.messages,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=completion_seed(seed, record.key),
        )
        async with gate:
            try:
                reply = await model.generate(request)
                result = Generated(text=reply.text.strip(), usage=reply.usage)
            except BackendError as exc:
                # Most backends already name themselves in the message; say it once.
                error = str(exc) if model.spec in str(exc) else f"{model.spec}: {exc}"
                log.warning("failed to generate: %s", error)
                result = Generated(text=None, error=error)
        done += 1
        if on_progress:
            on_progress(done, len(prompts))
        return result

    return list(await asyncio.gather(*(one(r) for r in prompts)))


# ---------------------------------------------------------------------------- judging


async def judge_pairs(
    judge: ChatModel,
    constitution: Constitution,
    prompts: Sequence[PromptRecord],
    model_outputs: Sequence[Generated],
    baseline_outputs: Sequence[Generated],
    *,
    config: JudgeConfig = DEFAULT_CONFIG,
    concurrency: int = 8,
    nonces: NonceSource = RANDOM_NONCES,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[PairResult]:
    """Compare the model's completion (as `a`) with the baseline's (as `b`) for every prompt."""
    if not len(prompts) == len(model_outputs) == len(baseline_outputs):
        raise ValueError("prompts and both sets of completions must have the same length")
    config = config.resolved(judge.spec)
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(index: int) -> PairResult:
        nonlocal done
        async with gate:
            result = await _judge_one(
                judge,
                constitution,
                index,
                prompts[index],
                model_outputs[index],
                baseline_outputs[index],
                config,
                nonces=nonces,
            )
        done += 1
        if on_progress:
            on_progress(done, len(prompts))
        return result

    return list(await asyncio.gather(*(one(i) for i in range(len(prompts)))))


async def _judge_one(
    judge: ChatModel,
    constitution: Constitution,
    index: int,
    record: PromptRecord,
    out_a: Generated,
    out_b: Generated,
    config: JudgeConfig,
    *,
    nonces: NonceSource,
) -> PairResult:
    base = PairResult(
        index=index,
        key=record.key,
        prompt=record.text,
        a=out_a.text,
        b=out_b.text,
        length_a=None if out_a.text is None else len(out_a.text),
        length_b=None if out_b.text is None else len(out_b.text),
        usage_a=out_a.usage,
        usage_b=out_b.usage,
    )
    if out_a.text is None or out_b.text is None:
        return base.model_copy(update={"error": out_a.error or out_b.error})
    prompt, a, b = record.text, out_a.text, out_b.text
    if a == b:
        k, seed = config.k(constitution), config.seed
        sampled = (
            select_for_prompt(constitution, prompt, k, seed)
            if config.protocol == "pointwise"
            else select_for_pair(constitution, prompt, a, b, k, seed)
        )
        return base.model_copy(
            update={
                "identical": True,
                "winner": "tie",
                "p_a": 0.5,
                "principles": {p.id: 0.5 for p in sampled},
            }
        )
    c = await compare(judge, constitution, prompt, a, b, config, nonces=nonces)
    error = None
    if c.winner is None:
        asked: list[Question] = [
            *c.judgments,
            *(j for scored in c.scores for j in scored.judgments),
        ]
        error = next((j.error for j in asked if j.error), "no judgment succeeded")
    return base.model_copy(
        update={
            "winner": c.winner,
            "p_a": c.p_a,
            "position_consistent": c.position_consistent,
            # Pairwise, only a principle answered in both orders is debiased enough to vote (as
            # in p_a); pointwise, a principle votes when both responses were scored.
            "principles": {
                v.principle_id: (
                    v.p_a if v.consistent is not None or c.protocol == "pointwise" else None
                )
                for v in c.principles
            },
            "judge_usage": c.usage,
            "error": error,
        }
    )


# ---------------------------------------------------------------------------- statistics


_BLOCK_CELLS = 1_000_000


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0))))


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def fit_length_model(
    scores: np.ndarray, x: np.ndarray, weights: np.ndarray, *, iterations: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge-penalised logistic regression of `scores` on `x`, one fit per row of `weights`.

    `weights` (resamples x n) are bootstrap counts (all ones for the point estimate). Fractional
    outcomes (0.5 for ties) are fine: this is the quasi-likelihood fit. Newton's method, batched
    over rows, with steps capped so a near-separable row cannot overshoot. Returns (intercepts,
    slopes).
    """
    rows = weights.shape[0]
    b0 = np.zeros(rows)
    b1 = np.zeros(rows)
    for _ in range(iterations):
        p = _sigmoid(b0[:, None] + b1[:, None] * x[None, :])
        residual = weights * (scores[None, :] - p)
        g0 = residual.sum(axis=1) - INTERCEPT_PENALTY * b0
        g1 = (residual * x).sum(axis=1) - SLOPE_PENALTY * b1
        curvature = weights * p * (1.0 - p)
        h00 = curvature.sum(axis=1) + INTERCEPT_PENALTY
        h01 = (curvature * x).sum(axis=1)
        h11 = (curvature * x * x).sum(axis=1) + SLOPE_PENALTY
        det = h00 * h11 - h01 * h01
        d0 = (h11 * g0 - h01 * g1) / det
        d1 = (h00 * g1 - h01 * g0) / det
        scale = np.maximum(1.0, np.hypot(d0, d1) / 5.0)
        b0 += d0 / scale
        b1 += d1 / scale
        if float(np.max(np.abs(d0) + np.abs(d1))) < 1e-10:
            break
    return b0, b1


def win_rate(
    scores: Sequence[float],
    p_as: Sequence[float],
    length_diffs: Sequence[float],
    *,
    failures: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | Sequence[int] = 0,
) -> WinRate:
    """Win rate, bootstrap CI, soft win rate and length-controlled figure for scored pairs.

    `scores` are 1 / 0.5 / 0 per pair, `p_as` P(model better), `length_diffs` len(A) - len(B).
    """
    s = np.asarray(scores, dtype=float)
    n = int(s.size)
    wins, ties = int(np.sum(s == 1.0)), int(np.sum(s == 0.5))
    counts = {"n": n, "wins": wins, "losses": n - wins - ties, "ties": ties, "failures": failures}
    if n == 0:
        return WinRate(
            **counts,
            win_rate=None,
            ci_low=None,
            ci_high=None,
            soft_win_rate=None,
            length_controlled=None,
            length_controlled_ci_low=None,
            length_controlled_ci_high=None,
            length_coefficient=None,
        )
    d = np.asarray(length_diffs, dtype=float)
    spread = float(d.std())
    x = np.tanh(d / spread) if spread > 0 else np.zeros(n)
    rng = np.random.default_rng(list(seed) if not isinstance(seed, int) else seed)
    b0, b1 = fit_length_model(s, x, np.ones((1, n)))
    # Resampled in blocks so memory stays near _BLOCK_CELLS floats whatever the prompt count.
    boot_rates: list[np.ndarray] = []
    boot_b0: list[np.ndarray] = []
    block = max(1, _BLOCK_CELLS // n)
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        drawn = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(float)
        boot_rates.append(drawn @ s / n)
        boot_b0.append(fit_length_model(s, x, drawn)[0])
    ci = _percentile_interval(np.concatenate(boot_rates), confidence)
    # At a handful of prompts the bootstrap collapses (4 wins of 4 resample to 4/4 every
    # time): the interval is never narrower than the Wilson interval of the wins (ties half).
    floor = wilson(wins + ties / 2, n, confidence)
    if floor is not None:
        ci = (min(ci[0], floor[0]), max(ci[1], floor[1]))
    lc_ci = _percentile_interval(_sigmoid(np.concatenate(boot_b0)), confidence)
    return WinRate(
        **counts,
        win_rate=float(s.mean()),
        ci_low=ci[0],
        ci_high=ci[1],
        soft_win_rate=float(np.mean(np.asarray(p_as, dtype=float))),
        length_controlled=float(_sigmoid(b0)[0]),
        length_controlled_ci_low=lc_ci[0],
        length_controlled_ci_high=lc_ci[1],
        length_coefficient=float(b1[0]),
    )


def winrate_report(
    pairs: Sequence[PairResult],
    *,
    model: str,
    baseline: str,
    judge: str,
    constitution: Constitution,
    config: JudgeConfig = DEFAULT_CONFIG,
    temperature: float = DEFAULT_TEMPERATURE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    judge_calls_reused: int | None = None,
    latency_s: float = 0.0,
) -> ModelEvalReport:
    """The report for already-judged pairs (pure; `evaluate_models` calls it)."""
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    config = config.resolved(judge)
    seed = config.seed
    margin = config.margin(constitution)
    wanted = config.k(constitution)
    scored = [p for p in pairs if p.score is not None]
    overall = win_rate(
        [p.score for p in scored if p.score is not None],
        [p.p_a if p.p_a is not None else 0.5 for p in scored],
        [_length_diff(p) for p in scored],
        failures=len(pairs) - len(scored),
        resamples=resamples,
        confidence=confidence,
        seed=seed,
    )
    principles: list[PrincipleWinRate] = []
    for number, principle in enumerate(constitution.enabled, start=1):
        asked = [p for p in pairs if principle.id in p.principles]
        judged = [(p, p.principles[principle.id]) for p in asked]
        decided = [(p, v) for p, v in judged if v is not None]
        if not asked:
            continue
        rate = win_rate(
            [_SCORES[decide(v, margin) or "tie"] for _, v in decided],
            [v for _, v in decided],
            [_length_diff(p) for p, _ in decided],
            failures=len(asked) - len(decided),
            resamples=resamples,
            confidence=confidence,
            seed=[seed, number],
        )
        principles.append(PrincipleWinRate(principle_id=principle.id, **rate.model_dump()))
    both = [p for p in pairs if p.length_a is not None and p.length_b is not None]
    unequal = [p for p in both if p.length_a != p.length_b]
    consistency = [p.position_consistent for p in pairs if p.position_consistent is not None]
    tokens = {"model": Usage(), "baseline": Usage(), "judge": Usage()}
    for p in pairs:
        tokens["model"] = tokens["model"] + p.usage_a
        tokens["baseline"] = tokens["baseline"] + p.usage_b
        tokens["judge"] = tokens["judge"] + p.judge_usage
    return ModelEvalReport(
        model=model,
        baseline=baseline,
        **Provenance.of(constitution, judge).fields(),
        prompts=len(pairs),
        k=min(wanted, len(constitution.enabled)),
        seed=seed,
        protocol=config.protocol_for(judge),
        temperature=temperature,
        max_tokens=max_tokens,
        resamples=resamples,
        confidence=confidence,
        tie_margin=margin,
        overall=overall,
        principles=principles,
        identical=sum(1 for p in pairs if p.identical),
        empty_a=sum(1 for p in pairs if p.a == ""),
        empty_b=sum(1 for p in pairs if p.b == ""),
        generation_failures_a=sum(1 for p in pairs if p.a is None),
        generation_failures_b=sum(1 for p in pairs if p.b is None),
        position_consistency=(sum(consistency) / len(consistency) if consistency else None),
        mean_length_a=_mean([p.length_a for p in both if p.length_a is not None]),
        mean_length_b=_mean([p.length_b for p in both if p.length_b is not None]),
        a_longer_rate=(
            sum(1 for p in unequal if (p.length_a or 0) > (p.length_b or 0)) / len(unequal)
            if unequal
            else None
        ),
        tokens=tokens,
        judge_calls_reused=judge_calls_reused,
        latency_s=latency_s,
        pairs=list(pairs),
    )


def _length_diff(pair: PairResult) -> float:
    return float((pair.length_a or 0) - (pair.length_b or 0))


def _mean(values: Sequence[int]) -> float | None:
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------------------- the whole run


@dataclass(frozen=True)
class InTurn:
    """A model opened when its turn comes and closed when its turn ends, so evaluating two
    local checkpoints needs memory for one model at a time."""

    spec: str
    open: Callable[[], ChatModel]


@contextlib.asynccontextmanager
async def _turn(
    phase: str, given: ChatModel | InTurn, say: Callable[[str], None]
) -> AsyncIterator[ChatModel]:
    if not isinstance(given, InTurn):
        yield given
        return
    say(f"{phase}: loading {given.spec}")
    chat_model = given.open()
    try:
        yield chat_model
    finally:
        await chat_model.aclose()


async def evaluate_models(
    model: ChatModel | InTurn,
    baseline: ChatModel | InTurn,
    judge: ChatModel | InTurn,
    constitution: Constitution,
    prompts: Sequence[PromptRecord],
    *,
    config: JudgeConfig = DEFAULT_CONFIG,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float = DEFAULT_TEMPERATURE,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    concurrency: int = 8,
    nonces: NonceSource = RANDOM_NONCES,
    store: sqlite_utils.Database | None = None,
    on_progress: ProgressCallback | None = None,
    say: Callable[[str], None] | None = None,
) -> ModelEvalReport:
    """Generate with `model` and `baseline`, judge every pair, and report the win rate.

    The models are used in turn (model, baseline, judge); one given `InTurn` is opened for its
    turn alone. With a `store`, the judge's calls go through it (`CachedModel`): a re-run pays
    only for the calls it has not made. `say` hears each phase begin, in words.
    """
    if not prompts:
        raise ValueError("no prompts to evaluate on")
    started = time.perf_counter()
    tell = say or (lambda _: None)

    def progress(phase: str) -> Callable[[int, int], None] | None:
        if on_progress is None:
            return None
        report = on_progress
        return lambda done, total: report(phase, done, total)

    outputs: dict[str, list[Generated]] = {}
    specs: dict[str, str] = {}
    for phase, given in (("model", model), ("baseline", baseline)):
        async with _turn(phase, given, tell) as chat_model:
            tell(f"{phase}: answering {len(prompts)} prompts")
            specs[phase] = given.spec if isinstance(given, InTurn) else chat_model.spec
            outputs[phase] = await generate_completions(
                chat_model,
                prompts,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=config.seed,
                concurrency=concurrency,
                on_progress=progress(phase),
            )
    async with _turn("judge", judge, tell) as judge_model:
        cached = CachedModel(judge_model, store) if store is not None else None
        tell(f"judge: comparing {len(prompts)} pairs")
        pairs = await judge_pairs(
            cached or judge_model,
            constitution,
            prompts,
            outputs["model"],
            outputs["baseline"],
            config=config,
            concurrency=concurrency,
            nonces=nonces,
            on_progress=progress("judge"),
        )
        specs["judge"] = judge_model.spec
    return winrate_report(
        pairs,
        model=specs["model"],
        baseline=specs["baseline"],
        judge=specs["judge"],
        constitution=constitution,
        config=config,
        temperature=temperature,
        max_tokens=max_tokens,
        resamples=resamples,
        confidence=confidence,
        judge_calls_reused=cached.stats.reused if cached is not None else None,
        latency_s=time.perf_counter() - started,
    )


evaluate_models_sync = synced(evaluate_models)
