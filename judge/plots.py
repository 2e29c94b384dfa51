"""Pictures of judge calibration: a reliability diagram and an accuracy-coverage curve.

A table of bins is hard to compare across judges; one PNG with both views shows at a glance
whether calibration helped and what abstaining buys. Every number comes from `calibration.py`.
matplotlib is imported inside the function, with the headless Agg backend, so importing the
judge never pulls in a plotting stack or needs a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .calibration import accuracy_coverage, calibration_metrics

if TYPE_CHECKING:
    from matplotlib.axes import Axes

Series = Mapping[str, tuple[Sequence[float], Sequence[bool]]]


def _draw_reliability(ax: Axes, series: Series, bins: int) -> None:
    """Observed fraction a-preferred against mean predicted P(a better), per non-empty bin."""
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    for name, (probs, labels) in series.items():
        metrics = calibration_metrics(probs, labels, bins=bins)
        filled = [
            (b.mean_p, b.frac_a_preferred)
            for b in metrics.reliability
            if b.mean_p is not None and b.frac_a_preferred is not None
        ]
        xs, ys = [x for x, _ in filled], [y for _, y in filled]
        ax.plot(xs, ys, marker="o", label=f"{name} (ECE {metrics.ece:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")
    ax.set_xlabel("mean predicted P(a better)")
    ax.set_ylabel("observed fraction a preferred")
    ax.set_title(f"Reliability ({bins} equal-width bins)")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)


def _draw_coverage(ax: Axes, series: Series) -> None:
    """Accuracy on the pairs kept against the share kept, one point per confidence threshold."""
    for name, (probs, labels) in series.items():
        points = [
            (pt.coverage, pt.accuracy)
            for pt in accuracy_coverage(probs, labels)
            if pt.accuracy is not None
        ]
        xs, ys = [x for x, _ in points], [y for _, y in points]
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("coverage (share of pairs decided at the threshold)")
    ax.set_ylabel("accuracy on covered pairs")
    ax.set_title("Accuracy vs coverage")
    ax.annotate(
        "each point: a confidence threshold max(p, 1-p) >= 0.50, 0.55, ..., 0.95",
        xy=(0.5, -0.2),
        xycoords="axes fraction",
        ha="center",
        fontsize="small",
        color="dimgrey",
    )
    ax.legend(loc="lower left", fontsize="small")
    ax.grid(alpha=0.3)


def plot_calibration(
    path: str | Path, series: Series, *, bins: int = 10, title: str | None = None
) -> Path:
    """Write a two-panel PNG (reliability, accuracy-coverage) for each labelled series.

    `series` maps a label such as "pointwise raw" to (P(a better) per pair, a-preferred per
    pair). Returns the path written; parent directories are created.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    try:
        _draw_reliability(left, series, bins)
        _draw_coverage(right, series)
        if title:
            fig.suptitle(title)
        fig.savefig(out, dpi=120)
    finally:
        plt.close(fig)
    return out
