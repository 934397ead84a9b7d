"""The HTTP/1.1 client the Vault transport speaks through: keep-alive connections on asyncio
protocols, responses parsed by httptools (the parser uvicorn serves s3kms with).

Why not httpx: its pool checks every pooled connection for readability on every request, so
each Vault call cost about 1.3 ms of CPU at 32 calls in flight, most of s3kms's time on the
Vault backend; aiohttp costs about 150 µs; this client about 55 µs (benchmarks/README.md,
*Vault HTTP clients*). It does only what Vault needs: one request at a time per connection,
Content-Length bodies out, Content-Length or chunked bodies in, TLS through an SSLContext, no
proxies, no redirects, no cookies. A connection that the server closes is dropped from the pool
the moment the event loop sees it close, so taking one from the pool costs no system call.

Errors say whether the request can have reached the server: `ConnectFailed` (no connection
was opened: refused, unresolvable, TLS handshake, connect timeout) certainly not;
`RequestFailed` and its `RequestTimeout` maybe.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

# A bound on one answer's body, against a broken server: Vault's largest answers are listings
# (a KV LIST of a million key ids is about 45 MB).
MAX_RESPONSE_BYTES = 256 * 1024 * 1024
# Idle keep-alive connections kept per origin, and how long one may sit unused: past that the
# peer may have gone away silently (a network partition closes nothing).
_MAX_IDLE = 64
_IDLE_SECONDS = 30.0


class HttpError(Exception):
    """A request got no HTTP answer."""


class ConnectFailed(HttpError):
    """No connection was opened: the request certainly never reached the server."""

    def __init__(self, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.timed_out = timed_out


class RequestFailed(HttpError):
    """The connection broke, or the answer was malformed, after the request may have been sent."""


class RequestTimeout(RequestFailed):
    """No whole answer within the request's timeout."""


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass(slots=True, frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int
    host_header: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time; the httptools parser calls the on_*
    methods as the answer arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._to_eof = False  # the answer's body runs to the end of the connection
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses, but have its methods.)
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing asked: a server that talks out of turn
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(RequestFailed(f"malformed HTTP answer ({exc})"))

    def eof_received(self) -> bool:
        # Out of the pool now: connection_lost comes a loop pass later, and a request that took
        # the connection in between would fail as "maybe sent".
        self.closed = True
        self.reusable = False
        # httptools cannot be told the connection ended (it has no llhttp_finish): a body with no
        # length given, which runs to the end of the connection, ends here. Any other unfinished
        # answer was cut short: connection_lost fails it.
        if self._waiter is not None and self._to_eof:
            self.on_message_complete()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self._waiter is not None and not self._waiter.done():
            detail = f" ({exc})" if exc else ""
            self._waiter.set_exception(
                RequestFailed(f"connection closed before the answer{detail}")
            )

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        if self._waiter is None:  # more after the answer, in the same read: out of turn too
            self.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._to_eof = "content-length" not in self._headers and "chunked" not in (
            self._headers.get("transfer-encoding", "").lower()
        )

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_RESPONSE_BYTES:
            self._fail(RequestFailed(f"answer larger than {MAX_RESPONSE_BYTES} bytes"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        self.reusable = not self.closed and self._parser.should_keep_alive()
        response = HttpResponse(self._parser.get_status_code(), self._headers, b"".join(self._body))
        self._headers, self._body, self._size, self._to_eof = {}, [], 0, False
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    # --

    def _fail(self, error: RequestFailed) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.abort()

    def abort(self) -> None:
        self.closed = True
        self.reusable = False
        if self._transport is not None:
            self._transport.abort()

    def exchange(self, request: bytes) -> asyncio.Future[HttpResponse]:
        """Send `request`; the future gets the answer (or RequestFailed)."""
        assert self._transport is not None and self._waiter is None
        self.reusable = False
        self._waiter = self._loop.create_future()
        self._transport.write(request)
        return self._waiter


def _origin(address: str) -> _Origin:
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) address: {address!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    default = port == (443 if parts.scheme == "https" else 80)
    header = shown if default else f"{shown}:{port}"
    return _Origin(parts.scheme, host, port, header.encode("ascii"))


def _header_line(name: str, value: str) -> bytes:
    line = f"{name}: {value}\r\n"
    if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
        raise ValueError(f"header {name} contains a line break")
    return line.encode("latin-1")


class HttpClient:
    """Keep-alive HTTP/1.1 requests to a few origins (the addresses of one Vault cluster)."""

    def __init__(self, ssl_context: ssl.SSLContext | None) -> None:
        """`ssl_context` verifies https origins (None: http only)."""
        self._ssl = ssl_context
        self._origins: dict[str, _Origin] = {}
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._closed = False

    async def request(
        self,
        method: str,
        address: str,
        target: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
        connect_timeout: float,
    ) -> HttpResponse:
        """`method target` to the origin `address` (scheme://host[:port]); `target` is the
        already-quoted path and query. The whole try takes at most `timeout` seconds, of which
        opening a connection at most `connect_timeout`."""
        if self._closed:
            raise ConnectFailed("the HTTP client is closed")
        origin = self._origins.get(address)
        if origin is None:
            origin = self._origins[address] = _origin(address)
        head = [f"{method} {target} HTTP/1.1\r\nHost: ".encode("ascii"), origin.host_header]
        head.append(b"\r\n")
        head += [_header_line(name, value) for name, value in headers.items()]
        if body is not None:
            head.append(b"Content-Type: application/json\r\n")
            head.append(b"Content-Length: %d\r\n\r\n" % len(body))
            head.append(body)
        else:
            head.append(b"\r\n")
        request = b"".join(head)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        connection = self._take_idle(origin, loop.time())
        if connection is None:
            connection = await self._connect(loop, origin, min(connect_timeout, timeout))
        try:
            async with asyncio.timeout_at(deadline):
                response = await connection.exchange(request)
        except TimeoutError:
            connection.abort()
            raise RequestTimeout("timed out") from None
        except BaseException:  # RequestFailed, or the caller was cancelled mid-answer
            connection.abort()
            raise
        finally:
            if connection.closed:
                self._open.discard(connection)
        self._release(origin, connection, loop.time())
        return response

    def _take_idle(self, origin: _Origin, now: float) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < _IDLE_SECONDS:
                return connection
            connection.abort()
            self._open.discard(connection)
        return None

    def _release(self, origin: _Origin, connection: _Connection, now: float) -> None:
        idle = self._idle.setdefault(origin, [])
        if connection.reusable and not self._closed and len(idle) < _MAX_IDLE:
            connection.idle_since = now
            idle.append(connection)
        else:
            connection.abort()
            self._open.discard(connection)

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, origin: _Origin, timeout: float
    ) -> _Connection:
        tls: dict[str, Any] = {}
        if origin.scheme == "https":
            if self._ssl is None:
                raise ConnectFailed("https is not configured")
            tls = {"ssl": self._ssl, "server_hostname": origin.host}
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop), origin.host, origin.port, **tls
                )
        except TimeoutError:
            raise ConnectFailed("timed out", timed_out=True) from None
        except (OSError, ssl.SSLError) as exc:  # refused, unreachable, DNS, TLS handshake
            raise ConnectFailed(str(exc) or type(exc).__name__) from None
        if self._closed:  # closed while this connection was being opened
            connection.abort()
            raise ConnectFailed("the HTTP client is closed")
        self._open.add(connection)
        return connection

    async def aclose(self) -> None:
        """Close every connection (requests in flight fail with RequestFailed)."""
        self._closed = True
        for connection in list(self._open):
            connection.abort()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run their connection_lost
