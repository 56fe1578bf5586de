"""The compose deployment as it ships, in real containers: built, started, used, broken.

One deployment (``deployment`` fixture: the README's set-up block, from nothing) serves the
tests below in order; each breaks something the way production does (a worker killed, Redis
restarted, PostgreSQL stopped, the whole stack taken down) and checks that nothing is lost
and that the deployment heals itself, leaving every service healthy for the next.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.conftest import hello_body, long_body
from tests.containers.deployment import IMAGE, Deployment

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]


def train(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/train", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def wait_until(condition: Any, timeout: float, what: str, deployment: Deployment) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout} s\n{deployment.diagnosis()}")


def job_owner_container(deployment: Deployment, job_id: str) -> str | None:
    """The worker container holding a job's lease (``rq:<hostname>:<pid>:…``)."""
    owner = deployment.psql(f"SELECT lease_owner FROM jobs WHERE id = '{job_id}'")
    if not owner.startswith("rq:"):
        return None
    hostname = owner.split(":")[1]
    for name in deployment.containers("worker"):
        if deployment.hostname(name) == hostname:
            return name
    return None


def test_up_from_nothing_serves_the_tutorial_with_a_key_from_secrets(
    deployment: Deployment,
) -> None:
    statuses = deployment.statuses()
    assert {name.rsplit("_", 1)[0].split("_", 1)[1] for name in statuses} == {
        "proxy",
        "api",
        "worker",
        "redis",
        "postgres",
    }
    assert all("(healthy)" in status for status in statuses.values()), statuses
    assert len(deployment.containers("worker")) == 2  # deploy.replicas

    printed = deployment.run_readme("/predict")

    assert "event: end" in printed
    assert '"status":"succeeded"' in printed
    assert '"outputs":["ohlol"]' in printed
    # the key is what lets it in: without it, or with the predict key for training, no
    with httpx.Client(base_url=f"http://localhost:{deployment.port}") as anonymous:
        assert anonymous.get("/models").status_code == 401
    with deployment.client("predict") as reader:
        assert reader.post("/train", json=hello_body()).status_code == 403
        assert [m["latest_version"] for m in reader.get("/models").json()] == [1]


def test_containers_run_unprivileged_on_a_writable_store_with_the_image_health_check(
    deployment: Deployment,
) -> None:
    for service in ("api", "worker"):
        container = deployment.container(service)
        assert deployment.exec(container, "id", "-u").strip() == "10001"
        deployment.exec(container, "touch", "/data/models_store/.written-by-test")
        deployment.exec(container, "rm", "/data/models_store/.written-by-test")
        # secrets are files, never environment
        environment = deployment.exec(container, "env")
        assert deployment.api_key() not in environment
        password = (deployment.workdir / "secrets" / "postgres_password").read_text()
        assert password not in environment

    image = json.loads(deployment.podman.run("image", "inspect", IMAGE))[0]
    check = image.get("Healthcheck")  # docker format: the OCI format has no health checks
    assert check, image
    assert check["Test"][1:] == [
        "charnn",
        "check",
        "--url",
        "http://127.0.0.1:8000/readyz",
    ]
    assert deployment.exec(deployment.container("api"), *check["Test"][1:]).strip() == "ok"


def test_scaled_workers_take_jobs_and_api_replicas_share_requests(
    deployment: Deployment,
) -> None:
    deployment.run_readme("--scale worker=3")
    workers = deployment.containers("worker")
    assert len(workers) == 3
    assert len(deployment.containers("api")) == 2

    with deployment.client() as client:
        jobs = [train(client, long_body(f"scale-{n}", 40, characters=4000)) for n in range(3)]

        def one_worker_each() -> set[str | None] | None:
            found = {job_owner_container(deployment, job) for job in jobs}
            return found if None not in found and len(found) == 3 else None

        owners = wait_until(
            one_worker_each,
            120,
            "three jobs running at once, one per worker",
            deployment,
        )
        assert owners == set(workers)
        for job in jobs:
            client.post(f"/jobs/{job}/cancel")
        for job in jobs:
            deployment.wait_job(client, job)

        for _ in range(20):
            assert client.get("/models").status_code == 200
    served = [
        deployment.podman.logs(api).count('"GET /models HTTP/1.1" 200')
        for api in deployment.containers("api")
    ]
    assert all(count > 0 for count in served), f"requests per replica: {served}"


def test_a_worker_killed_mid_epoch_hands_its_job_to_another_exactly_once(
    deployment: Deployment,
) -> None:
    with deployment.client() as client:
        job = train(client, long_body("killed", epochs=12, characters=8000))
        victim = wait_until(
            lambda: (
                job_owner_container(deployment, job)
                if client.get(f"/jobs/{job}").json()["epoch"] >= 2
                else None
            ),
            120,
            "the job running past its second epoch",
            deployment,
        )

        deployment.crash(victim)
        finished = deployment.wait_job(client, job)

        assert finished["status"] == "succeeded", finished
        assert finished["attempts"] == 2
        assert finished["version"] == 1
        history = client.get(f"/jobs/{job}/epochs", params={"limit": 100}).json()["items"]
        assert [epoch["epoch"] for epoch in history] == list(range(1, 13))
        assert {epoch["attempt"] for epoch in history} == {1, 2}  # resumed, not restarted
        assert [v["version"] for v in client.get("/models/killed").json()["versions"]] == [1]
    deployment.wait_healthy()  # the killed worker is back (restart: unless-stopped)


def test_redis_restarted_while_jobs_wait_every_job_still_ends(deployment: Deployment) -> None:
    with deployment.client() as client:
        jobs = [train(client, long_body(f"queued-{n}", 6, characters=2000)) for n in range(6)]

        deployment.compose("restart", "redis")

        ended = [deployment.wait_job(client, job) for job in jobs]
    assert [job["status"] for job in ended] == ["succeeded"] * 6, ended
    deployment.wait_healthy()


def test_postgres_stopped_for_20_seconds_gives_503_then_recovers(
    deployment: Deployment,
) -> None:
    with deployment.client() as client:
        deployment.compose("stop", "postgres")
        stopped = time.monotonic()
        try:
            refused = wait_until(
                lambda: (r := client.get("/models")).status_code == 503 and r,
                30,
                "503 while PostgreSQL is down",
                deployment,
            )
            assert refused.headers["Retry-After"].isdigit()
            assert "database" in refused.json()["detail"]
            time.sleep(max(0.0, 20 - (time.monotonic() - stopped)))
        finally:
            deployment.compose("start", "postgres")

        wait_until(
            lambda: client.get("/models").status_code == 200,
            60,
            "the API answering again after PostgreSQL is back",
            deployment,
        )
        assert deployment.wait_job(client, train(client, hello_body()))["status"] == "succeeded"
    deployment.wait_healthy()


def test_down_and_up_keeps_everything_and_down_v_removes_it(deployment: Deployment) -> None:
    def everything(client: httpx.Client) -> dict[str, Any]:
        models = client.get("/models").json()
        return {
            "models": models,
            "versions": {m["name"]: client.get(f"/models/{m['name']}").json() for m in models},
            "jobs": client.get("/jobs", params={"limit": 100}).json()["items"],
        }

    with deployment.client() as client:
        before = everything(client)
    assert len(before["models"]) >= 5
    assert before["jobs"]

    deployment.run_readme("docker compose down\n")  # then up again

    with deployment.client() as client:
        assert everything(client) == before
        assert client.post("/predict", json={"model_name": "hello", "inputs": ["hello"]}).json()[
            "outputs"
        ] == ["ohlol"]

    deployment.run_readme("down -v")

    assert deployment.statuses() == {}
    volumes = deployment.podman.run("volume", "ls", "--format", "{{.Name}}").split()
    assert not [name for name in volumes if name.startswith(f"{deployment.project}_")], volumes
