"""Liveness and readiness: GET /healthz and GET /readyz."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_healthz_answers_while_the_process_runs(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {}}


def test_readyz_checks_registry_store_and_runner(client: TestClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"registry": "ok", "store": "ok", "runner": "ok"},
    }


def test_readyz_is_unavailable_once_the_runner_stopped(client: TestClient) -> None:
    client.app.state.services.runner.stop()  # type: ignore[attr-defined]

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"registry": "ok", "store": "ok", "runner": "stopped"},
    }
