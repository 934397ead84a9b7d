"""Tests of s3kms.auth.sigv4: the AWS test vectors, round trips, real client signers, negatives.

No server: every request is a RequestView built from what a client would send.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials
from minio.credentials.credentials import Credentials as MinioCredentials
from minio.signer import presign_v4, sign_v4_s3

from s3kms import errors
from s3kms.auth import sigv4
from s3kms.auth.sigv4 import Verified
from s3kms.request import RequestView

# ------------------------------------------------------------------------------------------------
# The AWS SigV4 test suite
# ------------------------------------------------------------------------------------------------

VECTOR_AK = "AKIDEXAMPLE"
VECTOR_SK = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
VECTOR_DATE = "20150830T123600Z"
VECTOR_NOW = float(calendar.timegm((2015, 8, 30, 12, 36, 0)))
VECTOR_SCOPE = "20150830/us-east-1/service/aws4_request"


# The AWS SigV4 test suite (Apache-2.0; LICENSE and NOTICE beside it), vendored for CI.
VECTOR_DIR = Path(__file__).parent / "data" / "aws4_testsuite"
VECTOR_CASES = sorted(p.parent for p in VECTOR_DIR.rglob("*.req")) if VECTOR_DIR.is_dir() else []


def _case_id(case: Path) -> str:
    return case.relative_to(VECTOR_DIR).as_posix()


def _read(case: Path, ext: str) -> str:
    return (case / f"{case.name}.{ext}").read_text(encoding="utf-8").replace("\r", "")


def _parse_http(text: str) -> tuple[str, str, dict[str, str], bytes]:
    """(method, request target, headers, body) of a vector's raw request.

    Header names are lower-cased; repeated headers are joined with "," and folded continuation
    lines with " ", as an HTTP server hands them to the application.
    """
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    method, _, rest = lines[0].partition(" ")
    target = rest.rpartition(" ")[0]  # the target may itself contain a space (get-space)
    fields: list[list[str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":  # obs-fold continuation line
            fields[-1][1] += " " + line.strip()
        else:
            name, _, value = line.partition(":")
            fields.append([name.strip().lower(), value.strip()])
    headers: dict[str, str] = {}
    for name, value in fields:
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return method, target, headers, body.encode("utf-8")


def _signed_headers_of(authorization: str) -> list[str]:
    return authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")


def test_vector_suite_is_complete() -> None:
    # 24 top-level cases, 8 under normalize-path/, 2 under post-sts-token/.
    assert len(VECTOR_CASES) == 34, f"vector suite not found or incomplete at {VECTOR_DIR}"
    assert sum(c.parent.name == "normalize-path" for c in VECTOR_CASES) == 8
    assert sum(c.parent.name == "post-sts-token" for c in VECTOR_CASES) == 2


@pytest.mark.parametrize("case", VECTOR_CASES, ids=_case_id)
def test_vector_canonical_request_sts_and_authorization(case: Path) -> None:
    method, target, headers, body = _parse_http(_read(case, "req"))
    path, _, query = target.partition("?")
    authz = _read(case, "authz")
    # get-vanilla-with-session-token's .req omits the X-Amz-Security-Token header that its .creq
    # and .sreq carry: take it from the .sreq (the only case where this adds anything).
    _, _, sreq_headers, _ = _parse_http(_read(case, "sreq"))
    extra = {
        n: v for n, v in sreq_headers.items() if n in _signed_headers_of(authz) and n not in headers
    }
    assert not extra or case.name == "get-vanilla-with-session-token"
    headers.update(extra)
    signed = sorted(headers)

    creq = sigv4.canonical_request(
        method, path, query, headers, signed, hashlib.sha256(body).hexdigest(), s3_flavour=False
    )
    assert creq == _read(case, "creq")
    sts = sigv4.string_to_sign(VECTOR_DATE, VECTOR_SCOPE, creq)
    assert sts == _read(case, "sts")
    key = sigv4.signing_key(VECTOR_SK, "20150830", "us-east-1", "service")
    sig = sigv4.signature(key, sts)
    assert sigv4.authorization_header(VECTOR_AK, VECTOR_SCOPE, signed, sig) == authz

    # The client-side signer gives the same header wherever it signs the same header set
    # (it signs host, content-type and x-amz-* only).
    if all(n in ("host", "content-type") or n.startswith("x-amz-") for n in headers):
        out = sigv4.sign_headers(
            method,
            f"https://example.amazonaws.com{target}",
            {n: v for n, v in headers.items() if n != "host"},
            body,
            access_key=VECTOR_AK,
            secret_key=VECTOR_SK,
            region="us-east-1",
            service="service",
            now=VECTOR_NOW,
            s3_flavour=False,
        )
        assert out["Authorization"] == authz


# Cases a real HTTP stack cannot carry as written.
VECTOR_VERIFY_SKIPS = {
    "get-space": (
        "the request line has a raw space in the path ('/example space/'); HTTP/1.1 cannot carry "
        "it, and its percent-encoded form is a different request under the generic double-encoding "
        "rule (canonical '/example%2520space/')"
    ),
}


@pytest.mark.parametrize("case", VECTOR_CASES, ids=_case_id)
def test_vector_signed_request_verifies(case: Path) -> None:
    if case.name in VECTOR_VERIFY_SKIPS:
        pytest.skip(VECTOR_VERIFY_SKIPS[case.name])
    method, target, headers, body = _parse_http(_read(case, "sreq"))
    path, _, query = target.partition("?")
    authz = _read(case, "authz")

    def verify(hdrs: Mapping[str, str]) -> Verified:
        return sigv4.verify_request(
            RequestView(method, path, query, hdrs, body),
            lookup_secret={VECTOR_AK: VECTOR_SK}.get,
            region="us-east-1",
            services=frozenset({"service"}),
            now=VECTOR_NOW,
            s3_flavour=False,
        )

    if case.name == "get-vanilla-with-session-token":
        # Upstream error: this .sreq carries get-vanilla's signature, not the one its own
        # .creq/.sts/.authz give (checked above). Rejected as such; verified with the right one.
        assert headers["authorization"] != authz
        with pytest.raises(errors.SignatureDoesNotMatch):
            verify(headers)
        headers["authorization"] = authz
    assert headers["authorization"] == authz
    assert verify(headers) == Verified("AKIDEXAMPLE", "us-east-1", "service")


# ------------------------------------------------------------------------------------------------
# Helpers for the rest
# ------------------------------------------------------------------------------------------------

AK = "s3kms-admin"
SK = "s3kms-secret-key-0123456789abcdefghij"
SECRETS = {AK: SK}
REGION = "us-east-1"
T = 1_700_000_000.0  # 2023-11-14T22:13:20Z
AMZ_T = "20231114T221320Z"
BASE = "http://127.0.0.1:7373"
ADMIN_URL = f"{BASE}/minio/admin/v3/kms/key/create?key-id=my-key"
KMS_URL = "https://kms.us-east-1.amazonaws.com/"
KMS_HEADERS = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.Encrypt"}
BODY = b'{"KeyId": "my-key", "Plaintext": "aGVsbG8="}'


def view(method: str, url: str, headers: Mapping[str, str], body: bytes = b"") -> RequestView:
    """What the server sees: path and query raw, header names lower-cased, a Host header."""
    parts = urlsplit(url)
    hdrs = {k.lower(): v for k, v in headers.items()}
    hdrs.setdefault("host", parts.netloc)
    return RequestView(method, parts.path or "/", parts.query, hdrs, body)


def verify(
    req: RequestView,
    *,
    now: float = T,
    s3: bool = True,
    region: str = REGION,
    services: frozenset[str] = frozenset({"s3", "kms"}),
) -> Verified:
    return sigv4.verify_request(
        req, lookup_secret=SECRETS.get, region=region, services=services, now=now, s3_flavour=s3
    )


def expect(cls: type[errors.AuthError], req: RequestView, **kwargs: object) -> errors.AuthError:
    """verify() must raise exactly ``cls`` (not a sibling, not a subclass)."""
    with pytest.raises(errors.AuthError) as info:
        verify(req, **kwargs)  # type: ignore[arg-type]
    assert type(info.value) is cls, f"{type(info.value).__name__}: {info.value}"
    assert SK not in str(info.value)
    return info.value


def signed_admin(
    body: bytes = BODY, *, url: str = ADMIN_URL, region: str = REGION, now: float = T
) -> dict[str, str]:
    return sigv4.sign_headers(
        "POST",
        url,
        {"Content-Type": "application/json"},
        body,
        access_key=AK,
        secret_key=SK,
        region=region,
        service="s3",
        now=now,
    )


def signed_kms(body: bytes = BODY, *, now: float = T) -> dict[str, str]:
    return sigv4.sign_headers(
        "POST",
        KMS_URL,
        KMS_HEADERS,
        body,
        access_key=AK,
        secret_key=SK,
        region=REGION,
        service="kms",
        now=now,
        s3_flavour=False,
    )


def hand_signed(
    method: str,
    url: str,
    headers: dict[str, str],
    signed: list[str],
    body: bytes = b"",
    *,
    s3: bool = True,
    scope_date: str | None = None,
    region: str = REGION,
    service: str = "s3",
    payload: str | None = None,
) -> RequestView:
    """A request signed with the building blocks, for signatures sign_headers will not make
    (unusual SignedHeaders, a scope date that differs from X-Amz-Date, ...). ``headers`` are
    lower-cased and include x-amz-date."""
    req = view(method, url, headers, body)
    amz_date = headers.get("x-amz-date", AMZ_T)
    date = scope_date or amz_date[:8]
    payload = payload or headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    creq = sigv4.canonical_request(
        method, req.path, req.query, req.headers, signed, payload, s3_flavour=s3
    )
    scope = sigv4.credential_scope(date, region, service)
    sig = sigv4.signature(
        sigv4.signing_key(SK, date, region, service), sigv4.string_to_sign(amz_date, scope, creq)
    )
    hdrs = dict(req.headers)
    hdrs["authorization"] = sigv4.authorization_header(AK, scope, signed, sig)
    return RequestView(req.method, req.path, req.query, hdrs, body)


def replace_header(req: RequestView, name: str, value: str | None) -> RequestView:
    hdrs = {k: v for k, v in req.headers.items() if k != name}
    if value is not None:
        hdrs[name] = value
    return RequestView(req.method, req.path, req.query, hdrs, req.body)


@pytest.fixture
def boto_now(monkeypatch: pytest.MonkeyPatch) -> Iterator[float]:
    """Pin botocore's signing clock to T."""
    fixed = dt.datetime.fromtimestamp(T, dt.UTC).replace(tzinfo=None)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda remove_tzinfo=True: fixed)
    yield T


def boto_sign(
    signer: botocore.auth.SigV4Auth,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes = b"",
    *,
    context: dict[str, object] | None = None,
) -> AWSRequest:
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    if context:
        request.context.update(context)
    signer.add_auth(request)
    return request


def boto_view(request: AWSRequest, body: bytes = b"") -> RequestView:
    # botocore leaves Host to the HTTP client, which sends it without a default port.
    parts = urlsplit(str(request.url))
    hdrs = {k.lower(): v for k, v in request.headers.items()}
    hdrs.setdefault("host", parts.netloc)  # the test URLs carry no default port
    return RequestView(str(request.method), parts.path or "/", parts.query, hdrs, body)


BOTO_CREDS = BotoCredentials(AK, SK)


# ------------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------------


def test_roundtrip_s3_flavour() -> None:
    headers = signed_admin()
    assert headers["X-Amz-Content-Sha256"] == hashlib.sha256(BODY).hexdigest()
    assert headers["X-Amz-Date"] == AMZ_T
    assert headers["Host"] == "127.0.0.1:7373"
    assert (
        "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date,"
        in (headers["Authorization"])
    )
    assert verify(view("POST", ADMIN_URL, headers, BODY)) == Verified(AK, REGION, "s3")


def test_roundtrip_generic_flavour() -> None:
    headers = signed_kms()
    assert "X-Amz-Content-Sha256" not in headers
    assert "SignedHeaders=content-type;host;x-amz-date;x-amz-target," in headers["Authorization"]
    req = view("POST", KMS_URL, headers, BODY)
    assert req.headers["host"] == "kms.us-east-1.amazonaws.com"
    assert verify(req, s3=False) == Verified(AK, REGION, "kms")


@pytest.mark.parametrize("s3", [True, False], ids=["s3", "generic"])
def test_roundtrip_awkward_query(s3: bool) -> None:
    url = f"{BASE}/minio/admin/v3/kms/key/list?pattern=a%2Fb%20c&empty=&flag&z=%7E~&a=2&a=1"
    headers = sigv4.sign_headers(
        "GET",
        url,
        {},
        b"",
        access_key=AK,
        secret_key=SK,
        region=REGION,
        service="s3",
        now=T,
        s3_flavour=s3,
    )
    assert verify(view("GET", url, headers), s3=s3).service == "s3"


def test_generic_path_is_normalised_and_encoded_again() -> None:
    url = f"{BASE}/a/./b//c/../d%20e"
    assert sigv4.canonical_uri("/a/./b//c/../d%20e", s3_flavour=False) == "/a/b/d%2520e"
    headers = sigv4.sign_headers(
        "GET",
        url,
        {},
        b"",
        access_key=AK,
        secret_key=SK,
        region=REGION,
        service="kms",
        now=T,
        s3_flavour=False,
    )
    assert verify(view("GET", url, headers), s3=False).service == "kms"
    # The same signature covers the normalised path, as AWS's generic rules say.
    assert verify(view("GET", f"{BASE}/a/b/d%20e", headers), s3=False).service == "kms"


def test_s3_path_is_used_as_received() -> None:
    url = f"{BASE}/bucket/a//b/../c%2Fd"
    assert sigv4.canonical_uri("/bucket/a//b/../c%2Fd", s3_flavour=True) == "/bucket/a//b/../c%2Fd"
    headers = sigv4.sign_headers(
        "GET", url, {}, b"", access_key=AK, secret_key=SK, region=REGION, service="s3", now=T
    )
    assert verify(view("GET", url, headers)).service == "s3"
    expect(errors.SignatureDoesNotMatch, view("GET", f"{BASE}/bucket/a/c%2Fd", headers))


@pytest.mark.parametrize("s3", [True, False], ids=["s3", "generic"])
def test_roundtrip_presign(s3: bool) -> None:
    url = sigv4.presign_url(
        "GET",
        f"{BASE}/minio/admin/v3/kms/key/status?key-id=my%20key",
        access_key=AK,
        secret_key=SK,
        region=REGION,
        service="s3",
        now=T,
        expires=600,
        s3_flavour=s3,
    )
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["X-Amz-Credential"] == f"{AK}/20231114/{REGION}/s3/aws4_request"
    assert query["X-Amz-SignedHeaders"] == "host"
    assert verify(view("GET", url, {}), now=T + 599, s3=s3) == Verified(AK, REGION, "s3")


def test_presign_of_a_change_must_sign_its_payload() -> None:
    url = sigv4.presign_url(
        "PUT",
        f"{BASE}/b/o",
        access_key=AK,
        secret_key=SK,
        region=REGION,
        service="s3",
        now=T,
        expires=60,
    )
    # A presigned URL signs UNSIGNED-PAYLOAD: for anything but a read that would let whoever holds
    # the URL send any body with it, so the body's hash must come along (and match).
    expect(errors.ContentSHA256Mismatch, view("PUT", url, {}, b"data"))
    unsigned = {"x-amz-content-sha256": sigv4.UNSIGNED_PAYLOAD}
    expect(errors.ContentSHA256Mismatch, view("PUT", url, unsigned, b"data"))
    bad = view("PUT", url, {"x-amz-content-sha256": hashlib.sha256(b"other").hexdigest()}, b"data")
    expect(errors.ContentSHA256Mismatch, bad)


def test_presign_with_the_payload_hash_binds_the_body() -> None:
    body = b'{"Version": "2012-10-17"}'
    digest = hashlib.sha256(body).hexdigest()
    url = sigv4.presign_url(
        "POST", ADMIN_URL, access_key=AK, secret_key=SK, region=REGION, service="s3", now=T,
        expires=60, payload_hash=digest,
    )  # fmt: skip
    assert verify(view("POST", url, {"x-amz-content-sha256": digest}, body)).service == "s3"
    # The same URL with another body: its hash is not the signed one.
    other = b'{"Version": "2008-10-17"}'
    other_hash = {"x-amz-content-sha256": hashlib.sha256(other).hexdigest()}
    expect(errors.SignatureDoesNotMatch, view("POST", url, other_hash, other))
    expect(errors.ContentSHA256Mismatch, view("POST", url, {"x-amz-content-sha256": digest}, other))


def test_presigned_get_needs_no_payload_hash() -> None:
    url = sigv4.presign_url(
        "GET", f"{BASE}/b/o", access_key=AK, secret_key=SK, region=REGION, service="s3", now=T,
        expires=60,
    )  # fmt: skip
    assert verify(view("GET", url, {}, b"")).service == "s3"


def test_empty_region_accepted() -> None:
    # minio-py's MinioAdmin signs with region "" (scope YYYYMMDD//s3/aws4_request).
    headers = signed_admin(region="")
    assert f"Credential={AK}/20231114//s3/aws4_request," in headers["Authorization"]
    assert verify(view("POST", ADMIN_URL, headers, BODY)) == Verified(AK, REGION, "s3")


def test_signing_key_is_memoised() -> None:
    sigv4.signing_key.cache_clear()
    for _ in range(3):
        verify(view("POST", ADMIN_URL, signed_admin(), BODY))
    info = sigv4.signing_key.cache_info()
    # 3 signings + 3 verifications of the same (secret, day, region, service): one derivation.
    assert info.misses == 1 and info.hits == 5


# ------------------------------------------------------------------------------------------------
# Real clients' signers
# ------------------------------------------------------------------------------------------------


def test_botocore_kms_request_verifies(boto_now: float) -> None:
    request = boto_sign(
        botocore.auth.SigV4Auth(BOTO_CREDS, "kms", REGION), "POST", KMS_URL, KMS_HEADERS, BODY
    )
    assert "X-Amz-Content-SHA256" not in request.headers
    assert verify(boto_view(request, BODY), s3=False) == Verified(AK, REGION, "kms")


def test_botocore_s3_request_verifies(boto_now: float) -> None:
    url = f"{BASE}/minio/admin/v3/kms/key/status?key-id=my%2Fkey&x=%2A"
    request = boto_sign(botocore.auth.S3SigV4Auth(BOTO_CREDS, "s3", ""), "GET", url, {})
    assert verify(boto_view(request)) == Verified(AK, REGION, "s3")


def test_botocore_unsigned_payload_s3_only(boto_now: float) -> None:
    # botocore's S3 signer with payload signing disabled sends X-Amz-Content-SHA256: UNSIGNED-PAYLOAD.
    request = boto_sign(
        botocore.auth.S3SigV4Auth(BOTO_CREDS, "s3", REGION),
        "PUT",
        f"{BASE}/b/o",
        {},
        BODY,
        context={"client_config": Config(s3={"payload_signing_enabled": False})},
    )
    assert request.headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    assert verify(boto_view(request, b"any body at all")).service == "s3"
    # The generic (KMS) flavour always authenticates the body.
    request = boto_sign(
        botocore.auth.SigV4Auth(BOTO_CREDS, "kms", REGION),
        "POST",
        KMS_URL,
        {**KMS_HEADERS, "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"},
        BODY,
    )
    expect(errors.ContentSHA256Mismatch, boto_view(request, BODY), s3=False)


def test_botocore_date_header_fallback(boto_now: float) -> None:
    # With a Date header present botocore signs it instead of adding X-Amz-Date.
    request = boto_sign(
        botocore.auth.SigV4Auth(BOTO_CREDS, "kms", REGION),
        "POST",
        KMS_URL,
        {**KMS_HEADERS, "Date": "Tue, 14 Nov 2023 22:13:20 GMT"},
        BODY,
    )
    assert "X-Amz-Date" not in request.headers
    assert "date;host" in str(request.headers["Authorization"])
    assert verify(boto_view(request, BODY), s3=False).service == "kms"
    expect(errors.RequestTimeTooSkewed, boto_view(request, BODY), s3=False, now=T + 901)


def test_botocore_presigned_url_verifies(boto_now: float) -> None:
    url = f"{BASE}/minio/admin/v3/kms/key/status?key-id=my-key"
    request = boto_sign(
        botocore.auth.S3SigV4QueryAuth(BOTO_CREDS, "s3", REGION, expires=300), "GET", url, {}
    )
    assert "X-Amz-Signature=" in str(request.url)
    assert verify(boto_view(request), now=T + 300).service == "s3"
    assert (
        expect(errors.AccessDenied, boto_view(request), now=T + 301).message
        == "Request has expired"
    )


@pytest.mark.parametrize("s3", [True, False], ids=["s3", "generic"])
def test_sign_headers_matches_botocore(boto_now: float, s3: bool) -> None:
    url = f"{BASE}/minio/admin/v3/kms/key/list?pattern=my-%2A&z=1"
    cls = botocore.auth.S3SigV4Auth if s3 else botocore.auth.SigV4Auth
    request = boto_sign(cls(BOTO_CREDS, "s3", REGION), "POST", url, KMS_HEADERS, BODY)
    ours = sigv4.sign_headers(
        "POST",
        url,
        KMS_HEADERS,
        BODY,
        access_key=AK,
        secret_key=SK,
        region=REGION,
        service="s3",
        now=T,
        s3_flavour=s3,
    )
    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["X-Amz-Date"] == request.headers["X-Amz-Date"]
    if s3:
        assert ours["X-Amz-Content-Sha256"] == request.headers["X-Amz-Content-SHA256"]


def test_presign_url_matches_botocore(boto_now: float) -> None:
    url = f"{BASE}/minio/admin/v3/kms/key/status?key-id=my-key"
    request = boto_sign(
        botocore.auth.S3SigV4QueryAuth(BOTO_CREDS, "s3", REGION, expires=300), "GET", url, {}
    )
    ours = sigv4.presign_url(
        "GET", url, access_key=AK, secret_key=SK, region=REGION, service="s3", now=T, expires=300
    )
    assert ours == request.url


def test_minio_admin_signer_verifies() -> None:
    # What minio-py's MinioAdmin._url_open sends: region "", content length signed too.
    url = urlsplit(ADMIN_URL)
    date = dt.datetime.fromtimestamp(T, dt.UTC)
    sha = hashlib.sha256(BODY).hexdigest()
    headers = sign_v4_s3(
        method="POST",
        url=url,
        region="",
        headers={
            "Host": url.netloc,
            "User-Agent": "MinIO (Linux; x86_64) minio-py/7.2",
            "x-amz-date": AMZ_T,
            "x-amz-content-sha256": sha,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(BODY)),
        },
        credentials=MinioCredentials(AK, SK),
        content_sha256=sha,
        date=date,
    )
    sent = {k: str(v) for k, v in headers.items()}
    assert (
        "SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date,"
        in sent["Authorization"]
    )
    assert verify(view("POST", ADMIN_URL, sent, BODY)) == Verified(AK, REGION, "s3")


def test_minio_presigned_url_verifies() -> None:
    date = dt.datetime.fromtimestamp(T, dt.UTC)
    url = presign_v4(
        method="GET",
        url=urlsplit(f"{BASE}/minio/admin/v3/kms/key/status?key-id=my-key"),
        region="",
        credentials=MinioCredentials(AK, SK),
        date=date,
        expires=120,
    )
    req = view("GET", url.geturl(), {})
    assert verify(req, now=T + 60).service == "s3"
    expect(errors.AccessDenied, req, now=T + 121)


# ------------------------------------------------------------------------------------------------
# curl 7.88: the query signed as typed
# ------------------------------------------------------------------------------------------------


def curl_signed(query: str, *, sent_query: str | None = None) -> RequestView:
    """What curl --aws-sigv4 "aws:amz:us-east-1:s3" sends for ?<query>: host;x-amz-date signed,
    no X-Amz-Content-Sha256, the query in the canonical request exactly as typed."""
    path = "/minio/admin/v3/kms/key/list"
    host = "127.0.0.1:7373"
    creq = (
        f"GET\n{path}\n{query}\nhost:{host}\nx-amz-date:{AMZ_T}\n\nhost;x-amz-date\n"
        f"{sigv4.EMPTY_SHA256}"
    )
    scope = sigv4.credential_scope(AMZ_T[:8], REGION, "s3")
    sig = sigv4.signature(
        sigv4.signing_key(SK, AMZ_T[:8], REGION, "s3"), sigv4.string_to_sign(AMZ_T, scope, creq)
    )
    headers = {
        "host": host,
        "x-amz-date": AMZ_T,
        "authorization": sigv4.authorization_header(AK, scope, ["host", "x-amz-date"], sig),
    }
    return RequestView("GET", path, query if sent_query is None else sent_query, headers, b"")


def test_curl_raw_query_accepted() -> None:
    assert sigv4.canonical_query("pattern=my-*") == "pattern=my-%2A"  # the standard form differs
    assert verify(curl_signed("pattern=my-*")) == Verified(AK, REGION, "s3")


def test_curl_raw_query_still_covers_the_query() -> None:
    expect(errors.SignatureDoesNotMatch, curl_signed("pattern=my-*", sent_query="pattern=other-*"))


# ------------------------------------------------------------------------------------------------
# Negative cases: each asserts the exact error class
# ------------------------------------------------------------------------------------------------


def test_wrong_secret() -> None:
    headers = sigv4.sign_headers(
        "POST",
        ADMIN_URL,
        {},
        BODY,
        access_key=AK,
        secret_key=SK + "x",
        region=REGION,
        service="s3",
        now=T,
    )
    err = expect(errors.SignatureDoesNotMatch, view("POST", ADMIN_URL, headers, BODY))
    # Neither the secret nor the signature the server expected appear in the message.
    good = signed_admin()["Authorization"].rsplit("Signature=", 1)[1]
    assert good not in str(err) and SK not in str(err)


def test_unknown_access_key() -> None:
    headers = sigv4.sign_headers(
        "POST",
        ADMIN_URL,
        {},
        BODY,
        access_key="nobody",
        secret_key=SK,
        region=REGION,
        service="s3",
        now=T,
    )
    expect(errors.InvalidAccessKeyId, view("POST", ADMIN_URL, headers, BODY))


@pytest.mark.parametrize("offset", [16 * 60, -16 * 60])
def test_date_sixteen_minutes_off(offset: int) -> None:
    req = view("POST", ADMIN_URL, signed_admin(), BODY)
    assert verify(req, now=T + offset * 14 / 16).service == "s3"  # 14 minutes: fine
    expect(errors.RequestTimeTooSkewed, req, now=T + offset)


def test_body_changed_with_payload_hash_header() -> None:
    headers = signed_admin()
    expect(errors.ContentSHA256Mismatch, view("POST", ADMIN_URL, headers, BODY + b" "))


@pytest.mark.parametrize("s3", [True, False], ids=["s3-curl-style", "generic"])
def test_body_changed_without_payload_hash_header(s3: bool) -> None:
    headers = signed_kms()
    assert "X-Amz-Content-Sha256" not in headers
    expect(errors.SignatureDoesNotMatch, view("POST", KMS_URL, headers, BODY + b" "), s3=s3)


def test_header_dropped_from_signed_headers() -> None:
    headers = signed_admin()
    auth = headers["Authorization"]
    assert "SignedHeaders=content-type;host;" in auth
    headers["Authorization"] = auth.replace("SignedHeaders=content-type;", "SignedHeaders=")
    expect(errors.SignatureDoesNotMatch, view("POST", ADMIN_URL, headers, BODY))


@pytest.mark.parametrize(
    ("name", "value"),
    [("content-type", "text/plain"), ("x-amz-target", "TrentService.Decrypt")],
)
def test_signed_header_altered(name: str, value: str) -> None:
    req = view("POST", KMS_URL, signed_kms(), BODY)
    expect(errors.SignatureDoesNotMatch, replace_header(req, name, value), s3=False)


def test_signed_header_missing_from_request() -> None:
    req = view("POST", KMS_URL, signed_kms(), BODY)
    expect(errors.SignatureDoesNotMatch, replace_header(req, "content-type", None), s3=False)


def test_host_must_be_signed() -> None:
    headers = {"host": "127.0.0.1:7373", "x-amz-date": AMZ_T}
    req = hand_signed("GET", f"{BASE}/x", headers, ["x-amz-date"])
    expect(errors.AuthorizationHeaderMalformed, req)


def test_x_amz_date_must_be_signed() -> None:
    headers = {"host": "127.0.0.1:7373", "x-amz-date": AMZ_T}
    req = hand_signed("GET", f"{BASE}/x", headers, ["host"])
    expect(errors.AuthorizationHeaderMalformed, req)


def test_x_amz_target_must_be_signed_when_sent() -> None:
    headers = {"host": "kms.example", "x-amz-date": AMZ_T, "x-amz-target": "TrentService.Decrypt"}
    req = hand_signed("POST", KMS_URL, headers, ["host", "x-amz-date"], BODY, s3=False)
    expect(errors.AuthorizationHeaderMalformed, req, s3=False)
    # ... and an unsigned header that is not x-amz-target is simply not covered (as on AWS).
    headers = {"host": "kms.example", "x-amz-date": AMZ_T, "x-amz-security-token": "t"}
    req = hand_signed(
        "POST", KMS_URL, headers, ["host", "x-amz-date"], BODY, s3=False, service="kms"
    )
    assert verify(req, s3=False).service == "kms"


def test_date_missing() -> None:
    req = replace_header(view("POST", ADMIN_URL, signed_admin(), BODY), "x-amz-date", None)
    expect(errors.MissingSecurityHeader, req)


def test_date_garbled() -> None:
    req = view("POST", ADMIN_URL, signed_admin(), BODY)
    expect(errors.AuthorizationHeaderMalformed, replace_header(req, "x-amz-date", "20231114"))
    expect(errors.AuthorizationHeaderMalformed, replace_header(req, "x-amz-date", AMZ_T[:-1]))
    expect(
        errors.AuthorizationHeaderMalformed, replace_header(req, "x-amz-date", "20231314T221320Z")
    )


def test_presigned_url_expired() -> None:
    url = sigv4.presign_url(
        "GET",
        f"{BASE}/x",
        access_key=AK,
        secret_key=SK,
        region=REGION,
        service="s3",
        now=T,
        expires=60,
    )
    req = view("GET", url, {})
    assert verify(req, now=T + 60).service == "s3"
    assert expect(errors.AccessDenied, req, now=T + 61).message == "Request has expired"
    # Not valid before X-Amz-Date minus the allowed skew.
    assert verify(req, now=T - 900).service == "s3"
    expect(errors.AccessDenied, req, now=T - 901)


@pytest.mark.parametrize("expires", ["0", "604801", "-5", "ten"])
def test_presigned_expires_out_of_range(expires: str) -> None:
    url = sigv4.presign_url(
        "GET",
        f"{BASE}/x",
        access_key=AK,
        secret_key=SK,
        region=REGION,
        service="s3",
        now=T,
        expires=60,
    )
    expect(
        errors.AuthorizationHeaderMalformed,
        view("GET", url.replace("Expires=60", f"Expires={expires}"), {}),
    )


def test_presigned_query_tampered() -> None:
    url = sigv4.presign_url(
        "GET",
        f"{BASE}/x?key-id=a",
        access_key=AK,
        secret_key=SK,
        region=REGION,
        service="s3",
        now=T,
        expires=60,
    )
    expect(errors.SignatureDoesNotMatch, view("GET", url.replace("key-id=a", "key-id=b"), {}))


def test_presigned_missing_parameter() -> None:
    url = sigv4.presign_url(
        "GET",
        f"{BASE}/x",
        access_key=AK,
        secret_key=SK,
        region=REGION,
        service="s3",
        now=T,
        expires=60,
    )
    url = url.replace("&X-Amz-SignedHeaders=host", "")
    expect(errors.AuthorizationHeaderMalformed, view("GET", url, {}))


def test_header_and_presigned_together() -> None:
    url = sigv4.presign_url(
        "GET",
        f"{BASE}/x",
        access_key=AK,
        secret_key=SK,
        region=REGION,
        service="s3",
        now=T,
        expires=60,
    )
    headers = sigv4.sign_headers(
        "GET", url, {}, b"", access_key=AK, secret_key=SK, region=REGION, service="s3", now=T
    )
    expect(errors.AuthorizationHeaderMalformed, view("GET", url, headers))


def test_wrong_service() -> None:
    req = view("POST", KMS_URL, signed_kms(), BODY)
    assert verify(req, s3=False, services=frozenset({"kms"})).service == "kms"
    expect(errors.AuthorizationHeaderMalformed, req, s3=False, services=frozenset({"s3"}))


def test_wrong_region() -> None:
    req = view("POST", ADMIN_URL, signed_admin(region="eu-west-1"), BODY)
    assert verify(req, region="eu-west-1").region == "eu-west-1"
    expect(errors.AuthorizationHeaderMalformed, req, region=REGION)


def test_scope_date_differs_from_x_amz_date_day() -> None:
    # Validly signed, but the credential scope names the day before X-Amz-Date.
    headers = {"host": "127.0.0.1:7373", "x-amz-date": AMZ_T}
    ok = hand_signed("GET", f"{BASE}/x", headers, ["host", "x-amz-date"])
    assert verify(ok).service == "s3"
    req = hand_signed("GET", f"{BASE}/x", headers, ["host", "x-amz-date"], scope_date="20231113")
    expect(errors.AuthorizationHeaderMalformed, req)


GOOD_AUTH = signed_admin()["Authorization"]
GOOD_SIG = GOOD_AUTH.rsplit("=", 1)[1]


@pytest.mark.parametrize(
    "authorization",
    [
        "garbage",
        "",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential",
        GOOD_AUTH.replace(", Signature=", ", Sig="),
        GOOD_AUTH.replace("SignedHeaders=", "Signed="),
        GOOD_AUTH.replace("Credential=", "Cred="),
        GOOD_AUTH + ", Signature=" + GOOD_SIG,  # repeated field
        GOOD_AUTH.replace("/aws4_request", "/aws5_request"),
        GOOD_AUTH.replace(f"Credential={AK}/20231114/{REGION}/", f"Credential={AK}/20231114/"),
        GOOD_AUTH.replace(f"Credential={AK}/", "Credential=/"),
        GOOD_AUTH.replace("SignedHeaders=content-type;", "SignedHeaders=content-type;;"),
        GOOD_AUTH[:-1],  # 63 hex digits
        GOOD_AUTH[:-1] + "g",  # not hex
        GOOD_AUTH[:-1] + "\u00e9",  # not ASCII
        f"AWS {AK}:c2lnbmF0dXJl",  # SigV2
        GOOD_AUTH.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"),
        GOOD_AUTH.replace("AWS4-HMAC-SHA256", "aws4-hmac-sha256"),
    ],
)
def test_malformed_authorization_header(authorization: str) -> None:
    req = replace_header(
        view("POST", ADMIN_URL, signed_admin(), BODY), "authorization", authorization
    )
    expect(errors.AuthorizationHeaderMalformed, req)


def test_authorization_header_spacing_tolerated() -> None:
    auth = GOOD_AUTH.replace(", ", ",").replace(" Credential", "   Credential")
    req = replace_header(view("POST", ADMIN_URL, signed_admin(), BODY), "authorization", auth)
    assert verify(req).service == "s3"


def test_missing_auth() -> None:
    expect(errors.MissingSecurityHeader, view("POST", ADMIN_URL, {"x-amz-date": AMZ_T}, BODY))


def test_streaming_payload_refused() -> None:
    headers = {
        "host": "127.0.0.1:7373",
        "x-amz-date": AMZ_T,
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    }
    req = hand_signed("PUT", f"{BASE}/b/o", headers, sorted(headers), b"chunked")
    expect(errors.AuthorizationHeaderMalformed, req)
