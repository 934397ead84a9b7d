"""STS `GetCallerIdentity` on the KMS port, through a real server with boto3 (real botocore signing
and Query-protocol parsing) and as raw HTTP, byte for byte.

The server runs with a non-default account id, so every ARN here proves it comes from
`--account-id`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from s3kms.auth import sigv4
from s3kms.auth.identity import iam_user_id
from s3kms.client import Client

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsThread, signed_admin, thread_settings

REGION = "us-east-1"
ACCOUNT = "123456789012"
FORM = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
CALLER_IDENTITY = b"Action=GetCallerIdentity&Version=2011-06-15"
XMLNS = "https://sts.amazonaws.com/doc/2011-06-15/"
BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. Check your "
    "AWS Secret Access Key and signing method. Consult the service documentation for details."
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    data = tmp_path_factory.mktemp("sts") / "data"
    server = KmsThread(thread_settings(data, account_id=ACCOUNT)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def root(srv: KmsThread) -> Iterator[Client]:
    with Client(srv.url, ROOT_USER, ROOT_PASSWORD) as admin:
        yield admin


def boto(srv: KmsThread, service: str, access: str = ROOT_USER, secret: str = ROOT_PASSWORD) -> Any:
    return boto3.client(
        service,
        endpoint_url=srv.url,
        region_name=REGION,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


def signed(
    srv: KmsThread,
    method: str = "POST",
    body: bytes = CALLER_IDENTITY,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    access: str = ROOT_USER,
    secret: str = ROOT_PASSWORD,
    service: str = "sts",
    now: float | None = None,
) -> httpx.Response:
    """A request to `/` signed as botocore signs STS (generic flavour, payload hashed)."""
    url = srv.url + "/" + (f"?{query}" if query else "")
    sent = sigv4.sign_headers(
        method, url, FORM if headers is None else headers, body, access_key=access,
        secret_key=secret, region=REGION, service=service,
        now=time.time() if now is None else now, s3_flavour=False,
    )  # fmt: skip
    return httpx.request(method, url, headers=sent, content=body, timeout=10)


def failure(call: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as info:
        call()
    response = info.value.response
    return {
        **response["Error"],
        "status": response["ResponseMetadata"]["HTTPStatusCode"],
        "request_id": response["ResponseMetadata"].get("RequestId"),
    }


def error_xml(kind: str, code: str, message: str, request_id: str) -> str:
    return (
        f'<ErrorResponse xmlns="{XMLNS}">\n'
        "  <Error>\n"
        f"    <Type>{kind}</Type>\n"
        f"    <Code>{code}</Code>\n"
        f"    <Message>{message}</Message>\n"
        "  </Error>\n"
        f"  <RequestId>{request_id}</RequestId>\n"
        "</ErrorResponse>\n"
    )


def identity_xml(arn: str, user_id: str, request_id: str) -> str:
    return (
        f'<GetCallerIdentityResponse xmlns="{XMLNS}">\n'
        "  <GetCallerIdentityResult>\n"
        f"    <Arn>{arn}</Arn>\n"
        f"    <UserId>{user_id}</UserId>\n"
        f"    <Account>{ACCOUNT}</Account>\n"
        "  </GetCallerIdentityResult>\n"
        "  <ResponseMetadata>\n"
        f"    <RequestId>{request_id}</RequestId>\n"
        "  </ResponseMetadata>\n"
        "</GetCallerIdentityResponse>\n"
    )


def audit_lines(srv: KmsThread) -> list[dict[str, Any]]:
    path = srv.settings.data_dir / "audit" / "audit.log"
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def audit_line(srv: KmsThread, request_id: str) -> dict[str, Any]:
    found = [line for line in audit_lines(srv) if line["request_id"] == request_id]
    assert len(found) == 1, found
    return found[0]


def new_user(root: Client, name: str, policies: list[str] | None = None) -> str:
    secret: str = root.add_user(name, policies or [])["secretKey"]
    return secret


# -- who the caller is -----------------------------------------------------------------------------


def test_root_is_the_account_root(srv: KmsThread) -> None:
    answer = boto(srv, "sts").get_caller_identity()
    assert answer["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"
    assert answer["UserId"] == ACCOUNT
    assert answer["Account"] == ACCOUNT
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    request_id = answer["ResponseMetadata"]["RequestId"]
    assert request_id == answer["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    line = audit_line(srv, request_id)
    assert line["action"] == "sts:GetCallerIdentity"
    assert line["principal"] == ROOT_USER
    assert (line["outcome"], line["status"], line["error"], line["key"]) == (
        "allowed", 200, None, None,
    )  # fmt: skip


def test_the_account_is_the_one_in_key_arns(srv: KmsThread) -> None:
    kms = boto(srv, "kms")
    key_arn = kms.describe_key(KeyId=kms.create_key()["KeyMetadata"]["KeyId"])["KeyMetadata"]["Arn"]
    assert key_arn.startswith(f"arn:aws:kms:{REGION}:{ACCOUNT}:key/")
    account = key_arn.split(":")[4]
    identity = boto(srv, "sts").get_caller_identity()
    assert identity["Account"] == account == identity["Arn"].split(":")[4]


def test_a_user_is_an_iam_user_named_by_its_access_key(srv: KmsThread, root: Client) -> None:
    secret = new_user(root, "app-service")  # no policy at all: it may do nothing else
    answer = boto(srv, "sts", "app-service", secret).get_caller_identity()
    arn = f"arn:aws:iam::{ACCOUNT}:user/app-service"
    assert answer["Arn"] == arn
    assert answer["Account"] == ACCOUNT
    user_id = answer["UserId"]
    assert re.fullmatch(r"AIDA[A-Z2-7]{17}", user_id), user_id
    assert user_id == iam_user_id(arn)
    # Stable: the same on the next call, and another user's differs.
    assert boto(srv, "sts", "app-service", secret).get_caller_identity()["UserId"] == user_id
    other = boto(srv, "sts", "app-other", new_user(root, "app-other")).get_caller_identity()
    assert other["UserId"] != user_id and other["Arn"].endswith(":user/app-other")
    line = audit_line(srv, answer["ResponseMetadata"]["RequestId"])
    assert (line["action"], line["principal"], line["outcome"]) == (
        "sts:GetCallerIdentity", "app-service", "allowed",
    )  # fmt: skip
    # ...while everything else is refused to a user without policies.
    with pytest.raises(ClientError) as info:
        boto(srv, "kms", "app-service", secret).list_keys()
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"


def test_no_policy_can_deny_get_caller_identity(srv: KmsThread, root: Client) -> None:
    root.put_policy(
        "deny-all",
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Deny", "Action": ["*", "sts:*"], "Resource": "*"}]},
    )  # fmt: skip
    secret = new_user(root, "denied-user", ["deny-all"])
    answer = boto(srv, "sts", "denied-user", secret).get_caller_identity()
    assert answer["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/denied-user"


def test_the_exact_answer_as_raw_http(srv: KmsThread, root: Client) -> None:
    resp = signed(srv)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/xml"
    request_id = resp.headers["x-amz-request-id"]
    assert resp.headers["x-amzn-requestid"] == request_id
    assert resp.text == identity_xml(f"arn:aws:iam::{ACCOUNT}:root", ACCOUNT, request_id)

    secret = new_user(root, "raw-user")
    resp = signed(srv, access="raw-user", secret=secret)
    arn = f"arn:aws:iam::{ACCOUNT}:user/raw-user"
    assert resp.text == identity_xml(arn, iam_user_id(arn), resp.headers["x-amz-request-id"])


def test_get_with_a_query_string_and_a_presigned_url(srv: KmsThread) -> None:
    # Header-signed GET with the parameters in the query string.
    resp = signed(srv, "GET", b"", query=CALLER_IDENTITY.decode(), headers={})
    assert resp.status_code == 200, resp.text
    assert f"<Arn>arn:aws:iam::{ACCOUNT}:root</Arn>" in resp.text
    # A presigned URL (what `aws eks get-token` hands to a cluster), used by someone else.
    url = boto(srv, "sts").generate_presigned_url(
        "get_caller_identity", Params={}, ExpiresIn=60, HttpMethod="GET"
    )
    assert "Action=GetCallerIdentity" in url and "X-Amz-Signature=" in url
    resp = httpx.get(url, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.text == identity_xml(
        f"arn:aws:iam::{ACCOUNT}:root", ACCOUNT, resp.headers["x-amz-request-id"]
    )
    line = audit_line(srv, resp.headers["x-amz-request-id"])
    assert (line["action"], line["outcome"]) == ("sts:GetCallerIdentity", "allowed")
    # The signature covers the query: another Action is no longer signed.
    tampered = httpx.get(url.replace("GetCallerIdentity", "GetSessionToken"), timeout=10)
    assert tampered.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in tampered.text


# -- errors as STS sends them ----------------------------------------------------------------------


def test_a_wrong_secret_is_signature_does_not_match(srv: KmsThread) -> None:
    error = failure(boto(srv, "sts", secret="not-the-secret").get_caller_identity)
    assert error == {
        "Type": "Sender", "Code": "SignatureDoesNotMatch", "Message": BAD_SIGNATURE,
        "status": 403, "request_id": error["request_id"],
    }  # fmt: skip
    line = audit_line(srv, error["request_id"])
    assert (line["action"], line["outcome"], line["status"], line["error"]) == (
        "sts:GetCallerIdentity", "denied", 403, "SignatureDoesNotMatch",
    )  # fmt: skip
    assert line["principal"] is None

    resp = signed(srv, secret="not-the-secret")
    assert resp.status_code == 403 and resp.headers["content-type"] == "text/xml"
    assert resp.text == error_xml(
        "Sender", "SignatureDoesNotMatch", BAD_SIGNATURE, resp.headers["x-amz-request-id"]
    )


def test_an_unknown_access_key_is_invalid_client_token_id(srv: KmsThread) -> None:
    error = failure(boto(srv, "sts", "AKIDUNKNOWN", "whatever-secret").get_caller_identity)
    assert (error["Type"], error["Code"], error["status"]) == (
        "Sender", "InvalidClientTokenId", 403,
    )  # fmt: skip
    assert error["Message"] == "The security token included in the request is invalid."


def test_authentication_failures_in_sts_terms(srv: KmsThread) -> None:
    unsigned = httpx.post(srv.url + "/", headers=FORM, content=CALLER_IDENTITY, timeout=10)
    assert unsigned.status_code == 403
    assert unsigned.text == error_xml(
        "Sender", "MissingAuthenticationToken", "Request is missing Authentication Token",
        unsigned.headers["x-amz-request-id"],
    )  # fmt: skip
    assert audit_line(srv, unsigned.headers["x-amz-request-id"])["action"] == (
        "sts:GetCallerIdentity"
    )
    # Signed for KMS (or S3): the STS surface accepts the service `sts` only.
    for service in ("kms", "s3"):
        resp = signed(srv, service=service)
        assert resp.status_code == 400, resp.text
        assert "<Code>IncompleteSignature</Code>" in resp.text
        assert f"the service '{service}' is not served here" in resp.text


def test_a_skewed_clock_is_signature_expired(srv: KmsThread) -> None:
    now = time.time()
    late = signed(srv, now=now - 3600)
    assert late.status_code == 403
    message = re.search(r"<Message>(.*)</Message>", late.text)
    assert message is not None and "<Code>SignatureDoesNotMatch</Code>" in late.text
    assert re.fullmatch(
        rf"Signature expired: {sigv4.format_amz_date(now - 3600)} is now earlier than "
        r"(\d{8}T\d{6}Z) \((\d{8}T\d{6}Z) - 15 min\.\)",
        message.group(1),
    ), message.group(1)
    early = signed(srv, now=now + 3600)
    assert early.status_code == 403
    assert (
        f"Signature not yet current: {sigv4.format_amz_date(now + 3600)} is still later than"
        in early.text
    )
    line = audit_line(srv, early.headers["x-amz-request-id"])
    assert (line["outcome"], line["error"]) == ("denied", "RequestTimeTooSkewed")


def test_throttling_is_sts_throttling(tmp_path: Path) -> None:
    server = KmsThread(thread_settings(tmp_path / "data", rate_limit=1.0)).start()
    try:
        sts = boto(server, "sts")
        sts.get_caller_identity()
        error = failure(sts.get_caller_identity)
        assert (error["Type"], error["Code"], error["Message"], error["status"]) == (
            "Sender", "Throttling", "Rate exceeded", 400,
        )  # fmt: skip
    finally:
        server.stop()


def test_an_unknown_action_is_invalid_action(srv: KmsThread) -> None:
    resp = signed(srv, body=b"Action=GetCallerIdentityX&Version=2011-06-15")
    assert resp.status_code == 400
    request_id = resp.headers["x-amz-request-id"]
    assert resp.text == error_xml(
        "Sender", "InvalidAction",
        "Could not find operation GetCallerIdentityX for version 2011-06-15", request_id,
    )  # fmt: skip
    line = audit_line(srv, request_id)  # recorded from a fixed vocabulary, never verbatim
    assert (line["action"], line["principal"], line["outcome"], line["error"]) == (
        "sts:UnknownOperation", ROOT_USER, "failed", "InvalidAction",
    )  # fmt: skip

    wrong_version = signed(srv, body=b"Action=GetCallerIdentity&Version=2099-01-01")
    assert wrong_version.status_code == 400
    assert (
        "<Message>Could not find operation GetCallerIdentity for version 2099-01-01</Message>"
        in wrong_version.text
    )
    missing = signed(srv, body=b"Version=2011-06-15")
    assert missing.status_code == 400 and "<Code>MissingAction</Code>" in missing.text
    # Markup in an echoed Action stays text.
    markup = signed(srv, body=b"Action=%3Cx%3E%26&Version=2011-06-15")
    assert "Could not find operation &lt;x&gt;&amp; for version" in markup.text


def test_a_large_form_costs_little_before_authentication(srv: KmsThread) -> None:
    body = b"a=&" * (1000 * 1000 // 3) + b"Action=GetCallerIdentity"  # ~1 MB, 333,334 fields
    started = time.perf_counter()
    unsigned = httpx.post(srv.url + "/", headers=FORM, content=body, timeout=10)
    assert unsigned.status_code == 403 and "MissingAuthenticationToken" in unsigned.text
    assert time.perf_counter() - started < 0.3  # parse_qsl of it alone takes about half a second
    # Signed, it is read, up to 64 parameters.
    resp = signed(srv, body=body)
    assert resp.status_code == 400 and "<Code>InvalidParameterValue</Code>" in resp.text


def test_other_sts_operations_are_refused_by_name(srv: KmsThread) -> None:
    error = failure(boto(srv, "sts").get_session_token)
    assert (error["Type"], error["Code"], error["status"]) == ("Sender", "InvalidAction", 400)
    assert error["Message"] == "GetSessionToken is not supported by s3kms"
    line = audit_line(srv, error["request_id"])
    assert (line["action"], line["outcome"]) == ("sts:GetSessionToken", "failed")


def test_the_other_surfaces_refuse_an_sts_signature(srv: KmsThread) -> None:
    # AWS KMS (X-Amz-Target) signed with the service `sts`.
    body = b"{}"
    headers = {
        "content-type": "application/x-amz-json-1.1",
        "x-amz-target": "TrentService.ListKeys",
    }
    resp = signed(srv, body=body, headers=headers, service="sts")
    assert resp.status_code == 400
    assert resp.json()["__type"] == "IncompleteSignatureException"
    # The admin API.
    url = srv.url + "/rustfs/admin/v3/kms/status"
    sent = sigv4.sign_headers(
        "GET", url, {}, b"", access_key=ROOT_USER, secret_key=ROOT_PASSWORD, region=REGION,
        service="sts", now=time.time(),
    )  # fmt: skip
    admin = httpx.get(url, headers=sent, timeout=10)
    assert admin.status_code == 400
    assert admin.json()["error"]["code"] == "AuthorizationHeaderMalformed"
    # And the KMS surface still answers as before without a target.
    assert signed_admin(srv.url, "GET", "/rustfs/admin/v3/kms/status").status_code == 200
    kms_untargeted = signed(
        srv, body=b"{}", headers={"content-type": "application/x-amz-json-1.1"}, service="kms"
    )
    assert kms_untargeted.json()["__type"] == "UnknownOperationException"


def test_the_aws_cli(srv: KmsThread, tmp_path: Path) -> None:
    aws = shutil.which("aws")
    if aws is None:
        pytest.skip("the AWS CLI (`aws`) is not installed")
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ROOT_USER,
        "AWS_SECRET_ACCESS_KEY": ROOT_PASSWORD,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
    }
    out = subprocess.run(
        [aws, "sts", "get-caller-identity", "--endpoint-url", srv.url, "--output", "json"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(out.stdout) == {
        "UserId": ACCOUNT, "Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:root",
    }  # fmt: skip
