"""The KMIP port's deadlines against clients that hold a connection without finishing: a message
trickled in a byte at a time is cut off at `body_timeout` from its first bytes, and a client that
sends requests without reading the answers is disconnected once its answers back up that long."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator

import pytest
from kmip.core import enums
from kmip.core.messages import payloads

from kmipserver import KmipIdentity, KmipTestServer, batch_item, encode_request

BODY_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def kmip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmipTestServer]:
    base = tmp_path_factory.mktemp("kmip-deadlines")
    with KmipTestServer(base, body_timeout=BODY_TIMEOUT) as server:
        yield server


@pytest.fixture(scope="module")
def alice(kmip: KmipTestServer) -> KmipIdentity:
    return kmip.user(["kmip:*"], name="alice-deadlines")


def test_a_message_trickled_in_is_cut_off_at_the_deadline(
    kmip: KmipTestServer, alice: KmipIdentity
) -> None:
    raw = kmip.raw(alice)
    head = b"\x42\x00\x78\x01" + struct.pack(">I", 64)  # a Request Message of 64 bytes
    started = time.monotonic()
    raw.send(head)
    closed = False
    for _ in range(12):  # one byte every 0.4 s: each would move a deadline that re-arms
        time.sleep(0.4)
        try:
            raw.send(b"\x00")
        except OSError:
            closed = True
            break
    closed = closed or raw.closed_by_server(timeout=2.0)
    assert closed
    assert time.monotonic() - started < BODY_TIMEOUT + 3.0


def test_a_client_that_does_not_read_its_answers_is_disconnected(
    kmip: KmipTestServer, alice: KmipIdentity
) -> None:
    """Pipelined Queries whose (large) answers are never read: the server stops answering when
    its socket's buffer is full and drops the connection within the deadline, instead of
    buffering answers without bound."""
    raw = kmip.raw(alice)
    functions = [
        enums.QueryFunction.QUERY_OPERATIONS,
        enums.QueryFunction.QUERY_OBJECTS,
        enums.QueryFunction.QUERY_SERVER_INFORMATION,
    ]
    item = batch_item(
        enums.Operation.QUERY, payloads.QueryRequestPayload(query_functions=functions)
    )
    request = encode_request(enums.KMIPVersion.KMIP_1_2, [item])
    raw.sock.settimeout(BODY_TIMEOUT + 2.0)  # blocked that long: the server stopped reading
    sent = 0
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            raw.sock.sendall(request)
            sent += 1
    except OSError:  # the server stopped reading, then closed the connection
        pass
    assert sent > 10
    # Not reading for longer than the deadline: the server gives up on the connection (what it
    # had written is still delivered, then the end of the stream).
    time.sleep(BODY_TIMEOUT + 2.0)
    assert raw.closed_by_server(timeout=10.0)
