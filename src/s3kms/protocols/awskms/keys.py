"""Key lifecycle: CreateKey, DescribeKey, ListKeys, EnableKey, DisableKey, ScheduleKeyDeletion,
CancelKeyDeletion, UpdateKeyDescription.

s3kms creates keys of every spec in `crypto/keyspecs.py` that the library computes and the backend
can hold, of origin AWS_KMS in one Region; any other origin, a custom key store or a multi-Region key
is an `UnsupportedOperationException`.
A `Policy` is accepted and not enforced: access is decided by s3kms's own policies. The state
machine (what each state allows, the 7-30 day deletion window) is the service's.
"""

from __future__ import annotations

from typing import Any

from s3kms.auth.identity import Principal
from s3kms.errors import UnsupportedOperation, ValidationError
from s3kms.http.responses import Response
from s3kms.model import KeyMetadata, KeyState
from s3kms.protocols.awskms import members, paging
from s3kms.protocols.awskms.handler import Ctx, empty, ok
from s3kms.protocols.awskms.members import SYMMETRIC_DEFAULT, Params
from s3kms.service import KeyService

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
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        **spec_fields(service, meta),
        "MultiRegion": False,
    }
    if meta.state is KeyState.PENDING_DELETION:
        out["DeletionDate"] = meta.deletion_date
        out["PendingDeletionWindowInDays"] = meta.pending_window_days
    return out


async def create_key(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    description = members.opt_str(p, "Description", 0, 8192) or ""
    usage = members.enum(p, "KeyUsage", members.KEY_USAGES)
    cmk_spec = members.enum(p, "CustomerMasterKeySpec", members.CUSTOMER_MASTER_KEY_SPECS)
    key_spec = members.enum(p, "KeySpec", members.KEY_SPECS)
    origin = members.enum(p, "Origin", members.ORIGINS)
    members.opt_str(p, "Policy", 1, 131072)  # accepted, not enforced: access is s3kms's policies
    custom_store = members.opt_str(p, "CustomKeyStoreId", 1, 64)
    xks_key = members.opt_str(p, "XksKeyId", 1, 128)
    members.opt_bool(p, "BypassPolicyLockoutSafetyCheck")
    multi_region = members.opt_bool(p, "MultiRegion")
    tags = members.tags(p, required=False)
    if key_spec is not None and cmk_spec is not None:
        raise ValidationError(_BOTH_SPECS_MESSAGE)
    if origin not in (None, "AWS_KMS"):
        raise UnsupportedOperation(f"Origin {origin} is not supported: only AWS_KMS")
    if custom_store is not None or xks_key is not None:
        raise UnsupportedOperation("custom key stores are not supported")
    if multi_region:
        raise UnsupportedOperation("multi-Region keys are not supported")
    spec = key_spec or cmk_spec or SYMMETRIC_DEFAULT
    service.spec_for_new_key(spec, usage)  # refused before authorisation, as a bad member is
    principal.authorize("kms:CreateKey")
    meta = await service.create_key(
        description=description, tags=tags, key_spec=spec, key_usage=usage
    )
    return ok({"KeyMetadata": key_metadata(service, meta)})


async def describe_key(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref = members.req_str(p, "KeyId")
    members.grant_tokens(p)
    key_id = await ctx.key(service, ref)
    principal.authorize("kms:DescribeKey", key_id)
    return ok({"KeyMetadata": key_metadata(service, await service.describe(key_id))})


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
    principal.authorize("kms:EnableKey", key_id)
    await service.enable(key_id)
    return empty()


async def disable_key(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    key_id = await ctx.key(service, members.req_str(p, "KeyId"))
    principal.authorize("kms:DisableKey", key_id)
    await service.disable(key_id)
    return empty()


async def schedule_key_deletion(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    days = p.get("PendingWindowInDays")
    if days is not None and type(days) is not int:
        raise members.wrong_type("PendingWindowInDays", "an integer")
    key_id = await ctx.key(service, ref)
    principal.authorize("kms:ScheduleKeyDeletion", key_id)
    # The 7-30 range is the service's, with AWS's own message for it.
    meta = await (
        service.schedule_deletion(key_id)
        if days is None
        else service.schedule_deletion(key_id, days)
    )
    return ok(
        {
            "KeyId": service.key_arn(meta.key_id),
            "DeletionDate": meta.deletion_date,
            "KeyState": meta.state.value,
            "PendingWindowInDays": meta.pending_window_days,
        }
    )


async def cancel_key_deletion(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    key_id = await ctx.key(service, members.req_str(p, "KeyId"))
    principal.authorize("kms:CancelKeyDeletion", key_id)
    meta = await service.cancel_deletion(key_id)
    return ok({"KeyId": service.key_arn(meta.key_id)})


async def update_key_description(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    description = members.req_str(p, "Description", 0, 8192)
    key_id = await ctx.key(service, ref)
    principal.authorize("kms:UpdateKeyDescription", key_id)
    await service.update_description(key_id, description)
    return empty()


async def get_key_last_usage(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    """The last successful cryptographic operation with the key: the one noted by this node, else
    the stored one (nodes store theirs every maintenance pass). `KmsRequestId` is the request's
    `x-amz-request-id`, the `request_id` of its audit line; s3kms has no CloudTrail event id."""
    key_id = await ctx.key(service, members.req_str(p, "KeyId"))
    principal.authorize("kms:GetKeyLastUsage", key_id)
    meta, since, use = await service.last_usage(key_id)
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
