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

For the KMIP test modules (test_kmip.py, test_kmip_crypto.py, test_kmip_vault.py), what they
share: short names of PyKMIP's enumerations (`R`, `A`, `Alg`, `Mask`, `OT`...); module-scoped
fixtures on the module's own `kmip` and `alice` fixtures (`client`, `client10`, `client14`,
`client20`: Alice's clients in a protocol version; `kms`: boto3's KMS client as root), imported
by their function names (`client_fixture`...); and the helpers: attributes (`attr`,
`attributes_of`, `one`), outcomes (`ok`, `refused`, `reason_of`), objects (`create`, `active`,
`active_pair`, `register_core`, `self_signed_certificate`) and cryptography checked offline
(`spki`, `aes_offline`, `gcm_encrypt`/`gcm_decrypt`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import socket
import ssl
import struct
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
import pytest
import trustme
from botocore.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as block_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID
from kmip.core import attributes as core_attributes
from kmip.core import enums, misc, objects, secrets, utils
from kmip.core import exceptions as core_exceptions
from kmip.core.factories.attributes import AttributeFactory
from kmip.core.messages import contents, messages, payloads
from kmip.pie import exceptions
from kmip.pie.client import ProxyKmipClient

from s3kms.auth.certificates import identity_of
from s3kms.client import Client
from s3kms.keystore.vault import VaultSettings

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsThread, free_port, thread_settings

R = enums.ResultReason
A = enums.AttributeType
Alg = enums.CryptographicAlgorithm
Hash = enums.HashingAlgorithm
Mask = enums.CryptographicUsageMask
Op = enums.Operation
OT = enums.ObjectType
State = enums.State
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


# -- the KMIP test modules' fixtures ----------------------------------------------------------
# Module-scoped, on the requesting module's own `kmip` (a KmipTestServer) and `alice` (a
# KmipIdentity) fixtures; a module imports the functions it uses (`client_fixture`...): pytest
# knows them by their fixture names (`client`...).


@pytest.fixture(scope="module", name="client")
def client_fixture(kmip: KmipTestServer, alice: KmipIdentity) -> ProxyKmipClient:
    """Alice's client, in PyKMIP's default protocol version (1.2)."""
    return kmip.client(alice)


@pytest.fixture(scope="module", name="client10")
def client10_fixture(kmip: KmipTestServer, alice: KmipIdentity) -> ProxyKmipClient:
    return kmip.client(alice, V.KMIP_1_0)


@pytest.fixture(scope="module", name="client14")
def client14_fixture(kmip: KmipTestServer, alice: KmipIdentity) -> ProxyKmipClient:
    """1.4: the first version with the Authenticated Encryption Additional Data and Tag."""
    return kmip.client(alice, V.KMIP_1_4)


@pytest.fixture(scope="module", name="client20")
def client20_fixture(kmip: KmipTestServer, alice: KmipIdentity) -> ProxyKmipClient:
    return kmip.client(alice, V.KMIP_2_0)


@pytest.fixture(scope="module", name="kms")
def kms_fixture(kmip: KmipTestServer) -> Any:
    """boto3's KMS client for the server's AWS endpoint, as root."""
    return boto3.client(
        "kms",
        endpoint_url=kmip.url,
        region_name="us-east-1",
        aws_access_key_id=ROOT_USER,
        aws_secret_access_key=ROOT_PASSWORD,
        config=Config(retries={"max_attempts": 1}),
    )


# -- the KMIP test modules' helpers -----------------------------------------------------------

FACTORY = AttributeFactory()
ENCRYPT_DECRYPT = [Mask.ENCRYPT, Mask.DECRYPT]
PSS_SHA256 = {
    "padding_method": enums.PaddingMethod.PSS,
    "cryptographic_algorithm": Alg.RSA,
    "hashing_algorithm": Hash.SHA_256,
}
# RSA-PSS with SHA-256 as a verifier reads it offline (any salt length).
PSS_AUTO = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
# What a failed operation raises: the pie client's own methods, or KMIPProxy's
# send_request_payload (Modify/Set/Delete Attribute, Encrypt/Decrypt with AAD).
FAILURES = (exceptions.KmipOperationFailure, core_exceptions.OperationFailure)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def attr(name: enums.AttributeType | str, value: Any, index: int | None = None) -> Any:
    return FACTORY.create_attribute(name, value, index)


@contextlib.contextmanager
def refused(*reasons: enums.ResultReason) -> Iterator[None]:
    """`with refused(R.X):` - the operation fails with Result Reason X (or one of those given);
    otherwise the reason and message it got are the assertion's."""
    wanted = " or ".join(r.name for r in reasons)
    try:
        yield
    except FAILURES as exc:
        assert exc.reason in reasons, f"{wanted} expected, got {exc.reason.name}: {exc}"
        return
    pytest.fail(f"{wanted} expected, but the operation succeeded")


def reason_of(call: Callable[[], Any]) -> enums.ResultReason | None:
    """The Result Reason `call` fails with; None when it succeeds."""
    try:
        call()
    except FAILURES as exc:
        reason: enums.ResultReason = exc.reason
        return reason
    return None


def ok(result: Any) -> Any:
    """A KMIPProxy result (an object, or the dict of its derive_key), or its failure raised as
    the pie client raises it."""
    if isinstance(result, dict):
        if result["result_status"] is not enums.ResultStatus.SUCCESS:
            raise exceptions.KmipOperationFailure(
                result["result_status"], result["result_reason"], result["result_message"]
            )
        return result
    if result.result_status.value is not enums.ResultStatus.SUCCESS:
        raise exceptions.KmipOperationFailure(
            result.result_status.value, result.result_reason.value, result.result_message.value
        )
    return result


def create(
    client: ProxyKmipClient,
    algorithm: enums.CryptographicAlgorithm,
    length: int,
    masks: list[enums.CryptographicUsageMask],
    *extra: Any,
) -> str:
    """A symmetric key with exactly `masks` and the template's attributes `extra` besides
    algorithm, length and usage mask (KMIPProxy's create: the pie client's create takes no other
    attributes, and adds Encrypt and Decrypt to any mask)."""
    template = [
        attr(A.CRYPTOGRAPHIC_ALGORITHM, algorithm),
        attr(A.CRYPTOGRAPHIC_LENGTH, length),
        attr(A.CRYPTOGRAPHIC_USAGE_MASK, masks),
        *extra,
    ]
    result = ok(
        client.proxy.create(OT.SYMMETRIC_KEY, objects.TemplateAttribute(attributes=template))
    )
    uid: str = result.uuid
    return uid


def active(client: ProxyKmipClient, uid: str) -> str:
    client.activate(uid)
    return uid


def active_pair(
    client: ProxyKmipClient,
    algorithm: enums.CryptographicAlgorithm,
    length: int,
    public_masks: list[enums.CryptographicUsageMask],
    private_masks: list[enums.CryptographicUsageMask],
) -> tuple[str, str]:
    """A key pair with these usage masks, its private key then its public key activated:
    (public uid, private uid)."""
    public, private = client.create_key_pair(
        algorithm, length, public_usage_mask=public_masks, private_usage_mask=private_masks
    )
    client.activate(private)
    client.activate(public)
    return public, private


_CORE_KEYS: dict[enums.ObjectType, Any] = {
    OT.SYMMETRIC_KEY: secrets.SymmetricKey,
    OT.PRIVATE_KEY: secrets.PrivateKey,
    OT.PUBLIC_KEY: secrets.PublicKey,
}


def register_core(
    client: ProxyKmipClient,
    object_type: enums.ObjectType,
    value: bytes,
    key_format: enums.KeyFormatType,
    algorithm: enums.CryptographicAlgorithm,
    length: int,
) -> str:
    """Register a key built of PyKMIP's core classes (KMIPProxy's register: the pie objects
    check what they hold, and take fewer key formats)."""
    block = objects.KeyBlock(
        key_format_type=misc.KeyFormatType(key_format),
        key_value=objects.KeyValue(objects.KeyMaterial(value)),
        cryptographic_algorithm=core_attributes.CryptographicAlgorithm(algorithm),
        cryptographic_length=core_attributes.CryptographicLength(length),
    )
    result = ok(
        client.proxy.register(
            object_type, objects.TemplateAttribute(), _CORE_KEYS[object_type](block)
        )
    )
    uid: str = result.uuid
    return uid


def plain(value: Any) -> Any:
    """The plain value of an attribute value object."""
    if isinstance(value, core_attributes.Name):
        return value.name_value.value
    if isinstance(value, core_attributes.ApplicationSpecificInformation):
        return (value.application_namespace, value.application_data)
    return value.value


def attributes_of(
    client: ProxyKmipClient, uid: str, names: list[str] | None = None
) -> dict[str, list[Any]]:
    """GetAttributes as name -> [plain values] (several for a multi-valued attribute)."""
    got_uid, found = client.get_attributes(uid, names)
    assert got_uid == uid
    out: dict[str, list[Any]] = {}
    for attribute in found:
        out.setdefault(attribute.attribute_name.value, []).append(plain(attribute.attribute_value))
    return out


def one(client: ProxyKmipClient, uid: str, name: str) -> Any:
    values = attributes_of(client, uid, [name]).get(name, [])
    assert len(values) == 1, (name, values)
    return values[0]


def self_signed_certificate(prefix: str = "kmip-cert") -> bytes:
    """A new self-signed EC certificate (DER), its Common Name `prefix` made unique."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, unique(prefix))])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def spki(key: Any) -> bytes:
    """A public key's SubjectPublicKeyInfo (DER), as Get returns an X.509 public key."""
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def aes_offline(key: bytes, mode: str, iv: bytes | None, data: bytes, pad: bool) -> bytes:
    """What AES in `mode` (CBC, CTR or ECB) makes of `data` (PKCS#7 padding when `pad`)."""
    if pad:
        padder = block_padding.PKCS7(128).padder()
        data = padder.update(data) + padder.finalize()
    chosen: Any
    if mode == "CBC":
        assert iv is not None
        chosen = modes.CBC(iv)
    elif mode == "CTR":
        assert iv is not None
        chosen = modes.CTR(iv)
    else:
        chosen = modes.ECB()  # noqa: S305 (the mode under test)
    encryptor = Cipher(algorithms.AES(key), chosen).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def _gcm(
    client: ProxyKmipClient,
    operation: enums.Operation,
    payload: Any,
    uid: str,
    data: bytes,
    iv: bytes | None,
    aad: bytes | None,
    tag_length: int | None,
    algorithm: enums.CryptographicAlgorithm | None,
    **fields: Any,
) -> Any:
    """An Encrypt or Decrypt request in GCM (the payload directly: the pie client's methods
    take no AAD); the response payload."""
    params = core_attributes.CryptographicParameters(
        block_cipher_mode=enums.BlockCipherMode.GCM,
        cryptographic_algorithm=algorithm,
        tag_length=tag_length,
    )
    return client.proxy.send_request_payload(
        operation,
        payload(
            unique_identifier=uid,
            cryptographic_parameters=params,
            data=data,
            iv_counter_nonce=iv,
            auth_additional_data=aad,
            **fields,
        ),
    )


def gcm_encrypt(
    client: ProxyKmipClient,
    uid: str,
    data: bytes,
    *,
    iv: bytes | None = None,
    aad: bytes | None = None,
    tag_length: int | None = None,
    algorithm: enums.CryptographicAlgorithm | None = Alg.AES,
) -> Any:
    """Encrypt in GCM with Authenticated Encryption Additional Data; the response payload. The
    Cryptographic Parameters name `algorithm` (None: none) and `tag_length`."""
    payload = payloads.EncryptRequestPayload
    return _gcm(client, Op.ENCRYPT, payload, uid, data, iv, aad, tag_length, algorithm)


def gcm_decrypt(
    client: ProxyKmipClient,
    uid: str,
    data: bytes,
    iv: bytes,
    tag: bytes | None,
    aad: bytes | None = None,
    *,
    tag_length: int | None = None,
    algorithm: enums.CryptographicAlgorithm | None = Alg.AES,
) -> bytes:
    """Decrypt in GCM with the Authenticated Encryption Additional Data and Tag; the plaintext."""
    payload = payloads.DecryptRequestPayload
    answer = _gcm(
        client, Op.DECRYPT, payload, uid, data, iv, aad, tag_length, algorithm, auth_tag=tag
    )
    opened: bytes = answer.data
    return opened
