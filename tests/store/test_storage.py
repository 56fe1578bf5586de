"""The store on a disk that says no: full, or read-only, then fine again.

Real file systems (``tests/mounts.py``): a small tmpfs filled to its last byte, and a
read-only bind mount, since the tests run as root and root ignores ``chmod``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from app.ml.checkpoint import Checkpoint
from app.ml.errors import StorageError
from app.store.layout import StoreLayout, new_id
from app.store.publish import publish_checkpoint
from app.store.registry import Registry
from tests.mounts import fill, read_only, small_disk

MiB = 1024 * 1024


def test_the_store_says_why_it_cannot_be_written(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", MiB) as disk:
        layout = StoreLayout(disk)
        assert layout.write_problem() is None
        filler = fill(disk)
        assert layout.write_problem() == "No space left on device"
        filler.unlink()
        with read_only(disk):
            assert layout.write_problem() == "Read-only file system"
        assert layout.write_problem() is None
        assert list(disk.iterdir()) == []  # the probes leave nothing


def test_publishing_on_a_full_disk_says_so_and_leaves_nothing(
    tmp_path: Path, hello_model: Checkpoint
) -> None:
    registry = Registry.connect(f"sqlite:///{tmp_path / 'registry.db'}")
    with small_disk(tmp_path / "disk", MiB) as disk:
        layout = StoreLayout(disk)
        layout.ensure()
        fill(disk)

        with pytest.raises(StorageError) as refused:
            publish_checkpoint(registry, layout, "hello", hello_model)

        assert "the disk is full (No space left on device)" in str(refused.value)
        assert "free space or make the store writable" in str(refused.value)
        assert list(layout.models.iterdir()) == []  # not even the model's directory
    assert registry.list_models() == []
    registry.close()


def create_job(registry: Registry) -> None:
    registry.create_job(new_id(), "hello", {}, "cpu", epochs=1, max_attempts=1)


def test_a_sqlite_registry_made_writable_again_takes_writes_without_a_restart(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "registry"
    directory.mkdir()
    registry = Registry.connect(f"sqlite:///{directory / 'registry.db'}")
    create_job(registry)  # one connection, opened while the file was writable

    # a second connection is opened now, while the file is read-only: SQLite would open
    # it read-only, silently, and the pool would keep it for good
    refused = pytest.raises(OperationalError, match="cannot be written")
    with read_only(directory), refused, registry.engine.connect(), registry.engine.connect():
        pass

    for _ in range(5):  # every pooled connection in turn: each one takes writes
        create_job(registry)
    assert registry.list_jobs()[1] == 6
    registry.close()
