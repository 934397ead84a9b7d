"""The identity of a client certificate: the lower-case hex SHA-256 of its SubjectPublicKeyInfo.

The mutual-TLS surfaces (the KES API, docs/kes.md; the KMIP API, docs/kmip.md) name a client by
the public key of the certificate it presented in the TLS handshake, as minio/kes does (`auth.go`,
`identifyRequest`: `sha256.Sum256(cert.RawSubjectPublicKeyInfo)`). The handshake's
CertificateVerify proves that the client holds the private key of that public key, and the
identity pins the key itself. `identity_of` hashes the SPKI bytes exactly as they stand in the
certificate (Go's `RawSubjectPublicKeyInfo`), never a re-encoding.

Identities are attached to users per surface (`users.UserStore`: `kes_identities`,
`kmip_identities`); `auth/kes.py` and `auth/kmip.py` map them to principals.
"""

from __future__ import annotations

import hashlib
import re

# An identity as s3kms stores it: 64 lower-case hexadecimal digits.
IDENTITY_RE = re.compile(r"[0-9a-f]{64}")


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
    """The identity of a certificate (DER): hex SHA-256 of its SubjectPublicKeyInfo."""
    return hashlib.sha256(spki_of(certificate_der)).hexdigest()


def identity_of_spki(spki_der: bytes) -> str:
    return hashlib.sha256(spki_der).hexdigest()


def normalize_identity(text: str) -> str:
    """An identity as s3kms stores it (lower-case hex); ValueError for anything else."""
    value = text.strip().lower()
    if not IDENTITY_RE.fullmatch(value):
        raise ValueError(
            "an identity is 64 hexadecimal digits (the SHA-256 of a certificate's public key)"
        )
    return value
