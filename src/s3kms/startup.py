"""What `s3kms server` checks before it writes anything, and how a failed start ends.

`check(settings)` reads, and never writes: the TLS files and the users file, the data directory,
the root credentials, the master key (against the keystore's check value and the sealed users),
the persisted configuration, the audit log path, the listen address and, for Vault, the backend
itself. Each failure is a `StartupError`: one line for the operator (what failed, where, what to
do) and the exit code of its kind. `s3kms server` prints the line and exits with the code
(cli.py), so a failed start leaves the data directory as it was, or not created at all.
Only when every check has passed does the server create the data directory, generate root
credentials or a master key, and open the audit log and the keystore.

The exit codes are documented in docs/configuration.md#exit-codes.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import os
import socket
import sqlite3
import ssl
from enum import IntEnum
from pathlib import Path

import uvloop

from s3kms import credentials
from s3kms.config import KMS_CONFIG_FILE, KMSConfig, Settings, load_kms_config
from s3kms.crypto import masterkey
from s3kms.errors import BackendUnavailable, InvalidCiphertext, KMSError
from s3kms.keystore.local import stored_master_check
from s3kms.keystore.vault.settings import redact_address
from s3kms.runtime import initial_config, open_vault
from s3kms.users import USERS_FILE, UserStore, read_users_file


class ExitCode(IntEnum):
    """The exit code of each kind of start-up failure (1 stays Python's: an unexpected error,
    with its traceback; 3 stays uvicorn's: the application failed after these checks passed)."""

    USAGE = 2  # a flag, an S3KMS_* variable, the config file, or a file a setting names
    MASTER_KEY = 4  # missing, unreadable, malformed, or not the key the data was made with
    CREDENTIALS = 5  # S3KMS_ROOT_USER/S3KMS_ROOT_PASSWORD, or <data-dir>/credentials
    DATA_DIR = 6  # the data directory, a file in it, or the audit log
    ADDRESS = 7  # cannot listen on --address (in use, not this host's, privileged port)
    BACKEND = 8  # the Vault backend is unreachable, sealed, or refuses the credentials
    NOT_LOOPBACK = 9  # `--dev` with an --address that is not a loopback one


class StartupError(Exception):
    """The server cannot start: `str()` is one line (what failed, where, what to do)."""

    def __init__(self, code: ExitCode, problem: str, remedy: str) -> None:
        super().__init__(f"{problem.rstrip('.')}; {remedy}")
        self.code = code


SEE_HELP = "see `s3kms server --help` and docs/configuration.md"


def reason(exc: BaseException) -> str:
    """An exception in a few words, without a traceback or the exception's class."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, KMSError):
        return exc.message
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}" if exc.args else "a field is missing"
    return str(exc) or type(exc).__name__


def master_key_text(settings: Settings) -> str | None:
    """The master key given as text (S3KMS_MASTER_KEY, or `master_key` in the config file)."""
    return settings.master_key or os.environ.get("S3KMS_MASTER_KEY")


def check(settings: Settings) -> None:
    """Raise StartupError for the first thing that would stop the start; write nothing."""
    _check_tls(settings)
    _check_users_file(settings)
    _check_data_dir(settings.data_dir)
    _check_credentials(settings)
    _check_master_key(settings)
    config, source = _check_backend_config(settings)
    _check_audit_log(settings)
    _check_address(settings.host, settings.port)
    _check_kes(settings)
    _check_kmip(settings)
    if config.kms_type == "vault":
        _check_vault(config, source)


# -- files named by settings ----------------------------------------------------------------------


def _check_tls(settings: Settings) -> None:
    cert, key = settings.tls_cert, settings.tls_key
    if cert is None or key is None:
        return  # the command refuses one without the other
    for path, flag in ((cert, "--tls-cert"), (key, "--tls-key")):
        try:
            path.read_bytes()
        except OSError as exc:
            raise StartupError(
                ExitCode.USAGE,
                f"cannot read the TLS file {path} ({flag}): {reason(exc)}",
                f"give {flag} a readable PEM file",
            ) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A passphrase-protected key fails here instead of prompting on the terminal.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, ValueError) as exc:
        raise StartupError(
            ExitCode.USAGE,
            f"cannot use the TLS certificate {cert} (--tls-cert) with the key {key} "
            f"(--tls-key): {exc}",
            "give a PEM certificate (leaf first) and its matching private key, unencrypted",
        ) from None


def _check_users_file(settings: Settings) -> None:
    path = settings.users_file
    if path is None:
        return
    try:
        read_users_file(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, KMSError) as exc:
        raise StartupError(
            ExitCode.USAGE,
            f"cannot use the users file {path} (--users-file): {reason(exc)}",
            "fix the file (its format: docs/security.md)",
        ) from None


# -- the data directory ---------------------------------------------------------------------------

_DATA_FILES = (
    "keystore.db",
    "keystore.db-wal",
    "keystore.db-shm",
    "keystore.gen",
    USERS_FILE,
    KMS_CONFIG_FILE,
)


def _denied(path: Path) -> str:
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return os.strerror(errno.EROFS)
    except OSError:
        pass
    return os.strerror(errno.EACCES)


def _unwritable(path: Path, *, directory: bool) -> str | None:
    """Why `path` (a directory, or a file) could not be created or written, without trying;
    None when it could."""
    try:
        if path.exists():
            if directory and not path.is_dir():
                return os.strerror(errno.ENOTDIR)
            if not directory and path.is_dir():
                return os.strerror(errno.EISDIR)
            mode = os.R_OK | os.W_OK | (os.X_OK if directory else 0)
            return None if os.access(path, mode) else _denied(path)
        parent = path.absolute().parent
        while not parent.exists():
            parent = parent.parent
    except OSError as exc:
        return reason(exc)
    if not parent.is_dir():
        return os.strerror(errno.ENOTDIR)
    return None if os.access(parent, os.W_OK | os.X_OK) else _denied(parent)


def _check_data_dir(data_dir: Path) -> None:
    problem = _unwritable(data_dir, directory=True)
    if problem is not None:
        raise StartupError(
            ExitCode.DATA_DIR,
            f"cannot write to the data directory {data_dir}: {problem}",
            "choose a directory s3kms can create and write (--data-dir or S3KMS_DATA_DIR)",
        )
    for name in _DATA_FILES:
        path = data_dir / name
        problem = _unwritable(path, directory=False) if path.exists() else None
        if problem is not None:
            raise StartupError(
                ExitCode.DATA_DIR,
                f"cannot write to {path} in the data directory: {problem}",
                "give the user s3kms runs as read and write access to it",
            )


def _check_audit_log(settings: Settings) -> None:
    if settings.audit_log == "off":
        return
    if settings.audit_log:
        path, where = Path(settings.audit_log), " (--audit-log)"
    else:
        path, where = settings.data_dir / "audit" / "audit.log", ""
    problem = _unwritable(path, directory=False)
    if problem is not None:
        raise StartupError(
            ExitCode.DATA_DIR,
            f"cannot write the audit log {path}{where}: {problem}",
            "choose a writable path with --audit-log (or --audit-log off)",
        )


# -- root credentials -----------------------------------------------------------------------------


def root_min_length(settings: Settings) -> int:
    """The shortest root password allowed: any in dev mode (`test`/`test`), else 8 characters."""
    return 1 if settings.dev else credentials.MIN_PASSWORD


def _check_credentials(settings: Settings) -> None:
    try:
        min_length = root_min_length(settings)
        if credentials.check_given(
            settings.root_user, settings.root_password, min_length=min_length
        ):
            return
    except ValueError as exc:
        if settings.root_user and settings.root_password:
            remedy = "set a longer one, e.g. `head -c 24 /dev/urandom | base64`"
        else:
            remedy = "set both, or neither to use the root credentials in the data directory"
        raise StartupError(ExitCode.CREDENTIALS, str(exc), remedy) from None
    path = settings.data_dir / credentials.CREDENTIALS_FILE
    try:
        credentials.read_file(settings.data_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StartupError(
            ExitCode.CREDENTIALS,
            f"cannot read the root credentials {path}: {reason(exc)}",
            "restore the file, or set S3KMS_ROOT_USER and S3KMS_ROOT_PASSWORD "
            "(without the file and the variables a start generates new root credentials)",
        ) from None


# -- the master key -------------------------------------------------------------------------------

SAME_KEY = (
    "start with the master key this data directory was made with "
    "(S3KMS_MASTER_KEY or --master-key-file), or choose another --data-dir"
)


def _sealed_users(data_dir: Path) -> bool:
    """Whether `<data-dir>/users.json` holds users (their secrets are sealed under the key)."""
    path = data_dir / USERS_FILE
    try:
        stored = json.loads(path.read_text())
        return bool(stored.get("users"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError, AttributeError) as exc:
        raise _damaged_users(path, exc) from None


def _damaged_users(path: Path, exc: BaseException) -> StartupError:
    return StartupError(
        ExitCode.DATA_DIR,
        f"cannot read the users {path}: {reason(exc)}",
        "restore the file from a backup (or move it away: the users added through the API go)",
    )


def _check_master_key(settings: Settings) -> None:
    data_dir = settings.data_dir
    text = master_key_text(settings)
    try:
        key = masterkey.find(data_dir, settings.master_key_file, text)
    except masterkey.MasterKeyError as exc:
        if text:
            where = "S3KMS_MASTER_KEY"
        elif settings.master_key_file is not None:
            where = "--master-key-file"
        else:
            where = f"{data_dir / 'master.key'}"
        raise StartupError(
            ExitCode.MASTER_KEY,
            str(exc),
            f"fix {where}: it holds the base64 of 32 random bytes, the key this data was made "
            "with (a new one: `head -c 32 /dev/urandom | base64`)",
        ) from None
    db = data_dir / "keystore.db"
    try:
        check_value = stored_master_check(data_dir)
    except (sqlite3.Error, OSError) as exc:
        raise StartupError(
            ExitCode.DATA_DIR,
            f"cannot read the keystore {db}: {reason(exc)}",
            "restore the data directory from a backup (`s3kms restore`)",
        ) from None
    users = _sealed_users(data_dir)
    if key is None:
        if check_value is not None or users:
            held = db if check_value is not None else data_dir / USERS_FILE
            raise StartupError(
                ExitCode.MASTER_KEY,
                "no master key: S3KMS_MASTER_KEY and --master-key-file are not set and "
                f"{data_dir / 'master.key'} does not exist, but {held} was made with one",
                "give the master key it was made with in S3KMS_MASTER_KEY or --master-key-file",
            )
        return  # a first start: the key is generated once every check has passed
    if check_value is not None and not key.matches(check_value):
        raise StartupError(
            ExitCode.MASTER_KEY,
            f"the master key from {key.source} is not the key this keystore ({db}) was "
            "created with",
            SAME_KEY,
        )
    if users:
        path = data_dir / USERS_FILE
        try:
            UserStore(data_dir, key.material)
        except InvalidCiphertext:
            raise StartupError(
                ExitCode.MASTER_KEY,
                f"the master key from {key.source} cannot open the users in {path}: it is not "
                "the key they were sealed with",
                SAME_KEY,
            ) from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, KMSError) as exc:
            raise _damaged_users(path, exc) from None


# -- the backend ----------------------------------------------------------------------------------


def _check_backend_config(settings: Settings) -> tuple[KMSConfig, str]:
    """The backend the server starts with, and where that was said."""
    path = settings.data_dir / KMS_CONFIG_FILE
    if settings.backend is None:
        try:
            persisted = load_kms_config(settings.data_dir)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StartupError(
                ExitCode.DATA_DIR,
                f"cannot read the saved configuration {path}: {reason(exc)}",
                "fix or remove the file (the backend then is local), or choose one with --backend",
            ) from None
        source = str(path) if persisted is not None else "the default"
    else:
        source = "--backend"
    try:
        config = initial_config(settings)
    except ValueError as exc:
        raise StartupError(ExitCode.USAGE, str(exc), SEE_HELP) from None
    if config.vault is not None:
        try:
            config.vault.validate()
        except KMSError as exc:
            raise StartupError(
                ExitCode.USAGE,
                f"the Vault settings from {source} are invalid: {exc.message}",
                "fix them (docs/configuration.md#vault-settings)",
            ) from None
    return config, source


def _check_vault(config: KMSConfig, source: str) -> None:
    """Open the Vault backend as the server will (reachable, unsealed, credentials, mounts),
    then close it again: the server opens its own on its event loop."""
    vault = config.vault
    assert vault is not None
    addresses = ", ".join(redact_address(a) for a in vault.addresses)

    async def probe() -> None:
        store = await open_vault(vault)
        await store.close()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # the server's loop
            runner.run(probe())
    except BackendUnavailable as exc:
        raise StartupError(
            ExitCode.BACKEND,
            f"{exc.message} (Vault backend from {source})",
            "start or unseal Vault, or fix the address; or start with --backend local or none",
        ) from None
    except KMSError as exc:
        raise StartupError(
            ExitCode.BACKEND,
            f"Vault at {addresses} refuses s3kms: {exc.message} (Vault backend from {source})",
            "fix the token or AppRole, its policy or the mounts (docs/vault.md); "
            "or start with --backend local or none",
        ) from None


# -- dev mode -------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or `localhost`."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_dev(settings: Settings) -> None:
    """What `--dev` refuses, before anything (its temporary directory too) is made."""
    if not is_loopback(settings.host):
        raise StartupError(
            ExitCode.NOT_LOOPBACK,
            f"--dev listens on loopback only, not on {settings.host} (--address)",
            "give 127.0.0.1:PORT, [::1]:PORT or localhost:PORT; without --dev s3kms serves any "
            "address, with its own root credentials",
        )
    for address, flag in (
        (settings.kes_address, "--kes-address"),
        (settings.kmip_address, "--kmip-address"),
    ):
        if address is not None and not is_loopback(address.rpartition(":")[0].strip("[]")):
            raise StartupError(
                ExitCode.NOT_LOOPBACK,
                f"--dev listens on loopback only, not on {address} ({flag})",
                "give 127.0.0.1:PORT, [::1]:PORT or localhost:PORT",
            )
    if settings.backend not in (None, "local"):
        raise StartupError(
            ExitCode.USAGE,
            f"--dev uses the Local backend, not --backend {settings.backend}",
            "leave out --backend, or start without --dev",
        )


# -- the address ----------------------------------------------------------------------------------


def _check_kes(settings: Settings) -> None:
    """The KES listener (`--kes-address`): its address, certificate and admin identity."""
    from s3kms.auth.certificates import normalize_identity
    from s3kms.config import kes_tls_files, split_address
    from s3kms.http.mtls import TLSFilesError, server_context

    if settings.kes_address is None:
        for value, flag in (
            (settings.kes_tls_cert, "--kes-tls-cert"),
            (settings.kes_admin_identity, "--kes-admin-identity"),
        ):
            if value is not None:
                raise StartupError(
                    ExitCode.USAGE,
                    f"{flag} is given but the KES API is off",
                    "give --kes-address HOST:PORT too, or leave the KES settings out",
                )
        return
    try:
        host, port = split_address(settings.kes_address)
    except ValueError as exc:
        raise StartupError(ExitCode.USAGE, f"--kes-address: {exc}", "give HOST:PORT") from None
    if (host, port) == (settings.host, settings.port):
        raise StartupError(
            ExitCode.ADDRESS,
            f"--kes-address {settings.kes_address} is the main --address",
            "give the KES API a port of its own (KES servers commonly use 7373)",
        )
    files = kes_tls_files(settings)
    if files is None:
        raise StartupError(
            ExitCode.USAGE,
            "the KES API serves HTTPS only and has no certificate",
            "give --kes-tls-cert/--kes-tls-key (or --tls-cert/--tls-key)",
        )
    try:
        server_context(*files)
    except TLSFilesError as exc:
        raise StartupError(
            ExitCode.USAGE,
            f"the KES certificate: {exc}",
            "give a PEM certificate (leaf first) and its matching private key, unencrypted",
        ) from None
    if settings.kes_admin_identity is not None:
        try:
            normalize_identity(settings.kes_admin_identity)
        except ValueError as exc:
            raise StartupError(
                ExitCode.USAGE,
                f"--kes-admin-identity: {exc}",
                "give `s3kms kes identity of --cert FILE` of the admin's certificate",
            ) from None
    _check_address(host, port, "--kes-address")


def _check_kmip(settings: Settings) -> None:
    """The KMIP listener (`--kmip-address`): its address, certificate, client CA and the largest
    request. Off, none of its settings may be given."""
    from s3kms.config import (
        KMIP_MAX_MESSAGE,
        KMIP_MAX_MESSAGE_RANGE,
        KMIP_PORT,
        kmip_tls_files,
        split_address,
    )
    from s3kms.http.mtls import TLSFilesError, server_context

    if settings.kmip_address is None:
        for given, flag in (
            (settings.kmip_tls_cert is not None, "--kmip-tls-cert"),
            (settings.kmip_tls_key is not None, "--kmip-tls-key"),
            (settings.kmip_ca_cert is not None, "--kmip-ca-cert"),
            (settings.kmip_max_message != KMIP_MAX_MESSAGE, "--kmip-max-message"),
        ):
            if given:
                raise StartupError(
                    ExitCode.USAGE,
                    f"{flag} is given but the KMIP API is off",
                    "give --kmip-address HOST:PORT too, or leave the KMIP settings out",
                )
        return
    own_port = f"give the KMIP API a port of its own (KMIP's registered port is {KMIP_PORT})"
    try:
        host, port = split_address(settings.kmip_address)
    except ValueError as exc:
        raise StartupError(
            ExitCode.USAGE, f"--kmip-address: {exc}", f"give HOST:PORT, e.g. 0.0.0.0:{KMIP_PORT}"
        ) from None
    if (host, port) == (settings.host, settings.port):
        raise StartupError(
            ExitCode.ADDRESS,
            f"--kmip-address {settings.kmip_address} is the main --address",
            own_port,
        )
    if settings.kes_address is not None and _address_or_none(settings.kes_address) == (host, port):
        raise StartupError(
            ExitCode.ADDRESS,
            f"--kmip-address {settings.kmip_address} is the --kes-address",
            own_port,
        )
    low, high = KMIP_MAX_MESSAGE_RANGE
    limit = settings.kmip_max_message
    if isinstance(limit, bool) or not isinstance(limit, int) or not low <= limit <= high:
        raise StartupError(
            ExitCode.USAGE,
            f"--kmip-max-message {limit!r} is not a size from {low} to {high} bytes "
            "(1 KiB to 64 MiB)",
            f"give a number of bytes in that range (default {KMIP_MAX_MESSAGE})",
        )
    files = kmip_tls_files(settings)
    if files is None:
        raise StartupError(
            ExitCode.USAGE,
            "the KMIP API serves TLS only and has no certificate",
            "give --kmip-tls-cert/--kmip-tls-key (or --tls-cert/--tls-key)",
        )
    try:
        server_context(*files)
    except TLSFilesError as exc:
        raise StartupError(
            ExitCode.USAGE,
            f"the KMIP certificate: {exc}",
            "give a PEM certificate (leaf first) and its matching private key, unencrypted",
        ) from None
    if settings.kmip_ca_cert is not None:
        _check_ca_bundle(settings.kmip_ca_cert, "--kmip-ca-cert")
    _check_address(host, port, "--kmip-address")


def _address_or_none(text: str) -> tuple[str, int] | None:
    from s3kms.config import split_address

    try:
        return split_address(text)
    except ValueError:
        return None


def _check_ca_bundle(path: Path, flag: str) -> None:
    """A PEM bundle of one or more certificates that client certificates must chain to."""
    from cryptography import x509

    remedy = f"give {flag} a PEM file of the CA certificate(s) that issue the clients' certificates"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StartupError(
            ExitCode.USAGE, f"cannot read the CA file {path} ({flag}): {reason(exc)}", remedy
        ) from None
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise StartupError(
            ExitCode.USAGE,
            f"the CA file {path} ({flag}) holds no PEM certificate that can be read: {exc}",
            remedy,
        ) from None


def _check_address(host: str, port: int, flag: str = "--address") -> None:
    """Bind every address uvicorn will bind (and close them again)."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise StartupError(
            ExitCode.ADDRESS,
            f"cannot listen on {shown} ({flag}): {reason(exc)}",
            "give an IP address or a host name of this machine",
        ) from None
    for family, kind, proto, _, sockaddr in dict.fromkeys(infos):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen()
        except OSError as exc:
            raise StartupError(ExitCode.ADDRESS, *_bind_failure(shown, exc, flag)) from None
        finally:
            sock.close()


def _bind_failure(shown: str, exc: OSError, flag: str = "--address") -> tuple[str, str]:
    problem = f"cannot listen on {shown} ({flag}): {reason(exc)}"
    if exc.errno == errno.EADDRINUSE:
        return problem, f"stop the process that listens there, or choose another {flag}"
    if exc.errno == errno.EACCES:
        return problem, "ports below 1024 need privileges: choose another port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return problem, "that address is not one of this machine's: choose one that is"
    return problem, f"choose another {flag}"
