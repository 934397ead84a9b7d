"""Tags: TagResource, UntagResource, ListResourceTags.

Tag keys beginning with `aws:` are reserved (`TagException`, checked with the other members in
`members.tags`). A key's tags are part of its metadata; ListResourceTags pages them sorted by key.
"""

from __future__ import annotations

from s3kms.auth.identity import Principal
from s3kms.http.responses import Response
from s3kms.protocols.awskms import members, paging
from s3kms.protocols.awskms.handler import Ctx, empty, ok
from s3kms.protocols.awskms.members import Params
from s3kms.service import KeyService


async def tag_resource(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref = members.req_str(p, "KeyId")
    tags = members.tags(p, required=True)
    key_id = await ctx.key(service, ref)
    principal.authorize("kms:TagResource", key_id)
    await service.tag(key_id, dict(tags))
    return empty()


async def untag_resource(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    tag_keys = members.str_list(p, "TagKeys", item_hi=128, required=True)
    key_id = await ctx.key(service, ref)
    principal.authorize("kms:UntagResource", key_id)
    await service.untag(key_id, tag_keys)
    return empty()


async def list_resource_tags(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    limit = members.limit(p, 50, 50)
    after = paging.after(p, "tag")
    key_id = await ctx.key(service, ref)
    principal.authorize("kms:ListResourceTags", key_id)
    meta = await service.describe(key_id)
    page, more = paging.page(sorted(meta.tags), lambda t: t[0], after, limit, "tag")
    return ok({"Tags": [{"TagKey": k, "TagValue": v} for k, v in page], **more})
