"""Charts as inline SVG, drawn on the server: no script, no CDN, no image request.

Every text in a chart goes through `escape`, and SVG presentation attributes (never `style`)
carry the colours, so the pages' Content-Security-Policy needs no inline-style exception.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

from charter.judge.calibration import ReliabilityBin
from charter.judge.conflicts import ConflictReport

from .judge_stats import PrincipleStats

W, H, PAD = 420, 200, 32
INK, BAR, BAR2, GRID, HOT = "#222", "#3b6ea8", "#d08a2c", "#ccc", "#b03a2e"
CHAR_W = 7.0
"""An upper bound on one character's width at font-size 11 in a sans-serif font."""


def _svg(body: list[str], title: str, height: int = H, width: int = W) -> Markup:
    return Markup(
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{"".join(body)}</svg>'
    )


def _text(x: float, y: float, text: str, anchor: str = "middle", size: int = 11) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
        f'fill="{INK}">{escape(text)}</text>'
    )


def p_chosen_histogram(counts: Sequence[int]) -> Markup:
    """Bars of how many rows have p_chosen in each equal-width bin of [0, 1]."""
    top = max(counts) if counts and max(counts) else 1
    inner_w, inner_h = W - 2 * PAD, H - 2 * PAD
    width = inner_w / max(1, len(counts))
    body = [f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="{INK}"/>']
    for i, n in enumerate(counts):
        h = inner_h * n / top
        x = PAD + i * width
        body.append(
            f'<rect x="{x + 1:.1f}" y="{H - PAD - h:.1f}" width="{width - 2:.1f}" '
            f'height="{h:.1f}" fill="{BAR}"><title>{n} rows</title></rect>'
        )
    for tick in (0.0, 0.5, 1.0):
        body.append(_text(PAD + tick * inner_w, H - PAD + 14, f"{tick:g}"))
    body.append(_text(PAD, PAD - 8, f"max {top} rows per bin", anchor="start"))
    body.append(_text(W / 2, H - 4, "p_chosen"))
    return _svg(body, "Distribution of p_chosen")


def principle_bars(stats: Sequence[PrincipleStats]) -> Markup:
    """Per principle: position consistency (swap tests agreeing) and agreement with the
    comparison's overall verdict, each as a bar on [0, 1], labelled with its verdicts' n."""
    row_h = 34
    height = PAD + row_h * max(1, len(stats)) + 24
    # Room for the longest label, never clipped: ids run to 64 characters, and a fixed
    # column cut "no-needless-refusal" to "o-needless-refusal".
    labels = [f"{s.principle} (n={s.verdicts})" for s in stats]
    longest = max((len(label) for label in labels), default=0)
    label_w = max(110, int(longest * CHAR_W) + 12)
    inner_w = W - 110 - PAD
    width = label_w + inner_w + PAD
    body = [
        f'<rect x="{label_w}" y="6" width="10" height="10" fill="{BAR}"/>',
        _text(label_w + 14, 15, "position consistency", anchor="start"),
        f'<rect x="{label_w + 150}" y="6" width="10" height="10" fill="{BAR2}"/>',
        _text(label_w + 164, 15, "agrees with overall verdict", anchor="start"),
    ]
    for i, s in enumerate(stats):
        y = PAD + i * row_h
        body.append(_text(label_w - 6, y + 16, labels[i], anchor="end"))
        for j, (value, colour) in enumerate(((s.consistency, BAR), (s.agreement, BAR2))):
            yy = y + j * 13
            if value is None:
                body.append(_text(label_w + 4, yy + 10, "n/a", anchor="start", size=10))
                continue
            body.append(
                f'<rect x="{label_w}" y="{yy}" width="{inner_w * value:.1f}" height="11" '
                f'fill="{colour}"/>'
            )
            body.append(_text(label_w + inner_w * value + 4, yy + 10, f"{value:.0%}", "start", 10))
    body.append(
        f'<line x1="{label_w}" y1="{PAD - 4}" x2="{label_w}" y2="{height - 20}" stroke="{INK}"/>'
    )
    return _svg(body, "Position consistency and agreement per principle", height, width)


def reliability_diagram(bins: Sequence[ReliabilityBin]) -> Markup:
    """Mean p_chosen against how often people preferred the chosen text, per bin; points on
    the diagonal are calibrated. A point's area grows with its bin's count."""
    size = H - 2 * PAD
    x0, y0 = (W - size) / 2, PAD
    body = [
        f'<rect x="{x0}" y="{y0}" width="{size}" height="{size}" fill="none" stroke="{GRID}"/>',
        f'<line x1="{x0}" y1="{y0 + size}" x2="{x0 + size}" y2="{y0}" stroke="{GRID}" '
        'stroke-dasharray="4 3"/>',
        _text(x0 + size / 2, y0 + size + 16, "mean p_chosen"),
        _text(x0 - 6, y0 + size / 2, "people agree", anchor="end"),
        _text(x0, y0 + size + 16, "0", anchor="middle"),
        _text(x0 + size, y0 + size + 16, "1", anchor="middle"),
    ]
    top = max((b.count for b in bins), default=1) or 1
    for b in bins:
        if b.mean_p is None or b.frac_a_preferred is None:
            continue
        cx, cy = x0 + b.mean_p * size, y0 + (1 - b.frac_a_preferred) * size
        r = 3 + 6 * (b.count / top) ** 0.5
        body.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" fill="{BAR}" fill-opacity="0.8">'
            f"<title>{b.count} pairs: mean p {b.mean_p:.2f}, people agree "
            f"{b.frac_a_preferred:.0%}</title></circle>"
        )
    return _svg(body, "Reliability of p_chosen against the people's labels")


def conflict_matrix(report: ConflictReport, link: Callable[[str, str], str]) -> Markup:
    """Principle x principle: each cell is how often the two were confident and opposite over
    the comparisons both voted on ("conflicts/shared"), darker the higher the rate, and links
    to those rows (`link(first, second)`). Rows are numbered; columns carry the numbers."""
    names = report.principles
    cell, label_w, top = 44, 150, 40
    width = label_w + cell * max(1, len(names)) + 8
    height = top + cell * max(1, len(names)) + 8
    body = [_text(label_w + cell * i + cell / 2, top - 10, str(i + 1)) for i in range(len(names))]
    for i, row in enumerate(names):
        y = top + i * cell
        body.append(_text(label_w - 6, y + cell / 2 + 4, f"{i + 1}. {row}", anchor="end"))
        for j, col in enumerate(names):
            x = label_w + j * cell
            box = f'x="{x + 1}" y="{y + 1}" width="{cell - 2}" height="{cell - 2}"'
            if i == j:
                body.append(f'<rect {box} fill="{GRID}"/>')
                continue
            pair = report.pair(row, col)
            if pair is None:
                body.append(
                    f'<rect {box} fill="none" stroke="{GRID}"><title>{escape(row)} and '
                    f"{escape(col)}: fewer than {report.settings.min_shared} shared "
                    "comparisons</title></rect>"
                )
                continue
            rate = pair.rate or 0.0
            label = f"{pair.conflicts}/{pair.shared}"
            tip = (
                f"{row} and {col}: both confident and opposite in {pair.conflicts} of "
                f"{pair.shared} shared comparisons"
            )
            ink = "#fff" if rate > 0.5 else INK
            body.append(
                f'<a class="conflict-cell" href="{escape(link(row, col))}">'
                f"<title>{escape(tip)}</title>"
                f'<rect {box} fill="{HOT}" fill-opacity="{0.08 + 0.92 * rate:.2f}" '
                f'stroke="{GRID}"/>'
                f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + 4:.1f}" font-size="10" '
                f'text-anchor="middle" fill="{ink}">{escape(label)}</text></a>'
            )
    return _svg(body, "Conflicts between principles", height, width)
