"""Connection limits: what a client can cost before its request is authenticated, or even parsed.

`LimitedHttpProtocol` is uvicorn's httptools protocol (one instance per connection) with:

- a cap on live connections per server process: one over it is answered 503 and closed at once,
  so the process keeps file descriptors for its own files and for clients that behave;
- size limits counted while the bytes arrive: the request target (414), the header block and the
  number of headers (431). A header that never ends costs at most the limit plus one socket read;
- at most `MAX_PIPELINED` requests queued behind the one being answered;
- deadlines: for the head (from the connection's start, or from the first byte of a later request
  on a kept-alive connection) and for the body (`body_timeout` after the head was due), then 408
  and close; and for a client that leaves its answers unread (close). The idle time between
  requests is uvicorn's `timeout_keep_alive`.

The hot path adds a few integer operations per request, per header and per socket read, and one
clock read per request: a request's deadline is a number, and the connection's one timer is not
cancelled when the request has arrived; when it fires it closes the connection if the deadline in
force has passed, moves on to that deadline if not, and lapses if no request is arriving. Warnings
(a full server, a malformed request) are logged at most once per kind per 10 s.
"""

from __future__ import annotations

import asyncio
import functools
import http
import logging
import math
import sys
import time
from asyncio import TimerHandle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

log = logging.getLogger("s3kms.http")

_UNBOUNDED = sys.maxsize
# What a request line adds to its target (method, version, line ends), and a header line to its
# name and value (": " and CRLF): raw bytes are compared with the limits plus these.
_LINE_OVERHEAD = 64
_HEADER_OVERHEAD = 4
# Seconds between two warnings of one kind: clients that cost nothing must not fill the log.
_WARNING_INTERVAL = 10.0
# Requests queued behind the one being answered (HTTP pipelining). uvicorn queues every request
# it parses, and one socket read can hold thousands of small ones: without a bound, a client
# that sends and never reads grows the queue by that much per answer.
MAX_PIPELINED = 16


def _response(status: int) -> bytes:
    phrase = http.HTTPStatus(status).phrase
    return (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(phrase)}\r\nconnection: close\r\n\r\n{phrase}"
    ).encode()


_RESPONSES = {status: _response(status) for status in (408, 413, 414, 431, 503)}


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits one server process enforces; `Settings` documents each and its default."""

    max_connections: int
    max_request_line: int  # bytes of the request target (path and query)
    max_header_bytes: int  # bytes of the header block: name + value + 4 per header
    max_headers: int
    max_body_bytes: int  # the app enforces it; here it bounds a chunked body's framing
    header_timeout: float
    body_timeout: float
    send_timeout: float

    def protocol_factory(self) -> Callable[..., asyncio.Protocol]:
        """What uvicorn's `http=` option takes. A partial of a module-level class, so it pickles
        into the `--workers` processes."""
        return functools.partial(LimitedHttpProtocol, limits=self)


class _OneWrite:
    """The transport as one request's cycle sees it. uvicorn writes a response's head and its
    body separately: two syscalls and two TCP segments per answer, the head's alone a large part
    of a small answer's cost. This holds the head until the body's first write and sends both in
    one. A HEAD answer has no body write, so its head is never held."""

    __slots__ = ("_cycle", "_head", "_held", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._held = cycle.scope["method"] == "HEAD"  # True once the head has been seen

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data = self._head + data
            self._head = None
        elif not self._held and self._cycle.response_started:
            self._head = data  # the head: the response has started and nothing was written
            self._held = True
            return
        self._transport.write(data)

    def close(self) -> None:
        if self._head is not None:  # an answer given up after its head (the app failed)
            self._transport.write(self._head)
            self._head = None
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request that is over a limit."""


class LimitedHttpProtocol(HttpToolsProtocol):
    _warned_at: ClassVar[dict[str, float]] = {}

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._head_budget = limits.max_request_line + limits.max_header_bytes + _LINE_OVERHEAD
        # A chunked body's raw bytes: the body the app accepts, generous framing, the trailers.
        self._chunked_budget = 2 * limits.max_body_bytes + limits.max_header_bytes
        self._budget = self._head_budget  # raw bytes the current phase may take
        self._received = 0  # raw bytes received in the current phase
        self._in_head = True  # until the current (or next) request's headers are complete
        self._headers_left = limits.max_headers
        self._header_room = limits.max_header_bytes  # bytes
        self._refusal = 0  # the status to answer when a callback stopped the parser
        self._deadline = 0.0  # the head's, then the body's (loop time); 0: no request arriving
        self._timer: TimerHandle | None = None
        self._timer_at = math.inf  # when it fires
        self._send_timer: TimerHandle | None = None

    # -- the connection ----------------------------------------------------------------------------

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport  # for connection_lost; never added to the live set
            transport.write(_RESPONSES[503])
            transport.close()
            if self._may_warn("full"):
                log.warning(
                    "refusing connections: %d open, max_connections is %d",
                    len(self.connections),
                    self.limits.max_connections,
                )
            return
        super().connection_made(transport)
        self._deadline = self.loop.time() + self.limits.header_timeout
        self._arm(self._deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, with the byte count and the answers to a refused request.
        self._unset_keepalive_if_required()
        self._received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refusal:
                self._close(self._refusal)
                return
            msg = "Invalid HTTP request received."
            if self._may_warn("invalid"):
                log.warning("invalid HTTP request from %s answered 400", self.client)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            return  # answered as plain HTTP (_should_upgrade), and not worth a log line
        if self._received > self._budget:
            # A header (or a chunked body's framing) still growing past the limit.
            self._close(431 if self._in_head else 413)

    def _should_upgrade(self) -> bool:
        # s3kms has no WebSocket route, and an upgraded connection would leave these limits.
        return False

    # -- parser callbacks --------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._deadline:
            # A later request on a kept-alive connection: its head is due from its first byte.
            self._deadline = deadline = self.loop.time() + self.limits.header_timeout
            if deadline < self._timer_at:  # no timer pending (one due earlier moves itself on)
                self._arm(deadline)

    # on_url and on_header are uvicorn's, inlined (they run per header) with the limits added.

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.limits.max_request_line:
            self._refuse(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Counted across the trailers of a chunked body too.
        self._headers_left -= 1
        self._header_room -= len(name) + len(value) + _HEADER_OVERHEAD
        if self._headers_left < 0 or self._header_room < 0:
            self._refuse(431)
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if len(self.pipeline) >= MAX_PIPELINED:
            self._refuse(503)  # closed without an answer: answers to earlier requests are due
        self._in_head = False
        self._received = 0
        self._budget = _UNBOUNDED  # a Content-Length body is the app's to limit
        # The body is due body_timeout after the head was: the deadline only moves later, so the
        # timer in place (due no later than the head) is left to move itself on.
        self._deadline += self.limits.body_timeout
        super().on_headers_complete()
        cycle = self.cycle
        cycle.transport = _OneWrite(self.transport, cycle)  # type: ignore[assignment]

    def on_chunk_header(self) -> None:
        self._budget = self._chunked_budget

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._deadline = 0.0  # the timer lapses; the keep-alive timeout takes over
        self._in_head = True
        self._received = 0
        self._headers_left = self.limits.max_headers
        self._header_room = self.limits.max_header_bytes
        self._budget = self._head_budget

    def _refuse(self, status: int) -> None:
        self._refusal = status
        raise _Refused(status)

    # -- deadlines ---------------------------------------------------------------------------------

    def _arm(self, at: float) -> None:
        self._timer = self.loop.call_at(at, self._on_deadline)
        self._timer_at = at

    def _on_deadline(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        if not self._deadline:
            return  # between requests
        if self._deadline > self.loop.time():
            self._arm(self._deadline)  # a later request's deadline, or its body's
        elif self._in_head and not self._received:
            self._shut()  # a connection that never sent a byte is not told anything
        else:
            self._close(408)

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self._shut()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._arm_send_timer()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        transport = self.transport
        if transport.is_closing() and transport.get_write_buffer_size():
            # A close waits for its answer to be sent: a client that never reads would hold it.
            self._arm_send_timer()

    def _arm_send_timer(self) -> None:
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self.transport.abort)

    # -- closing -----------------------------------------------------------------------------------

    def _close(self, status: int) -> None:
        """Answer `status` if that answer would be the next on the connection, and close."""
        if self.transport.is_closing():
            return
        cycle = self.cycle  # in the head: the previous request's; in the body: this one's
        if self._in_head:
            answerable = cycle is None or cycle.response_complete
        else:
            answerable = not cycle.response_started
        if answerable and not self.pipeline:
            self.transport.write(_RESPONSES[status])
        self._shut()

    def _shut(self) -> None:
        # Bytes the client has not taken would keep a plain close() waiting for it: drop them.
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

    @staticmethod
    def _may_warn(kind: str) -> bool:
        now = time.monotonic()
        if now - LimitedHttpProtocol._warned_at.get(kind, -math.inf) < _WARNING_INTERVAL:
            return False
        LimitedHttpProtocol._warned_at[kind] = now
        return True
