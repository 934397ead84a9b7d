"""`s3kms server --kes-address` as a user runs it: worker processes, dev mode, start-up refusals.

The KES client is tests/kesclient.py (what MinIO sends, from minio/kms-go); the server is the real
`s3kms server` subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from s3kms.client import Client

from kesclient import ERR_NOT_ALLOWED, KesClient, KesError, api_key_certificate, generate_api_key
from kmsserver import MASTER_KEY, ROOT_PASSWORD, ROOT_USER, KmsProcess, free_port


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("kes-server-pki")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"cert": directory / "kes.crt", "key": directory / "kes.key", "ca": directory / "ca"}
    paths["cert"].write_bytes(b"".join(b.bytes() for b in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(paths["key"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    return paths


def test_every_worker_serves_the_kes_port(tls: dict[str, Path], tmp_path: Path) -> None:
    """--workers 2: each worker binds the KES port; an identity added through one worker (the
    users file and its shared counter) is known to all, on fresh connections to either."""
    admin_key = generate_api_key()
    _, _, admin_identity = api_key_certificate(admin_key)
    kes_port = free_port()
    server = KmsProcess(
        tmp_path / "data",
        args=[
            "--workers", "2", "--kes-address", f"127.0.0.1:{kes_port}",
            "--kes-tls-cert", str(tls["cert"]), "--kes-tls-key", str(tls["key"]),
        ],
        env={"S3KMS_KES_ADMIN_IDENTITY": admin_identity},
    )  # fmt: skip
    server.start()
    try:
        url = f"https://127.0.0.1:{kes_port}"
        with KesClient(url, api_key=admin_key, ca_path=tls["ca"]) as admin:
            admin.create_key("minio-default")
        user_key = generate_api_key()
        _, _, user_identity = api_key_certificate(user_key)
        with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:
            kms.put_policy("kes-app", {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                "Resource": "*"}]})  # fmt: skip
            kms.add_user("minio", ["kes-app"], "minio-secret-key")
            kms.add_kes_identity("minio", user_identity)
        for _ in range(12):  # new connections: the kernel spreads them over the workers
            with KesClient(url, api_key=user_key, ca_path=tls["ca"]) as minio:
                plain, cipher = minio.generate_key("minio-default", b'{"b":"b/o"}')
                assert minio.decrypt("minio-default", cipher, b'{"b":"b/o"}') == plain
                with pytest.raises(KesError) as denied:
                    minio.create_key("other")
                assert denied.value == ERR_NOT_ALLOWED
    finally:
        server.stop()
    assert "KES API on https://127.0.0.1:" in server.log()
    assert admin_key not in server.log()


def test_dev_mode_serves_the_kes_port(tls: dict[str, Path], tmp_path: Path) -> None:
    admin_key = generate_api_key()
    _, _, admin_identity = api_key_certificate(admin_key)
    kes_port = free_port()
    server = KmsProcess(
        tmp_path / "dev",
        args=[
            "--dev", "--kes-address", f"127.0.0.1:{kes_port}", "--kes-admin-identity",
            admin_identity, "--kes-tls-cert", str(tls["cert"]), "--kes-tls-key", str(tls["key"]),
        ],
    )  # fmt: skip
    server.start()
    try:
        with KesClient(
            f"https://127.0.0.1:{kes_port}", api_key=admin_key, ca_path=tls["ca"]
        ) as admin:
            admin.create_key("dev-key")
            plain, cipher = admin.generate_key("dev-key")
            assert admin.decrypt("dev-key", cipher) == plain
    finally:
        server.stop()
    assert f"KES API:     https://127.0.0.1:{kes_port}" in server.log()


def _start(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("S3KMS_")},
        "S3KMS_ROOT_USER": ROOT_USER,
        "S3KMS_ROOT_PASSWORD": ROOT_PASSWORD,
        "S3KMS_MASTER_KEY": MASTER_KEY,
    }
    cmd = [sys.executable, "-m", "s3kms", "server", "--data-dir", str(tmp_path / "d"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def test_start_up_refusals(tls: dict[str, Path], tmp_path: Path) -> None:
    port, kes = free_port(), free_port()
    files = ["--kes-tls-cert", str(tls["cert"]), "--kes-tls-key", str(tls["key"])]
    address = ["--address", f"127.0.0.1:{port}"]
    cases = [
        ([*address, "--kes-address", f"127.0.0.1:{kes}"], 2, "has no certificate"),
        ([*address, "--kes-address", "nowhere", *files], 2, "is not HOST:PORT"),
        ([*address, "--kes-address", f"127.0.0.1:{port}", *files], 7, "is the main --address"),
        (
            [*address, "--kes-address", f"127.0.0.1:{kes}", "--kes-admin-identity", "abc", *files],
            2,
            "64 hexadecimal digits",
        ),
        (
            [
                *address,
                "--kes-address",
                f"127.0.0.1:{kes}",
                "--kes-tls-cert",
                str(tls["cert"]),
                "--kes-tls-key",
                str(tls["ca"]),
            ],
            2,
            "the KES certificate",
        ),
        ([*address, "--kes-admin-identity", "a" * 64], 2, "the KES API is off"),
        ([*address, "--kes-tls-cert", str(tls["cert"])], 2, "go together"),
        (["--dev", *address, "--kes-address", f"0.0.0.0:{kes}", *files], 9, "loopback only"),
    ]
    for args, code, text in cases:
        done = _start(tmp_path, *args)
        assert done.returncode == code, (args, done.stderr)
        assert text in done.stderr, (args, done.stderr)


def test_the_kes_port_in_use_stops_the_start(tls: dict[str, Path], tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        kes = busy.getsockname()[1]
        done = _start(
            tmp_path, "--address", f"127.0.0.1:{free_port()}", "--kes-address",
            f"127.0.0.1:{kes}", "--kes-tls-cert", str(tls["cert"]), "--kes-tls-key",
            str(tls["key"]), "--log-format", "json",
        )  # fmt: skip
    assert done.returncode == 7
    line = json.loads(done.stderr.strip().splitlines()[-1])
    assert "--kes-address" in line["message"]
