"""The review pages over real HTTP (no browser): sessions, CSRF, tenancy, rows, audit."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from charter.judge.agreement import wilson
from charter.judge.qualify import load_pairs
from charter.service.pages.audit import SAMPLE_SIZE
from charter.service.settings import ServiceSettings, owner_of, split_token_entry
from tests.support.generation import qualify_judge
from tests.support.review import (
    PAYLOADS,
    XSS_SCRIPT,
    ReviewWorld,
    csrf_of,
    review_world,
    sign_in,
)
from tests.support.service import TOKEN_A, TOKEN_B

CAREFUL = ("A careful", "Revised", "Here is a careful")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReviewWorld]:
    with review_world(tmp_path_factory.mktemp("review")) as w:
        yield w


@pytest.fixture
def alice(world: ReviewWorld) -> Iterator[httpx.Client]:
    with sign_in(world.base_url, TOKEN_A) as client:
        yield client


def test_token_names_are_split_from_their_tokens_and_never_kept() -> None:
    assert split_token_entry(f"alice={TOKEN_A}") == ("alice", TOKEN_A)
    assert split_token_entry(TOKEN_A) == (None, TOKEN_A)
    assert split_token_entry("YWJjZGVmZ2hpamtsbW5vcA==") == (None, "YWJjZGVmZ2hpamtsbW5vcA==")
    settings = ServiceSettings.from_env({"CHARTER_API_TOKENS": f"alice={TOKEN_A},{TOKEN_B}"})
    assert [t.get_secret_value() for t in settings.tokens] == [TOKEN_A, TOKEN_B]
    assert settings.owner_name(owner_of(TOKEN_A)) == "alice"
    assert settings.owner_name(owner_of(TOKEN_B)).startswith("token ")
    assert TOKEN_A not in repr(settings)


def test_pages_need_a_session_and_the_cookie_is_httponly_strict_and_not_the_token(
    world: ReviewWorld,
) -> None:
    with httpx.Client(base_url=world.base_url) as anonymous:
        for path in (
            "/pages/jobs",
            f"/pages/jobs/{world.job_a}",
            f"/pages/jobs/{world.job_a}/rows",
        ):
            response = anonymous.get(path)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/pages/sign-in")
        refused = anonymous.post("/pages/sign-in", data={"token": "not-a-token-0123456789"})
        assert refused.status_code == 401 and "not one of this service" in refused.text
        signed = anonymous.post("/pages/sign-in", data={"token": TOKEN_A})
        elsewhere = anonymous.post(
            "/pages/sign-in", data={"token": TOKEN_A, "next": "https://evil.example/"}
        )
        assert elsewhere.headers["location"] == "/pages/jobs"  # never off this site
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert TOKEN_A not in cookie and owner_of(TOKEN_A) not in cookie


def test_pages_carry_a_strict_content_security_policy(
    alice: httpx.Client, world: ReviewWorld
) -> None:
    response = alice.get(f"/pages/jobs/{world.job_a}")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["x-frame-options"] == "DENY"


def test_the_api_is_unchanged_by_the_pages(world: ReviewWorld) -> None:
    schema = httpx.get(f"{world.base_url}/openapi.json").json()
    assert not [p for p in schema["paths"] if p.startswith("/pages") or p == "/"]


def test_another_tokens_job_is_invisible(alice: httpx.Client, world: ReviewWorld) -> None:
    assert world.job_b not in alice.get("/pages/jobs").text
    job = f"/pages/jobs/{world.job_b}"
    for path in (job, f"{job}/rows", f"{job}/label", f"{job}/labels.jsonl"):
        response = alice.get(path)
        assert response.status_code == 404, path
        assert "Bob" not in response.text


def test_rows_filter_and_page(alice: httpx.Client, world: ReviewWorld) -> None:
    page = alice.get(f"/pages/jobs/{world.job_a}/rows").text
    total = int(re.search(r"(\d+) rows match", page).group(1))  # type: ignore[union-attr]
    assert total == 10
    # Paging: every row once, in order, 25 a page; here 3 a page via a filter on p_chosen.
    low = alice.get(f"/pages/jobs/{world.job_a}/rows", params={"max_p": 0.1}).text
    assert "0 rows match" in low
    helpful = alice.get(f"/pages/jobs/{world.job_a}/rows", params={"principle": "helpful"}).text
    n_helpful = int(re.search(r"(\d+) rows match", helpful).group(1))  # type: ignore[union-attr]
    assert 0 < n_helpful < total
    revision = alice.get(f"/pages/jobs/{world.job_a}/rows", params={"source": "revision"}).text
    assert "0 rows match" in revision
    kept = alice.get(f"/pages/jobs/{world.job_a}/rows", params={"reason": "kept"}).text
    assert f"{total} rows match" in kept
    bad_filter = alice.get(f"/pages/jobs/{world.job_a}/rows", params={"min_p": "2"})
    assert bad_filter.status_code == 422 and "filter min_p" in bad_filter.text
    bad_cursor = alice.get(f"/pages/jobs/{world.job_a}/rows", params={"after": "garbage"})
    assert bad_cursor.status_code == 422 and "invalid cursor" in bad_cursor.text


def test_paging_walks_every_row_once(alice: httpx.Client, world: ReviewWorld) -> None:
    keys: list[str] = []
    params: dict[str, str] = {"limit": "3"}
    pages = 0
    while True:
        page = alice.get(f"/pages/jobs/{world.job_a}/rows", params=params).text
        keys += re.findall(r"/rows/([0-9a-f]{64})", page)
        pages += 1
        found = re.search(r'href="\?([^"]*after=[^"]+)" id="next-page"', page)
        if not found:
            break
        params = dict(httpx.QueryParams(found.group(1).replace("&amp;", "&")))
    assert pages == 4 and len(keys) == 10 and len(set(keys)) == 10


def test_a_row_shows_verdicts_and_provenance_and_payloads_as_text(
    alice: httpx.Client, world: ReviewWorld
) -> None:
    page = alice.get(f"/pages/jobs/{world.job_a}/rows", params={"source": "comparison"}).text
    keys = re.findall(r"/rows/([0-9a-f]{64})", page)
    texts = [alice.get(f"/pages/jobs/{world.job_a}/rows/{k}").text for k in keys]
    xss = next(t for t in texts if "&lt;script&gt;window.__xss" in t)
    assert XSS_SCRIPT not in xss  # escaped, never raw
    assert 'id="verdicts"' in xss and "openai:scripted" in xss
    for payload in PAYLOADS:
        assert payload not in "".join(texts)


def test_cross_site_and_tokenless_changes_are_refused(
    alice: httpx.Client, world: ReviewWorld
) -> None:
    label_page = alice.get(f"/pages/jobs/{world.job_a}/label").text
    csrf = csrf_of(label_page)
    key = re.search(r'name="key" value="([0-9a-f]{64})"', label_page).group(1)  # type: ignore[union-attr]
    url = f"/pages/jobs/{world.job_a}/label"
    cases = [
        ({"key": key, "choice": "a"}, {}),  # no CSRF token
        ({"key": key, "choice": "a", "csrf": "forged"}, {}),
        ({"key": key, "choice": "a", "csrf": csrf}, {"origin": "http://evil.example"}),
        ({"key": key, "choice": "a", "csrf": csrf}, {"sec-fetch-site": "cross-site"}),
    ]
    for data, headers in cases:
        response = alice.post(url, data=data, headers=headers)
        assert response.status_code == 403, (data, headers)
        assert "Refused" in response.text
    assert f"0 of {min(SAMPLE_SIZE, 10)} labelled" in alice.get(url).text
    with sign_in(world.base_url, TOKEN_B) as bob:  # another session's token is not this one's
        response = bob.post(
            url, data={"key": key, "choice": "a", "csrf": csrf_of(bob.get("/pages/jobs").text)}
        )
        assert response.status_code == 404


def test_label_the_sample_then_agreement_export_and_calibration(
    world: ReviewWorld, tmp_path: Path
) -> None:
    url = f"/pages/jobs/{world.job_a}"
    with sign_in(world.base_url, TOKEN_B) as bob:
        assert bob.get(f"{url}/label").status_code == 404
    with sign_in(world.base_url, TOKEN_A) as alice:
        before = alice.get(url).text
        assert "No decided labels yet" in before
        labels = {}
        for i in range(10):
            page = alice.get(f"{url}/label").text
            if 'id="sample-done"' in page:
                break
            key = re.search(r'name="key" value="([0-9a-f]{64})"', page).group(1)  # type: ignore[union-attr]
            a = re.search(r'id="text-a">(.*?)</pre>', page, re.S).group(1)  # type: ignore[union-attr]
            assert "p_chosen" not in page and "<h2>Chosen</h2>" not in page  # blind
            # The person prefers the careful answer, except on the first pair, where they
            # pick the other one, and the second, where they cannot tell.
            careful = "a" if a.startswith(CAREFUL) else "b"
            choice = {0: "b" if careful == "a" else "a", 1: "tie"}.get(i, careful)
            labels[key] = choice
            done = alice.post(
                f"{url}/label", data={"key": key, "choice": choice, "csrf": csrf_of(page)}
            )
            assert done.status_code == 303
        assert len(labels) == 10
        page = alice.get(url).text
        assert "agrees with people on <strong>8 of 9</strong>" in page
        low, high = wilson(8, 9)
        assert f"{low:.0%}–{high:.0%}" in page
        assert "alice (10)" in page
        exported = alice.get(f"{url}/labels.jsonl")
        path = tmp_path / "labels.jsonl"
        path.write_bytes(exported.content)
        pairs = load_pairs(path)
        assert len(pairs) == 9
        agreeing = sum(1 for p in pairs if (p.a if p.preferred == "a" else p.b).startswith(CAREFUL))
        assert agreeing == 8
        assert {p.a.startswith(CAREFUL) for p in pairs} == {True, False}  # order shuffled
        # Relabelling a pair replaces the person's label rather than adding one.
        first = next(iter(labels))
        csrf = csrf_of(page)
        alice.post(f"{url}/label", data={"key": first, "choice": "tie", "csrf": csrf})
        assert "alice (10)" in alice.get(url).text
        calls = world.server.calls
        fitted = alice.post(f"{url}/calibrate", data={"csrf": csrf})
        assert fitted.status_code == 303, fitted.text
        assert world.server.calls > calls  # the judge answered the labelled pairs
        assert re.search(r"Calibration <code>cal-[0-9a-f]{12}</code>", alice.get(url).text)


def test_progress_json_constitution_page_and_bad_inputs_are_one_line_messages(
    alice: httpx.Client, world: ReviewWorld
) -> None:
    progress = alice.get(f"/pages/jobs/{world.job_a}/progress.json").json()
    assert progress == {
        "state": "done", "waiting_for": "", "total": 10, "done": 10, "failed": 0, "pending": 0,
        "preferences": 10,
    }  # fmt: skip
    same = alice.get("/pages/constitution", params={"a": "current", "b": "current"}).text
    assert "No difference." in same and "harmless" in same
    unknown = alice.get("/pages/constitution", params={"a": "9.9", "b": "current"}).text
    assert re.search(r'id="error">[^<]*9\.9', unknown)
    job = f"/pages/jobs/{world.job_a}"
    bad = [
        alice.get(f"{job}/rows/{'0' * 64}"),
        alice.get("/pages/jobs/job-000000000000"),
    ]
    assert [r.status_code for r in bad] == [404, 404]
    assert "no row" in bad[0].text and "no job job-000000000000 for this token" in bad[1].text
    csrf = csrf_of(alice.get(job).text)
    wrong = alice.post(f"{job}/label", data={"key": "0" * 64, "choice": "a", "csrf": csrf})
    assert wrong.status_code == 422 and "is not in this job&#39;s sample" in wrong.text
    odd = alice.post(f"{job}/label", data={"key": "0" * 64, "choice": "maybe", "csrf": csrf})
    assert odd.status_code == 422 and "choose A, B or can&#39;t tell" in odd.text
    for response in [*bad, wrong, odd]:
        assert "Traceback" not in response.text


def test_calibrating_without_labels_says_why(world: ReviewWorld) -> None:
    with sign_in(world.base_url, TOKEN_B) as bob:
        job = f"/pages/jobs/{world.job_b}"
        response = bob.post(f"{job}/calibrate", data={"csrf": csrf_of(bob.get(job).text)})
    assert response.status_code == 422
    assert re.search(r'id="message">calibration: [^<]*0 labelled pair\(s\)', response.text)


def test_revise_rows_show_the_critique_chain_and_versions_diff(tmp_path: Path) -> None:
    """A revise-mode row's page shows its critique and revision; the constitution page lists
    frozen versions and diffs two of them."""
    from click.testing import CliRunner

    from charter.cli.main import cli
    from charter.service import records
    from charter.service.settings import ServiceSettings
    from charter.store import open_store
    from tests.support.generation import make_world, responder
    from tests.support.scripted_server import ScriptedJudgeServer
    from tests.support.service import running_service

    world = make_world(tmp_path, ["How do I boil an egg?", "How do I tie a knot?"])
    runner = CliRunner()
    store = ["--dir", str(world["principles"]), "--store", str(world["store"])]
    assert runner.invoke(cli, ["constitution", "freeze", *store, "-m", "first"]).exit_code == 0
    helpful = world["principles"] / "helpful.toml"
    helpful.write_text(helpful.read_text().replace("more helpfully", "more usefully"))
    with helpful.open("a") as file:  # the pointwise question, which the page must show
        file.write('score = "Does the response answer what was asked?"\n')
    meta = world["principles"] / "constitution.toml"
    meta.write_text(meta.read_text().replace('version = "1.0"', 'version = "1.1"'))
    assert runner.invoke(cli, ["constitution", "freeze", *store, "-m", "second"]).exit_code == 0
    with ScriptedJudgeServer(responder(["How do I boil an egg?", "How do I tie a knot?"])) as s:
        models = ["--judge", "openai:scripted", "--policy", "openai:scripted"]
        models += ["--judge-base-url", s.base_url, "--policy-base-url", s.base_url]
        result = runner.invoke(
            cli, ["generate", "--prompts", str(world["prompts"]), *store, *models,
                  "--mode", "revise", "--json"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    job_id = json.loads(result.stdout)["job_id"]
    db = open_store(world["store"])
    records.ensure_tables(db)
    records.add_owner(db, job_id, owner_of(TOKEN_A))  # the CLI's job, handed to token A
    db.close()
    settings = ServiceSettings(
        store_path=world["store"],
        principles_dir=world["principles"],
        tokens=(TOKEN_A,),
        preload_judge=False,
    )
    with running_service(settings) as service, sign_in(service.base_url, TOKEN_A) as alice:
        page = alice.get(f"/pages/jobs/{job_id}/rows", params={"source": "revision"}).text
        key = re.findall(r"/rows/([0-9a-f]{64})", page)[0]
        row = alice.get(f"/pages/jobs/{job_id}/rows/{key}").text
        versions = alice.get("/pages/constitution", params={"a": "1.0", "b": "1.1"}).text
    assert "Critique and revision" in row and "The response could be more careful." in row
    # Every question the judge asks is on the page: the score question as written, or the
    # one built from the title when a principle has none (what the embedded judge asks).
    scores = [s.strip() for s in re.findall(r'<td class="score">([^<]*)', versions)]
    assert "Does the response answer what was asked?" in scores
    assert "Does the response follow the principle &#34;harmless&#34;?" in scores
    assert 'id="verdicts"' in row
    assert "first" in versions and "second" in versions
    assert "more helpfully" in versions and "more usefully" in versions


def test_sign_out_ends_the_session_server_side(world: ReviewWorld) -> None:
    with sign_in(world.base_url, TOKEN_A) as alice:
        session = alice.cookies["charter_session"]
        out = alice.post("/pages/sign-out", data={"csrf": csrf_of(alice.get("/pages/jobs").text)})
        assert out.status_code == 303 and out.headers["location"] == "/pages/sign-in"
    with httpx.Client(base_url=world.base_url, cookies={"charter_session": session}) as replay:
        assert replay.get("/pages/jobs").status_code == 303  # the old cookie is worth nothing


def test_an_operator_sees_the_cli_jobs_and_no_other_token_does(tmp_path: Path) -> None:
    """Jobs made with the CLI belong to no token: an operator (CHARTER_OPERATORS names it)
    sees them in the review pages; every other token, as before, sees only its own."""
    from click.testing import CliRunner

    from charter.cli.main import cli
    from charter.service.settings import SettingsError
    from tests.support.generation import make_world, responder
    from tests.support.scripted_server import ScriptedJudgeServer
    from tests.support.service import running_service

    world = make_world(tmp_path, ["How do I boil an egg?", "How do I tie a knot?"])
    store = ["--dir", str(world["principles"]), "--store", str(world["store"])]
    with ScriptedJudgeServer(responder(["How do I boil an egg?", "How do I tie a knot?"])) as s:
        models = ["--judge", "openai:scripted", "--policy", "openai:scripted"]
        models += ["--judge-base-url", s.base_url, "--policy-base-url", s.base_url]
        result = CliRunner().invoke(
            cli, ["generate", "--prompts", str(world["prompts"]), *store, *models, "--json"]
        )
    assert result.exit_code == 0, result.output
    job_id = json.loads(result.stdout)["job_id"]
    env = {"CHARTER_API_TOKENS": f"alice={TOKEN_A},{TOKEN_B}", "CHARTER_OPERATORS": "alice"}
    settings = ServiceSettings.from_env(
        env, store_path=world["store"], principles_dir=world["principles"], preload_judge=False
    )
    assert settings.operators == ("alice",)
    with pytest.raises(SettingsError, match="operators bob: no token is named so"):
        ServiceSettings.from_env({**env, "CHARTER_OPERATORS": "bob"})
    with running_service(settings) as service:
        with sign_in(service.base_url, TOKEN_A) as alice:
            assert job_id in alice.get("/pages/jobs").text
            page = alice.get(f"/pages/jobs/{job_id}")
            assert page.status_code == 200 and job_id in page.text
            assert alice.get(f"/pages/jobs/{job_id}/rows").status_code == 200
        with sign_in(service.base_url, TOKEN_B) as bob:
            assert job_id not in bob.get("/pages/jobs").text
            assert bob.get(f"/pages/jobs/{job_id}").status_code == 404
        with httpx.Client(base_url=service.base_url) as api:  # the API stays per token
            listed = api.get("/v1/jobs", headers={"Authorization": f"Bearer {TOKEN_A}"}).json()
            assert job_id not in json.dumps(listed)
    plain = settings.model_copy(update={"operators": ()})
    with running_service(plain) as service, sign_in(service.base_url, TOKEN_A) as alice:
        assert job_id not in alice.get("/pages/jobs").text
        assert alice.get(f"/pages/jobs/{job_id}").status_code == 404


def test_the_judge_charts_carry_the_judges_qualification(
    alice: httpx.Client, world: ReviewWorld
) -> None:
    """The job page's judge charts say how far that judge was measured to agree with people:
    unqualified until a `charter judge eval` of it is in the service's store. (Last in this
    module: it adds that eval to the shared world's store.)"""
    page = alice.get(f"/pages/jobs/{world.job_a}").text
    line = re.search(r'id="judge-qualification">([^<]*)<', page)
    assert line and "judge openai:scripted: unqualified" in line.group(1), page[:2000]
    qualify_judge(world.store, "openai:scripted", world.server.base_url, world.store.parent
                  / "principles")  # fmt: skip
    page = alice.get(f"/pages/jobs/{world.job_a}").text
    line = re.search(r'id="judge-qualification">([^<]*)<', page)
    assert line and "agreed with people on 75% of 4 decided labelled pairs" in line.group(1)
