"""One HTML page comparing models from stored evaluation runs, with matplotlib charts.

The picture a team looks at before shipping: attack success rate per jailbreak template,
over-refusal per category, win rates with their intervals, and results per principle, every
model side by side. The page is self-contained (each chart is embedded as a data URI, with no
script, stylesheet or font fetched), so it opens offline; the same charts are written as PNG
files beside it for slides and issues.

From several runs of the same suite and model (and baseline), the newest is shown.
"""

from __future__ import annotations

import base64
import html
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runs import EvalRun

Interval = tuple[float | None, float | None, float | None, int | None]
"""(rate, low, high, n)."""

REPORT_NAME = "report.html"


def newest_runs(runs: Sequence[EvalRun]) -> list[EvalRun]:
    """The newest run of each (suite, model, baseline), in the order first seen."""
    newest: dict[tuple[str, str, str | None], EvalRun] = {}
    for run in runs:  # oldest first: a later run replaces an earlier one
        newest[(run.suite, run.model, run.baseline)] = run
    return list(newest.values())


@dataclass(frozen=True)
class Chart:
    """One grouped bar chart: a bar per series (model) in each group, with its interval."""

    name: str
    title: str
    ylabel: str
    groups: list[str]
    series: dict[str, dict[str, Interval]]
    reference: float | None = None
    """A value to draw as a dashed line (0.5 for a win rate: no better than the baseline)."""
    judges: tuple[str, ...] = ()
    """Each judge's measured qualification, one line each: a chart is only as good as them."""


def _interval(figure: Mapping[str, Any], key: str = "rate") -> Interval:
    return (figure.get(key), figure.get("ci_low"), figure.get("ci_high"), figure.get("n"))


def judge_lines(runs: Sequence[EvalRun]) -> tuple[str, ...]:
    """The qualification line of every judge behind `runs` (recorded with each run)."""
    lines: dict[str, str] = {}
    for run in runs:
        recorded = (run.settings or {}).get("judge_qualification") or {}
        lines.setdefault(
            run.judge,
            recorded.get("text")
            or f"judge {run.judge}: qualification not recorded with this run (unqualified)",
        )
    return tuple(lines.values())


def _group_chart(
    name: str,
    title: str,
    ylabel: str,
    runs: Sequence[EvalRun],
    field: str,
    *,
    overall: bool = True,
) -> Chart | None:
    if not runs:
        return None
    series: dict[str, dict[str, Interval]] = {}
    groups: list[str] = []
    for run in runs:
        rows = run.figures.get(field) or []
        series[run.model] = {"overall": _interval(run.figures["overall"])} | {
            row["group"]: _interval(row) for row in rows
        }
        groups += [row["group"] for row in rows if row["group"] not in groups]
    return Chart(
        name, title, ylabel, ["overall", *groups] if overall else groups, series,
        judges=judge_lines(runs),
    )  # fmt: skip


def _win_chart(runs: Sequence[EvalRun]) -> Chart | None:
    if not runs:
        return None
    series: dict[str, dict[str, Interval]] = {}
    groups: list[str] = []
    for run in runs:
        label = f"{run.model} vs {run.baseline}"
        figures = run.figures
        series[label] = {"overall": _interval(figures["overall"], "win_rate")} | {
            p["principle_id"]: _interval(p, "win_rate") for p in figures.get("principles", [])
        }
        groups += [
            p["principle_id"]
            for p in figures.get("principles", [])
            if p["principle_id"] not in groups
        ]
    return Chart(
        "win_rates", "Win rate over the baseline, overall and per principle", "win rate",
        ["overall", *groups], series, reference=0.5, judges=judge_lines(runs),
    )  # fmt: skip


def charts(runs: Sequence[EvalRun]) -> list[Chart]:
    """Every chart the runs support, in the order the page shows them."""
    by_suite = {s: [r for r in runs if r.suite == s] for s in ("harm", "refusal", "helpful")}
    made = [
        _group_chart(
            "harm_by_template", "Attack success rate by jailbreak template (lower is safer)",
            "attack success rate", by_suite["harm"], "by_template",
        ),
        _group_chart(
            "harm_by_principle", "Harmful answers by principle (share judged harmful)",
            "share judged harmful", by_suite["harm"], "by_principle", overall=False,
        ),
        _group_chart(
            "refusal_by_category", "Over-refusal of benign prompts by category (lower is better)",
            "over-refusal rate", by_suite["refusal"], "by_category",
        ),
        _win_chart(by_suite["helpful"]),
    ]  # fmt: skip
    return [c for c in made if c is not None]


def _error_bar(value: Interval) -> tuple[float, float]:
    """Distances from the rate down to its low end and up to its high end (0 when unknown)."""
    rate, low, high, _ = value
    if rate is None or low is None or high is None:
        return 0.0, 0.0
    return max(0.0, rate - low), max(0.0, high - rate)


def figure(chart: Chart) -> Any:
    """The chart as a matplotlib figure (headless Agg backend); the caller closes it.

    Every bar is labelled with its rate and n, so a bar at 0% is as visible as any (its edge
    is drawn too); the legend sits below the axes, where it can never cover a bar; the judges'
    qualification lines sit under the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(chart.series)
    width = 0.8 / max(1, len(names))
    x = np.arange(len(chart.groups))
    fig, ax = plt.subplots(
        figsize=(max(6.5, 1.1 * len(chart.groups) * max(1, len(names)) / 2 + 2.5), 5.2),
        layout="constrained",
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(names):
        values = [chart.series[name].get(g, (None, None, None, None)) for g in chart.groups]
        heights = [v[0] if v[0] is not None else np.nan for v in values]
        errors = [_error_bar(v) for v in values]
        low, high = [e[0] for e in errors], [e[1] for e in errors]
        colour = colours[i % len(colours)]
        where = x + (i - (len(names) - 1) / 2) * width
        ax.bar(where, heights, width, label=name, yerr=[low, high], capsize=3, color=colour,
               edgecolor=colour, linewidth=1.5, error_kw={"elinewidth": 1})  # fmt: skip
        for xi, value, up in zip(where, values, high, strict=True):
            rate, _, _, n = value
            label = "n/a" if rate is None else f"{rate:.0%}"
            top = 0.0 if rate is None else rate + up
            ax.text(xi, top + 0.02, f"{label}\nn={n if n is not None else '?'}",
                    ha="center", va="bottom", fontsize="x-small")  # fmt: skip
    if chart.reference is not None:
        ax.axhline(chart.reference, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(x, chart.groups, rotation=30, ha="right", fontsize="small")
    ax.set_ylim(-0.03, 1.2)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_ylabel(chart.ylabel)
    wrap = int(fig.get_figwidth() * 15)  # characters a line of small text holds
    caption = "\n".join(textwrap.fill(line, wrap) for line in chart.judges)
    ax.set_title(chart.title + ("\n" + caption if caption else ""), fontsize="medium")
    if caption:  # the judges' lines in a smaller hand than the title
        ax.title.set_fontsize("small")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=min(3, max(1, len(names))), fontsize="small")
    return fig


def draw(chart: Chart, path: Path) -> Path:
    """Write the chart as a PNG."""
    import matplotlib.pyplot as plt

    fig = figure(chart)
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _table(chart: Chart) -> str:
    """The chart's numbers: one row per group, one cell per model (rate [low, high], n)."""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in chart.series)
    rows = []
    for group in chart.groups:
        cells = []
        for name in chart.series:
            rate, low, high, n = chart.series[name].get(group, (None, None, None, None))
            interval = "" if low is None or high is None else f" [{_pct(low)}, {_pct(high)}]"
            count = "" if n is None else f", n={n}"
            cells.append(f"<td>{_pct(rate)}{interval}{count}</td>")
        rows.append(f"<tr><th>{html.escape(group)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>"


def _runs_table(runs: Sequence[EvalRun]) -> str:
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (
                run.suite,
                run.model,
                run.baseline or "",
                run.judge,
                f"{run.constitution_version} ({run.constitution_digest[:12]})",
                run.source,
                run.created_at,
                run.batch,
            )
        )
        + "</tr>"
        for run in runs
    )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("suite", "model", "baseline", "judge", "constitution", "prompts", "when", "batch")
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "td,th{border:1px solid #ccc;padding:0.3em 0.6em;text-align:left}"
    "img{max-width:100%}"
)


@dataclass(frozen=True)
class ReportFiles:
    """What `render_report` wrote."""

    html: Path
    images: list[Path]
    runs: int


def render_report(runs: Sequence[EvalRun], out_dir: Path | str) -> ReportFiles:
    """Write `report.html` and one PNG per chart into `out_dir`."""
    if not runs:
        raise ValueError("no evaluation runs to report on; run `charter eval --suite ...` first")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shown = newest_runs(runs)
    sections = []
    images = []
    for chart in charts(shown):
        png = draw(chart, out / f"{chart.name}.png")
        images.append(png)
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        judges = "".join(f'<p class="judge">{html.escape(line)}</p>' for line in chart.judges)
        sections.append(
            f"<h2>{html.escape(chart.title)}</h2>{judges}"
            f'<img alt="{html.escape(chart.title)}" src="data:image/png;base64,{data}">'
            + _table(chart)
        )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>charter evaluation report</title><style>{STYLE}</style></head><body>"
        "<h1>charter evaluation report</h1>"
        "<p>Rates with their 95% Wilson intervals (win rates: the seeded bootstrap's, never "
        "narrower than the Wilson interval of the wins), each with its n; the newest run of "
        "each suite and model is shown. Every figure here is a judge's: read it with that "
        "judge's agreement with people, given under each chart.</p>"
        f"<h2>Runs</h2>{_runs_table(shown)}{''.join(sections)}</body></html>\n"
    )
    path = out / REPORT_NAME
    path.write_text(page, encoding="utf-8")
    return ReportFiles(html=path, images=images, runs=len(shown))
