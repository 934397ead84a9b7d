"""A change counter shared by every worker process on one data directory.

Each worker caches key metadata and unwrapped key material in memory. Any process that changes a
key bumps this counter after its commit; every worker compares it with the value its cache was
built at before serving from the cache. The counter lives in a memory-mapped 8-byte file, so the
check on the hot path is a memory read, not a disk read or a system call.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from pathlib import Path

_COUNTER = struct.Struct("<Q")


class Generation:
    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # Real blocks, not a hole: writing to a hole in a mapping on a full disk (tmpfs)
            # would kill the process with SIGBUS; fallocate fails cleanly at start instead.
            os.posix_fallocate(fd, 0, _COUNTER.size)
            self._map = mmap.mmap(fd, _COUNTER.size)
        finally:
            os.close(fd)
        self._lock_path = path

    def current(self) -> int:
        value: int = _COUNTER.unpack_from(self._map)[0]
        return value

    def bump(self) -> None:
        # The lock makes read-increment-write atomic across processes.
        with open(self._lock_path, "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                _COUNTER.pack_into(self._map, 0, self.current() + 1)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
