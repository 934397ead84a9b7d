"""Authentication and authorisation: a signed request becomes a Principal, or an AuthError.

Handlers never see an unauthenticated request. A handler about a key calls
`principal.gate(action, key_id, facts)` once it knows which key the request is about, and hands
the gate to the service, which runs it on the key's current metadata (key policy, grants) before
it answers; a request about no key (and every admin route) calls
`principal.authorize(action, key_id)`, which checks the identity policies only. Both record the
action and key for the audit log. The evaluation itself is `s3kms.access.decision`: an explicit
Deny wins; otherwise the key policy, the identity policies and the grants as AWS combines them.
Root has every identity permission; a user only what its policies allow.

Every principal is named by an IAM ARN in the configured account (`--account-id`), as AWS names
the callers of its APIs (what `sts:GetCallerIdentity` answers):

    root (S3KMS_ROOT_USER)      arn:aws:iam::<account>:root               UserId <account>
    a user (its access key K)   arn:aws:iam::<account>:user/<K>           UserId AIDA + 17 characters

An s3kms user has one name, its access key (`accessKey` of `user/add`, `access_key` of the users
file): it is both the IAM user name and the access key id. The root's ARN does not name its access
key, as in AWS. A user's UserId stands for IAM's unique id (`AIDA...`): `AIDA` and the first 17
characters of the base32 SHA-256 of a label and the user's ARN (`iam_user_id`), so every node and
worker derives the same id with nothing stored. Unlike IAM's, it is the same for a user removed
and added again.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field

from s3kms.access.context import RequestContext
from s3kms.access.decision import (
    DELEGATED,
    IDENTITY_DENY,
    UNDECIDED,
    Identity,
    authorize_identity,
    authorize_key,
    decide,
    denied,
    is_allowed,
    key_resources,
    no_identity_policy,
)
from s3kms.access.documents import Policy
from s3kms.access.facts import NO_FACTS, Facts
from s3kms.auth import sigv4
from s3kms.clock import Clock
from s3kms.errors import SlowDown
from s3kms.model import KeyMetadata
from s3kms.request import RequestView
from s3kms.users import IdentitySurface, UserStore

# The check a service method runs on the key's current metadata before it returns anything:
# raises AccessDenied (or GrantNotVisible: re-read the metadata once and run it again).
KeyGate = Callable[[KeyMetadata], None]


ADMIN_SERVICES = frozenset({"s3", "kms"})
AWS_SERVICES = frozenset({"kms"})
STS_SERVICES = frozenset({"sts"})


def iam_user_id(arn: str) -> str:
    """The stand-in for IAM's unique user id: `AIDA` + 17 base32 characters derived from `arn`."""
    digest = hashlib.sha256(b"s3kms iam user id\x00" + arn.encode()).digest()
    return "AIDA" + base64.b32encode(digest).decode()[:17]


class Principal:
    """The authenticated caller of one request (an `access.context.Caller`)."""

    __slots__ = (
        "_account",
        "_aliases",
        "_conditional",
        "_policies",
        "_region",
        "access_key",
        "action",
        "is_root",
        "key_id",
        "request_time",
        "secure",
        "source_ip",
    )

    def __init__(
        self,
        access_key: str,
        is_root: bool,
        policies: list[Policy] | None = None,
        region: str = "us-east-1",
        account: str = "000000000000",
        *,
        source_ip: str | None = None,
        secure: bool = False,
        request_time: float | None = None,
    ) -> None:
        self.access_key = access_key
        self.is_root = is_root
        self._policies: Sequence[Policy] = policies or ()
        # Whether an identity policy has a Condition: then its decision needs the request.
        self._conditional = bool(policies) and any(p.conditional for p in self._policies)
        self._region = region
        self._account = account
        self.source_ip = source_ip  # aws:SourceIp
        self.secure = secure  # aws:SecureTransport
        self.request_time = time.time() if request_time is None else request_time
        self.action: str | None = None
        self.key_id: str | None = None
        self._aliases: dict[str, tuple[str, ...]] = {}  # kms:ResourceAliases, once read

    def authorize(self, action: str, key_id: str | None = None, facts: Facts = NO_FACTS) -> None:
        """Allow `action` on the key (or on no key) by the identity policies alone (the admin
        API, requests about no key), and record both for the audit line. Conditions see the
        caller, the transport and `facts` (CreateKey's kms:KeySpec, ...)."""
        self.action = action
        self.key_id = key_id
        if self.is_root:
            return
        resources = key_resources(key_id, self._region, self._account)
        if self._conditional:
            authorize_identity(self, action, resources, facts)
            return
        decision = decide(self._policies, action, resources)
        if decision is not True:
            why = IDENTITY_DENY if decision is False else no_identity_policy(action)
            raise denied(self, action, resources[0], why)

    def gate(self, action: str, key_id: str, facts: Facts = NO_FACTS) -> KeyGate:
        """The check of `action` on the key, to run on the key's metadata (its key policy and
        grants) before the service answers; records the action and key for the audit line. An
        explicit Deny in an identity policy is raised at once."""
        self.action = action
        self.key_id = key_id
        resources = key_resources(key_id, self._region, self._account)
        identity: Identity
        if self.is_root:
            identity = None
        elif self._conditional:
            identity = UNDECIDED  # its conditions may look at the key: decided on its metadata
        else:
            identity = decide(self._policies, action, resources)
            if identity is False:
                raise denied(self, action, resources[0], IDENTITY_DENY)

        if (identity is True or self.is_root) and action.startswith(DELEGATED):
            # Allowed already when the key has the default key policy: the hot path, no call.
            def allowed_unless_key_policy(meta: KeyMetadata) -> None:
                if meta.policy is not None:
                    authorize_key(self, action, resources, meta, facts, identity)

            return allowed_unless_key_policy

        def check(meta: KeyMetadata) -> None:
            authorize_key(self, action, resources, meta, facts, identity)

        return check

    def authorize_alias(self, action: str, alias_name: str) -> None:
        """Allow `action` on the alias itself (AWS checks alias actions on the alias and keys)."""
        if self.is_root:
            return
        arn = f"arn:aws:kms:{self._region}:{self._account}:{alias_name}"
        authorize_identity(self, action, (arn,))

    def may(self, action: str, key_id: str | None = None) -> bool:
        """Whether the identity policies allow `action` on the key; records nothing."""
        if self.is_root:
            return True
        resources = key_resources(key_id, self._region, self._account)
        lookup = RequestContext(self, action, NO_FACTS) if self._conditional else None
        return is_allowed(self._policies, action, resources, lookup)

    def key_arn(self, key_id: str) -> str:
        return key_resources(key_id, self._region, self._account)[0]

    def aliases_of(self, key_id: str) -> tuple[str, ...] | None:
        """The key's alias names, when this request read them (kms:ResourceAliases)."""
        return self._aliases.get(key_id)

    def learn_aliases(self, key_id: str, names: tuple[str, ...]) -> None:
        self._aliases[key_id] = names

    @property
    def policies(self) -> Sequence[Policy]:
        """The identity policies attached to the caller (none for root)."""
        return self._policies

    @property
    def region(self) -> str:
        return self._region

    @property
    def account(self) -> str:
        """The account id the principal belongs to (`--account-id`)."""
        return self._account

    @property
    def arn(self) -> str:
        """`arn:aws:iam::<account>:root` for root, `arn:aws:iam::<account>:user/<access key>`."""
        if self.is_root:
            return f"arn:aws:iam::{self._account}:root"
        return f"arn:aws:iam::{self._account}:user/{self.access_key}"

    @property
    def user_id(self) -> str:
        """AWS's `aws:userid`: the account id for root, the user's unique id (`AIDA...`) else."""
        return self._account if self.is_root else iam_user_id(self.arn)


@dataclass
class _Bucket:
    tokens: float
    updated: float = field(default_factory=time.monotonic)


class RateLimiter:
    """A token bucket per access key: `rate` requests per second, bursts up to `burst`."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self._buckets: dict[str, _Bucket] = {}

    def check(self, access_key: str) -> None:
        now = time.monotonic()
        bucket = self._buckets.get(access_key)
        if bucket is None:
            bucket = self._buckets[access_key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            raise SlowDown
        bucket.tokens -= 1.0


class Authenticator:
    def __init__(
        self,
        root_access_key: str,
        root_secret_key: str,
        region: str,
        clock: Clock,
        *,
        account_id: str = "000000000000",
        users: UserStore | None = None,
        rate_limit: float = 0.0,
        regions: Container[str] | None = None,
    ) -> None:
        """`regions`: the regions the AWS KMS API serves besides `region` (its home; the admin
        API serves that one only); None: the home region only."""
        self._regions = regions
        self._root = root_access_key
        self._root_secret = root_secret_key
        self._region = region
        self._account = account_id
        self._clock = clock
        self.users = users
        self._limiter = RateLimiter(rate_limit) if rate_limit > 0 else None

    def _secret(self, access_key: str) -> str | None:
        if access_key == self._root:
            return self._root_secret
        return self.users.secret_for(access_key) if self.users is not None else None

    @property
    def clock(self) -> Clock:
        return self._clock

    def principal_for(
        self, access_key: str | None, *, source_ip: str | None, secure: bool
    ) -> Principal:
        """The principal of a caller identified otherwise than by SigV4 (a KES or KMIP client
        certificate, auth/kes.py, auth/kmip.py): `access_key` a user's, None for root. The rate
        limit and the user's identity policies apply as they do to a signed request."""
        access = self._root if access_key is None else access_key
        return self._principal(
            access, access_key is None, self._region, source_ip, secure, self._clock.now()
        )

    def principal_for_identity(
        self, surface: IdentitySurface, identity: str, *, source_ip: str | None
    ) -> Principal | None:
        """The principal of the user a client-certificate identity is attached to on `surface`
        (auth/certificates.py; `kes_identities`, `kmip_identities`), or None when it names no
        user there. Raises SlowDown when the user is over its rate limit."""
        users = self.users
        access = users.user_for_identity(surface, identity) if users is not None else None
        if access is None:
            return None
        return self.principal_for(access, source_ip=source_ip, secure=True)

    def _principal(
        self,
        access: str,
        is_root: bool,
        region: str,
        source_ip: str | None,
        secure: bool,
        now: float,
    ) -> Principal:
        """An identified caller's principal, once its rate limit allows the request."""
        if self._limiter is not None:
            self._limiter.check(access)
        policies = None
        if not is_root and self.users is not None:
            policies = self.users.policies_for(access)
        return Principal(
            access,
            is_root,
            policies,
            region,
            self._account,
            source_ip=source_ip,
            secure=secure,
            request_time=now,
        )

    def authenticate(
        self, req: RequestView, *, admin: bool, services: frozenset[str] | None = None
    ) -> Principal:
        """The request's principal. `services`: the credential-scope services this surface
        accepts (default: `s3`/`kms` on the admin API, `kms` on the AWS API)."""
        if services is None:
            services = ADMIN_SERVICES if admin else AWS_SERVICES
        now = self._clock.now()
        verified = sigv4.verify_request(
            req,
            lookup_secret=self._secret,
            region=self._region,
            services=services,
            now=now,
            s3_flavour=admin,
            regions=None if admin else self._regions,
        )
        access = verified.access_key
        # (its region: the home region, or another the AWS KMS API serves)
        return self._principal(
            access, access == self._root, verified.region, req.source_ip, req.secure, now
        )
