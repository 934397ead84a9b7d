"""Key rotation: EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus, RotateKeyOnDemand,
ListKeyRotations.

The rotation schedule (the period, the next date) is the service's rule. A key's first material
(version 1) is not a rotation, so ListKeyRotations starts at version 2.
"""

from __future__ import annotations

from typing import Any

from s3kms.auth.identity import Principal
from s3kms.http.responses import Response
from s3kms.model import RotationType
from s3kms.protocols.awskms import members, paging
from s3kms.protocols.awskms.handler import Ctx, empty, ok
from s3kms.protocols.awskms.members import Params
from s3kms.service import KeyService


async def enable_key_rotation(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    period = members.opt_int(p, "RotationPeriodInDays", 90, 2560)
    key_id = await ctx.key(service, ref)
    access = principal.gate("kms:EnableKeyRotation", key_id)
    await service.set_rotation(key_id, True, period, access=access)
    return empty()


async def disable_key_rotation(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    key_id = await ctx.key(service, members.req_str(p, "KeyId"))
    access = principal.gate("kms:DisableKeyRotation", key_id)
    await service.set_rotation(key_id, False, access=access)
    return empty()


async def get_key_rotation_status(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    key_id = await ctx.key(service, members.req_str(p, "KeyId"))
    access = principal.gate("kms:GetKeyRotationStatus", key_id)
    meta = await service.describe(key_id, access=access)
    out: dict[str, Any] = {
        "KeyRotationEnabled": meta.rotation_enabled,
        "KeyId": service.key_arn(meta.key_id),
    }
    if meta.rotation_enabled:
        out["RotationPeriodInDays"] = meta.rotation_period_days
        if meta.next_rotation is not None:
            out["NextRotationDate"] = meta.next_rotation
    return ok(out)


async def rotate_key_on_demand(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    key_id = await ctx.key(service, members.req_str(p, "KeyId"))
    access = principal.gate("kms:RotateKeyOnDemand", key_id)
    meta = await service.rotate(key_id, RotationType.ON_DEMAND, access=access)
    return ok({"KeyId": service.key_arn(meta.key_id)})


async def list_key_rotations(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    members.enum(p, "IncludeKeyMaterial", members.INCLUDE_KEY_MATERIAL)
    limit = members.limit(p, 100, 1000)
    after = paging.after(p, "rotation")
    key_id = await ctx.key(service, ref)
    access = principal.gate("kms:ListKeyRotations", key_id)
    # Version 1 is the key's first material, not a rotation.
    rotations = [v for v in await service.versions(key_id, access=access) if v.version > 1]
    page, more = paging.page(rotations, lambda v: f"{v.version:010d}", after, limit, "rotation")
    items = [
        {
            "KeyId": key_id,
            "RotationDate": v.created_at,
            "RotationType": (v.rotation_type or RotationType.ON_DEMAND).value,
        }
        for v in page
    ]
    return ok({"Rotations": items, **more})
