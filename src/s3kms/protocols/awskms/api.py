"""The AWS KMS JSON 1.1 API (`POST /`, `X-Amz-Target: TrentService.<Op>`), what boto3 speaks.

This module is the operation table and the dispatch: one dict lookup picks the operation, the body
is parsed once (`parse_json`, no schema library), and the handler, a plain async function of its
concept module (`keys`, `crypto`, `signing`, `mac`, `agreement`, `rotation`, `aliases`, `tags`,
`policies`, `grants`, `keystores`, `imports`), runs on the service the runtime holds for the request. The handlers call
the KeyService, which owns the state machine; nothing in this package reaches past it to a
keystore or to `crypto/`.

A request whose GrantTokens name a grant the key's metadata (as this node has it cached) does
not show yet is denied with `GrantNotVisible`: the dispatch then drops the node's cached
metadata of that key (`KeyService.forget`) and runs the handler once more; a second
GrantNotVisible stands as the AccessDeniedException it is.

Adding an operation: write its handler in its concept module (its member checks beside it, the
shared ones in `members.py`), name it in `OPERATIONS`, and take it out of `UNSUPPORTED_OPERATIONS`;
if it changes state, add it to `MUTATING_OPERATIONS`, so its intent is on the audit record before
it runs.
"""

from __future__ import annotations

from collections.abc import Callable

from s3kms.access.context import AliasesNeeded
from s3kms.auth.identity import Principal
from s3kms.errors import GrantNotVisible, SerializationError
from s3kms.http.jsonbody import parse_json
from s3kms.http.responses import Response
from s3kms.protocols.awskms import (
    agreement,
    aliases,
    crypto,
    grants,
    imports,
    keys,
    keystores,
    mac,
    policies,
    regions,
    rotation,
    signing,
    tags,
)
from s3kms.protocols.awskms.errors import unknown_operation
from s3kms.protocols.awskms.handler import Ctx, Handler, arn_prefix
from s3kms.request import RequestView
from s3kms.runtime import Runtime
from s3kms.users import UserStore

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
    "PutKeyPolicy": policies.put_key_policy,
    "GetKeyPolicy": policies.get_key_policy,
    "ListKeyPolicies": policies.list_key_policies,
    "CreateGrant": grants.create_grant,
    "ListGrants": grants.list_grants,
    "ListRetirableGrants": grants.list_retirable_grants,
    "RetireGrant": grants.retire_grant,
    "RevokeGrant": grants.revoke_grant,
    "CreateCustomKeyStore": keystores.create_custom_key_store,
    "DescribeCustomKeyStores": keystores.describe_custom_key_stores,
    "ConnectCustomKeyStore": keystores.connect_custom_key_store,
    "DisconnectCustomKeyStore": keystores.disconnect_custom_key_store,
    "UpdateCustomKeyStore": keystores.update_custom_key_store,
    "DeleteCustomKeyStore": keystores.delete_custom_key_store,
    "GetParametersForImport": imports.get_parameters_for_import,
    "ImportKeyMaterial": imports.import_key_material,
    "DeleteImportedKeyMaterial": imports.delete_imported_key_material,
    "ReplicateKey": regions.replicate_key,
    "UpdatePrimaryRegion": regions.update_primary_region,
}

# The operations that change state: their intent is on the audit record before they run.
MUTATING_OPERATIONS = frozenset(
    {
        "CreateKey", "EnableKey", "DisableKey", "ScheduleKeyDeletion", "CancelKeyDeletion",
        "UpdateKeyDescription", "EnableKeyRotation", "DisableKeyRotation", "RotateKeyOnDemand",
        "CreateAlias", "UpdateAlias", "DeleteAlias", "TagResource", "UntagResource",
        "PutKeyPolicy", "CreateGrant", "RetireGrant", "RevokeGrant",
        "CreateCustomKeyStore", "ConnectCustomKeyStore", "DisconnectCustomKeyStore",
        "UpdateCustomKeyStore", "DeleteCustomKeyStore", "ImportKeyMaterial",
        "DeleteImportedKeyMaterial", "ReplicateKey", "UpdatePrimaryRegion",
    }
)  # fmt: skip

# AWS KMS operations s3kms does not implement: UnsupportedOperationException, not "unknown".
UNSUPPORTED_OPERATIONS: frozenset[str] = frozenset()


def _operation_name(target: str | None) -> str | None:
    """The operation an `X-Amz-Target` names in TrentService, or None."""
    if target is None or not target.startswith(TARGET_PREFIX):
        return None
    return target[len(TARGET_PREFIX) :]


def _user_lookup(users: UserStore) -> Callable[[str], bool]:
    def known_user(name: str) -> bool:
        return users.secret_for(name) is not None

    return known_user


class AwsKmsAPI:
    def __init__(self, runtime: Runtime, users: UserStore | None = None) -> None:
        """`users`: the users a key policy or a grant may name (AWS requires the principals
        they name to exist); None: no user but root exists."""
        self.runtime = runtime
        account = runtime.settings.account_id
        if users is None:
            self._ctx = Ctx(arn_prefix(runtime), account)
        else:
            self._ctx = Ctx(arn_prefix(runtime), account, _user_lookup(users))
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
        async with self.runtime.use() as home:
            # The region the request was signed for (the authenticator admits only served ones).
            service = home.in_region(principal.region)
            refreshed = False
            while True:  # at most: once as asked, once per key for aliases, once refreshed
                try:
                    return await handler(self._ctx, service, params, principal)
                except GrantNotVisible:
                    # A grant token names a grant this node's cached metadata of the key lacks
                    # (made through another node within the cache window): read the key afresh
                    # and try once more. Gates raise before anything is changed or answered.
                    if refreshed or principal.key_id is None:
                        raise
                    refreshed = True
                    await service.forget(principal.key_id)
                except AliasesNeeded as needed:
                    # A policy tests kms:ResourceAliases: read the key's aliases, run again.
                    key_id = needed.key_id
                    if key_id is None or principal.aliases_of(key_id) is not None:
                        raise  # (never: the lookup raises only for aliases not read yet)
                    names = tuple(a.name for a in await service.aliases(key_id))
                    principal.learn_aliases(key_id, names)
