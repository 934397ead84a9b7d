"""The admin API of kms-admin-api.md, on both prefixes, against a real server on a loopback port."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3kms.auth import sigv4

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsThread, thread_settings

PREFIXES = ["/rustfs/admin/v3/kms", "/minio/admin/v3/kms"]
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    server = KmsThread(thread_settings(tmp_path_factory.mktemp("admin") / "data")).start()
    yield server
    server.stop()


class Signed:
    """Admin requests signed S3-style with the root credentials, as minio-py/madmin sign them."""

    def __init__(self, url: str, secret: str = ROOT_PASSWORD, access: str = ROOT_USER) -> None:
        self.url = url
        self.secret = secret
        self.access = access
        self.http = httpx.Client(timeout=10)

    def __call__(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> httpx.Response:
        url = self.url + path
        signed = sigv4.sign_headers(
            method,
            url,
            headers or {},
            body,
            access_key=self.access,
            secret_key=self.secret,
            region="us-east-1",
            service="s3",
            now=time.time(),
        )
        return self.http.request(method, url, headers=signed, content=body)

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="module")
def call(srv: KmsThread) -> Iterator[Signed]:
    signed = Signed(srv.url)
    yield signed
    signed.close()


def error_of(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "resource"}
    err: dict[str, Any] = body["error"]
    return err


@pytest.mark.parametrize("prefix", PREFIXES)
def test_key_lifecycle_bodies_are_the_documents(call: Signed, prefix: str) -> None:
    name = f"doc-key-{prefix.split('/')[1]}"
    created = call("POST", f"{prefix}/key/create?keyName={name}")
    assert created.status_code == 200
    body = created.json()
    assert set(body) == {"keyId", "status", "createdAt"}
    assert body["keyId"] == name and body["status"] == "created"
    assert RFC3339.match(body["createdAt"])
    assert created.headers["content-type"] == "application/json"
    assert re.fullmatch(r"[0-9A-F]{16}", created.headers["x-amz-request-id"])

    status = call("GET", f"{prefix}/key/status?keyName={name}").json()
    assert status == {
        "keyId": name,
        "status": "enabled",
        "createdAt": body["createdAt"],
        "algorithm": "AES256",
        "currentVersion": 1,
    }

    disabled = call("POST", f"{prefix}/key/disable?keyName={name}").json()
    assert disabled == {"keyId": name, "status": "disabled", "message": "Key disabled successfully"}
    # Disabling a disabled key succeeds and changes nothing.
    again = call("POST", f"{prefix}/key/disable?keyName={name}").json()
    assert again == disabled
    assert call("GET", f"{prefix}/key/status?keyName={name}").json()["status"] == "disabled"

    enabled = call("POST", f"{prefix}/key/enable?keyName={name}").json()
    assert enabled == {"keyId": name, "status": "enabled", "message": "Key enabled successfully"}
    assert call("POST", f"{prefix}/key/enable?keyName={name}").json() == enabled

    listed = call("GET", f"{prefix}/key/list").json()
    assert set(listed) == {"keys"}
    entry = next(k for k in listed["keys"] if k["keyId"] == name)
    assert entry == {"keyId": name, "status": "enabled", "createdAt": body["createdAt"]}


@pytest.mark.parametrize("param", ["keyName", "key-id", "key"])
def test_key_parameter_aliases(call: Signed, param: str) -> None:
    name = f"param-{param}"
    assert call("POST", f"/minio/admin/v3/kms/key/create?{param}={name}").status_code == 200
    got = call("GET", f"/rustfs/admin/v3/kms/key/status?{param}={name}")
    assert got.json()["keyId"] == name


def test_create_without_name_makes_a_uuid4(call: Signed) -> None:
    key_id = call("POST", "/rustfs/admin/v3/kms/key/create").json()["keyId"]
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", key_id
    )


@pytest.mark.parametrize(
    "name",
    ["-starts-with-dash", ".dot", "has space", "slash/inside", "x" * 129, "ünïcode", "a%00b"],
)
def test_bad_key_names_are_invalid_requests(call: Signed, name: str) -> None:
    from urllib.parse import quote

    resp = call("POST", f"/rustfs/admin/v3/kms/key/create?keyName={quote(name, safe='')}")
    assert resp.status_code == 400
    assert error_of(resp)["code"] == "KMSInvalidRequest"


def test_longest_valid_name(call: Signed) -> None:
    name = "a" + "Z9._-" * 25 + "xy"
    assert len(name) == 128
    assert call("POST", f"/rustfs/admin/v3/kms/key/create?keyName={name}").status_code == 200


def test_duplicate_create_is_409(call: Signed) -> None:
    call("POST", "/rustfs/admin/v3/kms/key/create?keyName=dup")
    resp = call("POST", "/rustfs/admin/v3/kms/key/create?keyName=dup")
    assert resp.status_code == 409
    err = error_of(resp)
    assert err == {
        "code": "KMSKeyAlreadyExists",
        "message": err["message"],
        "resource": "/rustfs/admin/v3/kms/key/create",
    }


@pytest.mark.parametrize("route", ["key/status", "key/enable", "key/disable"])
def test_missing_key_is_404_with_resource(call: Signed, route: str) -> None:
    method = "GET" if route == "key/status" else "POST"
    resp = call(method, f"/minio/admin/v3/kms/{route}?keyName=no-such-key")
    assert resp.status_code == 404
    assert error_of(resp) == {
        "code": "KMSKeyNotFound",
        "message": "The specified KMS key does not exist",
        "resource": f"/minio/admin/v3/kms/{route}",
    }


@pytest.mark.parametrize("route", ["key/status", "key/enable", "key/disable"])
def test_key_name_required(call: Signed, route: str) -> None:
    method = "GET" if route == "key/status" else "POST"
    resp = call(method, f"/rustfs/admin/v3/kms/{route}")
    assert resp.status_code == 400
    assert error_of(resp)["code"] == "KMSInvalidRequest"


def test_list_pattern_is_a_glob_and_sorted(call: Signed) -> None:
    for name in ["glob-b1", "glob-a2", "glob-a1", "glob-c10", "other-a1"]:
        call("POST", f"/rustfs/admin/v3/kms/key/create?keyName={name}")

    def ids(pattern: str) -> list[str]:
        from urllib.parse import quote

        resp = call("GET", f"/rustfs/admin/v3/kms/key/list?pattern={quote(pattern, safe='')}")
        assert resp.status_code == 200
        return [k["keyId"] for k in resp.json()["keys"]]

    assert ids("glob-*") == ["glob-a1", "glob-a2", "glob-b1", "glob-c10"]
    assert ids("glob-a?") == ["glob-a1", "glob-a2"]
    assert ids("glob-[ab]1") == ["glob-a1", "glob-b1"]
    assert ids("*-a1") == ["glob-a1", "other-a1"]
    assert ids("glob-c1") == []  # the glob covers the whole id, not a prefix
    everything = [k["keyId"] for k in call("GET", "/rustfs/admin/v3/kms/key/list").json()["keys"]]
    assert everything == sorted(everything)
    assert {"glob-a1", "other-a1"} <= set(everything)


def test_kms_status_get_and_post(call: Signed, srv: KmsThread) -> None:
    for method in ("GET", "POST"):
        for prefix in PREFIXES:
            body = call(method, f"{prefix}/status").json()
            assert set(body) == {"status", "kmsType", "endpoint", "keyCount", "defaultKeyId"}
            assert body["status"] == "connected"
            assert body["kmsType"] == "local"
            assert isinstance(body["keyCount"], int) and body["keyCount"] >= 0


def test_key_count_follows_creates(call: Signed) -> None:
    before = call("GET", "/rustfs/admin/v3/kms/status").json()["keyCount"]
    call("POST", "/rustfs/admin/v3/kms/key/create?keyName=count-me")
    assert call("GET", "/rustfs/admin/v3/kms/status").json()["keyCount"] == before + 1


def test_unknown_path_404_and_wrong_method_405(call: Signed) -> None:
    resp = call("GET", "/rustfs/admin/v3/kms/key/frobnicate")
    assert resp.status_code == 404
    assert error_of(resp)["resource"] == "/rustfs/admin/v3/kms/key/frobnicate"
    resp = call("DELETE", "/minio/admin/v3/kms/key/list")
    assert resp.status_code == 405
    assert error_of(resp)["code"] == "MethodNotAllowed"
    resp = httpx.get(call.url + "/nothing/here")
    assert resp.status_code == 404
    assert error_of(resp)["code"] == "NotFound"


def test_oversized_body_is_413(call: Signed) -> None:
    resp = call("POST", "/rustfs/admin/v3/kms/configure", body=b"{" + b" " * (1024 * 1024 + 1))
    assert resp.status_code == 413
    assert error_of(resp)["code"] == "EntityTooLarge"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "not valid JSON"),
        (b"[1,2]", "JSON object"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"kms_type": "hsm"}', "kms_type"),
        (b'{"kms_type": "vault"}', "vault_address"),
        (b'{"kms_type": "vault", "vault_address": "ftp://x", "vault_token": "t"}', "http(s)"),
        (b'{"kms_type": "vault", "vault_address": "http://h:99999", "vault_token": "t"}', "port"),
        (b'{"kms_type": "vault", "vault_address": "http://vault:8200"}', "vault_token"),
        (
            b'{"kms_type": "vault", "vault_address": "https://v:8200", "vault_token": "t",'
            b' "vault_skip_tls_verify": true}',
            "allow_insecure",
        ),
        *(
            (
                b'{"kms_type": "vault", "vault_address": "http://vault:8200", "vault_token": "t",'
                b' "vault_metadata_cache_seconds": ' + value + b"}",
                "vault_metadata_cache_seconds must be a number in [0, 60]",
            )
            for value in (b"-1", b"60.5", b'"1"', b"true", b"null")
        ),
        (b'{"kms_type": "local", "default_key_id": "bad name"}', "default_key_id"),
        (b'{"kms_type": "local", "surprise": 1}', "unknown field"),
    ],
)
def test_configure_rejects_bad_bodies(call: Signed, body: bytes, fragment: str) -> None:
    resp = call("POST", "/minio/admin/v3/kms/configure", body=body)
    assert resp.status_code == 400, resp.text
    err = error_of(resp)
    assert err["code"] == "KMSInvalidRequest"
    assert fragment in err["message"]
    # The previous configuration stays.
    assert call("GET", "/rustfs/admin/v3/kms/status").json()["kmsType"] == "local"


def test_configure_local_with_default_key(call: Signed) -> None:
    resp = call(
        "POST",
        "/rustfs/admin/v3/kms/configure",
        body=json.dumps({"kms_type": "local", "default_key_id": "dflt"}).encode(),
        headers={"content-type": "application/json"},
    )
    assert resp.json() == {"status": "success", "message": "KMS configured successfully"}
    assert call("GET", "/rustfs/admin/v3/kms/status").json()["defaultKeyId"] == "dflt"


def test_unexpected_exception_is_500_with_request_id(
    srv: KmsThread, call: Signed, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from s3kms.keystore.local import LocalKeyStore

    async def explode(self: LocalKeyStore, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire: /secret/path")

    # The keystore's method, not the service's: a wheel's service.py is compiled (hatch_build.py)
    # and its methods cannot be patched.
    monkeypatch.setattr(LocalKeyStore, "create_key", explode)
    with caplog.at_level(logging.ERROR, logger="s3kms.http"):
        resp = call("POST", "/rustfs/admin/v3/kms/key/create?keyName=boom")
    assert resp.status_code == 500
    err = error_of(resp)
    request_id = resp.headers["x-amz-request-id"]
    assert err["code"] == "InternalError"
    assert request_id in err["message"]
    assert "disk on fire" not in resp.text and "Traceback" not in resp.text
    assert any(request_id in r.getMessage() for r in caplog.records)


def test_health_needs_no_auth(srv: KmsThread) -> None:
    assert httpx.get(srv.url + "/health/live").json() == {"status": "ok"}
    ready = httpx.get(srv.url + "/health/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "connected"}


def test_fifty_concurrent_creates_of_one_name(call: Signed, srv: KmsThread) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def create() -> None:
        client = Signed(srv.url)
        try:
            status = client("POST", "/rustfs/admin/v3/kms/key/create?keyName=raced").status_code
        finally:
            client.close()
        with lock:
            results.append(status)

    threads = [threading.Thread(target=create) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200] + [409] * 49


def test_not_configured_backend(tmp_path: Path) -> None:
    server = KmsThread(thread_settings(tmp_path / "data", backend="none")).start()
    try:
        client = Signed(server.url)
        status = client("GET", "/rustfs/admin/v3/kms/status")
        assert status.status_code == 200
        assert status.json()["status"] == "not_configured"
        for method, route in [("POST", "key/create?keyName=a"), ("GET", "key/list")]:
            resp = client(method, f"/rustfs/admin/v3/kms/{route}")
            assert resp.status_code == 503
            assert error_of(resp)["code"] == "KMSNotConfigured"
        configured = client("POST", "/rustfs/admin/v3/kms/configure", body=b'{"kms_type": "local"}')
        assert configured.status_code == 200
        assert client("POST", "/rustfs/admin/v3/kms/key/create?keyName=a").status_code == 200
        client.close()
    finally:
        server.stop()
