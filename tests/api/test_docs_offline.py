"""Swagger UI (``/docs``) and ReDoc (``/redoc``) render in a real headless Chromium without
a single request outside the service: every URL the browser asks for (Chrome's performance
log) is on the server's own 127.0.0.1 address.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from tests.api.browser import chromium, console_errors, requested_urls

# what each page shows once it has rendered the schema
RENDERED = {"/docs": ".swagger-ui .opblock", "/redoc": "[data-section-id^='tag/']"}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("chromium-profile"), network_log=True) as driver:
        yield driver


@pytest.mark.parametrize("page", sorted(RENDERED))
def test_docs_make_no_request_outside_the_service(
    start_server: Callable[..., Any], browser: WebDriver, page: str
) -> None:
    base = start_server().base_url
    requested_urls(browser)  # forget what earlier pages asked for
    browser.get(f"{base}{page}")
    WebDriverWait(browser, 20).until(lambda b: b.find_elements(By.CSS_SELECTOR, RENDERED[page]))
    urls = requested_urls(browser)
    assert f"{base}{page}" in urls
    assert f"{base}/openapi.json" in urls
    outside = [url for url in urls if not url.startswith((f"{base}/", "data:", "blob:"))]
    assert outside == []
    assert console_errors(browser) == []
