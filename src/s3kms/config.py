"""Configuration: the server's start-up settings and the KMS configuration the admin API changes.

`Settings` is read once at start from flags, environment variables and an optional TOML file
(flags win over the environment, which wins over the file). `KMSConfig` is what `/kms/configure`
sets; it persists in `<data-dir>/kms-config.json` (mode 0600, written atomically) so it survives a
restart. Secrets in either are hidden from `repr()`.

The Vault backend's settings type, `VaultSettings`, lives beside its keystore
(`s3kms.keystore.vault.settings`) and is imported from there: this module parses flags, variables,
the TOML file and the configure body into it; the keystore never imports this module.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Container, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from s3kms.errors import InvalidRequest
from s3kms.fsutil import write_private_file
from s3kms.keystore.vault.settings import (
    CREDENTIALS_IN_ADDRESS,
    VaultSettings,
    checked_metadata_cache_seconds,
    redact_address,
)
from s3kms.model import KEY_NAME_RE

KMS_CONFIG_FILE = "kms-config.json"


@dataclass(frozen=True)
class KMSConfig:
    """The configured backend: `local`, `vault`, or `none` (not configured)."""

    kms_type: str
    default_key_id: str | None = None
    vault: VaultSettings | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kms_type": self.kms_type, "default_key_id": self.default_key_id}
        if self.vault is not None:
            v = asdict(self.vault)
            v["addresses"] = list(self.vault.addresses)
            out["vault"] = v
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KMSConfig:
        vault = None
        if data.get("vault"):
            v = dict(data["vault"])
            v["addresses"] = tuple(v["addresses"])
            vault = VaultSettings(**v)
        return cls(data["kms_type"], data.get("default_key_id"), vault)


def load_kms_config(data_dir: Path) -> KMSConfig | None:
    path = data_dir / KMS_CONFIG_FILE
    if not path.exists():
        return None
    return KMSConfig.from_json(json.loads(path.read_text()))


def save_kms_config(data_dir: Path, config: KMSConfig) -> None:
    payload = json.dumps(config.to_json(), indent=2, sort_keys=True).encode()
    write_private_file(data_dir / KMS_CONFIG_FILE, payload)


# -- the configure body ---------------------------------------------------------------------------

_CONFIGURE_FIELDS = {
    "kms_type",
    "default_key_id",
    "vault_address",
    "vault_token",
    "vault_namespace",
    "vault_mount_path",
    "vault_kv_mount",
    "vault_kv_prefix",
    "vault_app_role_id",
    "vault_app_role_secret_id",
    "vault_timeout_seconds",
    "vault_connect_timeout_seconds",
    "vault_metadata_cache_seconds",
    "vault_ca_cert",
    "vault_skip_tls_verify",
    "allow_insecure",
}


def _opt_str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string")
    return value


def parse_vault_addresses(raw: str) -> tuple[str, ...]:
    """The comma-separated Vault addresses of the configure body, a flag, a variable or the TOML
    file. Messages never quote a `user:password@` part."""
    # Any "@" is refused before the list is split or a message quotes it: a password may hold
    # "," or "/", which would otherwise cut the address so that a piece of it looks harmless.
    if "@" in raw:
        raise InvalidRequest(CREDENTIALS_IN_ADDRESS)
    addresses = tuple(a.strip().rstrip("/") for a in raw.split(",") if a.strip())
    if not addresses:
        raise InvalidRequest("vault_address is required")
    for address in addresses:
        shown = redact_address(address)
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest(f"vault_address {shown!r} is not an http(s) URL")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise InvalidRequest(f"vault_address {shown!r} has an invalid port") from None
    return addresses


def _seconds(body: Mapping[str, Any], name: str, default: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 300:
        raise InvalidRequest(f"{name} must be a number in (0, 300]")
    return float(value)


def parse_configure_body(body: Any) -> KMSConfig:
    """Validate a `/kms/configure` body into a KMSConfig; every problem is KMSInvalidRequest."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    unknown = sorted(set(body) - _CONFIGURE_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}")
    kms_type = body.get("kms_type")
    if kms_type not in ("local", "vault"):
        raise InvalidRequest("kms_type must be 'local' or 'vault'")
    default_key_id = _opt_str(body, "default_key_id")
    if default_key_id is not None and not KEY_NAME_RE.fullmatch(default_key_id):
        raise InvalidRequest("default_key_id is not a valid key name")
    if kms_type == "local":
        extra = sorted(k for k in body if k.startswith("vault_"))
        if extra:
            raise InvalidRequest(f"field(s) {', '.join(extra)} apply only to kms_type vault")
        return KMSConfig("local", default_key_id)

    address = _opt_str(body, "vault_address")
    if address is None:
        raise InvalidRequest("vault_address is required for kms_type vault")
    addresses = parse_vault_addresses(address)  # first: its credentials error wins
    token = _opt_str(body, "vault_token")
    role_id = _opt_str(body, "vault_app_role_id")
    secret_id = _opt_str(body, "vault_app_role_secret_id")
    if (role_id is None) != (secret_id is None):
        raise InvalidRequest("vault_app_role_id and vault_app_role_secret_id go together")
    if token is None and role_id is None:
        raise InvalidRequest(
            "vault_token or vault_app_role_id/vault_app_role_secret_id is required"
        )
    timeout = _seconds(body, "vault_timeout_seconds", 10.0)
    connect_timeout = _seconds(body, "vault_connect_timeout_seconds", 2.0)
    # 0 is allowed here (no cache), unlike the timeouts.
    cache_seconds = checked_metadata_cache_seconds(body.get("vault_metadata_cache_seconds", 1.0))
    skip_verify = body.get("vault_skip_tls_verify", False)
    allow_insecure = body.get("allow_insecure", False)
    if not isinstance(skip_verify, bool) or not isinstance(allow_insecure, bool):
        raise InvalidRequest("vault_skip_tls_verify and allow_insecure must be booleans")
    if skip_verify and not allow_insecure:
        raise InvalidRequest("vault_skip_tls_verify requires allow_insecure: true")
    settings = VaultSettings(
        addresses=addresses,
        token=token,
        namespace=_opt_str(body, "vault_namespace"),
        mount_path=(_opt_str(body, "vault_mount_path") or "transit").strip("/"),
        kv_mount=(_opt_str(body, "vault_kv_mount") or "secret").strip("/"),
        kv_prefix=(_opt_str(body, "vault_kv_prefix") or "s3kms").strip("/"),
        app_role_id=role_id,
        app_role_secret_id=secret_id,
        timeout_seconds=timeout,
        ca_cert=_opt_str(body, "vault_ca_cert"),
        skip_tls_verify=skip_verify,
        connect_timeout_seconds=connect_timeout,
        metadata_cache_seconds=cache_seconds,
    )
    return KMSConfig("vault", default_key_id, settings)


# -- start-up settings ----------------------------------------------------------------------------

KMIP_PORT = 5696  # KMIP's registered port (IANA), what --kmip-address commonly names
KMIP_MAX_MESSAGE = 1024 * 1024  # the default largest TTLV request, in bytes
KMIP_MAX_MESSAGE_RANGE = (1024, 64 * 1024 * 1024)  # what kmip_max_message may be (1 KiB..64 MiB)


@dataclass(frozen=True)
class Settings:
    """Everything `s3kms server` needs, resolved once at start."""

    host: str = "127.0.0.1"
    port: int = 9000
    data_dir: Path = Path("s3kms-data")
    backend: str | None = None  # local | vault | none; None = the persisted config, else local
    region: str = "us-east-1"
    # The regions the AWS KMS API serves besides `region` (its home): a comma-separated list,
    # or "*" for any region name; "": the home region only (keystore/regional.py).
    regions: str = ""
    account_id: str = "000000000000"
    master_key_file: Path | None = None
    master_key: str | None = field(default=None, repr=False)
    root_user: str | None = None
    root_password: str | None = field(default=None, repr=False)
    workers: int = 1
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The KES API (docs/kes.md): HOST:PORT of its mutual-TLS listener (None: off), its
    # certificate (else tls_cert/tls_key) and the identity that acts as root.
    kes_address: str | None = None
    kes_tls_cert: Path | None = None
    kes_tls_key: Path | None = None
    kes_admin_identity: str | None = None
    # The KMIP API (docs/kmip.md): HOST:PORT of its mutual-TLS listener (None: off), its
    # certificate (else tls_cert/tls_key), the CA bundle client certificates must chain to (None:
    # any client certificate, its identity decides, as on the KES API) and the largest TTLV
    # request accepted, in bytes.
    kmip_address: str | None = None
    kmip_tls_cert: Path | None = None
    kmip_tls_key: Path | None = None
    kmip_ca_cert: Path | None = None
    kmip_max_message: int = KMIP_MAX_MESSAGE
    log_level: str = "info"
    log_format: str = "text"  # text | json (s3kms.logs)
    default_key_id: str | None = None
    maintenance_interval: float = 60.0  # seconds between due-deletion/rotation passes
    users_file: Path | None = None
    rate_limit: float = 0.0  # requests per second per access key; 0 = unlimited
    audit_log: str | None = None  # path, or "off"; default <data-dir>/audit/audit.log
    audit_fsync_interval: float = 1.0  # 0 = fsync every line before the response
    audit_max_bytes: int = 64 * 1024 * 1024
    audit_keep_files: int = 10  # rotated audit files kept; 0 = keep every one
    # Unauthenticated failures get lines at this rate (burst); the rest are counted in one line.
    audit_unauthenticated_rate: float = 1.0
    audit_unauthenticated_burst: int = 20
    # Connection limits, enforced before authentication (http/connection.py; docs/security.md).
    max_connections: int = 1024  # per worker process; lowered at start to fit RLIMIT_NOFILE
    max_request_line: int = 8 * 1024  # bytes of the request target; over it: 414
    max_header_bytes: int = 16 * 1024  # bytes of the header block; over it: 431
    max_headers: int = 100  # over it: 431
    max_body_bytes: int = 1024 * 1024  # over it: 413
    header_timeout: float = 10.0  # seconds for a request's head to arrive
    body_timeout: float = 30.0  # seconds for its body to arrive, once the head has
    keep_alive_timeout: float = 5.0  # idle seconds before a kept-alive connection is closed
    send_timeout: float = 30.0  # seconds a client may leave an answer unread
    metrics: str = "signed"  # GET /metrics: off | public | signed (s3kms.metrics.endpoint)
    # `s3kms server --dev`: a throwaway KMS for tests (loopback only, test/test root credentials,
    # POST /_s3kms/reset; server.serve and docs/configuration.md#dev-mode).
    dev: bool = False
    vault: VaultSettings | None = None

    def __post_init__(self) -> None:
        # Checked here, so that a bad value from the environment or the file is a usage error.
        if str(self.log_level).lower() not in LOG_LEVELS:
            raise ValueError(
                f"log_level must be one of {', '.join(LOG_LEVELS)}: {self.log_level!r}"
            )
        if str(self.log_format).lower() not in LOG_FORMATS:
            raise ValueError(f"log_format must be text or json, not {self.log_format!r}")
        served_regions(self)  # (raises ValueError for a bad list)
        if self.metrics not in METRICS_MODES:
            raise ValueError(f"metrics must be off, public or signed, not {self.metrics!r}")
        for name in _POSITIVE_LIMITS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a positive number, not {value!r}")


# A region name as AWS's model has it (RegionType): us-east-1, eu-central-2, us-gov-west-1.
REGION_RE = re.compile(r"([a-z]+-){2,3}[0-9]+")


class AnyRegion:
    """`regions = "*"`: every region name (dev mode's "every region")."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and len(name) <= 32 and REGION_RE.fullmatch(name) is not None


def served_regions(settings: Settings) -> Container[str] | None:
    """The regions the AWS KMS API serves, the home region included: a set, or `AnyRegion`;
    None when it serves its home region only (what `regions = ""` means)."""
    names = [n.strip() for n in settings.regions.split(",") if n.strip()]
    if "*" in names:
        if names != ["*"]:
            raise ValueError('regions: "*" stands alone (any region), not in a list')
        return AnyRegion()
    for name in names:
        if len(name) > 32 or not REGION_RE.fullmatch(name):
            raise ValueError(f"regions: {name!r} is not a region name (like eu-west-1)")
    served = frozenset({settings.region, *names})
    return None if served == {settings.region} else served


def split_address(text: str) -> tuple[str, int]:
    """HOST:PORT (`[v6]:PORT` too) -> (host, port); ValueError for anything else."""
    host, _, port = text.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def kes_tls_files(settings: Settings) -> tuple[Path, Path] | None:
    """The KES listener's certificate and key: its own, else the main port's."""
    return _listener_tls_files(settings, settings.kes_tls_cert, settings.kes_tls_key)


def kmip_tls_files(settings: Settings) -> tuple[Path, Path] | None:
    """The KMIP listener's certificate and key: its own, else the main port's."""
    return _listener_tls_files(settings, settings.kmip_tls_cert, settings.kmip_tls_key)


def _listener_tls_files(
    settings: Settings, cert: Path | None, key: Path | None
) -> tuple[Path, Path] | None:
    if cert is not None and key is not None:
        return cert, key
    if settings.tls_cert is not None and settings.tls_key is not None:
        return settings.tls_cert, settings.tls_key
    return None


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
METRICS_MODES = ("off", "public", "signed")

_POSITIVE_LIMITS = (
    "max_connections",
    "max_request_line",
    "max_header_bytes",
    "max_headers",
    "max_body_bytes",
    "header_timeout",
    "body_timeout",
    "keep_alive_timeout",
    "send_timeout",
)

# The TOML file uses the flag names with underscores; environment variables are S3KMS_<NAME>.
SETTING_NAMES = tuple(f.name for f in fields(Settings) if f.name != "vault")


def read_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)
