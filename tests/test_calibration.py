"""Judge calibration: the temperature fit recovers a known distortion, metrics match hand
arithmetic, coverage semantics (ties, thresholds), edge cases, the holdout split and the plot."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from charter.judge.calibration import (
    Calibration,
    accuracy_coverage,
    calibration_metrics,
    crossfit_folds,
    fit_calibration,
    holdout_split,
    logit,
    sigmoid,
)
from charter.judge.plots import plot_calibration

TRUE_T = 2.5
TRUE_SHIFT = 0.3
# The judge reports sigmoid(2.5 z + 0.3); undoing it: z = logit(p) / 2.5 - 0.3 / 2.5.
TRUE_BIAS = -TRUE_SHIFT / TRUE_T


def overconfident_judge(n: int, seed: int) -> tuple[list[float], list[bool]]:
    """True logits z ~ N(0, 2), labels ~ Bernoulli(sigmoid(z)), reports sigmoid(2.5 z + 0.3)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    labels = rng.random(n) < 1.0 / (1.0 + np.exp(-z))
    probs = 1.0 / (1.0 + np.exp(-(TRUE_T * z + TRUE_SHIFT)))
    return [float(p) for p in probs], [bool(y) for y in labels]


# --- logit / sigmoid / Calibration -----------------------------------------------------------


def test_logit_and_sigmoid_are_inverse_and_stable() -> None:
    assert logit(0.8) == pytest.approx(math.log(4.0))
    assert sigmoid(math.log(3.0)) == pytest.approx(0.75)
    assert sigmoid(logit(0.123)) == pytest.approx(0.123)
    assert logit(0.0) == pytest.approx(math.log(1e-6 / (1 - 1e-6)))
    assert logit(1.0) == pytest.approx(-logit(0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings at the extremes
        assert sigmoid(1000.0) == 1.0
        assert sigmoid(-1000.0) == 0.0
        both = sigmoid(np.array([-800.0, 0.0, 800.0]))
    assert both.tolist() == [0.0, 0.5, 1.0]


def test_calibration_apply_matches_the_formula() -> None:
    # logit(0.8) = ln 4; halved is ln 2; sigmoid(ln 2) = 2/3.
    assert Calibration(temperature=2.0).apply(0.8) == pytest.approx(2.0 / 3.0)
    assert Calibration(temperature=1.0, bias=math.log(3.0)).apply(0.5) == pytest.approx(0.75)
    cal = Calibration(temperature=3.0, bias=-0.2)
    assert cal.apply_many([0.1, 0.5, 0.97]) == pytest.approx(
        [cal.apply(0.1), cal.apply(0.5), cal.apply(0.97)]
    )
    identity = Calibration.identity()
    assert (identity.temperature, identity.bias, identity.fitted_on) == (1.0, 0.0, 0)
    assert identity.apply_many([0.2, 0.9]) == pytest.approx([0.2, 0.9])


def test_calibration_rejects_bad_fields() -> None:
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValidationError):
            Calibration(temperature=bad)
    with pytest.raises(ValidationError):
        Calibration(temperature=1.0, slope=2.0)
    with pytest.raises(ValidationError):
        Calibration(temperature=1.0, fitted_on=-1)


# --- fitting ---------------------------------------------------------------------------------


def test_fit_recovers_overconfidence_and_fixes_held_out_ece() -> None:
    probs, labels = overconfident_judge(4000, seed=0)
    fit = fit_calibration(probs[:2000], labels[:2000])
    assert fit.temperature == pytest.approx(TRUE_T, rel=0.10)
    assert fit.bias == pytest.approx(TRUE_BIAS, abs=0.05)
    assert fit.fitted_on == 2000

    raw = calibration_metrics(probs[2000:], labels[2000:])
    fixed = calibration_metrics(fit.apply_many(probs[2000:]), labels[2000:])
    assert raw.ece > 0.05
    assert fixed.ece <= 0.03
    assert fixed.log_loss < raw.log_loss
    assert fixed.brier < raw.brier


def test_fit_is_consistent_on_a_large_sample() -> None:
    # 2000 pairs leave about ±0.05 of sampling noise in the bias; 200k pin the estimator itself.
    probs, labels = overconfident_judge(200_000, seed=7)
    fit = fit_calibration(probs, labels)
    assert fit.temperature == pytest.approx(TRUE_T, rel=0.03)
    assert fit.bias == pytest.approx(TRUE_BIAS, abs=0.02)


def test_fit_reaches_the_log_loss_minimum() -> None:
    probs, labels = overconfident_judge(3000, seed=3)
    fit = fit_calibration(probs, labels)
    x = np.clip(np.array(probs), 1e-6, 1 - 1e-6)
    x = np.log(x / (1 - x))
    y = np.array(labels, dtype=float)

    def loss(slope: float, bias: float) -> float:
        z = slope * x + bias
        return float(np.mean(np.logaddexp(0.0, z) - y * z))

    q = 1.0 / (1.0 + np.exp(-(x / fit.temperature + fit.bias)))
    assert abs(np.mean((q - y) * x)) < 1e-5  # zero gradient in the slope
    assert abs(np.mean(q - y)) < 1e-5  # and in the bias
    best = loss(1 / fit.temperature, fit.bias)
    for ds, db in ((0.01, 0), (-0.01, 0), (0, 0.01), (0, -0.01)):
        assert loss(1 / fit.temperature + ds, fit.bias + db) > best


def test_fit_of_a_calibrated_judge_is_near_identity() -> None:
    rng = np.random.default_rng(11)
    z = rng.normal(0.0, 1.5, 20_000)
    labels = [bool(v) for v in rng.random(z.size) < 1 / (1 + np.exp(-z))]
    fit = fit_calibration([float(v) for v in 1 / (1 + np.exp(-z))], labels)
    assert fit.temperature == pytest.approx(1.0, rel=0.05)
    assert fit.bias == pytest.approx(0.0, abs=0.05)


def test_fit_without_bias_keeps_bias_zero_and_is_deterministic() -> None:
    probs, labels = overconfident_judge(1000, seed=5)
    fit = fit_calibration(probs, labels, fit_bias=False)
    assert fit.bias == 0.0
    assert fit.temperature > 1.5  # still finds the over-confidence
    assert fit_calibration(probs, labels) == fit_calibration(probs, labels)


def test_fit_all_half_fits_only_the_bias() -> None:
    fit = fit_calibration([0.5] * 5, [True, True, False, True, True])
    assert fit.temperature == 1.0
    assert fit.bias == pytest.approx(math.log(0.8 / 0.2), abs=1e-4)
    assert fit.apply(0.5) == pytest.approx(0.8, abs=1e-4)
    assert fit_calibration([0.5] * 3, [True, False, True], fit_bias=False) == Calibration(
        temperature=1.0, fitted_on=3
    )


def test_fit_on_identical_nonhalf_probabilities_moves_them_to_the_base_rate() -> None:
    fit = fit_calibration([0.7] * 4, [True, True, False, True])
    assert fit.temperature == 1.0
    assert fit.apply(0.7) == pytest.approx(0.75, abs=1e-4)


def test_fit_on_separable_data_stays_finite_and_ordered() -> None:
    fit = fit_calibration([0.9, 0.8, 0.3, 0.1], [True, True, False, False])
    assert math.isfinite(fit.temperature) and fit.temperature > 0
    assert math.isfinite(fit.bias)
    low, mid_low, mid_high, high = fit.apply_many([0.1, 0.3, 0.8, 0.9])
    assert low < mid_low < 0.5 < mid_high < high  # sharpened, order kept


def test_fit_on_anti_informative_data_flattens_instead_of_flipping() -> None:
    fit = fit_calibration([0.3, 0.4, 0.6, 0.9], [True, True, False, False])
    assert fit.temperature >= 100  # slope floored near 0, never negative
    assert fit.apply(0.9) == pytest.approx(0.5, abs=0.01)


def test_fit_handles_probabilities_of_exactly_zero_and_one() -> None:
    fit = fit_calibration([0.0, 1.0, 0.0, 1.0], [False, True, True, True])
    assert math.isfinite(fit.temperature) and fit.temperature > 0
    assert math.isfinite(fit.bias)
    assert 0.0 < fit.apply(0.0) < fit.apply(1.0) < 1.0


def test_fit_rejects_too_few_or_mismatched_pairs() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        fit_calibration([0.7], [True])
    with pytest.raises(ValueError, match="empty"):
        fit_calibration([], [])
    with pytest.raises(ValueError, match="differ in length"):
        fit_calibration([0.7, 0.2], [True])


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_match_hand_arithmetic() -> None:
    probs = [0.9, 0.8, 0.3, 0.5]
    labels = [True, False, False, True]
    m = calibration_metrics(probs, labels, bins=2)

    assert m.n == 4 and m.bins == 2
    assert m.brier == pytest.approx((0.1**2 + 0.8**2 + 0.3**2 + 0.5**2) / 4)  # 0.2475
    expected_log_loss = -(math.log(0.9) + math.log(0.2) + math.log(0.7) + math.log(0.5)) / 4
    assert m.log_loss == pytest.approx(expected_log_loss)
    # Bin [0, 0.5): {0.3}, none a-preferred. Bin [0.5, 1]: {0.9, 0.8, 0.5}, two a-preferred.
    low, high = m.reliability
    assert (low.lo, low.hi, low.count) == (0.0, 0.5, 1)
    assert low.mean_p == pytest.approx(0.3) and low.frac_a_preferred == 0.0
    assert (high.lo, high.hi, high.count) == (0.5, 1.0, 3)
    assert high.mean_p == pytest.approx(2.2 / 3) and high.frac_a_preferred == pytest.approx(2 / 3)
    assert m.ece == pytest.approx(0.25 * 0.3 + 0.75 * abs(2.2 / 3 - 2 / 3))  # 0.125


def test_metrics_bin_edges_empty_bins_and_certainty() -> None:
    m = calibration_metrics([1.0, 0.0, 0.05], [True, True, False], bins=10)
    counts = [b.count for b in m.reliability]
    assert counts == [2, 0, 0, 0, 0, 0, 0, 0, 0, 1]  # 1.0 lands in the last bin
    assert m.reliability[5].mean_p is None and m.reliability[5].frac_a_preferred is None
    # p = 0 for an a-preferred pair is clipped, not infinite.
    assert m.log_loss == pytest.approx(-(math.log(1 - 1e-6) + math.log(1e-6) + math.log(0.95)) / 3)
    assert m.ece == pytest.approx((2 / 3) * abs(0.025 - 0.5))


def test_metrics_reject_bad_input_with_a_named_problem() -> None:
    with pytest.raises(ValueError, match="empty"):
        calibration_metrics([], [])
    with pytest.raises(ValueError, match="differ in length"):
        calibration_metrics([0.2, 0.4], [True, False, True])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration_metrics([0.2, 1.5], [True, False])
    with pytest.raises(ValueError, match="bins"):
        calibration_metrics([0.2], [True], bins=0)


# --- accuracy / coverage ---------------------------------------------------------------------


def test_accuracy_coverage_default_thresholds_and_hand_values() -> None:
    points = accuracy_coverage([0.9, 0.8, 0.3, 0.5], [True, False, False, True])
    assert [p.threshold for p in points] == [
        0.5,
        0.55,
        0.6,
        0.65,
        0.7,
        0.75,
        0.8,
        0.85,
        0.9,
        0.95,
    ]
    by_t = {p.threshold: p for p in points}
    # 0.5 means every decided pair: the tie at 0.5 is excluded, 0.8/False is wrong.
    assert (by_t[0.5].covered, by_t[0.5].coverage) == (3, 0.75)
    assert by_t[0.5].accuracy == pytest.approx(2 / 3)
    assert (by_t[0.75].covered, by_t[0.75].accuracy) == (2, 0.5)
    assert (by_t[0.85].covered, by_t[0.85].accuracy) == (1, 1.0)
    assert (by_t[0.95].covered, by_t[0.95].coverage, by_t[0.95].accuracy) == (0, 0.0, None)


def test_accuracy_coverage_ties_never_covered_and_symmetric_confidence() -> None:
    ties = accuracy_coverage([0.5, 0.5], [True, False], thresholds=[0.0, 0.5])
    assert all(p.covered == 0 and p.accuracy is None for p in ties)
    # 0.45 is as confident (for b) as 0.55 is for a, despite float rounding of 1 - 0.45.
    (point,) = accuracy_coverage([0.45, 0.55], [False, False], thresholds=[0.55])
    assert point.covered == 2 and point.accuracy == 0.5
    (certain,) = accuracy_coverage([0.0, 1.0, 0.94], [False, True, True], thresholds=[0.95])
    assert (certain.covered, certain.accuracy) == (2, 1.0)


def test_accuracy_coverage_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        accuracy_coverage([0.9], [True, False])


# --- holdout split ---------------------------------------------------------------------------


def test_holdout_split_is_deterministic_disjoint_and_sorted() -> None:
    fit, held = holdout_split(100, fraction=0.3, seed=4)
    assert (fit, held) == holdout_split(100, fraction=0.3, seed=4)
    assert holdout_split(100, fraction=0.3, seed=5) != (fit, held)
    assert len(held) == 30 and len(fit) == 70
    assert set(fit).isdisjoint(held) and sorted(fit + held) == list(range(100))
    assert fit == sorted(fit) and held == sorted(held)
    assert held != list(range(30))  # actually shuffled


def test_holdout_split_keeps_one_on_each_side() -> None:
    assert holdout_split(2, fraction=0.01) in (([0], [1]), ([1], [0]))
    fit, held = holdout_split(3, fraction=0.99)
    assert len(fit) == 1 and len(held) == 2


def test_holdout_split_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        holdout_split(1)
    for fraction in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            holdout_split(10, fraction=fraction)


# --- plot ------------------------------------------------------------------------------------


def test_plot_calibration_writes_a_png(tmp_path: Path) -> None:
    probs, labels = overconfident_judge(600, seed=1)
    fit = fit_calibration(probs[:300], labels[:300])
    target = tmp_path / "nested" / "calibration.png"
    written = plot_calibration(
        target,
        {
            "pointwise raw": (probs[300:], labels[300:]),
            "pointwise calibrated": (fit.apply_many(probs[300:]), labels[300:]),
        },
        bins=8,
        title="judge calibration",
    )
    assert written == target
    data = target.read_bytes()
    assert data[:4] == b"\x89PNG"
    assert len(data) > 10_000


def test_importing_plots_does_not_import_matplotlib() -> None:
    code = "import sys, charter.judge.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- cross-fitting ---------------------------------------------------------------------------


def test_crossfit_folds_cover_every_pair_once_and_are_seeded() -> None:
    folds = crossfit_folds(23, 5, seed=2)
    assert folds == crossfit_folds(23, 5, seed=2) and folds != crossfit_folds(23, 5, seed=3)
    assert sorted(i for f in folds for i in f) == list(range(23))
    assert all(f == sorted(f) for f in folds) and {len(f) for f in folds} == {4, 5}
    for bad in (1, 24):
        with pytest.raises(ValueError, match="folds"):
            crossfit_folds(23, bad)


def test_a_cross_fitted_pair_is_calibrated_by_a_fit_that_never_saw_it() -> None:
    from charter.calibrations import fit_and_hold_out

    probs, labels = overconfident_judge(60, seed=7)
    with_none: list[float | None] = [*probs[:-1], None]  # no verdict: kept out of every fit
    fitted = fit_and_hold_out(with_none, labels, folds=5, seed=1)
    assert fitted.held == list(range(60)) and fitted.held_calibrated[-1] is None
    assert fitted.calibration == fit_calibration(probs[:-1], labels[:-1], fit_bias=False)
    assert fitted.calibration.temperature > 1.5  # the over-confidence is found on all pairs
    # Flipping a pair's own label moves the fit of every other fold, never its own p.
    for i in (0, 17, 42):
        flipped = [*labels[:i], not labels[i], *labels[i + 1 :]]
        again = fit_and_hold_out(with_none, flipped, folds=5, seed=1)
        assert again.held_calibrated[i] == fitted.held_calibrated[i]
        assert again.held_calibrated != fitted.held_calibrated
    # Without folds: the seeded 30% hold-out, calibrated by the fit on the other 70%.
    split = fit_and_hold_out(with_none, labels, seed=1)
    fit_idx, held = holdout_split(60, 0.3, seed=1)
    assert split.held == held and split.calibration.fitted_on == len(
        [i for i in fit_idx if with_none[i] is not None]
    )
