"""Authentication and authorisation: a signed request becomes a Principal, or an AuthError.

Handlers never see an unauthenticated request. Each handler (or the admin router for it) calls
`principal.authorize(action, key_id)` once it knows which key the request is about; that both
enforces the caller's policies and records the action and key for the audit log. Root may do
everything; other users only what their policies allow (explicit Deny wins, no match denies).

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
from dataclasses import dataclass, field

from s3kms.auth import sigv4
from s3kms.clock import Clock
from s3kms.errors import AccessDenied, SlowDown
from s3kms.policy import Policy, decide, is_allowed, key_resources
from s3kms.request import RequestView
from s3kms.users import UserStore

ADMIN_SERVICES = frozenset({"s3", "kms"})
AWS_SERVICES = frozenset({"kms"})
STS_SERVICES = frozenset({"sts"})


def iam_user_id(arn: str) -> str:
    """The stand-in for IAM's unique user id: `AIDA` + 17 base32 characters derived from `arn`."""
    digest = hashlib.sha256(b"s3kms iam user id\x00" + arn.encode()).digest()
    return "AIDA" + base64.b32encode(digest).decode()[:17]


class Principal:
    """The authenticated caller of one request."""

    __slots__ = ("_account", "_policies", "_region", "access_key", "action", "is_root", "key_id")

    def __init__(
        self,
        access_key: str,
        is_root: bool,
        policies: list[Policy] | None = None,
        region: str = "us-east-1",
        account: str = "000000000000",
    ) -> None:
        self.access_key = access_key
        self.is_root = is_root
        self._policies = policies or []
        self._region = region
        self._account = account
        self.action: str | None = None
        self.key_id: str | None = None

    def authorize(self, action: str, key_id: str | None = None) -> None:
        """Allow `action` on the key (or on no key), and record both for the audit line."""
        self.action = action
        self.key_id = key_id
        if self.is_root:
            return
        resources = key_resources(key_id, self._region, self._account)
        self._check(action, resources, resources[0])

    def authorize_alias(self, action: str, alias_name: str) -> None:
        """Allow `action` on the alias itself (AWS checks alias actions on the alias and keys)."""
        if self.is_root:
            return
        arn = f"arn:aws:kms:{self._region}:{self._account}:{alias_name}"
        self._check(action, (arn,), arn)

    def _check(self, action: str, resources: tuple[str, ...], shown: str) -> None:
        """AccessDenied, in AWS's words, unless the policies allow `action` on `resources`."""
        decision = decide(self._policies, action, resources)
        if decision is True:
            return
        why = (
            "with an explicit deny in an identity-based policy"
            if decision is False
            else f"because no identity-based policy allows the {action} action"
        )
        raise AccessDenied(
            f"User: {self.arn} is not authorized to perform: {action} on resource: {shown} {why}"
        )

    def may(self, action: str, key_id: str | None = None) -> bool:
        """Whether the policies allow `action` on the key; records nothing."""
        if self.is_root:
            return True
        return is_allowed(
            self._policies, action, key_resources(key_id, self._region, self._account)
        )

    def key_arn(self, key_id: str) -> str:
        return key_resources(key_id, self._region, self._account)[0]

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
    ) -> None:
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

    def authenticate(
        self, req: RequestView, *, admin: bool, services: frozenset[str] | None = None
    ) -> Principal:
        """The request's principal. `services`: the credential-scope services this surface
        accepts (default: `s3`/`kms` on the admin API, `kms` on the AWS API)."""
        if services is None:
            services = ADMIN_SERVICES if admin else AWS_SERVICES
        verified = sigv4.verify_request(
            req,
            lookup_secret=self._secret,
            region=self._region,
            services=services,
            now=self._clock.now(),
            s3_flavour=admin,
        )
        access = verified.access_key
        if self._limiter is not None:
            self._limiter.check(access)
        if access == self._root:
            return Principal(access, True, None, self._region, self._account)
        policies = self.users.policies_for(access) if self.users is not None else []
        return Principal(access, False, policies, self._region, self._account)
