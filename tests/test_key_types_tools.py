"""Key specs beyond SYMMETRIC_DEFAULT through the admin API (`key/create?keySpec=&keyUsage=`,
`key/status`), the Python client (create_key, sign, verify, public_key, generate_mac, verify_mac)
and the CLI run as a subprocess, against a real server; signatures are checked offline with
`cryptography` and the public key the server (or the CLI) hands out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from s3kms import Client, errors

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsThread, signed_admin, thread_settings
from kmsserver import run_cli as s3kms
from offline import verify_signature

ADMIN = "/rustfs/admin/v3/kms"
# (spec, a signing algorithm of it) for the client's round trips
SIGNERS = [
    ("ECC_NIST_P256", "ECDSA_SHA_256"),
    ("RSA_2048", "RSASSA_PSS_SHA_256"),
    ("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_512"),
    ("ECC_NIST_EDWARDS25519", "ED25519_SHA_512"),
    ("ML_DSA_44", "ML_DSA_SHAKE_256"),
]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    server = KmsThread(thread_settings(tmp_path_factory.mktemp("key-tools") / "data")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def kms(srv: KmsThread) -> Iterator[Client]:
    with Client(srv.url, ROOT_USER, ROOT_PASSWORD) as client:
        yield client


def admin(srv: KmsThread, method: str, route: str) -> tuple[int, Any]:
    response = signed_admin(srv.url, method, f"{ADMIN}/{route}")
    return response.status_code, response.json()


# -- admin API ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "usage"),
    [
        ("RSA_2048", "SIGN_VERIFY"),
        ("HMAC_256", "GENERATE_VERIFY_MAC"),
        ("ECC_NIST_P384", "KEY_AGREEMENT"),
    ],
)
def test_admin_create_with_spec_and_status_fields(srv: KmsThread, spec: str, usage: str) -> None:
    name = f"adm-{spec.lower().replace('_', '-')}"
    code, created = admin(srv, "POST", f"key/create?keyName={name}&keySpec={spec}&keyUsage={usage}")
    assert code == 200, created
    assert created == {"keyId": name, "status": "created", "createdAt": created["createdAt"]}
    code, status = admin(srv, "GET", f"key/status?keyName={name}")
    assert code == 200
    assert status == {
        "keyId": name,
        "status": "enabled",
        "createdAt": created["createdAt"],
        "algorithm": spec,
        "keyUsage": usage,
        "currentVersion": 1,
    }
    # A key made here is the same key on the AWS API, with the spec and usage asked for.
    with Client(srv.url, ROOT_USER, ROOT_PASSWORD) as kms:
        meta = kms._aws("DescribeKey", {"KeyId": name})["KeyMetadata"]
    assert (meta["KeySpec"], meta["KeyUsage"]) == (spec, usage)
    # key/list keeps the document's three fields.
    code, listed = admin(srv, "GET", f"key/list?pattern={name}")
    assert listed == {
        "keys": [{"keyId": name, "status": "enabled", "createdAt": created["createdAt"]}]
    }


def test_admin_symmetric_keys_stay_the_documents(srv: KmsThread) -> None:
    for query in (
        "",
        "&keySpec=SYMMETRIC_DEFAULT",
        "&keySpec=SYMMETRIC_DEFAULT&keyUsage=ENCRYPT_DECRYPT",
    ):
        name = f"adm-sym-{len(query)}"
        code, _ = admin(srv, "POST", f"key/create?keyName={name}{query}")
        assert code == 200
        code, status = admin(srv, "GET", f"key/status?keyName={name}")
        assert set(status) == {"keyId", "status", "createdAt", "algorithm", "currentVersion"}
        assert status["algorithm"] == "AES256"


def test_admin_status_of_a_typed_key_pending_deletion(srv: KmsThread) -> None:
    admin(
        srv, "POST", "key/create?keyName=adm-doomed&keySpec=HMAC_512&keyUsage=GENERATE_VERIFY_MAC"
    )
    code, _ = admin(srv, "POST", "key/delete?keyName=adm-doomed&pendingWindowDays=7")
    assert code == 200
    _, status = admin(srv, "GET", "key/status?keyName=adm-doomed")
    assert status["status"] == "pending_deletion" and "deletionDate" in status
    assert (status["algorithm"], status["keyUsage"]) == ("HMAC_512", "GENERATE_VERIFY_MAC")


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("keySpec=RSA_2048", "You must specify a KeyUsage value"),
        ("keySpec=HMAC_256", "You must specify a KeyUsage value"),
        ("keySpec=RSA_2048&keyUsage=KEY_AGREEMENT", "KeyUsage KEY_AGREEMENT is not compatible"),
        ("keyUsage=SIGN_VERIFY", "KeyUsage SIGN_VERIFY is not compatible with KeySpec SYMMETRIC"),
        ("keySpec=RSA_1024&keyUsage=SIGN_VERIFY", "RSA_1024 is not a key spec"),
        ("keySpec=rsa_2048&keyUsage=SIGN_VERIFY", "rsa_2048 is not a key spec"),
        ("keySpec=RSA_2048&keyUsage=SIGNING", "KeyUsage SIGNING is not compatible"),
        ("keySpec=SM2&keyUsage=SIGN_VERIFY", "SM2 is not available"),
        ("keySpec=ML_KEM_512&keyUsage=ENCAPSULATE_DECAPSULATE", "ML_KEM_512 is not available"),
    ],
)
def test_admin_create_refuses_what_does_not_fit(srv: KmsThread, query: str, fragment: str) -> None:
    response = signed_admin(srv.url, "POST", f"{ADMIN}/key/create?keyName=adm-refused&{query}")
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "KMSInvalidRequest"
    assert fragment in body["error"]["message"]
    assert body["error"]["resource"] == f"{ADMIN}/key/create"
    code, _ = admin(srv, "GET", "key/status?keyName=adm-refused")
    assert code == 404  # nothing was made


# -- Python client ------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "algorithm"), SIGNERS)
def test_client_sign_verify_and_public_key(kms: Client, spec: str, algorithm: str) -> None:
    name = f"cl-{spec}-{algorithm}".lower().replace("_", "-")
    info = kms.create_key(name, spec=spec, usage="SIGN_VERIFY")
    assert (info.key_id, info.status) == (name, "created")
    status = kms.key_status(name)
    assert (status.algorithm, status.key_usage, status.status) == (spec, "SIGN_VERIFY", "enabled")
    der = kms.public_key(name)
    public = serialization.load_der_public_key(der)
    message = b"a message to sign, " * 20
    signature = kms.sign(name, message, algorithm)
    assert isinstance(signature, bytes)
    verify_signature(public, algorithm, message, signature)
    assert kms.verify(name, message, signature, algorithm) is True
    assert kms.verify(name, message + b"!", signature, algorithm) is False
    with pytest.raises(InvalidSignature):
        verify_signature(public, algorithm, message + b"!", signature)
    if algorithm.startswith(("RSASSA", "ECDSA")):
        hasher = {"256": hashlib.sha256, "512": hashlib.sha512}[algorithm.rsplit("_", 1)[1]]
        digest = hasher(message).digest()
        signed = kms.sign(name, digest, algorithm, message_type="DIGEST")
        verify_signature(public, algorithm, message, signed)
        assert kms.verify(name, digest, signed, algorithm, message_type="DIGEST") is True
        assert kms.verify(name, message, signed, algorithm) is True


def test_client_errors_are_raised_not_false(kms: Client) -> None:
    kms.create_key("cl-errors-ec", spec="ECC_NIST_P256", usage="SIGN_VERIFY")
    kms.create_key("cl-errors-sym")
    signature = kms.sign("cl-errors-ec", b"m", "ECDSA_SHA_256")
    # The wrong algorithm for the key is an error, not an invalid signature.
    with pytest.raises(errors.InvalidKeyUsage, match="incompatible with key spec ECC_NIST_P256"):
        kms.verify("cl-errors-ec", b"m", signature, "ECDSA_SHA_384")
    with pytest.raises(errors.KeyNotFound):
        kms.verify("cl-no-such-key", b"m", signature, "ECDSA_SHA_256")
    with pytest.raises(errors.InvalidKeyUsage, match="not valid for Sign"):
        kms.sign("cl-errors-sym", b"m", "ECDSA_SHA_256")
    with pytest.raises(errors.UnsupportedOperation):
        kms.public_key("cl-errors-sym")
    with pytest.raises(errors.InvalidRequest, match="Digest is invalid length"):
        kms.sign("cl-errors-ec", b"short", "ECDSA_SHA_256", message_type="DIGEST")
    with pytest.raises(errors.InvalidRequest, match="You must specify a KeyUsage"):
        kms.create_key("cl-errors-rsa", spec="RSA_2048")
    kms.disable_key("cl-errors-ec")
    with pytest.raises(errors.KeyDisabled):
        kms.verify("cl-errors-ec", b"m", signature, "ECDSA_SHA_256")
    # A symmetric key's status names no usage (the document's AES256).
    status = kms.key_status("cl-errors-sym")
    assert (status.algorithm, status.key_usage) == ("AES256", None)


@pytest.mark.parametrize("bits", [256, 512])
def test_client_mac(kms: Client, bits: int) -> None:
    name = f"cl-hmac-{bits}"
    algorithm = f"HMAC_SHA_{bits}"
    kms.create_key(name, spec=f"HMAC_{bits}", usage="GENERATE_VERIFY_MAC")
    assert kms.key_status(name).algorithm == f"HMAC_{bits}"
    tag = kms.generate_mac(name, b"the message", algorithm)
    assert isinstance(tag, bytes) and len(tag) == bits // 8
    assert kms.generate_mac(name, b"the message", algorithm) == tag  # deterministic
    assert kms.verify_mac(name, b"the message", tag, algorithm) is True
    assert kms.verify_mac(name, b"another message", tag, algorithm) is False
    assert kms.verify_mac(name, b"the message", bytes(len(tag)), algorithm) is False
    other = "HMAC_SHA_384"
    with pytest.raises(errors.InvalidKeyUsage, match="incompatible"):
        kms.verify_mac(name, b"the message", tag, other)
    with pytest.raises(errors.InvalidKeyUsage):
        kms.encrypt(name, b"an HMAC key is no AES key")


def test_client_repr_holds_no_secret(kms: Client) -> None:
    assert ROOT_PASSWORD not in repr(kms) and ROOT_PASSWORD not in str(kms)
    assert ROOT_USER in repr(kms)


# -- CLI --------------------------------------------------------------------------------------------


def ok(result: subprocess.CompletedProcess[bytes]) -> bytes:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def test_cli_sign_verify_public_key(srv: KmsThread, tmp_path: Path) -> None:
    created = json.loads(
        ok(s3kms(srv, "key", "create", "cli-signer", "--spec", "ECC_NIST_P256",
                 "--usage", "SIGN_VERIFY", "--json"))
    )  # fmt: skip
    assert created["keyId"] == "cli-signer" and created["status"] == "created"
    status = json.loads(ok(s3kms(srv, "key", "status", "cli-signer", "--json")))
    assert (status["algorithm"], status["keyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")

    message = b"release 1.2.3\n"
    b64 = ok(s3kms(srv, "sign", "cli-signer", "--algorithm", "ECDSA_SHA_256", stdin=message))
    signature = base64.b64decode(b64.strip(), validate=True)
    pem = ok(s3kms(srv, "public-key", "cli-signer"))
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert pem.endswith(b"-----END PUBLIC KEY-----\n")
    public = serialization.load_pem_public_key(pem)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, message, ec.ECDSA(hashes.SHA256()))  # offline, from the CLI's PEM

    good = s3kms(srv, "verify", "cli-signer", "--algorithm", "ECDSA_SHA_256",
                 "--signature", b64.decode().strip(), stdin=message)  # fmt: skip
    assert good.returncode == 0, good.stderr.decode()
    assert b"valid" in good.stdout
    bad = s3kms(srv, "verify", "cli-signer", "--algorithm", "ECDSA_SHA_256",
                "--signature", b64.decode().strip(), stdin=b"release 6.6.6\n")  # fmt: skip
    assert bad.returncode == 1
    assert "invalid" in bad.stderr.decode() and "does not match" in bad.stderr.decode()

    # Files: message from --message-file, raw signature out and in, DER public key.
    (tmp_path / "msg").write_bytes(message)
    out = s3kms(srv, "sign", "cli-signer", "--algorithm", "ECDSA_SHA_256",
                "--message-file", str(tmp_path / "msg"), "--raw-out", str(tmp_path / "sig"))  # fmt: skip
    assert ok(out) == b""
    raw = (tmp_path / "sig").read_bytes()
    public.verify(raw, message, ec.ECDSA(hashes.SHA256()))
    checked = json.loads(
        ok(s3kms(srv, "verify", "cli-signer", "--algorithm", "ECDSA_SHA_256", "--json",
                 "--signature-file", str(tmp_path / "sig"), "--message-file", str(tmp_path / "msg")))
    )  # fmt: skip
    assert checked == {
        "KeyId": "cli-signer",
        "SigningAlgorithm": "ECDSA_SHA_256",
        "SignatureValid": True,
    }
    assert ok(s3kms(srv, "public-key", "cli-signer", "--der", str(tmp_path / "pub.der"))) == b""
    assert serialization.load_der_public_key((tmp_path / "pub.der").read_bytes()) == public

    # --digest: the message is its SHA-256, and the signature is over the original message.
    digest = hashlib.sha256(message).digest()
    signed = json.loads(
        ok(s3kms(srv, "sign", "cli-signer", "--algorithm", "ECDSA_SHA_256", "--digest", "--json",
                 stdin=digest))
    )  # fmt: skip
    assert signed["MessageType"] == "DIGEST" and signed["KeyId"] == "cli-signer"
    public.verify(base64.b64decode(signed["Signature"]), message, ec.ECDSA(hashes.SHA256()))


def test_cli_rsa_signature_verifies_offline(srv: KmsThread) -> None:
    ok(s3kms(srv, "key", "create", "cli-rsa", "--spec", "RSA_3072", "--usage", "SIGN_VERIFY"))
    message = b"x" * 4096  # the largest RAW message
    b64 = ok(s3kms(srv, "sign", "cli-rsa", "--algorithm", "RSASSA_PSS_SHA_384", stdin=message))
    public = serialization.load_pem_public_key(ok(s3kms(srv, "public-key", "cli-rsa")))
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 3072
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    public.verify(base64.b64decode(b64), message, pss, hashes.SHA384())
    too_long = s3kms(srv, "sign", "cli-rsa", "--algorithm", "RSASSA_PSS_SHA_384", stdin=b"x" * 4097)
    assert too_long.returncode == 1 and "KMSInvalidRequest" in too_long.stderr.decode()


def test_cli_mac(srv: KmsThread, tmp_path: Path) -> None:
    ok(s3kms(srv, "key", "create", "cli-hmac", "--spec", "HMAC_256", "--usage",
             "GENERATE_VERIFY_MAC"))  # fmt: skip
    b64 = ok(s3kms(srv, "mac", "cli-hmac", "--algorithm", "HMAC_SHA_256", stdin=b"payload"))
    tag = base64.b64decode(b64.strip(), validate=True)
    assert len(tag) == 32
    good = s3kms(srv, "mac", "cli-hmac", "--algorithm", "HMAC_SHA_256", "--verify",
                 b64.decode().strip(), stdin=b"payload")  # fmt: skip
    assert good.returncode == 0 and b"valid" in good.stdout, good.stderr.decode()
    bad = s3kms(srv, "mac", "cli-hmac", "--algorithm", "HMAC_SHA_256", "--verify",
                b64.decode().strip(), stdin=b"another payload")  # fmt: skip
    assert bad.returncode == 1 and "invalid" in bad.stderr.decode()
    assert "the MAC does not match" in bad.stderr.decode()
    made = json.loads(
        ok(s3kms(srv, "mac", "cli-hmac", "--algorithm", "HMAC_SHA_256", "--json",
                 "--raw-out", str(tmp_path / "tag"), stdin=b"payload"))
    )  # fmt: skip
    assert made == {
        "KeyId": "cli-hmac",
        "MacAlgorithm": "HMAC_SHA_256",
        "Mac": b64.decode().strip(),
    }
    assert (tmp_path / "tag").read_bytes() == tag
    checked = json.loads(
        ok(s3kms(srv, "mac", "cli-hmac", "--algorithm", "HMAC_SHA_256", "--json",
                 "--verify-file", str(tmp_path / "tag"), stdin=b"payload"))
    )  # fmt: skip
    assert checked["MacValid"] is True
    status = json.loads(ok(s3kms(srv, "key", "status", "cli-hmac", "--json")))
    assert (status["algorithm"], status["keyUsage"]) == ("HMAC_256", "GENERATE_VERIFY_MAC")


def test_cli_errors(srv: KmsThread) -> None:
    # The service's refusal: exit 1 with the code and AWS's message.
    no_usage = s3kms(srv, "key", "create", "cli-no-usage", "--spec", "RSA_2048")
    assert no_usage.returncode == 1
    assert "KMSInvalidRequest" in no_usage.stderr.decode()
    assert "You must specify a KeyUsage" in no_usage.stderr.decode()
    ok(s3kms(srv, "key", "create", "cli-symmetric"))
    wrong = s3kms(srv, "sign", "cli-symmetric", "--algorithm", "ECDSA_SHA_256", stdin=b"m")
    assert wrong.returncode == 1 and "KMSInvalidKeyUsage" in wrong.stderr.decode()
    no_public = s3kms(srv, "public-key", "cli-symmetric")
    assert no_public.returncode == 1 and "only asymmetric keys" in no_public.stderr.decode()
    missing = s3kms(srv, "verify", "cli-no-such", "--algorithm", "ECDSA_SHA_256",
                    "--signature", "AAAA", stdin=b"m")  # fmt: skip
    assert missing.returncode == 1 and "KMSKeyNotFound" in missing.stderr.decode()
    # Usage errors: exit 2 before anything is sent.
    unknown_spec = s3kms(srv, "key", "create", "cli-x", "--spec", "RSA_1024")
    assert unknown_spec.returncode == 2 and "RSA_1024" in unknown_spec.stderr.decode()
    no_signature = s3kms(srv, "verify", "cli-signer", "--algorithm", "ECDSA_SHA_256", stdin=b"m")
    assert no_signature.returncode == 2 and "--signature" in no_signature.stderr.decode()
    not_b64 = s3kms(srv, "verify", "cli-signer", "--algorithm", "ECDSA_SHA_256",
                    "--signature", "not base64!", stdin=b"m")  # fmt: skip
    assert not_b64.returncode == 2 and "is not base64" in not_b64.stderr.decode()
    both = s3kms(srv, "mac", "cli-hmac", "--algorithm", "HMAC_SHA_256", "--verify", "AAAA",
                 "--raw-out", "/dev/null", stdin=b"m")  # fmt: skip
    assert both.returncode == 2
