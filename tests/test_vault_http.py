"""vault/http.py, the HTTP/1.1 client the Vault transport speaks through, against real servers on
loopback: small asyncio servers that write exactly the bytes a test wants (`RawServer`), TLS
through trustme certificates, and Python's own http.server. Most tests run on both event loops
s3kms runs on (asyncio's and uvloop's: their transports differ)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar, cast

import pytest
import trustme
import uvloop

from s3kms.keystore.vault import http as vault_http
from s3kms.keystore.vault.http import (
    ConnectFailed,
    HttpClient,
    HttpResponse,
    RequestFailed,
    RequestTimeout,
)

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


# --------------------------------------------------------------------------- running


@pytest.fixture(
    params=[
        pytest.param(asyncio.new_event_loop, id="asyncio"),
        pytest.param(uvloop.new_event_loop, id="uvloop"),
    ]
)
def loop_factory(request: pytest.FixtureRequest) -> LoopFactory:
    return cast(LoopFactory, request.param)


def run(loop_factory: LoopFactory, main: Callable[[], Awaitable[T]]) -> T:
    """`main()` on a fresh loop of the kind `loop_factory` makes. Anything that reaches the loop's
    exception handler (say, an exception a protocol callback let out) fails the test."""
    errors: list[dict[str, Any]] = []

    async def wrapper() -> T:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        return await main()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(wrapper())
    assert not errors, f"the event loop reported errors: {errors}"
    return result


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


# --------------------------------------------------------------------------- a raw HTTP server


@dataclass(frozen=True)
class Received:
    connection: int  # which server-side connection (1 = the first accepted)
    head: bytes  # request line and headers, through the blank line
    body: bytes

    @property
    def raw(self) -> bytes:
        return self.head + self.body


class Peer:
    """The server's end of one connection."""

    def __init__(
        self,
        server: RawServer,
        number: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.number = number
        self.reader = reader
        self.writer = writer
        self.client_closed = asyncio.Event()  # set when the client closed or reset the connection

    async def read_request(self) -> Received | None:
        """The next request on this connection, or None when the client closed it."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.client_closed.set()
            return None
        received = Received(self.number, head, body)
        self.server.received.append(received)
        return received

    async def until_client_closes(self) -> None:
        """Read (and drop) whatever comes until the client closes the connection."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.client_closed.set()

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def close(self) -> None:
        """Close the connection from the server's side (FIN, after what was written)."""
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()
        self.writer.close()

    def reset(self) -> None:
        """Close the connection with a TCP reset."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Handler = Callable[[Peer], Awaitable[None]]


class RawServer:
    """A loopback TCP server whose `handler` speaks HTTP/1.1 by hand, one call per connection."""

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.host = host
        self.tls = tls
        self.peers: list[Peer] = []
        self.received: list[Received] = []
        self.errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def address(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{shown}:{self.port}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for peer in self.peers:
            peer.writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        await asyncio.sleep(0)
        assert not self.errors, f"the test server's handler failed: {self.errors!r}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(self, len(self.peers) + 1, reader, writer)
        self.peers.append(peer)
        try:
            await self.handler(peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away (e.g. aborted the connection)
        except asyncio.CancelledError:
            # (the test is over: ended normally, since asyncio 3.11's stream server callback
            # reports a cancelled handler task to the loop's exception handler)
            pass
        except Exception as exc:
            self.errors.append(exc)
        finally:
            writer.close()

    def closed_by_client(self) -> list[int]:
        return [peer.number for peer in self.peers if peer.client_closed.is_set()]


def answer(
    body: bytes = b"{}",
    *,
    status: str = "200 OK",
    headers: Sequence[str] = (),
    version: str = "HTTP/1.1",
    length: bool = True,
) -> bytes:
    lines = [f"{version} {status}", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


OK = answer(b'{"ok":true}', headers=["Content-Type: application/json"])


def answering(*replies: bytes) -> Handler:
    """Answers the n-th request on each connection with replies[n] (the last one repeats), until
    the client closes the connection."""

    async def handle(peer: Peer) -> None:
        n = 0
        while await peer.read_request() is not None:
            peer.send(replies[min(n, len(replies) - 1)])
            n += 1

    return handle


def per_connection(first: Handler, rest: Handler) -> Handler:
    """`first` serves the first connection, `rest` every later one."""

    async def handle(peer: Peer) -> None:
        await (first if peer.number == 1 else rest)(peer)

    return handle


async def never_answering(peer: Peer) -> None:
    await peer.read_request()
    await peer.until_client_closes()


# --------------------------------------------------------------------------- the client


@contextlib.asynccontextmanager
async def open_client(tls: ssl.SSLContext | None = None) -> AsyncIterator[HttpClient]:
    client = HttpClient(tls)
    try:
        yield client
    finally:
        await client.aclose()


async def call(
    client: HttpClient,
    address: str,
    target: str = "/v1/sys/health",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 5.0,
    connect_timeout: float = 2.0,
) -> HttpResponse:
    return await client.request(
        method,
        address,
        target,
        headers=headers or {},
        body=body,
        timeout=timeout,
        connect_timeout=connect_timeout,
    )


def idle(client: HttpClient) -> list[Any]:
    """The client's pooled connections (http._Connection objects)."""
    return [connection for pool in client._idle.values() for connection in pool]


def loopback_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# =========================================================================== requests and answers


def test_round_trip_status_headers_body_and_the_bytes_sent(loop_factory: LoopFactory) -> None:
    reply = (
        b"HTTP/1.1 201 Created\r\n"
        b"X-Vault-Thing: Some Value\r\n"
        b"CONTENT-TYPE: application/json\r\n"
        b"Content-Length: 11\r\n"
        b"\r\n"
        b'{"ok":true}'
    )
    payload = b'{"plaintext":"aGVsbG8="}'

    async def main() -> None:
        async with RawServer(answering(reply)) as server, open_client() as client:
            got = await call(
                client,
                server.address,
                "/v1/transit/encrypt/my%20key?version=2",
                method="POST",
                headers={"X-Vault-Token": "s.token", "X-Vault-Request": "true"},
                body=payload,
            )
            assert got.status == 201
            assert got.headers == {
                "x-vault-thing": "Some Value",
                "content-type": "application/json",
                "content-length": "11",
            }
            assert got.body == b'{"ok":true}'

            got = await call(client, server.address, "/v1/sys/health?standbyok=true")
            assert (got.status, got.body) == (201, b'{"ok":true}')

            host = f"Host: 127.0.0.1:{server.port}\r\n".encode()
            assert [r.raw for r in server.received] == [
                b"POST /v1/transit/encrypt/my%20key?version=2 HTTP/1.1\r\n"
                + host
                + b"X-Vault-Token: s.token\r\n"
                b"X-Vault-Request: true\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: 24\r\n"
                b"\r\n" + payload,
                # no body: no Content-Type, no Content-Length
                b"GET /v1/sys/health?standbyok=true HTTP/1.1\r\n" + host + b"\r\n",
            ]

    run(loop_factory, main)


def test_an_empty_body_is_sent_with_content_length_zero(loop_factory: LoopFactory) -> None:
    async def main() -> None:
        async with RawServer(answering(OK)) as server, open_client() as client:
            await call(client, server.address, "/v1/x", method="PUT", body=b"")
            assert (
                server.received[0].raw
                == (
                    f"PUT /v1/x HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 0\r\n\r\n"
                ).encode()
            )

    run(loop_factory, main)


@pytest.mark.skipif(not loopback_ipv6(), reason="no IPv6 loopback here")
def test_ipv6_address(loop_factory: LoopFactory) -> None:
    async def main() -> None:
        async with RawServer(answering(OK), host="::1") as server, open_client() as client:
            assert server.address == f"http://[::1]:{server.port}"
            got = await call(client, server.address, "/v1/sys/health")
            assert got.status == 200
            assert server.received[0].raw == (
                f"GET /v1/sys/health HTTP/1.1\r\nHost: [::1]:{server.port}\r\n\r\n".encode()
            )

    run(loop_factory, main)


@pytest.mark.parametrize(
    ("address", "scheme", "host", "port", "host_header"),
    [
        ("http://vault.example", "http", "vault.example", 80, b"vault.example"),
        ("http://vault.example:80", "http", "vault.example", 80, b"vault.example"),
        ("https://vault.example", "https", "vault.example", 443, b"vault.example"),
        ("https://vault.example:443", "https", "vault.example", 443, b"vault.example"),
        ("https://vault.example:80", "https", "vault.example", 80, b"vault.example:80"),
        ("http://vault.example:443", "http", "vault.example", 443, b"vault.example:443"),
        ("http://Vault.Example:8200/ignored", "http", "vault.example", 8200, b"vault.example:8200"),
        ("http://10.0.0.7:8200", "http", "10.0.0.7", 8200, b"10.0.0.7:8200"),
        ("http://[::1]:8200", "http", "::1", 8200, b"[::1]:8200"),
        ("https://[fe80::1]", "https", "fe80::1", 443, b"[fe80::1]"),
    ],
)
def test_origin_and_host_header(
    address: str, scheme: str, host: str, port: int, host_header: bytes
) -> None:
    origin = vault_http._origin(address)
    assert (origin.scheme, origin.host, origin.port, origin.host_header) == (
        scheme,
        host,
        port,
        host_header,
    )


@pytest.mark.parametrize(
    "address",
    ["ftp://vault.example", "vault.example:8200", "http://", "http:///v1", "http://h:99999"],
)
def test_not_an_http_address(address: str) -> None:
    async def main() -> None:
        async with open_client() as client:
            with pytest.raises(ValueError):
                await call(client, address)

    run(asyncio.new_event_loop, main)


def test_an_answer_dribbled_byte_by_byte(loop_factory: LoopFactory) -> None:
    reply = (
        b"HTTP/1.1 200 OK\r\nX-Long-Header-Name: a value split everywhere\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
    )

    async def dribble(peer: Peer) -> None:
        while await peer.read_request() is not None:
            for i in range(len(reply)):
                peer.send(reply[i : i + 1])
                await peer.writer.drain()
                await asyncio.sleep(0.001)

    async def main() -> None:
        async with RawServer(dribble) as server, open_client() as client:
            for _ in range(2):
                got = await call(client, server.address)
                assert got.status == 200
                assert got.headers["x-long-header-name"] == "a value split everywhere"
                assert got.body == b"abcdefg"
            assert len(server.peers) == 1

    run(loop_factory, main)


# =========================================================================== keep-alive


def test_sequential_requests_reuse_one_connection(loop_factory: LoopFactory) -> None:
    async def main() -> None:
        async with RawServer(answering(OK)) as server, open_client() as client:
            for i in range(5):
                got = await call(client, server.address, f"/v1/n/{i}")
                assert got.status == 200
            assert len(server.peers) == 1
            assert [r.connection for r in server.received] == [1] * 5
            assert [r.head.split(b" ")[1] for r in server.received] == [
                f"/v1/n/{i}".encode() for i in range(5)
            ]

    run(loop_factory, main)


def test_concurrent_requests_open_several_connections_then_reuse_them(
    loop_factory: LoopFactory,
) -> None:
    gate = asyncio.Event()

    async def held(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await gate.wait()
            peer.send(OK)

    async def main() -> None:
        async with RawServer(held) as server, open_client() as client:
            for round_ in (1, 2):
                gate.clear()
                tasks = [asyncio.create_task(call(client, server.address)) for _ in range(4)]
                # Four requests in flight at once: one each on four connections.
                want = 4 * round_

                def arrived(want: int = want) -> bool:
                    return len(server.received) == want

                await eventually(arrived, "4 requests")
                assert len(server.peers) == 4
                gate.set()
                assert [r.status for r in await asyncio.gather(*tasks)] == [200] * 4
            # the second round went over the four connections of the first
            assert sorted(r.connection for r in server.received[4:]) == [1, 2, 3, 4]
            assert len(idle(client)) == 4
            for _ in range(3):
                await call(client, server.address)
            assert len(server.peers) == 4
            assert len({r.connection for r in server.received[8:]}) == 1
            assert server.closed_by_client() == []

    run(loop_factory, main)


def test_the_pool_keeps_at_most_max_idle_connections(
    loop_factory: LoopFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vault_http, "_MAX_IDLE", 2)
    gate = asyncio.Event()

    async def held(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await gate.wait()
            peer.send(OK)

    async def main() -> None:
        async with RawServer(held) as server, open_client() as client:
            tasks = [asyncio.create_task(call(client, server.address)) for _ in range(4)]
            await eventually(lambda: len(server.received) == 4, "4 requests")
            gate.set()
            await asyncio.gather(*tasks)
            # two were kept, the other two closed by the client
            await eventually(lambda: len(server.closed_by_client()) == 2, "2 closed")
            assert len(idle(client)) == 2
            gate.clear()
            tasks = [asyncio.create_task(call(client, server.address)) for _ in range(4)]
            await eventually(lambda: len(server.received) == 8, "4 more requests")
            assert len(server.peers) == 6  # two reused, two new
            kept = {1, 2, 3, 4} - set(server.closed_by_client())
            assert {r.connection for r in server.received[4:]} == kept | {5, 6}
            gate.set()
            await asyncio.gather(*tasks)

    run(loop_factory, main)


def test_an_idle_connection_expires(
    loop_factory: LoopFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vault_http, "_IDLE_SECONDS", 0.05)

    async def main() -> None:
        async with RawServer(answering(OK)) as server, open_client() as client:
            await call(client, server.address)
            await call(client, server.address)  # at once: reused
            assert len(server.peers) == 1
            await asyncio.sleep(0.1)
            await call(client, server.address)  # too long idle: a new connection
            assert len(server.peers) == 2
            await eventually(lambda: server.closed_by_client() == [1], "the old one closed")

    run(loop_factory, main)


def test_the_server_closes_an_idle_connection(loop_factory: LoopFactory) -> None:
    async def answer_once_then_close(peer: Peer) -> None:
        if await peer.read_request() is not None:
            peer.send(OK)  # a keep-alive answer...
            await peer.close()  # ...but the server closes the connection afterwards

    async def main() -> None:
        async with RawServer(answer_once_then_close) as server, open_client() as client:
            assert (await call(client, server.address)).status == 200
            assert len(idle(client)) == 1
            # The loop sees the close: the pooled connection is dropped without a request.
            await eventually(lambda: all(c.closed for c in idle(client)), "the close seen")
            assert (await call(client, server.address)).status == 200
            assert len(server.peers) == 2
            assert [r.connection for r in server.received] == [1, 2]

    run(loop_factory, main)


def test_the_server_resets_an_idle_connection(loop_factory: LoopFactory) -> None:
    async def answer_once_then_reset(peer: Peer) -> None:
        if await peer.read_request() is not None:
            peer.send(OK)
            await peer.writer.drain()
            await asyncio.sleep(0.01)
            peer.reset()

    async def main() -> None:
        async with RawServer(answer_once_then_reset) as server, open_client() as client:
            assert (await call(client, server.address)).status == 200
            await eventually(lambda: all(c.closed for c in idle(client)), "the reset seen")
            assert (await call(client, server.address)).status == 200
            assert len(server.peers) == 2

    run(loop_factory, main)


def test_an_idle_connection_closed_in_the_loop_pass_a_request_is_made_in(
    loop_factory: LoopFactory,
) -> None:
    """The server's FIN on a pooled connection is handled in the same pass of the event loop that
    wakes a task which then makes a request: the request must not go out on that connection (it
    would fail with RequestFailed, "maybe sent", though it never reached the server)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        address = f"http://127.0.0.1:{listener.getsockname()[1]}"
        wake_server, wake_client = socket.socketpair()
        server_socks: list[socket.socket] = [listener, wake_server]

        async def serve(sock: socket.socket) -> None:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk:
                    return
                data += chunk
            await loop.sock_sendall(sock, OK)

        async def accept_and_serve() -> None:
            while True:
                sock, _ = await loop.sock_accept(listener)
                server_socks.append(sock)
                await serve(sock)

        try:
            async with open_client() as client:
                first = asyncio.create_task(call(client, address))
                sock, _ = await loop.sock_accept(listener)
                await serve(sock)
                assert (await first).status == 200
                assert len(idle(client)) == 1
                more = asyncio.create_task(accept_and_serve())

                reader, writer = await asyncio.open_connection(sock=wake_client)

                async def woken_then_request() -> HttpResponse:
                    await reader.readexactly(1)
                    return await call(client, address)

                second = asyncio.create_task(woken_then_request())
                await asyncio.sleep(0.01)  # (blocked in readexactly now)
                wake_server.send(b"!")  # first the wake-up...
                sock.close()  # ...then the FIN on the pooled connection,
                time.sleep(0.05)  # both there before the loop polls again
                try:
                    got = await asyncio.wait_for(second, 3)
                finally:
                    more.cancel()
                    writer.close()
                assert got.status == 200
        finally:
            for s in server_socks:
                s.close()

    run(loop_factory, main)


def test_connection_close_in_the_answer_is_not_reused(loop_factory: LoopFactory) -> None:
    # The server answers "Connection: close" but leaves the connection open: the client closes it.
    reply = answer(b"bye", headers=["Connection: close"])

    async def main() -> None:
        async with RawServer(answering(reply)) as server, open_client() as client:
            assert (await call(client, server.address)).body == b"bye"
            await eventually(lambda: server.closed_by_client() == [1], "the client closing it")
            assert idle(client) == []
            assert (await call(client, server.address)).body == b"bye"
            assert len(server.peers) == 2

    run(loop_factory, main)


@pytest.mark.parametrize(
    ("version", "headers", "reused"),
    [
        ("HTTP/1.1", [], True),
        ("HTTP/1.1", ["Connection: keep-alive"], True),
        ("HTTP/1.1", ["Connection: close"], False),
        ("HTTP/1.0", [], False),
        ("HTTP/1.0", ["Connection: keep-alive"], True),
    ],
)
def test_keep_alive_follows_the_answer(version: str, headers: list[str], reused: bool) -> None:
    reply = answer(b"x", headers=headers, version=version)

    async def main() -> None:
        async with RawServer(answering(reply)) as server, open_client() as client:
            for _ in range(3):
                assert (await call(client, server.address)).body == b"x"
            assert len(server.peers) == (1 if reused else 3)

    run(asyncio.new_event_loop, main)


# =========================================================================== bodies


def test_chunked_answer(loop_factory: LoopFactory) -> None:
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;name=value\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )

    async def main() -> None:
        async with RawServer(answering(reply)) as server, open_client() as client:
            for _ in range(2):
                got = await call(client, server.address)
                assert (got.status, got.body) == (200, b"hello world")
                assert got.headers["transfer-encoding"] == "chunked"
            assert len(server.peers) == 1  # a chunked answer ends where it says: reusable

    run(loop_factory, main)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",  # HTTP/1.1 without a length: the body still runs to the end
    ],
    ids=["connection-close", "http-1.0", "http-1.1-no-length"],
)
def test_a_body_that_runs_to_the_end_of_the_connection(
    loop_factory: LoopFactory, head: bytes
) -> None:
    body = bytes(range(256)) * 1000  # several reads' worth

    async def answer_to_eof(peer: Peer) -> None:
        if await peer.read_request() is not None:
            peer.send(head + body)
            await peer.close()

    async def main() -> None:
        async with RawServer(answer_to_eof) as server, open_client() as client:
            for n in (1, 2):
                got = await call(client, server.address)
                assert (got.status, got.body) == (200, body)
                assert len(server.peers) == n  # never reused: the connection ended the body

    run(loop_factory, main)


def test_empty_answers(loop_factory: LoopFactory) -> None:
    replies = [
        b"HTTP/1.1 204 No Content\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\n\r\n",
    ]

    async def main() -> None:
        async with RawServer(answering(*replies)) as server, open_client() as client:
            got = [await call(client, server.address) for _ in replies]
            assert [(r.status, r.body) for r in got] == [(204, b""), (200, b""), (304, b"")]
            assert got[0].headers == {"date": "Mon, 01 Jan 2024 00:00:00 GMT"}
            assert len(server.peers) == 1

    run(loop_factory, main)


@pytest.mark.parametrize("framing", ["content-length", "chunked", "to-eof"])
def test_an_answer_larger_than_max_response_bytes(
    loop_factory: LoopFactory, monkeypatch: pytest.MonkeyPatch, framing: str
) -> None:
    monkeypatch.setattr(vault_http, "MAX_RESPONSE_BYTES", 1000)
    big = b"x" * 4000
    if framing == "content-length":
        reply = answer(big)
    elif framing == "chunked":
        chunks = b"".join(b"64\r\n" + b"y" * 100 + b"\r\n" for _ in range(40))
        reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    else:
        reply = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + big

    async def too_big(peer: Peer) -> None:
        if await peer.read_request() is not None:
            peer.send(reply)
            await peer.until_client_closes()

    async def main() -> None:
        async with (
            RawServer(per_connection(too_big, answering(OK, answer(b"z" * 1000)))) as server,
            open_client() as client,
        ):
            with pytest.raises(RequestFailed, match="larger than 1000 bytes") as caught:
                await call(client, server.address)
            assert type(caught.value) is RequestFailed
            await eventually(lambda: server.closed_by_client() == [1], "the client dropping it")
            assert (await call(client, server.address)).status == 200
            assert (await call(client, server.address)).body == b"z" * 1000  # at the limit: fine
            assert len(server.peers) == 2

    run(loop_factory, main)


# =========================================================================== broken answers


async def _garbage(peer: Peer) -> None:
    await peer.read_request()
    peer.send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    await peer.until_client_closes()


async def _bad_chunk(peer: Peer) -> None:
    await peer.read_request()
    peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n")
    await peer.until_client_closes()


async def _close_before_answering(peer: Peer) -> None:
    await peer.read_request()
    await peer.close()


async def _reset_before_answering(peer: Peer) -> None:
    await peer.read_request()
    peer.reset()


async def _half_the_head(peer: Peer) -> None:
    await peer.read_request()
    peer.send(b"HTTP/1.1 200 OK\r\nContent-Le")
    await peer.close()


async def _half_the_body(peer: Peer) -> None:
    await peer.read_request()
    peer.send(answer(b"0123456789")[:-5])
    await peer.close()


async def _half_a_chunked_body(peer: Peer) -> None:
    await peer.read_request()
    peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    await peer.close()


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (_garbage, "malformed HTTP answer"),
        (_bad_chunk, "malformed HTTP answer"),
        (_close_before_answering, "connection closed before the answer"),
        (_reset_before_answering, "connection closed before the answer"),
        (_half_the_head, "connection closed before the answer"),
        (_half_the_body, "connection closed before the answer"),
        (_half_a_chunked_body, "connection closed before the answer"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_a_broken_answer_fails_the_request(
    loop_factory: LoopFactory, broken: Handler, message: str
) -> None:
    async def main() -> None:
        async with (
            RawServer(per_connection(broken, answering(OK))) as server,
            open_client() as client,
        ):
            with pytest.raises(RequestFailed, match=message) as caught:
                await call(client, server.address)
            assert type(caught.value) is RequestFailed  # not a timeout, not "never sent"
            assert len(server.received) == 1  # it was sent
            assert idle(client) == []
            assert (await call(client, server.address)).status == 200
            assert len(server.peers) == 2

    run(loop_factory, main)


def test_an_upgrade_answer_is_not_an_error_of_the_loop(loop_factory: LoopFactory) -> None:
    reply = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"

    async def main() -> None:
        async with (
            RawServer(per_connection(answering(reply + b"\x81\x00"), answering(OK))) as server,
            open_client() as client,
        ):
            got = await call(client, server.address)
            assert got.status == 101
            await eventually(lambda: server.closed_by_client() == [1], "the client dropping it")
            assert (await call(client, server.address)).status == 200
            # (run() checks that nothing reached the loop's exception handler)

    run(loop_factory, main)


def test_a_server_that_talks_out_of_turn(loop_factory: LoopFactory) -> None:
    later = asyncio.Event()

    async def unsolicited(peer: Peer) -> None:
        if await peer.read_request() is not None:
            peer.send(answer(b"first"))
            await later.wait()
            peer.send(answer(b"stale"))  # no request is pending
            await peer.until_client_closes()

    async def main() -> None:
        async with (
            RawServer(per_connection(unsolicited, answering(answer(b"fresh")))) as server,
            open_client() as client,
        ):
            assert (await call(client, server.address)).body == b"first"
            later.set()
            await eventually(lambda: server.closed_by_client() == [1], "the client dropping it")
            assert (await call(client, server.address)).body == b"fresh"
            assert len(server.peers) == 2

    run(loop_factory, main)


@pytest.mark.parametrize(
    "extra",
    [answer(b"stale"), answer(b"stale-and-then-some")[:-9]],
    ids=["whole-answer", "half-an-answer"],
)
def test_more_after_the_answer_in_the_same_read(loop_factory: LoopFactory, extra: bytes) -> None:
    """Bytes after the answer in the same segment were not asked for either: the connection must
    not be reused (left in the parser, half an answer would be taken as the next one's start)."""

    async def main() -> None:
        async with (
            RawServer(
                per_connection(answering(answer(b"first") + extra), answering(answer(b"fresh")))
            ) as server,
            open_client() as client,
        ):
            assert (await call(client, server.address)).body == b"first"
            assert (await call(client, server.address)).body == b"fresh"
            assert len(server.peers) == 2
            await eventually(lambda: server.closed_by_client() == [1], "the client dropping it")

    run(loop_factory, main)


# =========================================================================== timeouts


def test_a_server_that_never_answers(loop_factory: LoopFactory) -> None:
    async def main() -> None:
        async with (
            RawServer(per_connection(never_answering, answering(OK))) as server,
            open_client() as client,
        ):
            start = time.monotonic()
            with pytest.raises(RequestTimeout):
                await call(client, server.address, timeout=0.3)
            elapsed = time.monotonic() - start
            assert 0.2 < elapsed < 5
            assert len(server.received) == 1
            # the connection was aborted, not pooled (a late answer would be the next one's)
            await eventually(lambda: server.closed_by_client() == [1], "the client aborting it")
            assert (await call(client, server.address)).status == 200
            assert len(server.peers) == 2

    run(loop_factory, main)


def test_the_timeout_is_for_the_whole_answer(loop_factory: LoopFactory) -> None:
    async def trickle(peer: Peer) -> None:
        await peer.read_request()
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):  # a byte every 50 ms: never idle for long, but 5 s in all
            peer.send(b"x")
            await asyncio.sleep(0.05)

    async def main() -> None:
        async with RawServer(trickle) as server, open_client() as client:
            start = time.monotonic()
            with pytest.raises(RequestTimeout):
                await call(client, server.address, timeout=0.3)
            assert time.monotonic() - start < 3

    run(loop_factory, main)


def test_connection_refused(loop_factory: LoopFactory) -> None:
    async def main() -> None:
        async with open_client() as client:
            with pytest.raises(ConnectFailed) as caught:
                await call(client, f"http://127.0.0.1:{unused_port()}", timeout=3)
            assert not caught.value.timed_out
            assert str(caught.value)

    run(loop_factory, main)


@contextlib.contextmanager
def full_backlog() -> Iterator[int]:
    """A listening port whose accept queue is full (nothing accepts): new connections hang in
    the handshake. Skips the test where the queue does not fill."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):
            sock = socket.socket()
            sock.settimeout(0.2)
            fillers.append(sock)
            try:
                sock.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            pytest.skip("the accept queue does not fill here: no way to stall a connect")
        yield port
    finally:
        for sock in fillers:
            sock.close()
        listener.close()


@pytest.mark.parametrize(
    ("timeout", "connect_timeout"),
    [(5.0, 0.3), (0.3, 5.0)],  # the connect gets at most the whole request's timeout
    ids=["connect-timeout", "request-timeout"],
)
def test_connect_timeout(loop_factory: LoopFactory, timeout: float, connect_timeout: float) -> None:
    async def main() -> None:
        with full_backlog() as port:
            async with open_client() as client:
                start = time.monotonic()
                with pytest.raises(ConnectFailed) as caught:
                    await call(
                        client,
                        f"http://127.0.0.1:{port}",
                        timeout=timeout,
                        connect_timeout=connect_timeout,
                    )
                assert 0.2 < time.monotonic() - start < 4
                assert caught.value.timed_out

    run(loop_factory, main)


# =========================================================================== cancellation


def test_a_cancelled_request_aborts_its_connection(loop_factory: LoopFactory) -> None:
    async def half_then_hang(peer: Peer) -> None:
        await peer.read_request()
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
        await peer.until_client_closes()

    async def main() -> None:
        async with (
            RawServer(per_connection(half_then_hang, answering(answer(b"fresh")))) as server,
            open_client() as client,
        ):
            task = asyncio.create_task(call(client, server.address))
            await eventually(lambda: len(server.received) == 1, "the request")
            await asyncio.sleep(0.02)  # (half the answer read)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await eventually(lambda: server.closed_by_client() == [1], "the client aborting it")
            assert idle(client) == []
            assert client._open == set()
            assert (await call(client, server.address)).body == b"fresh"
            assert len(server.peers) == 2

    run(loop_factory, main)


def test_a_request_cancelled_while_connecting(loop_factory: LoopFactory) -> None:
    async def main() -> None:
        with full_backlog() as port:
            async with open_client() as client:
                task = asyncio.create_task(call(client, f"http://127.0.0.1:{port}"))
                await asyncio.sleep(0.05)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert client._open == set()

    run(loop_factory, main)


# =========================================================================== header injection


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Vault-Token": "s.token\r\nX-Vault-Namespace: other"},
        {"X-Vault-Token": "s.token\nX-Evil: 1"},
        {"X-Vault-Token": "s.token\r"},
        {"X-Evil\r\nX-Vault-Token": "v"},
    ],
)
def test_line_breaks_in_headers_are_refused_before_sending(
    loop_factory: LoopFactory, headers: dict[str, str]
) -> None:
    async def main() -> None:
        async with RawServer(answering(OK)) as server, open_client() as client:
            with pytest.raises(ValueError, match="line break"):
                await call(client, server.address, headers=headers)
            await asyncio.sleep(0.05)
            assert server.peers == []  # no connection even
            await call(client, server.address, headers={"X-Vault-Token": "ok"})
            with pytest.raises(ValueError, match="line break"):
                await call(client, server.address, headers=headers, body=b"{}")
            # the pooled connection was not touched: the next request on it is the only other
            await call(client, server.address, target="/v1/after")
            assert len(server.peers) == 1
            assert [r.head.split(b"\r\n")[0] for r in server.received] == [
                b"GET /v1/sys/health HTTP/1.1",
                b"GET /v1/after HTTP/1.1",
            ]

    run(loop_factory, main)


# =========================================================================== TLS


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    server: ssl.SSLContext  # a certificate for 127.0.0.1 and localhost
    wrong_name: ssl.SSLContext  # a certificate for vault.example only

    def client(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    wrong = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("vault.example").configure_cert(wrong)
    return Pki(ca, server, wrong)


def test_https(loop_factory: LoopFactory, pki: Pki) -> None:
    async def main() -> None:
        async with (
            RawServer(answering(OK), tls=pki.server) as server,
            open_client(pki.client()) as client,
        ):
            assert server.address.startswith("https://127.0.0.1:")
            for _ in range(3):
                got = await call(client, server.address, method="POST", body=b"{}")
                assert (got.status, got.body) == (200, b'{"ok":true}')
            assert len(server.peers) == 1
            assert server.received[0].head.startswith(
                f"POST /v1/sys/health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode()
            )

    run(loop_factory, main)


def test_https_the_server_closes(loop_factory: LoopFactory, pki: Pki) -> None:
    body = b"b" * 100_000

    async def to_eof_then_close(peer: Peer) -> None:
        if await peer.read_request() is not None:
            peer.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)
            await peer.close()

    async def main() -> None:
        async with (
            RawServer(to_eof_then_close, tls=pki.server) as server,
            open_client(pki.client()) as client,
        ):
            for n in (1, 2):
                assert (await call(client, server.address)).body == body
                assert len(server.peers) == n

    run(loop_factory, main)


@pytest.mark.parametrize("case", ["untrusted", "wrong-name", "plain-server", "not-configured"])
def test_https_connect_failures(loop_factory: LoopFactory, pki: Pki, case: str) -> None:
    async def plain_http(peer: Peer) -> None:
        await peer.reader.read(100)  # the ClientHello
        peer.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await peer.close()

    tls: ssl.SSLContext | None = {
        "untrusted": ssl.create_default_context(),  # the system's CAs only
        "wrong-name": pki.client(),
        "plain-server": pki.client(),
        "not-configured": None,
    }[case]

    async def main() -> None:
        if case == "plain-server":
            server = RawServer(plain_http)
        else:
            server = RawServer(
                answering(OK), tls=pki.wrong_name if case == "wrong-name" else pki.server
            )
        async with server, open_client(tls) as client:
            address = server.address.replace("http://", "https://")
            with pytest.raises(ConnectFailed) as caught:
                await call(client, address, timeout=3)
            assert not caught.value.timed_out
            reason = str(caught.value)
            if case == "untrusted":
                assert "certificate verify failed" in reason
            elif case == "wrong-name":
                assert "mismatch" in reason or "match" in reason
            elif case == "not-configured":
                assert reason == "https is not configured"
                assert server.peers == []
            assert server.received == []  # no request reached the server

    run(loop_factory, main)


# =========================================================================== aclose


def test_aclose(loop_factory: LoopFactory) -> None:
    async def answer_once_then_hang(peer: Peer) -> None:
        await peer.read_request()
        peer.send(OK)
        await peer.read_request()
        await peer.until_client_closes()

    async def main() -> None:
        async with RawServer(per_connection(answer_once_then_hang, never_answering)) as server:
            client = HttpClient(None)
            assert (await call(client, server.address)).status == 200  # pooled
            in_flight = asyncio.create_task(call(client, server.address))
            # (the pooled connection serves it; the server answers no more on it)
            second = asyncio.create_task(call(client, server.address))
            await eventually(lambda: len(server.received) == 3, "both in flight")
            await client.aclose()
            for task in (in_flight, second):
                with pytest.raises(RequestFailed) as caught:
                    await task
                assert type(caught.value) is RequestFailed
            await eventually(lambda: server.closed_by_client() == [1, 2], "all closed")
            with pytest.raises(ConnectFailed, match=r"^the HTTP client is closed$"):
                await call(client, server.address)
            await client.aclose()  # twice: fine
            assert len(server.peers) == 2

    run(loop_factory, main)


def test_aclose_closes_idle_connections(loop_factory: LoopFactory) -> None:
    async def main() -> None:
        async with RawServer(answering(OK)) as server:
            client = HttpClient(None)
            await asyncio.gather(*(call(client, server.address) for _ in range(3)))
            assert len(server.peers) == 3
            assert server.closed_by_client() == []
            await client.aclose()
            await eventually(lambda: server.closed_by_client() == [1, 2, 3], "all closed")

    run(loop_factory, main)


# =========================================================================== a real server


class _Echo(BaseHTTPRequestHandler):
    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "host": self.headers["Host"],
                "body": self.rfile.read(length).decode(),
                "port": self.client_address[1],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.protocol_version == "HTTP/1.1":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _echo

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize("protocol", ["HTTP/1.1", "HTTP/1.0"])
def test_pythons_http_server(loop_factory: LoopFactory, protocol: str) -> None:
    """HTTP/1.1: Content-Length and keep-alive; HTTP/1.0: no length, the connection closed after
    each answer."""
    handler = type("Echo", (_Echo,), {"protocol_version": protocol})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]

    async def main() -> list[dict[str, Any]]:
        async with open_client() as client:
            address = f"http://127.0.0.1:{port}"
            got = [
                await call(client, address, "/v1/a?b=c"),
                await call(client, address, "/v1/put", method="POST", body=b'{"k":1}'),
                await call(client, address, "/v1/last"),
            ]
            assert {r.status for r in got} == {200}
            assert {r.headers["content-type"] for r in got} == {"application/json"}
            return [json.loads(r.body) for r in got]

    try:
        echoed = run(loop_factory, main)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert [(e["method"], e["path"], e["body"]) for e in echoed] == [
        ("GET", "/v1/a?b=c", ""),
        ("POST", "/v1/put", '{"k":1}'),
        ("GET", "/v1/last", ""),
    ]
    assert {e["host"] for e in echoed} == {f"127.0.0.1:{port}"}
    ports = {e["port"] for e in echoed}
    assert len(ports) == (1 if protocol == "HTTP/1.1" else 3)
