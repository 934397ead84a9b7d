"""AES-256-GCM seal and open: the one AEAD every s3kms ciphertext uses.

Output layout is `nonce (12) || ciphertext || tag (16)`, the same layout Vault transit uses for
`aes256-gcm96`, so both backends fill the same ciphertext blob.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from s3kms.errors import InvalidCiphertext

NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32


def new_key() -> bytes:
    return os.urandom(KEY_SIZE)


def seal(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    return nonce + aead.encrypt(nonce, plaintext, aad)


def open_sealed(aead: AESGCM, sealed: bytes, aad: bytes) -> bytes:
    """Decrypt `seal`'s output; every failure is the same InvalidCiphertext."""
    if len(sealed) < NONCE_SIZE + TAG_SIZE:
        raise InvalidCiphertext
    try:
        return aead.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], aad)
    except InvalidTag:
        raise InvalidCiphertext from None
