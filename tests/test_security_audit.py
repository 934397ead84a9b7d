"""The audit log as the real server writes it: one line per KMS request, streaming, verify, rotation.

And the claim that neither the audit log nor the server's own log ever holds a secret of the run.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3kms.auth import sigv4
from s3kms.client import Client
from s3kms.errors import AuthError

from kmsserver import MASTER_KEY, ROOT_PASSWORD, ROOT_USER, KmsProcess, KmsThread, thread_settings
from kmsserver import signed_admin as signed

ADMIN = "/rustfs/admin/v3/kms"
FIELDS = {
    "time", "seq", "request_id", "principal", "source", "action", "key", "outcome", "status",
    "error", "latency_ms", "prev",
}  # fmt: skip


def audit_files(directory: Path) -> list[Path]:
    """The chain's files, oldest first: audit.log.1, audit.log.2, ..., audit.log."""
    rotated = sorted(
        (p for p in directory.glob("audit.log.*") if p.suffix[1:].isdigit()),
        key=lambda p: int(p.suffix[1:]),
    )
    return [*rotated, directory / "audit.log"]


def read_lines(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in audit_files(directory):
        out.extend(json.loads(line) for line in path.read_text().splitlines())
    return out


def verify_cli(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "s3kms", "audit", "verify", *map(str, files)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    server = KmsThread(thread_settings(tmp_path_factory.mktemp("audit") / "data")).start()
    with Client(server.url, ROOT_USER, ROOT_PASSWORD) as root:
        root.create_key("app-1")
        root.create_key("other-1")
        root.put_policy(
            "app-status",
            {"Statement": [{"Effect": "Allow", "Action": "admin:KMSKeyStatus",
                            "Resource": "arn:minio:kms:::app-*"}]},
        )  # fmt: skip
        root.put_policy(
            "auditor",
            {"Statement": [{"Effect": "Allow", "Action": "admin:KMSAudit", "Resource": "*"}]},
        )
        server.users = {  # type: ignore[attr-defined]
            "reader": root.add_user("reader", ["app-status"])["secretKey"],
            "auditor": root.add_user("auditor", ["auditor"])["secretKey"],
        }
    yield server
    server.stop()


def audit_dir(srv: KmsThread) -> Path:
    return srv.settings.data_dir / "audit"


def test_one_line_per_kms_request_before_the_response(srv: KmsThread) -> None:
    users: dict[str, str] = srv.users  # type: ignore[attr-defined]
    directory = audit_dir(srv)

    def one_line(resp: httpx.Response) -> dict[str, Any]:
        """The response is in hand: its line must already be on disk, and be the only new one."""
        lines = read_lines(directory)
        assert len(lines) == one_line.count + 1, lines[one_line.count :]  # type: ignore[attr-defined]
        one_line.count += 1  # type: ignore[attr-defined]
        line = lines[-1]
        assert set(line) == FIELDS
        assert line["request_id"] == resp.headers["x-amz-request-id"]
        assert line["status"] == resp.status_code
        assert isinstance(line["latency_ms"], float) and 0 <= line["latency_ms"] < 10_000
        assert line["source"].startswith("127.0.0.1:")
        assert datetime.fromisoformat(line["time"].replace("Z", "+00:00")).tzinfo is not None
        return line

    one_line.count = len(read_lines(directory))  # type: ignore[attr-defined]
    url = srv.url

    line = one_line(signed(url, "GET", f"{ADMIN}/key/status?keyName=app-1"))
    assert line | {"time": 0, "seq": 0, "request_id": 0, "source": 0, "latency_ms": 0, "prev": 0} == {
        "time": 0, "seq": 0, "request_id": 0, "source": 0, "latency_ms": 0, "prev": 0,
        "principal": ROOT_USER, "action": "admin:KMSKeyStatus", "key": "app-1",
        "outcome": "allowed", "status": 200, "error": None,
    }  # fmt: skip

    line = one_line(signed(url, "GET", f"{ADMIN}/key/status?keyName=app-1", secret="wrong-secret"))
    assert line["outcome"] == "denied" and line["error"] == "SignatureDoesNotMatch"
    assert line["principal"] in (None, ROOT_USER) and line["status"] == 403
    assert line["action"] == "admin:KMSKeyStatus"

    line = one_line(signed(url, "GET", f"{ADMIN}/key/list", access="nosuchuser", secret="x" * 10))
    assert (line["outcome"], line["error"], line["action"]) == (
        "denied", "InvalidAccessKeyId", "admin:KMSListKeys",
    )  # fmt: skip

    line = one_line(httpx.get(f"{url}{ADMIN}/key/list", timeout=10))  # not signed at all
    assert (
        line["outcome"] == "denied" and line["principal"] is None and line["status"] in (400, 403)
    )

    resp = signed(url, "GET", f"{ADMIN}/key/status?keyName=other-1", "reader", users["reader"])
    line = one_line(resp)
    assert (line["principal"], line["action"], line["key"]) == (
        "reader",
        "admin:KMSKeyStatus",
        "other-1",
    )
    assert (line["outcome"], line["error"], line["status"]) == ("denied", "AccessDenied", 403)

    line = one_line(
        signed(url, "GET", f"{ADMIN}/key/status?keyName=app-1", "reader", users["reader"])
    )
    assert (line["principal"], line["outcome"], line["key"]) == ("reader", "allowed", "app-1")

    line = one_line(signed(url, "GET", f"{ADMIN}/key/status?keyName=missing-key"))
    assert (line["outcome"], line["error"], line["status"]) == ("failed", "KMSKeyNotFound", 404)

    # A change gets two lines: its intent before it runs (refused if that cannot be written),
    # then its outcome.
    resp = signed(url, "POST", f"{ADMIN}/key/create?keyName=audited")
    intent = read_lines(directory)[-2]
    one_line.count += 1  # type: ignore[attr-defined]
    line = one_line(resp)
    assert (intent["action"], intent["outcome"], intent["status"], intent["request_id"]) == (
        "admin:KMSCreateKey",
        "intent",
        0,
        resp.headers["x-amz-request-id"],
    )
    assert intent["principal"] == ROOT_USER and intent["seq"] == line["seq"] - 1
    assert (line["action"], line["key"], line["outcome"]) == (
        "admin:KMSCreateKey",
        "audited",
        "allowed",
    )

    with Client(url, ROOT_USER, ROOT_PASSWORD) as kms:  # the AWS KMS API is audited too
        before = one_line.count  # type: ignore[attr-defined]
        kms.encrypt("audited", b"audited plaintext")
        line = read_lines(directory)[-1]
        assert len(read_lines(directory)) == before + 1
        one_line.count += 1  # type: ignore[attr-defined]
        assert (line["action"], line["principal"], line["key"]) == (
            "kms:Encrypt",
            ROOT_USER,
            "audited",
        )

    # Health checks are not KMS requests: no line.
    for path in ("/health/live", "/health/ready"):
        assert httpx.get(url + path, timeout=10).status_code == 200
    lines = read_lines(directory)
    assert len(lines) == one_line.count  # type: ignore[attr-defined]
    assert [x["seq"] for x in lines] == list(range(1, len(lines) + 1))


def test_stream_since_to_an_authorised_caller(srv: KmsThread) -> None:
    users: dict[str, str] = srv.users  # type: ignore[attr-defined]
    url = srv.url
    signed(url, "GET", f"{ADMIN}/key/list")  # something before `since`
    time.sleep(0.005)
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    time.sleep(0.005)
    later = [signed(url, "GET", f"{ADMIN}/key/status?keyName=app-1") for _ in range(3)]

    whole = signed(url, "GET", f"{ADMIN}/audit")
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "application/x-ndjson"
    assert "content-length" not in whole.headers  # streamed, chunk by chunk
    on_disk = (audit_dir(srv) / "audit.log").read_bytes()
    assert on_disk.startswith(whole.content)  # the very lines of the file, byte for byte
    assert whole.content.count(b"\n") >= 10

    resp = signed(url, "GET", f"{ADMIN}/audit?since={since}")
    assert resp.status_code == 200
    streamed = [json.loads(line) for line in resp.text.splitlines()]
    assert all(x["time"] >= since for x in streamed)
    ids = [x["request_id"] for x in streamed]
    assert ids[:3] == [r.headers["x-amz-request-id"] for r in later]
    assert len(streamed) == 5  # the three, the whole-log read, and this request itself
    assert streamed[-1]["request_id"] == resp.headers["x-amz-request-id"]

    with Client(url, "auditor", users["auditor"]) as kms:
        assert kms.audit_lines(since=since)[0]["request_id"] == ids[0]
    with Client(url, "reader", users["reader"]) as kms, pytest.raises(AuthError) as exc:
        kms.audit_lines()
    assert exc.value.code == "AccessDenied"
    denied = signed(url, "GET", f"{ADMIN}/audit", "reader", users["reader"])
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "AccessDenied"
    assert b"request_id" not in denied.content

    bad = signed(url, "GET", f"{ADMIN}/audit?since=yesterday")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "KMSInvalidRequest"


def test_verify_finds_edited_removed_and_reordered_lines(srv: KmsThread, tmp_path: Path) -> None:
    for _ in range(5):
        signed(srv.url, "GET", f"{ADMIN}/key/list")
    original = (audit_dir(srv) / "audit.log").read_text().splitlines(keepends=True)
    assert len(original) >= 10
    intact = tmp_path / "intact.log"
    intact.write_text("".join(original))
    ok = verify_cli(intact)
    assert ok.returncode == 0, ok.stderr
    assert f"ok: {len(original)} lines" in ok.stdout

    def tampered(name: str, lines: list[str]) -> subprocess.CompletedProcess[str]:
        path = tmp_path / name
        path.write_text("".join(lines))
        return verify_cli(path)

    edited = list(original)
    entry = json.loads(edited[3])
    entry["principal"] = "someone-else"
    edited[3] = json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n"
    result = tampered("edited.log", edited)
    assert result.returncode == 1 and "edited.log:5:" in result.stderr, result.stderr

    removed = original[:4] + original[5:]
    result = tampered("removed.log", removed)
    assert result.returncode == 1 and "removed.log:5:" in result.stderr, result.stderr

    reordered = list(original)
    reordered[6], reordered[7] = reordered[7], reordered[6]
    result = tampered("reordered.log", reordered)
    assert result.returncode == 1 and "reordered.log:7:" in result.stderr, result.stderr

    inserted = [*original[:2], original[8], *original[2:]]
    result = tampered("inserted.log", inserted)
    assert result.returncode == 1 and "inserted.log:3:" in result.stderr, result.stderr


def test_rotation_keeps_one_chain_across_files_and_restarts(tmp_path: Path) -> None:
    settings = thread_settings(tmp_path / "data", audit_max_bytes=2048, audit_fsync_interval=0.0)
    ids = []
    for _ in range(2):  # a restart continues the same chain
        server = KmsThread(settings).start()
        try:
            for i in range(15):
                resp = signed(server.url, "GET", f"{ADMIN}/key/status?keyName=k{i}")
                ids.append(resp.headers["x-amz-request-id"])
            with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:
                streamed = kms.audit_lines()
        finally:
            server.stop()
    files = audit_files(tmp_path / "data" / "audit")
    assert len(files) >= 4
    assert all(f.stat().st_size < 2048 + 400 for f in files)
    lines = read_lines(tmp_path / "data" / "audit")
    assert [x["request_id"] for x in lines if x["action"] == "admin:KMSKeyStatus"] == ids
    assert [x["seq"] for x in lines] == list(range(1, len(lines) + 1))
    # The stream reads the rotated files too, oldest first.
    assert [x["seq"] for x in streamed] == list(range(1, len(streamed) + 1))
    assert len(streamed) == len(lines)

    result = verify_cli(*files)
    assert result.returncode == 0, result.stderr
    assert f"ok: {len(lines)} lines" in result.stdout
    missing = verify_cli(files[0], *files[2:])
    assert missing.returncode == 1 and f"{files[2]}:1:" in missing.stderr


def test_workers_share_one_verifiable_chain(tmp_path: Path) -> None:
    """`--workers 2`: both processes append to (and rotate) the same chain."""
    server = KmsProcess(tmp_path / "data", args=["--workers", "2", "--audit-max-bytes", "8192"])
    server.start()
    seen: set[str] = set()
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for _ in range(25):
                with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as http:
                    path = f"{server.url}{ADMIN}/key/list"
                    headers = sigv4.sign_headers(
                        "GET", path, {}, b"", access_key=ROOT_USER, secret_key=ROOT_PASSWORD,
                        region="us-east-1", service="s3", now=time.time(),
                    )  # fmt: skip
                    resp = http.get(path, headers=headers, timeout=10)
                    assert resp.status_code == 200
                    seen.add(resp.headers["x-amz-request-id"][:8])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        server.stop()
    assert not errors, errors
    assert len(seen) == 2, "the requests did not reach both workers"
    files = audit_files(tmp_path / "data" / "audit")
    assert len(files) >= 2
    lines = read_lines(tmp_path / "data" / "audit")
    assert len(lines) == 100
    assert {x["request_id"][:8] for x in lines} == seen
    result = verify_cli(*files)
    assert result.returncode == 0, result.stderr
    assert "ok: 100 lines" in result.stdout


def test_no_secret_reaches_the_audit_log_or_the_server_log(tmp_path: Path) -> None:
    server = KmsProcess(tmp_path / "data", args=["--log-level", "debug"])
    server.start()
    plaintext = b"plaintext-that-must-stay-secret-4711"
    passphrase = "backup-passphrase-never-logged"
    vault_token = "hvs.vault-token-never-logged-0815"
    chosen = "chosen-user-secret-never-logged"
    secrets: dict[str, str] = {
        "root password": ROOT_PASSWORD,
        "master key": MASTER_KEY,
        "chosen user secret": chosen,
        "backup passphrase": passphrase,
        "vault token": vault_token,
        "plaintext": plaintext.decode(),
        "plaintext b64": base64.b64encode(plaintext).decode(),
    }
    try:
        with Client(server.url, ROOT_USER, ROOT_PASSWORD) as root:
            root.create_key("scan")
            root.put_policy(
                "scan-only",
                {"Statement": [{"Effect": "Allow", "Action": "kms:*",
                                "Resource": "arn:aws:kms:*:*:key/scan"}]},
            )  # fmt: skip
            secrets["generated user secret"] = root.add_user("scanner", ["scan-only"])["secretKey"]
            root.add_user("chooser", [], secret_key=chosen)
            assert root.backup(passphrase)[:4] == b"S3KB"
            blob = root.encrypt("scan", plaintext)
            assert root.decrypt(blob) == plaintext
            data_key = root.generate_data_key("scan")
            secrets["data key b64"] = base64.b64encode(data_key.plaintext).decode()
            secrets["data key hex"] = data_key.plaintext.hex()
            with pytest.raises(Exception, match="Vault"):
                root.configure(
                    kms_type="vault", vault_address="http://127.0.0.1:1", vault_token=vault_token
                )
        with Client(server.url, "scanner", secrets["generated user secret"]) as user:
            assert user.decrypt(blob) == plaintext
            with pytest.raises(AuthError):
                user.key_status("scan")
        with (
            Client(server.url, "chooser", "a wrong secret for chooser") as wrong,
            pytest.raises(AuthError),
        ):
            wrong.list_keys()
        signed(
            server.url,
            "POST",
            f"{ADMIN}/backup",
            body=b'{"passphrase": "' + passphrase.encode() + b'"}',
        )
    finally:
        server.stop()
    audit_text = "".join(p.read_text() for p in audit_files(tmp_path / "data" / "audit"))
    server_log = server.log()
    assert audit_text.count("\n") >= 12 and "scanner" in audit_text
    assert "Application startup complete" in server_log
    for what, value in secrets.items():
        assert value not in audit_text, f"{what} in the audit log"
        assert value not in server_log, f"{what} in the server log"
    shutil.rmtree(tmp_path / "data")
