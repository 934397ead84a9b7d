"""Multi-Region keys: ReplicateKey and UpdatePrimaryRegion. CreateKey with `MultiRegion: true`
(keys.py) makes a primary key (`mrk-` id); DescribeKey reports `MultiRegionConfiguration`.

Each region a server serves (`--regions`) is its own KMS, as AWS's regional endpoints are: the
request's SigV4 scope names it, and the handler runs on that region's service
(`KeyService.in_region`). A replica shares its primary's id and material (a ciphertext of one
region decrypts in the other), and has its own ARN, key policy, tags, description, grants and
aliases. The rules are the service's.

Recorded AWS answers followed (LocalStack's AWS-validated snapshots): `<arn> is not a
multi-region primary key.` (UnsupportedOperationException) for replicating a replica, and the
replica's metadata in ReplicateKey's answer without `CurrentKeyMaterialId`. AWS answers a new
replica in the `Creating` state; s3kms makes it at once, so it answers `Enabled`.
"""

from __future__ import annotations

from typing import Any

from s3kms.access.decision import check_lockout
from s3kms.access.documents import default_key_policy, parse_key_policy
from s3kms.auth.identity import Principal
from s3kms.config import REGION_RE
from s3kms.http.responses import Response
from s3kms.protocols.awskms import members
from s3kms.protocols.awskms.handler import Ctx, empty, ok, request_facts
from s3kms.protocols.awskms.keys import key_metadata, policy_member
from s3kms.protocols.awskms.members import Params
from s3kms.protocols.awskms.tags import tag_values
from s3kms.service import KeyService


def _region(p: Params, name: str) -> str:
    """A RegionType member (the model's pattern and length)."""
    value = members.req_str(p, name, 1, 32)
    if not REGION_RE.fullmatch(value):
        raise members.violation(
            name[0].lower() + name[1:],
            "satisfy regular expression pattern: ^([a-z]+-){2,3}\\d+$",
            f"'{value}'",
        )
    return value


async def replicate_key(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
    ref = members.req_str(p, "KeyId")
    region = _region(p, "ReplicaRegion")
    policy_text = policy_member(p)
    bypass = members.opt_bool(p, "BypassPolicyLockoutSafetyCheck")
    description = members.opt_str(p, "Description", 0, 8192) or ""
    tags = members.tags(p, required=False)
    key_id = await ctx.key(service, ref)
    tagged = tag_values(tags)
    values: dict[str, str | tuple[str, ...]] = {"kms:replicaregion": region, **tagged}
    # AWS: kms:CreateKey in an identity policy (in the replica's region), and kms:TagResource
    # when Tags are given, beside kms:ReplicateKey on the primary. (Checked first; the audit
    # line stays ReplicateKey's, the action the gate records last.)
    tag_facts = request_facts(values=tagged)
    principal.authorize("kms:CreateKey", None, tag_facts)
    if tags:
        principal.authorize("kms:TagResource", None, tag_facts)
    access = principal.gate("kms:ReplicateKey", key_id, request_facts(values=values))
    # The replica's own key policy, judged as CreateKey judges one (its ARN is the replica's).
    replica_arn = service.key_arn_in(region, key_id)
    if policy_text is not None:
        policy = parse_key_policy(policy_text, account=ctx.account, known_user=ctx.known_user)
        if not bypass:
            check_lockout(policy, principal, replica_arn)
    meta = await service.replicate(
        key_id, region, description=description, tags=tags, policy=policy_text, access=access
    )
    replica = service.in_region(region)
    out: dict[str, Any] = key_metadata(replica, meta)
    out.pop("CurrentKeyMaterialId", None)  # (AWS's answer has none: recorded)
    return ok(
        {
            "ReplicaKeyMetadata": out,
            "ReplicaPolicy": meta.policy or default_key_policy(ctx.account),
            "ReplicaTags": [{"TagKey": k, "TagValue": v} for k, v in meta.tags],
        }
    )


async def update_primary_region(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    region = _region(p, "PrimaryRegion")
    key_id = await ctx.key(service, ref)
    facts = request_facts(values={"kms:primaryregion": region})
    access = principal.gate("kms:UpdatePrimaryRegion", key_id, facts)
    await service.update_primary_region(key_id, region, access=access)
    return empty()
