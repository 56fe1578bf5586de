"""A PostgreSQL cluster of a test's own: initdb into a temporary directory, its own port
and socket directory, so stopping it (or starting it late) disturbs no one.

The shared server (``CHARNN_TEST_PG_URL``, see conftest.py) trusts every local
connection; a private cluster may instead ask for a password, so that a test can tell a
right password from a wrong one.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def postgres_bin() -> Path:
    """The directory of initdb and pg_ctl: CHARNN_TEST_PG_BIN, or the newest installed."""
    if given := os.environ.get("CHARNN_TEST_PG_BIN"):
        return Path(given)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    if initdb := shutil.which("initdb"):
        return Path(initdb).parent
    pytest.fail("PostgreSQL's initdb is not installed (apt-get install postgresql)", False)


class PrivateCluster:
    """A PostgreSQL cluster of this test's own on 127.0.0.1 and a free port.

    ``password``: the superuser ``postgres`` needs it (scram-sha-256); None: trust.
    ``url`` is the superuser's, without the password.
    """

    def __init__(self, password: str | None = None) -> None:
        self.bin = postgres_bin()
        self.password = password
        self.directory = Path(tempfile.mkdtemp(prefix="charnn-pg-"))
        self.data = self.directory / "data"
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = pwd.getpwnam("postgres")
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, *command: str) -> None:
        result = subprocess.run(
            [*self.as_postgres, str(self.bin / command[0]), *command[1:]],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{command[0]} failed:\n{result.stdout}\n{result.stderr}"

    def init(self) -> None:
        command = ["initdb", "-D", str(self.data), "-U", "postgres", "--no-sync"]
        if self.password is None:
            self.run(*command, "-A", "trust")
            return
        password_file = self.directory / "password"
        password_file.write_text(self.password + "\n")
        if self.as_postgres:
            shutil.chown(password_file, "postgres")
        self.run(*command, "-A", "scram-sha-256", f"--pwfile={password_file}")
        password_file.unlink()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.directory / "postgres.log")
        self.run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def running_cluster(password: str | None = None) -> Iterator[PrivateCluster]:
    """A started private cluster, stopped and removed afterwards."""
    cluster = PrivateCluster(password=password)
    try:
        cluster.init()
        cluster.start()
        yield cluster
        cluster.stop()
    finally:
        cluster.remove()
