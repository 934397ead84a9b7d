"""Fuzzing through a real server: every AWS KMS operation of botocore's model and every admin route.

Hypothesis builds requests from the model's input shapes (right and wrong types, edge lengths, lone
surrogates, huge numbers, deep nesting) and from raw bytes; each is signed as root, so it reaches the
handlers rather than stopping at authentication. Every answer must be a 4xx in the surface's error
envelope or a success: never a 5xx, a traceback or a hang (each request has a client timeout).
Afterwards the server still serves a normal request. Example counts are bounded for CI.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import botocore.session
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3kms.auth import sigv4
from s3kms.client import Client

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsThread, thread_settings

ADMIN = "/rustfs/admin/v3/kms"
MODEL = botocore.session.get_session().get_service_model("kms")
# Answered by the connection layer before any route (a long URL, say): no API envelope there.
CONNECTION_LIMITS = {408, 413, 414, 431}
# The fuzzer may do anything to these; "canary" it never names. One key of each kind of spec, so
# hostile input reaches every kind of primitive (the admin API names keys: spec, usage).
TYPED_KEYS = {
    "fuzz-rsa": ("RSA_2048", "ENCRYPT_DECRYPT"),
    "fuzz-rsa-sign": ("RSA_2048", "SIGN_VERIFY"),
    "fuzz-ecc": ("ECC_NIST_P256", "SIGN_VERIFY"),
    "fuzz-ecdh": ("ECC_NIST_P384", "KEY_AGREEMENT"),
    "fuzz-ed25519": ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY"),
    "fuzz-mldsa": ("ML_DSA_44", "SIGN_VERIFY"),
    "fuzz-mlkem": ("ML_KEM_768", "ENCAPSULATE_DECAPSULATE"),
    "fuzz-hmac": ("HMAC_256", "GENERATE_VERIFY_MAC"),
}
KEYS = ["fuzz-1", "fuzz-2", *TYPED_KEYS]
FUZZ = settings(
    max_examples=60,  # per operation or route: about 4,000 requests in all
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),  # big inputs are the point, not a smell
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    server = KmsThread(thread_settings(tmp_path_factory.mktemp("fuzz") / "data")).start()
    with Client(server.url, ROOT_USER, ROOT_PASSWORD) as root:
        for name in ["fuzz-1", "fuzz-2", "canary"]:
            root.create_key(name)
        for name, (spec, usage) in TYPED_KEYS.items():
            root.create_key(name, spec=spec, usage=usage)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20) as client:
        yield client


@pytest.fixture(scope="module")
def ciphertexts(srv: KmsThread) -> list[str]:
    with Client(srv.url, ROOT_USER, ROOT_PASSWORD) as root:
        made = root.encrypt("fuzz-1", b"fuzzed plaintext")
    return [base64.b64encode(made).decode()]


def still_serves(srv: KmsThread, http: httpx.Client) -> None:
    assert http.get(srv.url + "/health/live").status_code == 200
    with Client(srv.url, ROOT_USER, ROOT_PASSWORD) as root:
        data_key = root.generate_data_key("canary")
        assert root.decrypt(data_key.ciphertext) == data_key.plaintext


# -- values ---------------------------------------------------------------------------------------

surrogates = st.builds(
    lambda head, cp, tail: f"{head}{chr(cp)}{tail}",
    st.text(max_size=5),
    st.integers(0xD800, 0xDFFF),
    st.text(max_size=5),
)  # a lone surrogate: valid as a JSON escape, not encodable as UTF-8
nasty_text = st.one_of(
    st.text(max_size=40),
    surrogates,
    st.sampled_from(["", " ", "alias/", "alias/aws/x", "arn:", "arn:aws:kms:",
                     "arn:aws:kms:us-east-1:000000000000:key/fuzz-1", "alias/fuzz", "\x00",
                     "²", "%C2%B2", "../..", "*a*a*a*a*a*a*a*a*a*a*b"]),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", "\ud83d\ude00", "["]),
              st.integers(0, 70_000)),
)  # fmt: skip
any_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | nasty_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=12,
)


def value_for(shape: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """A JSON value for a botocore shape: usually of its type, sometimes anything at all."""
    kind = shape.type_name
    if kind == "string":
        enum = list(getattr(shape, "enum", []) or [])
        names = (
            st.sampled_from([*KEYS, "alias/fuzz", "missing-key", *enum]) if kind else st.nothing()
        )
        typed: st.SearchStrategy[Any] = st.one_of(names, nasty_text)
    elif kind in ("integer", "long"):
        typed = st.one_of(st.integers(-2, 2000), st.integers(), st.sampled_from([2**63, -(2**63)]))
    elif kind == "boolean":
        typed = st.booleans()
    elif kind == "blob":
        typed = st.one_of(
            st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
            st.binary(min_size=4097, max_size=7000).map(lambda b: base64.b64encode(b).decode()),
            nasty_text,
        )
    elif kind == "timestamp":
        typed = st.one_of(st.integers(), st.floats(allow_nan=False), nasty_text)
    elif kind == "list" and depth < 3:
        typed = st.lists(value_for(shape.member, depth + 1), max_size=12)
    elif kind == "map" and depth < 3:
        typed = st.one_of(
            st.dictionaries(nasty_text, value_for(shape.value, depth + 1), max_size=6),
            st.integers(1, 20_000).map(lambda n: {f"k{i}": "v" for i in range(n)}),
        )
    elif kind == "structure" and depth < 3:
        typed = structure(shape, depth + 1)
    else:
        typed = any_json
    return st.one_of(typed, typed, typed, any_json)


def member_value(name: str, shape: Any, depth: int) -> st.SearchStrategy[Any]:
    """Key references name a real key most of the time, so requests get past the key lookup."""
    value = value_for(shape, depth)
    if name.endswith("KeyId") and shape.type_name == "string":
        real = st.sampled_from(KEYS)
        return st.one_of(real, real, real, value)
    return value


def structure(shape: Any, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """The members of a structure: the required ones usually present, the others maybe."""
    members = {name: member_value(name, m, depth) for name, m in shape.members.items()}
    required = set(shape.required_members) if depth == 0 else set()
    return st.fixed_dictionaries(
        {name: members[name] for name in required},
        optional={name: v for name, v in members.items() if name not in required},
    ) | st.fixed_dictionaries({}, optional=members)


def aws_request(operation: str) -> st.SearchStrategy[bytes]:
    shape = MODEL.operation_model(operation).input_shape
    params = structure(shape) if shape is not None else st.just({})
    as_json = params.map(lambda p: json.dumps(p).encode())  # ensure_ascii: surrogates as escapes
    raw = st.one_of(st.binary(max_size=200), st.just(b"[" * 100_000), st.just(b"\xff\xfe{}"))
    return st.one_of(as_json, as_json, as_json, raw)


def sign_aws(url: str, operation: str, body: bytes) -> dict[str, str]:
    return sigv4.sign_headers(
        "POST", url + "/",
        {"content-type": "application/x-amz-json-1.1", "x-amz-target": f"TrentService.{operation}"},
        body, access_key=ROOT_USER, secret_key=ROOT_PASSWORD, region="us-east-1", service="kms",
        now=time.time(),
    )  # fmt: skip


@pytest.mark.parametrize("operation", sorted(MODEL.operation_names))
@FUZZ
@given(data=st.data())
def test_every_aws_operation_answers_without_a_5xx(
    srv: KmsThread, http: httpx.Client, ciphertexts: list[str], operation: str, data: st.DataObject
) -> None:
    body = data.draw(aws_request(operation), label="body")
    if data.draw(st.booleans(), label="use a real ciphertext") and b"CiphertextBlob" in body:
        try:
            params = json.loads(body)
        except ValueError:
            params = None
        if isinstance(params, dict):  # a body the model strategy made, with that member
            params["CiphertextBlob"] = ciphertexts[0]
            body = json.dumps(params).encode()
    resp = http.post(srv.url + "/", headers=sign_aws(srv.url, operation, body), content=body)
    assert resp.status_code < 500, (operation, body[:300], resp.status_code, resp.text[:300])
    assert "Traceback" not in resp.text
    if resp.status_code >= 400 and resp.status_code not in CONNECTION_LIMITS:
        error = resp.json()
        assert isinstance(error, dict) and isinstance(error.get("__type"), str), resp.text


# -- the admin routes -----------------------------------------------------------------------------

ROUTES = {
    "configure": ["POST"], "status": ["GET", "POST"], "key/create": ["POST"], "key/list": ["GET"],
    "key/status": ["GET"], "key/enable": ["POST"], "key/disable": ["POST"], "key/rotate": ["POST"],
    "key/delete": ["POST", "DELETE"], "key/cancel-deletion": ["POST"], "audit": ["GET"],
    "backup": ["POST"], "user/add": ["POST"], "user/remove": ["POST"], "user/list": ["GET"],
    "policy/add": ["POST"], "policy/remove": ["POST"], "policy/list": ["GET"],
}  # fmt: skip
QUERY_NAMES = [
    "keyName",
    "key-id",
    "key",
    "pattern",
    "pendingWindowDays",
    "since",
    "accessKey",
    "name",
]
admin_body = st.one_of(
    st.just(b""),
    any_json.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "kms_type": st.sampled_from(["local", "vault", "none", "\ud800"]) | any_json,
            "vault_address": nasty_text | st.just("http://u:pw@127.0.0.1:1"),
            "vault_token": nasty_text,
            "passphrase": nasty_text,
            "secretKey": nasty_text,
            "accessKey": nasty_text,
            "policies": any_json,
            "Statement": any_json,
            "Version": any_json,
        },
    ).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=100),
    st.just(b"[" * 100_000),
)


@pytest.mark.parametrize("route", sorted(ROUTES))
@FUZZ
@given(data=st.data())
def test_every_admin_route_answers_without_a_5xx(
    srv: KmsThread, http: httpx.Client, route: str, data: st.DataObject
) -> None:
    method = data.draw(st.sampled_from([*ROUTES[route], "PUT"]), label="method")
    query = data.draw(
        st.dictionaries(st.sampled_from(QUERY_NAMES), st.one_of(st.sampled_from(KEYS), nasty_text),
                        max_size=3),
        label="query",
    )  # fmt: skip
    if route == "configure" and method == "POST":
        # Reconfiguring to another backend would end the fuzzing of this server: only `local`.
        body = json.dumps({"kms_type": "local", "default_key_id": data.draw(nasty_text)}).encode()
    else:
        body = data.draw(admin_body, label="body")
    # Raw bytes, percent-encoded: a lone surrogate arrives as invalid UTF-8 (%ED%A0%80).
    qs = "&".join(
        f"{name}={quote(value.encode('utf-8', 'surrogatepass')[:3000], safe='')}"
        for name, value in query.items()
    )
    url = f"{srv.url}{ADMIN}/{route}" + (f"?{qs}" if qs else "")
    headers = sigv4.sign_headers(
        method, url, {}, body, access_key=ROOT_USER, secret_key=ROOT_PASSWORD,
        region="us-east-1", service="s3", now=time.time(),
    )  # fmt: skip
    resp = http.request(method, url, headers=headers, content=body)
    assert resp.status_code < 500, (route, method, query, body[:300], resp.text[:300])
    assert "Traceback" not in resp.text
    if resp.status_code >= 400 and resp.status_code not in CONNECTION_LIMITS:
        error = resp.json()
        assert set(error) == {"error"} and set(error["error"]) == {"code", "message", "resource"}


def test_the_server_still_serves_after_the_fuzzing(srv: KmsThread, http: httpx.Client) -> None:
    # Runs after both fuzz tests in this module (pytest keeps file order).
    still_serves(srv, http)
