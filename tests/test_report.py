"""`charter report`: one self-contained HTML page and PNG charts from stored evaluation runs."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from charter.cli.main import cli
from tests.support.scripted_server import ScriptedJudgeServer
from tests.test_eval_suites import HARM, TEMPLATES, Script, run_eval, write_suite

PNG = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input"}


class Page(HTMLParser):
    """Checks that every element is closed in order, and collects images and table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        for name in ("src", "href"):
            link = values.get(name) or ""
            if link and not link.startswith("data:"):
                self.external.append(link)
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def report(store: Path, out: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli, ["report", "--store", str(store), "--out", str(out), *args], catch_exceptions=False
    )
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Two eval calls in one store: the whole set with a baseline, then harm again."""
    root = tmp_path_factory.mktemp("report")
    store = root / "store.db"
    harm = write_suite(root / "harm.jsonl", HARM)
    batches = []
    with ScriptedJudgeServer(Script()) as server:
        for args in (
            ["--suite", "all", "--baseline", "openai:baseline", "--baseline-base-url",
             server.base_url, "--limit", "3", "--templates", "plain,roleplay"],
            ["--suite", "harm", "--suite-file", str(harm), "--templates", ",".join(TEMPLATES)],
        ):  # fmt: skip
            code, out, err = run_eval(server, store, *args, "--json")
            assert code == 0, err
            batches.append(json.loads(out)["batch"])
    return store, batches


def test_report_is_one_parsable_page_with_embedded_charts(
    store: tuple[Path, list[str]], tmp_path: Path
) -> None:
    out = tmp_path / "report"
    code, stdout, err = report(store[0], out, "--json")
    assert code == 0, err
    written = json.loads(stdout)
    page = Page()
    page.feed(Path(written["html"]).read_text())
    page.close()
    assert page.open == []
    assert page.external == []  # nothing fetched: it opens offline
    names = {Path(p).name for p in written["images"]}
    assert names == {
        "harm_by_template.png", "harm_by_principle.png", "refusal_by_category.png",
        "win_rates.png",
    }  # fmt: skip
    for path in written["images"]:
        data = Path(path).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000
    embedded = [base64.b64decode(src.split(",", 1)[1]) for src in page.images]
    assert len(embedded) == 4 and all(img.startswith(PNG) for img in embedded)
    text = " ".join(page.text)
    for expected in ("openai:policy", "openai:baseline", "openai:policy vs openai:baseline",
                     "roleplay", "leetspeak", "computing", "avoid-harm"):  # fmt: skip
        assert expected in text


def test_report_shows_the_newest_run_of_each_suite_and_model(
    store: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """The second call re-ran harm for the policy on 4 templates: the page shows that run
    (5 of 16 attacks succeeded: 31.2%), and a --batch shows the first call's alone."""
    code, stdout, err = report(store[0], tmp_path / "all", "--json")
    assert code == 0, err
    assert json.loads(stdout)["runs"] == 5  # harm x2 models, refusal x2, helpful
    text = (tmp_path / "all" / "report.html").read_text()
    assert "31.2% [" in text and "leetspeak" in text
    code, stdout, err = report(store[0], tmp_path / "first", "--batch", store[1][0])
    assert code == 0, err
    first = (tmp_path / "first" / "report.html").read_text()
    assert "leetspeak" not in first and "roleplay" in first


def test_report_without_runs_is_a_one_line_error(tmp_path: Path) -> None:
    code, _, err = report(tmp_path / "none.db", tmp_path / "out")
    assert code == 1 and err.strip().count("\n") == 0 and "no store here" in err
    assert not (tmp_path / "none.db").exists()
    (tmp_path / "empty.db").write_bytes(b"")
    code, _, err = report(tmp_path / "empty.db", tmp_path / "out")
    assert code == 1 and "holds no evaluation runs" in err and "Traceback" not in err


def test_report_figures_carry_n_and_the_judges_qualification(
    store: tuple[Path, list[str]], tmp_path: Path
) -> None:
    code, _, err = report(store[0], tmp_path / "r")
    assert code == 0, err
    text = (tmp_path / "r" / "report.html").read_text()
    assert "judge openai:judge: unqualified" in text  # nobody measured the scripted judge
    cells = re.findall(r"<td>(\d+\.\d%[^<]*)</td>", text)
    assert len(cells) > 10 and all(re.search(r"\], n=\d+$", c) for c in cells), cells


def test_chart_bars_at_zero_are_visible_and_the_legend_covers_no_bar(tmp_path: Path) -> None:
    """Each bar is labelled with its rate and n (a 0% bar too), and the legend lies outside
    the axes, overlapping no bar, label or error bar: measured on the drawn figure."""
    from matplotlib.patches import Rectangle

    from charter.evals.report import Chart, draw, figure

    groups = ["overall", "plain", "roleplay", "base64", "leetspeak", "fiction"]
    series = {
        "openai:policy": {g: (0.0, 0.0, 0.49, 4) for g in groups},
        "openai:baseline": {g: (1.0, 0.51, 1.0, 4) for g in groups},
        "a third model with a long name": {g: (0.5, 0.15, 0.85, 4) for g in groups},
    }
    chart = Chart("t", "Attack success", "rate", groups, series,
                  judges=("judge openai:judge: unqualified (...)",))  # fmt: skip
    fig = figure(chart)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        [ax] = fig.axes
        bars = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert len(bars) == len(groups) * len(series)
        labels = [t.get_text() for t in ax.texts]
        assert labels.count("0%\nn=4") == len(groups)  # every zero bar says so
        assert all(label.endswith("n=4") for label in labels) and len(labels) == len(bars)
        legend = fig.legends[0].get_window_extent(renderer)
        drawn = [b.get_window_extent(renderer) for b in bars]
        drawn += [t.get_window_extent(renderer) for t in ax.texts]
        assert not any(legend.overlaps(box) for box in drawn)
        assert not legend.overlaps(ax.get_window_extent(renderer))
        assert "unqualified" in ax.get_title()
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    assert draw(chart, tmp_path / "t.png").read_bytes().startswith(PNG)
