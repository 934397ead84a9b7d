"""The metrics token: a bearer token that only lets its holder scrape `/metrics`.

Prometheus cannot sign a scrape with SigV4, but it can send `Authorization: Bearer <token>`
(`authorization.credentials_file` in a scrape config). The token names a user and proves its
secret without containing it:

    s3kms-metrics-v1.<access key, base64url>.<HMAC-SHA256(secret key, LABEL + access key), base64url>

so it is derived, not stored: `s3kms metrics token` prints it from the same credentials, every
node and worker checks it with the user's secret, and it changes when the secret does. Whoever
holds it can scrape the metrics as that user, and do nothing else: the server accepts it on
`/metrics` only, where the user's policies must still allow `admin:Prometheus`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

PREFIX = "s3kms-metrics-v1"
_LABEL = b"s3kms metrics token v1\x00"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(access_key: str, secret_key: str) -> bytes:
    return hmac.digest(secret_key.encode(), _LABEL + access_key.encode(), hashlib.sha256)


def derive(access_key: str, secret_key: str) -> str:
    """The metrics token of these credentials."""
    return f"{PREFIX}.{_b64(access_key.encode())}.{_b64(_mac(access_key, secret_key))}"


def access_key_of(token: str) -> tuple[str, bytes] | None:
    """(the access key a token names, its MAC), or None when it is not a metrics token."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX or len(token) > 1024:
        return None
    try:
        access_key = _unb64(parts[1]).decode()
        mac = _unb64(parts[2])
    except (binascii.Error, ValueError):
        return None
    return access_key, mac


def verify(access_key: str, mac: bytes, secret_key: str) -> bool:
    return hmac.compare_digest(mac, _mac(access_key, secret_key))
