"""Authentication: one component that turns a signed request into a principal, or raises.

Handlers never see an unauthenticated request; failures raise the error tree's AuthError
subclasses, which each API surface renders in its own envelope.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from s3kms.clock import Clock
from s3kms.http import sigv4

ADMIN_SERVICES = frozenset({"s3", "kms"})
AWS_SERVICES = frozenset({"kms"})


@dataclass(frozen=True, slots=True)
class Principal:
    access_key: str
    is_root: bool


class Authenticator:
    def __init__(self, secrets: Mapping[str, str], root_access_key: str, region: str, clock: Clock):
        self._secrets = dict(secrets)
        self._root = root_access_key
        self._region = region
        self._clock = clock

    def authenticate(self, req: sigv4.RequestView, *, admin: bool) -> Principal:
        verified = sigv4.verify_request(
            req,
            lookup_secret=self._secrets.get,
            region=self._region,
            services=ADMIN_SERVICES if admin else AWS_SERVICES,
            now=self._clock.now(),
            s3_flavour=admin,
        )
        return Principal(verified.access_key, verified.access_key == self._root)
