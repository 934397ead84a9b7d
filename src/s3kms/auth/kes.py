"""KES identities: who a client certificate is, KES API keys, and the principal of an identity.

A KES client is named by its *identity*: the lower-case hex SHA-256 of the DER
SubjectPublicKeyInfo of the certificate it presented in the TLS handshake (minio/kes `auth.go`,
`identifyRequest`: `sha256.Sum256(cert.RawSubjectPublicKeyInfo)`). The CA chain plays no part:
the handshake's CertificateVerify proves that the client holds the private key of that public
key, and the identity pins the key itself (docs/kes.md#tls). `identity_of` hashes the SPKI bytes
exactly as they stand in the certificate (Go's `RawSubjectPublicKeyInfo`), never a re-encoding.

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
import hashlib
import hmac
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from s3kms.auth.identity import Authenticator, Principal
from s3kms.users import KES_IDENTITY_RE

API_KEY_PREFIX = "kes:v1:"
_ED25519_TYPE = 0
_SEED_SIZE = 32


def _element(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start of content, end of element) of the DER element at `pos` (before `end`)."""
    if pos + 2 > end:
        raise ValueError("truncated DER")
    tag, first = data[pos], data[pos + 1]
    if first < 0x80:
        length, head = first, 2
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or pos + 2 + count > end:
            raise ValueError("bad DER length")
        length, head = int.from_bytes(data[pos + 2 : pos + 2 + count], "big"), 2 + count
    stop = pos + head + length
    if stop > end:
        raise ValueError("truncated DER")
    return tag, pos + head, stop


def spki_of(certificate_der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of an X.509 certificate, as the bytes stand in it (RFC 5280:
    tbsCertificate = [0] version, serial, signature, issuer, validity, subject, SPKI, ...)."""
    end = len(certificate_der)
    tag, start, stop = _element(certificate_der, 0, end)
    if tag != 0x30:
        raise ValueError("not a certificate")
    tag, pos, tbs_end = _element(certificate_der, start, stop)
    if tag != 0x30:
        raise ValueError("not a certificate")
    tag, _, after = _element(certificate_der, pos, tbs_end)
    if tag == 0xA0:  # the explicit version
        pos = after
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        _, _, pos = _element(certificate_der, pos, tbs_end)
    tag, _, stop = _element(certificate_der, pos, tbs_end)
    if tag != 0x30:
        raise ValueError("no SubjectPublicKeyInfo")
    return certificate_der[pos:stop]


def identity_of(certificate_der: bytes) -> str:
    """The KES identity of a certificate (DER): hex SHA-256 of its SubjectPublicKeyInfo."""
    return hashlib.sha256(spki_of(certificate_der)).hexdigest()


def identity_of_spki(spki_der: bytes) -> str:
    return hashlib.sha256(spki_der).hexdigest()


def normalize_identity(text: str) -> str:
    """An identity as s3kms stores it (lower-case hex); ValueError for anything else."""
    value = text.strip().lower()
    if not KES_IDENTITY_RE.fullmatch(value):
        raise ValueError("a KES identity is 64 hexadecimal digits (the SHA-256 of a public key)")
    return value


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
        users = self._auth.users
        access = users.user_for_kes_identity(identity) if users is not None else None
        if access is None:
            return None
        return self._auth.principal_for(access, source_ip=source_ip, secure=True)
