"""Real file systems that misbehave as disks do: a small tmpfs that fills up, and a
read-only bind mount. The tests run as root, which ignores permission bits, so
``chmod`` cannot make a file read-only for them; a read-only mount can.

Each helper unmounts on the way out (lazily, should a process still hold a file).
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest


def _mount(*arguments: str) -> None:
    subprocess.run(["mount", *arguments], check=True, capture_output=True)


def _unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


@contextmanager
def small_disk(path: Path, size: int) -> Iterator[Path]:
    """``path`` (created empty) as a tmpfs of ``size`` bytes."""
    path.mkdir(parents=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        _unmount(path)


@contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` seen read-only, for files opened from now on, until the block ends.

    Files open before it stay writable (as after a chmod): the mount hides the
    directory behind a read-only view of itself.
    """
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,ro,bind", str(path))
        yield path
    finally:
        _unmount(path)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to its last byte with one file, returned (delete it to free the space)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle:
        for block in (1024 * 1024, 4096, 1):
            with suppress(OSError):
                while handle.write(bytes(block)):
                    pass
    probe = disk / "one-more-byte"
    with pytest.raises(OSError, match="No space left on device") as refused:
        probe.write_bytes(b"x")
    assert refused.value.errno == errno.ENOSPC
    probe.unlink()
    return filler
