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

import hashlib
import hmac
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from kmip.core import enums
from kmip.pie import objects as pie
from kmip.pie.client import ProxyKmipClient

from s3kms.keystore.vault import VaultSettings

from kmipserver import (
    PSS_AUTO,
    PSS_SHA256,
    A,
    Alg,
    Hash,
    KmipIdentity,
    KmipTestServer,
    Mask,
    R,
    State,
    active,
    active_pair,
    aes_offline,
    attr,
    create,
    gcm_decrypt,
    gcm_encrypt,
    one,
    refused,
    self_signed_certificate,
    spki,
    unique,
)

# kmipserver.py's fixtures client and client14 (imported for pytest, hence `x as x`)
from kmipserver import client14_fixture as client14_fixture
from kmipserver import client_fixture as client_fixture
from openbao import VaultApi

pytestmark = pytest.mark.vault

USER = "kmip-vault-user"
MESSAGE = b"signed on the Vault backend"


# -- fixtures ---------------------------------------------------------------------------------
# (and kmipserver.py's: client, in PyKMIP's default protocol version, 1.2; client14)


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
def other_node(node2: KmipTestServer) -> ProxyKmipClient:
    """The same user (the same name, so the same principal ARN: the objects' owner) on the
    second node, with a certificate of that node's CA."""
    return node2.client(node2.user(["kmip:*"], name=USER))


# -- helpers ----------------------------------------------------------------------------------


def state_of(client: ProxyKmipClient, uid: str) -> enums.State:
    state: enums.State = one(client, uid, "State")
    return state


def cbc(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-CBC with PKCS#7 padding, offline."""
    return aes_offline(key, "CBC", iv, data, True)


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
    uid = active(client, create(client, Alg.AES, length, [Mask.ENCRYPT, Mask.DECRYPT]))
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
    uid = active(client14, create(client14, Alg.AES, 256, [Mask.ENCRYPT, Mask.DECRYPT]))
    key = client14.get(uid).value
    iv, aad, data = os.urandom(12), b"header", b"sealed by KMIP on Vault"
    # (Cryptographic Parameters naming GCM and a Tag Length of 16, no Cryptographic Algorithm)
    answer = gcm_encrypt(client14, uid, data, iv=iv, aad=aad, tag_length=16, algorithm=None)
    assert answer.data + answer.auth_tag == AESGCM(key).encrypt(iv, data, aad)
    opened = gcm_decrypt(
        client14, uid, answer.data, iv, answer.auth_tag, aad, tag_length=16, algorithm=None
    )
    assert opened == data


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
    uid = active(client, create(client, algorithm, length, [Mask.MAC_GENERATE, Mask.MAC_VERIFY]))
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
    der = self_signed_certificate("vault-cert")
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
    public, private = active_pair(client, Alg.RSA, 2048, [Mask.VERIFY], [Mask.SIGN])
    got_private, got_public = client.get(private), client.get(public)
    key = serialization.load_der_private_key(got_private.value, password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert spki(key.public_key()) == got_public.value
    signature = client.sign(MESSAGE, uid=private, cryptographic_parameters=PSS_SHA256)
    key.public_key().verify(signature, MESSAGE, PSS_AUTO, hashes.SHA256())
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
    public, private = active_pair(client, Alg.RSA, 2048, [Mask.VERIFY], [Mask.SIGN])
    signature = other_node.sign(MESSAGE, uid=private, cryptographic_parameters=PSS_SHA256)
    assert (
        client.signature_verify(MESSAGE, signature, uid=public, cryptographic_parameters=PSS_SHA256)
        is enums.ValidityIndicator.VALID
    )
    mac_key = active(client, create(client, Alg.HMAC_SHA256, 256, [Mask.MAC_GENERATE]))
    assert other_node.mac(b"data", uid=mac_key)[1] == client.mac(b"data", uid=mac_key)[1]


def test_a_rename_on_one_node_is_located_on_the_other_at_once(
    client: ProxyKmipClient, other_node: ProxyKmipClient
) -> None:
    """Locate by Name reads the keystore's lookup index (KV entries, never cached): a Name
    changed through one node is found, and the old one no longer, through the other at once."""
    old, new = unique("vault-old"), unique("vault-new")
    uid = client.create(Alg.AES, 256, name=old)
    assert other_node.locate(attributes=[attr(A.NAME, old)]) == [uid]
    got_uid, _ = client.modify_attribute(uid, attribute=attr(A.NAME, new, 0))
    assert got_uid == uid
    assert other_node.locate(attributes=[attr(A.NAME, new)]) == [uid]
    assert other_node.locate(attributes=[attr(A.NAME, old)]) == []
    assert uid in other_node.locate()  # by owner: the caller's objects
    other_node.destroy(uid)
    assert client.locate(attributes=[attr(A.NAME, new)]) == []
    assert uid not in client.locate()
