"""The review pages in headless Chromium (Debian's, through its chromedriver): sign in,
browse, filter, open a row, label a sample, see agreement update, XSS payloads inert,
another token's job invisible, a cross-site POST refused. Screenshots go to
$CHARTER_SCREENSHOTS (default: the test's temporary directory)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from charter.client import CharterClient
from tests.support.browser import headless_chromium, screenshot
from tests.support.generation import PROMPTS, responder, write_constitution
from tests.support.review import (
    PAYLOADS,
    XSS_PROMPTS,
    ReviewWorld,
    review_world,
    xss_chosen,
    xss_rejected,
)
from tests.support.scripted_server import RecordedRequest, ScriptedJudgeServer
from tests.support.service import TOKEN_A, ServiceProcess

pytestmark = pytest.mark.browser
CAREFUL = ("A careful", "Revised", "Here is a careful")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReviewWorld]:
    with review_world(tmp_path_factory.mktemp("review-browser")) as w:
        yield w


@pytest.fixture(scope="module")
def chrome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    driver = headless_chromium(tmp_path_factory.mktemp("downloads"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def _sign_in(chrome: WebDriver, world: ReviewWorld, token: str = TOKEN_A) -> None:
    chrome.delete_all_cookies()
    chrome.get(f"{world.base_url}/pages/jobs")
    assert "/pages/sign-in" in chrome.current_url
    chrome.find_element(By.ID, "token").send_keys(token)
    _click_and_wait(chrome, chrome.find_element(By.ID, "sign-in"))
    assert chrome.current_url == f"{world.base_url}/pages/jobs"


def _click_and_wait(chrome: WebDriver, element: WebElement) -> None:
    """Click a link or button and wait until the page it loads has replaced this one (the
    mark set on this page's window is gone, and the new one has loaded)."""
    chrome.execute_script("window.__leaving = true")
    element.click()
    WebDriverWait(chrome, 10).until(
        lambda c: c.execute_script(
            "return window.__leaving === undefined && document.readyState === 'complete'"
        )
    )


def _assert_no_script_ran(chrome: WebDriver) -> None:
    with pytest.raises(NoAlertPresentException):
        chrome.switch_to.alert.text  # noqa: B018 - reading it is the check
    assert chrome.execute_script("return typeof window.__xss") == "undefined"


def test_sign_in_browse_filter_and_open_a_row(
    chrome: WebDriver, world: ReviewWorld, shots: Path
) -> None:
    _sign_in(chrome, world)
    assert chrome.find_element(By.ID, "signed-in-as").text == "alice"
    links = [a.text for a in chrome.find_elements(By.CLASS_NAME, "job-link")]
    assert links == [world.job_a]  # bob's job is not listed
    _click_and_wait(chrome, chrome.find_element(By.LINK_TEXT, world.job_a))
    assert chrome.find_element(By.ID, "job-state").text == "done"
    assert chrome.find_element(By.ID, "job-rows").text == "10"
    assert len(chrome.find_elements(By.CSS_SELECTOR, "svg.chart")) >= 2
    screenshot(chrome, "review-job", shots)
    _click_and_wait(chrome, chrome.find_element(By.ID, "browse-rows"))
    assert chrome.find_element(By.ID, "matched").text.startswith("10 rows match")
    Select(chrome.find_element(By.ID, "f-principle")).select_by_value("helpful")
    _click_and_wait(chrome, chrome.find_element(By.ID, "apply-filters"))
    assert "principle=helpful" in chrome.current_url
    matched = int(chrome.find_element(By.ID, "matched").text.split()[0])
    assert 0 < matched < 10
    assert len(chrome.find_elements(By.CSS_SELECTOR, "tr.row")) == matched
    screenshot(chrome, "review-rows", shots)
    _click_and_wait(chrome, chrome.find_elements(By.CLASS_NAME, "open-row")[0])
    assert chrome.find_element(By.ID, "chosen").text.startswith(CAREFUL)
    assert chrome.find_element(By.ID, "verdicts").is_displayed()
    assert "helpful" in chrome.find_element(By.CLASS_NAME, "provenance").text


def test_xss_payloads_render_as_text(chrome: WebDriver, world: ReviewWorld, shots: Path) -> None:
    _sign_in(chrome, world)
    chrome.get(f"{world.base_url}/pages/jobs/{world.job_a}/rows")
    _assert_no_script_ran(chrome)
    for cell in chrome.find_elements(By.CSS_SELECTOR, "div.chosen"):
        assert cell.find_elements(By.XPATH, ".//*") == []  # text only: no element inside
    rows = chrome.find_elements(By.CSS_SELECTOR, "tr.row")
    links = {
        r.find_element(By.CSS_SELECTOR, "div.text").text: r.find_element(
            By.CLASS_NAME, "open-row"
        ).get_attribute("href")
        for r in rows
    }
    assert set(XSS_PROMPTS) <= set(links), sorted(links)
    for i, prompt in enumerate(XSS_PROMPTS):
        chrome.get(str(links[prompt]))
        _assert_no_script_ran(chrome)
        assert chrome.find_element(By.ID, "chosen").text == xss_chosen(i)  # visible as typed
        assert chrome.find_elements(By.ID, "forged") == []
        assert chrome.find_elements(By.ID, "js-link") == []
        assert chrome.find_elements(By.CSS_SELECTOR, "main img") == []
        assert len(chrome.find_elements(By.CSS_SELECTOR, "pre.chosen")) == 1
        if PAYLOADS[i].startswith("</pre>"):
            screenshot(chrome, "review-xss-forged", shots)


def _label_count(world: ReviewWorld) -> int:
    with sqlite3.connect(world.store) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "audit_labels" not in tables:
            return 0
        return int(conn.execute("SELECT COUNT(*) FROM audit_labels").fetchone()[0])


def test_label_a_sample_and_see_agreement_update(
    chrome: WebDriver, world: ReviewWorld, shots: Path
) -> None:
    _sign_in(chrome, world)
    job_page = f"{world.base_url}/pages/jobs/{world.job_a}"
    chrome.get(job_page)
    assert chrome.find_element(By.ID, "agreement").text.startswith("No decided labels yet")
    _click_and_wait(chrome, chrome.find_element(By.ID, "label-sample"))
    assert "p_chosen" not in chrome.page_source
    screenshot(chrome, "review-label", shots)

    def label(agree: bool) -> None:
        a = chrome.find_element(By.ID, "text-a").text
        careful = "a" if a.startswith(CAREFUL) else "b"
        pick = careful if agree else ("b" if careful == "a" else "a")
        _click_and_wait(chrome, chrome.find_element(By.ID, f"choose-{pick}"))

    for agree in (True, True, False):
        label(agree)
    assert chrome.find_element(By.ID, "label-progress").text.startswith("3 of 10")
    chrome.get(job_page)
    first = chrome.find_element(By.ID, "agreement").text
    assert "agrees with people on 2 of 3 pairs (67%" in first
    assert "alice (3)" in first
    _click_and_wait(chrome, chrome.find_element(By.ID, "label-sample"))
    label(True)
    chrome.get(job_page)
    assert "agrees with people on 3 of 4 pairs (75%" in chrome.find_element(By.ID, "agreement").text
    assert _label_count(world) == 4
    chrome.find_element(By.ID, "export-labels")  # offered
    chrome.execute_script("document.getElementById('audit').scrollIntoView()")
    screenshot(chrome, "review-agreement", shots)


def test_a_running_jobs_page_updates_without_a_reload(
    chrome: WebDriver, world: ReviewWorld
) -> None:
    world.server.latency_s = 0.4  # a slow judge: the job runs for several seconds
    try:
        pairs = [[xss_rejected(i % 4), xss_chosen(i % 4)] for i in range(48)]
        live = [{"prompt": f"Live prompt {i}", "responses": r} for i, r in enumerate(pairs)]
        with CharterClient(world.base_url, TOKEN_A) as client:
            job = client.create_job(live).job.id
        _sign_in(chrome, world)
        chrome.get(f"{world.base_url}/pages/jobs/{job}")
        assert chrome.find_element(By.ID, "job-state").text in ("queued", "running")
        chrome.execute_script("window.__samePage = true")
        # One script reads the flag and the count together: live.js may reload the page between
        # two separate WebDriver calls, which would leave the second holding a stale element.
        read_live = (
            "var done = document.querySelector('[data-live=\"done\"]');"
            "return [window.__samePage === true, done ? done.textContent : null];"
        )
        seen: set[str] = set()
        for _ in range(100):
            same_page, done = chrome.execute_script(read_live)
            if not same_page:
                break  # live.js reloads the page once the job has ended
            seen.add(done)
            time.sleep(0.1)
        assert len(seen) >= 2, seen  # the count moved on this page, with no reload
        WebDriverWait(chrome, 30).until(lambda c: c.find_element(By.ID, "job-state").text == "done")
    finally:
        world.server.latency_s = 0.0


def test_another_tokens_job_is_invisible(chrome: WebDriver, world: ReviewWorld) -> None:
    _sign_in(chrome, world)
    chrome.get(f"{world.base_url}/pages/jobs/{world.job_b}")
    assert chrome.find_element(By.ID, "message").text == f"no job {world.job_b} for this token"
    assert "Bob" not in chrome.page_source


class _Attacker(BaseHTTPRequestHandler):
    """Another site's page that posts a label to charter as soon as it loads."""

    target = ""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = (
            f'<html><body><form id="f" method="post" action="{self.target}">'
            '<input name="key" value="0"><input name="choice" value="a">'
            '<input name="csrf" value="guessed"></form>'
            "<script>document.getElementById('f').submit()</script></body></html>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_cross_site_post_is_refused(chrome: WebDriver, world: ReviewWorld) -> None:
    _sign_in(chrome, world)
    before = _label_count(world)
    _Attacker.target = f"{world.base_url}/pages/jobs/{world.job_a}/label"
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    thread = threading.Thread(target=attacker.serve_forever, daemon=True)
    thread.start()
    try:  # `localhost` is another site than `127.0.0.1`, where charter is
        chrome.get(f"http://localhost:{attacker.server_address[1]}/")
        chrome.implicitly_wait(0)
        for _ in range(50):
            if chrome.current_url.startswith(world.base_url):
                break
            chrome.execute_script("return 1")
    finally:
        attacker.shutdown()
    text = chrome.find_element(By.TAG_NAME, "body").text
    assert text.endswith("Refused: sent from a cross-site page.\nBack to the jobs"), text
    assert _label_count(world) == before


def test_principle_labels_are_never_clipped(chrome: WebDriver, tmp_path: Path, shots: Path) -> None:
    """Every label of the per-principle chart lies inside the drawing, as Chromium lays the
    text out (a fixed label column cut "no-needless-refusal" to "o-needless-refusal")."""
    from charter.service.pages.charts import principle_bars
    from charter.service.pages.judge_stats import PrincipleStats

    names = ["no-needless-refusal", "helpful", "x" * 64, "dangerous-capabilities"]
    stats = [PrincipleStats(n, verdicts=4, swap_tests=4, consistent=3, agreeing=2) for n in names]
    page = tmp_path / "chart.html"
    page.write_text(f"<!DOCTYPE html><html><body>{principle_bars(stats)}</body></html>")
    chrome.get(page.as_uri())
    boxes = chrome.execute_script(
        "const svg = document.querySelector('svg.chart');"
        "const view = svg.viewBox.baseVal;"
        "return [...svg.querySelectorAll('text')].map(t => { const b = t.getBBox();"
        " return [t.textContent, b.x, b.x + b.width, view.width]; });"
    )
    screenshot(chrome, "principle-bars", shots)
    labels = {text: (left, right, width) for text, left, right, width in boxes}
    assert {f"{name} (n=4)" for name in names} <= set(labels)
    for text, (left, right, width) in labels.items():
        assert left >= 0 and right <= width, (text, left, right, width)


def test_a_job_whose_calls_get_no_answer_shows_as_waiting(
    chrome: WebDriver, tmp_path: Path, shots: Path
) -> None:
    """A running job whose calls are all outstanding, none answered since its last activity
    report (a judge that stalls, or a stored call answered after its delay), shows "waiting"
    and for what, on its page and in the list, not a silent "running"; then runs to its end.
    The judge holds every request until the page has shown it (events, not seconds)."""
    gate = threading.Event()

    def hold(record: RecordedRequest) -> None:
        gate.wait(timeout=120)

    principles = write_constitution(tmp_path / "principles")
    with ScriptedJudgeServer(responder(PROMPTS[:2]), fault_policy=hold) as server:
        models = ["--judge", "openai:scripted", "--policy", "openai:scripted"]
        models += ["--judge-base-url", server.base_url, "--policy-base-url", server.base_url]
        service = ServiceProcess(
            ["--store", str(tmp_path / "s.db"), "--dir", str(principles), *models],
            {"CHARTER_API_TOKENS": f"alice={TOKEN_A}", "CHARTER_PROGRESS_EVERY_S": "0.2"},
            tmp_path / "service.log",
            tmp_path,
        )
        try:
            service.start()
            with CharterClient(service.base_url, TOKEN_A) as client:
                job = client.create_job(PROMPTS[:2]).job.id
            world = ReviewWorld(service.base_url, job, job, tmp_path / "s.db", server)
            _sign_in(chrome, world)
            chrome.get(f"{service.base_url}/pages/jobs/{job}")
            WebDriverWait(chrome, 60).until(
                lambda c: c.find_element(By.ID, "job-state").text == "waiting"
            )
            reason = chrome.find_element(By.ID, "job-waiting").text
            assert reason.startswith("for answers to ") and "model call(s)" in reason, reason
            screenshot(chrome, "job-waiting", shots)
            chrome.get(f"{service.base_url}/pages/jobs")
            assert "waiting" in chrome.find_element(By.CSS_SELECTOR, "span.state").text
            chrome.get(f"{service.base_url}/pages/jobs/{job}")
            gate.set()
            WebDriverWait(chrome, 60).until(
                lambda c: c.find_element(By.ID, "job-state").text == "done"
            )
            assert chrome.find_element(By.ID, "job-waiting").text == ""
        finally:
            gate.set()
            service.stop()
