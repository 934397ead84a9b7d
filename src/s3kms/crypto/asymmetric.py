"""Key material and operations for every key spec other than SYMMETRIC_DEFAULT, as AWS KMS does them.

Pure functions over bytes, all from the `cryptography` package (no home-made primitive):

- material: a private key is stored as PKCS#8 DER, an HMAC key as its raw bytes; the public key is
  X.509 SubjectPublicKeyInfo DER, exactly what AWS's `GetPublicKey` returns;
- Sign/Verify: RSASSA-PSS (MGF1 with the same hash, salt as long as the hash) and PKCS#1 v1.5;
  ECDSA with DER signatures; Ed25519 (pure); ML-DSA (empty context, or the caller's 64-byte mu for
  `EXTERNAL_MU`). `MessageType=DIGEST` signs the given digest as-is (`Prehashed`);
- RSA encryption: OAEP with MGF1 of the same hash (SHA-1 or SHA-256), no label: the ciphertext is
  the raw OAEP output, so data encrypted offline with the public key decrypts here;
- HMAC; ECDH (the raw shared secret, as `DeriveSharedSecret` returns it); ML-KEM.

Every failure to verify is `False`, never an exception; malformed input the caller should have
refused raises ValueError.
"""

from __future__ import annotations

import functools
import hmac
import os
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from s3kms.crypto.keyspecs import KeySpecInfo

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
    "224": hashes.SHA224,
}
_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1,
    "secp384r1": ec.SECP384R1,
    "secp521r1": ec.SECP521R1,
    "secp256k1": ec.SECP256K1,
}
_ML_DSA: dict[int, Callable[[], PrivateKeyTypes]] = {
    44: mldsa.MLDSA44PrivateKey.generate,
    65: mldsa.MLDSA65PrivateKey.generate,
    87: mldsa.MLDSA87PrivateKey.generate,
}
_ML_KEM: dict[int, Callable[[], mlkem.MLKEM768PrivateKey | mlkem.MLKEM1024PrivateKey]] = {
    768: mlkem.MLKEM768PrivateKey.generate,
    1024: mlkem.MLKEM1024PrivateKey.generate,
}


def _hash_of(algorithm: str) -> hashes.HashAlgorithm:
    """The hash an algorithm name ends in: RSASSA_PSS_SHA_256 -> SHA256, HMAC_SHA_224 -> SHA224."""
    return _HASHES[algorithm.rsplit("_", 1)[1]]()


# -- material ---------------------------------------------------------------------------------


def generate(info: KeySpecInfo) -> bytes:
    """Fresh material for a key of this spec: PKCS#8 DER, or the HMAC or AES key itself."""
    if info.family in ("hmac", "aes"):
        return os.urandom(info.size // 8)
    return generate_pair(info)[0]


def generate_pair(info: KeySpecInfo) -> tuple[bytes, bytes]:
    """(PKCS#8 DER, SubjectPublicKeyInfo DER) of a fresh asymmetric key; nothing is cached (a
    data key pair's private half must not outlive the request)."""
    key: PrivateKeyTypes
    if info.family == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=info.size)
    elif info.family == "ecc":
        assert info.curve is not None
        key = ec.generate_private_key(_CURVES[info.curve]())
    elif info.family == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif info.family == "ml_dsa":
        key = _ML_DSA[info.size]()
    elif info.family == "ml_kem":
        key = _ML_KEM[info.size]()
    else:
        raise ValueError(f"no material for {info.name}")
    private = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@functools.lru_cache(maxsize=1024)
def _private(material: bytes) -> PrivateKeyTypes:
    """The loaded private key. Cached: loading an RSA key costs more than the signature; bounded,
    and holding no more than the keystore's material cache does.

    The RSA consistency check (36 ms for RSA-2048, 265 ms for RSA-4096, on the event loop) is
    skipped: this material was made by `generate` and comes back only through the keystore's
    authenticated wrapping (AES-GCM under the master key), so it cannot have been altered. Key
    material imported from outside must be checked when it is imported, never here."""
    return serialization.load_der_private_key(
        material, password=None, unsafe_skip_rsa_key_validation=True
    )


def public_key_der(material: bytes) -> bytes:
    """The SubjectPublicKeyInfo (DER) of a private key's public half."""
    return (
        _private(material)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def load_public(der: bytes) -> PublicKeyTypes:
    return serialization.load_der_public_key(der)


# -- sign and verify --------------------------------------------------------------------------


def _pss(algorithm: str) -> padding.PSS:
    digest = _hash_of(algorithm)
    return padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)


def sign(material: bytes, algorithm: str, message: bytes, message_type: str) -> bytes:
    """A signature over `message` (RAW), the digest `message` (DIGEST) or mu (EXTERNAL_MU)."""
    key = _private(material)
    if isinstance(key, rsa.RSAPrivateKey):
        chosen = _prehashed_or_hash(algorithm, message_type)
        pad = _pss(algorithm) if "_PSS_" in algorithm else padding.PKCS1v15()
        return key.sign(message, pad, chosen)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(_prehashed_or_hash(algorithm, message_type)))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    if isinstance(key, mldsa.MLDSA44PrivateKey | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey):
        return key.sign_mu(message) if message_type == "EXTERNAL_MU" else key.sign(message)
    raise ValueError(f"a {type(key).__name__} does not sign")


def verify(
    public_der: bytes, algorithm: str, message: bytes, message_type: str, signature: bytes
) -> bool:
    key = load_public(public_der)
    try:
        if isinstance(key, rsa.RSAPublicKey):
            chosen = _prehashed_or_hash(algorithm, message_type)
            pad = _pss(algorithm) if "_PSS_" in algorithm else padding.PKCS1v15()
            key.verify(signature, message, pad, chosen)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(_prehashed_or_hash(algorithm, message_type)))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        elif isinstance(
            key, mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey
        ):
            if message_type == "EXTERNAL_MU":
                key.verify_mu(signature, message)
            else:
                key.verify(signature, message)
        else:
            raise ValueError(f"a {type(key).__name__} does not verify")
    except InvalidSignature:
        return False
    return True


def _prehashed_or_hash(algorithm: str, message_type: str) -> hashes.HashAlgorithm | Prehashed:
    digest = _hash_of(algorithm)
    return Prehashed(digest) if message_type == "DIGEST" else digest


# -- RSA encryption ---------------------------------------------------------------------------


def _oaep(algorithm: str) -> padding.OAEP:
    digest: hashes.HashAlgorithm = (
        hashes.SHA1() if algorithm == "RSAES_OAEP_SHA_1" else hashes.SHA256()  # noqa: S303
    )
    return padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)


def rsa_encrypt(public_der: bytes, algorithm: str, plaintext: bytes) -> bytes:
    key = load_public(public_der)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA key")
    return key.encrypt(plaintext, _oaep(algorithm))


def rsa_decrypt(material: bytes, algorithm: str, ciphertext: bytes) -> bytes | None:
    """The plaintext, or None when the ciphertext does not open (wrong key, algorithm, damage)."""
    key = _private(material)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA key")
    try:
        return key.decrypt(ciphertext, _oaep(algorithm))
    except ValueError:
        return None


# -- HMAC, ECDH, ML-KEM -----------------------------------------------------------------------


def mac(key: bytes, algorithm: str, message: bytes) -> bytes:
    return hmac.digest(key, message, _hash_of(algorithm).name)


def verify_mac(key: bytes, algorithm: str, message: bytes, tag: bytes) -> bool:
    return hmac.compare_digest(mac(key, algorithm, message), tag)


def derive_shared_secret(material: bytes, peer_public_der: bytes) -> bytes:
    """ECDH: the raw shared secret of our private key and the peer's public key (same curve)."""
    key = _private(material)
    peer = load_public(peer_public_der)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
        peer, ec.EllipticCurvePublicKey
    ):
        raise ValueError("ECDH needs two elliptic-curve keys")
    if peer.curve.name != key.curve.name:
        raise ValueError("the peer's public key is on another curve")
    return key.exchange(ec.ECDH(), peer)


def encapsulate(public_der: bytes) -> tuple[bytes, bytes]:
    """ML-KEM: (shared secret, ciphertext) for the holder of the private key."""
    key = load_public(public_der)
    if not isinstance(key, mlkem.MLKEM768PublicKey | mlkem.MLKEM1024PublicKey):
        raise ValueError("not an ML-KEM key")
    return key.encapsulate()


def decapsulate(material: bytes, ciphertext: bytes) -> bytes:
    key = _private(material)
    if not isinstance(key, mlkem.MLKEM768PrivateKey | mlkem.MLKEM1024PrivateKey):
        raise ValueError("not an ML-KEM key")
    return key.decapsulate(ciphertext)
