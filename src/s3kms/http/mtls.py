"""The mutual-TLS listener of the KES API: HTTPS that requires a client certificate, any CA or none.

KES identifies a client by the public key of its certificate (auth/kes.py), and MinIO's API-key
mode presents a self-signed one, so the listener must accept a certificate no CA signed while
still proving that the client holds its private key. The standard `ssl` module cannot: a server
context that asks for client certificates verifies them against its CAs and has no callback.
pyOpenSSL (pyca's binding of the same OpenSSL) can:

- `set_verify(VERIFY_PEER | VERIFY_FAIL_IF_NO_PEER_CERT, accept)`: the server asks for a
  certificate and the handshake fails without one; `accept` answers only the chain question
  ("do I trust the issuer?"), which KES does not ask, with yes. It has no say over the
  handshake's CertificateVerify: OpenSSL checks that signature (over the handshake transcript,
  with the certificate's public key) whatever the callback answers, and a client that cannot sign
  with the key is refused. Nothing here or in OpenSSL's options turns that check off.
- the identity is the SHA-256 of the leaf certificate's SubjectPublicKeyInfo, computed once per
  connection after the handshake from `get_peer_certificate()` (on a resumed session, the
  certificate of the full handshake that made it, verified then).
- renegotiation is off (`OP_NO_RENEGOTIATION`: the certificate cannot change under a connection),
  TLS 1.2 is the least version, ALPN selects `http/1.1` (Go offers `h2` first; HTTP/1.1 is what
  this server speaks).

The TLS runs over memory BIOs inside an asyncio protocol (`TlsProtocol`), which presents a
plaintext transport (`_TlsTransport`) to the HTTP protocol of the main port: uvicorn's httptools
protocol with s3kms's connection limits (http/connection.py: head and body sizes and deadlines,
pipelining, the connection cap). Handshakes have their own deadline (the head's,
`header_timeout`) and cap (`max_connections` handshakes at once, beside the established
connections the HTTP protocol caps), since they cost CPU before the HTTP layer sees anything.
The ASGI scope of each request carries the identity in
`scope["extensions"]["s3kms.kes"]["identity"]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import uvicorn
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from uvicorn.server import ServerState

from s3kms.auth.certificates import identity_of
from s3kms.http.connection import ConnectionLimits, LimitedHttpProtocol

log = logging.getLogger("s3kms.kes")

_READ = 65536
_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20"  # TLS 1.2; TLS 1.3 suites are OpenSSL's defaults


class TLSFilesError(ValueError):
    """The certificate or key of the listener cannot be used."""


def _accept_any_issuer(conn: SSL.Connection, cert: Any, errnum: int, depth: int, ok: int) -> bool:
    # The chain is not what identifies a KES client (its public key is); the CertificateVerify
    # check, which proves the key, is OpenSSL's own and not this callback's.
    return True


def _select_alpn(conn: SSL.Connection, offered: list[bytes]) -> Any:
    return b"http/1.1" if b"http/1.1" in offered else SSL.NO_OVERLAPPING_PROTOCOLS


def _keep_openssl_verdict(
    conn: SSL.Connection, cert: Any, errnum: int, depth: int, ok: int
) -> bool:
    return bool(ok)  # a CA is given: the chain must verify to it


def server_context(
    cert: Path,
    key: Path,
    *,
    ca: Path | None = None,
    alpn: bool = True,
    session_id: bytes = b"s3kms-kes",
) -> SSL.Context:
    """The listener's TLS context; TLSFilesError when the files do not make one. `ca`: client
    certificates must chain to these CA certificates (the KMIP port's --kmip-ca-cert); without
    it any issuer is accepted and the public key identifies the client. `alpn`: select
    http/1.1 (the KES port; KMIP has no ALPN name)."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    try:
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_options(SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_COMPRESSION)
        context.set_cipher_list(_CIPHERS)
        context.use_certificate_chain_file(str(cert))
        # Loaded by cryptography, without a password: an encrypted key fails, never prompts.
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
        context.use_privatekey(private)  # type: ignore[arg-type]
        context.check_privatekey()
    except (SSL.Error, OSError, ValueError, TypeError) as exc:
        raise TLSFilesError(f"cannot use {cert} with {key}: {exc}") from None
    verify = _accept_any_issuer
    if ca is not None:
        try:
            context.load_verify_locations(str(ca))
        except (SSL.Error, OSError) as exc:
            raise TLSFilesError(f"cannot use the CA certificates of {ca}: {exc}") from None
        verify = _keep_openssl_verdict
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
    context.set_session_id(session_id)  # resumption with client certificates needs one
    if alpn:
        context.set_alpn_select_callback(_select_alpn)
    return context


class Handshakes:
    """Connections of one listener that have not finished their handshake, against a cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.count = 0


class _TlsTransport(asyncio.Transport):
    """What the HTTP protocol writes to and closes: plaintext, through the TLS connection."""

    def __init__(self, tls: TlsProtocol, identity: str) -> None:
        super().__init__()
        self._tls = tls
        self._extensions = {"s3kms.kes": {"identity": identity}}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sslcontext":
            return self._tls.context  # uvicorn's is_ssl: the scheme is https
        if name in ("s3kms.kes.identity", "s3kms.identity"):
            return self._extensions["s3kms.kes"]["identity"]
        if name == "ssl_object":
            return self._tls.conn
        raw = self._tls.raw
        return default if raw is None else raw.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._tls.write_plain(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self._tls.write_plain(b"".join(bytes(d) for d in list_of_data))

    def is_closing(self) -> bool:
        return self._tls.closing

    def close(self) -> None:
        self._tls.close()

    def abort(self) -> None:
        self._tls.abort()

    def pause_reading(self) -> None:
        if self._tls.raw is not None:
            self._tls.raw.pause_reading()

    def resume_reading(self) -> None:
        if self._tls.raw is not None:
            self._tls.raw.resume_reading()

    def is_reading(self) -> bool:
        return self._tls.raw is not None and self._tls.raw.is_reading()

    def get_write_buffer_size(self) -> int:
        return 0 if self._tls.raw is None else self._tls.raw.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._tls.raw is not None:
            self._tls.raw.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return False


class TlsProtocol(asyncio.Protocol):
    """One connection: the handshake, then TLS records <-> the HTTP protocol's bytes."""

    def __init__(
        self,
        context: SSL.Context,
        http: Callable[[], asyncio.Protocol],
        handshakes: Handshakes,
        timeout: float,
    ) -> None:
        self.context = context
        self._http_factory = http
        self._handshakes = handshakes
        self._timeout = timeout
        self.raw: asyncio.Transport | None = None
        self.conn = SSL.Connection(context, None)
        self.conn.set_accept_state()
        self.closing = False
        self._http: asyncio.Protocol | None = None
        self._counted = False
        self._timer: asyncio.TimerHandle | None = None

    # -- from the socket ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses, but have its methods)
        self.raw = transport = cast(asyncio.Transport, transport)
        handshakes = self._handshakes
        if handshakes.count >= handshakes.cap:
            self.closing = True
            transport.abort()  # over the cap: no handshake work at all
            return
        handshakes.count += 1
        self._counted = True
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self.abort)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.conn.bio_write(data)
        except SSL.Error:
            self.abort()
            return
        if self._http is None and not self._handshake():
            return
        self._read_plain()

    def eof_received(self) -> bool | None:
        self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._done_handshaking()
        if self._http is not None:
            http, self._http = self._http, None
            http.connection_lost(exc)
        self.raw = None

    def pause_writing(self) -> None:
        if self._http is not None:
            self._http.pause_writing()

    def resume_writing(self) -> None:
        if self._http is not None:
            self._http.resume_writing()

    # -- TLS ----------------------------------------------------------------------------------

    def _done_handshaking(self) -> None:
        if self._counted:
            self._counted = False
            self._handshakes.count -= 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _handshake(self) -> bool:
        """Advance the handshake; True once it is complete and the HTTP protocol attached."""
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return False
        except SSL.Error as exc:
            log.debug("TLS handshake refused: %s", exc)
            self._flush()  # the alert, if OpenSSL made one
            self.abort()
            return False
        self._flush()
        self._done_handshaking()
        certificate = self.conn.get_peer_certificate(as_cryptography=True)
        if certificate is None:  # VERIFY_FAIL_IF_NO_PEER_CERT refused it already
            self.abort()
            return False
        try:
            identity = identity_of(certificate.public_bytes(serialization.Encoding.DER))
        except ValueError:
            self.abort()
            return False
        http = self._http = self._http_factory()
        http.connection_made(_TlsTransport(self, identity))
        return True

    def _read_plain(self) -> None:
        chunks: list[bytes] = []
        ended = False
        while not self.closing:
            try:
                chunk = self.conn.recv(_READ)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:  # the client's close_notify
                ended = True
                break
            except SSL.Error as exc:
                log.debug("KES TLS record refused: %s", exc)
                self.abort()
                return
            chunks.append(chunk)
        self._flush()  # TLS 1.3 post-handshake messages (key updates) may need an answer
        if chunks and self._http is not None and not self.closing:
            self._http.data_received(b"".join(chunks))
        if ended:
            self.close()

    def _flush(self) -> None:
        raw = self.raw
        while True:
            try:
                out = self.conn.bio_read(_READ)
            except SSL.WantReadError:
                return
            if raw is not None and not raw.is_closing():
                raw.write(out)

    # -- from the HTTP protocol -----------------------------------------------------------------

    def write_plain(self, data: bytes) -> None:
        if self.closing or not data:
            return
        try:
            self.conn.sendall(data)
        except SSL.Error:
            self.abort()
            return
        self._flush()

    def close(self) -> None:
        """Send close_notify after what is written, then close the socket once it is sent."""
        if self.closing:
            return
        self.closing = True
        with contextlib.suppress(SSL.Error):
            self.conn.shutdown()
        self._flush()
        if self.raw is not None:
            self.raw.close()

    def abort(self) -> None:
        self.closing = True
        if self.raw is not None:
            self.raw.abort()


async def listen(
    context: SSL.Context,
    plaintext: Callable[[], asyncio.Protocol],
    *,
    host: str,
    port: int,
    limits: ConnectionLimits,
    reuse_port: bool,
) -> asyncio.Server:
    """Bind a mutual-TLS port whose connections hand their plaintext to `plaintext()`'s
    protocols (the KES port's HTTP, the KMIP port's TTLV framing), under the handshake cap and
    deadline of `limits`."""
    loop = asyncio.get_running_loop()
    handshakes = Handshakes(limits.max_connections)

    def connection() -> asyncio.Protocol:
        return TlsProtocol(context, plaintext, handshakes, limits.header_timeout)

    return await loop.create_server(
        connection, host, port, reuse_port=reuse_port or None, backlog=2048
    )


class MtlsServer:
    """The KES port of one process: `start` binds and serves the ASGI `app`, `close` stops."""

    def __init__(
        self,
        app: Any,
        *,
        host: str,
        port: int,
        cert: Path,
        key: Path,
        limits: ConnectionLimits,
        keep_alive_timeout: float,
        reuse_port: bool = False,
    ) -> None:
        self.app = app
        self.host, self.port = host, port
        self._context = server_context(cert, key)
        self._limits = limits
        self._reuse_port = reuse_port
        # uvicorn's protocol reads the app and its keep-alive timeout from a Config; nothing
        # else of it is used (no logging set-up: log_config=None, no level change).
        self._config = uvicorn.Config(
            app,
            lifespan="off",
            proxy_headers=False,
            server_header=False,
            access_log=False,
            log_config=None,
            timeout_keep_alive=int(keep_alive_timeout) or 1,
        )
        self._config.load()
        self._state = ServerState()
        self._server: asyncio.Server | None = None

    @property
    def sockets(self) -> list[socket.socket]:
        return [] if self._server is None else list(self._server.sockets)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config, state, limits = self._config, self._state, self._limits

        def http() -> asyncio.Protocol:
            return KesHttpProtocol(config, state, {}, loop, limits=limits)

        self._server = await listen(
            self._context, http, host=self.host, port=self.port, limits=limits,
            reuse_port=self._reuse_port,
        )  # fmt: skip

    async def close(self, timeout: float = 5.0) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._state.connections):
            connection.shutdown()
        tasks = list(self._state.tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for connection in list(self._state.connections):
            connection.transport.abort()


class KesHttpProtocol(LimitedHttpProtocol):
    """The main port's HTTP protocol, with the client's KES identity in every request's scope."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        identity = self.transport.get_extra_info("s3kms.kes.identity")
        self.scope["extensions"] = {"s3kms.kes": {"identity": identity}}
