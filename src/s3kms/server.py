"""Building and serving the application: settings -> credentials, runtime, ASGI app, uvicorn."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import logging
import os
import resource
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from s3kms import __version__, compiled, credentials, logs, startup
from s3kms.audit import AuditLog
from s3kms.auth.certificates import normalize_identity
from s3kms.auth.identity import Authenticator
from s3kms.auth.kes import KesAuthenticator
from s3kms.auth.kmip import KmipAuthenticator
from s3kms.clock import Clock, SystemClock
from s3kms.config import (
    KMSConfig,
    Settings,
    kes_tls_files,
    kmip_tls_files,
    served_regions,
    split_address,
)
from s3kms.crypto.masterkey import MasterKeyError
from s3kms.errors import KMSError
from s3kms.fsutil import ensure_private_dir
from s3kms.http.app import App, new_request_id
from s3kms.http.connection import ConnectionLimits
from s3kms.http.kes import KesApp
from s3kms.http.kmip import KmipServer
from s3kms.http.mtls import MtlsServer
from s3kms.keystore.generation import Generation
from s3kms.keystore.vault.settings import VaultSettings, redact_address
from s3kms.metrics import Metrics, exposition
from s3kms.metrics.endpoint import Scrape
from s3kms.metrics.shared import prepare_directory, remove_directory
from s3kms.protocols.kes.api import KesAPI
from s3kms.protocols.kmip.api import KmipAPI
from s3kms.runtime import Runtime, initial_config
from s3kms.startup import ExitCode, StartupError
from s3kms.users import USERS_GENERATION_FILE, UserStore

log = logging.getLogger("s3kms")

# Worker processes started by uvicorn rebuild the app from this environment variable.
_SETTINGS_ENV = "S3KMS__SERVER_SETTINGS"
# ...and report that they serve to the datagram socket this one names (_ReadyWatch).
_READY_ENV = "S3KMS__READY_SOCKET"
# File descriptors kept out of max_connections: the keystore, the audit log, the users file, the
# event loop's own, and up to 64 connections to Vault.
_FD_RESERVE = 128


def build_app(settings: Settings, clock: Clock | None = None) -> App:
    ensure_private_dir(settings.data_dir)
    root, _ = credentials.load_root(
        settings.data_dir,
        settings.root_user,
        settings.root_password,
        min_length=startup.root_min_length(settings),
    )
    clock = clock or SystemClock()
    runtime = Runtime(settings, clock, startup.master_key_text(settings))
    users = UserStore(
        settings.data_dir,
        runtime.master_key().material,
        settings.users_file,
        generation=Generation(settings.data_dir / USERS_GENERATION_FILE),
    )
    auth = Authenticator(
        root.access_key,
        root.secret_key,
        settings.region,
        clock,
        account_id=settings.account_id,
        users=users,
        rate_limit=settings.rate_limit,
        regions=served_regions(settings),
    )
    audit = open_audit_log(settings)
    metrics = scrape = None
    if settings.metrics != "off":
        metrics = runtime.metrics = Metrics(metrics_dir(settings))
        if audit is not None:
            audit.on_failure = metrics.audit_failure
        supervisor = os.getppid() if settings.workers > 1 else None
        scrape = Scrape(
            metrics,
            runtime,
            auth,
            mode=settings.metrics,
            root=(root.access_key, root.secret_key),
            supervisor=supervisor,
        )
    kes = None
    if settings.kes_address is not None:
        kes = kes_listener(settings, runtime, auth, audit, metrics, scrape)
    kmip = None
    if settings.kmip_address is not None:
        kmip = kmip_listener(settings, runtime, auth, audit, metrics)
    return App(
        runtime,
        auth,
        background_interval=settings.maintenance_interval,
        audit=audit,
        max_body=settings.max_body_bytes,
        metrics=metrics,
        scrape=scrape,
        dev=settings.dev,
        kes=kes,
        kmip=kmip,
    )


def kes_listener(
    settings: Settings,
    runtime: Runtime,
    auth: Authenticator,
    audit: AuditLog | None,
    metrics: Metrics | None,
    scrape: Scrape | None,
) -> MtlsServer:
    """The KES API's mutual-TLS listener of this process (docs/kes.md). With `--workers N`
    every worker binds the port (SO_REUSEPORT) and the kernel spreads connections over them."""
    assert settings.kes_address is not None
    admin = settings.kes_admin_identity
    render = None
    if scrape is not None:
        known = scrape

        async def render() -> tuple[bytes, bytes]:
            return await known.render(), exposition.CONTENT_TYPE

    api = KesAPI(
        runtime, KesAuthenticator(auth, normalize_identity(admin) if admin else None), render
    )
    host, port = split_address(settings.kes_address)
    files = kes_tls_files(settings)
    if files is None:
        raise ValueError("the KES API needs --kes-tls-cert/--kes-tls-key or --tls-cert/--tls-key")
    return MtlsServer(
        KesApp(api, audit=audit, metrics=metrics),
        host=host,
        port=port,
        cert=files[0],
        key=files[1],
        limits=connection_limits(settings),
        keep_alive_timeout=settings.keep_alive_timeout,
        reuse_port=settings.workers > 1,
    )


def kmip_listener(
    settings: Settings,
    runtime: Runtime,
    auth: Authenticator,
    audit: AuditLog | None,
    metrics: Metrics | None,
) -> KmipServer:
    """The KMIP listener of this process (docs/kmip.md); every worker binds it, as the KES one."""
    assert settings.kmip_address is not None
    host, port = split_address(settings.kmip_address)
    files = kmip_tls_files(settings)
    if files is None:
        raise ValueError("KMIP needs --kmip-tls-cert/--kmip-tls-key or --tls-cert/--tls-key")
    api = KmipAPI(
        runtime,
        KmipAuthenticator(auth),
        audit=audit,
        metrics=metrics,
        new_request_id=new_request_id,
    )
    return KmipServer(
        api,
        host=host,
        port=port,
        cert=files[0],
        key=files[1],
        ca=settings.kmip_ca_cert,
        limits=connection_limits(settings),
        max_message=settings.kmip_max_message,
        reuse_port=settings.workers > 1,
    )


def metrics_dir(settings: Settings) -> Path | None:
    """Where the workers' metrics files are (`--workers N`); None with one process."""
    return settings.data_dir / "metrics" if settings.workers > 1 else None


def audit_log_path(settings: Settings) -> Path | None:
    """Where the audit log is written; None when it is off."""
    if settings.audit_log == "off":
        return None
    return (
        Path(settings.audit_log)
        if settings.audit_log
        else settings.data_dir / "audit" / "audit.log"
    )


def open_audit_log(settings: Settings) -> AuditLog | None:
    path = audit_log_path(settings)
    if path is None:
        return None
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
    for name in (
        "data_dir", "master_key_file", "tls_cert", "tls_key", "kes_tls_cert", "kes_tls_key",
        "users_file", "kmip_tls_cert", "kmip_tls_key", "kmip_ca_cert",
    ):  # fmt: skip
        if data.get(name) is not None:
            data[name] = Path(data[name])
    if data.get("vault"):
        vault = dict(data["vault"])
        vault["addresses"] = tuple(vault["addresses"])
        data["vault"] = VaultSettings(**vault)
    return Settings(**data)


def app_factory() -> App:
    """Entry point for uvicorn worker processes (`--workers N`)."""
    app = build_app(_settings_from_env())
    app.freeze_after_start = True
    ready = os.environ.get(_READY_ENV)
    if ready:
        app.on_started = functools.partial(_report_ready, ready)
    return app


def _report_ready(path: str) -> None:
    """A worker serves: one datagram to the parent, which logs the start summary once all do."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"ready", path)
    except OSError:
        pass  # the parent no longer listens: it logged the summary already, or it is stopping


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


# -- the start summary ----------------------------------------------------------------------------


def listen_url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def local_key_count(data_dir: Path) -> int | None:
    """The keys in the Local keystore of `data_dir`, read-only; None when it cannot be read."""
    uri = f"{(data_dir / 'keystore.db').absolute().as_uri()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=1.0)
        try:
            row = conn.execute("SELECT count(*) FROM keys").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return int(row[0])


def start_summary(
    settings: Settings, config: KMSConfig, listen: Sequence[str], keys: int | None
) -> tuple[str, dict[str, Any]]:
    """The line logged once the server serves, and its fields (of their own in a JSON line).

    Keys are counted only on the Local backend (one SQL count); on Vault counting them would
    list every key's name from Vault at each start of each node, so `keys` is null there."""
    fields: dict[str, Any] = {"event": "start", "version": __version__, "backend": config.kms_type}
    backend = config.kms_type
    if config.vault is not None and config.kms_type == "vault":
        addresses = [redact_address(a) for a in config.vault.addresses]
        fields["vault_addresses"] = addresses
        backend += f" ({', '.join(addresses)})"
    audit = audit_log_path(settings)
    fields |= {
        "data_dir": str(settings.data_dir.absolute()),
        "listen": list(listen),
        "workers": settings.workers,
        "keys": keys if config.kms_type == "local" else None,
        "audit_log": "off" if audit is None else str(audit.absolute()),
        "hot_path": compiled.hot_path(),
    }
    parts = [
        f"backend {backend}",
        f"data dir {fields['data_dir']}",
        f"listening on {', '.join(listen)}",
        f"{settings.workers} worker{'s' if settings.workers != 1 else ''}",
    ]
    if fields["keys"] is not None:
        parts.append(f"{keys} key{'s' if keys != 1 else ''}")
    if settings.kes_address is not None:
        host, port = split_address(settings.kes_address)
        fields["kes_listen"] = listen_url("https", host, port)
        parts.append(f"KES API on {fields['kes_listen']}")
    parts.append(f"audit log {fields['audit_log']}")
    parts.append(f"hot path {fields['hot_path']}")
    return f"s3kms {__version__} ready: {', '.join(parts)}", fields


def log_start_summary(
    settings: Settings, config: KMSConfig, listen: Sequence[str], keys: int | None
) -> None:
    message, fields = start_summary(settings, config, listen, keys)
    log.info("%s", message, extra={logs.FIELDS: fields})


def _scheme(settings: Settings) -> str:
    return "https" if settings.tls_cert is not None else "http"


class _Server(uvicorn.Server):
    """uvicorn's server (one process), which logs the start summary once it serves."""

    def __init__(
        self, config: uvicorn.Config, ready: Callable[[list[tuple[str, int]]], Awaitable[None]]
    ) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            names = [s.getsockname() for server in self.servers for s in server.sockets]
            await self._ready([(str(name[0]), int(name[1])) for name in names])


class _ReadyWatch:
    """`--workers N`: the parent learns when every worker serves (each sends one datagram to a
    socket in a private directory, named in S3KMS__READY_SOCKET), then logs the start summary."""

    def __init__(self, workers: int, ready: Callable[[], None]) -> None:
        self._dir = tempfile.mkdtemp(prefix="s3kms-ready-")
        self.path = os.path.join(self._dir, "ready")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(self.path)
        except OSError:
            self.close()
            raise
        self._sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(workers, ready), name="s3kms-ready", daemon=True
        )
        self._thread.start()

    def _run(self, workers: int, ready: Callable[[], None]) -> None:
        seen = 0
        while seen < workers and not self._stop.is_set():
            try:
                self._sock.recv(16)
            except TimeoutError:
                continue
            except OSError:
                return
            seen += 1
        if seen == workers:
            try:
                ready()
            except Exception:
                log.exception("cannot log the start summary")

    def close(self) -> None:
        if hasattr(self, "_stop"):
            self._stop.set()
            self._thread.join(2)
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class _Stop:
    """SIGTERM and SIGINT stop `s3kms server` cleanly, with exit code 0 (1 worker or N alike).

    While uvicorn serves, its own handlers take both signals and shut the server down; then it
    restores the handlers it found and raises the signal again, so that they run too. With
    Python's default handler SIGTERM would then kill the process after its clean shutdown (exit
    143 from a shell, -15 for its parent). This is the handler uvicorn finds: before uvicorn serves
    (the checks, building the app) it stops the start at once; afterwards it asks the server to
    exit, which it already does, so `serve` returns and the process ends with 0. (With workers,
    uvicorn's supervisor takes the signals in the parent for good, and exits with 0.)
    """

    def __init__(self) -> None:
        self.server: uvicorn.Server | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.server is None:
            raise SystemExit(0)
        self.server.should_exit = True

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self)


# -- dev mode -------------------------------------------------------------------------------------

DEV_ROOT = "test"  # what CI pipelines export for LocalStack (AWS_ACCESS_KEY_ID=test, ...)


def dev_settings(settings: Settings) -> Settings:
    """`--dev`: the Local backend, every region (unless --regions says which), and root
    credentials test/test unless both are given."""
    if settings.root_user is None and settings.root_password is None:
        settings = dataclasses.replace(settings, root_user=DEV_ROOT, root_password=DEV_ROOT)
    return dataclasses.replace(settings, backend="local", regions=settings.regions or "*")


def _regions_line(settings: Settings) -> str:
    if settings.regions.strip() == "*":
        return f"every region (home, for the admin API and ARNs by default: {settings.region})"
    names = sorted({settings.region, *(n.strip() for n in settings.regions.split(",") if n)})
    return ", ".join(names) + f" (home: {settings.region})"


def dev_banner(settings: Settings, root: credentials.Credentials, temporary: bool) -> str:
    url = listen_url(_scheme(settings), settings.host, settings.port)
    where = "a temporary directory, removed at exit" if temporary else "--data-dir, kept"
    rule = "=" * 78
    return "\n".join(
        [
            rule,
            "  s3kms DEV MODE: NOT FOR PRODUCTION. State is thrown away at exit.",
            f"  state:       {settings.data_dir.absolute()} ({where})",
            f"  endpoint:    {url}  (loopback only)",
            f"  regions:     {_regions_line(settings)}",
            f"  access key:  {root.access_key}",
            f"  secret key:  {root.secret_key}",
            f"  reset:       POST {url}/_s3kms/reset, signed by root, wipes every key, alias,",
            "               grant, key policy, user, policy and audit line",
            *(
                [f"  KES API:     https://{settings.kes_address} (mutual TLS; docs/kes.md)"]
                if settings.kes_address is not None
                else []
            ),
            rule,
        ]
    )


def serve(settings: Settings, *, temporary_data_dir: bool = False) -> None:
    """Check, then run the server; StartupError (one line, an exit code) when it cannot start.

    `--dev` (settings.dev): after its own checks (loopback only, the Local backend), with
    `temporary_data_dir` the state lives in a directory made here and removed however the server
    ends (SIGTERM, SIGINT, a failed start; with workers, by this supervising process)."""
    if not settings.dev:
        _serve(settings)
        return
    stop = _Stop()
    stop.install()  # a signal from here on still removes the directory (SystemExit, finally)
    startup.check_dev(settings)
    settings = dev_settings(settings)
    if not temporary_data_dir:
        _serve(settings, temporary=False)
        return
    directory = tempfile.mkdtemp(prefix="s3kms-dev-")
    try:
        _serve(dataclasses.replace(settings, data_dir=Path(directory)), temporary=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _serve(settings: Settings, *, temporary: bool = False) -> None:
    stop = _Stop()
    stop.install()
    logs.configure(settings.log_format, settings.log_level)
    os.umask(0o077)  # every file s3kms creates is private to its user, whatever the caller's umask
    # Everything that can stop the start is checked before anything is written (startup.py).
    startup.check(settings)
    try:
        ensure_private_dir(settings.data_dir)
        root, generated = credentials.load_root(
            settings.data_dir,
            settings.root_user,
            settings.root_password,
            min_length=startup.root_min_length(settings),
        )
    except (OSError, ValueError) as exc:
        raise _late_failure(exc) from None
    if settings.dev:
        print(dev_banner(settings, root, temporary), file=sys.stderr, flush=True)
    if generated:
        stored = settings.data_dir / credentials.CREDENTIALS_FILE
        if settings.log_format.lower() == "json":
            # A JSON log goes to a collector: the secret stays in the file, which says it.
            log.warning(
                "generated root credentials: access key %s; the secret key is in %s (mode 0600)",
                root.access_key,
                stored,
            )
        else:
            # Printed once, at the first start; afterwards they are only in the 0600 file.
            print(
                f"s3kms: generated root credentials (stored in {stored}, mode 0600):\n"
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
    # uvicorn's lines in the same format as s3kms's, in this process and in every worker.
    options["log_config"] = logs.dict_config(settings.log_format, settings.log_level)
    try:
        # Built here also with workers (each builds its own), so a failure the checks could not
        # foresee ends the start with one line, not a traceback per worker.
        app = build_app(settings)
    except (OSError, ValueError, KMSError, MasterKeyError) as exc:
        raise _late_failure(exc) from None
    if settings.workers > 1:
        if app.audit is not None:
            app.audit.close()  # the check is done; each worker opens its own
        _serve_workers(settings, options)
        return

    async def ready(bound: list[tuple[str, int]]) -> None:
        keys = None
        if app.runtime.config.kms_type == "local":
            try:
                keys = await app.runtime.service.store.count_keys()
            except Exception:  # the summary goes without the count
                keys = None
        listen = dict.fromkeys(listen_url(_scheme(settings), host, port) for host, port in bound)
        log_start_summary(settings, app.runtime.config, list(listen), keys)

    app.freeze_after_start = True
    server = _Server(uvicorn.Config(app, **options), ready)
    stop.server = server
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _serve_workers(settings: Settings, options: dict[str, Any]) -> None:
    config = initial_config(settings)
    listen = [listen_url(_scheme(settings), settings.host, settings.port)]

    def ready() -> None:
        keys = local_key_count(settings.data_dir) if config.kms_type == "local" else None
        log_start_summary(settings, config, listen, keys)

    os.environ[_SETTINGS_ENV] = _settings_to_env(settings)
    try:
        watch: _ReadyWatch | None = _ReadyWatch(settings.workers, ready)
    except OSError:  # no private socket (a temporary directory too long for one): log it now
        watch = None
        ready()
    if watch is not None:
        os.environ[_READY_ENV] = watch.path
    shared_metrics = metrics_dir(settings) if settings.metrics != "off" else None
    if shared_metrics is not None:
        prepare_directory(shared_metrics)  # each worker writes its file there (s3kms.metrics)
    try:
        uvicorn.run("s3kms.server:app_factory", factory=True, workers=settings.workers, **options)
    finally:
        if watch is not None:
            watch.close()
        if shared_metrics is not None:
            remove_directory(shared_metrics)
