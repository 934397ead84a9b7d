"""Building and serving the application: settings -> credentials, runtime, ASGI app, uvicorn."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import resource
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from s3kms import credentials, startup
from s3kms.audit import AuditLog
from s3kms.auth.identity import Authenticator
from s3kms.clock import Clock, SystemClock
from s3kms.config import Settings
from s3kms.crypto.masterkey import MasterKeyError
from s3kms.errors import KMSError
from s3kms.fsutil import ensure_private_dir
from s3kms.http.app import App
from s3kms.http.connection import ConnectionLimits
from s3kms.keystore.vault.settings import VaultSettings
from s3kms.runtime import Runtime
from s3kms.startup import ExitCode, StartupError
from s3kms.users import UserStore

log = logging.getLogger("s3kms")

# Worker processes started by uvicorn rebuild the app from this environment variable.
_SETTINGS_ENV = "S3KMS__SERVER_SETTINGS"
# File descriptors kept out of max_connections: the keystore, the audit log, the users file, the
# event loop's own, and up to 64 connections to Vault.
_FD_RESERVE = 128


def build_app(settings: Settings, clock: Clock | None = None) -> App:
    ensure_private_dir(settings.data_dir)
    root, _ = credentials.load_root(settings.data_dir, settings.root_user, settings.root_password)
    clock = clock or SystemClock()
    runtime = Runtime(settings, clock, startup.master_key_text(settings))
    users = UserStore(settings.data_dir, runtime.master_key().material, settings.users_file)
    auth = Authenticator(
        root.access_key,
        root.secret_key,
        settings.region,
        clock,
        account_id=settings.account_id,
        users=users,
        rate_limit=settings.rate_limit,
    )
    return App(
        runtime,
        auth,
        background_interval=settings.maintenance_interval,
        audit=open_audit_log(settings),
        max_body=settings.max_body_bytes,
    )


def open_audit_log(settings: Settings) -> AuditLog | None:
    if settings.audit_log == "off":
        return None
    path = (
        Path(settings.audit_log)
        if settings.audit_log
        else settings.data_dir / "audit" / "audit.log"
    )
    return AuditLog(
        path,
        max_bytes=settings.audit_max_bytes,
        fsync_interval=settings.audit_fsync_interval,
        keep_files=settings.audit_keep_files,
        unauthenticated_rate=settings.audit_unauthenticated_rate,
        unauthenticated_burst=settings.audit_unauthenticated_burst,
        shared=settings.workers > 1,  # worker processes append to one chain
    )


def _settings_to_env(settings: Settings) -> str:
    data: dict[str, Any] = asdict(settings)
    return json.dumps(data, default=str)


def _settings_from_env() -> Settings:
    data = json.loads(os.environ[_SETTINGS_ENV])
    for name in ("data_dir", "master_key_file", "tls_cert", "tls_key", "users_file"):
        if data.get(name) is not None:
            data[name] = Path(data[name])
    if data.get("vault"):
        vault = dict(data["vault"])
        vault["addresses"] = tuple(vault["addresses"])
        data["vault"] = VaultSettings(**vault)
    return Settings(**data)


def app_factory() -> App:
    """Entry point for uvicorn worker processes (`--workers N`)."""
    return build_app(_settings_from_env())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fit_to_fd_limit(max_connections: int) -> int:
    """`max_connections`, lowered so that connections leave this process file descriptors for its
    own files, its Vault connections and the clients it accepts (see docs/security.md)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    budget = max(1, soft // 2, soft - _FD_RESERVE)
    if max_connections > budget:
        log.info(
            "max_connections %d lowered to %d to fit the open-file limit (%d)",
            max_connections,
            budget,
            soft,
        )
        return budget
    return max_connections


def connection_limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(
        max_connections=fit_to_fd_limit(settings.max_connections),
        max_request_line=settings.max_request_line,
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        max_body_bytes=settings.max_body_bytes,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        send_timeout=settings.send_timeout,
    )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for `settings`: `serve` and the tests' in-process servers share them."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": connection_limits(settings).protocol_factory(),  # httptools, with the limits
        "timeout_keep_alive": settings.keep_alive_timeout,
        "access_log": False,
        "log_level": settings.log_level,
        "server_header": False,
        "proxy_headers": False,
        "lifespan": "on",
    }
    if settings.tls_cert is not None:
        import ssl

        options["ssl_certfile"] = str(settings.tls_cert)
        options["ssl_keyfile"] = str(settings.tls_key)
        options["ssl_version"] = ssl.PROTOCOL_TLS_SERVER
    return options


def _late_failure(exc: Exception) -> StartupError:
    """A failure after the checks passed (a path they cannot judge without writing, a race)."""
    if isinstance(exc, MasterKeyError):
        return StartupError(ExitCode.MASTER_KEY, f"cannot start: {exc}", startup.SAME_KEY)
    if isinstance(exc, OSError):
        return StartupError(
            ExitCode.DATA_DIR,
            f"cannot start: {exc}",
            "check the data directory (--data-dir) and the audit log path (--audit-log)",
        )
    return StartupError(ExitCode.USAGE, f"cannot start: {startup.reason(exc)}", startup.SEE_HELP)


def serve(settings: Settings) -> None:
    """Check, then run the server; StartupError (one line, an exit code) when it cannot start."""
    import uvicorn

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    os.umask(0o077)  # every file s3kms creates is private to its user, whatever the caller's umask
    # Everything that can stop the start is checked before anything is written (startup.py).
    startup.check(settings)
    try:
        ensure_private_dir(settings.data_dir)
        root, generated = credentials.load_root(
            settings.data_dir, settings.root_user, settings.root_password
        )
    except (OSError, ValueError) as exc:
        raise _late_failure(exc) from None
    if generated:
        # Printed once, at the first start; afterwards they are only in the 0600 file.
        print(
            "s3kms: generated root credentials (stored in "
            f"{settings.data_dir / credentials.CREDENTIALS_FILE}, mode 0600):\n"
            f"  access key: {root.access_key}\n  secret key: {root.secret_key}",
            file=sys.stderr,
            flush=True,
        )
    tls = settings.tls_cert is not None
    if not tls and not is_loopback(settings.host):
        log.warning(
            "listening on %s without TLS: credentials, data keys and plaintexts travel in clear. "
            "Use --tls-cert/--tls-key outside a trusted network.",
            settings.host,
        )
    options = uvicorn_options(settings)
    try:
        # Built here also with workers (each builds its own), so a failure the checks could not
        # foresee ends the start with one line, not a traceback per worker.
        app = build_app(settings)
    except (OSError, ValueError, KMSError, MasterKeyError) as exc:
        raise _late_failure(exc) from None
    if settings.workers > 1:
        if app.audit is not None:
            app.audit.close()  # the check is done; each worker opens its own
        os.environ[_SETTINGS_ENV] = _settings_to_env(settings)
        uvicorn.run("s3kms.server:app_factory", factory=True, workers=settings.workers, **options)
    else:
        uvicorn.run(app, **options)
