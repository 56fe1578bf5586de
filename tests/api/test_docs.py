"""The API documents itself, with no internet: /docs, /redoc and /openapi.json.

Every script, style and icon of the two documentation pages is served by the app
itself, and every request body in the OpenAPI schema carries an example that works.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.ml.checkpoint import Checkpoint


@pytest.fixture
def openapi(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    return schema


def json_examples(openapi: dict[str, Any]) -> dict[str, list[Any]]:
    """``{"POST /train": [example, ...]}`` for every JSON request body."""
    found = {}
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                ref = content["application/json"]["schema"]["$ref"]
                schema = openapi["components"]["schemas"][ref.rsplit("/", 1)[1]]
                found[f"{method.upper()} {path}"] = schema.get("examples", [])
    return found


@pytest.mark.parametrize(
    ("page", "title"), [("/docs", "charnn - Swagger UI"), ("/redoc", "charnn - ReDoc")]
)
def test_documentation_pages_load_everything_from_the_app(
    client: TestClient, page: str, title: str
) -> None:
    response = client.get(page)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert f"<title>{title}</title>" in response.text
    assert "http://" not in response.text
    assert "https://" not in response.text
    links = re.findall(r'(?:src|href)="([^"]*)"', response.text)
    assert links  # the page has its scripts and styles...
    for link in links:
        assert link.startswith("/static/docs/")  # ...all on this server...
        assert client.get(link).status_code == 200  # ...and they are there


def test_swagger_ui_gets_the_schema_and_its_oauth2_redirect_from_the_app(
    client: TestClient,
) -> None:
    page = client.get("/docs").text

    assert "url: '/openapi.json'" in page
    assert "oauth2RedirectUrl: window.location.origin + '/docs/oauth2-redirect'" in page
    assert client.get("/docs/oauth2-redirect").status_code == 200


def test_every_json_request_body_has_an_example(openapi: dict[str, Any]) -> None:
    examples = json_examples(openapi)

    assert set(examples) == {
        "POST /train",
        "POST /predict",
        "POST /generate",
        "POST /models/{name}/versions/{version}/evaluate",
    }
    assert all(examples.values()), examples


def test_the_train_predict_and_evaluate_examples_work_as_they_are(
    client: TestClient, openapi: dict[str, Any], wait_for_job: Callable[..., dict[str, Any]]
) -> None:
    examples = json_examples(openapi)

    response = client.post("/train", json=examples["POST /train"][0])

    assert response.status_code == 202
    assert wait_for_job(client, response.json()["id"])["status"] == "succeeded"
    response = client.post("/predict", json=examples["POST /predict"][0])
    assert response.status_code == 200
    assert response.json()["outputs"] == ["ohlol"]
    evaluate = examples["POST /models/{name}/versions/{version}/evaluate"][0]
    response = client.post("/models/hello/versions/1/evaluate", json=evaluate)
    assert response.status_code == 200
    assert response.json()["char_accuracy"] == 1.0


def test_the_generate_example_works_on_a_text_model(
    client: TestClient,
    openapi: dict[str, Any],
    publish: Callable[[str, Checkpoint], int],
    fox_model: Checkpoint,
) -> None:
    example = json_examples(openapi)["POST /generate"][0]
    publish(example["model_name"], fox_model)

    response = client.post("/generate", json=example)

    assert response.status_code == 200
    text = response.json()["text"]
    assert text.startswith(example["prompt"])
    assert len(text) == len(example["prompt"]) + example["length"]


def test_redoc_shows_no_logo_from_a_cdn(client: TestClient) -> None:
    bundle = client.get("/static/docs/redoc.standalone.js")

    assert bundle.status_code == 200
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert "cdn." not in bundle.text  # the only address it would fetch by itself
    assert "API docs by Redocly" in bundle.text  # still ReDoc, credits and all


def test_swagger_ui_asks_no_validator_for_a_badge(client: TestClient) -> None:
    assert '"validatorUrl": null' in client.get("/docs").text
