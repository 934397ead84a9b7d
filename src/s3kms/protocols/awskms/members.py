"""The AWS model's member checks: types, lengths, ranges, enums, patterns.

The body is parsed once, with no schema library; every member is checked against the AWS model's
constraints (botocore checks only required members and minimums on the client side). A wrong JSON
type is a `SerializationException` (`<Member> must be <type>`); a broken constraint is reported
with the AWS template, `1 validation error detected: Value '<v>' at '<member>' failed to satisfy
constraint: Member must ...`, the member named in camelCase (`keyId`, `tags.1.member.tagKey`) and
blob values left out.

The enum value sets below are the AWS model's, in its order (the validation message lists them);
which values s3kms serves is each operation's business, not this module's.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Sequence
from typing import Any

from s3kms.errors import SerializationError, TagError, ValidationError

Params = dict[str, Any]

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
SIGNING_ALGORITHMS = (
    "RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512", "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512", "ECDSA_SHA_256", "ECDSA_SHA_384",
    "ECDSA_SHA_512", "SM2DSA", "ML_DSA_SHAKE_256", "ED25519_SHA_512", "ED25519_PH_SHA_512",
)  # fmt: skip
MESSAGE_TYPES = ("RAW", "DIGEST", "EXTERNAL_MU")
MAC_ALGORITHMS = ("HMAC_SHA_224", "HMAC_SHA_256", "HMAC_SHA_384", "HMAC_SHA_512")
KEY_AGREEMENT_ALGORITHMS = ("ECDH",)
ENCAPSULATION_ALGORITHMS = ("ML_KEM",)
DATA_KEY_PAIR_SPECS = (
    "RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521",
    "ECC_SECG_P256K1", "SM2", "ECC_NIST_EDWARDS25519", "ML_KEM_512", "ML_KEM_768", "ML_KEM_1024",
)  # fmt: skip
INCLUDE_KEY_MATERIAL = ("ALL_KEY_MATERIAL", "ROTATIONS_ONLY")
DRY_RUN_MODIFIERS = ("IGNORE_CIPHERTEXT",)
RESOURCE_OWNERS = ("SELF", "OTHER_ACCOUNTS_VIA_RAM")

# An encryption context travels in every ciphertext's AAD and in audit trails: keep it small.
MAX_CONTEXT_BYTES = 8192

# The model's patterns, used with fullmatch (so `$` does not let a trailing newline through).
_ALIAS_NAME_RE = re.compile(r"^[a-zA-Z0-9:/_-]+$")
_ALIAS_PREFIX_MESSAGE = (
    'Alias must start with the prefix "alias/". Please see '
    "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"
)


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def violation(member: str, rule: str, shown: str | None) -> ValidationError:
    """`shown` is the value as AWS prints it (`'x'`, `null`), or None for a blob (left out)."""
    where = f"Value at '{member}'" if shown is None else f"Value {shown} at '{member}'"
    return ValidationError(
        f"1 validation error detected: {where} failed to satisfy constraint: Member must {rule}"
    )


def wrong_type(name: str, expected: str) -> SerializationError:
    return SerializationError(f"{name} must be {expected}")


def _check_length(value: str, member: str, lo: int, hi: int) -> str:
    n = len(value)
    if n < lo:
        raise violation(member, f"have length greater than or equal to {lo}", f"'{value}'")
    if n > hi:
        raise violation(member, f"have length less than or equal to {hi}", f"'{value}'")
    return value


def opt_str(p: Params, name: str, lo: int = 1, hi: int = 2048) -> str | None:
    value = p.get(name)
    if value is None:
        return None
    if type(value) is not str:
        raise wrong_type(name, "a string")
    return _check_length(value, _camel(name), lo, hi)


def req_str(p: Params, name: str, lo: int = 1, hi: int = 2048) -> str:
    value = opt_str(p, name, lo, hi)
    if value is None:
        raise violation(_camel(name), "not be null", "null")
    return value


def opt_int(p: Params, name: str, lo: int, hi: int) -> int | None:
    value = p.get(name)
    if value is None:
        return None
    if type(value) is not int:
        raise wrong_type(name, "an integer")
    if value < lo:
        raise violation(_camel(name), f"have value greater than or equal to {lo}", f"'{value}'")
    if value > hi:
        raise violation(_camel(name), f"have value less than or equal to {hi}", f"'{value}'")
    return value


def opt_bool(p: Params, name: str) -> bool:
    value = p.get(name)
    if value is None:
        return False
    if type(value) is not bool:
        raise wrong_type(name, "a boolean")
    return value


def enum(p: Params, name: str, allowed: Sequence[str]) -> str | None:
    value = p.get(name)
    if value is None:
        return None
    if type(value) is not str:
        raise wrong_type(name, "a string")
    if value not in allowed:
        rule = f"satisfy enum value set: [{', '.join(allowed)}]"
        raise violation(_camel(name), rule, f"'{value}'")
    return value


def req_enum(p: Params, name: str, allowed: Sequence[str]) -> str:
    value = enum(p, name, allowed)
    if value is None:
        raise violation(_camel(name), "not be null", "null")
    return value


def blob(p: Params, name: str, hi: int) -> bytes:
    """A required base64 blob of 1..hi bytes."""
    value = p.get(name)
    if value is None:
        raise violation(_camel(name), "not be null", "null")
    if type(value) is not str:
        raise wrong_type(name, "a base64 string")
    try:
        data = binascii.a2b_base64(value, strict_mode=True)
    except ValueError:
        raise SerializationError(f"{name} is not valid base64") from None
    n = len(data)
    if n == 0:
        raise violation(_camel(name), "have length greater than or equal to 1", None)
    if n > hi:
        raise violation(_camel(name), f"have length less than or equal to {hi}", None)
    return data


def context(p: Params, name: str) -> dict[str, str] | None:
    """An encryption context: a map of strings to strings, at most MAX_CONTEXT_BYTES of them."""
    value = p.get(name)
    if value is None:
        return None
    if type(value) is not dict:
        raise wrong_type(name, "a map of strings to strings")
    size = 0
    for key, item in value.items():
        if type(item) is not str:
            raise wrong_type(name, "a map of strings to strings")
        size += len(key) + len(item)  # characters; the bytes are checked below when near
    if size > MAX_CONTEXT_BYTES // 4 and (
        sum(len(k.encode()) + len(v.encode()) for k, v in value.items()) > MAX_CONTEXT_BYTES
    ):
        raise ValidationError(
            f"{name} is too large: its keys and values may hold at most "
            f"{MAX_CONTEXT_BYTES} bytes (UTF-8)"
        )
    return value


def str_list(
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
            raise violation(member, "not be null", "null")
        return []
    if type(value) is not list or any(type(v) is not str for v in value):
        raise wrong_type(name, "a list of strings")
    shown = f"'[{', '.join(value)}]'"
    if len(value) < lo:
        raise violation(member, f"have length greater than or equal to {lo}", shown)
    if hi is not None and len(value) > hi:
        raise violation(member, f"have length less than or equal to {hi}", shown)
    for i, item in enumerate(value, 1):
        if allowed is not None and item not in allowed:
            rule = f"satisfy enum value set: [{', '.join(allowed)}]"
            raise violation(f"{member}.{i}.member", rule, f"'{item}'")
        _check_length(item, f"{member}.{i}.member", item_lo, item_hi)
    return value


def grant_tokens(p: Params) -> tuple[str, ...]:
    """`GrantTokens`: at most 10, each 1-8192 characters (the model's GrantTokenList). A token
    is opaque here; the evaluator counts the grant it names, even before the key's metadata
    shows it (AWS: "use a grant token ... before the grant achieves eventual consistency")."""
    if "GrantTokens" not in p:
        return ()
    return tuple(str_list(p, "GrantTokens", hi=10, item_hi=8192))


def tags(p: Params, required: bool) -> list[tuple[str, str]]:
    """`Tags` as sorted (key, value) pairs, the last value of a repeated key winning."""
    value = p.get("Tags")
    if value is None:
        if required:
            raise violation("tags", "not be null", "null")
        return []
    if type(value) is not list:
        raise wrong_type("Tags", "a list of tags")
    found: dict[str, str] = {}
    for i, tag in enumerate(value, 1):
        if type(tag) is not dict:
            raise wrong_type("Tags", "a list of tags")
        key = _tag_part(tag, "TagKey", i, 1, 128)
        found[key] = _tag_part(tag, "TagValue", i, 0, 256)
    if any(k.lower().startswith("aws:") for k in found):
        raise TagError("Tags beginning with aws: are reserved")
    return sorted(found.items())


def _tag_part(tag: Params, name: str, i: int, lo: int, hi: int) -> str:
    value = tag.get(name)
    member = f"tags.{i}.member.{_camel(name)}"
    if value is None:
        raise violation(member, "not be null", "null")
    if type(value) is not str:
        raise wrong_type("Tags", "a list of tags")
    return _check_length(value, member, lo, hi)


def alias_name(p: Params) -> str:
    name = req_str(p, "AliasName", 1, 256)
    if _ALIAS_NAME_RE.fullmatch(name) is None:
        rule = f"satisfy regular expression pattern: {_ALIAS_NAME_RE.pattern}"
        raise violation("aliasName", rule, f"'{name}'")
    if not name.startswith("alias/") or len(name) == len("alias/"):
        raise ValidationError(_ALIAS_PREFIX_MESSAGE)
    return name


def limit(p: Params, default: int, cap: int) -> int:
    """`Limit` (1..1000 in the model), `default` when absent, at most the operation's `cap`."""
    value = opt_int(p, "Limit", 1, 1000)
    return default if value is None else min(value, cap)
