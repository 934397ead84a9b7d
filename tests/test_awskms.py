"""The AWS KMS JSON 1.1 API through a real server, with boto3 (real botocore signing and parsing).

Every test runs on both backends (Local, and Vault transit on a real OpenBao). Most tests share one
server per backend; those that move the server's clock, or need to know every key in the keystore,
start their own.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from s3kms.auth import sigv4
from s3kms.client import Client
from s3kms.crypto import blob
from s3kms.keystore.vault import VaultSettings

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsThread, thread_settings

REGION = "us-east-1"
ACCOUNT = "000000000000"
ARN_PREFIX = f"arn:aws:kms:{REGION}:{ACCOUNT}:"
DAY = 86400
NOT_PENDING_MESSAGE = "PendingWindowInDays must be between 7 and 30"


def key_arn(key_id: str) -> str:
    return f"{ARN_PREFIX}key/{key_id}"


def alias_arn(name: str) -> str:
    return f"{ARN_PREFIX}{name}"


def boto_kms(srv: KmsThread, *, validate: bool = True, secret: str = ROOT_PASSWORD) -> Any:
    """A boto3 KMS client for `srv`; `validate=False` lets bad values reach the server."""
    return boto3.client(
        "kms",
        endpoint_url=srv.url,
        region_name=REGION,
        aws_access_key_id=ROOT_USER,
        aws_secret_access_key=secret,
        config=Config(parameter_validation=validate, retries={"max_attempts": 1}),
    )


def start_server(path: Path, backend: str, request: pytest.FixtureRequest) -> KmsThread:
    if backend == "local":
        return KmsThread(thread_settings(path / "data")).start()
    bao = request.getfixturevalue("bao")  # a real OpenBao (or the external Vault)
    vault = VaultSettings(
        addresses=(bao.addr,),
        token=bao.root_token,
        kv_prefix=f"awskms-{uuid.uuid4().hex[:12]}",  # each server sees only its own keys
    )
    return KmsThread(thread_settings(path / "data", backend="vault", vault=vault)).start()


# Every test runs on both backends: the Local keystore and Vault transit on a real OpenBao.
@pytest.fixture(scope="module", params=["local", "vault"])
def backend(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, backend: str, request: pytest.FixtureRequest
) -> Iterator[KmsThread]:
    server = start_server(tmp_path_factory.mktemp("awskms"), backend, request)
    yield server
    server.stop()


@pytest.fixture
def own_srv(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Iterator[KmsThread]:
    """A server of the test's own: its clock may move, its keystore holds only the test's keys."""
    server = start_server(tmp_path, backend, request)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def kms(srv: KmsThread) -> Any:
    return boto_kms(srv)


@pytest.fixture(scope="module")
def raw(srv: KmsThread) -> Any:
    """No client-side parameter validation: maxima, enums and patterns are the server's to check."""
    return boto_kms(srv, validate=False)


@pytest.fixture
def key(kms: Any) -> str:
    """A fresh enabled key's id."""
    key_id: str = kms.create_key()["KeyMetadata"]["KeyId"]
    return key_id


def failure(call: Callable[..., Any], **params: Any) -> dict[str, Any]:
    """Call and expect a ClientError; returns code, message and HTTP status."""
    with pytest.raises(ClientError) as info:
        call(**params)
    response = info.value.response
    return {
        "code": response["Error"]["Code"],
        "message": response["Error"].get("Message"),
        "status": response["ResponseMetadata"]["HTTPStatusCode"],
    }


def expect(call: Callable[..., Any], code: str, message: str | None = None, **params: Any) -> None:
    got = failure(call, **params)
    assert got["code"] == code, got
    assert got["status"] == 400, got
    if message is not None:
        assert got["message"] == message, got


def validation(value: str | None, member: str, rule: str) -> str:
    where = f"Value at '{member}'" if value is None else f"Value '{value}' at '{member}'"
    return f"1 validation error detected: {where} failed to satisfy constraint: Member must {rule}"


def post(srv: KmsThread, target: str | None, body: bytes) -> httpx.Response:
    """A signed `POST /` with exactly this target and body, as raw HTTP."""
    url = srv.url + "/"
    headers = {"content-type": "application/x-amz-json-1.1"}
    if target is not None:
        headers["x-amz-target"] = target
    signed = sigv4.sign_headers(
        "POST", url, headers, body, access_key=ROOT_USER, secret_key=ROOT_PASSWORD,
        region=REGION, service="kms", now=time.time(), s3_flavour=False,
    )  # fmt: skip
    return httpx.post(url, headers=signed, content=body, timeout=10)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- keys ---------------------------------------------------------------------------------------


def test_create_key_metadata_is_awss(kms: Any) -> None:
    before = time.time()
    meta = kms.create_key(Description="orders", Tags=[{"TagKey": "team", "TagValue": "payments"}])[
        "KeyMetadata"
    ]
    key_id = meta.pop("KeyId")
    assert uuid.UUID(key_id).version == 4 and str(uuid.UUID(key_id)) == key_id
    created = meta.pop("CreationDate").timestamp()
    assert before - 2 <= created <= time.time() + 1
    # A symmetric key's CurrentKeyMaterialId (AWS reports one since 2025: recorded), 64 hex.
    assert re.fullmatch(r"[0-9a-f]{64}", meta.pop("CurrentKeyMaterialId"))
    assert meta == {
        "AWSAccountId": ACCOUNT,
        "Arn": key_arn(key_id),
        "Enabled": True,
        "Description": "orders",
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": "Enabled",
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
        "MultiRegion": False,
    }
    tags = kms.list_resource_tags(KeyId=key_id)["Tags"]
    assert tags == [{"TagKey": "team", "TagValue": "payments"}]
    plain = kms.create_key(KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT")
    assert plain["KeyMetadata"]["Description"] == ""
    described = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert described["KeyId"] == key_id and described["Description"] == "orders"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"KeyUsage": "SIGN_VERIFY"}, "ValidationException"),  # not with SYMMETRIC_DEFAULT
        ({"KeySpec": "RSA_2048"}, "ValidationException"),  # KeyUsage is required for it
        ({"CustomerMasterKeySpec": "HMAC_256"}, "ValidationException"),
        ({"KeySpec": "SM2", "KeyUsage": "SIGN_VERIFY"}, "UnsupportedOperationException"),
        ({"Origin": "AWS_CLOUDHSM"}, "UnsupportedOperationException"),  # a custom key store's
        ({"MultiRegion": True, "Origin": "EXTERNAL"}, "UnsupportedOperationException"),
        ({"CustomKeyStoreId": "cks-1234567890abcdef0"}, "CustomKeyStoreNotFoundException"),
        ({"Tags": [{"TagKey": "aws:reserved", "TagValue": "x"}]}, "TagException"),
        ({"KeySpec": "AES_999"}, "ValidationException"),
        ({"Description": "d" * 8193}, "ValidationException"),
    ],
)
def test_create_key_refuses_what_s3kms_does_not_do(
    raw: Any, params: dict[str, Any], code: str
) -> None:
    before = len(raw.list_keys(Limit=1000)["Keys"])
    expect(raw.create_key, code, **params)
    assert len(raw.list_keys(Limit=1000)["Keys"]) == before  # nothing was created


def test_create_key_validation_messages(raw: Any) -> None:
    enum = "satisfy enum value set: [SIGN_VERIFY, ENCRYPT_DECRYPT, GENERATE_VERIFY_MAC, KEY_AGREEMENT, ENCAPSULATE_DECAPSULATE]"
    expect(
        raw.create_key,
        "ValidationException",
        validation("SIGN", "keyUsage", enum),
        KeyUsage="SIGN",
    )
    expect(
        raw.create_key,
        "ValidationException",
        validation("t" * 129, "tags.1.member.tagKey", "have length less than or equal to 128"),
        Tags=[{"TagKey": "t" * 129, "TagValue": "v"}],
    )


def test_every_key_reference_names_the_key(kms: Any, key: str) -> None:
    kms.create_alias(AliasName="alias/ref-test", TargetKeyId=key)
    for ref in (key, key_arn(key), "alias/ref-test", alias_arn("alias/ref-test")):
        assert kms.describe_key(KeyId=ref)["KeyMetadata"]["KeyId"] == key
        blob_ = kms.encrypt(KeyId=ref, Plaintext=b"x")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob_, KeyId=ref)["KeyId"] == key_arn(key)


def test_missing_keys_and_aliases_are_named_by_arn(kms: Any, key: str) -> None:
    missing = str(uuid.uuid4())
    for ref in (missing, key_arn(missing)):
        expect(
            kms.describe_key,
            "NotFoundException",
            f"Key '{key_arn(missing)}' does not exist",
            KeyId=ref,
        )
        expect(
            kms.encrypt,
            "NotFoundException",
            f"Key '{key_arn(missing)}' does not exist",
            KeyId=ref,
            Plaintext=b"x",
        )
    for ref in ("alias/nobody", alias_arn("alias/nobody")):
        expect(
            kms.generate_data_key,
            "NotFoundException",
            f"Alias {alias_arn('alias/nobody')} is not found.",
            KeyId=ref,
            KeySpec="AES_256",
        )
    expect(kms.describe_key, "NotFoundException", "Invalid arn arn:aws:s3", KeyId="arn:aws:s3")
    # A key ARN of another account or region is not one of ours.
    other = f"arn:aws:kms:eu-west-1:111122223333:key/{missing}"
    assert failure(kms.describe_key, KeyId=other)["code"] == "NotFoundException"
    # `key/alias/<name>` in a key ARN names no key: it is not read as the (existing) alias.
    kms.create_alias(AliasName="alias/not-a-key-id", TargetKeyId=key)
    weird = f"{ARN_PREFIX}key/alias/not-a-key-id"
    expect(
        kms.encrypt,
        "NotFoundException",
        f"Key '{key_arn('alias/not-a-key-id')}' does not exist",
        KeyId=weird,
        Plaintext=b"x",
    )


def test_update_key_description(kms: Any, key: str) -> None:
    assert kms.update_key_description(KeyId=key, Description="new words")
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["Description"] == "new words"
    kms.update_key_description(KeyId=key, Description="")
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["Description"] == ""


# -- encrypt, decrypt, data keys -----------------------------------------------------------------


def test_encrypt_decrypt_round_trip(kms: Any, key: str) -> None:
    context = {"bucket": "b1", "object": "k/ey"}
    out = kms.encrypt(KeyId=key, Plaintext=b"attack at dawn", EncryptionContext=context)
    assert out["KeyId"] == key_arn(key)
    assert out["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    ciphertext = out["CiphertextBlob"]
    assert b"attack" not in ciphertext
    assert blob.decode(ciphertext).key_id == key  # the ciphertext names its key

    # No KeyId: the ciphertext says which key; the right KeyId in any form also works.
    for extra in ({}, {"KeyId": key}, {"KeyId": key_arn(key)}):
        got = kms.decrypt(CiphertextBlob=ciphertext, EncryptionContext=context, **extra)
        assert got["Plaintext"] == b"attack at dawn"
        assert got["KeyId"] == key_arn(key)
        assert got["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    # The same plaintext encrypts differently each time.
    again = kms.encrypt(KeyId=key, Plaintext=b"attack at dawn", EncryptionContext=context)
    assert again["CiphertextBlob"] != ciphertext


def test_decrypt_with_another_key_id_is_incorrect_key(kms: Any, key: str) -> None:
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    ciphertext = kms.encrypt(KeyId=key, Plaintext=b"data")["CiphertextBlob"]
    for ref in (other, key_arn(other)):
        expect(kms.decrypt, "IncorrectKeyException", CiphertextBlob=ciphertext, KeyId=ref)


def test_decryption_failures_are_one_error_without_a_message(
    srv: KmsThread, kms: Any, key: str
) -> None:
    context = {"purpose": "test"}
    good = kms.encrypt(KeyId=key, Plaintext=b"secret", EncryptionContext=context)["CiphertextBlob"]
    tampered = bytearray(good)
    tampered[-1] ^= 1
    header_flip = bytearray(good)
    header_flip[8] ^= 1  # inside the key id: another (missing) key
    cases: list[dict[str, Any]] = [
        {"CiphertextBlob": good, "EncryptionContext": {"purpose": "other"}},
        {"CiphertextBlob": good},  # context missing
        {"CiphertextBlob": good, "EncryptionContext": {**context, "extra": "x"}},
        {"CiphertextBlob": bytes(tampered), "EncryptionContext": context},
        {"CiphertextBlob": bytes(header_flip), "EncryptionContext": context},
        {"CiphertextBlob": good[:-1], "EncryptionContext": context},
        {"CiphertextBlob": good[:20], "EncryptionContext": context},
        {"CiphertextBlob": b"garbage that is no ciphertext at all"},
        {"CiphertextBlob": b"S3KC"},
    ]
    for params in cases:
        got = failure(kms.decrypt, **params)
        assert got["code"] == "InvalidCiphertextException", params
        assert got["status"] == 400
        assert not got["message"]
    # On the wire: status 400 and a body with `__type` and nothing else.
    for ciphertext in (bytes(tampered), b"garbage"):
        resp = post(
            srv, "TrentService.Decrypt", json.dumps({"CiphertextBlob": b64(ciphertext)}).encode()
        )
        assert resp.status_code == 400
        assert resp.headers["content-type"] == "application/x-amz-json-1.1"
        assert resp.json() == {"__type": "InvalidCiphertextException"}


@pytest.mark.parametrize(
    ("params", "size"),
    [({"KeySpec": "AES_256"}, 32), ({"KeySpec": "AES_128"}, 16), ({"NumberOfBytes": 7}, 7),
     ({"NumberOfBytes": 1}, 1), ({"NumberOfBytes": 1024}, 1024)],
)  # fmt: skip
def test_generate_data_key(kms: Any, key: str, params: dict[str, Any], size: int) -> None:
    context = {"k": "v"}
    out = kms.generate_data_key(KeyId=key, EncryptionContext=context, **params)
    assert out["KeyId"] == key_arn(key)
    assert len(out["Plaintext"]) == size
    back = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext=context)
    assert back["Plaintext"] == out["Plaintext"]
    other = kms.generate_data_key(KeyId=key, EncryptionContext=context, **params)
    if size >= 16:
        assert other["Plaintext"] != out["Plaintext"]

    bare = kms.generate_data_key_without_plaintext(KeyId=key, EncryptionContext=context, **params)
    assert "Plaintext" not in bare
    assert bare["KeyId"] == key_arn(key)
    assert (
        len(
            kms.decrypt(CiphertextBlob=bare["CiphertextBlob"], EncryptionContext=context)[
                "Plaintext"
            ]
        )
        == size
    )


def test_generate_data_key_needs_exactly_one_size(raw: Any, key: str) -> None:
    for call in (raw.generate_data_key, raw.generate_data_key_without_plaintext):
        expect(call, "ValidationException", KeyId=key)
        expect(call, "ValidationException", KeyId=key, KeySpec="AES_256", NumberOfBytes=32)
        expect(
            call,
            "ValidationException",
            validation("AES_512", "keySpec", "satisfy enum value set: [AES_256, AES_128]"),
            KeyId=key,
            KeySpec="AES_512",
        )
        expect(
            call,
            "ValidationException",
            validation("1025", "numberOfBytes", "have value less than or equal to 1024"),
            KeyId=key,
            NumberOfBytes=1025,
        )
        expect(
            call,
            "ValidationException",
            validation("0", "numberOfBytes", "have value greater than or equal to 1"),
            KeyId=key,
            NumberOfBytes=0,
        )


def test_validation_maxima_reach_the_server(raw: Any, key: str) -> None:
    expect(
        raw.encrypt,
        "ValidationException",
        validation(None, "plaintext", "have length less than or equal to 4096"),
        KeyId=key,
        Plaintext=b"x" * 4097,
    )
    assert raw.encrypt(KeyId=key, Plaintext=b"x" * 4096)["KeyId"] == key_arn(key)
    expect(
        raw.encrypt,
        "ValidationException",
        validation(None, "plaintext", "have length greater than or equal to 1"),
        KeyId=key,
        Plaintext=b"",
    )
    expect(
        raw.decrypt,
        "ValidationException",
        validation(None, "ciphertextBlob", "have length less than or equal to 6144"),
        CiphertextBlob=b"x" * 6145,
    )
    long_id = "k" * 2049
    expect(
        raw.describe_key,
        "ValidationException",
        validation(long_id, "keyId", "have length less than or equal to 2048"),
        KeyId=long_id,
    )
    expect(
        raw.list_keys,
        "ValidationException",
        validation("1001", "limit", "have value less than or equal to 1000"),
        Limit=1001,
    )
    expect(
        raw.encrypt,
        "ValidationException",
        validation(
            "FOO",
            "encryptionAlgorithm",
            "satisfy enum value set: [SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, SM2PKE]",
        ),
        KeyId=key,
        Plaintext=b"x",
        EncryptionAlgorithm="FOO",
    )
    tokens = [f"t{i}" for i in range(11)]
    got = failure(raw.encrypt, KeyId=key, Plaintext=b"x", GrantTokens=tokens)
    assert got["code"] == "ValidationException"
    assert "at 'grantTokens'" in got["message"] and "less than or equal to 10" in got["message"]


def test_a_symmetric_key_takes_symmetric_default_only(kms: Any, key: str) -> None:
    ok = kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionAlgorithm="SYMMETRIC_DEFAULT")
    plain = kms.decrypt(
        CiphertextBlob=ok["CiphertextBlob"], EncryptionAlgorithm="SYMMETRIC_DEFAULT"
    )
    assert plain["Plaintext"] == b"x"
    expect(
        kms.encrypt,
        "InvalidKeyUsageException",
        "Algorithm RSAES_OAEP_SHA_256 is incompatible with key spec SYMMETRIC_DEFAULT.",
        KeyId=key,
        Plaintext=b"x",
        EncryptionAlgorithm="RSAES_OAEP_SHA_256",
    )
    expect(
        kms.decrypt,
        "ValidationException",
        "KeyId is required to decrypt with RSAES_OAEP_SHA_1",
        CiphertextBlob=ok["CiphertextBlob"],
        EncryptionAlgorithm="RSAES_OAEP_SHA_1",
    )


def test_the_backend_refuses_key_specs_it_cannot_hold(raw: Any, backend: str) -> None:
    # Transit has no secp256k1 (tests/test_key_types.py checks every spec on both backends).
    if backend == "local":
        made = raw.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
        assert made["SigningAlgorithms"] == ["ECDSA_SHA_256"]
        return
    expect(
        raw.create_key,
        "UnsupportedOperationException",
        "KeySpec ECC_SECG_P256K1 is not supported by the vault backend",
        KeySpec="ECC_SECG_P256K1",
        KeyUsage="SIGN_VERIFY",
    )


def test_grant_tokens_are_accepted_and_ignored(kms: Any, key: str) -> None:
    out = kms.encrypt(KeyId=key, Plaintext=b"x", GrantTokens=["token-1", "token-2"])
    back = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], GrantTokens=["token-1"])
    assert back["Plaintext"] == b"x"
    assert kms.generate_data_key(KeyId=key, NumberOfBytes=8, GrantTokens=["t"])["Plaintext"]


def test_dry_run(kms: Any, key: str) -> None:
    expect(kms.encrypt, "DryRunOperationException", KeyId=key, Plaintext=b"x", DryRun=True)
    expect(
        kms.generate_data_key, "DryRunOperationException", KeyId=key, NumberOfBytes=8, DryRun=True
    )
    ciphertext = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    expect(kms.decrypt, "DryRunOperationException", CiphertextBlob=ciphertext, DryRun=True)
    kms.disable_key(KeyId=key)
    expect(kms.encrypt, "DisabledException", KeyId=key, Plaintext=b"x", DryRun=True)


def test_re_encrypt(kms: Any, key: str) -> None:
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    ciphertext = kms.encrypt(KeyId=key, Plaintext=b"move me", EncryptionContext={"a": "1"})[
        "CiphertextBlob"
    ]
    out = kms.re_encrypt(
        CiphertextBlob=ciphertext,
        SourceEncryptionContext={"a": "1"},
        DestinationKeyId=other,
        DestinationEncryptionContext={"b": "2"},
    )
    assert out["SourceKeyId"] == key_arn(key)
    assert out["KeyId"] == key_arn(other)
    assert blob.decode(out["CiphertextBlob"]).key_id == other
    back = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"b": "2"})
    assert back == {**back, "Plaintext": b"move me", "KeyId": key_arn(other)}
    expect(
        kms.re_encrypt,
        "IncorrectKeyException",
        CiphertextBlob=ciphertext,
        SourceEncryptionContext={"a": "1"},
        SourceKeyId=other,
        DestinationKeyId=other,
    )
    expect(
        kms.re_encrypt,
        "InvalidCiphertextException",
        CiphertextBlob=ciphertext,
        SourceEncryptionContext={"a": "wrong"},
        DestinationKeyId=other,
    )
    kms.disable_key(KeyId=other)
    expect(
        kms.re_encrypt,
        "DisabledException",
        f"{key_arn(other)} is disabled.",
        CiphertextBlob=ciphertext,
        SourceEncryptionContext={"a": "1"},
        DestinationKeyId=other,
    )


def test_generate_random(kms: Any, raw: Any) -> None:
    for size in (1, 32, 1024):
        assert len(kms.generate_random(NumberOfBytes=size)["Plaintext"]) == size
    assert kms.generate_random(NumberOfBytes=32) != kms.generate_random(NumberOfBytes=32)
    expect(
        raw.generate_random,
        "ValidationException",
        validation("1025", "numberOfBytes", "have value less than or equal to 1024"),
        NumberOfBytes=1025,
    )
    expect(raw.generate_random, "ValidationException", NumberOfBytes=0)
    expect(raw.generate_random, "ValidationException")


# -- the key state machine -----------------------------------------------------------------------


def crypto_calls(
    kms: Any, key_ref: str, ciphertext: bytes
) -> list[tuple[Callable[..., Any], dict[str, Any]]]:
    return [
        (kms.encrypt, {"KeyId": key_ref, "Plaintext": b"x"}),
        (kms.decrypt, {"CiphertextBlob": ciphertext}),
        (kms.generate_data_key, {"KeyId": key_ref, "KeySpec": "AES_256"}),
        (kms.generate_data_key_without_plaintext, {"KeyId": key_ref, "NumberOfBytes": 16}),
        (kms.re_encrypt, {"CiphertextBlob": ciphertext, "DestinationKeyId": key_ref}),
    ]


def test_disabled_key_refuses_crypto(kms: Any, key: str) -> None:
    ciphertext = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    assert kms.disable_key(KeyId=key_arn(key))["ResponseMetadata"]["HTTPStatusCode"] == 200
    meta = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert (meta["KeyState"], meta["Enabled"]) == ("Disabled", False)
    for call, params in crypto_calls(kms, key, ciphertext):
        expect(call, "DisabledException", f"{key_arn(key)} is disabled.", **params)
    expect(kms.rotate_key_on_demand, "DisabledException", KeyId=key)
    expect(kms.enable_key_rotation, "DisabledException", KeyId=key)
    kms.disable_key(KeyId=key)  # disabling a disabled key changes nothing
    kms.enable_key(KeyId=key)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    assert kms.decrypt(CiphertextBlob=ciphertext)["Plaintext"] == b"x"


def test_pending_deletion_and_cancel(kms: Any, key: str) -> None:
    ciphertext = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    before = time.time()
    out = kms.schedule_key_deletion(KeyId=key)
    assert out["KeyId"] == key_arn(key)
    assert out["KeyState"] == "PendingDeletion"
    assert out["PendingWindowInDays"] == 30
    deletion = out["DeletionDate"].timestamp()
    assert before + 30 * DAY - 2 <= deletion <= time.time() + 30 * DAY + 1
    meta = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion" and meta["Enabled"] is False
    assert meta["PendingDeletionWindowInDays"] == 30
    assert meta["DeletionDate"].timestamp() == deletion

    pending = f"{key_arn(key)} is pending deletion."
    for call, params in crypto_calls(kms, key, ciphertext):
        expect(call, "KMSInvalidStateException", pending, **params)
    for call in (kms.enable_key, kms.disable_key, kms.schedule_key_deletion):
        expect(call, "KMSInvalidStateException", pending, KeyId=key)
    expect(
        kms.tag_resource,
        "KMSInvalidStateException",
        KeyId=key,
        Tags=[{"TagKey": "a", "TagValue": "b"}],
    )
    expect(
        kms.create_alias, "KMSInvalidStateException", AliasName="alias/to-pending", TargetKeyId=key
    )

    assert kms.cancel_key_deletion(KeyId=key)["KeyId"] == key_arn(key)
    meta = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert meta["KeyState"] == "Disabled"
    assert "DeletionDate" not in meta and "PendingDeletionWindowInDays" not in meta
    expect(kms.encrypt, "DisabledException", KeyId=key, Plaintext=b"x")
    expect(kms.cancel_key_deletion, "KMSInvalidStateException", KeyId=key)
    kms.enable_key(KeyId=key)
    assert kms.decrypt(CiphertextBlob=ciphertext)["Plaintext"] == b"x"


def test_deletion_window_is_7_to_30_days(kms: Any, key: str) -> None:
    for days in (6, 31):
        expect(
            kms.schedule_key_deletion,
            "ValidationException",
            NOT_PENDING_MESSAGE,
            KeyId=key,
            PendingWindowInDays=days,
        )
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    for days in (7, 30):
        other = kms.create_key()["KeyMetadata"]["KeyId"]
        assert (
            kms.schedule_key_deletion(KeyId=other, PendingWindowInDays=days)["PendingWindowInDays"]
            == days
        )


def test_due_key_is_deleted_by_the_maintenance_pass(own_srv: KmsThread) -> None:
    kms = boto_kms(own_srv)
    doomed = kms.create_key()["KeyMetadata"]["KeyId"]
    kept = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/doomed", TargetKeyId=doomed)
    ciphertext = kms.encrypt(KeyId=doomed, Plaintext=b"x")["CiphertextBlob"]
    kms.schedule_key_deletion(KeyId=doomed, PendingWindowInDays=7)
    kms.schedule_key_deletion(KeyId=kept, PendingWindowInDays=30)
    service = own_srv.app.runtime.service
    assert own_srv.run(service.run_due_work()) == (0, 0)  # nothing due yet
    own_srv.clock.offset += 8 * DAY
    try:
        assert own_srv.run(service.run_due_work()) == (1, 0)
    finally:
        own_srv.clock.offset = 0  # boto3 signs with the real time
    expect(
        kms.describe_key,
        "NotFoundException",
        f"Key '{key_arn(doomed)}' does not exist",
        KeyId=doomed,
    )
    expect(kms.cancel_key_deletion, "NotFoundException", KeyId=doomed)
    expect(kms.describe_key, "NotFoundException", KeyId="alias/doomed")
    assert kms.list_aliases()["Aliases"] == []
    assert [k["KeyId"] for k in kms.list_keys()["Keys"]] == [kept]
    assert kms.describe_key(KeyId=kept)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    expect(kms.decrypt, "InvalidCiphertextException", CiphertextBlob=ciphertext)


# -- rotation ------------------------------------------------------------------------------------


def test_rotate_on_demand_changes_the_material(kms: Any, key: str) -> None:
    assert kms.list_key_rotations(KeyId=key)["Rotations"] == []
    old = kms.encrypt(KeyId=key, Plaintext=b"old")["CiphertextBlob"]
    before = time.time()
    assert kms.rotate_key_on_demand(KeyId=key)["KeyId"] == key_arn(key)
    new = kms.encrypt(KeyId=key, Plaintext=b"new")["CiphertextBlob"]
    assert blob.decode(old).key_version == 1
    assert blob.decode(new).key_version == 2
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"old"
    assert kms.decrypt(CiphertextBlob=new)["Plaintext"] == b"new"
    # Version 2 is a different AES key: version 1's sealed bytes do not open under it.
    forged = blob.Blob(key, 2, blob.decode(old).sealed).encode()
    expect(kms.decrypt, "InvalidCiphertextException", CiphertextBlob=forged)
    rotations = kms.list_key_rotations(KeyId=key)
    assert rotations["Truncated"] is False
    [entry] = rotations["Rotations"]
    assert entry["KeyId"] == key and entry["RotationType"] == "ON_DEMAND"
    assert before - 2 <= entry["RotationDate"].timestamp() <= time.time() + 1
    kms.rotate_key_on_demand(KeyId=key)
    kms.rotate_key_on_demand(KeyId=key)
    first = kms.list_key_rotations(KeyId=key, Limit=2)
    assert len(first["Rotations"]) == 2 and first["Truncated"] is True
    rest = kms.list_key_rotations(KeyId=key, Limit=2, Marker=first["NextMarker"])
    assert len(rest["Rotations"]) == 1 and rest["Truncated"] is False
    assert blob.decode(kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]).key_version == 4


def test_automatic_rotation(own_srv: KmsThread) -> None:
    kms = boto_kms(own_srv)
    raw = boto_kms(own_srv, validate=False)
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    status = kms.get_key_rotation_status(KeyId=key)
    assert status["KeyRotationEnabled"] is False and status["KeyId"] == key_arn(key)
    assert "NextRotationDate" not in status
    for days, rule in ((89, "greater than or equal to 90"), (2561, "less than or equal to 2560")):
        expect(
            raw.enable_key_rotation,
            "ValidationException",
            validation(str(days), "rotationPeriodInDays", f"have value {rule}"),
            KeyId=key,
            RotationPeriodInDays=days,
        )
    before = time.time()
    kms.enable_key_rotation(KeyId=key, RotationPeriodInDays=90)
    status = kms.get_key_rotation_status(KeyId=key)
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 90
    due = status["NextRotationDate"].timestamp()
    assert before + 90 * DAY - 2 <= due <= time.time() + 90 * DAY + 1
    old = kms.encrypt(KeyId=key, Plaintext=b"old")["CiphertextBlob"]

    service = own_srv.app.runtime.service
    own_srv.clock.offset += 89 * DAY
    try:
        assert own_srv.run(service.run_due_work()) == (0, 0)
        own_srv.clock.offset += 2 * DAY
        assert own_srv.run(service.run_due_work()) == (0, 1)
    finally:
        own_srv.clock.offset = 0
    [entry] = kms.list_key_rotations(KeyId=key)["Rotations"]
    assert entry["RotationType"] == "AUTOMATIC"
    new = kms.encrypt(KeyId=key, Plaintext=b"new")["CiphertextBlob"]
    assert blob.decode(new).key_version == 2
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"old"
    later = kms.get_key_rotation_status(KeyId=key)["NextRotationDate"].timestamp()
    assert later > due + 89 * DAY

    kms.disable_key_rotation(KeyId=key)
    status = kms.get_key_rotation_status(KeyId=key)
    assert status["KeyRotationEnabled"] is False and "NextRotationDate" not in status


# -- aliases -------------------------------------------------------------------------------------


def test_aliases(kms: Any, key: str) -> None:
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/app/orders", TargetKeyId=key_arn(key))
    expect(
        kms.create_alias,
        "AlreadyExistsException",
        f"An alias with the name {alias_arn('alias/app/orders')} already exists",
        AliasName="alias/app/orders",
        TargetKeyId=other,
    )
    [listed] = kms.list_aliases(KeyId=key)["Aliases"]
    created = listed.pop("CreationDate").timestamp()
    assert abs(created - time.time()) < 60
    assert listed == {
        "AliasName": "alias/app/orders",
        "AliasArn": alias_arn("alias/app/orders"),
        "TargetKeyId": key,
    }
    out = kms.encrypt(KeyId="alias/app/orders", Plaintext=b"x")
    assert out["KeyId"] == key_arn(key)

    kms.update_alias(AliasName="alias/app/orders", TargetKeyId=other)
    assert kms.encrypt(KeyId="alias/app/orders", Plaintext=b"x")["KeyId"] == key_arn(other)
    assert kms.list_aliases(KeyId=key)["Aliases"] == []
    assert [a["AliasName"] for a in kms.list_aliases(KeyId=other)["Aliases"]] == [
        "alias/app/orders"
    ]

    kms.delete_alias(AliasName="alias/app/orders")
    missing = f"Alias {alias_arn('alias/app/orders')} is not found."
    expect(kms.delete_alias, "NotFoundException", missing, AliasName="alias/app/orders")
    expect(kms.encrypt, "NotFoundException", missing, KeyId="alias/app/orders", Plaintext=b"x")
    expect(
        kms.update_alias,
        "NotFoundException",
        missing,
        AliasName="alias/app/orders",
        TargetKeyId=key,
    )
    expect(
        kms.create_alias,
        "NotFoundException",
        AliasName="alias/nokey",
        TargetKeyId=str(uuid.uuid4()),
    )


@pytest.mark.parametrize(
    ("name", "code", "message"),
    [
        ("orders", "ValidationException",
         'Alias must start with the prefix "alias/". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html'),
        ("alias/aws/s3", "NotAuthorizedException", None),
        ("alias/has space", "ValidationException",
         validation("alias/has space", "aliasName", "satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$")),
        ("alias/" + "a" * 251, "ValidationException",
         validation("alias/" + "a" * 251, "aliasName", "have length less than or equal to 256")),
    ],
)  # fmt: skip
def test_alias_names(raw: Any, key: str, name: str, code: str, message: str | None) -> None:
    expect(raw.create_alias, code, message, AliasName=name, TargetKeyId=key)
    assert raw.list_aliases(KeyId=key)["Aliases"] == []


def test_alias_must_target_a_key(kms: Any, key: str) -> None:
    kms.create_alias(AliasName="alias/first", TargetKeyId=key)
    for target in ("alias/first", alias_arn("alias/first")):
        expect(
            kms.create_alias, "ValidationException", AliasName="alias/second", TargetKeyId=target
        )


def test_list_aliases_pages(own_srv: KmsThread) -> None:
    kms = boto_kms(own_srv)
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    names = [f"alias/page-{i}" for i in range(5)]
    for name in names:
        kms.create_alias(AliasName=name, TargetKeyId=key)
    seen: list[str] = []
    marker: dict[str, str] = {}
    while True:
        page = kms.list_aliases(Limit=2, **marker)
        assert len(page["Aliases"]) <= 2
        seen += [a["AliasName"] for a in page["Aliases"]]
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = {"Marker": page["NextMarker"]}
    assert seen == names
    expect(kms.list_aliases, "InvalidMarkerException", Marker="not-a-marker")


# -- listing keys --------------------------------------------------------------------------------


def test_list_keys_pages_through_the_keystore(own_srv: KmsThread) -> None:
    kms = boto_kms(own_srv)
    store = own_srv.app.runtime.service.store
    pages: list[tuple[str | None, int]] = []
    read_page = store.list_keys

    async def recording(*, after: str | None, limit: int, prefix: str = "") -> Any:
        pages.append((after, limit))
        return await read_page(after=after, limit=limit, prefix=prefix)

    store.list_keys = recording  # type: ignore[method-assign]  # observe: pages, never all keys
    created = {kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(4)}
    with Client(own_srv.url, ROOT_USER, ROOT_PASSWORD) as admin:
        created.add(admin.create_key("admin-made").key_id)
    first = kms.list_keys(Limit=2)
    assert len(first["Keys"]) == 2 and first["Truncated"] is True
    second = kms.list_keys(Limit=2, Marker=first["NextMarker"])
    assert len(second["Keys"]) == 2 and second["Truncated"] is True
    third = kms.list_keys(Limit=2, Marker=second["NextMarker"])
    assert len(third["Keys"]) == 1 and third["Truncated"] is False
    assert "NextMarker" not in third
    listed = first["Keys"] + second["Keys"] + third["Keys"]
    assert [k["KeyId"] for k in listed] == sorted(created)
    # Each page read the keystore once, for one page (and one key more, to know if there is more).
    ids = [k["KeyId"] for k in listed]
    assert pages == [(None, 3), (ids[1], 3), (ids[3], 3)]
    assert all(k["KeyArn"] == key_arn(k["KeyId"]) for k in listed)
    everything = kms.list_keys()
    assert everything["Truncated"] is False and len(everything["Keys"]) == 5

    expect(kms.list_keys, "InvalidMarkerException", Marker="garbage")
    expect(kms.list_keys, "InvalidMarkerException", Marker=base64.b64encode(b"nonsense").decode())
    # A marker from another listing is not a ListKeys marker.
    key = sorted(created)[0]
    for i in range(3):
        kms.create_alias(AliasName=f"alias/m{i}", TargetKeyId=key)
    alias_marker = kms.list_aliases(Limit=1)["NextMarker"]
    expect(kms.list_keys, "InvalidMarkerException", Marker=alias_marker)


# -- tags ----------------------------------------------------------------------------------------


def test_tags(kms: Any, raw: Any, key: str) -> None:
    kms.tag_resource(
        KeyId=key, Tags=[{"TagKey": "b", "TagValue": "2"}, {"TagKey": "a", "TagValue": "1"}]
    )
    kms.tag_resource(
        KeyId=key_arn(key),
        Tags=[{"TagKey": "b", "TagValue": "two"}, {"TagKey": "c", "TagValue": ""}],
    )
    tags = kms.list_resource_tags(KeyId=key)
    assert tags["Tags"] == [
        {"TagKey": "a", "TagValue": "1"},
        {"TagKey": "b", "TagValue": "two"},
        {"TagKey": "c", "TagValue": ""},
    ]
    assert tags["Truncated"] is False
    page = kms.list_resource_tags(KeyId=key, Limit=2)
    assert [t["TagKey"] for t in page["Tags"]] == ["a", "b"] and page["Truncated"] is True
    rest = kms.list_resource_tags(KeyId=key, Limit=2, Marker=page["NextMarker"])
    assert [t["TagKey"] for t in rest["Tags"]] == ["c"]
    kms.untag_resource(KeyId=key, TagKeys=["a", "c", "never-set"])
    assert kms.list_resource_tags(KeyId=key)["Tags"] == [{"TagKey": "b", "TagValue": "two"}]
    expect(kms.tag_resource, "TagException", KeyId=key, Tags=[{"TagKey": "AWS:x", "TagValue": "y"}])
    expect(
        raw.tag_resource,
        "ValidationException",
        validation("v" * 257, "tags.1.member.tagValue", "have length less than or equal to 256"),
        KeyId=key,
        Tags=[{"TagKey": "k", "TagValue": "v" * 257}],
    )
    expect(
        kms.tag_resource,
        "NotFoundException",
        KeyId=str(uuid.uuid4()),
        Tags=[{"TagKey": "a", "TagValue": "b"}],
    )


# -- one key set with the admin API --------------------------------------------------------------


def test_admin_and_aws_apis_share_one_key_set(srv: KmsThread, kms: Any) -> None:
    with Client(srv.url, ROOT_USER, ROOT_PASSWORD) as admin:
        admin.create_key("shared-app-key")
        kms.create_alias(AliasName="alias/shared", TargetKeyId="shared-app-key")
        for ref in ("shared-app-key", key_arn("shared-app-key"), "alias/shared"):
            out = kms.encrypt(KeyId=ref, Plaintext=b"both", EncryptionContext={"c": "1"})
            assert out["KeyId"] == key_arn("shared-app-key")
            # ...and the admin client's own AWS call decrypts it.
            assert admin.decrypt(out["CiphertextBlob"], {"c": "1"}) == b"both"
        assert kms.describe_key(KeyId="shared-app-key")["KeyMetadata"]["Arn"] == key_arn(
            "shared-app-key"
        )

        boto_made = kms.create_key()["KeyMetadata"]["KeyId"]
        assert boto_made in {k.key_id for k in admin.list_keys()}
        assert admin.key_status(boto_made).status == "enabled"

        admin.disable_key("shared-app-key")
        expect(kms.encrypt, "DisabledException", KeyId="alias/shared", Plaintext=b"x")
        kms.enable_key(KeyId="shared-app-key")
        assert admin.key_status("shared-app-key").status == "enabled"


# -- the protocol --------------------------------------------------------------------------------


def test_protocol_errors_are_client_errors(srv: KmsThread) -> None:
    cases = [
        (None, b"{}", "UnknownOperationException"),
        ("TrentService.NoSuchThing", b"{}", "UnknownOperationException"),
        ("Other.ListKeys", b"{}", "UnknownOperationException"),
        ("TrentService.ImportKeyMaterial", b"{}", "ValidationException"),  # (served: KeyId)
        ("TrentService.ListKeys", b"{not json", "SerializationException"),
        ("TrentService.ListKeys", b"[1, 2]", "SerializationException"),
        ("TrentService.ListKeys", b"\xff\xfe", "SerializationException"),
        ("TrentService.ListKeys", b"[" * 100_000, "SerializationException"),
        ("TrentService.DescribeKey", b'{"KeyId": 5}', "SerializationException"),
        ("TrentService.ListKeys", b'{"Limit": "10"}', "SerializationException"),
        ("TrentService.Decrypt", b'{"CiphertextBlob": "not base64!"}', "SerializationException"),
        ("TrentService.Decrypt", b'{"CiphertextBlob": 12}', "SerializationException"),
        ("TrentService.Encrypt", b'{"KeyId": "k", "Plaintext": "eA==", "EncryptionContext": {"a": 1}}', "SerializationException"),
        ("TrentService.DescribeKey", b"{}", "ValidationException"),
    ]  # fmt: skip
    for target, body, kind in cases:
        resp = post(srv, target, body)
        assert resp.status_code == 400, (target, body[:40], resp.text)
        assert resp.headers["content-type"] == "application/x-amz-json-1.1"
        payload = resp.json()
        assert payload["__type"] == kind, (target, body[:40], payload)
        assert set(payload) == {"__type", "message"} and payload["message"]
    missing = post(srv, "TrentService.DescribeKey", b"{}").json()["message"]
    assert (
        missing
        == "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null"
    )
    # An empty body is an empty request.
    listed = post(srv, "TrentService.ListKeys", b"")
    assert listed.status_code == 200 and set(listed.json()) >= {"Keys", "Truncated"}


def test_auth_failures_reach_boto3_as_aws_errors(srv: KmsThread) -> None:
    bad = boto_kms(srv, secret="not-the-secret")
    expect(bad.list_keys, "InvalidSignatureException")
    unknown = boto3.client(
        "kms", endpoint_url=srv.url, region_name=REGION,
        aws_access_key_id="AKIDUNKNOWN", aws_secret_access_key="x",
    )  # fmt: skip
    expect(unknown.list_keys, "UnrecognizedClientException")
    resp = httpx.post(
        srv.url + "/", headers={"x-amz-target": "TrentService.ListKeys"}, content=b"{}"
    )
    assert resp.status_code == 400
    assert resp.json()["__type"] == "MissingAuthenticationTokenException"


def test_the_server_runs_the_backend_asked_for(srv: KmsThread, backend: str) -> None:
    with Client(srv.url, ROOT_USER, ROOT_PASSWORD) as admin:
        assert admin.status().kms_type == backend
