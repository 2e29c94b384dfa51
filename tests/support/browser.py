"""Headless Chromium for the pages' browser tests: Debian's `chromium` and `chromedriver`,
driven by selenium. Selenium-manager is kept offline and never asked for a driver or browser
(both paths are given), so nothing is downloaded at test time."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ["SE_OFFLINE"] = "true"  # before selenium is imported: selenium-manager stays offline

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

SCREENSHOTS_ENV = "CHARTER_SCREENSHOTS"


def chromium_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def headless_chromium(downloads: Path) -> webdriver.Chrome:
    paths = chromium_paths()
    if paths is None:
        pytest.skip("chromium and chromedriver are not installed (bash scripts/install does)")
    browser, driver = paths
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    chrome.set_page_load_timeout(30)
    return chrome


def screenshot(chrome: webdriver.Chrome, name: str, fallback: Path) -> Path:
    """Save a screenshot under $CHARTER_SCREENSHOTS (or `fallback`) and return its path."""
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or fallback)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    chrome.save_screenshot(str(path))
    return path
