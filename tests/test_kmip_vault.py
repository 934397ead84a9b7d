"""The KMIP API end to end on the Vault keystore: a real s3kms server with `backend="vault"`
against a real OpenBao (the session's `bao` fixture), driven by the real PyKMIP client.

A representative round of every kind of object docs/vault.md says the Vault backend holds as a
KMIP object: AES-128/192/256 (transit's exportable keys, AES-192 sealed in KV), secret data,
opaque objects and certificates (sealed in KV), an RSA key pair (transit's rsa-2048), HMAC keys;
the operations on them (Locate, Get, Sign/SignatureVerify, MAC, Encrypt/Decrypt, Destroy), each
checked offline; and a second s3kms server on the same OpenBao and KV prefix (another node) that
sees and uses the same objects. The servers have a KV prefix of their own (the OpenBao server is
the session's).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as block_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID
from kmip.core import enums
from kmip.core import exceptions as core_exceptions
from kmip.core import objects as cobjects
from kmip.core.attributes import CryptographicParameters
from kmip.core.factories.attributes import AttributeFactory
from kmip.core.messages import payloads
from kmip.pie import exceptions
from kmip.pie import objects as pie
from kmip.pie.client import ProxyKmipClient

from s3kms.keystore.vault import VaultSettings

from kmipserver import KmipIdentity, KmipTestServer
from openbao import VaultApi

pytestmark = pytest.mark.vault

R = enums.ResultReason
A = enums.AttributeType
Alg = enums.CryptographicAlgorithm
Mask = enums.CryptographicUsageMask
Op = enums.Operation
OT = enums.ObjectType
State = enums.State
V = enums.KMIPVersion
Hash = enums.HashingAlgorithm
FACTORY = AttributeFactory()
USER = "kmip-vault-user"
MESSAGE = b"signed on the Vault backend"
PSS_SHA256 = {
    "padding_method": enums.PaddingMethod.PSS,
    "cryptographic_algorithm": Alg.RSA,
    "hashing_algorithm": Hash.SHA_256,
}
FAILURES = (exceptions.KmipOperationFailure, core_exceptions.OperationFailure)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vault(bao: VaultApi) -> VaultSettings:
    """The keystore settings both nodes share: the session's OpenBao, a KV prefix of our own."""
    return VaultSettings(
        addresses=(bao.addr,),
        token=bao.root_token,
        kv_prefix=f"kmip-vault-{uuid.uuid4().hex[:12]}",
        timeout_seconds=10.0,
    )


@pytest.fixture(scope="module")
def kmip(
    tmp_path_factory: pytest.TempPathFactory, vault: VaultSettings
) -> Iterator[KmipTestServer]:
    with KmipTestServer(tmp_path_factory.mktemp("kmip-vault"), backend="vault", vault=vault) as s:
        yield s


@pytest.fixture(scope="module")
def node2(
    tmp_path_factory: pytest.TempPathFactory, vault: VaultSettings, kmip: KmipTestServer
) -> Iterator[KmipTestServer]:
    """Another s3kms server (its own data directory, users and PKI) on the same keystore."""
    with KmipTestServer(
        tmp_path_factory.mktemp("kmip-vault-2"), backend="vault", vault=vault
    ) as server:
        yield server


@pytest.fixture(scope="module")
def alice(kmip: KmipTestServer) -> KmipIdentity:
    return kmip.user(["kmip:*"], name=USER)


@pytest.fixture(scope="module")
def client(kmip: KmipTestServer, alice: KmipIdentity) -> ProxyKmipClient:
    return kmip.client(alice)


@pytest.fixture(scope="module")
def client14(kmip: KmipTestServer, alice: KmipIdentity) -> ProxyKmipClient:
    return kmip.client(alice, V.KMIP_1_4)


@pytest.fixture(scope="module")
def other_node(node2: KmipTestServer) -> ProxyKmipClient:
    """The same user (the same name, so the same principal ARN: the objects' owner) on the
    second node, with a certificate of that node's CA."""
    return node2.client(node2.user(["kmip:*"], name=USER))


# -- helpers ----------------------------------------------------------------------------------


def refused(reason: enums.ResultReason) -> Any:
    return pytest.raises(FAILURES, check=lambda e: e.reason is reason)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def attr(name: enums.AttributeType, value: Any) -> Any:
    return FACTORY.create_attribute(name, value)


def create(
    client: ProxyKmipClient,
    algorithm: enums.CryptographicAlgorithm,
    length: int,
    masks: list[enums.CryptographicUsageMask],
    *extra: Any,
) -> str:
    """A symmetric key with exactly `masks` (KMIPProxy's create)."""
    template = [
        attr(A.CRYPTOGRAPHIC_ALGORITHM, algorithm),
        attr(A.CRYPTOGRAPHIC_LENGTH, length),
        attr(A.CRYPTOGRAPHIC_USAGE_MASK, masks),
        *extra,
    ]
    result = client.proxy.create(OT.SYMMETRIC_KEY, cobjects.TemplateAttribute(attributes=template))
    assert result.result_status.value is enums.ResultStatus.SUCCESS, result.result_message
    uid: str = result.uuid
    return uid


def state_of(client: ProxyKmipClient, uid: str) -> enums.State:
    _, found = client.get_attributes(uid, ["State"])
    (attribute,) = found
    value: enums.State = attribute.attribute_value.value
    return value


def certificate() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, unique("vault-cert"))])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def cbc(key: bytes, iv: bytes, data: bytes) -> bytes:
    padder = block_padding.PKCS7(128).padder()
    padded = padder.update(data) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


# -- symmetric keys -----------------------------------------------------------------------------


@pytest.mark.parametrize("length", [128, 192, 256])
def test_create_activate_locate_and_get_aes(client: ProxyKmipClient, length: int) -> None:
    name = unique(f"vault-aes{length}")
    uid = client.create(Alg.AES, length, name=name, cryptographic_usage_mask=[Mask.ENCRYPT])
    assert state_of(client, uid) is State.PRE_ACTIVE
    client.activate(uid)
    assert state_of(client, uid) is State.ACTIVE
    assert client.locate(attributes=[attr(A.NAME, name)]) == [uid]
    key = client.get(uid)
    assert isinstance(key, pie.SymmetricKey)
    assert len(key.value) * 8 == length == key.cryptographic_length
    assert client.get(uid).value == key.value  # the same material every time


@pytest.mark.parametrize("length", [128, 192, 256])
def test_encrypt_decrypt_aes_cbc(client: ProxyKmipClient, length: int) -> None:
    uid = create(client, Alg.AES, length, [Mask.ENCRYPT, Mask.DECRYPT])
    client.activate(uid)
    key = client.get(uid).value
    params = {"block_cipher_mode": enums.BlockCipherMode.CBC}
    data = b"a plaintext on the vault backend"
    ciphertext, iv = client.encrypt(data, uid=uid, cryptographic_parameters=params)
    assert isinstance(iv, bytes) and ciphertext == cbc(key, iv, data)
    assert (
        client.decrypt(ciphertext, uid=uid, cryptographic_parameters=params, iv_counter_nonce=iv)
        == data
    )


def test_encrypt_decrypt_aes_gcm(client14: ProxyKmipClient) -> None:
    uid = create(client14, Alg.AES, 256, [Mask.ENCRYPT, Mask.DECRYPT])
    client14.activate(uid)
    key = client14.get(uid).value
    params = CryptographicParameters(block_cipher_mode=enums.BlockCipherMode.GCM, tag_length=16)
    iv, aad, data = os.urandom(12), b"header", b"sealed by KMIP on Vault"
    answer = client14.proxy.send_request_payload(
        Op.ENCRYPT,
        payloads.EncryptRequestPayload(
            unique_identifier=uid,
            cryptographic_parameters=params,
            data=data,
            iv_counter_nonce=iv,
            auth_additional_data=aad,
        ),
    )
    assert answer.data + answer.auth_tag == AESGCM(key).encrypt(iv, data, aad)
    opened = client14.proxy.send_request_payload(
        Op.DECRYPT,
        payloads.DecryptRequestPayload(
            unique_identifier=uid,
            cryptographic_parameters=params,
            data=answer.data,
            iv_counter_nonce=iv,
            auth_additional_data=aad,
            auth_tag=answer.auth_tag,
        ),
    )
    assert opened.data == data


@pytest.mark.parametrize(
    ("algorithm", "length", "digest"),
    [
        (Alg.HMAC_SHA224, 224, hashlib.sha224),
        (Alg.HMAC_SHA256, 256, hashlib.sha256),
        (Alg.HMAC_SHA512, 512, hashlib.sha512),
    ],
    ids=["sha224", "sha256", "sha512"],
)
def test_hmac_mac(
    client: ProxyKmipClient, algorithm: enums.CryptographicAlgorithm, length: int, digest: Any
) -> None:
    uid = create(client, algorithm, length, [Mask.MAC_GENERATE, Mask.MAC_VERIFY])
    client.activate(uid)
    key = client.get(uid).value
    assert len(key) * 8 == length
    data = b"authenticated on vault " + os.urandom(8)
    got_uid, mac = client.mac(data, uid=uid)
    assert got_uid == uid and mac == hmac.new(key, data, digest).digest()


# -- registered objects -------------------------------------------------------------------------


def test_register_secret_data_opaque_and_certificate_get_the_same_bytes(
    client: ProxyKmipClient,
) -> None:
    secret = b"a password kept in vault " + os.urandom(8)
    opaque = os.urandom(3000)
    der = certificate()
    uids = {
        "secret": client.register(pie.SecretData(secret, enums.SecretDataType.PASSWORD)),
        "opaque": client.register(pie.OpaqueObject(opaque, enums.OpaqueDataType.NONE)),
        "certificate": client.register(pie.X509Certificate(der)),
    }
    got_secret = client.get(uids["secret"])
    assert isinstance(got_secret, pie.SecretData) and got_secret.value == secret
    got_opaque = client.get(uids["opaque"])
    assert isinstance(got_opaque, pie.OpaqueObject) and got_opaque.value == opaque
    got_cert = client.get(uids["certificate"])
    assert isinstance(got_cert, pie.X509Certificate) and got_cert.value == der


def test_register_a_symmetric_key_then_get_it(client: ProxyKmipClient) -> None:
    material = os.urandom(24)
    uid = client.register(pie.SymmetricKey(Alg.AES, 192, material))
    assert client.get(uid).value == material


# -- key pairs ----------------------------------------------------------------------------------


def test_create_key_pair_sign_and_verify(client: ProxyKmipClient) -> None:
    public, private = client.create_key_pair(
        Alg.RSA, 2048, public_usage_mask=[Mask.VERIFY], private_usage_mask=[Mask.SIGN]
    )
    client.activate(private)
    client.activate(public)
    got_private, got_public = client.get(private), client.get(public)
    key = serialization.load_der_private_key(got_private.value, password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert (
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == got_public.value
    )
    signature = client.sign(MESSAGE, uid=private, cryptographic_parameters=PSS_SHA256)
    key.public_key().verify(
        signature,
        MESSAGE,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
        hashes.SHA256(),
    )
    verify = client.signature_verify
    assert (
        verify(MESSAGE, signature, uid=public, cryptographic_parameters=PSS_SHA256)
        is enums.ValidityIndicator.VALID
    )
    assert (
        verify(b"tampered", signature, uid=public, cryptographic_parameters=PSS_SHA256)
        is enums.ValidityIndicator.INVALID
    )


def test_create_ec_key_pair_sign(client: ProxyKmipClient) -> None:
    public, private = client.create_key_pair(
        Alg.EC, 384, public_usage_mask=[Mask.VERIFY], private_usage_mask=[Mask.SIGN]
    )
    client.activate(private)
    params = {"hashing_algorithm": Hash.SHA_384}
    signature = client.sign(MESSAGE, uid=private, cryptographic_parameters=params)
    loaded = serialization.load_der_public_key(client.get(public).value)
    assert isinstance(loaded, ec.EllipticCurvePublicKey)
    loaded.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA384()))


# -- Destroy ------------------------------------------------------------------------------------


def test_destroy_then_item_not_found(client: ProxyKmipClient) -> None:
    name = unique("vault-doomed")
    uid = client.create(Alg.AES, 256, name=name)
    client.activate(uid)
    with refused(R.PERMISSION_DENIED):  # not while Active
        client.destroy(uid)
    client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
    client.destroy(uid)
    with refused(R.ITEM_NOT_FOUND):
        client.get(uid)
    with refused(R.ITEM_NOT_FOUND):
        client.get_attributes(uid)
    assert client.locate(attributes=[attr(A.NAME, name)]) == []
    secret = client.register(pie.SecretData(b"sealed in kv", enums.SecretDataType.PASSWORD))
    client.destroy(secret)
    with refused(R.ITEM_NOT_FOUND):
        client.get(secret)


# -- another node -------------------------------------------------------------------------------


def test_another_node_sees_and_gets_the_same_objects(
    client: ProxyKmipClient, other_node: ProxyKmipClient
) -> None:
    name = unique("vault-shared")
    key = client.create(Alg.AES, 256, name=name)
    client.activate(key)
    sealed = client.create(Alg.AES, 192)  # AES-192: sealed in KV rather than a transit key
    secret = client.register(pie.SecretData(b"shared secret", enums.SecretDataType.PASSWORD))
    for uid in (key, sealed, secret):
        assert other_node.get(uid).value == client.get(uid).value
    assert other_node.locate(attributes=[attr(A.NAME, name)]) == [key]
    assert state_of(other_node, key) is State.ACTIVE
    # A change on one node is seen by the other.
    other_node.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, key)
    assert state_of(client, key) is State.DEACTIVATED
    client.destroy(key)
    with refused(R.ITEM_NOT_FOUND):
        other_node.get(key)


def test_another_node_uses_a_key_pair_made_on_the_first(
    client: ProxyKmipClient, other_node: ProxyKmipClient
) -> None:
    public, private = client.create_key_pair(
        Alg.RSA, 2048, public_usage_mask=[Mask.VERIFY], private_usage_mask=[Mask.SIGN]
    )
    client.activate(private)
    client.activate(public)
    signature = other_node.sign(MESSAGE, uid=private, cryptographic_parameters=PSS_SHA256)
    assert (
        client.signature_verify(MESSAGE, signature, uid=public, cryptographic_parameters=PSS_SHA256)
        is enums.ValidityIndicator.VALID
    )
    mac_key = create(client, Alg.HMAC_SHA256, 256, [Mask.MAC_GENERATE])
    client.activate(mac_key)
    assert other_node.mac(b"data", uid=mac_key)[1] == client.mac(b"data", uid=mac_key)[1]


def test_a_rename_on_one_node_is_located_on_the_other_at_once(
    client: ProxyKmipClient, other_node: ProxyKmipClient
) -> None:
    """Locate by Name reads the keystore's lookup index (KV entries, never cached): a Name
    changed through one node is found, and the old one no longer, through the other at once."""
    old, new = unique("vault-old"), unique("vault-new")
    uid = client.create(Alg.AES, 256, name=old)
    assert other_node.locate(attributes=[attr(A.NAME, old)]) == [uid]
    got_uid, _ = client.modify_attribute(uid, attribute=FACTORY.create_attribute(A.NAME, new, 0))
    assert got_uid == uid
    assert other_node.locate(attributes=[attr(A.NAME, new)]) == [uid]
    assert other_node.locate(attributes=[attr(A.NAME, old)]) == []
    assert uid in other_node.locate()  # by owner: the caller's objects
    other_node.destroy(uid)
    assert client.locate(attributes=[attr(A.NAME, new)]) == []
    assert uid not in client.locate()
