"""Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases.

An alias names a key, never another alias; CreateAlias refuses the `alias/aws/` prefix, reserved
for AWS managed keys. AWS's rule for the alias actions holds: the caller needs the action on the
alias (`authorize_alias`, identity policies) and on every key it touches (the key's gate: key
policy, grants and identity policies; for UpdateAlias, the key the alias leaves and the one it
moves to).
"""

from __future__ import annotations

from s3kms.auth.identity import Principal
from s3kms.errors import KeyAlreadyExists, ReservedName, ValidationError
from s3kms.http.responses import Response
from s3kms.protocols.awskms import members, paging
from s3kms.protocols.awskms.handler import Ctx, empty, ok
from s3kms.protocols.awskms.members import Params
from s3kms.service import KeyService


async def _alias_target(ctx: Ctx, service: KeyService, p: Params) -> str:
    ref = members.req_str(p, "TargetKeyId")
    if ref.startswith("alias/") or (ref.startswith("arn:") and ":alias/" in ref):
        raise ValidationError("Aliases must refer to keys. Not aliases")
    return await ctx.key(service, ref)


async def create_alias(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    name = members.alias_name(p)
    if name.startswith("alias/aws/"):
        raise ReservedName(f"{name}: the alias/aws/ prefix is reserved for AWS managed keys")
    key_id = await _alias_target(ctx, service, p)
    # AWS's rule for alias actions: permission on the alias and on every key it touches.
    principal.authorize_alias("kms:CreateAlias", name)
    access = principal.gate("kms:CreateAlias", key_id)
    try:
        await service.create_alias(name, key_id, access=access)
    except KeyAlreadyExists:
        raise KeyAlreadyExists(
            f"An alias with the name {service.alias_arn(name)} already exists"
        ) from None
    return empty()


async def update_alias(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    name = members.alias_name(p)
    key_id = await _alias_target(ctx, service, p)
    current = await service.resolve(name)  # AliasNotFound when there is no such alias
    principal.authorize_alias("kms:UpdateAlias", name)
    # The key the alias leaves, then the key it moves to (the service checks that one).
    await service.describe(current, access=principal.gate("kms:UpdateAlias", current))
    access = principal.gate("kms:UpdateAlias", key_id)
    await service.update_alias(name, key_id, expected_key_id=current, access=access)
    return empty()


async def delete_alias(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    name = members.alias_name(p)
    key_id = await service.resolve(name)  # AliasNotFound when there is no such alias
    principal.authorize_alias("kms:DeleteAlias", name)
    await service.describe(key_id, access=principal.gate("kms:DeleteAlias", key_id))
    await service.delete_alias(name)
    return empty()


async def list_aliases(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref = members.opt_str(p, "KeyId")
    limit = members.limit(p, 50, 100)
    after = paging.after(p, "alias")
    key_id = await ctx.key(service, ref) if ref is not None else None
    principal.authorize("kms:ListAliases", key_id)
    found = sorted(await service.aliases(key_id), key=lambda a: a.name)
    page, more = paging.page(found, lambda a: a.name, after, limit, "alias")
    items = [
        {
            "AliasName": a.name,
            "AliasArn": service.alias_arn(a.name),
            "TargetKeyId": a.key_id,
            "CreationDate": a.created_at,
        }
        for a in page
    ]
    return ok({"Aliases": items, **more})
