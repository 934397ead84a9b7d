"""Imported key material (BYOK) through a real server with boto3, on both backends (Local, and
Vault transit on a real OpenBao): CreateKey with Origin EXTERNAL, GetParametersForImport,
ImportKeyMaterial, DeleteImportedKeyMaterial, expiry by the maintenance pass, and
RotateKeyOnDemand of a key with imported material.

The material is wrapped here as AWS's documentation ("Encrypt key material", GetParametersForImport)
tells a client to, written from that text and not from s3kms's own module: RSAES_OAEP_SHA_1/_256
encrypt the material with RSA-OAEP (SHA-1 / SHA-256, MGF1 alike); RSA_AES_KEY_WRAP_SHA_1/_256
encrypt a fresh AES-256 key with RSA-OAEP and append the material wrapped under that key with AES
key wrap with padding (RFC 5649, `openssl enc -id-aes256-wrap-pad`). A last test runs that recipe
with the AWS CLI and openssl themselves.

That the imported material is the key's material is checked offline: a symmetric key's
ciphertexts open with AES-GCM under the imported bytes (docs/ciphertext-format.md), an HMAC key's
MACs equal Python's hmac of the imported bytes, a private key's signatures verify under its own
public half, which GetPublicKey answers.

Messages recorded from real AWS (LocalStack's AWS-validated snapshots, as
src/s3kms/protocols/awskms/imports.py lists them) are asserted exactly: `<arn> origin is AWS_KMS
which is not valid for this operation.`, `<arn> is pending import.`, `A validTo date must be set
if the ExpirationModel is KEY_MATERIAL_EXPIRES`, and the one for a second material pending
rotation. The IncorrectKeyMaterialException, InvalidImportTokenException and
ExpiredImportTokenException texts are s3kms's own (asserted too, so a change is seen).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from s3kms import backup
from s3kms.client import Client
from s3kms.crypto.context import canonical_context
from s3kms.keystore.vault import VaultSettings
from test_key_types import documented_policy_token

from kmsserver import (
    MASTER_KEY,
    ROOT_PASSWORD,
    ROOT_USER,
    KmsProcess,
    KmsThread,
    signed_admin,
    thread_settings,
)
from offline import verify_signature
from openbao import VaultApi

REGION = "us-east-1"
ACCOUNT = "000000000000"
DAY = 86400
ALGORITHMS = (
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "RSA_AES_KEY_WRAP_SHA_1",
    "RSA_AES_KEY_WRAP_SHA_256",
)
DOES_NOT_EXPIRE = "KEY_MATERIAL_DOES_NOT_EXPIRE"
EXPIRES = "KEY_MATERIAL_EXPIRES"
# s3kms's own messages (AWS documents no text for these exceptions).
INVALID_TOKEN = "The import token is invalid or is associated with a different KMS key"
EXPIRED_TOKEN = "The import token has expired; call GetParametersForImport for a new one"
SYMMETRIC_SIZE = "symmetric key material must be 256 bits (32 bytes)"
# AWS's (recorded).
VALID_TO_REQUIRED = "A validTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES"


def key_arn(key_id: str) -> str:
    return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}"


def not_valid_for_origin(key_id: str, origin: str) -> str:
    return f"{key_arn(key_id)} origin is {origin} which is not valid for this operation."


# -- the client's side, from AWS's documentation ----------------------------------------------------


def oaep(algorithm: str) -> padding.OAEP:
    sha1 = algorithm.endswith("_SHA_1")
    digest: hashes.HashAlgorithm = hashes.SHA1() if sha1 else hashes.SHA256()  # noqa: S303 (AWS's)
    return padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None)


def aws_wrap(public_der: bytes, algorithm: str, material: bytes) -> bytes:
    """EncryptedKeyMaterial as AWS's documentation makes it."""
    public = serialization.load_der_public_key(public_der)
    assert isinstance(public, rsa.RSAPublicKey)
    if algorithm.startswith("RSAES_OAEP_"):
        return public.encrypt(material, oaep(algorithm))
    assert algorithm.startswith("RSA_AES_KEY_WRAP_")
    ephemeral = os.urandom(32)  # "a 256-bit AES symmetric key"
    return public.encrypt(ephemeral, oaep(algorithm)) + aes_key_wrap_with_padding(
        ephemeral, material
    )


def open_blob(material: bytes, ciphertext: bytes, context: dict[str, str] | None = None) -> bytes:
    """A symmetric key's ciphertext opened offline with the material (docs/ciphertext-format.md)."""
    assert ciphertext[:5] == b"S3KC\x01"
    length = ciphertext[5]
    head = ciphertext[: 6 + length]
    nonce = ciphertext[10 + length : 22 + length]
    return AESGCM(material).decrypt(
        nonce, ciphertext[22 + length :], head + canonical_context(context or {})
    )


def blob_version(ciphertext: bytes) -> int:
    length = ciphertext[5]
    return int.from_bytes(ciphertext[6 + length : 10 + length], "big")


def pkcs8(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def spki(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- servers and clients ----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["local", pytest.param("vault", marks=pytest.mark.vault)])
def backend(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, backend: str, request: pytest.FixtureRequest
) -> Iterator[KmsThread]:
    data = tmp_path_factory.mktemp("imports") / "data"
    if backend == "local":
        settings = thread_settings(data)
    else:
        bao: VaultApi = request.getfixturevalue("bao")
        prefix = f"imports-{uuid.uuid4().hex[:12]}"
        vault = VaultSettings(
            addresses=(bao.addr,), token=documented_policy_token(bao, prefix), kv_prefix=prefix
        )
        settings = thread_settings(data, backend="vault", vault=vault)
    server = KmsThread(settings).start()
    yield server
    server.stop()


def boto_kms(url: str, access: str = ROOT_USER, secret: str = ROOT_PASSWORD) -> Any:
    return boto3.client(
        "kms", endpoint_url=url, region_name=REGION, aws_access_key_id=access,
        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip


@pytest.fixture(scope="module")
def kms(srv: KmsThread) -> Any:
    return boto_kms(srv.url)


def failure(call: Callable[..., Any], **params: Any) -> tuple[str, str | None]:
    with pytest.raises(ClientError) as caught:
        call(**params)
    response = caught.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400, response
    return response["Error"]["Code"], response["Error"].get("Message")


def expect(call: Callable[..., Any], code: str, message: str | None = None, **params: Any) -> None:
    got = failure(call, **params)
    assert got[0] == code, got
    if message is not None:
        assert got[1] == message, got


def external(kms: Any, spec: str = "SYMMETRIC_DEFAULT", usage: str | None = None) -> str:
    extra = {"KeyUsage": usage} if usage else {}
    meta = kms.create_key(Origin="EXTERNAL", KeySpec=spec, **extra)["KeyMetadata"]
    assert meta["Origin"] == "EXTERNAL" and meta["KeyState"] == "PendingImport"
    assert meta["Enabled"] is False
    assert "CurrentKeyMaterialId" not in meta and "ExpirationModel" not in meta
    key_id: str = meta["KeyId"]
    return key_id


def parameters(
    kms: Any, key_id: str, algorithm: str = "RSA_AES_KEY_WRAP_SHA_256", spec: str = "RSA_2048"
) -> dict[str, Any]:
    params: dict[str, Any] = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec=spec
    )
    return params


def import_material(
    kms: Any,
    key_id: str,
    material: bytes,
    *,
    algorithm: str = "RSA_AES_KEY_WRAP_SHA_256",
    params: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """ImportKeyMaterial of `material` (by default: does not expire)."""
    params = params or parameters(kms, key_id, algorithm)
    if "ValidTo" not in extra:
        extra.setdefault("ExpirationModel", DOES_NOT_EXPIRE)
    answer: dict[str, Any] = kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=aws_wrap(params["PublicKey"], algorithm, material),
        **extra,
    )
    return answer


def describe(kms: Any, key_id: str) -> dict[str, Any]:
    meta: dict[str, Any] = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    return meta


def state(kms: Any, key_id: str) -> str:
    return str(describe(kms, key_id)["KeyState"])


def rotations(kms: Any, key_id: str, every: bool = False) -> list[dict[str, Any]]:
    extra = {"IncludeKeyMaterial": "ALL_KEY_MATERIAL"} if every else {}
    entries: list[dict[str, Any]] = kms.list_key_rotations(KeyId=key_id, **extra)["Rotations"]
    return entries


def pending_import(kms: Any, key_id: str) -> None:
    """The key is PendingImport and refuses cryptography with AWS's message."""
    assert state(kms, key_id) == "PendingImport"
    message = f"{key_arn(key_id)} is pending import."
    expect(kms.encrypt, "KMSInvalidStateException", message, KeyId=key_id, Plaintext=b"x")


# -- every wrapping algorithm and wrapping key -----------------------------------------------------

WRAPPINGS = [(a, s) for a in ALGORITHMS for s in ("RSA_2048", "RSA_3072")] + [
    ("RSAES_OAEP_SHA_256", "RSA_4096"),  # RSA-4096 wrapping keys take a second each: two only
    ("RSA_AES_KEY_WRAP_SHA_1", "RSA_4096"),
]


@pytest.mark.parametrize(("algorithm", "wrapping_spec"), WRAPPINGS)
def test_symmetric_material_under_every_wrapping(
    kms: Any, algorithm: str, wrapping_spec: str
) -> None:
    key_id = external(kms)
    pending_import(kms, key_id)
    before = time.time()
    params = parameters(kms, key_id, algorithm, wrapping_spec)
    assert params["KeyId"] == key_arn(key_id)
    public = serialization.load_der_public_key(params["PublicKey"])
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == int(wrapping_spec.split("_")[1])
    valid_to = params["ParametersValidTo"].timestamp()  # "valid for 24 hours"
    assert before + DAY - 2 <= valid_to <= time.time() + DAY + 1
    material = os.urandom(32)
    answer = import_material(kms, key_id, material, algorithm=algorithm, params=params)
    assert answer["KeyId"] == key_arn(key_id)
    material_id = answer["KeyMaterialId"]
    assert len(material_id) == 64 and all(c in "0123456789abcdef" for c in material_id)
    meta = describe(kms, key_id)
    assert meta["KeyState"] == "Enabled" and meta["Enabled"] is True
    assert meta["Origin"] == "EXTERNAL" and meta["ExpirationModel"] == DOES_NOT_EXPIRE
    assert meta["CurrentKeyMaterialId"] == material_id and "ValidTo" not in meta
    # The ciphertexts are the imported material's: they open offline under it.
    context = {"bucket": "photos"}
    ciphertext = kms.encrypt(KeyId=key_id, Plaintext=b"imported", EncryptionContext=context)[
        "CiphertextBlob"
    ]
    assert open_blob(material, ciphertext, context) == b"imported"
    assert kms.decrypt(CiphertextBlob=ciphertext, EncryptionContext=context)["Plaintext"] == (
        b"imported"
    )
    data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    assert open_blob(material, data_key["CiphertextBlob"]) == data_key["Plaintext"]
    assert (
        kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]
    )


def test_origin_external_on_both_apis(srv: KmsThread, kms: Any) -> None:
    """The admin API's key/create takes `origin` (an s3kms extension); key/status names it."""
    name = f"admin-external-{uuid.uuid4().hex[:8]}"
    made = signed_admin(
        srv.url, "POST", f"/rustfs/admin/v3/kms/key/create?keyName={name}&origin=EXTERNAL"
    )
    assert made.status_code == 200, made.text
    status = signed_admin(srv.url, "GET", f"/rustfs/admin/v3/kms/key/status?keyName={name}").json()
    assert status["status"] == "pending_import" and status["origin"] == "EXTERNAL"
    assert describe(kms, name)["Origin"] == "EXTERNAL"
    plain = kms.create_key()["KeyMetadata"]["KeyId"]
    status = signed_admin(srv.url, "GET", f"/rustfs/admin/v3/kms/key/status?keyName={plain}").json()
    assert "origin" not in status  # only where it is not the default, as keyUsage
    bad = signed_admin(
        srv.url, "POST", "/rustfs/admin/v3/kms/key/create?keyName=x-bad&origin=AWS_CLOUDHSM"
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "KMSInvalidRequest"
    # Material that is made in the KMS only: ML-DSA (AWS imports none).
    code, _ = failure(
        kms.create_key, Origin="EXTERNAL", KeySpec="ML_DSA_44", KeyUsage="SIGN_VERIFY"
    )
    assert code == "UnsupportedOperationException"


def test_aws_kms_keys_have_a_key_material_id_too(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    meta = describe(kms, key_id)
    assert meta["Origin"] == "AWS_KMS" and len(meta["CurrentKeyMaterialId"]) == 64
    assert "ExpirationModel" not in meta
    kms.rotate_key_on_demand(KeyId=key_id)
    assert describe(kms, key_id)["CurrentKeyMaterialId"] != meta["CurrentKeyMaterialId"]


# -- HMAC and private key material -------------------------------------------------------------------

HMAC_SPECS = {  # spec: (algorithm, hash, smallest and largest material AWS accepts)
    "HMAC_224": ("HMAC_SHA_224", hashlib.sha224, 28, 64),
    "HMAC_256": ("HMAC_SHA_256", hashlib.sha256, 32, 64),
    "HMAC_384": ("HMAC_SHA_384", hashlib.sha384, 48, 128),
    "HMAC_512": ("HMAC_SHA_512", hashlib.sha512, 64, 128),
}


@pytest.mark.parametrize("spec", sorted(HMAC_SPECS))
def test_hmac_material_is_the_imported_key(kms: Any, spec: str) -> None:
    algorithm, digest, smallest, largest = HMAC_SPECS[spec]
    for size in (smallest, largest):
        key_id = external(kms, spec, "GENERATE_VERIFY_MAC")
        material = os.urandom(size)
        answer = import_material(kms, key_id, material)
        assert answer["KeyId"] == key_arn(key_id)
        assert "KeyMaterialId" not in answer  # AWS: for symmetric encryption keys only
        meta = describe(kms, key_id)
        assert meta["KeyState"] == "Enabled" and "CurrentKeyMaterialId" not in meta
        message = f"message for {spec} and a {size}-byte key".encode()
        mac = kms.generate_mac(KeyId=key_id, Message=message, MacAlgorithm=algorithm)["Mac"]
        assert mac == hmac.new(material, message, digest).digest()
        assert kms.verify_mac(KeyId=key_id, Message=message, Mac=mac, MacAlgorithm=algorithm)[
            "MacValid"
        ]


def private_key(spec: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if spec == "RSA_2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize(
    ("spec", "algorithm"),
    [("RSA_2048", "RSASSA_PSS_SHA_256"), ("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_384"),
     ("ECC_NIST_P256", "ECDSA_SHA_256")],
)  # fmt: skip
def test_private_key_material_signs_as_the_imported_key(
    kms: Any, spec: str, algorithm: str
) -> None:
    key = private_key(spec)
    key_id = external(kms, spec, "SIGN_VERIFY")
    answer = import_material(kms, key_id, pkcs8(key))
    assert answer["KeyId"] == key_arn(key_id) and "KeyMaterialId" not in answer
    assert state(kms, key_id) == "Enabled"
    assert kms.get_public_key(KeyId=key_id)["PublicKey"] == spki(key)
    message = b"signed by the imported key"
    signature = kms.sign(
        KeyId=key_id, Message=message, MessageType="RAW", SigningAlgorithm=algorithm
    )["Signature"]
    verify_signature(spki(key), algorithm, message, signature)  # the key's own public half
    assert kms.verify(
        KeyId=key_id,
        Message=message,
        MessageType="RAW",
        Signature=signature,
        SigningAlgorithm=algorithm,
    )["SignatureValid"]


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"])
def test_rsa_material_needs_an_rsa_aes_wrapping(kms: Any, algorithm: str) -> None:
    """AWS: "To import an RSA private key, you must use an RSA_AES wrapping algorithm." (A
    PKCS#8 RSA key is too long for RSA-OAEP anyway: what is wrapped here is any 32 bytes.)"""
    key_id = external(kms, "RSA_2048", "SIGN_VERIFY")
    params = parameters(kms, key_id, algorithm, "RSA_2048")
    expect(
        kms.import_key_material,
        "IncorrectKeyMaterialException",
        f"{algorithm} cannot wrap RSA key material: use RSA_AES_KEY_WRAP_SHA_1 or _256",
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=aws_wrap(params["PublicKey"], algorithm, os.urandom(32)),
        ExpirationModel=DOES_NOT_EXPIRE,
    )
    assert state(kms, key_id) == "PendingImport"


# -- material that does not fit, tokens that do not fit ----------------------------------------------


def test_material_of_the_wrong_size_or_type(kms: Any) -> None:
    rsa_key, ec_key = private_key("RSA_2048"), private_key("ECC_NIST_P256")
    cases = [
        ("SYMMETRIC_DEFAULT", None, os.urandom(16), SYMMETRIC_SIZE),
        ("SYMMETRIC_DEFAULT", None, os.urandom(33), SYMMETRIC_SIZE),
        ("HMAC_256", "GENERATE_VERIFY_MAC", os.urandom(31), "HMAC_256 key material must be 32 to 64 bytes, not 31"),
        ("HMAC_384", "GENERATE_VERIFY_MAC", os.urandom(129), "HMAC_384 key material must be 48 to 128 bytes, not 129"),
        ("ECC_NIST_P256", "SIGN_VERIFY", pkcs8(rsa_key), "the private key is not a ECC_NIST_P256 key"),
        ("RSA_3072", "SIGN_VERIFY", pkcs8(rsa_key), "the private key is not a RSA_3072 key"),
        ("RSA_2048", "SIGN_VERIFY", pkcs8(ec_key), "the private key is not a RSA_2048 key"),
        ("RSA_2048", "SIGN_VERIFY", os.urandom(64), "asymmetric key material must be a PKCS#8 DER private key"),
    ]  # fmt: skip
    for spec, usage, material, message in cases:
        key_id = external(kms, spec, usage)
        params = parameters(kms, key_id)
        expect(
            kms.import_key_material,
            "IncorrectKeyMaterialException",
            message,
            KeyId=key_id,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=aws_wrap(
                params["PublicKey"], "RSA_AES_KEY_WRAP_SHA_256", material
            ),
            ExpirationModel=DOES_NOT_EXPIRE,
        )
        assert state(kms, key_id) == "PendingImport", spec


def test_reimport_must_be_the_same_material(kms: Any) -> None:
    key_id = external(kms)
    material, other = os.urandom(32), os.urandom(32)
    first = import_material(kms, key_id, material)["KeyMaterialId"]
    previous = f"The key material is not the key material previously imported into KMS key {key_id}"
    # While imported, and once deleted: another material is not this key's.
    expect(
        lambda **kw: import_material(kms, key_id, other, **kw),
        "IncorrectKeyMaterialException",
        previous,
    )
    kms.delete_imported_key_material(KeyId=key_id)
    expect(
        lambda **kw: import_material(kms, key_id, other, **kw),
        "IncorrectKeyMaterialException",
        previous,
    )
    # Naming a KeyMaterialId the material does not have.
    expect(
        lambda **kw: import_material(
            kms, key_id, material, ImportType="EXISTING_KEY_MATERIAL", KeyMaterialId="ab" * 32
        ),
        "IncorrectKeyMaterialException",
        f"The key material does not match key material {'ab' * 32}",
    )
    pending_import(kms, key_id)
    again = import_material(
        kms, key_id, material, ImportType="EXISTING_KEY_MATERIAL", KeyMaterialId=first
    )
    assert again["KeyMaterialId"] == first and state(kms, key_id) == "Enabled"


def test_token_of_another_key_is_refused(kms: Any) -> None:
    mine, theirs = external(kms), external(kms)
    params = parameters(kms, theirs)
    expect(
        kms.import_key_material,
        "InvalidImportTokenException",
        INVALID_TOKEN,
        KeyId=mine,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=aws_wrap(params["PublicKey"], "RSA_AES_KEY_WRAP_SHA_256", os.urandom(32)),
        ExpirationModel=DOES_NOT_EXPIRE,
    )  # fmt: skip
    assert state(kms, mine) == "PendingImport"


def test_tampered_token_is_refused(kms: Any) -> None:
    key_id = external(kms)
    params = parameters(kms, key_id)
    token = params["ImportToken"]
    wrapped = aws_wrap(params["PublicKey"], "RSA_AES_KEY_WRAP_SHA_256", os.urandom(32))
    for where in (0, len(token) // 2, len(token) - 1):
        damaged = bytearray(token)
        damaged[where] ^= 0x01
        expect(
            kms.import_key_material,
            "InvalidImportTokenException",
            INVALID_TOKEN,
            KeyId=key_id,
            ImportToken=bytes(damaged),
            EncryptedKeyMaterial=wrapped,
            ExpirationModel=DOES_NOT_EXPIRE,
        )
    for forged in (token[:-1], b"x" * 64):
        expect(
            kms.import_key_material,
            "InvalidImportTokenException",
            INVALID_TOKEN,
            KeyId=key_id,
            ImportToken=forged,
            EncryptedKeyMaterial=wrapped,
            ExpirationModel=DOES_NOT_EXPIRE,
        )
    assert state(kms, key_id) == "PendingImport"
    # The token itself was fine.
    kms.import_key_material(
        KeyId=key_id, ImportToken=token, EncryptedKeyMaterial=wrapped, ExpirationModel=DOES_NOT_EXPIRE
    )  # fmt: skip
    assert state(kms, key_id) == "Enabled"


@pytest.fixture
def later(srv: KmsThread, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[float], None]]:
    """Move the server's clock, and boto3's signing clock with it (the server refuses a
    signature 15 minutes off its clock)."""
    original = botocore.auth.get_current_datetime

    def move(seconds: float) -> None:
        srv.clock.offset = seconds
        monkeypatch.setattr(
            botocore.auth,
            "get_current_datetime",
            lambda *a, **k: original(*a, **k) + dt.timedelta(seconds=seconds),
        )

    yield move
    srv.clock.offset = 0


def test_token_older_than_a_day_has_expired(kms: Any, later: Callable[[float], None]) -> None:
    key_id = external(kms)
    params = parameters(kms, key_id)
    material = os.urandom(32)
    wrapped = aws_wrap(params["PublicKey"], "RSA_AES_KEY_WRAP_SHA_256", material)
    call = {
        "KeyId": key_id,
        "ImportToken": params["ImportToken"],
        "EncryptedKeyMaterial": wrapped,
        "ExpirationModel": DOES_NOT_EXPIRE,
    }
    later(DAY + 60)
    expect(kms.import_key_material, "ExpiredImportTokenException", EXPIRED_TOKEN, **call)
    assert state(kms, key_id) == "PendingImport"
    later(DAY - 60)  # still within its day
    assert kms.import_key_material(**call)["KeyId"] == key_arn(key_id)
    assert state(kms, key_id) == "Enabled"


def test_material_wrapped_for_another_wrapping_key(kms: Any) -> None:
    key_id = external(kms)
    one, two = parameters(kms, key_id), parameters(kms, key_id)
    for algorithm in ("RSA_AES_KEY_WRAP_SHA_256", "RSAES_OAEP_SHA_256"):
        two = parameters(kms, key_id, algorithm)
        expect(
            kms.import_key_material,
            "InvalidCiphertextException",
            KeyId=key_id,
            ImportToken=two["ImportToken"],
            EncryptedKeyMaterial=aws_wrap(one["PublicKey"], algorithm, os.urandom(32)),
            ExpirationModel=DOES_NOT_EXPIRE,
        )
    # Wrapped with another algorithm than the token's.
    expect(
        kms.import_key_material,
        "InvalidCiphertextException",
        KeyId=key_id,
        ImportToken=two["ImportToken"],
        EncryptedKeyMaterial=aws_wrap(two["PublicKey"], "RSAES_OAEP_SHA_1", os.urandom(32)),
        ExpirationModel=DOES_NOT_EXPIRE,
    )
    code, message = failure(
        kms.import_key_material,
        KeyId=key_id,
        ImportToken=two["ImportToken"],
        EncryptedKeyMaterial=os.urandom(256),
        ExpirationModel=DOES_NOT_EXPIRE,
    )
    assert code == "InvalidCiphertextException" and not message
    assert state(kms, key_id) == "PendingImport"


# -- expiration ----------------------------------------------------------------------------------------


def test_expiration_model_rules(kms: Any) -> None:
    key_id = external(kms)
    params = parameters(kms, key_id)
    material = os.urandom(32)
    wrapped = aws_wrap(params["PublicKey"], "RSA_AES_KEY_WRAP_SHA_256", material)
    base = {"KeyId": key_id, "ImportToken": params["ImportToken"], "EncryptedKeyMaterial": wrapped}
    now = dt.datetime.now(dt.UTC)
    refused = [
        ({}, VALID_TO_REQUIRED),  # KEY_MATERIAL_EXPIRES is the default
        ({"ExpirationModel": EXPIRES}, VALID_TO_REQUIRED),
        (
            {"ExpirationModel": DOES_NOT_EXPIRE, "ValidTo": now + dt.timedelta(hours=1)},
            "ValidTo must not be set when the ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE",
        ),
        (
            {"ExpirationModel": EXPIRES, "ValidTo": now - dt.timedelta(minutes=1)},
            "ValidTo must be a date and time in the future",
        ),
        (
            {"ValidTo": now + dt.timedelta(days=366)},
            "ValidTo must be at most 365 days from now",
        ),
    ]
    for extra, message in refused:
        expect(kms.import_key_material, "ValidationException", message, **base, **extra)
        assert state(kms, key_id) == "PendingImport"
    until = now + dt.timedelta(days=364)
    kms.import_key_material(**base, ValidTo=until)  # the model defaults to EXPIRES
    meta = describe(kms, key_id)
    assert meta["KeyState"] == "Enabled" and meta["ExpirationModel"] == EXPIRES
    assert abs(meta["ValidTo"].timestamp() - until.timestamp()) < 1
    [entry] = rotations(kms, key_id, every=True)
    assert entry["ExpirationModel"] == EXPIRES and entry["ImportState"] == "IMPORTED"


def test_material_expires_by_the_maintenance_pass(srv: KmsThread, kms: Any) -> None:
    key_id = external(kms)
    material = os.urandom(32)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    first = import_material(kms, key_id, material, ExpirationModel=EXPIRES, ValidTo=until)
    ciphertext = kms.encrypt(KeyId=key_id, Plaintext=b"until it expires")["CiphertextBlob"]
    service = srv.app.runtime.service
    try:
        srv.clock.offset = 1800  # half an hour: not yet
        srv.run(service.run_due_work())
        srv.clock.offset = 0
        assert state(kms, key_id) == "Enabled"
        srv.clock.offset = 2 * 3600
        srv.run(service.run_due_work())
    finally:
        srv.clock.offset = 0  # boto3 signs with the real time
    pending_import(kms, key_id)
    expect(
        kms.decrypt,
        "KMSInvalidStateException",
        f"{key_arn(key_id)} is pending import.",
        CiphertextBlob=ciphertext,
    )
    meta = describe(kms, key_id)
    assert "ExpirationModel" not in meta and "ValidTo" not in meta
    [entry] = rotations(kms, key_id, every=True)
    assert (
        entry["ImportState"] == "PENDING_IMPORT"
        and entry["KeyMaterialId"] == first["KeyMaterialId"]
    )
    # The same material again: the old ciphertext opens.
    again = import_material(kms, key_id, material)
    assert again["KeyMaterialId"] == first["KeyMaterialId"]
    assert kms.decrypt(CiphertextBlob=ciphertext)["Plaintext"] == b"until it expires"
    assert describe(kms, key_id)["ExpirationModel"] == DOES_NOT_EXPIRE


def test_delete_material_then_import_it_again(kms: Any) -> None:
    key_id = external(kms)
    material = os.urandom(32)
    material_id = import_material(kms, key_id, material)["KeyMaterialId"]
    ciphertext = kms.encrypt(KeyId=key_id, Plaintext=b"kept")["CiphertextBlob"]
    deleted = kms.delete_imported_key_material(KeyId=key_id)
    assert deleted["KeyId"] == key_arn(key_id) and deleted["KeyMaterialId"] == material_id
    pending_import(kms, key_id)
    expect(
        kms.decrypt,
        "KMSInvalidStateException",
        f"{key_arn(key_id)} is pending import.",
        CiphertextBlob=ciphertext,
    )
    meta = describe(kms, key_id)
    assert meta["Origin"] == "EXTERNAL" and "ExpirationModel" not in meta
    import_material(kms, key_id, material, algorithm="RSAES_OAEP_SHA_1")
    assert describe(kms, key_id)["CurrentKeyMaterialId"] == material_id
    assert kms.decrypt(CiphertextBlob=ciphertext)["Plaintext"] == b"kept"
    # By its id, too.
    kms.delete_imported_key_material(KeyId=key_id, KeyMaterialId=material_id)
    pending_import(kms, key_id)


# -- new key material and RotateKeyOnDemand ------------------------------------------------------------


def test_new_key_material_becomes_current_on_rotate(kms: Any) -> None:
    key_id = external(kms)
    arn = key_arn(key_id)
    one, two, three = os.urandom(32), os.urandom(32), os.urandom(32)
    first = import_material(kms, key_id, one)["KeyMaterialId"]
    expect(
        kms.rotate_key_on_demand,
        "KMSInvalidStateException",
        f"No available key material pending rotation for the key: {arn}.",
        KeyId=key_id,
    )
    old = kms.encrypt(KeyId=key_id, Plaintext=b"old")["CiphertextBlob"]
    expect(
        lambda **kw: import_material(
            kms, key_id, two, ImportType="NEW_KEY_MATERIAL", KeyMaterialId=first
        ),
        "ValidationException",
    )
    expect(
        lambda **kw: import_material(kms, key_id, one, ImportType="NEW_KEY_MATERIAL"),
        "IncorrectKeyMaterialException",
        f"Key material {first} is already associated with KMS key {key_id}",
    )
    second = import_material(
        kms, key_id, two, ImportType="NEW_KEY_MATERIAL", KeyMaterialDescription="the next one"
    )["KeyMaterialId"]
    assert second != first
    assert describe(kms, key_id)["CurrentKeyMaterialId"] == first
    assert rotations(kms, key_id) == []
    listed = rotations(kms, key_id, every=True)
    assert [(e["KeyMaterialId"], e["KeyMaterialState"], e["ImportState"]) for e in listed] == [
        (first, "CURRENT", "IMPORTED"),
        (second, "PENDING_ROTATION", "IMPORTED"),
    ]
    assert listed[1]["KeyMaterialDescription"] == "the next one"
    # Encryption still uses the first material.
    assert open_blob(one, kms.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]) == b"x"
    # One material pending rotation at a time (AWS's message).
    code, refused = failure(
        lambda **kw: import_material(kms, key_id, three, ImportType="NEW_KEY_MATERIAL")
    )
    assert code == "KMSInvalidStateException"
    before = time.time()
    assert kms.rotate_key_on_demand(KeyId=key_id)["KeyId"] == arn
    assert describe(kms, key_id)["CurrentKeyMaterialId"] == second
    new = kms.encrypt(KeyId=key_id, Plaintext=b"new")["CiphertextBlob"]
    assert blob_version(new) != blob_version(old)
    assert open_blob(two, new) == b"new" and open_blob(one, old) == b"old"
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"old"
    assert kms.decrypt(CiphertextBlob=new)["Plaintext"] == b"new"
    [rotated] = rotations(kms, key_id)
    assert rotated["KeyMaterialId"] == second and rotated["KeyMaterialState"] == "CURRENT"
    assert rotated["RotationType"] == "ON_DEMAND"
    assert before - 2 <= rotated["RotationDate"].timestamp() <= time.time() + 1
    listed = rotations(kms, key_id, every=True)
    assert [(e["KeyMaterialId"], e["KeyMaterialState"]) for e in listed] == [
        (first, "NON_CURRENT"),
        (second, "CURRENT"),
    ]
    expect(
        kms.rotate_key_on_demand,
        "KMSInvalidStateException",
        f"No available key material pending rotation for the key: {arn}.",
        KeyId=key_id,
    )
    # The refused material's id in that message is the id it has once imported.
    third = import_material(kms, key_id, three, ImportType="NEW_KEY_MATERIAL")["KeyMaterialId"]
    assert refused == (
        f"New key material (id: {third}) cannot be imported into KMS key {arn}, "
        f"because another key material (id: {second}) is pending rotation."
    )


def test_only_symmetric_keys_take_new_material(kms: Any) -> None:
    key_id = external(kms, "HMAC_256", "GENERATE_VERIFY_MAC")
    import_material(kms, key_id, os.urandom(32))
    code, _ = failure(
        lambda **kw: import_material(kms, key_id, os.urandom(32), ImportType="NEW_KEY_MATERIAL")
    )
    assert code == "UnsupportedOperationException"


def test_automatic_rotation_of_an_external_key_is_refused(kms: Any) -> None:
    key_id = external(kms)
    import_material(kms, key_id, os.urandom(32))
    expect(
        kms.enable_key_rotation,
        "UnsupportedOperationException",
        not_valid_for_origin(key_id, "EXTERNAL"),
        KeyId=key_id,
    )
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False


def test_import_operations_on_an_aws_kms_key(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    message = not_valid_for_origin(key_id, "AWS_KMS")
    expect(
        kms.get_parameters_for_import,
        "UnsupportedOperationException",
        message,
        KeyId=key_id,
        WrappingAlgorithm="RSAES_OAEP_SHA_256",
        WrappingKeySpec="RSA_2048",
    )
    expect(
        kms.import_key_material,
        "UnsupportedOperationException",
        message,
        KeyId=key_id,
        ImportToken=b"t" * 64,
        EncryptedKeyMaterial=b"m" * 256,
        ExpirationModel=DOES_NOT_EXPIRE,
    )
    expect(kms.delete_imported_key_material, "UnsupportedOperationException", message, KeyId=key_id)
    assert state(kms, key_id) == "Enabled"


def test_identity_policy_denying_import(srv: KmsThread, kms: Any) -> None:
    name = f"importer-{uuid.uuid4().hex[:8]}"
    secret = "a-secret-of-the-import-user"
    with Client(srv.url, ROOT_USER, ROOT_PASSWORD) as admin:
        admin.put_policy(
            name,
            {
                "Statement": [
                    {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
                    {"Effect": "Deny", "Action": "kms:ImportKeyMaterial", "Resource": "*"},
                ]
            },
        )
        admin.add_user(name, [name], secret)
    user = boto_kms(srv.url, name, secret)
    key_id = external(user)
    params = parameters(user, key_id)  # allowed
    expect(
        lambda **kw: import_material(user, key_id, os.urandom(32), params=params),
        "AccessDeniedException",
        f"User: arn:aws:iam::{ACCOUNT}:user/{name} is not authorized to perform: "
        f"kms:ImportKeyMaterial on resource: {key_arn(key_id)} "
        "with an explicit deny in an identity-based policy",
    )
    assert state(kms, key_id) == "PendingImport"
    import_material(kms, key_id, os.urandom(32))  # root may
    user.delete_imported_key_material(KeyId=key_id)  # not denied
    assert state(kms, key_id) == "PendingImport"


# -- backup, restore and restart (Local) ----------------------------------------------------------------

PASSPHRASE = "a passphrase for the import backup"
OTHER_MASTER_KEY = base64.b64encode(bytes(range(7, 39))).decode()


def offline_cli(*args: str, master_key: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3KMS_")}
    env |= {"S3KMS_BACKUP_PASSPHRASE": PASSPHRASE, "S3KMS_MASTER_KEY": master_key}
    return subprocess.run(
        [sys.executable, "-m", "s3kms", *args],
        capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def imported_state(kms: Any, key_id: str) -> tuple[Any, ...]:
    """What a key's import records show: its metadata and every material's entry."""
    meta = describe(kms, key_id)
    fields = ("KeyState", "Origin", "ExpirationModel", "ValidTo", "CurrentKeyMaterialId")
    return tuple(meta.get(f) for f in fields), rotations(kms, key_id, every=True)


def test_external_keys_survive_backup_and_restore(tmp_path: Path) -> None:
    source = KmsThread(thread_settings(tmp_path / "source")).start()
    try:
        kms = boto_kms(source.url)
        rotated, expiring, deleted, never = (external(kms) for _ in range(4))
        one, two, three, four = (os.urandom(32) for _ in range(4))
        import_material(kms, rotated, one)
        sealed = [(rotated, kms.encrypt(KeyId=rotated, Plaintext=b"v1")["CiphertextBlob"])]
        import_material(kms, rotated, two, ImportType="NEW_KEY_MATERIAL")
        kms.rotate_key_on_demand(KeyId=rotated)
        sealed.append((rotated, kms.encrypt(KeyId=rotated, Plaintext=b"v2")["CiphertextBlob"]))
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
        import_material(kms, expiring, three, ValidTo=until, KeyMaterialDescription="monthly")
        sealed.append((expiring, kms.encrypt(KeyId=expiring, Plaintext=b"e")["CiphertextBlob"]))
        import_material(kms, deleted, four)
        gone = kms.encrypt(KeyId=deleted, Plaintext=b"later")["CiphertextBlob"]
        kms.delete_imported_key_material(KeyId=deleted)
        before = {k: imported_state(kms, k) for k in (rotated, expiring, deleted, never)}
        out = tmp_path / "imports.s3kb"
        made = offline_cli(
            "backup", str(out), "--data-dir", str(source.settings.data_dir), master_key=MASTER_KEY
        )
        assert made.returncode == 0, made.stderr
    finally:
        source.stop()
    target = tmp_path / "restored"
    restored = offline_cli(
        "restore", str(out), "--data-dir", str(target), master_key=OTHER_MASTER_KEY
    )
    assert restored.returncode == 0, restored.stderr
    assert "restore: 4 key(s) restored" in restored.stderr
    server = KmsThread(thread_settings(target, master_key=OTHER_MASTER_KEY)).start()
    try:
        kms = boto_kms(server.url)
        assert {k: imported_state(kms, k) for k in before} == before
        for key_id, ciphertext in sealed:
            assert kms.decrypt(CiphertextBlob=ciphertext)["KeyId"] == key_arn(key_id)
        pending_import(kms, deleted)
        pending_import(kms, never)
        import_material(kms, deleted, four)  # the deleted material comes back
        assert kms.decrypt(CiphertextBlob=gone)["Plaintext"] == b"later"
    finally:
        server.stop()


def test_a_backup_made_before_imports_still_restores(tmp_path: Path) -> None:
    """A backup whose keys have no `origin` and `materials` (as s3kms wrote them before
    imports) restores them as keys made by s3kms."""
    source = KmsThread(thread_settings(tmp_path / "source")).start()
    try:
        kms = boto_kms(source.url)
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        ciphertext = kms.encrypt(KeyId=key_id, Plaintext=b"old backup")["CiphertextBlob"]
        out = tmp_path / "new.s3kb"
        made = offline_cli(
            "backup", str(out), "--data-dir", str(source.settings.data_dir), master_key=MASTER_KEY
        )
        assert made.returncode == 0, made.stderr
    finally:
        source.stop()
    payload = backup.open_backup(out.read_bytes(), PASSPHRASE)
    [entry] = payload["keys"]
    assert entry["origin"] == "AWS_KMS" and entry["materials"] == []
    del entry["origin"], entry["materials"]
    old = tmp_path / "old.s3kb"
    old.write_bytes(backup.seal(payload, PASSPHRASE))
    target = tmp_path / "restored"
    restored = offline_cli(
        "restore", str(old), "--data-dir", str(target), master_key=OTHER_MASTER_KEY
    )
    assert restored.returncode == 0, restored.stderr
    server = KmsThread(thread_settings(target, master_key=OTHER_MASTER_KEY)).start()
    try:
        kms = boto_kms(server.url)
        meta = describe(kms, key_id)
        assert meta["Origin"] == "AWS_KMS" and meta["KeyState"] == "Enabled"
        assert kms.decrypt(CiphertextBlob=ciphertext)["Plaintext"] == b"old backup"
    finally:
        server.stop()


def test_external_key_metadata_survives_a_restart(tmp_path: Path) -> None:
    server = KmsProcess(tmp_path / "data")
    server.start()
    try:
        kms = boto_kms(server.url)
        key_id = external(kms)
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=10)
        material, following = os.urandom(32), os.urandom(32)
        import_material(kms, key_id, material, ValidTo=until)
        ciphertext = kms.encrypt(KeyId=key_id, Plaintext=b"restarted")["CiphertextBlob"]
        import_material(kms, key_id, following, ImportType="NEW_KEY_MATERIAL")
        never = external(kms)
        params = parameters(kms, never)  # a token made before the restart
        before = imported_state(kms, key_id), imported_state(kms, never)
        server.restart()
        kms = boto_kms(server.url)
        assert (imported_state(kms, key_id), imported_state(kms, never)) == before
        assert kms.decrypt(CiphertextBlob=ciphertext)["Plaintext"] == b"restarted"
        import_material(kms, never, os.urandom(32), params=params)
        assert state(kms, never) == "Enabled"
        kms.rotate_key_on_demand(KeyId=key_id)
        new = kms.encrypt(KeyId=key_id, Plaintext=b"next")["CiphertextBlob"]
        assert open_blob(following, new) == b"next"
    finally:
        server.stop()


# -- the AWS documentation's recipe, with the AWS CLI and openssl --------------------------------------


def test_the_aws_cli_and_openssl_recipe(srv: KmsThread, kms: Any, tmp_path: Path) -> None:
    aws, openssl = shutil.which("aws"), shutil.which("openssl")
    if aws is None or openssl is None:
        pytest.skip("the AWS CLI (`aws`) or openssl is not installed")
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ROOT_USER,
        "AWS_SECRET_ACCESS_KEY": ROOT_PASSWORD,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
    }

    def run(*args: str) -> str:
        done = subprocess.run(
            list(args), env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def aws_kms(*args: str) -> Any:
        out = run(aws, "kms", *args, "--endpoint-url", srv.url, "--output", "json")
        return json.loads(out) if out.strip() else {}

    created = aws_kms("create-key", "--origin", "EXTERNAL")["KeyMetadata"]
    key_id = created["KeyId"]
    assert created["KeyState"] == "PendingImport"
    # RSAES_OAEP_SHA_256 (the documentation's `openssl pkeyutl` recipe)
    params = aws_kms(
        "get-parameters-for-import", "--key-id", key_id,
        "--wrapping-algorithm", "RSAES_OAEP_SHA_256", "--wrapping-key-spec", "RSA_2048",
    )  # fmt: skip
    (tmp_path / "PublicKey.b64").write_text(params["PublicKey"])
    (tmp_path / "ImportToken.b64").write_text(params["ImportToken"])
    run(openssl, "enc", "-d", "-base64", "-A", "-in", "PublicKey.b64", "-out", "PublicKey.bin")
    run(openssl, "enc", "-d", "-base64", "-A", "-in", "ImportToken.b64", "-out", "ImportToken.bin")
    run(openssl, "rand", "-out", "PlaintextKeyMaterial.bin", "32")
    run(
        openssl, "pkeyutl", "-encrypt", "-in", "PlaintextKeyMaterial.bin",
        "-out", "EncryptedKeyMaterial.bin", "-inkey", "PublicKey.bin", "-keyform", "DER",
        "-pubin", "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256",
    )  # fmt: skip
    imported = aws_kms(
        "import-key-material", "--key-id", key_id,
        "--encrypted-key-material", "fileb://EncryptedKeyMaterial.bin",
        "--import-token", "fileb://ImportToken.bin",
        "--expiration-model", DOES_NOT_EXPIRE,
    )  # fmt: skip
    assert imported["KeyId"] == key_arn(key_id)
    (tmp_path / "plain.txt").write_bytes(b"imported with openssl")
    encrypted = aws_kms(
        "encrypt", "--key-id", key_id, "--plaintext", "fileb://plain.txt",
        "--query", "{CiphertextBlob: CiphertextBlob}",
    )  # fmt: skip
    ciphertext = base64.b64decode(encrypted["CiphertextBlob"])
    material = (tmp_path / "PlaintextKeyMaterial.bin").read_bytes()
    assert open_blob(material, ciphertext) == b"imported with openssl"
    (tmp_path / "ciphertext.bin").write_bytes(ciphertext)
    decrypted = aws_kms("decrypt", "--ciphertext-blob", "fileb://ciphertext.bin")
    assert base64.b64decode(decrypted["Plaintext"]) == b"imported with openssl"

    # RSA_AES_KEY_WRAP_SHA_256 (the documentation's `openssl enc -id-aes256-wrap-pad` recipe),
    # into an HMAC key: its MACs are Python's HMAC of the material.
    hmac_key = aws_kms(
        "create-key", "--origin", "EXTERNAL", "--key-spec", "HMAC_256",
        "--key-usage", "GENERATE_VERIFY_MAC",
    )["KeyMetadata"]["KeyId"]  # fmt: skip
    params = aws_kms(
        "get-parameters-for-import", "--key-id", hmac_key,
        "--wrapping-algorithm", "RSA_AES_KEY_WRAP_SHA_256", "--wrapping-key-spec", "RSA_3072",
    )  # fmt: skip
    (tmp_path / "PublicKey.b64").write_text(params["PublicKey"])
    (tmp_path / "ImportToken.b64").write_text(params["ImportToken"])
    run(openssl, "enc", "-d", "-base64", "-A", "-in", "PublicKey.b64", "-out", "PublicKey.bin")
    run(openssl, "enc", "-d", "-base64", "-A", "-in", "ImportToken.b64", "-out", "ImportToken.bin")
    run(openssl, "rand", "-out", "PlaintextKeyMaterial.bin", "48")
    run(openssl, "rand", "-out", "aes-key.bin", "32")
    aes_hex = (tmp_path / "aes-key.bin").read_bytes().hex()
    run(
        openssl, "enc", "-id-aes256-wrap-pad", "-K", aes_hex, "-iv", "A65959A6",
        "-in", "PlaintextKeyMaterial.bin", "-out", "key_material_wrapped.bin",
    )  # fmt: skip
    run(
        openssl, "pkeyutl", "-encrypt", "-in", "aes-key.bin", "-out", "aes-key_wrapped.bin",
        "-inkey", "PublicKey.bin", "-keyform", "DER", "-pubin",
        "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256",
        "-pkeyopt", "rsa_mgf1_md:sha256",
    )  # fmt: skip
    (tmp_path / "EncryptedKeyMaterial.bin").write_bytes(
        (tmp_path / "aes-key_wrapped.bin").read_bytes()
        + (tmp_path / "key_material_wrapped.bin").read_bytes()
    )
    aws_kms(
        "import-key-material", "--key-id", hmac_key,
        "--encrypted-key-material", "fileb://EncryptedKeyMaterial.bin",
        "--import-token", "fileb://ImportToken.bin",
        "--expiration-model", DOES_NOT_EXPIRE,
    )  # fmt: skip
    material = (tmp_path / "PlaintextKeyMaterial.bin").read_bytes()
    mac = kms.generate_mac(KeyId=hmac_key, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
    assert mac == hmac.new(material, b"m", hashlib.sha256).digest()
