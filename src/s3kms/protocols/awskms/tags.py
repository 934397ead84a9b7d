"""Tags: TagResource, UntagResource, ListResourceTags.

Tag keys beginning with `aws:` are reserved (`TagException`, checked with the other members in
`members.tags`). A key's tags are part of its metadata; ListResourceTags pages them sorted by key.
TagResource tells conditions `aws:RequestTag/<key>` and `aws:TagKeys`, UntagResource
`aws:TagKeys`, as AWS does.
"""

from __future__ import annotations

from s3kms.auth.identity import Principal
from s3kms.http.responses import Response
from s3kms.protocols.awskms import members, paging
from s3kms.protocols.awskms.handler import Ctx, empty, ok, request_facts
from s3kms.protocols.awskms.members import Params
from s3kms.service import KeyService


def tag_values(tags: list[tuple[str, str]]) -> dict[str, str | tuple[str, ...]]:
    """`aws:RequestTag/<key>` for each tag and `aws:TagKeys` (condition key names lower-cased:
    IAM compares them case-insensitively)."""
    values: dict[str, str | tuple[str, ...]] = {
        f"aws:requesttag/{key.lower()}": value for key, value in tags
    }
    if tags:
        values["aws:tagkeys"] = tuple(key for key, _ in tags)
    return values


async def tag_resource(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref = members.req_str(p, "KeyId")
    tags = members.tags(p, required=True)
    key_id = await ctx.key(service, ref)
    access = principal.gate("kms:TagResource", key_id, request_facts(values=tag_values(tags)))
    await service.tag(key_id, dict(tags), access=access)
    return empty()


async def untag_resource(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    tag_keys = members.str_list(p, "TagKeys", item_hi=128, required=True)
    key_id = await ctx.key(service, ref)
    facts = request_facts(values={"aws:tagkeys": tuple(tag_keys)})
    access = principal.gate("kms:UntagResource", key_id, facts)
    await service.untag(key_id, tag_keys, access=access)
    return empty()


async def list_resource_tags(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    limit = members.limit(p, 50, 50)
    after = paging.after(p, "tag")
    key_id = await ctx.key(service, ref)
    access = principal.gate("kms:ListResourceTags", key_id)
    meta = await service.describe(key_id, access=access)
    page, more = paging.page(sorted(meta.tags), lambda t: t[0], after, limit, "tag")
    return ok({"Tags": [{"TagKey": k, "TagValue": v} for k, v in page], **more})
