"""The audit log under attack and on a full disk (the hardening issue's defects 1 and 5).

- Unauthenticated requests cannot write what they like into the log, nor grow it faster than a
  fixed budget: beyond it they are counted, and the count is written as one line.
- Rotation keeps a bounded number of files.
- A line is written whole or not at all: on a full disk (a real tmpfs) the request is refused with
  503 and nothing changes, no line is torn, `audit verify` passes once space is freed, and every
  acknowledged change survives a `kill -9`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from s3kms.audit import AuditLog, verify

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsProcess, KmsThread, thread_settings
from kmsserver import signed_admin as signed

ADMIN = "/rustfs/admin/v3/kms"


def audit_files(directory: Path) -> list[Path]:
    rotated = sorted(directory.glob("audit.log.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    return [p for p in rotated if p.name.rsplit(".", 1)[1].isdigit()] + [directory / "audit.log"]


def lines_of(directory: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in audit_files(directory):
        if path.exists():
            out.extend(json.loads(line) for line in path.read_bytes().splitlines())
    return out


def verify_cli(directory: Path) -> subprocess.CompletedProcess[str]:
    files = [str(p) for p in audit_files(directory) if p.exists()]
    return subprocess.run(
        [sys.executable, "-m", "s3kms", "audit", "verify", *files],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


# -- bounded lines and a budget for unauthenticated failures ---------------------------------------


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[KmsThread]:
    server = KmsThread(
        thread_settings(tmp_path / "data", audit_unauthenticated_rate=1.0,
                        audit_unauthenticated_burst=20, audit_fsync_interval=0.2)
    ).start()  # fmt: skip
    yield server
    server.stop()


def test_an_unknown_operation_is_recorded_as_such_not_verbatim(srv: KmsThread) -> None:
    target = "TrentService." + "X" * 4000
    resp = httpx.post(srv.url + "/", headers={"x-amz-target": target}, content=b"{}", timeout=10)
    assert resp.status_code == 400
    raw = (srv.settings.data_dir / "audit" / "audit.log").read_bytes().splitlines()[-1]
    line = json.loads(raw)
    assert line["action"] == "kms:UnknownOperation" and line["principal"] is None
    assert len(raw) < 600


def test_unauthenticated_failures_cannot_grow_the_log_past_a_budget(srv: KmsThread) -> None:
    directory = srv.settings.data_dir / "audit"
    sent = 400
    started = time.monotonic()
    with httpx.Client(timeout=10) as client:
        for _ in range(sent):
            resp = client.post(
                srv.url + "/", headers={"x-amz-target": "TrentService.Decrypt"}, content=b"{}"
            )
            assert resp.status_code == 400  # MissingAuthenticationToken: still answered
    elapsed = time.monotonic() - started
    # The periodic tick writes the count of the ones that got no line of their own.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = lines_of(directory)
        own = [x for x in lines if x["action"] == "kms:Decrypt"]
        counted = sum(x.get("suppressed", 0) for x in lines if x["action"] == "audit:suppressed")
        if len(own) + counted == sent:
            break
        time.sleep(0.1)
    assert len(own) + counted == sent, (len(own), counted)  # every request accounted for
    assert len(own) <= 20 + 1.0 * elapsed + 1  # burst + rate x time, not one per request
    assert counted >= sent - len(own)
    summary = next(x for x in lines if x["action"] == "audit:suppressed")
    assert summary["outcome"] == "denied" and summary["error"] == "Unauthenticated"
    assert verify(audit_files(directory)).ok
    # An authenticated request still gets its line at once.
    resp = signed(srv.url, "GET", f"{ADMIN}/status")
    assert lines_of(directory)[-1]["request_id"] == resp.headers["x-amz-request-id"]


def test_rotation_keeps_the_configured_number_of_files(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", max_bytes=2000, keep_files=3, fsync_interval=0)
    for i in range(200):
        log.record(
            request_id=f"R{i}", principal="AK", source=None, action="kms:Decrypt", key="k",
            outcome="allowed", status=200, error=None, started=time.perf_counter(),
        )  # fmt: skip
    log.close()
    rotated = sorted(p.name for p in tmp_path.glob("audit.log.*"))
    assert len(rotated) == 3, rotated
    files = audit_files(tmp_path)
    result = verify(files)  # the oldest kept file starts mid-chain: still one valid chain
    assert result.ok, result.problem
    assert lines_of(tmp_path)[-1]["seq"] == 200


def test_a_torn_last_line_from_a_crash_is_cut_at_start(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, fsync_interval=0)
    for i in range(3):
        log.record(
            request_id=f"R{i}", principal="AK", source=None, action="kms:Decrypt", key="k",
            outcome="allowed", status=200, error=None, started=time.perf_counter(),
        )  # fmt: skip
    log.close()
    with path.open("ab") as fh:
        fh.write(b'{"action":"kms:Decr')  # what a crash in the middle of a write leaves
    log = AuditLog(path, fsync_interval=0)
    log.record(
        request_id="R3", principal="AK", source=None, action="kms:Decrypt", key="k",
        outcome="allowed", status=200, error=None, started=time.perf_counter(),
    )  # fmt: skip
    log.close()
    result = verify([path])
    assert result.ok and result.lines == 4, result.problem


# -- a full disk -----------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
    )
    if made.returncode != 0:
        if os.geteuid() == 0:
            pytest.fail(f"cannot mount a tmpfs as root: {made.stderr!r}")
        pytest.skip("the disk-full test mounts a tmpfs, which needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(path: Path) -> Path:
    """Fill the filesystem under `path` to the last byte."""
    filler = path / "filler"
    with filler.open("wb", buffering=0) as fh:
        for size in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * size)
    return filler


def kms_client(url: str) -> Any:
    return boto3.client(
        "kms", endpoint_url=url, region_name="us-east-1", aws_access_key_id=ROOT_USER,
        aws_secret_access_key=ROOT_PASSWORD, config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip


def test_full_disk_refuses_cleanly_and_loses_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "vol", "3m") as volume:
        data = volume / "data"
        server = KmsProcess(data)
        server.start()
        try:
            client = kms_client(server.url)
            for name in ("before-1", "before-2"):
                assert (
                    signed(server.url, "POST", f"{ADMIN}/key/create?keyName={name}").status_code
                    == 200
                )
            filler = fill(volume)

            created: dict[str, int] = {}
            answers: list[tuple[str, int, str | None]] = []
            for i in range(30):
                name = f"full-{i}"
                resp = signed(server.url, "POST", f"{ADMIN}/key/create?keyName={name}")
                code = resp.json()["error"]["code"] if resp.status_code != 200 else None
                answers.append(("create", resp.status_code, code))
                created[name] = resp.status_code
                resp = signed(server.url, "GET", f"{ADMIN}/key/status?keyName=before-1")
                code = resp.json()["error"]["code"] if resp.status_code != 200 else None
                answers.append(("status", resp.status_code, code))
                try:
                    client.generate_data_key(KeyId="before-1", KeySpec="AES_256")
                    answers.append(("datakey", 200, None))
                except ClientError as exc:
                    meta = exc.response["ResponseMetadata"]
                    answers.append(
                        ("datakey", meta["HTTPStatusCode"], exc.response["Error"]["Code"])
                    )
            # Never a 500; every refusal is a 503 that says why.
            for what, status, code in answers:
                assert status in (200, 503), (what, status, code)
                if status == 503:
                    assert code in (
                        "KMSAuditUnavailable",
                        "KMSStorageUnavailable",
                        "DependencyTimeoutException",
                    ), (what, code)
            assert any(status == 503 for _, status, _ in answers), "the disk never filled"
            assert "Traceback" not in server.log()

            filler.unlink()  # space again: the server recovers on its own
            resp = signed(server.url, "POST", f"{ADMIN}/key/create?keyName=after-1")
            assert resp.status_code == 200, resp.text
            assert client.generate_data_key(KeyId="after-1", KeySpec="AES_256")["KeyId"].endswith(
                "after-1"
            )
            result = verify_cli(data / "audit")
            assert result.returncode == 0, result.stdout + result.stderr

            server.kill()  # a crash right after: what was acknowledged is on disk
            server.start()
            for name, status in [*created.items(), ("before-1", 200), ("after-1", 200)]:
                resp = signed(server.url, "GET", f"{ADMIN}/key/status?keyName={name}")
                if status == 200:
                    assert resp.status_code == 200, (name, resp.text)
                else:  # refused: nothing was made, no half-written key
                    assert resp.status_code == 404, (name, resp.text)
            result = verify_cli(data / "audit")
            assert result.returncode == 0, result.stdout + result.stderr
        finally:
            server.stop()


def test_aws_changes_record_their_intent_and_reads_do_not(srv: KmsThread) -> None:
    directory = srv.settings.data_dir / "audit"
    kms = kms_client(srv.url)
    before = len(lines_of(directory))
    key_id = kms.create_key(Description="intent")["KeyMetadata"]["KeyId"]
    kms.describe_key(KeyId=key_id)
    kms.create_alias(AliasName="alias/intent", TargetKeyId=key_id)
    new = lines_of(directory)[before:]
    assert [(x["action"], x["outcome"]) for x in new] == [
        ("kms:CreateKey", "intent"),
        ("kms:CreateKey", "allowed"),
        ("kms:DescribeKey", "allowed"),
        ("kms:CreateAlias", "intent"),
        ("kms:CreateAlias", "allowed"),
    ]
    assert new[0]["request_id"] == new[1]["request_id"] and new[0]["status"] == 0
    assert verify(audit_files(directory)).ok
