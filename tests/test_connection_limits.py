"""Connection limits through real servers and raw sockets: sizes, deadlines, the connection cap.

What these tests check happens before a request is parsed to the end or authenticated, so they
speak bytes to the port. Deadlines are set short (1 s) and every wait for the server is bounded
generously (10 s or more): the tests assert what the server does, never how precisely in time.
"""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config

from s3kms.client import Client
from s3kms.errors import KMSError
from s3kms.http.connection import MAX_PIPELINED, LimitedHttpProtocol

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsProcess, KmsThread, thread_settings

HEALTH = b"GET /health/live HTTP/1.1\r\nHost: kms\r\n"
MIB = 1024 * 1024


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_until_closed(sock: socket.socket, limit: float = 10.0) -> bytes:
    """What the server sends until it closes the connection; fails if it is still open after
    `limit` seconds."""
    deadline = time.monotonic() + limit
    chunks: list[bytes] = []
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break  # closed with bytes of ours unread: a reset, after what it sent
        except TimeoutError:
            pytest.fail(f"the server kept the connection open; it sent {b''.join(chunks)!r}")
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def read_response(sock: socket.socket) -> bytes:
    """One response with a content-length, the connection left open."""
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-body: {data!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def stream(sock: socket.socket, total: int) -> int:
    """Send up to `total` bytes of header value; how many went before the server cut us off."""
    chunk = b"a" * 65536
    sent = 0
    try:
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def open_connections(server: KmsThread) -> int:
    return len(server.server.server_state.connections)


def wait_for(condition: Callable[[], bool], limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


@pytest.fixture(scope="module")
def standard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    """Every limit at its default."""
    server = KmsThread(thread_settings(tmp_path_factory.mktemp("standard") / "data")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    """Short deadlines, so that the tests can wait for them."""
    settings = thread_settings(
        tmp_path_factory.mktemp("fast") / "data",
        header_timeout=1.0,
        body_timeout=1.0,
        keep_alive_timeout=3.0,
        send_timeout=1.0,
    )
    server = KmsThread(settings).start()
    yield server
    server.stop()


# -- sizes --------------------------------------------------------------------------------------


def test_request_line_over_the_limit_is_414(standard: KmsThread) -> None:
    with connect(standard.port) as sock:
        sock.sendall(b"GET /health/live?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: kms\r\n\r\n")
        answer = read_until_closed(sock)
    assert status_of(answer) == 414 and b"connection: close" in answer
    # Under the limit (8 KiB) the same request is served.
    with connect(standard.port) as sock:
        sock.sendall(b"GET /health/live?" + b"q" * 8000 + b" HTTP/1.1\r\nHost: kms\r\n\r\n")
        assert status_of(read_response(sock)) == 200


def test_header_block_over_the_limit_is_431(standard: KmsThread) -> None:
    with connect(standard.port) as sock:
        sock.sendall(HEALTH + b"X-Big: " + b"h" * (17 * 1024) + b"\r\n\r\n")
        answer = read_until_closed(sock)
    assert status_of(answer) == 431 and b"connection: close" in answer
    with connect(standard.port) as sock:
        sock.sendall(HEALTH + b"X-Big: " + b"h" * (15 * 1024) + b"\r\n\r\n")
        assert status_of(read_response(sock)) == 200


def test_too_many_headers_is_431(standard: KmsThread) -> None:
    # Host is one: 100 headers are served, 101 are not.
    extra = b"".join(b"X-Extra-%d: 1\r\n" % i for i in range(100))
    with connect(standard.port) as sock:
        sock.sendall(HEALTH + extra + b"\r\n")
        answer = read_until_closed(sock)
    assert status_of(answer) == 431
    with connect(standard.port) as sock:
        sock.sendall(HEALTH + extra[: extra.rindex(b"X-Extra-99")] + b"\r\n")
        assert status_of(read_response(sock)) == 200


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_streamed_header_block_memory_stays_bounded(tmp_path: Path) -> None:
    """8 connections each streaming a 32 MiB header: each is cut off near the limit, and the
    server's peak RSS grows by less than 20 MB (unbounded, it grew by hundreds)."""
    server = KmsProcess(tmp_path / "data")
    server.start()
    assert server.proc is not None
    pid = server.proc.pid
    try:
        assert httpx.get(server.url + "/health/live").status_code == 200  # warm
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
        before = rss_kib(pid, "VmRSS")
        socks = [connect(server.port) for _ in range(8)]
        try:
            sent = []
            for sock in socks:
                sock.sendall(HEALTH + b"X-Big: ")
                sent.append(stream(sock, 32 * MIB))
            peak = rss_kib(pid, "VmHWM")
            assert peak - before < 20 * 1024, f"peak RSS grew by {(peak - before) // 1024} MiB"
            answers = [read_until_closed(sock) for sock in socks]
        finally:
            for sock in socks:
                sock.close()
        assert all(n < 32 * MIB for n in sent), f"the server took a whole 32 MiB header: {sent}"
        assert all(a == b"" or status_of(a) == 431 for a in answers), answers
        assert httpx.get(server.url + "/health/live").status_code == 200
    finally:
        server.stop()


# -- deadlines ----------------------------------------------------------------------------------


def test_half_sent_head_is_closed(fast: KmsThread) -> None:
    with connect(fast.port) as sock:
        sock.sendall(HEALTH)  # the blank line never comes
        assert status_of(read_until_closed(sock)) == 408
    with connect(fast.port) as sock:  # nothing at all: closed without a word
        assert read_until_closed(sock) == b""


def test_unfinished_body_is_closed(fast: KmsThread) -> None:
    with connect(fast.port) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: kms\r\nX-Amz-Target: TrentService.ListKeys\r\n"
            b"Content-Length: 100\r\n\r\n" + b"{" * 10
        )
        assert status_of(read_until_closed(sock)) == 408


def test_chunked_trailer_is_bounded(fast: KmsThread) -> None:
    """A chunked body whose trailer never ends is cut off near twice the body limit."""
    with connect(fast.port) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: kms\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: "
        )
        assert stream(sock, 16 * MIB) < 16 * MIB
        answer = read_until_closed(sock)
    assert answer == b"" or status_of(answer) == 413  # (a reset may take the answer with it)


def test_idle_keep_alive_connection_is_closed(fast: KmsThread) -> None:
    assert fast.server.config.timeout_keep_alive == 3.0
    with connect(fast.port) as sock:
        sock.sendall(HEALTH + b"\r\n")
        assert status_of(read_response(sock)) == 200
        # Idle for longer than the head's deadline: idle time is the keep-alive timeout's.
        time.sleep(1.5)
        sock.sendall(HEALTH + b"\r\n")
        assert status_of(read_response(sock)) == 200
        assert read_until_closed(sock) == b""


def server_side(server: KmsThread, sock: socket.socket) -> LimitedHttpProtocol | None:
    me = sock.getsockname()
    found = [c for c in server.server.server_state.connections if c.client == me]
    return found[0] if found else None  # type: ignore[return-value]


def unread_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # answers back up sooner
    sock.connect(("127.0.0.1", port))
    return sock


def test_client_that_never_reads_is_cut_off(fast: KmsThread) -> None:
    """Requests sent one at a time whose answers are never read: once the answers have backed up
    for longer than send_timeout, the connection goes (and with it its file descriptor)."""
    # A 404 names the path it was for: an 8 KB answer to an unauthenticated 8 KB request.
    request = b"GET /rustfs/admin/v3/kms/" + b"n" * 8000 + b" HTTP/1.1\r\nHost: kms\r\n\r\n"
    state = fast.server.server_state
    with unread_socket(fast.port) as sock:
        wait_for(lambda: server_side(fast, sock) is not None)
        conn = server_side(fast, sock)
        assert conn is not None
        first = state.total_requests
        for sent in range(1, 5000):
            sock.sendall(request)
            # Each answered before the next is sent: a slow reader, not a pipelining one.
            wait_for(lambda n=first + sent: conn.flow.write_paused or state.total_requests >= n)
            if conn.flow.write_paused:
                break
        assert conn.flow.write_paused, "the answers never backed up"
        wait_for(lambda: server_side(fast, sock) is None)


def test_pipelined_flood_is_cut_off(fast: KmsThread) -> None:
    """Thousands of requests sent at once and never read: the queue behind the request being
    answered stays at MAX_PIPELINED, and the connection is closed."""
    with unread_socket(fast.port) as sock:
        wait_for(lambda: server_side(fast, sock) is not None)
        conn = server_side(fast, sock)
        assert conn is not None
        sock.setblocking(False)
        burst = (HEALTH + b"\r\n") * 1000
        pending = burst
        deepest = 0
        stop = time.monotonic() + 5
        while time.monotonic() < stop and server_side(fast, sock) is not None:
            deepest = max(deepest, len(conn.pipeline))
            try:
                pending = pending[sock.send(pending) :] or burst  # whole requests only
            except BlockingIOError:
                time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                break
        assert deepest <= MAX_PIPELINED
        wait_for(lambda: server_side(fast, sock) is None)


# -- the connection cap -------------------------------------------------------------------------


def test_connections_over_the_cap_are_refused_at_once(tmp_path: Path) -> None:
    server = KmsThread(thread_settings(tmp_path / "data", max_connections=4)).start()
    held: list[socket.socket] = []
    try:
        wait_for(lambda: open_connections(server) == 0)  # wait_ready's connection is gone
        held = [connect(server.port) for _ in range(4)]
        wait_for(lambda: open_connections(server) == 4)
        with connect(server.port) as extra:
            assert status_of(read_until_closed(extra, limit=5)) == 503
        held.pop().close()
        wait_for(lambda: open_connections(server) == 3)
        assert httpx.get(server.url + "/health/live").status_code == 200
    finally:
        for sock in held:
            sock.close()
        server.stop()


def limit_fds_to_256() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def test_half_open_flood_under_a_256_fd_limit(tmp_path: Path) -> None:
    """300 connections that never finish a head, against a server with 256 file descriptors:
    a signed request gets through within seconds, and the server keeps serving."""
    server = KmsProcess(
        tmp_path / "data", args=["--header-timeout", "1"], preexec_fn=limit_fds_to_256
    )
    server.start()
    assert server.proc is not None
    limits = Path(f"/proc/{server.proc.pid}/limits").read_text()
    assert any(
        line.startswith("Max open files") and " 256 " in line for line in limits.splitlines()
    )
    flood: list[socket.socket] = []
    try:
        for _ in range(300):
            sock = connect(server.port)
            sock.sendall(HEALTH)
            flood.append(sock)
        deadline = time.monotonic() + 30
        while True:
            try:
                with Client(server.url, ROOT_USER, ROOT_PASSWORD, timeout=5) as kms:
                    kms.create_key("after-the-flood")
                break
            except (httpx.TransportError, KMSError) as exc:
                assert time.monotonic() < deadline, f"still locked out after 30 s: {exc!r}"
                time.sleep(0.2)
        with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:
            for _ in range(3):
                assert kms.key_status("after-the-flood").key_id == "after-the-flood"
    finally:
        for sock in flood:
            sock.close()
        server.stop()
    assert "refusing connections" in server.log()


def test_worker_processes_enforce_the_limits(tmp_path: Path) -> None:
    """`--workers 2`: the protocol and its limits reach the worker processes uvicorn spawns."""
    server = KmsProcess(tmp_path / "data", args=["--workers", "2", "--max-request-line", "100"])
    server.start()
    try:
        for _ in range(4):  # whichever worker accepts
            with connect(server.port) as sock:
                sock.sendall(b"GET /health/live?" + b"q" * 200 + b" HTTP/1.1\r\nHost: kms\r\n\r\n")
                assert status_of(read_until_closed(sock)) == 414
        assert httpx.get(server.url + "/health/live?" + "q" * 50).status_code == 200
    finally:
        server.stop()


# -- normal clients -----------------------------------------------------------------------------


def test_normal_clients_keep_alive_with_defaults(standard: KmsThread) -> None:
    aws = boto3.client(
        "kms", endpoint_url=standard.url, region_name="us-east-1", aws_access_key_id=ROOT_USER,
        aws_secret_access_key=ROOT_PASSWORD, config=Config(retries={"total_max_attempts": 1}),
    )  # fmt: skip
    key_id = aws.create_key(Description="limits")["KeyMetadata"]["KeyId"]
    for i in range(10):
        made = aws.generate_data_key(
            KeyId=key_id, KeySpec="AES_256", EncryptionContext={"i": str(i)}
        )
        opened = aws.decrypt(CiphertextBlob=made["CiphertextBlob"], EncryptionContext={"i": str(i)})
        assert opened["Plaintext"] == made["Plaintext"]

    def clients() -> set[object]:
        return {c.client for c in standard.server.server_state.connections}

    before = clients()
    seen: set[object] = set()
    with Client(standard.url, ROOT_USER, ROOT_PASSWORD) as kms:
        kms.create_key("limits-admin")
        for _ in range(30):
            assert kms.key_status("limits-admin").key_id == "limits-admin"
            seen |= clients()
        connections = list(standard.server.server_state.connections)
    aws.close()
    assert len(seen - before) == 1  # 31 requests on one kept-alive connection
    assert connections and all(isinstance(c, LimitedHttpProtocol) for c in connections)


def test_upgrade_request_is_plain_http(standard: KmsThread) -> None:
    """s3kms speaks no WebSocket: an upgrade request is answered as HTTP, under the same limits."""
    with connect(standard.port) as sock:
        sock.sendall(
            HEALTH + b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        answer = read_until_closed(sock)
    assert status_of(answer) == 200 and answer.endswith(b'{"status":"ok"}')


def test_limits_are_settings(tmp_path: Path) -> None:
    """Flags win over S3KMS_* variables, which win over the TOML file; nonsense is refused."""
    from s3kms.cli import resolve_settings

    toml = tmp_path / "s3kms.toml"
    toml.write_text("header_timeout = 7\nmax_connections = 50\nmax_headers = 60\n")
    env = {"S3KMS_CONFIG": str(toml), "S3KMS_MAX_CONNECTIONS": "40", "S3KMS_SEND_TIMEOUT": "2.5"}
    settings = resolve_settings({"max_headers": 70}, env)
    assert (settings.header_timeout, settings.max_connections) == (7.0, 40)
    assert (settings.max_headers, settings.send_timeout) == (70, 2.5)
    assert settings.keep_alive_timeout == 5.0 and settings.max_body_bytes == MIB
    with pytest.raises(ValueError, match="body_timeout"):
        resolve_settings({"body_timeout": 0.0}, {})


class _RecordingTransport:
    """The connection's transport, recording each write (set between requests, when idle)."""

    def __init__(self, transport: object) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.transport, name)


@pytest.mark.parametrize(
    ("request_head", "body_expected"),
    [(b"GET /health/live HTTP/1.1\r\nHost: kms\r\n\r\n", True),
     (b"HEAD /health/live HTTP/1.1\r\nHost: kms\r\n\r\n", False),
     (b"GET /rustfs/admin/v3/kms/nothing HTTP/1.1\r\nHost: kms\r\n\r\n", True)],
)  # fmt: skip
def test_an_answer_leaves_in_one_write(
    standard: KmsThread, request_head: bytes, body_expected: bool
) -> None:
    """uvicorn writes a response's head and body separately; the connection holds the head for
    the body, so each answer is one write (one syscall, one TCP segment), HEAD's head alone."""
    with connect(standard.port) as sock:
        sock.sendall(HEALTH + b"\r\n")  # the connection is up and idle after its answer
        read_response(sock)
        conn = server_side(standard, sock)
        assert conn is not None
        recorder = _RecordingTransport(conn.transport)
        conn.transport = recorder  # type: ignore[assignment]
        sock.sendall(request_head)
        if body_expected:
            answer = read_response(sock)
        else:
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(65536)
        wait_for(lambda: len(recorder.writes) > 0)
        time.sleep(0.2)  # a second write, if there were one, would have come by now
    assert recorder.writes == [answer]
    assert answer.startswith(b"HTTP/1.1 ")
    assert answer.endswith(b"\r\n\r\n") != body_expected
