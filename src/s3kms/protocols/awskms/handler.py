"""What every AWS KMS operation handler shares: its signature, its context, its success answers.

A handler is a plain async function `(ctx, service, params, principal) -> Response`: `ctx` is the
one `Ctx` of the API (built once, with the runtime's settings), `service` the KeyService this
request runs on (held for the request by `Runtime.use`), `params` the parsed body, `principal`
the authenticated caller. A handler checks its members (`members.py`), authorises, calls the
service, and returns the answer; it raises from the error tree for every failure (`errors.py`
renders it).

Key references (`KeyId` and friends) are resolved to a bare key id first (`Ctx.key`), so the caller
is authorised against the key actually used (`principal.authorize`), and the service is then called
with that id. Responses name keys by ARN where AWS does (Encrypt, Decrypt, GenerateDataKey, ...);
`KeyMetadata.KeyId` is the bare id. Timestamps are epoch seconds, blobs base64.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from s3kms.auth.identity import Principal
from s3kms.errors import KeyNotFound
from s3kms.http.responses import AWS_JSON, Response, json_response
from s3kms.model import KEY_NAME_RE
from s3kms.protocols.awskms.members import Params
from s3kms.runtime import Runtime
from s3kms.service import KeyService

_EMPTY = b"{}"


def arn_prefix(runtime: Runtime) -> str:
    """`arn:aws:kms:<region>:<account>:`, as `KeyService.key_arn` writes it."""
    settings = runtime.settings
    return f"arn:aws:kms:{settings.region}:{settings.account_id}:"


@dataclass(frozen=True, slots=True)
class Ctx:
    """What the handlers share across requests: the account's ARN prefix, key resolution."""

    arn_prefix: str

    async def key(self, service: KeyService, ref: str) -> str:
        """The bare key id a reference names (key id, key ARN, alias name, alias ARN)."""
        if ref.startswith("arn:") and not ref.startswith(self.arn_prefix):
            raise KeyNotFound(f"Invalid arn {ref}")
        key_id = await service.resolve(ref)
        if KEY_NAME_RE.fullmatch(key_id) is None:
            # No key can have this id (e.g. `arn:...:key/alias/x`): never hand it on.
            raise KeyNotFound(key_id=key_id)
        return key_id


Handler = Callable[[Ctx, KeyService, Params, Principal], Awaitable[Response]]


def ok(payload: dict[str, Any]) -> Response:
    return json_response(200, payload, AWS_JSON)


def empty() -> Response:
    return Response(200, _EMPTY, AWS_JSON)
