"""The playground where the service has API keys, as a person uses it: a real headless
Chromium against a real uvicorn server started with an admin and a predict key.

The key goes into the page's "API key" field (this tab's sessionStorage), every call and the
job's event stream (read with fetch, not EventSource) send it, refusals say which key is
needed, a reload during a job finds the job again, and a stream that drops (the service
restarts) resumes after the last epoch it brought.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.api.browser import (
    chromium,
    console_errors,
    no_page_outlives_its_test,  # noqa: F401 (autouse)
    readme_picture,
    requests_sent,
    text_of,
)
from tests.conftest import long_body

ADMIN_KEY = "admin-key-0123456789abcdef"
PREDICT_KEY = "predict-key-0123456789abcdef"
WRONG_KEY = "wrong-key-0123456789abcdef"
KEYS = f"admin:{ADMIN_KEY},predict:{PREDICT_KEY}"
EPOCHS = 15  # the tutorial's, the form's default
REFUSED = ("401", "403")  # the console's lines for the refusals this test asks for


@pytest.fixture
def keyed_server(start_server: Callable[..., Any]) -> Any:
    return start_server(api_keys=KEYS)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    with chromium(profile, network_log=True) as driver:
        yield driver


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def use_key(browser: WebDriver, key: str) -> None:
    field = browser.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    browser.find_element(By.ID, "api-key-save").click()


def wait_for_text(browser: WebDriver, element_id: str, text: str, timeout: float = 10) -> str:
    WebDriverWait(browser, timeout).until(lambda b: text in text_of(b, element_id))
    return text_of(browser, element_id)


def epoch_rows(browser: WebDriver) -> list[str]:
    """The predicted strings of the epoch table, read at once (it is redrawn as epochs come)."""
    script = "return [...document.querySelectorAll('#epoch-table td .predicted')]"
    rows: list[str] = browser.execute_script(script + ".map((cell) => cell.textContent)")
    return rows


def test_train_reload_and_predict_with_keys(keyed_server: Any, browser: WebDriver) -> None:
    browser.get(f"{keyed_server.base_url}/")
    # no key: the page says what to do rather than just "401"
    models_error = wait_for_text(browser, "models-error", "HTTP 401")
    assert "missing API key" in models_error
    assert 'Enter a key with the predict scope in the "API key" field' in models_error

    use_key(browser, WRONG_KEY)
    assert wait_for_text(browser, "models-error", "invalid API key")
    browser.find_element(By.ID, "train-button").click()
    train_error = wait_for_text(browser, "train-error", "Training refused (HTTP 401)")
    assert "with the admin scope" in train_error

    use_key(browser, PREDICT_KEY)
    browser.find_element(By.ID, "train-button").click()
    train_error = wait_for_text(browser, "train-error", "Training refused (HTTP 403)")
    assert "this API key lacks the 'admin' scope" in train_error
    assert "needs a key with the admin scope" in train_error
    assert text_of(browser, "api-key-state") == "key set for this tab"

    # the key is kept for this tab only, and never put in a URL
    use_key(browser, ADMIN_KEY)
    assert browser.execute_script("return sessionStorage.getItem('charnn.apiKey')") == ADMIN_KEY
    assert browser.execute_script("return localStorage.length") == 0
    browser.find_element(By.ID, "train-button").click()
    job_id = WebDriverWait(browser, 10).until(
        lambda b: b.execute_script(
            "const job = sessionStorage.getItem('charnn.job'); return job && JSON.parse(job).id"
        )
    )
    # reloaded while the job's worker starts (torch loads for seconds): the job has not ended
    job = keyed_server.http.get(f"/jobs/{job_id}", headers=bearer(ADMIN_KEY)).json()
    assert job["status"] in ("queued", "running"), "the job ended before the page reloaded"
    browser.refresh()
    assert browser.find_element(By.ID, "api-key").get_attribute("value") == ADMIN_KEY
    rows_seen = []  # the reloaded page watches the same job, live
    deadline = time.monotonic() + 30
    while not text_of(browser, "train-status").startswith("Done"):
        assert time.monotonic() < deadline, text_of(browser, "train-status")
        rows_seen.append(len(epoch_rows(browser)))
        time.sleep(0.05)
    assert rows_seen == sorted(rows_seen)
    assert not browser.find_element(By.ID, "train-error").is_displayed()
    assert keyed_server.http.get("/jobs", headers=bearer(ADMIN_KEY)).json()["total"] == 1
    predicted = epoch_rows(browser)
    assert len(predicted) == EPOCHS
    assert predicted[-1] == "ohlol"
    assert text_of(browser, "progress-label").startswith(f"{EPOCHS} / {EPOCHS} epochs")
    line = browser.find_element(By.CSS_SELECTOR, "#chart polyline.loss")
    assert len(str(line.get_attribute("points")).split()) == EPOCHS
    recent = Select(browser.find_element(By.ID, "recent-jobs"))
    assert recent.first_selected_option.get_attribute("value") == job_id
    assert (
        recent.first_selected_option.text
        == f"hello {job_id[:8]}: succeeded, {EPOCHS}/{EPOCHS} epochs"
    )

    WebDriverWait(browser, 10).until(
        lambda b: (
            Select(b.find_element(By.ID, "version-select")).first_selected_option.text
            == "version 1"
        )
    )
    browser.find_element(By.ID, "predict-button").click()
    WebDriverWait(browser, 10).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#predict-output output")
    )
    assert browser.find_element(By.CSS_SELECTOR, "#predict-output output").text == "ohlol"
    assert ADMIN_KEY not in browser.current_url

    # evaluating only reads the version: a predict key may
    use_key(browser, PREDICT_KEY)
    browser.find_element(By.CSS_SELECTOR, "input[name=evaluate_on][value=data]").click()
    browser.find_element(By.ID, "evaluate-data").send_keys("hello -> ohlol")
    browser.find_element(By.ID, "evaluate-button").click()
    scores = wait_for_text(browser, "evaluate-output", "char accuracy")
    assert "hello 1 (data)" in scores
    assert not browser.find_element(By.ID, "evaluate-error").is_displayed()
    browser.set_window_size(1024, 1400)  # docs/playground.png, as the README shows it
    try:
        picture = readme_picture(browser, "playground.png")
    finally:
        browser.set_window_size(1280, 1800)
    assert picture.stat().st_size < 300_000
    assert console_errors(browser, allowed=REFUSED) == []
    assert ADMIN_KEY not in keyed_server.log


def test_a_dropped_stream_resumes_after_its_last_epoch(
    start_server: Callable[..., Any], browser: WebDriver
) -> None:
    server = start_server(api_keys=KEYS)
    epochs = 24  # a few seconds of a next-character GRU, to restart the service in between
    body = long_body("story", epochs, characters=2000)
    job_id = server.http.post("/train", json=body, headers=bearer(ADMIN_KEY)).json()["id"]
    browser.get(f"{server.base_url}/")
    use_key(browser, PREDICT_KEY)  # following a job needs no more than a predict key
    WebDriverWait(browser, 10).until(
        lambda b: (
            Select(b.find_element(By.ID, "recent-jobs")).first_selected_option.get_attribute(
                "value"
            )
            == job_id
        )
    )
    browser.find_element(By.ID, "follow-button").click()
    WebDriverWait(browser, 30).until(lambda b: len(epoch_rows(b)) >= 2)

    requests_sent(browser)  # forget the requests so far
    server.stop()  # its streams end at once; the interrupted job resumes on the next start
    assert len(epoch_rows(browser)) < epochs, "the job ended before the service stopped"
    start_server(server.store_dir, port=server.port, api_keys=KEYS)
    wait_for_text(browser, "train-status", "Done: story version 1 is ready", timeout=60)

    numbers = browser.execute_script(
        "return [...document.querySelectorAll('#epoch-table tbody tr td:first-child')]"
        ".map((cell) => Number(cell.textContent))"
    )
    assert numbers == list(range(1, epochs + 1))  # each epoch once, in order
    resumed = [
        headers
        for url, headers in requests_sent(browser)
        if url == f"{server.base_url}/jobs/{job_id}/events"
    ]
    assert resumed, "the page never asked for the stream again"
    assert all(headers["Authorization"] == f"Bearer {PREDICT_KEY}" for headers in resumed)
    assert int(resumed[-1]["Last-Event-ID"]) >= 2
    assert console_errors(browser, allowed=("ERR_CONNECTION_REFUSED", *REFUSED)) == []
