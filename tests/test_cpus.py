"""The CPUs a process may use (app/cpus.py): its affinity, at most its cgroup's quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import app.settings
from app.cpus import available_cpus, cpu_quota
from app.settings import Settings


def cpu_max(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "cpu.max"
    path.write_text(content)
    return path


@pytest.mark.parametrize(
    ("content", "cpus"),
    [
        ("max 100000\n", None),  # no limit
        ("200000 100000\n", 2),
        ("150000 100000\n", 2),  # 1.5 CPUs: rounded up
        ("1000 100000\n", 1),  # a hundredth of one: still a thread
        ("50000 50000\n", 1),
        ("", None),  # unreadable ones limit nothing
        ("max\n", None),
        ("lots 100000\n", None),
    ],
)
def test_the_quota_is_read_from_cpu_max(tmp_path: Path, content: str, cpus: int | None) -> None:
    assert cpu_quota(cpu_max(tmp_path, content)) == cpus


def test_no_cpu_max_means_no_quota(tmp_path: Path) -> None:
    assert cpu_quota(tmp_path / "absent") is None


def test_available_cpus_are_the_affinity_at_most_the_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3, 4, 5, 6, 7})

    assert available_cpus(cpu_max(tmp_path, "max 100000")) == 8
    assert available_cpus(cpu_max(tmp_path, "250000 100000")) == 3
    assert available_cpus(cpu_max(tmp_path, "3200000 100000")) == 8  # the quota of 32 CPUs
    assert available_cpus(tmp_path / "absent") == 8


def test_training_threads_share_the_available_cpus_among_concurrent_jobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app.settings, "available_cpus", lambda: 6)

    assert Settings().training_threads == 6
    assert Settings(max_concurrent_jobs=4).training_threads == 1
    assert Settings(max_concurrent_jobs=8).training_threads == 1  # at least one each
    assert Settings(worker_torch_threads=3).training_threads == 3  # as set
