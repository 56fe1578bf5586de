"""The playground's training options beyond the tutorial, in a real headless Chromium against
a real uvicorn server: budgets and schedules sent only when set, labeled pairs for a
classifier, step progress while a job runs, the stop reason and best epoch when it ends, and
"Evaluate" on a version.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.api.browser import (
    chromium,
    console_errors,
    no_page_outlives_its_test,  # noqa: F401 (autouse)
    screenshot,
    text_of,
)
from tests.conftest import long_text

TRAINING_SECONDS = 60.0


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        driver.set_window_size(1024, 1600)
        yield driver


def fill(browser: WebDriver, values: dict[str, str]) -> None:
    for field, value in values.items():
        browser.find_element(By.ID, field).clear()
        browser.find_element(By.ID, field).send_keys(value)


def wait_done(browser: WebDriver, seen: Callable[[], None] = lambda: None) -> None:
    deadline = time.monotonic() + TRAINING_SECONDS
    while not text_of(browser, "train-status").startswith("Done"):
        assert time.monotonic() < deadline, text_of(browser, "train-status")
        assert browser.find_element(By.ID, "train-error").is_displayed() is False
        seen()
        time.sleep(0.05)


def facts(browser: WebDriver, element_id: str) -> dict[str, str]:
    """A <dl class="facts"> as {term: value}."""
    script = (
        "const list = document.getElementById(arguments[0]);"
        "return [...list.querySelectorAll('dt')].map((dt) => "
        "[dt.textContent, dt.nextElementSibling.textContent]);"
    )
    pairs: list[list[str]] = browser.execute_script(script, element_id)
    return dict(pairs)


def version_cells(browser: WebDriver, version: int) -> list[str]:
    row = browser.find_element(By.CSS_SELECTOR, f"#versions tr[data-version='{version}']")
    return [str(cell.text) for cell in row.find_elements(By.CSS_SELECTOR, "th, td")]


def test_a_text_run_under_a_step_budget_shows_its_progress_and_why_it_stopped(
    start_server: Callable[..., Any], browser: WebDriver
) -> None:
    server = start_server(progress_seconds=0.1)  # step progress ten times a second
    console_errors(browser)
    browser.get(f"{server.base_url}/")
    browser.find_element(By.CSS_SELECTOR, "input[name=data_kind][value=text]").click()
    browser.execute_script("document.getElementById('text').value = arguments[0]", long_text(60000))
    Select(browser.find_element(By.ID, "architecture")).select_by_value("embedding_rnn")
    # epochs of about 120 steps, each longer than the progress period even on a fast CPU
    fill(browser, {"hidden_size": "128", "epochs": "50", "seq_len": "16", "max_steps": "300"})
    Select(browser.find_element(By.ID, "lr_schedule")).select_by_value("cosine")
    assert browser.find_element(By.ID, "plateau_patience").is_enabled() is False
    fill(browser, {"warmup_steps": "20"})

    browser.find_element(By.ID, "train-button").click()
    progress: list[dict[str, str]] = []

    def record() -> None:
        if browser.find_element(By.ID, "step-progress").is_displayed():
            progress.append(facts(browser, "step-progress"))

    wait_done(browser, record)

    # sent only what was set: the budget and the schedule, no time limit, no patience
    job = httpx.get(f"{server.base_url}/jobs", params={"limit": 1}).json()["items"][0]
    used = job["hyperparameters"]
    assert (used["max_steps"], used["lr_schedule"], used["warmup_steps"]) == (300, "cosine", 20)
    assert (used["max_seconds"], used["early_stopping_patience"]) == (None, None)
    assert progress, "no step progress was shown while the job ran"
    assert set(progress[-1]) == {"epoch", "step", "loss", "bits/char", "lr", "chars/s"}
    assert int(progress[-1]["step"]) <= 300

    version = httpx.get(f"{server.base_url}/models/{job['model_name']}/versions/1").json()
    assert version["stop_reason"] == "max_steps"
    outcome = text_of(browser, "train-outcome")
    assert outcome.startswith("Stopped: max steps reached.")
    assert f"Best epoch {version['best_epoch']} of {version['epochs']}" in outcome
    WebDriverWait(browser, 10).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#versions tr[data-version]")
    )
    cells = version_cells(browser, 1)
    assert cells[6:8] == [f"{version['best_epoch']} of {version['epochs']}", "max steps"]
    assert float(cells[9]) == pytest.approx(version["validation"]["bits_per_char"], rel=1e-3)

    # Evaluate: the held-out split gives the scores recorded at the best epoch
    browser.find_element(By.ID, "evaluate-button").click()
    WebDriverWait(browser, 20).until(
        lambda b: b.find_element(By.ID, "evaluate-output").is_displayed()
    )
    scores = facts(browser, "evaluate-output")
    assert scores["version"] == f"{job['model_name']} 1 (validation)"
    assert float(scores["bits/char"]) == pytest.approx(
        version["validation"]["bits_per_char"], abs=2e-3
    )
    assert {"nll", "char accuracy", "characters", "sequences"} <= set(scores)
    screenshot(browser, "playground-budget.png")
    width = "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    scrolled, shown = browser.execute_script(width)
    assert scrolled <= shown  # the page fits 1024 px (wide tables scroll in their box)
    assert console_errors(browser) == []


def test_labeled_pairs_train_a_classifier_evaluated_on_pasted_pairs(
    start_server: Callable[..., Any], browser: WebDriver
) -> None:
    server = start_server()
    console_errors(browser)
    browser.get(f"{server.base_url}/")
    browser.find_element(By.CSS_SELECTOR, "input[name=data_kind][value=labels]").click()
    assert browser.find_element(By.ID, "pairs-field").is_displayed() is False
    fill(browser, {"model-name": "names", "epochs": "5"})
    browser.find_element(By.ID, "train-button").click()
    wait_done(browser)

    job = httpx.get(f"{server.base_url}/jobs", params={"limit": 1}).json()["items"][0]
    assert job["hyperparameters"]["epochs"] == 5
    version = httpx.get(f"{server.base_url}/models/names/versions/1").json()
    assert version["task"] == "classify"
    assert version["vocab"]["labels"] == ["German", "Japanese"]
    assert text_of(browser, "train-outcome").startswith("Stopped: all epochs done.")

    # pasted pairs are scored as input,label lines; a bad line is named before any request
    browser.find_element(By.CSS_SELECTOR, "input[name=evaluate_on][value=data]").click()
    fill(browser, {"evaluate-data": "Tanaka"})
    browser.find_element(By.ID, "evaluate-button").click()
    assert "line 1: write each labeled pair as input,label" in text_of(browser, "evaluate-error")
    fill(browser, {"evaluate-data": "Tanaka,Japanese\nFischer,German"})
    browser.find_element(By.ID, "evaluate-button").click()
    WebDriverWait(browser, 20).until(
        lambda b: b.find_element(By.ID, "evaluate-output").is_displayed()
    )
    scores = facts(browser, "evaluate-output")
    assert scores["version"] == "names 1 (data)"
    assert (scores["characters"], scores["sequences"]) == ("2", "2")
    assert scores["sequence accuracy"].endswith("%")
    assert browser.find_element(By.ID, "evaluate-error").is_displayed() is False
    assert console_errors(browser) == []
