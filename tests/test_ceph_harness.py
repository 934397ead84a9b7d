"""The Ceph test harness (tests/ceph.py) runs a real single-node Ceph whose RGW serves S3.

Without a KMS the data RGW stores in RADOS is the plaintext, and :meth:`CephCluster.raw_objects`
finds it: so a "no plaintext at rest" check built on it can fail. With RGW's KMIP client pointed
at a port where nothing listens, RGW still starts and serves plain S3, and an SSE-KMS PUT does
not succeed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import trustme
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

import ceph
from ceph import RGW_NAME, CephCluster, KmipClientConfig, ceph_cluster, ensure_ceph_installed
from openbao import free_port

# Measured here: installing Ceph (when needed, inside the first test's setup) 35-41 s; a cluster
# comes up in ~2 s; the tests take ~3 s and ~9 s (5 s of it the deliberate read timeout).
pytestmark = pytest.mark.timeout(240)

BUCKET = "harness"
MiB = 1024 * 1024


def pattern(label: str, size: int) -> bytes:
    """``size`` bytes of recognisable text (``label`` and a counter), unlike any other part."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += f"<{label}:{i:08d}>".encode()
        i += 1
    return bytes(out[:size])


def s3_client(cluster: CephCluster, *, read_timeout: float = 30, attempts: int = 2) -> Any:
    """boto3 S3 at the cluster's RGW; ``attempts`` counts the first try (botocore's
    ``total_max_attempts``: its ``max_attempts`` counts retries only)."""
    return boto3.client(
        "s3",
        endpoint_url=cluster.endpoint_url,
        aws_access_key_id=cluster.access_key,
        aws_secret_access_key=cluster.secret_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=5,
            read_timeout=read_timeout,
            retries={"total_max_attempts": attempts, "mode": "standard"},
        ),
    )


def report(cluster: CephCluster, what: str) -> None:
    rss = cluster.memory_rss()
    print(
        f"[ceph] {what}: up in {cluster.start_seconds:.1f}s {cluster.timings}; "
        f"RSS {sum(rss.values()) / MiB:.0f} MiB "
        f"{ {name: round(size / MiB) for name, size in rss.items()} }"
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephCluster]:
    with ceph_cluster(tmp_path_factory.mktemp("ceph"), kmip=None) as running:
        report(running, "cluster without KMS")
        yield running


def test_s3_through_rgw_stores_plaintext_without_kms(cluster: CephCluster) -> None:
    s3 = s3_client(cluster)
    s3.create_bucket(Bucket=BUCKET)

    small = pattern("small-object", 64 * 1024)
    s3.put_object(Bucket=BUCKET, Key="small", Body=small)
    assert s3.get_object(Bucket=BUCKET, Key="small")["Body"].read() == small
    ranged = s3.get_object(Bucket=BUCKET, Key="small", Range="bytes=1000-1999")
    assert ranged["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert ranged["Body"].read() == small[1000:2000]
    head = s3.head_object(Bucket=BUCKET, Key="small")
    assert head["ContentLength"] == len(small)
    assert "ServerSideEncryption" not in head

    part1, part2 = pattern("part-one", 5 * MiB), pattern("part-two", MiB + 12345)
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="multi")["UploadId"]
    etags = []
    for number, body in ((1, part1), (2, part2)):
        part = s3.upload_part(
            Bucket=BUCKET, Key="multi", UploadId=upload, PartNumber=number, Body=body
        )
        etags.append(part["ETag"])
    s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key="multi",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    whole = part1 + part2
    assert s3.get_object(Bucket=BUCKET, Key="multi")["Body"].read() == whole
    start = len(part1) - 100  # a range across the part boundary
    ranged = s3.get_object(Bucket=BUCKET, Key="multi", Range=f"bytes={start}-{start + 199}")
    assert ranged["Body"].read() == whole[start : start + 200]
    assert s3.head_object(Bucket=BUCKET, Key="multi")["ContentLength"] == len(whole)

    # What RGW wrote to RADOS: the small object's head, the multipart parts (and their tails
    # beyond RGW's 4 MiB stripe) - all plaintext, since nothing encrypts them.
    raw = cluster.raw_objects()
    names = list(raw)
    assert any(name.endswith("_small") for name in names), names
    assert any("_multipart_multi." in name for name in names), names
    assert any("_shadow_multi." in name for name in names), names  # part 1's tail beyond 4 MiB
    stored = b"".join(raw.values())
    assert small in stored
    assert part1[: 4 * MiB] in stored and part1[4 * MiB :] in stored
    assert part2 in stored
    assert sum(len(v) for v in raw.values()) == len(small) + len(whole)


def kmip_files(directory: Path) -> KmipClientConfig:
    """A CA and a client certificate/key for RGW's KMIP client, as PEM files."""
    ca = trustme.CA()
    client = ca.issue_cert("rgw.s3kms.test")
    ca.cert_pem.write_to_path(str(directory / "kmip-ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(directory / "kmip-client.pem"))
    client.private_key_pem.write_to_path(str(directory / "kmip-client.key"))
    return KmipClientConfig(
        addr=f"127.0.0.1:{free_port()}",  # nothing listens there
        ca_path=directory / "kmip-ca.pem",
        client_cert=directory / "kmip-client.pem",
        client_key=directory / "kmip-client.key",
    )


def test_rgw_with_unreachable_kmip_server_starts_and_sse_kms_does_not_succeed(
    tmp_path: Path,
) -> None:
    kmip = kmip_files(tmp_path)
    with ceph_cluster(tmp_path / "ceph", kmip=kmip) as running:
        report(running, "cluster with KMIP at a dead port")
        # What the running RGW has (through its admin socket), not just what ceph.conf says.
        settings = {
            name: json.loads(running.daemon_command(RGW_NAME, "config", "get", name))[name]
            for name in (
                "rgw_crypt_s3_kms_backend",
                "rgw_crypt_kmip_addr",
                "rgw_crypt_kmip_kms_key_template",
            )
        }
        assert settings == {
            "rgw_crypt_s3_kms_backend": "kmip",
            "rgw_crypt_kmip_addr": kmip.addr,
            "rgw_crypt_kmip_kms_key_template": "pykmip-$keyid",  # $keyid is not expanded
        }
        s3 = s3_client(running)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="plain", Body=b"no kms involved")  # no KMS needed

        impatient = s3_client(running, read_timeout=5, attempts=1)
        # RGW tries the KMIP server and, refused, never answers (the reference says so: S3
        # requests hang while the KMIP server is unreachable).
        with pytest.raises((ClientError, BotoCoreError)) as refused:
            impatient.put_object(
                Bucket=BUCKET,
                Key="sse",
                Body=b"must not be stored without its key",
                ServerSideEncryption="aws:kms",
                SSEKMSKeyId="k1",
            )
        print(f"[ceph] SSE-KMS PUT with the KMIP server down: {refused.value!r}")
        assert f"BIO_do_connect failed to {kmip.addr}" in running.rgw_log.read_text()
        assert all(running.alive(name) for name in running.daemons)
        assert s3.get_object(Bucket=BUCKET, Key="plain")["Body"].read() == b"no kms involved"
        daemons = list(running.daemons.values())
    # Every daemon has been killed and reaped, with its process group.
    assert all(proc.poll() is not None for proc in daemons)
    for proc in daemons:
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)
    assert not (tmp_path / "ceph" / "mon").exists()


# --------------------------------------------------------------------------- installing


def test_missing_ceph_skips_or_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not root (or no apt-get): a skip, or with S3KMS_REQUIRE_CEPH=1 a failure."""
    monkeypatch.setattr(ceph, "_install_seconds", None)
    monkeypatch.setattr(ceph, "_missing_binaries", lambda: ["radosgw"])
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv(ceph.ENV_REQUIRE_CEPH, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"missing radosgw.*needs root"):
        ensure_ceph_installed()
    monkeypatch.setenv(ceph.ENV_REQUIRE_CEPH, "1")
    with pytest.raises(pytest.fail.Exception, match="S3KMS_REQUIRE_CEPH=1 requires it"):
        ensure_ceph_installed()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="no apt-get"):
        ensure_ceph_installed()
