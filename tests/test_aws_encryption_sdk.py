"""The AWS Encryption SDK (v4) encrypting and decrypting through s3kms as its KMS.

The SDK finds s3kms through the environment (`AWS_ENDPOINT_URL_KMS` and credentials), exactly as an
application would. Both backends: the Local keystore, and Vault transit on a real OpenBao (the
session's `bao` server, or the external Vault named by S3KMS_TEST_VAULT_ADDR).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aws_encryption_sdk
import boto3
import botocore.session
import pytest
from aws_encryption_sdk import CommitmentPolicy, StrictAwsKmsMasterKeyProvider
from aws_encryption_sdk.exceptions import DecryptKeyError

from s3kms.config import Settings
from s3kms.keystore.vault import VaultSettings

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsThread, thread_settings

REGION = "us-east-1"
MESSAGE = b"the quarterly numbers, encrypted client-side" * 20
CONTEXT = {"purpose": "s3kms-test", "tenant": "t-42"}


@pytest.fixture(params=["local", "vault"])
def kms_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "local":
        return thread_settings(tmp_path / "data", backend="local")
    bao = request.getfixturevalue("bao")  # a real OpenBao (or the external Vault)
    vault = VaultSettings(
        addresses=(bao.addr,),
        token=bao.root_token,
        kv_prefix=f"esdk-{uuid.uuid4().hex[:12]}",  # the server is shared between tests
    )
    return thread_settings(tmp_path / "data", backend="vault", vault=vault)


@pytest.fixture
def kms_url(kms_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A running s3kms, and an environment that points every AWS KMS client at it."""
    server = KmsThread(kms_settings).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ROOT_USER)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ROOT_PASSWORD)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    yield server.url
    server.stop()


@pytest.fixture
def kms(kms_url: str) -> Any:
    return boto3.client("kms")  # endpoint, credentials and region from the environment


def provider_for(key_arn: str) -> StrictAwsKmsMasterKeyProvider:
    return StrictAwsKmsMasterKeyProvider(
        key_ids=[key_arn], botocore_session=botocore.session.Session()
    )


def test_round_trip_through_s3kms(kms: Any) -> None:
    key_arn = kms.create_key(Description="encryption sdk")["KeyMetadata"]["Arn"]
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    ciphertext, header = client.encrypt(
        source=MESSAGE, key_provider=provider_for(key_arn), encryption_context=CONTEXT
    )
    assert MESSAGE not in ciphertext
    # The data key was wrapped by s3kms: the message carries an s3kms ciphertext blob for the key.
    [edk] = header.encrypted_data_keys
    assert edk.key_provider.provider_id == "aws-kms"
    assert edk.key_provider.key_info.decode() == key_arn
    assert edk.encrypted_data_key.startswith(b"S3KC\x01")

    # A fresh provider (nothing cached) decrypts it through s3kms again.
    plaintext, decrypted_header = client.decrypt(
        source=ciphertext, key_provider=provider_for(key_arn)
    )
    assert plaintext == MESSAGE
    assert {k: decrypted_header.encryption_context[k] for k in CONTEXT} == CONTEXT

    # The wrapped data key is an ordinary s3kms ciphertext, bound to the message's context.
    direct = kms.decrypt(
        CiphertextBlob=edk.encrypted_data_key,
        EncryptionContext=dict(decrypted_header.encryption_context),
    )
    assert direct["KeyId"] == key_arn


def test_disabled_key_makes_decrypt_fail(kms: Any) -> None:
    key_arn = kms.create_key()["KeyMetadata"]["Arn"]
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    ciphertext, _ = client.encrypt(
        source=MESSAGE, key_provider=provider_for(key_arn), encryption_context=CONTEXT
    )
    kms.disable_key(KeyId=key_arn)
    with pytest.raises(DecryptKeyError):
        client.decrypt(source=ciphertext, key_provider=provider_for(key_arn))
    # The key's state was the only reason: enabled again, the same message decrypts.
    kms.enable_key(KeyId=key_arn)
    plaintext, _ = client.decrypt(source=ciphertext, key_provider=provider_for(key_arn))
    assert plaintext == MESSAGE
