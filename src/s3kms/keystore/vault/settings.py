"""How to reach the Vault/OpenBao cluster that holds the keys: `VaultSettings`, and the redaction of
the credentials an address may carry.

The app's configuration (`s3kms.config`) parses flags, variables, the TOML file and the
`/kms/configure` body into a `VaultSettings` and imports it from here; this module imports nothing
of the app's configuration. `validate()` is what the keystore requires of settings before it opens
a connection, however they were made (parsed, read from an older `kms-config.json`, or built
directly in code).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from s3kms.errors import InvalidRequest

CREDENTIALS_IN_ADDRESS = (
    "vault_address must not contain credentials (user:password@); use vault_token or AppRole"
)
METADATA_CACHE_OUT_OF_RANGE = "vault_metadata_cache_seconds must be a number in [0, 60]"
# The userinfo of any URL in a text: from "://" to the last "@" before a space.
_URL_USERINFO_RE = re.compile(r"://\S*@")


def redact_address(address: str) -> str:
    """`address` with a `user:password@` part replaced by `***@` (for messages, logs, repr)."""
    if "@" not in address:
        return address
    scheme, sep, rest = address.partition("://")
    host = (rest if sep else address).rpartition("@")[2]
    return f"{scheme}://***@{host}" if sep else f"***@{host}"


def redact_urls(text: str) -> str:
    """`text` with the userinfo of every URL in it replaced by `***` (an error from a library
    may quote the URL it was given)."""
    return _URL_USERINFO_RE.sub("://***@", text)


def checked_metadata_cache_seconds(value: object) -> float:
    """`value` as `VaultSettings.metadata_cache_seconds`: a number of seconds from 0 (no cache)
    to 60, else InvalidRequest."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 60:
        raise InvalidRequest(METADATA_CACHE_OUT_OF_RANGE)  # NaN included
    return float(value)


def _hidden(value: object) -> str:
    return "<hidden>" if value else "None"


@dataclass(frozen=True)
class VaultSettings:
    """How to reach the Vault/OpenBao cluster that holds the keys."""

    addresses: tuple[str, ...]
    token: str | None = field(default=None, repr=False)
    namespace: str | None = None
    mount_path: str = "transit"
    kv_mount: str = "secret"
    kv_prefix: str = "s3kms"
    app_role_id: str | None = None
    app_role_secret_id: str | None = field(default=None, repr=False)
    # Bounds one request to Vault (each try); a safe-to-resend request is retried on other
    # addresses within 2 x this (see keystore/vault/transport.py for the whole budget).
    timeout_seconds: float = 10.0
    ca_cert: str | None = None
    skip_tls_verify: bool = False
    # Bounds opening a connection (TCP + TLS): an address that does not accept one in this time
    # counts as down, like one that refuses.
    connect_timeout_seconds: float = 2.0
    # On the crypto path a node may use a key's metadata (its state) read at most this long ago,
    # counted from the read's start; writes through the node itself drop its copy at once, and
    # management reads are never cached. 0: every request reads KV.
    metadata_cache_seconds: float = 1.0

    @property
    def endpoint(self) -> str:
        """The addresses for display (`/kms/status`): never with a userinfo part."""
        return ",".join(redact_address(a) for a in self.addresses)

    def validate(self) -> None:
        """Raise InvalidRequest unless these settings name an address without credentials, a
        token or an AppRole, and a metadata cache window from 0 to 60 seconds (checked before any
        connection is opened)."""
        if not self.addresses:
            raise InvalidRequest("no Vault address configured")
        if any("@" in a for a in self.addresses):
            # s3kms.config.parse_vault_addresses refuses these; settings may also come from an
            # older kms-config.json or be built directly. An HTTP client may send them as Basic auth.
            raise InvalidRequest(CREDENTIALS_IN_ADDRESS)
        if self.token is None and (self.app_role_id is None or self.app_role_secret_id is None):
            raise InvalidRequest("a Vault token or an AppRole role_id and secret_id is required")
        checked_metadata_cache_seconds(self.metadata_cache_seconds)

    def __repr__(self) -> str:
        addresses = tuple(redact_address(a) for a in self.addresses)
        return (
            f"VaultSettings(addresses={addresses!r}, token={_hidden(self.token)}, "
            f"namespace={self.namespace!r}, mount_path={self.mount_path!r}, "
            f"app_role_id={self.app_role_id!r}, "
            f"app_role_secret_id={_hidden(self.app_role_secret_id)}, "
            f"metadata_cache_seconds={self.metadata_cache_seconds!r})"
        )
