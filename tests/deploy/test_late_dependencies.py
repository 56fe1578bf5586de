"""The database and Redis come up after the API and the workers, as containers may.

The API waits for a private PostgreSQL started a few seconds after it (tests/postgres.py),
one that asks for a password, given as a file; a ``charnn worker`` waits for a private
Redis started late, and gives up after CHARNN_STARTUP_WAIT_SECONDS when none comes.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    TEST_SETTINGS,
    LiveServer,
    RedisServer,
    ServiceProcess,
    charnn_command,
    charnn_environment,
    hello_body,
    wait_for_job,
    wait_for_workers,
)
from tests.postgres import PrivateCluster

PASSWORD = "late-but-secret"
LATE_SECONDS = 2.0  # how long the dependency stays away once the process waits for it


def wait_for_line(service: LiveServer | ServiceProcess, line: str, timeout: float = 30.0) -> None:
    """Until ``service`` logs ``line``; it must not exit meanwhile."""
    deadline = time.monotonic() + timeout
    while line not in service.log:
        assert service.process.poll() is None, f"it exited:\n{service.log}"
        assert time.monotonic() < deadline, f"never logged {line!r}:\n{service.log}"
        time.sleep(0.1)


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    """A private PostgreSQL that asks for PASSWORD, initialised but not started."""
    cluster = PrivateCluster(password=PASSWORD)
    try:
        cluster.init()
        yield cluster
        if (cluster.data / "postmaster.pid").exists():  # started
            cluster.stop()
    finally:
        cluster.remove()


def test_the_api_waits_for_a_database_that_starts_after_it(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    settings = {"database_url": cluster.url, "database_password_file": password_file}
    server = LiveServer(tmp_path / "store", settings, tmp_path / "api.log")
    try:
        wait_for_line(server, "the database does not answer yet (OperationalError)")
        time.sleep(LATE_SECONDS)
        cluster.start()
        server.wait_ready(timeout=30)

        # the job's worker process connects too, with the password the API handed it
        job = wait_for_job(server.http, server.http.post("/train", json=hello_body()).json()["id"])
        assert (job["status"], job["error"]) == ("succeeded", None)
    finally:
        server.stop()
    assert PASSWORD not in server.log_path.read_text()


def start_worker(directory: Path, redis: RedisServer, **settings: object) -> ServiceProcess:
    env = charnn_environment(
        {
            "store_dir": directory / "store",
            **TEST_SETTINGS,
            "job_backend": "rq",
            "redis_url": redis.url,
            **settings,
        }
    )
    command = [*charnn_command(), "worker", "--queue", "cpu"]
    return ServiceProcess(command, env, directory / "worker.log")


def test_a_worker_waits_for_a_redis_that_starts_after_it(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    worker = start_worker(tmp_path, redis)
    try:
        wait_for_line(worker, "Redis does not answer yet (ConnectionError)")
        time.sleep(LATE_SECONDS)
        redis.start()

        wait_for_workers(redis.url, [worker], timeout=30)
        assert "consuming charnn" in worker.log
    finally:
        worker.stop()
        redis.stop()


def test_a_worker_gives_up_once_the_wait_is_over(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")  # never started
    worker = start_worker(tmp_path, redis, startup_wait_seconds=1)
    try:
        assert worker.process.wait(timeout=30) == 1
    finally:
        worker.stop()
    assert "Redis does not answer yet (ConnectionError); trying again in 0.5 s" in worker.log
    assert "error: Redis did not answer within CHARNN_STARTUP_WAIT_SECONDS" in worker.log


def test_a_waiting_worker_stops_at_once_on_sigterm(tmp_path: Path) -> None:
    # exit status 143 (128 + SIGTERM) comes from charnn's own handler: as a container's
    # first process, a process without one ignores SIGTERM, and `docker stop` would wait
    # out its grace period
    redis = RedisServer(tmp_path / "redis")  # never started
    worker = start_worker(tmp_path, redis)
    try:
        wait_for_line(worker, "Redis does not answer yet (ConnectionError)")
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=5) == 128 + signal.SIGTERM
    finally:
        worker.stop()
