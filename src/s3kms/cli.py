"""The `s3kms` command: `s3kms server` runs the KMS; the other commands talk to one.

Client commands find the endpoint and credentials in flags, then `S3KMS_ENDPOINT` /
`S3KMS_ACCESS_KEY` / `S3KMS_SECRET_KEY`, then the local data directory's `credentials` file.
Tables for people (a value is never cut: rows too wide for the terminal are `field: value` lines),
`--json` for scripts (one document with the API's field names; a failure is one too, on stderr:
docs/cli.md); on failure a non-zero exit with the error code and message.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from s3kms import __version__, credentials, errors
from s3kms.client import Client
from s3kms.config import Settings, parse_vault_addresses, read_toml
from s3kms.crypto import keyspecs
from s3kms.errors import KMSError
from s3kms.keystore.vault.settings import VaultSettings, checked_metadata_cache_seconds

if TYPE_CHECKING:
    from s3kms.startup import StartupError
    from s3kms.users import IdentitySurface

F = TypeVar("F", bound=Callable[..., Any])
console = Console()
err_console = Console(stderr=True)


# -- server -----------------------------------------------------------------------------------------

_VAULT_OPTIONS = {
    "vault_address": "addresses",
    "vault_token": "token",
    "vault_namespace": "namespace",
    "vault_mount_path": "mount_path",
    "vault_kv_mount": "kv_mount",
    "vault_kv_prefix": "kv_prefix",
    "vault_app_role_id": "app_role_id",
    "vault_app_role_secret_id": "app_role_secret_id",
    "vault_timeout_seconds": "timeout_seconds",
    "vault_connect_timeout_seconds": "connect_timeout_seconds",
    "vault_metadata_cache_seconds": "metadata_cache_seconds",
    "vault_ca_cert": "ca_cert",
    "vault_skip_tls_verify": "skip_tls_verify",
}


_INT_LIMITS = (
    "max_connections",
    "max_request_line",
    "max_header_bytes",
    "max_headers",
    "max_body_bytes",
)
_SECONDS_LIMITS = ("header_timeout", "body_timeout", "keep_alive_timeout", "send_timeout")


def resolve_settings(flags: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    """Flags win over `S3KMS_*` environment variables, which win over the TOML config file."""
    config_file = flags.get("config") or env.get("S3KMS_CONFIG")
    merged: dict[str, Any] = _read_config(Path(config_file)) if config_file else {}
    names = [f.name for f in dataclasses.fields(Settings) if f.name != "vault"]
    for name in [*names, "address", *_VAULT_OPTIONS]:  # (address: HOST:PORT, for host and port)
        value = env.get(f"S3KMS_{name.upper()}")
        if value is not None and value != "":
            merged[name] = value
    for name, value in flags.items():
        if value is not None and name != "config":
            merged[name] = value
    if "address" in merged:
        host, _, port = str(merged.pop("address")).rpartition(":")
        if not host or not port.isdigit():
            raise click.BadParameter("address must be HOST:PORT", param_hint="--address")
        merged["host"], merged["port"] = host.strip("[]"), int(port)
    vault_fields = {v: merged.pop(k) for k, v in _VAULT_OPTIONS.items() if k in merged}
    unknown = set(merged) - set(names)
    if unknown:
        raise click.UsageError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    for name in (
        "data_dir", "master_key_file", "tls_cert", "tls_key", "kes_tls_cert", "kes_tls_key",
        "users_file", "kmip_tls_cert", "kmip_tls_key", "kmip_ca_cert",
    ):  # fmt: skip
        if merged.get(name) is not None:
            merged[name] = Path(merged[name])
    for name in ("port", "workers", *_INT_LIMITS):
        if name in merged:
            merged[name] = _number(int, name, merged[name])
    for name in _SECONDS_LIMITS:
        if name in merged:
            merged[name] = _number(float, name, merged[name])
    for name in (
        "maintenance_interval",
        "rate_limit",
        "audit_fsync_interval",
        "audit_unauthenticated_rate",
    ):
        if name in merged:
            merged[name] = _number(float, name, merged[name])
    for name in (
        "audit_max_bytes",
        "audit_keep_files",
        "audit_unauthenticated_burst",
        "kmip_max_message",
    ):
        if name in merged:
            merged[name] = _number(int, name, merged[name])
    if "dev" in merged:
        merged["dev"] = _boolean("dev", merged["dev"])
    if "addresses" in vault_fields:
        vault_fields["addresses"] = parse_vault_addresses(str(vault_fields["addresses"]))
        for name in ("timeout_seconds", "connect_timeout_seconds"):
            if name in vault_fields:
                vault_fields[name] = _number(float, f"vault_{name}", vault_fields[name])
        if "metadata_cache_seconds" in vault_fields:
            window = vault_fields["metadata_cache_seconds"]
            vault_fields["metadata_cache_seconds"] = checked_metadata_cache_seconds(
                _number(float, "vault_metadata_cache_seconds", window)
            )
        if "skip_tls_verify" in vault_fields:
            vault_fields["skip_tls_verify"] = str(vault_fields["skip_tls_verify"]).lower() in (
                "1",
                "true",
                "yes",
            )
        merged["vault"] = VaultSettings(**vault_fields)
    return Settings(**merged)


def _read_config(path: Path) -> dict[str, Any]:
    """The TOML settings file; ValueError naming it when it cannot be read or parsed."""
    try:
        return dict(read_toml(path))
    except OSError as exc:
        raise ValueError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError, or not UTF-8
        raise ValueError(f"the config file {path} is not valid TOML: {exc}") from None


def _boolean(name: str, value: Any) -> bool:
    """`value` (a flag, an S3KMS_* variable such as S3KMS_DEV=1, a TOML value) as a boolean."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false (1 or 0), not {value!r}")


def data_dir_given(flags: Mapping[str, Any], env: Mapping[str, str]) -> bool:
    """Whether the data directory was chosen (--data-dir, S3KMS_DATA_DIR or the config file):
    `--dev` then keeps it; otherwise it makes a temporary one and removes it at exit."""
    if flags.get("data_dir") is not None or env.get("S3KMS_DATA_DIR"):
        return True
    config_file = flags.get("config") or env.get("S3KMS_CONFIG")
    if not config_file:
        return False
    return "data_dir" in _read_config(Path(config_file))


_N = TypeVar("_N", int, float)


def _number(kind: Callable[[Any], _N], name: str, value: Any) -> _N:
    """`value` (a flag, an S3KMS_* variable, a TOML value) as a number; ValueError naming it."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{name} must be {what}, not {value!r}") from None


@click.group()
@click.version_option(__version__, prog_name="s3kms")
def main() -> None:
    """s3kms: a key management service for S3-compatible object stores."""


class _ServerCommand(click.Command):
    """`s3kms server`: a bad flag, too, ends with one line and the usage exit code."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            from s3kms.startup import SEE_HELP, ExitCode, StartupError

            _startup_failed(StartupError(ExitCode.USAGE, exc.format_message(), SEE_HELP))


def _startup_failed(exc: StartupError) -> NoReturn:
    """The one place a failed start is reported: one line on stderr, the exit code of its kind."""
    click.echo(f"s3kms: {exc}", err=True)
    sys.exit(int(exc.code))


@main.command(cls=_ServerCommand)
@click.option("--address", help="HOST:PORT to listen on (default 127.0.0.1:9000).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data directory (./s3kms-data).")
@click.option(
    "--backend",
    type=click.Choice(["local", "vault", "none"]),
    help="Key backend: local (keys in --data-dir), vault (Vault/OpenBao transit: --vault-*) or "
    "none (no backend: key requests answer KMSNotConfigured until `s3kms configure`); default: "
    "the persisted configuration, else local.",
)
@click.option("--region", help="Region in SigV4 scopes and ARNs (us-east-1).")
@click.option(
    "--regions",
    help="More regions the AWS KMS API serves, comma-separated, or '*' for any (keys and "
    "aliases belong to a region, as at AWS's regional endpoints); default: --region only.",
)
@click.option("--account-id", help="Account id in ARNs (000000000000).")
@click.option(
    "--master-key-file",
    type=click.Path(path_type=Path),
    help="File holding the Local backend's master key (base64 of 32 bytes; S3KMS_MASTER_KEY: the "
    "key itself) (<data-dir>/master.key).",
)
@click.option("--default-key-id", help="Default key id reported by /kms/status.")
@click.option("--workers", type=int, help="Worker processes on one port (1).")
@click.option("--tls-cert", type=click.Path(path_type=Path), help="PEM certificate: serve HTTPS.")
@click.option("--tls-key", type=click.Path(path_type=Path), help="PEM private key for --tls-cert.")
@click.option("--kes-address", help="HOST:PORT: serve the KES API there (mutual TLS; off).")
@click.option(
    "--kes-tls-cert", type=click.Path(path_type=Path), help="PEM certificate of the KES port."
)
@click.option(
    "--kes-tls-key", type=click.Path(path_type=Path), help="PEM private key for --kes-tls-cert."
)
@click.option(
    "--kes-admin-identity", help="KES identity (hex SHA-256 of a public key) that acts as root."
)
@click.option(
    "--kmip-address",
    help="HOST:PORT: serve the KMIP API there (mutual TLS; KMIP's port is 5696; off).",
)
@click.option(
    "--kmip-tls-cert", type=click.Path(path_type=Path), help="PEM certificate of the KMIP port."
)
@click.option(
    "--kmip-tls-key", type=click.Path(path_type=Path), help="PEM private key for --kmip-tls-cert."
)
@click.option(
    "--kmip-ca-cert",
    type=click.Path(path_type=Path),
    help="PEM CA bundle KMIP client certificates must chain to (none: any certificate; its "
    "identity decides).",
)
@click.option(
    "--kmip-max-message", type=int, help="Bytes of the largest KMIP request accepted (1048576)."
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Lowest level of log lines on stderr; debug adds each Vault call (info).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help="Log lines on stderr: text, or one JSON object per line (text).",
)
@click.option(
    "--users-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Users and policies (JSON or TOML), read at start.",
)
@click.option("--rate-limit", type=float, help="Requests per second per access key (0: off).")
@click.option("--audit-log", help="Audit log path, or 'off' (<data-dir>/audit/audit.log).")
@click.option("--audit-fsync-interval", type=float, help="Seconds between fsyncs; 0: every line.")
@click.option("--audit-max-bytes", type=int, help="Rotate the audit log at this size (64 MiB).")
@click.option("--audit-keep-files", type=int, help="Rotated audit files to keep (10; 0: all).")
@click.option(
    "--audit-unauthenticated-rate",
    type=float,
    help="Lines per second for unauthenticated failures; the rest are counted (1).",
)
@click.option(
    "--audit-unauthenticated-burst", type=int, help="Burst of such lines before counting (20)."
)
@click.option("--max-connections", type=int, help="Open connections per worker (1024; fd limit).")
@click.option("--max-request-line", type=int, help="Bytes of a request's target (8192); over: 414.")
@click.option("--max-header-bytes", type=int, help="Bytes of a request's headers (16384); 431.")
@click.option("--max-headers", type=int, help="Headers in a request (100); over: 431.")
@click.option("--max-body-bytes", type=int, help="Bytes of a request's body (1048576); over: 413.")
@click.option("--header-timeout", type=float, help="Seconds for a request's head to arrive (10).")
@click.option("--body-timeout", type=float, help="Seconds for a request's body to arrive (30).")
@click.option("--keep-alive-timeout", type=float, help="Idle seconds between requests (5).")
@click.option("--send-timeout", type=float, help="Seconds an answer may stay unread (30).")
@click.option(
    "--metrics",
    type=click.Choice(["off", "public", "signed"]),
    help="Who may GET /metrics (Prometheus): off, public (anyone reaching the port) or signed "
    "(a SigV4 signature or the metrics token of a user allowed admin:Prometheus) (signed).",
)
@click.option(
    "--dev",
    is_flag=True,
    default=None,
    help="Dev mode, for tests, demos and CI: state in a temporary directory removed at exit "
    "(unless --data-dir is given), root credentials test/test unless S3KMS_ROOT_USER and "
    "S3KMS_ROOT_PASSWORD are set, loopback only, POST /_s3kms/reset; never for production.",
)
@click.option(
    "--config",
    type=click.Path(path_type=Path, exists=True),
    help="TOML settings file; its keys are the flag names with underscores (none).",
)
@click.option("--vault-address", help="Vault/OpenBao address(es), comma-separated.")
@click.option("--vault-token", help="Vault token; prefer the variable (a flag shows in `ps`).")
@click.option("--vault-namespace", help="Vault namespace, sent as X-Vault-Namespace (none).")
@click.option("--vault-mount-path", help="Transit mount (transit).")
@click.option("--vault-kv-mount", help="KV v2 mount for metadata (secret).")
@click.option("--vault-kv-prefix", help="Path prefix in KV (s3kms).")
@click.option("--vault-app-role-id", help="AppRole role id: AppRole auth instead of a token.")
@click.option(
    "--vault-app-role-secret-id",
    help="AppRole secret id of --vault-app-role-id; prefer the variable.",
)
@click.option(
    "--vault-timeout-seconds", type=float, help="Seconds each try of a Vault request may take (10)."
)
@click.option(
    "--vault-connect-timeout-seconds", type=float, help="Bound on opening a connection (2)."
)
@click.option(
    "--vault-metadata-cache-seconds",
    type=float,
    help="Seconds a node may reuse a key's state read from Vault on crypto requests "
    "(1; 0 disables this cache).",
)
@click.option(
    "--vault-ca-cert",
    type=click.Path(),
    help="CA bundle to verify an HTTPS Vault (default: the system's CAs).",
)
def server(**flags: Any) -> None:
    """Run the KMS server (exit codes: docs/configuration.md#exit-codes)."""
    from s3kms.server import serve
    from s3kms.startup import SEE_HELP, ExitCode, StartupError, reason

    settings: Settings | None = None
    try:
        try:
            settings = resolve_settings(flags, os.environ)
        except click.UsageError as exc:
            raise StartupError(ExitCode.USAGE, exc.format_message(), SEE_HELP) from None
        except (ValueError, TypeError, OSError, KMSError) as exc:
            raise StartupError(ExitCode.USAGE, reason(exc), SEE_HELP) from None
        if (settings.tls_cert is None) != (settings.tls_key is None):
            raise StartupError(
                ExitCode.USAGE, "--tls-cert and --tls-key go together", "give both, or neither"
            )
        for surface, cert, key in (
            ("kes", settings.kes_tls_cert, settings.kes_tls_key),
            ("kmip", settings.kmip_tls_cert, settings.kmip_tls_key),
        ):
            if (cert is None) != (key is None):
                raise StartupError(
                    ExitCode.USAGE,
                    f"--{surface}-tls-cert and --{surface}-tls-key go together",
                    "give both, or neither",
                )
        temporary = settings.dev and not data_dir_given(flags, os.environ)
        serve(settings, temporary_data_dir=temporary)
    except StartupError as exc:
        if settings is not None and settings.log_format.lower() == "json":
            from s3kms.logs import failure_line

            click.echo(failure_line(str(exc), int(exc.code)), err=True)  # the same one line
            sys.exit(int(exc.code))
        _startup_failed(exc)


# `s3kms server --help` names each flag's S3KMS_* variable. resolve_settings reads them, not click
# (an envvar= would have click check them before the start-up checks do), so only the help says it.
for _param in server.params:
    if isinstance(_param, click.Option) and _param.name:
        _param.help = f"{_param.help or ''}  [env var: S3KMS_{_param.name.upper()}]".lstrip()


# -- client commands --------------------------------------------------------------------------------

DEFAULT_ENDPOINT = "http://127.0.0.1:9000"  # where `s3kms server` listens by default


@dataclasses.dataclass
class ClientOptions:
    endpoint: str | None
    access_key: str | None
    secret_key: str | None
    data_dir: Path
    region: str
    ca_cert: str | None
    json: bool

    @property
    def url(self) -> str:
        """The server: --endpoint, else S3KMS_ENDPOINT, else the default address."""
        return self.endpoint or DEFAULT_ENDPOINT

    def client(self) -> Client:
        access, secret = self.access_key, self.secret_key
        if not (access and secret):
            stored = credentials.read_file(self.data_dir)
            if stored is None:
                raise click.UsageError(
                    "no credentials: pass --access-key/--secret-key, set S3KMS_ACCESS_KEY/"
                    f"S3KMS_SECRET_KEY, or run next to the data directory ({self.data_dir})"
                )
            access, secret = stored.access_key, stored.secret_key
        return Client(self.url, access, secret, region=self.region, ca_cert=self.ca_cert)


@dataclasses.dataclass(frozen=True)
class LocalOptions:
    """The output choice of a command that reads local files only (audit verify, backup,
    restore): `json` as in ClientOptions, so `_emit` and `_failed` print its result and errors."""

    json: bool


class _ClientCommand(click.Command):
    """A command with `--json` (each client command; audit verify, backup, restore). With it a
    usage error (a bad flag, no credentials) is one JSON document too (on stderr, as every
    failure), with the exit code click gives it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        wants_json = "--json" in (args[: args.index("--")] if "--" in args else args)
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as exc:
            if wants_json:
                _click_failed(exc)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            if ctx.params.get("as_json"):
                _click_failed(exc)
            raise


def _click_failed(exc: click.ClickException) -> NoReturn:
    if isinstance(exc, click.UsageError):
        code = "UsageError"  # a bad or missing flag or argument, no credentials: exit 2
    elif isinstance(exc, click.FileError):
        code = "FileError"  # a file to write (--raw-out) that cannot be opened: exit 1
    else:
        code = "Error"
    _print_error_document(code, exc.format_message())
    sys.exit(exc.exit_code)


_JSON_FLAG = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document with the API's field names; a failure is one too, on "
    'stderr ({"error": {"code", "message"}}, same exit code).',
)


def client_options(fn: F) -> F:
    options = [
        click.option(
            "--endpoint",
            envvar="S3KMS_ENDPOINT",
            show_envvar=True,
            default=DEFAULT_ENDPOINT,
            show_default=True,
            metavar="URL",
            help="The server, http(s)://HOST:PORT.",
        ),
        click.option(
            "--access-key",
            envvar="S3KMS_ACCESS_KEY",
            show_envvar=True,
            help="Access key to sign requests with (default: the credentials file in --data-dir).",
        ),
        click.option(
            "--secret-key",
            envvar="S3KMS_SECRET_KEY",
            show_envvar=True,
            help="Secret key of --access-key; prefer the variable (a flag shows in `ps`).",
        ),
        click.option(
            "--data-dir",
            envvar="S3KMS_DATA_DIR",
            show_envvar=True,
            default="s3kms-data",
            show_default=True,
            type=click.Path(path_type=Path),
            help="Where to find the credentials file when no keys are given.",
        ),
        click.option(
            "--region",
            envvar="S3KMS_REGION",
            show_envvar=True,
            default="us-east-1",
            show_default=True,
            help="Region to sign requests for: the server's --region.",
        ),
        click.option(
            "--ca-cert",
            envvar="S3KMS_CA_CERT",
            show_envvar=True,
            metavar="FILE",
            help="PEM CA bundle to verify the server's HTTPS certificate (default: the system's).",
        ),
        _JSON_FLAG,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _opts(kw: dict[str, Any]) -> ClientOptions:
    return ClientOptions(
        kw.pop("endpoint"),
        kw.pop("access_key"),
        kw.pop("secret_key"),
        kw.pop("data_dir"),
        kw.pop("region"),
        kw.pop("ca_cert"),
        kw.pop("as_json"),
    )


def _run(
    opts: ClientOptions,
    call: Callable[[Client], Any],
    *,
    key: str | None = None,
    explain: Mapping[type[KMSError], str] | None = None,
) -> Any:
    """`call`'s result; a failure ends the command: the server's error (exit 1), no answer or a
    file the client cannot read (exit 2). `key`: the key the command names, for a message that
    does not; `explain`: the CLI's words for an error class whose message says too little."""
    try:
        with opts.client() as kms:
            return call(kms)
    except KMSError as exc:  # the server's answer: its code and its message
        _failed(opts, exc.code, _kms_message(exc, key, explain), 1, coded=True)
    except httpx.TransportError as exc:  # no answer: refused, unknown host, TLS, timeout
        said = f"cannot reach {opts.url}: {_no_answer_reason(exc)}"
        _failed(opts, "EndpointUnreachable", said, 2)
    except OSError as exc:  # a file the client reads: the credentials file, the --ca-cert bundle
        _failed(opts, "LocalFileError", _os_reason(exc, opts), 2)


def _kms_message(
    exc: KMSError, key: str | None, explain: Mapping[type[KMSError], str] | None
) -> str:
    for cls, words in (explain or {}).items():
        if isinstance(exc, cls):
            return words
    if isinstance(exc, errors.KeyNotFound) and key and key not in exc.message:
        # The admin API's "The specified KMS key does not exist": name it, as the AWS API does.
        what = "Alias" if isinstance(exc, errors.AliasNotFound) else "Key"
        return f"{what} '{key}' does not exist"
    return exc.message


def _failed(
    opts: ClientOptions | LocalOptions,
    code: str,
    message: str,
    exit_code: int,
    *,
    coded: bool = False,
) -> NoReturn:
    """End the command with one line on stderr (`error CODE: message` for the server's errors,
    `error message` for the client's), or with --json `{"error": {"code", "message"}}` there."""
    if opts.json:
        _print_error_document(code, message)
    else:
        _error_line(f"{code}: {message}" if coded and message else message or code)
    sys.exit(exit_code)


def _print_error_document(code: str, message: str) -> None:
    """A failure with --json: its one document, on stderr; stdout stays empty, as without it."""
    click.echo(json.dumps({"error": {"code": code, "message": message}}, indent=2), err=True)


def _error_line(text: str, label: str = "error") -> None:
    """One line on stderr, never broken by the console: a terminal folds it, a pipe has it whole."""
    err_console.print(f"[red]{label}[/red] {escape(text)}", highlight=False, soft_wrap=True)


def _no_answer_reason(exc: httpx.TransportError) -> str:
    """Why a request got no answer, in the system's words ("Connection refused") when it has them."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return str(exc) or type(exc).__name__


def _os_reason(exc: OSError, opts: ClientOptions) -> str:
    reason = exc.strerror or str(exc)
    if exc.filename:
        return f"{exc.filename}: {reason}"
    # ssl names no file when it cannot load a CA bundle.
    return f"--ca-cert {opts.ca_cert}: {reason}" if opts.ca_cert else reason


# -- output ----------------------------------------------------------------------------------------
#
# `--json` prints the document the API answers, with its field names: the admin API's (`keyId`,
# `currentVersion`, `deletionDate`, ...) for the key, status, configure, user and policy commands,
# the AWS operation's (`KeyId`, `CiphertextBlob`, `Plaintext`, ...; bytes as base64) for the others;
# docs/cli.md lists each command's. For people the same fields are a table when it fits the
# terminal; when it does not, each row is `field: value` lines: a value is never cut.


def _api_fields(value: Any) -> dict[str, Any]:
    """A client result as the admin API names its fields (KeyInfo.key_id -> keyId); a field that
    defaults to None is left out when None, as the API leaves it out (deletionDate, keyUsage)."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(value):
        item = getattr(value, field.name)
        if item is None and field.default is None:
            continue
        head, *rest = field.name.split("_")
        out[head + "".join(part.title() for part in rest)] = item
    return out


def _emit(
    opts: ClientOptions | LocalOptions, document: dict[str, Any], rows: str | None = None
) -> None:
    """Print a command's result: `document` as JSON with --json; else for people the list
    `document[rows]` (titled `rows`), or the document as one row."""
    if opts.json:
        click.echo(json.dumps(document, indent=2))
        return
    if rows is None:
        _show([document])
    elif document[rows]:
        _show(document[rows], title=rows)
    else:
        click.echo(f"no {rows}")


_PROSE = frozenset({"message", "policies"})  # columns that may wrap between words


def _heading(field: str) -> str:
    """keyId -> "key id", CiphertextBlob -> "ciphertext blob"."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", field).lower()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _show(rows: list[dict[str, Any]], title: str | None = None) -> None:
    """Rows for people: a table when every id, ARN, ciphertext, date and state fits whole (only
    prose wraps, between words); else each row as `field: value` lines, values never cut."""
    columns = list(dict.fromkeys(field for row in rows for field in row))
    columns.sort(key=lambda field: field == "message")  # prose last
    table = Table(title=title)
    for field in columns:
        table.add_column(_heading(field), no_wrap=field not in _PROSE, overflow="fold")
    for row in rows:
        table.add_row(*(Text(_cell(row.get(field))) for field in columns))
    natural = console.measure(table, options=console.options.update_width(1 << 16))
    if natural.minimum <= console.width:
        console.print(table)
        return
    width = max(len(_heading(field)) for field in columns) + 1
    records = []
    for row in rows:
        cells = [(field, _cell(row.get(field))) for field in columns]
        lines = [f"{_heading(field) + ':':<{width}} {text}" for field, text in cells if text]
        records.append("\n".join(lines))
    click.echo("\n\n".join(records))


@main.group()
def key() -> None:
    """Create, list, inspect and change keys."""


def _choice(values: Any) -> click.Choice[str]:
    """One of AWS's names (RSA_2048, SIGN_VERIFY, ECDSA_SHA_256, ...), as AWS spells it."""
    return click.Choice(list(values))


def _algorithms(usage: str) -> list[str]:
    """Every algorithm of `usage` in the key-spec table, in the table's order."""
    found: dict[str, None] = {}
    for info in keyspecs.KEY_SPECS.values():
        found.update(dict.fromkeys(info.algorithms(usage)))
    return list(found)


@key.command("create", cls=_ClientCommand)
@click.argument("name", required=False)
@click.option(
    "--spec",
    type=_choice([n for n, info in keyspecs.KEY_SPECS.items() if not info.kmip_only]),
    help="AWS KeySpec (default SYMMETRIC_DEFAULT: an AES-256 encryption key).",
)
@click.option(
    "--usage",
    type=_choice(keyspecs.ALGORITHM_FIELDS),
    help="AWS KeyUsage; required with every spec but SYMMETRIC_DEFAULT.",
)
@click.option(
    "--origin",
    type=click.Choice(["AWS_KMS", "EXTERNAL"]),
    help="AWS Origin (default AWS_KMS: the server makes the material); EXTERNAL: no material, "
    "pending import until `s3kms key import`.",
)
@client_options
def key_create(
    name: str | None, spec: str | None, usage: str | None, origin: str | None, **kw: Any
) -> None:
    """Create a key (a UUID name when NAME is left out).

    `--spec RSA_2048 --usage SIGN_VERIFY` makes a signing key, `--spec HMAC_256 --usage
    GENERATE_VERIFY_MAC` an HMAC key, `--origin EXTERNAL` a key for your own material.
    """
    opts = _opts(kw)
    _emit(opts, _api_fields(_run(opts, lambda kms: kms.create_key(name, spec, usage, origin))))


@key.command("list", cls=_ClientCommand)
@click.option("--pattern", help="Shell-style glob over key ids (*, ?, [...]).")
@client_options
def key_list(pattern: str | None, **kw: Any) -> None:
    """List keys, sorted by key id."""
    opts = _opts(kw)
    keys = _run(opts, lambda kms: kms.list_keys(pattern))
    _emit(opts, {"keys": [_api_fields(k) for k in keys]}, rows="keys")


@key.command("status", cls=_ClientCommand)
@click.argument("name")
@client_options
def key_status(name: str, **kw: Any) -> None:
    """Show one key."""
    opts = _opts(kw)
    _emit(opts, _api_fields(_run(opts, lambda kms: kms.key_status(name), key=name)))


def _key_change(command: str, method: str, doc: str) -> None:
    @key.command(command, help=doc, cls=_ClientCommand)
    @click.argument("name")
    @client_options
    def change(name: str, **kw: Any) -> None:
        opts = _opts(kw)
        _emit(opts, _api_fields(_run(opts, lambda kms: getattr(kms, method)(name), key=name)))


_key_change("enable", "enable_key", "Enable a key.")
_key_change("disable", "disable_key", "Disable a key.")
_key_change("rotate", "rotate_key", "Make new key material; old versions still decrypt.")
_key_change(
    "cancel-deletion", "cancel_key_deletion", "Cancel a scheduled deletion (key stays disabled)."
)


@key.command("delete", cls=_ClientCommand)
@click.argument("name")
@click.option(
    "--days",
    type=click.IntRange(7, 30),
    default=30,
    show_default=True,
    help="Days until the key is deleted; `s3kms key cancel-deletion` stops it until then.",
)
@client_options
def key_delete(name: str, days: int, **kw: Any) -> None:
    """Schedule a key for deletion after a waiting period."""
    opts = _opts(kw)
    change = _run(opts, lambda kms: kms.schedule_key_deletion(name, days), key=name)
    _emit(opts, _api_fields(change))


def _valid_to(text: str | None) -> datetime | None:
    """--valid-to: an ISO 8601 date-time; one without a UTC offset is UTC."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an ISO 8601 date-time (2027-01-31T12:00:00Z)", param_hint="--valid-to"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


# What RSA-OAEP can wrap whole (RSAES_OAEP_*): the key's size less twice the hash's, less 2.
_OAEP_HASH_BYTES = {"RSAES_OAEP_SHA_1": 20, "RSAES_OAEP_SHA_256": 32}


@key.command("import", cls=_ClientCommand)
@click.argument("name")
@click.option(
    "--material",
    "material_file",
    type=click.File("rb"),
    required=True,
    help="The key material ('-' for stdin): 32 bytes for a symmetric key, the HMAC key's bytes, "
    "or a PKCS#8 DER private key.",
)
@click.option(
    "--wrapping-algorithm",
    type=click.Choice(
        [
            "RSAES_OAEP_SHA_1",
            "RSAES_OAEP_SHA_256",
            "RSA_AES_KEY_WRAP_SHA_1",
            "RSA_AES_KEY_WRAP_SHA_256",
        ]
    ),
    default="RSA_AES_KEY_WRAP_SHA_256",
    show_default=True,
    help="How the material is wrapped on its way (RSA_AES_*: any length; RSAES_OAEP_*: short "
    "material only, never an RSA key).",
)
@click.option(
    "--wrapping-key-spec",
    type=click.Choice(["RSA_2048", "RSA_3072", "RSA_4096"]),
    default="RSA_4096",
    show_default=True,
    help="The size of the RSA wrapping key the server makes for this import.",
)
@click.option(
    "--valid-to",
    metavar="DATETIME",
    help="When the material expires (ISO 8601, e.g. 2027-01-31T12:00:00Z; UTC without an "
    "offset; at most 365 days ahead): the server then deletes it and the key is pending import. "
    "Default: it does not expire.",
)
@click.option(
    "--new-material",
    is_flag=True,
    help="Import the key's next material (NEW_KEY_MATERIAL, symmetric keys): it becomes current "
    "on `s3kms key rotate`; without it, the key's first material or one it had before.",
)
@click.option("--description", help="A description of the material (KeyMaterialDescription).")
@client_options
def key_import(
    name: str,
    material_file: Any,
    wrapping_algorithm: str,
    wrapping_key_spec: str,
    valid_to: str | None,
    new_material: bool,
    description: str | None,
    **kw: Any,
) -> None:
    """Import key material into the EXTERNAL key NAME (BYOK).

    The material is wrapped here, under a wrapping key the server makes for this import
    (GetParametersForImport), and sent wrapped (ImportKeyMaterial).
    """
    opts = _opts(kw)
    until = _valid_to(valid_to)
    material = material_file.read()
    if not material:
        raise click.BadParameter("the material file is empty", param_hint="--material")
    hash_bytes = _OAEP_HASH_BYTES.get(wrapping_algorithm)
    limit = int(wrapping_key_spec[4:]) // 8 - 2 * hash_bytes - 2 if hash_bytes else None
    if limit is not None and len(material) > limit:
        raise click.BadParameter(
            f"{wrapping_algorithm} under an {wrapping_key_spec} key wraps at most {limit} bytes, "
            f"not {len(material)}: use RSA_AES_KEY_WRAP_SHA_256",
            param_hint="--material",
        )
    imported = _run(
        opts,
        lambda kms: kms.import_material(
            name,
            material,
            wrapping_algorithm=wrapping_algorithm,
            wrapping_key_spec=wrapping_key_spec,
            valid_to=until,
            new_material=new_material,
            description=description,
        ),
        key=name,
    )
    _emit(opts, _material_fields(imported))


def _material_fields(answer: Any) -> dict[str, Any]:
    """ImportKeyMaterial's / DeleteImportedKeyMaterial's members (KeyMaterialId: symmetric keys)."""
    out = {"KeyId": answer.key_id}
    if answer.key_material_id is not None:
        out["KeyMaterialId"] = answer.key_material_id
    return out


@key.command("delete-material", cls=_ClientCommand)
@click.argument("name")
@click.option(
    "--material-id",
    help="The KeyMaterialId of the material to delete (default: the key's current material).",
)
@client_options
def key_delete_material(name: str, material_id: str | None, **kw: Any) -> None:
    """Delete imported key material at once (DeleteImportedKeyMaterial).

    The key is pending import, refusing every cryptographic operation, until the same material
    is imported again (`s3kms key import`).
    """
    opts = _opts(kw)
    deleted = _run(opts, lambda kms: kms.delete_imported_key_material(name, material_id), key=name)
    _emit(opts, _material_fields(deleted))


@key.group("policy")
def key_policy() -> None:
    """Read and replace a key's policy (AWS GetKeyPolicy, PutKeyPolicy; docs/security.md)."""


@key_policy.command("get", cls=_ClientCommand)
@click.argument("name")
@client_options
def key_policy_get(name: str, **kw: Any) -> None:
    """Print the key's policy document as stored (the account's default until one is put)."""
    opts = _opts(kw)
    policy = _run(opts, lambda kms: kms.get_key_policy(name), key=name)
    if opts.json:
        _emit(opts, {"Policy": policy, "PolicyName": "default"})
    else:
        click.echo(policy)


@key_policy.command("put", cls=_ClientCommand)
@click.argument("name")
@click.argument("document", type=click.File("r"))
@click.option(
    "--bypass-lockout-check",
    is_flag=True,
    help="Put a policy that would keep you from changing it again "
    "(BypassPolicyLockoutSafetyCheck); the server refuses such a policy without it.",
)
@client_options
def key_policy_put(name: str, document: Any, bypass_lockout_check: bool, **kw: Any) -> None:
    """Replace the key's policy with the JSON file DOCUMENT ('-' for stdin), sent as written."""
    opts = _opts(kw)
    text = document.read()
    _run(
        opts,
        lambda kms: kms.put_key_policy(name, text, bypass_lockout_check=bypass_lockout_check),
        key=name,
    )
    _emit(opts, {"KeyId": name, "PolicyName": "default"})


@main.group()
def grant() -> None:
    """Give principals the use of a key without changing its policy (AWS grants)."""


@grant.command("create", cls=_ClientCommand)
@click.argument("name")
@click.option("--grantee", required=True, help="The principal ARN the grant is for.")
@click.option(
    "--operation",
    "operations",
    multiple=True,
    required=True,
    help="An AWS grant operation (Decrypt, GenerateDataKey, ...); repeatable.",
)
@click.option("--retiring", help="The principal ARN that may retire the grant.")
@click.option("--grant-name", help="A name: the same name and parameters answer the same grant.")
@click.option(
    "--context-subset",
    multiple=True,
    metavar="KEY=VALUE",
    help="Allow only requests whose encryption context includes these pairs; repeatable.",
)
@click.option(
    "--context-equals",
    multiple=True,
    metavar="KEY=VALUE",
    help="Allow only requests whose encryption context is exactly these pairs; repeatable.",
)
@client_options
def grant_create(
    name: str,
    grantee: str,
    operations: tuple[str, ...],
    retiring: str | None,
    grant_name: str | None,
    context_subset: tuple[str, ...],
    context_equals: tuple[str, ...],
    **kw: Any,
) -> None:
    """Grant GRANTEE the OPERATIONs on key NAME; prints the grant id and token."""
    if context_subset and context_equals:
        raise click.UsageError("give --context-subset or --context-equals, not both")
    opts = _opts(kw)
    subset = _context(context_subset, "--context-subset") if context_subset else None
    equals = _context(context_equals, "--context-equals") if context_equals else None
    created = _run(
        opts,
        lambda kms: kms.create_grant(
            name,
            grantee,
            list(operations),
            retiring_principal=retiring,
            name=grant_name,
            context_subset=subset,
            context_equals=equals,
        ),
        key=name,
    )
    _emit(opts, {"GrantId": created.grant_id, "GrantToken": created.grant_token})


@grant.command("list", cls=_ClientCommand)
@click.argument("name")
@click.option("--grant-id", help="Only this grant.")
@click.option("--grantee", help="Only grants for this principal ARN.")
@client_options
def grant_list(name: str, grant_id: str | None, grantee: str | None, **kw: Any) -> None:
    """List the grants on key NAME."""
    opts = _opts(kw)
    grants = _run(
        opts, lambda kms: kms.list_grants(name, grant_id=grant_id, grantee=grantee), key=name
    )
    _emit(opts, {"Grants": grants}, rows="Grants")


@grant.command("retirable", cls=_ClientCommand)
@click.argument("principal")
@client_options
def grant_retirable(principal: str, **kw: Any) -> None:
    """List the grants, on every key, that PRINCIPAL (an ARN) may retire."""
    opts = _opts(kw)
    grants = _run(opts, lambda kms: kms.list_retirable_grants(principal))
    _emit(opts, {"Grants": grants}, rows="Grants")


@grant.command("retire", cls=_ClientCommand)
@click.argument("name", required=False)
@click.argument("grant_id", required=False)
@click.option("--token", help="The grant token CreateGrant answered (instead of NAME GRANT_ID).")
@client_options
def grant_retire(name: str | None, grant_id: str | None, token: str | None, **kw: Any) -> None:
    """Retire a grant: as its retiring principal or grantee, by key NAME and GRANT_ID or --token."""
    if token is None and (name is None or grant_id is None):
        raise click.UsageError("give NAME and GRANT_ID, or --token")
    opts = _opts(kw)
    _run(opts, lambda kms: kms.retire_grant(token=token, key=name, grant_id=grant_id), key=name)
    _emit(opts, {"GrantId": grant_id, "message": "grant retired"})


@grant.command("revoke", cls=_ClientCommand)
@click.argument("name")
@click.argument("grant_id")
@client_options
def grant_revoke(name: str, grant_id: str, **kw: Any) -> None:
    """Revoke grant GRANT_ID on key NAME (as a caller allowed kms:RevokeGrant on the key)."""
    opts = _opts(kw)
    _run(opts, lambda kms: kms.revoke_grant(name, grant_id), key=name)
    _emit(opts, {"GrantId": grant_id, "message": "grant revoked"})


@main.command(cls=_ClientCommand)
@client_options
def status(**kw: Any) -> None:
    """Show the KMS status."""
    opts = _opts(kw)
    _emit(opts, _api_fields(_run(opts, lambda kms: kms.status())))


@main.command(cls=_ClientCommand)
@click.option(
    "--kms-type",
    type=click.Choice(["local", "vault"]),
    required=True,
    help="The backend to switch to.",
)
@click.option("--default-key-id", help="Default key reported by `s3kms status`.")
@click.option(
    "--vault-address", help="Vault/OpenBao address(es), comma-separated; required for vault."
)
@click.option(
    "--vault-token",
    envvar="S3KMS_VAULT_TOKEN",
    show_envvar=True,
    help="Vault token; prefer the variable (a flag shows in `ps`).",
)
@click.option("--vault-namespace", help="Vault namespace, sent as X-Vault-Namespace (none).")
@click.option("--vault-mount-path", help="Transit engine mount (transit).")
@click.option("--vault-kv-mount", help="KV v2 mount for s3kms metadata (secret).")
@click.option("--vault-kv-prefix", help="Path prefix inside the KV mount (s3kms).")
@click.option("--vault-app-role-id", help="AppRole role id: AppRole auth instead of a token.")
@click.option(
    "--vault-app-role-secret-id",
    envvar="S3KMS_VAULT_APP_ROLE_SECRET_ID",
    show_envvar=True,
    help="AppRole secret id of --vault-app-role-id; prefer the variable.",
)
@click.option(
    "--vault-timeout-seconds", type=float, help="Bound on each try of a Vault request (10)."
)
@click.option(
    "--vault-connect-timeout-seconds",
    type=float,
    help="Bound on opening a connection to Vault (2).",
)
@click.option(
    "--vault-metadata-cache-seconds",
    type=float,
    help="Seconds a node may reuse a key's state read from Vault (1; 0 disables; at most 60).",
)
@click.option(
    "--vault-ca-cert",
    metavar="FILE",
    help="CA bundle to verify an HTTPS Vault, a path on the server (default: the system's).",
)
@client_options
def configure(**kw: Any) -> None:
    """Switch the KMS backend (checked before it switches)."""
    opts = _opts(kw)
    body = {k: v for k, v in kw.items() if v is not None}
    message = _run(opts, lambda kms: kms.configure(**body))
    _emit(opts, {"status": "success", "message": message})


_CONTEXT = click.option(
    "--context",
    multiple=True,
    metavar="KEY=VALUE",
    help="Encryption context entry (repeatable); decrypt needs the same entries.",
)


@main.command(cls=_ClientCommand)
@click.argument("name")
@click.option(
    "--bytes",
    "size",
    type=click.IntRange(1, 1024),
    default=32,
    show_default=True,
    help="Length of the data key in bytes, 1-1024 (AWS NumberOfBytes).",
)
@_CONTEXT
@client_options
def datakey(name: str, size: int, context: tuple[str, ...], **kw: Any) -> None:
    """Generate a data key under NAME: plaintext and ciphertext, base64."""
    opts = _opts(kw)
    dk = _run(
        opts,
        lambda kms: kms.generate_data_key(name, number_of_bytes=size, context=_context(context)),
        key=name,
    )
    _emit(
        opts,
        {
            "KeyId": dk.key_id,
            "Plaintext": base64.b64encode(dk.plaintext).decode(),
            "CiphertextBlob": base64.b64encode(dk.ciphertext).decode(),
        },
    )


@main.command(cls=_ClientCommand)
@click.argument("name")
@_CONTEXT
@client_options
def encrypt(name: str, context: tuple[str, ...], **kw: Any) -> None:
    """Encrypt stdin (at most 4096 bytes) under NAME; prints the ciphertext as base64."""
    opts = _opts(kw)
    data = sys.stdin.buffer.read()
    blob = _run(opts, lambda kms: kms.encrypt(name, data, _context(context)), key=name)
    text = base64.b64encode(blob).decode()
    if opts.json:
        _emit(opts, {"KeyId": name, "CiphertextBlob": text})
    else:
        click.echo(text)


@main.command(cls=_ClientCommand)
@_CONTEXT
@click.option("--key", "key_ref", help="Expected key (refused if the ciphertext names another).")
@client_options
def decrypt(context: tuple[str, ...], key_ref: str | None, **kw: Any) -> None:
    """Decrypt a base64 ciphertext read from stdin; writes the plaintext to stdout (base64 in
    the JSON document: `Plaintext`)."""
    opts = _opts(kw)
    try:
        blob = base64.b64decode(sys.stdin.read().strip(), validate=True)
    except ValueError:
        raise click.UsageError("stdin is not base64") from None
    entries = _context(context)
    if entries:
        why = (
            "the ciphertext does not open with its key and this encryption context: give every "
            "--context KEY=VALUE it was encrypted with, and no other; or the ciphertext is "
            "damaged or from another KMS"
        )
    else:
        why = (
            "the ciphertext does not open with its key and no encryption context: if it was "
            "encrypted with one, give it with --context KEY=VALUE; or the ciphertext is damaged "
            "or from another KMS"
        )
    plaintext = _run(
        opts,
        lambda kms: kms.decrypt(blob, entries, key_ref),
        key=key_ref,
        explain={errors.InvalidCiphertext: why},
    )
    if opts.json:
        _emit(opts, {"Plaintext": base64.b64encode(plaintext).decode()})
    else:
        sys.stdout.buffer.write(plaintext)


def _context(entries: tuple[str, ...], option: str = "--context") -> dict[str, str]:
    out = {}
    for entry in entries:
        name, sep, value = entry.partition("=")
        if not sep:
            raise click.BadParameter(f"{entry!r} is not KEY=VALUE", param_hint=option)
        out[name] = value
    return out


# -- signatures and MACs ---------------------------------------------------------------------------

_MESSAGE_FILE = click.option(
    "--message-file",
    "message",
    type=click.File("rb"),
    default="-",
    metavar="FILE",
    help="Read the message from FILE (default: stdin).",
)
_DIGEST = click.option(
    "--digest",
    is_flag=True,
    help="The message is already the algorithm's hash (MessageType DIGEST): for messages over "
    "4096 bytes.",
)


def _given_blob(text: str | None, file: Any, option: str, *, required: bool) -> bytes | None:
    """The bytes of `--OPTION B64` or `--OPTION-file F` (raw): exactly one of them, or neither
    when not `required`."""
    if text is not None and file is not None:
        raise click.UsageError(f"give --{option} or --{option}-file, not both")
    if file is not None:
        data: bytes = file.read()
        return data
    if text is None:
        if required:
            raise click.UsageError(f"give --{option} B64 or --{option}-file FILE")
        return None
    try:
        return base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise click.BadParameter("is not base64", param_hint=f"--{option}") from None


def _verdict(opts: ClientOptions, valid: bool, what: str, fields: dict[str, Any]) -> None:
    """Report a check: exit 0 when valid, 1 when not: a line on stderr, or with --json the AWS
    answer's `fields` (SignatureValid / MacValid false)."""
    if opts.json:
        _emit(opts, fields)
    elif valid:
        click.echo(f"valid: the {what} matches the message and key {fields['KeyId']}")
    else:
        _error_line(f"the {what} does not match the message and key {fields['KeyId']}", "invalid")
    if not valid:
        sys.exit(1)


def _put_blob(
    opts: ClientOptions, data: bytes, raw_out: Any, field: str, fields: dict[str, Any]
) -> None:
    """A signature or MAC: raw to `raw_out`, else base64 on stdout (or as `field` in the JSON)."""
    text = base64.b64encode(data).decode()
    if raw_out is not None:
        raw_out.write(data)
    if opts.json:
        _emit(opts, {**fields, field: text})
    elif raw_out is None:
        click.echo(text)


_SIGNING_ALGORITHM = click.option(
    "--algorithm",
    required=True,
    type=_choice(_algorithms(keyspecs.SIGN_VERIFY)),
    help="AWS SigningAlgorithm; one the key's spec allows.",
)


@main.command("sign", cls=_ClientCommand)
@click.argument("name")
@_SIGNING_ALGORITHM
@_MESSAGE_FILE
@_DIGEST
@click.option(
    "--raw-out",
    type=click.File("wb"),
    metavar="FILE",
    help="Write the raw signature to FILE instead of base64 to stdout.",
)
@client_options
def sign_command(
    name: str, algorithm: str, message: Any, digest: bool, raw_out: Any, **kw: Any
) -> None:
    """Sign a message (stdin, at most 4096 bytes) with the asymmetric key NAME.

    Prints the signature as base64: DER for ECDSA, raw for RSA, Ed25519 and ML-DSA, so
    `openssl dgst` and `cryptography` verify it with the key `s3kms public-key` prints.
    """
    opts = _opts(kw)
    data = message.read()
    message_type = "DIGEST" if digest else "RAW"
    signature = _run(opts, lambda kms: kms.sign(name, data, algorithm, message_type), key=name)
    fields = {"KeyId": name, "SigningAlgorithm": algorithm, "MessageType": message_type}
    _put_blob(opts, signature, raw_out, "Signature", fields)


@main.command("verify", cls=_ClientCommand)
@click.argument("name")
@_SIGNING_ALGORITHM
@click.option(
    "--signature", metavar="B64", help="The signature, base64 (as `s3kms sign` prints it)."
)
@click.option(
    "--signature-file",
    type=click.File("rb"),
    metavar="FILE",
    help="The raw signature in FILE (as `s3kms sign --raw-out` writes it).",
)
@_MESSAGE_FILE
@_DIGEST
@client_options
def verify_command(
    name: str,
    algorithm: str,
    signature: str | None,
    signature_file: Any,
    message: Any,
    digest: bool,
    **kw: Any,
) -> None:
    """Check a signature of a message (stdin) with key NAME: exit 0 when valid, 1 when not."""
    opts = _opts(kw)
    given = _given_blob(signature, signature_file, "signature", required=True)
    assert given is not None
    data = message.read()
    message_type = "DIGEST" if digest else "RAW"
    valid = _run(opts, lambda kms: kms.verify(name, data, given, algorithm, message_type), key=name)
    fields = {"KeyId": name, "SigningAlgorithm": algorithm, "SignatureValid": valid}
    _verdict(opts, valid, "signature", fields)


def _pem(der: bytes) -> str:
    """A SubjectPublicKeyInfo DER as PEM (`-----BEGIN PUBLIC KEY-----`), whatever its algorithm."""
    text = base64.b64encode(der).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"


@main.command("public-key", cls=_ClientCommand)
@click.argument("name")
@click.option(
    "--der",
    "der_out",
    type=click.File("wb"),
    metavar="FILE",
    help="Write the public key as DER to FILE instead of PEM to stdout.",
)
@client_options
def public_key_command(name: str, der_out: Any, **kw: Any) -> None:
    """Print the public key of the asymmetric key NAME as PEM (SubjectPublicKeyInfo; in the JSON
    document `PublicKey` is its DER as base64, as AWS answers it)."""
    opts = _opts(kw)
    der = _run(opts, lambda kms: kms.public_key(name), key=name)
    if der_out is not None:
        der_out.write(der)
    if opts.json:
        _emit(opts, {"KeyId": name, "PublicKey": base64.b64encode(der).decode()})
    elif der_out is None:
        click.echo(_pem(der), nl=False)


@main.command("mac", cls=_ClientCommand)
@click.argument("name")
@click.option(
    "--algorithm",
    required=True,
    type=_choice(_algorithms(keyspecs.GENERATE_VERIFY_MAC)),
    help="AWS MacAlgorithm; the one of the key's spec.",
)
@_MESSAGE_FILE
@click.option(
    "--verify",
    "verify_mac",
    metavar="MAC",
    help="Check this MAC (base64) instead of making one: exit 0 when it matches, 1 when not.",
)
@click.option(
    "--verify-file",
    type=click.File("rb"),
    metavar="FILE",
    help="Check the raw MAC in FILE (as --raw-out writes it) instead of making one.",
)
@click.option(
    "--raw-out",
    type=click.File("wb"),
    metavar="FILE",
    help="Write the raw MAC to FILE instead of base64 to stdout.",
)
@client_options
def mac_command(
    name: str,
    algorithm: str,
    message: Any,
    verify_mac: str | None,
    verify_file: Any,
    raw_out: Any,
    **kw: Any,
) -> None:
    """Make the HMAC of a message (stdin, at most 4096 bytes) with the HMAC key NAME, as base64;
    or, with --verify / --verify-file, check one."""
    opts = _opts(kw)
    given = _given_blob(verify_mac, verify_file, "verify", required=False)
    if given is not None and raw_out is not None:
        raise click.UsageError("--raw-out writes a new MAC: it does not go with --verify")
    data = message.read()
    if given is None:
        tag = _run(opts, lambda kms: kms.generate_mac(name, data, algorithm), key=name)
        _put_blob(opts, tag, raw_out, "Mac", {"KeyId": name, "MacAlgorithm": algorithm})
        return
    valid = _run(opts, lambda kms: kms.verify_mac(name, data, given, algorithm), key=name)
    _verdict(opts, valid, "MAC", {"KeyId": name, "MacAlgorithm": algorithm, "MacValid": valid})


# -- audit, backup, users -----------------------------------------------------------------------------


@main.group("metrics")
def metrics_group() -> None:
    """Prometheus metrics: GET /metrics (docs/operations.md)."""


@metrics_group.command("token", cls=_ClientCommand)
@client_options
def metrics_token(**kw: Any) -> None:
    """Print the bearer token that lets Prometheus scrape /metrics as these credentials.

    Computed here from the access key and secret key; nothing is sent. The server accepts it on
    /metrics only, and only for a user whose policies allow admin:Prometheus."""
    from s3kms.metrics.token import derive

    opts = _opts(kw)
    access, secret = opts.access_key, opts.secret_key
    if not (access and secret):
        try:
            stored = credentials.read_file(opts.data_dir)
        except OSError as exc:
            _failed(opts, "LocalFileError", _os_reason(exc, opts), 2)
        if stored is None:
            raise click.UsageError(
                "no credentials: pass --access-key/--secret-key, set S3KMS_ACCESS_KEY/"
                f"S3KMS_SECRET_KEY, or run next to the data directory ({opts.data_dir})"
            )
        access, secret = stored.access_key, stored.secret_key
    token = derive(access, secret)
    if opts.json:
        click.echo(json.dumps({"accessKey": access, "token": token}, indent=2))
    else:
        click.echo(token)


@main.group()
def audit() -> None:
    """Work with the tamper-evident audit log."""


@audit.command("verify", cls=_ClientCommand)
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@_JSON_FLAG
def audit_verify(files: tuple[Path, ...], as_json: bool) -> None:
    """Check the hash chain of audit log FILES (oldest first: audit.log.1 audit.log.2 audit.log).

    Exit 0 when intact, 1 when not (with --json that is the answer: "intact": false)."""
    from s3kms.audit import verify

    result = verify(list(files))
    if as_json:
        document = {
            "files": [str(path) for path in files],
            "lines": result.lines,
            "intact": result.ok,
            "brokenAt": _broken_at(result.problem, files),
            "problem": result.problem,
        }
        _emit(LocalOptions(True), document)
    elif result.ok:
        click.echo(f"ok: {result.lines} lines, chain intact")
    else:
        _error_line(str(result.problem), "TAMPERED")
    if not result.ok:
        sys.exit(1)


def _broken_at(problem: str | None, files: tuple[Path, ...]) -> dict[str, Any] | None:
    """The file and line where the chain breaks: `verify`'s problem starts with `FILE:LINE:`."""
    for path in sorted(files, key=lambda path: -len(str(path))):  # a:1 before a
        head = f"{path}:"
        number = (problem or "").removeprefix(head).partition(":")[0]
        if problem and problem.startswith(head) and number.isdigit():
            return {"file": str(path), "line": int(number)}
    return None


def _passphrase(passphrase_file: Path | None, confirm: bool, out: LocalOptions) -> str:
    if passphrase_file is not None:
        return passphrase_file.read_text().strip()
    env = os.environ.get("S3KMS_BACKUP_PASSPHRASE")
    if env:
        return env
    try:
        if out.json and not sys.stdin.isatty():
            raise click.Abort  # nothing to prompt on (getpass would warn on stderr)
        value: str = click.prompt(  # with --json on stderr: stdout is for the document
            "backup passphrase", hide_input=True, confirmation_prompt=confirm, err=out.json
        )
    except click.Abort:
        if not out.json:
            raise  # "Aborted!", exit 1
        message = "no backup passphrase: give --passphrase-file or set S3KMS_BACKUP_PASSPHRASE"
        _failed(out, "NoPassphrase", message, 1)
    return value


def _open_local_store(data_dir: Path, master_key_file: Path | None) -> Any:
    from s3kms.crypto import masterkey
    from s3kms.keystore.local import LocalKeyStore

    if not (data_dir / "keystore.db").exists() and not data_dir.exists():
        raise click.UsageError(f"no data directory at {data_dir}")
    key = masterkey.load(data_dir, master_key_file, os.environ.get("S3KMS_MASTER_KEY"))
    return LocalKeyStore(data_dir, key)


def _progress_bar(label: str, out: LocalOptions) -> tuple[Any, Callable[[int, int], None]]:
    from rich.progress import MofNCompleteColumn, Progress

    progress = Progress(
        *Progress.get_default_columns(),
        MofNCompleteColumn(),  # keys done / total
        console=err_console,
        transient=False,
        disable=out.json or not err_console.is_terminal,  # --json: the document alone
    )
    task = progress.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return progress, update


_BACKUP_OPTIONS = [
    click.option(
        "--data-dir",
        envvar="S3KMS_DATA_DIR",
        show_envvar=True,
        default="s3kms-data",
        show_default=True,
        type=click.Path(path_type=Path),
        help="The Local backend's data directory.",
    ),
    click.option(
        "--master-key-file",
        type=click.Path(path_type=Path),
        help="Master key file (else S3KMS_MASTER_KEY, else <data-dir>/master.key).",
    ),
    click.option(
        "--passphrase-file",
        type=click.Path(exists=True, path_type=Path),
        help="File holding the passphrase (else S3KMS_BACKUP_PASSPHRASE, else a prompt).",
    ),
    _JSON_FLAG,
]


def _store_failed(opts: LocalOptions, exc: Exception) -> NoReturn:
    """backup, restore: `error message`, or with --json its document, code the KMS error's
    (KMSInvalidRequest: a wrong passphrase, a damaged file) or MasterKeyError; exit 1."""
    _failed(opts, exc.code if isinstance(exc, KMSError) else "MasterKeyError", str(exc), 1)


def backup_options(fn: F) -> F:
    for option in reversed(_BACKUP_OPTIONS):
        fn = option(fn)
    return fn


@main.command(cls=_ClientCommand)
@click.argument("out", type=click.Path(path_type=Path))
@backup_options
def backup(
    out: Path,
    data_dir: Path,
    master_key_file: Path | None,
    passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Write every Local key (versions, states, metadata, aliases) to OUT, encrypted.

    Reads the data directory directly (safe while the server runs). For the Vault backend use
    `POST .../kms/backup` and Vault's own snapshots.
    """
    import asyncio

    from s3kms.backup import create_backup
    from s3kms.crypto.masterkey import MasterKeyError
    from s3kms.fsutil import write_private_file

    opts = LocalOptions(as_json)
    passphrase = _passphrase(passphrase_file, True, opts)

    async def run() -> tuple[bytes, int, int]:
        store = _open_local_store(data_dir, master_key_file)
        progress, update = _progress_bar("backing up keys", opts)
        written = 0

        def step(done: int, total: int) -> None:
            nonlocal written
            written = done  # the keys in the backup, whatever the server adds meanwhile
            update(done, total)

        try:
            with progress:
                data = await create_backup(store, passphrase, step)
            return data, written, len(await store.list_aliases())
        finally:
            await store.close()

    try:
        data, count, aliases = asyncio.run(run())
    except (KMSError, MasterKeyError) as exc:
        _store_failed(opts, exc)
    try:
        write_private_file(out, data)
    except OSError as exc:
        _failed(opts, "FileError", f"cannot write {out}: {exc.strerror or exc}", 1)
    if opts.json:
        _emit(opts, {"file": str(out), "keys": count, "aliases": aliases, "bytes": len(data)})
        return
    err_console.print(
        f"backup: {count} key(s) written to {out} (encrypted, mode 0600)",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@main.command(cls=_ClientCommand)
@click.argument(
    "infile", metavar="IN", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@backup_options
@click.option("--overwrite", is_flag=True, help="Replace keys that exist already.")
def restore(
    infile: Path,
    data_dir: Path,
    master_key_file: Path | None,
    passphrase_file: Path | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Bring the keys of a backup IN into the Local data directory (existing keys are kept)."""
    import asyncio

    from s3kms.backup import restore_backup
    from s3kms.crypto.masterkey import MasterKeyError
    from s3kms.fsutil import ensure_private_dir

    opts = LocalOptions(as_json)
    passphrase = _passphrase(passphrase_file, False, opts)
    ensure_private_dir(data_dir)

    async def run() -> Any:
        store = _open_local_store(data_dir, master_key_file)
        progress, update = _progress_bar("restoring keys", opts)
        try:
            with progress:
                return await restore_backup(
                    store, infile.read_bytes(), passphrase, overwrite=overwrite, progress=update
                )
        finally:
            await store.close()

    try:
        summary = asyncio.run(run())
    except (KMSError, MasterKeyError) as exc:
        _store_failed(opts, exc)
    if opts.json:
        _emit(opts, {"file": str(infile), **_api_fields(summary)})
        return
    err_console.print(
        f"restore: {summary.restored} key(s) restored, {summary.skipped} kept as they were "
        f"(use --overwrite to replace), {summary.aliases} alias(es)",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@main.group()
def user() -> None:
    """Manage users (access keys with policies)."""


# The user's access key and secret must not be named like --access-key/--secret-key: those are
# the caller's own credentials (client_options), and would be taken for them.
@user.command("add", cls=_ClientCommand)
@click.argument("user_access_key", metavar="ACCESS_KEY")
@click.option("--policy", "policies", multiple=True, help="Policy name to attach (repeatable).")
@click.option(
    "--new-secret-key",
    envvar="S3KMS_NEW_USER_SECRET",
    show_envvar=True,
    help="The user's secret key (at least 8 characters); default: generated, printed once.",
)
@client_options
def user_add(
    user_access_key: str, policies: tuple[str, ...], new_secret_key: str | None, **kw: Any
) -> None:
    """Add a user; a generated secret is printed once."""
    opts = _opts(kw)
    added = _run(opts, lambda kms: kms.add_user(user_access_key, list(policies), new_secret_key))
    _emit(opts, added)
    if "secretKey" in added and not opts.json:
        err_console.print(
            "the secret key is shown only this once: store it now", highlight=False, soft_wrap=True
        )


@user.command("remove", cls=_ClientCommand)
@click.argument("user_access_key", metavar="ACCESS_KEY")
@client_options
def user_remove(user_access_key: str, **kw: Any) -> None:
    """Remove a user."""
    from s3kms.users import UserNotFound

    opts = _opts(kw)
    missing: dict[type[KMSError], str] = {UserNotFound: f"User '{user_access_key}' does not exist"}
    _emit(opts, _run(opts, lambda kms: kms.remove_user(user_access_key), explain=missing))


@user.command("list", cls=_ClientCommand)
@client_options
def user_list(**kw: Any) -> None:
    """List users and their policies."""
    opts = _opts(kw)
    _emit(opts, {"users": _run(opts, lambda kms: kms.list_users())}, rows="users")


@main.group()
def policy() -> None:
    """Manage access policies (IAM-style JSON)."""


@policy.command("add", cls=_ClientCommand)
@click.argument("name")
@click.argument("document", type=click.File("r"))
@client_options
def policy_add(name: str, document: Any, **kw: Any) -> None:
    """Create or replace policy NAME from the JSON file DOCUMENT ('-' for stdin)."""
    opts = _opts(kw)
    try:
        doc = json.load(document)
    except ValueError:
        raise click.UsageError("DOCUMENT is not valid JSON") from None
    _emit(opts, _run(opts, lambda kms: kms.put_policy(name, doc)))


@policy.command("remove", cls=_ClientCommand)
@click.argument("name")
@client_options
def policy_remove(name: str, **kw: Any) -> None:
    """Remove a policy."""
    opts = _opts(kw)
    _emit(opts, _run(opts, lambda kms: kms.remove_policy(name)))


@policy.command("list", cls=_ClientCommand)
@client_options
def policy_list(**kw: Any) -> None:
    """List policies."""
    opts = _opts(kw)
    _emit(opts, {"policies": _run(opts, lambda kms: kms.list_policies())}, rows="policies")


# -- the KES and KMIP APIs (docs/kes.md, docs/kmip.md) -------------------------------------------


def _certificate_identity(path: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from s3kms.auth.certificates import identity_of

    try:
        data = path.read_bytes()
        cert = (
            x509.load_pem_x509_certificate(data)
            if b"-----BEGIN" in data
            else x509.load_der_x509_certificate(data)
        )
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"cannot read a certificate from {path}: {exc}") from None
    return identity_of(cert.public_bytes(Encoding.DER))


def _when(condition: bool, decorator: Callable[[F], F]) -> Callable[[F], F]:
    """`decorator` when `condition` holds, else a decorator that changes nothing."""
    return decorator if condition else (lambda fn: fn)


def _identity_commands(parent: click.Group, surface: IdentitySurface, *, api_keys: bool) -> None:
    """`s3kms <surface> identity add|remove|list|of`: the certificate identities of users on one
    mutual-TLS surface (the admin routes `<surface>/identity/...`). `api_keys`: KES's API keys
    (`add --api-key`, `of --api-key`)."""
    name = {"kes": "KES", "kmip": "KMIP"}[surface]
    one_of = "IDENTITY, --api-key or --cert" if api_keys else "IDENTITY or --cert"

    @parent.group(
        "identity",
        help=f"{name} identities: the SHA-256 of a client certificate's public key, acting as a "
        "user.",
    )
    def group() -> None:
        pass

    @group.command(
        "add",
        cls=_ClientCommand,
        help=(
            f"Let a {name} client act as USER: its IDENTITY (hex), a --cert's, or a new "
            "--api-key's.\n\nWith --api-key the key is made here and only its identity is sent "
            "to the server; the key (MINIO_KMS_KES_API_KEY) is printed this once."
            if api_keys
            else f"Let a {name} client act as USER: its IDENTITY (hex) or a --cert's."
        ),
    )
    @click.argument("user_access_key", metavar="USER")
    @click.argument("identity", required=False)
    @_when(
        api_keys,
        click.option(
            "--api-key",
            "api_key",
            is_flag=True,
            help="Generate a KES API key (kes:v1:...) for the user and print it once.",
        ),
    )
    @click.option(
        "--cert",
        "cert",
        type=click.Path(path_type=Path, dir_okay=False),
        help="The client certificate (PEM or DER) whose identity to add.",
    )
    @client_options
    def add(
        user_access_key: str,
        identity: str | None,
        cert: Path | None,
        api_key: bool = False,
        **kw: Any,
    ) -> None:
        from s3kms.auth.certificates import normalize_identity
        from s3kms.auth.kes import APIKey

        if sum((identity is not None, api_key, cert is not None)) != 1:
            raise click.UsageError(f"give exactly one of {one_of}")
        opts = _opts(kw)
        generated: APIKey | None = None
        if api_key:
            generated = APIKey.generate()
            identity = generated.identity
        elif cert is not None:
            identity = _certificate_identity(cert)
        assert identity is not None
        try:
            identity = normalize_identity(identity)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="IDENTITY") from None
        added = _run(opts, lambda kms: kms.add_identity(surface, user_access_key, identity))
        if generated is not None:
            added["apiKey"] = generated.text()
        _emit(opts, added)
        if generated is not None and not opts.json:
            err_console.print(
                "the API key is shown only this once: store it now (MINIO_KMS_KES_API_KEY)",
                highlight=False,
                soft_wrap=True,
            )

    @group.command("remove", cls=_ClientCommand, help="Remove IDENTITY from USER.")
    @click.argument("user_access_key", metavar="USER")
    @click.argument("identity")
    @client_options
    def remove(user_access_key: str, identity: str, **kw: Any) -> None:
        opts = _opts(kw)
        _emit(opts, _run(opts, lambda kms: kms.remove_identity(surface, user_access_key, identity)))

    @group.command(
        "list", cls=_ClientCommand, help=f"List the {name} identities and the users they act as."
    )
    @client_options
    def list_(**kw: Any) -> None:
        opts = _opts(kw)
        found = _run(opts, lambda kms: kms.list_identities(surface))
        _emit(opts, {"identities": found}, rows="identities")

    @group.command(
        "of",
        help=(
            f"Print the {name} identity of a certificate or an API key (for --kes-admin-identity)."
            if api_keys
            else f"Print the {name} identity of a certificate."
        ),
    )
    @click.option(
        "--cert",
        "cert",
        type=click.Path(path_type=Path, dir_okay=False),
        required=not api_keys,
        help="A certificate (PEM or DER).",
    )
    @_when(
        api_keys,
        click.option("--api-key", "api_key", help="A KES API key (kes:v1:...); prefer stdin: '-'."),
    )
    def of(cert: Path | None, api_key: str | None = None) -> None:
        from s3kms.auth.kes import APIKey

        if (cert is None) == (api_key is None):
            raise click.UsageError("give one of --cert or --api-key")
        if cert is not None:
            click.echo(_certificate_identity(cert))
            return
        assert api_key is not None
        text = sys.stdin.readline().strip() if api_key == "-" else api_key
        try:
            click.echo(APIKey.parse(text).identity)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--api-key") from None


@main.group("kes")
def kes_group() -> None:
    """The KES API: the identities of KES clients (MinIO and its forks)."""


@main.group("kmip")
def kmip_group() -> None:
    """The KMIP API: the identities of KMIP clients (docs/kmip.md)."""


_identity_commands(kes_group, "kes", api_keys=True)
_identity_commands(kmip_group, "kmip", api_keys=False)
