"""Uploaded datasets in the store: ``datasets/<id>/`` holds ``dataset.json`` and the data.

An upload streams into a staging directory (``datasets/.staging-<random>/``), hashed on
the way; then the file is read into what training needs (``app.store.corpus``), the
description written, the staging directory renamed into place and the dataset
registered. A dataset's id derives from its kind, format and sha256, so the same upload
twice is the same dataset: the second finds the first and keeps nothing of its own.

Workers on any machine read a dataset from the shared store (``app.store.dataset_reader``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.errors import NotFoundError, UploadTooLargeError
from app.ml.checkpoint import storage_errors
from app.ml.errors import DataError
from app.settings import Settings
from app.store.corpus import (
    ROWS,
    TEXT_IDS,
    DatasetFormat,
    DatasetKind,
    Summary,
    scan_text,
    write_rows,
    write_text_ids,
)
from app.store.layout import new_id
from app.store.registry import Registry
from app.store.tables import DatasetRow

META = "dataset.json"
UPLOAD = "upload.raw"  # the file as received; removed once read
DATASET_ID_PATTERN = r"^[0-9a-f]{32}$"


class DatasetMeta(BaseModel):
    """``dataset.json``: what a worker needs to know of a dataset without reading it."""

    model_config = ConfigDict(extra="forbid")

    format_version: Literal[1] = 1
    id: str = Field(pattern=DATASET_ID_PATTERN)
    kind: DatasetKind
    format: DatasetFormat
    name: str | None
    sha256: str
    size_bytes: int = Field(ge=0)
    characters: int = Field(ge=0)
    examples: int = Field(ge=0, description="Rows; for text, windows depend on seq_len: 0.")
    longest: int = Field(0, ge=0, description="The longest row's input; 0 for text.")
    input_chars: list[str]
    output_chars: list[str]
    labels: list[str]


def dataset_id(kind: str, fmt: str, sha256: str) -> str:
    return hashlib.sha256(f"{kind}:{fmt}:{sha256}".encode()).hexdigest()[:32]


def datasets_dir(store_dir: Path) -> Path:
    return store_dir.resolve() / "datasets"


def dataset_dir(store_dir: Path, id_: str) -> Path:
    if len(id_) != 32 or any(c not in "0123456789abcdef" for c in id_):
        raise NotFoundError(f"dataset {id_!r} not found")
    return datasets_dir(store_dir) / id_


def read_meta(store_dir: Path, id_: str) -> DatasetMeta:
    path = dataset_dir(store_dir, id_) / META
    try:
        return DatasetMeta.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise NotFoundError(f"dataset {id_} has no files in the store") from None
    except ValidationError as exc:
        raise DataError("dataset", f"{path} is not a valid description: {exc}") from None


class DatasetUpload:
    """One upload's staging directory: bytes in (``reserve`` on the event loop, ``write``
    in a thread), then ``publish`` (blocking) or ``discard``."""

    def __init__(
        self,
        settings: Settings,
        kind: DatasetKind,
        fmt: DatasetFormat,
        name: str | None,
        stored_bytes: int,
    ) -> None:
        self.settings, self.kind, self.fmt, self.name = settings, kind, fmt, name
        self.room = settings.max_datasets_bytes - stored_bytes  # what the store may still take
        self.size = 0
        self._sha256 = hashlib.sha256()
        self.staging = datasets_dir(settings.store_dir) / f".staging-{new_id()}"
        with storage_errors("a dataset upload"):
            self.staging.mkdir(parents=True)
            self._file: BinaryIO = (self.staging / UPLOAD).open("xb")

    def reserve(self, size: int) -> None:
        self.size += size
        if self.size > self.settings.max_dataset_bytes:
            raise UploadTooLargeError(
                "body",
                f"more than {self.settings.max_dataset_bytes} bytes uploaded",
                "CHARNN_MAX_DATASET_BYTES",
            )
        self._check_room()

    def _check_room(self) -> None:
        if self.size > self.room:
            raise UploadTooLargeError(
                "body",
                f"the stored datasets would pass {self.settings.max_datasets_bytes} bytes "
                "in all; delete some first",
                "CHARNN_MAX_DATASETS_BYTES",
            )

    def write(self, data: bytes) -> None:
        with storage_errors("a dataset upload"):
            self._file.write(data)
        self._sha256.update(data)

    def publish(self, registry: Registry) -> tuple[DatasetRow, bool]:
        """Read what was received into a dataset and register it; (row, created)."""
        with storage_errors("a dataset upload"):
            self._file.close()
        sha256 = self._sha256.hexdigest()
        id_ = dataset_id(self.kind, self.fmt, sha256)
        existing = registry.find_dataset(id_)
        if existing is not None:
            return existing, False
        # uploads received at once each learnt the room when they began: asked again
        self.room = self.settings.max_datasets_bytes - registry.dataset_bytes()
        self._check_room()
        meta = self._build(id_, sha256)
        final = dataset_dir(self.settings.store_dir, id_)
        with storage_errors("a dataset upload"):
            try:
                self.staging.rename(final)  # atomic: the dataset is there whole or not at all
            except OSError:
                if not final.is_dir():
                    raise
                # the same upload, published by another request in between: theirs stays
        row, created = registry.add_dataset(_row(meta))
        self._fill(final)
        return row, created

    def _fill(self, final: Path) -> None:
        """Put this upload's files in place if a delete took the directory that was there
        when the rename was tried (see ``remove_dataset_files``)."""
        if (final / META).is_file() or not self.staging.is_dir():
            return
        with suppress(OSError):
            self.staging.rename(final)  # fails only if yet another upload filled it

    def _build(self, id_: str, sha256: str) -> DatasetMeta:
        source = self.staging / UPLOAD
        with storage_errors("a dataset upload"):
            summary = self._summarise(source)
            source.unlink()
            meta = DatasetMeta(
                id=id_,
                kind=self.kind,
                format=self.fmt,
                name=self.name,
                sha256=sha256,
                size_bytes=self.size,
                characters=summary.characters,
                examples=summary.examples,
                longest=summary.longest,
                input_chars=summary.input_chars,
                output_chars=summary.output_chars,
                labels=summary.labels,
            )
            with (self.staging / META).open("x", encoding="utf-8") as handle:
                handle.write(meta.model_dump_json(indent=1))
                handle.flush()
                os.fsync(handle.fileno())
        return meta

    def _summarise(self, source: Path) -> Summary:
        if self.kind == "text":
            summary = scan_text(source)
            write_text_ids(source, self.staging / TEXT_IDS, summary.input_chars)
            return summary
        return write_rows(source, self.staging / ROWS, self.kind, self.fmt)

    def discard(self) -> None:
        self._file.close()
        shutil.rmtree(self.staging, ignore_errors=True)


def _row(meta: DatasetMeta) -> DatasetRow:
    return DatasetRow(
        id=meta.id,
        name=meta.name,
        kind=meta.kind,
        format=meta.format,
        sha256=meta.sha256,
        size_bytes=meta.size_bytes,
        characters=meta.characters,
        examples=meta.examples,
        longest=meta.longest,
        vocab_size=len(meta.input_chars),
        labels=len(meta.labels),
        created_at=datetime.now(UTC),
    )


def remove_dataset_files(store_dir: Path, id_: str, registry: Registry) -> None:
    """Move the directory aside (one rename) and then remove it, once its row is gone.

    The same file uploaded between the row's delete and this rename found the directory,
    kept none of its own, and registered it again: its files are put back.
    """
    directory = dataset_dir(store_dir, id_)
    doomed = directory.with_name(f".deleted-{id_}-{new_id()}")
    try:
        directory.rename(doomed)
    except FileNotFoundError:
        return
    if registry.find_dataset(id_) is not None:
        with suppress(OSError):  # fails only if that upload put its own files in place
            doomed.rename(directory)
    shutil.rmtree(doomed, ignore_errors=True)
