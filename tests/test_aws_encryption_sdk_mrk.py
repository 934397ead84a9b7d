"""The AWS Encryption SDK's multi-Region-key-aware providers across two regions of one s3kms.

A message encrypted under a multi-Region key in us-east-1 decrypts in eu-west-1 through the
replica's ARN, as AWS documents for MRKs: the SDK's MRK-aware master key treats the related keys
of both regions as one and calls Decrypt in its own region. Every region's KMS client the SDK
makes reaches s3kms through `AWS_ENDPOINT_URL_KMS` (the Python SDK's "client supplier" is its
botocore session), exactly as an application's would.

Both of the SDK's ways: its master key providers (`MRKAwareStrictAwsKmsMasterKeyProvider`,
`MRKAwareDiscoveryAwsKmsMasterKeyProvider`), and the keyrings of the Material Providers Library
(aws-cryptographic-material-providers: the MRK keyring, MRK multi-keyring and MRK discovery
keyring), which the SDK's keyring API runs on. Both backends: Local, and Vault transit on a real
OpenBao.
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
from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError, DecryptKeyError
from aws_encryption_sdk.key_providers.kms import (
    DiscoveryFilter,
    MRKAwareDiscoveryAwsKmsMasterKeyProvider,
    MRKAwareStrictAwsKmsMasterKeyProvider,
)

from s3kms.config import Settings
from s3kms.keystore.vault import VaultSettings

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsThread, thread_settings

HOME, EU, AP = "us-east-1", "eu-west-1", "ap-southeast-1"
ACCOUNT = "000000000000"
MESSAGE = b"replicated across regions, encrypted client-side" * 20
CONTEXT = {"purpose": "s3kms-mrk-test"}


@pytest.fixture(params=["local", pytest.param("vault", marks=pytest.mark.vault)])
def kms_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    regions = f"{EU},{AP}"
    if request.param == "local":
        return thread_settings(tmp_path / "data", backend="local", regions=regions)
    bao = request.getfixturevalue("bao")  # a real OpenBao (or the external Vault)
    vault = VaultSettings(
        addresses=(bao.addr,),
        token=bao.root_token,
        kv_prefix=f"esdk-mrk-{uuid.uuid4().hex[:12]}",  # the server is shared between tests
    )
    return thread_settings(tmp_path / "data", backend="vault", vault=vault, regions=regions)


@pytest.fixture
def kms_url(kms_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A running s3kms, and an environment that points every region's KMS client at it."""
    server = KmsThread(kms_settings).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ROOT_USER)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ROOT_PASSWORD)
    monkeypatch.setenv("AWS_DEFAULT_REGION", HOME)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    yield server.url
    server.stop()


def client_in(region: str) -> Any:
    return boto3.client("kms", region_name=region)  # endpoint and credentials: the environment


@pytest.fixture
def key_id(kms_url: str) -> str:
    """A multi-Region key with its primary in us-east-1 and its replica in eu-west-1."""
    made: str = client_in(HOME).create_key(MultiRegion=True, Description="esdk")["KeyMetadata"][
        "KeyId"
    ]
    client_in(HOME).replicate_key(KeyId=made, ReplicaRegion=EU)
    return made


def arn(region: str, key_id: str) -> str:
    return f"arn:aws:kms:{region}:{ACCOUNT}:key/{key_id}"


def sdk() -> aws_encryption_sdk.EncryptionSDKClient:
    return aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )


def strict(key_arn: str) -> MRKAwareStrictAwsKmsMasterKeyProvider:
    return MRKAwareStrictAwsKmsMasterKeyProvider(
        key_ids=[key_arn], botocore_session=botocore.session.Session()
    )


def discovery(region: str) -> MRKAwareDiscoveryAwsKmsMasterKeyProvider:
    return MRKAwareDiscoveryAwsKmsMasterKeyProvider(
        discovery_region=region,
        discovery_filter=DiscoveryFilter(account_ids=[ACCOUNT], partition="aws"),
        botocore_session=botocore.session.Session(),
    )


def encrypt(key_arn: str) -> bytes:
    ciphertext, header = sdk().encrypt(
        source=MESSAGE, key_provider=strict(key_arn), encryption_context=CONTEXT
    )
    [edk] = header.encrypted_data_keys
    assert edk.key_provider.key_info.decode() == key_arn  # the key of the encrypting region
    result: bytes = ciphertext
    return result


def test_encrypt_in_one_region_decrypt_in_the_replicas(key_id: str) -> None:
    ciphertext = encrypt(arn(HOME, key_id))
    # The primary region could answer too: disabled there, only eu-west-1 can decrypt.
    client_in(HOME).disable_key(KeyId=key_id)
    for provider in (strict(arn(EU, key_id)), discovery(EU)):
        plaintext, header = sdk().decrypt(source=ciphertext, key_provider=provider)
        assert plaintext == MESSAGE
        assert {k: header.encryption_context[k] for k in CONTEXT} == CONTEXT
    with pytest.raises(DecryptKeyError):  # (through us-east-1, where it is disabled)
        sdk().decrypt(source=ciphertext, key_provider=discovery(HOME))
    # An SDK provider that is not MRK-aware does not take the replica's ARN for the primary's.
    plain_provider = StrictAwsKmsMasterKeyProvider(
        key_ids=[arn(EU, key_id)], botocore_session=botocore.session.Session()
    )
    with pytest.raises(DecryptKeyError):
        sdk().decrypt(source=ciphertext, key_provider=plain_provider)
    client_in(HOME).enable_key(KeyId=key_id)


def test_and_the_other_way_round(key_id: str) -> None:
    ciphertext = encrypt(arn(EU, key_id))
    client_in(EU).disable_key(KeyId=key_id)
    for provider in (strict(arn(HOME, key_id)), discovery(HOME)):
        plaintext, _ = sdk().decrypt(source=ciphertext, key_provider=provider)
        assert plaintext == MESSAGE


def test_a_region_the_key_was_not_replicated_to_cannot_decrypt(key_id: str) -> None:
    ciphertext = encrypt(arn(HOME, key_id))
    with pytest.raises(DecryptKeyError):
        sdk().decrypt(source=ciphertext, key_provider=discovery(AP))
    client_in(HOME).replicate_key(KeyId=key_id, ReplicaRegion=AP)
    plaintext, _ = sdk().decrypt(source=ciphertext, key_provider=discovery(AP))
    assert plaintext == MESSAGE


def test_after_update_primary_region_and_rotation(key_id: str) -> None:
    before = encrypt(arn(HOME, key_id))
    client_in(HOME).update_primary_region(KeyId=key_id, PrimaryRegion=EU)
    client_in(EU).rotate_key_on_demand(KeyId=key_id)
    after = encrypt(arn(HOME, key_id))
    for ciphertext in (before, after):
        for provider in (strict(arn(EU, key_id)), discovery(HOME)):
            plaintext, _ = sdk().decrypt(source=ciphertext, key_provider=provider)
            assert plaintext == MESSAGE


# -- the Material Providers Library's MRK keyrings ---------------------------------------------
#
# The keyrings themselves (aws-cryptographic-material-providers, the library the SDK's keyring
# API runs on): the MRK keyring of one region, the MRK multi-keyring, and the MRK discovery
# keyring, each with a boto3 client of its region pointed at s3kms.


def mpl() -> Any:
    from aws_cryptographic_material_providers.mpl import AwsCryptographicMaterialProviders
    from aws_cryptographic_material_providers.mpl.config import MaterialProvidersConfig

    return AwsCryptographicMaterialProviders(config=MaterialProvidersConfig())


def mrk_keyring(key_arn: str, region: str) -> Any:
    from aws_cryptographic_material_providers.mpl.models import CreateAwsKmsMrkKeyringInput

    return mpl().create_aws_kms_mrk_keyring(
        input=CreateAwsKmsMrkKeyringInput(kms_key_id=key_arn, kms_client=client_in(region))
    )


def test_mrk_keyring_decrypts_in_the_replicas_region(key_id: str) -> None:
    """Encrypt with the MRK keyring of the primary in us-east-1; the MRK keyring of the replica
    in eu-west-1 decrypts (with the primary disabled, only eu-west-1 can have answered)."""
    ciphertext, _ = sdk().encrypt(
        source=MESSAGE, keyring=mrk_keyring(arn(HOME, key_id), HOME), encryption_context=CONTEXT
    )
    client_in(HOME).disable_key(KeyId=key_id)
    plaintext, header = sdk().decrypt(
        source=ciphertext, keyring=mrk_keyring(arn(EU, key_id), EU), encryption_context=CONTEXT
    )
    assert plaintext == MESSAGE
    assert header.encryption_context["purpose"] == CONTEXT["purpose"]
    # And back: what eu-west-1 encrypts, us-east-1 (enabled again) decrypts.
    client_in(HOME).enable_key(KeyId=key_id)
    ciphertext, _ = sdk().encrypt(source=MESSAGE, keyring=mrk_keyring(arn(EU, key_id), EU))
    plaintext, _ = sdk().decrypt(source=ciphertext, keyring=mrk_keyring(arn(HOME, key_id), HOME))
    assert plaintext == MESSAGE


def test_mrk_multi_and_discovery_keyrings_across_regions(key_id: str) -> None:
    from aws_cryptographic_material_providers.mpl.models import (
        CreateAwsKmsMrkDiscoveryKeyringInput,
        CreateAwsKmsMrkMultiKeyringInput,
    )
    from aws_cryptographic_material_providers.mpl.models import (
        DiscoveryFilter as MplDiscoveryFilter,
    )

    multi = mpl().create_aws_kms_mrk_multi_keyring(
        input=CreateAwsKmsMrkMultiKeyringInput(generator=arn(HOME, key_id))
    )
    ciphertext, _ = sdk().encrypt(source=MESSAGE, keyring=multi, encryption_context=CONTEXT)
    discovery_eu = mpl().create_aws_kms_mrk_discovery_keyring(
        input=CreateAwsKmsMrkDiscoveryKeyringInput(
            kms_client=client_in(EU),
            region=EU,
            discovery_filter=MplDiscoveryFilter(account_ids=[ACCOUNT], partition="aws"),
        )
    )
    client_in(HOME).disable_key(KeyId=key_id)  # only the replica can answer
    plaintext, _ = sdk().decrypt(source=ciphertext, keyring=discovery_eu)
    assert plaintext == MESSAGE
    # A region the key has no replica in finds nothing to decrypt with.
    discovery_ap = mpl().create_aws_kms_mrk_discovery_keyring(
        input=CreateAwsKmsMrkDiscoveryKeyringInput(
            kms_client=client_in(AP),
            region=AP,
            discovery_filter=MplDiscoveryFilter(account_ids=[ACCOUNT], partition="aws"),
        )
    )
    with pytest.raises(AWSEncryptionSDKClientError, match="No Configured KMS Key was able"):
        sdk().decrypt(source=ciphertext, keyring=discovery_ap)
