"""The container engine of the tests: Debian's podman, and Compose talking to it.

Podman needs two settings on these machines, in a ``containers.conf`` of the tests' own
(``CONTAINERS_CONF``): no default rlimits (setting them is refused here) and the ``runc``
runtime (``crun`` fails on this kernel's cgroups); netavark networks give the containers
each other's names; logs go to files (``k8s-file``: the default, journald, keeps nothing
on machines without systemd).

Compose is Docker's own client (``docker-compose``, Compose v1) against podman's
Docker-compatible API (``podman system service`` on a socket of the tests' own). It honours
the file's ``depends_on: condition: service_healthy``; but podman 4.3 runs a container's
health check only when asked (it leaves the schedule to systemd, which these machines lack),
so ``HealthChecks`` asks for every container of the project every few seconds, as a Docker
engine would by itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

CONTAINERS_CONF = """\
[containers]
default_ulimits = []
log_driver = "k8s-file"

[engine]
runtime = "runc"

[network]
network_backend = "netavark"
"""


class EngineError(RuntimeError):
    pass


class Podman:
    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="charnn-podman-"))
        (self.home / "containers.conf").write_text(CONTAINERS_CONF)
        self.socket = self.home / "podman.sock"
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.home / "containers.conf")}
        self.service: subprocess.Popen[bytes] | None = None

    def run(self, *args: str, stdin: IO[bytes] | None = None, check: bool = True) -> str:
        result = subprocess.run(
            ["podman", *args], env=self.env, stdin=stdin, capture_output=True, text=False
        )
        out = result.stdout.decode(errors="replace")
        if check and result.returncode != 0:
            err = result.stderr.decode(errors="replace")
            raise EngineError(f"podman {' '.join(args)}: exit {result.returncode}\n{err}{out}")
        return out

    def label(self, image: str, key: str) -> str | None:
        found = json.loads(self.run("image", "inspect", image, check=False) or "[]")
        if not found:
            return None
        labels = found[0].get("Labels") or {}
        value = labels.get(key)
        return str(value) if value is not None else None

    def logs(self, name: str, tail: int | None = None) -> str:
        """A container's output, stdout and stderr together (podman logs keeps them apart,
        and Python's logging writes to stderr)."""
        last = ["--tail", str(tail)] if tail is not None else []
        result = subprocess.run(
            ["podman", "logs", *last, name],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        return result.stdout.decode(errors="replace")

    def inspect(self, name: str) -> dict[str, Any]:
        return dict(json.loads(self.run("container", "inspect", name))[0])

    def start_api(self) -> str:
        """Serve the Docker-compatible API; returns its DOCKER_HOST."""
        with open(self.home / "service.log", "wb") as log:  # the service keeps its own copy
            self.service = subprocess.Popen(
                ["podman", "system", "service", "--time=0", f"unix://{self.socket}"],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            if self.service.poll() is not None or time.monotonic() > deadline:
                raise EngineError(f"podman system service did not start: {self.service_log()}")
            time.sleep(0.1)
        return f"unix://{self.socket}"

    def service_log(self) -> str:
        return (self.home / "service.log").read_text(errors="replace")[-4000:]

    def stop_api(self) -> None:
        if self.service is not None:
            self.service.terminate()
            self.service.wait(timeout=30)


class HealthChecks(threading.Thread):
    """Runs the health check of every running container of a project every ``interval``
    seconds, as the engine's scheduler would, so that its status (and Compose's
    ``service_healthy``) follows the containers."""

    def __init__(self, podman: Podman, project: str, interval: float = 2.0) -> None:
        super().__init__(daemon=True, name=f"health-{project}")
        self.podman, self.project, self.interval = podman, project, interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            for name in self.containers_with_checks():
                # exit 1 means unhealthy, which is news for the status, not for us
                self.podman.run("healthcheck", "run", name, check=False)

    def containers_with_checks(self) -> list[str]:
        listed = self.podman.run(
            "ps",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--format",
            "{{.Names}} {{.Status}}",
            check=False,
        )
        # podman marks a container that has a health check in its status: "(healthy)",
        # "(unhealthy)" or "(starting)"
        return [line.split()[0] for line in listed.splitlines() if "(" in line]

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


def command_line(args: Sequence[str]) -> str:
    return " ".join(args)
