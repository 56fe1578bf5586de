"""Settings: one pydantic-settings model, read from ``CHARNN_*`` environment variables.

Any setting may instead be given as ``CHARNN_<NAME>_FILE=/path``, the file holding the
value (docker secrets). Reach the settings through ``get_settings()`` (cached); tests
build their own ``Settings`` and hand it to ``create_app``. Nonsense values fail at
start-up with the variable's name.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from app.cpus import available_cpus

ENV_PREFIX = "CHARNN_"


class Settings(BaseSettings):
    # hide_input_in_errors: a malformed setting must not print an API key into a log
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, hide_input_in_errors=True
    )

    store_dir: Path = Field(
        Path("./models_store"), description="Where checkpoints (and the default SQLite) live."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the registry; default: SQLite at STORE_DIR/registry.db.",
    )
    database_password: SecretStr = Field(
        SecretStr(""),
        description="Password of CHARNN_DATABASE_URL's user, kept out of the URL (give it "
        "as CHARNN_DATABASE_PASSWORD_FILE).",
    )
    device: str = Field("auto", description="auto, cpu or cuda[:N]: where models train and run.")
    job_backend: Literal["local", "rq"] = Field(
        "local",
        description="local: worker processes spawned by the service; rq: RQ on Redis, "
        "fed to `charnn worker` processes on any machine.",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis of the rq backend.")
    queue_name: str = Field(
        "charnn",
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="RQ queue of CPU jobs; GPU jobs go to '<name>-gpu'.",
    )
    startup_wait_seconds: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="How long the API and workers wait at start-up for the database and "
        "Redis to answer, retrying, before they give up.",
    )
    lease_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="A running job whose worker sent no heartbeat for this long is re-queued.",
    )
    job_timeout_seconds: int = Field(
        24 * 3600, ge=1, description="Wall-clock limit of a job, from its first start."
    )
    progress_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Within an epoch, a running job reports its progress and writes a "
        "checkpoint to resume from at least this often.",
    )
    max_concurrent_jobs: int = Field(1, ge=1, le=64, description="Training jobs run at once.")
    job_max_attempts: int = Field(
        3, ge=1, le=20, description="Tries before a job that keeps failing ends failed."
    )
    job_poll_seconds: float = Field(
        0.5, gt=0, le=60, description="How often the runner looks for queued jobs."
    )
    event_poll_seconds: float = Field(
        0.25, gt=0, le=60, description="How often a followed job is looked at (once per job)."
    )
    max_event_streams: int = Field(
        1000, ge=1, le=1_000_000, description="Event streams open at once; more get 429."
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=4096,
        le=16 * 1024 * 1024,
        description="Size of a request's URL and headers under `charnn serve`; 400 beyond.",
    )
    max_connections: int = Field(
        2000,
        ge=1,
        le=1_000_000,
        description="Connections `charnn serve` holds open at once (event streams included); "
        "beyond that new requests get 503.",
    )
    worker_torch_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="torch threads per training worker; 0: the CPUs this process may use "
        "(its affinity, at most its cgroup's CPU quota) divided among MAX_CONCURRENT_JOBS "
        "workers.",
    )
    max_predict_inputs: int = Field(256, ge=1, le=100_000, description="Inputs per predict.")
    max_input_length: int = Field(
        1024, ge=1, le=1_000_000, description="Characters per predict input or prompt."
    )
    max_generate_length: int = Field(
        2000, ge=1, le=1_000_000, description="Characters one generate call may add."
    )
    max_predict_values: int = Field(
        250_000,
        ge=1,
        le=100_000_000,
        description="Per-character values one predict may report: characters of all its "
        "inputs x (top_k, plus 1 with return_probabilities); bounds the answer's size.",
    )
    max_training_pairs: int = Field(
        100_000, ge=1, le=10_000_000, description="Pairs in one training request."
    )
    max_training_labels: int = Field(
        1024,
        ge=1,
        le=1024,
        description="Distinct labels in one classification job (labeled pairs).",
    )
    max_training_chars: int = Field(
        5_000_000,
        ge=1,
        le=1_000_000_000,
        description="Characters of training data per job (pairs also padded to the longest).",
    )
    max_import_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Size of an imported checkpoint's weights file."
    )
    max_import_meta_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Size of an imported checkpoint's checkpoint.json (parsed in memory).",
    )
    max_concurrent_imports: int = Field(
        2, ge=1, le=1024, description="Checkpoint imports received at once; more get 429."
    )
    max_evaluate_characters: int = Field(
        2_000_000,
        ge=1,
        le=1_000_000_000,
        description="Characters one evaluate call may score (pairs counted padded to the "
        "longest, a held-out split as the characters it holds); checked before any work.",
    )
    max_concurrent_evaluations: int = Field(
        1,
        ge=1,
        le=1024,
        description="Evaluate calls scoring at once (each in a worker thread); more get 429.",
    )
    max_dataset_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Size of one uploaded dataset file."
    )
    max_datasets_bytes: int = Field(
        4 * 1024 * 1024 * 1024,
        ge=1024,
        description="Uploaded size of all stored datasets together; an upload past it gets 413.",
    )
    max_concurrent_dataset_uploads: int = Field(
        2, ge=1, le=1024, description="Dataset uploads received at once; more get 429."
    )
    upload_idle_seconds: float = Field(
        60,
        gt=0,
        le=3600,
        description="Seconds an upload (a dataset, an imported checkpoint) may go without a "
        "byte of its body; then 408, and what it sent is removed.",
    )
    batch_max_size: int = Field(
        64, ge=1, le=4096, description="Sequences one batched forward pass may hold."
    )
    batch_max_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="How long a batch waits for more requests; 0: none (requests that "
        "arrive during a forward pass still share the next one).",
    )
    version_cache_seconds: float = Field(
        1.0, ge=0, le=3600, description="How long 'latest version' lookups are reused."
    )
    model_cache_size: int = Field(
        8, ge=1, le=10_000, description="Loaded model versions kept per device (LRU)."
    )
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated 'scope:key' pairs; scopes: admin (train, cancel, delete, "
        "import, and all of predict) and predict (predict, generate, evaluate, read). Empty: no "
        "keys.",
    )
    allow_unauthenticated: bool = Field(
        False,
        description="Serve clients beyond loopback without API keys (refused otherwise).",
    )
    allowed_hosts: str = Field(
        "localhost,127.0.0.1,::1",
        description="Comma-separated names the service is served under, checked against "
        "each request's Host (DNS rebinding); '*' accepts any. Cross-site POST, PUT, PATCH "
        "and DELETE (a foreign Origin) are refused whatever this says.",
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Size of a request body (imports: see below)."
    )
    max_queued_jobs: int = Field(
        100, ge=1, le=1_000_000, description="Jobs waiting at once; more get 429."
    )
    predict_rate_per_key: float = Field(
        200.0,
        ge=0,
        description="Predict and generate requests per second for each API key (bursts of "
        "twice that); 0: unlimited.",
    )
    max_hidden_size: int = Field(1024, ge=1, le=4096, description="hyperparameters.hidden_size.")
    max_num_layers: int = Field(4, ge=1, le=8, description="hyperparameters.num_layers.")
    max_embedding_size: int = Field(
        512, ge=1, le=1024, description="hyperparameters.embedding_size."
    )
    max_epochs: int = Field(10_000, ge=1, le=100_000, description="hyperparameters.epochs.")
    min_checkpoint_every_steps: int = Field(
        10,
        ge=1,
        le=1_000_000,
        description="Smallest hyperparameters.checkpoint_every_steps (each report writes a "
        "checkpoint).",
    )
    max_seq_len: int = Field(1024, ge=1, le=4096, description="hyperparameters.seq_len.")
    max_batch_size: int = Field(1024, ge=1, le=4096, description="hyperparameters.batch_size.")
    max_inference_cost: float = Field(
        2e11,
        gt=0,
        description="Parameters x characters one predict or generate call may run through a "
        "model (its compute, a few seconds of a CPU core at the default).",
    )
    max_training_cost: float = Field(
        2e13,
        gt=0,
        description="Parameters x training characters x epochs of one job (its compute).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Level of charnn's own logs (API and workers)."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text, or one JSON object per line (with the request id)."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        files = FileVariables(settings_cls)
        return init_settings, env_settings, files, dotenv_settings, file_secret_settings

    @field_validator("database_url")
    @classmethod
    def _parsable_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_database_url(value)
        return value

    @model_validator(mode="after")
    def _password_in_one_place(self) -> Settings:
        if not self.database_password.get_secret_value():
            return self
        if self.database_url is None:
            raise ValueError(
                "CHARNN_DATABASE_PASSWORD is set but CHARNN_DATABASE_URL is not: the default "
                "SQLite registry takes no password"
            )
        if parse_database_url(self.database_url).password is not None:
            raise ValueError(
                "CHARNN_DATABASE_URL holds a password and CHARNN_DATABASE_PASSWORD is set "
                "too: give it in one place"
            )
        return self

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not value.startswith("cuda:"):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return value

    @field_validator("api_keys")
    @classmethod
    def _well_formed_keys(cls, value: SecretStr) -> SecretStr:
        parse_api_keys(value.get_secret_value())  # raises on a malformed or weak key
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _some_hosts(cls, value: str) -> str:
        if not parse_hosts(value):
            raise ValueError("name at least one host, or '*' for any")
        return value

    @property
    def host_names(self) -> frozenset[str]:
        return parse_hosts(self.allowed_hosts)

    @property
    def key_scopes(self) -> dict[str, frozenset[str]]:
        return parse_api_keys(self.api_keys.get_secret_value())

    def for_workers(self) -> dict[str, object]:
        """The settings a worker process needs, as JSON: never the API keys.

        A worker needs the database password, whose JSON form is "**********": it is
        written out in clear (``Settings(**values)`` reads it back).
        """
        values = self.model_dump(mode="json", exclude={"api_keys"})
        values["database_password"] = self.database_password.get_secret_value()
        return values

    @property
    def training_threads(self) -> int:
        if self.worker_torch_threads:
            return self.worker_torch_threads
        return max(1, available_cpus() // self.max_concurrent_jobs)

    @property
    def registry_url(self) -> str:
        """The registry's URL, password included: for connecting, never for showing."""
        if self.database_url is None:
            return f"sqlite:///{self.store_dir.resolve() / 'registry.db'}"
        password = self.database_password.get_secret_value()
        if not password:
            return self.database_url
        url = parse_database_url(self.database_url).set(password=password)
        return url.render_as_string(hide_password=False)


class FileVariables(PydanticBaseSettingsSource):
    """``CHARNN_<NAME>_FILE=/path``: the setting is the file's content, less one trailing
    newline (the docker secrets convention, as the postgres image's POSTGRES_PASSWORD_FILE).
    """

    def __call__(self) -> dict[str, Any]:
        # case as the environment source takes it: it ignores case
        environ = {name.upper(): value for name, value in os.environ.items()}
        values: dict[str, Any] = {}
        for name in self.settings_cls.model_fields:
            variable = f"{ENV_PREFIX}{name.upper()}"
            path = environ.get(f"{variable}_FILE")
            if path is None:
                continue
            if variable in environ:
                raise SettingsError(f"{variable} and {variable}_FILE are both set: give one")
            values[name] = read_value_file(f"{variable}_FILE", path)
        return values

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # unused: __call__ reads every field at once


def read_value_file(variable: str, path: str) -> str:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeError) as exc:
        # the reason, never the content (a UnicodeError quotes the bytes it choked on)
        reason = (exc.strerror if isinstance(exc, OSError) else None) or type(exc).__name__
        raise SettingsError(f"{variable}={path}: cannot read it: {reason}") from None
    return text.removesuffix("\n")


def parse_database_url(text: str) -> URL:
    try:
        return make_url(text)
    except (ArgumentError, ValueError):
        # SQLAlchemy's message quotes the URL, and with it any password it holds
        raise ValueError(
            "not a SQLAlchemy URL; e.g. postgresql+psycopg://user@host:5432/database"
        ) from None


SCOPES = {"admin": frozenset({"admin", "predict"}), "predict": frozenset({"predict"})}
MIN_KEY_LENGTH = 16


def parse_api_keys(text: str) -> dict[str, frozenset[str]]:
    """``"admin:K1,predict:K2"`` -> ``{"K1": {"admin", "predict"}, "K2": {"predict"}}``."""
    keys: dict[str, frozenset[str]] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        scope, _, key = entry.partition(":")
        if scope not in SCOPES or not key:
            raise ValueError("each entry must be 'admin:<key>' or 'predict:<key>'")
        if len(key) < MIN_KEY_LENGTH or key.lower().startswith("change-me"):
            raise ValueError(
                f"API keys must be at least {MIN_KEY_LENGTH} characters and not a placeholder "
                "(generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        keys[key] = SCOPES[scope]
    return keys


def parse_hosts(text: str) -> frozenset[str]:
    """``"Example.com, [::1]"`` -> ``{"example.com", "::1"}``: lower case, IPv6 unbracketed."""
    return frozenset(name.strip().strip("[]").lower() for name in text.split(",") if name.strip())


@lru_cache
def get_settings() -> Settings:
    return Settings()


class InvalidSettings(Exception):
    """The environment's settings cannot be used; the message is one line naming them."""


def load_settings() -> Settings:
    """``get_settings()``, its refusal turned into one line an operator can act on.

    pydantic's message spans several lines and names fields (``max_epochs``), not the
    variables an operator sets (``CHARNN_MAX_EPOCHS``).
    """
    try:
        return get_settings()
    except ValidationError as exc:
        raise InvalidSettings(describe_problems(exc)) from None
    except SettingsError as exc:  # a *_FILE unreadable, or set twice; already names it
        raise InvalidSettings(f"invalid setting: {exc}") from None


def describe_problems(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:  # no location: a rule across fields, whose message names them
            message = f"{ENV_PREFIX}{str(error['loc'][0]).upper()}: {message}"
        problems.append(message)
    noun = "setting" if len(problems) == 1 else "settings"
    return f"invalid {noun}: " + "; ".join(problems)
