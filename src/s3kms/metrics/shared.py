"""One process's metric values in a memory map, and reading every worker's back.

A `Slab` is a fixed-size map of named runs of int64 values. Each process writes only its own
slab, so an increment is a plain integer store (`values[i] += 1`): no lock, no formatting, no
system call. With `--workers N` each worker's slab is a file `<pid>-<random>.slab` in the metrics
directory; a scrape reads every file there and adds them up. With one process the slab is
anonymous memory and nothing is written to disk.

Layout (native byte order; the files are only ever read on the machine that wrote them):

    header   8 bytes magic, int64 bytes used, int64 series dropped, int64 reserved
    entry    uint32 key length, uint32 value count, key (UTF-8, padded to 8), count x 8 bytes

A value is an int64 (`values`) or a double (`floats`, the same memory): which, the family of
the series says (registry.py); this module hands the 8-byte values back as they are.

A new entry is written whole before the `used` field grows over it, so a reader (which reads
`used` first) never parses a half-written entry; a value is one aligned 8-byte store, which a
reader sees either before or after. The slab never grows: when it is full, a new series is
written to a scratch run that is never read back, and counted in `dropped` (the label values
are bounded, see registry.py, so 1 MiB holds many times what s3kms can make).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from s3kms.fsutil import ensure_private_dir

MAGIC = b"s3kmsM01"
SIZE = 1 << 20  # bytes per slab; untouched pages of the map cost no memory
_USED, _DROPPED = 1, 2  # int64 indexes in the header
_HEADER = 32
_ENTRY = struct.Struct("=II")
_MAX_VALUES = 64  # values in one entry (a histogram has 18)
_MAX_KEY = 1024  # bytes of one key
_SCRATCH = 8 * _MAX_VALUES  # the run at the end that a full slab writes new series into
SUFFIX = ".slab"


class Slab:
    """This process's values: `slot(key, n)` gives the index of `key`'s `n` values in `values`."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            self._map = mmap.mmap(-1, SIZE)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.ftruncate(fd, SIZE)
                self._map = mmap.mmap(fd, SIZE)
            finally:
                os.close(fd)
        self.path = path
        self._map[: len(MAGIC)] = MAGIC
        self.values = memoryview(self._map).cast("q")
        self.floats = memoryview(self._map).cast("d")
        self.values[_USED] = _HEADER
        self._index: dict[str, int] = {}

    def slot(self, key: str, count: int) -> int:
        """The index of the first of `key`'s `count` values (zero when new). Not the hot path:
        callers keep the index."""
        index = self._index.get(key)
        if index is not None:
            return index
        data = key.encode()
        if len(data) > _MAX_KEY or not 0 < count <= _MAX_VALUES:
            raise ValueError(f"metric series too large: {key[:80]!r}")
        used = self.values[_USED]
        start = used + _ENTRY.size + ((len(data) + 7) & ~7)
        end = start + 8 * count
        if end > SIZE - _SCRATCH:
            self.values[_DROPPED] += 1
            return (SIZE - _SCRATCH) // 8  # written to, never read back
        _ENTRY.pack_into(self._map, used, len(data), count)
        self._map[used + _ENTRY.size : used + _ENTRY.size + len(data)] = data
        self.values[_USED] = end  # publishes the entry, written whole above
        index = self._index[key] = start // 8
        return index

    @property
    def dropped(self) -> int:
        return int(self.values[_DROPPED])

    def entries(self) -> list[tuple[str, bytes]]:
        return _entries(self._map)


@dataclass(frozen=True)
class Reading:
    """One slab as a scrape read it."""

    pid: int | None  # None: this process's own anonymous slab
    alive: bool
    dropped: int
    entries: list[tuple[str, bytes]]


def _entries(buffer: mmap.mmap) -> list[tuple[str, bytes]]:
    """Each series' key and its values, as `count` x 8 bytes in native order."""
    out: list[tuple[str, bytes]] = []
    if buffer[: len(MAGIC)] != MAGIC:
        return out
    with memoryview(buffer) as raw, raw.cast("q") as values:
        used = min(int(values[_USED]), SIZE - _SCRATCH)
        offset = _HEADER
        while offset + _ENTRY.size <= used:
            size, count = _ENTRY.unpack_from(buffer, offset)
            start = offset + _ENTRY.size + ((size + 7) & ~7)
            end = start + 8 * count
            if size > _MAX_KEY or not 0 < count <= _MAX_VALUES or end > used:
                break  # not an entry this module wrote: stop rather than guess
            try:
                key = buffer[offset + _ENTRY.size : offset + _ENTRY.size + size].decode()
            except UnicodeDecodeError:
                break
            out.append((key, buffer[start:end]))
            offset = end
    return out


def _dropped(buffer: mmap.mmap) -> int:
    with memoryview(buffer) as raw, raw.cast("q") as values:
        return int(values[_DROPPED])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_directory(directory: Path) -> Iterator[Reading]:
    """Every worker's slab in `directory`, the ones of workers that have exited too (their
    counts stay part of the totals; their gauges are no longer current)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return
    for name in names:
        pid_text = name.removesuffix(SUFFIX).partition("-")[0]
        if not name.endswith(SUFFIX) or not pid_text.isdigit():
            continue
        pid = int(pid_text)
        try:
            with (
                (directory / name).open("rb") as fh,
                mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view,
            ):
                if len(view) != SIZE:
                    continue
                entries, dropped = _entries(view), _dropped(view)
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours
        yield Reading(pid, _alive(pid), dropped, entries)


def slab_path(directory: Path) -> Path:
    """A new file for this process (the random part: a pid can come back after a crash)."""
    return directory / f"{os.getpid()}-{os.urandom(4).hex()}{SUFFIX}"


def prepare_directory(directory: Path) -> None:
    """Empty `directory` (mode 0700) before the workers start: counts of an earlier run are
    never added to this one's."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(directory)
    ensure_private_dir(directory)


def remove_directory(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
