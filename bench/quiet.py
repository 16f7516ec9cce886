"""How much CPU other processes took while a point was measured (the machine is shared).

All figures come from /proc in clock ticks: the machine's busy time (/proc/stat), minus the
server's process tree, minus the load generator (a finished child of this process, so it shows
in ``RUSAGE_CHILDREN``). What is left is someone else's work (and a little kernel networking),
as a share of the whole machine: 0.0 is a quiet machine, 0.5 is one core of two taken.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

BUSY = 0.15
"""A run during which other processes took more than this share of the machine is retried."""
TICKS = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1


@dataclass(frozen=True)
class Sample:
    at: float
    busy: int  # machine busy ticks
    ours: int  # server tree + finished children, ticks


def _machine_busy() -> int:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle


def _process_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def sample(pids: list[int]) -> Sample:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    finished = round((children.ru_utime + children.ru_stime) * TICKS)
    ours = sum(_process_ticks(pid) for pid in pids) + finished
    return Sample(time.monotonic(), _machine_busy(), ours)


def foreign_share(before: Sample, after: Sample) -> float:
    """Share of the machine's CPU used by others between two samples (0..1)."""
    elapsed = max(after.at - before.at, 1e-3)
    foreign = (after.busy - before.busy) - (after.ours - before.ours)
    return max(0.0, foreign / TICKS / elapsed / CPUS)


def wait_quiet(pids: list[int], threshold: float, timeout: float) -> float:
    """Wait (up to ``timeout`` s) for a half second in which others use < ``threshold``."""
    deadline = time.monotonic() + timeout
    while True:
        first = sample(pids)
        time.sleep(0.5)
        share = foreign_share(first, sample(pids))
        if share < threshold or time.monotonic() > deadline:
            return share
