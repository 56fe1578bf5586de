"""Settings from the environment: values in files (docker secrets), the database password."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy import make_url

from app.settings import Settings
from tests.conftest import charnn_command, charnn_environment
from tests.postgres import PrivateCluster, running_cluster

KEY = "k" * 24
PASSWORD = "p@ss:w/rd%1"  # every character an URL must escape
PG_URL = "postgresql+psycopg://charnn@db.example:5432/charnn"


@pytest.fixture(autouse=True)
def no_charnn_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets itself."""
    for name in [name for name in os.environ if name.upper().startswith("CHARNN_")]:
        monkeypatch.delenv(name)


def secret_file(tmp_path: Path, content: str, name: str = "secret") -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


# --- CHARNN_<NAME>_FILE ---------------------------------------------------------------------


def test_a_setting_is_read_from_the_file_a_FILE_variable_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARNN_API_KEYS_FILE", str(secret_file(tmp_path, f"admin:{KEY}\n")))
    monkeypatch.setenv("CHARNN_MAX_EPOCHS_FILE", str(secret_file(tmp_path, "7", "epochs")))

    settings = Settings()

    assert settings.key_scopes == {KEY: frozenset({"admin", "predict"})}
    assert settings.max_epochs == 7


def test_only_one_trailing_newline_is_taken_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARNN_DATABASE_URL", PG_URL)
    monkeypatch.setenv("CHARNN_DATABASE_PASSWORD_FILE", str(secret_file(tmp_path, " pw \n\n")))

    assert Settings().database_password.get_secret_value() == " pw \n"


def test_a_setting_given_both_ways_is_refused_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARNN_API_KEYS", f"admin:{KEY}")
    monkeypatch.setenv("CHARNN_API_KEYS_FILE", str(secret_file(tmp_path, f"admin:{KEY}")))

    with pytest.raises(SettingsError) as refused:
        Settings()

    message = str(refused.value)
    assert "CHARNN_API_KEYS and CHARNN_API_KEYS_FILE are both set" in message
    assert KEY not in message


@pytest.mark.parametrize("problem", ["missing", "a directory", "not text"])
def test_a_file_that_cannot_be_read_is_refused_naming_the_variable_and_the_path(
    problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret"
    if problem == "a directory":
        path.mkdir()
    elif problem == "not text":
        path.write_bytes(b"\xff" + KEY.encode())
    monkeypatch.setenv("CHARNN_API_KEYS_FILE", str(path))

    with pytest.raises(SettingsError) as refused:
        Settings()

    message = str(refused.value)
    assert message.startswith(f"CHARNN_API_KEYS_FILE={path}: cannot read it: ")
    assert KEY not in message
    assert "\\xff" not in message


def test_a_bad_value_in_a_file_is_refused_without_showing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARNN_API_KEYS_FILE", str(secret_file(tmp_path, f"root:{KEY}")))

    with pytest.raises(ValidationError) as refused:
        Settings()

    assert "api_keys" in str(refused.value)
    assert KEY not in str(refused.value)


# --- the database password --------------------------------------------------------------------


def test_the_database_password_goes_into_the_registry_url_only(tmp_path: Path) -> None:
    settings = Settings(database_url=PG_URL, database_password=PASSWORD)

    url = make_url(settings.registry_url)
    assert url.password == PASSWORD
    assert url.render_as_string() == "postgresql+psycopg://charnn:***@db.example:5432/charnn"
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings.model_dump())
    assert Settings(database_url=PG_URL).registry_url == PG_URL  # none given: none added


def test_workers_get_the_database_password_but_never_the_api_keys() -> None:
    settings = Settings(database_url=PG_URL, database_password=PASSWORD, api_keys=f"admin:{KEY}")

    values = settings.for_workers()

    assert "api_keys" not in values
    assert KEY not in str(values)
    assert Settings(**values).registry_url == settings.registry_url


def test_a_password_in_the_url_and_in_the_setting_is_refused_showing_neither() -> None:
    in_url = make_url(PG_URL).set(password="in-the-url").render_as_string(hide_password=False)

    with pytest.raises(ValidationError) as refused:
        Settings(database_url=in_url, database_password=PASSWORD)

    message = str(refused.value)
    assert "CHARNN_DATABASE_URL holds a password and CHARNN_DATABASE_PASSWORD is set" in message
    assert "in-the-url" not in message
    assert PASSWORD not in message


def test_a_password_without_a_database_url_is_refused() -> None:
    with pytest.raises(ValidationError, match="CHARNN_DATABASE_URL is not"):
        Settings(database_password=PASSWORD)


def test_a_malformed_database_url_is_refused_without_showing_it() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(database_url=f"postgresql://charnn:{PASSWORD}@db:port/charnn")

    assert "not a SQLAlchemy URL" in str(refused.value)
    assert PASSWORD not in str(refused.value)


# --- `charnn check --database` with the password in a file, on a server that asks for it ----


@pytest.fixture(scope="module")
def password_cluster() -> Iterator[PrivateCluster]:
    """A private PostgreSQL whose superuser needs PASSWORD (the shared one trusts anyone)."""
    with running_cluster(password=PASSWORD) as cluster:
        yield cluster


def check_database(url: str, password_file: Path) -> subprocess.CompletedProcess[str]:
    env = charnn_environment({"database_url": url, "database_password_file": password_file})
    return subprocess.run(
        [*charnn_command(), "check", "--database"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_charnn_check_reaches_the_database_with_the_password_from_a_file(
    password_cluster: PrivateCluster, tmp_path: Path
) -> None:
    right = check_database(password_cluster.url, secret_file(tmp_path, PASSWORD + "\n"))
    wrong = check_database(password_cluster.url, secret_file(tmp_path, "not-it\n", "wrong"))

    assert (right.returncode, right.stdout, right.stderr) == (0, "ok\n", "")
    # the server does check it: a wrong one is refused, and the refusal shows no password
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("unhealthy: OperationalError: ")
    assert "password authentication failed" in wrong.stderr
    assert "not-it" not in wrong.stdout + wrong.stderr


# --- a bad setting stops the service --------------------------------------------------------


def start_refused(
    command: str, tmp_path: Path, **settings: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHARNN_")}
    env |= {f"CHARNN_{name.upper()}": value for name, value in settings.items()}
    env["CHARNN_STORE_DIR"] = str(tmp_path / "store")
    env["COLUMNS"] = "40"  # nothing may wrap the line
    return subprocess.run(
        [*charnn_command(), command], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_bad_setting_stops_the_service_with_one_line_naming_the_variable(
    command: str, tmp_path: Path
) -> None:
    refused = start_refused(command, tmp_path, max_epochs="abc")

    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr == (
        "error: invalid setting: CHARNN_MAX_EPOCHS: Input should be a valid integer, "
        "unable to parse string as an integer\n"
    )


def test_every_bad_setting_is_named_on_the_one_line(tmp_path: Path) -> None:
    refused = start_refused("serve", tmp_path, device="tpu", log_format="xml")

    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "CHARNN_DEVICE: must be auto, cpu, cuda or cuda:N" in refused.stderr
    assert "CHARNN_LOG_FORMAT: Input should be 'text' or 'json'" in refused.stderr
    assert "Traceback" not in refused.stderr
