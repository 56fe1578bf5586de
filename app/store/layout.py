"""Where files live in the store, and the only place that builds their paths.

    STORE_DIR/
      registry.db                        the default SQLite registry
      models/<model name>/<directory>/   one published version (a checkpoint directory)
      jobs/<job id>/epoch-000007/        a job's latest epoch checkpoints, for resuming

A checkpoint is written under a hidden staging name beside its final place
(``.<name>.partial-<id>``) and renamed into place when whole; a staging directory
that outlived its writer is a leftover of a crash, never read.

Every path component that comes from a request is checked against a strict pattern
first, so no name can reach outside the store.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

from app.ml.checkpoint import META_FILE, STAGING_MARKER

MODEL_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$"
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_HEX_ID = re.compile(r"^[0-9a-f]{32}$")
# epochs completed, then (within the next epoch) batches done: epoch-000007-batch-000000012
_EPOCH_DIR = re.compile(r"^epoch-(\d{6})(?:-batch-(\d{9}))?$")
PROBE_BYTES = 4096


def new_id() -> str:
    return uuid.uuid4().hex


def is_model_name(value: str) -> bool:
    return _MODEL_NAME.fullmatch(value) is not None


def is_id(value: str) -> bool:
    """A version directory's or a job's name: 32 lowercase hex digits."""
    return _HEX_ID.fullmatch(value) is not None


def is_epoch_dir(value: str) -> bool:
    return _EPOCH_DIR.fullmatch(value) is not None


def is_staging(value: str) -> bool:
    """The name of a checkpoint directory still being written (or left by a crash)."""
    return value.startswith(".") and STAGING_MARKER in value


def _checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"invalid {what}: {value!r}")
    return value


class StoreLayout:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.models = self.root / "models"
        self.jobs = self.root / "jobs"

    def ensure(self) -> None:
        self.models.mkdir(parents=True, exist_ok=True)
        self.jobs.mkdir(parents=True, exist_ok=True)

    def write_problem(self) -> str | None:
        """Why a small file cannot be written in the store now; None if it can (blocking).

        Tried for real: permission bits say nothing of a full disk, a quota or a
        read-only mount. A page is what the smallest checkpoint needs of a full disk.
        """
        probe = self.root / f".probe-{new_id()}"
        try:
            with probe.open("xb") as handle:
                handle.write(bytes(PROBE_BYTES))
        except OSError as exc:
            return exc.strerror or type(exc).__name__
        finally:
            with suppress(OSError):
                probe.unlink()
        return None

    # --- published versions --------------------------------------------------------------

    def model_dir(self, name: str) -> Path:
        return self.models / _checked(name, _MODEL_NAME, "model name")

    def version_dir(self, name: str, directory: str) -> Path:
        return self.model_dir(name) / _checked(directory, _HEX_ID, "version directory")

    def new_staging(self, name: str) -> tuple[str, Path]:
        """A new version's directory name, and its staging directory, created empty.

        The model's directory is created too if need be; a concurrent ``discard`` of
        another version may remove it in between, hence the second try.
        """
        directory = new_id()
        final = self.version_dir(name, directory)
        staging = final.with_name(f".{directory}{STAGING_MARKER}{new_id()}")
        for tries_left in (1, 0):
            try:
                staging.mkdir(parents=True)
                break
            except FileNotFoundError:
                if not tries_left:
                    raise
        return directory, staging

    def discard(self, path: Path) -> None:
        """Remove a checkpoint directory, whole or half-written, and its parent if empty.

        A failed write leaves no trace: not even the empty directory of a model that
        has no version yet.
        """
        shutil.rmtree(path, ignore_errors=True)
        with suppress(OSError):  # not empty: other versions, or one on its way
            path.parent.rmdir()

    # --- job checkpoints -----------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self.jobs / _checked(job_id, _HEX_ID, "job id")

    def job_checkpoint(self, job_id: str, epoch: int, batch: int = 0) -> Path:
        """After ``epoch`` epochs and, within the next, ``batch`` batches."""
        name = f"epoch-{epoch:06d}" + (f"-batch-{batch:09d}" if batch else "")
        return self.job_dir(job_id) / name

    def job_checkpoints(self, job_id: str) -> list[tuple[int, Path]]:
        """Complete checkpoints of a job with their epochs completed, oldest first (those
        taken within an epoch after its start; staging leftovers ignored)."""
        directory = self.job_dir(job_id)
        if not directory.is_dir():
            return []
        found = []
        for child in directory.iterdir():
            match = _EPOCH_DIR.fullmatch(child.name)
            if match and (child / META_FILE).is_file():
                found.append(((int(match.group(1)), int(match.group(2) or 0)), child))
        return [(epoch, path) for (epoch, _), path in sorted(found)]

    def latest_job_checkpoint(self, job_id: str) -> Path | None:
        found = self.job_checkpoints(job_id)
        return found[-1][1] if found else None

    def prune_job_checkpoints(self, job_id: str, keep: int = 2) -> None:
        """Drop all but the newest ``keep`` checkpoints, and staging leftovers."""
        for _, path in self.job_checkpoints(job_id)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)
        for leftover in self.job_dir(job_id).glob(f".*{STAGING_MARKER}*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def remove_job(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def remove_model_files(self, name: str, directories: Iterable[str]) -> None:
        """Remove the files of a deleted model's versions, then its directory if empty.

        Only the directories its rows named: a version of the same name being imported
        at this moment is written beside them and must survive.
        """
        for directory in directories:
            shutil.rmtree(self.version_dir(name, directory), ignore_errors=True)
        with suppress(OSError):  # not empty: a new version is on its way
            self.model_dir(name).rmdir()

    # --- leftovers -----------------------------------------------------------------------

    def staging_dirs(self) -> list[Path]:
        """Checkpoint and dataset directories being written now, or left half-written by a
        crash, and datasets half deleted."""
        found = []
        for parent in (self.models, self.jobs):
            for owner in _children(parent):
                if owner.is_dir() and not owner.is_symlink():
                    found += [child for child in _children(owner) if is_staging(child.name)]
        # dataset uploads (app.store.datasets): staged, or moved aside to be deleted
        leftovers = (".staging-", ".deleted-")
        found += [c for c in _children(self.root / "datasets") if c.name.startswith(leftovers)]
        return sorted(found)


def _children(directory: Path) -> list[Path]:
    """The entries of ``directory``; none if it does not exist (or vanished meanwhile)."""
    try:
        return list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
