"""AWS KMS's authorization of a request about a key: key policy, identity policies, grants.

As the KMS Developer Guide ("Troubleshooting key access", its flowchart) and the IAM User Guide
("Policy evaluation logic") describe it, for a caller C asking for action A on key K:

1. An explicit Deny that applies (in an identity policy of C, or in K's key policy for C or C's
   account) denies. Identity-based is checked first, so its message wins when both deny.
2. Otherwise A is allowed when K's key policy allows C directly (`"*"`, C's ARN, a NotPrincipal
   that leaves C out; the root by the account principal), or when it allows the account
   (`arn:aws:iam::<acct>:root` or the bare id: "the account may delegate through IAM") and an
   identity policy of C allows A (the root needs none: it holds every IAM permission), or when
   a grant on K allows it: its grantee is C's ARN, `kms:<Operation>` of A is among its
   operations, and its constraints fit the request's encryption context (for operations that
   take one, on a symmetric encryption key: EncryptionContextSubset, every pair of the
   constraint is in the context; EncryptionContextEquals, the same pairs; keys compared
   case-insensitively, values exactly, as the GrantConstraints reference says).
3. Otherwise A is denied.

A key with no key policy (`KeyMetadata.policy` None) has AWS's default one, which gives the
account `kms:*`: the root may do everything, a user what its identity policies allow; that case
costs one identity decision, as before key policies existed.

Denials are AccessDenied with AWS's message (IAM User Guide, "Access denied error messages";
the KMS shape recorded in AWS answers, e.g. `User: arn:aws:sts::111122223333:assumed-role/r/s is
not authorized to perform: kms:Decrypt on resource: arn:aws:kms:...:key/... because no
resource-based policy allows the kms:Decrypt action`):

    User: <caller ARN> is not authorized to perform: <action> on resource: <key ARN> <why>
      why = with an explicit deny in an identity-based policy
          | with an explicit deny in a resource-based policy          (the key policy)
          | because no identity-based policy allows the <action> action
                (the key policy delegates to the account, no identity policy allows)
          | because no resource-based policy allows the <action> action
                (the key policy does not allow the caller, nor delegate to its account)

A denied request whose GrantTokens name a grant of the key that its metadata does not show (yet)
raises GrantNotVisible instead, so that the service re-reads the key and tries once more.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from s3kms import granttoken
from s3kms.access.conditions import Lookup
from s3kms.access.context import Caller, RequestContext
from s3kms.access.documents import DIRECT, LOCKOUT, Policy, parse_key_policy
from s3kms.access.facts import NO_FACTS, Facts
from s3kms.errors import AccessDenied, GrantNotVisible, KMSError, MalformedPolicyDocument
from s3kms.model import Grant, KeyMetadata

log = logging.getLogger("s3kms.access")

IDENTITY_DENY: Final = "with an explicit deny in an identity-based policy"
RESOURCE_DENY: Final = "with an explicit deny in a resource-based policy"

# The operations whose requests carry an encryption context (grant constraints apply to them,
# on a symmetric encryption key only; AWS: "Grant constraints are not applied to operations
# that do not support an encryption context").
_CONTEXT_ACTIONS = frozenset(
    f"kms:{op}".lower()
    for op in (
        "Encrypt",
        "Decrypt",
        "ReEncryptFrom",
        "ReEncryptTo",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
    )
)


class _Undecided:
    """The identity decision not taken yet (it needs the key: conditions on its tags, ...)."""


UNDECIDED: Final = _Undecided()
Identity = bool | None | _Undecided


def key_resources(key_id: str | None, region: str, account_id: str) -> tuple[str, ...]:
    """The resource names a request is checked against: the key's ARN and MinIO's name for it,
    or `*` for a request about no key."""
    if key_id is None:
        return ("*",)
    return (f"arn:aws:kms:{region}:{account_id}:key/{key_id}", f"arn:minio:kms:::{key_id}")


def decide(
    policies: Iterable[Policy],
    action: str,
    resources: Sequence[str],
    lookup: Lookup | None = None,
) -> bool | None:
    """Identity policies: True when a statement allows `action` on `resources` and none denies
    it, False when one denies it (an explicit Deny wins over every Allow), None when none
    applies. `lookup` gives the condition keys (without it every key is absent)."""
    folded = action.lower()  # once, not per pattern
    allowed: bool | None = None
    for policy in policies:
        for statement in policy.for_action(folded):
            if not statement.covers_resources(resources):
                continue
            if statement.condition is not None and not statement.condition.holds(lookup or _absent):
                continue
            if not statement.allow:
                return False
            allowed = True
    return allowed


def is_allowed(
    policies: Iterable[Policy], action: str, resources: Sequence[str], lookup: Lookup | None = None
) -> bool:
    return decide(policies, action, resources, lookup) is True


def _absent(key: str) -> None:
    return None


def denied(caller: Caller, action: str, resource: str, why: str) -> AccessDenied:
    exc = AccessDenied(
        f"User: {caller.arn} is not authorized to perform: {action} on resource: {resource} {why}"
    )
    exc.explicit = why in (IDENTITY_DENY, RESOURCE_DENY)
    return exc


def _no_policy(kind: str, action: str) -> str:
    return f"because no {kind}-based policy allows the {action} action"


def no_identity_policy(action: str) -> str:
    """Why a request is denied that no identity policy allows (and no key policy decided)."""
    return _no_policy("identity", action)


# -- key policies, compiled once per text ---------------------------------------------------

MAX_CACHED_POLICIES = 4096
_compiled: dict[tuple[str, str], Policy] = {}
_filling = threading.Lock()  # misses only (a gate may run on a keystore's thread)


def _any_user(name: str) -> bool:
    return True


def key_policy(text: str, account: str) -> Policy:
    """The compiled key policy for a stored text, from a bounded cache (a hit is a dict lookup).
    Stored texts were validated when put; a user removed since then simply matches no caller.
    A text that no longer parses (it never should) allows nothing."""
    cache_key = (text, account)
    found = _compiled.get(cache_key)
    if found is not None:
        return found
    try:
        found = parse_key_policy(text, account=account, known_user=_any_user)
    except KMSError as exc:
        log.error("a stored key policy does not parse (%s): it allows nothing", exc.message)
        found = Policy("key policy", (), text)
    with _filling:
        while len(_compiled) >= MAX_CACHED_POLICIES:
            del _compiled[next(iter(_compiled))]  # the oldest entry
        _compiled[cache_key] = found
    return found


# -- the decision -----------------------------------------------------------------------------


def _key_policy_verdict(
    caller: Caller,
    folded: str,
    resources: Sequence[str],
    policy: Policy | None,
    lookup: Lookup,
    identity_allows: bool,
) -> tuple[bool, bool, bool]:
    """(denies, allows the caller directly, allows its account) by the key policy (None: the
    default key policy). `identity_allows`: the account's allowing is enough (root, or an
    identity policy allows); once an Allow decides, only Deny statements are looked at (their
    conditions are what a request pays for)."""
    if policy is None:  # "Enable IAM User Permissions": the account gets kms:* on the key
        covered = folded.startswith("kms:")
        return False, covered and caller.is_root, covered
    direct = account = allowed = False
    arn, is_root = caller.arn, caller.is_root
    for statement in policy.for_action(folded):
        if allowed and statement.allow:
            continue
        if not statement.covers_resources(resources):
            continue
        reach = statement.reaches(arn, is_root)
        if not reach:
            continue
        if statement.condition is not None and not statement.condition.holds(lookup):
            continue
        if not statement.allow:
            return True, False, False  # a Deny for the caller, or for its whole account
        if reach == DIRECT:
            direct = allowed = True
        else:
            account = True
            allowed = allowed or identity_allows
    return False, direct, account


def _fits(
    constraint: tuple[tuple[str, str], ...], context: Mapping[str, str] | None, equal: bool
) -> bool:
    given = {k.lower(): v for k, v in (context or {}).items()}
    wanted = {k.lower(): v for k, v in constraint}
    if equal:
        return given == wanted
    return all(given.get(k) == v for k, v in wanted.items())


def grant_allows(grant: Grant, arn: str, folded: str, meta: KeyMetadata, facts: Facts) -> bool:
    """Whether `grant` lets the caller `arn` perform the (lowered) action with these facts."""
    if grant.grantee_principal != arn or not folded.startswith("kms:"):
        return False
    operation = folded[4:]
    if not any(op.lower() == operation for op in grant.operations):
        return False
    if folded not in _CONTEXT_ACTIONS or meta.key_spec != "SYMMETRIC_DEFAULT":
        return True  # constraints apply only where a request carries an encryption context
    if grant.context_equals is not None:
        return _fits(grant.context_equals, facts.encryption_context, True)
    if grant.context_subset is not None:
        return _fits(grant.context_subset, facts.encryption_context, False)
    return True


def _unseen_grant(meta: KeyMetadata, facts: Facts) -> bool:
    """Whether a grant token of the request names a grant of this key that `meta` lacks."""
    known: set[str] | None = None
    for token in facts.grant_tokens:
        named = granttoken.decode(token)
        if named is None or named[0] != meta.key_id:
            continue
        if known is None:
            known = {g.grant_id for g in meta.grants}
        if named[1] not in known:
            return True
    return False


# The actions the default key policy delegates to the account's identity policies: AWS's
# `kms:*`, and s3kms's KMIP actions (`kmip:*`), which AWS's default document cannot name. A key
# policy of the caller's own must name `kmip:` actions to allow them.
DELEGATED = ("kms:", "kmip:")


def authorize_key(
    caller: Caller,
    action: str,
    resources: Sequence[str],
    meta: KeyMetadata,
    facts: Facts = NO_FACTS,
    identity: Identity = UNDECIDED,
) -> None:
    """Allow `action` on the key whose current metadata is `meta`, or raise AccessDenied (or
    GrantNotVisible) with AWS's message. `resources`: `key_resources` of the key. `identity`:
    the identity-policy decision when the caller has taken it already (policies without
    conditions do not need the key), else UNDECIDED."""
    folded = action.lower()
    if (
        meta.policy is None
        and folded.startswith(DELEGATED)
        and (caller.is_root or identity is True)
    ):
        return  # the default key policy delegates to the account, and the account allows
    lookup = RequestContext(caller, action, facts, meta)
    if isinstance(identity, _Undecided):
        identity = None if caller.is_root else decide(caller.policies, action, resources, lookup)
    if identity is False:
        raise denied(caller, action, resources[0], IDENTITY_DENY)
    policy = None if meta.policy is None else key_policy(meta.policy, caller.account)
    identity_allows = caller.is_root or identity is True
    denies, direct, account = _key_policy_verdict(
        caller, folded, resources, policy, lookup, identity_allows
    )
    if denies:
        raise denied(caller, action, resources[0], RESOURCE_DENY)
    if direct or (account and identity_allows):
        return
    arn = caller.arn
    for grant in meta.grants:
        # The grantee first, inline: a key's other grants cost one comparison each.
        if grant.grantee_principal == arn and grant_allows(grant, arn, folded, meta, facts):
            return
    why = _no_policy("identity" if account else "resource", action)
    if facts.grant_tokens and _unseen_grant(meta, facts):
        raise GrantNotVisible(denied(caller, action, resources[0], why).message)
    raise denied(caller, action, resources[0], why)


def authorize_identity(
    caller: Caller, action: str, resources: Sequence[str], facts: Facts = NO_FACTS
) -> None:
    """Identity policies only (the admin API's `admin:*` actions, requests about no key): allow
    `action` or raise AccessDenied. Conditions see the caller, the transport and `facts`."""
    if caller.is_root:
        return
    policies = caller.policies
    conditional = any(p.conditional for p in policies)
    lookup = RequestContext(caller, action, facts) if conditional else None
    decision = decide(policies, action, resources, lookup)
    if decision is True:
        return
    why = IDENTITY_DENY if decision is False else _no_policy("identity", action)
    raise denied(caller, action, resources[0], why)


def check_lockout(policy: Policy, principal: Caller, key_arn: str) -> None:
    """AWS's policy lockout safety check (CreateKey/PutKeyPolicy without
    BypassPolicyLockoutSafetyCheck): the caller must be allowed kms:PutKeyPolicy on the key by
    the new policy together with its identity policies, or MalformedPolicyDocument with AWS's
    "The new key policy will not allow you to update the key policy in the future.". Grants do
    not count (a grant cannot allow PutKeyPolicy)."""
    action = "kms:PutKeyPolicy"
    key_id = key_arn.rsplit("/", 1)[-1]
    resources = (key_arn, f"arn:minio:kms:::{key_id}")
    lookup = RequestContext(principal, action, NO_FACTS)
    identity = None if principal.is_root else decide(principal.policies, action, resources, lookup)
    identity_allows = principal.is_root or identity is True
    denies, direct, account = _key_policy_verdict(
        principal, action.lower(), resources, policy, lookup, identity_allows
    )
    allowed = direct or (account and identity_allows)
    if identity is False or denies or not allowed:
        raise MalformedPolicyDocument(LOCKOUT)
