"""KMIP's cryptographic operations against a real server over mutual TLS, driven by the real
PyKMIP client (`ProxyKmipClient`, its `KMIPProxy` where the pie client lacks a field):
CreateKeyPair, Get in each key format, Sign/SignatureVerify, Encrypt/Decrypt, MAC, DeriveKey,
ReKey, Register of keys, certificates and split keys, and Get with key wrapping. Every result is
checked offline with `cryptography` (or hashlib/hmac) on the material Get returns.

PyKMIP's default protocol version is 1.2; a representative subset runs in 1.0 (which has no
Encrypt/Sign/MAC: those are answered Operation Not Supported there) and in 2.0. The
Authenticated Encryption Additional Data and Tag exist from KMIP 1.4 on, so GCM runs in 1.4 and
2.0. One server for the module (tests/kmipserver.py); each test makes its own objects.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode
from kmip.core import enums, misc
from kmip.core import objects as cobjects
from kmip.core.attributes import CryptographicParameters
from kmip.pie import objects as pie
from kmip.pie.client import ProxyKmipClient

from kmipserver import (
    FAILURES,
    OT,
    PSS_AUTO,
    PSS_SHA256,
    A,
    Alg,
    Hash,
    KmipIdentity,
    KmipTestServer,
    Mask,
    Op,
    R,
    State,
    V,
    active,
    active_pair,
    aes_offline,
    attr,
    attributes_of,
    batch_item,
    create,
    decode_response,
    encode_request,
    gcm_decrypt,
    gcm_encrypt,
    ok,
    one,
    reason_of,
    refused,
    register_core,
    self_signed_certificate,
    spki,
    unique,
)

# kmipserver.py's fixtures client, client10, client14, client20 and kms (imported for pytest,
# hence `x as x`)
from kmipserver import client10_fixture as client10_fixture
from kmipserver import client14_fixture as client14_fixture
from kmipserver import client20_fixture as client20_fixture
from kmipserver import client_fixture as client_fixture
from kmipserver import kms_fixture as kms_fixture

KF = enums.KeyFormatType
Mode_ = enums.BlockCipherMode
Pad = enums.PaddingMethod
DSA = enums.DigitalSignatureAlgorithm
Valid = enums.ValidityIndicator
CESSATION = enums.RevocationReasonCode.CESSATION_OF_OPERATION
MESSAGE = b"This is a signed message."


# -- fixtures ---------------------------------------------------------------------------------
# (and kmipserver.py's: client, in PyKMIP's default protocol version, 1.2; client10; client14,
# the first version with the Authenticated Encryption Additional Data and Tag; client20; kms)


@pytest.fixture(scope="module")
def kmip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmipTestServer]:
    with KmipTestServer(tmp_path_factory.mktemp("kmip-crypto")) as server:
        yield server


@pytest.fixture(scope="module")
def alice(kmip: KmipTestServer) -> KmipIdentity:
    return kmip.user(["kmip:*"], name="alice-crypto")


@pytest.fixture(scope="module")
def signing_pair(client: ProxyKmipClient) -> tuple[str, str]:
    """An Active RSA-2048 pair: (public uid, private uid); the private key may also verify."""
    return active_pair(client, Alg.RSA, 2048, [Mask.VERIFY], [Mask.SIGN, Mask.VERIFY])


@pytest.fixture(scope="module")
def oaep_pair(client: ProxyKmipClient) -> tuple[str, str]:
    """An Active RSA-2048 pair: the public key encrypts, the private key decrypts."""
    return active_pair(client, Alg.RSA, 2048, [Mask.ENCRYPT], [Mask.DECRYPT])


# -- helpers ----------------------------------------------------------------------------------


def mask_of(*masks: enums.CryptographicUsageMask) -> int:
    value = 0
    for m in masks:
        value |= m.value
    return value


def get_in(client: ProxyKmipClient, uid: str, key_format: enums.KeyFormatType) -> Any:
    """Get in a Key Format Type (KMIPProxy: the pie client's get takes none); the key block."""
    result = ok(client.proxy.get(uid, key_format_type=misc.KeyFormatType(key_format)))
    return result.secret.key_block


def block_bytes(block: Any) -> bytes:
    value: bytes = block.key_value.key_material.value
    return value


def private_key(client: ProxyKmipClient, uid: str) -> Any:
    key = client.get(uid)
    assert isinstance(key, pie.PrivateKey) and key.key_format_type is KF.PKCS_8
    return serialization.load_der_private_key(key.value, password=None)


def public_key(client: ProxyKmipClient, uid: str) -> Any:
    key = client.get(uid)
    assert isinstance(key, pie.PublicKey) and key.key_format_type is KF.X_509
    return serialization.load_der_public_key(key.value)


def pkcs1_public(der: bytes) -> Any:
    """An RSAPublicKey (PKCS#1 DER), read through PEM."""
    text = base64.encodebytes(der).decode()
    return serialization.load_pem_public_key(
        f"-----BEGIN RSA PUBLIC KEY-----\n{text}-----END RSA PUBLIC KEY-----\n".encode()
    )


def rsa_pkcs8(bits: int = 2048) -> tuple[Any, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key, der


def wrapping(uid: str) -> dict[str, Any]:
    """A Key Wrapping Specification (the pie client's dict): NIST Key Wrap under `uid`."""
    return {
        "wrapping_method": enums.WrappingMethod.ENCRYPT,
        "encryption_key_information": {
            "unique_identifier": uid,
            "cryptographic_parameters": {"block_cipher_mode": Mode_.NIST_KEY_WRAP},
        },
        "encoding_option": enums.EncodingOption.NO_ENCODING,
    }


# -- CreateKeyPair ----------------------------------------------------------------------------

PAIRS = [
    (Alg.RSA, 2048),
    (Alg.RSA, 3072),
    (Alg.RSA, 4096),
    (Alg.EC, 256),
    (Alg.EC, 384),
    (Alg.EC, 521),
    (Alg.ECDSA, 256),
    (Alg.ECDSA, 384),
]
CURVES = {256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1}


@pytest.mark.parametrize(("algorithm", "length"), PAIRS, ids=[f"{a.name}-{n}" for a, n in PAIRS])
def test_create_key_pair_makes_two_matching_objects(
    client: ProxyKmipClient, algorithm: enums.CryptographicAlgorithm, length: int
) -> None:
    public_name, private_name = unique("pub"), unique("priv")
    public, private = client.create_key_pair(
        algorithm,
        length,
        public_name=public_name,
        public_usage_mask=[Mask.VERIFY],
        private_name=private_name,
        private_usage_mask=[Mask.SIGN],
    )
    assert public != private
    found_private = attributes_of(client, private)
    found_public = attributes_of(client, public)
    assert found_private["Object Type"] == [OT.PRIVATE_KEY]
    assert found_public["Object Type"] == [OT.PUBLIC_KEY]
    for found in (found_private, found_public):
        assert found["Cryptographic Algorithm"] == [algorithm]
        assert found["Cryptographic Length"] == [length]
        assert found["State"] == [State.PRE_ACTIVE]
    assert found_private["Name"] == [private_name] and found_public["Name"] == [public_name]
    assert found_private["Cryptographic Usage Mask"] == [Mask.SIGN.value]
    assert found_public["Cryptographic Usage Mask"] == [Mask.VERIFY.value]

    got_private, got_public = client.get(private), client.get(public)
    assert isinstance(got_private, pie.PrivateKey) and isinstance(got_public, pie.PublicKey)
    assert got_private.key_format_type is KF.PKCS_8  # the defaults
    assert got_public.key_format_type is KF.X_509
    assert got_private.cryptographic_algorithm is algorithm
    assert got_private.cryptographic_length == length == got_public.cryptographic_length
    loaded = serialization.load_der_private_key(got_private.value, password=None)
    loaded_public = serialization.load_der_public_key(got_public.value)
    if algorithm is Alg.RSA:
        assert isinstance(loaded, rsa.RSAPrivateKey) and loaded.key_size == length
        assert isinstance(loaded_public, rsa.RSAPublicKey)
    else:
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        assert isinstance(loaded.curve, CURVES[length])
    assert spki(loaded.public_key()) == got_public.value  # the pair matches
    # Activating one leaves the other as it was.
    client.activate(private)
    assert one(client, private, "State") is State.ACTIVE
    assert one(client, public, "State") is State.PRE_ACTIVE


def test_create_key_pair_common_template_applies_to_both(client: ProxyKmipClient) -> None:
    """Attributes of the Common Template go to both objects; a per-object template adds its own."""
    common = cobjects.TemplateAttribute(
        attributes=[
            attr(A.CRYPTOGRAPHIC_ALGORITHM, Alg.EC),
            attr(A.CRYPTOGRAPHIC_LENGTH, 256),
            attr(A.OBJECT_GROUP, "pairs"),
        ],
        tag=enums.Tags.COMMON_TEMPLATE_ATTRIBUTE,
    )
    private_template = cobjects.TemplateAttribute(
        attributes=[attr(A.CRYPTOGRAPHIC_USAGE_MASK, [Mask.SIGN])],
        tag=enums.Tags.PRIVATE_KEY_TEMPLATE_ATTRIBUTE,
    )
    result = client.proxy.create_key_pair(
        common_template_attribute=common, private_key_template_attribute=private_template
    )
    assert result.result_status.value is enums.ResultStatus.SUCCESS
    private, public = result.private_key_uuid, result.public_key_uuid
    assert attributes_of(client, private)["Object Group"] == ["pairs"]
    assert attributes_of(client, public)["Object Group"] == ["pairs"]
    assert one(client, private, "Cryptographic Usage Mask") == Mask.SIGN.value
    assert "Cryptographic Usage Mask" not in attributes_of(client, public)


@pytest.mark.parametrize(
    ("algorithm", "length"),
    [(Alg.RSA, 1024), (Alg.RSA, 2047), (Alg.EC, 255), (Alg.EC, 224), (Alg.AES, 256)],
)
def test_create_key_pair_refuses_what_s3kms_does_not_make(
    client: ProxyKmipClient, algorithm: enums.CryptographicAlgorithm, length: int
) -> None:
    with refused(R.INVALID_FIELD):
        client.create_key_pair(algorithm, length)


def test_get_rsa_keys_in_each_format(client: ProxyKmipClient) -> None:
    public, private = client.create_key_pair(Alg.RSA, 2048)
    pkcs8 = get_in(client, private, KF.PKCS_8)
    assert pkcs8.key_format_type.value is KF.PKCS_8
    key = serialization.load_der_private_key(block_bytes(pkcs8), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    pkcs1 = get_in(client, private, KF.PKCS_1)
    assert pkcs1.key_format_type.value is KF.PKCS_1
    assert block_bytes(pkcs1) == key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    x509_block = get_in(client, public, KF.X_509)
    assert block_bytes(x509_block) == spki(key.public_key())
    pkcs1_public_block = get_in(client, public, KF.PKCS_1)
    assert pkcs1_public_block.key_format_type.value is KF.PKCS_1
    from_pkcs1 = pkcs1_public(block_bytes(pkcs1_public_block))
    assert spki(from_pkcs1) == spki(key.public_key())
    with refused(R.KEY_FORMAT_TYPE_NOT_SUPPORTED):
        get_in(client, private, KF.EC_PRIVATE_KEY)
    with refused(R.KEY_FORMAT_TYPE_NOT_SUPPORTED):
        get_in(client, private, KF.RAW)
    with refused(R.KEY_FORMAT_TYPE_NOT_SUPPORTED):
        get_in(client, public, KF.PKCS_8)


def test_get_ec_keys_in_each_format(client: ProxyKmipClient) -> None:
    public, private = client.create_key_pair(Alg.EC, 384)
    key = serialization.load_der_private_key(
        block_bytes(get_in(client, private, KF.PKCS_8)), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    sec1 = get_in(client, private, KF.EC_PRIVATE_KEY)
    assert sec1.key_format_type.value is KF.EC_PRIVATE_KEY
    from_sec1 = serialization.load_der_private_key(block_bytes(sec1), password=None)
    assert isinstance(from_sec1, ec.EllipticCurvePrivateKey)
    assert from_sec1.private_numbers() == key.private_numbers()
    assert block_bytes(get_in(client, public, KF.X_509)) == spki(key.public_key())
    with refused(R.KEY_FORMAT_TYPE_NOT_SUPPORTED):
        get_in(client, private, KF.PKCS_1)  # PKCS#1 is RSA's
    with refused(R.KEY_FORMAT_TYPE_NOT_SUPPORTED):
        get_in(client, public, KF.PKCS_1)


def test_query_objects_lists_the_object_types_served(client: ProxyKmipClient) -> None:
    """docs/kmip.md's Objects table: private and public keys, certificates and split keys are
    held (CreateKeyPair, Register) besides symmetric keys, secret data and opaque objects."""
    result = ok(client.proxy.query(query_functions=[enums.QueryFunction.QUERY_OBJECTS]))
    served = {OT.SYMMETRIC_KEY, OT.SECRET_DATA, OT.OPAQUE_DATA, OT.PRIVATE_KEY, OT.PUBLIC_KEY}
    served |= {OT.CERTIFICATE, OT.SPLIT_KEY}
    assert served <= set(result.object_types)


def test_a_kmip_rsa_private_key_signs_through_the_aws_api(
    client: ProxyKmipClient, kms: Any, signing_pair: tuple[str, str]
) -> None:
    public, private = signing_pair
    meta = kms.describe_key(KeyId=private)["KeyMetadata"]
    assert meta["KeySpec"] == "RSA_2048" and meta["KeyUsage"] == "SIGN_VERIFY"
    signature = kms.sign(KeyId=private, Message=MESSAGE, SigningAlgorithm="RSASSA_PSS_SHA_256")[
        "Signature"
    ]
    key = public_key(client, public)
    key.verify(signature, MESSAGE, PSS_AUTO, hashes.SHA256())


# -- Sign, SignatureVerify ----------------------------------------------------------------------


def test_sign_rsa_pss_then_verify_as_pykmip_does(
    client: ProxyKmipClient, signing_pair: tuple[str, str]
) -> None:
    """PyKMIP's integration test test_create_key_pair_sign_signature_verify."""
    public, private = signing_pair
    signature = client.sign(MESSAGE, uid=private, cryptographic_parameters=PSS_SHA256)
    assert isinstance(signature, bytes) and len(signature) == 256
    assert (
        client.signature_verify(MESSAGE, signature, uid=public, cryptographic_parameters=PSS_SHA256)
        is Valid.VALID
    )
    # Offline, with the public key Get returns.
    public_key(client, public).verify(signature, MESSAGE, PSS_AUTO, hashes.SHA256())
    # Tampered data, or a tampered signature: Invalid.
    tampered = MESSAGE + b"!"
    assert (
        client.signature_verify(
            tampered, signature, uid=public, cryptographic_parameters=PSS_SHA256
        )
        is Valid.INVALID
    )
    broken = bytes([signature[0] ^ 1]) + signature[1:]
    assert (
        client.signature_verify(MESSAGE, broken, uid=public, cryptographic_parameters=PSS_SHA256)
        is Valid.INVALID
    )
    # The private key object verifies too (its mask has Verify).
    assert (
        client.signature_verify(
            MESSAGE, signature, uid=private, cryptographic_parameters=PSS_SHA256
        )
        is Valid.VALID
    )


def test_verify_of_a_signature_made_offline(
    client: ProxyKmipClient, signing_pair: tuple[str, str]
) -> None:
    public, private = signing_pair
    key = private_key(client, private)
    signature = key.sign(
        MESSAGE,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
        hashes.SHA256(),
    )
    assert (
        client.signature_verify(MESSAGE, signature, uid=public, cryptographic_parameters=PSS_SHA256)
        is Valid.VALID
    )
    pkcs1 = key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA384())
    params = {"digital_signature_algorithm": DSA.SHA384_WITH_RSA_ENCRYPTION}
    assert (
        client.signature_verify(MESSAGE, pkcs1, uid=public, cryptographic_parameters=params)
        is Valid.VALID
    )


@pytest.mark.parametrize(
    ("params", "hash_type"),
    [
        ({"digital_signature_algorithm": DSA.SHA256_WITH_RSA_ENCRYPTION}, hashes.SHA256),
        ({"padding_method": Pad.PKCS1v15, "hashing_algorithm": Hash.SHA_384}, hashes.SHA384),
        ({"digital_signature_algorithm": DSA.SHA512_WITH_RSA_ENCRYPTION}, hashes.SHA512),
    ],
    ids=["dsa-sha256", "padding-sha384", "dsa-sha512"],
)
def test_sign_rsa_pkcs1v15(
    client: ProxyKmipClient,
    signing_pair: tuple[str, str],
    params: dict[str, Any],
    hash_type: type[hashes.HashAlgorithm],
) -> None:
    public, private = signing_pair
    signature = client.sign(MESSAGE, uid=private, cryptographic_parameters=params)
    public_key(client, public).verify(signature, MESSAGE, padding.PKCS1v15(), hash_type())
    assert (
        client.signature_verify(MESSAGE, signature, uid=public, cryptographic_parameters=params)
        is Valid.VALID
    )
    assert (
        client.signature_verify(b"other", signature, uid=public, cryptographic_parameters=params)
        is Valid.INVALID
    )
    # PKCS#1 v1.5 is deterministic: the same signature every time.
    assert client.sign(MESSAGE, uid=private, cryptographic_parameters=params) == signature


@pytest.mark.parametrize(
    ("length", "params", "hash_type"),
    [
        (256, {"hashing_algorithm": Hash.SHA_256}, hashes.SHA256),
        (384, {"hashing_algorithm": Hash.SHA_384}, hashes.SHA384),
        (256, {"digital_signature_algorithm": DSA.ECDSA_WITH_SHA384}, hashes.SHA384),
        (521, {"digital_signature_algorithm": DSA.ECDSA_WITH_SHA512}, hashes.SHA512),
    ],
    ids=["p256-sha256", "p384-sha384", "p256-dsa-sha384", "p521-dsa-sha512"],
)
def test_sign_ecdsa(
    client: ProxyKmipClient,
    length: int,
    params: dict[str, Any],
    hash_type: type[hashes.HashAlgorithm],
) -> None:
    public, private = active_pair(client, Alg.EC, length, [Mask.VERIFY], [Mask.SIGN])
    signature = client.sign(MESSAGE, uid=private, cryptographic_parameters=params)
    public_key(client, public).verify(signature, MESSAGE, ec.ECDSA(hash_type()))
    assert (
        client.signature_verify(MESSAGE, signature, uid=public, cryptographic_parameters=params)
        is Valid.VALID
    )
    assert (
        client.signature_verify(b"tampered", signature, uid=public, cryptographic_parameters=params)
        is Valid.INVALID
    )
    # Another hash than the signer's: not this signature.
    other = {"hashing_algorithm": Hash.SHA_512 if hash_type is not hashes.SHA512 else Hash.SHA_256}
    assert (
        client.signature_verify(MESSAGE, signature, uid=public, cryptographic_parameters=other)
        is Valid.INVALID
    )


def test_sign_needs_sign_in_the_usage_mask(client: ProxyKmipClient) -> None:
    public, private = active_pair(client, Alg.RSA, 2048, [Mask.VERIFY], [Mask.DECRYPT])
    with refused(R.PERMISSION_DENIED):
        client.sign(MESSAGE, uid=private, cryptographic_parameters=PSS_SHA256)
    # The public key object has no Sign in its mask (nor is it a signing key).
    with refused(R.PERMISSION_DENIED):
        client.sign(MESSAGE, uid=public, cryptographic_parameters=PSS_SHA256)
    # Verifying needs Verify: the private key's mask has none.
    with refused(R.PERMISSION_DENIED):
        client.signature_verify(
            MESSAGE, b"\x00" * 256, uid=private, cryptographic_parameters=PSS_SHA256
        )


def test_sign_with_a_pre_active_key_is_the_wrong_state(client: ProxyKmipClient) -> None:
    _, private = client.create_key_pair(Alg.EC, 256, private_usage_mask=[Mask.SIGN])
    with refused(R.WRONG_KEY_LIFECYCLE_STATE):
        client.sign(
            MESSAGE, uid=private, cryptographic_parameters={"hashing_algorithm": Hash.SHA_256}
        )


def test_signature_verify_with_a_deactivated_key_works_sign_does_not(
    client: ProxyKmipClient,
) -> None:
    public, private = active_pair(client, Alg.RSA, 2048, [Mask.VERIFY], [Mask.SIGN, Mask.VERIFY])
    signature = client.sign(MESSAGE, uid=private, cryptographic_parameters=PSS_SHA256)
    client.revoke(CESSATION, public)
    client.revoke(CESSATION, private)
    assert one(client, public, "State") is State.DEACTIVATED
    for uid in (public, private):
        assert (
            client.signature_verify(
                MESSAGE, signature, uid=uid, cryptographic_parameters=PSS_SHA256
            )
            is Valid.VALID
        )
    with refused(R.WRONG_KEY_LIFECYCLE_STATE):
        client.sign(MESSAGE, uid=private, cryptographic_parameters=PSS_SHA256)


def test_sign_with_a_key_made_through_the_aws_api_is_refused(
    client: ProxyKmipClient, kms: Any
) -> None:
    key_id = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with refused(R.PERMISSION_DENIED):
        client.sign(MESSAGE, uid=key_id, cryptographic_parameters=PSS_SHA256)


# -- Encrypt, Decrypt: AES ----------------------------------------------------------------------

# (name, KMIP parameters, the mode, padded offline, plaintext length)
AES_CASES = [
    ("cbc-pkcs5", {"block_cipher_mode": Mode_.CBC, "padding_method": Pad.PKCS5}, "CBC", True, 37),
    ("cbc-none", {"block_cipher_mode": Mode_.CBC, "padding_method": Pad.NONE}, "CBC", False, 48),
    ("ecb", {"block_cipher_mode": Mode_.ECB, "padding_method": Pad.PKCS5}, "ECB", True, 20),
    ("ecb-none", {"block_cipher_mode": Mode_.ECB, "padding_method": Pad.NONE}, "ECB", False, 32),
    ("ctr", {"block_cipher_mode": Mode_.CTR}, "CTR", False, 41),
]


@pytest.mark.parametrize("length", [128, 192, 256])
@pytest.mark.parametrize(
    ("params", "mode", "pad", "size"), [c[1:] for c in AES_CASES], ids=[c[0] for c in AES_CASES]
)
def test_aes_encrypt_decrypt_matches_cryptography(
    client: ProxyKmipClient,
    length: int,
    params: dict[str, Any],
    mode: str,
    pad: bool,
    size: int,
) -> None:
    uid = active(client, create(client, Alg.AES, length, [Mask.ENCRYPT, Mask.DECRYPT]))
    key = client.get(uid).value
    assert len(key) * 8 == length
    data = os.urandom(size)
    iv = None if mode == "ECB" else os.urandom(16)
    params = {**params, "cryptographic_algorithm": Alg.AES}
    ciphertext, made_iv = client.encrypt(
        data, uid=uid, cryptographic_parameters=params, iv_counter_nonce=iv
    )
    assert made_iv is None  # the caller gave one (or ECB takes none)
    assert ciphertext == aes_offline(key, mode, iv, data, pad)
    assert (
        client.decrypt(ciphertext, uid=uid, cryptographic_parameters=params, iv_counter_nonce=iv)
        == data
    )


@pytest.mark.parametrize(("mode", "pad"), [("CBC", True), ("CTR", False)])
def test_aes_iv_made_by_the_server_is_returned(
    client: ProxyKmipClient, mode: str, pad: bool
) -> None:
    uid = active(client, create(client, Alg.AES, 256, [Mask.ENCRYPT, Mask.DECRYPT]))
    key = client.get(uid).value
    params = {"block_cipher_mode": getattr(Mode_, mode), "cryptographic_algorithm": Alg.AES}
    data = b"a message of some length, not 16"
    ciphertext, made_iv = client.encrypt(data, uid=uid, cryptographic_parameters=params)
    assert isinstance(made_iv, bytes) and len(made_iv) == 16
    assert ciphertext == aes_offline(key, mode, made_iv, data, pad)
    again, other_iv = client.encrypt(data, uid=uid, cryptographic_parameters=params)
    assert other_iv != made_iv and again != ciphertext  # a fresh IV each time
    assert (
        client.decrypt(
            ciphertext, uid=uid, cryptographic_parameters=params, iv_counter_nonce=made_iv
        )
        == data
    )


def test_aes_default_parameters_are_cbc_with_pkcs5(client: ProxyKmipClient) -> None:
    uid = active(client, create(client, Alg.AES, 128, [Mask.ENCRYPT, Mask.DECRYPT]))
    key = client.get(uid).value
    data = b"no parameters at all"
    ciphertext, iv = client.encrypt(data, uid=uid)
    assert isinstance(iv, bytes) and len(iv) == 16
    assert ciphertext == aes_offline(key, "CBC", iv, data, True)
    assert client.decrypt(ciphertext, uid=uid, iv_counter_nonce=iv) == data


def test_aes_cbc_without_padding_needs_whole_blocks(client: ProxyKmipClient) -> None:
    uid = active(client, create(client, Alg.AES, 256, [Mask.ENCRYPT, Mask.DECRYPT]))
    params = {"block_cipher_mode": Mode_.CBC, "padding_method": Pad.NONE}
    with refused(R.INVALID_FIELD):
        client.encrypt(
            b"x" * 17, uid=uid, cryptographic_parameters=params, iv_counter_nonce=b"\0" * 16
        )
    with refused(R.INVALID_FIELD):
        client.decrypt(
            b"x" * 17, uid=uid, cryptographic_parameters=params, iv_counter_nonce=b"\0" * 16
        )
    with refused(R.INVALID_FIELD):  # Decrypt needs the IV
        client.decrypt(b"x" * 16, uid=uid, cryptographic_parameters=params)


def test_aes_decrypt_with_bad_padding_is_refused(client: ProxyKmipClient) -> None:
    uid = active(client, create(client, Alg.AES, 256, [Mask.ENCRYPT, Mask.DECRYPT]))
    key = client.get(uid).value
    iv = os.urandom(16)
    garbage = aes_offline(key, "CBC", iv, b"\x00" * 16, False)  # its last byte is no padding
    params = {"block_cipher_mode": Mode_.CBC, "padding_method": Pad.PKCS5}
    with refused(R.INVALID_FIELD, R.CRYPTOGRAPHIC_FAILURE):
        client.decrypt(garbage, uid=uid, cryptographic_parameters=params, iv_counter_nonce=iv)


@pytest.mark.parametrize("version", [V.KMIP_1_4, V.KMIP_2_0], ids=["1.4", "2.0"])
@pytest.mark.parametrize("tag_length", [12, 16])
def test_aes_gcm_with_aad_and_tag(
    kmip: KmipTestServer, alice: KmipIdentity, version: enums.KMIPVersion, tag_length: int
) -> None:
    c = kmip.client(alice, version)
    uid = active(c, create(c, Alg.AES, 256, [Mask.ENCRYPT, Mask.DECRYPT]))
    key = c.get(uid).value
    data, aad, iv = b"authenticated and secret", b"the header", os.urandom(12)
    answer = gcm_encrypt(c, uid, data, iv=iv, aad=aad, tag_length=tag_length)
    assert answer.iv_counter_nonce is None  # the caller gave it
    sealed = AESGCM(key).encrypt(iv, data, aad)
    assert answer.data == sealed[:-16]
    assert answer.auth_tag == sealed[-16:][:tag_length]
    assert gcm_decrypt(c, uid, answer.data, iv, answer.auth_tag, aad) == data
    wrong = bytes([answer.auth_tag[0] ^ 1]) + answer.auth_tag[1:]
    with refused(R.INVALID_FIELD, R.CRYPTOGRAPHIC_FAILURE):
        gcm_decrypt(c, uid, answer.data, iv, wrong, aad)
    with refused(R.INVALID_FIELD, R.CRYPTOGRAPHIC_FAILURE):  # another AAD
        gcm_decrypt(c, uid, answer.data, iv, answer.auth_tag, b"another header")
    with refused(R.INVALID_FIELD, R.CRYPTOGRAPHIC_FAILURE):  # no tag
        gcm_decrypt(c, uid, answer.data, iv, None, aad)


def test_aes_gcm_nonce_made_by_the_server(client14: ProxyKmipClient) -> None:
    uid = active(client14, create(client14, Alg.AES, 128, [Mask.ENCRYPT, Mask.DECRYPT]))
    key = client14.get(uid).value
    answer = gcm_encrypt(client14, uid, b"hello gcm")
    iv = answer.iv_counter_nonce
    assert isinstance(iv, bytes) and len(iv) == 12
    assert answer.data + answer.auth_tag == AESGCM(key).encrypt(iv, b"hello gcm", None)
    assert gcm_decrypt(client14, uid, answer.data, iv, answer.auth_tag) == b"hello gcm"


def test_aes_gcm_tag_length_out_of_range_is_refused(client14: ProxyKmipClient) -> None:
    uid = active(client14, create(client14, Alg.AES, 256, [Mask.ENCRYPT, Mask.DECRYPT]))
    for bad in (8, 17):
        with refused(R.INVALID_FIELD):
            gcm_encrypt(client14, uid, b"data", tag_length=bad)


def test_aes_gcm_in_1_2_is_refused_rather_than_losing_its_tag(client: ProxyKmipClient) -> None:
    """KMIP 1.2 has no Authenticated Encryption Tag field (1.4 added it; PyKMIP leaves it out of
    a 1.2 message): a GCM ciphertext answered in 1.2 comes without its tag and can never be
    decrypted. The server must refuse GCM there instead of answering a ciphertext that is lost."""
    uid = active(client, create(client, Alg.AES, 256, [Mask.ENCRYPT, Mask.DECRYPT]))
    params = {"block_cipher_mode": Mode_.GCM, "cryptographic_algorithm": Alg.AES}
    with refused(R.INVALID_FIELD, R.FEATURE_NOT_SUPPORTED, R.OPERATION_NOT_SUPPORTED):
        client.encrypt(b"data", uid=uid, cryptographic_parameters=params)


def test_encrypt_and_decrypt_need_their_bits_in_the_usage_mask(client: ProxyKmipClient) -> None:
    decrypt_only = active(client, create(client, Alg.AES, 256, [Mask.DECRYPT]))
    encrypt_only = active(client, create(client, Alg.AES, 256, [Mask.ENCRYPT]))
    with refused(R.PERMISSION_DENIED):
        client.encrypt(b"data", uid=decrypt_only)
    ciphertext, iv = client.encrypt(b"data", uid=encrypt_only)
    with refused(R.PERMISSION_DENIED):
        client.decrypt(ciphertext, uid=encrypt_only, iv_counter_nonce=iv)


def test_a_deactivated_key_decrypts_but_does_not_encrypt(client: ProxyKmipClient) -> None:
    uid = active(client, create(client, Alg.AES, 256, [Mask.ENCRYPT, Mask.DECRYPT]))
    ciphertext, iv = client.encrypt(b"before revocation", uid=uid)
    client.revoke(CESSATION, uid)
    assert client.decrypt(ciphertext, uid=uid, iv_counter_nonce=iv) == b"before revocation"
    with refused(R.WRONG_KEY_LIFECYCLE_STATE):
        client.encrypt(b"after", uid=uid)


def test_a_compromised_key_decrypts_but_does_not_encrypt(client: ProxyKmipClient) -> None:
    uid = active(client, create(client, Alg.AES, 128, [Mask.ENCRYPT, Mask.DECRYPT]))
    ciphertext, iv = client.encrypt(b"secret", uid=uid)
    client.revoke(enums.RevocationReasonCode.KEY_COMPROMISE, uid)
    assert client.decrypt(ciphertext, uid=uid, iv_counter_nonce=iv) == b"secret"
    with refused(R.WRONG_KEY_LIFECYCLE_STATE):
        client.encrypt(b"after", uid=uid)


def test_a_pre_active_key_neither_encrypts_nor_decrypts(client: ProxyKmipClient) -> None:
    uid = create(client, Alg.AES, 256, [Mask.ENCRYPT, Mask.DECRYPT])
    with refused(R.WRONG_KEY_LIFECYCLE_STATE):
        client.encrypt(b"data", uid=uid)
    with refused(R.WRONG_KEY_LIFECYCLE_STATE):
        client.decrypt(b"\x00" * 16, uid=uid, iv_counter_nonce=b"\x00" * 16)


def test_encrypt_with_a_key_made_through_the_aws_api_is_permission_denied(
    client: ProxyKmipClient, kms: Any
) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    with refused(R.PERMISSION_DENIED):
        client.encrypt(b"data", uid=key_id)
    with refused(R.PERMISSION_DENIED):
        client.decrypt(b"\x00" * 16, uid=key_id, iv_counter_nonce=b"\x00" * 16)


def test_encrypt_of_another_users_key_is_item_not_found(kmip: KmipTestServer) -> None:
    owner, other = kmip.client(kmip.user(["kmip:*"])), kmip.client(kmip.user(["kmip:*"]))
    uid = active(owner, create(owner, Alg.AES, 256, [Mask.ENCRYPT, Mask.DECRYPT]))
    with refused(R.ITEM_NOT_FOUND):
        other.encrypt(b"data", uid=uid)


def test_a_policy_without_kmip_encrypt_refuses_it(kmip: KmipTestServer) -> None:
    c = kmip.client(kmip.user(["kmip:Create", "kmip:Activate", "kmip:Decrypt"]))
    uid = active(c, create(c, Alg.AES, 256, [Mask.ENCRYPT, Mask.DECRYPT]))
    with refused(R.PERMISSION_DENIED):
        c.encrypt(b"data", uid=uid)


# -- Encrypt, Decrypt: RSA ----------------------------------------------------------------------

OAEP_SHA1 = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)  # noqa: S303 (KMIP's default)


@pytest.mark.parametrize(
    ("params", "offline"),
    [
        (None, OAEP_SHA1),
        ({"padding_method": Pad.OAEP}, OAEP_SHA1),
        (
            {"padding_method": Pad.OAEP, "hashing_algorithm": Hash.SHA_256},
            padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None),
        ),
        ({"padding_method": Pad.PKCS1v15}, padding.PKCS1v15()),
    ],
    ids=["default-oaep-sha1", "oaep-sha1", "oaep-sha256", "pkcs1v15"],
)
def test_rsa_public_key_encrypts_private_key_decrypts(
    client: ProxyKmipClient,
    oaep_pair: tuple[str, str],
    params: dict[str, Any] | None,
    offline: padding.AsymmetricPadding,
) -> None:
    public, private = oaep_pair
    data = b"a data key: " + os.urandom(32)
    ciphertext, iv = client.encrypt(data, uid=public, cryptographic_parameters=params)
    assert iv is None and len(ciphertext) == 256
    key = private_key(client, private)
    assert key.decrypt(ciphertext, offline) == data
    assert client.decrypt(ciphertext, uid=private, cryptographic_parameters=params) == data
    # Encrypted offline with the public key Get returns, decrypted by the server.
    made = public_key(client, public).encrypt(data, offline)
    assert client.decrypt(made, uid=private, cryptographic_parameters=params) == data


def test_rsa_decrypt_needs_the_private_key_and_the_right_padding(
    client: ProxyKmipClient, oaep_pair: tuple[str, str]
) -> None:
    public, private = oaep_pair
    sha1 = {"padding_method": Pad.OAEP, "hashing_algorithm": Hash.SHA_1}
    ciphertext, _ = client.encrypt(b"data", uid=public, cryptographic_parameters=sha1)
    with refused(R.PERMISSION_DENIED):  # the public key's mask has no Decrypt
        client.decrypt(ciphertext, uid=public, cryptographic_parameters=sha1)
    sha256 = {"padding_method": Pad.OAEP, "hashing_algorithm": Hash.SHA_256}
    with refused(R.INVALID_FIELD, R.CRYPTOGRAPHIC_FAILURE):  # encrypted with OAEP SHA-1
        client.decrypt(ciphertext, uid=private, cryptographic_parameters=sha256)
    # Nor is it PKCS#1 v1.5, whose decryption rejects implicitly (OpenSSL's defence against
    # Bleichenbacher oracles): a pseudo-random plaintext or a refusal, never the data.
    pkcs1v15 = {"padding_method": Pad.PKCS1v15}
    try:
        out = client.decrypt(ciphertext, uid=private, cryptographic_parameters=pkcs1v15)
    except FAILURES as exc:
        assert exc.reason in (R.INVALID_FIELD, R.CRYPTOGRAPHIC_FAILURE), exc
    else:
        assert out != b"data"
    with refused(R.INVALID_FIELD):  # longer than OAEP takes with a 2048-bit key
        client.encrypt(b"x" * 300, uid=public)


# -- MAC ----------------------------------------------------------------------------------------

HMACS = [
    (Alg.HMAC_SHA256, 256, hashlib.sha256, "HMAC_SHA_256"),
    (Alg.HMAC_SHA384, 384, hashlib.sha384, "HMAC_SHA_384"),
    (Alg.HMAC_SHA512, 512, hashlib.sha512, "HMAC_SHA_512"),
]


@pytest.mark.parametrize(
    ("algorithm", "length", "digest", "aws"), HMACS, ids=[h[0].name for h in HMACS]
)
def test_mac_is_hmac_of_the_key(
    client: ProxyKmipClient,
    kms: Any,
    algorithm: enums.CryptographicAlgorithm,
    length: int,
    digest: Any,
    aws: str,
) -> None:
    uid = create(client, algorithm, length, [Mask.MAC_GENERATE, Mask.MAC_VERIFY])
    data = b"the data to authenticate " + os.urandom(16)
    with refused(R.WRONG_KEY_LIFECYCLE_STATE):
        client.mac(data, uid=uid)
    with pytest.raises(ClientError) as disabled:  # the AWS API: usable once Active
        kms.generate_mac(KeyId=uid, Message=data, MacAlgorithm=aws)
    assert disabled.value.response["Error"]["Code"] == "DisabledException"
    client.activate(uid)
    key = client.get(uid).value
    assert len(key) * 8 == length
    expected = hmac.new(key, data, digest).digest()
    got_uid, mac = client.mac(data, uid=uid)  # the key's own algorithm
    assert got_uid == uid and mac == expected
    assert client.mac(data, uid=uid, algorithm=algorithm)[1] == expected
    # The same object through the AWS API's GenerateMac (its key id is the Unique Identifier).
    aws_mac = kms.generate_mac(KeyId=uid, Message=data, MacAlgorithm=aws)["Mac"]
    assert aws_mac == mac


def test_mac_with_another_algorithm_than_the_keys(client: ProxyKmipClient) -> None:
    uid = active(client, create(client, Alg.HMAC_SHA256, 256, [Mask.MAC_GENERATE]))
    key = client.get(uid).value
    _, mac = client.mac(b"data", uid=uid, algorithm=Alg.HMAC_SHA512)
    assert mac == hmac.new(key, b"data", hashlib.sha512).digest()


def test_mac_needs_mac_generate_in_the_usage_mask(client: ProxyKmipClient) -> None:
    uid = active(client, create(client, Alg.HMAC_SHA256, 256, [Mask.MAC_VERIFY]))
    with refused(R.PERMISSION_DENIED):
        client.mac(b"data", uid=uid)


def test_mac_with_a_deactivated_key_is_the_wrong_state(client: ProxyKmipClient) -> None:
    uid = active(client, create(client, Alg.HMAC_SHA384, 384, [Mask.MAC_GENERATE]))
    client.revoke(CESSATION, uid)
    with refused(R.WRONG_KEY_LIFECYCLE_STATE):
        client.mac(b"data", uid=uid)


# -- DeriveKey ----------------------------------------------------------------------------------

Derive = enums.DerivationMethod


def register_base(client: ProxyKmipClient, obj: Any) -> str:
    return active(client, client.register(obj))


def secret_base(
    client: ProxyKmipClient,
    value: bytes,
    data_type: enums.SecretDataType = enums.SecretDataType.PASSWORD,
    mask: enums.CryptographicUsageMask = Mask.DERIVE_KEY,
) -> str:
    """An Active Secret Data base of `value`, `mask` its usage mask."""
    return register_base(client, pie.SecretData(value, data_type, masks=[mask]))


def hashed(hashing: enums.HashingAlgorithm, **parameters: Any) -> dict[str, Any]:
    """Derivation Parameters (the pie client's dict) whose Cryptographic Parameters name
    `hashing`, and `parameters` besides."""
    return {"cryptographic_parameters": {"hashing_algorithm": hashing}, **parameters}


def derive(
    client: ProxyKmipClient,
    base: str,
    method: enums.DerivationMethod,
    length: int,
    parameters: dict[str, Any],
    algorithm: enums.CryptographicAlgorithm | None = None,
) -> str:
    """DeriveKey from `base`: Secret Data of `length` bits, or a symmetric key of `algorithm`
    when one is given."""
    uid: str = client.derive_key(
        OT.SYMMETRIC_KEY if algorithm else OT.SECRET_DATA,
        [base],
        method,
        parameters,
        cryptographic_length=length,
        cryptographic_algorithm=algorithm,
    )
    return uid


def test_derive_key_pbkdf2_as_pykmip_does(client: ProxyKmipClient) -> None:
    """PyKMIP's test_derive_key_using_pbkdf2 (RFC 6070's vector), as Secret Data of 160 bits:
    s3kms makes no AES key of 160 bits (refused), so the AES key below is 256 bits."""
    base = secret_base(client, b"password")
    parameters = hashed(Hash.SHA_1, salt=b"salt", iteration_count=4096)
    secret = derive(client, base, Derive.PBKDF2, 160, parameters)
    got = client.get(secret)
    assert isinstance(got, pie.SecretData)
    assert got.value == bytes.fromhex("4b007901b765489abead49d926f721d065a429c1")
    assert one(client, secret, "Object Type") is OT.SECRET_DATA
    key_id = derive(client, base, Derive.PBKDF2, 256, parameters, Alg.AES)
    key = client.get(key_id)
    assert isinstance(key, pie.SymmetricKey)
    assert key.value == hashlib.pbkdf2_hmac("sha1", b"password", b"salt", 4096, 32)
    found = attributes_of(client, key_id, ["Object Type", "Cryptographic Algorithm",
                                           "Cryptographic Length", "State"])  # fmt: skip
    assert found == {
        "Object Type": [OT.SYMMETRIC_KEY],
        "Cryptographic Algorithm": [Alg.AES],
        "Cryptographic Length": [256],
        "State": [State.PRE_ACTIVE],
    }
    with refused(R.INVALID_FIELD):
        derive(client, base, Derive.PBKDF2, 160, parameters, Alg.AES)


def test_derive_key_pbkdf2_sha256(client: ProxyKmipClient) -> None:
    base = secret_base(client, b"hunter2")
    parameters = hashed(Hash.SHA_256, salt=b"NaCl-and-more", iteration_count=1000)
    uid = derive(client, base, Derive.PBKDF2, 512, parameters)
    assert client.get(uid).value == hashlib.pbkdf2_hmac(
        "sha256", b"hunter2", b"NaCl-and-more", 1000, 64
    )


NIST_BASE = bytes.fromhex(
    "dd5dbd45593ee2ac139748e7645b450f223d2ff297b73fd71cbcebe71d41653c"
    "950b88500de5322d99ef18dfdd30428294c4b3094f4c954334e593bd982ec614"
)
NIST_DATA = bytes.fromhex(
    "b50b0c963c6b3034b8cf19cd3f5c4ebe4f4985af0c03e575db62e6fdf1ecfe4f"
    "28b95d7ce16df85843246e1557ce95bb26cc9a21974bbd2eb69e8355"
)
NIST_EXPECTED = bytes.fromhex("e5993bf9bd2aa1c45746042e12598155")


@pytest.mark.parametrize("base_kind", ["secret-data", "hmac-key"])
def test_derive_key_nist_800_108_counter_mode(client: ProxyKmipClient, base_kind: str) -> None:
    """PyKMIP's test_derive_key_using_nist_800_108c vector. Its base is an AES key of 512 bits,
    which s3kms does not hold (refused below): the same bytes as Secret Data or an HMAC key."""
    with refused(R.INVALID_FIELD):
        client.register(pie.SymmetricKey(Alg.AES, 512, NIST_BASE, masks=[Mask.DERIVE_KEY]))
    if base_kind == "secret-data":
        obj: Any = pie.SecretData(NIST_BASE, enums.SecretDataType.SEED, masks=[Mask.DERIVE_KEY])
    else:
        obj = pie.SymmetricKey(Alg.HMAC_SHA512, 512, NIST_BASE, masks=[Mask.DERIVE_KEY])
    base = register_base(client, obj)
    parameters = hashed(Hash.SHA_512, derivation_data=NIST_DATA)
    uid = derive(client, base, Derive.NIST800_108_C, 128, parameters, Alg.AES)
    key = client.get(uid)
    assert key.value == NIST_EXPECTED
    kdf = KBKDFHMAC(
        algorithm=hashes.SHA512(),
        mode=Mode.CounterMode,
        length=16,
        rlen=4,
        llen=None,
        location=CounterLocation.BeforeFixed,
        label=None,
        context=None,
        fixed=NIST_DATA,
    )
    assert kdf.derive(NIST_BASE) == NIST_EXPECTED
    assert key.cryptographic_algorithm is Alg.AES and key.cryptographic_length == 128


def test_derive_key_hmac_as_pykmip_does(client: ProxyKmipClient) -> None:
    """PyKMIP's test_derive_key_using_hmac (RFC 5869's test case 7: HKDF-SHA-1, no salt)."""
    base = secret_base(client, b"\x0c" * 22, enums.SecretDataType.SEED)
    uid = derive(client, base, Derive.HMAC, 336, hashed(Hash.SHA_1, derivation_data=b"", salt=b""))
    got = client.get(uid)
    assert isinstance(got, pie.SecretData)
    assert got.value == bytes.fromhex(
        "2c91117204d745f3500d636a62f64f0ab3bae548aa53d423b0d1f27ebba6f5e5673a081d70cce7acfc48"
    )


def test_derive_key_by_encryption(client: ProxyKmipClient) -> None:
    """PyKMIP's test_derive_key_using_encryption uses a Blowfish base, which s3kms does not hold
    (refused below): the same method with an AES-256 base, checked with `cryptography`."""
    with refused(R.INVALID_FIELD):
        client.register(
            pie.SymmetricKey(Alg.BLOWFISH, 128, os.urandom(16), masks=[Mask.DERIVE_KEY])
        )
    material = os.urandom(32)
    base = register_base(client, pie.SymmetricKey(Alg.AES, 256, material, masks=[Mask.DERIVE_KEY]))
    iv = bytes.fromhex("fedcba9876543210fedcba9876543210")
    data = b"7654321 Now is the time for \x00"
    parameters = {
        "cryptographic_parameters": {
            "block_cipher_mode": Mode_.CBC,
            "padding_method": Pad.PKCS5,
            "cryptographic_algorithm": Alg.AES,
        },
        "initialization_vector": iv,
        "derivation_data": data,
    }
    uid = derive(client, base, Derive.ENCRYPT, 256, parameters)
    assert client.get(uid).value == aes_offline(material, "CBC", iv, data, True)[:32]


def test_a_derived_key_with_a_usage_mask_encrypts(client: ProxyKmipClient) -> None:
    """The derived object carries the template's attributes: an AES key with Encrypt|Decrypt
    is usable once activated (KMIPProxy's derive_key: the pie client's sets no mask)."""
    from kmip.core.attributes import DerivationParameters

    base = secret_base(client, b"seed" * 8, enums.SecretDataType.SEED)
    template = cobjects.TemplateAttribute(
        attributes=[
            attr(A.CRYPTOGRAPHIC_ALGORITHM, Alg.AES),
            attr(A.CRYPTOGRAPHIC_LENGTH, 128),
            attr(A.CRYPTOGRAPHIC_USAGE_MASK, [Mask.ENCRYPT, Mask.DECRYPT]),
            attr(A.NAME, unique("derived")),
        ]
    )
    result = ok(
        client.proxy.derive_key(
            OT.SYMMETRIC_KEY,
            [base],
            Derive.HMAC,
            DerivationParameters(
                cryptographic_parameters=CryptographicParameters(hashing_algorithm=Hash.SHA_256),
                derivation_data=b"context",
            ),
            template,
        )
    )
    uid = result["unique_identifier"]
    client.activate(uid)
    ciphertext, iv = client.encrypt(b"with a derived key", uid=uid)
    key = client.get(uid).value
    assert len(key) == 16
    assert ciphertext == aes_offline(key, "CBC", iv, b"with a derived key", True)


def test_derive_key_needs_derive_key_in_the_bases_mask(client: ProxyKmipClient) -> None:
    base = secret_base(client, b"password", mask=Mask.ENCRYPT)
    with refused(R.PERMISSION_DENIED):
        derive(client, base, Derive.PBKDF2, 128, {"salt": b"salt", "iteration_count": 10})


def test_derive_key_needs_an_active_base(client: ProxyKmipClient) -> None:
    base = client.register(
        pie.SecretData(b"password", enums.SecretDataType.PASSWORD, masks=[Mask.DERIVE_KEY])
    )
    with refused(R.WRONG_KEY_LIFECYCLE_STATE):
        derive(client, base, Derive.PBKDF2, 128, {"salt": b"salt", "iteration_count": 10})


def test_derive_key_refuses_a_private_key_base(client: ProxyKmipClient) -> None:
    _, private = client.create_key_pair(Alg.EC, 256, private_usage_mask=[Mask.DERIVE_KEY])
    active(client, private)
    with refused(R.INVALID_FIELD, R.PERMISSION_DENIED):
        derive(client, private, Derive.HMAC, 128, hashed(Hash.SHA_256))


# -- ReKey --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "length", "masks"),
    [
        (Alg.AES, 256, [Mask.ENCRYPT, Mask.DECRYPT]),
        (Alg.AES, 128, [Mask.ENCRYPT, Mask.WRAP_KEY]),
        (Alg.HMAC_SHA256, 256, [Mask.MAC_GENERATE, Mask.MAC_VERIFY]),
    ],
    ids=["aes-256", "aes-128", "hmac-sha256"],
)
def test_rekey_makes_a_new_key_that_takes_the_name(
    kmip: KmipTestServer,
    algorithm: enums.CryptographicAlgorithm,
    length: int,
    masks: list[enums.CryptographicUsageMask],
) -> None:
    c = kmip.client(kmip.user(["kmip:*"]))
    name = unique("rekeyed")
    old = active(
        c, create(c, algorithm, length, masks, attr(A.NAME, name), attr(A.OBJECT_GROUP, "g1"))
    )
    before = c.get(old).value
    new = c.rekey(uid=old)
    assert new != old
    after = c.get(new).value
    assert after != before and len(after) == len(before)
    assert c.get(old).value == before  # the old key stays as it was
    found = attributes_of(c, new)
    assert found["Cryptographic Algorithm"] == [algorithm]
    assert found["Cryptographic Length"] == [length]
    assert found["Cryptographic Usage Mask"] == [mask_of(*masks)]
    assert found["Object Group"] == ["g1"]
    assert found["Name"] == [name]
    assert found["State"] == [State.ACTIVE]
    assert "Name" not in attributes_of(c, old)
    assert one(c, old, "State") is State.ACTIVE
    assert c.locate(attributes=[attr(A.NAME, name)]) == [new]


def test_rekey_offset_sets_the_activation_date(client: ProxyKmipClient) -> None:
    old = active(client, create(client, Alg.AES, 256, [Mask.ENCRYPT, Mask.DECRYPT]))
    now = int(time.time())
    later = client.rekey(uid=old, offset=3600)
    found = attributes_of(client, later, ["State", "Activation Date", "Initial Date"])
    assert found["State"] == [State.PRE_ACTIVE]  # an Activation Date in the future
    (activation,) = found["Activation Date"]
    assert found["Initial Date"][0] + 3600 == activation
    assert now + 3600 - 5 <= activation <= now + 3600 + 5
    immediate = client.rekey(uid=old, offset=0)
    assert one(client, immediate, "State") is State.ACTIVE


def test_rekey_of_a_pre_active_key_is_pre_active(client: ProxyKmipClient) -> None:
    old = create(client, Alg.AES, 192, [Mask.ENCRYPT, Mask.DECRYPT])
    new = client.rekey(uid=old)
    found = attributes_of(client, new)
    assert found["State"] == [State.PRE_ACTIVE] and found["Cryptographic Length"] == [192]
    assert "Activation Date" not in found


def test_rekey_of_what_is_not_a_kmip_symmetric_key_is_refused(
    client: ProxyKmipClient, kms: Any
) -> None:
    secret = client.register(pie.SecretData(b"pw", enums.SecretDataType.PASSWORD))
    public, private = client.create_key_pair(Alg.RSA, 2048)
    aws = kms.create_key()["KeyMetadata"]["KeyId"]
    for uid in (secret, public, private, aws):
        with refused(R.PERMISSION_DENIED, R.INVALID_FIELD):
            client.rekey(uid=uid)
    with refused(R.ITEM_NOT_FOUND):
        client.rekey(uid=str(uuid.uuid4()))


# -- Register -----------------------------------------------------------------------------------


def test_register_private_key_pkcs8_then_get_and_sign(client: ProxyKmipClient) -> None:
    key, der = rsa_pkcs8()
    uid = client.register(
        pie.PrivateKey(Alg.RSA, 2048, der, KF.PKCS_8, masks=[Mask.SIGN], name=unique("reg-priv"))
    )
    got = client.get(uid)
    assert isinstance(got, pie.PrivateKey)
    assert got.key_format_type is KF.PKCS_8 and got.value == der
    assert got.cryptographic_algorithm is Alg.RSA and got.cryptographic_length == 2048
    found = attributes_of(client, uid)
    assert found["Object Type"] == [OT.PRIVATE_KEY] and found["State"] == [State.PRE_ACTIVE]
    client.activate(uid)
    signature = client.sign(MESSAGE, uid=uid, cryptographic_parameters=PSS_SHA256)
    key.public_key().verify(signature, MESSAGE, PSS_AUTO, hashes.SHA256())


def test_register_private_key_pkcs1_get_returns_pkcs8_by_default(client: ProxyKmipClient) -> None:
    """docs/kmip.md: Register takes PKCS#1 (stored as PKCS#8); Get returns PKCS#8 by default,
    PKCS#1 when asked."""
    key, pkcs8 = rsa_pkcs8()
    pkcs1 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    uid = client.register(pie.PrivateKey(Alg.RSA, 2048, pkcs1, KF.PKCS_1))
    assert block_bytes(get_in(client, uid, KF.PKCS_1)) == pkcs1
    assert block_bytes(get_in(client, uid, KF.PKCS_8)) == pkcs8
    got = client.get(uid)
    assert (got.key_format_type, got.value) == (KF.PKCS_8, pkcs8)


def test_register_ec_private_key_get_returns_pkcs8_by_default(client: ProxyKmipClient) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sec1 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # (PyKMIP's pie PrivateKey takes no EC Private Key format: the core classes do)
    uid = register_core(client, OT.PRIVATE_KEY, sec1, KF.EC_PRIVATE_KEY, Alg.EC, 256)
    assert block_bytes(get_in(client, uid, KF.EC_PRIVATE_KEY)) == sec1
    assert block_bytes(get_in(client, uid, KF.PKCS_8)) == pkcs8
    got = client.get(uid)
    assert (got.key_format_type, got.value) == (KF.PKCS_8, pkcs8)


def test_register_public_key_x509_and_pkcs1(client: ProxyKmipClient) -> None:
    key, _ = rsa_pkcs8()
    der = spki(key.public_key())
    pkcs1 = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    x509_uid = client.register(pie.PublicKey(Alg.RSA, 2048, der, KF.X_509))
    got = client.get(x509_uid)
    assert isinstance(got, pie.PublicKey)
    assert (got.key_format_type, got.value) == (KF.X_509, der)
    assert one(client, x509_uid, "Object Type") is OT.PUBLIC_KEY
    assert block_bytes(get_in(client, x509_uid, KF.PKCS_1)) == pkcs1
    pkcs1_uid = client.register(pie.PublicKey(Alg.RSA, 2048, pkcs1, KF.PKCS_1))
    assert block_bytes(get_in(client, pkcs1_uid, KF.PKCS_1)) == pkcs1
    assert block_bytes(get_in(client, pkcs1_uid, KF.X_509)) == der
    # docs/kmip.md: X.509 is the public key's default format on Get.
    got = client.get(pkcs1_uid)
    assert (got.key_format_type, got.value) == (KF.X_509, der)


def test_a_registered_public_key_verifies(client: ProxyKmipClient) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    uid = active(
        client,
        client.register(
            pie.PublicKey(Alg.EC, 384, spki(key.public_key()), KF.X_509, masks=[Mask.VERIFY])
        ),
    )
    signature = key.sign(MESSAGE, ec.ECDSA(hashes.SHA384()))
    params = {"hashing_algorithm": Hash.SHA_384}
    assert (
        client.signature_verify(MESSAGE, signature, uid=uid, cryptographic_parameters=params)
        is Valid.VALID
    )


@pytest.mark.parametrize(
    ("build", "key_format"),
    [
        (lambda: rsa.generate_private_key(65537, 1024), KF.PKCS_8),  # noqa: S505 (refused)
        (lambda: ec.generate_private_key(ec.SECP256K1()), KF.PKCS_8),  # not a NIST curve
    ],
    ids=["rsa-1024", "secp256k1"],
)
def test_register_of_a_private_key_s3kms_does_not_hold_is_refused(
    client: ProxyKmipClient, build: Any, key_format: enums.KeyFormatType
) -> None:
    der = build().private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with refused(R.INVALID_FIELD):
        client.register(pie.PrivateKey(Alg.RSA, 1024, der, key_format))


def test_register_of_a_private_key_that_does_not_decode_is_refused(client: ProxyKmipClient) -> None:
    with refused(R.INVALID_FIELD):
        client.register(pie.PrivateKey(Alg.RSA, 2048, b"\x30\x03\x02\x01\x00", KF.PKCS_8))


def test_register_certificate_get_and_locate(kmip: KmipTestServer) -> None:
    c = kmip.client(kmip.user(["kmip:*"]))
    der = self_signed_certificate()
    uid = c.register(pie.X509Certificate(der, name=unique("cert")))
    got = c.get(uid)
    assert isinstance(got, pie.X509Certificate)
    assert got.value == der and got.certificate_type is enums.CertificateType.X_509
    assert one(c, uid, "Object Type") is OT.CERTIFICATE
    c.register(pie.SecretData(b"not a certificate", enums.SecretDataType.PASSWORD))
    assert c.locate(attributes=[attr(A.OBJECT_TYPE, OT.CERTIFICATE)]) == [uid]


@pytest.mark.parametrize(
    ("method", "prime"),
    [
        (enums.SplitKeyMethod.XOR, None),
        (enums.SplitKeyMethod.POLYNOMIAL_SHARING_PRIME_FIELD, 104729),
    ],
    ids=["xor", "polynomial-prime-field"],
)
def test_register_split_key_round_trips_every_split_attribute(
    client: ProxyKmipClient, method: enums.SplitKeyMethod, prime: int | None
) -> None:
    value = os.urandom(32)
    uid = client.register(
        pie.SplitKey(
            cryptographic_algorithm=Alg.AES,
            cryptographic_length=256,
            key_value=value,
            key_format_type=KF.RAW,
            split_key_parts=4,
            key_part_identifier=2,
            split_key_threshold=3,
            split_key_method=method,
            prime_field_size=prime,
            name=unique("split"),
        )
    )
    got = client.get(uid)
    assert isinstance(got, pie.SplitKey)
    assert got.value == value
    assert got.cryptographic_algorithm is Alg.AES and got.cryptographic_length == 256
    assert got.key_format_type is KF.RAW
    assert (got.split_key_parts, got.key_part_identifier, got.split_key_threshold) == (4, 2, 3)
    assert got.split_key_method is method
    assert got.prime_field_size == prime
    assert one(client, uid, "Object Type") is OT.SPLIT_KEY


def test_register_of_a_wrapped_key_keeps_it_wrapped(client: ProxyKmipClient) -> None:
    """As PyKMIP's own test_register_wrapped_get_destroy: a key registered wrapped (under a key
    s3kms need not hold) is kept as given, and Get returns it with its Key Wrapping Data; it
    serves no cryptographic operation, and cannot be wrapped again."""
    wrapper = os.urandom(32)
    plain = os.urandom(32)
    wrapped = keywrap.aes_key_wrap(wrapper, plain)
    wrapping_key_id = str(uuid.uuid4())
    key = pie.SymmetricKey(
        Alg.AES,
        256,
        wrapped,
        key_wrapping_data=wrapping(wrapping_key_id),
    )
    uid = client.register(key)
    got = client.get(uid)
    assert got.value == wrapped
    assert keywrap.aes_key_unwrap(wrapper, got.value) == plain
    data = got.key_wrapping_data
    assert data["wrapping_method"] is enums.WrappingMethod.ENCRYPT
    assert data["encryption_key_information"]["unique_identifier"] == wrapping_key_id
    assert (
        data["encryption_key_information"]["cryptographic_parameters"]["block_cipher_mode"]
        is Mode_.NIST_KEY_WRAP
    )
    assert data["encoding_option"] is enums.EncodingOption.NO_ENCODING
    assert (got.cryptographic_algorithm, got.cryptographic_length) == (Alg.AES, 256)
    client.activate(uid)
    with refused(R.INVALID_FIELD, R.PERMISSION_DENIED):
        client.encrypt(b"x" * 16, uid=uid)
    client.revoke(enums.RevocationReasonCode.KEY_COMPROMISE, uid)
    client.destroy(uid)
    with refused(R.ITEM_NOT_FOUND):
        client.get(uid)


# -- Get with key wrapping ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def wrapper(client: ProxyKmipClient) -> tuple[str, bytes]:
    """An Active AES-256 key with Wrap Key in its mask: (uid, its material)."""
    uid = active(client, create(client, Alg.AES, 256, [Mask.WRAP_KEY, Mask.UNWRAP_KEY]))
    return uid, client.get(uid).value


def test_get_wrapped_symmetric_key_unwraps_offline(
    client: ProxyKmipClient, wrapper: tuple[str, bytes]
) -> None:
    wrapper_uid, wrapping_key = wrapper
    for length in (128, 256):
        target = create(client, Alg.AES, length, [Mask.ENCRYPT, Mask.DECRYPT])
        plain = client.get(target).value
        got = client.get(target, key_wrapping_specification=wrapping(wrapper_uid))
        assert isinstance(got, pie.SymmetricKey)
        assert got.value != plain and len(got.value) == len(plain) + 8  # RFC 3394
        assert keywrap.aes_key_unwrap(wrapping_key, got.value) == plain
        data = got.key_wrapping_data
        assert data["wrapping_method"] is enums.WrappingMethod.ENCRYPT
        assert data["encryption_key_information"]["unique_identifier"] == wrapper_uid


def test_get_wrapped_private_key_and_secret_unwrap_offline(
    client: ProxyKmipClient, wrapper: tuple[str, bytes]
) -> None:
    """Material whose length is no multiple of 8 is wrapped with padding (RFC 5649)."""
    wrapper_uid, wrapping_key = wrapper
    secret_value = b"twenty-one bytes!!!!!"
    secret = client.register(pie.SecretData(secret_value, enums.SecretDataType.PASSWORD))
    got = client.get(secret, key_wrapping_specification=wrapping(wrapper_uid))
    assert keywrap.aes_key_unwrap_with_padding(wrapping_key, got.value) == secret_value
    _, private = client.create_key_pair(Alg.EC, 256)
    plain = client.get(private).value
    wrapped = client.get(private, key_wrapping_specification=wrapping(wrapper_uid)).value
    if len(plain) % 8:
        assert keywrap.aes_key_unwrap_with_padding(wrapping_key, wrapped) == plain
    else:
        assert keywrap.aes_key_unwrap(wrapping_key, wrapped) == plain
    serialization.load_der_private_key(plain, password=None)


def test_get_wrapped_under_a_key_without_wrap_key_is_permission_denied(
    client: ProxyKmipClient,
) -> None:
    no_wrap = active(client, create(client, Alg.AES, 256, [Mask.ENCRYPT, Mask.DECRYPT]))
    target = create(client, Alg.AES, 256, [Mask.ENCRYPT])
    with refused(R.PERMISSION_DENIED):
        client.get(target, key_wrapping_specification=wrapping(no_wrap))


def test_get_wrapped_under_a_pre_active_key_is_the_wrong_state(client: ProxyKmipClient) -> None:
    pre_active = create(client, Alg.AES, 256, [Mask.WRAP_KEY])
    target = create(client, Alg.AES, 256, [Mask.ENCRYPT])
    with refused(R.WRONG_KEY_LIFECYCLE_STATE):
        client.get(target, key_wrapping_specification=wrapping(pre_active))


def test_get_wrapped_under_a_key_that_is_not_aes_is_refused(client: ProxyKmipClient) -> None:
    """An HMAC key, even one whose mask names Wrap Key, is no AES key-wrapping key: a refusal
    the client can act on (Invalid Field or Permission Denied), not a General Failure (which
    docs/kmip.md keeps for internal errors)."""
    hmac_key = active(client, create(client, Alg.HMAC_SHA256, 256, [Mask.WRAP_KEY]))
    target = create(client, Alg.AES, 256, [Mask.ENCRYPT])
    with refused(R.INVALID_FIELD, R.PERMISSION_DENIED):
        client.get(target, key_wrapping_specification=wrapping(hmac_key))
    public, _ = client.create_key_pair(Alg.RSA, 2048, public_usage_mask=[Mask.WRAP_KEY])
    active(client, public)
    with refused(R.INVALID_FIELD, R.PERMISSION_DENIED):
        client.get(target, key_wrapping_specification=wrapping(public))


def test_get_wrapped_by_another_method_is_feature_not_supported(
    client: ProxyKmipClient, wrapper: tuple[str, bytes]
) -> None:
    target = create(client, Alg.AES, 256, [Mask.ENCRYPT])
    spec = wrapping(wrapper[0])
    spec["wrapping_method"] = enums.WrappingMethod.MAC_SIGN
    with refused(R.FEATURE_NOT_SUPPORTED):
        client.get(target, key_wrapping_specification=spec)
    spec = wrapping(wrapper[0])
    spec["encryption_key_information"]["cryptographic_parameters"] = {
        "block_cipher_mode": Mode_.CBC
    }
    with refused(R.FEATURE_NOT_SUPPORTED):
        client.get(target, key_wrapping_specification=spec)


# -- protocol versions --------------------------------------------------------------------------


def test_create_key_pair_and_get_in_1_0(client10: ProxyKmipClient) -> None:
    public, private = client10.create_key_pair(
        Alg.RSA, 2048, public_usage_mask=[Mask.VERIFY], private_usage_mask=[Mask.SIGN]
    )
    got_private, got_public = client10.get(private), client10.get(public)
    assert isinstance(got_private, pie.PrivateKey) and got_private.key_format_type is KF.PKCS_8
    assert isinstance(got_public, pie.PublicKey) and got_public.key_format_type is KF.X_509
    key = serialization.load_der_private_key(got_private.value, password=None)
    assert spki(key.public_key()) == got_public.value
    assert one(client10, private, "Cryptographic Usage Mask") == Mask.SIGN.value


@pytest.mark.parametrize("version", [V.KMIP_1_0, V.KMIP_1_1], ids=["1.0", "1.1"])
def test_encrypt_sign_and_mac_before_1_2_are_operation_not_supported(
    kmip: KmipTestServer,
    alice: KmipIdentity,
    client: ProxyKmipClient,
    signing_pair: tuple[str, str],
    version: enums.KMIPVersion,
) -> None:
    """KMIP 1.2 introduced Encrypt, Decrypt, Sign, SignatureVerify and MAC (handlers.py's
    _SINCE; Query in 1.0/1.1 does not list them): a request for them in 1.0 or 1.1 is Operation
    Not Supported, as for any operation the server does not serve in that version."""
    old = kmip.client(alice, version)
    listed = set(
        ok(old.proxy.query(query_functions=[enums.QueryFunction.QUERY_OPERATIONS])).operations
    )
    assert not listed & {Op.ENCRYPT, Op.DECRYPT, Op.SIGN, Op.SIGNATURE_VERIFY, Op.MAC}
    assert Op.CREATE_KEY_PAIR in listed and Op.GET in listed
    aes = active(client, create(client, Alg.AES, 256, [Mask.ENCRYPT, Mask.DECRYPT]))
    mac_key = active(client, create(client, Alg.HMAC_SHA256, 256, [Mask.MAC_GENERATE]))
    public, private = signing_pair
    calls: dict[str, Callable[[], Any]] = {
        "encrypt": lambda: old.encrypt(b"data", uid=aes),
        "decrypt": lambda: old.decrypt(b"\x00" * 16, uid=aes, iv_counter_nonce=b"\x00" * 16),
        "sign": lambda: old.sign(MESSAGE, uid=private, cryptographic_parameters=PSS_SHA256),
        "verify": lambda: old.signature_verify(
            MESSAGE, b"\x00" * 256, uid=public, cryptographic_parameters=PSS_SHA256
        ),
        "mac": lambda: old.mac(b"data", uid=mac_key),
    }
    answered: dict[str, str] = {}
    for name, call in calls.items():
        reason = reason_of(call)
        answered[name] = "SUCCESS" if reason is None else reason.name
    assert answered == dict.fromkeys(calls, "OPERATION_NOT_SUPPORTED")


def test_create_key_pair_get_and_sign_in_2_0(client20: ProxyKmipClient) -> None:
    public, private = client20.create_key_pair(
        Alg.EC, 256, public_usage_mask=[Mask.VERIFY], private_usage_mask=[Mask.SIGN]
    )
    got_private, got_public = client20.get(private), client20.get(public)
    assert got_private.key_format_type is KF.PKCS_8 and got_public.key_format_type is KF.X_509
    key = serialization.load_der_private_key(got_private.value, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert spki(key.public_key()) == got_public.value
    client20.activate(private)
    client20.activate(public)
    params = {"digital_signature_algorithm": DSA.ECDSA_WITH_SHA256}
    signature = client20.sign(MESSAGE, uid=private, cryptographic_parameters=params)
    key.public_key().verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))
    assert (
        client20.signature_verify(MESSAGE, signature, uid=public, cryptographic_parameters=params)
        is Valid.VALID
    )
    assert (
        client20.signature_verify(b"x", signature, uid=public, cryptographic_parameters=params)
        is Valid.INVALID
    )


def test_rsa_pss_sign_verify_in_2_0(client20: ProxyKmipClient) -> None:
    public, private = active_pair(client20, Alg.RSA, 2048, [Mask.VERIFY], [Mask.SIGN])
    signature = client20.sign(MESSAGE, uid=private, cryptographic_parameters=PSS_SHA256)
    assert (
        client20.signature_verify(
            MESSAGE, signature, uid=public, cryptographic_parameters=PSS_SHA256
        )
        is Valid.VALID
    )
    public_key(client20, public).verify(signature, MESSAGE, PSS_AUTO, hashes.SHA256())


def test_aes_cbc_encrypt_decrypt_in_2_0(client20: ProxyKmipClient) -> None:
    uid = client20.create(Alg.AES, 256, cryptographic_usage_mask=[Mask.ENCRYPT, Mask.DECRYPT])
    client20.activate(uid)
    key = client20.get(uid).value
    params = {"block_cipher_mode": Mode_.CBC, "padding_method": Pad.PKCS5}
    iv = os.urandom(16)
    ciphertext, made = client20.encrypt(
        b"in KMIP 2.0", uid=uid, cryptographic_parameters=params, iv_counter_nonce=iv
    )
    assert made is None
    assert ciphertext == aes_offline(key, "CBC", iv, b"in KMIP 2.0", True)
    assert (
        client20.decrypt(ciphertext, uid=uid, cryptographic_parameters=params, iv_counter_nonce=iv)
        == b"in KMIP 2.0"
    )


def test_mac_and_derive_in_2_0(client20: ProxyKmipClient) -> None:
    uid = create(client20, Alg.HMAC_SHA512, 512, [Mask.MAC_GENERATE])
    client20.activate(uid)
    key = client20.get(uid).value
    assert client20.mac(b"data", uid=uid)[1] == hmac.new(key, b"data", hashlib.sha512).digest()
    base = secret_base(client20, b"password")
    parameters = hashed(Hash.SHA_256, salt=b"salt", iteration_count=2)
    derived = derive(client20, base, Derive.PBKDF2, 256, parameters)
    assert client20.get(derived).value == hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 2, 32)


def test_signatures_verify_across_versions(
    client10: ProxyKmipClient, client20: ProxyKmipClient, signing_pair: tuple[str, str]
) -> None:
    """A key made in 1.2 (the fixture) is the same object in 2.0; its material reads the same
    in 1.0."""
    public, private = signing_pair
    signature = client20.sign(MESSAGE, uid=private, cryptographic_parameters=PSS_SHA256)
    assert client10.get(public).value == client20.get(public).value
    public_key(client10, public).verify(signature, MESSAGE, PSS_AUTO, hashes.SHA256())


# -- MAC Verify (PyKMIP's client has no method for it: sent raw) ------------------------------


def test_mac_verify_checks_a_mac(
    kmip: KmipTestServer, alice: KmipIdentity, client: ProxyKmipClient
) -> None:
    from kmip.core.messages import messages

    from s3kms.protocols.kmip.payloads import MACVerifyRequestPayload, MACVerifyResponsePayload

    uid = active(client, create(client, Alg.HMAC_SHA256, 256, [Mask.MAC_GENERATE, Mask.MAC_VERIFY]))
    data = b"the data to authenticate"
    _, mac = client.mac(data, uid=uid)
    raw = kmip.raw(alice)
    for candidate, valid in (
        (mac, True),
        (bytes(32), False),
        (mac[:-1] + bytes([mac[-1] ^ 1]), False),
    ):
        item = batch_item(
            enums.Operation.MAC_VERIFY,
            MACVerifyRequestPayload(unique_identifier=uid, data=data, mac_data=candidate),
        )
        answer = raw.request(encode_request(enums.KMIPVersion.KMIP_1_2, [item]))
        decoded = decode_response(answer, enums.KMIPVersion.KMIP_1_2)
        batch: messages.ResponseBatchItem = decoded.batch_items[0]
        assert batch.result_status.value is enums.ResultStatus.SUCCESS
        payload = batch.response_payload
        assert isinstance(payload, MACVerifyResponsePayload)
        assert (payload.unique_identifier, payload.valid) == (uid, valid)
    # A key whose usage mask lacks MAC Verify: refused.
    other = active(client, create(client, Alg.HMAC_SHA256, 256, [Mask.MAC_GENERATE]))
    item = batch_item(
        enums.Operation.MAC_VERIFY,
        MACVerifyRequestPayload(unique_identifier=other, data=data, mac_data=mac),
    )
    decoded = decode_response(raw.request(encode_request(enums.KMIPVersion.KMIP_1_2, [item])))
    assert decoded.batch_items[0].result_reason.value is R.PERMISSION_DENIED
