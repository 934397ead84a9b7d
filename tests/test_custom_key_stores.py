"""The custom key store operations, through the real server with boto3: s3kms's accounts have no
custom key store, and every operation answers as AWS KMS does for such an account (member checks
as the model has them, CustomKeyStoreNotFoundException for any store named, the CloudHSM or XKS
error for a backing store that cannot be used), each after the caller's IAM authorisation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from s3kms.auth import sigv4
from s3kms.client import Client
from s3kms.protocols.awskms.api import MUTATING_OPERATIONS, OPERATIONS, UNSUPPORTED_OPERATIONS

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsThread, thread_settings

REGION = "us-east-1"
STORE_ID = "cks-1234567890abcdef0"
CLUSTER = "cluster-abcdefghijk"
USER_SECRET = "nobody-secret-0123456789"
CREDENTIAL = {"AccessKeyId": "ABCDEFGHIJKLMNOPQRST", "RawSecretAccessKey": "A" * 43}
CLOUDHSM: dict[str, Any] = {
    "CustomKeyStoreName": "hsm-store",
    "CloudHsmClusterId": CLUSTER,
    "TrustAnchorCertificate": "-----BEGIN CERTIFICATE-----",
    "KeyStorePassword": "kmsuser-password",
}
XKS_PUBLIC: dict[str, Any] = {
    "CustomKeyStoreName": "xks-store",
    "CustomKeyStoreType": "EXTERNAL_KEY_STORE",
    "XksProxyUriEndpoint": "https://xks.example.com",
    "XksProxyUriPath": "/kms/xks/v1",
    "XksProxyAuthenticationCredential": CREDENTIAL,
    "XksProxyConnectivity": "PUBLIC_ENDPOINT",
}
XKS_VPC: dict[str, Any] = {
    **XKS_PUBLIC,
    "XksProxyConnectivity": "VPC_ENDPOINT_SERVICE",
    "XksProxyVpcEndpointServiceName": "com.amazonaws.vpce.us-east-1.vpce-svc-0abc123",
}


def boto_kms(srv: KmsThread, *, user: str = ROOT_USER, secret: str = ROOT_PASSWORD) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=srv.url,
        region_name=REGION,
        aws_access_key_id=user,
        aws_secret_access_key=secret,
        config=Config(parameter_validation=False, retries={"max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    server = KmsThread(thread_settings(tmp_path_factory.mktemp("cks") / "data")).start()
    with Client(server.url, ROOT_USER, ROOT_PASSWORD) as admin:
        admin.add_user("nobody", [], USER_SECRET)  # no policy: every action is denied
    yield server
    server.stop()


@pytest.fixture(scope="module")
def kms(srv: KmsThread) -> Any:
    return boto_kms(srv)


@pytest.fixture(scope="module")
def nobody(srv: KmsThread) -> Any:
    return boto_kms(srv, user="nobody", secret=USER_SECRET)


def failure(call: Callable[..., Any], **params: Any) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as info:
        call(**params)
    response = info.value.response
    status = response["ResponseMetadata"]["HTTPStatusCode"]
    return response["Error"]["Code"], response["Error"].get("Message", ""), status


def expect(call: Callable[..., Any], code: str, message: str | None = None, **params: Any) -> None:
    got, text, status = failure(call, **params)
    assert (got, status) == (code, 400), (got, text, status)
    if message is not None:
        assert text == message


def validation(value: str | None, member: str, rule: str) -> str:
    where = f"Value at '{member}'" if value is None else f"Value '{value}' at '{member}'"
    return f"1 validation error detected: {where} failed to satisfy constraint: Member must {rule}"


# -- DescribeCustomKeyStores -----------------------------------------------------------------------


def test_describe_lists_no_store(kms: Any) -> None:
    out = kms.describe_custom_key_stores()
    assert out["CustomKeyStores"] == [] and out["Truncated"] is False
    assert "NextMarker" not in out
    assert kms.describe_custom_key_stores(Limit=5)["CustomKeyStores"] == []


def test_describe_a_named_store_is_not_found(kms: Any) -> None:
    with pytest.raises(kms.exceptions.CustomKeyStoreNotFoundException):
        kms.describe_custom_key_stores(CustomKeyStoreId=STORE_ID)
    expect(
        kms.describe_custom_key_stores,
        "CustomKeyStoreNotFoundException",
        f"Custom key store '{STORE_ID}' does not exist",
        CustomKeyStoreId=STORE_ID,
    )
    expect(
        kms.describe_custom_key_stores,
        "CustomKeyStoreNotFoundException",
        "Custom key store with name 'mine' does not exist",
        CustomKeyStoreName="mine",
    )


def test_describe_checks_its_members(kms: Any) -> None:
    expect(
        kms.describe_custom_key_stores,
        "ValidationException",
        validation("1001", "limit", "have value less than or equal to 1000"),
        Limit=1001,
    )
    expect(kms.describe_custom_key_stores, "ValidationException", CustomKeyStoreId="x" * 65)
    expect(kms.describe_custom_key_stores, "ValidationException", CustomKeyStoreName="n" * 257)
    expect(kms.describe_custom_key_stores, "InvalidMarkerException", Marker="bogus")


# -- Connect, Disconnect, Update, Delete -----------------------------------------------------------

BY_ID = ("connect_custom_key_store", "disconnect_custom_key_store", "delete_custom_key_store",
         "update_custom_key_store")  # fmt: skip


@pytest.mark.parametrize("operation", BY_ID)
def test_a_store_named_by_id_is_not_found(kms: Any, operation: str) -> None:
    call = getattr(kms, operation)
    with pytest.raises(kms.exceptions.CustomKeyStoreNotFoundException):
        call(CustomKeyStoreId=STORE_ID)
    expect(
        call,
        "CustomKeyStoreNotFoundException",
        f"Custom key store '{STORE_ID}' does not exist",
        CustomKeyStoreId=STORE_ID,
    )
    expect(
        call,
        "ValidationException",
        validation("null", "customKeyStoreId", "not be null").replace("Value 'null'", "Value null"),
    )
    expect(call, "ValidationException", CustomKeyStoreId="x" * 65)


def test_update_checks_its_members_first(kms: Any) -> None:
    update = kms.update_custom_key_store
    expect(update, "ValidationException", CustomKeyStoreId=STORE_ID, NewCustomKeyStoreName="")
    expect(
        update,
        "ValidationException",
        validation("cluster-1", "cloudHsmClusterId", "have length greater than or equal to 19"),
        CustomKeyStoreId=STORE_ID,
        CloudHsmClusterId="cluster-1",
    )
    expect(update, "ValidationException", CustomKeyStoreId=STORE_ID, KeyStorePassword="short")
    expect(
        update,
        "ValidationException",
        CustomKeyStoreId=STORE_ID,
        XksProxyConnectivity="CARRIER_PIGEON",
    )
    expect(
        update,
        "CustomKeyStoreNotFoundException",
        CustomKeyStoreId=STORE_ID,
        NewCustomKeyStoreName="renamed",
        XksProxyUriPath="/prefix/kms/xks/v1",
        XksProxyAuthenticationCredential=CREDENTIAL,
    )


# -- CreateCustomKeyStore --------------------------------------------------------------------------


def test_create_cloudhsm_store_finds_no_cluster(kms: Any) -> None:
    with pytest.raises(kms.exceptions.CloudHsmClusterNotFoundException):
        kms.create_custom_key_store(**CLOUDHSM)
    explicit = {**CLOUDHSM, "CustomKeyStoreType": "AWS_CLOUDHSM"}
    expect(
        kms.create_custom_key_store,
        "CloudHsmClusterNotFoundException",
        f"The CloudHSM cluster {CLUSTER} cannot be found: s3kms has no CloudHSM clusters.",
        **explicit,
    )


def test_create_external_store_reaches_no_proxy(kms: Any) -> None:
    with pytest.raises(kms.exceptions.XksProxyUriUnreachableException):
        kms.create_custom_key_store(**XKS_PUBLIC)
    with pytest.raises(kms.exceptions.XksProxyVpcEndpointServiceNotFoundException):
        kms.create_custom_key_store(**XKS_VPC)
    owned = {**XKS_VPC, "XksProxyVpcEndpointServiceOwner": "111122223333"}
    expect(kms.create_custom_key_store, "XksProxyVpcEndpointServiceNotFoundException", **owned)


def without(params: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != name}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (without(CLOUDHSM, "CustomKeyStoreName"),
         "1 validation error detected: Value null at 'customKeyStoreName' failed to satisfy "
         "constraint: Member must not be null"),
        ({**CLOUDHSM, "CustomKeyStoreName": "n" * 257},
         validation("n" * 257, "customKeyStoreName", "have length less than or equal to 256")),
        ({**CLOUDHSM, "CustomKeyStoreType": "HSM"},
         validation("HSM", "customKeyStoreType",
                    "satisfy enum value set: [AWS_CLOUDHSM, EXTERNAL_KEY_STORE]")),
        ({**CLOUDHSM, "CloudHsmClusterId": "cluster-1111111111111"},
         validation("cluster-1111111111111", "cloudHsmClusterId",
                    "satisfy regular expression pattern: cluster-[2-7a-zA-Z]{11,16}")),
        ({**CLOUDHSM, "KeyStorePassword": "short"},
         validation(None, "keyStorePassword", "have length greater than or equal to 7")),
        ({**CLOUDHSM, "TrustAnchorCertificate": "c" * 5001}, None),
        (without(CLOUDHSM, "CloudHsmClusterId"),
         "CloudHsmClusterId is required for a custom key store of type AWS_CLOUDHSM."),
        (without(CLOUDHSM, "TrustAnchorCertificate"),
         "TrustAnchorCertificate is required for a custom key store of type AWS_CLOUDHSM."),
        (without(CLOUDHSM, "KeyStorePassword"),
         "KeyStorePassword is required for a custom key store of type AWS_CLOUDHSM."),
        ({**CLOUDHSM, "XksProxyUriPath": "/kms/xks/v1"},
         "XksProxyUriPath is not valid for a custom key store of type AWS_CLOUDHSM."),
        ({**XKS_PUBLIC, "CloudHsmClusterId": CLUSTER},
         "CloudHsmClusterId is not valid for a custom key store of type EXTERNAL_KEY_STORE."),
        (without(XKS_PUBLIC, "XksProxyUriEndpoint"),
         "XksProxyUriEndpoint is required for a custom key store of type EXTERNAL_KEY_STORE."),
        (without(XKS_PUBLIC, "XksProxyUriPath"),
         "XksProxyUriPath is required for a custom key store of type EXTERNAL_KEY_STORE."),
        (without(XKS_PUBLIC, "XksProxyAuthenticationCredential"),
         "XksProxyAuthenticationCredential is required for a custom key store of type "
         "EXTERNAL_KEY_STORE."),
        (without(XKS_PUBLIC, "XksProxyConnectivity"),
         "XksProxyConnectivity is required for a custom key store of type EXTERNAL_KEY_STORE."),
        (without(XKS_VPC, "XksProxyVpcEndpointServiceName"),
         "XksProxyVpcEndpointServiceName is required for an external key store with "
         "VPC_ENDPOINT_SERVICE connectivity."),
        ({**XKS_PUBLIC, "XksProxyVpcEndpointServiceName": XKS_VPC["XksProxyVpcEndpointServiceName"]},
         "XksProxyVpcEndpointServiceName is valid only for an external key store with "
         "VPC_ENDPOINT_SERVICE connectivity."),
        ({**XKS_PUBLIC, "XksProxyUriEndpoint": "http://xks.example.com"},
         validation("http://xks.example.com", "xksProxyUriEndpoint",
                    "satisfy regular expression pattern: ^https://[a-zA-Z0-9.-]+$")),
        ({**XKS_PUBLIC, "XksProxyUriPath": "/kms/xks/v1/extra"},
         validation("/kms/xks/v1/extra", "xksProxyUriPath",
                    "satisfy regular expression pattern: "
                    r"^(/[a-zA-Z0-9\/_-]+/kms/xks/v\d{1,2})$|^(/kms/xks/v\d{1,2})$")),
        ({**XKS_PUBLIC, "XksProxyConnectivity": "DIRECT"},
         validation("DIRECT", "xksProxyConnectivity",
                    "satisfy enum value set: [PUBLIC_ENDPOINT, VPC_ENDPOINT_SERVICE]")),
        ({**XKS_VPC, "XksProxyVpcEndpointServiceName": "vpce-svc-0abc123-but-not-a-name"}, None),
        ({**XKS_VPC, "XksProxyVpcEndpointServiceOwner": "12345"}, None),
        ({**XKS_PUBLIC, "XksProxyAuthenticationCredential": {"AccessKeyId": "A" * 20}},
         "1 validation error detected: Value null at "
         "'xksProxyAuthenticationCredential.rawSecretAccessKey' failed to satisfy constraint: "
         "Member must not be null"),
        ({**XKS_PUBLIC, "XksProxyAuthenticationCredential": {**CREDENTIAL, "AccessKeyId": "a" * 20}},
         validation(None, "xksProxyAuthenticationCredential.accessKeyId",
                    "satisfy regular expression pattern: ^[A-Z2-7]+$")),
        ({**XKS_PUBLIC,
          "XksProxyAuthenticationCredential": {**CREDENTIAL, "RawSecretAccessKey": "s3cret"}},
         validation(None, "xksProxyAuthenticationCredential.rawSecretAccessKey",
                    "have length greater than or equal to 43")),
    ],
)  # fmt: skip
def test_create_checks_its_members(kms: Any, params: dict[str, Any], message: str | None) -> None:
    code, text, status = failure(kms.create_custom_key_store, **params)
    assert (code, status) == ("ValidationException", 400), (code, text)
    if message is not None:
        assert text == message
    assert "s3cret" not in text and "kmsuser-password" not in text  # secrets are never echoed


def post(srv: KmsThread, operation: str, body: dict[str, Any]) -> httpx.Response:
    """A signed request botocore would not serialise (a member of the wrong JSON type)."""
    url, content = srv.url + "/", json.dumps(body).encode()
    headers = {"content-type": "application/x-amz-json-1.1",
               "x-amz-target": f"TrentService.{operation}"}  # fmt: skip
    signed = sigv4.sign_headers(
        "POST", url, headers, content, access_key=ROOT_USER, secret_key=ROOT_PASSWORD,
        region=REGION, service="kms", now=time.time(), s3_flavour=False,
    )  # fmt: skip
    return httpx.post(url, headers=signed, content=content, timeout=10)


@pytest.mark.parametrize(
    "body",
    [
        {**XKS_PUBLIC, "XksProxyAuthenticationCredential": "key:secret"},
        {**XKS_PUBLIC, "XksProxyAuthenticationCredential": {**CREDENTIAL, "AccessKeyId": 7}},
        {**CLOUDHSM, "CustomKeyStoreName": 5},
        {**CLOUDHSM, "KeyStorePassword": ["kmsuser-password"]},
    ],
)
def test_create_wrong_member_types_are_serialization_errors(
    srv: KmsThread, body: dict[str, Any]
) -> None:
    answer = post(srv, "CreateCustomKeyStore", body)
    assert answer.status_code == 400
    assert answer.json()["__type"] == "SerializationException"
    assert "kmsuser-password" not in answer.text


# -- CreateKey in a custom key store ---------------------------------------------------------------


def test_create_key_in_a_custom_key_store_is_not_found(kms: Any) -> None:
    before = len(kms.list_keys(Limit=1000)["Keys"])
    for origin in ({}, {"Origin": "AWS_CLOUDHSM"}, {"Origin": "EXTERNAL_KEY_STORE"}):
        with pytest.raises(kms.exceptions.CustomKeyStoreNotFoundException):
            kms.create_key(CustomKeyStoreId=STORE_ID, **origin)
    expect(
        kms.create_key,
        "CustomKeyStoreNotFoundException",
        f"Custom key store '{STORE_ID}' does not exist",
        CustomKeyStoreId=STORE_ID,
    )
    assert len(kms.list_keys(Limit=1000)["Keys"]) == before  # nothing was created


def test_generate_random_from_a_custom_key_store_is_not_found(kms: Any) -> None:
    """GenerateRandom's CustomKeyStoreId names a store too (the model lists the error)."""
    expect(
        kms.generate_random,
        "CustomKeyStoreNotFoundException",
        f"Custom key store '{STORE_ID}' does not exist",
        NumberOfBytes=16,
        CustomKeyStoreId=STORE_ID,
    )
    assert len(kms.generate_random(NumberOfBytes=16)["Plaintext"]) == 16


# -- authorisation ---------------------------------------------------------------------------------

CALLS = [
    ("create_custom_key_store", "CreateCustomKeyStore", CLOUDHSM),
    ("describe_custom_key_stores", "DescribeCustomKeyStores", {}),
    ("connect_custom_key_store", "ConnectCustomKeyStore", {"CustomKeyStoreId": STORE_ID}),
    ("disconnect_custom_key_store", "DisconnectCustomKeyStore", {"CustomKeyStoreId": STORE_ID}),
    ("update_custom_key_store", "UpdateCustomKeyStore", {"CustomKeyStoreId": STORE_ID}),
    ("delete_custom_key_store", "DeleteCustomKeyStore", {"CustomKeyStoreId": STORE_ID}),
]


@pytest.mark.parametrize(("method", "operation", "params"), CALLS, ids=[c[1] for c in CALLS])
def test_each_operation_is_authorised(
    nobody: Any, method: str, operation: str, params: dict[str, Any]
) -> None:
    code, text, status = failure(getattr(nobody, method), **params)
    assert (code, status) == ("AccessDeniedException", 400), (code, text)
    assert f"kms:{operation}" in text


def test_each_operation_is_served_and_audited_as_aws_names_it() -> None:
    for _, operation, _ in CALLS:
        assert operation in OPERATIONS and operation not in UNSUPPORTED_OPERATIONS
        assert (operation in MUTATING_OPERATIONS) == (operation != "DescribeCustomKeyStores")
