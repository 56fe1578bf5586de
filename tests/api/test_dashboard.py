"""The runs dashboard at ``/dashboard``, as a person uses it: a real headless Chromium, 1024 px
wide, against a real uvicorn server with API keys, after two runs of the tutorial.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.api.browser import (
    chromium,
    console_errors,
    no_page_outlives_its_test,  # noqa: F401 (autouse)
    readme_picture,
    text_of,
)
from tests.conftest import TestClient, long_body, long_text

ADMIN_KEY = "admin-key-0123456789abcdef"
PREDICT_KEY = "predict-key-0123456789abcdef"
KEYS = f"admin:{ADMIN_KEY},predict:{PREDICT_KEY}"
WIDTH = 1024


def tutorial(learning_rate: float, seed: int) -> dict[str, Any]:
    return {
        "model_name": "hello",
        "data": {"pairs": [{"input": "hello", "target": "ohlol"}]},
        "hyperparameters": {
            "architecture": "rnn_cell",
            "learning_rate": learning_rate,
            "epochs": 15,
            "seed": seed,
        },
    }


@pytest.fixture
def two_runs(start_server: Callable[..., Any]) -> tuple[Any, list[dict[str, Any]]]:
    """A keyed server on which the tutorial ran twice, with other learning rates and seeds."""
    server = start_server(api_keys=KEYS, max_concurrent_jobs=2)  # the two runs at once
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    ids = []
    for learning_rate, seed in ((0.1, 1), (0.05, 2)):
        response = server.http.post("/train", json=tutorial(learning_rate, seed), headers=headers)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    server.http.headers.update(headers)  # the test's own calls are an admin's
    return server, [server.wait_for_job(job_id) for job_id in ids]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        driver.set_window_size(WIDTH, 1400)
        yield driver


def cut_columns(browser: WebDriver) -> list[str]:
    """Tables wider than their box, and the page wider than the window (nothing may be)."""
    script = """
        const cut = [];
        const page = document.documentElement;
        if (page.scrollWidth > page.clientWidth) cut.push(`page ${page.scrollWidth}`);
        for (const table of document.querySelectorAll("table")) {
          const box = table.parentElement;
          if (table.scrollWidth > box.clientWidth || box.scrollWidth > box.clientWidth) {
            cut.push(`${table.id} ${table.scrollWidth} > ${box.clientWidth}`);
          }
        }
        return cut;
    """
    found: list[str] = browser.execute_script(script)
    return found


def test_page_and_assets_are_served_locally(client: TestClient) -> None:
    page = client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text
    assert "https://" not in page.text
    scripts = ("datasets.js", "outcomes.js", "dashboard.js")
    assets = [*(f"/static/dashboard/{name}" for name in scripts), "/static/dashboard/dashboard.css"]
    for asset in assets:
        assert asset in page.text
        response = client.get(asset)
        assert response.status_code == 200
        assert "https://" not in response.text
    assert 'href="/dashboard"' in client.get("/").text  # linked from the playground


def cells_of(browser: WebDriver, job_id: str) -> list[str]:
    """The texts of a job's row, read at once (the table is refreshed every two seconds)."""
    script = (
        "const row = document.querySelector(`#runs tr[data-job='${arguments[0]}']`);"
        "return row ? [...row.cells].map((cell) => cell.textContent) : [];"
    )
    cells: list[str] = browser.execute_script(script, job_id)
    return cells


def cell_of(browser: WebDriver, job_id: str, index: int) -> str:
    """One cell of a job's row; "" while the row is not shown yet."""
    cells = cells_of(browser, job_id)
    return cells[index] if len(cells) > index else ""


def test_compare_two_runs(
    two_runs: tuple[Any, list[dict[str, Any]]], browser: WebDriver, tmp_path: Path
) -> None:
    server, oldest_first = two_runs
    finished = oldest_first[::-1]  # as listed: newest first
    running = server.http.post("/train", json=long_body("story", 200, 2000)).json()
    browser.get(f"{server.base_url}/dashboard")
    field = browser.find_element(By.ID, "api-key")
    field.send_keys(PREDICT_KEY)  # reading runs needs no more than a predict key
    browser.find_element(By.ID, "api-key-save").click()

    listed = WebDriverWait(browser, 10).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#runs tbody tr[data-job]")
    )
    ids = [running["id"], *(job["id"] for job in finished)]
    assert [row.get_attribute("data-job") for row in listed] == ids
    for job in finished:
        WebDriverWait(browser, 10).until(lambda b, job=job: "–" not in cells_of(b, job["id"]))
        cells = cells_of(browser, job["id"])
        assert cells[1] == job["id"][:8]
        assert cells[2:5] == ["hello", "inline", "succeeded"]
        assert f"lr {job['hyperparameters']['learning_rate']}" in cells[5]
        assert cells[6] == "15 / 15"
        history = server.http.get(f"/jobs/{job['id']}/epochs").json()["items"]
        losses = [epoch["loss"] for epoch in history]
        assert float(cells[7]) == pytest.approx(losses[-1], rel=1e-3)
        assert float(cells[8]) == pytest.approx(min(losses), rel=1e-3)
        version = server.http.get(f"/models/hello/versions/{job['version']}").json()
        WebDriverWait(browser, 10).until(lambda b, job=job: cells_of(b, job["id"])[10] != "–")
        assert cells_of(browser, job["id"])[10] == f"completed, best epoch {version['best_epoch']}"
        assert cells[11].endswith(" s")
    assert "1–3 of 3 jobs" in browser.find_element(By.ID, "page-label").text
    assert not browser.find_element(By.ID, "next-page").is_enabled()

    # live: the running job's row follows its epochs without a reload
    def epochs_done(b: WebDriver) -> int:
        cells = cells_of(b, running["id"])
        return int(cells[6].split(" / ")[0]) if cells[4] == "running" else 0

    first = WebDriverWait(browser, 30).until(epochs_done)
    WebDriverWait(browser, 10).until(lambda b: epochs_done(b) > first)
    assert cells_of(browser, running["id"])[7] != "–"  # its loss so far

    jobs = finished
    for job in jobs:
        browser.find_element(
            By.CSS_SELECTOR, f"#runs tr[data-job='{job['id']}'] td.pick input"
        ).click()
    series = browser.find_elements(By.CSS_SELECTOR, "#compare-chart g.series")
    assert sorted(str(s.get_attribute("data-job")) for s in series) == sorted(j["id"] for j in jobs)
    for group in series:
        for name in ("loss", "accuracy"):
            line = group.find_element(By.CSS_SELECTOR, f"polyline.{name}")
            assert len(str(line.get_attribute("points")).split()) == 15
    assert len({str(s.get_attribute("stroke")) for s in series}) == 2  # told apart by colour

    differ = browser.find_elements(By.CSS_SELECTOR, "#differ tbody tr")
    side_by_side = {
        str(row.get_attribute("data-hyperparameter")): [
            str(cell.text) for cell in row.find_elements(By.TAG_NAME, "td")
        ]
        for row in differ
    }
    assert side_by_side == {"learning_rate": ["0.05", "0.1"], "seed": ["2", "1"]}
    headings = [str(th.text) for th in browser.find_elements(By.CSS_SELECTOR, "#differ thead th")]
    assert headings == ["Hyperparameter", *(f"hello {j['id'][:8]}" for j in jobs)]

    # the model's versions, their metrics and files
    versions = WebDriverWait(browser, 10).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#versions tbody tr[data-version]")
    )
    assert [v.get_attribute("data-version") for v in versions] == ["2", "1"]
    links = versions[0].find_elements(By.CSS_SELECTOR, "td.files a")
    hrefs = [str(link.get_attribute("href")) for link in links]
    assert hrefs == [
        f"{server.base_url}/models/hello/versions/2/files/checkpoint.json",
        f"{server.base_url}/models/hello/versions/2/files/weights.safetensors",
    ]
    # a link cannot send the key: the page fetches the file with it and saves that
    downloads = tmp_path / "downloads"
    behaviour = {"behavior": "allow", "downloadPath": str(downloads)}
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", behaviour)
    links[0].click()
    saved = downloads / "hello-v2-checkpoint.json"
    WebDriverWait(browser, 10).until(lambda _: saved.is_file())
    assert json.loads(saved.read_text()) == server.http.get(hrefs[0]).json()
    assert not browser.find_element(By.ID, "models-error").is_displayed()

    assert cut_columns(browser) == []
    picture = readme_picture(browser, "dashboard.png")
    assert picture.stat().st_size < 300_000
    assert console_errors(browser, allowed=("401",)) == []  # the page opened before the key

    # a page at a time: nine more jobs (cancelled at once) put the two runs on page 2
    for seed in range(9):
        queued = server.http.post("/train", json=tutorial(0.1, 10 + seed)).json()
        server.http.post(f"/jobs/{queued['id']}/cancel")
    Select(browser.find_element(By.ID, "page-size")).select_by_visible_text("10")
    WebDriverWait(browser, 10).until(lambda b: text_of(b, "page-label") == "1–10 of 12 jobs")
    browser.find_element(By.ID, "next-page").click()
    WebDriverWait(browser, 10).until(lambda b: text_of(b, "page-label") == "11–12 of 12 jobs")

    def shown_jobs(b: WebDriver) -> list[str | None]:
        rows = b.find_elements(By.CSS_SELECTOR, "#runs tbody tr[data-job]")
        return [row.get_attribute("data-job") for row in rows]

    # the label can change a moment before the rows do
    expected = [job["id"] for job in finished]
    WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda b: shown_jobs(b) == expected
    )
    assert all(box.is_selected() for box in browser.find_elements(By.CSS_SELECTOR, "td.pick input"))
    assert not browser.find_element(By.ID, "next-page").is_enabled()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#compare-chart g.series")) == 2


def text_run(model_name: str, dataset: str, **budget: Any) -> dict[str, Any]:
    """A small next-character run on an uploaded dataset, with a budget or schedule."""
    hyperparameters = {"cell": "gru", "hidden_size": 32, "seq_len": 16, "epochs": 4, "seed": 0}
    return {
        "model_name": model_name,
        "dataset": dataset,
        "hyperparameters": {**hyperparameters, "validation_fraction": 0.1, **budget},
    }


def accept_confirmation(browser: WebDriver) -> str:
    alert = WebDriverWait(browser, 5).until(lambda b: b.switch_to.alert)
    text = str(alert.text)
    alert.accept()
    return text


def test_datasets_budgets_and_best_epochs(
    start_server: Callable[..., Any], browser: WebDriver
) -> None:
    server = start_server(api_keys=KEYS, max_concurrent_jobs=3, progress_seconds=0.2)
    server.http.headers.update({"Authorization": f"Bearer {ADMIN_KEY}"})
    uploaded = server.http.post(
        "/datasets",
        params={"kind": "text", "name": "story.txt"},
        content=long_text(20000).encode(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    runs = [
        text_run("alpha", dataset["id"], lr_schedule="cosine", warmup_steps=5),
        text_run("alpha", dataset["id"], epochs=50, max_steps=60),
    ]
    cosine, capped = [
        server.wait_for_job(server.http.post("/train", json=r).json()["id"]) for r in runs
    ]
    busy_body = {**long_body("zeta", 500, 20000), "dataset": dataset["id"]}
    del busy_body["data"]
    busy = server.http.post("/train", json=busy_body).json()

    browser.get(f"{server.base_url}/dashboard")
    console_errors(browser)  # forget what the last test's page logged once its server stopped
    browser.find_element(By.ID, "api-key").send_keys(ADMIN_KEY)  # deleting needs admin
    browser.find_element(By.ID, "api-key-save").click()
    for job, reason in ((cosine, "completed"), (capped, "max steps")):
        version = server.http.get(f"/models/alpha/versions/{job['version']}").json()
        expected = f"{reason}, best epoch {version['best_epoch']}"
        WebDriverWait(browser, 10).until(lambda b, j=job, e=expected: cell_of(b, j["id"], 10) == e)
        assert cells_of(browser, job["id"])[3] == "story.txt"
    # the running job's step progress, as its step_progress says
    WebDriverWait(browser, 30).until(lambda b: cell_of(b, busy["id"], 10).startswith("step "))
    assert "% of epoch " in cells_of(browser, busy["id"])[10]
    assert "bits/char" in cells_of(browser, busy["id"])[10]

    # compare: validation bits/char per epoch for text runs; budgets and schedules differ
    for job in (cosine, capped):
        browser.find_element(
            By.CSS_SELECTOR, f"#runs tr[data-job='{job['id']}'] td.pick input"
        ).click()
    for job in (cosine, capped):
        line = browser.find_element(
            By.CSS_SELECTOR, f"#compare-chart g.series[data-job='{job['id']}'] polyline.val-bpc"
        )
        history = server.http.get(f"/jobs/{job['id']}/epochs").json()["items"]
        assert len(str(line.get_attribute("points")).split()) == len(history)
    differ = browser.find_elements(By.CSS_SELECTOR, "#differ tbody tr")
    names = {str(row.get_attribute("data-hyperparameter")) for row in differ}
    assert {"epochs", "max_steps", "lr_schedule", "warmup_steps"} <= names
    assert "dataset" not in names  # the same for both

    # the versions: best epoch, why training stopped, the validation scores at the best epoch
    version = server.http.get("/models/alpha/versions/2").json()
    WebDriverWait(browser, 10).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#versions tbody tr[data-version='2']")
    )
    row = browser.find_element(By.CSS_SELECTOR, "#versions tbody tr[data-version='2']")
    cells = [str(cell.text) for cell in row.find_elements(By.CSS_SELECTOR, "th, td")]
    assert cells[3:5] == [f"{version['best_epoch']} of {version['epochs']}", "max steps"]
    assert float(cells[7]) == pytest.approx(version["validation"]["bits_per_char"], rel=1e-3)

    # datasets: deleting one a job trains on is refused with the API's reason, then allowed
    listed = browser.find_element(By.CSS_SELECTOR, f"#datasets tr[data-dataset='{dataset['id']}']")
    cells = [str(cell.text) for cell in listed.find_elements(By.CSS_SELECTOR, "th, td")]
    assert cells[:6] == ["story.txt", dataset["id"][:8], "text", "19.5 KiB", "20,000", "–"]
    listed.find_element(By.CSS_SELECTOR, "button.delete").click()
    assert "Delete dataset story.txt" in accept_confirmation(browser)
    WebDriverWait(browser, 10).until(
        lambda b: b.find_element(By.ID, "datasets-error").is_displayed()
    )
    refusal = text_of(browser, "datasets-error")
    detail = server.http.delete(f"/datasets/{dataset['id']}").json()["detail"]
    assert "(HTTP 409)" in refusal
    assert detail in refusal
    server.http.post(f"/jobs/{busy['id']}/cancel")
    server.wait_for_job(busy["id"])
    browser.find_element(By.CSS_SELECTOR, "#datasets button.delete").click()
    accept_confirmation(browser)
    WebDriverWait(browser, 10).until(lambda b: text_of(b, "datasets-status").startswith("Deleted"))
    assert browser.find_elements(By.CSS_SELECTOR, "#datasets tr[data-dataset]") == []
    assert not browser.find_element(By.ID, "datasets-error").is_displayed()

    assert cut_columns(browser) == []
    assert console_errors(browser, allowed=("401", "409")) == []
