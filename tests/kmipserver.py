"""A real s3kms server with its KMIP listener, for the KMIP integration tests.

`KmipTestServer` starts a `KmsThread` (kmsserver.py) whose KMIP port listens on a free loopback
port over mutual TLS, with a PKI of its own (trustme: a CA, the server's certificate, and client
certificates carrying the clientAuth extended key usage PyKMIP needs). It makes client identities
(certificate and key files, their identity) and attaches them to new users with given policies,
and returns for them:
- PyKMIP's `ProxyKmipClient`, opened, speaking a given protocol version (it sends that version in
  every request header) and optionally a Username and Password credential;
- `RawKmip`, a TLS socket that sends arbitrary bytes and reads one TTLV message (the tests of
  framing, hostile input and TLS records).
`encode_request` / `decode_response` build and read messages with PyKMIP's message classes.

The backend is a parameter: "local" (the default) or "vault" with its `VaultSettings` (e.g. from
the `bao` fixture of conftest.py, as tests/test_awskms.py makes them).

    @pytest.fixture(scope="module")
    def kmip(tmp_path_factory):
        with KmipTestServer(tmp_path_factory.mktemp("kmip")) as server:
            yield server

    user = kmip.user(["kmip:*"])
    client = kmip.client(user, kmip_version=enums.KMIPVersion.KMIP_1_0)
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
import time
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kmip.core import enums, objects, utils
from kmip.core.messages import contents, messages
from kmip.pie.client import ProxyKmipClient

from s3kms.auth.certificates import identity_of
from s3kms.client import Client
from s3kms.keystore.vault import VaultSettings

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsThread, free_port, thread_settings

V = enums.KMIPVersion
VERSIONS: dict[enums.KMIPVersion, tuple[int, int]] = {
    V.KMIP_1_0: (1, 0),
    V.KMIP_1_1: (1, 1),
    V.KMIP_1_2: (1, 2),
    V.KMIP_1_3: (1, 3),
    V.KMIP_1_4: (1, 4),
    V.KMIP_2_0: (2, 0),
}
HEAD = struct.Struct(">3sBI")  # TTLV: tag, type, length
REQUEST_MESSAGE = b"\x42\x00\x78"
RESPONSE_MESSAGE = b"\x42\x00\x7b"


@dataclass(frozen=True)
class KmipIdentity:
    """A client certificate (PEM files) and its identity; the user it is attached to, if any."""

    name: str
    cert: Path
    key: Path
    identity: str
    access_key: str | None = None
    secret_key: str | None = None


def allow(*actions: str, deny: Sequence[str] = ()) -> dict[str, Any]:
    """An identity policy allowing `actions` on every resource, denying `deny` explicitly."""
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": list(actions), "Resource": "*"}
    ]
    if deny:
        statements.append({"Effect": "Deny", "Action": list(deny), "Resource": "*"})
    return {"Version": "2012-10-17", "Statement": statements}


class KmipTestServer:
    """A KmsThread with the KMIP listener on, its PKI, its users and their KMIP clients."""

    def __init__(
        self,
        base: Path,
        *,
        backend: str = "local",
        vault: VaultSettings | None = None,
        require_ca: bool = True,
        **settings: Any,
    ) -> None:
        if backend not in ("local", "vault"):
            raise ValueError(f"backend is local or vault, not {backend!r}")
        if backend == "vault" and vault is None:
            raise ValueError("the vault backend needs its VaultSettings")
        self.base = base
        self.backend = backend
        self.pki = base / "pki"
        self.pki.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_path = self.pki / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.server_cert, self.server_key = self.pki / "server.crt", self.pki / "server.key"
        self.server_cert.write_bytes(b"".join(pem.bytes() for pem in server.cert_chain_pems))
        server.private_key_pem.write_to_path(str(self.server_key))
        # PyKMIP reads a configuration file; an empty one of ours keeps it from looking for its own.
        self.pykmip_conf = self.pki / "pykmip.conf"
        self.pykmip_conf.write_text("")
        self.kmip_port = free_port()
        options: dict[str, Any] = {
            "kmip_address": f"127.0.0.1:{self.kmip_port}",
            "kmip_tls_cert": self.server_cert,
            "kmip_tls_key": self.server_key,
            "kmip_ca_cert": self.ca_path if require_ca else None,
        }
        if backend == "vault":
            options |= {"backend": "vault", "vault": vault}
        self.srv = KmsThread(thread_settings(base / "data", **(options | settings)))
        self._clients: list[ProxyKmipClient] = []
        self._raws: list[RawKmip] = []
        self._admin: Client | None = None

    # -- the server -------------------------------------------------------------------------

    def start(self) -> KmipTestServer:
        self.srv.start()
        return self

    def stop(self) -> None:
        for client in self._clients:
            sock = client.proxy.socket
            with contextlib.suppress(Exception):  # a client the server already dropped
                client.close()
            if sock is not None:
                sock.close()  # PyKMIP's close skips it when the shutdown fails
        for raw in self._raws:
            raw.close()
        if self._admin is not None:
            self._admin.close()
        self.srv.stop()

    def __enter__(self) -> KmipTestServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The server's HTTP endpoint (the AWS KMS and admin APIs)."""
        return self.srv.url

    @property
    def max_message(self) -> int:
        return self.srv.settings.kmip_max_message

    def admin(self) -> Client:
        """An s3kms client as root (the admin API)."""
        if self._admin is None:
            self._admin = Client(self.srv.url, ROOT_USER, ROOT_PASSWORD, timeout=30)
        return self._admin

    def audit_lines(self) -> list[dict[str, Any]]:
        """Every line of the audit log (data dir's audit/audit.log), parsed."""
        path = self.srv.settings.data_dir / "audit" / "audit.log"
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    # -- identities -------------------------------------------------------------------------

    def certificate(self, name: str | None = None, ca: trustme.CA | None = None) -> KmipIdentity:
        """A client certificate issued by the server's CA (or `ca`), attached to no user."""
        name = name or f"kmip-{uuid.uuid4().hex[:10]}"
        issued = (ca or self.ca).issue_cert(f"{name}.kmip.test")
        cert, key = self.pki / f"{name}.crt", self.pki / f"{name}.key"
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        der = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes()).public_bytes(
            serialization.Encoding.DER
        )
        return KmipIdentity(name, cert, key, identity_of(der))

    def user(
        self,
        policy: dict[str, Any] | Iterable[str] = ("kmip:*",),
        *,
        name: str | None = None,
        ca: trustme.CA | None = None,
    ) -> KmipIdentity:
        """A new user with `policy` (a document, or the actions it allows on every resource)
        and a new client certificate attached to it as a KMIP identity."""
        name = name or f"kmip-{uuid.uuid4().hex[:10]}"
        document = policy if isinstance(policy, dict) else allow(*policy)
        secret = f"{name}-secret-{uuid.uuid4().hex[:12]}"
        admin = self.admin()
        admin.put_policy(name, document)
        admin.add_user(name, [name], secret)
        made = self.certificate(name, ca)
        admin.add_kmip_identity(name, made.identity)
        return KmipIdentity(made.name, made.cert, made.key, made.identity, name, secret)

    # -- clients ----------------------------------------------------------------------------

    def client(
        self,
        who: KmipIdentity,
        kmip_version: enums.KMIPVersion | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        open: bool = True,
    ) -> ProxyKmipClient:
        """PyKMIP's client for `who`, sending `kmip_version` (PyKMIP's default: 1.2) in every
        request header, with a Username and Password credential when both are given; opened
        (closed when the server stops)."""
        client = ProxyKmipClient(
            hostname="127.0.0.1",
            port=self.kmip_port,
            cert=str(who.cert),
            key=str(who.key),
            ca=str(self.ca_path),
            username=username,
            password=password,
            config_file=str(self.pykmip_conf),
            kmip_version=kmip_version,
        )
        self._clients.append(client)
        if open:
            open_client(client)
        return client

    def raw(
        self,
        who: KmipIdentity,
        *,
        timeout: float = 10.0,
        maximum_version: ssl.TLSVersion | None = None,
    ) -> RawKmip:
        """A TLS connection to the KMIP port as `who` (closed when the server stops)."""
        raw = RawKmip(
            self.kmip_port, who, self.ca_path, timeout=timeout, maximum_version=maximum_version
        )
        self._raws.append(raw)
        return raw


def open_client(client: ProxyKmipClient) -> None:
    """`client.open()`, without the DeprecationWarning of the ssl.PROTOCOL_SSLv23 PyKMIP uses
    (the test suite turns warnings into errors)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "ssl.PROTOCOL_TLS is deprecated", DeprecationWarning)
        client.open()


class RawKmip:
    """A mutual-TLS socket to the KMIP port: arbitrary bytes out, TTLV messages in."""

    def __init__(
        self,
        port: int,
        who: KmipIdentity,
        ca: Path,
        *,
        timeout: float = 10.0,
        maximum_version: ssl.TLSVersion | None = None,
    ) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(str(ca))
        context.load_cert_chain(str(who.cert), str(who.key))
        if maximum_version is not None:
            context.maximum_version = maximum_version
        plain = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            self.sock = context.wrap_socket(plain, server_hostname="127.0.0.1")
        except BaseException:
            plain.close()
            raise

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exactly(self, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            chunk = self.sock.recv(size - len(out))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(out)} of {size} bytes")
            out += chunk
        return bytes(out)

    def read_message(self) -> bytes:
        """One whole TTLV message (its 8-byte head and its body), however it arrives."""
        head = self.recv_exactly(HEAD.size)
        _, _, length = HEAD.unpack(head)
        return head + self.recv_exactly(length)

    def read_as_libkmip(self) -> bytes:
        """One message read as Ceph's libkmip reads it: the 8-byte head, then the body in a
        single read (which returns at most one TLS record); a short body raises."""
        head = self.recv_exactly(HEAD.size)
        _, _, length = HEAD.unpack(head)
        body = self.sock.recv(length)
        if len(body) != length:
            raise AssertionError(f"one read returned {len(body)} of the body's {length} bytes")
        return head + body

    def recv_once(self, size: int = 1 << 20) -> bytes:
        """One `recv` (one TLS record's plaintext at most)."""
        return self.sock.recv(size)

    def request(self, data: bytes) -> bytes:
        self.send(data)
        return self.read_message()

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection within `timeout` (reading until EOF)."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionError, ssl.SSLError):
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# -- messages ---------------------------------------------------------------------------------


def batch_item(
    operation: enums.Operation, payload: Any, item_id: bytes | None = None
) -> messages.RequestBatchItem:
    return messages.RequestBatchItem(
        operation=contents.Operation(operation),
        unique_batch_item_id=contents.UniqueBatchItemID(item_id) if item_id is not None else None,
        request_payload=payload,
    )


def encode_request(
    version: enums.KMIPVersion,
    items: Sequence[messages.RequestBatchItem],
    *,
    maximum_response_size: int | None = None,
    username: str | None = None,
    password: str | None = None,
    batch_error: enums.BatchErrorContinuationOption | None = None,
    batch_count: int | None = None,
) -> bytes:
    """A request message (PyKMIP's classes), encoded in `version`."""
    authentication = None
    if username is not None or password is not None:
        credential = objects.Credential(
            credential_type=enums.CredentialType.USERNAME_AND_PASSWORD,
            credential_value=objects.UsernamePasswordCredential(
                username=username, password=password
            ),
        )
        authentication = contents.Authentication(credentials=[credential])
    header = messages.RequestHeader(
        protocol_version=contents.ProtocolVersion(*VERSIONS[version]),
        maximum_response_size=(
            contents.MaximumResponseSize(maximum_response_size)
            if maximum_response_size is not None
            else None
        ),
        authentication=authentication,
        batch_error_cont_option=(
            contents.BatchErrorContinuationOption(batch_error) if batch_error is not None else None
        ),
        batch_count=contents.BatchCount(len(items) if batch_count is None else batch_count),
    )
    message = messages.RequestMessage(request_header=header, batch_items=list(items))
    stream = utils.BytearrayStream()
    message.write(stream, kmip_version=version)
    return bytes(stream.buffer)


def decode_response(
    data: bytes, version: enums.KMIPVersion = V.KMIP_1_0
) -> messages.ResponseMessage:
    response = messages.ResponseMessage()
    response.read(utils.BytearrayStream(data), kmip_version=version)
    return response


def response_version(data: bytes) -> tuple[int, int]:
    """The Protocol Version of an encoded response's header, read from the raw bytes:
    Response Message, Response Header, Protocol Version, then its Major and Minor integers."""
    assert data[:4] == RESPONSE_MESSAGE + b"\x01", data[:8].hex()
    assert data[8:12] == b"\x42\x00\x7a\x01", data[8:16].hex()  # Response Header
    assert data[16:20] == b"\x42\x00\x69\x01", data[16:24].hex()  # Protocol Version
    assert data[24:28] == b"\x42\x00\x6a\x02" and data[40:44] == b"\x42\x00\x6b\x02"
    major: int = struct.unpack(">i", data[32:36])[0]
    minor: int = struct.unpack(">i", data[48:52])[0]
    return major, minor


# TTLV item types other than Structure, by their value's length (None: the length field's).
_LENGTHS = {
    0x02: 4,
    0x03: 8,
    0x04: None,
    0x05: 4,
    0x06: 8,
    0x07: None,
    0x08: None,
    0x09: 8,
    0x0A: 4,
}


def ttlv_items(data: bytes) -> list[tuple[int, int, bytes]]:
    """Every item of an encoded message, depth first, as (tag, type, value bytes), checking the
    encoding strictly (tags, lengths, zero padding to 8 bytes, structures that add up), so a
    response PyKMIP cannot decode is still read, and one that is malformed raises ValueError."""
    out: list[tuple[int, int, bytes]] = []

    def walk(at: int, end: int) -> None:
        while at < end:
            if end - at < HEAD.size:
                raise ValueError(f"a truncated item head at {at}")
            tag_bytes, kind, length = HEAD.unpack_from(data, at)
            tag = int.from_bytes(tag_bytes, "big")
            if tag >> 16 not in (0x42, 0x54):
                raise ValueError(f"not a KMIP tag at {at}: {tag:06x}")
            start = at + HEAD.size
            if kind == 0x01:
                if start + length > end:
                    raise ValueError(f"a structure over its parent at {at}")
                out.append((tag, kind, data[start : start + length]))
                walk(start, start + length)
                at = start + length
                continue
            if kind not in _LENGTHS:
                raise ValueError(f"an unknown item type {kind:#x} at {at}")
            fixed = _LENGTHS[kind]
            if fixed is not None and length != fixed:
                raise ValueError(f"type {kind:#x} with length {length} at {at}")
            padded = (length + 7) // 8 * 8
            if start + padded > end:
                raise ValueError(f"an item over its structure at {at}")
            if any(data[start + length : start + padded]):
                raise ValueError(f"non-zero padding at {at}")
            out.append((tag, kind, data[start : start + length]))
            at = start + padded

    walk(0, len(data))
    return out


def ttlv_values(data: bytes, tag: enums.Tags) -> list[Any]:
    """The values of every item tagged `tag` in an encoded message: integers and enumerations
    as int, text as str, bytes as bytes."""
    found: list[Any] = []
    for item_tag, kind, value in ttlv_items(data):
        if item_tag != tag.value:
            continue
        if kind in (0x02, 0x05, 0x0A):
            found.append(int.from_bytes(value, "big"))
        elif kind in (0x03, 0x09):
            found.append(int.from_bytes(value, "big", signed=True))
        elif kind == 0x07:
            found.append(value.decode())
        else:
            found.append(value)
    return found
