"""The `s3kms` command: `s3kms server` runs the KMS; the other commands talk to one.

Client commands find the endpoint and credentials in flags, then `S3KMS_ENDPOINT` /
`S3KMS_ACCESS_KEY` / `S3KMS_SECRET_KEY`, then the local data directory's `credentials` file.
Tables for people, `--json` for scripts; on failure a non-zero exit with the error code and message.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from s3kms import __version__, credentials
from s3kms.client import Client
from s3kms.config import Settings, parse_vault_addresses, read_toml
from s3kms.crypto import keyspecs
from s3kms.errors import KMSError
from s3kms.keystore.vault.settings import VaultSettings, checked_metadata_cache_seconds

if TYPE_CHECKING:
    from s3kms.startup import StartupError

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
    for name in [*names, *_VAULT_OPTIONS]:
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
    for name in ("data_dir", "master_key_file", "tls_cert", "tls_key", "users_file"):
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
    for name in ("audit_max_bytes", "audit_keep_files", "audit_unauthenticated_burst"):
        if name in merged:
            merged[name] = _number(int, name, merged[name])
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
    help="Key backend (default: the persisted configuration, else local).",
)
@click.option("--region", help="Region in SigV4 scopes and ARNs (us-east-1).")
@click.option("--account-id", help="Account id in ARNs (000000000000).")
@click.option(
    "--master-key-file",
    type=click.Path(path_type=Path),
    help="File holding the Local backend's master key (base64 of 32 bytes).",
)
@click.option("--default-key-id", help="Default key id reported by /kms/status.")
@click.option("--workers", type=int, help="Worker processes on one port (1).")
@click.option("--tls-cert", type=click.Path(path_type=Path), help="PEM certificate: serve HTTPS.")
@click.option("--tls-key", type=click.Path(path_type=Path), help="PEM private key for --tls-cert.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
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
@click.option("--config", type=click.Path(path_type=Path, exists=True), help="TOML settings file.")
@click.option("--vault-address", help="Vault/OpenBao address(es), comma-separated.")
@click.option("--vault-token", help="Vault token (prefer S3KMS_VAULT_TOKEN).")
@click.option("--vault-namespace")
@click.option("--vault-mount-path", help="Transit mount (transit).")
@click.option("--vault-kv-mount", help="KV v2 mount for metadata (secret).")
@click.option("--vault-kv-prefix", help="Path prefix in KV (s3kms).")
@click.option("--vault-app-role-id")
@click.option("--vault-app-role-secret-id", help="Prefer S3KMS_VAULT_APP_ROLE_SECRET_ID.")
@click.option("--vault-timeout-seconds", type=float, help="Bound on one Vault request (10).")
@click.option(
    "--vault-connect-timeout-seconds", type=float, help="Bound on opening a connection (2)."
)
@click.option(
    "--vault-metadata-cache-seconds",
    type=float,
    help="Seconds a node may reuse a key's state read from Vault on crypto requests "
    "(1; 0 disables this cache).",
)
@click.option("--vault-ca-cert", type=click.Path())
def server(**flags: Any) -> None:
    """Run the KMS server (exit codes: docs/configuration.md#exit-codes)."""
    from s3kms.server import serve
    from s3kms.startup import SEE_HELP, ExitCode, StartupError, reason

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
        serve(settings)
    except StartupError as exc:
        _startup_failed(exc)


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


def client_options(fn: F) -> F:
    options = [
        click.option("--endpoint", envvar="S3KMS_ENDPOINT", help="http(s)://HOST:PORT"),
        click.option("--access-key", envvar="S3KMS_ACCESS_KEY"),
        click.option("--secret-key", envvar="S3KMS_SECRET_KEY"),
        click.option(
            "--data-dir",
            envvar="S3KMS_DATA_DIR",
            default="s3kms-data",
            type=click.Path(path_type=Path),
            help="Where to find the credentials file.",
        ),
        click.option("--region", envvar="S3KMS_REGION", default="us-east-1"),
        click.option("--ca-cert", envvar="S3KMS_CA_CERT", help="CA bundle to verify HTTPS."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts."),
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


def _run(opts: ClientOptions, call: Callable[[Client], Any]) -> Any:
    try:
        with opts.client() as kms:
            return call(kms)
    except KMSError as exc:  # the server's answer: its code and its message
        said = f"{exc.code}: {exc.message}" if exc.message else exc.code
        err_console.print(f"[red]error[/red] {escape(said)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except httpx.TransportError as exc:  # no answer: refused, unknown host, TLS, timeout
        said = f"cannot reach {opts.url}: {_no_answer_reason(exc)}"
        err_console.print(f"[red]error[/red] {escape(said)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as exc:  # a file the client reads: the credentials file, the --ca-cert bundle
        said = _os_reason(exc, opts)
        err_console.print(f"[red]error[/red] {escape(said)}", highlight=False, soft_wrap=True)
        sys.exit(2)


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


def _emit(opts: ClientOptions, value: Any, title: str | None = None) -> None:
    items = value if isinstance(value, list) else [value]
    rows = [
        dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
        for v in items
    ]
    if opts.json:
        click.echo(json.dumps(rows if isinstance(value, list) else rows[0], indent=2))
        return
    table = Table(title=title)
    columns = list(rows[0]) if rows else ["key_id"]
    for column in columns:
        table.add_column(column.replace("_", " "))
    for row in rows:
        table.add_row(*("" if row[c] is None else str(row[c]) for c in columns))
    console.print(table)


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


@key.command("create")
@click.argument("name", required=False)
@click.option(
    "--spec",
    type=_choice(keyspecs.KEY_SPECS),
    help="AWS KeySpec (default SYMMETRIC_DEFAULT: an AES-256 encryption key).",
)
@click.option(
    "--usage",
    type=_choice(keyspecs.ALGORITHM_FIELDS),
    help="AWS KeyUsage; required with every spec but SYMMETRIC_DEFAULT.",
)
@client_options
def key_create(name: str | None, spec: str | None, usage: str | None, **kw: Any) -> None:
    """Create a key (a UUID name when NAME is left out).

    `--spec RSA_2048 --usage SIGN_VERIFY` makes a signing key, `--spec HMAC_256 --usage
    GENERATE_VERIFY_MAC` an HMAC key.
    """
    opts = _opts(kw)
    _emit(opts, _run(opts, lambda kms: kms.create_key(name, spec, usage)))


@key.command("list")
@click.option("--pattern", help="Shell-style glob over key ids (*, ?, [...]).")
@client_options
def key_list(pattern: str | None, **kw: Any) -> None:
    """List keys, sorted by key id."""
    opts = _opts(kw)
    _emit(opts, _run(opts, lambda kms: kms.list_keys(pattern)), title="keys")


@key.command("status")
@click.argument("name")
@client_options
def key_status(name: str, **kw: Any) -> None:
    """Show one key."""
    opts = _opts(kw)
    _emit(opts, _run(opts, lambda kms: kms.key_status(name)))


def _key_change(command: str, method: str, doc: str) -> None:
    @key.command(command, help=doc)
    @click.argument("name")
    @client_options
    def change(name: str, **kw: Any) -> None:
        opts = _opts(kw)
        _emit(opts, _run(opts, lambda kms: getattr(kms, method)(name)))


_key_change("enable", "enable_key", "Enable a key.")
_key_change("disable", "disable_key", "Disable a key.")
_key_change("rotate", "rotate_key", "Make new key material; old versions still decrypt.")
_key_change(
    "cancel-deletion", "cancel_key_deletion", "Cancel a scheduled deletion (key stays disabled)."
)


@key.command("delete")
@click.argument("name")
@click.option("--days", type=int, default=30, show_default=True, help="Pending window, 7-30.")
@client_options
def key_delete(name: str, days: int, **kw: Any) -> None:
    """Schedule a key for deletion after a waiting period."""
    opts = _opts(kw)
    _emit(opts, _run(opts, lambda kms: kms.schedule_key_deletion(name, days)))


@main.command()
@client_options
def status(**kw: Any) -> None:
    """Show the KMS status."""
    opts = _opts(kw)
    _emit(opts, _run(opts, lambda kms: kms.status()))


@main.command()
@click.option("--kms-type", type=click.Choice(["local", "vault"]), required=True)
@click.option("--default-key-id")
@click.option("--vault-address")
@click.option("--vault-token", envvar="S3KMS_VAULT_TOKEN")
@click.option("--vault-namespace")
@click.option("--vault-mount-path")
@click.option("--vault-kv-mount")
@click.option("--vault-kv-prefix")
@click.option("--vault-app-role-id")
@click.option("--vault-app-role-secret-id", envvar="S3KMS_VAULT_APP_ROLE_SECRET_ID")
@click.option("--vault-timeout-seconds", type=float)
@click.option("--vault-connect-timeout-seconds", type=float)
@click.option("--vault-metadata-cache-seconds", type=float)
@click.option("--vault-ca-cert")
@client_options
def configure(**kw: Any) -> None:
    """Switch the KMS backend (checked before it switches)."""
    opts = _opts(kw)
    body = {k: v for k, v in kw.items() if v is not None}
    message = _run(opts, lambda kms: kms.configure(**body))
    _emit(opts, {"status": "success", "message": message})


@main.command()
@click.argument("name")
@click.option("--bytes", "size", type=int, default=32, show_default=True)
@click.option("--context", multiple=True, help="Encryption context entry KEY=VALUE (repeatable).")
@client_options
def datakey(name: str, size: int, context: tuple[str, ...], **kw: Any) -> None:
    """Generate a data key under NAME: plaintext and ciphertext, base64."""
    opts = _opts(kw)
    dk = _run(
        opts,
        lambda kms: kms.generate_data_key(name, number_of_bytes=size, context=_context(context)),
    )
    _emit(
        opts,
        {
            "key_id": dk.key_id,
            "plaintext": base64.b64encode(dk.plaintext).decode(),
            "ciphertext": base64.b64encode(dk.ciphertext).decode(),
        },
    )


@main.command()
@click.argument("name")
@click.option("--context", multiple=True, help="Encryption context entry KEY=VALUE (repeatable).")
@client_options
def encrypt(name: str, context: tuple[str, ...], **kw: Any) -> None:
    """Encrypt stdin (at most 4096 bytes) under NAME; prints the ciphertext as base64."""
    opts = _opts(kw)
    data = sys.stdin.buffer.read()
    blob = _run(opts, lambda kms: kms.encrypt(name, data, _context(context)))
    click.echo(base64.b64encode(blob).decode())


@main.command()
@click.option("--context", multiple=True, help="Encryption context entry KEY=VALUE (repeatable).")
@click.option("--key", "key_ref", help="Expected key (refused if the ciphertext names another).")
@client_options
def decrypt(context: tuple[str, ...], key_ref: str | None, **kw: Any) -> None:
    """Decrypt a base64 ciphertext read from stdin; writes the plaintext to stdout."""
    opts = _opts(kw)
    try:
        blob = base64.b64decode(sys.stdin.read().strip(), validate=True)
    except ValueError:
        raise click.UsageError("stdin is not base64") from None
    plaintext = _run(opts, lambda kms: kms.decrypt(blob, _context(context), key_ref))
    sys.stdout.buffer.write(plaintext)


def _context(entries: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for entry in entries:
        name, sep, value = entry.partition("=")
        if not sep:
            raise click.BadParameter(f"{entry!r} is not KEY=VALUE", param_hint="--context")
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
    """Report a check: exit 0 when valid, 1 (with a message on stderr) when not."""
    if opts.json:
        _emit(opts, {**fields, "valid": valid})
    elif valid:
        click.echo(f"valid: the {what} matches the message and key {fields['key_id']}")
    if not valid:
        err_console.print(
            f"[red]invalid[/red] the {what} does not match the message and key {fields['key_id']}",
            highlight=False,
        )
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


@main.command("sign")
@click.argument("name")
@click.option("--algorithm", required=True, type=_choice(_algorithms(keyspecs.SIGN_VERIFY)))
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
    signature = _run(opts, lambda kms: kms.sign(name, data, algorithm, message_type))
    fields = {"key_id": name, "algorithm": algorithm, "message_type": message_type}
    _put_blob(opts, signature, raw_out, "signature", fields)


@main.command("verify")
@click.argument("name")
@click.option("--algorithm", required=True, type=_choice(_algorithms(keyspecs.SIGN_VERIFY)))
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
    valid = _run(opts, lambda kms: kms.verify(name, data, given, algorithm, message_type))
    _verdict(opts, valid, "signature", {"key_id": name, "algorithm": algorithm})


def _pem(der: bytes) -> str:
    """A SubjectPublicKeyInfo DER as PEM (`-----BEGIN PUBLIC KEY-----`), whatever its algorithm."""
    text = base64.b64encode(der).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"


@main.command("public-key")
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
    """Print the public key of the asymmetric key NAME as PEM (SubjectPublicKeyInfo)."""
    opts = _opts(kw)
    der = _run(opts, lambda kms: kms.public_key(name))
    if der_out is not None:
        der_out.write(der)
    if opts.json:
        _emit(opts, {"key_id": name, "public_key": _pem(der)})
    elif der_out is None:
        click.echo(_pem(der), nl=False)


@main.command("mac")
@click.argument("name")
@click.option("--algorithm", required=True, type=_choice(_algorithms(keyspecs.GENERATE_VERIFY_MAC)))
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
        tag = _run(opts, lambda kms: kms.generate_mac(name, data, algorithm))
        _put_blob(opts, tag, raw_out, "mac", {"key_id": name, "algorithm": algorithm})
        return
    valid = _run(opts, lambda kms: kms.verify_mac(name, data, given, algorithm))
    _verdict(opts, valid, "MAC", {"key_id": name, "algorithm": algorithm})


# -- audit, backup, users -----------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """Work with the tamper-evident audit log."""


@audit.command("verify")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def audit_verify(files: tuple[Path, ...]) -> None:
    """Check the hash chain of audit log FILES (oldest first: audit.log.1 audit.log.2 audit.log)."""
    from s3kms.audit import verify

    result = verify(list(files))
    if result.ok:
        click.echo(f"ok: {result.lines} lines, chain intact")
        return
    err_console.print(f"[red]TAMPERED[/red] {result.problem}", highlight=False)
    sys.exit(1)


def _passphrase(passphrase_file: Path | None, confirm: bool) -> str:
    if passphrase_file is not None:
        return passphrase_file.read_text().strip()
    env = os.environ.get("S3KMS_BACKUP_PASSPHRASE")
    if env:
        return env
    value: str = click.prompt("backup passphrase", hide_input=True, confirmation_prompt=confirm)
    return value


def _open_local_store(data_dir: Path, master_key_file: Path | None) -> Any:
    from s3kms.crypto import masterkey
    from s3kms.keystore.local import LocalKeyStore

    if not (data_dir / "keystore.db").exists() and not data_dir.exists():
        raise click.UsageError(f"no data directory at {data_dir}")
    key = masterkey.load(data_dir, master_key_file, os.environ.get("S3KMS_MASTER_KEY"))
    return LocalKeyStore(data_dir, key)


def _progress_bar(label: str) -> tuple[Any, Callable[[int, int], None]]:
    from rich.progress import MofNCompleteColumn, Progress

    progress = Progress(
        *Progress.get_default_columns(),
        MofNCompleteColumn(),  # keys done / total
        console=err_console,
        transient=False,
        disable=not err_console.is_terminal,
    )
    task = progress.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return progress, update


_BACKUP_OPTIONS = [
    click.option(
        "--data-dir",
        envvar="S3KMS_DATA_DIR",
        default="s3kms-data",
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
]


def backup_options(fn: F) -> F:
    for option in reversed(_BACKUP_OPTIONS):
        fn = option(fn)
    return fn


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@backup_options
def backup(
    out: Path, data_dir: Path, master_key_file: Path | None, passphrase_file: Path | None
) -> None:
    """Write every Local key (versions, states, metadata, aliases) to OUT, encrypted.

    Reads the data directory directly (safe while the server runs). For the Vault backend use
    `POST .../kms/backup` and Vault's own snapshots.
    """
    import asyncio

    from s3kms.backup import create_backup
    from s3kms.crypto.masterkey import MasterKeyError
    from s3kms.fsutil import write_private_file

    passphrase = _passphrase(passphrase_file, confirm=True)

    async def run() -> int:
        store = _open_local_store(data_dir, master_key_file)
        progress, update = _progress_bar("backing up keys")
        try:
            with progress:
                data = await create_backup(store, passphrase, update)
            write_private_file(out, data)
            return int(await store.count_keys())
        finally:
            await store.close()

    try:
        count = asyncio.run(run())
    except (KMSError, MasterKeyError) as exc:
        err_console.print(f"[red]error[/red] {exc}", highlight=False)
        sys.exit(1)
    err_console.print(f"backup: {count} key(s) written to {out} (encrypted, mode 0600)")


@main.command()
@click.argument("infile", metavar="IN", type=click.Path(exists=True, path_type=Path))
@backup_options
@click.option("--overwrite", is_flag=True, help="Replace keys that exist already.")
def restore(
    infile: Path,
    data_dir: Path,
    master_key_file: Path | None,
    passphrase_file: Path | None,
    overwrite: bool,
) -> None:
    """Bring the keys of a backup IN into the Local data directory (existing keys are kept)."""
    import asyncio

    from s3kms.backup import restore_backup
    from s3kms.crypto.masterkey import MasterKeyError
    from s3kms.fsutil import ensure_private_dir

    passphrase = _passphrase(passphrase_file, confirm=False)
    ensure_private_dir(data_dir)

    async def run() -> Any:
        store = _open_local_store(data_dir, master_key_file)
        progress, update = _progress_bar("restoring keys")
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
        err_console.print(f"[red]error[/red] {exc}", highlight=False)
        sys.exit(1)
    err_console.print(
        f"restore: {summary.restored} key(s) restored, {summary.skipped} kept as they were "
        f"(use --overwrite to replace), {summary.aliases} alias(es)"
    )


@main.group()
def user() -> None:
    """Manage users (access keys with policies)."""


# The user's access key and secret must not be named like --access-key/--secret-key: those are
# the caller's own credentials (client_options), and would be taken for them.
@user.command("add")
@click.argument("user_access_key", metavar="ACCESS_KEY")
@click.option("--policy", "policies", multiple=True, help="Policy name to attach (repeatable).")
@click.option(
    "--new-secret-key", envvar="S3KMS_NEW_USER_SECRET", help="The user's secret; else generated."
)
@client_options
def user_add(
    user_access_key: str, policies: tuple[str, ...], new_secret_key: str | None, **kw: Any
) -> None:
    """Add a user; a generated secret is printed once."""
    opts = _opts(kw)
    _emit(
        opts,
        _run(opts, lambda kms: kms.add_user(user_access_key, list(policies), new_secret_key)),
    )


@user.command("remove")
@click.argument("user_access_key", metavar="ACCESS_KEY")
@client_options
def user_remove(user_access_key: str, **kw: Any) -> None:
    """Remove a user."""
    opts = _opts(kw)
    _emit(opts, _run(opts, lambda kms: kms.remove_user(user_access_key)))


@user.command("list")
@client_options
def user_list(**kw: Any) -> None:
    """List users and their policies."""
    opts = _opts(kw)
    _emit(opts, _run(opts, lambda kms: kms.list_users()), title="users")


@main.group()
def policy() -> None:
    """Manage access policies (IAM-style JSON)."""


@policy.command("add")
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


@policy.command("remove")
@click.argument("name")
@client_options
def policy_remove(name: str, **kw: Any) -> None:
    """Remove a policy."""
    opts = _opts(kw)
    _emit(opts, _run(opts, lambda kms: kms.remove_policy(name)))


@policy.command("list")
@client_options
def policy_list(**kw: Any) -> None:
    """List policies."""
    opts = _opts(kw)
    _emit(opts, _run(opts, lambda kms: kms.list_policies()), title="policies")
