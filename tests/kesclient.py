"""A KES client that sends what MinIO's KES client sends, for the KES API tests.

Written from MinIO's client library, minio/kms-go `kes/` (commit f9a44b806030eb90f81379b897836afff127e4bf,
2025-08-22), which MinIO (`internal/kms/kes.go`) and its forks call:

- `apikey.go`: `ParseAPIKey` (`kes:v1:` + standard base64 of 0x00 || a 32-byte Ed25519 seed),
  `ed25519Identity` (SHA-256 of the ASN.1 SubjectPublicKeyInfo it builds by hand: algorithm
  1.3.101.112, the public key as a BIT STRING) and `GenerateCertificate`: a self-signed Ed25519
  certificate, a random 128-bit serial, subject CN = the identity, valid from now for 90 days,
  KeyUsage DigitalSignature, ExtKeyUsage ClientAuth, BasicConstraintsValid (CA false). MinIO
  builds this certificate from `MINIO_KMS_KES_API_KEY` (`internal/kms/config.go`).
- `client.go`: `NewClientWithConfig`: TLS 1.2 at least, the client certificate, the server
  verified against `RootCAs` (MINIO_KMS_KES_CAPATH), `ForceAttemptHTTP2` (ALPN offers h2, then
  http/1.1). Each call: its method and path (`join`: `path.Join(api, url.PathEscape(name))`, so
  an empty name loses the slash), the JSON of its Request struct (`[]byte` as standard base64,
  `context` omitted when empty, a nil `[]byte` as `null`), `Content-Type: application/json` on
  import, generate, encrypt and decrypt (not on hmac), the body as a ReadSeeker wrapped by
  `retryBody`, whose length Go cannot know: `Transfer-Encoding: chunked` (32 KiB chunks, io.Copy's
  buffer); a nil body on POST/PUT is `Content-Length: 0`. Responses are read through
  `mem.LimitReader` (1 KiB for /version, 1000 bytes for hmac, 1 MiB otherwise).
- `error.go` `parseErrorResponse`: an error is (status, message), the message from a JSON
  `{"message"}` (or `{"error"}`) only when the content type is application/json, else the body
  text; `KesError` compares as Go's `Error` struct does, so `== ERR_KEY_NOT_FOUND` is MinIO's
  `errors.Is(err, kes.ErrKeyNotFound)`.
- `retry.go` `retry.Do`: a network error or a 503 is retried twice, after 200 ms + up to 800 ms.

Go's own headers are sent too: `User-Agent: Go-http-client/1.1`, `Accept-Encoding: gzip`.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import json
import os
import random
import ssl
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class KesError(Exception):
    status: int
    message: str

    def __str__(self) -> str:
        return f"{self.status} {self.message}"


ERR_NOT_ALLOWED = KesError(403, "not authorized: insufficient permissions")
ERR_KEY_NOT_FOUND = KesError(404, "key does not exist")
ERR_KEY_EXISTS = KesError(400, "key already exists")
ERR_DECRYPT = KesError(400, "decryption failed: ciphertext is not authentic")

KIB, KB, MIB = 1024, 1000, 1024 * 1024


# -- apikey.go --------------------------------------------------------------------------------------


def ed25519_identity(public_key: bytes) -> str:
    """`ed25519Identity`: asn1.Marshal({AlgorithmIdentifier{1.3.101.112}, BitString(pub)})."""
    algorithm = b"\x30\x05\x06\x03\x2b\x65\x70"  # SEQUENCE { OID 1.3.101.112 }
    bit_string = b"\x03" + bytes([len(public_key) + 1]) + b"\x00" + public_key
    body = algorithm + bit_string
    der = b"\x30" + bytes([len(body)]) + body
    return hashlib.sha256(der).hexdigest()


def generate_api_key() -> str:
    """`GenerateAPIKey(nil).String()`."""
    return "kes:v1:" + base64.b64encode(b"\x00" + os.urandom(32)).decode()


def parse_api_key(text: str) -> tuple[Ed25519PrivateKey, str]:
    """`ParseAPIKey`: the private key and its identity."""
    raw = base64.b64decode(text.removeprefix("kes:v1:"), validate=True)
    if len(raw) != 33:
        raise ValueError("kes: invalid API key: invalid length")
    if raw[0] != 0:
        raise ValueError("kes: invalid API key: unsupported type")
    key = Ed25519PrivateKey.from_private_bytes(raw[1:])
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return key, ed25519_identity(public)


def api_key_certificate(text: str) -> tuple[bytes, bytes, str]:
    """`GenerateCertificate(key)`: (certificate PEM, PKCS#8 key PEM, identity)."""
    key, identity = parse_api_key(text)
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, identity, _type=_ASN1Type.PrintableString)]
    )
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .serial_number(random.SystemRandom().randrange(1 << 128))
        .subject_name(name)
        .issuer_name(name)  # self-signed: template is its own parent
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=90))
        .public_key(key.public_key())
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, None)
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, identity


def certificate_identity(cert_pem: bytes) -> str:
    """The identity KES computes: SHA-256 of the certificate's SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def self_signed_certificate(key: Any, common_name: str = "minio") -> bytes:
    """A self-signed client certificate of any key type (MINIO_KMS_KES_CERT_FILE's kind)."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    algorithm = None if isinstance(key, Ed25519PrivateKey) else hashes.SHA256()
    cert = (
        x509.CertificateBuilder()
        .serial_number(x509.random_serial_number())
        .subject_name(name)
        .issuer_name(name)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .public_key(key.public_key())
        .sign(key, algorithm)
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


# -- client.go --------------------------------------------------------------------------------------


def join(api: str, *args: str) -> str:
    """`path.Join(api, url.PathEscape(arg))`: path.Join drops an empty element and cleans."""
    parts = [api.rstrip("/")]
    for arg in args:
        escaped = urllib.parse.quote(arg, safe="$&+,:;=@")
        if escaped:
            parts.append(escaped)
    return "/".join(parts)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


class KesClient:
    """One endpoint, one keep-alive connection (Go's Transport reuses idle connections)."""

    def __init__(
        self,
        endpoint: str,
        *,
        api_key: str | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        ca_path: Path | str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        url = urllib.parse.urlsplit(endpoint)
        assert url.scheme == "https", "MINIO_KMS_KES_ENDPOINT is https"
        self.host, self.port = url.hostname or "", url.port or 443
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(str(ca_path))
        context.set_alpn_protocols(["h2", "http/1.1"])  # ForceAttemptHTTP2
        self.identity: str | None = None
        if api_key is not None:
            cert_pem, private_pem, self.identity = api_key_certificate(api_key)
            with tempfile.TemporaryDirectory() as tmp:
                cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
                cert_path.write_bytes(cert_pem)
                key_path.write_bytes(private_pem)
                context.load_cert_chain(str(cert_path), str(key_path))
        elif cert_file is not None and key_file is not None:
            context.load_cert_chain(str(cert_file), str(key_file))
            self.identity = certificate_identity(cert_file.read_bytes())
        self.context = context
        self._sleep = sleep
        self._conn: http.client.HTTPSConnection | None = None
        self.last_headers: list[tuple[str, str]] = []
        self.alpn: str | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> KesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ----------------------------------------------------------------------------------

    def _once(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], limit: int
    ) -> tuple[int, str, bytes]:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(
                self.host, self.port, context=self.context, timeout=30
            )
        conn = self._conn
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            sent = {"User-Agent": "Go-http-client/1.1", **headers}
            if body is not None:
                sent["Transfer-Encoding"] = "chunked"
            elif method in ("POST", "PUT", "PATCH"):
                sent["Content-Length"] = "0"
            sent["Accept-Encoding"] = "gzip"
            for name, value in sent.items():
                conn.putheader(name, value)
            self.last_headers = list(sent.items())
            conn.endheaders()
            if conn.sock is not None and isinstance(conn.sock, ssl.SSLSocket):
                self.alpn = conn.sock.selected_alpn_protocol()
            if body is not None:
                for i in range(0, len(body), 32 * KIB):
                    chunk = body[i : i + 32 * KIB]
                    conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                conn.send(b"0\r\n\r\n")
            resp = conn.getresponse()
            data = resp.read(limit)  # mem.LimitReader
            resp.read()  # Go drains and closes the body; the connection stays usable
            if resp.will_close:
                self.close()
            return resp.status, resp.getheader("Content-Type", ""), data
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        limit: int = MIB,
    ) -> tuple[int, str, bytes]:
        """`retry.Do`: a network error or a 503 is tried again, twice."""
        retries = 2
        while True:
            try:
                status, content_type, data = self._once(method, path, body, headers or {}, limit)
            except (TimeoutError, OSError, http.client.HTTPException):
                if retries == 0:
                    raise
            else:
                if status != 503 or retries == 0:
                    return status, content_type, data
            retries -= 1
            self._sleep(0.2 + random.randrange(800) / 1000)

    @staticmethod
    def _error(status: int, content_type: str, data: bytes) -> KesError:
        """`parseErrorResponse`."""
        if content_type.strip().startswith("application/json"):
            response = json.loads(data)
            message = response.get("error") or response.get("message", "")
            if status == 400 and message == "key does already exist":
                return ERR_KEY_EXISTS
            if status == 403 and message == "prohibited by policy":
                return ERR_NOT_ALLOWED
            return KesError(status, message)
        return KesError(status, data.decode())

    def _call(
        self,
        method: str,
        path: str,
        request: dict[str, Any] | None = None,
        *,
        json_header: bool = True,
        limit: int = MIB,
    ) -> Any:
        body = None if request is None else json.dumps(request, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"} if body is not None and json_header else {}
        status, content_type, data = self.send(method, path, body, headers, limit)
        if status != 200:
            raise self._error(status, content_type, data)
        return json.loads(data) if data else None

    # -- the API ------------------------------------------------------------------------------------

    def version(self) -> str:
        return str(self._call("GET", "/version", limit=KIB)["version"])

    def is_ready(self) -> bool:
        status, content_type, data = self.send("GET", "/v1/ready")
        if status >= 400 and status != 503:
            raise self._error(status, content_type, data)
        return status == 200

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/v1/status")
        return result

    def apis(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/v1/api")
        return result

    def metrics(self) -> str:
        status, content_type, data = self.send("GET", "/v1/metrics")
        if status != 200:
            raise self._error(status, content_type, data)
        return data.decode()

    def create_key(self, name: str) -> None:
        self._call("POST", join("/v1/key/create", name))

    def import_key(self, name: str, key: bytes, cipher: str = "AES256") -> None:
        self._call("POST", join("/v1/key/import", name), {"key": _b64(key), "cipher": cipher})

    def describe_key(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", join("/v1/key/describe", name))
        return result

    def delete_key(self, name: str) -> None:
        self._call("DELETE", join("/v1/key/delete", name))

    def generate_key(self, name: str, context: bytes | None = None) -> tuple[bytes, bytes]:
        request = {} if not context else {"context": _b64(context)}
        response = self._call("POST", join("/v1/key/generate", name), request)
        return base64.b64decode(response["plaintext"]), base64.b64decode(response["ciphertext"])

    def encrypt(self, name: str, plaintext: bytes | None, context: bytes | None = None) -> bytes:
        request: dict[str, Any] = {"plaintext": _b64(plaintext)}
        if context:
            request["context"] = _b64(context)
        response = self._call("POST", join("/v1/key/encrypt", name), request)
        return base64.b64decode(response["ciphertext"])

    def decrypt(self, name: str, ciphertext: bytes | None, context: bytes | None = None) -> bytes:
        request: dict[str, Any] = {"ciphertext": _b64(ciphertext)}
        if context:
            request["context"] = _b64(context)
        response = self._call("POST", join("/v1/key/decrypt", name), request)
        return base64.b64decode(response["plaintext"])

    def hmac(self, name: str, message: bytes) -> bytes:
        response = self._call(
            "PUT", join("/v1/key/hmac", name), {"message": _b64(message)}, json_header=False,
            limit=KB,
        )  # fmt: skip
        return base64.b64decode(response["hmac"])

    def list_keys(self, prefix: str = "") -> tuple[list[str], str]:
        response = self._call("GET", join("/v1/key/list", prefix))
        return list(response["names"]), str(response.get("continue_at", ""))


# -- minio/minio internal/kms/context.go ------------------------------------------------------------


def minio_context(pairs: dict[str, str]) -> bytes:
    """`Context.MarshalText`: `{}` when empty, else the pairs in key order, compact JSON."""
    if not pairs:
        return b"{}"
    return ("{" + ",".join(
        f"{json.dumps(k)}:{json.dumps(pairs[k])}" for k in sorted(pairs)
    ) + "}").encode()  # fmt: skip
