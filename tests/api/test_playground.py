"""The playground at ``/``, end to end: a real headless Chromium against a real uvicorn server.

Needs Debian's chromium and chromium-driver (``scripts/browser.sh`` installs them; see
``tests/api/browser.py``). Screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.api.browser import (
    chromium,
    console_errors,
    no_page_outlives_its_test,  # noqa: F401 (autouse)
    screenshot,
    text_of,
)

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

TRAINING_SECONDS = 30.0


@pytest.fixture
def live_server(start_server: Callable[..., Any]) -> str:
    """A real uvicorn server (``tests/conftest.py``) on its own empty store: its base URL."""
    url: str = start_server().base_url
    return url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile (``tests/api/browser.py``)."""
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def test_page_and_assets_are_served_locally(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for script in ("training-options.js", "step-progress.js", "evaluate.js", "playground.js"):
        assert f"/static/playground/{script}" in page.text
    assert "http://" not in page.text
    assert "https://" not in page.text
    assets = [("playground.css", "text/css")]
    scripts = (
        "client.js",
        "training-options.js",
        "step-progress.js",
        "evaluate.js",
        "playground.js",
    )
    assets += [(name, "text/javascript") for name in scripts]
    for asset, media in assets:
        response = client.get(f"/static/playground/{asset}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media)
        assert "https://" not in response.text
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_train_watch_and_predict(live_server: str, browser: WebDriver) -> None:
    browser.get(f"{live_server}/")
    # the tutorial is the default example
    assert browser.find_element(By.ID, "pairs").get_attribute("value") == "hello -> ohlol"
    assert Select(
        browser.find_element(By.ID, "architecture")
    ).first_selected_option.text.startswith("rnn_cell")
    for field, value in (("learning_rate", "0.1"), ("epochs", "15"), ("seed", "1")):
        assert browser.find_element(By.ID, field).get_attribute("value") == value
    assert browser.find_elements(By.CSS_SELECTOR, "#chart polyline") == []

    browser.find_element(By.ID, "train-button").click()
    rows_seen = []
    deadline = time.monotonic() + TRAINING_SECONDS
    while not text_of(browser, "train-status").startswith("Done"):
        assert time.monotonic() < deadline, text_of(browser, "train-status")
        assert browser.find_element(By.ID, "train-error").is_displayed() is False
        rows_seen.append(len(browser.find_elements(By.CSS_SELECTOR, "#epoch-table tbody tr")))
        time.sleep(0.05)

    predicted = [
        e.text for e in browser.find_elements(By.CSS_SELECTOR, "#epoch-table td .predicted")
    ]
    assert rows_seen == sorted(rows_seen)  # the list only grows
    assert len(predicted) == 15
    assert predicted[-1] == "ohlol"
    assert "ohlol" in text_of(browser, "train-status")
    assert text_of(browser, "progress-label").startswith("15 / 15 epochs")
    for series in ("loss", "accuracy"):
        line = browser.find_element(By.CSS_SELECTOR, f"#chart polyline.{series}")
        assert len(str(line.get_attribute("points")).split()) == 15
        assert len(browser.find_elements(By.CSS_SELECTOR, f"#chart circle.{series}")) == 15
    plot_link = browser.find_element(By.ID, "plot-link").get_attribute("href")
    assert httpx.get(str(plot_link)).headers["content-type"].startswith("image/svg+xml")
    screenshot(browser, "playground-trained.png")

    # the new model is listed and chosen; predict from the page
    WebDriverWait(browser, 10).until(
        lambda b: (
            Select(b.find_element(By.ID, "version-select")).first_selected_option.text
            == "version 1"
        )
    )
    assert Select(browser.find_element(By.ID, "model-select")).first_selected_option.text == (
        "hello (1 version)"
    )
    assert browser.find_element(By.ID, "predict-inputs").get_attribute("value") == "hello"
    browser.find_element(By.ID, "predict-button").click()
    WebDriverWait(browser, 10).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#predict-output output")
    )
    assert browser.find_element(By.CSS_SELECTOR, "#predict-output output").text == "ohlol"
    assert "hello, version 1" in text_of(browser, "predict-output")
    screenshot(browser, "playground-predicted.png")
    assert console_errors(browser) == []


def test_api_errors_are_shown_as_the_api_words_them(live_server: str, browser: WebDriver) -> None:
    browser.get(f"{live_server}/")
    pairs = browser.find_element(By.ID, "pairs")
    pairs.clear()
    pairs.send_keys("hello -> ohlo")
    # keyboard only: Enter in a text field submits the form
    browser.find_element(By.ID, "model-name").send_keys(Keys.END, Keys.ENTER)

    error = browser.find_element(By.ID, "train-error")
    WebDriverWait(browser, 10).until(lambda _: error.is_displayed())
    assert error.get_attribute("role") == "alert"
    assert "refused (HTTP 422)" in error.text
    assert (
        "data.pairs[0]: input has 5 characters but target has 4; aligned pairs map each input "
        "character to one output character"
    ) in error.text
    assert browser.find_element(By.ID, "train-button").is_enabled()
    screenshot(browser, "playground-error.png")


def test_plain_text_takes_the_services_text_defaults_for_what_is_left_alone(
    live_server: str, browser: WebDriver
) -> None:
    console_errors(browser)  # forget what earlier tests' pages logged
    browser.get(f"{live_server}/")
    browser.find_element(By.CSS_SELECTOR, "input[name=data_kind][value=text]").click()
    epochs = browser.find_element(By.ID, "epochs")
    epochs.clear()
    epochs.send_keys("1")  # changed: sent; everything else left as the tutorial's: not sent

    browser.find_element(By.ID, "train-button").click()
    WebDriverWait(browser, 10).until(lambda _: text_of(browser, "train-status").startswith("Job "))

    job = httpx.get(f"{live_server}/jobs", params={"limit": 1}).json()["items"][0]
    used = job["hyperparameters"]
    assert used["epochs"] == 1
    assert (used["architecture"], used["cell"], used["hidden_size"]) == (
        "embedding_rnn",
        "gru",
        256,
    )
    assert console_errors(browser) == []


def test_upload_a_dataset_and_train_on_it(
    live_server: str, browser: WebDriver, tmp_path: Path
) -> None:
    corpus = tmp_path / "fox.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 50)
    console_errors(browser)
    browser.get(f"{live_server}/")
    browser.find_element(By.CSS_SELECTOR, "input[name=data_kind][value=dataset]").click()
    assert browser.find_element(By.ID, "pairs-field").is_displayed() is False

    browser.find_element(By.ID, "dataset-file").send_keys(str(corpus))
    browser.find_element(By.ID, "dataset-upload").click()
    WebDriverWait(browser, 10).until(
        lambda _: text_of(browser, "dataset-status").startswith("Dataset ")
    )
    chosen = Select(browser.find_element(By.ID, "dataset-select")).first_selected_option
    assert chosen.text == "fox.txt (text, 2250 characters)"
    Select(browser.find_element(By.ID, "architecture")).select_by_value("embedding_rnn")
    for field, value in (("epochs", "1"), ("hidden_size", "16")):
        browser.find_element(By.ID, field).clear()
        browser.find_element(By.ID, field).send_keys(value)
    browser.find_element(By.ID, "train-button").click()
    deadline = time.monotonic() + TRAINING_SECONDS
    while not text_of(browser, "train-status").startswith("Done"):
        assert time.monotonic() < deadline, text_of(browser, "train-status")
        assert browser.find_element(By.ID, "train-error").is_displayed() is False
        time.sleep(0.1)

    dataset = httpx.get(f"{live_server}/datasets").json()["items"][0]
    assert (dataset["name"], dataset["characters"]) == ("fox.txt", 2250)
    assert chosen.get_attribute("value") == dataset["id"]
    # Evaluate scores the new version on the whole dataset
    WebDriverWait(browser, 10).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#versions tr[data-version]")
    )
    browser.find_element(By.CSS_SELECTOR, "input[name=evaluate_on][value=dataset]").click()
    offered = Select(browser.find_element(By.ID, "evaluate-dataset")).first_selected_option
    assert offered.get_attribute("value") == dataset["id"]
    browser.find_element(By.ID, "evaluate-button").click()
    WebDriverWait(browser, 20).until(lambda b: "(dataset)" in text_of(b, "evaluate-output"))
    assert not browser.find_element(By.ID, "evaluate-error").is_displayed()
    screenshot(browser, "playground-dataset.png")
    assert console_errors(browser) == []
