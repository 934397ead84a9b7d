"""The standard `process_*` metrics, for the server's processes together.

With `--workers N` a scrape answers for the whole server: memory, CPU time and open files are
the sums over the supervisor and its live workers (CPU time of a worker that exited leaves the
sum, which Prometheus reads as a counter reset), and the start time is the earliest. Read from
`/proc` (Linux); elsewhere only this process's CPU time and start time are known.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = resource.getpagesize()
_STARTED = time.time()  # the fallback start time: when this module was imported


@dataclass
class ProcessStats:
    cpu_seconds: float = 0.0
    resident_bytes: int = 0
    virtual_bytes: int = 0
    open_fds: int = 0
    max_fds: int = 0
    start_time: float = 0.0


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as fh:
            for line in fh:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _one(pid: int, boot: float) -> ProcessStats | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None  # gone, or not readable
    # Fields after the command name (which may hold spaces and parentheses); field 3 is [0].
    fields = stat[stat.rindex(b")") + 2 :].split()
    return ProcessStats(
        cpu_seconds=(int(fields[11]) + int(fields[12])) / _TICKS,
        resident_bytes=int(fields[21]) * _PAGE,
        virtual_bytes=int(fields[20]),
        open_fds=fds,
        start_time=boot + int(fields[19]) / _TICKS,
    )


def _max_fds() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return -1 if soft == resource.RLIM_INFINITY else soft


def sample(pids: Iterable[int]) -> ProcessStats:
    """The processes `pids` together (unreadable or exited ones left out)."""
    boot = _boot_time()
    total = ProcessStats(max_fds=_max_fds())
    if boot is None:  # no /proc: this process only
        usage = resource.getrusage(resource.RUSAGE_SELF)
        total.cpu_seconds = usage.ru_utime + usage.ru_stime
        total.start_time = _STARTED
        return total
    starts: list[float] = []
    for pid in dict.fromkeys(pids):
        one = _one(pid, boot)
        if one is None:
            continue
        total.cpu_seconds += one.cpu_seconds
        total.resident_bytes += one.resident_bytes
        total.virtual_bytes += one.virtual_bytes
        total.open_fds += one.open_fds
        starts.append(one.start_time)
    total.start_time = min(starts) if starts else _STARTED
    return total
