"""KMIP identities: the principal of a KMIP client certificate.

A KMIP client is named as a KES client is (auth/certificates.py): the lower-case hex SHA-256 of
the SubjectPublicKeyInfo of the certificate it presented in the TLS handshake. The identity is
the user it is attached to (`users.UserStore`, `kmip_identities`; `s3kms kmip identity add`),
with that user's identity policies and rate limit. KMIP has no admin identity: root never
speaks KMIP, and an identity attached to no user is refused.

KMIP identities are independent of KES identities: the same certificate may be a KES identity
of one user and a KMIP identity of another (or of the same), each surface resolving it on its own.
"""

from __future__ import annotations

from s3kms.auth.identity import Authenticator, Principal


class KmipAuthenticator:
    """A KMIP identity -> the principal of the user it is attached to, or None (unknown)."""

    def __init__(self, auth: Authenticator) -> None:
        self._auth = auth

    def principal(self, identity: str, *, source_ip: str | None) -> Principal | None:
        """The caller: the user the identity is attached to (its policies; the rate limit as on
        the other surfaces), None for an identity attached to no user. Raises SlowDown when the
        user is over its rate limit."""
        return self._auth.principal_for_identity("kmip", identity, source_ip=source_ip)

    def secret_of(self, principal: Principal) -> str | None:
        """The secret key of the caller's user: a request header's Username and Password
        credential must name it (protocols/kmip/api.py)."""
        users = self._auth.users
        return users.secret_for(principal.access_key) if users is not None else None
