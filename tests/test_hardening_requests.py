"""Hostile requests through a real server: every one answers 4xx with the surface's code, nothing
changes that should not, and the server keeps serving.

Covers the hardening issue's defects 2 (backup vs key-level Deny), 3 (UpdateAlias), 6 (500s for
client input), and from 8 the presigned admin POST, file modes and the read-only data dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
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

from s3kms.auth import sigv4
from s3kms.client import Client
from s3kms.startup import ExitCode

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsProcess, KmsThread, thread_settings
from kmsserver import signed_admin as signed

ADMIN = "/rustfs/admin/v3/kms"


def aws_raw(
    url: str, operation: str, body: bytes, access: str = ROOT_USER, secret: str = ROOT_PASSWORD
) -> httpx.Response:
    """An AWS KMS JSON request with a body exactly as given (boto3 would refuse to send some)."""
    headers = sigv4.sign_headers(
        "POST", url + "/",
        {"content-type": "application/x-amz-json-1.1", "x-amz-target": f"TrentService.{operation}"},
        body, access_key=access, secret_key=secret, region="us-east-1", service="kms",
        now=time.time(),
    )  # fmt: skip
    return httpx.post(url + "/", headers=headers, content=body, timeout=20)


def kms_client(url: str, access: str = ROOT_USER, secret: str = ROOT_PASSWORD) -> Any:
    return boto3.client(
        "kms", endpoint_url=url, region_name="us-east-1", aws_access_key_id=access,
        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip


def admin_code(resp: httpx.Response) -> str:
    body = resp.json()
    assert set(body) == {"error"}, body
    code: str = body["error"]["code"]
    return code


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    server = KmsThread(thread_settings(tmp_path_factory.mktemp("hostile") / "data")).start()
    with Client(server.url, ROOT_USER, ROOT_PASSWORD) as root:
        for name in ("app-1", "app-2", "root-1", "root-2"):
            root.create_key(name)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def root(srv: KmsThread) -> Iterator[Client]:
    with Client(srv.url, ROOT_USER, ROOT_PASSWORD) as client:
        yield client


def still_serves(url: str) -> None:
    assert httpx.get(url + "/health/live", timeout=10).status_code == 200
    assert signed(url, "GET", f"{ADMIN}/key/status?keyName=app-1").status_code == 200


# -- defect 6: client input that used to answer 500 ------------------------------------------------

LONE = '"\\ud800"'  # a JSON escape for a lone surrogate: valid JSON, not encodable as UTF-8


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("Encrypt", '{"KeyId": "app-1", "Plaintext": "AAAA", "EncryptionContext": {"k": @}}'.replace("@", LONE)),
        ("Encrypt", '{"KeyId": "app-1", "Plaintext": "AAAA", "EncryptionContext": {@: "v"}}'.replace("@", LONE)),
        ("GenerateDataKey", '{"KeyId": "app-1", "KeySpec": "AES_256", "EncryptionContext": {"k": @}}'.replace("@", LONE)),
        ("GenerateDataKeyWithoutPlaintext", '{"KeyId": "app-1", "NumberOfBytes": 16, "EncryptionContext": {"k": @}}'.replace("@", LONE)),
        ("Decrypt", '{"CiphertextBlob": "AAAA", "EncryptionContext": {"k": @}}'.replace("@", LONE)),
        ("ReEncrypt", '{"CiphertextBlob": "AAAA", "DestinationKeyId": "app-1", "DestinationEncryptionContext": {"k": @}}'.replace("@", LONE)),
        ("CreateKey", '{"Description": @}'.replace("@", LONE)),
        ("UpdateKeyDescription", '{"KeyId": "app-1", "Description": @}'.replace("@", LONE)),
        ("DescribeKey", '{"KeyId": "alias/x@"}'.replace("@", LONE[1:-1])),
        ("Encrypt", '{"KeyId": @, "Plaintext": "AAAA"}'.replace("@", LONE)),
        ("Encrypt", "[" * 100_000),
    ],
)  # fmt: skip
def test_aws_input_that_used_to_answer_500(srv: KmsThread, operation: str, body: str) -> None:
    resp = aws_raw(srv.url, operation, body.encode())
    assert resp.status_code == 400, resp.text
    assert resp.json()["__type"] == "SerializationException", resp.text
    still_serves(srv.url)


def test_an_oversized_encryption_context_is_a_validation_error(srv: KmsThread) -> None:
    kms = kms_client(srv.url)
    for context in ({"k": "v" * 70_000}, {f"k{i}": "v" for i in range(70_000)}):
        with pytest.raises(ClientError) as caught:
            kms.generate_data_key(KeyId="app-1", KeySpec="AES_256", EncryptionContext=context)
        error = caught.value.response
        assert error["Error"]["Code"] == "ValidationException", error
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert "8192 bytes" in error["Error"]["Message"]
    # A context of the largest allowed size still works, and decrypts.
    context = {"k": "v" * 8191}
    made = kms.generate_data_key(KeyId="app-1", KeySpec="AES_256", EncryptionContext=context)
    plain = kms.decrypt(CiphertextBlob=made["CiphertextBlob"], EncryptionContext=context)
    assert plain["Plaintext"] == made["Plaintext"]


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("configure", b"[" * 100_000),
        ("policy/add?name=deep", b"[" * 100_000),
        ("user/add?accessKey=deep-user", b"[" * 100_000),
        ("backup", b"[" * 100_000),
        ("backup", b'{"passphrase": "long enough passphrase \\ud800"}'),
        ("user/add?accessKey=lone-secret", b'{"secretKey": "abcdefgh\\udfff", "policies": []}'),
        ("configure", b'{"kms_type": "local", "default_key_id": "\\ud800"}'),
        ("policy/add?name=lone", b'{"Statement": [{"Effect": "Allow", "Action": "\\ud800", "Resource": "*"}]}'),
    ],
)  # fmt: skip
def test_admin_input_that_used_to_answer_500(srv: KmsThread, route: str, body: bytes) -> None:
    resp = signed(srv.url, "POST", f"{ADMIN}/{route}", body=body)
    assert resp.status_code == 400, resp.text
    assert admin_code(resp) == "KMSInvalidRequest"
    still_serves(srv.url)


@pytest.mark.parametrize("days", ["%C2%B2", "9" * 5000, "%EF%BC%91%EF%BC%90", "-7", ""])
def test_pending_window_days_must_be_ascii_digits(srv: KmsThread, days: str) -> None:
    resp = signed(srv.url, "POST", f"{ADMIN}/key/delete?keyName=app-2&pendingWindowDays={days}")
    assert resp.status_code == 400, resp.text
    assert admin_code(resp) == "KMSInvalidRequest"
    assert signed(srv.url, "GET", f"{ADMIN}/key/status?keyName=app-2").json()["status"] == "enabled"


@pytest.mark.parametrize(
    "since",
    ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00%2B23:59", "not-a-time", "2026-13-01"],
)
def test_audit_since_out_of_range_is_refused_before_the_stream(srv: KmsThread, since: str) -> None:
    resp = signed(srv.url, "GET", f"{ADMIN}/audit?since={since}")
    assert resp.status_code == 400, resp.text  # a clean error, not a 200 whose stream aborts
    assert admin_code(resp) == "KMSInvalidRequest"
    ok = signed(srv.url, "GET", f"{ADMIN}/audit?since=9999-12-31T23:59:59Z")
    assert ok.status_code == 200 and ok.content == b""


# -- defect 2: a backup takes the right to use every key --------------------------------------------


def test_backup_is_refused_to_a_user_denied_any_key(srv: KmsThread, root: Client) -> None:
    root.put_policy(
        "backup-but-not-root",
        {"Statement": [
            {"Effect": "Allow", "Action": ["admin:KMSBackup", "kms:*"], "Resource": "*"},
            {"Effect": "Deny", "Action": "kms:*", "Resource": "arn:aws:kms:*:*:key/root-*"},
        ]},
    )  # fmt: skip
    secret = root.add_user("backup-partial", ["backup-but-not-root"])["secretKey"]
    body = json.dumps({"passphrase": "a passphrase of my own choosing"}).encode()
    resp = signed(srv.url, "POST", f"{ADMIN}/backup", "backup-partial", secret, body)
    assert resp.status_code == 403, resp.text
    assert admin_code(resp) == "AccessDenied"
    assert "root-" not in resp.text  # the refusal names no key the user may not see
    assert resp.headers["content-type"].startswith("application/json")


def test_backup_is_allowed_to_a_user_who_may_decrypt_every_key(
    srv: KmsThread, root: Client
) -> None:
    root.put_policy(
        "backup-everything",
        {"Statement": [{"Effect": "Allow", "Action": ["admin:KMSBackup", "kms:Decrypt"],
                        "Resource": "*"}]},
    )  # fmt: skip
    secret = root.add_user("backup-full", ["backup-everything"])["secretKey"]
    body = json.dumps({"passphrase": "a passphrase of my own choosing"}).encode()
    resp = signed(srv.url, "POST", f"{ADMIN}/backup", "backup-full", secret, body)
    assert resp.status_code == 200, resp.text
    assert resp.content.startswith(b"S3KB")
    # Backup rights alone (no kms:Decrypt) are not enough.
    root.put_policy(
        "backup-only",
        {"Statement": [{"Effect": "Allow", "Action": "admin:KMSBackup", "Resource": "*"}]},
    )
    secret = root.add_user("backup-only-user", ["backup-only"])["secretKey"]
    resp = signed(srv.url, "POST", f"{ADMIN}/backup", "backup-only-user", secret, body)
    assert resp.status_code == 403 and admin_code(resp) == "AccessDenied"


# -- defect 3: UpdateAlias needs the alias, the old key and the new key -----------------------------


def test_update_alias_needs_rights_on_the_key_it_leaves(srv: KmsThread, root: Client) -> None:
    admin = kms_client(srv.url)
    admin.create_alias(AliasName="alias/prod-root", TargetKeyId="root-1")
    root.put_policy(
        "app-aliases",
        {"Statement": [{"Effect": "Allow", "Action": "kms:*Alias",
                        "Resource": ["arn:aws:kms:*:*:key/app-*", "arn:aws:kms:*:*:alias/*"]}]},
    )  # fmt: skip
    secret = root.add_user("alias-user", ["app-aliases"])["secretKey"]
    user = kms_client(srv.url, "alias-user", secret)
    with pytest.raises(ClientError) as caught:
        user.update_alias(AliasName="alias/prod-root", TargetKeyId="app-1")
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "key/root-1" in caught.value.response["Error"]["Message"]
    target = admin.list_aliases(KeyId="root-1")["Aliases"]
    assert [a["AliasName"] for a in target] == ["alias/prod-root"]  # unchanged
    with pytest.raises(ClientError) as caught:
        user.delete_alias(AliasName="alias/prod-root")
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    # Within its own keys the user may do all three.
    user.create_alias(AliasName="alias/app-current", TargetKeyId="app-1")
    user.update_alias(AliasName="alias/app-current", TargetKeyId="app-2")
    assert admin.describe_key(KeyId="alias/app-current")["KeyMetadata"]["KeyId"] == "app-2"
    user.delete_alias(AliasName="alias/app-current")


def test_alias_actions_need_rights_on_the_alias(srv: KmsThread, root: Client) -> None:
    root.put_policy(
        "app-keys-only",
        {"Statement": [{"Effect": "Allow", "Action": "kms:*Alias",
                        "Resource": "arn:aws:kms:*:*:key/app-*"}]},
    )  # fmt: skip
    secret = root.add_user("alias-keys-only", ["app-keys-only"])["secretKey"]
    user = kms_client(srv.url, "alias-keys-only", secret)
    with pytest.raises(ClientError) as caught:
        user.create_alias(AliasName="alias/app-nope", TargetKeyId="app-1")
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "alias/app-nope" in caught.value.response["Error"]["Message"]
    names = [a["AliasName"] for a in kms_client(srv.url).list_aliases()["Aliases"]]
    assert "alias/app-nope" not in names


# -- defect 8: presigned changes must sign their payload -------------------------------------------


def test_a_presigned_admin_post_binds_its_body(srv: KmsThread) -> None:
    path = f"{ADMIN}/policy/add?name=presigned"
    url = sigv4.presign_url(
        "POST", srv.url + path, access_key=ROOT_USER, secret_key=ROOT_PASSWORD,
        region="us-east-1", service="s3", now=time.time(), expires=300,
    )  # fmt: skip
    doc = json.dumps({"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]})
    resp = httpx.post(url, content=doc.encode(), timeout=10)
    assert resp.status_code == 400 and admin_code(resp) == "XAmzContentSHA256Mismatch", resp.text
    names = [p["name"] for p in signed(srv.url, "GET", f"{ADMIN}/policy/list").json()["policies"]]
    assert "presigned" not in names
    # With the body's hash in the URL's signature, that body and only that body goes through.
    digest = hashlib.sha256(doc.encode()).hexdigest()
    url = sigv4.presign_url(
        "POST", srv.url + path, access_key=ROOT_USER, secret_key=ROOT_PASSWORD,
        region="us-east-1", service="s3", now=time.time(), expires=300, payload_hash=digest,
    )  # fmt: skip
    sha = {"x-amz-content-sha256": digest}
    assert httpx.post(url, content=doc.encode(), headers=sha, timeout=10).status_code == 200
    other = doc.replace("kms:*", "admin:*").encode()
    resp = httpx.post(url, content=other, headers=sha, timeout=10)
    assert resp.status_code == 400 and admin_code(resp) == "XAmzContentSHA256Mismatch"
    other_sha = {"x-amz-content-sha256": hashlib.sha256(other).hexdigest()}
    resp = httpx.post(url, content=other, headers=other_sha, timeout=10)
    assert resp.status_code == 403 and admin_code(resp) == "SignatureDoesNotMatch"


# -- defect 8: files, modes, start-up ---------------------------------------------------------------


def test_data_files_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    server = KmsProcess(tmp_path / "data")
    old = os.umask(0o022)  # the child inherits it, as from a default shell
    try:
        server.start()
    finally:
        os.umask(old)
    try:
        with Client(server.url, ROOT_USER, ROOT_PASSWORD) as root:
            root.create_key("perm-key")
            root.put_policy(
                "p", {"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}
            )
            root.add_user("perm-user", ["p"])
        files = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
        names = {p.name for p in files}
        assert {
            "keystore.db",
            "keystore.db-wal",
            "keystore.db-shm",
            "users.json",
            "audit.log",
        } <= names
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        for path in [tmp_path / "data", *[p for p in (tmp_path / "data").rglob("*") if p.is_dir()]]:
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    finally:
        server.stop()


def _start_fails(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "S3KMS_ROOT_USER": ROOT_USER, "S3KMS_ROOT_PASSWORD": ROOT_PASSWORD}
    return subprocess.run(
        [sys.executable, "-m", "s3kms", "server", "--address", "127.0.0.1:0",
         "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def test_an_unwritable_data_dir_ends_with_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = _start_fails(blocker / "data")
    assert result.returncode == ExitCode.DATA_DIR, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("s3kms: cannot write to the data directory"), (
        lines
    )


def test_a_read_only_data_dir_ends_with_one_clear_line(tmp_path: Path) -> None:
    # Root ignores mode bits, so only a read-only mount makes a directory unwritable for it.
    mount = tmp_path / "ro"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        if os.geteuid() == 0:
            pytest.fail(f"cannot mount a read-only tmpfs as root: {made.stderr!r}")
        pytest.skip("mounting a read-only tmpfs needs root")
    try:
        result = _start_fails(mount)
        assert result.returncode == ExitCode.DATA_DIR, result
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines == [
            f"s3kms: cannot write to the data directory {mount}: Read-only file system; choose a "
            "directory s3kms can create and write (--data-dir or S3KMS_DATA_DIR)"
        ], lines
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["--master-key-file", "/nonexistent/master.key"], ExitCode.MASTER_KEY,
         "s3kms: cannot read master key file /nonexistent/master.key: No such file or directory"),
        # The checks cannot tell that /proc takes no directory without trying: the start fails
        # when it opens the audit log, still with one line (tests/test_startup_errors.py has the
        # failures found before anything is written).
        (["--audit-log", "/proc/no-such-dir/audit.log"], ExitCode.DATA_DIR,
         "s3kms: cannot start: [Errno 2] No such file or directory"),
    ],
)  # fmt: skip
def test_start_up_failures_are_one_line(
    tmp_path: Path, args: list[str], code: int, expected: str
) -> None:
    result = _start_fails(tmp_path / "data", *args)
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(expected), result.stderr
