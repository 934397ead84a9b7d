"""Policy evaluation: the pure module, case by case."""

from __future__ import annotations

import pytest

from s3kms.errors import InvalidRequest
from s3kms.policy import Policy, is_allowed, key_resources, parse_policy

R = key_resources("app-1", "us-east-1", "000000000000")
NO_KEY = key_resources(None, "us-east-1", "000000000000")


def policy(*statements: dict[str, object]) -> list[Policy]:
    return [parse_policy("p", {"Version": "2012-10-17", "Statement": list(statements)})]


def allow(action: object, resource: object = "*") -> dict[str, object]:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


def deny(action: object, resource: object = "*") -> dict[str, object]:
    return {"Effect": "Deny", "Action": action, "Resource": resource}


def test_no_statement_matching_means_deny() -> None:
    assert not is_allowed([], "kms:Decrypt", R)
    assert not is_allowed(policy(allow("kms:Encrypt")), "kms:Decrypt", R)


def test_allow_and_explicit_deny_wins() -> None:
    both = policy(allow("kms:*"), deny("kms:Decrypt", "arn:aws:kms:*:*:key/app-*"))
    assert is_allowed(both, "kms:Encrypt", R)
    assert not is_allowed(both, "kms:Decrypt", R)
    # Deny wins even when the Allow comes from another policy listed later.
    split = [*policy(deny("kms:Decrypt")), *policy(allow("*"))]
    assert not is_allowed(split, "kms:Decrypt", R)


def test_action_wildcards_are_case_insensitive() -> None:
    p = policy(allow(["admin:KMS*", "kms:Generate?ataKey"]))
    assert is_allowed(p, "admin:KMSKeyStatus", NO_KEY)
    assert is_allowed(p, "ADMIN:kmscreatekey", NO_KEY)
    assert is_allowed(p, "kms:GenerateDataKey", R)
    assert not is_allowed(p, "kms:GenerateDataKeyWithoutPlaintext", R)


def test_resources_arn_and_minio_forms() -> None:
    aws = policy(allow("kms:Decrypt", "arn:aws:kms:us-east-1:000000000000:key/app-?"))
    minio = policy(allow("kms:Decrypt", "arn:minio:kms:::app-*"))
    assert is_allowed(aws, "kms:Decrypt", R)
    assert is_allowed(minio, "kms:Decrypt", R)
    other = key_resources("billing", "us-east-1", "000000000000")
    assert not is_allowed(minio, "kms:Decrypt", other)
    # Resources are case-sensitive: key ids are.
    upper = key_resources("APP-1", "us-east-1", "000000000000")
    assert not is_allowed(minio, "kms:Decrypt", upper)


def test_requests_about_no_key_need_star_resource() -> None:
    keyed = policy(allow("admin:KMSStatus", "arn:aws:kms:*:*:key/*"))
    assert not is_allowed(keyed, "admin:KMSStatus", NO_KEY)
    assert is_allowed(policy(allow("admin:KMSStatus")), "admin:KMSStatus", NO_KEY)


def test_regex_characters_are_literal() -> None:
    p = policy(allow("kms:Decrypt", "arn:minio:kms:::a.b"))
    assert is_allowed(p, "kms:Decrypt", key_resources("a.b", "r", "1"))
    assert not is_allowed(p, "kms:Decrypt", key_resources("axb", "r", "1"))


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        "[]",
        {"Version": "1999", "Statement": [allow("*")]},
        {"Statement": []},
        {"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]},
        {"Statement": [{"Effect": "Allow", "Action": [], "Resource": "*"}]},
        {"Statement": [{"Effect": "Allow", "Action": "*"}]},
        {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {}}]},
    ],
)
def test_bad_documents_are_refused(document: object) -> None:
    with pytest.raises(InvalidRequest):
        parse_policy("bad", document)  # type: ignore[arg-type]


def test_single_statement_object_is_accepted() -> None:
    p = parse_policy("one", {"Statement": {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}})
    assert is_allowed([p], "kms:Encrypt", R)
