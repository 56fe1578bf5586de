"""One compose deployment of the tests: a copy of the project, its containers, its client.

The copy holds what ``git`` tracks (and what it would, not yet committed) plus the
wheelhouse, so the build sees exactly a clean clone's context, and the user's own ``.env``
and ``secrets/`` are never touched. The README's compose section runs there as a user
runs it; the tests' only changes are environment variables, which Compose reads before
``.env``: a project name and a free port of their own, the images built here, and a short
job lease so that a killed worker's job is taken over in seconds, not a minute.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.containers.engine import Podman
from tests.containers.images import PYTHON_BASE, STANDIN_TAGS

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SHIM = Path(__file__).resolve().parent / "compose-shim.sh"
IMAGE = "localhost/charnn:containers-test"
LEASE_SECONDS = 5


def compose_section() -> str:
    return README.read_text().split("## Scaled out: docker compose", 1)[1].split("\n## ", 1)[0]


def readme_blocks() -> list[str]:
    """The ``bash`` blocks of the README's compose section, in order."""
    return re.findall(r"```bash\n(.*?)```", compose_section(), re.DOTALL)


def readme_block(containing: str) -> str:
    found = [block for block in readme_blocks() if containing in block]
    assert len(found) == 1, f"one compose block of the README runs {containing!r}: {found}"
    return found[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def copy_project(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, (item.decode() for item in listed)):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    for wheel in (ROOT / "wheelhouse").glob("*.whl"):
        os.link(wheel, target / "wheelhouse" / wheel.name)  # hundreds of MB: no copies


class Deployment:
    def __init__(self, podman: Podman, docker_host: str, workdir: Path, project: str) -> None:
        self.podman, self.workdir, self.project = podman, workdir, project
        self.port = free_port()
        self.env = {
            **podman.env,
            "DOCKER_HOST": docker_host,
            "COMPOSE_PROJECT_NAME": project,
            "CHARNN_PORT": str(self.port),
            "CHARNN_BASE_IMAGE": PYTHON_BASE.tag,
            "CHARNN_WHEELS_ONLY": "1",
            "CHARNN_IMAGE": IMAGE,
            "CHARNN_REDIS_IMAGE": STANDIN_TAGS["redis"],
            "CHARNN_POSTGRES_IMAGE": STANDIN_TAGS["postgres"],
            "CHARNN_PROXY_IMAGE": STANDIN_TAGS["proxy"],
            "CHARNN_LEASE_SECONDS": str(LEASE_SECONDS),
        }

    # --- running commands ---------------------------------------------------------------

    def run_readme(self, containing: str, timeout: float = 600) -> str:
        """Runs the README's compose block that contains ``containing``, as a user would
        (``localhost:8000`` is this deployment's port); returns what it printed."""
        script = readme_block(containing).replace("localhost:8000", f"localhost:{self.port}")
        return self.bash(script, timeout)

    def bash(self, script: str, timeout: float = 600) -> str:
        result = subprocess.run(
            ["bash", "-c", f"set -euo pipefail\nsource {SHIM}\n{script}"],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, (
            f"exit {result.returncode}\n{script}\n--- stderr\n{result.stderr[-6000:]}"
            f"\n--- stdout\n{result.stdout[-3000:]}\n{self.diagnosis()}"
        )
        return result.stdout

    def compose(self, *args: str, timeout: float = 300) -> str:
        return self.bash("docker compose " + " ".join(args), timeout)

    # --- looking at the containers -------------------------------------------------------

    def containers(self, service: str | None = None) -> list[str]:
        """Names of the project's running containers (of one service), in name order."""
        filters = ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        listed = self.podman.run("ps", *filters, "--format", "{{.Names}}")
        return sorted(listed.split())

    def container(self, service: str) -> str:
        return self.containers(service)[0]

    def statuses(self) -> dict[str, str]:
        listed = self.podman.run(
            "ps",
            "-a",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--format",
            "{{.Names}}\t{{.Status}}",
        )
        return dict(line.split("\t", 1) for line in listed.splitlines() if "\t" in line)

    def exec(self, container: str, *command: str, user: str | None = None) -> str:
        as_user = ["--user", user] if user else []
        return self.podman.run("exec", *as_user, container, *command)

    def psql(self, query: str) -> str:
        return self.exec(
            self.container("postgres"), "psql", "-U", "charnn", "-d", "charnn", "-Atc", query
        ).strip()

    def hostname(self, container: str) -> str:
        return str(self.podman.inspect(container)["Config"]["Hostname"])

    def wait_healthy(self, timeout: float = 180) -> None:
        """Until every container is up and healthy; one that exited may come back by its
        restart policy meanwhile (``up --wait`` would give up on it at once)."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = self.statuses()
            if all(s.startswith("Up") and "(healthy)" in s for s in statuses.values()):
                return
            assert time.monotonic() < deadline, f"not healthy: {statuses}\n{self.diagnosis()}"
            time.sleep(1)

    def crash(self, container: str) -> None:
        """SIGKILL to the container's process from outside, as the kernel's OOM killer or a
        crash ends it: unlike ``docker kill``, not a stop that restart policies respect."""
        pid = self.podman.inspect(container)["State"]["Pid"]
        os.kill(pid, signal.SIGKILL)

    def diagnosis(self, lines: int = 25) -> str:
        """What a failed test shows: every container's status and the end of its log."""
        parts = []
        for name, status in self.statuses().items():
            log = self.podman.logs(name, tail=lines)
            parts.append(f"--- {name}: {status}\n{log}")
        return "\n".join(parts)

    # --- talking to the API ----------------------------------------------------------------

    def api_key(self, scope: str = "admin") -> str:
        keys = (self.workdir / "secrets" / "api_keys").read_text()
        return dict(entry.split(":", 1) for entry in keys.split(","))[scope]

    @contextmanager
    def client(self, scope: str = "admin") -> Iterator[httpx.Client]:
        with httpx.Client(
            base_url=f"http://localhost:{self.port}",
            headers={"Authorization": f"Bearer {self.api_key(scope)}"},
            timeout=30,
        ) as client:
            yield client

    def wait_job(self, client: httpx.Client, job_id: str, timeout: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = client.get(f"/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return dict(job)
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} did not end in {timeout} s: {job}\n{self.diagnosis()}")

    def image_report(self) -> dict[str, Any]:
        image = json.loads(self.podman.run("image", "inspect", IMAGE))[0]
        return {"image": IMAGE, "size_mb": round(image["Size"] / 1e6, 1)}
