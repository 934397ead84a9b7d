"""Ceph RGW end to end: radosgw's KMIP client (Debian bookworm's radosgw 16.2.15) takes its SSE-KMS
keys from s3kms's KMIP listener, and boto3 stores and reads objects through RGW.

The keys are made as Ceph's QA makes them, with PyKMIP (Create AES-256 named `pykmip-<id>`,
usage Encrypt|Decrypt, then Activate). RGW sends protocol 1.0, a Maximum Response Size of 8192,
Locate by Name (no Object Type) and Get Raw, for every PUT, GET, multipart create and part
upload; the stored RADOS objects hold no plaintext. The s3kms server is the real `s3kms server`
subprocess with the KMIP port; its audit log shows RGW's requests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import trustme
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kmip.core import enums
from kmip.pie.client import ProxyKmipClient

from s3kms.auth.certificates import identity_of
from s3kms.client import Client

from ceph import CephCluster, KmipClientConfig, ceph_cluster
from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsProcess, free_port

pytestmark = pytest.mark.timeout(300)

BUCKET = "sse-kms"
MiB = 1024 * 1024
KMIP_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "kmip:*", "Resource": "*"}],
}


def pattern(label: str, size: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < size:
        out += f"<{label}:{i:08d}>".encode()
        i += 1
    return bytes(out[:size])


class Pki:
    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.dir = directory
        self.ca_path = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.server_cert, self.server_key = directory / "kmip.crt", directory / "kmip.key"
        server.cert_chain_pems[0].write_to_path(str(self.server_cert))
        server.private_key_pem.write_to_path(str(self.server_key))

    def client(self, name: str) -> tuple[Path, Path, str]:
        """(cert, key, KMIP identity) of a new client certificate."""
        issued = self.ca.issue_cert(f"{name}.clients.test")
        cert, key = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        loaded = x509.load_pem_x509_certificate(cert.read_bytes())
        return cert, key, identity_of(loaded.public_bytes(serialization.Encoding.DER))


class Setup:
    def __init__(self, server: KmsProcess, cluster: CephCluster, kmip_port: int, pki: Pki):
        self.server, self.cluster, self.kmip_port, self.pki = server, cluster, kmip_port, pki

    def kmip(self, cert: Path, key: Path) -> ProxyKmipClient:
        client = ProxyKmipClient(
            hostname="127.0.0.1", port=self.kmip_port, cert=str(cert), key=str(key),
            ca=str(self.pki.ca_path), config_file=None,
        )  # fmt: skip
        client.open()
        return client

    def s3(self, *, read_timeout: float = 60) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.cluster.endpoint_url,
            aws_access_key_id=self.cluster.access_key,
            aws_secret_access_key=self.cluster.secret_key,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=5,
                read_timeout=read_timeout,
                retries={"total_max_attempts": 1},
            ),
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("ceph-kmip")
    pki = Pki(base)
    kmip_port = free_port()
    server = KmsProcess(
        base / "s3kms",
        args=[
            "--kmip-address", f"127.0.0.1:{kmip_port}",
            "--kmip-tls-cert", str(pki.server_cert), "--kmip-tls-key", str(pki.server_key),
            "--kmip-ca-cert", str(pki.ca_path),
        ],
    )  # fmt: skip
    server.start()
    rgw_cert, rgw_key, rgw_identity = pki.client("rgw")
    with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:
        kms.put_policy("ceph-rgw", KMIP_POLICY)
        kms.add_user("ceph-rgw", ["ceph-rgw"], "ceph-rgw-secret-key")
        kms.add_kmip_identity("ceph-rgw", rgw_identity)
    config = KmipClientConfig(
        addr=f"127.0.0.1:{kmip_port}",
        ca_path=pki.ca_path,
        client_cert=rgw_cert,
        client_key=rgw_key,
        key_template="pykmip-$keyid",
    )
    try:
        with ceph_cluster(base / "ceph", kmip=config) as cluster:
            done = Setup(server, cluster, kmip_port, pki)
            done.rgw_cert, done.rgw_key = rgw_cert, rgw_key  # type: ignore[attr-defined]
            yield done
    finally:
        server.stop()


def make_key(setup: Setup, name: str) -> str:
    """The key RGW will use for SSEKMSKeyId `name`, made the way Ceph's QA makes it."""
    client = setup.kmip(setup.rgw_cert, setup.rgw_key)  # type: ignore[attr-defined]
    try:
        uid: str = client.create(
            enums.CryptographicAlgorithm.AES,
            256,
            name=f"pykmip-{name}",
            cryptographic_usage_mask=[
                enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT,
            ],
        )  # fmt: skip
        client.activate(uid)
        return uid
    finally:
        client.close()


def audit_lines(setup: Setup) -> list[dict[str, Any]]:
    path = setup.server.data_dir / "audit" / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_sse_kms_put_get_head_ranged_and_multipart(setup: Setup) -> None:
    uid = make_key(setup, "rgw-key-1")
    s3 = setup.s3()
    s3.create_bucket(Bucket=BUCKET)
    small = pattern("small-object", 100_000)
    put = s3.put_object(
        Bucket=BUCKET, Key="small", Body=small,
        ServerSideEncryption="aws:kms", SSEKMSKeyId="rgw-key-1",
    )  # fmt: skip
    assert put["ServerSideEncryption"] == "aws:kms"
    assert put["SSEKMSKeyId"] == "rgw-key-1"
    got = s3.get_object(Bucket=BUCKET, Key="small")
    assert got["Body"].read() == small
    assert got["ServerSideEncryption"] == "aws:kms"
    head = s3.head_object(Bucket=BUCKET, Key="small")
    assert head["ContentLength"] == len(small)
    assert head["SSEKMSKeyId"] == "rgw-key-1"
    ranged = s3.get_object(Bucket=BUCKET, Key="small", Range="bytes=4097-70000")
    assert ranged["Body"].read() == small[4097:70001]

    upload = s3.create_multipart_upload(
        Bucket=BUCKET, Key="multi", ServerSideEncryption="aws:kms", SSEKMSKeyId="rgw-key-1"
    )
    parts = [pattern("part-one", 5 * MiB), pattern("part-two", MiB + 12345)]
    etags = []
    for number, body in enumerate(parts, start=1):
        answer = s3.upload_part(
            Bucket=BUCKET, Key="multi", UploadId=upload["UploadId"], PartNumber=number, Body=body
        )
        etags.append({"ETag": answer["ETag"], "PartNumber": number})
    s3.complete_multipart_upload(
        Bucket=BUCKET, Key="multi", UploadId=upload["UploadId"],
        MultipartUpload={"Parts": etags},
    )  # fmt: skip
    whole = b"".join(parts)
    assert s3.get_object(Bucket=BUCKET, Key="multi")["Body"].read() == whole
    across = s3.get_object(
        Bucket=BUCKET, Key="multi", Range=f"bytes={5 * MiB - 100}-{5 * MiB + 99}"
    )
    assert across["Body"].read() == whole[5 * MiB - 100 : 5 * MiB + 100]

    # At rest: nothing of either object's plaintext is in RADOS (the harness's own test shows
    # the same check finds plaintext when there is no encryption).
    stored = setup.cluster.raw_objects()
    assert stored, "RGW stored no data objects"
    blob = b"".join(stored.values())
    for marker in (b"<small-object:00000", b"<part-one:00000", b"<part-two:00000"):
        assert marker not in blob
    assert sum(len(v) for v in stored.values()) >= len(small) + len(whole)

    # RGW's KMIP requests reached s3kms as RGW's user: Locate by name, then Get of the key.
    lines = [line for line in audit_lines(setup) if line.get("principal") == "ceph-rgw"]
    actions = {line["action"] for line in lines if line.get("outcome") == "allowed"}
    assert {"kmip:Locate", "kmip:Get"} <= actions
    gets = [line for line in lines if line["action"] == "kmip:Get"]
    assert all(line.get("key") == uid for line in gets)


def test_rgw_reads_need_the_key(setup: Setup) -> None:
    """A key RGW's identity cannot Get (another user's object) is Item Not Found to it: the
    SSE-KMS PUT fails and stores nothing readable."""
    other_cert, other_key, other_identity = setup.pki.client("someone-else")
    with Client(setup.server.url, ROOT_USER, ROOT_PASSWORD) as kms:
        kms.add_user("someone-else", ["ceph-rgw"], "someone-else-secret")
        kms.add_kmip_identity("someone-else", other_identity)
    client = setup.kmip(other_cert, other_key)
    try:
        uid = client.create(enums.CryptographicAlgorithm.AES, 256, name="pykmip-not-rgws")
        client.activate(uid)
    finally:
        client.close()
    s3 = setup.s3(read_timeout=30)
    with pytest.raises(ClientError):
        s3.put_object(
            Bucket=BUCKET, Key="refused", Body=b"x" * 1000,
            ServerSideEncryption="aws:kms", SSEKMSKeyId="not-rgws",
        )  # fmt: skip
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key="refused")
