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

from tests.api.browser import chromium, console_errors, readme_picture, text_of
from tests.conftest import TestClient, long_body

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
    for asset in ("/static/dashboard/dashboard.js", "/static/dashboard/dashboard.css"):
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
        assert cells[2:4] == ["hello", "succeeded"]
        assert f"lr {job['hyperparameters']['learning_rate']}" in cells[4]
        assert cells[5] == "15 / 15"
        history = server.http.get(f"/jobs/{job['id']}/epochs").json()["items"]
        losses = [epoch["loss"] for epoch in history]
        assert float(cells[6]) == pytest.approx(losses[-1], rel=1e-3)
        assert float(cells[7]) == pytest.approx(min(losses), rel=1e-3)
        assert cells[9].endswith(" s")
    assert "1–3 of 3 jobs" in browser.find_element(By.ID, "page-label").text
    assert not browser.find_element(By.ID, "next-page").is_enabled()

    # live: the running job's row follows its epochs without a reload
    def epochs_done(b: WebDriver) -> int:
        cells = cells_of(b, running["id"])
        return int(cells[5].split(" / ")[0]) if cells[3] == "running" else 0

    first = WebDriverWait(browser, 30).until(epochs_done)
    WebDriverWait(browser, 10).until(lambda b: epochs_done(b) > first)
    assert cells_of(browser, running["id"])[6] != "–"  # its loss so far

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
