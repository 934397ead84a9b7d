"""What every AWS KMS operation handler shares: its signature, its context, its success answers.

A handler is a plain async function `(ctx, service, params, principal) -> Response`: `ctx` is the
one `Ctx` of the API (built once, with the runtime's settings), `service` the KeyService this
request runs on (held for the request by `Runtime.use`), `params` the parsed body, `principal`
the authenticated caller. A handler checks its members (`members.py`), authorises, calls the
service, and returns the answer; it raises from the error tree for every failure (`errors.py`
renders it).

Key references (`KeyId` and friends) are resolved to a bare key id first (`Ctx.key`), so the caller
is authorised against the key actually used, and the service is then called with that id and the
caller's gate (`access = principal.gate(action, key_id, facts)`), which the service runs on the
key's current metadata (key policy, grants) before it answers or changes anything. `facts` holds
what the request says that conditions and grant constraints test (`request_facts`): the encryption
context, the grant tokens, the alias the caller named the key by (`kms:RequestAlias`), the
algorithms; a request that says nothing of the kind shares one module-level `Facts`, so the hot
path builds nothing. Requests about no key (CreateKey, ListKeys, GenerateRandom, ...) call
`principal.authorize(action)`.

Responses name keys by ARN where AWS does (Encrypt, Decrypt, GenerateDataKey, ...);
`KeyMetadata.KeyId` is the bare id. Timestamps are epoch seconds, blobs base64.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from s3kms.access.facts import NO_FACTS, Facts
from s3kms.auth.identity import Principal
from s3kms.errors import InvalidArn, KeyNotFound
from s3kms.http.responses import AWS_JSON, Response, json_response
from s3kms.model import KEY_NAME_RE
from s3kms.protocols.awskms.members import Params
from s3kms.runtime import Runtime
from s3kms.service import KeyService

_EMPTY = b"{}"

# AWS's answer to an alias where an operation takes only a key id or key ARN (GetKeyPolicy,
# CreateGrant, ...), as the AWS CLI reports it: "An error occurred (InvalidArnException) when
# calling the GetKeyPolicy operation: Key Aliases are not supported for this operation."
ALIASES_NOT_SUPPORTED = "Key Aliases are not supported for this operation."

Values = Mapping[str, str | tuple[str, ...]]
_NO_VALUES: Values = {}


def request_facts(
    context: Mapping[str, str] | None = None,
    tokens: tuple[str, ...] = (),
    alias: str | None = None,
    values: Values = _NO_VALUES,
) -> Facts:
    """What the request says for conditions and grant constraints: its encryption context, its
    grant tokens, the alias name its KeyId named (`kms:RequestAlias`) and other condition keys
    (lower-cased names). A request that says none of them is `NO_FACTS`."""
    if not context and not tokens and alias is None:
        return Facts(values=values) if values else NO_FACTS
    if alias is not None:
        values = {**values, "kms:requestalias": alias}
    return Facts(encryption_context=context or None, values=values, grant_tokens=tokens)


def facts_table(name: str, choices: Sequence[str]) -> dict[str, Facts]:
    """The Facts of a request that says nothing but `name` = one of `choices`, built once per
    choice (an Encrypt without context or grant tokens says only its algorithm): the hot path
    looks one up instead of building it."""
    return {choice: Facts(values={name: choice}) for choice in choices}


def alias_named(ref: str) -> str | None:
    """The alias name a key reference names (`alias/x`, or an alias ARN), or None."""
    if ref.startswith("alias/"):
        return ref
    if ref.startswith("arn:"):
        resource = ref.split(":", 5)[-1]
        if resource.startswith("alias/"):
            return resource
    return None


def arn_prefix(runtime: Runtime, region: str | None = None) -> str:
    """`arn:aws:kms:<region>:<account>:`, as `KeyService.key_arn` writes it (None: the home
    region)."""
    settings = runtime.settings
    return f"arn:aws:kms:{region or settings.region}:{settings.account_id}:"


def _no_users(name: str) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Ctx:
    """What the handlers share across requests: the account's ARN prefix and id, key resolution,
    and whether a user exists (`known_user(access key)`: the principals of key policies and
    grants must exist, as AWS requires)."""

    arn_prefix: str
    account: str = "000000000000"
    known_user: Callable[[str], bool] = _no_users

    async def key(self, service: KeyService, ref: str) -> str:
        """The bare key id a reference names (key id, key ARN, alias name, alias ARN)."""
        if ref.startswith("arn:") and not ref.startswith(service.arn_prefix):
            # (the region's: a key ARN of another region names no key here)
            raise KeyNotFound(f"Invalid arn {ref}")
        key_id = await service.resolve(ref)
        if KEY_NAME_RE.fullmatch(key_id) is None:
            # No key can have this id (e.g. `arn:...:key/alias/x`): never hand it on.
            raise KeyNotFound(key_id=key_id)
        return key_id

    async def key_only(self, service: KeyService, ref: str) -> str:
        """`key` for an operation that takes a key id or key ARN but no alias (the key policy
        and grant operations): an alias is AWS's InvalidArnException."""
        if alias_named(ref) is not None:
            raise InvalidArn(ALIASES_NOT_SUPPORTED)
        return await self.key(service, ref)


Handler = Callable[[Ctx, KeyService, Params, Principal], Awaitable[Response]]


def ok(payload: dict[str, Any]) -> Response:
    return json_response(200, payload, AWS_JSON)


def empty() -> Response:
    return Response(200, _EMPTY, AWS_JSON)
