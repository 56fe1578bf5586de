"""Fixtures of the container tests: the engine, the images, and one deployment for all.

The deployment is brought up once, by the README's own commands, and the tests then run
in file order against it, each leaving it whole (every service healthy) for the next.
How long the images took to build, how big charnn's image is and how long ``up`` took to
reach healthy go to ``test-artifacts/containers.json`` and the end of pytest's report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.containers import images
from tests.containers.deployment import ROOT, Deployment, copy_project
from tests.containers.engine import HealthChecks, Podman

REPORT = ROOT / "test-artifacts" / "containers.json"
LOGS = ROOT / "test-artifacts" / "containers.log"  # the containers' last words, on failure
measured: dict[str, Any] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test leaves every container's status and last log lines in LOGS."""
    report = yield
    deployment = getattr(item, "funcargs", {}).get("deployment")
    if report.failed and isinstance(deployment, Deployment):
        LOGS.parent.mkdir(exist_ok=True)
        with LOGS.open("a") as log:
            log.write(f"===== {item.name} ({report.when})\n{deployment.diagnosis(lines=200)}\n")
    return report


@pytest.fixture(scope="session")
def podman() -> Iterator[Podman]:
    engine = Podman()
    engine.start_api()
    yield engine
    engine.stop_api()


@pytest.fixture(scope="module")
def deployment(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    LOGS.unlink(missing_ok=True)
    started = time.monotonic()
    images.build_all(podman)
    measured["base_images_and_standins_seconds"] = round(time.monotonic() - started, 1)

    workdir = tmp_path_factory.mktemp("compose")
    copy_project(workdir)
    project = f"charnntest{workdir.name[-4:].strip('_')}".lower()
    deployment = Deployment(podman, f"unix://{podman.socket}", workdir, project)
    deployment.env["CHARNN_TEST_TIMINGS"] = str(workdir / "timings")
    health = HealthChecks(podman, project)
    health.start()
    try:
        deployment.run_readme("compose-secrets.sh", timeout=900)
        for line in (workdir / "timings").read_text().splitlines():
            command, seconds = line.split()
            measured[f"compose_{command}_seconds"] = round(float(seconds), 1)
        measured.update(deployment.image_report())
        yield deployment
    finally:
        health.stop()
        deployment.bash("docker compose down -v --remove-orphans || true", timeout=300)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not measured:
        return
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(measured, indent=2) + "\n")
    terminalreporter.write_sep("-", "container deployment")
    for key, value in measured.items():
        terminalreporter.write_line(f"{key}: {value}")
