"""What a request says that policy conditions and grant constraints may test.

A protocol handler builds one `Facts` per authorised request from the members it parsed; the
evaluator adds what it knows itself: the caller (`aws:PrincipalArn`, `kms:CallerAccount`, ...),
the transport (`aws:SourceIp`, `aws:SecureTransport`), the time, and the key (`kms:KeySpec`,
`aws:ResourceTag/...`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_NOTHING: Mapping[str, str | tuple[str, ...]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Facts:
    # The request's EncryptionContext (kms:EncryptionContext:<key>, kms:EncryptionContextKeys,
    # and the grant constraints); None when the request has none.
    encryption_context: Mapping[str, str] | None = None
    # Other request condition keys, lower-cased: "kms:signingalgorithm" -> "ECDSA_SHA_256",
    # "kms:grantoperations" -> ("Encrypt", "Decrypt"), "aws:requesttag/team" -> "blue", ...
    values: Mapping[str, str | tuple[str, ...]] = field(default_factory=lambda: _NOTHING)
    # The request's GrantTokens: grants they name count even before the key's metadata shows them.
    grant_tokens: tuple[str, ...] = ()


NO_FACTS = Facts()
