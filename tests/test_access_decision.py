"""AWS's authorization of a request about a key: key policy x identity policies x grants, with
real parsing and evaluation through `Principal.gate` and `check_lockout`."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from s3kms import granttoken
from s3kms.access import decision
from s3kms.access.context import AliasesNeeded, RequestContext
from s3kms.access.decision import check_lockout, key_policy, key_resources
from s3kms.access.documents import Policy, default_key_policy, parse_key_policy, parse_policy
from s3kms.access.facts import NO_FACTS, Facts
from s3kms.auth.identity import Principal
from s3kms.errors import AccessDenied, GrantNotVisible, MalformedPolicyDocument
from s3kms.model import Grant, KeyMetadata, KeyState

ACCOUNT = "111122223333"
REGION = "eu-west-1"
ROOT_ARN = f"arn:aws:iam::{ACCOUNT}:root"
ALICE_ARN = f"arn:aws:iam::{ACCOUNT}:user/alice"
BOB_ARN = f"arn:aws:iam::{ACCOUNT}:user/bob"
KEY = "1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{KEY}"
NOW = 1767268800.0  # 2026-01-01T12:00:00Z


def identity(*statements: dict[str, Any]) -> Policy:
    return parse_policy("p", {"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: Any = "kms:*", resource: Any = "*", **more: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **more}


def deny(action: Any = "kms:*", resource: Any = "*", **more: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **more}


def principal(name: str | None, *policies: Policy, **transport: Any) -> Principal:
    """`None`: the root; else the user `name` with these identity policies."""
    transport.setdefault("request_time", NOW)
    if name is None:
        return Principal("rootkey", True, None, REGION, ACCOUNT, **transport)
    return Principal(name, False, list(policies), REGION, ACCOUNT, **transport)


def key_policy_text(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def for_(who: Any, statement: dict[str, Any]) -> dict[str, Any]:
    return {**statement, "Principal": who}


def meta(policy: str | None = None, grants: tuple[Grant, ...] = (), **fields: Any) -> KeyMetadata:
    return KeyMetadata(KEY, KeyState.ENABLED, 0.0, policy=policy, grants=grants, **fields)


def grant(
    grantee: str = ALICE_ARN,
    operations: tuple[str, ...] = ("Decrypt",),
    grant_id: str = "ab" * 32,
    **constraints: Any,
) -> Grant:
    return Grant(
        grant_id=grant_id,
        token=granttoken.encode(KEY, grant_id),
        name="",
        grantee_principal=grantee,
        retiring_principal=None,
        issuing_account=ROOT_ARN,
        operations=operations,
        created_at=0.0,
        **constraints,
    )


def outcome(caller: Principal, action: str, key: KeyMetadata, facts: Facts = NO_FACTS) -> str:
    """ "allow", or the end of the AccessDenied message (after the key ARN)."""
    try:
        caller.gate(action, KEY, facts)(key)
    except AccessDenied as exc:
        prefix = (
            f"User: {caller.arn} is not authorized to perform: {action} on resource: {KEY_ARN} "
        )
        assert exc.message.startswith(prefix), exc.message
        why = exc.message[len(prefix) :]
        assert exc.explicit is (why in (ID_DENY, KP_DENY)), why  # RetireGrant relies on it
        return why
    return "allow"


NO_RESOURCE = "because no resource-based policy allows the kms:Decrypt action"
NO_IDENTITY = "because no identity-based policy allows the kms:Decrypt action"
ID_DENY = "with an explicit deny in an identity-based policy"
KP_DENY = "with an explicit deny in a resource-based policy"

KEY_POLICIES: dict[str, str | None] = {
    "default": None,
    "account": key_policy_text(for_({"AWS": ROOT_ARN}, allow())),
    "bare-id": key_policy_text(for_({"AWS": ACCOUNT}, allow())),
    "direct": key_policy_text(for_({"AWS": ALICE_ARN}, allow("kms:Decrypt"))),
    "anyone": key_policy_text(for_("*", allow("kms:Decrypt"))),
    "others": key_policy_text(for_({"AWS": BOB_ARN}, allow())),
    "deny": key_policy_text(
        for_({"AWS": ROOT_ARN}, allow()), for_({"AWS": ALICE_ARN}, deny("kms:Decrypt"))
    ),
    "deny-account": key_policy_text(
        for_({"AWS": ALICE_ARN}, allow()), for_({"AWS": ROOT_ARN}, deny("kms:Decrypt"))
    ),
}
IDENTITIES: dict[str, tuple[Policy, ...]] = {
    "allow": (identity(allow("kms:Decrypt")),),
    "none": (),
    "deny": (identity(allow()), identity(deny("kms:Decrypt"))),
}
GRANTS: dict[str, tuple[Grant, ...]] = {"none": (), "grant": (grant(),)}

# key policy, identity, grant -> what alice's Decrypt gets. Read a row as AWS's flowchart: an
# explicit deny anywhere; else the key policy for alice, or for her account and then her
# identity policies; else a grant; else which kind of policy was missing.
TABLE = [
    ("default", "allow", "none", "allow"),
    ("default", "allow", "grant", "allow"),
    ("default", "none", "none", NO_IDENTITY),
    ("default", "none", "grant", "allow"),
    ("default", "deny", "none", ID_DENY),
    ("default", "deny", "grant", ID_DENY),
    ("account", "allow", "none", "allow"),
    ("account", "allow", "grant", "allow"),
    ("account", "none", "none", NO_IDENTITY),
    ("account", "none", "grant", "allow"),
    ("account", "deny", "none", ID_DENY),
    ("account", "deny", "grant", ID_DENY),
    ("bare-id", "allow", "none", "allow"),
    ("bare-id", "none", "none", NO_IDENTITY),
    ("direct", "allow", "none", "allow"),
    ("direct", "none", "none", "allow"),  # the key policy alone allows her
    ("direct", "none", "grant", "allow"),
    ("direct", "deny", "none", ID_DENY),
    ("direct", "deny", "grant", ID_DENY),
    ("anyone", "none", "none", "allow"),
    ("anyone", "deny", "none", ID_DENY),
    ("others", "allow", "none", NO_RESOURCE),  # IAM alone cannot open a key that never delegates
    ("others", "allow", "grant", "allow"),
    ("others", "none", "none", NO_RESOURCE),
    ("others", "none", "grant", "allow"),
    ("others", "deny", "none", ID_DENY),
    ("others", "deny", "grant", ID_DENY),
    ("deny", "allow", "none", KP_DENY),
    ("deny", "allow", "grant", KP_DENY),
    ("deny", "none", "none", KP_DENY),
    ("deny", "none", "grant", KP_DENY),
    ("deny", "deny", "none", ID_DENY),  # both deny: the identity-based one is named
    ("deny-account", "none", "none", KP_DENY),  # a Deny for the account covers its users
    ("deny-account", "allow", "grant", KP_DENY),
]


@pytest.mark.parametrize(("kp", "iam", "grants", "expected"), TABLE)
def test_key_policy_identity_grant_table(kp: str, iam: str, grants: str, expected: str) -> None:
    alice = principal("alice", *IDENTITIES[iam])
    assert outcome(alice, "kms:Decrypt", meta(KEY_POLICIES[kp], GRANTS[grants])) == expected


@pytest.mark.parametrize(
    ("kp", "expected"),
    [
        ("default", "allow"),  # the root holds every IAM permission: delegation suffices
        ("account", "allow"),
        ("bare-id", "allow"),
        ("direct", NO_RESOURCE),  # a policy for alice alone locks the root out
        ("anyone", "allow"),
        ("others", NO_RESOURCE),
        ("deny", "allow"),  # the Deny names alice
        ("deny-account", KP_DENY),
    ],
)
def test_the_root_by_the_key_policy_alone(kp: str, expected: str) -> None:
    assert outcome(principal(None), "kms:Decrypt", meta(KEY_POLICIES[kp])) == expected


def test_the_default_policy_means_exactly_what_its_text_says() -> None:
    """No key policy (None) and AWS's default text put explicitly decide alike."""
    explicit = default_key_policy(ACCOUNT)
    for name in ("allow", "none", "deny"):
        alice = principal("alice", *IDENTITIES[name])
        for action in ("kms:Decrypt", "kms:PutKeyPolicy"):
            assert outcome(alice, action, meta(None)) == outcome(alice, action, meta(explicit))


def test_an_identity_deny_is_raised_by_gate_at_once() -> None:
    alice = principal("alice", *IDENTITIES["deny"])
    with pytest.raises(AccessDenied, match="explicit deny in an identity-based policy"):
        alice.gate("kms:Decrypt", KEY)
    assert (alice.action, alice.key_id) == ("kms:Decrypt", KEY)  # recorded for the audit line


# -- NotPrincipal, NotAction, NotResource ----------------------------------------------------------


def test_not_principal_deny_must_list_the_user_and_its_account() -> None:
    both = key_policy_text(
        for_({"AWS": ROOT_ARN}, allow()),
        {
            "Effect": "Deny",
            "NotPrincipal": {"AWS": [ALICE_ARN, ROOT_ARN]},
            "Action": "kms:*",
            "Resource": "*",
        },
    )
    only_user = key_policy_text(
        for_({"AWS": ROOT_ARN}, allow()),
        {"Effect": "Deny", "NotPrincipal": {"AWS": ALICE_ARN}, "Action": "kms:*", "Resource": "*"},
    )
    alice = principal("alice", identity(allow()))
    bob = principal("bob", identity(allow()))
    assert outcome(alice, "kms:Decrypt", meta(both)) == "allow"
    assert outcome(bob, "kms:Decrypt", meta(both)) == KP_DENY
    assert outcome(principal(None), "kms:Decrypt", meta(both)) == "allow"
    # IAM evaluates a user with its account: listing the user alone does not leave it out.
    assert outcome(alice, "kms:Decrypt", meta(only_user)) == KP_DENY
    assert outcome(principal(None), "kms:Decrypt", meta(only_user)) == KP_DENY


def test_not_principal_allow_allows_everyone_else_directly() -> None:
    def everyone_but(*arns: str) -> str:
        return key_policy_text(
            {
                "Effect": "Allow",
                "NotPrincipal": {"AWS": list(arns)},
                "Action": "kms:Decrypt",
                "Resource": "*",
            }
        )

    but_bob = everyone_but(BOB_ARN, ROOT_ARN)
    assert outcome(principal("alice"), "kms:Decrypt", meta(but_bob)) == "allow"
    assert outcome(principal("bob"), "kms:Decrypt", meta(but_bob)) == NO_RESOURCE
    assert outcome(principal(None), "kms:Decrypt", meta(but_bob)) == NO_RESOURCE
    # Listed without its account, a user is still covered through the account.
    assert outcome(principal("bob"), "kms:Decrypt", meta(everyone_but(BOB_ARN))) == "allow"


def test_not_action_and_not_resource_in_both_kinds_of_policy() -> None:
    kp = key_policy_text(
        for_({"AWS": ROOT_ARN}, allow()),
        {
            "Effect": "Deny",
            "Principal": "*",
            "NotAction": ["kms:Describe*", "kms:Decrypt"],
            "Resource": "*",
        },
    )
    alice = principal(
        "alice", identity({"Effect": "Allow", "NotAction": "kms:Encrypt", "Resource": "*"})
    )
    assert outcome(alice, "kms:Decrypt", meta(kp)) == "allow"
    assert outcome(alice, "kms:DescribeKey", meta(kp)) == "allow"
    assert outcome(alice, "kms:Encrypt", meta(kp)) == KP_DENY  # identity: NotAction, no match
    assert outcome(alice, "kms:Sign", meta(kp)) == KP_DENY
    not_here = principal(
        "alice",
        identity({"Effect": "Allow", "Action": "kms:*", "NotResource": f"arn:minio:kms:::{KEY}"}),
    )
    assert outcome(not_here, "kms:Decrypt", meta()) == NO_IDENTITY
    elsewhere = principal(
        "alice",
        identity({"Effect": "Allow", "Action": "kms:*", "NotResource": "arn:minio:kms:::other"}),
    )
    assert outcome(elsewhere, "kms:Decrypt", meta()) == "allow"


# -- grants -------------------------------------------------------------------------------------


def test_a_grant_covers_its_grantee_and_operations_only() -> None:
    key = meta(KEY_POLICIES["others"], (grant(operations=("Encrypt", "GenerateDataKey")),))
    alice, bob = principal("alice"), principal("bob")
    assert outcome(alice, "kms:Encrypt", key) == "allow"
    assert outcome(alice, "kms:GenerateDataKey", key) == "allow"
    assert outcome(alice, "kms:Decrypt", key) == NO_RESOURCE
    # bob's own key policy statement gives him kms:*; a grant to bob for alice's sake: none.
    assert (
        outcome(bob, "kms:Decrypt", meta(KEY_POLICIES["direct"], (grant(grantee=BOB_ARN),)))
        == "allow"
    )
    assert outcome(principal("carol"), "kms:Encrypt", key).endswith("kms:Encrypt action")


CONTEXT = {"Department": "IT", "Project": "alpha"}


@pytest.mark.parametrize(
    ("constraint", "context", "allowed"),
    [
        ({"context_subset": (("Department", "IT"),)}, CONTEXT, True),
        ({"context_subset": (("department", "IT"),)}, CONTEXT, True),  # keys: any case
        ({"context_subset": (("Department", "it"),)}, CONTEXT, False),  # values: exact
        ({"context_subset": (("Department", "IT"), ("Team", "x"))}, CONTEXT, False),
        ({"context_subset": (("Department", "IT"),)}, None, False),
        ({"context_subset": ()}, None, True),
        ({"context_equals": (("Department", "IT"), ("Project", "alpha"))}, CONTEXT, True),
        ({"context_equals": (("PROJECT", "alpha"), ("department", "IT"))}, CONTEXT, True),
        ({"context_equals": (("Department", "IT"),)}, CONTEXT, False),  # more in the request
        (
            {"context_equals": (("Department", "IT"), ("Project", "alpha"), ("X", "y"))},
            CONTEXT,
            False,
        ),
        ({"context_equals": (("Department", "IT"),)}, None, False),
        ({}, None, True),
    ],
)
def test_grant_constraints(
    constraint: dict[str, Any], context: dict[str, str] | None, allowed: bool
) -> None:
    key = meta(KEY_POLICIES["others"], (grant(**constraint),))
    facts = Facts(encryption_context=context)
    assert (outcome(principal("alice"), "kms:Decrypt", key, facts) == "allow") is allowed


def test_constraints_apply_only_where_a_request_carries_a_context() -> None:
    strict = grant(operations=("Decrypt", "DescribeKey", "Sign"), context_equals=(("a", "b"),))
    assert (
        outcome(principal("alice"), "kms:DescribeKey", meta(KEY_POLICIES["others"], (strict,)))
        == "allow"
    )
    assert (
        outcome(principal("alice"), "kms:Decrypt", meta(KEY_POLICIES["others"], (strict,)))
        == NO_RESOURCE
    )
    # An asymmetric key's Decrypt takes no encryption context: the constraint does not apply.
    rsa = meta(KEY_POLICIES["others"], (strict,), key_spec="RSA_2048")
    assert outcome(principal("alice"), "kms:Decrypt", rsa) == "allow"
    assert (
        outcome(
            principal("alice"),
            "kms:Sign",
            meta(
                KEY_POLICIES["others"], (strict,), key_spec="ECC_NIST_P256", key_usage="SIGN_VERIFY"
            ),
        )
        == "allow"
    )


def test_a_grant_token_for_a_grant_not_yet_visible_raises_grant_not_visible() -> None:
    fresh = granttoken.encode(KEY, "cd" * 32)
    facts = Facts(grant_tokens=(fresh,))
    key = meta(KEY_POLICIES["others"], (grant(),))
    with pytest.raises(GrantNotVisible, match="no resource-based policy allows the kms:Encrypt"):
        principal("alice").gate("kms:Encrypt", KEY, facts)(key)
    # Once the metadata shows it, it counts as usual.
    seen = meta(
        KEY_POLICIES["others"], (grant(), grant(operations=("Encrypt",), grant_id="cd" * 32))
    )
    assert outcome(principal("alice"), "kms:Encrypt", seen, facts) == "allow"


@pytest.mark.parametrize(
    "token",
    [
        granttoken.encode("another-key", "cd" * 32),  # another key's grant
        granttoken.encode(KEY, "ab" * 32),  # a grant the key shows (it does not cover Encrypt)
        "not-a-token",
    ],
)
def test_other_tokens_are_plain_denials(token: str) -> None:
    key = meta(KEY_POLICIES["others"], (grant(),))
    with pytest.raises(AccessDenied) as caught:
        principal("alice").gate("kms:Encrypt", KEY, Facts(grant_tokens=(token,)))(key)
    assert type(caught.value) is AccessDenied


def test_grant_not_visible_never_overrides_a_deny_or_an_allow() -> None:
    facts = Facts(grant_tokens=(granttoken.encode(KEY, "cd" * 32),))
    with pytest.raises(AccessDenied) as caught:
        principal("alice").gate("kms:Decrypt", KEY, facts)(meta(KEY_POLICIES["deny"]))
    assert type(caught.value) is AccessDenied
    assert (
        outcome(principal("alice", *IDENTITIES["allow"]), "kms:Decrypt", meta(), facts) == "allow"
    )


# -- conditions in key policies and identity policies -----------------------------------------------


def test_key_policy_condition_on_encryption_context() -> None:
    kp = key_policy_text(
        for_(
            {"AWS": ALICE_ARN},
            allow(
                "kms:Decrypt",
                Condition={"StringEquals": {"kms:EncryptionContext:Project": "alpha"}},
            ),
        )
    )
    alice = principal("alice")
    assert (
        outcome(alice, "kms:Decrypt", meta(kp), Facts(encryption_context={"project": "alpha"}))
        == "allow"
    )
    assert (
        outcome(alice, "kms:Decrypt", meta(kp), Facts(encryption_context={"Project": "beta"}))
        == NO_RESOURCE
    )
    assert outcome(alice, "kms:Decrypt", meta(kp)) == NO_RESOURCE


def test_deny_unless_secure_transport() -> None:
    kp = key_policy_text(
        for_({"AWS": ROOT_ARN}, allow()),
        for_("*", deny(Condition={"Bool": {"aws:SecureTransport": "false"}})),
    )
    assert outcome(principal(None, secure=True), "kms:Decrypt", meta(kp)) == "allow"
    assert outcome(principal(None, secure=False), "kms:Decrypt", meta(kp)) == KP_DENY


def test_identity_conditions_see_the_key_through_gate() -> None:
    tagged = identity(allow(Condition={"StringEquals": {"aws:ResourceTag/team": "blue"}}))
    alice = principal("alice", tagged)
    assert outcome(alice, "kms:Decrypt", meta(tags=(("Team", "blue"),))) == "allow"
    assert outcome(alice, "kms:Decrypt", meta(tags=(("Team", "red"),))) == NO_IDENTITY
    conditional_deny = identity(
        allow(), deny(Condition={"StringEquals": {"kms:KeySpec": "RSA_2048"}})
    )
    bob = principal("bob", conditional_deny)
    assert outcome(bob, "kms:Decrypt", meta()) == "allow"
    assert outcome(bob, "kms:Decrypt", meta(key_spec="RSA_2048")) == ID_DENY


def test_authorize_evaluates_identity_conditions_with_caller_and_transport() -> None:
    office = identity(
        allow("admin:*", Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
        allow("kms:CreateKey", Condition={"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}}),
    )
    inside = principal("alice", office, source_ip="10.1.2.3")
    outside = principal("alice", office, source_ip="192.0.2.1")
    inside.authorize("admin:KMSStatus")
    with pytest.raises(
        AccessDenied, match="because no identity-based policy allows the admin:KMSStatus"
    ):
        outside.authorize("admin:KMSStatus")
    inside.authorize("kms:CreateKey", facts=Facts(values={"kms:keyspec": "SYMMETRIC_DEFAULT"}))
    with pytest.raises(AccessDenied, match="on resource: \\* because"):
        inside.authorize("kms:CreateKey", facts=Facts(values={"kms:keyspec": "RSA_2048"}))
    assert inside.may("admin:KMSStatus") and not outside.may("admin:KMSStatus")


def test_authorize_messages_are_unchanged() -> None:
    alice = principal("alice", identity(allow("kms:Encrypt"), deny("kms:Decrypt")))
    with pytest.raises(AccessDenied) as caught:
        alice.authorize("kms:Decrypt", KEY)
    assert caught.value.message == (
        f"User: {ALICE_ARN} is not authorized to perform: kms:Decrypt on resource: {KEY_ARN} "
        "with an explicit deny in an identity-based policy"
    )
    with pytest.raises(AccessDenied, match="because no identity-based policy allows the kms:Sign"):
        alice.authorize("kms:Sign", KEY)
    principal(None).authorize("admin:KMSConfigure")
    with pytest.raises(AccessDenied, match="alias/app"):
        alice.authorize_alias("kms:CreateAlias", "alias/app")


# -- every condition key ----------------------------------------------------------------------------


def ctx_value(
    key: str,
    who: Principal | None = None,
    action: str = "kms:Decrypt",
    facts: Facts = NO_FACTS,
    key_meta: KeyMetadata | None = None,
) -> Any:
    return RequestContext(who or principal("alice"), action, facts, key_meta)(key.lower())


def test_condition_keys_of_the_request() -> None:
    facts = Facts(
        encryption_context={"Project": "alpha", "Team": "blue"},
        values={
            "kms:grantoperations": ("Decrypt", "Encrypt"),
            "kms:granteeprincipal": BOB_ARN,
            "kms:retiringprincipal": ALICE_ARN,
            "kms:signingalgorithm": "ECDSA_SHA_256",
            "kms:encryptionalgorithm": "SYMMETRIC_DEFAULT",
            "kms:macalgorithm": "HMAC_SHA_256",
            "kms:messagetype": "RAW",
            "kms:requestalias": "alias/app",
            "aws:requesttag/team": "blue",
            "aws:tagkeys": ("team",),
            "kms:grantconstrainttype": "EncryptionContextSubset",
            "kms:keyspec": "RSA_2048",  # CreateKey's KeySpec: the request wins over a key
        },
    )
    for key, expected in [
        ("kms:EncryptionContext:Project", "alpha"),
        ("kms:EncryptionContext:PROJECT", "alpha"),
        ("kms:EncryptionContext:nope", None),
        ("kms:EncryptionContextKeys", ("Project", "Team")),
        ("kms:GrantOperations", ("Decrypt", "Encrypt")),
        ("kms:GranteePrincipal", BOB_ARN),
        ("kms:RetiringPrincipal", ALICE_ARN),
        ("kms:SigningAlgorithm", "ECDSA_SHA_256"),
        ("kms:EncryptionAlgorithm", "SYMMETRIC_DEFAULT"),
        ("kms:MacAlgorithm", "HMAC_SHA_256"),
        ("kms:MessageType", "RAW"),
        ("kms:RequestAlias", "alias/app"),
        ("aws:RequestTag/Team", "blue"),
        ("aws:TagKeys", ("team",)),
        ("kms:GrantConstraintType", "EncryptionContextSubset"),
        ("kms:KeySpec", "RSA_2048"),
    ]:
        assert ctx_value(key, facts=facts, key_meta=meta()) == expected, key
    assert ctx_value("kms:EncryptionContextKeys") is None  # no context: absent
    assert ctx_value("kms:EncryptionContext:Project") is None


def test_resource_aliases_are_asked_for_once() -> None:
    """kms:ResourceAliases is not in the key's metadata: the lookup asks the protocol for the
    key's aliases (AliasesNeeded) until the caller holds them."""
    alice, key = principal("alice"), meta()
    with pytest.raises(AliasesNeeded) as raised:
        ctx_value("kms:ResourceAliases", who=alice, key_meta=key)
    assert raised.value.key_id == key.key_id
    alice.learn_aliases(key.key_id, ("alias/app", "alias/other"))
    assert ctx_value("kms:ResourceAliases", who=alice, key_meta=key) == ("alias/app", "alias/other")
    alice.learn_aliases(key.key_id, ())
    assert ctx_value("kms:ResourceAliases", who=alice, key_meta=key) is None  # none: absent
    assert ctx_value("kms:ResourceAliases", who=alice) is None  # a request about no key


def test_condition_keys_of_the_key() -> None:
    key = meta(
        key_spec="ECC_NIST_P256", key_usage="SIGN_VERIFY", tags=(("Team", "blue"), ("env", "prod"))
    )
    assert ctx_value("kms:KeySpec", key_meta=key) == "ECC_NIST_P256"
    assert ctx_value("kms:KeyUsage", key_meta=key) == "SIGN_VERIFY"
    assert ctx_value("kms:KeyOrigin", key_meta=key) == "AWS_KMS"
    assert ctx_value("kms:MultiRegion", key_meta=key) == "false"
    assert ctx_value("aws:ResourceTag/team", key_meta=key) == "blue"
    assert ctx_value("aws:ResourceTag/ENV", key_meta=key) == "prod"
    assert ctx_value("aws:ResourceTag/none", key_meta=key) is None
    for absent in ("kms:KeySpec", "kms:KeyOrigin", "aws:ResourceTag/team"):
        assert ctx_value(absent) is None  # a request about no key


def test_condition_keys_of_the_caller_and_transport() -> None:
    alice = principal("alice", source_ip="2001:db8::7", secure=True)
    root = principal(None)
    assert ctx_value("kms:CallerAccount", alice) == ACCOUNT
    assert ctx_value("aws:PrincipalArn", alice) == ALICE_ARN
    assert ctx_value("aws:PrincipalArn", root) == ROOT_ARN
    assert ctx_value("aws:PrincipalAccount", alice) == ACCOUNT
    assert ctx_value("aws:PrincipalType", alice) == "User"
    assert ctx_value("aws:PrincipalType", root) == "Account"
    assert ctx_value("aws:username", alice) == "alice"
    assert ctx_value("aws:username", root) is None  # users only, as in IAM
    assert ctx_value("aws:userid", alice) == alice.user_id and alice.user_id.startswith("AIDA")
    assert ctx_value("aws:userid", root) == ACCOUNT
    assert ctx_value("aws:SourceIp", alice) == "2001:db8::7"
    assert ctx_value("aws:SourceIp", root) is None
    assert ctx_value("aws:SecureTransport", alice) == "true"
    assert ctx_value("aws:SecureTransport", root) == "false"
    assert ctx_value("aws:CurrentTime", alice) == "2026-01-01T12:00:00Z"
    assert ctx_value("aws:EpochTime", alice) == "1767268800"
    assert ctx_value("aws:RequestedRegion", alice) == REGION
    assert ctx_value("aws:PrincipalIsAWSService", alice) == "false"
    assert ctx_value("kms:ViaService", alice) is None  # no AWS service calls s3kms
    assert ctx_value("kms:GrantIsForAWSResource", alice, "kms:CreateGrant") == "false"
    assert ctx_value("kms:GrantIsForAWSResource", alice, "kms:Decrypt") is None


def test_a_time_window_and_the_via_service_idiom() -> None:
    window = identity(
        allow(
            Condition={
                "DateGreaterThan": {"aws:CurrentTime": "2026-01-01T00:00:00Z"},
                "DateLessThan": {"aws:EpochTime": "1767312000"},
            }
        ),
        deny(Condition={"Null": {"kms:ViaService": "false"}}),
    )
    assert outcome(principal("alice", window), "kms:Decrypt", meta()) == "allow"
    assert (
        outcome(principal("alice", window, request_time=NOW + 86400), "kms:Decrypt", meta())
        == NO_IDENTITY
    )


# -- the lockout check --------------------------------------------------------------------------


def lockout(text: str, who: Principal) -> bool:
    """Whether check_lockout refuses the policy for this caller."""
    policy = parse_key_policy(text, account=ACCOUNT, known_user=lambda n: True)
    try:
        check_lockout(policy, who, KEY_ARN)
    except MalformedPolicyDocument as exc:
        assert (
            exc.message
            == "The new key policy will not allow you to update the key policy in the future."
        )
        return True
    return False


def test_lockout_check() -> None:
    default = default_key_policy(ACCOUNT)
    admin = principal("alice", identity(allow("kms:PutKeyPolicy")))
    nobody = principal("bob")
    assert not lockout(default, principal(None))
    assert not lockout(default, admin)
    assert lockout(default, nobody)  # delegation, and no identity policy allows PutKeyPolicy
    assert not lockout(key_policy_text(for_({"AWS": BOB_ARN}, allow("kms:Put*"))), nobody)
    assert lockout(key_policy_text(for_({"AWS": BOB_ARN}, allow("kms:Decrypt"))), nobody)
    assert lockout(key_policy_text(for_({"AWS": BOB_ARN}, allow())), principal(None))
    assert lockout(
        key_policy_text(for_({"AWS": ROOT_ARN}, allow()), for_("*", deny("kms:PutKeyPolicy"))),
        principal(None),
    )
    # An identity-policy Deny locks its holder out as well.
    assert lockout(
        default, principal("alice", identity(allow()), identity(deny("kms:PutKeyPolicy")))
    )
    # Conditions of the new policy are evaluated for the caller making the change.
    conditional = key_policy_text(
        for_({"AWS": ROOT_ARN}, allow(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))
    )
    assert not lockout(conditional, principal(None, source_ip="10.0.0.1"))
    assert lockout(conditional, principal(None, source_ip="192.0.2.1"))


# -- compiled once, linear time -----------------------------------------------------------------------


def test_key_policies_are_compiled_once_and_the_cache_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = KEY_POLICIES["account"]
    assert text is not None
    assert key_policy(text, ACCOUNT) is key_policy(text, ACCOUNT)
    monkeypatch.setattr(decision, "MAX_CACHED_POLICIES", 8)
    monkeypatch.setattr(decision, "_compiled", {})
    for i in range(50):
        key_policy(key_policy_text(for_({"AWS": ROOT_ARN}, allow(f"kms:Op{i}"))), ACCOUNT)
    assert len(decision._compiled) <= 8


def test_a_stored_policy_that_does_not_parse_allows_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(decision, "_compiled", {})
    assert outcome(principal(None), "kms:Decrypt", meta("{not json")) == NO_RESOURCE


def conditional_key_policy(statements: int) -> str:
    """A key policy of `statements` statements that all apply to the request and all test a key."""
    one = for_(
        {"AWS": ROOT_ARN},
        allow(
            ["kms:Encrypt", "kms:GenerateDataKey*"],
            Condition={"StringLike": {"kms:EncryptionContext:bucket": "b-*"}},
        ),
    )
    return key_policy_text(*[{**one, "Sid": f"s{i}"} for i in range(statements)])


def test_evaluation_is_linear_in_the_policy_size() -> None:
    """Condition lookups grow exactly with the statements; the time roughly (a generous ratio,
    best of several runs, never a wall-clock threshold)."""
    facts = Facts(encryption_context={"bucket": "b-1"})
    calls: list[str] = []

    class Counting(RequestContext):
        def __call__(self, key: str) -> Any:
            calls.append(key)
            return super().__call__(key)

    alice = principal("alice", identity(allow()))
    for n in (10, 20, 40):
        calls.clear()
        policy = key_policy(conditional_key_policy(n), ACCOUNT)
        lookup = Counting(alice, "kms:GenerateDataKey", facts, meta())
        resources = key_resources(KEY, REGION, ACCOUNT)
        verdict = decision._key_policy_verdict(
            alice, "kms:generatedatakey", resources, policy, lookup, False
        )
        assert verdict == (False, False, True)
        assert len(calls) == n
        # When the account's Allow is enough (an identity policy allows), the first Allow that
        # holds decides: later Allow statements cost nothing.
        calls.clear()
        verdict = decision._key_policy_verdict(
            alice, "kms:generatedatakey", resources, policy, lookup, True
        )
        assert verdict == (False, False, True)
        assert len(calls) == 1

    def best(text: str) -> float:
        key = meta(text)
        gate = alice.gate("kms:GenerateDataKey", KEY, facts)
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(200):
                gate(key)
            runs.append(time.perf_counter() - start)
        return min(runs)

    small, large = conditional_key_policy(25), conditional_key_policy(50)
    best(small), best(large)  # compile both first
    ratio = best(large) / best(small)
    assert ratio < 4.0, ratio  # twice the size: about twice the time, far from quadratic


def test_the_fast_path_builds_no_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key policy, no grants, identity policies without conditions: no RequestContext."""

    def refuse(*args: object) -> None:
        raise AssertionError("a context was built")

    monkeypatch.setattr(decision, "RequestContext", refuse)
    principal("alice", identity(allow()))
    principal("alice", identity(allow())).gate("kms:GenerateDataKey", KEY)(meta())
    principal(None).gate("kms:GenerateDataKey", KEY)(meta())
