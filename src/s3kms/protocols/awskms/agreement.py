"""Shared secrets: DeriveSharedSecret (ECDH with a KEY_AGREEMENT key) and Encapsulate/Decapsulate
(ML-KEM with an ENCAPSULATE_DECAPSULATE key).

DeriveSharedSecret takes the peer's public key as DER SubjectPublicKeyInfo on the key's curve and
answers the raw ECDH shared secret; a public key that is not one is a `ValidationException`.
"""

from __future__ import annotations

import binascii

from s3kms.auth.identity import Principal
from s3kms.http.responses import Response
from s3kms.protocols.awskms import members
from s3kms.protocols.awskms.crypto import authorized_key, no_recipient
from s3kms.protocols.awskms.handler import Ctx, alias_named, ok, request_facts
from s3kms.protocols.awskms.members import Params
from s3kms.service import KeyService

_b64 = binascii.b2a_base64


async def derive_shared_secret(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    algorithm = members.req_enum(p, "KeyAgreementAlgorithm", members.KEY_AGREEMENT_ALGORITHMS)
    peer = members.blob(p, "PublicKey", 8192)
    tokens = members.grant_tokens(p)
    no_recipient(p)
    dry_run = members.opt_bool(p, "DryRun")
    facts = request_facts(None, tokens, alias_named(ref))
    key_id, access = await authorized_key(
        ctx, service, ref, principal, "kms:DeriveSharedSecret", dry_run, facts
    )
    key_id, secret = await service.derive_shared_secret(key_id, peer, access=access)
    return ok(
        {
            "KeyId": service.key_arn(key_id),
            "SharedSecret": _b64(secret, newline=False).decode(),
            "KeyAgreementAlgorithm": algorithm,
            "KeyOrigin": "AWS_KMS",
        }
    )


async def encapsulate(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref = members.req_str(p, "KeyId")
    algorithm = members.req_enum(p, "EncapsulationAlgorithm", members.ENCAPSULATION_ALGORITHMS)
    tokens = members.grant_tokens(p)
    dry_run = members.opt_bool(p, "DryRun")
    facts = request_facts(None, tokens, alias_named(ref))
    key_id, access = await authorized_key(
        ctx, service, ref, principal, "kms:Encapsulate", dry_run, facts
    )
    key_id, secret, ciphertext = await service.encapsulate(key_id, access=access)
    return ok(
        {
            "KeyId": service.key_arn(key_id),
            "SharedSecret": _b64(secret, newline=False).decode(),
            "SharedSecretCiphertextBlob": _b64(ciphertext, newline=False).decode(),
            "EncapsulationAlgorithm": algorithm,
        }
    )


async def decapsulate(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref = members.req_str(p, "KeyId")
    ciphertext = members.blob(p, "SharedSecretCiphertextBlob", 6144)
    algorithm = members.req_enum(p, "EncapsulationAlgorithm", members.ENCAPSULATION_ALGORITHMS)
    tokens = members.grant_tokens(p)
    dry_run = members.opt_bool(p, "DryRun")
    facts = request_facts(None, tokens, alias_named(ref))
    key_id, access = await authorized_key(
        ctx, service, ref, principal, "kms:Decapsulate", dry_run, facts
    )
    key_id, secret = await service.decapsulate(key_id, ciphertext, access=access)
    return ok(
        {
            "KeyId": service.key_arn(key_id),
            "SharedSecret": _b64(secret, newline=False).decode(),
            "EncapsulationAlgorithm": algorithm,
        }
    )
