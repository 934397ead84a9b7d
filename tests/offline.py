"""Checks a client makes offline, with `cryptography` alone: is this signature from that public key?

Shared by the key type tests, so every one of them holds s3kms to the same independent verifier
(AWS's conventions: PSS with MGF1 of the same hash and the salt as long as the hash; ECDSA DER).
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

HASHES = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}


def verify_signature(
    public: bytes | PublicKeyTypes, algorithm: str, message: bytes, signature: bytes
) -> None:
    """Raise cryptography's InvalidSignature unless `signature` signs `message` (DER or a key)."""
    key = serialization.load_der_public_key(public) if isinstance(public, bytes) else public
    digest = HASHES.get(algorithm.rsplit("_", 1)[1])
    if isinstance(key, rsa.RSAPublicKey):
        assert digest is not None
        pad = (
            padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            if "_PSS_" in algorithm
            else padding.PKCS1v15()
        )
        key.verify(signature, message, pad, digest)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        assert digest is not None
        key.verify(signature, message, ec.ECDSA(digest))
    elif isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(signature, message)
    else:
        assert isinstance(
            key, mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey
        )
        key.verify(signature, message)
