"""HMAC keys: GenerateMac and VerifyMac.

The message is at most 4096 bytes; the algorithm must be the key's (HMAC_SHA_256 for an HMAC_256
key). A MAC that does not match is `KMSInvalidMacException`, never `MacValid: false`.
"""

from __future__ import annotations

import binascii

from s3kms.auth.identity import Principal
from s3kms.http.responses import Response
from s3kms.protocols.awskms import members
from s3kms.protocols.awskms.crypto import authorized_key
from s3kms.protocols.awskms.handler import Ctx, ok
from s3kms.protocols.awskms.members import Params
from s3kms.service import KeyService

_b64 = binascii.b2a_base64


def _mac_request(p: Params) -> tuple[str, bytes, str, bool]:
    """(key reference, message, MAC algorithm, dry run) of a GenerateMac or VerifyMac request."""
    message = members.blob(p, "Message", 4096)
    ref = members.req_str(p, "KeyId")
    algorithm = members.req_enum(p, "MacAlgorithm", members.MAC_ALGORITHMS)
    members.grant_tokens(p)
    return ref, message, algorithm, members.opt_bool(p, "DryRun")


async def generate_mac(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref, message, algorithm, dry_run = _mac_request(p)
    key_id = await authorized_key(ctx, service, ref, principal, "kms:GenerateMac", dry_run)
    key_id, tag = await service.generate_mac(key_id, message, algorithm)
    return ok(
        {
            "Mac": _b64(tag, newline=False).decode(),
            "MacAlgorithm": algorithm,
            "KeyId": service.key_arn(key_id),
        }
    )


async def verify_mac(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref, message, algorithm, dry_run = _mac_request(p)
    tag = members.blob(p, "Mac", 6144)
    key_id = await authorized_key(ctx, service, ref, principal, "kms:VerifyMac", dry_run)
    key_id = await service.verify_mac(key_id, message, algorithm, tag)
    return ok({"KeyId": service.key_arn(key_id), "MacValid": True, "MacAlgorithm": algorithm})
