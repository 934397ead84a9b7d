"""The key spec table and the asymmetric/HMAC primitives, checked offline against `cryptography` used
directly (as a client verifying a KMS signature with the public key would)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem, padding, rsa

from s3kms.crypto import asymmetric
from s3kms.crypto.keyspecs import (
    ALGORITHM_FIELDS,
    ENCRYPT_DECRYPT,
    KEY_SPECS,
    SIGN_VERIFY,
    UNAVAILABLE_ALGORITHMS,
    spec,
)

from offline import verify_signature

SIGNING = [
    (info.name, algorithm)
    for info in KEY_SPECS.values()
    if info.available
    for algorithm in info.algorithms(SIGN_VERIFY)
    if algorithm not in UNAVAILABLE_ALGORITHMS
]


def test_the_table_covers_botocores_enums() -> None:
    import botocore.session

    model = botocore.session.get_session().get_service_model("kms")
    # Every AWS key spec, and s3kms's own for KMIP objects besides (which AWS has no name for).
    aws = {name for name, info in KEY_SPECS.items() if not info.kmip_only}
    assert aws == set(model.shape_for("KeySpec").enum)
    assert {n for n, i in KEY_SPECS.items() if i.kmip_only} == {
        "AES_128", "AES_192", "SECRET_DATA", "OPAQUE_DATA", "CERTIFICATE", "SPLIT_KEY",
        "PUBLIC_KEY",
    }  # fmt: skip
    usages = set(model.shape_for("KeyUsageType").enum)
    assert set(ALGORITHM_FIELDS) == usages
    members = model.shape_for("KeyMetadata").members
    assert set(ALGORITHM_FIELDS.values()) <= set(members)
    enums = {
        "EncryptionAlgorithms": "EncryptionAlgorithmSpec",
        "SigningAlgorithms": "SigningAlgorithmSpec",
        "MacAlgorithms": "MacAlgorithmSpec",
        "KeyAgreementAlgorithms": "KeyAgreementAlgorithmSpec",
        "EncapsulationAlgorithms": "EncapsulationAlgorithmSpec",
    }
    for info in KEY_SPECS.values():
        for usage, algorithms in info.usages.items():
            assert usage in usages
            allowed = set(model.shape_for(enums[ALGORITHM_FIELDS[usage]]).enum)
            assert set(algorithms) <= allowed, (info.name, algorithms)


def test_rsa_plaintext_limits_are_awss() -> None:
    # AWS's documented limits for RSAES_OAEP_SHA_1 / RSAES_OAEP_SHA_256.
    assert [spec(f"RSA_{n}").max_plaintext("RSAES_OAEP_SHA_1") for n in (2048, 3072, 4096)] == [
        214,
        342,
        470,
    ]
    assert [spec(f"RSA_{n}").max_plaintext("RSAES_OAEP_SHA_256") for n in (2048, 3072, 4096)] == [
        190,
        318,
        446,
    ]


@pytest.fixture(scope="module")
def materials() -> dict[str, bytes]:
    return {
        name: asymmetric.generate(info)
        for name, info in KEY_SPECS.items()
        if info.available and not info.symmetric and info.family not in ("data", "public")
    }


@pytest.mark.parametrize(("name", "algorithm"), SIGNING)
def test_signatures_verify_offline(materials: dict[str, bytes], name: str, algorithm: str) -> None:
    material = materials[name]
    public = asymmetric.public_key_der(material)
    message = b"a message to sign" * 20
    signature = asymmetric.sign(material, algorithm, message, "RAW")
    verify_signature(public, algorithm, message, signature)
    assert asymmetric.verify(public, algorithm, message, "RAW", signature)
    assert not asymmetric.verify(public, algorithm, message + b"!", "RAW", signature)
    if algorithm in ("ED25519_SHA_512", "ML_DSA_SHAKE_256"):
        return
    # DIGEST: the caller hashed the message; the signature is the same kind as over RAW.
    size = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}
    digest = size[algorithm.rsplit("_", 1)[1]](message).digest()
    signature = asymmetric.sign(material, algorithm, digest, "DIGEST")
    verify_signature(public, algorithm, message, signature)
    assert asymmetric.verify(public, algorithm, digest, "DIGEST", signature)


def test_ml_dsa_external_mu(materials: dict[str, bytes]) -> None:
    material = materials["ML_DSA_65"]
    public = asymmetric.public_key_der(material)
    key = serialization.load_der_public_key(public)
    assert isinstance(key, mldsa.MLDSA65PublicKey)
    hasher = mldsa.MLDSAMuHasher(key)
    hasher.update(b"message")
    mu = hasher.finalize()
    signature = asymmetric.sign(material, "ML_DSA_SHAKE_256", mu, "EXTERNAL_MU")
    key.verify(signature, b"message")  # a mu signature is an ordinary ML-DSA signature
    assert asymmetric.verify(public, "ML_DSA_SHAKE_256", mu, "EXTERNAL_MU", signature)


@pytest.mark.parametrize("name", ["RSA_2048", "RSA_3072", "RSA_4096"])
@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"])
def test_rsa_offline_encryption_decrypts(
    materials: dict[str, bytes], name: str, algorithm: str
) -> None:
    material = materials[name]
    key = serialization.load_der_public_key(asymmetric.public_key_der(material))
    assert isinstance(key, rsa.RSAPublicKey)
    sha1 = hashes.SHA1()  # noqa: S303 - AWS's RSAES_OAEP_SHA_1, as a client uses it
    digest: hashes.HashAlgorithm = sha1 if algorithm.endswith("SHA_1") else hashes.SHA256()
    limit = spec(name).max_plaintext(algorithm)
    plaintext = b"p" * limit
    ciphertext = key.encrypt(
        plaintext, padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)
    )
    assert asymmetric.rsa_decrypt(material, algorithm, ciphertext) == plaintext
    other = "RSAES_OAEP_SHA_256" if algorithm.endswith("SHA_1") else "RSAES_OAEP_SHA_1"
    assert asymmetric.rsa_decrypt(material, other, ciphertext) is None
    assert ENCRYPT_DECRYPT in spec(name).usages


@pytest.mark.parametrize("bits", [224, 256, 384, 512])
def test_hmac_matches_the_standard_library(materials: dict[str, bytes], bits: int) -> None:
    key = materials[f"HMAC_{bits}"]
    assert len(key) == bits // 8
    tag = asymmetric.mac(key, f"HMAC_SHA_{bits}", b"message")
    assert tag == hmac.new(key, b"message", getattr(hashlib, f"sha{bits}")).digest()
    assert asymmetric.verify_mac(key, f"HMAC_SHA_{bits}", b"message", tag)
    assert not asymmetric.verify_mac(key, f"HMAC_SHA_{bits}", b"message!", tag)


@pytest.mark.parametrize("name", ["ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521"])
def test_ecdh_equals_the_offline_exchange(materials: dict[str, bytes], name: str) -> None:
    material = materials[name]
    ours = serialization.load_der_public_key(asymmetric.public_key_der(material))
    assert isinstance(ours, ec.EllipticCurvePublicKey)
    peer = ec.generate_private_key(ours.curve)
    peer_der = peer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert asymmetric.derive_shared_secret(material, peer_der) == peer.exchange(ec.ECDH(), ours)
    other = (
        ec.generate_private_key(ec.SECP256K1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError):
        asymmetric.derive_shared_secret(material, other)


@pytest.mark.parametrize("name", ["ML_KEM_768", "ML_KEM_1024"])
def test_ml_kem_shared_secrets_are_equal(materials: dict[str, bytes], name: str) -> None:
    material = materials[name]
    public = serialization.load_der_public_key(asymmetric.public_key_der(material))
    assert isinstance(public, mlkem.MLKEM768PublicKey | mlkem.MLKEM1024PublicKey)
    secret, ciphertext = public.encapsulate()  # offline, by the client
    assert asymmetric.decapsulate(material, ciphertext) == secret
    ours_secret, ours_ciphertext = asymmetric.encapsulate(asymmetric.public_key_der(material))
    assert asymmetric.decapsulate(material, ours_ciphertext) == ours_secret


def test_unavailable_specs_say_why() -> None:
    for name in ("SM2", "ML_KEM_512"):
        info = spec(name)
        assert not info.available and "not available" in info.unavailable_reason
    assert "ED25519_PH_SHA_512" in spec("ECC_NIST_EDWARDS25519").algorithms(SIGN_VERIFY)


def test_a_tampered_signature_does_not_raise(materials: dict[str, bytes]) -> None:
    material = materials["ECC_NIST_P256"]
    public = asymmetric.public_key_der(material)
    assert not asymmetric.verify(public, "ECDSA_SHA_256", b"m", "RAW", b"\x30\x00")
    with pytest.raises(InvalidSignature):
        verify_signature(
            public, "ECDSA_SHA_256", b"m", asymmetric.sign(material, "ECDSA_SHA_256", b"n", "RAW")
        )
