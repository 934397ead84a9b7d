"""The s3kms ciphertext blob, format version 1 (documented byte by byte in docs/ciphertext-format.md).

    offset  size  field
    0       4     magic "S3KC"
    4       1     format version = 0x01
    5       1     L = length of the key id (1..255)
    6       L     key id, ASCII
    6+L     4     key version, big-endian u32 (>= 1)
    10+L    12    AES-GCM nonce
    22+L    n     ciphertext
    22+L+n  16    GCM tag

The AEAD associated data is `header || canonical_context`, where header is bytes 0..6+L (magic,
format version, key id): the key id and the encryption context are authenticated, and the key
version needs no binding because each version is a different AES key. Local and Vault backends
write the same blob: Vault transit's `aes256-gcm96` output is also `nonce || ciphertext || tag`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from s3kms.crypto.aead import NONCE_SIZE, TAG_SIZE
from s3kms.errors import InvalidCiphertext

MAGIC = b"S3KC"
FORMAT_V1 = 1
_VERSION = struct.Struct(">I")
_MAX_KEY_ID = 255


@dataclass(frozen=True, slots=True)
class Blob:
    key_id: str
    key_version: int
    sealed: bytes  # nonce || ciphertext || tag

    def aad(self, context: bytes) -> bytes:
        return header(self.key_id) + context

    def encode(self) -> bytes:
        return assemble(header(self.key_id), self.key_version, self.sealed)


def assemble(key_header: bytes, key_version: int, sealed: bytes) -> bytes:
    """The blob from its parts, for a caller that already holds `header(key_id)`."""
    return key_header + _VERSION.pack(key_version) + sealed


def header(key_id: str) -> bytes:
    raw = key_id.encode("ascii")
    if not 0 < len(raw) <= _MAX_KEY_ID:
        raise ValueError("key id length out of range")
    return MAGIC + bytes((FORMAT_V1, len(raw))) + raw


def decode(data: bytes) -> Blob:
    """Parse a blob; anything malformed is InvalidCiphertext, like a failed tag check."""
    if len(data) < 6 or data[:4] != MAGIC or data[4] != FORMAT_V1:
        raise InvalidCiphertext
    n = data[5]
    body = 6 + n
    if n == 0 or len(data) < body + 4 + NONCE_SIZE + TAG_SIZE:
        raise InvalidCiphertext
    try:
        key_id = data[6:body].decode("ascii")
    except UnicodeDecodeError:
        raise InvalidCiphertext from None
    (version,) = _VERSION.unpack_from(data, body)
    if version == 0:
        raise InvalidCiphertext
    return Blob(key_id, version, data[body + 4 :])
