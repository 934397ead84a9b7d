"""The Vault keystore: key material in Vault/OpenBao transit, key metadata in Vault KV version 2.

Every KMS node is stateless: a key's state lives only in Vault. The crypto path uses a key's
metadata as this node read it at most `metadata_cache_seconds` (default 1 s) ago (cache.py), so
a key disabled through one node is refused by that node at once and by every other node within
that window; 0 makes every request read it. The layout:

    <mount_path>/keys/<key_id>                      transit key (never exportable, but a KMIP
                                                    object's) of the type TRANSIT_TYPES gives
                                                    for the key spec (exports.KMIP_TRANSIT_TYPES
                                                    for the KMIP-only AES_128)
    <kv_mount>/data/<kv_prefix>/keys/<key_id>       KeyMetadata + rotation history, with the key
                                                    policy ("policy": the text as given, or null
                                                    for the default one), the grants ("grants":
                                                    keystore/codec.py's list as one JSON string),
                                                    the versions ("versions": one JSON string,
                                                    _dump_versions), the origin ("origin") and an
                                                    EXTERNAL key's imported materials
                                                    ("materials": codec.py's list as one JSON
                                                    string); a record without policy and grants
                                                    (older) has the default policy and no grants,
                                                    one without origin and materials (older) is
                                                    AWS_KMS with none, one whose versions are a
                                                    list (older) is read, and converted by its
                                                    next write; a KMIP object's has "kmip", its
                                                    KMIP record's text, and "lookup", its lookup
                                                    terms (one JSON string; no other record has
                                                    either)
    <kv_mount>/data/<kv_prefix>/lookup/<term>/<id>  the lookup index: one entry ({"format": 1})
                                                    per term of a key's `lookup` (KMIP: hashes
                                                    of its owner and Names), which find_keys
                                                    LISTs; written apart from the record, in an
                                                    order that never misses a key holding the
                                                    term (see `_write_indexed`)
    <kv_mount>/data/<kv_prefix>/material/<bare id>  a KV-held KMIP object's material (the specs
                                                    transit has no key type for, SEALED_SPECS):
                                                    each version sealed under the material key
    <mount_path>/keys/<exports.MATERIAL_KEY>        the material key, made on first use, longer
                                                    than any key id too
    <mount_path>/keys/<imports.SEALING_KEY>         the sealing key (seal, unseal), made on first
                                                    use; its name is longer than any key id
    <kv_mount>/data/<kv_prefix>/aliases/<name>      an alias ("alias/" stripped from the name)

Transit key names are the bare key ids: two deployments that must not share keys need separate
transit mounts (kv_prefix separates only the metadata). A key of another region than the home one
has a region-qualified id (`~<region>~<id>`, keystore/regional.py) for its KV paths and the bare
id for its transit key, so a multi-Region key's replicas share the primary's transit key (its
material and rotations); the record's `multi_region` names its primary and replica regions, and
deleting one region's key keeps the transit key while another region holds it.

`KeyMetadata.revision` is the KV version of the key's record, and every metadata write is a KV
check-and-set on it, so concurrent writers on different nodes cannot lose each other's updates.
A key exists when its KV record exists: a transit key without a record (a create that failed half
way) is invisible, and the next create of that id completes it. Policies and grants live in the
key's record, so they are written by the same check-and-set and reach the other nodes' crypto path
within the metadata cache window; `forget` drops this node's cached copy at once (a request that
names a grant by its token, before the window has passed). A record is at most MAX_RECORD_BYTES
and its write at most MAX_REQUEST_STRINGS JSON strings (see there).

Encrypt and decrypt take the metadata from the cache, or read it concurrently with the transit call
(one round trip of latency), and run the caller's state check before anything is returned; their
transit calls go through batch.py, which sends concurrent ones for one key as one `batch_input`
call. Encrypt never creates a transit key: connect() sets the mount's `disable_upsert`, and where
it may not, encrypt reads the metadata first and calls transit only for a key that exists.

An EXTERNAL key (imported material, BYOK) has no transit key until `set_material` imports its
first material as transit version 1 (`keys/<key_id>/import`); a later material becomes the next
transit version (`import_version`), so KMS versions and transit versions are the same numbers.
Its record's `versions` lists each version transit received material for (dated at its import,
or at the RotateKeyOnDemand that made it current); `list_versions` shows those whose material
the record names as imported. Transit cannot destroy one version of a key: destroying the
material of a key whose transit key holds one version deletes the transit key (after the record
stopped naming it; importing the same material again brings every ciphertext back), and with
more versions it is refused (UnsupportedOperation). While a new material waits for its rotation
(transit's latest version is above the key's current one), encrypt names the current version
(`key_version`). See imports.py for the wrapping and the sealing key.

The other key specs transit holds (RSA, ECDSA P-256/384/521, Ed25519, HMAC) work the same way:
sign, hmac and RSA decrypt run concurrently with the metadata read, the public key comes from
`GET keys/<key_id>` (PEM, or raw Ed25519 bytes) as DER SubjectPublicKeyInfo, and the output is
AWS's byte for byte (the transit parameters are in `_sign_body`, `generate_mac`,
`decrypt_asymmetric`; a signature verifies offline with the public key, an RSA ciphertext made
offline decrypts). What transit cannot compute is in `UNSUPPORTED_ALGORITHMS`; the specs it cannot
hold at all are missing from TRANSIT_TYPES (see docs/vault.md for the matrix).

A KMIP object (`meta.kmip`; exports.py) has material that `export_material` releases (KMIP Get):
its transit key is made, or its material imported, with `exportable: true` (an HMAC_224 one is
made of 28 bytes by s3kms and imported, so that it is released as it is on Local), and transit's
`export` gives it back; where transit has no key type for its spec, the material is a KV entry of
its own, sealed by transit (`_put_sealed`), written before the record names it and deleted with
the key. Any other key's transit key stays non-exportable, and `export_material` refuses a key
whose record has no `kmip`, whatever transit would answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from s3kms.crypto import keyspecs
from s3kms.errors import (
    AliasNotFound,
    BackendUnavailable,
    InternalError,
    InvalidCiphertext,
    InvalidRequest,
    KeyAlreadyExists,
    KeyInvalidState,
    KeyNotFound,
    KMSError,
    LimitExceeded,
    UnsupportedOperation,
)
from s3kms.keystore.base import BackendStatus, RotationDue, StateCheck, WriteConflict
from s3kms.keystore.codec import (
    GrantsMemo,
    dump_grants,
    dump_materials,
    load_grants,
    load_materials,
)
from s3kms.keystore.regional import material_name
from s3kms.keystore.vault import exports, imports
from s3kms.keystore.vault.auth import VaultAuth
from s3kms.keystore.vault.batch import TransitBatcher
from s3kms.keystore.vault.cache import MetadataCache
from s3kms.keystore.vault.kv import KVStore, Record
from s3kms.keystore.vault.settings import VaultSettings
from s3kms.keystore.vault.transport import OutcomeUnknown, VaultResponse, VaultTransport
from s3kms.model import (
    ORIGIN_AWS_KMS,
    Alias,
    Grant,
    KeyMaterial,
    KeyMetadata,
    KeyState,
    KeyVersion,
    LastUse,
    RotationType,
)

log = logging.getLogger("s3kms.keystore.vault")

T = TypeVar("T")

KEY_TYPE = "aes256-gcm96"
# The transit key type of every key spec this backend holds (OpenBao/Vault transit key types).
TRANSIT_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "SYMMETRIC_DEFAULT": KEY_TYPE,
        "RSA_2048": "rsa-2048", "RSA_3072": "rsa-3072", "RSA_4096": "rsa-4096",
        "ECC_NIST_P256": "ecdsa-p256", "ECC_NIST_P384": "ecdsa-p384",
        "ECC_NIST_P521": "ecdsa-p521",
        "ECC_NIST_EDWARDS25519": "ed25519",
        "HMAC_224": "hmac", "HMAC_256": "hmac", "HMAC_384": "hmac", "HMAC_512": "hmac",
    }
)  # fmt: skip
# The specs of which KMIP objects are held (KeyStore.kmip_specs): every transit key type, as an
# exportable transit key (exports.py), AES_128 too, and the KMIP-only specs transit has no key
# type for (AES_192, Secret Data, Opaque Objects, ...), sealed in KV (exports.sealed_spec).
SEALED_SPECS = exports.sealed_specs()
KMIP_SPECS = frozenset(TRANSIT_TYPES) | frozenset(exports.KMIP_TRANSIT_TYPES) | SEALED_SPECS
# Transit's smallest HMAC key (bytes): an HMAC_224 key is 32 bytes instead of AWS's 28. The MAC
# is HMAC-SHA-224 all the same (any key up to the 64-byte block is padded alike); the key's length
# is never visible, as the key never leaves transit. (An HMAC_224 KMIP object, whose material is
# released, is made of 28 bytes by s3kms and imported padded: see `_create_transit_key`.)
_HMAC_MIN_KEY_BYTES = 32
# Algorithms of those specs that transit cannot compute (the service refuses them).
UNSUPPORTED_ALGORITHMS: Mapping[str, str] = MappingProxyType(
    {
        "RSAES_OAEP_SHA_1": (
            "RSAES_OAEP_SHA_1 is not supported by the vault backend: transit decrypts RSA OAEP "
            "with SHA-256 only; use RSAES_OAEP_SHA_256"
        ),
        "ECDH": "ECDH is not supported by the vault backend: transit has no key agreement",
    }
)
# Transit's answer to an RSA ciphertext that does not open: a 500, which is no outage.
_RSA_DECRYPT_FAILED = ("failed to RSA decrypt",)
# Transit refuses an import's input with a 500 too (OpenBao 2.7, path_import.go, keysutil): not
# an outage, and not worth another try. "existing key": a concurrent import made the key first.
_IMPORT_EXISTS = "cannot be used with an existing key"
_IMPORT_REFUSED = (
    _IMPORT_EXISTS,
    "error importing key",
    "invalid key size",
    "error parsing",
    "kwp:",
    "crypto/rsa",
    "does not match",
    "can only be used with an imported key",
    "no key found",
)
# Asymmetric and HMAC keys never rotate (the service refuses it): their transit version is 1,
# so their operations name it without waiting for the metadata (see `_key_operation`).
_FIRST_VERSION = 1
RECORD_FORMAT = 1
_ALIAS_PREFIX = "alias/"
_READ_CONCURRENCY = 16
_CAS_RETRIES = 20
# The largest key record s3kms writes (its compact JSON), so that it fits in one storage entry of
# Vault's integrated (raft) storage, whose `max_entry_size` is 1 MiB (1,048,576 bytes) by default;
# the rest of the entry is KV v2's version wrapper and the barrier's encryption (measured on
# OpenBao 2.x raft: 1,040,000 bytes of value are stored, 1,100,000 refused "value being too
# large"). A record grows with its grants (~410 bytes each, escaped as one string) and its key
# policy (at most 32 KiB): about 2,400 grants fit. A write over it is refused with
# LimitExceeded before anything is sent.
MAX_RECORD_BYTES = 1_000_000
# The most strings (object keys and string values, each occurrence counted) Vault accepts in one
# JSON request body: OpenBao's `max_request_json_strings`, 1,000 by default since 2.4.1
# (CVE-2025-6203), which refuses more with 400 "refused JSON input due to high complexity:
# exceeded maximum number of strings" (measured on OpenBao 2.7.2: exactly 1,000 pass, 1,001 are
# refused; numbers, booleans and nulls do not count). HashiCorp Vault has no such count (its
# `max_json_*` listener limits bound depth, lengths and entries). A key's write holds:
#   5   KV v2's wrapper: "options", "cas", "data", and kv.py's "write_id" with its value;
#   20  the record's keys (_meta_to_record);
#   11  its string values: key_id, state, description, key_spec, key_usage, policy, grants,
#       versions, origin, materials and multi_region (grants, versions, materials and a
#       multi-Region key's regions are one string each, however many there are; a
#       single-Region key's multi_region is null: no string);
#   2   per tag (a [key, value] pair);
#   2   a KMIP object's "kmip" and its text (one string, however many attributes; the field is
#       absent from any other key's record);
#   2   a KMIP object's "lookup" and its terms (one string, however many terms; absent from a
#       record without terms). A KMIP object is never multi-Region (a null multi_region): at
#       most 39 + 2 per tag, 480 tags.
# So 36 + 2 per tag: 136 with AWS's 50 tags per key. Nothing else in the record grows, so a
# rotation or an import never adds a string, and at most 482 tags fit; a create or update over
# the limit is refused with LimitExceeded before anything is sent. (Versions as a list of objects, as the
# previous release wrote them, took 4 strings each: its record held at most (976 - 2 x tags) / 4
# versions, 243 with 2 tags, and every rotation after that failed once transit had rotated.)
MAX_REQUEST_STRINGS = 1_000
_KV_WRITE_STRINGS = 5
# A lookup term (KeyMetadata.lookup, e.g. `kmip-name:<40 hex>`): one path segment of the index
# `<prefix>/lookup/<term>/<key id>`, so no "/" and no "." (never "..").
MAX_TERM_LENGTH = 128
LOOKUP_TERM = re.compile(rf"[0-9a-z:-]{{1,{MAX_TERM_LENGTH}}}")
# An index entry's value: the path says everything (term and key id), so the value is a
# constant, the same for every entry (KV v2 needs one).
_LOOKUP_ENTRY: Mapping[str, Any] = MappingProxyType({"format": 1})


@dataclass(frozen=True, slots=True)
class _OwnKey:
    """One of s3kms's own transit keys: no KMS key's, made on first use (`_own_key`)."""

    name: str
    key_type: str
    label: str


_SEALING = _OwnKey(imports.SEALING_KEY, imports.SEALING_TYPE, "the transit sealing key")
_MATERIAL = _OwnKey(exports.MATERIAL_KEY, exports.MATERIAL_TYPE, "the transit material key")


def _transit_type(spec: str) -> str | None:
    """The transit key type of a key spec (a KMIP-only one included), or None: none."""
    return TRANSIT_TYPES.get(spec) or exports.KMIP_TRANSIT_TYPES.get(spec)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _meta_to_record(
    meta: KeyMetadata, versions: Sequence[KeyVersion], grants: str | None = None
) -> dict[str, Any]:
    """The KV record of `meta`; `grants`: its grants' text when known (GrantsMemo.dump)."""
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "key_id": meta.key_id,
        "state": meta.state.value,
        "created_at": meta.created_at,
        "description": meta.description,
        "current_version": meta.current_version,
        "deletion_date": meta.deletion_date,
        "pending_window_days": meta.pending_window_days,
        "rotation_enabled": meta.rotation_enabled,
        "rotation_period_days": meta.rotation_period_days,
        "next_rotation": meta.next_rotation,
        "tags": [[k, v] for k, v in meta.tags],
        "key_spec": meta.key_spec,
        "key_usage": meta.key_usage,
        "policy": meta.policy,
        # One string (codec.py's JSON list), not a JSON list: Vault and OpenBao refuse a request
        # body of more than `max_request_json_strings` strings (keys and values; 1,000 by default
        # since OpenBao 2.4.1 and its Vault twin, CVE-2025-6203), which 60 grants as objects
        # would pass; as one string, a record of any number of grants counts two.
        "grants": dump_grants(meta.grants) if grants is None else grants,
        # One string too, for the same reason: as a list of objects (the previous release)
        # each version took four strings, and the 243rd could not be recorded.
        "versions": _dump_versions(versions),
        "origin": meta.origin,
        # An EXTERNAL key's imported materials: one string as well (codec.py's JSON list).
        "materials": dump_materials(meta.materials),
        # A multi-Region key's regions, one string too (null: a single-Region key).
        "multi_region": _dump_regions(meta),
    }
    if meta.kmip is not None:
        # A KMIP object's record (protocols/kmip/record.py's JSON text, as given): one string.
        # Only a KMIP object's record has the field, so any other key's record is what it was
        # (its strings too: MAX_REQUEST_STRINGS).
        record["kmip"] = meta.kmip
    if meta.lookup:
        # Its lookup terms (KeyMetadata.lookup, indexed under `<prefix>/lookup/`): one string,
        # a JSON list, however many terms; like "kmip", absent from any other key's record.
        record["lookup"] = _dump_lookup(meta)
    return record


def _dump_lookup(meta: KeyMetadata) -> str:
    """The lookup terms as one compact JSON list; InvalidRequest for a term that is no path
    segment of the index (LOOKUP_TERM)."""
    for term in meta.lookup:
        if not isinstance(term, str) or not LOOKUP_TERM.fullmatch(term):
            raise InvalidRequest(
                f"Key {meta.key_id}: lookup term {term!r} is not 1 to {MAX_TERM_LENGTH} "
                "characters of [0-9a-z:-]",
                key_id=meta.key_id,
            )
    return json.dumps(list(dict.fromkeys(meta.lookup)), separators=(",", ":"))


def _record_lookup(value: Any) -> tuple[str, ...]:
    """A record's lookup terms; none in a record without the field (any key but a KMIP
    object's, and records written before the index)."""
    if value is None:
        return ()
    if not isinstance(value, str):
        raise TypeError("a key record's lookup must be a string")
    terms = json.loads(value)
    if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
        raise TypeError("a key record's lookup must be a JSON list of strings")
    return tuple(terms)


def _dump_regions(meta: KeyMetadata) -> str | None:
    if meta.primary_region is None:
        return None
    regions = {"primary": meta.primary_region, "replicas": list(meta.replica_regions)}
    return json.dumps(regions, separators=(",", ":"))


def _record_regions(value: Any) -> dict[str, Any]:
    """A record's multi-Region fields for KeyMetadata; none in a record older than regions."""
    if value is None:
        return {}
    if not isinstance(value, str):
        raise TypeError("a key record's multi_region must be a string")
    data = json.loads(value)
    return {
        "primary_region": str(data["primary"]),
        "replica_regions": tuple(str(r) for r in data["replicas"]),
    }


def _dump_versions(versions: Sequence[KeyVersion]) -> str:
    """The versions as one compact JSON string: `[[version, created_at, rotation_type], ...]`,
    rotation_type "AUTOMATIC", "ON_DEMAND" or null (the first version); about 35 bytes each."""
    return json.dumps(
        [
            [v.version, v.created_at, v.rotation_type.value if v.rotation_type else None]
            for v in versions
        ],
        separators=(",", ":"),
    )


def _json_strings(value: Any) -> int:
    """The strings of `value` as Vault counts them: every object key and every string value."""
    if isinstance(value, str):
        return 1
    if isinstance(value, dict):
        return sum(1 + _json_strings(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_json_strings(v) for v in value)
    return 0


def _checked_record(record: dict[str, Any]) -> dict[str, Any]:
    """`record`, if it fits in one Vault storage entry (MAX_RECORD_BYTES) and its write within
    MAX_REQUEST_STRINGS; else LimitExceeded."""
    size = len(json.dumps(record, separators=(",", ":")))
    if size > MAX_RECORD_BYTES:
        raise LimitExceeded(
            f"Key {record.get('key_id')}: its metadata would take {size} bytes, more than the "
            f"{MAX_RECORD_BYTES} one Vault storage entry holds (its grants and key policy "
            "count); retire or revoke grants first"
        )
    strings = _json_strings(record) + _KV_WRITE_STRINGS
    if strings > MAX_REQUEST_STRINGS:
        raise LimitExceeded(
            f"Key {record.get('key_id')}: its metadata would be {strings} JSON strings, more "
            f"than the {MAX_REQUEST_STRINGS} Vault accepts in one request "
            "(max_request_json_strings); each tag counts two: remove tags first"
        )
    return record


def _record_grants(key_id: str, value: Any, memo: GrantsMemo | None) -> tuple[Grant, ...]:
    """The grants of a record: codec.py's JSON text; none in a record older than grants."""
    if value is None:
        return ()
    if not isinstance(value, str):
        raise TypeError("a key record's grants must be a string")
    return load_grants(value) if memo is None else memo.load(key_id, value)


def _record_materials(value: Any) -> tuple[KeyMaterial, ...]:
    """The imported materials of a record: codec.py's JSON text; none in an older record."""
    if value is None:
        return ()
    if not isinstance(value, str):
        raise TypeError("a key record's materials must be a string")
    return load_materials(value)


def _record_kmip(value: Any) -> str | None:
    """A record's KMIP object record (its text as stored); None: not a KMIP object."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("a key record's kmip must be a string")
    return value


def _stored_terms(record: Record) -> tuple[str, ...]:
    """A record's lookup terms, without reading the rest of it; none when malformed (a
    deletion of such a key goes on, and leaves what entries it has: extra entries only)."""
    try:
        return _record_lookup(record.data.get("lookup"))
    except (TypeError, ValueError):
        return ()


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _record_to_meta(record: Record, memo: GrantsMemo | None = None) -> KeyMetadata:
    d = record.data
    try:
        return KeyMetadata(
            key_id=str(d["key_id"]),
            state=KeyState(d["state"]),
            created_at=float(d["created_at"]),
            description=str(d.get("description", "")),
            current_version=int(d["current_version"]),
            deletion_date=_opt_float(d.get("deletion_date")),
            pending_window_days=(
                None if d.get("pending_window_days") is None else int(d["pending_window_days"])
            ),
            rotation_enabled=bool(d.get("rotation_enabled", False)),
            rotation_period_days=int(d.get("rotation_period_days", 365)),
            next_rotation=_opt_float(d.get("next_rotation")),
            tags=tuple((str(k), str(v)) for k, v in d.get("tags", [])),
            revision=record.version,
            # Records written before key specs existed are symmetric encryption keys.
            key_spec=str(d.get("key_spec", "SYMMETRIC_DEFAULT")),
            key_usage=str(d.get("key_usage", "ENCRYPT_DECRYPT")),
            # Records written before key policies and grants: the default policy, no grants.
            policy=None if d.get("policy") is None else str(d["policy"]),
            grants=_record_grants(str(d["key_id"]), d.get("grants"), memo),
            # Records written before imports existed: keys made by s3kms, no materials.
            origin=str(d.get("origin") or ORIGIN_AWS_KMS),
            materials=_record_materials(d.get("materials")),
            **_record_regions(d.get("multi_region")),
            # Records written before KMIP, and every other key's: not a KMIP object.
            kmip=_record_kmip(d.get("kmip")),
            lookup=_record_lookup(d.get("lookup")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InternalError(f"malformed key metadata in Vault for key {d.get('key_id')!r}") from exc


def _plaintext_of(resp: VaultResponse) -> bytes:
    """The plaintext of a transit decrypt answer."""
    try:
        return _unb64(str(resp.data.get("plaintext") or ""))
    except (binascii.Error, ValueError):
        raise InternalError("Vault transit returned a malformed plaintext") from None


def _record_versions(data: dict[str, Any]) -> list[KeyVersion]:
    """The versions of a record, sorted: `_dump_versions`' string, or the list of objects
    (`version`, `created_at`, `rotation_type`) of a record the previous release wrote."""
    value = data.get("versions")
    try:
        if value is None:
            return []
        if isinstance(value, str):
            triples = json.loads(value)
        elif isinstance(value, list):  # the previous release's layout
            triples = [[v["version"], v["created_at"], v.get("rotation_type")] for v in value]
        else:
            raise TypeError("a key record's versions must be a string")
        out = [
            KeyVersion(int(n), float(at), RotationType(rt) if rt else None) for n, at, rt in triples
        ]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        key_id = data.get("key_id")
        raise InternalError(f"malformed key versions in Vault for key {key_id!r}") from exc
    return sorted(out, key=lambda kv: kv.version)


def _versions_after(
    stored: KeyMetadata,
    new: KeyMetadata,
    versions: Sequence[KeyVersion],
    now: float,
    imported: int | None = None,
) -> list[KeyVersion]:
    """The record's versions once `new` is written over `stored`: with an entry for `imported`
    (the version an EXTERNAL key's import gave material to) and for the version `new` makes
    current.

    An EXTERNAL key's version becomes current by RotateKeyOnDemand, an update of the service
    (transit already holds the version since its import): its entry is then dated at that
    rotation (its material's `rotated_at`) and ON_DEMAND, as a rotated version's is. A key made
    by s3kms whose update names a current version above its last entry gets entries for the
    missing ones (rotate_key makes them; an update only follows)."""
    by = {v.version: v for v in versions}
    if imported is not None and imported not in by:
        by[imported] = KeyVersion(imported, now, None)
    current = new.current_version
    if current != stored.current_version:
        if new.external:
            material = next((m for m in new.materials if m.version == current), None)
            at = now if material is None or material.rotated_at is None else material.rotated_at
            by[current] = KeyVersion(current, at, RotationType.ON_DEMAND)
        else:
            for version in range(max(by, default=0) + 1, current + 1):
                by[version] = KeyVersion(version, now, RotationType.ON_DEMAND)
    return sorted(by.values(), key=lambda v: v.version)


def _missing_material(meta: KeyMetadata) -> KMSError:
    """The error for a transit key that is not there: an EXTERNAL key's material was never
    imported (or was destroyed), another key is gone."""
    if meta.external:
        return KeyInvalidState(
            f"Key {meta.key_id} has no key material in Vault transit: it is pending import",
            key_id=meta.key_id,
        )
    return KeyNotFound(key_id=meta.key_id)


def _transit_name(key_id: str) -> str:
    """The transit key of a key: its bare id (keystore/regional.py), so a multi-Region key's
    replicas in every region share it, as they share its material."""
    return quote(material_name(key_id), safe="")


def _parse_ciphertext(text: Any, what: str = "ciphertext") -> tuple[int, bytes]:
    """`vault:v<N>:<base64>` (a ciphertext, signature or HMAC) -> (N, raw bytes)."""
    if isinstance(text, str):
        parts = text.split(":")
        if len(parts) == 3 and parts[1].startswith("v") and parts[1][1:].isdigit():
            with contextlib.suppress(binascii.Error, ValueError):
                return int(parts[1][1:]), _unb64(parts[2])
    raise InternalError(f"Vault transit returned a malformed {what}")


def _transit_hash(algorithm: str) -> str:
    """Transit's name of the hash an AWS algorithm ends in: RSASSA_PSS_SHA_384 -> sha2-384."""
    return "sha2-" + algorithm.rsplit("_", 1)[1]


def _signing_family(algorithm: str) -> str | None:
    """The transit key family that makes an AWS signing algorithm's signatures, or None."""
    if algorithm.startswith("RSASSA_"):
        return "rsa"
    if algorithm.startswith("ECDSA_"):
        return "ecc"
    if algorithm == "ED25519_SHA_512":
        return "ed25519"
    return None


def _sign_body(family: str, algorithm: str, message: bytes, message_type: str) -> dict[str, Any]:
    """The transit `sign` body that makes AWS's signature (the URL names the hash, but Ed25519's).

    RSA: `signature_algorithm` pss (MGF1 with the same hash, `salt_length` "hash": AWS's salt is
    as long as the hash; transit's default "auto" makes it as long as the key allows, which a
    verifier expecting AWS's salt length refuses) or pkcs1v15. ECDSA: `marshaling_algorithm`
    asn1 (DER, as AWS). DIGEST: `prehashed`, the message is the hash. Ed25519: pure, over the
    message itself (RAW only).
    """
    body: dict[str, Any] = {"input": _b64(message)}
    if family == "rsa":
        if "_PSS_" in algorithm:
            body.update(signature_algorithm="pss", salt_length="hash")
        else:
            body["signature_algorithm"] = "pkcs1v15"
    elif family == "ecc":
        body["marshaling_algorithm"] = "asn1"
    if message_type == "DIGEST" and family != "ed25519":
        body["prehashed"] = True
    return body


def _public_key_der(
    key_id: str, info: keyspecs.KeySpecInfo, key: dict[str, Any], version: int
) -> bytes:
    """A version's public key from transit's `GET keys/<name>` answer, as SubjectPublicKeyInfo
    DER: transit gives PEM (RSA, ECDSA) or the raw 32 bytes in base64 (Ed25519)."""
    if key.get("type") != TRANSIT_TYPES[info.name]:
        raise InternalError(f"transit key {key_id} is a {key.get('type')} key, not {info.name}")
    entry = (key.get("keys") or {}).get(str(version))
    text = entry.get("public_key") if isinstance(entry, dict) else None
    if not isinstance(text, str) or not text:
        raise InternalError(f"transit key {key_id} has no public key for version {version}")
    try:
        if info.family == "ed25519":
            public: Any = ed25519.Ed25519PublicKey.from_public_bytes(_unb64(text))
        else:
            public = serialization.load_pem_public_key(text.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeError):
        raise InternalError(f"transit key {key_id} has a malformed public key") from None
    der: bytes = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


async def _bounded_gather(items: Iterable[Awaitable[T]], limit: int) -> list[T]:
    sem = asyncio.Semaphore(limit)

    async def one(aw: Awaitable[T]) -> T:
        async with sem:
            return await aw

    return list(await asyncio.gather(*(one(aw) for aw in items)))


class VaultKeyStore:
    """The KeyStore protocol on HashiCorp Vault / OpenBao (transit + KV v2). Build with connect()."""

    kind = "vault"
    # For backups: no, a backup holds no material on this backend (transit keys are created
    # non-exportable; a KMIP object's material is released by `export_material` only).
    material_exportable = False
    # The specs transit has a key type for, and the KMIP-only ones this backend holds (which the
    # service lets only the KMIP API make); CreateKey of another spec is refused by the service.
    supported_specs = KMIP_SPECS
    kmip_specs = KMIP_SPECS
    unsupported_algorithms = UNSUPPORTED_ALGORITHMS

    def __init__(self, settings: VaultSettings, transport: VaultTransport, auth: VaultAuth) -> None:
        """Use `connect()`, which authenticates and validates the configuration."""
        self.settings = settings
        self.endpoint = settings.endpoint
        self._transport = transport
        self._auth = auth
        self._transit = settings.mount_path.strip("/")
        self._kv = KVStore(auth, settings.kv_mount.strip("/"))
        self._prefix = settings.kv_prefix.strip("/")
        self._upsert_disabled = False
        self._cache = MetadataCache(settings.metadata_cache_seconds)
        self._grants = GrantsMemo()  # the parse of a key's many grants, for its next read
        self._batches = TransitBatcher(self._transit_batch)
        self._wrapping_key: rsa.RSAPublicKey | None = None  # transit's, for imports (cached)
        self._own_keys_ready: set[str] = set()  # s3kms's own transit keys known to exist
        # set_material of one key on this node, one at a time (key id -> lock, its users).
        self._material_locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __repr__(self) -> str:
        return f"VaultKeyStore(endpoint={self.endpoint!r}, mount={self._transit!r})"

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    async def connect(cls, settings: VaultSettings) -> VaultKeyStore:
        """Open the client, authenticate and check the Vault side; raise instead of half-working.

        BackendUnavailable: Vault unreachable, sealed, or timing out on every address.
        InvalidRequest: Vault answers but rejects the credentials or lacks the mounts.
        """
        settings.validate()
        transport = VaultTransport(settings)
        auth = VaultAuth(settings, transport)
        store = cls(settings, transport, auth)
        try:
            await transport.find_active()
            await auth.authenticate()
            await store._check_mounts()
            await store._disable_upsert()
        except BaseException:
            await store.close()
            raise
        auth.start()
        return store

    async def __aenter__(self) -> VaultKeyStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _check_mounts(self) -> None:
        await self._check_mount(self._transit, "transit", "transit engine", f"{self._transit}/keys")
        await self._check_mount(
            self._kv.mount,
            "kv",
            "KV version 2 engine",
            f"{self._kv.mount}/metadata/{self._prefix}/keys",
        )

    async def _check_mount(self, mount: str, kind: str, label: str, list_path: str) -> None:
        resp = await self._auth.call("GET", f"sys/internal/ui/mounts/{mount}", once=True, raw=True)
        if resp.status == 200:
            found = resp.data.get("type")
            if found != kind:
                raise InvalidRequest(
                    f"the Vault mount {mount!r} is a {found} engine, not a {label}"
                )
            options = resp.data.get("options") or {}
            if kind == "kv" and str(options.get("version")) != "2":
                raise InvalidRequest(f"the Vault mount {mount!r} is KV version 1, not a {label}")
            return
        # The mount lookup is denied both for a missing mount and for a token without access to
        # it: a LIST tells "no handler for route" (not mounted) from an answer (mounted).
        listed = await self._auth.call(
            "GET", list_path, params={"list": "true"}, once=True, raw=True
        )
        if listed.status == 404 and not listed.not_found:
            raise InvalidRequest(f"{label} not mounted at {mount!r}: {listed.errors}")
        if listed.status in (200, 404):
            return
        raise InvalidRequest(f"cannot use the {label} at {mount!r}: {resp.errors}")

    async def _disable_upsert(self) -> None:
        """Make encrypt to a missing transit key fail instead of creating it (mount-wide)."""
        resp = await self._auth.call(
            "POST", f"{self._transit}/config/keys", json={"disable_upsert": True}, raw=True
        )
        if resp.status in (200, 204):
            self._upsert_disabled = True
            return
        if resp.status not in (403, 404, 405):
            log.warning("cannot set disable_upsert on %s: %s", self._transit, resp.errors)
        check = await self._auth.call("GET", f"{self._transit}/config/keys", raw=True)
        self._upsert_disabled = check.status == 200 and check.data.get("disable_upsert") is True
        if not self._upsert_disabled:
            log.warning(
                "transit upsert is not disabled on %r (no permission to set it): encrypt will read"
                " key metadata before calling transit, costing a second round trip",
                self._transit,
            )

    # -- KV paths -------------------------------------------------------------------------------

    def _key_path(self, key_id: str) -> str:
        return f"{self._prefix}/keys/{quote(key_id, safe='')}"

    def _use_path(self, key_id: str) -> str:
        return f"{self._prefix}/usage/{quote(key_id, safe='')}"

    def _alias_path(self, name: str) -> str:
        short = name[len(_ALIAS_PREFIX) :] if name.startswith(_ALIAS_PREFIX) else name
        return f"{self._prefix}/aliases/{quote(short, safe='/')}"

    def _lookup_dir(self, term: str) -> str:
        # (a term is of LOOKUP_TERM's characters, all of them safe in a URL path)
        return f"{self._prefix}/lookup/{quote(term, safe=':')}"

    def _lookup_path(self, term: str, key_id: str) -> str:
        return f"{self._lookup_dir(term)}/{quote(key_id, safe='')}"

    async def _read_key(self, key_id: str) -> Record:
        if not key_id:
            raise KeyNotFound(key_id=key_id)
        record = await self._kv.read(self._key_path(key_id))
        if record is None:
            raise KeyNotFound(key_id=key_id)
        return record

    # -- keys -----------------------------------------------------------------------------------

    async def create_key(self, meta: KeyMetadata, *, replica: bool = False) -> KeyMetadata:
        """`replica`: a multi-Region key's replica, whose transit key (named by the bare id)
        its primary made: the record only. A KMIP object (`meta.kmip`) gets material that
        `export_material` releases: an exportable transit key, or a KV-held sealed material
        for a spec transit has no key type for (exports.py)."""
        self._cache.invalidate(meta.key_id)  # (nothing is cached of a missing key; to be sure)
        path = self._key_path(meta.key_id)
        info = keyspecs.spec(meta.key_spec)
        kmip = meta.kmip is not None
        key_type = _transit_type(info.name)
        sealed = info.name in SEALED_SPECS
        if (key_type is None and not sealed) or (info.kmip_only and not kmip):
            # The service refuses it first (supported_specs; a KMIP-only spec through KMIP only)
            raise UnsupportedOperation(f"KeySpec {info.name} is not supported by the vault backend")
        if kmip and (replica or meta.multi_region):  # the service makes no such key
            raise UnsupportedOperation(
                f"Key {meta.key_id}: a KMIP object cannot be a multi-Region key on the vault "
                "backend",
                key_id=meta.key_id,
            )
        if meta.external:  # no material (no transit key) until set_material imports it
            data = _checked_record(_meta_to_record(meta, []))
            revision = await self._create_record(meta, data)
            return replace(meta, revision=revision)
        # A record too large (too many tags) is refused before the transit key is made.
        _checked_record(_meta_to_record(meta, [KeyVersion(1, meta.created_at, None)]))
        if await self._kv.read(path) is not None:
            raise KeyAlreadyExists(key_id=meta.key_id)
        if key_type is None:  # a KV-held KMIP object: its material first, the record after it
            if info.family != "aes":
                raise UnsupportedOperation(
                    f"a {info.name} object is registered with its material, never made by s3kms",
                    key_id=meta.key_id,
                )
            await self._put_sealed(meta.key_id, 1, os.urandom(info.size // 8), fresh=True)
            new, versions = replace(meta, current_version=1), [KeyVersion(1, meta.created_at, None)]
        else:
            key = await self._create_transit_key(meta, info, key_type, replica=replica)
            latest = int(key.get("latest_version") or 1)
            times = key.get("keys") or {}

            def created(version: int) -> float:  # symmetric keys: unix time; others: a record
                value = times.get(str(version))
                return float(value) if isinstance(value, int | float) else meta.created_at

            versions = [KeyVersion(1, meta.created_at, None)] + [
                KeyVersion(v, created(v), RotationType.ON_DEMAND) for v in range(2, latest + 1)
            ]
            new = replace(meta, current_version=latest)
        revision = await self._create_record(new, _checked_record(_meta_to_record(new, versions)))
        return replace(new, revision=revision)

    async def _create_record(self, meta: KeyMetadata, data: dict[str, Any]) -> int:
        """Write a new key's record (check-and-set 0: only if absent), its lookup terms'
        index entries before and after it (`_write_indexed`); KeyAlreadyExists."""

        async def write() -> int | None:
            return await self._kv.write(self._key_path(meta.key_id), data, cas=0)

        revision = await self._write_indexed(meta.key_id, (), meta.lookup, write)
        if revision is None:
            raise KeyAlreadyExists(key_id=meta.key_id)
        return revision

    async def _create_transit_key(
        self, meta: KeyMetadata, info: keyspecs.KeySpecInfo, key_type: str, *, replica: bool
    ) -> dict[str, Any]:
        """Make the key's transit key (`replica`: read its primary's), exportable for a KMIP
        object; its `GET keys/<name>` answer. Creating a transit key that exists answers 200
        with the existing key, so a retry after a half-done create (transit key made, metadata
        write failed) completes it; an existing key of another type, size or exportability is
        refused (InternalError).

        An HMAC_224 KMIP object is made of 28 random bytes (the spec's size, as on Local: KMIP
        Get releases it, with the Cryptographic Length its record says) imported with zero
        padding to transit's 32-byte minimum (the same MACs); export_material drops the
        padding again (exports.unpadded_hmac)."""
        kmip = meta.kmip is not None
        size = info.size // 8
        body: dict[str, Any] = {"type": key_type, "exportable": kmip}
        if info.family == "hmac":
            body["key_size"] = max(size, _HMAC_MIN_KEY_BYTES)
        if replica:
            key = await self._transit_key(meta.key_id)
        elif kmip and info.family == "hmac" and size < _HMAC_MIN_KEY_BYTES:
            material = os.urandom(size)
            payload = imports.transit_material(info, material)
            if not await self._import_material(meta.key_id, info, 1, payload, exportable=True):
                # Version 1 holds another material: a create of this id that did not complete
                # (its padding tells that it was made so), or something else.
                left = await self._export_transit(meta.key_id, info, key_type, 1)
                if any(left[size:]):
                    raise InternalError(
                        f"transit key {meta.key_id} already exists with other key material"
                    )
            key = await self._transit_key(meta.key_id)
        else:
            resp = await self._auth.call(
                "POST", f"{self._transit}/keys/{_transit_name(meta.key_id)}", json=body
            )
            if resp.status not in (200, 204):
                raise resp.unexpected(f"create transit key {meta.key_id}")
            key = resp.data or await self._transit_key(meta.key_id)
        found = (key.get("type", key_type), key.get("key_size", body.get("key_size")))
        if found != (key_type, body.get("key_size")):
            raise InternalError(
                f"transit key {meta.key_id} already exists with type {found[0]}"
                + (f" and key_size {found[1]}" if found[0] == key_type else "")
            )
        if bool(key.get("exportable", kmip)) != kmip:
            raise InternalError(
                f"transit key {meta.key_id} already exists and is "
                + ("not exportable, as a KMIP object's must be" if kmip else "exportable")
            )
        return key

    async def _transit_key(self, key_id: str) -> dict[str, Any]:
        resp = await self._auth.call("GET", f"{self._transit}/keys/{_transit_name(key_id)}")
        if resp.not_found:
            raise KeyNotFound(key_id=key_id)
        if resp.status != 200:
            raise resp.unexpected(f"read transit key {key_id}")
        return resp.data

    async def _transit_key_if_any(self, key_id: str) -> dict[str, Any] | None:
        """The transit key's `GET keys/<name>` answer, or None when there is none."""
        resp = await self._auth.call("GET", f"{self._transit}/keys/{_transit_name(key_id)}")
        if resp.not_found:
            return None
        if resp.status != 200:
            raise resp.unexpected(f"read transit key {key_id}")
        return resp.data

    async def get_key(self, key_id: str) -> KeyMetadata:
        return _record_to_meta(await self._read_key(key_id), self._grants)

    async def forget(self, key_id: str) -> None:
        """Drop this node's cached metadata of the key (cache.py): the next crypto request reads
        it from KV. For a grant another node created within `metadata_cache_seconds`, which a
        request names by its grant token; management reads are never cached."""
        self._cache.invalidate(key_id)

    async def _key_ids(self) -> list[str]:
        return sorted(
            k for k in await self._kv.list_dir(f"{self._prefix}/keys") if not k.endswith("/")
        )

    async def list_keys(
        self, *, after: str | None, limit: int, prefix: str = ""
    ) -> Sequence[KeyMetadata]:
        if limit <= 0:
            return []
        candidates = [
            k
            for k in await self._key_ids()
            if (after is None or k > after) and k.startswith(prefix)
        ]

        async def read(key_id: str) -> KeyMetadata | None:
            record = await self._kv.read(self._key_path(key_id))
            return None if record is None else _record_to_meta(record, self._grants)

        out: list[KeyMetadata] = []
        # Read in chunks: a key deleted since the LIST is skipped and the next one taken.
        while candidates and len(out) < limit:
            chunk, candidates = candidates[: limit - len(out)], candidates[limit - len(out) :]
            found = await _bounded_gather((read(k) for k in chunk), _READ_CONCURRENCY)
            out += [m for m in found if m is not None]
        return out

    async def count_keys(self) -> int:
        return len(await self._key_ids())

    async def update_key(self, meta: KeyMetadata) -> KeyMetadata:
        try:
            return await self._update_key(meta)
        finally:
            self._cache.invalidate(meta.key_id)  # (also after a failure: it may have been applied)

    async def _update_key(self, meta: KeyMetadata) -> KeyMetadata:
        # The record read for the check-and-set is the stored one: its lookup terms, compared
        # with `meta`'s, tell the index change (none: no index call) without another read.
        record = await self._current_record(meta)
        return await self._commit(meta, *self._record_update(meta, record))

    async def _current_record(self, meta: KeyMetadata) -> Record:
        """The key's record, if it is still at `meta.revision`; else WriteConflict."""
        record = await self._read_key(meta.key_id)
        if record.version != meta.revision:
            raise WriteConflict(meta.key_id)
        return record

    def _record_update(
        self, meta: KeyMetadata, record: Record, imported: int | None = None
    ) -> tuple[KeyMetadata, dict[str, Any], str, tuple[str, ...]]:
        """What an update writes over `record`: `meta` with the fields that never change (the
        creation date, origin, spec and usage) as stored, the versions after it
        (`_versions_after`; `imported`: the version an import gave material to), checked
        against the record limits; its grants' text; and the stored record's lookup terms."""
        stored = _record_to_meta(record, self._grants)
        # The current version is written too: the check-and-set on the revision makes that
        # safe against a concurrent rotation (whose write moves the revision), and an EXTERNAL
        # key's RotateKeyOnDemand is such an update. The versions follow it.
        new = replace(
            meta,
            created_at=stored.created_at,
            origin=stored.origin,
            key_spec=stored.key_spec,
            key_usage=stored.key_usage,
        )
        versions = _versions_after(
            stored, new, _record_versions(record.data), time.time(), imported
        )
        grants = self._grants.dump(meta.key_id, new.grants)
        data = _checked_record(_meta_to_record(new, versions, grants))
        return new, data, grants, stored.lookup

    async def _commit(
        self,
        meta: KeyMetadata,
        new: KeyMetadata,
        data: dict[str, Any],
        grants: str,
        before: tuple[str, ...],
    ) -> KeyMetadata:
        """Write `data` (of `new`) with check-and-set on `meta.revision`, and the index entries
        of the lookup terms it adds or removes over the stored ones, `before` (`_write_indexed`)."""

        async def write() -> int | None:
            return await self._kv.write(self._key_path(meta.key_id), data, cas=meta.revision)

        revision = await self._write_indexed(meta.key_id, before, new.lookup, write)
        if revision is None:
            if await self._kv.read(self._key_path(meta.key_id)) is None:
                raise KeyNotFound(key_id=meta.key_id)
            raise WriteConflict(meta.key_id)
        self._grants.keep(meta.key_id, grants, new.grants)
        return replace(new, revision=revision)

    # -- imported key material (EXTERNAL keys; see imports.py) ---------------------------------

    async def set_material(
        self, meta: KeyMetadata, version: int, material: bytes | None
    ) -> KeyMetadata:
        """Import `material` into transit as version `version` (or destroy it), then write `meta`
        as update_key does. Transit first and the record after it, so the record never names
        material transit lacks; a destruction the other way round (see `_destroy_material`)."""
        try:
            async with self._one_material_change(meta.key_id):
                return await self._set_material(meta, version, material)
        finally:
            self._cache.invalidate(meta.key_id)  # (also after a failure: it may have been applied)

    @contextlib.asynccontextmanager
    async def _one_material_change(self, key_id: str) -> AsyncIterator[None]:
        """One material change of a key at a time on this node: two imports of one key would
        both see transit's latest version N and make versions N+1 and N+2."""
        lock, users = self._material_locks.get(key_id, (asyncio.Lock(), 0))
        self._material_locks[key_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._material_locks[key_id]
            if users == 1:
                del self._material_locks[key_id]
            else:
                self._material_locks[key_id] = (lock, users - 1)

    async def _set_material(
        self, meta: KeyMetadata, version: int, material: bytes | None
    ) -> KeyMetadata:
        record = await self._current_record(meta)
        stored = _record_to_meta(record, self._grants)
        if not stored.external:  # the service refuses it first
            raise UnsupportedOperation(
                f"Key {meta.key_id} has origin {stored.origin}: it takes no imported key material",
                key_id=meta.key_id,
            )
        if version < 1:
            raise InvalidRequest(f"Key {meta.key_id} has no key version {version}")
        info = keyspecs.spec(stored.key_spec)
        if info.name in SEALED_SPECS:  # a KV-held KMIP object (exports.py)
            return await self._set_sealed_material(meta, record, version, material)
        if material is None:
            return await self._destroy_material(meta, record, version)
        # The record is made (and checked against the limits) before anything is sent.
        new, data, grants, before = self._record_update(meta, record, imported=version)
        payload = imports.transit_material(info, material)
        # A KMIP object's material is imported exportable (KMIP Get releases it), any other not.
        exportable = stored.kmip is not None
        if not await self._import_material(
            meta.key_id, info, version, payload, exportable=exportable
        ):
            await self._current_record(meta)  # a concurrent import got there first: a conflict
            raise UnsupportedOperation(
                f"Key {meta.key_id}: Vault transit already holds other key material as version "
                f"{version} of this key (left by an import that did not complete), and cannot "
                "replace or destroy one version of a key",
                key_id=meta.key_id,
            )
        return await self._commit(meta, new, data, grants, before)

    async def _set_sealed_material(
        self, meta: KeyMetadata, record: Record, version: int, material: bytes | None
    ) -> KeyMetadata:
        """set_material of a KV-held KMIP object: the sealed material written before the record
        names it, or (None) removed after the record stopped naming it. Unlike transit, KV
        replaces or removes any one version."""
        if material is None:
            written = await self._commit(meta, *self._record_update(meta, record))
            await self._drop_sealed(meta.key_id, version)
            return written
        new, data, grants, before = self._record_update(meta, record, imported=version)
        await self._put_sealed(meta.key_id, version, material, fresh=False)
        return await self._commit(meta, new, data, grants, before)

    async def _import_material(
        self,
        key_id: str,
        info: keyspecs.KeySpecInfo,
        version: int,
        material: bytes,
        *,
        exportable: bool = False,
    ) -> bool:
        """Make transit's version `version` of the key hold `material`: `import` (version 1 of
        a key transit lacks) or `import_version` (version N of a key at N-1), unless transit
        holds that version already (an import repeated after its record write failed). True
        when the version holds `material`, False when it holds another one; UnsupportedOperation
        for a version transit cannot add (it adds only the next one). `exportable`: the key is
        imported exportable (a KMIP object's; OpenBao takes `exportable` on `import`, and its
        later versions are exportable with it), and a key already there must be so."""
        name = _transit_name(key_id)
        for _ in range(4):
            key = await self._transit_key_if_any(key_id)
            latest = 0 if key is None else int(key.get("latest_version") or 0)
            if key is not None and version <= latest:
                if bool(key.get("exportable")) != exportable:
                    return False  # not this import's key, whatever it holds
                return await self._transit_holds(key_id, info, key, version, material)
            if version != latest + 1:
                held = f"versions 1 to {latest}" if latest else "no version (it was deleted)"
                raise UnsupportedOperation(
                    f"Key {key_id}: key material cannot be stored as version {version}: Vault "
                    f"transit holds {held} of this key and can add only version {latest + 1}; "
                    f"import the key material of version {latest + 1} again first",
                    key_id=key_id,
                )
            body: dict[str, Any] = {
                "ciphertext": imports.wrap(await self._transit_wrapping_key(), material),
                "hash_function": "SHA256",
            }
            if latest == 0:
                path = f"{self._transit}/keys/{name}/import"
                body.update(type=_transit_type(info.name), exportable=exportable)
            else:
                path = f"{self._transit}/keys/{name}/import_version"
            try:  # not resent: a second import_version would add a second version
                resp = await self._auth.call(
                    "POST", path, json=body, resend=False, answers=_IMPORT_REFUSED
                )
            except OutcomeUnknown as exc:
                log.info("import into transit key %s: outcome unknown (%s)", key_id, exc)
                continue  # the next look at the key tells
            if resp.status in (200, 204) or _IMPORT_EXISTS in resp.errors:
                continue  # the next look finds the version, and whether it holds the material
            self._wrapping_key = None  # read again next time, in case it is what changed
            raise InternalError(
                f"Vault transit refused to import key material into {key_id}: {resp.errors}"
            )
        raise BackendUnavailable(f"could not import key material into transit key {key_id}")

    async def _transit_holds(
        self,
        key_id: str,
        info: keyspecs.KeySpecInfo,
        key: dict[str, Any],
        version: int,
        material: bytes,
    ) -> bool:
        """Whether transit's `version` of the key holds `material`, by imports.py's probes (the
        material does not leave this process): a symmetric key decrypts a probe made with it,
        an HMAC key's MAC of a probe is the material's, an asymmetric key's public key too."""
        if key.get("type") != _transit_type(info.name):
            return False
        name = _transit_name(key_id)
        if info.family in ("symmetric", "aes"):  # (AES_128: a KMIP object's)
            probe, ciphertext = imports.aes_probe(material, version)
            resp = await self._auth.call(
                "POST", f"{self._transit}/decrypt/{name}", json={"ciphertext": ciphertext}
            )
            if resp.status == 400:  # does not open: another material
                return False
            if resp.status != 200:
                raise resp.unexpected(f"decrypt with transit key {key_id}")
            return hmac.compare_digest(_plaintext_of(resp), probe)
        if info.family == "hmac":
            probe, expected = imports.hmac_probe(info, material)
            resp = await self._auth.call(
                "POST",
                f"{self._transit}/hmac/{name}/sha2-{info.size}",
                json={"input": _b64(probe), "key_version": version},
            )
            if resp.status != 200:
                raise resp.unexpected(f"generate an HMAC with transit key {key_id}")
            mac = _parse_ciphertext(resp.data.get("hmac"), "HMAC")[1]
            return hmac.compare_digest(mac, expected)
        try:
            ours = imports.public_key_der(material)
        except (TypeError, ValueError):  # the service checked it: not a private key at all
            raise InvalidRequest(f"Key {key_id}: the key material is no private key") from None
        return hmac.compare_digest(_public_key_der(key_id, info, key, version), ours)

    async def _transit_wrapping_key(self) -> rsa.RSAPublicKey:
        """The mount's wrapping key (`GET <mount>/wrapping_key`, RSA-4096), read once."""
        if self._wrapping_key is None:
            resp = await self._auth.call("GET", f"{self._transit}/wrapping_key")
            if resp.status != 200:
                raise resp.unexpected(f"read the wrapping key of {self._transit}")
            try:
                self._wrapping_key = imports.load_wrapping_key(resp.data.get("public_key"))
            except (TypeError, ValueError) as exc:
                raise InternalError(f"Vault transit's wrapping key is unusable: {exc}") from None
        return self._wrapping_key

    async def _destroy_material(
        self, meta: KeyMetadata, record: Record, version: int
    ) -> KeyMetadata:
        """Destroy version `version`'s material: transit cannot destroy one version of a key,
        so the transit key goes when that is its only version (after the record was written:
        the record stops naming the material before it is destroyed; importing the same
        material again makes a new transit key that opens every old ciphertext), and with more
        versions nothing is written. A version transit lacks leaves only the record to write."""
        new, data, grants, before = self._record_update(meta, record)
        key = await self._transit_key_if_any(meta.key_id)
        latest = 0 if key is None else int(key.get("latest_version") or 0)
        if version <= latest and latest > 1:
            raise UnsupportedOperation(
                f"Key {meta.key_id}: the key material of version {version} cannot be deleted: "
                "Vault transit cannot destroy one version of a key; its transit key holds "
                f"{latest} versions, which only deleting the key destroys",
                key_id=meta.key_id,
            )
        written = await self._commit(meta, new, data, grants, before)
        if version <= latest:  # the transit key's one version
            await self._delete_transit_key(meta.key_id)
        return written

    # -- sealing: a secret the service hands out and gets back (imports.SEALING_KEY) -----------

    async def seal(self, purpose: str, data: bytes) -> bytes:
        """Transit's `encrypt` with the sealing key, `purpose` and the KV prefix bound as
        associated data: transit's `vault:v1:...` text, which every node of this Vault opens."""
        text = await self._own_seal(_SEALING, imports.sealing_aad(self._prefix, purpose), data)
        return text.encode("utf-8")

    async def unseal(self, purpose: str, sealed: bytes) -> bytes:
        """What `seal` sealed; InvalidCiphertext for anything else (damaged, of another purpose
        or deployment, or no sealing key at all)."""
        text = imports.sealed_text(sealed)
        if text is None:
            raise InvalidCiphertext
        return await self._own_unseal(_SEALING, imports.sealing_aad(self._prefix, purpose), text)

    async def _own_seal(self, key: _OwnKey, aad: str, data: bytes) -> str:
        """`data` encrypted by transit under one of s3kms's own keys, `aad` bound: transit's
        `vault:vN:...` text. The key is made on first use, and again if it was deleted."""
        path = f"{self._transit}/encrypt/{key.name}"
        body = {"plaintext": _b64(data), "associated_data": aad}
        for _ in range(2):
            await self._own_key(key)
            resp = await self._auth.call("POST", path, json=body)
            if resp.not_found_400:  # deleted since: made again
                self._own_keys_ready.discard(key.name)
                continue
            if resp.status != 200:
                raise resp.unexpected(f"seal with {key.label}")
            text = resp.data.get("ciphertext")
            if not isinstance(text, str) or imports.sealed_text(text.encode("utf-8")) is None:
                raise InternalError("Vault transit returned a malformed ciphertext")
            return text
        raise BackendUnavailable(f"{key.label} disappeared while in use")

    async def _own_unseal(self, key: _OwnKey, aad: str, text: str) -> bytes:
        """What `_own_seal` sealed with `aad`; InvalidCiphertext when it does not open (damaged,
        other associated data, no such key)."""
        resp = await self._auth.call(
            "POST",
            f"{self._transit}/decrypt/{key.name}",
            json={"ciphertext": text, "associated_data": aad},
        )
        if resp.status == 400:  # does not open, or not found: one error, without detail
            raise InvalidCiphertext
        if resp.status != 200:
            raise resp.unexpected(f"unseal with {key.label}")
        return _plaintext_of(resp)

    async def _own_key(self, key: _OwnKey) -> None:
        """Make one of s3kms's own transit keys unless known to exist: creating an existing
        transit key answers it unchanged, so nodes racing to make it all succeed, with the same
        key. Never exportable."""
        if key.name in self._own_keys_ready:
            return
        resp = await self._auth.call(
            "POST",
            f"{self._transit}/keys/{key.name}",
            json={"type": key.key_type, "exportable": False},
        )
        if resp.status not in (200, 204):
            raise resp.unexpected(f"create {key.label}")
        found = resp.data or await self._transit_key(key.name)
        if found.get("type", key.key_type) != key.key_type:
            raise InternalError(f"{key.label} is a {found.get('type')} key, not {key.key_type}")
        self._own_keys_ready.add(key.name)

    # -- KV-held material: KMIP objects of the specs transit has no key type for (exports.py) --

    def _material_path(self, key_id: str) -> str:
        return f"{self._prefix}/material/{quote(material_name(key_id), safe='')}"

    def _material_aad(self, key_id: str, version: int) -> str:
        return exports.material_aad(self._prefix, material_name(key_id), version)

    @staticmethod
    def _sealed_versions(key_id: str, record: Record) -> dict[int, str]:
        try:
            return exports.entry_versions(record.data)
        except (TypeError, ValueError):
            raise InternalError(
                f"malformed key material entry in Vault for key {key_id!r}"
            ) from None

    async def _put_sealed(self, key_id: str, version: int, material: bytes, *, fresh: bool) -> None:
        """Seal `material` (the material key, exports.material_aad) and store it as version
        `version` in the key's material entry, replacing what that version held. `fresh`: a
        create's, replacing a whole entry that a create of this id left without completing,
        but KeyAlreadyExists when the key exists."""
        sealed = await self._own_seal(_MATERIAL, self._material_aad(key_id, version), material)
        path = self._material_path(key_id)
        for _ in range(_CAS_RETRIES):
            current = await self._kv.read(path)
            exists = current is not None and fresh
            if exists and await self._kv.read(self._key_path(key_id)) is not None:
                raise KeyAlreadyExists(key_id=key_id)
            held = {} if current is None or fresh else self._sealed_versions(key_id, current)
            held[version] = sealed
            data = exports.entry(held)
            size = len(json.dumps(data, separators=(",", ":")))
            if size > MAX_RECORD_BYTES:
                raise LimitExceeded(
                    f"Key {key_id}: its key materials would take {size} bytes, more than the "
                    f"{MAX_RECORD_BYTES} one Vault storage entry holds"
                )
            cas = 0 if current is None else current.version
            if await self._kv.write(path, data, cas=cas) is not None:
                return
        raise BackendUnavailable(f"could not store the key material of {key_id}: contention")

    async def _drop_sealed(self, key_id: str, version: int) -> None:
        """Remove version `version` from the key's material entry (an entry without versions
        stays until the key is deleted: a removal never races a concurrent write)."""
        path = self._material_path(key_id)
        for _ in range(_CAS_RETRIES):
            current = await self._kv.read(path)
            if current is None:
                return
            held = self._sealed_versions(key_id, current)
            if held.pop(version, None) is None:
                return
            if await self._kv.write(path, exports.entry(held), cas=current.version) is not None:
                return
        raise BackendUnavailable(f"could not destroy the key material of {key_id}: contention")

    async def _read_sealed(self, key_id: str, version: int) -> bytes:
        """Version `version`'s KV-held material, unsealed; KeyNotFound when there is none."""
        current = await self._kv.read(self._material_path(key_id))
        sealed = None if current is None else self._sealed_versions(key_id, current).get(version)
        if sealed is None:
            raise KeyNotFound(key_id=key_id)
        try:
            return await self._own_unseal(_MATERIAL, self._material_aad(key_id, version), sealed)
        except InvalidCiphertext:
            raise InternalError(
                f"the key material of {key_id} in Vault KV does not open with {_MATERIAL.label}"
                " (damaged, moved from another key or deployment, or that key was deleted)"
            ) from None

    async def _transit_rotate(self, key_id: str) -> int:
        """Add a transit key version; returns the latest version afterwards.

        A rotate is not idempotent, so it is never blindly resent. When its outcome is unknown
        (a timeout, a dropped connection, or OpenBao's 500 "transaction commit failed", which
        concurrent rotations of one key get although the rotation *was* applied), the key's
        latest version tells: above the version seen before, a new version exists; otherwise
        nothing happened and the rotate is tried again.
        """
        name = _transit_name(key_id)
        before = int((await self._transit_key(key_id)).get("latest_version") or 0)
        for _ in range(3):
            try:
                resp = await self._auth.call(
                    "POST", f"{self._transit}/keys/{name}/rotate", resend=False
                )
            except OutcomeUnknown as exc:
                log.info("rotate of %s: outcome unknown (%s); reading the key", key_id, exc)
            else:
                if resp.not_found_400:
                    raise KeyNotFound(key_id=key_id)
                if resp.status not in (200, 204):
                    raise resp.unexpected(f"rotate transit key {key_id}")
                latest = resp.data.get("latest_version")
                if latest is not None:
                    return int(latest)
            latest = int((await self._transit_key(key_id)).get("latest_version") or 0)
            if latest > before:
                return latest
        raise BackendUnavailable(f"could not rotate transit key {key_id}")

    async def rotate_key(
        self, key_id: str, rotation_type: RotationType, now: float, next_rotation: RotationDue
    ) -> KeyMetadata:
        try:
            return await self._rotate_key(key_id, rotation_type, now, next_rotation)
        finally:
            self._cache.invalidate(key_id)

    async def _rotate_key(
        self, key_id: str, rotation_type: RotationType, now: float, next_rotation: RotationDue
    ) -> KeyMetadata:
        # No rotation of a transit key without metadata, nor of an EXTERNAL key's: its new
        # material is imported (set_material), and the service makes it current (update_key).
        if _record_to_meta(await self._read_key(key_id), self._grants).external:
            raise UnsupportedOperation(
                f"Key {key_id} has imported key material: it rotates to material imported for it"
            )
        latest = await self._transit_rotate(key_id)
        path = self._key_path(key_id)
        for _ in range(_CAS_RETRIES):
            record = await self._read_key(key_id)
            meta = _record_to_meta(record, self._grants)
            versions = _record_versions(record.data)
            known = {v.version for v in versions}
            # Versions this rotation (or an earlier one whose metadata write failed) added.
            versions += [
                KeyVersion(v, now, rotation_type)
                for v in range(max(known, default=0) + 1, latest + 1)
            ]
            new = replace(
                meta,
                current_version=max(meta.current_version, latest),
                next_rotation=next_rotation(meta),
            )
            grants = self._grants.dump(key_id, new.grants)
            # Not checked (_checked_record): a rotation adds no JSON string (the versions are
            # one), and is not refused once transit has the new version.
            revision = await self._kv.write(
                path, _meta_to_record(new, versions, grants), cas=record.version
            )
            if revision is not None:
                return replace(new, revision=revision)
        raise BackendUnavailable(f"could not record the rotation of {key_id}: too much contention")

    async def list_versions(self, key_id: str) -> Sequence[KeyVersion]:
        """The record's versions; of an EXTERNAL key, those whose material is imported (a
        destroyed or expired material is not listed, as on Local, until imported again)."""
        record = await self._read_key(key_id)
        versions = _record_versions(record.data)
        meta = _record_to_meta(record, self._grants)
        if meta.external:
            held = {m.version for m in meta.materials if m.imported}
            versions = [v for v in versions if v.version in held]
        return versions

    # -- the lookup index: `<prefix>/lookup/<term>/<key id>`, one KV entry per term of a key --
    #
    # Written apart from the record, in an order that never lets `find_keys` miss a key whose
    # record holds a term (it may answer one that no longer does: KeyService.find_keys reads
    # each key and checks). A write that adds terms writes their entries before the record and
    # once more after it (a create of an entry that exists writes nothing); a write that removes
    # terms deletes their entries after the record, then reads the record once and writes again
    # the entries of the terms it holds by then. So with two nodes, one removing a term and one
    # adding it back at once, the entry is there in the end whichever order their calls took: a
    # deletion after the adder's second write is followed by the remover's read, which sees the
    # adder's record (written before that second write), and a deletion before it is undone by
    # it. A write that does not change the terms (nearly every write) costs no index call.

    async def _index(self, key_id: str, terms: Sequence[str]) -> None:
        """Make the entries of `terms` for the key (those there are left as they are)."""
        await _bounded_gather(
            (self._kv.create(self._lookup_path(t, key_id), dict(_LOOKUP_ENTRY)) for t in terms),
            _READ_CONCURRENCY,
        )

    async def _unindex(self, key_id: str, terms: Sequence[str]) -> None:
        """Delete the entries of `terms` (after the record write that removed them), then
        write again those of the terms the key's record holds by then (a concurrent write, or a
        create of the same id after a deletion, added them back)."""
        if not terms:
            return
        await _bounded_gather(
            (self._kv.delete(self._lookup_path(t, key_id)) for t in terms), _READ_CONCURRENCY
        )
        record = await self._kv.read(self._key_path(key_id))
        if record is not None:
            held = set(_stored_terms(record))
            await self._index(key_id, [t for t in terms if t in held])

    async def _write_indexed(
        self,
        key_id: str,
        before: Sequence[str],
        after: Sequence[str],
        write: Callable[[], Awaitable[int | None]],
    ) -> int | None:
        """`write()`, the record's check-and-set write (its new revision, or None: not written),
        with the index moved from the terms `before` to those `after` (see above): no index
        call when they are the same terms. A write that was not made leaves the index as it
        was, but for the entries of the terms it would have added (extra entries)."""
        added = [t for t in dict.fromkeys(after) if t not in before]
        removed = [t for t in dict.fromkeys(before) if t not in after]
        await self._index(key_id, added)
        revision = await write()
        if revision is not None:
            await self._index(key_id, added)
            await self._unindex(key_id, removed)
        return revision

    async def find_keys(self, term: str, *, limit: int) -> Sequence[str]:
        """One KV LIST of `<prefix>/lookup/<term>/`: the ids below it, sorted, at most `limit`.
        Not cached: a term written through another node is found at once."""
        if limit <= 0 or not LOOKUP_TERM.fullmatch(term):
            return []  # (no key can hold a term the index cannot store)
        names = await self._kv.list_dir(self._lookup_dir(term))
        return sorted(n for n in names if not n.endswith("/"))[:limit]

    async def export_material(self, key_id: str, version: int) -> bytes:
        """A KMIP object's version: transit's export of its exportable key (`GET
        <mount>/export/<kind>/<name>/<version>`, converted by exports.from_export), or its
        KV-held material unsealed. The record is read first: a key that is no KMIP object is
        refused whatever transit would answer (UnsupportedOperation), and a version the record
        does not name as held (never made, or an imported material destroyed) is KeyNotFound."""
        record = await self._read_key(key_id)
        meta = _record_to_meta(record, self._grants)
        if meta.kmip is None:  # the service refuses it first
            raise UnsupportedOperation(
                f"the material of key {key_id} is not extractable: it is no KMIP object",
                key_id=key_id,
            )
        imported = next((m for m in meta.materials if m.version == version and m.imported), None)
        if meta.external:
            held = imported is not None
        else:
            held = any(v.version == version for v in _record_versions(record.data))
        if not held:
            raise KeyNotFound(f"Key {key_id} has no key material of version {version}")
        info = keyspecs.spec(meta.key_spec)
        key_type = _transit_type(info.name)
        if key_type is None:
            return await self._read_sealed(key_id, version)
        raw = await self._export_transit(key_id, info, key_type, version)
        return exports.unpadded_hmac(
            info,
            raw,
            (key_id, material_name(key_id)),
            None if imported is None else imported.material_id,
        )

    async def _export_transit(
        self, key_id: str, info: keyspecs.KeySpecInfo, key_type: str, version: int
    ) -> bytes:
        """Transit's export of version `version` of the key, in the keystore's form."""
        kind = exports.EXPORT_KINDS[key_type]
        resp = await self._auth.call(
            "GET", f"{self._transit}/export/{kind}/{_transit_name(key_id)}/{version}"
        )
        if (
            resp.not_found
            or resp.not_found_400
            or (resp.status == 400 and "version does not exist" in resp.errors)
        ):
            raise KeyNotFound(f"Key {key_id} has no key material of version {version}")
        if resp.status == 400 and "not exportable" in resp.errors:
            raise InternalError(f"transit key {key_id} is not exportable: {resp.errors}")
        if resp.status != 200:
            raise resp.unexpected(f"export transit key {key_id}")
        if resp.data.get("type", key_type) != key_type:
            raise InternalError(
                f"transit key {key_id} is a {resp.data.get('type')} key, not {key_type}"
            )
        try:
            return exports.from_export(
                info, key_type, (resp.data.get("keys") or {}).get(str(version))
            )
        except (TypeError, ValueError, UnicodeError) as exc:
            raise InternalError(f"Vault transit exported a malformed key {key_id}: {exc}") from None

    async def export_versions(self, key_id: str) -> Sequence[tuple[KeyVersion, bytes | None]]:
        """The versions only: the material never leaves Vault (Vault snapshots back it up)."""
        return [(v, None) for v in await self.list_versions(key_id)]

    async def import_key(
        self, meta: KeyMetadata, versions: Sequence[tuple[KeyVersion, bytes]], *, overwrite: bool
    ) -> None:
        raise UnsupportedOperation(
            "importing key material into Vault transit is not supported: restore Vault from its "
            "own snapshot (bao operator raft snapshot restore)"
        )

    async def delete_key(self, key_id: str, *, keep_material: bool = False) -> None:
        try:
            await self._delete_key(key_id, keep_material)
        finally:
            self._cache.invalidate(key_id)

    async def _delete_transit_key(self, key_id: str) -> None:
        """Delete the transit key (`deletion_allowed` first); none there is no error."""
        name = _transit_name(key_id)
        config = await self._auth.call(
            "POST", f"{self._transit}/keys/{name}/config", json={"deletion_allowed": True}
        )
        if config.status in (200, 204):
            resp = await self._auth.call("DELETE", f"{self._transit}/keys/{name}")
            if resp.status not in (200, 204) and not resp.not_found_400:
                raise resp.unexpected(f"delete transit key {key_id}")
        elif not (config.status in (400, 404) and "no existing key" in config.errors):
            raise config.unexpected(f"allow deletion of transit key {key_id}")

    async def _delete_key(self, key_id: str, keep_material: bool) -> None:
        """The material first (the transit key, and a KMIP object's KV-held material, asked
        of every key: a deletion is idempotent), then the record: a failure half way leaves a
        key whose next deletion completes, never material no record names. The record is read
        first for its lookup terms, whose index entries go after it (`_unindex`; a failure
        before leaves extra entries only)."""
        self._grants.drop(key_id)
        record = await self._kv.read(self._key_path(key_id)) if key_id else None
        terms = () if record is None else _stored_terms(record)
        if not keep_material:  # (another region's replica of a multi-Region key still uses it)
            await self._delete_transit_key(key_id)
            await self._kv.delete(self._material_path(key_id))
        await self._kv.delete(self._key_path(key_id))
        await self._unindex(key_id, terms)
        await self._kv.delete(self._use_path(key_id))
        aliases = [a for a in await self.list_aliases() if a.key_id == key_id]
        await _bounded_gather(
            (self._kv.delete(self._alias_path(a.name)) for a in aliases), _READ_CONCURRENCY
        )

    # -- last use: one KV record per key (`<prefix>/usage/<key id>`), the later one wins ---------

    async def usage_tracking_since(self) -> float:
        """The time in `<prefix>/usage-tracking`, written once (check-and-set) by the first node."""
        path = f"{self._prefix}/usage-tracking"
        for _ in range(_CAS_RETRIES):
            record = await self._kv.read(path)
            if record is not None:
                return float(record.data["since"])
            since = float(int(time.time()))  # whole seconds, as key creation dates are
            await self._kv.write(path, {"since": since}, cas=0)  # then read back what won
        raise BackendUnavailable("could not record when usage tracking began")

    async def record_last_uses(self, uses: Sequence[LastUse]) -> None:
        async def one(use: LastUse) -> None:
            path = self._use_path(use.key_id)
            for _ in range(_CAS_RETRIES):
                record = await self._kv.read(path)
                if record is not None and float(record.data.get("at", 0)) >= use.at:
                    return
                data = {"operation": use.operation, "at": use.at, "request_id": use.request_id}
                cas = 0 if record is None else record.version
                if await self._kv.write(path, data, cas=cas) is not None:
                    return

        await _bounded_gather((one(u) for u in uses), _READ_CONCURRENCY)

    async def last_use(self, key_id: str) -> LastUse | None:
        record = await self._kv.read(self._use_path(key_id))
        if record is None:
            return None
        d = record.data
        request_id = d.get("request_id")
        return LastUse(
            key_id,
            str(d["operation"]),
            float(d["at"]),
            None if request_id is None else str(request_id),
        )

    # -- crypto ---------------------------------------------------------------------------------

    async def _transit_op(
        self,
        op: str,
        key_id: str,
        body: dict[str, Any],
        *,
        raw: bool = False,
        suffix: str = "",
        answers: tuple[str, ...] = (),
    ) -> VaultResponse:
        """POST `<mount>/<op>/<key_id>[/<suffix>]` (the suffix: sign's and hmac's hash)."""
        path = f"{self._transit}/{op}/{_transit_name(key_id)}" + (f"/{suffix}" if suffix else "")
        return await self._auth.call("POST", path, json=body, raw=raw, answers=answers)

    async def _transit_batch(
        self, op: str, key_id: str, items: list[dict[str, Any]]
    ) -> VaultResponse:
        return await self._transit_op(op, key_id, {"batch_input": items}, raw=True)

    async def _crypto_metadata(self, key_id: str) -> KeyMetadata:
        """A key's metadata for a crypto operation: at most the cache window old."""
        return await self._cache.get(key_id, lambda: self.get_key(key_id))

    async def _checked_transit(
        self,
        op: str,
        key_id: str,
        body: dict[str, Any],
        check: StateCheck,
        *,
        concurrent: bool,
        batched: bool = False,
        suffix: str = "",
        answers: tuple[str, ...] = (),
    ) -> tuple[KeyMetadata, VaultResponse]:
        """Take the key's metadata (cache.py) and call transit (concurrently when the metadata
        must be read and `concurrent`, else after it), run `check` on the metadata, and only then
        look at transit's answer. `batched`: `body` is one item of a `batch_input` (batch.py)."""

        def call() -> Awaitable[VaultResponse]:
            # raw: a 403 from transit may only mean "no such key, and no `create` capability on
            # encrypt"; it is judged once the metadata says the key exists (no re-login for a
            # request about a key that does not exist).
            if batched:
                return self._batches.call(op, key_id, body)
            return self._transit_op(op, key_id, body, raw=True, suffix=suffix, answers=answers)

        meta: KeyMetadata | BaseException
        result: VaultResponse | BaseException
        cached = self._cache.fresh(key_id)
        if cached is not None:  # the check first: no transit call for a key it refuses
            meta = cached
            check(meta)
            result = await call()
        else:
            if concurrent:
                meta, result = await asyncio.gather(
                    self._crypto_metadata(key_id), call(), return_exceptions=True
                )
            else:
                meta = await self._crypto_metadata(key_id)
                result = await call()
            if isinstance(meta, BaseException):
                raise meta
            check(meta)
        if isinstance(result, BaseException):
            raise result
        if result.status == 403:  # the key exists: re-login (AppRole) and retry once, or fail
            result = await self._transit_op(op, key_id, body, suffix=suffix, answers=answers)
        return meta, result

    async def encrypt(
        self, key_id: str, plaintext: bytes, aad: bytes, check: StateCheck
    ) -> tuple[int, bytes]:
        body: dict[str, Any] = {"plaintext": _b64(plaintext), "associated_data": _b64(aad)}
        cached = self._cache.fresh(key_id)
        if cached is not None and cached.external:
            body["key_version"] = cached.current_version  # (see below)
        # Without disable_upsert, transit would create a missing key on encrypt: then it is
        # only called once the metadata says the key exists.
        meta, resp = await self._checked_transit(
            "encrypt", key_id, body, check, concurrent=self._upsert_disabled, batched=True
        )
        version, sealed = self._encrypted(meta, resp)
        if meta.external and version != meta.current_version:
            # A new imported material waits for RotateKeyOnDemand: transit's latest version
            # holds it, and encrypts with it unless told the key's current version.
            body["key_version"] = meta.current_version
            version, sealed = self._encrypted(
                meta, await self._transit_op("encrypt", key_id, body, answers=())
            )
        return version, sealed

    @staticmethod
    def _encrypted(meta: KeyMetadata, resp: VaultResponse) -> tuple[int, bytes]:
        if resp.not_found_400:
            raise _missing_material(meta)
        if resp.status != 200:
            raise resp.unexpected(f"encrypt with transit key {meta.key_id}")
        return _parse_ciphertext(resp.data.get("ciphertext"))

    async def decrypt(
        self, key_id: str, version: int, sealed: bytes, aad: bytes, check: StateCheck
    ) -> bytes:
        if version < 1:
            check(await self.get_key(key_id))
            raise InvalidCiphertext
        body = {"ciphertext": f"vault:v{version}:{_b64(sealed)}", "associated_data": _b64(aad)}
        _, resp = await self._checked_transit(
            "decrypt", key_id, body, check, concurrent=True, batched=True
        )
        if resp.status == 400:
            # "invalid ciphertext: ...", "cipher: message authentication failed", a version
            # disallowed by policy, a missing transit key: all one error, without detail.
            raise InvalidCiphertext
        if resp.status != 200:
            raise resp.unexpected(f"decrypt with transit key {key_id}")
        return _plaintext_of(resp)

    # -- by key spec: RSA, ECDSA, Ed25519 and HMAC keys (TRANSIT_TYPES). Each runs the service's
    # check on the key's metadata before it looks at transit's answer, so a key of another usage
    # or state gets the same error as on Local.

    async def _key_operation(
        self,
        op: str,
        key_id: str,
        body: Callable[[int], dict[str, Any]],
        check: StateCheck,
        *,
        suffix: str = "",
        answers: tuple[str, ...] = (),
    ) -> tuple[KeyMetadata, VaultResponse]:
        """Transit `op` with `body(version)` for the key's current version, once `check` passed.

        These keys never rotate, so the call for version 1 goes out concurrently with the
        metadata read (one round trip); only a key whose metadata names another version (its
        transit key was rotated before its create completed) is asked again for that one, so
        the signature always matches the public key `public_key` returns.
        """
        meta, resp = await self._checked_transit(
            op,
            key_id,
            body(_FIRST_VERSION),
            check,
            concurrent=True,
            suffix=suffix,
            answers=answers,
        )
        if meta.current_version != _FIRST_VERSION:
            resp = await self._transit_op(
                op, key_id, body(meta.current_version), suffix=suffix, answers=answers
            )
        return meta, resp

    async def public_key(self, key_id: str, check: StateCheck) -> bytes:
        """`GET keys/<key_id>` (concurrently with the metadata): the current version's public
        key as SubjectPublicKeyInfo DER."""
        meta, key = await asyncio.gather(
            self._crypto_metadata(key_id), self._transit_key(key_id), return_exceptions=True
        )
        if isinstance(meta, BaseException):
            raise meta
        check(meta)
        info = keyspecs.spec(meta.key_spec)
        if info.family not in ("rsa", "ecc", "ed25519"):
            raise UnsupportedOperation(f"a {info.name} key has no public key in Vault transit")
        if isinstance(key, KeyNotFound):  # no transit key: never imported, or destroyed
            raise _missing_material(meta) from None
        if isinstance(key, BaseException):
            raise key
        return _public_key_der(key_id, info, key, meta.current_version)

    async def sign(
        self, key_id: str, algorithm: str, message: bytes, message_type: str, check: StateCheck
    ) -> bytes:
        """`sign/<key_id>/<hash>` (Ed25519: `sign/<key_id>`), with `_sign_body`'s parameters."""
        family = _signing_family(algorithm)
        if family is None:  # ML-DSA, Ed25519ph: no such key here; the check refuses most
            check(await self.get_key(key_id))
            raise UnsupportedOperation(f"{algorithm} is not supported by the vault backend")
        suffix = "" if family == "ed25519" else _transit_hash(algorithm)
        params = _sign_body(family, algorithm, message, message_type)
        meta, resp = await self._key_operation(
            "sign", key_id, lambda v: {**params, "key_version": v}, check, suffix=suffix
        )
        if resp.not_found_400:
            raise _missing_material(meta)
        if resp.status != 200:
            raise resp.unexpected(f"sign with transit key {key_id}")
        return _parse_ciphertext(resp.data.get("signature"), "signature")[1]

    async def generate_mac(
        self, key_id: str, algorithm: str, message: bytes, check: StateCheck
    ) -> bytes:
        """`hmac/<key_id>/sha2-<bits>`: the raw HMAC (transit answers `vault:v1:<base64>`)."""
        meta, resp = await self._key_operation(
            "hmac",
            key_id,
            lambda v: {"input": _b64(message), "key_version": v},
            check,
            suffix=_transit_hash(algorithm),
        )
        if resp.not_found_400:
            raise _missing_material(meta)
        if resp.status != 200:
            raise resp.unexpected(f"generate an HMAC with transit key {key_id}")
        return _parse_ciphertext(resp.data.get("hmac"), "HMAC")[1]

    async def decrypt_asymmetric(
        self, key_id: str, algorithm: str, ciphertext: bytes, check: StateCheck
    ) -> bytes:
        """`decrypt/<key_id>` of the raw OAEP bytes as `vault:v<N>:<base64>`. Transit decrypts
        RSA with OAEP, SHA-256 and MGF1-SHA-256, no label, and takes no parameter to change it
        (OpenBao 2.7 ignores `padding_scheme` and `hash_algorithm` with a warning): that is
        RSAES_OAEP_SHA_256, and RSAES_OAEP_SHA_1 is refused (UNSUPPORTED_ALGORITHMS)."""
        if algorithm != "RSAES_OAEP_SHA_256":  # the service's check refuses it first
            check(await self.get_key(key_id))
            raise UnsupportedOperation(UNSUPPORTED_ALGORITHMS.get(algorithm, algorithm))
        encoded = _b64(ciphertext)
        _, resp = await self._key_operation(
            "decrypt",
            key_id,
            lambda v: {"ciphertext": f"vault:v{v}:{encoded}"},
            check,
            answers=_RSA_DECRYPT_FAILED,
        )
        if resp.status == 400 or (resp.status == 500 and _RSA_DECRYPT_FAILED[0] in resp.errors):
            # 500 "failed to RSA decrypt the ciphertext": wrong key, damaged, another padding;
            # 400: a missing transit key. One error, without detail, as AWS.
            raise InvalidCiphertext
        if resp.status != 200:
            raise resp.unexpected(f"decrypt with transit key {key_id}")
        return _plaintext_of(resp)

    # ECDH and ML-KEM keys cannot exist here (supported_specs, unsupported_algorithms): these
    # run the service's check, which refuses any key this backend holds, and refuse.

    async def _no_such_key_type(
        self, key_id: str, check: StateCheck, operation: str
    ) -> UnsupportedOperation:
        check(await self.get_key(key_id))
        return UnsupportedOperation(f"{operation} needs a key spec the Vault backend cannot hold")

    async def derive_shared_secret(
        self, key_id: str, peer_public_key: bytes, check: StateCheck
    ) -> bytes:
        raise await self._no_such_key_type(key_id, check, "DeriveSharedSecret")

    async def decapsulate(self, key_id: str, ciphertext: bytes, check: StateCheck) -> bytes:
        raise await self._no_such_key_type(key_id, check, "Decapsulate")

    # -- aliases --------------------------------------------------------------------------------

    @staticmethod
    def _alias_record(alias: Alias) -> dict[str, Any]:
        return {"name": alias.name, "key_id": alias.key_id, "created_at": alias.created_at}

    @staticmethod
    def _record_alias(data: dict[str, Any]) -> Alias:
        return Alias(str(data["name"]), str(data["key_id"]), float(data["created_at"]))

    async def put_alias(self, alias: Alias, *, replace: bool) -> None:
        path = self._alias_path(alias.name)
        if not replace:
            if await self._kv.write(path, self._alias_record(alias), cas=0) is None:
                raise KeyAlreadyExists(f"An alias with the name {alias.name} already exists")
            return
        for _ in range(_CAS_RETRIES):
            record = await self._kv.read(path)
            if record is None:
                raise AliasNotFound(alias.name)
            existing = self._record_alias(record.data)
            updated = Alias(alias.name, alias.key_id, existing.created_at)
            if await self._kv.write(path, self._alias_record(updated), cas=record.version):
                return
        raise BackendUnavailable(f"could not update {alias.name}: too much contention")

    async def get_alias(self, name: str) -> Alias:
        record = await self._kv.read(self._alias_path(name))
        if record is None:
            raise AliasNotFound(name)
        return self._record_alias(record.data)

    async def delete_alias(self, name: str) -> None:
        path = self._alias_path(name)
        if await self._kv.read(path) is None:
            raise AliasNotFound(name)
        await self._kv.delete(path)

    async def list_aliases(self) -> Sequence[Alias]:
        names = await self._kv.list_tree(f"{self._prefix}/aliases")

        async def read(short: str) -> Alias | None:
            record = await self._kv.read(f"{self._prefix}/aliases/{quote(short, safe='/')}")
            return None if record is None else self._record_alias(record.data)

        found = await _bounded_gather((read(n) for n in names), _READ_CONCURRENCY)
        return sorted((a for a in found if a is not None), key=lambda a: a.name)

    # -- lifecycle ------------------------------------------------------------------------------

    async def status(self) -> BackendStatus:
        """Reachable and unsealed on some address (plus a known auth problem); never raises."""
        try:
            results = await self._transport.health()
            for label, health in results:
                if health.ok:
                    if self._auth.problem:
                        return BackendStatus(False, f"{label}: {self._auth.problem}")
                    return BackendStatus(True, f"{label}: {health.reason}")
            return BackendStatus(False, "; ".join(f"{a}: {h.reason}" for a, h in results))
        except Exception as exc:  # status must answer whatever happens
            return BackendStatus(False, f"status check failed: {type(exc).__name__}")

    async def close(self) -> None:
        await self._batches.aclose()
        await self._transport.close()

    # -- transport and auth state (observability, tests) ----------------------------------------

    @property
    def leader_changes(self) -> int:
        """Times the preferred address moved."""
        return self._transport.leader_changes

    @property
    def auth_refreshes(self) -> int:
        """Token renewals and re-logins since connect."""
        return self._auth.refreshes
