"""Importing key material (BYOK): the RSA wrapping keys of GetParametersForImport, unwrapping
what a client wrapped with one, and checking that the material fits the key's spec.

AWS's wrapping algorithms (GetParametersForImport, "Select a wrapping algorithm"):

    RSAES_OAEP_SHA_1 / _256          RSA-OAEP(SHA-1 / SHA-256, MGF1 alike) of the material itself
    RSA_AES_KEY_WRAP_SHA_1 / _256    RSA-OAEP of a fresh 256-bit AES key, followed by the material
                                     wrapped under that key with AES key wrap with padding
                                     (RFC 5649), as `openssl enc -id-aes256-wrap-pad` makes it

`wrap` is the client's side (the CLI's `key import`, the tests); the server only unwraps.
Every failure to unwrap is one None, so nothing tells which check failed.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from s3kms.crypto.keyspecs import KeySpecInfo

WRAPPING_ALGORITHMS = (
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "RSA_AES_KEY_WRAP_SHA_1",
    "RSA_AES_KEY_WRAP_SHA_256",
)
WRAPPING_KEY_SIZES = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
# HMAC key material AWS accepts, in bytes, by key spec (Importing key material, "Requirements
# for imported key material"): at least the hash's output, at most its block size.
HMAC_MATERIAL_BYTES = {224: (28, 64), 256: (32, 64), 384: (48, 128), 512: (64, 128)}
# The largest KMIP Secret Data or Opaque Object s3kms stores (keyspecs' "data" family).
MAX_DATA_BYTES = 65536


def _oaep(algorithm: str) -> padding.OAEP:
    digest: hashes.HashAlgorithm = (
        hashes.SHA1() if algorithm.endswith("_SHA_1") else hashes.SHA256()  # noqa: S303 (AWS's)
    )
    return padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None)


def new_wrapping_key(key_spec: str) -> tuple[bytes, bytes]:
    """(PKCS#8 DER private key, SubjectPublicKeyInfo DER public key) of a fresh RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=WRAPPING_KEY_SIZES[key_spec])
    private = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def wrap(public_der: bytes, algorithm: str, material: bytes) -> bytes:
    """What a client sends as EncryptedKeyMaterial (AWS's recipe, in Python)."""
    public = serialization.load_der_public_key(public_der)
    if not isinstance(public, rsa.RSAPublicKey):
        raise ValueError("the wrapping key is not an RSA public key")
    if algorithm.startswith("RSAES_OAEP"):
        return public.encrypt(material, _oaep(algorithm))
    aes_key = os.urandom(32)
    return public.encrypt(aes_key, _oaep(algorithm)) + aes_key_wrap_with_padding(aes_key, material)


def unwrap(private_der: bytes, algorithm: str, wrapped: bytes) -> bytes | None:
    """The material `wrap` wrapped, or None when it does not unwrap under this key."""
    # The key comes back from an authentic import token (sealed by the keystore): the RSA
    # consistency check (265 ms for RSA-4096) has nothing to find.
    private = serialization.load_der_private_key(
        private_der, password=None, unsafe_skip_rsa_key_validation=True
    )
    assert isinstance(private, rsa.RSAPrivateKey)
    size = private.key_size // 8
    try:
        if algorithm.startswith("RSAES_OAEP"):
            return private.decrypt(wrapped, _oaep(algorithm))
        if len(wrapped) <= size:
            return None
        aes_key = private.decrypt(wrapped[:size], _oaep(algorithm))
        if len(aes_key) not in (16, 24, 32):
            return None
        return aes_key_unwrap_with_padding(aes_key, wrapped[size:])
    except (ValueError, InvalidKey, InvalidUnwrap):
        return None


def material_id(key_id: str, material: bytes) -> str:
    """AWS's KeyMaterialId (64 hex): from the key id and the material, so the same material
    imported into the same key again has the same id, and the id of one key's material says
    nothing about another key's."""
    return hashlib.sha256(
        b"s3kms-key-material-id\x00" + key_id.encode() + b"\x00" + material
    ).hexdigest()


def generated_material_id(key_id: str, version: int) -> str:
    """The KeyMaterialId of material s3kms made (AWS_KMS keys): one per key version. Not from
    the material, which on Vault never leaves transit."""
    return hashlib.sha256(
        b"s3kms-generated-material-id\x00" + key_id.encode() + b"\x00" + str(version).encode()
    ).hexdigest()


def check_material(info: KeySpecInfo, material: bytes) -> bytes:
    """The material as the keystore stores it (raw bytes for symmetric and HMAC keys, PKCS#8 DER
    for the others), or ValueError when it does not fit the key spec. Imported private keys are
    fully validated here (the RSA consistency check included), because the crypto path skips it."""
    if info.symmetric:
        if len(material) != 32:
            raise ValueError("symmetric key material must be 256 bits (32 bytes)")
        return material
    if info.family == "hmac":
        low, high = HMAC_MATERIAL_BYTES[info.size]
        if not low <= len(material) <= high:
            raise ValueError(
                f"{info.name} key material must be {low} to {high} bytes, not {len(material)}"
            )
        return material
    if info.family == "aes":
        if len(material) != info.size // 8:
            raise ValueError(f"{info.name} key material must be {info.size // 8} bytes")
        return material
    if info.family == "public":
        try:
            serialization.load_der_public_key(material)
        except (ValueError, TypeError):
            raise ValueError("a public key must be a SubjectPublicKeyInfo DER") from None
        return material
    if info.family == "data":
        if not 1 <= len(material) <= MAX_DATA_BYTES:
            raise ValueError(f"{info.name} must be 1 to {MAX_DATA_BYTES} bytes")
        return material
    try:
        key = serialization.load_der_private_key(material, password=None)
    except (ValueError, TypeError):
        raise ValueError("asymmetric key material must be a PKCS#8 DER private key") from None
    if info.family == "rsa":
        fits = isinstance(key, rsa.RSAPrivateKey) and key.key_size == info.size
    elif info.family == "ecc":
        fits = isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == _curve_name(info)
    elif info.family == "ed25519":
        fits = isinstance(key, ed25519.Ed25519PrivateKey)
    else:
        fits = False  # ML-DSA, ML-KEM, SM2: AWS imports none of them
    if not fits:
        raise ValueError(f"the private key is not a {info.name} key")
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _curve_name(info: KeySpecInfo) -> str:
    # keyspecs names the curve as cryptography does (secp256r1, secp384r1, secp521r1, secp256k1)
    assert info.curve is not None
    return info.curve
