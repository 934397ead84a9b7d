"""Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant.

A grant lets one principal (the grantee) perform some of a key's operations while the request's
encryption context fits its constraint; the evaluator (`access.decision`) counts it next to the
key policy and identity policies, and a grant token counts in the request that names it at once,
even before the key's metadata shows the grant on every node (see `api.py`).

AWS's rules kept here (the KMS Developer Guide, "Grants in AWS KMS" and "Retiring and revoking
grants"; the CreateGrant, RetireGrant and ListRetirableGrants API references):

- **Principals** (GranteePrincipal, RetiringPrincipal) are ARNs of the model's pattern
  `^[\\w+=,.@:/-]+$`; they must exist, as AWS requires ("ARN does not refer to a valid
  principal: <arn>", InvalidArnException). In s3kms that is the account root
  (`arn:aws:iam::<account>:root`) or a user (`arn:aws:iam::<account>:user/<access key>`); roles,
  other accounts and service principals (GranteeServicePrincipal, RetiringServicePrincipal)
  cannot exist here. The check runs once the caller is allowed `kms:CreateGrant`, so no one
  else learns which users exist.
- **Operations** must be grant operations the key supports (AWS's key type table: a symmetric
  encryption key the encrypt, decrypt, re-encrypt and data key operations; an RSA encryption
  key Encrypt, Decrypt, ReEncrypt* and GetPublicKey; a signing key Sign, Verify and
  GetPublicKey; an HMAC key GenerateMac and VerifyMac; an ECDH key DeriveSharedSecret and
  GetPublicKey; an ML-KEM key Encapsulate, Decapsulate and GetPublicKey; every key CreateGrant,
  RetireGrant and DescribeKey), else ValidationException; a grant of CreateGrant alone is
  refused as AWS refuses it ("Grants must not contain only the CreateGrant operation.").
- **Constraints**: EncryptionContextSubset or EncryptionContextEquals (one of them), each at
  most 8 pairs with values of at most 384 characters, on a symmetric encryption key only (the
  others' operations take no encryption context). SourceArn is for AWS services acting for a
  resource: UnsupportedOperationException.
- **Name**: the same Name and parameters again answer the same grant (the service).
- **RetireGrant**: by GrantToken, or KeyId and GrantId. Allowed to the grant's retiring
  principal, to its grantee when its operations include RetireGrant, and to whoever the key
  policy and identity policies allow `kms:RetireGrant` (the account root; a user an identity
  policy allows, the key policy delegating to the account, as AWS lets the account delegate it
  through IAM); an explicit Deny of `kms:RetireGrant` stops everyone. Another grant of
  RetireGrant to the caller does not count: it lets its grantee retire that grant only.
- **RevokeGrant**: `kms:RevokeGrant` on the key, like any key operation; no grant token.

The grant operations take a key id or key ARN, never an alias (InvalidArnException "Key Aliases
are not supported for this operation."). ListGrants and ListRetirableGrants answer GrantId,
Name ("" when none), CreationDate, KeyId (the key ARN), GranteePrincipal, RetiringPrincipal
(when set), IssuingAccount, Operations and Constraints (when set), pages of at most 100
(default 50).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from s3kms.auth.identity import KeyGate, Principal
from s3kms.errors import (
    AccessDenied,
    DryRunOperation,
    InvalidArn,
    InvalidGrantId,
    KeyNotFound,
    UnsupportedOperation,
    ValidationError,
)
from s3kms.http.responses import Response
from s3kms.model import Grant, KeyMetadata
from s3kms.protocols.awskms import members, paging
from s3kms.protocols.awskms.handler import Ctx, empty, ok, request_facts
from s3kms.protocols.awskms.members import Params
from s3kms.service import KeyService, check_usable

# GrantOperation, in the model's order (the validation message lists them).
GRANT_OPERATIONS = (
    "Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom",
    "ReEncryptTo", "Sign", "Verify", "GetPublicKey", "CreateGrant", "RetireGrant", "DescribeKey",
    "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "GenerateMac", "VerifyMac",
    "DeriveSharedSecret", "Encapsulate", "Decapsulate",
)  # fmt: skip

# The grant operations each kind of key supports (AWS's "Key type reference" table, the grant
# operations of "Grants in AWS KMS"; ML-KEM as its API references). Symmetric encryption keys by
# spec, the others by usage.
_EVERY_KEY = ("CreateGrant", "RetireGrant", "DescribeKey")
_SYMMETRIC_OPERATIONS = frozenset(
    (
        *_EVERY_KEY, "Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
        "ReEncryptFrom", "ReEncryptTo", "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
    )
)  # fmt: skip
_USAGE_OPERATIONS = {
    "ENCRYPT_DECRYPT": frozenset(
        (*_EVERY_KEY, "Encrypt", "Decrypt", "ReEncryptFrom", "ReEncryptTo", "GetPublicKey")
    ),
    "SIGN_VERIFY": frozenset((*_EVERY_KEY, "Sign", "Verify", "GetPublicKey")),
    "GENERATE_VERIFY_MAC": frozenset((*_EVERY_KEY, "GenerateMac", "VerifyMac")),
    "KEY_AGREEMENT": frozenset((*_EVERY_KEY, "DeriveSharedSecret", "GetPublicKey")),
    "ENCAPSULATE_DECAPSULATE": frozenset(
        (*_EVERY_KEY, "Encapsulate", "Decapsulate", "GetPublicKey")
    ),
}
SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"

# AWS's message for a grant of CreateGrant alone (an AWS answer quoted in ansible/ansible#31960:
# "An error occurred (ValidationException) when calling the CreateGrant operation: Grants must
# not contain only the CreateGrant operation.").
ONLY_CREATE_GRANT = "Grants must not contain only the CreateGrant operation."
# AWS's message for a principal that does not exist (AWS answers quoted by AWS Lambda and in
# users' reports: "InvalidArnException ... ARN does not refer to a valid principal: <arn>").
INVALID_PRINCIPAL = "ARN does not refer to a valid principal: {}"

# The grant constraint bounds AWS documents ("Using grant constraints": "Each grant constraint
# value can include up to 8 encryption context pairs. The encryption context value in each
# grant constraint cannot exceed 384 characters.").
MAX_CONSTRAINT_PAIRS = 8
MAX_CONSTRAINT_VALUE = 384

# The model's patterns (Java's \w: ASCII letters, digits, underscore), used with fullmatch.
_PRINCIPAL_RE = re.compile(r"[A-Za-z0-9_+=,.@:/-]+")
_PRINCIPAL_PATTERN = r"^[\w+=,.@:/-]+$"
_NAME_RE = re.compile(r"[a-zA-Z0-9:/_-]+")
_NAME_PATTERN = r"^[a-zA-Z0-9:/_-]+$"
# A grant id s3kms issues (granttoken.py): 64 lowercase hex digits.
_GRANT_ID_RE = re.compile(r"[0-9a-f]{64}")
# An IAM or STS principal ARN (what a retiring principal to list by can be at all).
_IAM_ARN_RE = re.compile(r"arn:aws:(iam|sts)::[0-9]{12}:[A-Za-z0-9_+=,.@:/-]+")


# -- members -----------------------------------------------------------------------------------


def principal_member(p: Params, name: str) -> str | None:
    """A principal ARN member (GranteePrincipal, RetiringPrincipal): 1-256 characters of the
    model's PrincipalIdType pattern."""
    value = members.opt_str(p, name, 1, 256)
    if value is not None and _PRINCIPAL_RE.fullmatch(value) is None:
        rule = f"satisfy regular expression pattern: {_PRINCIPAL_PATTERN}"
        raise members.violation(name[:1].lower() + name[1:], rule, f"'{value}'")
    return value


def _no_service_principals(p: Params, *names: str) -> None:
    for name in names:
        if p.get(name) is not None:
            raise UnsupportedOperation(
                f"{name} is not supported: no AWS service principal calls s3kms"
            )


def _operations(p: Params) -> list[str]:
    """`Operations`: a non-empty list of GrantOperation values (AWS's template for a list
    member: "Member must satisfy constraint: [Member must satisfy enum value set: [...]]")."""
    value = p.get("Operations")
    if value is None:
        raise members.violation("operations", "not be null", "null")
    if type(value) is not list or any(type(v) is not str for v in value):
        raise members.wrong_type("Operations", "a list of strings")
    shown = f"'[{', '.join(value)}]'"
    if not value:
        raise members.violation("operations", "have length greater than or equal to 1", shown)
    if any(op not in GRANT_OPERATIONS for op in value):
        rule = (
            "satisfy constraint: [Member must satisfy enum value set: "
            f"[{', '.join(GRANT_OPERATIONS)}]]"
        )
        raise members.violation("operations", rule, shown)
    return value


def _constraints(p: Params) -> tuple[dict[str, str] | None, dict[str, str] | None]:
    """(EncryptionContextSubset, EncryptionContextEquals) of `Constraints`, at most one set."""
    value = p.get("Constraints")
    if value is None:
        return None, None
    if type(value) is not dict:
        raise members.wrong_type("Constraints", "a structure")
    if value.get("SourceArn") is not None:
        raise UnsupportedOperation(
            "The SourceArn grant constraint is not supported: no AWS service calls s3kms on "
            "behalf of a resource"
        )
    subset = members.context(value, "EncryptionContextSubset")
    equals = members.context(value, "EncryptionContextEquals")
    if subset is not None and equals is not None:
        raise ValidationError(
            "Constraints may hold EncryptionContextSubset or EncryptionContextEquals, not both"
        )
    for kind, pairs in (("EncryptionContextSubset", subset), ("EncryptionContextEquals", equals)):
        if pairs is None:
            continue
        if len(pairs) > MAX_CONSTRAINT_PAIRS:
            raise ValidationError(
                f"{kind} may hold at most {MAX_CONSTRAINT_PAIRS} encryption context pairs"
            )
        if any(len(v) > MAX_CONSTRAINT_VALUE for v in pairs.values()):
            raise ValidationError(
                f"An encryption context value in {kind} may hold at most "
                f"{MAX_CONSTRAINT_VALUE} characters"
            )
    return subset, equals


def _grant_name(p: Params) -> str:
    name = members.opt_str(p, "Name", 1, 256)
    if name is None:
        return ""
    if _NAME_RE.fullmatch(name) is None:
        rule = f"satisfy regular expression pattern: {_NAME_PATTERN}"
        raise members.violation("name", rule, f"'{name}'")
    return name


def _grant_id(p: Params, required: bool) -> str | None:
    """`GrantId` (1-128 characters); one that s3kms never issues is InvalidGrantIdException."""
    value = (members.req_str if required else members.opt_str)(p, "GrantId", 1, 128)
    if value is not None and _GRANT_ID_RE.fullmatch(value) is None:
        raise InvalidGrantId(f"Grant ID {value!r} is not valid")
    return value


# -- checks on the key --------------------------------------------------------------------------


def _exists(ctx: Ctx, arn: str) -> bool:
    """Whether `arn` names a principal of this s3kms: the account root or an existing user."""
    if arn == f"arn:aws:iam::{ctx.account}:root":
        return True
    prefix = f"arn:aws:iam::{ctx.account}:user/"
    return arn.startswith(prefix) and ctx.known_user(arn[len(prefix) :])


def _fits_key(meta: KeyMetadata, operations: Sequence[str], constrained: bool) -> None:
    """The grant's operations (and constraint) are ones the key supports."""
    symmetric = meta.key_spec == SYMMETRIC_DEFAULT
    allowed = _SYMMETRIC_OPERATIONS if symmetric else _USAGE_OPERATIONS.get(meta.key_usage, ())
    wrong = [op for op in operations if op not in allowed]
    if wrong:
        raise ValidationError(
            f"Grant operations [{', '.join(wrong)}] are not valid for a key of KeySpec "
            f"{meta.key_spec} and KeyUsage {meta.key_usage}"
        )
    if constrained and not symmetric:
        raise ValidationError(
            "Encryption context grant constraints are valid only for symmetric encryption "
            f"keys: the key's KeySpec is {meta.key_spec}"
        )


# -- the operations -----------------------------------------------------------------------------


async def create_grant(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref = members.req_str(p, "KeyId")
    grantee = principal_member(p, "GranteePrincipal")
    retiring = principal_member(p, "RetiringPrincipal")
    _no_service_principals(p, "GranteeServicePrincipal", "RetiringServicePrincipal")
    operations = _operations(p)
    subset, equals = _constraints(p)
    tokens = members.grant_tokens(p)
    name = _grant_name(p)
    dry_run = members.opt_bool(p, "DryRun")
    if grantee is None:
        raise members.violation("granteePrincipal", "not be null", "null")
    if all(op == "CreateGrant" for op in operations):
        raise ValidationError(ONLY_CREATE_GRANT)
    key_id = await ctx.key_only(service, ref)
    # CreateGrant's condition keys (AWS): kms:GrantOperations, kms:GranteePrincipal,
    # kms:RetiringPrincipal, kms:GrantConstraintType (kms:GrantIsForAWSResource, always false
    # here, is the evaluator's).
    values: dict[str, str | tuple[str, ...]] = {
        "kms:grantoperations": tuple(operations),
        "kms:granteeprincipal": grantee,
    }
    if retiring is not None:
        values["kms:retiringprincipal"] = retiring
    if subset is not None:
        values["kms:grantconstrainttype"] = "EncryptionContextSubset"
    elif equals is not None:
        values["kms:grantconstrainttype"] = "EncryptionContextEquals"
    access = principal.gate("kms:CreateGrant", key_id, request_facts(None, tokens, None, values))
    constrained = subset is not None or equals is not None

    def gate(meta: KeyMetadata) -> None:
        access(meta)  # first: nothing about the grant is judged for a caller who may not
        _fits_key(meta, operations, constrained)
        for arn in (grantee, retiring):
            if arn is not None and not _exists(ctx, arn):
                raise InvalidArn(INVALID_PRINCIPAL.format(arn))

    if dry_run:
        check_usable(await service.describe(key_id, access=gate))
        raise DryRunOperation
    grant = await service.create_grant(
        key_id,
        grantee_principal=grantee,
        operations=operations,
        retiring_principal=retiring,
        name=name,
        context_subset=subset,
        context_equals=equals,
        access=gate,
    )
    return ok({"GrantToken": grant.token, "GrantId": grant.grant_id})


def grant_entry(service: KeyService, key_id: str, grant: Grant) -> dict[str, Any]:
    """A GrantListEntry, as ListGrants and ListRetirableGrants answer it."""
    out: dict[str, Any] = {
        "KeyId": service.key_arn(key_id),
        "GrantId": grant.grant_id,
        "Name": grant.name,
        "CreationDate": grant.created_at,
        "GranteePrincipal": grant.grantee_principal,
    }
    if grant.retiring_principal is not None:
        out["RetiringPrincipal"] = grant.retiring_principal
    out["IssuingAccount"] = grant.issuing_account
    out["Operations"] = list(grant.operations)
    if grant.context_subset is not None:
        out["Constraints"] = {"EncryptionContextSubset": dict(grant.context_subset)}
    elif grant.context_equals is not None:
        out["Constraints"] = {"EncryptionContextEquals": dict(grant.context_equals)}
    return out


def _order(key_id: str, grant: Grant) -> str:
    """The paging order: creation time, then key and grant id (fixed width, so that strings
    compare as the times do)."""
    return f"{grant.created_at:020.6f}/{key_id}/{grant.grant_id}"


async def list_grants(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref = members.req_str(p, "KeyId")
    limit = members.limit(p, 50, 100)
    after = paging.after(p, "grant")
    grant_id = _grant_id(p, required=False)
    grantee = principal_member(p, "GranteePrincipal")
    _no_service_principals(p, "GranteeServicePrincipal")
    key_id = await ctx.key_only(service, ref)
    access = principal.gate("kms:ListGrants", key_id)
    found = [
        g
        for g in await service.list_grants(key_id, access=access)
        if (grant_id is None or g.grant_id == grant_id)
        and (grantee is None or g.grantee_principal == grantee)
    ]
    found.sort(key=lambda g: _order(key_id, g))
    page, more = paging.page(found, lambda g: _order(key_id, g), after, limit, "grant")
    return ok({"Grants": [grant_entry(service, key_id, g) for g in page], **more})


async def list_retirable_grants(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    """The grants on every key whose retiring principal is `RetiringPrincipal`. AWS authorises
    it by the caller's identity policies only ("kms:ListRetirableGrants (IAM policy)"; "KMS
    does not evaluate the caller's permissions to verify their access to any KMS keys or grants
    that might be returned"): a request about no key."""
    limit = members.limit(p, 50, 100)
    after = paging.after(p, "retirable")
    retiring = principal_member(p, "RetiringPrincipal")
    _no_service_principals(p, "RetiringServicePrincipal")
    if retiring is None:
        raise members.violation("retiringPrincipal", "not be null", "null")
    if _IAM_ARN_RE.fullmatch(retiring) is None:
        raise InvalidArn(INVALID_PRINCIPAL.format(retiring))
    principal.authorize("kms:ListRetirableGrants")
    found = sorted(await service.retirable_grants(retiring), key=lambda kg: _order(*kg))
    page, more = paging.page(found, lambda kg: _order(*kg), after, limit, "retirable")
    return ok({"Grants": [grant_entry(service, k, g) for k, g in page], **more})


async def retire_grant(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    token = members.opt_str(p, "GrantToken", 1, 8192)
    ref = members.opt_str(p, "KeyId")
    grant_id = _grant_id(p, required=False)
    dry_run = members.opt_bool(p, "DryRun")
    if token is not None:
        key_id, grant = await service.grant_by_token(token)
        if ref is not None and await ctx.key_only(service, ref) != key_id:
            raise ValidationError(
                "The KeyId does not identify the key of the grant the token names"
            )
        if grant_id is not None and grant_id != grant.grant_id:
            raise ValidationError("The GrantId does not identify the grant the token names")
        grant_id = grant.grant_id
    elif ref is not None and grant_id is not None:
        key_id = await ctx.key_only(service, ref)
    else:
        # s3kms's words: AWS documents that a grant token, or a key id and a grant id, name it.
        raise ValidationError("Specify a GrantToken, or both KeyId and GrantId")
    # The key policy and identity policies only (no grant tokens: the grant was read fresh).
    access = principal.gate("kms:RetireGrant", key_id)
    caller = principal.arn

    def check(meta: KeyMetadata, found: Grant) -> None:
        named = found.retiring_principal == caller or (
            found.grantee_principal == caller and "RetireGrant" in found.operations
        )
        try:
            # Policies, not grants: a grant of RetireGrant lets its grantee retire that grant,
            # not every grant on the key.
            access(replace(meta, grants=()))
        except AccessDenied as exc:
            # The principals the grant names need no kms:RetireGrant; an explicit Deny of it
            # still stops them (AWS: "To deny permission to retire a grant, you can use a Deny
            # action with the kms:RetireGrant permission").
            if not named or exc.explicit:
                raise
        if dry_run:
            raise DryRunOperation

    await service.retire_grant(key_id, grant_id, check=check)
    return empty()


async def revoke_grant(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref = members.req_str(p, "KeyId")
    grant_id = _grant_id(p, required=True)
    assert grant_id is not None
    dry_run = members.opt_bool(p, "DryRun")
    key_id = await ctx.key_only(service, ref)
    access = principal.gate("kms:RevokeGrant", key_id)
    if dry_run:
        await _dry_revoke(service, key_id, grant_id, access)
    await service.revoke_grant(key_id, grant_id, access=access)
    return empty()


async def _dry_revoke(service: KeyService, key_id: str, grant_id: str, access: KeyGate) -> None:
    """DryRun: allowed, and the grant exists (the service's answer for one that does not)."""
    grants = await service.list_grants(key_id, access=access)
    if all(g.grant_id != grant_id for g in grants):
        raise KeyNotFound(f"Grant ID {grant_id} not found")  # as the service answers it
    raise DryRunOperation
