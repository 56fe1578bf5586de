"""Settings: one pydantic-settings model, read from ``CHARNN_*`` environment variables.

Reach it through ``get_settings()`` (cached); tests build their own ``Settings`` and
hand it to ``create_app``. Nonsense values fail at start-up with the variable's name.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHARNN_", extra="ignore", frozen=True)

    store_dir: Path = Field(
        Path("./models_store"), description="Where checkpoints (and the default SQLite) live."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the registry; default: SQLite at STORE_DIR/registry.db.",
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
    lease_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="A running job whose worker sent no heartbeat for this long is re-queued.",
    )
    job_timeout_seconds: int = Field(
        24 * 3600, ge=60, description="Wall-clock limit of one attempt of a job (rq backend)."
    )
    max_concurrent_jobs: int = Field(1, ge=1, le=64, description="Training jobs run at once.")
    job_max_attempts: int = Field(
        3, ge=1, le=20, description="Tries before a job that keeps failing ends failed."
    )
    job_poll_seconds: float = Field(
        0.5, gt=0, le=60, description="How often the runner looks for queued jobs."
    )
    worker_torch_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="torch threads per training worker; 0: the machine's cores divided "
        "among MAX_CONCURRENT_JOBS workers.",
    )
    max_predict_inputs: int = Field(256, ge=1, le=100_000, description="Inputs per predict.")
    max_input_length: int = Field(
        1024, ge=1, le=1_000_000, description="Characters per predict input or prompt."
    )
    max_generate_length: int = Field(
        2000, ge=1, le=1_000_000, description="Characters one generate call may add."
    )
    max_training_pairs: int = Field(
        100_000, ge=1, le=10_000_000, description="Pairs in one training request."
    )
    max_training_chars: int = Field(
        5_000_000, ge=1, le=1_000_000_000, description="Characters of training data per job."
    )
    max_import_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Size of an imported checkpoint's weights file."
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
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Level of charnn's own logs (API and workers)."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text, or one JSON object per line (with the request id)."
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not value.startswith("cuda:"):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return value

    @property
    def training_threads(self) -> int:
        if self.worker_torch_threads:
            return self.worker_torch_threads
        return max(1, (os.cpu_count() or 1) // self.max_concurrent_jobs)

    @property
    def registry_url(self) -> str:
        return self.database_url or f"sqlite:///{self.store_dir.resolve() / 'registry.db'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
