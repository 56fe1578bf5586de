"""The registry's tables. Schema changes go through Alembic (``migrations/``)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    versions: Mapped[list[VersionRow]] = relationship(
        back_populates="model", order_by="VersionRow.version", cascade="all, delete-orphan"
    )


class VersionRow(Base):
    """A published, verified checkpoint. Its files live at models/<name>/<directory>."""

    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int]
    directory: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]]
    hyperparameters: Mapped[dict[str, Any]]
    vocab: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any] | None]  # the last epoch's
    epochs: Mapped[int]
    parameters: Mapped[int] = mapped_column(BigInteger)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))  # of the weights file
    job_id: Mapped[str | None] = mapped_column(String(32))
    # the epoch whose weights these are, why training stopped, and that epoch's
    # validation scores (null for versions published before charnn recorded them)
    best_epoch: Mapped[int | None]
    stop_reason: Mapped[str | None] = mapped_column(String(16))
    validation: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    model: Mapped[ModelRow] = relationship(back_populates="versions")


class JobRow(Base):
    """A training job; the source of truth for its state, whoever runs it."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_created", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    request: Mapped[dict[str, Any]]  # data, vocab and hyperparameters as submitted
    device: Mapped[str] = mapped_column(String(16))
    epochs: Mapped[int]
    estimated_seconds: Mapped[float | None]  # at submission; null for older jobs
    epoch: Mapped[int] = mapped_column(default=0)  # epochs completed and checkpointed
    progress: Mapped[dict[str, Any] | None]  # the latest StepProgress within an epoch
    attempts: Mapped[int] = mapped_column(default=0)  # times a worker started it
    failures: Mapped[int] = mapped_column(default=0)  # attempts that failed (not restarts)
    max_attempts: Mapped[int]
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    queue_ref: Mapped[str | None] = mapped_column(String(64))  # the task queue's message id
    heartbeat_at: Mapped[datetime | None]
    version: Mapped[int | None]  # the model version it created
    dataset_id: Mapped[str | None] = mapped_column(String(32), index=True)  # what it trains on
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # lazy="raise": a long job has thousands of epochs, read only where asked for
    # (``Registry.job_summary(history=True)``, ``Registry.job_epochs``), never by accident
    history: Mapped[list[EpochRow]] = relationship(
        order_by="EpochRow.epoch", cascade="all, delete-orphan", lazy="raise"
    )


class EpochRow(Base):
    __tablename__ = "job_epochs"
    __table_args__ = (UniqueConstraint("job_id", "epoch"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int]
    attempt: Mapped[int]
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetRow(Base):
    """An uploaded dataset; its files live at datasets/<id>/ (``app.store.datasets``)."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # from kind, format, sha256
    name: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    characters: Mapped[int] = mapped_column(BigInteger)
    examples: Mapped[int] = mapped_column(BigInteger)  # rows; 0 for text
    longest: Mapped[int] = mapped_column(BigInteger)  # the longest row's input; 0 for text
    vocab_size: Mapped[int]
    labels: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
