"""How far to trust the judge's P(a is better): metrics, reliability bins, and a fitted fix.

A judge that says 0.9 should be right nine times in ten. Measured against labelled pairs, this
module reports how well that holds (Brier, log loss, expected calibration error, a reliability
table, accuracy at each confidence threshold) and fits a temperature-and-bias correction
(Platt scaling on the logit) that can be applied to later verdicts. It is pure numpy and
pydantic with no I/O, so the same numbers come out of the CLI, the service and the tests, and
plotting (`plots.py`) only draws what is computed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

EPS = 1e-6
"""Probabilities are clipped to [EPS, 1 - EPS] before a logit or a log, so 0 and 1 stay finite."""

RIDGE = 1e-6
"""Pull toward the identity calibration: keeps the fit finite on perfectly separable data."""

MIN_SLOPE = 1e-3
"""Smallest 1/T the fit may reach (T <= 1000): a judge no better than chance flattens to this."""

TIE_TOLERANCE = 1e-12
"""Slack on confidence thresholds, so p = 0.45 and p = 0.55 count as equally confident."""

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))

FloatArray = NDArray[np.float64]


@overload
def logit(p: float) -> float: ...
@overload
def logit(p: FloatArray) -> FloatArray: ...
def logit(p: float | FloatArray) -> float | FloatArray:
    """log(p / (1 - p)), with p clipped to [1e-6, 1 - 1e-6] so certainty maps to about ±13.8."""
    clipped = np.clip(p, EPS, 1.0 - EPS)
    out = np.log(clipped) - np.log1p(-clipped)
    return float(out) if np.ndim(out) == 0 else np.asarray(out, dtype=np.float64)


@overload
def sigmoid(x: float) -> float: ...
@overload
def sigmoid(x: FloatArray) -> FloatArray: ...
def sigmoid(x: float | FloatArray) -> float | FloatArray:
    """1 / (1 + e^-x), computed from e^-|x| so large |x| neither overflows nor warns."""
    arr = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(arr))
    out = np.where(arr >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return float(out) if np.ndim(out) == 0 else out


class Calibration(BaseModel):
    """A correction for the judge's P(a better): p' = sigmoid(logit(p) / temperature + bias).

    temperature > 1 means the raw judge was over-confident (its logits are shrunk toward 0);
    temperature < 1 means it was under-confident. `bias` shifts toward a (> 0) or b (< 0),
    e.g. to undo a position or length preference. `fitted_on` is the number of pairs behind
    the fit (0 for a hand-made or identity calibration).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(gt=0, allow_inf_nan=False)
    bias: float = Field(default=0.0, allow_inf_nan=False)
    fitted_on: int = Field(default=0, ge=0)

    @classmethod
    def identity(cls) -> Calibration:
        """The calibration that changes nothing (T = 1, bias 0)."""
        return cls(temperature=1.0, bias=0.0)

    def apply(self, p: float) -> float:
        """The calibrated P(a better) for one raw probability."""
        return sigmoid(logit(float(p)) / self.temperature + self.bias)

    def apply_many(self, probs: Sequence[float]) -> list[float]:
        """The calibrated probabilities for many raw ones, in order."""
        raw = np.asarray(probs, dtype=np.float64)
        return [float(v) for v in sigmoid(logit(raw) / self.temperature + self.bias)]


def _validated(probs: Sequence[float], labels: Sequence[bool]) -> tuple[FloatArray, FloatArray]:
    """Probabilities and 0/1 labels as arrays, after checking they describe the same pairs."""
    if len(probs) != len(labels):
        raise ValueError(
            f"probs and labels differ in length ({len(probs)} probabilities, {len(labels)} labels)"
        )
    if len(probs) == 0:
        raise ValueError("no pairs: probs and labels are empty")
    p = np.asarray(probs, dtype=np.float64)
    if not np.all((p >= 0.0) & (p <= 1.0)):
        bad = next(float(v) for v in p if not 0.0 <= v <= 1.0)
        raise ValueError(f"probabilities must lie in [0, 1], got {bad}")
    y = np.asarray([bool(label) for label in labels], dtype=np.float64)
    return p, y


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------


def _objective(theta: FloatArray, x: FloatArray, y: FloatArray) -> float:
    """Mean log loss of sigmoid(slope * x + bias) plus the ridge toward (slope 1, bias 0)."""
    z = theta[0] * x + theta[1]
    loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
    return loss + 0.5 * RIDGE * float((theta[0] - 1.0) ** 2 + theta[1] ** 2)


def _gradient_hessian(
    theta: FloatArray, x: FloatArray, y: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Gradient and Hessian of `_objective` in (slope, bias)."""
    q = sigmoid(theta[0] * x + theta[1])
    r = q - y
    w = q * (1.0 - q)
    grad = np.array([np.mean(r * x), np.mean(r)]) + RIDGE * (theta - np.array([1.0, 0.0]))
    hess = np.array(
        [[np.mean(w * x * x), np.mean(w * x)], [np.mean(w * x), np.mean(w)]]
    ) + RIDGE * np.eye(2)
    return grad, hess


def _newton_direction(
    theta: FloatArray, grad: FloatArray, hess: FloatArray, free: tuple[bool, bool]
) -> FloatArray:
    """The Newton step over the free coordinates; a slope at its floor pushing down is fixed."""
    active = [
        i for i in range(2) if free[i] and not (i == 0 and theta[0] <= MIN_SLOPE and grad[0] > 0)
    ]
    step = np.zeros(2)
    if active:
        sub = np.ix_(active, active)
        step[active] = -np.linalg.solve(hess[sub], grad[active])
    return step


def _minimise(x: FloatArray, y: FloatArray, free: tuple[bool, bool]) -> FloatArray:
    """Damped Newton with backtracking; the objective is strictly convex, so this converges."""
    theta = np.array([1.0, 0.0])
    value = _objective(theta, x, y)
    for _ in range(200):
        grad, hess = _gradient_hessian(theta, x, y)
        step = _newton_direction(theta, grad, hess, free)
        t = 1.0
        while t > 1e-12:
            candidate = theta + t * step
            candidate[0] = max(candidate[0], MIN_SLOPE)
            new_value = _objective(candidate, x, y)
            if new_value <= value + 1e-4 * float(grad @ (candidate - theta)):
                break
            t *= 0.5
        else:
            break  # no descent left along the Newton direction: at the optimum to precision
        moved = float(np.max(np.abs(candidate - theta)))
        theta, value = candidate, new_value
        if moved < 1e-10:
            break
    return theta


def fit_calibration(
    probs: Sequence[float], labels: Sequence[bool], *, fit_bias: bool = True
) -> Calibration:
    """Fit T and bias on labelled pairs by minimising log loss (Platt scaling on the logit).

    `labels[i]` is True when a was the preferred response. The slope 1/T is kept >= 1e-3, and
    a 1e-6 ridge toward the identity keeps the answer finite on perfectly separable data. When
    every raw probability is the same (e.g. all 0.5) the spread carries no information, so T
    stays 1 and only the bias is fitted. Deterministic: no random restarts.
    """
    p, y = _validated(probs, labels)
    if len(p) < 2:
        raise ValueError(f"need at least 2 labelled pairs to fit a calibration, got {len(p)}")
    x = logit(p)
    if np.ptp(x) == 0.0:
        if not fit_bias:
            return Calibration(temperature=1.0, bias=0.0, fitted_on=len(p))
        bias = _minimise(np.zeros_like(x), y, (False, True))[1] - float(x[0])
        return Calibration(temperature=1.0, bias=float(bias), fitted_on=len(p))
    slope, bias = _minimise(x, y, (True, fit_bias))
    return Calibration(temperature=1.0 / float(slope), bias=float(bias), fitted_on=len(p))


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


class ReliabilityBin(BaseModel):
    """One equal-width bin [lo, hi) of P(a better); the last bin includes 1.0. Empty: None."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lo: float
    hi: float
    count: int
    mean_p: float | None
    frac_a_preferred: float | None


class CalibrationMetrics(BaseModel):
    """How well P(a better) matches the label "a preferred" over `n` pairs.

    `ece` is the expected calibration error of P(a better) against that label: the sum over
    `bins` equal-width bins on [0, 1] of (count / n) * |mean_p - frac_a_preferred|. It depends
    on the number of bins, which is therefore reported with it. `brier` is mean (p - y)^2 and
    `log_loss` mean -[y log p + (1 - y) log(1 - p)] with p clipped to [1e-6, 1 - 1e-6].
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int
    brier: float
    log_loss: float
    ece: float
    bins: int
    reliability: list[ReliabilityBin]


def _reliability(p: FloatArray, y: FloatArray, bins: int) -> list[ReliabilityBin]:
    """Equal-width bins on [0, 1]; p == 1.0 goes in the last one."""
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    table = []
    for k in range(bins):
        members = index == k
        count = int(members.sum())
        table.append(
            ReliabilityBin(
                lo=k / bins,
                hi=(k + 1) / bins,
                count=count,
                mean_p=float(p[members].mean()) if count else None,
                frac_a_preferred=float(y[members].mean()) if count else None,
            )
        )
    return table


def calibration_metrics(
    probs: Sequence[float], labels: Sequence[bool], bins: int = 10
) -> CalibrationMetrics:
    """Brier score, log loss, ECE and the reliability table of P(a better) against the labels."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    p, y = _validated(probs, labels)
    clipped = np.clip(p, EPS, 1.0 - EPS)
    log_loss = float(-np.mean(y * np.log(clipped) + (1.0 - y) * np.log1p(-clipped)))
    table = _reliability(p, y, bins)
    ece = sum(
        (b.count / len(p)) * abs(b.mean_p - b.frac_a_preferred)
        for b in table
        if b.mean_p is not None and b.frac_a_preferred is not None
    )
    return CalibrationMetrics(
        n=len(p),
        brier=float(np.mean((p - y) ** 2)),
        log_loss=log_loss,
        ece=float(ece),
        bins=bins,
        reliability=table,
    )


class CoveragePoint(BaseModel):
    """Accuracy on the pairs the judge is at least `threshold` confident about.

    `accuracy` is None when no pair is covered (there is nothing to be right or wrong about).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float
    covered: int
    coverage: float
    accuracy: float | None


def accuracy_coverage(
    probs: Sequence[float],
    labels: Sequence[bool],
    thresholds: Sequence[float] | None = None,
) -> list[CoveragePoint]:
    """Accuracy against coverage as the confidence threshold rises: the abstention trade-off.

    Confidence is max(p, 1 - p). A pair is covered at threshold t when its confidence is >= t
    and p != 0.5 (an exact tie decides nothing, so it is never covered); the 0.5 threshold is
    thus "every decided pair". Default thresholds: 0.5, 0.55, ..., 0.95.
    """
    p, y = _validated(probs, labels)
    confidence = np.maximum(p, 1.0 - p)
    decided = p != 0.5
    correct = (p > 0.5) == (y == 1.0)
    points = []
    for t in DEFAULT_THRESHOLDS if thresholds is None else thresholds:
        covered = decided & (confidence >= t - TIE_TOLERANCE)
        count = int(covered.sum())
        points.append(
            CoveragePoint(
                threshold=float(t),
                covered=count,
                coverage=count / len(p),
                accuracy=float(correct[covered].mean()) if count else None,
            )
        )
    return points


def holdout_split(n: int, fraction: float = 0.3, seed: int = 0) -> tuple[list[int], list[int]]:
    """(fit indices, held-out indices), each sorted, so a calibration is judged on unseen pairs.

    A seeded shuffle makes the split reproducible; both sides get at least one pair.
    """
    if n < 2:
        raise ValueError(f"need at least 2 pairs to split into fit and held-out sets, got {n}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held-out fraction must be strictly between 0 and 1, got {fraction}")
    order = np.random.default_rng(seed).permutation(n)
    held = min(max(round(n * fraction), 1), n - 1)
    return sorted(int(i) for i in order[held:]), sorted(int(i) for i in order[:held])


def crossfit_folds(n: int, folds: int, seed: int = 0) -> list[list[int]]:
    """`folds` disjoint sets of indices covering 0..n-1 (a seeded shuffle dealt round-robin,
    each sorted): for cross-fitting, where each pair is calibrated by a fit on the other folds,
    so every pair is held out once and the figures cover all of them."""
    if not 2 <= folds <= n:
        raise ValueError(f"cross-fitting needs between 2 and {n} folds (one per pair), got {folds}")
    order = np.random.default_rng(seed).permutation(n)
    return [sorted(int(i) for i in order[k::folds]) for k in range(folds)]
