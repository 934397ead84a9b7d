"""Grant ids and grant tokens: what CreateGrant answers, and what a token names.

A grant id is 64 lowercase hex characters (256 random bits, like AWS's). A grant token names its
key and grant, so RetireGrant can find the grant from the token alone and an authorisation can
tell which grant a request's GrantTokens mean:

    base64url(0x01 | grant id (32 bytes) | nonce (16 bytes) | key id (UTF-8)), without padding

Each CreateGrant answers a new token (the nonce), as AWS does; every token of a grant names it.
It is not a secret and grants nothing by itself: a token counts only while its grant exists.
"""

from __future__ import annotations

import base64
import binascii
import os

_VERSION = b"\x01"
GRANT_ID_BYTES = 32
_NONCE_BYTES = 16
_HEAD = 1 + GRANT_ID_BYTES + _NONCE_BYTES
MAX_TOKEN_LENGTH = 8192  # the longest GrantToken AWS's model accepts


def new_grant_id() -> str:
    return os.urandom(GRANT_ID_BYTES).hex()


def encode(key_id: str, grant_id: str) -> str:
    raw = _VERSION + bytes.fromhex(grant_id) + os.urandom(_NONCE_BYTES) + key_id.encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(token: str) -> tuple[str, str] | None:
    """(key id, grant id) of a token s3kms issued, or None for anything else."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) <= _HEAD or raw[:1] != _VERSION:
        return None
    try:
        key_id = raw[_HEAD:].decode()
    except UnicodeDecodeError:
        return None
    return key_id, raw[1 : 1 + GRANT_ID_BYTES].hex()
