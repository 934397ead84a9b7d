"""The AWS KMS JSON 1.1 API (`POST /`, `X-Amz-Target: TrentService.<Op>`), what boto3 speaks.

This module is the operation table and the dispatch: one dict lookup picks the operation, the body
is parsed once (`parse_json`, no schema library), and the handler, a plain async function of its
concept module (`keys`, `crypto`, `signing`, `mac`, `agreement`, `rotation`, `aliases`, `tags`), runs on the service the runtime
holds for the request. The handlers call the KeyService, which owns the state machine; nothing in
this package reaches past it to a keystore or to `crypto/`.

Adding an operation: write its handler in its concept module (its member checks beside it, the
shared ones in `members.py`), name it in `OPERATIONS`, and take it out of `UNSUPPORTED_OPERATIONS`;
if it changes state, add it to `MUTATING_OPERATIONS`, so its intent is on the audit record before
it runs.
"""

from __future__ import annotations

from s3kms.auth.identity import Principal
from s3kms.errors import SerializationError
from s3kms.http.jsonbody import parse_json
from s3kms.http.responses import Response
from s3kms.protocols.awskms import agreement, aliases, crypto, keys, mac, rotation, signing, tags
from s3kms.protocols.awskms.errors import unknown_operation
from s3kms.protocols.awskms.handler import Ctx, Handler, arn_prefix
from s3kms.request import RequestView
from s3kms.runtime import Runtime

TARGET_PREFIX = "TrentService."
UNKNOWN_ACTION = "kms:UnknownOperation"

OPERATIONS: dict[str, Handler] = {
    "CreateKey": keys.create_key,
    "DescribeKey": keys.describe_key,
    "ListKeys": keys.list_keys,
    "EnableKey": keys.enable_key,
    "DisableKey": keys.disable_key,
    "ScheduleKeyDeletion": keys.schedule_key_deletion,
    "CancelKeyDeletion": keys.cancel_key_deletion,
    "UpdateKeyDescription": keys.update_key_description,
    "GetKeyLastUsage": keys.get_key_last_usage,
    "Encrypt": crypto.encrypt,
    "Decrypt": crypto.decrypt,
    "GenerateDataKey": crypto.generate_data_key,
    "GenerateDataKeyWithoutPlaintext": crypto.generate_data_key_without_plaintext,
    "ReEncrypt": crypto.re_encrypt,
    "GenerateDataKeyPair": crypto.generate_data_key_pair,
    "GenerateDataKeyPairWithoutPlaintext": crypto.generate_data_key_pair_without_plaintext,
    "GenerateRandom": crypto.generate_random,
    "Sign": signing.sign,
    "Verify": signing.verify,
    "GetPublicKey": signing.get_public_key,
    "GenerateMac": mac.generate_mac,
    "VerifyMac": mac.verify_mac,
    "DeriveSharedSecret": agreement.derive_shared_secret,
    "Encapsulate": agreement.encapsulate,
    "Decapsulate": agreement.decapsulate,
    "EnableKeyRotation": rotation.enable_key_rotation,
    "DisableKeyRotation": rotation.disable_key_rotation,
    "GetKeyRotationStatus": rotation.get_key_rotation_status,
    "RotateKeyOnDemand": rotation.rotate_key_on_demand,
    "ListKeyRotations": rotation.list_key_rotations,
    "CreateAlias": aliases.create_alias,
    "UpdateAlias": aliases.update_alias,
    "DeleteAlias": aliases.delete_alias,
    "ListAliases": aliases.list_aliases,
    "TagResource": tags.tag_resource,
    "UntagResource": tags.untag_resource,
    "ListResourceTags": tags.list_resource_tags,
}

# The operations that change state: their intent is on the audit record before they run.
MUTATING_OPERATIONS = frozenset(
    {
        "CreateKey", "EnableKey", "DisableKey", "ScheduleKeyDeletion", "CancelKeyDeletion",
        "UpdateKeyDescription", "EnableKeyRotation", "DisableKeyRotation", "RotateKeyOnDemand",
        "CreateAlias", "UpdateAlias", "DeleteAlias", "TagResource", "UntagResource",
    }
)  # fmt: skip

# AWS KMS operations s3kms does not implement: UnsupportedOperationException, not "unknown".
UNSUPPORTED_OPERATIONS = frozenset(
    {
        "ConnectCustomKeyStore", "CreateCustomKeyStore", "CreateGrant",
        "DeleteCustomKeyStore", "DeleteImportedKeyMaterial",
        "DescribeCustomKeyStores", "DisconnectCustomKeyStore",
        "GetKeyPolicy", "GetParametersForImport",
        "ImportKeyMaterial", "ListGrants", "ListKeyPolicies", "ListRetirableGrants",
        "PutKeyPolicy", "ReplicateKey", "RetireGrant", "RevokeGrant",
        "UpdateCustomKeyStore", "UpdatePrimaryRegion",
    }
)  # fmt: skip


def _operation_name(target: str | None) -> str | None:
    """The operation an `X-Amz-Target` names in TrentService, or None."""
    if target is None or not target.startswith(TARGET_PREFIX):
        return None
    return target[len(TARGET_PREFIX) :]


class AwsKmsAPI:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._ctx = Ctx(arn_prefix(runtime))
        # Keyed by the whole header value: one dict lookup per request.
        self._ops = {TARGET_PREFIX + name: handler for name, handler in OPERATIONS.items()}

    def audit_action(self, target: str | None) -> tuple[str, bool]:
        """(the audit action, whether it changes state) for an `X-Amz-Target`, before auth.

        Only operation names from the AWS model are recorded; anything else is
        `kms:UnknownOperation`, so a client cannot write what it likes into the audit log.
        """
        name = _operation_name(target)
        if name is None:
            return UNKNOWN_ACTION, False
        if target in self._ops or name in UNSUPPORTED_OPERATIONS:
            return "kms:" + name, name in MUTATING_OPERATIONS
        return UNKNOWN_ACTION, False

    async def handle(self, req: RequestView, principal: Principal) -> Response:
        target = req.headers.get("x-amz-target")
        handler = self._ops.get(target) if target is not None else None
        if handler is None:
            name = _operation_name(target)
            raise unknown_operation(target, name if name in UNSUPPORTED_OPERATIONS else None)
        body = req.body
        if body:
            try:
                params = parse_json(body)
            except ValueError:
                raise SerializationError("The request body is not valid JSON") from None
            if type(params) is not dict:
                raise SerializationError("The request body must be a JSON object")
        else:
            params = {}
        async with self.runtime.use() as service:
            return await handler(self._ctx, service, params, principal)
