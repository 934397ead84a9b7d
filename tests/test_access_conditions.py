"""Condition operators, one by one: compiled by the real parser, evaluated on plain lookups."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from s3kms.access.conditions import (
    MAX_CONDITION_VALUES,
    Condition,
    ConditionError,
    OverlyPermissive,
    UnsupportedOperator,
    Value,
    compile_condition,
)


def cond(raw: Mapping[str, Any]) -> Condition:
    compiled = compile_condition(raw)
    assert compiled is not None
    return compiled


def holds(raw: Mapping[str, Any], **request: Value) -> bool:
    """Whether the condition holds for a request with these keys (`_` stands for `:` and `/`
    is written `__`: `kms_KeySpec` is `kms:keyspec`)."""
    keys = {k.replace("__", "/").replace("_", ":").lower(): v for k, v in request.items()}
    return cond(raw).holds(keys.get)


def one(op: str, key: str, value: Any) -> dict[str, Any]:
    return {op: {key: value}}


# -- strings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "policy", "request_value", "expected"),
    [
        ("StringEquals", "web", "web", True),
        ("StringEquals", "web", "Web", False),
        ("StringEquals", ["a", "web"], "web", True),  # values are alternatives
        ("StringNotEquals", "web", "web", False),
        ("StringNotEquals", ["a", "b"], "web", True),
        ("StringEqualsIgnoreCase", "WEB", "web", True),
        ("StringEqualsIgnoreCase", "web", "wEb", True),
        ("StringEqualsIgnoreCase", "web", "webs", False),
        ("StringNotEqualsIgnoreCase", "WEB", "web", False),
        ("StringNotEqualsIgnoreCase", "WEB", "app", True),
        ("StringLike", "app-*", "app-1", True),
        ("StringLike", "app-?", "app-12", False),
        ("StringLike", "App-*", "app-1", False),  # case-sensitive
        ("StringNotLike", "app-*", "app-1", False),
        ("StringNotLike", "app-*", "db-1", True),
    ],
)
def test_string_operators(op: str, policy: Any, request_value: str, expected: bool) -> None:
    assert holds(one(op, "aws:username", policy), aws_username=request_value) is expected


def test_numbers_and_booleans_as_values_are_their_json_text() -> None:
    assert holds(one("StringEquals", "x:n", 5), x_n="5")
    assert holds(one("Bool", "aws:SecureTransport", True), aws_SecureTransport="true")


# -- ARNs -------------------------------------------------------------------------------------

USER = "arn:aws:iam::111122223333:user/alice"


@pytest.mark.parametrize("op", ["ArnEquals", "ArnLike"])
def test_arn_operators_match_part_by_part(op: str) -> None:
    key = "aws:PrincipalArn"
    assert holds(one(op, key, USER), aws_PrincipalArn=USER)
    assert holds(one(op, key, "arn:aws:iam::*:user/*"), aws_PrincipalArn=USER)
    assert holds(one(op, key, "arn:aws:iam::111122223333:*"), aws_PrincipalArn=USER)
    # A wildcard stays inside its part: `*` in the account does not swallow a colon.
    odd = "arn:aws:iam::1:2:user/alice"
    assert not holds(one(op, key, "arn:aws:iam::*:user/alice"), aws_PrincipalArn=odd)
    assert not holds(one(op, key, "arn:aws:iam::444455556666:*"), aws_PrincipalArn=USER)
    assert not holds(one(op, key, USER), aws_PrincipalArn="not-an-arn")
    assert holds(one(op, key, "*"), aws_PrincipalArn=USER)


@pytest.mark.parametrize("op", ["ArnNotEquals", "ArnNotLike"])
def test_negated_arn_operators(op: str) -> None:
    key = "aws:PrincipalArn"
    assert not holds(one(op, key, "arn:aws:iam::111122223333:user/*"), aws_PrincipalArn=USER)
    assert holds(one(op, key, "arn:aws:iam::111122223333:user/bob"), aws_PrincipalArn=USER)
    assert holds(one(op, key, USER), aws_PrincipalArn="not-an-arn")


def test_an_arn_value_that_is_no_arn_is_refused() -> None:
    with pytest.raises(ConditionError, match="not an ARN"):
        compile_condition(one("ArnLike", "aws:PrincipalArn", "user/alice"))
    with pytest.raises(ConditionError, match="not an ARN"):
        compile_condition(one("ArnLike", "aws:PrincipalArn", "arn:aws:*:user/alice"))


# -- Bool, Null ---------------------------------------------------------------------------------


def test_bool() -> None:
    key = "aws:SecureTransport"
    assert holds(one("Bool", key, "true"), aws_SecureTransport="true")
    assert holds(one("Bool", key, "TRUE"), aws_SecureTransport="true")
    assert not holds(one("Bool", key, "true"), aws_SecureTransport="false")
    assert not holds(one("Bool", key, "true"))  # absent: false
    assert holds(one("BoolIfExists", key, "true"))


def test_null() -> None:
    key = "kms:EncryptionContextKeys"
    assert holds(one("Null", key, "true"))  # "true": the key is absent
    assert not holds(one("Null", key, "true"), kms_EncryptionContextKeys=("a",))
    assert holds(one("Null", key, "false"), kms_EncryptionContextKeys=("a",))
    assert not holds(one("Null", key, "false"))
    assert holds(one("Null", key, "true"), kms_EncryptionContextKeys=())  # empty: absent
    with pytest.raises(ConditionError, match="true or false"):
        compile_condition(one("Null", key, "maybe"))
    with pytest.raises(UnsupportedOperator):
        compile_condition(one("NullIfExists", key, "true"))


# -- numbers and dates --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "policy", "value", "expected"),
    [
        ("NumericEquals", "10", "10", True),
        ("NumericEquals", "10", "10.0", True),
        ("NumericEquals", "10", "11", False),
        ("NumericNotEquals", "10", "11", True),
        ("NumericNotEquals", "10", "10", False),
        ("NumericLessThan", "10", "9", True),
        ("NumericLessThan", "10", "10", False),
        ("NumericLessThanEquals", "10", "10", True),
        ("NumericLessThanEquals", "10", "11", False),
        ("NumericGreaterThan", "10", "11", True),
        ("NumericGreaterThan", "10", "10", False),
        ("NumericGreaterThanEquals", "10", "10", True),
        ("NumericGreaterThanEquals", "-1.5", "-2", False),
        ("NumericEquals", "10", "ten", False),  # a request value that is no number
    ],
)
def test_numeric_operators(op: str, policy: str, value: str, expected: bool) -> None:
    assert holds(one(op, "x:n", policy), x_n=value) is expected


NOON = "2026-01-01T12:00:00Z"


@pytest.mark.parametrize(
    ("op", "policy", "value", "expected"),
    [
        ("DateEquals", NOON, NOON, True),
        ("DateEquals", NOON, "2026-01-01T12:00:00+00:00", True),
        ("DateEquals", NOON, "1767268800", True),  # epoch seconds on either side
        ("DateEquals", "1767268800", NOON, True),
        ("DateNotEquals", NOON, "2026-01-01T12:00:01Z", True),
        ("DateNotEquals", NOON, NOON, False),
        ("DateLessThan", NOON, "2026-01-01T11:59:59Z", True),
        ("DateLessThan", NOON, NOON, False),
        ("DateLessThanEquals", NOON, NOON, True),
        ("DateGreaterThan", NOON, "2026-01-01T12:00:01Z", True),
        ("DateGreaterThan", "2026-01-01", NOON, True),  # a date is its midnight, UTC
        ("DateGreaterThanEquals", NOON, "2025-12-31T23:00:00Z", False),
    ],
)
def test_date_operators(op: str, policy: str, value: str, expected: bool) -> None:
    assert holds(one(op, "aws:CurrentTime", policy), aws_CurrentTime=value) is expected


@pytest.mark.parametrize(
    ("op", "value", "message"),
    [
        ("NumericEquals", "1e5", "not a number"),
        ("NumericLessThan", "nan", "not a number"),
        ("DateLessThan", "yesterday", "not a date"),
        ("IpAddress", "10.0.0.0/33", "not an IP address"),
        ("BinaryEquals", "***", "not base64"),
    ],
)
def test_values_are_checked_when_parsed(op: str, value: str, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        compile_condition(one(op, "x:y", value))


# -- addresses, binary ---------------------------------------------------------------------------


def test_ip_address() -> None:
    key = "aws:SourceIp"
    assert holds(one("IpAddress", key, "10.0.0.0/8"), aws_SourceIp="10.1.2.3")
    assert holds(one("IpAddress", key, ["192.0.2.0/24", "10.0.0.7"]), aws_SourceIp="10.0.0.7")
    assert not holds(one("IpAddress", key, "10.0.0.0/8"), aws_SourceIp="11.0.0.1")
    assert holds(one("IpAddress", key, "2001:db8::/32"), aws_SourceIp="2001:db8::1")
    assert not holds(one("IpAddress", key, "10.0.0.0/8"), aws_SourceIp="2001:db8::1")
    assert not holds(one("IpAddress", key, "10.0.0.0/8"), aws_SourceIp="not-an-ip")
    assert not holds(one("IpAddress", key, "10.0.0.0/8"))  # unknown address: false
    assert holds(one("NotIpAddress", key, "10.0.0.0/8"), aws_SourceIp="11.0.0.1")
    assert not holds(one("NotIpAddress", key, "10.0.0.0/8"), aws_SourceIp="10.9.9.9")
    assert holds(one("NotIpAddress", key, "10.0.0.0/8"))  # negated: holds when absent


def test_binary_equals() -> None:
    assert holds(one("BinaryEquals", "x:b", "AAEC"), x_b="AAEC")
    assert not holds(one("BinaryEquals", "x:b", "AAEC"), x_b="AAED")
    assert not holds(one("BinaryEquals", "x:b", "AAEC"), x_b="%%")


# -- absent keys, IfExists, set qualifiers ------------------------------------------------------

NEGATED = [
    "StringNotEquals",
    "StringNotEqualsIgnoreCase",
    "StringNotLike",
    "ArnNotEquals",
    "ArnNotLike",
    "NumericNotEquals",
    "DateNotEquals",
    "NotIpAddress",
]
POSITIVE = [
    "StringEquals",
    "StringEqualsIgnoreCase",
    "StringLike",
    "ArnEquals",
    "ArnLike",
    "Bool",
    "NumericEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
    "DateEquals",
    "DateLessThan",
    "DateLessThanEquals",
    "DateGreaterThan",
    "DateGreaterThanEquals",
    "IpAddress",
    "BinaryEquals",
]
SAMPLE = {
    "String": "v",
    "Arn": "arn:aws:iam::1:user/x",
    "Bool": "true",
    "Numeric": "1",
    "Date": NOON,
    "IpAddress": "10.0.0.0/8",
    "NotIpAddress": "10.0.0.0/8",
    "Binary": "AAEC",
}


def sample(op: str) -> str:
    return next(v for prefix, v in SAMPLE.items() if op.startswith(prefix))


@pytest.mark.parametrize("op", POSITIVE)
def test_an_absent_key_fails_a_positive_operator_unless_if_exists(op: str) -> None:
    assert not holds(one(op, "x:absent", sample(op)))
    assert holds(one(op + "IfExists", "x:absent", sample(op)))


@pytest.mark.parametrize("op", NEGATED)
def test_an_absent_key_passes_a_negated_operator(op: str) -> None:
    assert holds(one(op, "x:absent", sample(op)))
    assert holds(one(op + "IfExists", "x:absent", sample(op)))


def test_if_exists_tests_a_present_key_as_usual() -> None:
    assert holds(one("StringEqualsIfExists", "x:k", "a"), x_k="a")
    assert not holds(one("StringEqualsIfExists", "x:k", "a"), x_k="b")
    assert not holds(one("StringNotEqualsIfExists", "x:k", "a"), x_k="a")


KEYS = "kms:EncryptionContextKeys"


def test_for_any_value() -> None:
    op = "ForAnyValue:StringEquals"
    assert holds(one(op, KEYS, ["app", "team"]), kms_EncryptionContextKeys=("x", "app"))
    assert not holds(one(op, KEYS, ["app"]), kms_EncryptionContextKeys=("x", "y"))
    assert not holds(one(op, KEYS, ["app"]))  # absent: false
    assert not holds(one(op, KEYS, ["app"]), kms_EncryptionContextKeys=())
    # A negated operator: at least one request value matches none of the policy's.
    neg = "ForAnyValue:StringNotEquals"
    assert holds(one(neg, KEYS, ["app"]), kms_EncryptionContextKeys=("app", "x"))
    assert not holds(one(neg, KEYS, ["app"]), kms_EncryptionContextKeys=("app",))
    assert holds(one("ForAnyValue:StringLikeIfExists", KEYS, "a*"))


def test_for_all_values() -> None:
    op = "ForAllValues:StringEquals"
    assert holds(one(op, KEYS, ["app", "team"]), kms_EncryptionContextKeys=("app",))
    assert holds(one(op, KEYS, ["app", "team"]), kms_EncryptionContextKeys=("team", "app"))
    assert not holds(one(op, KEYS, ["app"]), kms_EncryptionContextKeys=("app", "x"))
    assert holds(one(op, KEYS, ["app"]))  # absent: true, as IAM documents
    assert holds(one(op, KEYS, ["app"]), kms_EncryptionContextKeys=())
    neg = "ForAllValues:StringNotLike"
    assert holds(one(neg, KEYS, ["secret*"]), kms_EncryptionContextKeys=("app", "team"))
    assert not holds(one(neg, KEYS, ["secret*"]), kms_EncryptionContextKeys=("app", "secret1"))


def test_a_multivalued_key_without_qualifier_is_tested_as_any_value() -> None:
    assert holds(one("StringEquals", KEYS, "app"), kms_EncryptionContextKeys=("x", "app"))
    assert not holds(one("StringNotEquals", KEYS, "app"), kms_EncryptionContextKeys=("x", "app"))


def test_qualifiers_and_operators_are_case_insensitive() -> None:
    assert holds(one("forallvalues:stringequals", KEYS, "a"), kms_EncryptionContextKeys=("a",))
    assert holds(one("STRINGLIKEIFEXISTS", "x:k", "a*"))


def test_for_all_values_on_single_valued_kms_keys_is_refused_with_aws_message() -> None:
    with pytest.raises(OverlyPermissive, match="OverlyPermissiveCondition:EncryptionContext"):
        compile_condition(one("ForAllValues:StringEquals", "kms:EncryptionContext:app", "a"))
    with pytest.raises(OverlyPermissive, match="without the specified tag"):
        compile_condition(one("ForAllValues:StringEquals", "aws:RequestTag/team", "a"))
    compile_condition(one("ForAnyValue:StringEquals", "kms:EncryptionContext:app", "a"))


# -- combination ----------------------------------------------------------------------------------


def test_keys_and_operators_are_and_values_are_or() -> None:
    raw = {
        "StringEquals": {"x:a": ["1", "2"], "x:b": "3"},
        "Bool": {"x:c": "true"},
    }
    assert holds(raw, x_a="2", x_b="3", x_c="true")
    assert not holds(raw, x_a="2", x_b="3", x_c="false")
    assert not holds(raw, x_a="4", x_b="3", x_c="true")
    assert not holds(raw, x_a="1", x_c="true")


def test_key_names_are_case_insensitive() -> None:
    raw = one("StringEquals", "KMS:EncryptionContext:AppName", "web")
    assert holds(raw, kms_encryptioncontext_appname="web")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({"StringEqualz": {"a:b": "c"}}, UnsupportedOperator),
        ({"ForSomeValues:StringEquals": {"a:b": "c"}}, UnsupportedOperator),
        ({"IfExists": {"a:b": "c"}}, UnsupportedOperator),
        ("StringEquals", ConditionError),
        ({"StringEquals": "a"}, ConditionError),
        ({"StringEquals": {}}, ConditionError),
        ({"StringEquals": {"a:b": []}}, ConditionError),
        ({"StringEquals": {"a:b": {"nested": 1}}}, ConditionError),
        (
            {"StringEquals": {"a:b": [str(i) for i in range(MAX_CONDITION_VALUES + 1)]}},
            ConditionError,
        ),
        ({"StringEquals": {"aws:username": "${aws:username}"}}, ConditionError),
    ],
)
def test_malformed_conditions(raw: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        compile_condition(raw)


def test_an_empty_condition_is_none() -> None:
    assert compile_condition({}) is None
