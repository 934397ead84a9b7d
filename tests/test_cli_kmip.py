"""`s3kms kmip identity ...`: a user's KMIP identities from the command line, against a real server
(the admin routes `kmip/identity/*`), and the principal the server's store then resolves for
that certificate (auth/kmip.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding

from s3kms.auth.kmip import KmipAuthenticator

from kesclient import certificate_identity, self_signed_certificate
from kmsserver import KmsThread, run_cli, thread_settings


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    server = KmsThread(thread_settings(tmp_path_factory.mktemp("kmip-cli") / "data")).start()
    try:
        yield server
    finally:
        server.stop()


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


def _certificate(tmp_path: Path, name: str) -> tuple[Path, str]:
    pem = self_signed_certificate(ec.generate_private_key(ec.SECP256R1()), common_name=name)
    path = tmp_path / f"{name}.crt"
    path.write_bytes(pem)
    return path, certificate_identity(pem)


def test_kmip_identity_add_of_list_remove(srv: KmsThread, tmp_path: Path) -> None:
    _setup_user(srv, "kmip-a")
    cert, identity = _certificate(tmp_path, "kmip-client")
    of = run_cli(srv, "kmip", "identity", "of", "--cert", str(cert))
    assert of.returncode == 0 and of.stdout.decode().strip() == identity
    added = _json(run_cli(srv, "kmip", "identity", "add", "kmip-a", "--cert", str(cert), "--json"))
    assert added == {"accessKey": "kmip-a", "identity": identity, "message": "KMIP identity added"}
    # The server now resolves a client of that certificate to the user, with its policies.
    principal = KmipAuthenticator(srv.app.auth).principal(identity, source_ip="127.0.0.1")
    assert principal is not None and principal.access_key == "kmip-a"
    assert principal.may("kms:CreateKey") and not principal.is_root
    listed = _json(run_cli(srv, "kmip", "identity", "list", "--json"))
    assert {"identity": identity, "accessKey": "kmip-a", "managed": True} in list(
        listed["identities"]  # type: ignore[call-overload]
    )
    table = run_cli(srv, "kmip", "identity", "list")
    assert table.returncode == 0 and identity in table.stdout.decode()
    assert "kmip-a" in table.stdout.decode()
    # A KMIP identity is no KES identity.
    kes = _json(run_cli(srv, "kes", "identity", "list", "--json"))
    assert identity not in [i["identity"] for i in kes["identities"]]  # type: ignore[attr-defined]
    text = run_cli(srv, "kmip", "identity", "remove", "kmip-a", identity)
    assert text.returncode == 0 and b"KMIP identity removed" in text.stdout
    assert KmipAuthenticator(srv.app.auth).principal(identity, source_ip=None) is None
    listed = _json(run_cli(srv, "kmip", "identity", "list", "--json"))
    assert identity not in [i["identity"] for i in listed["identities"]]  # type: ignore[attr-defined]


def test_kmip_identity_add_hex_and_der(srv: KmsThread, tmp_path: Path) -> None:
    _setup_user(srv, "kmip-b")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = self_signed_certificate(key, common_name="kmip-ed25519")
    der = tmp_path / "client.der"
    der.write_bytes(x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER))
    identity = certificate_identity(pem)
    of = run_cli(srv, "kmip", "identity", "of", "--cert", str(der))
    assert of.stdout.decode().strip() == identity
    added = run_cli(srv, "kmip", "identity", "add", "kmip-b", identity.upper())
    assert added.returncode == 0 and identity.encode() in added.stdout
    again = run_cli(srv, "kmip", "identity", "add", "kmip-b", "--cert", str(der))
    assert again.returncode == 1 and b"already attached to user kmip-b" in again.stderr


def test_one_certificate_may_be_a_kes_and_a_kmip_identity(srv: KmsThread, tmp_path: Path) -> None:
    """Per surface: the KMIP identity of one user is free to be the KES identity of another."""
    _setup_user(srv, "kmip-c")
    _setup_user(srv, "kes-c")
    cert, identity = _certificate(tmp_path, "both")
    assert run_cli(srv, "kmip", "identity", "add", "kmip-c", "--cert", str(cert)).returncode == 0
    assert run_cli(srv, "kes", "identity", "add", "kes-c", "--cert", str(cert)).returncode == 0
    kmip = _json(run_cli(srv, "kmip", "identity", "list", "--json"))["identities"]
    kes = _json(run_cli(srv, "kes", "identity", "list", "--json"))["identities"]
    assert {"identity": identity, "accessKey": "kmip-c", "managed": True} in kmip  # type: ignore[operator]
    assert {"identity": identity, "accessKey": "kes-c", "managed": True} in kes  # type: ignore[operator]
    taken = run_cli(srv, "kmip", "identity", "add", "kes-c", identity)
    assert taken.returncode == 1 and b"KMIP identity" in taken.stderr
    assert b"already attached to user kmip-c" in taken.stderr


def test_kmip_identity_usage_errors(srv: KmsThread, tmp_path: Path) -> None:
    _setup_user(srv, "kmip-d")
    cert, _ = _certificate(tmp_path, "usage")
    other = hashlib.sha256(b"another").hexdigest()
    # One of IDENTITY or --cert; KMIP has no API keys.
    none = run_cli(srv, "kmip", "identity", "add", "kmip-d")
    assert none.returncode == 2 and b"give exactly one of IDENTITY or --cert" in none.stderr
    both = run_cli(srv, "kmip", "identity", "add", "kmip-d", other, "--cert", str(cert))
    assert both.returncode == 2
    api_key = run_cli(srv, "kmip", "identity", "add", "kmip-d", "--api-key")
    assert api_key.returncode == 2 and b"--api-key" in api_key.stderr
    assert run_cli(srv, "kmip", "identity", "of", "--api-key", "-").returncode == 2
    assert run_cli(srv, "kmip", "identity", "of").returncode == 2
    bad = run_cli(srv, "kmip", "identity", "add", "kmip-d", "xyz")
    assert bad.returncode == 2 and b"64 hexadecimal digits" in bad.stderr
    junk = tmp_path / "junk.crt"
    junk.write_bytes(b"not a certificate")
    unreadable = run_cli(srv, "kmip", "identity", "of", "--cert", str(junk))
    assert unreadable.returncode == 2 and b"cannot read a certificate" in unreadable.stderr
    missing = run_cli(srv, "kmip", "identity", "add", "nobody", other, "--json")
    assert missing.returncode == 1
    assert json.loads(missing.stderr)["error"]["code"] == "KMSUserNotFound"
    not_there = run_cli(srv, "kmip", "identity", "remove", "kmip-d", other)
    assert not_there.returncode == 1 and b"is not attached to user kmip-d" in not_there.stderr
