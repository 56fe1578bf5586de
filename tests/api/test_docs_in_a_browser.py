"""/redoc and /docs in headless Chromium: every request the pages make goes to the service.

The bundles can fetch things the HTML does not name (ReDoc's logo, Swagger UI's
validator badge), so this reads the browser's own network log rather than the page.
Chromium and its driver are the ones test_playground.py uses (scripts/browser.sh).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from tests.api.test_playground import CHROME_FLAGS, CHROMEDRIVER, CHROMIUM


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.is_file():
            pytest.fail(f"{path} is missing: run scripts/browser.sh (apt-get install {package})")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(15)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(browser: WebDriver) -> list[str]:
    """Every URL the browser asked for since the log was last read (DevTools' network log)."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


@pytest.mark.parametrize(("page", "rendered"), [("/redoc", "h1"), ("/docs", ".opblock")])
def test_the_documentation_pages_request_nothing_outside_the_service(
    start_server: Callable[..., Any], browser: WebDriver, page: str, rendered: str
) -> None:
    base_url = start_server().base_url
    requested_urls(browser)  # forget earlier pages
    browser.get(base_url + page)
    WebDriverWait(browser, 15).until(lambda b: b.find_elements(By.CSS_SELECTOR, rendered))
    time.sleep(1)  # images and badges load after the first render

    urls = requested_urls(browser)
    assert f"{base_url}/openapi.json" in urls  # the page did render the schema
    outside = [url for url in urls if not url.startswith((base_url, "data:", "blob:"))]
    assert outside == []
