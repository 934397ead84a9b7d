"""`s3kms server --dev`: the throwaway KMS for tests, demos and CI (docs/configuration.md#dev-mode).

Each test runs the real `s3kms server` process, as a CI pipeline would.
"""

from __future__ import annotations

import json
import os
import signal
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
from s3kms.startup import ExitCode

from kmsserver import KmsProcess, free_port, signed_admin, wait_ready


class DevServer:
    """`s3kms server --dev` with no S3KMS_* in its environment but `env`; TMPDIR is `tmp`, so the
    temporary data directory it makes can be found (and checked gone) there."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.log_path = tmp / "dev-server.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("S3KMS_")}
        self.env = base | {"TMPDIR": str(tmp)} | (env or {})
        self.args = ["--address", f"127.0.0.1:{self.port}", *args]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DevServer:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "s3kms", "server", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        try:
            wait_ready(self.url)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"server did not start; log:\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def temp_dirs(self) -> list[Path]:
        return sorted(self.tmp.glob("s3kms-dev-*"))

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def kms(
        self,
        access: str = "test",
        secret: str = "test",  # noqa: S107 - dev mode's default root secret
        region: str = "us-east-1",
    ) -> Any:
        return boto3.client(
            "kms",
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1}),
        )

    def reset(
        self,
        access: str = "test",
        secret: str = "test",  # noqa: S107 - dev mode's default root secret
        service: str = "s3",
    ) -> httpx.Response:
        target = f"{self.url}/_s3kms/reset"
        headers = sigv4.sign_headers(
            "POST", target, {}, b"", access_key=access, secret_key=secret,
            region="us-east-1", service=service, now=time.time(),
        )  # fmt: skip
        return httpx.post(target, headers=headers, timeout=20)


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevServer]:
    server = DevServer(tmp_path, "--dev").start()
    yield server
    server.stop()


def run_server(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("S3KMS_")}
    return subprocess.run(
        [sys.executable, "-m", "s3kms", "server", *args],
        env=base | {"TMPDIR": str(tmp_path)} | env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


def test_boto3_with_test_credentials_banner_and_temp_dir_gone_after_sigterm(
    dev: DevServer,
) -> None:
    kms: Any = dev.kms()
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"secret")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"secret"
    log = dev.log()
    assert "DEV MODE" in log and "NOT FOR PRODUCTION" in log and "thrown away at exit" in log
    assert "access key:  test" in log and "secret key:  test" in log
    (state,) = dev.temp_dirs()
    assert str(state) in log
    assert (state / "keystore.db").exists()
    assert not (state / "credentials").exists()  # given (test/test), never written
    assert dev.signal(signal.SIGTERM) == 0
    assert dev.temp_dirs() == []


def test_every_region_is_served(dev: DevServer) -> None:
    log = dev.log()
    assert (
        "regions:     every region (home, for the admin API and ARNs by default: us-east-1)" in log
    )
    central: Any = dev.kms(region="eu-central-1")
    home: Any = dev.kms()
    meta = central.create_key()["KeyMetadata"]
    assert meta["Arn"] == f"arn:aws:kms:eu-central-1:000000000000:key/{meta['KeyId']}"
    assert central.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyId"] == meta["KeyId"]
    with pytest.raises(ClientError) as caught:
        home.describe_key(KeyId=meta["KeyId"])
    assert caught.value.response["Error"]["Code"] == "NotFoundException"
    # A multi-Region key replicates to any region, and its ciphertexts open there.
    key_id = home.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    home.replicate_key(KeyId=key_id, ReplicaRegion="sa-east-1")
    blob = home.encrypt(KeyId=key_id, Plaintext=b"dev")["CiphertextBlob"]
    assert dev.kms(region="sa-east-1").decrypt(CiphertextBlob=blob)["Plaintext"] == b"dev"
    # The reset wipes every region's keys.
    assert dev.reset().status_code == 200
    assert central.list_keys()["Keys"] == [] and home.list_keys()["Keys"] == []
    with pytest.raises(ClientError):
        dev.kms(region="sa-east-1").describe_key(KeyId=key_id)
    # A name that is no region is still refused.
    with pytest.raises(ClientError) as caught:
        dev.kms(region="eu-central").list_keys()
    assert caught.value.response["Error"]["Code"] == "IncompleteSignatureException"


def test_regions_flag_limits_dev_mode(tmp_path: Path) -> None:
    server = DevServer(tmp_path, "--dev", "--regions", "eu-west-1").start()
    try:
        assert "regions:     eu-west-1, us-east-1 (home: us-east-1)" in server.log()
        server.kms(region="eu-west-1").create_key()
        with pytest.raises(ClientError) as caught:
            server.kms(region="eu-central-1").list_keys()
        assert caught.value.response["Error"]["Code"] == "IncompleteSignatureException"
    finally:
        server.stop()


def test_sigint_removes_the_temp_dir_too(dev: DevServer) -> None:
    assert len(dev.temp_dirs()) == 1
    assert dev.signal(signal.SIGINT) == 0
    assert dev.temp_dirs() == []


def test_env_credentials_short_ones_and_s3kms_dev_variable(tmp_path: Path) -> None:
    env = {"S3KMS_DEV": "1", "S3KMS_ROOT_USER": "ci", "S3KMS_ROOT_PASSWORD": "pw"}
    server = DevServer(tmp_path, env=env).start()
    try:
        assert "access key:  ci" in server.log() and "secret key:  pw" in server.log()
        kms: Any = server.kms("ci", "pw")
        assert kms.list_keys()["Keys"] == []
        with pytest.raises(ClientError):
            server.kms().list_keys()
    finally:
        server.stop()
    assert server.temp_dirs() == []


def test_explicit_data_dir_is_used_and_kept(tmp_path: Path) -> None:
    data = tmp_path / "kept"
    server = DevServer(tmp_path, "--dev", "--data-dir", str(data)).start()
    try:
        server.kms().create_key()
        assert "(--data-dir, kept)" in server.log()
        assert server.temp_dirs() == []
    finally:
        assert server.signal(signal.SIGTERM) == 0
    assert (data / "keystore.db").exists()
    assert not (data / "credentials").exists()


def test_workers_supervisor_removes_the_temp_dir(tmp_path: Path) -> None:
    server = DevServer(tmp_path, "--dev", "--workers", "2").start()
    try:
        server.kms().create_key()
        assert len(server.temp_dirs()) == 1
        # One worker process could not wipe the others' state: refused, nothing changed.
        assert server.reset().status_code == 400
    finally:
        assert server.signal(signal.SIGTERM) == 0
    assert server.temp_dirs() == []


@pytest.mark.parametrize("address", ["0.0.0.0", "[::]", "192.0.2.1", "example.com"])
def test_non_loopback_address_is_refused(tmp_path: Path, address: str) -> None:
    result = run_server(tmp_path, "--dev", "--address", f"{address}:{free_port()}", env={})
    assert result.returncode == ExitCode.NOT_LOOPBACK == 9
    assert "--dev listens on loopback only" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.glob("s3kms-dev-*")) == []  # refused before anything was made


@pytest.mark.parametrize("address", ["localhost", "[::1]", "127.0.0.2"])
def test_loopback_addresses_are_accepted(tmp_path: Path, address: str) -> None:
    # Checked with a port in use: the loopback rule passes and the bind check (7) answers.
    import socket

    family = socket.AF_INET6 if address == "[::1]" else socket.AF_INET
    with socket.socket(family) as sock:
        try:
            sock.bind((address.strip("[]") if address != "localhost" else "127.0.0.1", 0))
        except OSError:
            pytest.skip(f"{address} is not available here")
        sock.listen()
        port = sock.getsockname()[1]
        result = run_server(tmp_path, "--dev", "--address", f"{address}:{port}", env={})
    assert result.returncode in (ExitCode.ADDRESS, 0), result.stderr
    assert "--dev listens on loopback only" not in result.stderr
    assert list(tmp_path.glob("s3kms-dev-*")) == []  # a failed start removes it too


def test_without_dev_a_short_root_password_is_refused(tmp_path: Path) -> None:
    env = {"S3KMS_ROOT_USER": "test", "S3KMS_ROOT_PASSWORD": "test"}
    result = run_server(tmp_path, "--address", f"127.0.0.1:{free_port()}", env=env)
    assert result.returncode == ExitCode.CREDENTIALS
    assert "at least 8 characters" in result.stderr
    assert not (tmp_path / "s3kms-data").exists()


def test_reset_wipes_keys_aliases_users_and_audit(dev: DevServer) -> None:
    kms: Any = dev.kms()
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/app", TargetKeyId=key_id)
    blob = kms.encrypt(KeyId="alias/app", Plaintext=b"x")["CiphertextBlob"]
    body = json.dumps({"secretKey": "user-secret-123", "policies": []}).encode()
    added = signed_admin(dev.url, "POST", "/rustfs/admin/v3/kms/user/add?accessKey=alice",
                         "test", "test", body)  # fmt: skip
    assert added.status_code == 200, added.text

    # A user other than root may not reset, whatever its policies.
    denied = dev.reset("alice", "user-secret-123")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "AccessDenied"
    assert len(kms.list_keys()["Keys"]) == 1

    answer = dev.reset(service="kms")  # signed for kms, as boto3's signer would; s3 works too
    assert answer.status_code == 200 and answer.json() == {"status": "reset"}
    assert kms.list_keys()["Keys"] == []
    assert kms.list_aliases()["Aliases"] == [] or all(
        "TargetKeyId" not in a for a in kms.list_aliases()["Aliases"]
    )
    with pytest.raises(ClientError) as err:
        kms.decrypt(CiphertextBlob=blob)
    assert err.value.response["Error"]["Code"] in (
        "NotFoundException",
        "InvalidCiphertextException",
    )
    users = signed_admin(dev.url, "GET", "/rustfs/admin/v3/kms/user/list", "test", "test")
    assert "alice" not in users.text
    assert dev.reset("alice", "user-secret-123").status_code == 403  # alice is gone

    (state,) = dev.temp_dirs()
    lines = [json.loads(x) for x in (state / "audit" / "audit.log").read_text().splitlines()]
    # The new chain starts with the reset's own line (then the requests since).
    assert lines[0]["action"] == "s3kms:Reset" and lines[0]["status"] == 200
    assert lines[0]["seq"] == 1 and lines[0]["prev"] == "0" * 64
    assert not any(x["action"] == "kms:CreateKey" for x in lines)
    verify = subprocess.run(
        [sys.executable, "-m", "s3kms", "audit", "verify", str(state / "audit" / "audit.log")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # The fresh keystore works, and a second reset wipes it again.
    key2 = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.encrypt(KeyId=key2, Plaintext=b"y")
    assert dev.reset().status_code == 200
    assert kms.list_keys()["Keys"] == []
    assert dev.signal(signal.SIGTERM) == 0
    assert dev.temp_dirs() == []


def test_reset_unsigned_or_get_is_refused(dev: DevServer) -> None:
    unsigned = httpx.post(f"{dev.url}/_s3kms/reset")  # as the admin API answers one
    assert unsigned.status_code == 400
    assert unsigned.json()["error"]["code"] == "MissingSecurityHeader"
    assert dev.reset(secret="wrong").status_code == 403
    assert httpx.get(f"{dev.url}/_s3kms/reset").status_code == 405


def test_reset_is_404_without_dev(tmp_path: Path) -> None:
    srv = KmsProcess(tmp_path / "data")
    srv.start()
    try:
        answer = signed_admin(srv.url, "POST", "/_s3kms/reset")
        assert answer.status_code == 404
    finally:
        srv.stop()


def test_concurrent_requests_during_reset_leave_a_whole_store(dev: DevServer) -> None:
    """Keys made while resets run: afterwards each key either is listed and works, or is gone."""
    import concurrent.futures

    kms: Any = dev.kms()

    def make(_: int) -> str | None:
        try:
            return str(kms.create_key()["KeyMetadata"]["KeyId"])
        except ClientError:
            return None

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        made = pool.map(make, range(20))
        for _ in range(3):
            assert dev.reset().status_code == 200
        ids = [k for k in made if k]
    listed = {k["KeyId"] for k in kms.list_keys()["Keys"]}
    for key_id in ids:
        if key_id in listed:
            kms.encrypt(KeyId=key_id, Plaintext=b"z")
    assert dev.reset().status_code == 200
    assert kms.list_keys()["Keys"] == []
