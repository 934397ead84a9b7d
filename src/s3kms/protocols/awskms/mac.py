"""HMAC keys: GenerateMac and VerifyMac.

The message is at most 4096 bytes; the algorithm must be the key's (HMAC_SHA_256 for an HMAC_256
key). A MAC that does not match is `KMSInvalidMacException`, never `MacValid: false`.
"""

from __future__ import annotations

import binascii

from s3kms.access.facts import Facts
from s3kms.auth.identity import Principal
from s3kms.http.responses import Response
from s3kms.protocols.awskms import members
from s3kms.protocols.awskms.crypto import authorized_key
from s3kms.protocols.awskms.handler import Ctx, alias_named, ok, request_facts
from s3kms.protocols.awskms.members import Params
from s3kms.service import KeyService

_b64 = binascii.b2a_base64


def _mac_request(p: Params) -> tuple[str, bytes, str, bool, Facts]:
    """(key reference, message, MAC algorithm, dry run, facts) of a GenerateMac or VerifyMac
    request; the facts hold `kms:MacAlgorithm`, the grant tokens and the alias the KeyId named."""
    message = members.blob(p, "Message", 4096)
    ref = members.req_str(p, "KeyId")
    algorithm = members.req_enum(p, "MacAlgorithm", members.MAC_ALGORITHMS)
    tokens = members.grant_tokens(p)
    facts = request_facts(None, tokens, alias_named(ref), {"kms:macalgorithm": algorithm})
    return ref, message, algorithm, members.opt_bool(p, "DryRun"), facts


async def generate_mac(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref, message, algorithm, dry_run, facts = _mac_request(p)
    key_id, access = await authorized_key(
        ctx, service, ref, principal, "kms:GenerateMac", dry_run, facts
    )
    key_id, tag = await service.generate_mac(key_id, message, algorithm, access=access)
    return ok(
        {
            "Mac": _b64(tag, newline=False).decode(),
            "MacAlgorithm": algorithm,
            "KeyId": service.key_arn(key_id),
        }
    )


async def verify_mac(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref, message, algorithm, dry_run, facts = _mac_request(p)
    tag = members.blob(p, "Mac", 6144)
    key_id, access = await authorized_key(
        ctx, service, ref, principal, "kms:VerifyMac", dry_run, facts
    )
    key_id = await service.verify_mac(key_id, message, algorithm, tag, access=access)
    return ok({"KeyId": service.key_arn(key_id), "MacValid": True, "MacAlgorithm": algorithm})
