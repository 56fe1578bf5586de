"""API keys and scopes: who may do what.

With ``CHARNN_API_KEYS`` set, a ``predict`` key predicts, generates, evaluates and reads; an
``admin`` key may also train, cancel, delete and import. Health, docs and the playground stay open.
Without keys, only clients on loopback are served (unless explicitly allowed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app.main import create_app
from app.ml.checkpoint import Checkpoint
from app.settings import Settings
from tests.conftest import TestClient

ADMIN_KEY = "admin-key-0123456789abcdef"
PREDICT_KEY = "predict-key-0123456789abcdef"
KEYS = f"admin:{ADMIN_KEY},predict:{PREDICT_KEY}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(
    make_settings: Callable[..., Settings],
    publish: Callable[[str, Checkpoint], int],
    hello_model: Checkpoint,
) -> Iterator[TestClient]:
    """A service with an admin and a predict key, holding a trained "hello"."""
    publish("hello", hello_model)
    with TestClient(create_app(make_settings(api_keys=KEYS))) as client:
        yield client


PREDICT = ("POST", "/predict", {"model_name": "hello", "inputs": ["hello"]})
EVALUATE = (
    "POST",
    "/models/hello/versions/1/evaluate",
    {"data": {"pairs": [{"input": "hello", "target": "ohlol"}]}},
)
READS = [
    ("GET", "/models", None),
    ("GET", "/jobs", None),
    ("GET", "/models/hello", None),
    ("GET", "/datasets", None),
]


@pytest.mark.parametrize(("method", "path", "body"), [PREDICT, EVALUATE, *READS])
def test_reading_and_predicting_need_a_key(
    keyed: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = keyed.request(method, path, json=body)

    assert response.status_code == 401
    assert response.json() == {"detail": "missing API key: send 'Authorization: Bearer <key>'"}
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "body"), [PREDICT, EVALUATE, *READS])
def test_a_predict_key_predicts_and_reads(
    keyed: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    assert keyed.request(method, path, json=body, headers=bearer(PREDICT_KEY)).status_code == 200


def test_a_wrong_key_is_refused(keyed: TestClient) -> None:
    response = keyed.get("/models", headers=bearer(PREDICT_KEY + "x"))

    assert response.status_code == 401
    assert response.json() == {"detail": "invalid API key"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/train"),
        ("DELETE", "/models/hello"),
        ("DELETE", "/models/hello/versions/1"),
        ("POST", "/jobs/0123456789abcdef0123456789abcdef/cancel"),
        ("POST", "/datasets"),
        ("DELETE", "/datasets/0123456789abcdef0123456789abcdef"),
    ],
)
def test_a_predict_key_cannot_change_anything(keyed: TestClient, method: str, path: str) -> None:
    response = keyed.request(method, path, json={}, headers=bearer(PREDICT_KEY))

    assert response.status_code == 403
    assert response.json() == {"detail": "this API key lacks the 'admin' scope"}


def test_an_admin_key_trains_and_deletes(keyed: TestClient, hello: dict[str, Any]) -> None:
    trained = keyed.post("/train", json=hello, headers=bearer(ADMIN_KEY))
    deleted = keyed.delete("/models/hello/versions/1", headers=bearer(ADMIN_KEY))

    assert trained.status_code == 202
    assert deleted.status_code in (204, 409)  # 409: the new job may already train "hello"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/docs", "/openapi.json", "/"])
def test_health_docs_and_playground_stay_open(keyed: TestClient, path: str) -> None:
    assert keyed.get(path).status_code == 200


def test_swagger_knows_the_bearer_scheme(keyed: TestClient) -> None:
    schema = keyed.get("/openapi.json").json()

    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {"HTTPBearer": []} in schema["paths"]["/predict"]["post"]["security"]


def test_without_keys_only_loopback_clients_are_served(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings())
    with TestClient(app, client=("203.0.113.7", 40000)) as remote:
        response = remote.get("/models")

    assert response.status_code == 403
    assert response.json()["detail"].startswith(
        "this charnn has no API keys, so it serves clients on this machine only"
    )


def test_serving_everyone_without_keys_must_be_asked_for(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(allow_unauthenticated=True))
    with TestClient(app, client=("203.0.113.7", 40000)) as remote:
        assert remote.get("/models").status_code == 200


@pytest.mark.parametrize(
    "keys", ["admin:short", "owner:0123456789abcdefgh", "admin:change-me-please"]
)
def test_weak_or_malformed_keys_stop_the_service_without_printing_them(keys: str) -> None:
    with pytest.raises(ValueError, match="api_keys") as refused:
        Settings(api_keys=keys)

    assert keys.split(":")[1] not in str(refused.value)


def test_the_cli_refuses_to_listen_beyond_loopback_without_keys() -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])

    assert result.exit_code == 2
    assert "refusing to listen on 0.0.0.0" in result.output
