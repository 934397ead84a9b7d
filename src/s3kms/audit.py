"""The tamper-evident audit log: one JSON line per request, each carrying the previous line's hash.

Line format (keys sorted, compact JSON, one per line):

    {"action": "kms:Decrypt", "error": null, "key": "app-key", "latency_ms": 0.41,
     "outcome": "allowed", "prev": "<sha256 hex of the previous line>", "principal": "AKIA...",
     "request_id": "9F3A...", "seq": 17, "source": "10.0.0.7:51234", "status": 200,
     "time": "2026-11-28T12:00:00.123Z"}

A request of the KES API adds `"surface": "kes"` (its action is the policy action, `kms:...`, as
the AWS API's; docs/kes.md).

`prev` of the first line of a brand-new log is 64 zeros; after a rotation, the first line of the new
file carries the hash of the last line of the rotated one, so the chain runs across files. `seq`
counts lines over the whole chain. Editing, removing, inserting or reordering any line breaks the
chain at that line; `s3kms audit verify FILE...` says where.

Never logged: secrets, plaintexts, data keys, ciphertexts, tokens, request bodies.

Durability: each line is written with one `write()` to an `O_APPEND` descriptor before the response
is sent, so it survives a crash of the server process. `fsync` runs every `fsync_interval` seconds
(default 1 s) in the background, bounding what a power loss can take; `fsync_interval = 0` fsyncs
every line before the response (slower, loses nothing).

Whole or nothing: a write that fails or comes up short (disk full) is cut back with `ftruncate`
(shrinking needs no space) and raises AuditUnavailable, so no torn line ever breaks the chain; the
caller refuses the request. A torn last line left by a crash is cut off at start.

Bounded: string fields are cut to MAX_FIELD characters; unauthenticated failures get lines from a
token bucket (`admit_unauthenticated`) and the rest are counted into one `audit:suppressed` line per
`tick()`; rotation keeps `keep_files` rotated files.

Worker processes (`--workers N`) share one chain (`shared=True`): the chain's head (last `seq`,
last line's hash, file size, rotation count) lives in the memory-mapped `<log>-head` file, and each
append holds an exclusive `flock` on it, reads the head, writes its line and stores the new head.
No file is re-read on the hot path; a worker that sees the rotation count move reopens the file.
At start the head is checked against the file on disk and rebuilt from it when they disagree.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import mmap
import os
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

from s3kms.errors import AuditUnavailable

log = logging.getLogger("s3kms.audit")
GENESIS = "0" * 64
# Every string field is cut to this many characters: no request can make a line long.
MAX_FIELD = 256
# The shared chain head: last seq, current file size, rotation count, last line's SHA-256.
_HEAD = struct.Struct("<QQQ32s")


def _str(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value[:MAX_FIELD])


@lru_cache(maxsize=4)
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def _now_text(ts: float) -> str:
    """RFC 3339 UTC with milliseconds; the per-second part is cached."""
    return f"{_second_text(int(ts))}{int(ts * 1000) % 1000:03d}Z"


def _last_line(path: Path) -> bytes | None:
    """The last complete line of a file, read from its end."""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        block = 4096
        data = b""
        while size > 0:
            step = min(block, size)
            size -= step
            fh.seek(size)
            data = fh.read(step) + data
            lines = data.rstrip(b"\n").split(b"\n")
            if len(lines) > 1 or size == 0:
                last = lines[-1]
                return last if last else None
    return None


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that a crash left half-written: it was never acknowledged."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        start = max(0, size - 1024 * 1024)
        tail = os.pread(fd, size - start, start)
        cut = start + tail.rfind(b"\n") + 1 if b"\n" in tail else start
        log.warning("audit log %s: removing a torn last line (%d bytes)", path, size - cut)
        os.ftruncate(fd, cut)
    finally:
        os.close(fd)


class AuditLog:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        fsync_interval: float = 1.0,
        shared: bool = False,
        keep_files: int = 10,
        unauthenticated_rate: float = 1.0,
        unauthenticated_burst: int = 20,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.fsync_interval = fsync_interval
        self.keep_files = keep_files
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _drop_torn_tail(path)
        self._prev, self._seq = self._resume()
        self._fd = self._open()
        self._dirty = False
        self._size = os.fstat(self._fd).st_size
        self._rotations = 0
        self._lock_fd = -1
        # Unauthenticated failures: a token bucket of lines; the rest are counted and written as
        # one `audit:suppressed` line per tick, so anyone on the network cannot fill the disk.
        self._unauth_rate = unauthenticated_rate
        self._unauth_burst = float(unauthenticated_burst)
        self._unauth_tokens = self._unauth_burst
        self._unauth_updated = time.monotonic()
        self.suppressed = 0
        # Called with "write" or "fsync" when one fails (the metrics count them).
        self.on_failure: Callable[[str], None] | None = None
        if shared:
            # Not `audit.log.*`, so `s3kms audit verify audit.log.* audit.log` never picks it up.
            self._open_head(path.with_name(path.name + "-head"))

    def _open_head(self, head_path: Path) -> None:
        """Map the shared chain head; rebuild it from the file when it does not match."""
        self._lock_fd = os.open(head_path, os.O_RDWR | os.O_CREAT, 0o600)
        os.posix_fallocate(self._lock_fd, 0, _HEAD.size)  # no hole: a full disk cannot SIGBUS us
        self._head = mmap.mmap(self._lock_fd, _HEAD.size)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            # Judge the head against the log as it is now, under the lock: other workers may have
            # appended (or rotated) since this one read the chain in __init__.
            os.close(self._fd)
            self._fd = self._open()
            size_now = os.fstat(self._fd).st_size
            seq, size, rotations, prev = _HEAD.unpack_from(self._head)
            if size != size_now or (seq == 0 and prev == bytes(32)):
                # No head yet, or a crash between a write and its head update: trust the files.
                self._prev, self._seq = self._resume()
                _HEAD.pack_into(
                    self._head, 0, self._seq, size_now, rotations, bytes.fromhex(self._prev)
                )
            self._size = size_now
            self._rotations = rotations
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _resume(self) -> tuple[str, int]:
        """Continue the chain from the last line on disk (this file, else the last rotated one)."""
        for candidate in (self.path, *self.rotated_files()[::-1]):
            if candidate.exists():
                last = _last_line(candidate)
                if last is not None:
                    return hashlib.sha256(last).hexdigest(), int(json.loads(last)["seq"])
        return GENESIS, 0

    def rotated_files(self) -> list[Path]:
        """Rotated files, oldest first (`audit.log.1`, `audit.log.2`, ...)."""
        found = []
        for p in self.path.parent.glob(self.path.name + ".*"):
            suffix = p.name.rsplit(".", 1)[1]
            if suffix.isdigit():
                found.append((int(suffix), p))
        return [p for _, p in sorted(found)]

    def admit_unauthenticated(self) -> bool:
        """Whether an unauthenticated failure gets a line of its own, or is only counted."""
        now = time.monotonic()
        tokens = self._unauth_tokens + (now - self._unauth_updated) * self._unauth_rate
        self._unauth_tokens = min(self._unauth_burst, tokens)
        self._unauth_updated = now
        if self._unauth_tokens >= 1.0:
            self._unauth_tokens -= 1.0
            return True
        self.suppressed += 1
        return False

    def record(
        self,
        *,
        request_id: str | None,
        principal: str | None,
        source: str | None,
        action: str | None,
        key: str | None,
        outcome: str,
        status: int,
        error: str | None,
        started: float,
        suppressed: int = 0,
        surface: str | None = None,
    ) -> None:
        """Append one line, whole or not at all: on failure raise AuditUnavailable, chain intact.
        `surface`: the API a request came through when the action does not say it (`kes`)."""
        shared = self._lock_fd >= 0
        if shared:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            if shared:
                self._load_head()
            self._append(
                request_id, principal, source, action, key, outcome, status, error, started,
                suppressed, surface,
            )  # fmt: skip
            if shared:
                _HEAD.pack_into(
                    self._head, 0, self._seq, self._size, self._rotations, bytes.fromhex(self._prev)
                )
        finally:
            if shared:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _load_head(self) -> None:
        """Continue from the shared head (under the lock): what every worker appended so far."""
        self._seq, self._size, rotations, prev = _HEAD.unpack_from(self._head)
        self._prev = prev.hex()
        if rotations != self._rotations:
            os.close(self._fd)  # another worker rotated the file
            self._fd = self._open()
            self._rotations = rotations

    def _append(
        self,
        request_id: str | None,
        principal: str | None,
        source: str | None,
        action: str | None,
        key: str | None,
        outcome: str,
        status: int,
        error: str | None,
        started: float,
        suppressed: int,
        surface: str | None = None,
    ) -> None:
        # Built by hand in sorted-key order: this runs on every request, and json.dumps of a dict
        # costs several times more. Every string goes through the JSON string escaper, capped.
        seq = self._seq + 1
        latency = round((time.perf_counter() - started) * 1000, 3)
        extra = f'"surface":{_str(surface)},' if surface else ""
        if suppressed:
            extra += f'"suppressed":{suppressed},'
        line = (
            f'{{"action":{_str(action)},"error":{_str(error)},"key":{_str(key)},'
            f'"latency_ms":{latency},"outcome":{_str(outcome)},"prev":"{self._prev}",'
            f'"principal":{_str(principal)},"request_id":{_str(request_id)},"seq":{seq},'
            f'"source":{_str(source)},"status":{status},{extra}"time":"{_now_text(time.time())}"}}'
        ).encode()
        self._write_whole(line + b"\n")
        self._seq = seq
        self._size += len(line) + 1
        self._prev = hashlib.sha256(line).hexdigest()
        if self._size >= self.max_bytes:
            self._rotate()

    def _write_whole(self, data: bytes) -> None:
        """One write of the whole line (and its fsync when asked); a failure leaves no trace."""
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write to the audit log")
            if self.fsync_interval <= 0:
                os.fsync(self._fd)
            else:
                self._dirty = True
        except OSError as exc:
            # A torn line would break the chain for good: cut the file back to the last whole
            # line (shrinking needs no free space) and refuse the request.
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                log.error("audit log %s: cannot cut back a failed write", self.path)
            log.error("audit log %s: write failed (%s); refusing requests", self.path, exc)
            if self.on_failure is not None:
                self.on_failure("write")
            raise AuditUnavailable from None

    def _rotate(self) -> None:
        """Start a new file; on failure keep appending to this one and try again later."""
        existing = self.rotated_files()
        number = int(existing[-1].name.rsplit(".", 1)[1]) + 1 if existing else 1
        rotated = self.path.with_name(f"{self.path.name}.{number}")
        try:
            os.fsync(self._fd)
            os.replace(self.path, rotated)
            try:
                fd = self._open()
            except OSError:
                os.replace(rotated, self.path)
                raise
        except OSError as exc:
            log.warning("audit log %s: rotation failed (%s); will retry", self.path, exc)
            return
        os.close(self._fd)
        self._fd = fd
        self._size = 0
        self._dirty = False
        self._rotations += 1
        self._prune([*existing, rotated])

    def _prune(self, rotated: list[Path]) -> None:
        """Keep the newest `keep_files` rotated files (0 keeps them all)."""
        if self.keep_files <= 0:
            return
        for old in rotated[: max(0, len(rotated) - self.keep_files)]:
            try:
                old.unlink()
            except OSError as exc:
                log.warning("audit log: cannot remove %s (%s)", old, exc)

    def tick(self) -> None:
        """Periodic work: the line for counted unauthenticated failures, then the fsync."""
        if self.suppressed:
            count = self.suppressed
            try:
                self.record(
                    request_id=None, principal=None, source=None, action="audit:suppressed",
                    key=None, outcome="denied", status=0, error="Unauthenticated",
                    started=time.perf_counter(), suppressed=count,
                )  # fmt: skip
                self.suppressed -= count
            except AuditUnavailable:
                pass  # counted still; written at a later tick
        self.sync()

    def sync(self) -> None:
        """Flush appended lines to stable storage (called periodically and at shutdown)."""
        if self._dirty:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                log.error("audit log %s: fsync failed (%s)", self.path, exc)
                if self.on_failure is not None:
                    self.on_failure("fsync")
                return
            self._dirty = False

    def reset(self) -> None:
        """Dev mode (`POST /_s3kms/reset`): throw every line away (rotated files too) and start a
        new chain from GENESIS. One process only: a shared log (workers) is refused."""
        if self._lock_fd >= 0:
            raise ValueError("a shared audit log (--workers N) cannot be reset")
        os.close(self._fd)
        for path in (*self.rotated_files(), self.path):
            path.unlink(missing_ok=True)
        self._prev, self._seq = GENESIS, 0
        self._fd = self._open()
        self._size = 0
        self._dirty = False

    def close(self) -> None:
        self.tick()
        os.close(self._fd)
        if self._lock_fd >= 0:
            self._head.close()
            os.close(self._lock_fd)

    def lines_since(self, since: float | None) -> Iterator[bytes]:
        """Every line (rotated files first) whose time is at or after `since`.

        `since` is turned into text here, not when iteration starts: a time out of range fails
        before a streamed answer has sent its status line."""
        return self._lines_from(_now_text(since) if since is not None else "")

    def _lines_from(self, since_text: str) -> Iterator[bytes]:
        for path in [*self.rotated_files(), self.path]:
            if not path.exists():
                continue
            with path.open("rb") as fh:
                for raw in fh:
                    if since_text and json.loads(raw)["time"] < since_text:
                        continue
                    yield raw


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    lines: int
    problem: str | None = None  # where and what, when not ok


def verify(paths: Sequence[Path]) -> VerifyResult:
    """Check the hash chain over files given oldest first; say where it breaks."""
    prev: str | None = None
    seq: int | None = None
    count = 0
    for path in paths:
        with path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                where = f"{path}:{number}"
                line = raw.rstrip(b"\n")
                try:
                    entry: dict[str, Any] = json.loads(line)
                    line_prev, line_seq = entry["prev"], int(entry["seq"])
                except (ValueError, KeyError, TypeError):
                    return VerifyResult(False, count, f"{where}: not an audit line")
                if prev is None:
                    prev = line_prev  # the first file may start mid-chain (older files pruned)
                elif line_prev != prev:
                    return VerifyResult(
                        False,
                        count,
                        f"{where}: chain broken (a line before it was edited, "
                        "removed or reordered, or this one was inserted)",
                    )
                if seq is not None and line_seq != seq + 1:
                    return VerifyResult(False, count, f"{where}: sequence {line_seq} follows {seq}")
                seq = line_seq
                prev = hashlib.sha256(line).hexdigest()
                count += 1
    return VerifyResult(True, count)
