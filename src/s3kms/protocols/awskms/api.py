"""The AWS KMS JSON 1.1 API (`POST /`, `X-Amz-Target: TrentService.<Op>`), what boto3 speaks.

One dict lookup picks the operation; the body is parsed once, with no schema library; every member is
checked against the AWS model's constraints (types, lengths, ranges, enums, patterns: botocore
checks only required members and minimums on the client side) and a failure is reported with the
AWS template, `1 validation error detected: Value '<v>' at '<member>' failed to satisfy constraint:
Member must ...` (blob values left out). The handlers call the KeyService, which owns the state
machine; nothing here reaches past it to a keystore or to `crypto/`.

Key references (`KeyId` and friends) are resolved here to a bare key id first, so the caller is
authorised against the key actually used (`principal.authorize`), and the service is then called
with that id. Responses name keys by ARN where AWS does (Encrypt, Decrypt, GenerateDataKey, ...);
`KeyMetadata.KeyId` is the bare id. Timestamps are epoch seconds, blobs base64.

Errors render as `{"__type", "message"}` with HTTP 400 for every client error (what real AWS KMS
sends); `InvalidCiphertextException` has no message. Messages about a key name its ARN, built from
the error's `key_id`: `<arn> is disabled.`, `Key '<arn>' does not exist`, `Alias <arn> is not found.`

The hot operations (Encrypt, Decrypt, GenerateDataKey) write their JSON response directly: every
value in it is base64, a constant, or an ARN escaped with the JSON encoder's own C routine.
"""

from __future__ import annotations

import binascii
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any, TypeVar

from s3kms.auth.identity import Principal
from s3kms.errors import (
    AliasNotFound,
    DryRunOperation,
    InvalidMarker,
    KeyAlreadyExists,
    KeyDisabled,
    KeyInvalidState,
    KeyNotFound,
    KMSError,
    ReservedName,
    RouteNotFound,
    SerializationError,
    TagError,
    UnsupportedOperation,
    ValidationError,
)
from s3kms.http.jsonbody import parse_json
from s3kms.http.responses import AWS_JSON, Response, json_response
from s3kms.model import KEY_NAME_RE, KeyMetadata, KeyState, RotationType
from s3kms.request import RequestView
from s3kms.runtime import Runtime
from s3kms.service import KeyService, check_usable

T = TypeVar("T")
Params = dict[str, Any]
Handler = Callable[[KeyService, Params, Principal], Awaitable[Response]]

TARGET_PREFIX = "TrentService."
SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"

# Enum value sets, in the AWS model's order (the validation message lists them).
KEY_USAGES = (
    "SIGN_VERIFY",
    "ENCRYPT_DECRYPT",
    "GENERATE_VERIFY_MAC",
    "KEY_AGREEMENT",
    "ENCAPSULATE_DECAPSULATE",
)
CUSTOMER_MASTER_KEY_SPECS = (
    "RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521",
    "ECC_SECG_P256K1", "SYMMETRIC_DEFAULT", "HMAC_224", "HMAC_256", "HMAC_384", "HMAC_512", "SM2",
)  # fmt: skip
KEY_SPECS = (
    *CUSTOMER_MASTER_KEY_SPECS,
    "ML_DSA_44", "ML_DSA_65", "ML_DSA_87", "ECC_NIST_EDWARDS25519",
    "ML_KEM_512", "ML_KEM_768", "ML_KEM_1024",
)  # fmt: skip
ORIGINS = ("AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE")
ENCRYPTION_ALGORITHMS = ("SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE")
DATA_KEY_SPECS = ("AES_256", "AES_128")
_DATA_KEY_SIZES = {"AES_256": 32, "AES_128": 16}
INCLUDE_KEY_MATERIAL = ("ALL_KEY_MATERIAL", "ROTATIONS_ONLY")
DRY_RUN_MODIFIERS = ("IGNORE_CIPHERTEXT",)
RESOURCE_OWNERS = ("SELF", "OTHER_ACCOUNTS_VIA_RAM")

# AWS KMS operations s3kms does not implement: UnsupportedOperationException, not "unknown".
UNSUPPORTED_OPERATIONS = frozenset(
    {
        "ConnectCustomKeyStore", "CreateCustomKeyStore", "CreateGrant", "Decapsulate",
        "DeleteCustomKeyStore", "DeleteImportedKeyMaterial", "DeriveSharedSecret",
        "DescribeCustomKeyStores", "DisconnectCustomKeyStore", "Encapsulate",
        "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "GenerateMac",
        "GetKeyLastUsage", "GetKeyPolicy", "GetParametersForImport", "GetPublicKey",
        "ImportKeyMaterial", "ListGrants", "ListKeyPolicies", "ListRetirableGrants",
        "PutKeyPolicy", "ReplicateKey", "RetireGrant", "RevokeGrant", "Sign",
        "UpdateCustomKeyStore", "UpdatePrimaryRegion", "Verify", "VerifyMac",
    }
)  # fmt: skip

# The operations that change state: their intent is on the audit record before they run.
MUTATING_OPERATIONS = frozenset(
    {
        "CreateKey", "EnableKey", "DisableKey", "ScheduleKeyDeletion", "CancelKeyDeletion",
        "UpdateKeyDescription", "EnableKeyRotation", "DisableKeyRotation", "RotateKeyOnDemand",
        "CreateAlias", "UpdateAlias", "DeleteAlias", "TagResource", "UntagResource",
    }
)  # fmt: skip
UNKNOWN_ACTION = "kms:UnknownOperation"
# An encryption context travels in every ciphertext's AAD and in audit trails: keep it small.
MAX_CONTEXT_BYTES = 8192

# The model's patterns, used with fullmatch (so `$` does not let a trailing newline through).
_ALIAS_NAME_RE = re.compile(r"^[a-zA-Z0-9:/_-]+$")
_MARKER_RE = re.compile(r"[\u0020-\u00FF]*")
_ALIAS_PREFIX_MESSAGE = (
    'Alias must start with the prefix "alias/". Please see '
    "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"
)
_DATA_KEY_SIZE_MESSAGE = "Please specify either number of bytes or key spec."
_DATA_KEY_BOTH_MESSAGE = "Specify either KeySpec or NumberOfBytes, not both."

_b64 = binascii.b2a_base64
_EMPTY = b"{}"


# -- errors ---------------------------------------------------------------------------------------


def error_response(exc: KMSError, runtime: Runtime) -> Response:
    kind = exc.aws_type
    if kind == "InvalidCiphertextException":
        # Every decryption failure looks the same: no message, nothing to tell the checks apart.
        return Response(exc.aws_status, b'{"__type":"InvalidCiphertextException"}', AWS_JSON)
    payload = {"__type": kind, "message": _aws_message(exc, _arn_prefix(runtime))}
    return json_response(exc.aws_status, payload, AWS_JSON)


def _arn_prefix(runtime: Runtime) -> str:
    """`arn:aws:kms:<region>:<account>:`, as `KeyService.key_arn` writes it."""
    settings = runtime.settings
    return f"arn:aws:kms:{settings.region}:{settings.account_id}:"


def _aws_message(exc: KMSError, arn_prefix: str) -> str:
    """The message AWS sends for `exc`: keys and aliases named by their full ARN."""
    if isinstance(exc, AliasNotFound):
        # The keystores raise AliasNotFound with the alias name as its message.
        name = exc.message
        return f"Alias {arn_prefix}{name} is not found." if name.startswith("alias/") else name
    key_id = exc.key_id
    if key_id is None:
        return exc.message
    arn = f"{arn_prefix}key/{key_id}"
    if isinstance(exc, KeyNotFound):
        return f"Key '{arn}' does not exist"
    if isinstance(exc, KeyDisabled):
        return f"{arn} is disabled."
    if isinstance(exc, KeyInvalidState):
        # The service says "Key <id> <what>" ("is pending deletion", "is not pending deletion").
        head = f"Key {key_id} "
        if exc.message.startswith(head):
            return f"{arn} {exc.message[len(head) :]}."
    return exc.message


# -- member checks (the AWS model's constraints) ---------------------------------------------------


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _violation(member: str, rule: str, shown: str | None) -> ValidationError:
    """`shown` is the value as AWS prints it (`'x'`, `null`), or None for a blob (left out)."""
    where = f"Value at '{member}'" if shown is None else f"Value {shown} at '{member}'"
    return ValidationError(
        f"1 validation error detected: {where} failed to satisfy constraint: Member must {rule}"
    )


def _wrong_type(name: str, expected: str) -> SerializationError:
    return SerializationError(f"{name} must be {expected}")


def _check_length(value: str, member: str, lo: int, hi: int) -> str:
    n = len(value)
    if n < lo:
        raise _violation(member, f"have length greater than or equal to {lo}", f"'{value}'")
    if n > hi:
        raise _violation(member, f"have length less than or equal to {hi}", f"'{value}'")
    return value


def _opt_str(p: Params, name: str, lo: int = 1, hi: int = 2048) -> str | None:
    value = p.get(name)
    if value is None:
        return None
    if type(value) is not str:
        raise _wrong_type(name, "a string")
    return _check_length(value, _camel(name), lo, hi)


def _req_str(p: Params, name: str, lo: int = 1, hi: int = 2048) -> str:
    value = _opt_str(p, name, lo, hi)
    if value is None:
        raise _violation(_camel(name), "not be null", "null")
    return value


def _opt_int(p: Params, name: str, lo: int, hi: int) -> int | None:
    value = p.get(name)
    if value is None:
        return None
    if type(value) is not int:
        raise _wrong_type(name, "an integer")
    if value < lo:
        raise _violation(_camel(name), f"have value greater than or equal to {lo}", f"'{value}'")
    if value > hi:
        raise _violation(_camel(name), f"have value less than or equal to {hi}", f"'{value}'")
    return value


def _opt_bool(p: Params, name: str) -> bool:
    value = p.get(name)
    if value is None:
        return False
    if type(value) is not bool:
        raise _wrong_type(name, "a boolean")
    return value


def _enum(p: Params, name: str, allowed: Sequence[str]) -> str | None:
    value = p.get(name)
    if value is None:
        return None
    if type(value) is not str:
        raise _wrong_type(name, "a string")
    if value not in allowed:
        rule = f"satisfy enum value set: [{', '.join(allowed)}]"
        raise _violation(_camel(name), rule, f"'{value}'")
    return value


def _blob(p: Params, name: str, hi: int) -> bytes:
    """A required base64 blob of 1..hi bytes."""
    value = p.get(name)
    if value is None:
        raise _violation(_camel(name), "not be null", "null")
    if type(value) is not str:
        raise _wrong_type(name, "a base64 string")
    try:
        data = binascii.a2b_base64(value, strict_mode=True)
    except ValueError:
        raise SerializationError(f"{name} is not valid base64") from None
    n = len(data)
    if n == 0:
        raise _violation(_camel(name), "have length greater than or equal to 1", None)
    if n > hi:
        raise _violation(_camel(name), f"have length less than or equal to {hi}", None)
    return data


def _context(p: Params, name: str) -> dict[str, str] | None:
    value = p.get(name)
    if value is None:
        return None
    if type(value) is not dict:
        raise _wrong_type(name, "a map of strings to strings")
    size = 0
    for key, item in value.items():
        if type(item) is not str:
            raise _wrong_type(name, "a map of strings to strings")
        size += len(key) + len(item)  # characters; the bytes are checked below when near
    if size > MAX_CONTEXT_BYTES // 4 and (
        sum(len(k.encode()) + len(v.encode()) for k, v in value.items()) > MAX_CONTEXT_BYTES
    ):
        raise ValidationError(
            f"{name} is too large: its keys and values may hold at most "
            f"{MAX_CONTEXT_BYTES} bytes (UTF-8)"
        )
    return value


def _str_list(
    p: Params,
    name: str,
    *,
    lo: int = 0,
    hi: int | None = None,
    item_lo: int = 1,
    item_hi: int = 1 << 31,
    allowed: Sequence[str] | None = None,
    required: bool = False,
) -> list[str]:
    """A list of strings: its length, each item's length or enum value set."""
    value = p.get(name)
    member = _camel(name)
    if value is None:
        if required:
            raise _violation(member, "not be null", "null")
        return []
    if type(value) is not list or any(type(v) is not str for v in value):
        raise _wrong_type(name, "a list of strings")
    shown = f"'[{', '.join(value)}]'"
    if len(value) < lo:
        raise _violation(member, f"have length greater than or equal to {lo}", shown)
    if hi is not None and len(value) > hi:
        raise _violation(member, f"have length less than or equal to {hi}", shown)
    for i, item in enumerate(value, 1):
        if allowed is not None and item not in allowed:
            rule = f"satisfy enum value set: [{', '.join(allowed)}]"
            raise _violation(f"{member}.{i}.member", rule, f"'{item}'")
        _check_length(item, f"{member}.{i}.member", item_lo, item_hi)
    return value


def _grant_tokens(p: Params) -> None:
    """GrantTokens are accepted (and checked) but mean nothing here: s3kms has no grants."""
    if "GrantTokens" in p:
        _str_list(p, "GrantTokens", hi=10, item_hi=8192)


def _algorithm(p: Params, name: str) -> None:
    algorithm = _enum(p, name, ENCRYPTION_ALGORITHMS)
    if algorithm is not None and algorithm != SYMMETRIC_DEFAULT:
        raise UnsupportedOperation(
            f"{name} {algorithm} is not supported: s3kms keys are symmetric; "
            f"use {SYMMETRIC_DEFAULT}"
        )


def _no_recipient(p: Params) -> None:
    if p.get("Recipient") is not None:
        raise UnsupportedOperation("Recipient (Nitro Enclaves attestation) is not supported")


def _data_key_size(p: Params) -> int:
    spec = _enum(p, "KeySpec", DATA_KEY_SPECS)
    size = _opt_int(p, "NumberOfBytes", 1, 1024)
    if spec is None:
        if size is None:
            raise ValidationError(_DATA_KEY_SIZE_MESSAGE)
        return size
    if size is not None:
        raise ValidationError(_DATA_KEY_BOTH_MESSAGE)
    return _DATA_KEY_SIZES[spec]


def _tags(p: Params, required: bool) -> list[tuple[str, str]]:
    value = p.get("Tags")
    if value is None:
        if required:
            raise _violation("tags", "not be null", "null")
        return []
    if type(value) is not list:
        raise _wrong_type("Tags", "a list of tags")
    tags: dict[str, str] = {}
    for i, tag in enumerate(value, 1):
        if type(tag) is not dict:
            raise _wrong_type("Tags", "a list of tags")
        key = _tag_part(tag, "TagKey", i, 1, 128)
        tags[key] = _tag_part(tag, "TagValue", i, 0, 256)
    if any(k.lower().startswith("aws:") for k in tags):
        raise TagError("Tags beginning with aws: are reserved")
    return sorted(tags.items())


def _tag_part(tag: Params, name: str, i: int, lo: int, hi: int) -> str:
    value = tag.get(name)
    member = f"tags.{i}.member.{_camel(name)}"
    if value is None:
        raise _violation(member, "not be null", "null")
    if type(value) is not str:
        raise _wrong_type("Tags", "a list of tags")
    return _check_length(value, member, lo, hi)


def _alias_name(p: Params) -> str:
    name = _req_str(p, "AliasName", 1, 256)
    if _ALIAS_NAME_RE.fullmatch(name) is None:
        rule = f"satisfy regular expression pattern: {_ALIAS_NAME_RE.pattern}"
        raise _violation("aliasName", rule, f"'{name}'")
    if not name.startswith("alias/") or len(name) == len("alias/"):
        raise ValidationError(_ALIAS_PREFIX_MESSAGE)
    return name


def _limit(p: Params, default: int, cap: int) -> int:
    limit = _opt_int(p, "Limit", 1, 1000)
    return default if limit is None else min(limit, cap)


# -- pagination -----------------------------------------------------------------------------------
# A marker is opaque to the caller: base64 of "<kind>:<last item>", so a marker from another
# listing, or one that was never issued, is an InvalidMarkerException rather than a silent restart.

_TO_URLSAFE = str.maketrans("+/", "-_")
_FROM_URLSAFE = str.maketrans("-_", "+/")


def _marker(kind: str, last: str) -> str:
    return _b64(f"{kind}:{last}".encode(), newline=False).decode().translate(_TO_URLSAFE)


def _after(p: Params, kind: str) -> str | None:
    marker = _opt_str(p, "Marker", 1, 1024)
    if marker is None:
        return None
    if _MARKER_RE.fullmatch(marker) is None:
        rule = f"satisfy regular expression pattern: {_MARKER_RE.pattern}"
        raise _violation("marker", rule, f"'{marker}'")
    try:
        raw = binascii.a2b_base64(marker.translate(_FROM_URLSAFE), strict_mode=True).decode()
    except ValueError:
        raise InvalidMarker from None
    tag, sep, last = raw.partition(":")
    if tag != kind or not sep or not last:
        raise InvalidMarker
    return last


def _page(
    items: Sequence[T], key: Callable[[T], str], after: str | None, limit: int, kind: str
) -> tuple[Sequence[T], dict[str, Any]]:
    """One page of `items` (sorted by `key`) after the marker, and the Truncated/NextMarker part."""
    start = 0
    if after is not None:
        start = next((i for i, item in enumerate(items) if key(item) > after), len(items))
    page = items[start : start + limit]
    if start + limit < len(items):
        return page, {"Truncated": True, "NextMarker": _marker(kind, key(page[-1]))}
    return page, {"Truncated": False}


# -- responses ------------------------------------------------------------------------------------


def _ok(payload: dict[str, Any]) -> Response:
    return json_response(200, payload, AWS_JSON)


def _empty() -> Response:
    return Response(200, _EMPTY, AWS_JSON)


def _key_metadata(service: KeyService, meta: KeyMetadata) -> dict[str, Any]:
    out: dict[str, Any] = {
        "AWSAccountId": service.account_id,
        "KeyId": meta.key_id,
        "Arn": service.key_arn(meta.key_id),
        "CreationDate": meta.created_at,
        "Enabled": meta.state is KeyState.ENABLED,
        "Description": meta.description,
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": meta.state.value,
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        "KeySpec": SYMMETRIC_DEFAULT,
        "CustomerMasterKeySpec": SYMMETRIC_DEFAULT,
        "EncryptionAlgorithms": [SYMMETRIC_DEFAULT],
        "MultiRegion": False,
    }
    if meta.state is KeyState.PENDING_DELETION:
        out["DeletionDate"] = meta.deletion_date
        out["PendingDeletionWindowInDays"] = meta.pending_window_days
    return out


# -- the API --------------------------------------------------------------------------------------


class AwsKmsAPI:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._arn_prefix = _arn_prefix(runtime)
        handlers: dict[str, Handler] = {
            "CreateKey": self.create_key,
            "DescribeKey": self.describe_key,
            "ListKeys": self.list_keys,
            "EnableKey": self.enable_key,
            "DisableKey": self.disable_key,
            "ScheduleKeyDeletion": self.schedule_key_deletion,
            "CancelKeyDeletion": self.cancel_key_deletion,
            "UpdateKeyDescription": self.update_key_description,
            "Encrypt": self.encrypt,
            "Decrypt": self.decrypt,
            "GenerateDataKey": self.generate_data_key,
            "GenerateDataKeyWithoutPlaintext": self.generate_data_key_without_plaintext,
            "ReEncrypt": self.re_encrypt,
            "EnableKeyRotation": self.enable_key_rotation,
            "DisableKeyRotation": self.disable_key_rotation,
            "GetKeyRotationStatus": self.get_key_rotation_status,
            "RotateKeyOnDemand": self.rotate_key_on_demand,
            "ListKeyRotations": self.list_key_rotations,
            "CreateAlias": self.create_alias,
            "UpdateAlias": self.update_alias,
            "DeleteAlias": self.delete_alias,
            "ListAliases": self.list_aliases,
            "TagResource": self.tag_resource,
            "UntagResource": self.untag_resource,
            "ListResourceTags": self.list_resource_tags,
            "GenerateRandom": self.generate_random,
        }
        # Keyed by the whole header value: one dict lookup per request.
        self._ops = {TARGET_PREFIX + name: handler for name, handler in handlers.items()}

    def audit_action(self, target: str | None) -> tuple[str, bool]:
        """(the audit action, whether it changes state) for an `X-Amz-Target`, before auth.

        Only operation names from the AWS model are recorded; anything else is
        `kms:UnknownOperation`, so a client cannot write what it likes into the audit log.
        """
        if target is None or not target.startswith(TARGET_PREFIX):
            return UNKNOWN_ACTION, False
        name = target[len(TARGET_PREFIX) :]
        if target in self._ops or name in UNSUPPORTED_OPERATIONS:
            return "kms:" + name, name in MUTATING_OPERATIONS
        return UNKNOWN_ACTION, False

    async def handle(self, req: RequestView, principal: Principal) -> Response:
        target = req.headers.get("x-amz-target")
        handler = self._ops.get(target) if target is not None else None
        if handler is None:
            raise _unknown_operation(target)
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
            return await handler(service, params, principal)

    async def _key(self, service: KeyService, ref: str) -> str:
        """The bare key id a reference names (key id, key ARN, alias name, alias ARN)."""
        if ref.startswith("arn:") and not ref.startswith(self._arn_prefix):
            raise KeyNotFound(f"Invalid arn {ref}")
        key_id = await service.resolve(ref)
        if KEY_NAME_RE.fullmatch(key_id) is None:
            # No key can have this id (e.g. `arn:...:key/alias/x`): never hand it on.
            raise KeyNotFound(key_id=key_id)
        return key_id

    def _arn_json(self, service: KeyService, key_id: str) -> bytes:
        return encode_basestring_ascii(service.key_arn(key_id)).encode()

    # -- the hot path: Encrypt, Decrypt, GenerateDataKey ----------------------------------------

    async def encrypt(self, service: KeyService, p: Params, principal: Principal) -> Response:
        ref = _req_str(p, "KeyId")
        plaintext = _blob(p, "Plaintext", 4096)
        context = _context(p, "EncryptionContext")
        _algorithm(p, "EncryptionAlgorithm")
        _grant_tokens(p)
        dry_run = _opt_bool(p, "DryRun")
        key_id = await self._key(service, ref)
        principal.authorize("kms:Encrypt", key_id)
        if dry_run:
            await _dry_run(service, key_id)
        key_id, ciphertext = await service.encrypt(key_id, plaintext, context)
        return Response(
            200,
            b'{"CiphertextBlob":"%s","KeyId":%s,"EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}'
            % (_b64(ciphertext, newline=False), self._arn_json(service, key_id)),
            AWS_JSON,
        )

    async def decrypt(self, service: KeyService, p: Params, principal: Principal) -> Response:
        ciphertext = _blob(p, "CiphertextBlob", 6144)
        context = _context(p, "EncryptionContext")
        ref = _opt_str(p, "KeyId")
        _algorithm(p, "EncryptionAlgorithm")
        _grant_tokens(p)
        _no_recipient(p)
        dry_run = _opt_bool(p, "DryRun")
        if "DryRunModifiers" in p:
            _str_list(p, "DryRunModifiers", allowed=DRY_RUN_MODIFIERS)
        expected = await self._key(service, ref) if ref is not None else None
        # The ciphertext names its key: authorise against that key before decrypting anything.
        key_id = service.ciphertext_key_id(ciphertext)
        principal.authorize("kms:Decrypt", key_id)
        if dry_run:
            await _dry_run(service, key_id)
        decrypted = await service.decrypt(ciphertext, context, expected)
        return Response(
            200,
            b'{"KeyId":%s,"Plaintext":"%s","EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}'
            % (self._arn_json(service, decrypted.key_id), _b64(decrypted.plaintext, newline=False)),
            AWS_JSON,
        )

    async def _data_key(
        self, service: KeyService, p: Params, principal: Principal, action: str
    ) -> tuple[bytes, bytes, bytes]:
        """(ciphertext base64, plaintext base64, key ARN as JSON) for both GenerateDataKey ops."""
        ref = _req_str(p, "KeyId")
        context = _context(p, "EncryptionContext")
        size = _data_key_size(p)
        _grant_tokens(p)
        _no_recipient(p)
        dry_run = _opt_bool(p, "DryRun")
        key_id = await self._key(service, ref)
        principal.authorize(action, key_id)
        if dry_run:
            await _dry_run(service, key_id)
        data_key = await service.generate_data_key(key_id, size, context)
        return (
            _b64(data_key.ciphertext, newline=False),
            _b64(data_key.plaintext, newline=False),
            self._arn_json(service, data_key.key_id),
        )

    async def generate_data_key(
        self, service: KeyService, p: Params, principal: Principal
    ) -> Response:
        ciphertext, plaintext, arn = await self._data_key(
            service, p, principal, "kms:GenerateDataKey"
        )
        return Response(
            200,
            b'{"CiphertextBlob":"%s","Plaintext":"%s","KeyId":%s}' % (ciphertext, plaintext, arn),
            AWS_JSON,
        )

    async def generate_data_key_without_plaintext(
        self, service: KeyService, p: Params, principal: Principal
    ) -> Response:
        ciphertext, _, arn = await self._data_key(
            service, p, principal, "kms:GenerateDataKeyWithoutPlaintext"
        )
        return Response(200, b'{"CiphertextBlob":"%s","KeyId":%s}' % (ciphertext, arn), AWS_JSON)

    async def re_encrypt(self, service: KeyService, p: Params, principal: Principal) -> Response:
        ciphertext = _blob(p, "CiphertextBlob", 6144)
        source_context = _context(p, "SourceEncryptionContext")
        source_ref = _opt_str(p, "SourceKeyId")
        destination_ref = _req_str(p, "DestinationKeyId")
        destination_context = _context(p, "DestinationEncryptionContext")
        _algorithm(p, "SourceEncryptionAlgorithm")
        _algorithm(p, "DestinationEncryptionAlgorithm")
        _grant_tokens(p)
        dry_run = _opt_bool(p, "DryRun")
        _str_list(p, "DryRunModifiers", allowed=DRY_RUN_MODIFIERS)
        expected = await self._key(service, source_ref) if source_ref is not None else None
        destination = await self._key(service, destination_ref)
        principal.authorize("kms:ReEncryptFrom", service.ciphertext_key_id(ciphertext))
        principal.authorize("kms:ReEncryptTo", destination)
        if dry_run:
            await _dry_run(service, destination)
        source_id, destination_id, new_blob = await service.re_encrypt(
            ciphertext, source_context, destination, destination_context, expected
        )
        return _ok(
            {
                "CiphertextBlob": _b64(new_blob, newline=False).decode(),
                "SourceKeyId": service.key_arn(source_id),
                "KeyId": service.key_arn(destination_id),
                "SourceEncryptionAlgorithm": SYMMETRIC_DEFAULT,
                "DestinationEncryptionAlgorithm": SYMMETRIC_DEFAULT,
            }
        )

    async def generate_random(
        self, service: KeyService, p: Params, principal: Principal
    ) -> Response:
        size = _opt_int(p, "NumberOfBytes", 1, 1024)
        if size is None:
            raise ValidationError("NumberOfBytes is required.")
        if _opt_str(p, "CustomKeyStoreId", 1, 64) is not None:
            raise UnsupportedOperation("custom key stores are not supported")
        _no_recipient(p)
        principal.authorize("kms:GenerateRandom")
        return Response(
            200, b'{"Plaintext":"%s"}' % _b64(os.urandom(size), newline=False), AWS_JSON
        )

    # -- keys -----------------------------------------------------------------------------------

    async def create_key(self, service: KeyService, p: Params, principal: Principal) -> Response:
        description = _opt_str(p, "Description", 0, 8192) or ""
        usage = _enum(p, "KeyUsage", KEY_USAGES)
        cmk_spec = _enum(p, "CustomerMasterKeySpec", CUSTOMER_MASTER_KEY_SPECS)
        key_spec = _enum(p, "KeySpec", KEY_SPECS)
        origin = _enum(p, "Origin", ORIGINS)
        _opt_str(p, "Policy", 1, 131072)  # accepted, not enforced: access is s3kms's policies
        custom_store = _opt_str(p, "CustomKeyStoreId", 1, 64)
        xks_key = _opt_str(p, "XksKeyId", 1, 128)
        _opt_bool(p, "BypassPolicyLockoutSafetyCheck")
        multi_region = _opt_bool(p, "MultiRegion")
        tags = _tags(p, required=False)
        if usage not in (None, "ENCRYPT_DECRYPT"):
            raise UnsupportedOperation(
                f"KeyUsage {usage} is not supported: s3kms keys are ENCRYPT_DECRYPT"
            )
        for name, spec in (("KeySpec", key_spec), ("CustomerMasterKeySpec", cmk_spec)):
            if spec not in (None, SYMMETRIC_DEFAULT):
                raise UnsupportedOperation(
                    f"{name} {spec} is not supported: s3kms keys are {SYMMETRIC_DEFAULT}"
                )
        if origin not in (None, "AWS_KMS"):
            raise UnsupportedOperation(f"Origin {origin} is not supported: only AWS_KMS")
        if custom_store is not None or xks_key is not None:
            raise UnsupportedOperation("custom key stores are not supported")
        if multi_region:
            raise UnsupportedOperation("multi-Region keys are not supported")
        principal.authorize("kms:CreateKey")
        meta = await service.create_key(description=description, tags=tags)
        return _ok({"KeyMetadata": _key_metadata(service, meta)})

    async def describe_key(self, service: KeyService, p: Params, principal: Principal) -> Response:
        ref = _req_str(p, "KeyId")
        _grant_tokens(p)
        key_id = await self._key(service, ref)
        principal.authorize("kms:DescribeKey", key_id)
        return _ok({"KeyMetadata": _key_metadata(service, await service.describe(key_id))})

    async def list_keys(self, service: KeyService, p: Params, principal: Principal) -> Response:
        limit = _limit(p, 100, 1000)
        after = _after(p, "key")
        if "ResourceOwners" in p:  # accepted: every key is the caller's own
            _str_list(p, "ResourceOwners", lo=1, hi=2, allowed=RESOURCE_OWNERS)
        principal.authorize("kms:ListKeys")
        # One page from the keystore (plus one key, to know whether there are more).
        batch = await service.list_keys(after=after, limit=limit + 1)
        keys = [{"KeyId": m.key_id, "KeyArn": service.key_arn(m.key_id)} for m in batch[:limit]]
        out: dict[str, Any] = {"Keys": keys, "Truncated": len(batch) > limit}
        if len(batch) > limit:
            out["NextMarker"] = _marker("key", batch[limit - 1].key_id)
        return _ok(out)

    async def enable_key(self, service: KeyService, p: Params, principal: Principal) -> Response:
        key_id = await self._key(service, _req_str(p, "KeyId"))
        principal.authorize("kms:EnableKey", key_id)
        await service.enable(key_id)
        return _empty()

    async def disable_key(self, service: KeyService, p: Params, principal: Principal) -> Response:
        key_id = await self._key(service, _req_str(p, "KeyId"))
        principal.authorize("kms:DisableKey", key_id)
        await service.disable(key_id)
        return _empty()

    async def schedule_key_deletion(
        self, service: KeyService, p: Params, principal: Principal
    ) -> Response:
        ref = _req_str(p, "KeyId")
        days = p.get("PendingWindowInDays")
        if days is not None and type(days) is not int:
            raise _wrong_type("PendingWindowInDays", "an integer")
        key_id = await self._key(service, ref)
        principal.authorize("kms:ScheduleKeyDeletion", key_id)
        # The 7-30 range is the service's, with AWS's own message for it.
        meta = await (
            service.schedule_deletion(key_id)
            if days is None
            else service.schedule_deletion(key_id, days)
        )
        return _ok(
            {
                "KeyId": service.key_arn(meta.key_id),
                "DeletionDate": meta.deletion_date,
                "KeyState": meta.state.value,
                "PendingWindowInDays": meta.pending_window_days,
            }
        )

    async def cancel_key_deletion(
        self, service: KeyService, p: Params, principal: Principal
    ) -> Response:
        key_id = await self._key(service, _req_str(p, "KeyId"))
        principal.authorize("kms:CancelKeyDeletion", key_id)
        meta = await service.cancel_deletion(key_id)
        return _ok({"KeyId": service.key_arn(meta.key_id)})

    async def update_key_description(
        self, service: KeyService, p: Params, principal: Principal
    ) -> Response:
        ref = _req_str(p, "KeyId")
        description = _req_str(p, "Description", 0, 8192)
        key_id = await self._key(service, ref)
        principal.authorize("kms:UpdateKeyDescription", key_id)
        await service.update_description(key_id, description)
        return _empty()

    # -- rotation -------------------------------------------------------------------------------

    async def enable_key_rotation(
        self, service: KeyService, p: Params, principal: Principal
    ) -> Response:
        ref = _req_str(p, "KeyId")
        period = _opt_int(p, "RotationPeriodInDays", 90, 2560)
        key_id = await self._key(service, ref)
        principal.authorize("kms:EnableKeyRotation", key_id)
        await service.set_rotation(key_id, True, period)
        return _empty()

    async def disable_key_rotation(
        self, service: KeyService, p: Params, principal: Principal
    ) -> Response:
        key_id = await self._key(service, _req_str(p, "KeyId"))
        principal.authorize("kms:DisableKeyRotation", key_id)
        await service.set_rotation(key_id, False)
        return _empty()

    async def get_key_rotation_status(
        self, service: KeyService, p: Params, principal: Principal
    ) -> Response:
        key_id = await self._key(service, _req_str(p, "KeyId"))
        principal.authorize("kms:GetKeyRotationStatus", key_id)
        meta = await service.describe(key_id)
        out: dict[str, Any] = {
            "KeyRotationEnabled": meta.rotation_enabled,
            "KeyId": service.key_arn(meta.key_id),
        }
        if meta.rotation_enabled:
            out["RotationPeriodInDays"] = meta.rotation_period_days
            if meta.next_rotation is not None:
                out["NextRotationDate"] = meta.next_rotation
        return _ok(out)

    async def rotate_key_on_demand(
        self, service: KeyService, p: Params, principal: Principal
    ) -> Response:
        key_id = await self._key(service, _req_str(p, "KeyId"))
        principal.authorize("kms:RotateKeyOnDemand", key_id)
        meta = await service.rotate(key_id, RotationType.ON_DEMAND)
        return _ok({"KeyId": service.key_arn(meta.key_id)})

    async def list_key_rotations(
        self, service: KeyService, p: Params, principal: Principal
    ) -> Response:
        ref = _req_str(p, "KeyId")
        _enum(p, "IncludeKeyMaterial", INCLUDE_KEY_MATERIAL)
        limit = _limit(p, 100, 1000)
        after = _after(p, "rotation")
        key_id = await self._key(service, ref)
        principal.authorize("kms:ListKeyRotations", key_id)
        # Version 1 is the key's first material, not a rotation.
        rotations = [v for v in await service.versions(key_id) if v.version > 1]
        page, more = _page(rotations, lambda v: f"{v.version:010d}", after, limit, "rotation")
        items = [
            {
                "KeyId": key_id,
                "RotationDate": v.created_at,
                "RotationType": (v.rotation_type or RotationType.ON_DEMAND).value,
            }
            for v in page
        ]
        return _ok({"Rotations": items, **more})

    # -- aliases --------------------------------------------------------------------------------

    async def _alias_target(self, service: KeyService, p: Params) -> str:
        ref = _req_str(p, "TargetKeyId")
        if ref.startswith("alias/") or (ref.startswith("arn:") and ":alias/" in ref):
            raise ValidationError("Aliases must refer to keys. Not aliases")
        return await self._key(service, ref)

    async def create_alias(self, service: KeyService, p: Params, principal: Principal) -> Response:
        name = _alias_name(p)
        if name.startswith("alias/aws/"):
            raise ReservedName(f"{name}: the alias/aws/ prefix is reserved for AWS managed keys")
        key_id = await self._alias_target(service, p)
        # AWS's rule for alias actions: permission on the alias and on every key it touches.
        principal.authorize_alias("kms:CreateAlias", name)
        principal.authorize("kms:CreateAlias", key_id)
        try:
            await service.create_alias(name, key_id)
        except KeyAlreadyExists:
            raise KeyAlreadyExists(
                f"An alias with the name {service.alias_arn(name)} already exists"
            ) from None
        return _empty()

    async def update_alias(self, service: KeyService, p: Params, principal: Principal) -> Response:
        name = _alias_name(p)
        key_id = await self._alias_target(service, p)
        current = await service.resolve(name)  # AliasNotFound when there is no such alias
        principal.authorize_alias("kms:UpdateAlias", name)
        principal.authorize("kms:UpdateAlias", current)  # the key the alias leaves
        principal.authorize("kms:UpdateAlias", key_id)  # and the key it moves to
        await service.update_alias(name, key_id, expected_key_id=current)
        return _empty()

    async def delete_alias(self, service: KeyService, p: Params, principal: Principal) -> Response:
        name = _alias_name(p)
        key_id = await service.resolve(name)  # AliasNotFound when there is no such alias
        principal.authorize_alias("kms:DeleteAlias", name)
        principal.authorize("kms:DeleteAlias", key_id)
        await service.delete_alias(name)
        return _empty()

    async def list_aliases(self, service: KeyService, p: Params, principal: Principal) -> Response:
        ref = _opt_str(p, "KeyId")
        limit = _limit(p, 50, 100)
        after = _after(p, "alias")
        key_id = await self._key(service, ref) if ref is not None else None
        principal.authorize("kms:ListAliases", key_id)
        found = sorted(await service.aliases(key_id), key=lambda a: a.name)
        page, more = _page(found, lambda a: a.name, after, limit, "alias")
        items = [
            {
                "AliasName": a.name,
                "AliasArn": service.alias_arn(a.name),
                "TargetKeyId": a.key_id,
                "CreationDate": a.created_at,
            }
            for a in page
        ]
        return _ok({"Aliases": items, **more})

    # -- tags -----------------------------------------------------------------------------------

    async def tag_resource(self, service: KeyService, p: Params, principal: Principal) -> Response:
        ref = _req_str(p, "KeyId")
        tags = _tags(p, required=True)
        key_id = await self._key(service, ref)
        principal.authorize("kms:TagResource", key_id)
        await service.tag(key_id, dict(tags))
        return _empty()

    async def untag_resource(
        self, service: KeyService, p: Params, principal: Principal
    ) -> Response:
        ref = _req_str(p, "KeyId")
        tag_keys = _str_list(p, "TagKeys", item_hi=128, required=True)
        key_id = await self._key(service, ref)
        principal.authorize("kms:UntagResource", key_id)
        await service.untag(key_id, tag_keys)
        return _empty()

    async def list_resource_tags(
        self, service: KeyService, p: Params, principal: Principal
    ) -> Response:
        ref = _req_str(p, "KeyId")
        limit = _limit(p, 50, 50)
        after = _after(p, "tag")
        key_id = await self._key(service, ref)
        principal.authorize("kms:ListResourceTags", key_id)
        meta = await service.describe(key_id)
        page, more = _page(sorted(meta.tags), lambda t: t[0], after, limit, "tag")
        return _ok({"Tags": [{"TagKey": k, "TagValue": v} for k, v in page], **more})


async def _dry_run(service: KeyService, key_id: str) -> None:
    """DryRun: the request was valid and authorised; say whether the key could serve it."""
    check_usable(await service.describe(key_id))
    raise DryRunOperation


def _unknown_operation(target: str | None) -> KMSError:
    if target is None:
        return RouteNotFound("Missing X-Amz-Target header: no operation named")
    name = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else None
    if name in UNSUPPORTED_OPERATIONS:
        return UnsupportedOperation(f"{name} is not supported by s3kms")
    return RouteNotFound(f"Unknown operation {target}")
