"""Asymmetric signatures and public keys: Sign, Verify, GetPublicKey.

`MessageType` is RAW (the message, at most 4096 bytes), DIGEST (a digest of the algorithm's hash
length, signed as given) or EXTERNAL_MU (ML-DSA's 64-byte mu). Signatures are what a client
verifies offline with the public key: DER for ECDSA, raw for RSA, Ed25519 and ML-DSA. A signature
that does not verify is `KMSInvalidSignatureException`, never `SignatureValid: false`.
"""

from __future__ import annotations

import binascii

from s3kms.access.facts import Facts
from s3kms.auth.identity import Principal
from s3kms.http.responses import Response
from s3kms.protocols.awskms import members
from s3kms.protocols.awskms.crypto import authorized_key
from s3kms.protocols.awskms.handler import Ctx, alias_named, ok, request_facts
from s3kms.protocols.awskms.keys import spec_fields
from s3kms.protocols.awskms.members import Params
from s3kms.service import KeyService

_b64 = binascii.b2a_base64


def _message(p: Params) -> tuple[bytes, str, str]:
    """(message, message type, signing algorithm) of a Sign or Verify request."""
    message = members.blob(p, "Message", 4096)
    message_type = members.enum(p, "MessageType", members.MESSAGE_TYPES) or "RAW"
    algorithm = members.req_enum(p, "SigningAlgorithm", members.SIGNING_ALGORITHMS)
    return message, message_type, algorithm


def _facts(ref: str, tokens: tuple[str, ...], message_type: str, algorithm: str) -> Facts:
    """`kms:SigningAlgorithm` and `kms:MessageType` (AWS's condition keys for Sign and Verify),
    the grant tokens and the alias the KeyId named."""
    values = {"kms:signingalgorithm": algorithm, "kms:messagetype": message_type}
    return request_facts(None, tokens, alias_named(ref), values)


async def sign(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref = members.req_str(p, "KeyId")
    message, message_type, algorithm = _message(p)
    tokens = members.grant_tokens(p)
    dry_run = members.opt_bool(p, "DryRun")
    facts = _facts(ref, tokens, message_type, algorithm)
    key_id, access = await authorized_key(ctx, service, ref, principal, "kms:Sign", dry_run, facts)
    key_id, signature = await service.sign(key_id, message, message_type, algorithm, access=access)
    return ok(
        {
            "KeyId": service.key_arn(key_id),
            "Signature": _b64(signature, newline=False).decode(),
            "SigningAlgorithm": algorithm,
        }
    )


async def verify(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref = members.req_str(p, "KeyId")
    message, message_type, algorithm = _message(p)
    signature = members.blob(p, "Signature", 6144)
    tokens = members.grant_tokens(p)
    dry_run = members.opt_bool(p, "DryRun")
    facts = _facts(ref, tokens, message_type, algorithm)
    key_id, access = await authorized_key(
        ctx, service, ref, principal, "kms:Verify", dry_run, facts
    )
    key_id = await service.verify(
        key_id, message, message_type, algorithm, signature, access=access
    )
    return ok(
        {"KeyId": service.key_arn(key_id), "SignatureValid": True, "SigningAlgorithm": algorithm}
    )


async def get_public_key(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    tokens = members.grant_tokens(p)
    key_id = await ctx.key(service, ref)
    access = principal.gate(
        "kms:GetPublicKey", key_id, request_facts(None, tokens, alias_named(ref))
    )
    meta, public = await service.public_key(key_id, access=access)
    return ok(
        {
            "KeyId": service.key_arn(meta.key_id),
            "PublicKey": _b64(public, newline=False).decode(),
            **spec_fields(service, meta),
        }
    )
