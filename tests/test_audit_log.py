"""The audit log's hash chain: what verify catches, rotation and resumption keep the chain."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from s3kms.audit import AuditLog, verify


def write(log: AuditLog, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        log.record(
            request_id=f"R{i}", principal="AK", source="127.0.0.1:1", action="kms:Decrypt",
            key=f"k{i}", outcome="allowed", status=200, error=None, started=time.perf_counter(),
        )  # fmt: skip


def make(tmp_path: Path, n: int = 10, **kw: float) -> Path:
    log = AuditLog(tmp_path / "audit.log", **kw)  # type: ignore[arg-type]
    write(log, n)
    log.close()
    return tmp_path / "audit.log"


def test_intact_chain_verifies(tmp_path: Path) -> None:
    path = make(tmp_path)
    result = verify([path])
    assert result.ok and result.lines == 10
    first = json.loads(path.read_text().splitlines()[0])
    assert first["prev"] == "0" * 64 and first["seq"] == 1
    assert set(first) == {
        "time", "seq", "request_id", "principal", "source", "action", "key", "outcome",
        "status", "error", "latency_ms", "prev",
    }  # fmt: skip


def test_edited_line_is_found(tmp_path: Path) -> None:
    path = make(tmp_path)
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace('"allowed"', '"denied"')
    path.write_text("\n".join(lines) + "\n")
    result = verify([path])
    assert not result.ok and result.problem is not None and ":5:" in result.problem


def test_removed_line_is_found(tmp_path: Path) -> None:
    path = make(tmp_path)
    lines = path.read_text().splitlines()
    del lines[4]
    path.write_text("\n".join(lines) + "\n")
    result = verify([path])
    assert not result.ok and result.problem is not None and ":5:" in result.problem


def test_reordered_lines_are_found(tmp_path: Path) -> None:
    path = make(tmp_path)
    lines = path.read_text().splitlines()
    lines[2], lines[3] = lines[3], lines[2]
    path.write_text("\n".join(lines) + "\n")
    assert not verify([path]).ok


def test_rotation_and_restart_keep_one_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", max_bytes=1500)
    write(log, 12)
    log.close()
    reopened = AuditLog(tmp_path / "audit.log", max_bytes=1500)
    write(reopened, 5, start=12)
    files = [*reopened.rotated_files(), tmp_path / "audit.log"]
    reopened.close()
    assert len(files) > 2
    result = verify(files)
    assert result.ok and result.lines == 17
    # Dropping a whole middle file breaks the chain too.
    assert not verify([files[0], *files[2:]]).ok


def test_lines_since(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    write(log, 3)
    cut = time.time() + 0.01
    time.sleep(0.02)
    write(log, 2, start=3)
    assert [json.loads(x)["request_id"] for x in log.lines_since(cut)] == ["R3", "R4"]
    assert len(list(log.lines_since(None))) == 5
    log.close()


def test_shared_logs_keep_one_chain_through_rotation(tmp_path: Path) -> None:
    """Two writers (as two worker processes) append to one chain, across rotations and restarts."""
    a = AuditLog(tmp_path / "audit.log", max_bytes=1500, shared=True)
    b = AuditLog(tmp_path / "audit.log", max_bytes=1500, shared=True)
    for i in range(10):
        write(a if i % 3 else b, 1, start=i)
    b.close()
    c = AuditLog(tmp_path / "audit.log", max_bytes=1500, shared=True)  # a restarted worker
    for i in range(10, 20):
        write(a if i % 2 else c, 1, start=i)
    files = [*a.rotated_files(), tmp_path / "audit.log"]
    a.close()
    c.close()
    assert len(files) > 2  # the chain crossed rotations made by different writers
    result = verify(files)
    assert result.ok and result.lines == 20
    seqs = [json.loads(x)["seq"] for f in files for x in f.read_text().splitlines()]
    assert seqs == list(range(1, 21))


def test_worker_starting_while_another_appends_keeps_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that read the log, then saw another worker append before it took the lock."""
    a = AuditLog(tmp_path / "audit.log", shared=True)
    write(a, 3)
    real_resume = AuditLog._resume
    raced: list[bool] = []

    def resume_then_race(self: AuditLog) -> tuple[str, int]:
        state = real_resume(self)
        if self is not a and not raced:
            raced.append(True)
            write(a, 2, start=3)  # lands after this worker read the chain, before its lock
        return state

    monkeypatch.setattr(AuditLog, "_resume", resume_then_race)
    b = AuditLog(tmp_path / "audit.log", shared=True)
    write(b, 1, start=5)
    write(a, 1, start=6)
    a.close()
    b.close()
    assert raced
    result = verify([tmp_path / "audit.log"])
    assert result.ok and result.lines == 7, result.problem
