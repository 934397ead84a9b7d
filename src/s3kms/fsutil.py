"""Durable, private file writes: temp file, fsync, rename, fsync of the directory."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def write_private_file(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, mode 0600; the write survives a crash once this returns."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # a temp file left by a crash keeps its old mode through O_CREAT
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]  # a short write (disk nearly full) goes on
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the old file is untouched; drop the half copy
            tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
