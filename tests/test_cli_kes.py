"""`s3kms kes identity ...`: a user's KES identities from the command line, used by a KES client
that sends what MinIO sends (tests/kesclient.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import ec

from kesclient import ERR_NOT_ALLOWED, KesClient, KesError, key_pem, self_signed_certificate
from kmsserver import KmsThread, free_port, run_cli, thread_settings


@pytest.fixture(scope="module")
def kes_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KmsThread, int, Path]]:
    directory = tmp_path_factory.mktemp("kes-cli")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key, ca_path = directory / "kes.crt", directory / "kes.key", directory / "ca.pem"
    cert.write_bytes(b"".join(b.bytes() for b in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_path))
    port = free_port()
    settings = thread_settings(
        directory / "data", kes_address=f"127.0.0.1:{port}", kes_tls_cert=cert, kes_tls_key=key
    )
    srv = KmsThread(settings).start()
    try:
        yield srv, port, ca_path
    finally:
        srv.stop()


def _json(done: object) -> dict[str, object]:
    assert getattr(done, "returncode", None) == 0, getattr(done, "stderr", b"").decode()
    result: dict[str, object] = json.loads(getattr(done, "stdout", b""))
    return result


def _setup_user(srv: KmsThread, user: str) -> None:
    policy = Path(srv.settings.data_dir.parent / f"{user}.json")
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}))  # fmt: skip
    assert run_cli(srv, "policy", "add", user, str(policy)).returncode == 0
    assert run_cli(srv, "user", "add", user, "--policy", user).returncode == 0


def test_kes_identity_add_api_key_prints_a_working_key_once(
    kes_cli: tuple[KmsThread, int, Path],
) -> None:
    srv, port, ca = kes_cli
    _setup_user(srv, "minio-a")
    added = _json(run_cli(srv, "kes", "identity", "add", "minio-a", "--api-key", "--json"))
    api_key = str(added["apiKey"])
    assert api_key.startswith("kes:v1:") and added["accessKey"] == "minio-a"
    of = run_cli(srv, "kes", "identity", "of", "--api-key", "-", stdin=api_key.encode() + b"\n")
    assert of.stdout.decode().strip() == added["identity"]
    with KesClient(f"https://127.0.0.1:{port}", api_key=api_key, ca_path=ca) as minio:
        minio.create_key("cli-key")
        plain, cipher = minio.generate_key("cli-key")
        assert minio.decrypt("cli-key", cipher) == plain
    listed = _json(run_cli(srv, "kes", "identity", "list", "--json"))
    assert {"identity": added["identity"], "accessKey": "minio-a", "managed": True} in list(
        listed["identities"]  # type: ignore[call-overload]
    )
    # Printed for people too, with a warning that it is shown once; never stored by the server.
    text = run_cli(srv, "kes", "identity", "add", "minio-a", "--api-key")
    assert text.returncode == 0 and b"kes:v1:" in text.stdout and b"only this once" in text.stderr
    users_file = (srv.settings.data_dir / "users.json").read_text()
    assert api_key.removeprefix("kes:v1:") not in users_file
    # Removed: refused at once.
    removed = run_cli(srv, "kes", "identity", "remove", "minio-a", str(added["identity"]))
    assert removed.returncode == 0
    with KesClient(f"https://127.0.0.1:{port}", api_key=api_key, ca_path=ca) as minio:
        with pytest.raises(KesError) as refused:
            minio.generate_key("cli-key")
        assert refused.value == ERR_NOT_ALLOWED


def test_kes_identity_add_hex_and_cert(
    kes_cli: tuple[KmsThread, int, Path], tmp_path: Path
) -> None:
    srv, port, ca = kes_cli
    _setup_user(srv, "minio-b")
    key = ec.generate_private_key(ec.SECP256R1())
    cert, private = tmp_path / "minio.crt", tmp_path / "minio.key"
    cert.write_bytes(self_signed_certificate(key))
    private.write_bytes(key_pem(key))
    identity = run_cli(srv, "kes", "identity", "of", "--cert", str(cert)).stdout.decode().strip()
    added = _json(run_cli(srv, "kes", "identity", "add", "minio-b", identity, "--json"))
    assert added == {"accessKey": "minio-b", "identity": identity, "message": "KES identity added"}
    with KesClient(
        f"https://127.0.0.1:{port}", cert_file=cert, key_file=private, ca_path=ca
    ) as minio:
        minio.create_key("cli-cert-key")
    other = hashlib.sha256(b"another").hexdigest()
    again = run_cli(srv, "kes", "identity", "add", "minio-b", "--cert", str(cert))
    assert again.returncode == 1 and b"already attached to user minio-b" in again.stderr
    # One of IDENTITY, --api-key, --cert; an identity is hex.
    assert run_cli(srv, "kes", "identity", "add", "minio-b").returncode == 2
    assert run_cli(srv, "kes", "identity", "add", "minio-b", other, "--api-key").returncode == 2
    bad = run_cli(srv, "kes", "identity", "add", "minio-b", "xyz")
    assert bad.returncode == 2 and b"64 hexadecimal digits" in bad.stderr
    missing = run_cli(srv, "kes", "identity", "add", "nobody", other)
    assert missing.returncode == 1
