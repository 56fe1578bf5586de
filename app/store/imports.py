"""Importing a checkpoint uploaded by a client: streamed to disk, checked, then published.

Only the two plain files of a checkpoint are accepted (its JSON and its weights in
safetensors), never an archive to extract, a path or a URL; nothing is unpickled
or executed, and no tensor is loaded. Each file streams into a staging directory
of the store as it arrives, hashed on the way and refused once it passes its limit.
Then the JSON is validated and held to the limits that training obeys, the weights'
size and sha256 must match it, and the safetensors header must name exactly the
tensors of the declared architecture (shapes by arithmetic: nothing is built).

The staging directory becomes the version's directory by a rename, so a failure at
any point, a full disk included, leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import torch

from app.errors import InvalidRequestError, LimitExceededError, UploadTooLargeError
from app.ml.checkpoint import (
    FORMAT_VERSION,
    MAX_HEADER_BYTES,
    META_FILE,
    WEIGHTS_FILE,
    CheckpointMeta,
    FileDigest,
    check_digest,
    fsync_dir,
    parse_upload,
    storage_errors,
    verify_weights_file,
    write_file,
)
from app.ml.errors import CheckpointError
from app.ml.model import ModelConfig, estimate_parameters
from app.settings import Settings
from app.store.layout import StoreLayout
from app.store.publish import describe_version
from app.store.registry import Registry
from app.store.tables import VersionRow

UPLOADED_META = f"{META_FILE}.upload"  # the client's JSON; the version gets a clean copy
# the sizes of a model that training's limits bound, and the settings that bound them
MODEL_LIMITS = {
    "hidden_size": "max_hidden_size",
    "num_layers": "max_num_layers",
    "embedding_size": "max_embedding_size",
}


class StagedFile:
    """One uploaded file, written as it arrives, hashed on the way, within its limit.

    ``reserve`` runs on the event loop before the bytes are written, so an upload is
    refused as soon as it passes the limit; ``write`` and ``finish`` block (threads).
    """

    def __init__(
        self,
        path: Path,
        field: str,
        limit: int,
        setting: str,
        on_finish: Callable[[], None] | None = None,
    ) -> None:
        self.path, self.field, self.limit, self.setting = path, field, limit, setting
        self.on_finish = on_finish
        self.expected: int | None = None  # the size the checkpoint's JSON gives this file
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._file: BinaryIO | None = None

    def reserve(self, size: int) -> None:
        self.size += size
        if self.size > self.limit:
            raise UploadTooLargeError(
                self.field, f"more than {self.limit} bytes uploaded", self.setting
            )
        if self.expected is not None and self.size > self.expected:
            raise InvalidRequestError(
                "checkpoint",
                f"{self.path.name} is more than the {self.expected} bytes {META_FILE} says",
            )

    def write(self, data: bytes) -> None:
        with storage_errors("an upload"):
            self._open().write(data)
        self._sha256.update(data)

    def finish(self) -> None:
        with storage_errors("an upload"):
            handle = self._open()
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        if self.on_finish is not None:
            self.on_finish()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    @property
    def digest(self) -> FileDigest:
        return FileDigest(sha256=self._sha256.hexdigest(), size=self.size)

    def _open(self) -> BinaryIO:
        if self._file is None:
            self._file = self.path.open("xb")
        return self._file


class ImportUpload:
    """The staging directory that one import streams into, published whole or removed.

    Creating one creates the directory (blocking: build it in a thread).
    """

    def __init__(self, layout: StoreLayout, model_name: str, settings: Settings) -> None:
        self.layout, self.model_name, self.settings = layout, model_name, settings
        self.published = False
        self.meta: CheckpointMeta | None = None
        with storage_errors("an upload"):
            self.directory, self.staging = layout.new_staging(model_name)
        self.files = {
            "checkpoint": StagedFile(
                self.staging / UPLOADED_META,
                "checkpoint",
                settings.max_import_meta_bytes,
                "CHARNN_MAX_IMPORT_META_BYTES",
                on_finish=self._expect_weights,
            ),
            "weights": StagedFile(
                self.staging / WEIGHTS_FILE,
                "weights",
                settings.max_import_bytes,
                "CHARNN_MAX_IMPORT_BYTES",
            ),
        }

    def publish(self, registry: Registry) -> VersionRow:
        """Verify what was received, move it into place and register it (blocking)."""
        meta = self._verify()
        final = self.layout.version_dir(self.model_name, self.directory)
        with storage_errors("an upload"):
            write_file(self.staging / META_FILE, clean_meta(meta).encode())
            (self.staging / UPLOADED_META).unlink()
            fsync_dir(self.staging)
            os.rename(self.staging, final)
            fsync_dir(final.parent)
        self.staging = final  # from here on, a failure removes the version's directory
        row = registry.publish_version(
            self.model_name, describe_version(final, self.directory, meta)
        )
        self.published = True
        return row

    def discard(self) -> None:
        """Remove whatever this import wrote, unless it was published (blocking)."""
        for staged in self.files.values():
            staged.close()
        if not self.published:
            self.layout.discard(self.staging)

    def _expect_weights(self) -> None:
        """The JSON has come (clients send it first): check it before the weights come."""
        self.files["weights"].expected = self._checked_meta().files[WEIGHTS_FILE].size

    def _checked_meta(self) -> CheckpointMeta:
        if self.meta is None:
            with invalid_checkpoint():
                meta = parse_upload(self.files["checkpoint"].path.read_bytes())
                check_model_limits(meta, self.settings)
                check_weights_size(meta, self.settings)
            self.meta = meta
        return self.meta

    def _verify(self) -> CheckpointMeta:
        meta = self._checked_meta()
        with invalid_checkpoint():
            check_digest(WEIGHTS_FILE, self.files["weights"].digest, meta.files[WEIGHTS_FILE])
            verify_weights_file(meta.config, self.files["weights"].path)
        return meta


@contextmanager
def invalid_checkpoint() -> Iterator[None]:
    """A checkpoint that fails verification is the client's mistake: a 422 naming it."""
    try:
        yield
    except CheckpointError as exc:
        raise InvalidRequestError("checkpoint", str(exc)) from exc


def check_weights_size(meta: CheckpointMeta, settings: Settings) -> None:
    """The weights file the JSON declares holds the declared model's tensors, and fits.

    float32 tensors, 4 bytes a parameter, after an 8-byte length and the JSON header.
    """
    parameters = estimate_parameters(meta.config)
    data = 4 * parameters
    if data > settings.max_import_bytes:
        raise UploadTooLargeError(
            "weights",
            f"the declared model's {parameters} parameters take {data} bytes, more than "
            f"{settings.max_import_bytes} allowed",
            "CHARNN_MAX_IMPORT_BYTES",
        )
    declared = meta.files[WEIGHTS_FILE].size
    if not data < declared - 8 <= data + MAX_HEADER_BYTES:
        raise CheckpointError(
            f"weights do not fit the declared architecture: its tensors take {data} bytes, "
            f"and {META_FILE} gives {WEIGHTS_FILE} {declared}"
        )


def check_model_limits(meta: CheckpointMeta, settings: Settings) -> None:
    """The declared model is one that training here could have built."""
    rebuilt = ModelConfig.from_hyperparameters(meta.hyperparameters, meta.vocab)
    if meta.config != rebuilt:
        raise CheckpointError(
            f"{META_FILE}'s config does not follow from its hyperparameters and "
            f"vocabularies: {meta.config} declared, {rebuilt} follows"
        )
    # the tutorial's variants have no embedding, and their hidden size is the output's
    used = list(MODEL_LIMITS) if meta.config.architecture == "embedding_rnn" else ["num_layers"]
    for name in used:
        value, limit = getattr(meta.config, name), getattr(settings, MODEL_LIMITS[name])
        if value > limit:
            raise LimitExceededError(
                f"checkpoint.config.{name}",
                f"{value}, at most {limit} allowed",
                f"CHARNN_{MODEL_LIMITS[name].upper()}",
            )


def clean_meta(meta: CheckpointMeta) -> str:
    """The JSON this charnn writes for ``meta``: its own fields only, no training state."""
    now = datetime.now(UTC)
    files = {WEIGHTS_FILE: meta.files[WEIGHTS_FILE]}
    update = {
        "created_at": now,
        "torch_version": torch.__version__,
        "files": files,
        "format_version": FORMAT_VERSION,  # a format-1 upload reads as format 2
    }
    return meta.model_copy(update={**update, "training": None}).model_dump_json(indent=2)
