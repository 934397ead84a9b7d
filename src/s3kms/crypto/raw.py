"""Cryptography with raw key material in the modes a caller names: what KMIP's Encrypt, Decrypt,
Sign, SignatureVerify, MAC, MACVerify and DeriveKey compute (s3kms's own operations use
aead.py's AES-GCM envelope instead).

Parameters are plain words (`CipherParams`), so this module knows no protocol. Every failure a
caller can cause is ValueError with a message that names no secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives import padding as block_padding
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA1": hashes.SHA1,
    "SHA224": hashes.SHA224,
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}
MAX_DATA = 1 << 20  # bytes a single operation takes


@dataclass(frozen=True, slots=True)
class CipherParams:
    mode: str | None = None  # CBC | ECB | CTR | GCM (symmetric)
    padding: str | None = None  # NONE | PKCS5 (symmetric); OAEP | PKCS1v15 | PSS (RSA)
    hash: str | None = None  # SHA1 .. SHA512 (OAEP, PSS, PKCS1v15 signatures, ECDSA, HMAC)
    tag_length: int = 16  # GCM, bytes


def _hash(name: str | None, default: str = "SHA256") -> hashes.HashAlgorithm:
    chosen = name or default
    if chosen not in HASHES:
        raise ValueError(f"hashing algorithm {chosen} is not supported")
    return HASHES[chosen]()


def _size(data: bytes) -> None:
    if len(data) > MAX_DATA:
        raise ValueError(f"data over {MAX_DATA} bytes")


# -- symmetric ---------------------------------------------------------------------------------


def _iv_length(mode: str) -> int:
    return {"CBC": 16, "CTR": 16, "GCM": 12, "ECB": 0}[mode]


def _mode(
    mode: str, iv: bytes
) -> modes.ModeWithInitializationVector | modes.ModeWithNonce | modes.ECB:
    if mode == "CBC":
        return modes.CBC(iv)
    if mode == "CTR":
        return modes.CTR(iv)
    if mode == "ECB":  # a KMIP client may ask for it; it is its choice, not s3kms's
        return modes.ECB()  # noqa: S305
    raise ValueError(f"block cipher mode {mode} is not supported")


def symmetric_encrypt(
    key: bytes, params: CipherParams, data: bytes, iv: bytes | None, aad: bytes | None = None
) -> tuple[bytes, bytes | None, bytes | None]:
    """(ciphertext, the IV used when the caller gave none, the GCM tag)."""
    _size(data)
    mode = params.mode or "CBC"
    if mode not in ("CBC", "ECB", "CTR", "GCM"):
        raise ValueError(f"block cipher mode {mode} is not supported")
    made_iv = None
    if iv is None and mode != "ECB":
        iv = made_iv = os.urandom(_iv_length(mode))
    if mode == "GCM":
        if not 12 <= params.tag_length <= 16:
            raise ValueError("the GCM tag length is 12 to 16 bytes")
        assert iv is not None
        sealed = AESGCM(key).encrypt(iv, data, aad)  # the tag is its last 16 bytes
        return sealed[:-16], made_iv, sealed[-16:][: params.tag_length]
    if params.padding == "PKCS5" or (params.padding is None and mode in ("CBC", "ECB")):
        padder = block_padding.PKCS7(128).padder()
        data = padder.update(data) + padder.finalize()
    elif mode in ("CBC", "ECB") and len(data) % 16:
        raise ValueError("without padding the data must be a multiple of 16 bytes")
    encryptor = Cipher(algorithms.AES(key), _mode(mode, iv or b"")).encryptor()
    return encryptor.update(data) + encryptor.finalize(), made_iv, None


def symmetric_decrypt(
    key: bytes,
    params: CipherParams,
    data: bytes,
    iv: bytes | None,
    aad: bytes | None = None,
    tag: bytes | None = None,
) -> bytes:
    _size(data)
    mode = params.mode or "CBC"
    if mode != "ECB" and iv is None:
        raise ValueError("the IV/Counter/Nonce is missing")
    try:
        if mode == "GCM":
            if tag is None or not 12 <= len(tag) <= 16:
                raise ValueError("the authenticated encryption tag is missing or malformed")
            assert iv is not None
            gcm = Cipher(algorithms.AES(key), modes.GCM(iv, tag, min_tag_length=12))
            opener = gcm.decryptor()
            if aad:
                opener.authenticate_additional_data(aad)
            return opener.update(data) + opener.finalize()
        decryptor = Cipher(algorithms.AES(key), _mode(mode, iv or b"")).decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        if params.padding == "PKCS5" or (params.padding is None and mode in ("CBC", "ECB")):
            unpadder = block_padding.PKCS7(128).unpadder()
            plain = unpadder.update(plain) + unpadder.finalize()
        return plain
    except InvalidTag:
        raise ValueError("the ciphertext is not authentic") from None
    except ValueError as exc:
        raise ValueError(f"decryption failed: {exc}") from None


def key_wrap(wrapping_key: bytes, material: bytes) -> bytes:
    """NIST SP 800-38F AES Key Wrap (RFC 3394; with padding, RFC 5649, for other lengths)."""
    if len(material) % 8 == 0 and len(material) >= 16:
        return keywrap.aes_key_wrap(wrapping_key, material)
    return keywrap.aes_key_wrap_with_padding(wrapping_key, material)


def key_unwrap(wrapping_key: bytes, wrapped: bytes) -> bytes:
    try:
        return keywrap.aes_key_unwrap(wrapping_key, wrapped)
    except keywrap.InvalidUnwrap:
        try:
            return keywrap.aes_key_unwrap_with_padding(wrapping_key, wrapped)
        except keywrap.InvalidUnwrap:
            raise ValueError("the wrapped key does not unwrap under the wrapping key") from None


# -- asymmetric --------------------------------------------------------------------------------


def _private(
    der: bytes,
) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(
        key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)
    ):
        raise ValueError("the key is not an RSA, EC or Ed25519 key")
    return key


def _public(der: bytes) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey:
    key = serialization.load_der_public_key(der)
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
        raise ValueError("the key is not an RSA, EC or Ed25519 key")
    return key


def public_of(private_der: bytes) -> bytes:
    """The SubjectPublicKeyInfo DER of a PKCS#8 private key."""
    return (
        _private(private_der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _rsa_padding(params: CipherParams) -> padding.AsymmetricPadding:
    algorithm = _hash(params.hash, "SHA1" if params.padding in (None, "OAEP") else "SHA256")
    if params.padding in (None, "OAEP"):
        return padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)
    if params.padding == "PKCS1v15":
        return padding.PKCS1v15()
    raise ValueError(f"padding {params.padding} is not supported for RSA encryption")


def rsa_encrypt(public_der: bytes, params: CipherParams, data: bytes) -> bytes:
    key = _public(public_der)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the key is not an RSA key")
    try:
        return key.encrypt(data, _rsa_padding(params))
    except ValueError:
        raise ValueError("the data is too long for the key and padding") from None


def rsa_decrypt(private_der: bytes, params: CipherParams, data: bytes) -> bytes:
    key = _private(private_der)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the key is not an RSA key")
    try:
        return key.decrypt(data, _rsa_padding(params))
    except ValueError:
        raise ValueError("decryption failed") from None


def _signature_padding(
    params: CipherParams, algorithm: hashes.HashAlgorithm
) -> padding.AsymmetricPadding:
    if params.padding in (None, "PSS"):
        return padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.DIGEST_LENGTH)
    if params.padding == "PKCS1v15":
        return padding.PKCS1v15()
    raise ValueError(f"padding {params.padding} is not supported for RSA signatures")


def sign(private_der: bytes, params: CipherParams, data: bytes) -> bytes:
    _size(data)
    key = _private(private_der)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    algorithm = _hash(params.hash)
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, _signature_padding(params, algorithm), algorithm)
    return key.sign(data, ec.ECDSA(algorithm))


def verify(public_der: bytes, params: CipherParams, data: bytes, signature: bytes) -> bool:
    _size(data)
    key = _public(public_der)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        elif isinstance(key, rsa.RSAPublicKey):
            algorithm = _hash(params.hash)
            key.verify(signature, data, _signature_padding(params, algorithm), algorithm)
        else:
            key.verify(signature, data, ec.ECDSA(_hash(params.hash)))
    except InvalidSignature:
        return False
    return True


# -- MAC and derivation ------------------------------------------------------------------------


def mac(key: bytes, hash_name: str, data: bytes) -> bytes:
    _size(data)
    if hash_name not in HASHES:
        raise ValueError(f"hashing algorithm {hash_name} is not supported")
    return hmac.new(key, data, getattr(hashlib, hash_name.lower())).digest()


def pbkdf2(
    password: bytes, hash_name: str | None, salt: bytes, iterations: int, length: int
) -> bytes:
    if not 1 <= iterations <= 10_000_000:
        raise ValueError("the iteration count is 1 to 10,000,000")
    return PBKDF2HMAC(_hash(hash_name, "SHA1"), length, salt, iterations).derive(password)


def nist_800_108_counter(key: bytes, hash_name: str | None, data: bytes, length: int) -> bytes:
    """NIST SP 800-108 KDF in counter mode with HMAC: `data` is the fixed input (label and
    context as the caller built them), the counter a 32-bit prefix."""
    kdf = KBKDFHMAC(
        algorithm=_hash(hash_name),
        mode=Mode.CounterMode,
        length=length,
        rlen=4,
        llen=None,
        location=CounterLocation.BeforeFixed,
        label=None,
        context=None,
        fixed=data,
    )
    return kdf.derive(key)


def hkdf(key: bytes, hash_name: str | None, salt: bytes | None, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF: KMIP's HMAC derivation method (as PyKMIP computes it)."""
    return HKDF(_hash(hash_name), length, salt or None, info).derive(key)


def digest(hash_name: str | None, data: bytes) -> bytes:
    """KMIP's HASH derivation method: the digest of the data."""
    h = hashes.Hash(_hash(hash_name))
    h.update(data)
    return h.finalize()
