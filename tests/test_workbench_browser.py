"""The conflict matrix in headless Chromium (Debian's): its cells are links that open the
rows where the two principles conflicted, and another token's job stays invisible."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.browser import headless_chromium, screenshot
from tests.support.service import TOKEN_A, TOKEN_B
from tests.support.workbench import HAND_ROWS, WorkService, work_service, x_text

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkService]:
    with work_service(tmp_path_factory.mktemp("workbench-browser")) as found:
        yield found


@pytest.fixture(scope="module")
def chrome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    driver = headless_chromium(tmp_path_factory.mktemp("downloads"))
    try:
        yield driver
    finally:
        driver.quit()


def _sign_in(chrome: WebDriver, base_url: str, token: str) -> None:
    chrome.delete_all_cookies()
    chrome.get(f"{base_url}/pages/jobs")
    chrome.find_element(By.ID, "token").send_keys(token)
    chrome.find_element(By.ID, "sign-in").click()
    WebDriverWait(chrome, 10).until(lambda c: c.current_url == f"{base_url}/pages/jobs")


def _open(chrome: WebDriver, click: object) -> None:
    chrome.execute_script("window.__leaving = true")
    click.click()  # type: ignore[attr-defined]
    WebDriverWait(chrome, 10).until(
        lambda c: c.execute_script(
            "return window.__leaving === undefined && document.readyState === 'complete'"
        )
    )


def test_matrix_cells_open_their_rows(
    chrome: WebDriver, service: WorkService, tmp_path: Path
) -> None:
    _sign_in(chrome, service.base_url, TOKEN_A)
    job_url = f"{service.base_url}/pages/jobs/{service.job_a}"
    for (first, second), positions in HAND_ROWS.items():
        chrome.get(job_url)
        matrix = chrome.find_element(By.CSS_SELECTOR, "#conflicts svg.chart")
        assert matrix.is_displayed()
        cells = matrix.find_elements(By.CSS_SELECTOR, "a.conflict-cell")
        assert len(cells) == 6
        cell = next(
            c
            for c in cells
            if c.find_element(By.TAG_NAME, "title")
            .get_attribute("textContent")
            .startswith(f"{first} and {second}:")
        )
        screenshot(chrome, "workbench-matrix", tmp_path)
        _open(chrome, cell)
        assert chrome.find_element(By.ID, "pair-first").text == first
        assert chrome.find_element(By.ID, "pair-second").text == second
        rows = chrome.find_elements(By.CSS_SELECTOR, "tr.conflict-row")
        assert [int(r.find_element(By.TAG_NAME, "td").text) for r in rows] == positions
        _open(chrome, rows[0].find_element(By.CLASS_NAME, "open-row"))
        assert chrome.find_element(By.ID, "chosen").text == x_text(positions[0])
        assert {
            v.text.split()[0]
            for v in chrome.find_elements(By.CSS_SELECTOR, "#verdicts td:first-child")
        } == {"harmless", "helpful", "honest"}
    _sign_in(chrome, service.base_url, TOKEN_B)
    chrome.get(f"{job_url}/conflicts?first=harmless&second=honest")
    assert "harmless" not in chrome.find_element(By.TAG_NAME, "main").text
    assert chrome.find_elements(By.CSS_SELECTOR, "tr.conflict-row") == []
