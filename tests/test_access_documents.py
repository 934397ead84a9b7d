"""Key policies and identity policies as documents: the grammar, AWS's messages, the bounds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from s3kms.access.documents import (
    INVALID_PRINCIPALS,
    MAX_DOCUMENT_BYTES,
    NO_PRINCIPAL,
    Policy,
    Principals,
    default_key_policy,
    parse_key_policy,
    parse_policy,
)
from s3kms.errors import InvalidRequest, LimitExceeded, MalformedPolicyDocument

ACCOUNT = "111122223333"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"


def known(name: str) -> bool:
    return name in ("alice", "bob")


def key_policy(*statements: dict[str, Any], **extra: Any) -> Policy:
    doc = {"Version": "2012-10-17", "Statement": list(statements), **extra}
    return parse_key_policy(json.dumps(doc), account=ACCOUNT, known_user=known)


def stmt(principal: Any = "*", **fields: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Principal": principal, "Action": "kms:*", "Resource": "*", **fields}


def malformed(text: str, message: str) -> None:
    with pytest.raises(MalformedPolicyDocument) as caught:
        parse_key_policy(text, account=ACCOUNT, known_user=known)
    assert caught.value.message == message
    assert caught.value.aws_type == "MalformedPolicyDocumentException"


def malformed_doc(doc: Any, message: str) -> None:
    malformed(json.dumps(doc), message)


# -- the default key policy ----------------------------------------------------------------------

# As AWS's GetKeyPolicy answers it (KMS Developer Guide, "GetKeyPolicy", AWS CLI output), with
# the account of the example.
AWS_DEFAULT = (
    '{\n  "Version" : "2012-10-17",\n  "Id" : "key-default-1",\n  "Statement" : [ {\n'
    '    "Sid" : "Enable IAM User Permissions",\n    "Effect" : "Allow",\n'
    '    "Principal" : {\n      "AWS" : "arn:aws:iam::111122223333:root"\n    },\n'
    '    "Action" : "kms:*",\n    "Resource" : "*"\n  } ]\n}'
)


def test_default_key_policy_is_aws_bytes() -> None:
    assert default_key_policy(ACCOUNT) == AWS_DEFAULT
    assert json.loads(default_key_policy("000000000000"))["Statement"][0]["Principal"] == {
        "AWS": "arn:aws:iam::000000000000:root"
    }


def test_default_key_policy_parses_as_the_account_having_kms_star() -> None:
    policy = parse_key_policy(default_key_policy(ACCOUNT), account=ACCOUNT, known_user=known)
    assert policy.document == AWS_DEFAULT  # kept as given
    (statement,) = policy.statements
    assert statement.allow and statement.principals == Principals(False, True, frozenset())
    assert statement.covers("kms:decrypt", ("arn:aws:kms:r:1:key/k",))
    assert not statement.covers("admin:kmsstatus", ("*",))


# -- principals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        ("*", Principals(True, False, frozenset())),
        ({"AWS": "*"}, Principals(True, False, frozenset())),
        ({"AWS": ROOT}, Principals(False, True, frozenset())),
        ({"AWS": ACCOUNT}, Principals(False, True, frozenset())),
        ({"AWS": [ALICE, ROOT]}, Principals(False, True, frozenset({ALICE}))),
        (
            {"AWS": ALICE, "Service": "s3.amazonaws.com"},
            Principals(False, False, frozenset({ALICE})),
        ),
        ({"Service": ["logs.us-east-1.amazonaws.com"]}, Principals(False, False, frozenset())),
    ],
)
def test_valid_principals(principal: Any, expected: Principals) -> None:
    (statement,) = key_policy(stmt(principal)).statements
    assert statement.principals == expected


@pytest.mark.parametrize(
    "principal",
    [
        {"AWS": "arn:aws:iam::444455556666:root"},  # another account: s3kms has one
        {"AWS": "444455556666"},
        {"AWS": "arn:aws:iam::444455556666:user/alice"},
        {"AWS": f"arn:aws:iam::{ACCOUNT}:user/carol"},  # no such user
        {"AWS": f"arn:aws:iam::{ACCOUNT}:user/*"},  # no wildcard inside an ARN
        {"AWS": f"arn:aws:iam::{ACCOUNT}:role/admin"},  # s3kms has no roles
        {"AWS": f"arn:aws:sts::{ACCOUNT}:assumed-role/r/s"},
        {"AWS": f"arn:aws:iam::{ACCOUNT}:group/devs"},
        {"AWS": "AIDACKCEVSQ6C2EXAMPLE"},
        {"AWS": ""},
        {"AWS": []},
        {"AWS": [1]},
        {"Federated": "cognito-identity.amazonaws.com"},
        {"CanonicalUser": "79a59df900b949e55d96a1e698fbaced"},
        {"Service": "not a service"},
        {},
        "alice",
        ["*"],
        7,
    ],
)
def test_invalid_principals(principal: Any) -> None:
    malformed_doc({"Statement": [stmt(principal)]}, INVALID_PRINCIPALS)


def test_a_statement_without_principal() -> None:
    statement = stmt()
    del statement["Principal"]
    malformed_doc({"Statement": [statement]}, NO_PRINCIPAL)
    assert NO_PRINCIPAL == "Policy contains a statement with no principal."
    assert INVALID_PRINCIPALS == "Policy contains a statement with one or more invalid principals."


def test_not_principal() -> None:
    (statement,) = key_policy(
        {"Effect": "Deny", "NotPrincipal": {"AWS": [ALICE, ROOT]}, "Action": "*", "Resource": "*"}
    ).statements
    assert statement.not_principal and not statement.allow
    malformed_doc(
        {"Statement": [{**stmt(), "NotPrincipal": "*"}]},
        "The key policy is malformed: a statement may have Principal or NotPrincipal, not both.",
    )


# -- the rest of the grammar ------------------------------------------------------------------------


def test_every_malformed_policy_document_case() -> None:
    malformed("not json", "The key policy is not valid JSON.")
    malformed("{", "The key policy is not valid JSON.")
    malformed("[" * 5000, "The key policy is not valid JSON.")  # too deep for the parser
    malformed(
        "[" * 100 + "]" * 100,
        "The key policy is malformed: objects and arrays may be nested at most 32 deep.",
    )
    malformed("[]", "The key policy must be a JSON object.")
    malformed('"policy"', "The key policy must be a JSON object.")
    malformed_doc(
        {"Version": "2020-01-01", "Statement": [stmt()]},
        "The key policy has an unsupported Version: use 2012-10-17.",
    )
    malformed_doc({"Version": "2012-10-17"}, "The key policy must have at least one statement.")
    malformed_doc({"Statement": []}, "The key policy must have at least one statement.")
    malformed_doc({"Statement": "x"}, "The key policy must have at least one statement.")
    malformed_doc(
        {"Statement": ["x"]}, "The key policy is malformed: each Statement must be an object."
    )
    for effect in (None, "allow", "Permit", 1):
        malformed_doc(
            {"Statement": [stmt(Effect=effect)]},
            "Policy contains a statement with an invalid Effect: use Allow or Deny.",
        )
    malformed_doc(
        {"Statement": [stmt(Action=[])]},
        "The key policy is malformed: Action must be a non-empty string or list of strings.",
    )
    malformed_doc(
        {"Statement": [stmt(Action=5)]},
        "The key policy is malformed: Action must be a non-empty string or list of strings.",
    )
    malformed_doc(
        {"Statement": [stmt(Resource=[""])]},
        "The key policy is malformed: Resource must be a non-empty string or list of strings.",
    )
    malformed_doc(
        {"Statement": [stmt(NotAction="kms:Decrypt")]},
        "The key policy is malformed: a statement may have Action or NotAction, not both.",
    )
    malformed_doc(
        {"Statement": [stmt(Condition={"StringEqualz": {"a": "b"}})]},
        "Policy contains a statement with an unsupported condition operator: StringEqualz.",
    )
    malformed_doc(
        {"Statement": [stmt(Condition={"NumericEquals": {"a": "x"}})]},
        "The key policy is malformed: Condition: 'x' is not a number.",
    )
    malformed_doc(
        {
            "Statement": [
                stmt(Condition={"ForAllValues:StringEquals": {"kms:EncryptionContext:a": "b"}})
            ]
        },
        "OverlyPermissiveCondition:EncryptionContext: Using the ForAllValues set operator with a "
        "single-valued condition key matches requests without the specified encryption context "
        "or with an unspecified encryption context. To fix, remove ForAllValues.",
    )
    malformed_doc(
        {"Version": "2012-10-17", "Statement": [stmt(Resource="arn:aws:kms:*:*:key/${aws:x}")]},
        "The key policy is malformed: policy variables (${...}) are not supported in Resource.",
    )


def test_characters_outside_latin_1_are_refused() -> None:
    doc = json.dumps({"Statement": [stmt(Sid="café ünïcode ok")]}, ensure_ascii=False)
    key_policy_ok = parse_key_policy(doc, account=ACCOUNT, known_user=known)
    assert key_policy_ok.document == doc
    for bad in ("snow \u2603", "bell \x07", "c1 \x85", "nul \x00"):
        text = json.dumps({"Statement": [stmt(Sid="HERE")]}).replace("HERE", bad)
        with pytest.raises(MalformedPolicyDocument, match="only printable ASCII and Latin-1"):
            parse_key_policy(text, account=ACCOUNT, known_user=known)
    # Escaped, the same character is plain ASCII: AWS counts the document's characters.
    parse_key_policy(
        json.dumps({"Statement": [stmt(Sid="snow ☃")]}), account=ACCOUNT, known_user=known
    )


def test_a_key_policy_over_32_kib_is_limit_exceeded() -> None:
    def sized(total: int) -> str:
        base = json.dumps({"Statement": [stmt(Sid="")]})
        return json.dumps({"Statement": [stmt(Sid="x" * (total - len(base)))]})

    assert len(sized(MAX_DOCUMENT_BYTES)) == MAX_DOCUMENT_BYTES == 32768
    parse_key_policy(sized(MAX_DOCUMENT_BYTES), account=ACCOUNT, known_user=known)
    with pytest.raises(LimitExceeded) as caught:
        parse_key_policy(sized(MAX_DOCUMENT_BYTES + 1), account=ACCOUNT, known_user=known)
    assert caught.value.aws_type == "LimitExceededException"
    # Bytes of UTF-8: a Latin-1 letter takes two.
    wide = json.dumps({"Statement": [stmt(Sid="é" * 16400)]}, ensure_ascii=False)
    assert len(wide) < MAX_DOCUMENT_BYTES < len(wide.encode())
    with pytest.raises(LimitExceeded):
        parse_key_policy(wide, account=ACCOUNT, known_user=known)


def test_a_statement_without_action_or_resource_is_accepted_without_effect() -> None:
    """AWS: "CreateKey and PutKeyPolicy succeed, even though the policy statement is
    ineffective" (KMS Developer Guide, "Elements in a key policy")."""
    no_action = stmt()
    del no_action["Action"]
    no_resource = stmt(Effect="Deny")
    del no_resource["Resource"]
    policy = key_policy(no_action, no_resource, stmt({"AWS": ALICE}))
    assert len(policy.statements) == 1 and policy.statements[0].principals is not None
    assert ALICE in policy.statements[0].principals.arns


def test_statement_object_version_default_and_ids_are_accepted() -> None:
    doc = {"Id": "key-consolepolicy-3", "Statement": stmt(Sid="One statement")}
    policy = parse_key_policy(json.dumps(doc), account=ACCOUNT, known_user=known)
    assert len(policy.statements) == 1
    # Version 2008-10-17 (the default when left out) has no policy variables: `${` is literal.
    key_policy(
        stmt(Resource="${literal}", Condition={"StringEquals": {"a:b": "${x}"}}),
        Version="2008-10-17",
    )


def test_not_action_and_not_resource_compile() -> None:
    (statement,) = key_policy(
        {"Effect": "Deny", "Principal": "*", "NotAction": "kms:Describe*", "NotResource": "x"}
    ).statements
    assert statement.not_action and statement.not_resource
    assert statement.covers("kms:decrypt", ("arn:aws:kms:r:1:key/k",))
    assert not statement.covers("kms:describekey", ("arn:aws:kms:r:1:key/k",))
    assert not statement.covers("kms:decrypt", ("x",))


def test_a_user_is_looked_up_by_its_name() -> None:
    asked: list[str] = []

    def known_user(name: str) -> bool:
        asked.append(name)
        return True

    parse_key_policy(
        json.dumps(
            {"Statement": [stmt({"AWS": [ALICE, ROOT, f"arn:aws:iam::{ACCOUNT}:user/x.y-z"]})]}
        ),
        account=ACCOUNT,
        known_user=known_user,
    )
    assert asked == ["alice", "x.y-z"]


# -- identity policies ------------------------------------------------------------------------------


def test_identity_policies_refuse_a_principal_as_iam_does() -> None:
    for field in ("Principal", "NotPrincipal"):
        doc = {"Statement": [{"Effect": "Allow", field: "*", "Action": "*", "Resource": "*"}]}
        with pytest.raises(InvalidRequest, match="should not specify a principal") as caught:
            parse_policy("p", doc)
        assert type(caught.value) is InvalidRequest
        assert caught.value.message.startswith("policy 'p': ")


def test_identity_policies_accept_not_action_not_resource_and_conditions() -> None:
    policy = parse_policy(
        "p",
        {
            "Statement": [
                {
                    "Effect": "Deny",
                    "NotAction": "kms:Describe*",
                    "NotResource": "arn:minio:kms:::x",
                },
                {
                    "Effect": "Allow",
                    "Action": "kms:*",
                    "Resource": "*",
                    "Condition": {"Bool": {"aws:SecureTransport": "true"}},
                },
            ]
        },
    )
    assert policy.conditional
    assert not parse_policy(
        "q", {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    ).conditional


def test_identity_policy_faults_are_invalid_request_naming_the_policy() -> None:
    for doc, words in (
        (
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "*",
                        "Resource": "*",
                        "Condition": {"Nope": {"a": "b"}},
                    }
                ]
            },
            "unsupported condition operator Nope",
        ),
        (
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "*",
                        "Resource": "*",
                        "Condition": {"DateEquals": {"a": "soon"}},
                    }
                ]
            },
            "Condition: 'soon' is not a date",
        ),
        (
            {"Statement": [{"Effect": "Allow", "Action": "*", "NotAction": "x", "Resource": "*"}]},
            "Action or NotAction, not both",
        ),
        (
            {"Statement": [{"Effect": "Allow", "Action": "*"}]},
            "Resource must be a non-empty string",
        ),
    ):
        with pytest.raises(InvalidRequest, match=words) as caught:
            parse_policy("mine", doc)
        assert type(caught.value) is InvalidRequest and "'mine'" in caught.value.message
