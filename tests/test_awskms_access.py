"""Key policies and grants on the AWS KMS API, through a real server with boto3.

Who may use a key: the key policy (PutKeyPolicy, GetKeyPolicy, ListKeyPolicies, CreateKey's
Policy, the lockout safety check), grants (CreateGrant, ListGrants, ListRetirableGrants,
RetireGrant, RevokeGrant, grant tokens) and the users' identity policies, together. Users are
made by root through the admin API, then sign their own requests. The module runs on both
backends (Local, and Vault transit on a real OpenBao); a restart and two Vault nodes sharing one
store have tests of their own.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from s3kms.client import Client
from s3kms.keystore.vault import VaultSettings

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsThread, thread_settings

REGION = "us-east-1"
ACCOUNT = "000000000000"
ARN_PREFIX = f"arn:aws:kms:{REGION}:{ACCOUNT}:"
ROOT_ARN = f"arn:aws:iam::{ACCOUNT}:root"
USER_SECRET = "a-user-secret-for-the-access-tests"  # the same on every node of a test

# AWS's default key policy, byte for byte as GetKeyPolicy answers it.
DEFAULT_POLICY = (
    "{\n"
    '  "Version" : "2012-10-17",\n'
    '  "Id" : "key-default-1",\n'
    '  "Statement" : [ {\n'
    '    "Sid" : "Enable IAM User Permissions",\n'
    '    "Effect" : "Allow",\n'
    '    "Principal" : {\n'
    f'      "AWS" : "{ROOT_ARN}"\n'
    "    },\n"
    '    "Action" : "kms:*",\n'
    '    "Resource" : "*"\n'
    "  } ]\n"
    "}"
)
LOCKOUT = "The new key policy will not allow you to update the key policy in the future."
ALIASES_NOT_SUPPORTED = "Key Aliases are not supported for this operation."


def user_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:user/{name}"


def key_arn(key_id: str) -> str:
    return f"{ARN_PREFIX}key/{key_id}"


def boto_kms(
    srv: KmsThread, access: str = ROOT_USER, secret: str = ROOT_PASSWORD, validate: bool = True
) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=srv.url,
        region_name=REGION,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(parameter_validation=validate, retries={"max_attempts": 1}),
    )


def failure(call: Callable[..., Any], **params: Any) -> tuple[str, str | None]:
    """(code, message) of the ClientError `call` raises; it must raise one, with HTTP 400."""
    with pytest.raises(ClientError) as info:
        call(**params)
    response = info.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400, response
    return response["Error"]["Code"], response["Error"].get("Message")


def expect(call: Callable[..., Any], code: str, message: str | None = None, **params: Any) -> None:
    got_code, got_message = failure(call, **params)
    assert got_code == code, (got_code, got_message)
    if message is not None:
        assert got_message == message


def validation(value: str | None, member: str, rule: str) -> str:
    where = f"Value at '{member}'" if value is None else f"Value '{value}' at '{member}'"
    return f"1 validation error detected: {where} failed to satisfy constraint: Member must {rule}"


def denial(who: str, action: str, key_id: str, why: str) -> str:
    return (
        f"User: {who} is not authorized to perform: {action} on resource: {key_arn(key_id)} {why}"
    )


def no_policy(kind: str, action: str) -> str:
    return f"because no {kind}-based policy allows the {action} action"


def key_policy(*statements: dict[str, Any]) -> str:
    """A key policy giving the account root everything, and `statements`."""
    root = {
        "Sid": "Enable IAM User Permissions",
        "Effect": "Allow",
        "Principal": {"AWS": ROOT_ARN},
        "Action": "kms:*",
        "Resource": "*",
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [root, *statements]}, indent=2)


def allow(principal: str, actions: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "Effect": "Allow",
        "Principal": {"AWS": principal},
        "Action": actions,
        "Resource": "*",
        **extra,
    }


# -- servers and users --------------------------------------------------------------------------


def vault_settings(request: pytest.FixtureRequest, prefix: str, **extra: Any) -> VaultSettings:
    bao = request.getfixturevalue("bao")  # a real OpenBao (or the external Vault)
    return VaultSettings(addresses=(bao.addr,), token=bao.root_token, kv_prefix=prefix, **extra)


def start_server(path: Path, backend: str, request: pytest.FixtureRequest) -> KmsThread:
    if backend == "local":
        return KmsThread(thread_settings(path / "data")).start()
    vault = vault_settings(request, f"access-{uuid.uuid4().hex[:12]}")
    return KmsThread(thread_settings(path / "data", backend="vault", vault=vault)).start()


@pytest.fixture(scope="module", params=["local", "vault"])
def backend(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, backend: str, request: pytest.FixtureRequest
) -> Iterator[KmsThread]:
    server = start_server(tmp_path_factory.mktemp("access"), backend, request)
    with Client(server.url, ROOT_USER, ROOT_PASSWORD) as admin:
        add_users(admin)
    yield server
    server.stop()


def add_users(admin: Client) -> None:
    """The users of these tests: `nobody` has no policy at all; `app` may use every key for
    crypto and describe it (identity policy, the default key policy delegating to it); `delegate`
    may retire grants (kms:RetireGrant by IAM); `retirer` has no policy either."""
    admin.put_policy(
        "access-app",
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": [
                        "kms:Encrypt",
                        "kms:Decrypt",
                        "kms:GenerateDataKey",
                        "kms:DescribeKey",
                    ],
                    "Resource": "arn:aws:kms:*:*:key/*",
                }
            ]
        },
    )
    admin.put_policy(
        "access-retire",
        {"Statement": [{"Effect": "Allow", "Action": "kms:RetireGrant", "Resource": "*"}]},
    )
    admin.put_policy(
        "access-conditions",
        {
            "Statement": [
                {  # only symmetric keys
                    "Effect": "Allow",
                    "Action": "kms:CreateKey",
                    "Resource": "*",
                    "Condition": {"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}},
                },
                {  # tags with the key "team" only
                    "Effect": "Allow",
                    "Action": "kms:TagResource",
                    "Resource": "arn:aws:kms:*:*:key/*",
                    "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": ["team"]}},
                },
                {  # grants of Decrypt alone
                    "Effect": "Allow",
                    "Action": "kms:CreateGrant",
                    "Resource": "arn:aws:kms:*:*:key/*",
                    "Condition": {
                        "ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt"]}
                    },
                },
            ]
        },
    )
    admin.add_user("nobody", [], USER_SECRET)
    admin.add_user("app", ["access-app"], USER_SECRET)
    admin.add_user("delegate", ["access-retire"], USER_SECRET)
    admin.add_user("retirer", [], USER_SECRET)
    admin.add_user("conditional", ["access-conditions"], USER_SECRET)


@pytest.fixture(scope="module")
def kms(srv: KmsThread) -> Any:
    return boto_kms(srv)


@pytest.fixture(scope="module")
def raw(srv: KmsThread) -> Any:
    """Root, without client-side validation: the server checks maxima, enums and patterns."""
    return boto_kms(srv, validate=False)


@pytest.fixture(scope="module")
def nobody(srv: KmsThread) -> Any:
    return boto_kms(srv, "nobody", USER_SECRET)


@pytest.fixture(scope="module")
def app(srv: KmsThread) -> Any:
    return boto_kms(srv, "app", USER_SECRET)


@pytest.fixture
def key(kms: Any) -> str:
    key_id: str = kms.create_key()["KeyMetadata"]["KeyId"]
    return key_id


def data_key_with(client: Any, key_id: str, context: dict[str, str] | None = None) -> Any:
    params: dict[str, Any] = {"KeyId": key_id, "KeySpec": "AES_256"}
    if context is not None:
        params["EncryptionContext"] = context
    return client.generate_data_key(**params)


# -- key policies -------------------------------------------------------------------------------


def test_a_new_key_has_awss_default_key_policy(kms: Any, key: str) -> None:
    got = kms.get_key_policy(KeyId=key, PolicyName="default")
    assert got["Policy"] == DEFAULT_POLICY
    assert got["PolicyName"] == "default"
    assert kms.get_key_policy(KeyId=key_arn(key))["Policy"] == DEFAULT_POLICY  # name optional
    listed = kms.list_key_policies(KeyId=key)
    assert listed["PolicyNames"] == ["default"] and listed["Truncated"] is False
    assert "NextMarker" not in listed
    assert kms.list_key_policies(KeyId=key, Limit=1)["PolicyNames"] == ["default"]


def test_put_key_policy_is_answered_as_given(kms: Any, key: str) -> None:
    text = key_policy(allow(user_arn("app"), ["kms:DescribeKey"])) + "\n\n"
    assert kms.put_key_policy(KeyId=key, PolicyName="default", Policy=text)
    assert kms.get_key_policy(KeyId=key)["Policy"] == text
    # without PolicyName, and through the ARN
    kms.put_key_policy(KeyId=key_arn(key), Policy=DEFAULT_POLICY)
    assert kms.get_key_policy(KeyId=key)["Policy"] == DEFAULT_POLICY


def test_create_key_with_a_policy(kms: Any) -> None:
    text = key_policy(allow(user_arn("nobody"), ["kms:Encrypt"]))
    key_id = kms.create_key(Policy=text)["KeyMetadata"]["KeyId"]
    assert kms.get_key_policy(KeyId=key_id)["Policy"] == text
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"


def test_key_policy_errors(kms: Any, raw: Any, key: str) -> None:
    kms.create_alias(AliasName=f"alias/policy-{key}", TargetKeyId=key)
    for ref in (f"alias/policy-{key}", f"{ARN_PREFIX}alias/policy-{key}"):
        expect(kms.get_key_policy, "InvalidArnException", ALIASES_NOT_SUPPORTED, KeyId=ref)
        expect(kms.list_key_policies, "InvalidArnException", ALIASES_NOT_SUPPORTED, KeyId=ref)
        expect(
            kms.put_key_policy, "InvalidArnException", ALIASES_NOT_SUPPORTED,
            KeyId=ref, Policy=DEFAULT_POLICY,
        )  # fmt: skip
    expect(
        kms.put_key_policy, "ValidationException",
        "The AWS_RAM policy can only be managed by the RAM service.",
        KeyId=key, PolicyName="AWS_RAM", Policy=DEFAULT_POLICY,
    )  # fmt: skip
    expect(kms.get_key_policy, "NotFoundException", KeyId=key, PolicyName="AWS_RAM")
    expect(
        raw.get_key_policy, "ValidationException",
        validation("no-such", "policyName", r"satisfy regular expression pattern: [\w]+"),
        KeyId=key, PolicyName="no-such",
    )  # fmt: skip
    expect(
        raw.put_key_policy, "ValidationException",
        "1 validation error detected: Value null at 'policy' failed to satisfy constraint: "
        "Member must not be null",
        KeyId=key,
    )  # fmt: skip
    expect(
        kms.put_key_policy, "MalformedPolicyDocumentException", "The key policy is not valid JSON.",
        KeyId=key, Policy="{not json",
    )  # fmt: skip
    unknown = key_policy(allow(user_arn("no-such-user"), ["kms:Encrypt"]))
    expect(
        kms.put_key_policy, "MalformedPolicyDocumentException",
        "Policy contains a statement with one or more invalid principals.",
        KeyId=key, Policy=unknown,
    )  # fmt: skip
    expect(kms.put_key_policy, "LimitExceededException", KeyId=key, Policy=" " * 40000)
    expect(kms.put_key_policy, "ValidationException", KeyId=key, Policy='{"\u0100": 1}')
    missing = str(uuid.uuid4())
    expect(
        kms.get_key_policy, "NotFoundException", f"Key '{key_arn(missing)}' does not exist",
        KeyId=missing,
    )  # fmt: skip
    # Nothing was changed by any of these.
    assert kms.get_key_policy(KeyId=key)["Policy"] == DEFAULT_POLICY


def test_the_lockout_safety_check(kms: Any, key: str) -> None:
    """A policy that would not let the caller put a key policy again is refused, unless
    BypassPolicyLockoutSafetyCheck; once bypassed, the caller is indeed locked out."""
    only_app = json.dumps(
        {"Version": "2012-10-17", "Statement": [allow(user_arn("app"), ["kms:*"])]}
    )
    expect(
        kms.put_key_policy, "MalformedPolicyDocumentException", LOCKOUT, KeyId=key, Policy=only_app
    )
    expect(kms.create_key, "MalformedPolicyDocumentException", LOCKOUT, Policy=only_app)
    assert kms.get_key_policy(KeyId=key)["Policy"] == DEFAULT_POLICY
    kms.put_key_policy(KeyId=key, Policy=only_app, BypassPolicyLockoutSafetyCheck=True)
    code, message = failure(kms.put_key_policy, KeyId=key, Policy=DEFAULT_POLICY)
    assert code == "AccessDeniedException"
    assert message == denial(
        ROOT_ARN, "kms:PutKeyPolicy", key, no_policy("resource", "kms:PutKeyPolicy")
    )
    locked = kms.create_key(Policy=only_app, BypassPolicyLockoutSafetyCheck=True)["KeyMetadata"]
    expect(kms.describe_key, "AccessDeniedException", KeyId=locked["KeyId"])


def test_a_key_policy_can_allow_a_user_with_no_identity_policy(
    kms: Any, nobody: Any, key: str
) -> None:
    who = user_arn("nobody")
    code, message = failure(nobody.encrypt, KeyId=key, Plaintext=b"x")
    assert code == "AccessDeniedException"
    assert message == denial(who, "kms:Encrypt", key, no_policy("identity", "kms:Encrypt"))
    kms.put_key_policy(
        KeyId=key, Policy=key_policy(allow(who, ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"]))
    )
    blob = nobody.encrypt(KeyId=key, Plaintext=b"secret", EncryptionContext={"a": "b"})
    plain = nobody.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"a": "b"})
    assert plain["Plaintext"] == b"secret"
    assert nobody.describe_key(KeyId=key)["KeyMetadata"]["KeyId"] == key
    code, message = failure(data_key_with, client=nobody, key_id=key)
    assert code == "AccessDeniedException"
    # The key policy delegates to the account, whose identity policies give nobody nothing.
    assert message == denial(
        who, "kms:GenerateDataKey", key, no_policy("identity", "kms:GenerateDataKey")
    )


def test_a_key_policy_can_deny_root(kms: Any, key: str) -> None:
    deny = {
        "Effect": "Deny",
        "Principal": {"AWS": ROOT_ARN},
        "Action": "kms:Decrypt",
        "Resource": "*",
    }
    kms.put_key_policy(KeyId=key, Policy=key_policy(deny))
    blob = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    code, message = failure(kms.decrypt, CiphertextBlob=blob)
    assert code == "AccessDeniedException"
    assert message == denial(
        ROOT_ARN, "kms:Decrypt", key, "with an explicit deny in a resource-based policy"
    )
    expect(kms.decrypt, "AccessDeniedException", CiphertextBlob=blob, DryRun=True)


def test_default_key_policy_and_identity_policies_as_before(app: Any, key: str) -> None:
    blob = app.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    assert app.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
    assert data_key_with(app, key)["KeyId"] == key_arn(key)
    code, message = failure(app.disable_key, KeyId=key)
    assert code == "AccessDeniedException"
    assert message == denial(
        user_arn("app"), "kms:DisableKey", key, no_policy("identity", "kms:DisableKey")
    )


def test_request_alias_condition(kms: Any, nobody: Any, key: str) -> None:
    """kms:RequestAlias: the KeyId of the request, when it names an alias."""
    alias = f"alias/request-{key}"
    kms.create_alias(AliasName=alias, TargetKeyId=key)
    condition = {"StringEquals": {"kms:RequestAlias": alias}}
    kms.put_key_policy(
        KeyId=key,
        Policy=key_policy(allow(user_arn("nobody"), ["kms:Encrypt"], Condition=condition)),
    )
    assert nobody.encrypt(KeyId=alias, Plaintext=b"x")["KeyId"] == key_arn(key)
    assert nobody.encrypt(KeyId=f"{ARN_PREFIX}{alias}", Plaintext=b"x")
    expect(nobody.encrypt, "AccessDeniedException", KeyId=key, Plaintext=b"x")


def test_resource_aliases_condition(kms: Any, nobody: Any, key: str) -> None:
    """kms:ResourceAliases: the aliases the key has now, whatever the request named it by."""
    alias = f"alias/resource-{key}"
    condition = {"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/resource-*"}}
    kms.put_key_policy(
        KeyId=key,
        Policy=key_policy(allow(user_arn("nobody"), ["kms:Encrypt"], Condition=condition)),
    )
    expect(nobody.encrypt, "AccessDeniedException", KeyId=key, Plaintext=b"x")  # no alias yet
    kms.create_alias(AliasName=alias, TargetKeyId=key)
    assert nobody.encrypt(KeyId=key, Plaintext=b"x")["KeyId"] == key_arn(key)  # by its id
    kms.delete_alias(AliasName=alias)
    expect(nobody.encrypt, "AccessDeniedException", KeyId=key, Plaintext=b"x")


def test_identity_policy_conditions_on_request_facts(srv: KmsThread, kms: Any, key: str) -> None:
    """CreateKey's kms:KeySpec, TagResource's aws:TagKeys, CreateGrant's kms:GrantOperations."""
    user = boto_kms(srv, "conditional", USER_SECRET)
    assert user.create_key()["KeyMetadata"]["KeySpec"] == "SYMMETRIC_DEFAULT"
    expect(
        user.create_key, "AccessDeniedException", KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC"
    )
    user.tag_resource(KeyId=key, Tags=[{"TagKey": "team", "TagValue": "blue"}])
    expect(
        user.tag_resource,
        "AccessDeniedException",
        KeyId=key,
        Tags=[{"TagKey": "x", "TagValue": "y"}],
    )
    grant = user.create_grant(
        KeyId=key, GranteePrincipal=user_arn("nobody"), Operations=["Decrypt"]
    )
    assert grant["GrantId"]
    expect(
        user.create_grant, "AccessDeniedException",
        KeyId=key, GranteePrincipal=user_arn("nobody"), Operations=["Decrypt", "Encrypt"],
    )  # fmt: skip


# -- grants -------------------------------------------------------------------------------------


def test_a_grant_with_an_encryption_context_subset(kms: Any, nobody: Any, key: str) -> None:
    expect(data_key_with, "AccessDeniedException", client=nobody, key_id=key)
    kms.create_grant(
        KeyId=key,
        GranteePrincipal=user_arn("nobody"),
        Operations=["GenerateDataKey", "Decrypt"],
        Constraints={"EncryptionContextSubset": {"purpose": "backup"}},
    )
    wider = {"purpose": "backup", "host": "db-1"}
    made = data_key_with(nobody, key, wider)
    again = nobody.decrypt(CiphertextBlob=made["CiphertextBlob"], EncryptionContext=wider)
    assert again["Plaintext"] == made["Plaintext"]
    for context in (None, {"purpose": "other"}, {"Purpose": "Backup"}, {"host": "db-1"}):
        expect(data_key_with, "AccessDeniedException", client=nobody, key_id=key, context=context)
    # The grant allows nothing else.
    expect(
        nobody.encrypt, "AccessDeniedException", KeyId=key, Plaintext=b"x", EncryptionContext=wider
    )


def test_a_grant_with_an_encryption_context_equals(kms: Any, nobody: Any, key: str) -> None:
    kms.create_grant(
        KeyId=key,
        GranteePrincipal=user_arn("nobody"),
        Operations=["GenerateDataKey", "Decrypt"],
        Constraints={"EncryptionContextEquals": {"purpose": "backup"}},
    )
    made = data_key_with(nobody, key, {"purpose": "backup"})
    assert (
        nobody.decrypt(
            CiphertextBlob=made["CiphertextBlob"], EncryptionContext={"purpose": "backup"}
        )["Plaintext"]
        == made["Plaintext"]
    )
    for context in (None, {"purpose": "backup", "host": "db-1"}, {"purpose": "Backup"}):
        expect(data_key_with, "AccessDeniedException", client=nobody, key_id=key, context=context)


def test_a_grant_token_is_usable_in_the_same_request(
    kms: Any, nobody: Any, raw: Any, key: str
) -> None:
    grant = kms.create_grant(
        KeyId=key, GranteePrincipal=user_arn("nobody"), Operations=["Encrypt", "DescribeKey"]
    )
    token = grant["GrantToken"]
    assert nobody.encrypt(KeyId=key, Plaintext=b"x", GrantTokens=[token])["KeyId"] == key_arn(key)
    assert nobody.describe_key(KeyId=key, GrantTokens=[token])["KeyMetadata"]["KeyId"] == key
    # Once revoked, the token allows nothing.
    kms.revoke_grant(KeyId=key, GrantId=grant["GrantId"])
    expect(nobody.encrypt, "AccessDeniedException", KeyId=key, Plaintext=b"x", GrantTokens=[token])
    # GrantTokens: at most 10, each of 1-8192 characters.
    expect(
        raw.encrypt, "ValidationException",
        validation("[" + ", ".join(["t"] * 11) + "]", "grantTokens",
                   "have length less than or equal to 10"),
        KeyId=key, Plaintext=b"x", GrantTokens=["t"] * 11,
    )  # fmt: skip
    expect(
        raw.encrypt, "ValidationException",
        validation("", "grantTokens.1.member", "have length greater than or equal to 1"),
        KeyId=key, Plaintext=b"x", GrantTokens=[""],
    )  # fmt: skip


def test_create_grant_by_name_is_idempotent(kms: Any, key: str) -> None:
    params: dict[str, Any] = {
        "KeyId": key,
        "GranteePrincipal": user_arn("app"),
        "Operations": ["Decrypt", "DescribeKey"],
        "Name": "backup-reader",
    }
    first = kms.create_grant(**params)
    second = kms.create_grant(**params)
    assert second["GrantId"] == first["GrantId"]
    assert len(kms.list_grants(KeyId=key)["Grants"]) == 1
    other = kms.create_grant(**{**params, "Operations": ["Decrypt"]})
    assert other["GrantId"] != first["GrantId"]
    assert len(kms.list_grants(KeyId=key)["Grants"]) == 2


def test_list_grants(kms: Any, raw: Any, key: str) -> None:
    made = kms.create_grant(
        KeyId=key,
        GranteePrincipal=user_arn("nobody"),
        RetiringPrincipal=user_arn("retirer"),
        Operations=["Encrypt", "Decrypt"],
        Constraints={"EncryptionContextSubset": {"team": "blue"}},
        Name="named",
    )
    kms.create_grant(KeyId=key, GranteePrincipal=user_arn("app"), Operations=["DescribeKey"])
    kms.create_grant(KeyId=key, GranteePrincipal=user_arn("app"), Operations=["Encrypt"])
    grants = kms.list_grants(KeyId=key)
    assert grants["Truncated"] is False and len(grants["Grants"]) == 3
    (entry,) = kms.list_grants(KeyId=key, GrantId=made["GrantId"])["Grants"]
    assert entry["CreationDate"].timestamp() > 0
    del entry["CreationDate"]
    assert entry == {
        "KeyId": key_arn(key),
        "GrantId": made["GrantId"],
        "Name": "named",
        "GranteePrincipal": user_arn("nobody"),
        "RetiringPrincipal": user_arn("retirer"),
        "IssuingAccount": ROOT_ARN,
        "Operations": ["Encrypt", "Decrypt"],
        "Constraints": {"EncryptionContextSubset": {"team": "blue"}},
    }
    plain = kms.list_grants(KeyId=key, GranteePrincipal=user_arn("app"))["Grants"]
    assert len(plain) == 2 and {g["Name"] for g in plain} == {""}
    assert all("RetiringPrincipal" not in g and "Constraints" not in g for g in plain)
    # Pages of one, in creation order.
    seen, marker = [], None
    while True:
        page = kms.list_grants(KeyId=key, Limit=1, **({"Marker": marker} if marker else {}))
        seen += [g["GrantId"] for g in page["Grants"]]
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert seen == [g["GrantId"] for g in grants["Grants"]] and len(seen) == 3
    expect(kms.list_grants, "InvalidMarkerException", KeyId=key, Marker="bogus")
    expect(kms.list_grants, "InvalidGrantIdException", KeyId=key, GrantId="not-a-grant-id")
    assert kms.list_grants(KeyId=key, GrantId="0" * 64)["Grants"] == []
    expect(
        raw.list_grants, "ValidationException",
        validation("0", "limit", "have value greater than or equal to 1"), KeyId=key, Limit=0,
    )  # fmt: skip
    expect(kms.list_grants, "InvalidArnException", ALIASES_NOT_SUPPORTED, KeyId="alias/any")
    expect(kms.list_grants, "NotFoundException", KeyId=str(uuid.uuid4()))


def test_create_grant_errors(kms: Any, raw: Any, nobody: Any, key: str) -> None:
    grantee = user_arn("nobody")
    base: dict[str, Any] = {"KeyId": key, "GranteePrincipal": grantee, "Operations": ["Decrypt"]}
    expect(kms.create_grant, "InvalidArnException", ALIASES_NOT_SUPPORTED,
           **{**base, "KeyId": "alias/anything"})  # fmt: skip
    expect(
        raw.create_grant, "ValidationException",
        "1 validation error detected: Value '[Decrypt, Bogus]' at 'operations' failed to satisfy "
        "constraint: Member must satisfy constraint: [Member must satisfy enum value set: "
        "[Decrypt, Encrypt, GenerateDataKey, GenerateDataKeyWithoutPlaintext, ReEncryptFrom, "
        "ReEncryptTo, Sign, Verify, GetPublicKey, CreateGrant, RetireGrant, DescribeKey, "
        "GenerateDataKeyPair, GenerateDataKeyPairWithoutPlaintext, GenerateMac, VerifyMac, "
        "DeriveSharedSecret, Encapsulate, Decapsulate]]",
        **{**base, "Operations": ["Decrypt", "Bogus"]},
    )  # fmt: skip
    expect(raw.create_grant, "ValidationException",
           validation("[]", "operations", "have length greater than or equal to 1"),
           **{**base, "Operations": []})  # fmt: skip
    expect(kms.create_grant, "ValidationException",
           "Grants must not contain only the CreateGrant operation.",
           **{**base, "Operations": ["CreateGrant"]})  # fmt: skip
    expect(kms.create_grant, "ValidationException", **{**base, "Operations": ["Sign"]})
    for bad in ("arn:aws:iam::000000000000:user/no-such-user", "arn:aws:iam::000000000000:role/r",
                "arn:aws:iam::111122223333:root"):  # fmt: skip
        expect(kms.create_grant, "InvalidArnException",
               f"ARN does not refer to a valid principal: {bad}",
               **{**base, "GranteePrincipal": bad})  # fmt: skip
        expect(kms.create_grant, "InvalidArnException",
               f"ARN does not refer to a valid principal: {bad}",
               **{**base, "RetiringPrincipal": bad})  # fmt: skip
    expect(raw.create_grant, "ValidationException",
           validation("a b", "granteePrincipal",
                      r"satisfy regular expression pattern: ^[\w+=,.@:/-]+$"),
           **{**base, "GranteePrincipal": "a b"})  # fmt: skip
    expect(raw.create_grant, "ValidationException",
           validation("bad name!", "name", "satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"),
           **{**base, "Name": "bad name!"})  # fmt: skip
    expect(raw.create_grant, "ValidationException",
           validation("n" * 257, "name", "have length less than or equal to 256"),
           **{**base, "Name": "n" * 257})  # fmt: skip
    both = {"EncryptionContextSubset": {"a": "b"}, "EncryptionContextEquals": {"a": "b"}}
    expect(kms.create_grant, "ValidationException", **{**base, "Constraints": both})
    nine = {f"k{i}": "v" for i in range(9)}
    expect(kms.create_grant, "ValidationException",
           **{**base, "Constraints": {"EncryptionContextSubset": nine}})  # fmt: skip
    expect(kms.create_grant, "UnsupportedOperationException",
           **{**base, "Constraints": {"SourceArn": "arn:aws:s3:::bucket-name-here"}})  # fmt: skip
    expect(raw.create_grant, "UnsupportedOperationException",
           **{**base, "GranteeServicePrincipal": "ec2.us-east-1.amazonaws.com"})  # fmt: skip
    expect(kms.create_grant, "NotFoundException", **{**base, "KeyId": str(uuid.uuid4())})
    # A caller not allowed to create grants learns nothing about the grantee.
    expect(nobody.create_grant, "AccessDeniedException",
           **{**base, "GranteePrincipal": "arn:aws:iam::000000000000:user/no-such-user"})  # fmt: skip
    # DryRun: valid and allowed, and nothing is made.
    expect(kms.create_grant, "DryRunOperationException", **{**base, "DryRun": True})
    expect(nobody.create_grant, "AccessDeniedException", **{**base, "DryRun": True})
    assert kms.list_grants(KeyId=key)["Grants"] == []
    kms.disable_key(KeyId=key)
    expect(kms.create_grant, "DisabledException", **base)


def test_grant_operations_follow_the_key_type(kms: Any) -> None:
    hmac = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    signer = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    grantee = user_arn("nobody")
    ok = {
        hmac["KeyId"]: ["GenerateMac", "VerifyMac", "DescribeKey", "RetireGrant", "CreateGrant"],
        signer["KeyId"]: ["Sign", "Verify", "GetPublicKey", "DescribeKey"],
    }
    for key_id, operations in ok.items():
        kms.create_grant(KeyId=key_id, GranteePrincipal=grantee, Operations=operations)
        for wrong in ("Decrypt", "GenerateDataKey", "ReEncryptFrom"):
            expect(kms.create_grant, "ValidationException",
                   KeyId=key_id, GranteePrincipal=grantee, Operations=[wrong])  # fmt: skip
        expect(kms.create_grant, "ValidationException", KeyId=key_id, GranteePrincipal=grantee,
               Operations=operations[:1], Constraints={"EncryptionContextSubset": {"a": "b"}})  # fmt: skip
    expect(kms.create_grant, "ValidationException",
           KeyId=hmac["KeyId"], GranteePrincipal=grantee, Operations=["Sign"])  # fmt: skip


def test_grants_on_a_signing_key_and_an_hmac_key(srv: KmsThread, kms: Any, nobody: Any) -> None:
    signer = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    hmac = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    grantee = user_arn("nobody")
    kms.create_grant(KeyId=signer["KeyId"], GranteePrincipal=grantee, Operations=["Sign"])
    kms.create_grant(KeyId=hmac["KeyId"], GranteePrincipal=grantee, Operations=["GenerateMac"])
    signed = nobody.sign(KeyId=signer["KeyId"], Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    assert signed["Signature"]
    expect(nobody.verify, "AccessDeniedException", KeyId=signer["KeyId"], Message=b"m",
           Signature=signed["Signature"], SigningAlgorithm="ECDSA_SHA_256")  # fmt: skip
    assert nobody.generate_mac(KeyId=hmac["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256")
    expect(nobody.verify_mac, "AccessDeniedException", KeyId=hmac["KeyId"], Message=b"m",
           Mac=b"0" * 32, MacAlgorithm="HMAC_SHA_256")  # fmt: skip


def test_re_encrypt_with_grants_on_both_keys(kms: Any, nobody: Any) -> None:
    source = kms.create_key()["KeyMetadata"]["KeyId"]
    destination = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=source, Plaintext=b"x")["CiphertextBlob"]
    grantee = user_arn("nobody")
    kms.create_grant(KeyId=source, GranteePrincipal=grantee, Operations=["ReEncryptFrom"])
    params: dict[str, Any] = {"CiphertextBlob": blob, "DestinationKeyId": destination}
    expect(nobody.re_encrypt, "AccessDeniedException", **params)
    kms.create_grant(KeyId=destination, GranteePrincipal=grantee, Operations=["ReEncryptTo"])
    moved = nobody.re_encrypt(**params)
    assert moved["KeyId"] == key_arn(destination) and moved["SourceKeyId"] == key_arn(source)
    expect(nobody.re_encrypt, "DryRunOperationException", DryRun=True, **params)


def test_dry_run_asks_the_gate(kms: Any, nobody: Any, key: str) -> None:
    expect(nobody.encrypt, "AccessDeniedException", KeyId=key, Plaintext=b"x", DryRun=True)
    expect(kms.encrypt, "DryRunOperationException", KeyId=key, Plaintext=b"x", DryRun=True)
    kms.create_grant(KeyId=key, GranteePrincipal=user_arn("nobody"), Operations=["Encrypt"])
    expect(nobody.encrypt, "DryRunOperationException", KeyId=key, Plaintext=b"x", DryRun=True)


def _grant(kms: Any, key: str, operations: list[str], retiring: str | None = None) -> Any:
    params: dict[str, Any] = {
        "KeyId": key,
        "GranteePrincipal": user_arn("nobody"),
        "Operations": operations,
    }
    if retiring is not None:
        params["RetiringPrincipal"] = retiring
    return kms.create_grant(**params)


def test_retire_grant(srv: KmsThread, kms: Any, raw: Any, nobody: Any, app: Any, key: str) -> None:
    retirer = boto_kms(srv, "retirer", USER_SECRET)
    delegate = boto_kms(srv, "delegate", USER_SECRET)
    # The retiring principal, by token (it has no policy at all).
    by_token = _grant(kms, key, ["Decrypt"], retiring=user_arn("retirer"))
    expect(app.retire_grant, "AccessDeniedException", GrantToken=by_token["GrantToken"])
    expect(retirer.retire_grant, "DryRunOperationException",
           GrantToken=by_token["GrantToken"], DryRun=True)  # fmt: skip
    retirer.retire_grant(GrantToken=by_token["GrantToken"])
    # The grantee, by key and grant id, when the grant allows RetireGrant.
    own = _grant(kms, key, ["Decrypt", "RetireGrant"])
    other = _grant(kms, key, ["Decrypt"])
    expect(nobody.retire_grant, "AccessDeniedException", KeyId=key, GrantId=other["GrantId"])
    nobody.retire_grant(KeyId=key_arn(key), GrantId=own["GrantId"])
    # A user allowed kms:RetireGrant by IAM, the key policy delegating to the account; and root.
    delegate.retire_grant(KeyId=key, GrantId=other["GrantId"])
    last = _grant(kms, key, ["Encrypt"])
    kms.retire_grant(GrantToken=last["GrantToken"])
    assert kms.list_grants(KeyId=key)["Grants"] == []
    # Gone is gone; the grant must be named.
    expect(kms.retire_grant, "NotFoundException", GrantToken=last["GrantToken"])
    expect(kms.retire_grant, "NotFoundException", KeyId=key, GrantId=last["GrantId"])
    expect(kms.retire_grant, "InvalidGrantTokenException", GrantToken="bogus")
    expect(kms.retire_grant, "ValidationException", KeyId=key)
    expect(kms.retire_grant, "InvalidArnException", ALIASES_NOT_SUPPORTED,
           KeyId="alias/anything", GrantId=last["GrantId"])  # fmt: skip


def test_revoke_grant(kms: Any, nobody: Any, app: Any, key: str) -> None:
    grant = _grant(kms, key, ["Encrypt"])
    assert nobody.encrypt(KeyId=key, Plaintext=b"x")
    expect(app.revoke_grant, "AccessDeniedException", KeyId=key, GrantId=grant["GrantId"])
    expect(kms.revoke_grant, "DryRunOperationException",
           KeyId=key, GrantId=grant["GrantId"], DryRun=True)  # fmt: skip
    assert len(kms.list_grants(KeyId=key)["Grants"]) == 1
    kms.revoke_grant(KeyId=key, GrantId=grant["GrantId"])
    assert kms.list_grants(KeyId=key)["Grants"] == []
    expect(nobody.encrypt, "AccessDeniedException", KeyId=key, Plaintext=b"x")
    expect(kms.revoke_grant, "NotFoundException", KeyId=key, GrantId=grant["GrantId"])
    expect(kms.revoke_grant, "NotFoundException", KeyId=key, GrantId=grant["GrantId"], DryRun=True)
    expect(kms.revoke_grant, "InvalidGrantIdException", KeyId=key, GrantId="nope")
    expect(kms.revoke_grant, "InvalidArnException", ALIASES_NOT_SUPPORTED,
           KeyId="alias/anything", GrantId=grant["GrantId"])  # fmt: skip


def test_list_retirable_grants(srv: KmsThread, kms: Any, nobody: Any) -> None:
    retiring = user_arn("retirer")
    keys = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(2)]
    made = {_grant(kms, k, ["Decrypt"], retiring=retiring)["GrantId"]: k for k in keys}
    _grant(kms, keys[0], ["Encrypt"])  # no retiring principal: not listed
    listed = kms.list_retirable_grants(RetiringPrincipal=retiring)
    ours = {g["GrantId"]: g for g in listed["Grants"] if g["GrantId"] in made}
    assert set(ours) == set(made)
    assert all(g["RetiringPrincipal"] == retiring for g in listed["Grants"])
    for grant_id, entry in ours.items():
        assert entry["KeyId"] == key_arn(made[grant_id])
    seen, marker = [], None
    while True:
        page = kms.list_retirable_grants(
            RetiringPrincipal=retiring, Limit=1, **({"Marker": marker} if marker else {})
        )
        seen += [g["GrantId"] for g in page["Grants"]]
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert seen == [g["GrantId"] for g in listed["Grants"]]
    assert kms.list_retirable_grants(RetiringPrincipal=user_arn("app"))["Grants"] == []
    expect(kms.list_retirable_grants, "InvalidArnException", RetiringPrincipal="not-an-arn")
    # An identity-policy permission (kms:ListRetirableGrants); nobody has none.
    expect(nobody.list_retirable_grants, "AccessDeniedException", RetiringPrincipal=retiring)


def test_key_policy_and_grants_need_the_right_permissions(nobody: Any, app: Any, key: str) -> None:
    for client in (nobody, app):
        expect(client.get_key_policy, "AccessDeniedException", KeyId=key)
        expect(client.list_key_policies, "AccessDeniedException", KeyId=key)
        expect(client.put_key_policy, "AccessDeniedException", KeyId=key, Policy=DEFAULT_POLICY)
        expect(client.list_grants, "AccessDeniedException", KeyId=key)


def test_the_encryption_sdk_with_a_key_policy_user(
    srv: KmsThread, kms: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The AWS Encryption SDK (GenerateDataKey and Decrypt with an encryption context) as a user
    whose only permission is a grant."""
    aws_encryption_sdk = pytest.importorskip("aws_encryption_sdk")
    import botocore.session

    key = kms.create_key()["KeyMetadata"]
    kms.create_grant(
        KeyId=key["KeyId"],
        GranteePrincipal=user_arn("nobody"),
        Operations=["GenerateDataKey", "Decrypt"],
        Constraints={"EncryptionContextSubset": {"tenant": "t-1"}},
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", srv.url)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    session = botocore.session.Session()
    session.set_credentials("nobody", USER_SECRET)
    provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(
        key_ids=[key["Arn"]], botocore_session=session
    )
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=aws_encryption_sdk.CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    message = b"encrypted with a granted key" * 10
    ciphertext, _ = client.encrypt(
        source=message, key_provider=provider, encryption_context={"tenant": "t-1"}
    )
    plaintext, header = client.decrypt(source=ciphertext, key_provider=provider)
    assert plaintext == message and header.encryption_context["tenant"] == "t-1"
    with pytest.raises(aws_encryption_sdk.exceptions.GenerateKeyError):  # the constraint
        client.encrypt(source=message, key_provider=provider, encryption_context={"tenant": "x"})


# -- persistence and nodes ----------------------------------------------------------------------


def ghost_token(key_id: str) -> str:
    """A token of s3kms's form naming a grant of the key that never existed."""
    raw = b"\x01" + b"\x00" * 32 + key_id.encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_policies_and_grants_survive_a_restart(tmp_path: Path) -> None:
    settings = thread_settings(tmp_path / "data")
    first = KmsThread(settings).start()
    try:
        with Client(first.url, ROOT_USER, ROOT_PASSWORD) as admin:
            admin.add_user("nobody", [], USER_SECRET)
        kms = boto_kms(first)
        text = key_policy(allow(user_arn("nobody"), ["kms:DescribeKey"]))
        key_id = kms.create_key(Policy=text)["KeyMetadata"]["KeyId"]
        grant = kms.create_grant(
            KeyId=key_id, GranteePrincipal=user_arn("nobody"), Operations=["Encrypt"], Name="keep"
        )
        before = kms.list_grants(KeyId=key_id)["Grants"]
    finally:
        first.stop()
    second = KmsThread(settings).start()
    try:
        kms = boto_kms(second)
        assert kms.get_key_policy(KeyId=key_id)["Policy"] == text
        assert kms.list_grants(KeyId=key_id)["Grants"] == before
        nobody = boto_kms(second, "nobody", USER_SECRET)
        assert nobody.describe_key(KeyId=key_id)["KeyMetadata"]["KeyId"] == key_id
        assert nobody.encrypt(KeyId=key_id, Plaintext=b"x")["KeyId"] == key_arn(key_id)
        again = kms.create_grant(
            KeyId=key_id, GranteePrincipal=user_arn("nobody"), Operations=["Encrypt"], Name="keep"
        )
        assert again["GrantId"] == grant["GrantId"]
    finally:
        second.stop()


def test_a_grant_token_names_a_grant_another_vault_node_made(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two s3kms nodes on one Vault, each caching key metadata for 30 s: a grant made through
    one is not seen by the other's cache yet, but a request that names it by its token is
    allowed at once (the node re-reads the key and tries again)."""
    vault = vault_settings(
        request, f"access-nodes-{uuid.uuid4().hex[:12]}", metadata_cache_seconds=30
    )
    nodes = [
        KmsThread(thread_settings(tmp_path / f"node{i}", backend="vault", vault=vault)).start()
        for i in (1, 2)
    ]
    try:
        for node in nodes:
            with Client(node.url, ROOT_USER, ROOT_PASSWORD) as admin:
                admin.add_user("nobody", [], USER_SECRET)
        one, two = boto_kms(nodes[0]), boto_kms(nodes[1])
        key_id = one.create_key()["KeyMetadata"]["KeyId"]
        one.encrypt(KeyId=key_id, Plaintext=b"x")  # node 1 caches the key's metadata
        nobody = boto_kms(nodes[0], "nobody", USER_SECRET)
        expect(nobody.encrypt, "AccessDeniedException", KeyId=key_id, Plaintext=b"x")
        grant = two.create_grant(
            KeyId=key_id, GranteePrincipal=user_arn("nobody"), Operations=["Encrypt"]
        )
        # Node 1's cached metadata lacks the grant: without the token, still denied.
        expect(nobody.encrypt, "AccessDeniedException", KeyId=key_id, Plaintext=b"x")
        made = nobody.encrypt(KeyId=key_id, Plaintext=b"x", GrantTokens=[grant["GrantToken"]])
        assert made["KeyId"] == key_arn(key_id)
        # A token naming a grant that is gone is denied (after one fresh read), not retried
        # forever. (Node 1 may still use the revoked grant within its cache window, as AWS
        # documents revocation as eventually consistent; node 2 reads the key from Vault.)
        two.revoke_grant(KeyId=key_id, GrantId=grant["GrantId"])
        nobody_two = boto_kms(nodes[1], "nobody", USER_SECRET)
        for token in (grant["GrantToken"], ghost_token(key_id)):
            expect(nobody_two.encrypt, "AccessDeniedException", KeyId=key_id, Plaintext=b"x",
                   GrantTokens=[token])  # fmt: skip
    finally:
        for node in nodes:
            node.stop()
