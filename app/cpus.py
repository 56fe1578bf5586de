"""How many CPUs this process may really use.

``os.cpu_count()`` is the machine's count: inside a container, the host's. A process may
run only on the CPUs of its affinity mask (``docker run --cpuset-cpus``), and for no more
CPU time than its cgroup's quota (``--cpus``, compose's ``cpus:``): more threads than that
only take turns, and a quota spent early leaves the whole process stopped until the next
period.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

# cgroup v2, as a container sees its own cgroup: "<quota> <period>" in microseconds
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cpu_max: Path = CPU_MAX) -> int:
    """The CPUs of this process's affinity, at most its CPU quota rounded up; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cpu_quota(cpu_max)
    if quota is not None:
        cpus = min(cpus, quota)
    return max(1, cpus)


def cpu_quota(cpu_max: Path = CPU_MAX) -> int | None:
    """The cgroup's CPU quota in whole CPUs, rounded up; None when nothing limits it.

    "max 100000" is no limit; "150000 100000" is 1.5 CPUs, so 2. No such file (cgroup
    v1, another OS, no cpu controller) also means no limit that can be read.
    """
    try:
        quota, period = cpu_max.read_text().split()
        if quota == "max":
            return None
        return math.ceil(int(quota) / int(period))
    except (OSError, ValueError, ZeroDivisionError):
        return None
