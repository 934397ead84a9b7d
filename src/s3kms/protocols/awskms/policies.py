"""Key policies: PutKeyPolicy, GetKeyPolicy, ListKeyPolicies.

A key has one key policy, named `default` (AWS's other name, `AWS_RAM`, is the policy RAM keeps
for a shared key: s3kms shares none). A key created without a policy has AWS's default key policy
(`access.documents.default_key_policy`: the account root gets `kms:*`, so the users' identity
policies decide), which GetKeyPolicy answers byte for byte as AWS does; a policy put is stored and
answered exactly as given. PutKeyPolicy (and CreateKey with `Policy`) validates it with
`parse_key_policy` (AWS's MalformedPolicyDocumentException; LimitExceededException over 32 KiB)
and runs the policy lockout safety check (`check_lockout`) unless
`BypassPolicyLockoutSafetyCheck`; both after the caller is allowed `kms:PutKeyPolicy`, so a
caller without that right learns nothing of the users a policy names.

These operations take a key id or key ARN, never an alias (AWS: InvalidArnException "Key
Aliases are not supported for this operation."). They work in every key state, as AWS's key
state table has it.
"""

from __future__ import annotations

import re

from s3kms.access.decision import check_lockout
from s3kms.access.documents import Policy, default_key_policy, parse_key_policy
from s3kms.auth.identity import Principal
from s3kms.errors import KeyNotFound, ValidationError
from s3kms.http.responses import Response
from s3kms.model import KeyMetadata
from s3kms.protocols.awskms import members, paging
from s3kms.protocols.awskms.handler import Ctx, empty, ok, request_facts
from s3kms.protocols.awskms.keys import policy_member
from s3kms.protocols.awskms.members import Params
from s3kms.service import KeyService

DEFAULT = "default"
RAM = "AWS_RAM"
# AWS's answer to PutKeyPolicy with PolicyName AWS_RAM (the PutKeyPolicy API reference).
RAM_MESSAGE = "The AWS_RAM policy can only be managed by the RAM service."
# The model's PolicyNameType pattern `[\w]+` (Java's \w: ASCII letters, digits, underscore).
_POLICY_NAME_RE = re.compile(r"[A-Za-z0-9_]+")
_POLICY_NAME_PATTERN = r"[\w]+"


def policy_name(p: Params) -> str:
    """`PolicyName` (1-128 characters of the model's pattern), `default` when left out."""
    name = members.opt_str(p, "PolicyName", 1, 128)
    if name is None:
        return DEFAULT
    if _POLICY_NAME_RE.fullmatch(name) is None:
        rule = f"satisfy regular expression pattern: {_POLICY_NAME_PATTERN}"
        raise members.violation("policyName", rule, f"'{name}'")
    return name


async def put_key_policy(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    name = policy_name(p)
    text = policy_member(p)
    bypass = members.opt_bool(p, "BypassPolicyLockoutSafetyCheck")
    if text is None:
        raise members.violation("policy", "not be null", "null")
    if name == RAM:
        raise ValidationError(RAM_MESSAGE)
    if name != DEFAULT:
        # s3kms's words: AWS documents `default` and `AWS_RAM` as the only names.
        raise ValidationError(f"PolicyName {name} is not valid: the only key policy is default")
    key_id = await ctx.key_only(service, ref)
    values: dict[str, str | tuple[str, ...]] = {"kms:policyname": name}
    if "BypassPolicyLockoutSafetyCheck" in p:
        values["kms:bypasspolicylockoutsafetycheck"] = "true" if bypass else "false"
    access = principal.gate("kms:PutKeyPolicy", key_id, request_facts(values=values))
    parsed: list[Policy] = []
    key_arn = service.key_arn(key_id)

    def gate(meta: KeyMetadata) -> None:
        access(meta)  # first: AccessDenied before anything is said about the document
        if not parsed:
            parsed.append(parse_key_policy(text, account=ctx.account, known_user=ctx.known_user))
        if not bypass:
            check_lockout(parsed[0], principal, key_arn)

    await service.put_key_policy(key_id, text, access=gate)
    return empty()


async def get_key_policy(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    name = policy_name(p)
    key_id = await ctx.key_only(service, ref)
    access = principal.gate(
        "kms:GetKeyPolicy", key_id, request_facts(values={"kms:policyname": name})
    )
    meta = await service.describe(key_id, access=access)
    if name != DEFAULT:
        # AWS: "If the KMS key doesn't have an AWS_RAM key policy, GetKeyPolicy returns a
        # NotFoundException" (the message is s3kms's).
        raise KeyNotFound(f"The key has no key policy named {name}")
    text = meta.policy if meta.policy is not None else default_key_policy(service.account_id)
    return ok({"Policy": text, "PolicyName": DEFAULT})


async def list_key_policies(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    """Always `["default"]` (AWS: a key has at most `default` and `AWS_RAM`), paged."""
    ref = members.req_str(p, "KeyId")
    limit = members.limit(p, 100, 1000)
    after = paging.after(p, "policy")
    key_id = await ctx.key_only(service, ref)
    await service.describe(key_id, access=principal.gate("kms:ListKeyPolicies", key_id))
    page, more = paging.page([DEFAULT], str, after, limit, "policy")
    return ok({"PolicyNames": list(page), **more})
