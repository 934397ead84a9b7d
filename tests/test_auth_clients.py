"""SigV4 through the real server: requests signed by curl, botocore and minio-py, and the failures."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from minio import MinioAdmin
from minio.credentials import StaticProvider

from s3kms.auth import sigv4

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsThread, thread_settings


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    server = KmsThread(thread_settings(tmp_path_factory.mktemp("auth") / "data")).start()
    yield server
    server.stop()


def send(req: AWSRequest) -> httpx.Response:
    prepared = req.prepare()
    return httpx.request(
        prepared.method, prepared.url, headers=dict(prepared.headers), content=prepared.body or b""
    )


def botocore_admin(
    srv: KmsThread,
    method: str,
    path: str,
    *,
    secret: str = ROOT_PASSWORD,
    access: str = ROOT_USER,
    service: str = "s3",
    region: str = "us-east-1",
    body: bytes = b"",
) -> httpx.Response:
    req = AWSRequest(method=method, url=srv.url + path, data=body)
    S3SigV4Auth(Credentials(access, secret), service, region).add_auth(req)
    return send(req)


def code_of(resp: httpx.Response) -> str:
    code: str = resp.json()["error"]["code"]
    return code


# -- real clients ---------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_aws_sigv4_runs_the_documents_examples(srv: KmsThread) -> None:
    base = srv.url + "/minio/admin/v3/kms"
    curl = [
        "curl",
        "-sS",
        "--aws-sigv4",
        "aws:amz:us-east-1:s3",
        "--user",
        f"{ROOT_USER}:{ROOT_PASSWORD}",
    ]

    def run(*args: str) -> dict[str, object]:
        out = subprocess.run([*curl, *args], capture_output=True, check=True, timeout=30).stdout
        result: dict[str, object] = json.loads(out)
        return result

    assert run("-X", "POST", f"{base}/key/create?keyName=my-key")["keyId"] == "my-key"
    listed = run("-X", "GET", f"{base}/key/list")
    assert {"keyId": "my-key", "status": "enabled"}.items() <= listed["keys"][0].items()  # type: ignore[index]
    assert run("-X", "GET", f"{base}/key/status?keyName=my-key")["algorithm"] == "AES256"
    # curl signs the query as typed (`my-*`, not `my-%2A`); the server accepts that form too.
    globbed = run("-X", "GET", f"{base}/key/list?pattern=my-*")
    assert [k["keyId"] for k in globbed["keys"]] == ["my-key"]  # type: ignore[attr-defined]
    configured = run(
        "-X", "POST", f"{base}/configure", "-H", "Content-Type: application/json",
        "-d", '{"kms_type": "local"}',
    )  # fmt: skip
    assert configured == {"status": "success", "message": "KMS configured successfully"}
    denied = subprocess.run(
        ["curl", "-sS", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", f"{ROOT_USER}:wrong-secret",
         f"{base}/key/list"],
        capture_output=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert json.loads(denied)["error"]["code"] == "SignatureDoesNotMatch"


def test_minio_admin_client(srv: KmsThread) -> None:
    admin = MinioAdmin(
        endpoint=srv.url.removeprefix("http://"),
        credentials=StaticProvider(ROOT_USER, ROOT_PASSWORD),
        secure=False,
    )
    created = json.loads(admin.kms_key_create("minio-made"))
    assert created["keyId"] == "minio-made"
    status = json.loads(admin.kms_key_status("minio-made"))
    assert status["keyId"] == "minio-made" and status["status"] == "enabled"


def test_botocore_signed_admin_requests(srv: KmsThread) -> None:
    resp = botocore_admin(srv, "POST", "/rustfs/admin/v3/kms/key/create?keyName=boto-made")
    assert resp.status_code == 200, resp.text
    resp = botocore_admin(
        srv, "GET", "/rustfs/admin/v3/kms/key/status?keyName=boto-made", service="kms"
    )
    assert resp.json()["keyId"] == "boto-made"


def test_botocore_generic_sigv4_also_signs_admin_get(srv: KmsThread) -> None:
    # A client that signs the generic way and sends no content hash is also accepted.
    req = AWSRequest(method="GET", url=srv.url + "/rustfs/admin/v3/kms/status")
    SigV4Auth(Credentials(ROOT_USER, ROOT_PASSWORD), "s3", "us-east-1").add_auth(req)
    assert send(req).json()["status"] == "connected"


def test_presigned_url(srv: KmsThread) -> None:
    url = srv.url + "/rustfs/admin/v3/kms/key/status?keyName=presigned"
    botocore_admin(srv, "POST", "/rustfs/admin/v3/kms/key/create?keyName=presigned")
    req = AWSRequest(method="GET", url=url)
    S3SigV4QueryAuth(Credentials(ROOT_USER, ROOT_PASSWORD), "s3", "us-east-1", expires=60).add_auth(
        req
    )
    resp = httpx.get(req.prepare().url)
    assert resp.status_code == 200 and resp.json()["keyId"] == "presigned"

    expired = sigv4.presign_url(
        "GET", url, access_key=ROOT_USER, secret_key=ROOT_PASSWORD, region="us-east-1",
        service="s3", now=time.time() - 120, expires=60,
    )  # fmt: skip
    resp = httpx.get(expired)
    assert resp.status_code == 403 and code_of(resp) == "AccessDenied"


def test_empty_region_scope_as_minio_sends(srv: KmsThread) -> None:
    resp = botocore_admin(srv, "GET", "/rustfs/admin/v3/kms/status", region="")
    assert resp.status_code == 200, resp.text


# -- failures -------------------------------------------------------------------------------------


def test_wrong_secret(srv: KmsThread) -> None:
    resp = botocore_admin(srv, "GET", "/rustfs/admin/v3/kms/status", secret="not-the-secret")
    assert resp.status_code == 403 and code_of(resp) == "SignatureDoesNotMatch"
    assert ROOT_PASSWORD not in resp.text


def test_unknown_access_key(srv: KmsThread) -> None:
    resp = botocore_admin(srv, "GET", "/rustfs/admin/v3/kms/status", access="AKIDUNKNOWN")
    assert resp.status_code == 403 and code_of(resp) == "InvalidAccessKeyId"


def test_wrong_region_and_service(srv: KmsThread) -> None:
    resp = botocore_admin(srv, "GET", "/rustfs/admin/v3/kms/status", region="eu-west-1")
    assert resp.status_code == 400 and code_of(resp) == "AuthorizationHeaderMalformed"
    resp = botocore_admin(srv, "GET", "/rustfs/admin/v3/kms/status", service="sts")
    assert resp.status_code == 400 and code_of(resp) == "AuthorizationHeaderMalformed"


def _signed_at(
    srv: KmsThread, when: float, path: str = "/rustfs/admin/v3/kms/status"
) -> dict[str, str]:
    return sigv4.sign_headers(
        "GET", srv.url + path, {}, b"", access_key=ROOT_USER, secret_key=ROOT_PASSWORD,
        region="us-east-1", service="s3", now=when,
    )  # fmt: skip


def test_expired_date(srv: KmsThread) -> None:
    resp = httpx.get(
        srv.url + "/rustfs/admin/v3/kms/status", headers=_signed_at(srv, time.time() - 16 * 60)
    )
    assert resp.status_code == 403 and code_of(resp) == "RequestTimeTooSkewed"
    resp = httpx.get(
        srv.url + "/rustfs/admin/v3/kms/status", headers=_signed_at(srv, time.time() + 16 * 60)
    )
    assert resp.status_code == 403 and code_of(resp) == "RequestTimeTooSkewed"
    resp = httpx.get(
        srv.url + "/rustfs/admin/v3/kms/status", headers=_signed_at(srv, time.time() - 10 * 60)
    )
    assert resp.status_code == 200


def test_body_changed_after_signing(srv: KmsThread) -> None:
    url = srv.url + "/rustfs/admin/v3/kms/configure"
    headers = sigv4.sign_headers(
        "POST", url, {"content-type": "application/json"}, b'{"kms_type": "local"}',
        access_key=ROOT_USER, secret_key=ROOT_PASSWORD, region="us-east-1", service="s3",
        now=time.time(),
    )  # fmt: skip
    resp = httpx.post(url, headers=headers, content=b'{"kms_type": "vault"}')
    assert resp.status_code == 400 and code_of(resp) == "XAmzContentSHA256Mismatch"
    # Without the hash header the body is hashed into the signature itself.
    del headers["X-Amz-Content-Sha256"]
    resp = httpx.post(url, headers=headers, content=b'{"kms_type": "vault"}')
    assert resp.status_code == 403 and code_of(resp) == "SignatureDoesNotMatch"


def test_signed_header_changed_or_dropped(srv: KmsThread) -> None:
    url = srv.url + "/rustfs/admin/v3/kms/status"
    headers = sigv4.sign_headers(
        "GET", url, {"x-amz-meta-note": "signed"}, b"", access_key=ROOT_USER,
        secret_key=ROOT_PASSWORD, region="us-east-1", service="s3", now=time.time(),
    )  # fmt: skip
    assert httpx.get(url, headers=headers).status_code == 200
    changed = {**headers, "x-amz-meta-note": "altered"}
    resp = httpx.get(url, headers=changed)
    assert resp.status_code == 403 and code_of(resp) == "SignatureDoesNotMatch"
    auth = headers["Authorization"].replace(";x-amz-meta-note", "")
    assert auth != headers["Authorization"]
    resp = httpx.get(url, headers={**headers, "Authorization": auth})
    assert resp.status_code == 403 and code_of(resp) == "SignatureDoesNotMatch"


def test_query_changed_after_signing(srv: KmsThread) -> None:
    path = "/rustfs/admin/v3/kms/key/status?keyName=" + quote("a-key")
    headers = _signed_at(srv, time.time(), path)
    resp = httpx.get(srv.url + path.replace("a-key", "b-key"), headers=headers)
    assert resp.status_code == 403 and code_of(resp) == "SignatureDoesNotMatch"


def test_missing_and_malformed_authorization(srv: KmsThread) -> None:
    resp = httpx.get(srv.url + "/rustfs/admin/v3/kms/status")
    assert resp.status_code == 400 and code_of(resp) == "MissingSecurityHeader"
    resp = httpx.get(
        srv.url + "/rustfs/admin/v3/kms/status",
        headers={"Authorization": "AWS4-HMAC-SHA256 garbage", "x-amz-date": "20240101T000000Z"},
    )
    assert resp.status_code == 400 and code_of(resp) == "AuthorizationHeaderMalformed"
