"""Key lifecycle: CreateKey, DescribeKey, ListKeys, EnableKey, DisableKey, ScheduleKeyDeletion,
CancelKeyDeletion, UpdateKeyDescription.

s3kms creates keys of every spec in `crypto/keyspecs.py` that the library computes and the backend
can hold, of origin AWS_KMS in one Region; any other origin or a multi-Region key is an
`UnsupportedOperationException`, and a `CustomKeyStoreId` a `CustomKeyStoreNotFoundException`
(s3kms has no custom key stores: keystores.py).
A `Policy` is the new key's key policy (`access.documents.parse_key_policy`: AWS's
MalformedPolicyDocumentException for a bad one), refused by the lockout safety check unless
`BypassPolicyLockoutSafetyCheck` when it would not let the caller put a key policy again; without
one the key has AWS's default key policy. The state machine (what each state allows, the 7-30
day deletion window) is the service's. Every operation on a key runs the caller's gate on it
(`principal.gate`): key policy, grants, identity policies.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from s3kms.access.decision import check_lockout
from s3kms.access.documents import parse_key_policy
from s3kms.auth.identity import Principal
from s3kms.errors import UnsupportedOperation, ValidationError
from s3kms.http.responses import Response
from s3kms.model import EXPIRES, ORIGIN_AWS_KMS, ORIGIN_EXTERNAL, KeyMetadata, KeyState
from s3kms.protocols.awskms import members, paging
from s3kms.protocols.awskms.handler import Ctx, alias_named, empty, ok, request_facts
from s3kms.protocols.awskms.keystores import store_not_found
from s3kms.protocols.awskms.members import SYMMETRIC_DEFAULT, Params
from s3kms.protocols.awskms.tags import tag_values
from s3kms.service import KeyService, new_multi_region_key_id

# The model's PolicyType pattern, used with fullmatch.
POLICY_RE = re.compile(r"[\u0009\u000A\u000D\u0020-\u00FF]+")

ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"

_BOTH_SPECS_MESSAGE = (
    "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. "
    "CustomerMasterKeySpec parameter is deprecated. Use KeySpec parameter instead."
)


def spec_fields(service: KeyService, meta: KeyMetadata) -> dict[str, Any]:
    """`KeySpec`, `KeyUsage`, the deprecated `CustomerMasterKeySpec` where AWS still reports it,
    and the usage's algorithm list: what DescribeKey and GetPublicKey share."""
    out: dict[str, Any] = {"KeySpec": meta.key_spec, "KeyUsage": meta.key_usage}
    legacy = service.legacy_spec(meta)
    if legacy is not None:
        out["CustomerMasterKeySpec"] = legacy
    field, algorithms = service.key_algorithms(meta)
    out[field] = list(algorithms)
    return out


def key_metadata(service: KeyService, meta: KeyMetadata) -> dict[str, Any]:
    """`KeyMetadata` as AWS reports it: the spec's usage and its algorithm list (one table)."""
    out: dict[str, Any] = {
        "AWSAccountId": service.account_id,
        "KeyId": meta.key_id,
        "Arn": service.key_arn(meta.key_id),
        "CreationDate": meta.created_at,
        "Enabled": meta.state is KeyState.ENABLED,
        "Description": meta.description,
        "KeyState": meta.state.value,
        "Origin": meta.origin,
        "KeyManager": "CUSTOMER",
        **spec_fields(service, meta),
        "MultiRegion": meta.multi_region,
    }
    if meta.primary_region is not None:
        out["MultiRegionConfiguration"] = multi_region_configuration(service, meta)
    if meta.state is KeyState.PENDING_DELETION:
        out["DeletionDate"] = meta.deletion_date
        out["PendingDeletionWindowInDays"] = meta.pending_window_days
    elif meta.state is KeyState.PENDING_REPLICA_DELETION:
        out["PendingDeletionWindowInDays"] = meta.pending_window_days
    if service.has_material_ids(meta):
        current = service.material_id(meta, meta.current_version)
        if current is not None:  # (an EXTERNAL key never imported has none)
            out["CurrentKeyMaterialId"] = current
    if meta.external:
        out.update(_imported_fields(meta))
    return out


def multi_region_configuration(service: KeyService, meta: KeyMetadata) -> dict[str, Any]:
    """Which region holds the primary and which the replicas (this key among them)."""
    assert meta.primary_region is not None
    return {
        "MultiRegionKeyType": "PRIMARY" if meta.primary_region == service.region else "REPLICA",
        "PrimaryKey": {
            "Arn": service.key_arn_in(meta.primary_region, meta.key_id),
            "Region": meta.primary_region,
        },
        "ReplicaKeys": [
            {"Arn": service.key_arn_in(r, meta.key_id), "Region": r} for r in meta.replica_regions
        ],
    }


def _imported_fields(meta: KeyMetadata) -> dict[str, Any]:
    """ExpirationModel (while the current material is imported) and ValidTo: "the earliest time
    at which any imported key material permanently associated with this KMS key expires"."""
    out: dict[str, Any] = {}
    held = [m for m in meta.materials if m.imported and not m.pending]
    current = next((m for m in held if m.version == meta.current_version), None)
    if current is not None and current.expiration_model is not None:
        out["ExpirationModel"] = current.expiration_model
    ends = [m.valid_to for m in held if m.expiration_model == EXPIRES and m.valid_to is not None]
    if ends:
        out["ValidTo"] = min(ends)
    return out


async def create_key(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    description = members.opt_str(p, "Description", 0, 8192) or ""
    usage = members.enum(p, "KeyUsage", members.KEY_USAGES)
    cmk_spec = members.enum(p, "CustomerMasterKeySpec", members.CUSTOMER_MASTER_KEY_SPECS)
    key_spec = members.enum(p, "KeySpec", members.KEY_SPECS)
    origin = members.enum(p, "Origin", members.ORIGINS)
    policy_text = policy_member(p)
    custom_store = members.opt_str(p, "CustomKeyStoreId", 1, 64)
    xks_key = members.opt_str(p, "XksKeyId", 1, 128)
    bypass = members.opt_bool(p, "BypassPolicyLockoutSafetyCheck")
    multi_region = members.opt_bool(p, "MultiRegion")
    tags = members.tags(p, required=False)
    if key_spec is not None and cmk_spec is not None:
        raise ValidationError(_BOTH_SPECS_MESSAGE)
    if custom_store is not None:
        # No account of s3kms has a custom key store: AWS's answer for an id it cannot find
        # (the model lists CustomKeyStoreNotFoundException for CreateKey). s3kms's message.
        raise store_not_found(custom_store)
    if origin not in (None, ORIGIN_AWS_KMS, ORIGIN_EXTERNAL):
        raise UnsupportedOperation(
            f"Origin {origin} is not supported: only AWS_KMS and EXTERNAL (imported material)"
        )
    origin = origin or ORIGIN_AWS_KMS
    if xks_key is not None:
        raise UnsupportedOperation("custom key stores are not supported")
    spec = key_spec or cmk_spec or SYMMETRIC_DEFAULT
    service.spec_for_new_key(spec, usage)  # refused before authorisation, as a bad member is
    # CreateKey's condition keys (AWS: kms:KeySpec, kms:KeyUsage, kms:KeyOrigin,
    # kms:BypassPolicyLockoutSafetyCheck, kms:MultiRegion; aws:RequestTag/<k>, aws:TagKeys).
    values: dict[str, str | tuple[str, ...]] = {
        "kms:keyspec": spec,
        "kms:keyusage": usage or ENCRYPT_DECRYPT,
        "kms:keyorigin": origin,
        "kms:multiregion": "true" if multi_region else "false",
        **tag_values(tags),
    }
    if "BypassPolicyLockoutSafetyCheck" in p:
        values["kms:bypasspolicylockoutsafetycheck"] = "true" if bypass else "false"
    principal.authorize("kms:CreateKey", None, request_facts(values=values))
    # The id is chosen here so that the lockout check can name the new key's ARN. The policy is
    # judged once the caller may create keys (as PutKeyPolicy judges it once the caller may put
    # one): no one else learns from the answer which users exist.
    key_id = new_multi_region_key_id() if multi_region else str(uuid.uuid4())
    if policy_text is not None:
        policy = parse_key_policy(policy_text, account=ctx.account, known_user=ctx.known_user)
        if not bypass:
            check_lockout(policy, principal, service.key_arn(key_id))
    meta = await service.create_key(
        key_id,
        description=description,
        tags=tags,
        key_spec=spec,
        key_usage=usage,
        policy=policy_text,
        origin=origin,
        multi_region=multi_region,
    )
    return ok({"KeyMetadata": key_metadata(service, meta)})


def policy_member(p: Params) -> str | None:
    """`Policy` of CreateKey and PutKeyPolicy: 1-131072 characters of the model's pattern (tab,
    line feed, carriage return, U+0020-U+00FF); what it says is parse_key_policy's to judge."""
    text = members.opt_str(p, "Policy", 1, 131072)
    if text is not None and POLICY_RE.fullmatch(text) is None:
        rule = f"satisfy regular expression pattern: {POLICY_RE.pattern}"
        raise members.violation("policy", rule, f"'{text}'")
    return text


async def describe_key(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref = members.req_str(p, "KeyId")
    tokens = members.grant_tokens(p)
    key_id = await ctx.key(service, ref)
    access = principal.gate(
        "kms:DescribeKey", key_id, request_facts(None, tokens, alias_named(ref))
    )
    return ok({"KeyMetadata": key_metadata(service, await service.describe(key_id, access=access))})


async def list_keys(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    limit = members.limit(p, 100, 1000)
    after = paging.after(p, "key")
    if "ResourceOwners" in p:  # accepted: every key is the caller's own
        members.str_list(p, "ResourceOwners", lo=1, hi=2, allowed=members.RESOURCE_OWNERS)
    principal.authorize("kms:ListKeys")
    # One page from the keystore (plus one key, to know whether there are more).
    batch = await service.list_keys(after=after, limit=limit + 1)
    keys = [{"KeyId": m.key_id, "KeyArn": service.key_arn(m.key_id)} for m in batch[:limit]]
    out: dict[str, Any] = {"Keys": keys, "Truncated": len(batch) > limit}
    if len(batch) > limit:
        out["NextMarker"] = paging.marker("key", batch[limit - 1].key_id)
    return ok(out)


async def enable_key(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    key_id = await ctx.key(service, members.req_str(p, "KeyId"))
    await service.enable(key_id, access=principal.gate("kms:EnableKey", key_id))
    return empty()


async def disable_key(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    key_id = await ctx.key(service, members.req_str(p, "KeyId"))
    await service.disable(key_id, access=principal.gate("kms:DisableKey", key_id))
    return empty()


async def schedule_key_deletion(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    days = p.get("PendingWindowInDays")
    if days is not None and type(days) is not int:
        raise members.wrong_type("PendingWindowInDays", "an integer")
    key_id = await ctx.key(service, ref)
    access = principal.gate("kms:ScheduleKeyDeletion", key_id)
    # The 7-30 range is the service's, with AWS's own message for it.
    meta = await (
        service.schedule_deletion(key_id, access=access)
        if days is None
        else service.schedule_deletion(key_id, days, access=access)
    )
    out: dict[str, Any] = {"KeyId": service.key_arn(meta.key_id)}
    if meta.deletion_date is not None:
        # (not for a primary waiting for its replicas: "its deletion date isn't known yet")
        out["DeletionDate"] = meta.deletion_date
    out["KeyState"] = meta.state.value
    out["PendingWindowInDays"] = meta.pending_window_days
    return ok(out)


async def cancel_key_deletion(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    key_id = await ctx.key(service, members.req_str(p, "KeyId"))
    meta = await service.cancel_deletion(
        key_id, access=principal.gate("kms:CancelKeyDeletion", key_id)
    )
    return ok({"KeyId": service.key_arn(meta.key_id)})


async def update_key_description(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    description = members.req_str(p, "Description", 0, 8192)
    key_id = await ctx.key(service, ref)
    access = principal.gate("kms:UpdateKeyDescription", key_id)
    await service.update_description(key_id, description, access=access)
    return empty()


async def get_key_last_usage(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    """The last successful cryptographic operation with the key: the one noted by this node, else
    the stored one (nodes store theirs every maintenance pass). `KmsRequestId` is the request's
    `x-amz-request-id`, the `request_id` of its audit line; s3kms has no CloudTrail event id."""
    key_id = await ctx.key(service, members.req_str(p, "KeyId"))
    access = principal.gate("kms:GetKeyLastUsage", key_id)
    meta, since, use = await service.last_usage(key_id, access=access)
    last: dict[str, Any] = {}
    if use is not None:
        last = {"Operation": use.operation, "Timestamp": use.at}
        if use.request_id is not None:
            last["KmsRequestId"] = use.request_id
    return ok(
        {
            "KeyId": meta.key_id,
            "KeyLastUsage": last,
            "TrackingStartDate": since,
            "KeyCreationDate": meta.created_at,
        }
    )
