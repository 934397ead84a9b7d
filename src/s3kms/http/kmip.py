"""The KMIP listener: TTLV messages over mutual TLS (port 5696 by convention).

TLS is the KES port's (mtls.py: pyOpenSSL over memory BIOs, TLS 1.2 at least, a client
certificate required, its identity the SHA-256 of its public key), with the client certificate
verified against `--kmip-ca-cert` when one is given. Over it, `KmipConnection` frames messages:
an 8-byte TTLV head (tag Request Message 0x420078, type Structure, a length), then the body.

Rules that real clients need (../shared/reference/kmip.md):
- each response is written with one TLS write, so it leaves in one TLS record (responses are
  capped well under 16 KiB by the client's Maximum Response Size; Ceph's libkmip reads the body
  in a single read and breaks otherwise);
- a connection carries many requests, answered in order (one at a time per connection);
- a head that is not a Request Message, or a length over `--kmip-max-message`, cannot be
  answered in step with the stream: the connection is closed (nothing is processed); every
  other fault is a KMIP error answer (protocols/kmip/api.py).
Deadlines: a message must arrive whole within `body_timeout` of its first byte; an idle
connection is closed after `IDLE_TIMEOUT` (clients such as Ceph keep one open for long). The
established connections of a process are capped at `max_connections`, like the HTTP ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections import deque
from pathlib import Path
from typing import cast

from s3kms.http.connection import ConnectionLimits
from s3kms.http.mtls import listen, server_context
from s3kms.protocols.kmip.api import KmipAPI

log = logging.getLogger("s3kms.kmip")

_HEAD = struct.Struct(">3sBI")
_REQUEST_MESSAGE = b"\x42\x00\x78"
_STRUCTURE = 0x01
IDLE_TIMEOUT = 600.0  # seconds a connection may wait between requests
_QUEUED = 4  # messages read ahead of the one being answered, before reading pauses


class _Connections:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: set[KmipConnection] = set()


class KmipConnection(asyncio.Protocol):
    """One client's plaintext stream (under TlsProtocol): frames in, answers out, in order."""

    def __init__(
        self, api: KmipAPI, connections: _Connections, max_message: int, message_timeout: float
    ) -> None:
        self._api = api
        self._connections = connections
        self._max = max_message
        self._message_timeout = message_timeout
        self._buffer = bytearray()
        self._queue: deque[bytes] = deque()
        self._transport: asyncio.Transport | None = None
        self._identity = ""
        self._peer: tuple[str, int] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._partial = False  # a message has begun and its deadline runs
        self._writable = asyncio.Event()  # cleared while the client does not read its answers
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)
        if len(self._connections.open) >= self._connections.cap:
            transport.abort()
            return
        self._connections.open.add(self)
        self._identity = transport.get_extra_info("s3kms.identity")
        peer = transport.get_extra_info("peername")
        self._peer = (str(peer[0]), int(peer[1])) if peer else None
        self._arm(IDLE_TIMEOUT)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.open.discard(self)
        self._disarm()
        self._transport = None
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- framing --------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        self._buffer += data
        while len(self._buffer) >= _HEAD.size:
            tag, kind, length = _HEAD.unpack_from(self._buffer)
            if tag != _REQUEST_MESSAGE or kind != _STRUCTURE or length + _HEAD.size > self._max:
                log.debug("KMIP: unframeable input from %s, closing", self._peer)
                self.close()
                return
            end = _HEAD.size + length
            if len(self._buffer) < end:
                break
            self._queue.append(bytes(self._buffer[:end]))
            del self._buffer[:end]
            self._partial = False
        if self._buffer and not self._partial and self._worker is None:
            # A message begun must arrive whole within the deadline from its first bytes
            # (armed once: bytes trickling in do not move it).
            self._partial = True
            self._arm(self._message_timeout)
        if self._queue:
            if len(self._queue) > _QUEUED and not self._paused:
                self._paused = True
                self._transport.pause_reading()
            if self._worker is None:
                self._disarm()
                self._worker = asyncio.get_running_loop().create_task(self._answer())

    async def _answer(self) -> None:
        try:
            while self._queue and self._transport is not None:
                message = self._queue.popleft()
                if self._paused and len(self._queue) <= _QUEUED:
                    self._paused = False
                    self._transport.resume_reading()
                # Answers the client does not read stop the work, within the deadline.
                if not self._writable.is_set():
                    await asyncio.wait_for(self._writable.wait(), self._message_timeout)
                response = await self._api.handle(message, self._identity, self._peer)
                if self._transport is None:
                    return
                self._transport.write(response)  # one write: one TLS record
        except TimeoutError:
            log.debug("KMIP: %s does not read its answers, closing", self._peer)
            self.close()
            return
        except Exception:
            log.exception("KMIP connection from %s failed", self._peer)
            self.close()
            return
        finally:
            self._worker = None
        if self._transport is not None:
            self._partial = bool(self._buffer)
            self._arm(self._message_timeout if self._buffer else IDLE_TIMEOUT)

    # -- deadlines ------------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(seconds, self.close)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self._disarm()
        if self._transport is not None:
            self._transport.close()


class KmipServer:
    """The KMIP port of one process: `start` binds, `close` stops."""

    def __init__(
        self,
        api: KmipAPI,
        *,
        host: str,
        port: int,
        cert: Path,
        key: Path,
        ca: Path | None,
        limits: ConnectionLimits,
        max_message: int,
        reuse_port: bool = False,
    ) -> None:
        self.api = api
        self.host, self.port = host, port
        self._context = server_context(cert, key, ca=ca, alpn=False, session_id=b"s3kms-kmip")
        self._limits = limits
        self._max_message = max_message
        self._reuse_port = reuse_port
        self._server: asyncio.Server | None = None
        self._connections = _Connections(limits.max_connections)

    @property
    def sockets(self) -> list[socket.socket]:
        return [] if self._server is None else list(self._server.sockets)

    async def start(self) -> None:
        limits = self._limits

        def plaintext() -> asyncio.Protocol:
            return KmipConnection(
                self.api, self._connections, self._max_message, limits.body_timeout
            )

        self._server = await listen(
            self._context, plaintext, host=self.host, port=self.port, limits=limits,
            reuse_port=self._reuse_port,
        )  # fmt: skip

    async def close(self, timeout: float = 5.0) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._connections.open):
            connection.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout)
