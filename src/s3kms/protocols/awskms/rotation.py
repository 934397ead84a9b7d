"""Key rotation: EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus, RotateKeyOnDemand,
ListKeyRotations.

The rotation schedule (the period, the next date) is the service's rule. A key's first material
(version 1) is not a rotation, so ListKeyRotations starts at version 2 unless
`IncludeKeyMaterial: ALL_KEY_MATERIAL` asks for every material. An EXTERNAL key's materials are
listed from its import records (`KeyMetadata.materials`): RotateKeyOnDemand makes the one
imported as NEW_KEY_MATERIAL current.
"""

from __future__ import annotations

from typing import Any

from s3kms.auth.identity import Principal
from s3kms.http.responses import Response
from s3kms.model import KeyMaterial, KeyMetadata, RotationType
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
    include = members.enum(p, "IncludeKeyMaterial", members.INCLUDE_KEY_MATERIAL)
    limit = members.limit(p, 100, 1000)
    after = paging.after(p, "rotation")
    key_id = await ctx.key(service, ref)
    access = principal.gate("kms:ListKeyRotations", key_id)
    every = include == "ALL_KEY_MATERIAL"  # also the first material and one pending rotation
    if (meta := await service.describe(key_id, access=access)).external:
        entries = [_imported_entry(meta, m) for m in meta.materials if every or m.rotated_at]
    else:
        entries = [
            _entry(service, meta, v.version, v.created_at, v.rotation_type)
            for v in await service.versions(key_id, access=access)
            if every or v.version > 1  # version 1 is the key's first material, not a rotation
        ]
    page, more = paging.page(entries, lambda e: f"{e[0]:010d}", after, limit, "rotation")
    return ok({"Rotations": [e[1] for e in page], **more})


def _entry(
    service: KeyService,
    meta: KeyMetadata,
    version: int,
    created_at: float,
    rotation_type: RotationType | None,
) -> tuple[int, dict[str, Any]]:
    """A RotationsListEntry of a key whose material s3kms made: (its version, the entry)."""
    out: dict[str, Any] = {"KeyId": meta.key_id}
    if service.has_material_ids(meta):
        out["KeyMaterialId"] = service.material_id(meta, version)
        out["KeyMaterialState"] = "CURRENT" if version == meta.current_version else "NON_CURRENT"
    if version > 1:
        out["RotationDate"] = created_at
        out["RotationType"] = (rotation_type or RotationType.ON_DEMAND).value
    return version, out


def _imported_entry(meta: KeyMetadata, material: KeyMaterial) -> tuple[int, dict[str, Any]]:
    """A RotationsListEntry of an imported material, with its import state."""
    if material.pending:
        state = "PENDING_ROTATION"
    else:
        state = "CURRENT" if material.version == meta.current_version else "NON_CURRENT"
    out: dict[str, Any] = {
        "KeyId": meta.key_id,
        "KeyMaterialId": material.material_id,
        "ImportState": "IMPORTED" if material.imported else "PENDING_IMPORT",
        "KeyMaterialState": state,
    }
    if material.description:
        out["KeyMaterialDescription"] = material.description
    if material.expiration_model is not None:
        out["ExpirationModel"] = material.expiration_model
    if material.valid_to is not None:
        out["ValidTo"] = material.valid_to
    if material.rotated_at is not None:
        out["RotationDate"] = material.rotated_at
        out["RotationType"] = RotationType.ON_DEMAND.value
    return material.version, out
