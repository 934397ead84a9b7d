"""The KES API (docs/kes.md) through a real s3kms server and a client that sends what MinIO sends.

The client (tests/kesclient.py) is written from minio/kms-go's `kes/` sources (its docstring cites
them): mutual TLS with certificates made by `cryptography` and `trustme` (the API-key certificate
as kms-go's `GenerateCertificate` makes it), chunked JSON bodies, ALPN offering h2, the retry
rule and the error matching. Every route and every error text MinIO matches; identities of
users and their policies; the same keys through the admin and the AWS API; rotation; audit
lines; the Vault backend on the real OpenBao the suite starts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from s3kms.auth.certificates import identity_of, spki_of
from s3kms.auth.kes import APIKey
from s3kms.client import Client
from s3kms.crypto import blob
from s3kms.errors import InvalidCiphertext
from s3kms.keystore.vault import VaultSettings
from s3kms.protocols.kes.api import ACTIONS

from kesclient import (
    ERR_DECRYPT,
    ERR_KEY_EXISTS,
    ERR_KEY_NOT_FOUND,
    ERR_NOT_ALLOWED,
    KesClient,
    KesError,
    api_key_certificate,
    certificate_identity,
    ed25519_identity,
    generate_api_key,
    key_pem,
    minio_context,
    self_signed_certificate,
)
from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsThread, free_port, thread_settings
from openbao import ENV_VAULT_CACERT, VaultApi


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Pki:
    ca: trustme.CA
    ca_path: Path
    cert: Path
    key: Path
    dir: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("kes-pki")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_path = directory / "kes.crt", directory / "kes.key", directory / "ca.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_path))
    return Pki(ca, ca_path, cert, key, directory)


@dataclass
class Kes:
    srv: KmsThread
    port: int
    admin_key: str
    pki: Pki

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client(self, **kw: Any) -> KesClient:
        if not kw:
            kw = {"api_key": self.admin_key}
        return KesClient(self.url, ca_path=self.pki.ca_path, **kw)

    def admin(self) -> Client:
        return Client(self.srv.url, ROOT_USER, ROOT_PASSWORD, timeout=30)

    def aws(self) -> Any:
        return boto3.client(
            "kms", endpoint_url=self.srv.url, region_name="us-east-1",
            aws_access_key_id=ROOT_USER, aws_secret_access_key=ROOT_PASSWORD,
        )  # fmt: skip

    def audit(self) -> list[dict[str, Any]]:
        path = self.srv.settings.data_dir / "audit" / "audit.log"
        return [json.loads(line) for line in path.read_text().splitlines()]


def start_kes(data_dir: Path, pki: Pki, **settings: Any) -> Kes:
    admin_key = generate_api_key()
    _, _, admin_identity = api_key_certificate(admin_key)
    port = free_port()
    config = thread_settings(
        data_dir,
        kes_address=f"127.0.0.1:{port}",
        kes_tls_cert=pki.cert,
        kes_tls_key=pki.key,
        kes_admin_identity=admin_identity,
        audit_fsync_interval=0.0,
        **settings,
    )
    return Kes(KmsThread(config).start(), port, admin_key, pki)


@pytest.fixture(scope="module")
def kes(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kes]:
    server = start_kes(tmp_path_factory.mktemp("kes-local") / "data", pki)
    try:
        yield server
    finally:
        server.srv.stop()


@pytest.fixture
def admin(kes: Kes) -> Iterator[KesClient]:
    with kes.client() as client:
        yield client


# -- identities and certificates -------------------------------------------------------------------


def test_api_key_identity_is_kms_gos() -> None:
    """auth/kes.py reads an API key as kms-go's ParseAPIKey does, and names it by the hash of the
    SPKI that kms-go's ed25519Identity builds by hand; identity_of reads it from the certificate
    kms-go's GenerateCertificate makes."""
    text = generate_api_key()
    cert_pem, _, identity = api_key_certificate(text)
    ours = APIKey.parse(text)
    assert ours.identity == identity == certificate_identity(cert_pem)
    assert APIKey.parse(text.removeprefix("kes:v1:")).identity == identity  # prefix optional
    from cryptography import x509

    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(Encoding.DER)
    assert identity_of(der) == identity
    assert text not in repr(ours) and ours.text() == text
    fresh = APIKey.generate()
    raw = fresh.private_key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert fresh.identity == ed25519_identity(raw)
    for bad in ("kes:v1:AAAA", "kes:v1:" + base64.b64encode(b"\x01" + b"k" * 32).decode(), "*"):
        with pytest.raises(ValueError):
            APIKey.parse(bad)


def test_identity_is_the_raw_spki_of_any_key_type() -> None:
    for key in (ec.generate_private_key(ec.SECP256R1()), Ed25519PrivateKey.generate()):
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(self_signed_certificate(key))
        spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        assert spki_of(cert.public_bytes(Encoding.DER)) == spki
        assert identity_of(cert.public_bytes(Encoding.DER)) == hashlib.sha256(spki).hexdigest()
    for junk in (b"", b"\x30\x03\x02\x01", b"\x30\x84\xff\xff\xff\xff"):
        with pytest.raises(ValueError):
            spki_of(junk)


def test_a_connection_without_a_client_certificate_is_refused(kes: Kes) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(kes.pki.ca_path))
    with (
        socket.create_connection(("127.0.0.1", kes.port), timeout=10) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        # TLS 1.3: the refusal (alert "certificate required") comes with the first read.
        tls.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        if not tls.recv(1024):
            raise ConnectionError("closed")


def test_an_unknown_identity_is_refused_on_every_route_but_version(
    kes: Kes, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert, private = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_bytes(self_signed_certificate(key))
    private.write_bytes(key_pem(key))
    with kes.client(cert_file=cert, key_file=private) as stranger:
        assert stranger.version()  # KES serves /version to any client certificate
        name = unique("stranger")
        calls = [
            stranger.status, stranger.apis, stranger.metrics,
            lambda: stranger.create_key(name), lambda: stranger.describe_key(name),
            lambda: stranger.list_keys(""), lambda: stranger.delete_key(name),
            lambda: stranger.generate_key(name), lambda: stranger.encrypt(name, b"x"),
            lambda: stranger.decrypt(name, b"x"), lambda: stranger.hmac(name, b"x"),
            lambda: stranger.import_key(name, b"k" * 32),
        ]  # fmt: skip
        for call in calls:
            with pytest.raises(KesError) as failed:
                call()
            assert failed.value == ERR_NOT_ALLOWED
    lines = [line for line in kes.audit() if line.get("surface") == "kes"]
    refused = [line for line in lines if line["status"] == 403 and line["principal"] is None]
    assert refused and all(line["outcome"] == "denied" for line in refused)


# -- the server routes ------------------------------------------------------------------------------


def test_version_status_ready_api_and_metrics(kes: Kes, admin: KesClient) -> None:
    assert admin.version() == "0.1.0"
    assert admin.alpn == "http/1.1"  # offered h2 first, as Go does
    status = admin.status()
    assert {"version", "os", "arch", "uptime", "num_cpu", "num_cpu_used", "mem_heap_used",
            "mem_stack_used"} <= set(status)  # fmt: skip
    assert status["keystore_latency"] >= 1 and "keystore_unreachable" not in status
    assert isinstance(status["uptime"], int) and status["os"] == "linux"
    assert admin.is_ready()
    routes = {(r["method"], r["path"], r["max_body"], r["timeout"]) for r in admin.apis()}
    assert routes == {
        ("GET", "/version", 0, 10), ("GET", "/v1/api", 0, 10), ("GET", "/v1/status", 0, 15),
        ("GET", "/v1/ready", 0, 15), ("GET", "/v1/metrics", 0, 15),
        ("PUT", "/v1/key/create/", 0, 15), ("PUT", "/v1/key/import/", 1_000_000, 15),
        ("GET", "/v1/key/describe/", 0, 15), ("GET", "/v1/key/list/", 0, 15),
        ("DELETE", "/v1/key/delete/", 0, 15), ("PUT", "/v1/key/generate/", 1_000_000, 15),
        ("PUT", "/v1/key/encrypt/", 1_000_000, 15), ("PUT", "/v1/key/decrypt/", 1_000_000, 15),
        ("PUT", "/v1/key/hmac/", 1_000_000, 15),
    }  # fmt: skip
    assert {path for _, path, _, _ in routes} == set(ACTIONS)
    text = admin.metrics()
    assert (
        's3kms_requests_total{surface="kes",operation="Status",outcome="ok",status="200"}' in text
    )


def test_requests_are_sent_as_go_sends_them(kes: Kes, admin: KesClient) -> None:
    name = unique("wire")
    admin.create_key(name)
    assert ("Content-Length", "0") in admin.last_headers  # POST with a nil body
    admin.generate_key(name, minio_context({"bucket": "bucket/object"}))
    sent = dict(admin.last_headers)
    assert sent["Transfer-Encoding"] == "chunked" and "Content-Length" not in sent
    assert sent["Content-Type"] == "application/json" and sent["User-Agent"].startswith("Go-")


# -- keys -------------------------------------------------------------------------------------------


def test_a_key_made_through_kes_is_the_key_of_every_surface(kes: Kes, admin: KesClient) -> None:
    name = unique("minio-default")
    admin.create_key(name)
    with pytest.raises(KesError) as again:
        admin.create_key(name)
    assert again.value == ERR_KEY_EXISTS
    described = admin.describe_key(name)
    assert described["name"] == name and described["algorithm"] == "AES256"
    assert described["created_at"].endswith("Z")
    with kes.admin() as kms:
        assert name in [k.key_id for k in kms.list_keys()]
        made = kms.create_key(unique("from-admin")).key_id
    arn = kes.aws().describe_key(KeyId=name)["KeyMetadata"]["Arn"]
    assert arn == f"arn:aws:kms:us-east-1:000000000000:key/{name}"
    assert admin.describe_key(made)["name"] == made  # and the other way round
    with pytest.raises(KesError) as missing:
        admin.describe_key(unique("nothing"))
    assert missing.value == ERR_KEY_NOT_FOUND


def test_delete_schedules_the_deletion_and_the_key_is_gone_for_kes(
    kes: Kes, admin: KesClient
) -> None:
    name = unique("doomed")
    admin.create_key(name)
    admin.delete_key(name)
    for call in (
        lambda: admin.describe_key(name), lambda: admin.generate_key(name),
        lambda: admin.delete_key(name), lambda: admin.hmac(name, b"m"),
    ):  # fmt: skip
        with pytest.raises(KesError) as gone:
            call()
        assert gone.value == ERR_KEY_NOT_FOUND
    assert name not in admin.list_keys(name)[0]
    with kes.admin() as kms:
        assert kms.key_status(name).status == "pending_deletion"  # an operator may cancel it
        kms.cancel_key_deletion(name)
        kms.enable_key(name)
    assert admin.describe_key(name)["name"] == name
    with pytest.raises(KesError) as exists:
        admin.create_key(name)
    assert exists.value == ERR_KEY_EXISTS


def test_generate_and_decrypt_with_minio_contexts(kes: Kes, admin: KesClient) -> None:
    name = unique("sse")
    admin.create_key(name)
    context = minio_context({"photos": "photos/cat.jpg"})
    plaintext, ciphertext = admin.generate_key(name, context)
    assert len(plaintext) == 32
    assert admin.decrypt(name, ciphertext, context) == plaintext
    # The context is bound: another one, or none, does not decrypt.
    for wrong in (minio_context({"photos": "photos/dog.jpg"}), None, b"{}"):
        with pytest.raises(KesError) as failed:
            admin.decrypt(name, ciphertext, wrong)
        assert failed.value == ERR_DECRYPT
    # MinIO's JSON context is the AWS API's EncryptionContext: the same map decrypts it there.
    with kes.admin() as kms:
        assert kms.decrypt(ciphertext, {"photos": "photos/cat.jpg"}) == plaintext
        with pytest.raises(InvalidCiphertext):
            kms.decrypt(ciphertext, {"photos": "photos/dog.jpg"})
    # `{}` (MinIO's empty context) is no context; key order and spacing do not matter.
    plain2, cipher2 = admin.generate_key(name, b"{}")
    assert admin.decrypt(name, cipher2) == plain2
    pair = minio_context({"a": "1", "b": "2"})
    plain3, cipher3 = admin.generate_key(name, pair)
    assert admin.decrypt(name, cipher3, b'{ "b": "2", "a": "1" }') == plain3
    # Other bytes bind as bytes, exactly.
    for raw in (b"\x00\xffnot json", b'{"a": 1}', b'{"a":"1","a":"1"}', b'{"kes:context":"x"}'):
        p, c = admin.generate_key(name, raw)
        assert admin.decrypt(name, c, raw) == p
        with pytest.raises(KesError) as other:
            admin.decrypt(name, c, raw + b" ")
        assert other.value == ERR_DECRYPT


def test_decrypt_refuses_what_is_not_this_keys_ciphertext(kes: Kes, admin: KesClient) -> None:
    name, other = unique("mine"), unique("theirs")
    admin.create_key(name)
    admin.create_key(other)
    _, ciphertext = admin.generate_key(other)
    tampered = bytearray(admin.generate_key(name)[1])
    tampered[-1] ^= 1
    for bad in (ciphertext, bytes(tampered), b"garbage", b"", None):
        with pytest.raises(KesError) as failed:
            admin.decrypt(name, bad)
        assert failed.value == ERR_DECRYPT
    with pytest.raises(KesError) as missing:
        admin.decrypt(unique("absent"), ciphertext)
    assert missing.value == ERR_KEY_NOT_FOUND


def test_encrypt_and_decrypt(admin: KesClient) -> None:
    name = unique("enc")
    admin.create_key(name)
    context = minio_context({".minio.sys": ".minio.sys/config/iam"})
    for plaintext in (b"", b"a small secret", os.urandom(200_000)):
        ciphertext = admin.encrypt(name, plaintext, context)
        assert admin.decrypt(name, ciphertext, context) == plaintext
    assert admin.decrypt(name, admin.encrypt(name, None)) == b""  # Go's nil []byte is null


def test_rotation_keeps_old_ciphertexts_readable(kes: Kes, admin: KesClient) -> None:
    name = unique("rotating")
    admin.create_key(name)
    context = minio_context({"b": "b/o"})
    old_plain, old_cipher = admin.generate_key(name, context)
    with kes.admin() as kms:
        assert kms.rotate_key(name).current_version == 2
    new_plain, new_cipher = admin.generate_key(name, context)
    assert blob.decode(old_cipher).key_version == 1 and blob.decode(new_cipher).key_version == 2
    assert admin.decrypt(name, old_cipher, context) == old_plain
    assert admin.decrypt(name, new_cipher, context) == new_plain


def test_list_with_prefixes_patterns_and_continue_at(kes: Kes, admin: KesClient) -> None:
    base = unique("lst")
    names = sorted(f"{base}-{i}" for i in range(5))
    for n in names:
        admin.create_key(n)
    with kes.admin() as kms:
        kms.create_key(f"{base}.dotted")  # an s3kms name KES cannot address
    assert admin.list_keys(base) == (names, "")
    assert admin.list_keys(base + "*") == (names, "")
    everything, more = admin.list_keys("")  # kms-go's path: /v1/key/list (no slash)
    assert set(names) <= set(everything) and more == ""
    assert set(names) <= set(admin.list_keys("*")[0])
    api = kes.srv.app.kes.app.api  # type: ignore[union-attr]
    api.list_page = 2
    try:
        assert admin.list_keys(base) == (names[:2], names[2])
    finally:
        api.list_page = 10_000
    for bad in ("-x", "x-", "a*b", "_", "a" * 81, "a.b"):
        with pytest.raises(KesError) as refused:
            admin.list_keys(bad)
        assert refused.value == KesError(
            400, f"listing pattern '{bad}' is empty, too long or is invalid"
        )


def test_hmac_with_an_hmac_key_and_501_with_an_aes_key(kes: Kes, admin: KesClient) -> None:
    name = unique("mac")
    with kes.admin() as kms:
        kms.create_key(name, spec="HMAC_256", usage="GENERATE_VERIFY_MAC")
        tag = admin.hmac(name, b"root access key")
        assert tag == kms.generate_mac(name, b"root access key", "HMAC_SHA_256")
    assert len(tag) == 32
    assert "algorithm" not in admin.describe_key(name)  # kms-go knows AES256/ChaCha20 only
    aes = unique("aes")
    admin.create_key(aes)
    with pytest.raises(KesError) as unsupported:
        admin.hmac(aes, b"root access key")
    assert unsupported.value == KesError(501, "key does not support HMAC")  # MinIO tolerates 501


def test_import_makes_a_key_of_that_material(admin: KesClient, kes: Kes) -> None:
    """/v1/key/import (kms-go `ImportKey`): KES's checks first, then an EXTERNAL key of the
    material given, which the AWS API sees as imported material of that KeyMaterialId."""
    name = unique("imported")
    with pytest.raises(KesError) as cipher:
        admin.import_key(name, os.urandom(32), "ChaCha20")
    assert cipher.value == KesError(406, "algorithm 'ChaCha20' is not supported")
    with pytest.raises(KesError) as size:
        admin.import_key(name, os.urandom(16))
    assert size.value == KesError(406, "invalid key size for 'AES256'")
    with pytest.raises(KesError) as absent:
        admin.describe_key(name)
    assert absent.value == ERR_KEY_NOT_FOUND
    material = os.urandom(32)
    admin.import_key(name, material)
    assert admin.describe_key(name)["algorithm"] == "AES256"
    plaintext, ciphertext = admin.generate_key(name, b'{"bucket":"bucket/object"}')
    assert admin.decrypt(name, ciphertext, b'{"bucket":"bucket/object"}') == plaintext
    with pytest.raises(KesError) as again:
        admin.import_key(name, material)
    assert again.value == KesError(400, "key already exists")
    meta = kes.aws().describe_key(KeyId=name)["KeyMetadata"]
    assert (meta["Origin"], meta["KeyState"]) == ("EXTERNAL", "Enabled")
    assert meta["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE"
    # The KeyMaterialId is the SHA-256 of the key id and the material (docs/security.md): the
    # key holds exactly the bytes the client sent.
    expected = hashlib.sha256(
        b"s3kms-key-material-id\x00" + name.encode() + b"\x00" + material
    ).hexdigest()
    assert meta["CurrentKeyMaterialId"] == expected


# -- hostile input ------------------------------------------------------------------------------------


def test_bad_names_bodies_and_methods_get_kes_errors(admin: KesClient) -> None:
    for bad in ("-x", "x-", "_", "a" * 81, "a.b", "ü", "a b", "a%2Fb"):
        with pytest.raises(KesError) as refused:
            admin.create_key(bad)
        assert refused.value == KesError(
            400, f"key name '{bad}' is empty, too long or contains invalid characters"
        )
    with pytest.raises(KesError) as empty:
        admin.create_key("")  # kms-go sends /v1/key/create
    assert empty.value.status == 400
    with pytest.raises(KesError) as underscore:
        admin.create_key("_x")  # a KES name, not an s3kms one
    assert underscore.value.status == 400 and "start with a letter or a digit" in str(
        underscore.value
    )
    name = unique("hostile")
    admin.create_key(name)

    def raw(method: str, path: str, body: bytes | None) -> tuple[int, dict[str, Any]]:
        status, content_type, data = admin.send(method, path, body)
        assert content_type == "application/json"
        return status, json.loads(data)

    for body in (b"{", b"[]", b'"x"', b'{"context": 5}', b'{"context": "***"}', b"\xff"):
        assert raw("POST", f"/v1/key/generate/{name}", body) == (
            400, {"message": "invalid request body"}
        )  # fmt: skip
    assert raw("POST", f"/v1/key/decrypt/{name}", b"") == (400, {"message": "invalid request body"})
    assert raw("POST", f"/v1/key/generate/{name}", b"{" * 100_000) == (
        400, {"message": "invalid request body"}
    )  # fmt: skip
    big = json.dumps({"plaintext": base64.b64encode(os.urandom(760_000)).decode()}).encode()
    assert raw("POST", f"/v1/key/encrypt/{name}", big)[0] == 413
    assert raw("POST", f"/v1/key/create/{unique('b')}", b"{}")[0] == 413  # max_body 0
    large = base64.b64encode(b"c" * 9000).decode()
    status, answer = raw("POST", f"/v1/key/generate/{name}", b'{"context":"%s"}' % large.encode())
    assert status == 400 and "context is too large" in answer["message"]
    assert raw("GET", f"/v1/key/generate/{name}", None) == (
        405, {"message": "received method 'GET' expected 'PUT'"}
    )  # fmt: skip
    assert raw("GET", "/v1/nothing", None)[0] == 404
    assert raw("GET", "/v1/key/frobnicate/x", None)[0] == 404


# -- users, their identities and their policies -----------------------------------------------------


def test_a_user_identity_acts_with_the_users_policies(kes: Kes, admin: KesClient) -> None:
    app, other = unique("app"), unique("other")
    for n in (app, other):
        admin.create_key(n)
    user, policy = unique("minio"), unique("kes-minio")
    arn = f"arn:aws:kms:us-east-1:000000000000:key/{app}"
    document = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt",
             "kms:DescribeKey"], "Resource": arn},
            {"Effect": "Allow", "Action": ["kms:ListKeys", "admin:KMSStatus"], "Resource": "*"},
            {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": arn,
             "Condition": {"StringEquals": {"kms:EncryptionContext:deny": "yes"}}},
        ],
    }  # fmt: skip
    api_key = generate_api_key()
    _, _, identity = api_key_certificate(api_key)
    with kes.admin() as kms:
        kms.put_policy(policy, document)
        kms.add_user(user, [policy], "a-secret-key-123")
        kms.add_kes_identity(user, identity)
        assert {"identity": identity, "accessKey": user, "managed": True} in (
            kms.list_kes_identities()
        )
    with kes.client(api_key=api_key) as minio:
        assert minio.status()["keystore_latency"] >= 1
        plain, cipher = minio.generate_key(app, minio_context({"b": "b/o"}))
        assert minio.decrypt(app, cipher, minio_context({"b": "b/o"})) == plain
        assert minio.describe_key(app)["name"] == app
        assert app in minio.list_keys(app)[0]
        _, denied_cipher = minio.generate_key(app, minio_context({"deny": "yes"}))
        refused = [
            lambda: minio.generate_key(other), lambda: minio.create_key(unique("x")),
            lambda: minio.delete_key(app), lambda: minio.encrypt(app, b"x"),
            lambda: minio.decrypt(app, denied_cipher, minio_context({"deny": "yes"})),
            lambda: minio.decrypt(other, admin.generate_key(other)[1]), minio.metrics,
        ]  # fmt: skip
        for call in refused:
            with pytest.raises(KesError) as failed:
                call()
            assert failed.value == ERR_NOT_ALLOWED
        with pytest.raises(KesError) as not_its:  # allowed on app: a ciphertext of another key
            minio.decrypt(app, admin.generate_key(other)[1])
        assert not_its.value == ERR_DECRYPT
        lines = [line for line in kes.audit() if line.get("principal") == user]
        assert {"kms:GenerateDataKey", "kms:Decrypt", "kms:CreateKey"} <= {
            line["action"] for line in lines
        }
        assert all(line["surface"] == "kes" for line in lines)
        with kes.admin() as kms:
            kms.remove_kes_identity(user, identity)
        with pytest.raises(KesError) as removed:
            minio.generate_key(app)
        assert removed.value == ERR_NOT_ALLOWED


def test_identity_administration_refuses_what_cannot_be(kes: Kes) -> None:
    from s3kms.errors import InvalidRequest, KeyAlreadyExists
    from s3kms.users import UserNotFound

    user, second = unique("u1"), unique("u2")
    identity = hashlib.sha256(user.encode()).hexdigest()
    _, _, admin_identity = api_key_certificate(kes.admin_key)
    with kes.admin() as kms:
        kms.add_user(user, [], "a-secret-key-123")
        kms.add_user(second, [], "a-secret-key-123")
        kms.add_kes_identity(user, identity.upper())  # stored lower-case
        with pytest.raises(KeyAlreadyExists):
            kms.add_kes_identity(second, identity)
        with pytest.raises(InvalidRequest):
            kms.add_kes_identity(second, "not-hex")
        with pytest.raises(InvalidRequest):
            kms.add_kes_identity(second, admin_identity)
        with pytest.raises(UserNotFound):
            kms.add_kes_identity(unique("nobody"), hashlib.sha256(b"n").hexdigest())
        with pytest.raises(InvalidRequest):
            kms.remove_kes_identity(second, identity)
        assert [i["accessKey"] for i in kms.list_kes_identities() if i["identity"] == identity] == [
            user
        ]


def test_a_certificate_file_identity(kes: Kes, tmp_path: Path) -> None:
    """MINIO_KMS_KES_CERT_FILE/KEY_FILE: any self-signed certificate, named by its key."""
    key = ec.generate_private_key(ec.SECP384R1())
    cert, private = tmp_path / "minio.crt", tmp_path / "minio.key"
    cert.write_bytes(self_signed_certificate(key))
    private.write_bytes(key_pem(key))
    user = unique("certuser")
    with kes.admin() as kms:
        kms.put_policy(user, {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]})  # fmt: skip
        kms.add_user(user, [user], "a-secret-key-123")
        kms.add_kes_identity(user, certificate_identity(cert.read_bytes()))
    with kes.client(cert_file=cert, key_file=private) as minio:
        name = unique("bycert")
        minio.create_key(name)
        plain, cipher = minio.generate_key(name)
        assert minio.decrypt(name, cipher) == plain


# -- audit ------------------------------------------------------------------------------------------


def test_every_kes_request_has_an_audit_line(kes: Kes, admin: KesClient) -> None:
    name = unique("audited")
    admin.create_key(name)
    _, cipher = admin.generate_key(name)
    with pytest.raises(KesError):
        admin.decrypt(name, b"junk")
    admin.version()
    mine = [line for line in kes.audit() if line.get("surface") == "kes" and (
        line["key"] == name or line["action"] in ("kes:KeyCreate", "kes:Version"))]  # fmt: skip
    actions = [(line["action"], line["outcome"], line["status"]) for line in mine[-5:]]
    assert actions == [
        ("kes:KeyCreate", "intent", 0),
        ("kms:CreateKey", "allowed", 200),
        ("kms:GenerateDataKey", "allowed", 200),
        ("kms:Decrypt", "failed", 400),
        ("kes:Version", "allowed", 200),
    ]
    text = (kes.srv.settings.data_dir / "audit" / "audit.log").read_text()
    assert kes.admin_key.removeprefix("kes:v1:") not in text
    assert base64.b64encode(cipher).decode() not in text


# -- the Vault backend ------------------------------------------------------------------------------


@pytest.mark.vault
class TestOnVault:
    """Two s3kms nodes on one OpenBao, each with its KES port: the KES API on stateless nodes."""

    @pytest.fixture
    def nodes(self, bao: VaultApi, pki: Pki, tmp_path: Path) -> Iterator[list[Kes]]:
        vault = VaultSettings(
            addresses=(bao.addr,), token=bao.root_token, kv_prefix=unique("s3kms-kes"),
            ca_cert=os.environ.get(ENV_VAULT_CACERT) or None, timeout_seconds=5.0,
            metadata_cache_seconds=0,
        )  # fmt: skip
        first = start_kes(tmp_path / "a", pki, backend="vault", vault=vault)
        admin_identity = first.srv.settings.kes_admin_identity
        second_settings = replace(
            first.srv.settings, data_dir=tmp_path / "b", kes_address=f"127.0.0.1:{free_port()}"
        )
        second_srv = KmsThread(second_settings).start()
        assert second_settings.kes_admin_identity == admin_identity
        second = Kes(second_srv, int(second_settings.kes_address.rsplit(":", 1)[1]),
                     first.admin_key, pki)  # fmt: skip
        try:
            yield [first, second]
        finally:
            second.srv.stop()
            first.srv.stop()

    def test_keys_crypto_rotation_and_errors_across_nodes(self, nodes: list[Kes]) -> None:
        a, b = nodes
        name = unique("vault-kes")
        with a.client() as ka, b.client() as kb:
            ka.create_key(name)
            with pytest.raises(KesError) as exists:
                kb.create_key(name)
            assert exists.value == ERR_KEY_EXISTS
            assert kb.describe_key(name)["algorithm"] == "AES256"
            assert name in kb.list_keys(name[:8])[0]
            context = minio_context({"bucket": "bucket/object"})
            plain, cipher = ka.generate_key(name, context)
            assert kb.decrypt(name, cipher, context) == plain
            with pytest.raises(KesError) as wrong:
                kb.decrypt(name, cipher, minio_context({"bucket": "other"}))
            assert wrong.value == ERR_DECRYPT
            with b.admin() as kms:
                kms.rotate_key(name)
            plain2, cipher2 = kb.generate_key(name, context)
            assert blob.decode(cipher2).key_version == 2
            assert ka.decrypt(name, cipher, context) == plain
            assert ka.decrypt(name, cipher2, context) == plain2
            assert ka.decrypt(name, ka.encrypt(name, b"config", context), context) == b"config"
            assert ka.status()["keystore_latency"] >= 1
            ka.delete_key(name)
            with pytest.raises(KesError) as gone:
                kb.generate_key(name)
            assert gone.value == ERR_KEY_NOT_FOUND
            with pytest.raises(KesError) as missing:
                kb.describe_key(unique("absent"))
            assert missing.value == ERR_KEY_NOT_FOUND


def test_a_503_is_retried_as_kms_go_retries_it(pki: Pki, tmp_path: Path) -> None:
    """Over the rate limit the KES API answers 503, which kms-go's `retry.Do` tries again after
    200-1000 ms: the request then succeeds, as MinIO's would."""
    server = start_kes(tmp_path / "data", pki, rate_limit=10.0)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    try:
        with server.client() as admin:
            admin.create_key("limited")
        with KesClient(server.url, api_key=server.admin_key, ca_path=pki.ca_path, sleep=sleep) as c:
            for _ in range(12):  # a burst of 10, then 503s, each retried
                assert len(c.generate_key("limited")[0]) == 32
            assert slept and all(0.2 <= s < 1.0 for s in slept)
            status, _, body = c._once("POST", "/v1/key/generate/limited", b"{}", {}, 1 << 20)
            while status != 503:  # drain the bucket: the raw answer, without kms-go's retries
                status, _, body = c._once("POST", "/v1/key/generate/limited", b"{}", {}, 1 << 20)
            assert json.loads(body) == {"message": "too many requests: slow down"}
    finally:
        server.srv.stop()
