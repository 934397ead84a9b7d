"""KES identities: KES API keys, and the principal of an identity.

A KES client is named by its *identity*: the lower-case hex SHA-256 of the DER
SubjectPublicKeyInfo of the certificate it presented in the TLS handshake (minio/kes `auth.go`,
`identifyRequest`: `sha256.Sum256(cert.RawSubjectPublicKeyInfo)`; `auth/certificates.py`
computes it). The CA chain plays no part: the handshake's CertificateVerify proves that the
client holds the private key of that public key, and the identity pins the key itself
(docs/kes.md#tls).

An API key (minio/kms-go `kes/apikey.go`) is `kes:v1:` + base64(0x00 || a 32-byte Ed25519 seed);
the client turns it into a self-signed Ed25519 certificate, so its identity is the hash of the
Ed25519 public key's SPKI. `APIKey` parses and generates them; its text is a secret and never in
its `repr()`.

Identities map to s3kms principals (`KesAuthenticator`): the admin identity given at start
(`--kes-admin-identity`) is root; any other identity is the user it is attached to
(`users.UserStore`, `s3kms kes identity add`), with that user's identity policies.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from s3kms.auth.certificates import identity_of_spki
from s3kms.auth.identity import Authenticator, Principal

API_KEY_PREFIX = "kes:v1:"
_ED25519_TYPE = 0
_SEED_SIZE = 32


class APIKey:
    """A KES API key: an Ed25519 seed. `text()` is the secret `kes:v1:...` form."""

    __slots__ = ("_seed", "identity")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != _SEED_SIZE:
            raise ValueError("kes: invalid API key: invalid length")
        self._seed = seed
        self.identity = identity_of_spki(
            self.private_key()
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    @classmethod
    def generate(cls) -> APIKey:
        return cls(os.urandom(_SEED_SIZE))

    @classmethod
    def parse(cls, text: str) -> APIKey:
        """kms-go's ParseAPIKey: the `kes:v1:` prefix is optional, then standard base64."""
        body = text[len(API_KEY_PREFIX) :] if text.startswith(API_KEY_PREFIX) else text
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("kes: invalid API key: not base64") from None
        if len(raw) != 1 + _SEED_SIZE:
            raise ValueError("kes: invalid API key: invalid length")
        if raw[0] != _ED25519_TYPE:
            raise ValueError("kes: invalid API key: unsupported type")
        return cls(raw[1:])

    def private_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self._seed)

    def text(self) -> str:
        """The secret form, `kes:v1:<base64>`: shown once, never logged."""
        raw = bytes([_ED25519_TYPE]) + self._seed
        return API_KEY_PREFIX + base64.b64encode(raw).decode()

    def __repr__(self) -> str:
        return f"APIKey(identity={self.identity!r})"


class KesAuthenticator:
    """A KES identity -> the s3kms principal it stands for, or None (an unknown identity)."""

    def __init__(self, auth: Authenticator, admin_identity: str | None) -> None:
        self._auth = auth
        self.admin_identity = admin_identity

    def principal(self, identity: str, *, source_ip: str | None) -> Principal | None:
        """The caller: root for the admin identity, else the user the identity is attached to
        (its policies; the rate limit as on the other surfaces). Raises SlowDown when over it."""
        admin = self.admin_identity
        if admin is not None and hmac.compare_digest(identity, admin):
            return self._auth.principal_for(None, source_ip=source_ip, secure=True)
        return self._auth.principal_for_identity("kes", identity, source_ip=source_ip)
