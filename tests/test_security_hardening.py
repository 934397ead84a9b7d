"""Hardening through the real server: rate limit, header and body limits; no secret in any repr()."""

from __future__ import annotations

import ast
import base64
import inspect
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from s3kms.client import Client, GeneratedDataKey
from s3kms.config import KMSConfig, Settings
from s3kms.credentials import Credentials
from s3kms.crypto import masterkey
from s3kms.keystore.vault import VaultSettings
from s3kms.model import DataKey
from s3kms.service import Decrypted
from s3kms.users import User, UserStore

from kmsserver import MASTER_KEY, ROOT_PASSWORD, ROOT_USER, KmsProcess, KmsThread, thread_settings
from kmsserver import signed_admin as signed

ADMIN = "/rustfs/admin/v3/kms"


def error_code(resp: httpx.Response) -> str:
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "resource"}, body
    code: str = body["error"]["code"]
    return code


# -- rate limit -----------------------------------------------------------------------------------


def test_rate_limit_per_principal(tmp_path: Path) -> None:
    """`s3kms server --rate-limit 2`: 2 requests per second per access key, bursts of 2.

    A low rate keeps the test meaningful on a loaded CI machine: the burst of 12 below would have
    to take over 3.5 s before fewer than 3 of its requests were throttled.
    """
    server = KmsProcess(tmp_path / "data", args=["--rate-limit", "2"])
    server.start()
    try:
        with Client(server.url, ROOT_USER, ROOT_PASSWORD) as root:
            root.put_policy(
                "list",
                {"Statement": [{"Effect": "Allow", "Action": ["admin:KMSListKeys", "kms:ListKeys"],
                                "Resource": "*"}]},
            )  # fmt: skip
            time.sleep(0.6)  # setup stays under the limit
            other = root.add_user("other", ["list"])["secretKey"]
            time.sleep(0.6)
            root.create_key("limited")
            time.sleep(0.6)
        aws = boto3.client(
            "kms", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id=ROOT_USER,
            aws_secret_access_key=ROOT_PASSWORD, config=Config(retries={"total_max_attempts": 1}),
        )  # fmt: skip
        aws.list_keys()  # warm: the first boto3 call loads its models (slow)
        time.sleep(1.1)  # a full bucket

        answers = [signed(server.url, "GET", f"{ADMIN}/key/list") for _ in range(12)]
        # The AWS API answers in its own envelope (ThrottlingException, HTTP 400 as AWS does).
        with pytest.raises(ClientError) as exc:
            aws.list_keys()
        assert exc.value.response["Error"]["Code"] == "ThrottlingException"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        codes = [r.status_code for r in answers]
        assert codes[:2] == [200] * 2, codes
        assert codes.count(429) >= 3, codes  # (the bucket refills while the burst runs)
        slow = next(r for r in answers if r.status_code == 429)
        assert error_code(slow) == "SlowDown"
        assert slow.json()["error"]["resource"] == f"{ADMIN}/key/list"

        # Per principal: another access key still has its own bucket.
        assert signed(server.url, "GET", f"{ADMIN}/key/list", "other", other).status_code == 200

        time.sleep(1.1)  # refilled
        again = [signed(server.url, "GET", f"{ADMIN}/key/list").status_code for _ in range(2)]
        assert again == [200] * 2
    finally:
        server.stop()
    # Throttled requests are on the audit record as denials.
    lines = [
        json.loads(line)
        for line in (tmp_path / "data" / "audit" / "audit.log").read_text().splitlines()
    ]
    throttled = [x for x in lines if x["error"] == "SlowDown"]
    assert len(throttled) >= codes.count(429) + 1
    assert {x["outcome"] for x in throttled} == {"denied"}


# -- request limits -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    server = KmsThread(thread_settings(tmp_path_factory.mktemp("hardening") / "data")).start()
    yield server
    server.stop()


def test_too_many_headers(srv: KmsThread) -> None:
    # Refused by the connection before the request is authenticated: 431, closed (more in
    # test_connection_limits.py).
    many = {f"x-extra-{i}": "1" for i in range(101)}
    resp = signed(srv.url, "GET", f"{ADMIN}/key/list", headers=many)
    assert resp.status_code == 431 and resp.headers["connection"] == "close"
    # Below the limit the same signed request is served.
    fewer = {f"x-extra-{i}": "1" for i in range(80)}
    assert signed(srv.url, "GET", f"{ADMIN}/key/list", headers=fewer).status_code == 200
    # The AWS API is behind the same limit.
    aws = httpx.post(srv.url + "/", headers=many | {"x-amz-target": "TrentService.ListKeys"})
    assert aws.status_code == 431


def test_body_over_one_mib(srv: KmsThread) -> None:
    limit = 1024 * 1024
    big = b"{" + b" " * limit + b"}"
    # Declared too large: refused before the body is read.
    resp = signed(srv.url, "POST", f"{ADMIN}/configure", body=big)
    assert resp.status_code == 413 and error_code(resp) == "EntityTooLarge"

    # Streamed without a length (chunked): refused once more than 1 MiB has arrived.
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 65536

    streamed = httpx.post(srv.url + f"{ADMIN}/configure", content=chunks(), timeout=10)
    assert streamed.status_code == 413 and error_code(streamed) == "EntityTooLarge"

    aws = httpx.post(
        srv.url + "/", content=big,
        headers={"x-amz-target": "TrentService.Encrypt", "content-type": "application/x-amz-json-1.1"},
    )  # fmt: skip
    # (AWS KMS answers every client error with HTTP 400; the type says what it was.)
    assert aws.status_code == 400 and aws.json()["__type"] == "ValidationException"
    assert "exceeds the maximum" in aws.json()["message"]

    # At the limit the body is read (and then judged on its merits: not valid configure JSON).
    at_limit = signed(srv.url, "POST", f"{ADMIN}/configure", body=b"[" + b" " * (limit - 2) + b"]")
    assert at_limit.status_code == 400 and error_code(at_limit) == "KMSInvalidRequest"


# -- no secret in repr() ----------------------------------------------------------------------------------


def forms(secret: str | bytes) -> list[str]:
    raw = secret.encode() if isinstance(secret, str) else secret
    out = [repr(raw), raw.hex(), base64.b64encode(raw).decode()]
    if isinstance(secret, str):
        out.append(secret)
    return out


def assert_hidden(obj: Any, *secrets: str | bytes) -> None:
    for text in (repr(obj), str(obj), f"{obj!r}", f"{[obj]}"):
        for secret in secrets:
            for form in forms(secret):
                assert form not in text, f"{type(obj).__name__} shows {form!r}: {text}"


def test_no_secret_in_repr(tmp_path: Path) -> None:
    token, secret_id = "hvs.token-in-repr-123", "approle-secret-id-456"
    vault = VaultSettings(
        addresses=("https://vault:8200",), token=token, app_role_id="role",
        app_role_secret_id=secret_id,
    )  # fmt: skip
    assert_hidden(vault, token, secret_id)
    assert "vault:8200" in repr(vault)
    settings = Settings(
        root_user="admin", root_password=ROOT_PASSWORD, master_key=MASTER_KEY, vault=vault
    )
    assert_hidden(settings, ROOT_PASSWORD, MASTER_KEY, token, secret_id)
    assert "admin" in repr(settings)
    assert_hidden(KMSConfig("vault", "k", vault), token, secret_id)

    assert_hidden(Credentials("admin", ROOT_PASSWORD), ROOT_PASSWORD)
    key = masterkey.parse(MASTER_KEY, "S3KMS_MASTER_KEY")
    assert_hidden(key, MASTER_KEY, key.material)

    with Client("http://127.0.0.1:1", "access", ROOT_PASSWORD) as client:
        assert_hidden(client, ROOT_PASSWORD)

    material = bytes(range(32))
    assert_hidden(DataKey(material, b"blob", "k"), material)
    assert_hidden(GeneratedDataKey("k", b"blob", material), material)
    assert_hidden(Decrypted("k", material), material)

    user_secret = "user-secret-in-repr-789"
    assert_hidden(User("someone", user_secret, ("p",), True), user_secret)
    store = UserStore(tmp_path, key.material)
    store.add_user("someone", user_secret, [])
    assert_hidden(store, user_secret)
    assert_hidden(store.list_users(), user_secret)


def test_secrets_are_compared_in_constant_time() -> None:
    from s3kms.crypto.masterkey import MasterKey

    # From the source file: a wheel's sigv4 is compiled (hatch_build.py), inspect cannot read it.
    sigv4 = (Path(__file__).resolve().parents[1] / "src/s3kms/auth/sigv4.py").read_text()
    (matches,) = (
        ast.get_source_segment(sigv4, node)
        for node in ast.walk(ast.parse(sigv4))
        if isinstance(node, ast.FunctionDef) and node.name == "_matches"
    )
    assert matches is not None and "hmac.compare_digest" in matches
    assert "hmac.compare_digest" in inspect.getsource(MasterKey.matches)
