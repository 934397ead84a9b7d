"""The condition keys of one request: what a policy's Condition may test, by (lowered) name.

Built only when a statement with a Condition is evaluated, and lazily: each key is computed when
a test asks for it. Sources, in this order:

    the request (Facts.values, filled by the protocol handler from the members it parsed):
        kms:GrantOperations, kms:GranteePrincipal, kms:RetiringPrincipal, kms:SigningAlgorithm,
        kms:EncryptionAlgorithm, kms:MacAlgorithm, kms:MessageType, kms:RequestAlias,
        kms:GrantConstraintType, kms:BypassPolicyLockoutSafetyCheck, kms:KeySpec and kms:KeyUsage
        of CreateKey, aws:RequestTag/<k>, aws:TagKeys, ... any key the handler sets
    the request's encryption context (Facts.encryption_context):
        kms:EncryptionContext:<k> (<k> case-insensitive, as AWS documents), kms:EncryptionContextKeys
    the key (KeyMetadata):
        kms:KeySpec, kms:KeyUsage, kms:KeyOrigin (AWS_KMS), kms:MultiRegion (false),
        aws:ResourceTag/<k>; kms:ResourceAliases, the key's aliases, which its metadata does not
        hold: the first time a policy asks, the lookup raises AliasesNeeded, the protocol reads
        the key's aliases, hands them to the caller (`Caller.aliases_of`) and runs the request
        once more (only requests on keys whose policies test the key pay for that)
    the caller:
        aws:PrincipalArn, aws:PrincipalAccount, kms:CallerAccount, aws:PrincipalType (Account for
        the root, User), aws:username (users only), aws:userid, aws:PrincipalIsAWSService (false)
    the transport and the clock:
        aws:SourceIp (when known), aws:SecureTransport, aws:CurrentTime, aws:EpochTime,
        aws:RequestedRegion
    kms:GrantIsForAWSResource: false, on the grant operations (CreateGrant, ListGrants,
        RevokeGrant) only, as AWS sets it; kms:ViaService and aws:SourceVpc(e): never present.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from s3kms.access.conditions import Value
from s3kms.access.facts import Facts
from s3kms.errors import KMSError
from s3kms.model import KeyMetadata

if TYPE_CHECKING:
    from s3kms.access.documents import Policy

_GRANT_ACTIONS = frozenset({"kms:creategrant", "kms:listgrants", "kms:revokegrant"})
_CONTEXT_PREFIX = "kms:encryptioncontext:"
_TAG_PREFIX = "aws:resourcetag/"


class AliasesNeeded(KMSError):
    """A condition tests kms:ResourceAliases of a key whose aliases the caller does not hold
    yet: the protocol fetches them and runs the request again. Never answered to a client (if
    it ever escaped, it would be a plain 500 InternalError). Raised with the key's `key_id`."""


class Caller(Protocol):
    """What the evaluator needs of an authenticated principal (auth.identity.Principal)."""

    @property
    def arn(self) -> str: ...
    @property
    def account(self) -> str: ...
    @property
    def is_root(self) -> bool: ...
    @property
    def access_key(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def policies(self) -> Sequence[Policy]: ...
    @property
    def source_ip(self) -> str | None: ...
    @property
    def secure(self) -> bool: ...
    @property
    def request_time(self) -> float: ...
    def aliases_of(self, key_id: str) -> tuple[str, ...] | None:
        """The key's alias names as this request read them, or None when not read yet."""
        ...


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RequestContext:
    """A `conditions.Lookup`: `context("kms:keyspec")` -> "SYMMETRIC_DEFAULT", or None."""

    __slots__ = ("_action", "_caller", "_context", "_facts", "_meta")

    def __init__(
        self, caller: Caller, action: str, facts: Facts, meta: KeyMetadata | None = None
    ) -> None:
        self._caller = caller
        self._action = action.lower()
        self._facts = facts
        self._meta = meta
        self._context: dict[str, tuple[str, ...]] | None = None

    def __call__(self, key: str) -> Value | None:
        found = self._facts.values.get(key)
        if found is not None:
            return found
        if key.startswith(_CONTEXT_PREFIX):
            return self._context_value(key[len(_CONTEXT_PREFIX) :])
        if key.startswith(_TAG_PREFIX):
            if self._meta is None:
                return None
            wanted = key[len(_TAG_PREFIX) :]
            values = tuple(v for k, v in self._meta.tags if k.lower() == wanted)
            return values[0] if len(values) == 1 else (values or None)
        compute = _COMPUTED.get(key)
        return compute(self) if compute is not None else None

    def _context_value(self, wanted: str) -> Value | None:
        context = self._facts.encryption_context
        if not context:
            return None
        if self._context is None:
            lowered: dict[str, tuple[str, ...]] = {}
            for k, v in context.items():
                lowered[k.lower()] = (*lowered.get(k.lower(), ()), v)
            self._context = lowered
        values = self._context.get(wanted)
        if values is None:
            return None
        return values[0] if len(values) == 1 else values

    # -- the computed keys -----------------------------------------------------------------

    def _context_keys(self) -> Value | None:
        context = self._facts.encryption_context
        return tuple(context) if context else None

    def _key_spec(self) -> Value | None:
        return self._meta.key_spec if self._meta is not None else None

    def _key_usage(self) -> Value | None:
        return self._meta.key_usage if self._meta is not None else None

    def _key_origin(self) -> Value | None:
        return self._meta.origin if self._meta is not None else None

    def _multi_region(self) -> Value | None:
        if self._meta is None:
            return None
        return "true" if self._meta.multi_region else "false"

    def _multi_region_key_type(self) -> Value | None:
        """PRIMARY or REPLICA in the request's region (the key's); none for a single-Region
        key."""
        if self._meta is None or self._meta.primary_region is None:
            return None
        return "PRIMARY" if self._meta.primary_region == self._caller.region else "REPLICA"

    def _grant_for_aws(self) -> Value | None:
        return "false" if self._action in _GRANT_ACTIONS else None

    def _username(self) -> Value | None:
        return None if self._caller.is_root else self._caller.access_key

    def _principal_type(self) -> Value | None:
        return "Account" if self._caller.is_root else "User"

    def _arn(self) -> Value | None:
        return self._caller.arn

    def _account(self) -> Value | None:
        return self._caller.account

    def _user_id(self) -> Value | None:
        return self._caller.user_id

    def _source_ip(self) -> Value | None:
        return self._caller.source_ip

    def _secure(self) -> Value | None:
        return "true" if self._caller.secure else "false"

    def _current_time(self) -> Value | None:
        return iso_time(self._caller.request_time)

    def _epoch_time(self) -> Value | None:
        return str(int(self._caller.request_time))

    def _region(self) -> Value | None:
        return self._caller.region

    def _false(self) -> Value | None:
        return "false"

    def _resource_aliases(self) -> Value | None:
        if self._meta is None:
            return None
        names = self._caller.aliases_of(self._meta.key_id)
        if names is None:
            raise AliasesNeeded(key_id=self._meta.key_id)
        return names or None


_COMPUTED = {
    "kms:encryptioncontextkeys": RequestContext._context_keys,
    "kms:keyspec": RequestContext._key_spec,
    "kms:keyusage": RequestContext._key_usage,
    "kms:keyorigin": RequestContext._key_origin,
    "kms:multiregion": RequestContext._multi_region,
    "kms:multiregionkeytype": RequestContext._multi_region_key_type,
    "kms:grantisforawsresource": RequestContext._grant_for_aws,
    "kms:calleraccount": RequestContext._account,
    "aws:principalarn": RequestContext._arn,
    "aws:principalaccount": RequestContext._account,
    "aws:principaltype": RequestContext._principal_type,
    "aws:principalisawsservice": RequestContext._false,
    "aws:username": RequestContext._username,
    "aws:userid": RequestContext._user_id,
    "aws:sourceip": RequestContext._source_ip,
    "aws:securetransport": RequestContext._secure,
    "aws:currenttime": RequestContext._current_time,
    "aws:epochtime": RequestContext._epoch_time,
    "aws:requestedregion": RequestContext._region,
    "kms:resourcealiases": RequestContext._resource_aliases,
}
