"""A real headless Chromium for the page tests (the playground, the dashboard, the API docs).

Needs Debian's chromium and chromium-driver (``scripts/browser.sh`` installs them); a test
fails, rather than skips, where they are missing, and never downloads a browser.
Screenshots land in ``test-artifacts/``; the README's pictures in ``docs/`` are written
again only with ``CHARNN_UPDATE_SCREENSHOTS=1``, so that a test run leaves the tree as it was.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DOCS = ROOT / "docs"
CHROMIUM = Path(os.environ.get("CHARNN_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHARNN_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
CHROME_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1800",
]


@contextmanager
def chromium(profile: Path, *, network_log: bool = False) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile; the driver is given, so nothing is downloaded.

    ``network_log``: keep Chrome's performance log, which ``requested_urls`` reads.
    """
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.is_file():
            pytest.fail(f"{path} is missing: run scripts/browser.sh (apt-get install {package})")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    logs = {"browser": "ALL", **({"performance": "ALL"} if network_log else {})}
    options.set_capability("goog:loggingPrefs", logs)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(15)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(browser: WebDriver, name: str, directory: Path = ARTIFACTS) -> Path:
    """The whole page: the window grows to the page's height for the picture."""
    directory.mkdir(exist_ok=True)
    size = browser.get_window_size()
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(size["width"], int(height) + 200)
    try:
        browser.save_screenshot(str(directory / name))
    finally:
        browser.set_window_size(size["width"], size["height"])
    return directory / name


def readme_picture(browser: WebDriver, name: str, scale: float = 0.8) -> Path:
    """The whole page for the README, drawn at ``scale`` (smaller files, as wide as the README
    shows it): in ``test-artifacts/``, and in ``docs/`` with ``CHARNN_UPDATE_SCREENSHOTS=1``."""
    width, height = browser.execute_script(
        # the whole window's width: captured beyond the viewport, the page has no scrollbar
        "const page = document.documentElement;"
        "return [Math.max(page.scrollWidth, window.innerWidth), page.scrollHeight];"
    )
    clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": scale}
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True}
    )
    ARTIFACTS.mkdir(exist_ok=True)
    picture = ARTIFACTS / name
    picture.write_bytes(base64.b64decode(shot["data"]))
    if os.environ.get("CHARNN_UPDATE_SCREENSHOTS") == "1":
        (DOCS / name).write_bytes(picture.read_bytes())
    return picture


def console_errors(browser: WebDriver, allowed: tuple[str, ...] = ()) -> list[str]:
    """SEVERE console lines, less those holding one of ``allowed`` (an expected 401, say)."""
    return [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and not any(text in entry["message"] for text in allowed)
    ]


def text_of(browser: WebDriver, element_id: str) -> str:
    return str(browser.find_element(By.ID, element_id).text)


def requests_sent(browser: WebDriver) -> list[tuple[str, dict[str, str]]]:
    """Every request the page made since the last call, with its headers (Chrome's
    performance log; the browser must have been started with ``network_log``)."""
    sent = []
    for entry in browser.get_log("performance"):
        message: dict[str, Any] = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            request = message["params"]["request"]
            sent.append((str(request["url"]), dict(request["headers"])))
    return sent


def requested_urls(browser: WebDriver) -> list[str]:
    """Every URL the page asked for since the last call."""
    return [url for url, _ in requests_sent(browser)]


@pytest.fixture(autouse=True)
def no_page_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """The browser is shared by a module's tests, each with a server of its own: a page
    left open would keep reconnecting its event stream to a server gone, and log the
    refusals as the next test's console errors."""
    yield
    if "browser" in request.fixturenames:
        browser: WebDriver = request.getfixturevalue("browser")
        browser.get("about:blank")
        console_errors(browser)  # what the old page logged before it went
