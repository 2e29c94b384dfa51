"""The constitution author's workbench: conflicts between principles and each principle's
agreement with people, against hand-computed tables, over the scripted judge on loopback."""

from __future__ import annotations

import html
import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import NormalDist

import pytest
from click.testing import CliRunner

from charter.cli.main import cli
from charter.judge.agreement import AgreementSettings, principle_agreement, wilson
from charter.judge.conflicts import ConflictSettings, Votes, find_conflicts
from tests.support.generation import make_world, responder
from tests.support.review import csrf_of, sign_in
from tests.support.scripted_server import ScriptedJudgeServer
from tests.support.service import TOKEN_A, TOKEN_B
from tests.support.workbench import (
    HAND_ROWS,
    HAND_TABLE,
    WorkService,
    edit_harmless,
    principled_judge,
    work_items,
    work_service,
    write_work_world,
    x_text,
    y_text,
)


def invoke(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def generate(world: dict[str, Path], server: ScriptedJudgeServer, *extra: str) -> dict:
    args = [
        "generate",
        "--prompts", str(world["prompts"]),
        "--dir", str(world["principles"]),
        "--store", str(world["store"]),
        "--judge", "openai:scripted",
        "--judge-base-url", server.base_url,
        "--protocol", "pairwise",
        "--json",
        *extra,
    ]  # fmt: skip
    code, out, err = invoke(args)
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], str]:
    world = write_work_world(tmp_path_factory.mktemp("workbench"))
    with ScriptedJudgeServer(principled_judge()) as server:
        summary = generate(world, server)
    return world, summary["job_id"]


def test_conflicts_match_the_hand_computed_table(work: tuple[dict[str, Path], str]) -> None:
    world, job = work
    code, out, err = invoke(
        ["jobs", "conflicts", job, "--store", str(world["store"]), "--json", "--min-shared", "1"]
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["comparisons"] == 7 and report["principles"] == ["harmless", "helpful", "honest"]
    table = {(p["first"], p["second"]): p["conflicts"] for p in report["pairs"]}
    assert table == HAND_TABLE
    assert all(p["shared"] == 7 for p in report["pairs"])
    rows = {(p["first"], p["second"]): [r["position"] for r in p["rows"]] for p in report["pairs"]}
    assert rows == HAND_ROWS
    # Most conflicting first; each row names the exported row it made and both verdicts.
    assert (report["pairs"][0]["first"], report["pairs"][0]["second"]) == ("harmless", "honest")
    first = report["pairs"][0]["rows"][0]
    assert first["a"] == x_text(0) and first["b"] == y_text(0) and first["winner"] == "a"
    assert first["p_first"] == pytest.approx(0.1) and first["p_second"] == pytest.approx(0.9)
    assert all(len(r["row_key"]) == 64 for p in report["pairs"] for r in p["rows"])
    assert report["most_dissenting"] == "harmless"
    dissent = {d["principle_id"]: (d["against"], d["voted"]) for d in report["dissent"]}
    assert dissent == {"harmless": (4, 7), "honest": (1, 7), "helpful": (0, 7)}


def test_conflicts_text_report_min_shared_margin_and_errors(
    work: tuple[dict[str, Path], str],
) -> None:
    world, job = work
    store = ["--store", str(world["store"])]
    code, out, _ = invoke(["jobs", "conflicts", job[:10], *store, "--min-shared", "1"])
    assert code == 0
    assert "harmless vs honest: 5 of 7 shared (71%)" in out
    assert "most often against the overall verdict: harmless" in out
    # Pairs sharing fewer comparisons than --min-shared are left out.
    code, out, _ = invoke(["jobs", "conflicts", job, *store, "--min-shared", "8", "--json"])
    assert code == 0 and json.loads(out)["pairs"] == []
    # A margin no verdict reaches (0.9 is 0.4 from a coin flip) finds no conflict.
    code, out, _ = invoke(["jobs", "conflicts", job, *store, "--margin", "0.45", "--json"])
    assert all(p["conflicts"] == 0 for p in json.loads(out)["pairs"])
    assert json.loads(out)["most_dissenting"] is None
    code, _, err = invoke(["jobs", "conflicts", "job-nope", *store])
    assert code == 1 and err.strip() == (
        "Error: no job 'job-nope' in this store (see 'charter jobs list')"
    )
    code, _, err = invoke(["jobs", "conflicts", job, *store, "--margin", "0.7"])
    assert code == 2 and "--margin" in err


def test_find_conflicts_by_hand() -> None:
    """Confident means |p - 0.5| >= margin; a principle that did not vote shares nothing."""
    votes = [
        Votes(position=0, a="x", b="y", winner="a", p_a=0.6, votes={"p": 0.8, "q": 0.3}),
        Votes(position=1, a="x", b="y", winner="b", p_a=0.4, votes={"p": 0.75, "q": 0.2}),
        Votes(position=2, a="x", b="y", winner="a", p_a=0.7, votes={"p": 0.9, "r": 0.1}),
        Votes(position=3, a="x", b="y", winner="tie", p_a=0.5, votes={"p": 0.6, "q": 0.1}),
    ]
    report = find_conflicts(votes, ConflictSettings(margin=0.2, min_shared=1))
    pq = report.pair("q", "p")
    assert pq is not None and (pq.shared, pq.conflicts) == (3, 2)
    assert [r.position for r in pq.rows] == [0, 1]  # 0.6 is not confident at 0.2
    pr = report.pair("p", "r")
    assert pr is not None and (pr.shared, pr.conflicts) == (1, 1)
    assert report.pair("q", "r") is None
    # Against the overall winner, confidently: p at 1 (0.75 vs b), q at 0 (0.3 vs a)? No:
    # 0.3 is 0.2 from a coin flip, so it is confident; r at 2.
    dissent = {d.principle_id: (d.against, d.voted) for d in report.dissent}
    assert dissent == {"p": (1, 3), "q": (1, 2), "r": (1, 1)}
    assert report.most_dissenting == "r"
    assert find_conflicts(votes, ConflictSettings(margin=0.2, min_shared=2)).pair("p", "r") is None


def _binomial_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def _clopper_pearson(k: int, n: int) -> tuple[float, float]:
    """The exact interval from binomial quantiles, by bisection on the binomial CDF."""

    def solve(target: float, count: int) -> float:
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _binomial_cdf(count, n, mid) > target else (lo, mid)
        return (lo + hi) / 2

    low = 0.0 if k == 0 else solve(0.975, k - 1)
    high = 1.0 if k == n else solve(0.025, k)
    return low, high


def test_wilson_matches_binomial_quantiles() -> None:
    """At each Wilson bound the standardised count is exactly the normal quantile z (the
    score test's acceptance edge), and the interval lies within the exact (Clopper-Pearson)
    interval computed from binomial quantiles, loosened by its known small-n slack."""
    z = NormalDist().inv_cdf(0.975)
    for k, n in [(8, 9), (0, 5), (5, 5), (30, 50), (3, 10), (12, 16)]:
        interval = wilson(k, n)
        assert interval is not None
        low, high = interval
        for bound in (low, high):
            if 0 < bound < 1:
                score = abs(k - n * bound) / (n * bound * (1 - bound)) ** 0.5
                assert score == pytest.approx(z, rel=1e-6)
        exact_low, exact_high = _clopper_pearson(k, n)
        assert exact_low - 0.02 <= low <= high <= exact_high + 0.02
        assert exact_low <= high and low <= exact_high
    assert wilson(0, 0) is None


def test_principle_agreement_from_labelled_votes() -> None:
    labelled = (
        [("a", {"p": 0.9, "q": 0.1, "r": 0.52})] * 12
        + [("b", {"p": 0.9, "q": 0.2, "r": None})] * 3
        + [("a", {"p": 0.2, "q": None})]
    )
    rows = principle_agreement(labelled, 0.05, AgreementSettings(min_decided=10))  # type: ignore[arg-type]
    assert [r.principle_id for r in rows] == ["q", "p", "r"]  # least agreeing first
    q, p, r = rows
    assert (q.voted, q.decided, q.agreed) == (15, 15, 3)
    assert (p.voted, p.decided, p.agreed) == (16, 16, 12)
    assert p.interval == wilson(12, 16) and not p.too_few
    assert (r.voted, r.decided, r.agreement, r.too_few) == (12, 0, None, True)
    few = principle_agreement(labelled[12:], 0.05, AgreementSettings(min_decided=10))  # type: ignore[arg-type]
    assert all(a.too_few for a in few)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkService]:
    with work_service(tmp_path_factory.mktemp("workbench-service")) as found:
        yield found


def test_job_page_draws_the_matrix_and_its_cells_open_the_right_rows(
    service: WorkService,
) -> None:
    url = f"/pages/jobs/{service.job_a}"
    with sign_in(service.base_url, TOKEN_A) as alice:
        page = alice.get(url).text
        svg = page[page.index('<svg class="chart" role="img" viewBox') :]
        assert "Conflicts between principles" in page
        cells = dict(
            re.findall(r'<a class="conflict-cell" href="([^"]+)"><title>([^<]+)</title>', page)
        )
        assert len(cells) == 6  # 3 principles: every ordered pair off the diagonal
        assert "<svg" in svg and "<script" not in svg
        assert re.search(r"most-dissenting.*<strong>harmless</strong>.*4 of the 7", page, re.S)
        for (first, second), positions in HAND_ROWS.items():
            for a, b in ((first, second), (second, first)):
                link = html.unescape(
                    next(href for href, tip in cells.items() if tip.startswith(f"{a} and {b}:"))
                )
                assert f"first={a}&second={b}" in link
                rows = alice.get(link)
                assert rows.status_code == 200
                shown = [
                    int(n) for n in re.findall(r'<tr class="conflict-row">\s*<td>(\d+)', rows.text)
                ]
                assert [int(n) for n in shown] == positions
                assert f"<strong>{HAND_TABLE[(first, second)]}</strong> of 7" in rows.text
                keys = re.findall(r"/rows/([0-9a-f]{64})", rows.text)
                assert len(keys) == len(positions)
                row = alice.get(f"{url}/rows/{keys[0]}").text
                assert x_text(positions[0]) in row  # the row the cell named
        bad = alice.get(f"{url}/conflicts", params={"first": "<x>", "second": "honest"})
        assert bad.status_code == 422
    with sign_in(service.base_url, TOKEN_B) as bob:
        assert bob.get(f"{url}/conflicts?first=harmless&second=honest").status_code == 404
        assert bob.get(url).status_code == 404
        assert service.job_a not in bob.get("/pages/jobs").text


def test_per_principle_agreement_on_the_job_page(service: WorkService) -> None:
    """alice prefers X on every pair: helpful agrees 7 of 7, honest 6, harmless 3 (least
    first); 7 decided labels are too few to tell for each."""
    url = f"/pages/jobs/{service.job_a}"
    with sign_in(service.base_url, TOKEN_A) as alice:
        for _ in range(10):
            page = alice.get(f"{url}/label").text
            if 'id="sample-done"' in page:
                break
            key = re.search(r'name="key" value="([0-9a-f]{64})"', page).group(1)  # type: ignore[union-attr]
            a = re.search(r'id="text-a">(.*?)</pre>', page, re.S).group(1)  # type: ignore[union-attr]
            choice = "a" if a.startswith("Answer X") else "b"
            posted = alice.post(
                f"{url}/label", data={"key": key, "choice": choice, "csrf": csrf_of(page)}
            )
            assert posted.status_code == 303
        page = alice.get(url).text
    table = page[page.index('id="principle-agreement"') :]
    found = re.findall(r'<tr class="principle-agreement"><td>(\w+)</td>\s*<td>([^<]+)</td>', table)
    assert found == [
        ("harmless", "too few to tell (3 of 7)"),
        ("honest", "too few to tell (6 of 7)"),
        ("helpful", "too few to tell (7 of 7)"),
    ]
    low, high = wilson(3, 7)  # type: ignore[misc]
    assert f"{low:.0%}–{high:.0%}" in table


def test_judge_eval_by_principle_from_a_pairs_file(tmp_path: Path) -> None:
    """The same table as labelled pairs (people prefer X everywhere, once Y): each principle's
    own agreement, least first, with its Wilson interval and count."""
    world = write_work_world(tmp_path)
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": item["prompt"], "a": x_text(i), "b": y_text(i), "preferred": "a"}
        for i, item in enumerate(work_items())
    ]
    rows[6]["preferred"] = "b"  # the person sides with honest on prompt 6
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ScriptedJudgeServer(principled_judge()) as server:
        args = ["judge", "eval", "--pairs", str(pairs), "--dir", str(world["principles"]),
                "--store", str(tmp_path / "s.db"), "--judge", "openai:scripted",
                "--judge-base-url", server.base_url, "--protocol", "pairwise",
                "--principles", "3", "--by-principle", "--min-decided", "5"]  # fmt: skip
        code, out, err = invoke([*args, "--json"])
        assert code == 0, err
        text_code, text, _ = invoke(args)
        _, few, _ = invoke([*args[:-2], "--min-decided", "8"])
    assert text_code == 0
    found = json.loads(out)["by_principle"][0]["principles"]
    assert [(a["principle_id"], a["agreed"], a["decided"]) for a in found] == [
        ("harmless", 2, 7),  # prefers Y on 0-3 (people: X), X on 4-6 (people: Y on 6)
        ("helpful", 6, 7),
        ("honest", 7, 7),
    ]
    assert found[0]["interval"] == list(wilson(2, 7))  # type: ignore[arg-type]
    assert not any(a["too_few"] for a in found)
    low, high = wilson(2, 7)  # type: ignore[misc]
    assert "harmless" in text and f"[{low:.1%}, {high:.1%}]  2 of 7 decided (7 voted)" in text
    assert "too few to tell: 2 of 7 decided" in few


def _impact(world: dict[str, Path], job: str, directory: Path, server: ScriptedJudgeServer,
            *extra: str) -> dict:  # fmt: skip
    args = ["constitution", "impact", "--job", job, "--dir", str(directory),
            "--store", str(world["store"]), "--judge-base-url", server.base_url,
            "--json", *extra]  # fmt: skip
    code, out, err = invoke(args)
    assert code == 0, err
    return json.loads(out)


def test_impact_asks_only_what_the_edit_touched_then_rerun_pays_the_rest(tmp_path: Path) -> None:
    world = write_work_world(tmp_path)
    edited = edit_harmless(world["principles"], tmp_path / "edited")
    with ScriptedJudgeServer(principled_judge()) as server:
        job = generate(world, server)["job_id"]
        # An edit touching nothing: no call, nothing flipped.
        before = server.calls
        same = _impact(world, job, world["principles"], server)
        assert server.calls == before
        assert (same["touched"], same["calls_made"], same["flipped"]) == ([], 0, 0)
        assert same["calls_for_rest"] == 0 and same["entering"] == same["leaving"] == 0
        # Three of seven prompts: harmless was asked in both orders for each.
        preview = _impact(world, job, edited, server, "--sample", "3", "--seed", "1")
        assert preview["touched"] == ["harmless"] and preview["sampled_prompts"] == 3
        assert server.calls - before == preview["calls_made"] == 3 * 2
        assert preview["touched_in_sample"] == 3 * 2
        assert preview["calls_for_rest"] == 4 * 2 and preview["calls_exact"]
        # The rest: the full preview now asks only the four unsampled prompts' calls.
        before = server.calls
        full = _impact(world, job, edited, server)
        assert server.calls - before == full["calls_made"] == 4 * 2
        assert full["calls_for_rest"] == 0
        assert (full["comparisons"], full["flipped"]) == (7, 1)
        [flip] = full["flipped_rows"]
        assert (flip["position"], flip["before"], flip["after"]) == (6, "a", "b")
        assert flip["a"] == x_text(6) and flip["b"] == y_text(6)
        assert flip["p_a_after"] == pytest.approx((0.9 + 0.1 + 0.1) / 3)
        # Rows: prompt 6 leaves as X-over-Y and enters as Y-over-X; X's p_chosen drops from
        # 0.9 to 0.633 at 4 and 5, and from 0.633 to 0.367 at 6; 0-3 do not move.
        assert (full["entering"], full["leaving"]) == (1, 1)
        delta = full["delta_p_chosen"]
        assert delta["rows"] == 7 and delta["minimum"] == pytest.approx(-0.8 / 3)
        assert delta["histogram"] == [0, 0, 0, 3, 0, 4, 0, 0, 0, 0]
        assert full["flip_interval"] == list(wilson(1, 7))  # type: ignore[arg-type]
        # Applying it: every call is in the store now, so the re-run asks nothing.
        before = server.calls
        code, out, err = invoke(["jobs", "rerun", job, "--dir", str(edited),
                                 "--store", str(world["store"]),
                                 "--judge-base-url", server.base_url, "--json"])  # fmt: skip
        assert code == 0, err
        assert server.calls == before
        rerun = json.loads(out)
        assert rerun["calls"]["judge"]["made"] == 0 and rerun["preferences"] == 7
    code, out, err = invoke(
        ["jobs", "diff", job, rerun["job_id"], "--store", str(world["store"]), "--json"]
    )
    assert code == 0, err
    diff = json.loads(out)
    # 0-5 keep their side, 4 and 5 at a new p_chosen (0.9 -> 0.633); 6 flips.
    assert (diff["same"], diff["changed"], diff["flipped"], diff["gone"], diff["new"]) == (
        6, 2, 1, 0, 0
    )  # fmt: skip
    [flipped] = [r for r in diff["rows"] if r["change"] == "flipped"]
    assert flipped["position"] == 6 and flipped["chosen_after"] == y_text(6)
    code, text, _ = invoke(["jobs", "diff", job, rerun["job_id"], "--store", str(world["store"])])
    assert "1 flipped" in text and "flipped at prompt 6" in text


def test_rerun_pays_exactly_the_touched_calls_a_preview_left(tmp_path: Path) -> None:
    world = write_work_world(tmp_path)
    edited = edit_harmless(world["principles"], tmp_path / "edited")
    with ScriptedJudgeServer(principled_judge()) as server:
        job = generate(world, server)["job_id"]
        preview = _impact(world, job, edited, server, "--sample", "2")
        before = server.calls
        code, out, err = invoke(["jobs", "rerun", job, "--dir", str(edited),
                                 "--store", str(world["store"]),
                                 "--judge-base-url", server.base_url])  # fmt: skip
        assert code == 0, err
        assert server.calls - before == preview["calls_for_rest"] == 5 * 2
        assert "1 flipped" in out and "made job-" in err


def test_impact_and_rerun_errors_are_one_line(tmp_path: Path) -> None:
    world = write_work_world(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "constitution.toml").write_text('name = "x"\nversion = "1.0"\n')
    (broken / "bad.toml").write_text("id = [unclosed\n")
    with ScriptedJudgeServer(principled_judge()) as server:
        job = generate(world, server)["job_id"]
        store = ["--store", str(world["store"])]
        for args, expected in [
            (["constitution", "impact", "--job", "job-nope", "--dir", str(world["principles"])],
             "no job 'job-nope'"),
            (["constitution", "impact", "--job", job, "--dir", str(tmp_path / "missing")],
             "missing"),
            (["constitution", "impact", "--job", job, "--dir", str(broken)], "bad.toml"),
            (["jobs", "rerun", job, "--dir", str(world["principles"])], "unchanged"),
            (["jobs", "rerun", "job-nope", "--dir", str(broken)], "bad.toml"),
            (["jobs", "diff", job, "job-nope"], "no job 'job-nope'"),
        ]:  # fmt: skip
            calls = server.calls
            model = [] if args[1] == "diff" else ["--judge-base-url", server.base_url]
            code, out, err = invoke([*args, *store, *model])
            assert code == 1, (args, out, err)
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error:") and expected in lines[0], err
            assert server.calls == calls


def test_constitution_diff_previews_an_edit_on_a_job_in_the_background(
    service: WorkService,
) -> None:
    world = service.world
    edited = edit_harmless(world["principles"], world["tmp"] / "edited-1.1", version="1.1")
    code, _, err = invoke(["constitution", "freeze", "--dir", str(edited),
                           "--store", str(world["store"])])  # fmt: skip
    assert code == 0, err
    with sign_in(service.base_url, TOKEN_A) as alice:
        page = alice.get("/pages/constitution", params={"a": "1.0", "b": "1.1"}).text
        form = page[page.index('id="impact-form"') :]
        assert f'<option value="{service.job_a}">' in form and service.job_b not in form
        before = service.server.calls
        started = alice.post(
            "/pages/constitution/impact",
            data={"csrf": csrf_of(page), "job": service.job_a, "b": "1.1", "sample": "7"},
        )
        assert started.status_code == 303, started.text
        url = started.headers["location"]
        assert re.fullmatch(r"/pages/impact/[0-9a-f]{16}", url)
        deadline = time.monotonic() + 60
        while alice.get(f"{url}/progress.json").json()["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        progress = alice.get(f"{url}/progress.json").json()
        assert progress == {"state": "done", "total": 7, "done": 7}
        assert service.server.calls - before == 7 * 2  # harmless, both orders, each prompt
        report = alice.get(url).text
        assert 'id="impact-touched">harmless<' in report
        assert "1 of 7 comparisons" in report
        shown = re.findall(r'<tr class="flipped-row"><td>(\d+)</td>', report)
        assert shown == ["6"]
        assert "14 made for this preview" in report
        bad = alice.post(
            "/pages/constitution/impact",
            data={"csrf": csrf_of(page), "job": service.job_a, "b": "1.1", "sample": "0"},
        )
        assert bad.status_code == 422 and "preview sample:" in bad.text
    with sign_in(service.base_url, TOKEN_B) as bob:
        assert bob.get(url).status_code == 404
        assert bob.get(f"{url}/progress.json").status_code == 404
        page = bob.get("/pages/constitution", params={"a": "1.0", "b": "1.1"}).text
        refused = bob.post(
            "/pages/constitution/impact",
            data={"csrf": csrf_of(page), "job": service.job_a, "b": "1.1"},
        )
        assert refused.status_code == 404


def test_impact_on_sampled_candidates_asks_the_policy_nothing(tmp_path: Path) -> None:
    """A job whose candidates the policy sampled: the preview takes them (and how each ended)
    from the store, and asks only the edited principle's questions."""
    world = make_world(tmp_path)
    edited = tmp_path / "edited"
    edited.mkdir()
    for path in world["principles"].iterdir():
        (edited / path.name).write_text(path.read_text().replace("more honest", "more truthful"))
    with ScriptedJudgeServer(responder()) as server:
        code, out, err = invoke(
            [
                "generate",
                "--prompts",
                str(world["prompts"]),
                "--dir",
                str(world["principles"]),
                "--store",
                str(world["store"]),
                "--judge",
                "openai:scripted",
                "--policy",
                "openai:scripted",
                "--judge-base-url",
                server.base_url,
                "--policy-base-url",
                server.base_url,
                "--json",
            ]
        )
        assert code == 0, err
        job = json.loads(out)["job_id"]
        before = len(server.requests)
        report = _impact(world, job, edited, server)
        asked = server.requests[before:]
    assert report["touched"] == ["honest"]
    assert len(asked) == report["calls_made"] == report["touched_in_sample"] > 0
    assert all(body.get("max_tokens", 0) <= 4 for body in asked)  # verdicts only
    assert report["comparisons"] == report["sampled_prompts"] == 8 and report["flipped"] == 0
