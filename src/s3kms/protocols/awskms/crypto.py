"""Cryptographic operations: Encrypt, Decrypt, GenerateDataKey(WithoutPlaintext), ReEncrypt,
GenerateRandom, and DryRun for those that take it.

Encrypt and Decrypt take SYMMETRIC_DEFAULT (s3kms's ciphertext blob, bound to the encryption context)
or RSAES_OAEP_SHA_1/256 with an RSA key (the raw OAEP output, no context, KeyId required to decrypt).
A Nitro Enclaves `Recipient` is an `UnsupportedOperationException`. Decrypt and ReEncrypt authorise against the key the ciphertext
names before decrypting anything.

Each request is authorised by the caller's gate on the key (`principal.gate`), with what it says
for conditions and grants: `kms:EncryptionAlgorithm`, the encryption context, the grant tokens,
`kms:RequestAlias` when the KeyId named an alias (and `kms:DataKeyPairSpec`,
`kms:ReEncryptOnSameKey` where AWS defines them). A plain Encrypt, Decrypt or GenerateDataKey
(no context, no grant tokens, no alias) shares one Facts per algorithm, built at import.

The hot operations (Encrypt, Decrypt, GenerateDataKey) write their JSON response directly: every
value in it is base64, a constant, or an ARN escaped with the JSON encoder's own C routine.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii

from s3kms.access.facts import NO_FACTS, Facts
from s3kms.auth.identity import KeyGate, Principal
from s3kms.errors import (
    DryRunOperation,
    GrantNotVisible,
    UnsupportedOperation,
    ValidationError,
)
from s3kms.http.responses import AWS_JSON, Response
from s3kms.protocols.awskms import members
from s3kms.protocols.awskms.handler import Ctx, alias_named, facts_table, ok, request_facts
from s3kms.protocols.awskms.keystores import store_not_found
from s3kms.protocols.awskms.members import SYMMETRIC_DEFAULT, Params
from s3kms.service import KeyService, check_usable

_DATA_KEY_SIZES = {"AES_256": 32, "AES_128": 16}
_DATA_KEY_SIZE_MESSAGE = "Please specify either number of bytes or key spec."
_DATA_KEY_BOTH_MESSAGE = "Specify either KeySpec or NumberOfBytes, not both."

_b64 = binascii.b2a_base64

ENCRYPTION_ALGORITHM = "kms:encryptionalgorithm"
# The Facts of a request that says nothing but its algorithm: the hot path's, built once.
_ALGORITHM_ONLY = facts_table(ENCRYPTION_ALGORITHM, members.ENCRYPTION_ALGORITHMS)


def encryption_facts(
    ref: str | None,
    context: Mapping[str, str] | None,
    tokens: tuple[str, ...],
    algorithm: str,
    more: Mapping[str, str] | None = None,
) -> Facts:
    """The Facts of an encryption operation: its algorithm (`kms:EncryptionAlgorithm`), context,
    grant tokens, the alias its KeyId named, and `more` (lower-cased condition keys)."""
    alias = alias_named(ref) if ref is not None else None
    if alias is None and not context and not tokens and more is None:
        return _ALGORITHM_ONLY[algorithm]
    values = (
        {ENCRYPTION_ALGORITHM: algorithm}
        if more is None
        else {ENCRYPTION_ALGORITHM: algorithm, **more}
    )
    return request_facts(context, tokens, alias, values)


def _algorithm(p: Params, name: str) -> str:
    """The encryption algorithm asked for; SYMMETRIC_DEFAULT when left out."""
    return members.enum(p, name, members.ENCRYPTION_ALGORITHMS) or SYMMETRIC_DEFAULT


def _no_context_for(algorithm: str, context: dict[str, str] | None) -> None:
    if algorithm != SYMMETRIC_DEFAULT and context:
        raise ValidationError(
            f"EncryptionContext is not supported with {algorithm}: an encryption context is "
            "valid only with symmetric encryption keys"
        )


def no_recipient(p: Params) -> None:
    if p.get("Recipient") is not None:
        raise UnsupportedOperation("Recipient (Nitro Enclaves attestation) is not supported")


def _data_key_size(p: Params) -> int:
    spec = members.enum(p, "KeySpec", members.DATA_KEY_SPECS)
    size = members.opt_int(p, "NumberOfBytes", 1, 1024)
    if spec is None:
        if size is None:
            raise ValidationError(_DATA_KEY_SIZE_MESSAGE)
        return size
    if size is not None:
        raise ValidationError(_DATA_KEY_BOTH_MESSAGE)
    return _DATA_KEY_SIZES[spec]


def _arn_json(service: KeyService, key_id: str) -> bytes:
    return encode_basestring_ascii(service.key_arn(key_id)).encode()


async def dry_run_on(service: KeyService, key_id: str, access: KeyGate) -> None:
    """DryRun: the request was valid; say whether the caller is allowed (the gate, on the key's
    metadata, as the operation itself would run it) and the key could serve it."""
    check_usable(await service.describe(key_id, access=access))
    raise DryRunOperation


async def authorized_key(
    ctx: Ctx,
    service: KeyService,
    ref: str,
    principal: Principal,
    action: str,
    dry_run: bool,
    facts: Facts = NO_FACTS,
) -> tuple[str, KeyGate]:
    """The key `ref` names and the caller's gate for `action` on it; a DryRun ends here."""
    key_id = await ctx.key(service, ref)
    access = principal.gate(action, key_id, facts)
    if dry_run:
        await dry_run_on(service, key_id, access)
    return key_id, access


# -- the hot path: Encrypt, Decrypt, GenerateDataKey ------------------------------------------------


async def encrypt(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref = members.req_str(p, "KeyId")
    plaintext = members.blob(p, "Plaintext", 4096)
    context = members.context(p, "EncryptionContext")
    algorithm = _algorithm(p, "EncryptionAlgorithm")
    _no_context_for(algorithm, context)
    tokens = members.grant_tokens(p)
    dry_run = members.opt_bool(p, "DryRun")
    facts = encryption_facts(ref, context, tokens, algorithm)
    key_id, access = await authorized_key(
        ctx, service, ref, principal, "kms:Encrypt", dry_run, facts
    )
    if algorithm != SYMMETRIC_DEFAULT:  # RSA OAEP: the raw OAEP output, as AWS returns it
        key_id, ciphertext = await service.encrypt_asymmetric(
            key_id, plaintext, algorithm, access=access
        )
        return ok(
            {
                "CiphertextBlob": _b64(ciphertext, newline=False).decode(),
                "KeyId": service.key_arn(key_id),
                "EncryptionAlgorithm": algorithm,
            }
        )
    key_id, ciphertext = await service.encrypt(key_id, plaintext, context, access=access)
    return Response(
        200,
        b'{"CiphertextBlob":"%s","KeyId":%s,"EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}'
        % (_b64(ciphertext, newline=False), _arn_json(service, key_id)),
        AWS_JSON,
    )


async def decrypt(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ciphertext = members.blob(p, "CiphertextBlob", 6144)
    context = members.context(p, "EncryptionContext")
    ref = members.opt_str(p, "KeyId")
    algorithm = _algorithm(p, "EncryptionAlgorithm")
    _no_context_for(algorithm, context)
    tokens = members.grant_tokens(p)
    no_recipient(p)
    dry_run = members.opt_bool(p, "DryRun")
    if "DryRunModifiers" in p:
        members.str_list(p, "DryRunModifiers", allowed=members.DRY_RUN_MODIFIERS)
    facts = encryption_facts(ref, context, tokens, algorithm)
    if algorithm != SYMMETRIC_DEFAULT:
        return await _decrypt_asymmetric(
            ctx, service, principal, ciphertext, ref, algorithm, dry_run, facts
        )
    expected = await ctx.key(service, ref) if ref is not None else None
    # The ciphertext names its key: authorise against that key before decrypting anything.
    key_id = service.ciphertext_key_id(ciphertext)
    access = principal.gate("kms:Decrypt", key_id, facts)
    if dry_run:
        await dry_run_on(service, key_id, access)
    decrypted = await service.decrypt(ciphertext, context, expected, access=access)
    return Response(
        200,
        b'{"KeyId":%s,"Plaintext":"%s","EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}'
        % (_arn_json(service, decrypted.key_id), _b64(decrypted.plaintext, newline=False)),
        AWS_JSON,
    )


async def _decrypt_asymmetric(
    ctx: Ctx,
    service: KeyService,
    principal: Principal,
    ciphertext: bytes,
    ref: str | None,
    algorithm: str,
    dry_run: bool,
    facts: Facts,
) -> Response:
    """An RSA OAEP ciphertext names no key: the caller must (AWS requires KeyId here)."""
    if ref is None:
        raise ValidationError(f"KeyId is required to decrypt with {algorithm}")
    key_id, access = await authorized_key(
        ctx, service, ref, principal, "kms:Decrypt", dry_run, facts
    )
    decrypted = await service.decrypt_asymmetric(key_id, ciphertext, algorithm, access=access)
    return ok(
        {
            "KeyId": service.key_arn(decrypted.key_id),
            "Plaintext": _b64(decrypted.plaintext, newline=False).decode(),
            "EncryptionAlgorithm": algorithm,
        }
    )


async def _data_key(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal, action: str
) -> tuple[bytes, bytes, bytes]:
    """(ciphertext base64, plaintext base64, key ARN as JSON) for both GenerateDataKey ops."""
    ref = members.req_str(p, "KeyId")
    context = members.context(p, "EncryptionContext")
    size = _data_key_size(p)
    tokens = members.grant_tokens(p)
    no_recipient(p)
    dry_run = members.opt_bool(p, "DryRun")
    # AWS: for the data key operations kms:EncryptionAlgorithm is the algorithm that encrypts
    # the data key, SYMMETRIC_DEFAULT.
    facts = encryption_facts(ref, context, tokens, SYMMETRIC_DEFAULT)
    key_id, access = await authorized_key(ctx, service, ref, principal, action, dry_run, facts)
    data_key = await service.generate_data_key(
        key_id, size, context, action.removeprefix("kms:"), access=access
    )
    return (
        _b64(data_key.ciphertext, newline=False),
        _b64(data_key.plaintext, newline=False),
        _arn_json(service, data_key.key_id),
    )


async def generate_data_key(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ciphertext, plaintext, arn = await _data_key(ctx, service, p, principal, "kms:GenerateDataKey")
    return Response(
        200,
        b'{"CiphertextBlob":"%s","Plaintext":"%s","KeyId":%s}' % (ciphertext, plaintext, arn),
        AWS_JSON,
    )


async def generate_data_key_without_plaintext(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ciphertext, _, arn = await _data_key(
        ctx, service, p, principal, "kms:GenerateDataKeyWithoutPlaintext"
    )
    return Response(200, b'{"CiphertextBlob":"%s","KeyId":%s}' % (ciphertext, arn), AWS_JSON)


# -- data key pairs ------------------------------------------------------------------------------


async def _data_key_pair(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal, action: str
) -> dict[str, str]:
    ref = members.req_str(p, "KeyId")
    context = members.context(p, "EncryptionContext")
    spec = members.req_enum(p, "KeyPairSpec", members.DATA_KEY_PAIR_SPECS)
    tokens = members.grant_tokens(p)
    no_recipient(p)
    dry_run = members.opt_bool(p, "DryRun")
    facts = encryption_facts(ref, context, tokens, SYMMETRIC_DEFAULT, {"kms:datakeypairspec": spec})
    key_id, access = await authorized_key(ctx, service, ref, principal, action, dry_run, facts)
    pair = await service.generate_data_key_pair(
        key_id, spec, context, action.removeprefix("kms:"), access=access
    )
    return {
        "PrivateKeyCiphertextBlob": _b64(pair.private_key_ciphertext, newline=False).decode(),
        "PrivateKeyPlaintext": _b64(pair.private_key, newline=False).decode(),
        "PublicKey": _b64(pair.public_key, newline=False).decode(),
        "KeyId": service.key_arn(pair.key_id),
        "KeyPairSpec": spec,
    }


async def generate_data_key_pair(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    return ok(await _data_key_pair(ctx, service, p, principal, "kms:GenerateDataKeyPair"))


async def generate_data_key_pair_without_plaintext(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    out = await _data_key_pair(
        ctx, service, p, principal, "kms:GenerateDataKeyPairWithoutPlaintext"
    )
    del out["PrivateKeyPlaintext"]
    return ok(out)


# -- the others ---------------------------------------------------------------------------------


async def re_encrypt(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ciphertext = members.blob(p, "CiphertextBlob", 6144)
    source_context = members.context(p, "SourceEncryptionContext")
    source_ref = members.opt_str(p, "SourceKeyId")
    destination_ref = members.req_str(p, "DestinationKeyId")
    destination_context = members.context(p, "DestinationEncryptionContext")
    source_algorithm = _algorithm(p, "SourceEncryptionAlgorithm")
    destination_algorithm = _algorithm(p, "DestinationEncryptionAlgorithm")
    _no_context_for(source_algorithm, source_context)
    _no_context_for(destination_algorithm, destination_context)
    tokens = members.grant_tokens(p)
    dry_run = members.opt_bool(p, "DryRun")
    members.str_list(p, "DryRunModifiers", allowed=members.DRY_RUN_MODIFIERS)
    expected = await ctx.key(service, source_ref) if source_ref is not None else None
    destination = await ctx.key(service, destination_ref)
    if source_algorithm == SYMMETRIC_DEFAULT:
        source = service.ciphertext_key_id(ciphertext)  # the blob names its key
    elif expected is None:
        raise ValidationError(f"SourceKeyId is required to decrypt with {source_algorithm}")
    else:
        source = expected  # a raw RSA ciphertext names none: the caller did
    # Each side is authorised with what the request says of it (AWS's kms:ReEncryptOnSameKey
    # on both); the audit line names the destination, the key the new ciphertext is under.
    same = "true" if source == destination else "false"
    source_access = principal.gate(
        "kms:ReEncryptFrom",
        source,
        encryption_facts(
            source_ref, source_context, tokens, source_algorithm,
            {"kms:reencryptonsamekey": same},
        ),
    )  # fmt: skip
    destination_access = principal.gate(
        "kms:ReEncryptTo",
        destination,
        encryption_facts(
            destination_ref, destination_context, tokens, destination_algorithm,
            {"kms:reencryptonsamekey": same},
        ),
    )  # fmt: skip
    if dry_run:
        check_usable(await service.describe(source, access=source_access))
        await dry_run_on(service, destination, destination_access)
    try:
        source_id, destination_id, new = await service.re_encrypt(
            ciphertext, source_context, destination, destination_context, expected,
            source_algorithm, destination_algorithm,
            source_access=source_access, destination_access=destination_access,
        )  # fmt: skip
    except GrantNotVisible:
        # The dispatch re-reads the key the audit line names (the destination) and tries
        # again; the source may be the one whose grant this node has not seen yet.
        await service.forget(source)
        raise
    return ok(
        {
            "CiphertextBlob": _b64(new, newline=False).decode(),
            "SourceKeyId": service.key_arn(source_id),
            "KeyId": service.key_arn(destination_id),
            "SourceEncryptionAlgorithm": source_algorithm,
            "DestinationEncryptionAlgorithm": destination_algorithm,
        }
    )


async def generate_random(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    size = members.opt_int(p, "NumberOfBytes", 1, 1024)
    if size is None:
        raise ValidationError("NumberOfBytes is required.")
    store_id = members.opt_str(p, "CustomKeyStoreId", 1, 64)
    if store_id is not None:  # s3kms has no custom key stores (keystores.py)
        raise store_not_found(store_id)
    no_recipient(p)
    principal.authorize("kms:GenerateRandom")
    return Response(200, b'{"Plaintext":"%s"}' % _b64(os.urandom(size), newline=False), AWS_JSON)
