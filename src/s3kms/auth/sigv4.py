"""AWS Signature Version 4: verify requests (server side) and sign them (client side).

Pure functions over plain values: no I/O, no HTTP framework.

Two flavours, chosen by ``s3_flavour``:

* **S3 flavour** (``s3_flavour=True``; the admin API as minio-py, madmin, awscurl and curl sign
  it): the canonical URI is the path exactly as received (still percent-encoded, no dot-segment
  removal, no second encoding) and the payload hash is the ``X-Amz-Content-Sha256`` header when
  sent (``UNSIGNED-PAYLOAD`` accepted). Presigned URLs default to ``UNSIGNED-PAYLOAD``, which only
  a GET or HEAD may use: any other presigned request must send ``X-Amz-Content-Sha256`` with the
  body's hash, which the signature then covers (else ``ContentSHA256Mismatch``).
* **Generic flavour** (``s3_flavour=False``; the AWS KMS JSON API as boto3 signs it, and the
  official test vectors): the path is normalised (dot segments removed, repeated slashes
  collapsed) and then URI-encoded once more, so a received ``%20`` becomes ``%2520`` as in
  botocore. The payload is always authenticated: ``UNSIGNED-PAYLOAD`` is refused.

Canonical query string: every name and value is percent-decoded (``+`` read as a space, as Go's
``url.ParseQuery`` and Python's ``parse_qs`` do) and re-encoded with the unreserved set
``A-Za-z0-9-_.~``; the pairs are sorted by name, then value; a bare ``name`` becomes ``name=``.

**curl raw-query rule:** curl 7.88 (``--aws-sigv4``) signs the query string as typed, e.g.
``pattern=my-*`` where the standard form is ``pattern=my-%2A``. For header-signed requests the
verifier checks the standard form first and, only if that fails and the received query differs
from it, the query exactly as received. Both forms cover the same received bytes, so nothing
unsigned gets through. (A presigned URL carries its signature in the query; standard form only.)

Server-side choices worth knowing:

* No ``Authorization`` header and no presigned query: ``MissingSecurityHeader``. Both at once, a
  garbled header or query, a wrong algorithm, a bad credential scope (region neither ours nor
  ``""``, service not served, scope day != request day), or ``X-Amz-Expires`` outside 1..604800:
  ``AuthorizationHeaderMalformed``.
* ``host`` must be signed, and so must the date header the time came from (``x-amz-date``, or
  ``date`` on the RFC 1123 fallback) and ``x-amz-target`` when sent (it selects the KMS operation
  and nothing else binds it): otherwise ``AuthorizationHeaderMalformed``. A header named in
  SignedHeaders but absent from the request: ``SignatureDoesNotMatch``.
* No ``x-amz-date`` and no ``date`` header: ``MissingSecurityHeader`` (naming X-Amz-Date).
* Header auth more than ``max_skew`` seconds off: ``RequestTimeTooSkewed``. A presigned URL used
  before ``X-Amz-Date - max_skew`` or after ``X-Amz-Date + X-Amz-Expires``: ``AccessDenied``.
* ``x-amz-content-sha256`` that does not match the body: ``ContentSHA256Mismatch``;
  ``STREAMING-*`` payloads (aws-chunked) are not supported: ``AuthorizationHeaderMalformed``.
* Error messages never contain the secret, the expected signature or the string to sign.

Text encoding: the canonical request is hashed as UTF-8 with ``surrogateescape``, so a server
that decodes raw header and path bytes as UTF-8 with ``surrogateescape`` hashes exactly the bytes
it received.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import hmac
import time
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_tz
from typing import Any
from urllib.parse import (
    SplitResult,
    quote,
    quote_from_bytes,
    unquote_to_bytes,
    urlsplit,
    urlunsplit,
)

from s3kms.errors import (
    AccessDenied,
    AuthorizationHeaderMalformed,
    ContentSHA256Mismatch,
    InvalidAccessKeyId,
    MissingSecurityHeader,
    RequestTimeTooSkewed,
    SignatureDoesNotMatch,
)
from s3kms.request import RequestView

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "MAX_PRESIGN_EXPIRES",
    "UNSIGNED_PAYLOAD",
    "Verified",
    "authorization_header",
    "canonical_headers",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "credential_scope",
    "format_amz_date",
    "presign_url",
    "request_date",
    "sign_headers",
    "signature",
    "signing_key",
    "string_to_sign",
    "verify_request",
]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_READ_METHODS = frozenset({"GET", "HEAD"})
_SIGN_THE_PAYLOAD = (
    "A presigned request that is not a GET must sign its payload: "
    "send X-Amz-Content-Sha256 with the body's SHA-256."
)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_PRESIGN_EXPIRES = 604800  # 7 days

_TERMINATOR = "aws4_request"
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"
# Any of these in the query makes the request a presigned one.
_PRESIGN_MARKERS = frozenset({"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"})
_PRESIGN_PARAMS = frozenset(
    {
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
    }
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(slots=True)  # not frozen: made per request, and a frozen one costs 3x to build
class Verified:
    """Who signed a request that verified.

    ``region`` is the credential scope's: the server's home region, or another one it serves
    (``verify_request``'s ``regions``); the home region when the client scoped its signature
    to ``""``.
    """

    access_key: str
    region: str
    service: str


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def _encode_component(text: str) -> str:
    """Percent-decode one query name or value and re-encode it with the AWS unreserved set."""
    if not text.strip(_UNRESERVED):  # only unreserved characters: already canonical
        return text
    raw = text.replace("+", " ").encode("utf-8", "surrogateescape")
    if b"%" in raw:
        raw = unquote_to_bytes(raw)
    return quote_from_bytes(raw, safe="")


def _decode_component(text: str) -> str:
    """Inverse of the canonical encoding (used for the presign parameters)."""
    if "%" not in text:
        return text
    return unquote_to_bytes(text).decode("utf-8", "surrogateescape")


def _encoded_pairs(query: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((_encode_component(name), _encode_component(value)))
    return pairs


def _join_pairs(pairs: Iterable[tuple[str, str]]) -> str:
    return "&".join([f"{name}={value}" for name, value in sorted(pairs)])


def canonical_query(query: str, *, exclude: str | None = None) -> str:
    """The standard canonical query string of a raw query string (``exclude``: a name to drop)."""
    if not query:
        return ""
    pairs = _encoded_pairs(query)
    if exclude is not None:
        pairs = [pair for pair in pairs if pair[0] != exclude]
    return _join_pairs(pairs)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 dot-segment removal plus AWS's collapsing of repeated slashes (as botocore)."""
    if not path:
        return "/"
    out: list[str] = []
    for segment in path.split("/"):
        if not segment or segment == ".":
            continue
        if segment == "..":
            if out:
                out.pop()
        else:
            out.append(segment)
    first = "/" if path[0] == "/" else ""
    last = "/" if path[-1] == "/" and out else ""
    return first + "/".join(out) + last


@functools.lru_cache(maxsize=1024)
def _generic_uri(path: str) -> str:
    normalised = _remove_dot_segments(path)
    return quote(normalised.encode("utf-8", "surrogateescape"), safe="/~")


def canonical_uri(path: str, *, s3_flavour: bool) -> str:
    """The canonical URI of a raw (still percent-encoded) path."""
    if s3_flavour:
        return path or "/"
    return _generic_uri(path)


def canonical_headers(headers: Mapping[str, str], signed_headers: Sequence[str]) -> str:
    """``name:value`` lines (no trailing newline) for the signed headers, values trimmed and with
    runs of whitespace collapsed (which also unfolds multi-line values).

    ``headers`` has lower-cased names. A signed header missing from it: ``SignatureDoesNotMatch``.
    """
    lines: list[str] = []
    for name in signed_headers:
        value = headers.get(name)
        if value is None:
            raise SignatureDoesNotMatch(f"The signed header '{name}' is missing from the request.")
        lines.append(f"{name}:{' '.join(value.split())}")
    return "\n".join(lines)


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    payload_hash: str,
    *,
    s3_flavour: bool,
) -> str:
    """The canonical request from the raw path and query as sent and lower-cased header names."""
    return (
        f"{method}\n{canonical_uri(path, s3_flavour=s3_flavour)}\n{canonical_query(query)}\n"
        f"{canonical_headers(headers, signed_headers)}\n\n"
        f"{';'.join(signed_headers)}\n{payload_hash}"
    )


def credential_scope(date: str, region: str, service: str) -> str:
    """``YYYYMMDD/region/service/aws4_request``."""
    return f"{date}/{region}/{service}/{_TERMINATOR}"


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def string_to_sign(amz_date: str, scope: str, canonical_request: str) -> str:
    """The string to sign for a canonical request (``amz_date``: ``YYYYMMDDTHHMMSSZ``)."""
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{_sha256_hex(canonical_request)}"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


@functools.lru_cache(maxsize=256)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The derived signing key (memoised: one key serves a whole day of requests)."""
    key = _hmac(f"AWS4{secret}".encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, _TERMINATOR)


def signature(key: bytes, string_to_sign: str) -> str:
    """The hex signature of a string to sign."""
    return _hmac_sha256(key, string_to_sign.encode("utf-8")).hex()


def authorization_header(
    access_key: str, scope: str, signed_headers: Sequence[str], signature: str
) -> str:
    """The ``Authorization`` header value, formatted as botocore and the test vectors do."""
    return (
        f"{ALGORITHM} Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(signed_headers)}, Signature={signature}"
    )


def format_amz_date(now: float) -> str:
    """``YYYYMMDDTHHMMSSZ`` for a POSIX time."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


# --------------------------------------------------------------------------------------------
# Verification (server)
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _parse_amz_date(value: str) -> float | None:
    if len(value) != 16 or value[8] != "T" or value[15] != "Z":
        return None
    digits = value[:8] + value[9:15]
    if not (digits.isascii() and digits.isdigit()):
        return None
    try:
        moment = datetime(
            int(value[0:4]),
            int(value[4:6]),
            int(value[6:8]),
            int(value[9:11]),
            int(value[11:13]),
            int(value[13:15]),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    return moment.timestamp()


def _parse_http_date(value: str) -> float | None:
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    try:
        return float(calendar.timegm(parsed[:9]) - (parsed[9] or 0))
    except (ValueError, OverflowError):
        return None


def _header_date(headers: Mapping[str, str]) -> tuple[str, float, str]:
    """(amz_date for the string to sign, POSIX time, name of the header it came from)."""
    value = headers.get("x-amz-date")
    if value is not None:
        value = value.strip()
        moment = _parse_amz_date(value)
        if moment is None:
            raise AuthorizationHeaderMalformed(
                "X-Amz-Date must be in the ISO 8601 basic format YYYYMMDDTHHMMSSZ."
            )
        return value, moment, "x-amz-date"
    value = headers.get("date")
    if value is None:
        raise MissingSecurityHeader("Your request is missing a required header: X-Amz-Date.")
    moment = _parse_http_date(value)
    if moment is None:
        raise AuthorizationHeaderMalformed("The Date header is not a valid RFC 1123 date.")
    return format_amz_date(moment), moment, "date"


def request_date(headers: Mapping[str, str]) -> tuple[str, float]:
    """(``YYYYMMDDTHHMMSSZ``, POSIX time) of a header-signed request, as the verifier reads it
    (``x-amz-date``, else ``date``); raises the verifier's errors for a missing or bad date."""
    amz_date, moment, _ = _header_date(headers)
    return amz_date, moment


def _parse_authorization(value: str) -> tuple[str, str, str]:
    """(credential, signed headers, signature) from an ``Authorization`` header."""
    parts = value.split(None, 1)
    if not parts or parts[0] != ALGORITHM:
        raise AuthorizationHeaderMalformed(
            "The authorization header is malformed; the algorithm must be AWS4-HMAC-SHA256."
        )
    fields: dict[str, str] = {}
    if len(parts) == 2:
        for item in parts[1].replace(",", " ").split():
            name, eq, field = item.partition("=")
            if not eq or name in fields:
                raise AuthorizationHeaderMalformed()
            fields[name] = field
    try:
        return fields["Credential"], fields["SignedHeaders"], fields["Signature"]
    except KeyError:
        raise AuthorizationHeaderMalformed(
            "The authorization header is malformed; it must carry Credential, SignedHeaders "
            "and Signature."
        ) from None


def _parse_credential(credential: str) -> tuple[str, str, str, str]:
    """(access key, date, region, service); the access key may itself contain "/"."""
    parts = credential.rsplit("/", 4)
    if len(parts) != 5 or not parts[0] or not parts[3] or parts[4] != _TERMINATOR:
        raise AuthorizationHeaderMalformed(
            "The authorization header is malformed; the Credential must be "
            "<access-key>/<YYYYMMDD>/<region>/<service>/aws4_request."
        )
    return parts[0], parts[1], parts[2], parts[3]


def _parse_signature(value: str) -> bytes:
    if len(value) == 64:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            pass
        else:
            if len(raw) == 32:
                return raw
    raise AuthorizationHeaderMalformed(
        "The authorization header is malformed; the Signature must be 64 hex digits."
    )


def _parse_signed_headers(value: str) -> list[str]:
    names = value.split(";")
    if not all(names):
        raise AuthorizationHeaderMalformed(
            "The authorization header is malformed; SignedHeaders is not a ';'-separated list."
        )
    return names


def _payload_hash(
    headers: Mapping[str, str], body: bytes, *, s3_flavour: bool, presigned: bool, method: str
) -> str:
    sent = headers.get("x-amz-content-sha256")
    # A presigned URL is a capability anyone holding it may use: only a read may leave its body
    # out of the signature, or one URL would accept any body (any policy document, say).
    unsigned_ok = s3_flavour and (not presigned or method in _READ_METHODS)
    if sent is None:
        if presigned and s3_flavour:
            if not unsigned_ok:
                raise ContentSHA256Mismatch(_SIGN_THE_PAYLOAD)
            return UNSIGNED_PAYLOAD
        return hashlib.sha256(body).hexdigest()
    sent = sent.strip()
    if sent == UNSIGNED_PAYLOAD:
        if unsigned_ok:
            return sent
        raise ContentSHA256Mismatch(
            _SIGN_THE_PAYLOAD
            if s3_flavour
            else "UNSIGNED-PAYLOAD is not accepted here: sign the payload."
        )
    if sent.startswith("STREAMING-"):
        raise AuthorizationHeaderMalformed("Streaming (aws-chunked) payloads are not supported.")
    if sent.lower() != hashlib.sha256(body).hexdigest():
        raise ContentSHA256Mismatch()
    return sent


@functools.lru_cache(maxsize=256)
def _hmac_pads(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states after HMAC's inner and outer key blocks (RFC 2104), for a signing key."""
    block = key.ljust(64, b"\0")  # a signing key is 32 bytes: never longer than the block
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
    return inner, outer


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 from the key's cached pad states: half the cost of `hmac.new` per request,
    which sets the key up again each time."""
    inner, outer = _hmac_pads(key)
    inner = inner.copy()
    inner.update(message)
    outer = outer.copy()
    outer.update(inner.digest())
    digest: bytes = outer.digest()
    return digest


def _matches(key: bytes, sts_head: str, creq: str, provided: bytes) -> bool:
    sts = f"{sts_head}{_sha256_hex(creq)}"
    return hmac.compare_digest(_hmac_sha256(key, sts.encode("utf-8")), provided)


def verify_request(
    req: RequestView,
    *,
    lookup_secret: Callable[[str], str | None],
    region: str,
    services: frozenset[str],
    now: float,
    s3_flavour: bool,
    max_skew: float = 900.0,
    regions: Container[str] | None = None,
) -> Verified:
    """Check a request's SigV4 signature (header or presigned query); raise an ``AuthError``.

    See the module docstring for which failure raises which error.
    """
    headers = req.headers
    authorization = headers.get("authorization")
    pairs = _encoded_pairs(req.query) if req.query else []
    presigned = any(name in _PRESIGN_MARKERS for name, _ in pairs)

    expires: int | None = None
    date_header: str | None = None
    if authorization is not None:
        if presigned:
            raise AuthorizationHeaderMalformed(
                "Only one authentication mechanism is allowed: the Authorization header or "
                "X-Amz-* query parameters, not both."
            )
        credential, signed_str, sig_text = _parse_authorization(authorization)
        amz_date, request_time, date_header = _header_date(headers)
        cquery = _join_pairs(pairs)
    elif presigned:
        params: dict[str, str] = {}
        for name, value in pairs:
            if name in _PRESIGN_PARAMS:
                if name in params:
                    raise AuthorizationHeaderMalformed(f"The query parameter {name} is repeated.")
                params[name] = _decode_component(value)
        if len(params) != len(_PRESIGN_PARAMS):
            raise AuthorizationHeaderMalformed(
                "Query-string authentication requires the X-Amz-Algorithm, X-Amz-Credential, "
                "X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders and X-Amz-Signature parameters."
            )
        if params["X-Amz-Algorithm"] != ALGORITHM:
            raise AuthorizationHeaderMalformed("X-Amz-Algorithm must be AWS4-HMAC-SHA256.")
        credential = params["X-Amz-Credential"]
        signed_str = params["X-Amz-SignedHeaders"]
        sig_text = params["X-Amz-Signature"]
        amz_date = params["X-Amz-Date"]
        parsed_time = _parse_amz_date(amz_date)
        if parsed_time is None:
            raise AuthorizationHeaderMalformed(
                "X-Amz-Date must be in the ISO 8601 basic format YYYYMMDDTHHMMSSZ."
            )
        request_time = parsed_time
        expires_text = params["X-Amz-Expires"]
        if not (expires_text.isascii() and expires_text.isdigit()) or not (
            1 <= int(expires_text) <= MAX_PRESIGN_EXPIRES
        ):
            raise AuthorizationHeaderMalformed(
                f"X-Amz-Expires must be a number of seconds from 1 to {MAX_PRESIGN_EXPIRES}."
            )
        expires = int(expires_text)
        cquery = _join_pairs([pair for pair in pairs if pair[0] != "X-Amz-Signature"])
    else:
        raise MissingSecurityHeader()

    provided = _parse_signature(sig_text)
    access_key, scope_date, scope_region, service = _parse_credential(credential)
    if scope_region and scope_region != region and (regions is None or scope_region not in regions):
        expected = f"'{region}'" if regions is None else f"'{region}' or another region served"
        raise AuthorizationHeaderMalformed(
            f"The authorization header is malformed; the region '{scope_region}' is wrong; "
            f"expecting {expected}."
        )
    if service not in services:
        raise AuthorizationHeaderMalformed(
            f"The authorization header is malformed; the service '{service}' is not served here."
        )
    if scope_date != amz_date[:8]:
        raise AuthorizationHeaderMalformed(
            "The authorization header is malformed; the credential date does not match the "
            "request date."
        )
    signed = _parse_signed_headers(signed_str)
    must_sign = ["host"]
    if date_header is not None:
        must_sign.append(date_header)
    if "x-amz-target" in headers:
        must_sign.append("x-amz-target")
    for name in must_sign:
        if name not in signed:
            raise AuthorizationHeaderMalformed(
                f"The authorization header is malformed; the '{name}' header must be signed."
            )

    if expires is None:
        if abs(now - request_time) > max_skew:
            raise RequestTimeTooSkewed()
    elif now < request_time - max_skew:
        raise AccessDenied("Request is not valid yet")
    elif now > request_time + expires:
        raise AccessDenied("Request has expired")

    secret = lookup_secret(access_key)
    if secret is None:
        raise InvalidAccessKeyId()

    payload = _payload_hash(
        headers, req.body, s3_flavour=s3_flavour, presigned=presigned, method=req.method
    )
    head = f"{req.method}\n{canonical_uri(req.path, s3_flavour=s3_flavour)}\n"
    tail = f"\n{canonical_headers(headers, signed)}\n\n{signed_str}\n{payload}"
    key = signing_key(secret, scope_date, scope_region, service)
    sts_head = f"{ALGORITHM}\n{amz_date}\n{scope_date}/{scope_region}/{service}/{_TERMINATOR}\n"
    if not _matches(key, sts_head, head + cquery + tail, provided) and (
        # curl signs the query as typed: try it as received (header auth only, see docstring).
        presigned
        or req.query == cquery
        or not _matches(key, sts_head, head + req.query + tail, provided)
    ):
        raise SignatureDoesNotMatch()
    return Verified(access_key=access_key, region=scope_region or region, service=service)


# --------------------------------------------------------------------------------------------
# Signing (client)
# --------------------------------------------------------------------------------------------


def _host_of(parts: SplitResult) -> str:
    """The Host header for a URL as botocore derives it: lower-cased, no user info, and no port
    when it is the scheme's default."""
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{port}"
    return host


def sign_headers(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    service: str,
    now: float,
    s3_flavour: bool = True,
) -> dict[str, str]:
    """The headers to send: the given ones plus ``Host`` (if absent), ``X-Amz-Date``,
    ``Authorization`` and, with ``s3_flavour``, ``X-Amz-Content-Sha256`` (hex SHA-256 of the body).

    Signs ``host``, ``content-type`` and every ``x-amz-*`` header. ``url`` is the URL as it will be
    sent (path and query already percent-encoded).
    """
    parts = urlsplit(url)
    replaced = {"authorization", "x-amz-date"}
    if s3_flavour:
        replaced.add("x-amz-content-sha256")
    out: dict[str, str] = {}
    names: dict[str, str] = {}  # lower-case name -> name as given
    lower: dict[str, str] = {}
    for name, value in headers.items():
        lname = name.lower()
        if lname in replaced:
            continue
        if lname in names:
            del out[names[lname]]
        names[lname] = name
        out[name] = value
        lower[lname] = value
    if "host" not in lower:
        out["Host"] = lower["host"] = _host_of(parts)
    amz_date = format_amz_date(now)
    out["X-Amz-Date"] = lower["x-amz-date"] = amz_date
    if s3_flavour:
        payload = hashlib.sha256(body).hexdigest()
        out["X-Amz-Content-Sha256"] = lower["x-amz-content-sha256"] = payload
    else:
        payload = lower.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    signed = sorted(n for n in lower if n in ("host", "content-type") or n.startswith("x-amz-"))
    creq = canonical_request(
        method, parts.path or "/", parts.query, lower, signed, payload, s3_flavour=s3_flavour
    )
    scope = credential_scope(amz_date[:8], region, service)
    key = signing_key(secret_key, amz_date[:8], region, service)
    sig = signature(key, string_to_sign(amz_date, scope, creq))
    out["Authorization"] = authorization_header(access_key, scope, signed, sig)
    return out


def presign_url(
    method: str,
    url: str,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    service: str,
    now: float,
    expires: int,
    s3_flavour: bool = True,
    payload_hash: str | None = None,
) -> str:
    """A presigned URL (signs ``host`` only; payload ``UNSIGNED-PAYLOAD`` in the S3 flavour, the
    SHA-256 of an empty body otherwise), valid for ``expires`` seconds from ``now``.

    With ``payload_hash`` (the body's SHA-256, hex) the URL signs that hash and the
    ``x-amz-content-sha256`` header, which the request must then send: one body only."""
    if not 1 <= expires <= MAX_PRESIGN_EXPIRES:
        raise ValueError(f"expires must be from 1 to {MAX_PRESIGN_EXPIRES} seconds")
    parts = urlsplit(url)
    path = parts.path or "/"
    host = _host_of(parts)
    amz_date = format_amz_date(now)
    scope = credential_scope(amz_date[:8], region, service)
    params = (
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", f"{access_key}/{scope}"),
        ("X-Amz-Date", amz_date),
        ("X-Amz-Expires", str(expires)),
        ("X-Amz-SignedHeaders", "host" if payload_hash is None else "host;x-amz-content-sha256"),
    )
    added = "&".join(f"{name}={quote(value, safe='')}" for name, value in params)
    query = f"{parts.query}&{added}" if parts.query else added
    headers = {"host": host}
    if payload_hash is not None:
        headers["x-amz-content-sha256"] = payload_hash
        payload = payload_hash
    else:
        payload = UNSIGNED_PAYLOAD if s3_flavour else EMPTY_SHA256
    creq = canonical_request(
        method, path, query, headers, sorted(headers), payload, s3_flavour=s3_flavour
    )
    key = signing_key(secret_key, amz_date[:8], region, service)
    sig = signature(key, string_to_sign(amz_date, scope, creq))
    return urlunsplit((parts.scheme, parts.netloc, path, f"{query}&X-Amz-Signature={sig}", ""))
