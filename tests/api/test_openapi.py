"""The OpenAPI schema tells the truth about this deployment, and the service honours it.

The fuzzer (tests/fuzz) checks this broadly; these pin down each rule quickly: the
configured limits are the schema's bounds, JSON types are JSON Schema's (``false`` is
no integer, ``49.0`` is one), cross-field rules are in the schema where JSON Schema can
say them, a 405 names every method of its path, and without keys nothing asks for one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from app.main import create_app
from app.settings import Settings
from tests.conftest import TestClient

Body = dict[str, Any]


def openapi_of(settings: Settings) -> Body:
    schema: Body = create_app(settings).openapi()
    return schema


def components(schema: Body) -> Body:
    found: Body = schema["components"]["schemas"]
    return found


def test_the_configured_limits_are_the_schemas_bounds(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(max_hidden_size=32, max_predict_inputs=16, max_generate_length=200)
    schemas = components(openapi_of(settings))

    hyperparameters = schemas["TrainingHyperparameters"]["properties"]
    # null, or an integer (null where the architecture has no such size)
    integers, null = hyperparameters["hidden_size"]["anyOf"]
    assert (integers["maximum"], null) == (32, {"type": "null"})
    assert "CHARNN_MAX_HIDDEN_SIZE" in integers["description"]
    assert hyperparameters["epochs"]["maximum"] == 10_000
    [responses, _] = schemas["Hyperparameters"]["properties"]["hidden_size"]["anyOf"]
    assert responses["maximum"] == 4096
    assert schemas["PredictRequest"]["properties"]["inputs"]["maxItems"] == 16
    assert schemas["GenerateRequest"]["properties"]["length"]["maximum"] == 200


def test_a_limit_below_a_default_makes_the_hyperparameter_required(
    make_settings: Callable[..., Settings],
) -> None:
    schema = openapi_of(make_settings(max_epochs=5))
    train, hyperparameters = components(schema)["TrainRequest"], "TrainingHyperparameters"

    assert "hyperparameters" in train["required"]
    assert components(schema)[hyperparameters]["required"] == ["epochs"]
    assert train["examples"][0]["hyperparameters"]["epochs"] == 5  # the example still works


def test_bounds_are_integers_and_json_schema_keywords(client: TestClient) -> None:
    text = client.get("/openapi.json").text

    assert '"minimum":1.0' not in text.replace(" ", "")
    for keyword in ('"ge"', '"le"', '"gt"', '"lt"'):  # pydantic's names, unknown to JSON Schema
        assert keyword not in text


def test_vocabularies_are_distinct_single_characters_in_the_schema(client: TestClient) -> None:
    vocab = components(client.get("/openapi.json").json())["Vocab"]["properties"]["input"]

    assert vocab["items"] == {"type": "string", "minLength": 1, "maxLength": 1}
    assert vocab["uniqueItems"] is True


def test_only_the_devices_of_this_machine_are_offered(client: TestClient, hello: Body) -> None:
    device = components(client.get("/openapi.json").json())["TrainRequest"]["properties"]["device"]

    assert device["anyOf"][0]["enum"][:2] == ["auto", "cpu"]
    if "cuda" not in device["anyOf"][0]["enum"]:
        response = client.post("/train", json={**hello, "device": "cuda"})
        assert response.status_code == 422  # the request's mistake, not the service's
        assert response.json()["detail"][0]["loc"] == ["body", "device"]


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        ({"seed": False}, "int_type"),
        ({"epochs": "5"}, "int_type"),
        ({"dropout": True}, "float_type"),
    ],
)
def test_json_values_of_the_wrong_type_are_refused(
    client: TestClient, hello: Body, values: Body, kind: str
) -> None:
    body = {**hello, "hyperparameters": {**hello["hyperparameters"], **values}}

    response = client.post("/train", json=body)

    assert response.status_code == 422
    assert [e["type"] for e in response.json()["detail"]] == [kind]


def test_an_integral_number_is_an_integer(client: TestClient, hello: Body) -> None:
    body = {**hello, "hyperparameters": {**hello["hyperparameters"], "hidden_size": 12.0}}

    response = client.post("/train", json=body)

    assert response.status_code == 202, response.text
    assert response.json()["hyperparameters"]["hidden_size"] == 12


def test_the_hyperparameter_rules_are_in_the_schema(client: TestClient) -> None:
    schemas = components(client.get("/openapi.json").json())
    rules = schemas["Hyperparameters"]["allOf"]

    assert rules[0]["then"]["properties"] == {"architecture": {"const": "embedding_rnn"}}
    assert rules[1]["then"]["properties"]["num_layers"] == {"minimum": 2}
    assert schemas["TrainRequest"]["allOf"][0]["if"]["properties"]["data"] == {"required": ["text"]}


def test_a_wrong_method_is_answered_with_every_method_of_the_path(client: TestClient) -> None:
    response = client.request("OPTIONS", "/models/hello")

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, DELETE"


def test_errors_are_documented_as_json_even_where_success_is_not(client: TestClient) -> None:
    metrics = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]["responses"]

    assert list(metrics["200"]["content"]) == ["text/plain"]
    assert list(metrics["403"]["content"]) == ["application/json"]


def test_without_keys_no_operation_asks_for_one(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    assert "securitySchemes" not in schema["components"]
    for operations in schema["paths"].values():
        for operation in operations.values():
            assert "security" not in operation
            assert "401" not in operation["responses"]


OPERATION_IDS = {
    ("post", "/train"): "train",
    ("get", "/jobs"): "list_jobs",
    ("get", "/jobs/{job_id}"): "get_job",
    ("get", "/jobs/{job_id}/epochs"): "job_epochs",
    ("post", "/jobs/{job_id}/cancel"): "cancel_job",
    ("get", "/jobs/{job_id}/events"): "job_events",
    ("get", "/jobs/{job_id}/plot.svg"): "job_plot",
    ("post", "/predict"): "predict",
    ("post", "/generate"): "generate",
    ("get", "/models"): "list_models",
    ("get", "/models/{name}"): "get_model",
    ("delete", "/models/{name}"): "delete_model",
    ("post", "/models/{name}/versions"): "import_version",
    ("get", "/models/{name}/versions/{version}"): "get_version",
    ("delete", "/models/{name}/versions/{version}"): "delete_version",
    ("get", "/models/{name}/versions/{version}/files/{filename}"): "download_file",
    ("post", "/models/{name}/versions/{version}/evaluate"): "evaluate_version",
    ("get", "/healthz"): "healthz",
    ("get", "/readyz"): "readyz",
    ("get", "/metrics"): "metrics",
    ("post", "/datasets"): "upload_dataset",
    ("get", "/datasets"): "list_datasets",
    ("get", "/datasets/{dataset_id}"): "get_dataset",
    ("delete", "/datasets/{dataset_id}"): "delete_dataset",
}


def test_operation_ids_are_short_unique_and_stable(client: TestClient) -> None:
    # generated clients name their functions after these: a change breaks their callers
    schema = client.get("/openapi.json").json()
    ids = {
        (method, path): operation["operationId"]
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }

    assert ids == OPERATION_IDS
    assert len(set(ids.values())) == len(ids)
    assert all(re.fullmatch(r"[a-z][a-z_]{2,20}", name) for name in ids.values())


def test_every_schema_has_a_real_name(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    names = list(components(schema))
    body = schema["paths"]["/models/{name}/versions"]["post"]["requestBody"]["content"]

    assert [name for name in names if name.startswith("Body_")] == []
    assert body["multipart/form-data"]["schema"] == {"$ref": "#/components/schemas/VersionImport"}
    assert components(schema)["VersionImport"]["required"] == ["checkpoint", "weights"]
