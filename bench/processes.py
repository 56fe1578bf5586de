"""What the harness reads of other processes: their children and their peak memory."""

from __future__ import annotations

import re
import threading
from pathlib import Path


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (every thread's, as Linux lists them per thread)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:  # gone meanwhile
        return []
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def status_mib(pid: int, field: str) -> float | None:
    """A memory figure of /proc/PID/status (VmHWM: peak resident; RssAnon: resident
    anonymous now) in MiB, or None once the process has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"{field}:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else None


class WorkerPeakMemory:
    """Watches the spawned training workers of a charnn server and keeps the highest peak
    any of them reached: a worker's own figure is gone with it when its job ends."""

    def __init__(self, server_pid: int, interval: float = 0.2) -> None:
        self.server_pid, self.interval = server_pid, interval
        self.peak_mib = 0.0
        self.peak_anonymous_mib = 0.0  # the highest RssAnon seen: the kernel keeps no peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> WorkerPeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            for pid in children(self.server_pid):
                line = command_line(pid)
                if "multiprocessing.spawn" in line and "resource_tracker" not in line:
                    self.peak_mib = max(self.peak_mib, status_mib(pid, "VmHWM") or 0.0)
                    anonymous = status_mib(pid, "RssAnon") or 0.0
                    self.peak_anonymous_mib = max(self.peak_anonymous_mib, anonymous)
