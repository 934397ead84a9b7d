"""The Vault keystore: key material in Vault/OpenBao transit, key metadata in Vault KV version 2.

Every KMS node is stateless: a key's state lives only in Vault. The crypto path uses a key's
metadata as this node read it at most `metadata_cache_seconds` (default 1 s) ago (cache.py), so
a key disabled through one node is refused by that node at once and by every other node within
that window; 0 makes every request read it. The layout:

    <mount_path>/keys/<key_id>                      transit key (never exportable) of the type
                                                    TRANSIT_TYPES gives for the key spec
    <kv_mount>/data/<kv_prefix>/keys/<key_id>       KeyMetadata + rotation history, with the key
                                                    policy ("policy": the text as given, or null
                                                    for the default one), the grants ("grants":
                                                    keystore/codec.py's list as one JSON string)
                                                    and the versions ("versions": one JSON string,
                                                    _dump_versions); a record without policy and
                                                    grants (older) has the default policy and no
                                                    grants, one whose versions are a list (older)
                                                    is read, and converted by its next write
    <kv_mount>/data/<kv_prefix>/aliases/<name>      an alias ("alias/" stripped from the name)

Transit key names are the bare key ids: two deployments that must not share keys need separate
transit mounts (kv_prefix separates only the metadata).

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

The other key specs transit holds (RSA, ECDSA P-256/384/521, Ed25519, HMAC) work the same way:
sign, hmac and RSA decrypt run concurrently with the metadata read, the public key comes from
`GET keys/<key_id>` (PEM, or raw Ed25519 bytes) as DER SubjectPublicKeyInfo, and the output is
AWS's byte for byte (the transit parameters are in `_sign_body`, `generate_mac`,
`decrypt_asymmetric`; a signature verifies offline with the public key, an RSA ciphertext made
offline decrypts). What transit cannot compute is in `UNSUPPORTED_ALGORITHMS`; the specs it cannot
hold at all are missing from TRANSIT_TYPES (see docs/vault.md for the matrix).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from s3kms.crypto import keyspecs
from s3kms.errors import (
    AliasNotFound,
    BackendUnavailable,
    InternalError,
    InvalidCiphertext,
    InvalidRequest,
    KeyAlreadyExists,
    KeyNotFound,
    LimitExceeded,
    UnsupportedOperation,
)
from s3kms.keystore.base import BackendStatus, RotationDue, StateCheck, WriteConflict
from s3kms.keystore.codec import GrantsMemo, dump_grants, load_grants
from s3kms.keystore.vault.auth import VaultAuth
from s3kms.keystore.vault.batch import TransitBatcher
from s3kms.keystore.vault.cache import MetadataCache
from s3kms.keystore.vault.kv import KVStore, Record
from s3kms.keystore.vault.settings import VaultSettings
from s3kms.keystore.vault.transport import OutcomeUnknown, VaultResponse, VaultTransport
from s3kms.model import Alias, Grant, KeyMetadata, KeyState, KeyVersion, LastUse, RotationType

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
# Transit's smallest HMAC key (bytes): an HMAC_224 key is 32 bytes instead of AWS's 28. The MAC
# is HMAC-SHA-224 all the same (any key up to the 64-byte block is padded alike); the key's length
# is never visible, as the key never leaves transit.
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
#   17  the record's keys (_meta_to_record);
#   8   its string values: key_id, state, description, key_spec, key_usage, policy, grants and
#       versions (grants and versions are one string each, however many there are);
#   2   per tag (a [key, value] pair).
# So 30 + 2 per tag: 130 with AWS's 50 tags per key. Nothing else in the record grows, so a
# rotation never adds a string, and at most 485 tags fit; a create or update over the limit is
# refused with LimitExceeded before anything is sent. (Versions as a list of objects, as the
# previous release wrote them, took 4 strings each: its record held at most (976 - 2 x tags) / 4
# versions, 243 with 2 tags, and every rotation after that failed once transit had rotated.)
MAX_REQUEST_STRINGS = 1_000
_KV_WRITE_STRINGS = 5


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _meta_to_record(
    meta: KeyMetadata, versions: Sequence[KeyVersion], grants: str | None = None
) -> dict[str, Any]:
    """The KV record of `meta`; `grants`: its grants' text when known (GrantsMemo.dump)."""
    return {
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
    material_exportable = False  # transit keys are created non-exportable
    # The specs transit has a key type for; CreateKey of another spec is refused by the service.
    supported_specs = frozenset(TRANSIT_TYPES)
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

    async def _read_key(self, key_id: str) -> Record:
        if not key_id:
            raise KeyNotFound(key_id=key_id)
        record = await self._kv.read(self._key_path(key_id))
        if record is None:
            raise KeyNotFound(key_id=key_id)
        return record

    # -- keys -----------------------------------------------------------------------------------

    async def create_key(self, meta: KeyMetadata) -> KeyMetadata:
        self._cache.invalidate(meta.key_id)  # (nothing is cached of a missing key; to be sure)
        path = self._key_path(meta.key_id)
        info = keyspecs.spec(meta.key_spec)
        key_type = TRANSIT_TYPES.get(info.name)
        if key_type is None:  # the service refuses it first (supported_specs)
            raise UnsupportedOperation(f"KeySpec {info.name} is not supported by the vault backend")
        # A record too large (too many tags) is refused before the transit key is made.
        _checked_record(_meta_to_record(meta, [KeyVersion(1, meta.created_at, None)]))
        if await self._kv.read(path) is not None:
            raise KeyAlreadyExists(key_id=meta.key_id)
        body: dict[str, Any] = {"type": key_type, "exportable": False}
        if info.family == "hmac":
            body["key_size"] = max(info.size // 8, _HMAC_MIN_KEY_BYTES)
        # Creating a transit key that exists answers 200 with the existing key, so a retry after
        # a half-done create (transit key made, metadata write failed) completes it.
        resp = await self._auth.call(
            "POST", f"{self._transit}/keys/{quote(meta.key_id, safe='')}", json=body
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
        latest = int(key.get("latest_version") or 1)
        times = key.get("keys") or {}

        def created(version: int) -> float:  # symmetric keys: unix time; others: a record
            value = times.get(str(version))
            return float(value) if isinstance(value, int | float) else meta.created_at

        versions = [KeyVersion(1, meta.created_at, None)] + [
            KeyVersion(v, created(v), RotationType.ON_DEMAND) for v in range(2, latest + 1)
        ]
        new = replace(meta, current_version=latest)
        revision = await self._kv.write(
            path, _checked_record(_meta_to_record(new, versions)), cas=0
        )
        if revision is None:
            raise KeyAlreadyExists(key_id=meta.key_id)
        return replace(new, revision=revision)

    async def _transit_key(self, key_id: str) -> dict[str, Any]:
        resp = await self._auth.call("GET", f"{self._transit}/keys/{quote(key_id, safe='')}")
        if resp.not_found:
            raise KeyNotFound(key_id=key_id)
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
        record = await self._read_key(meta.key_id)
        if record.version != meta.revision:
            raise WriteConflict(meta.key_id)
        stored = _record_to_meta(record, self._grants)
        # Rotation owns the version fields; an update changes the rest.
        new = replace(meta, current_version=stored.current_version, created_at=stored.created_at)
        versions = _record_versions(record.data)
        grants = self._grants.dump(meta.key_id, new.grants)
        revision = await self._kv.write(
            self._key_path(meta.key_id),
            _checked_record(_meta_to_record(new, versions, grants)),
            cas=meta.revision,
        )
        if revision is None:
            if await self._kv.read(self._key_path(meta.key_id)) is None:
                raise KeyNotFound(key_id=meta.key_id)
            raise WriteConflict(meta.key_id)
        self._grants.keep(meta.key_id, grants, new.grants)
        return replace(new, revision=revision)

    async def _transit_rotate(self, key_id: str) -> int:
        """Add a transit key version; returns the latest version afterwards.

        A rotate is not idempotent, so it is never blindly resent. When its outcome is unknown
        (a timeout, a dropped connection, or OpenBao's 500 "transaction commit failed", which
        concurrent rotations of one key get although the rotation *was* applied), the key's
        latest version tells: above the version seen before, a new version exists; otherwise
        nothing happened and the rotate is tried again.
        """
        name = quote(key_id, safe="")
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
        await self._read_key(key_id)  # no rotation of a transit key without metadata
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
        return _record_versions((await self._read_key(key_id)).data)

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

    async def delete_key(self, key_id: str) -> None:
        try:
            await self._delete_key(key_id)
        finally:
            self._cache.invalidate(key_id)

    async def _delete_key(self, key_id: str) -> None:
        self._grants.drop(key_id)
        name = quote(key_id, safe="")
        config = await self._auth.call(
            "POST", f"{self._transit}/keys/{name}/config", json={"deletion_allowed": True}
        )
        if config.status in (200, 204):
            resp = await self._auth.call("DELETE", f"{self._transit}/keys/{name}")
            if resp.status not in (200, 204) and not resp.not_found_400:
                raise resp.unexpected(f"delete transit key {key_id}")
        elif not (config.status in (400, 404) and "no existing key" in config.errors):
            raise config.unexpected(f"allow deletion of transit key {key_id}")
        await self._kv.delete(self._key_path(key_id))
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
        path = f"{self._transit}/{op}/{quote(key_id, safe='')}" + (f"/{suffix}" if suffix else "")
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
        body = {"plaintext": _b64(plaintext), "associated_data": _b64(aad)}
        # Without disable_upsert, transit would create a missing key on encrypt: then it is
        # only called once the metadata says the key exists.
        _, resp = await self._checked_transit(
            "encrypt", key_id, body, check, concurrent=self._upsert_disabled, batched=True
        )
        if resp.not_found_400:
            raise KeyNotFound(key_id=key_id)
        if resp.status != 200:
            raise resp.unexpected(f"encrypt with transit key {key_id}")
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
    ) -> VaultResponse:
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
        return resp

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
        resp = await self._key_operation(
            "sign", key_id, lambda v: {**params, "key_version": v}, check, suffix=suffix
        )
        if resp.not_found_400:
            raise KeyNotFound(key_id=key_id)
        if resp.status != 200:
            raise resp.unexpected(f"sign with transit key {key_id}")
        return _parse_ciphertext(resp.data.get("signature"), "signature")[1]

    async def generate_mac(
        self, key_id: str, algorithm: str, message: bytes, check: StateCheck
    ) -> bytes:
        """`hmac/<key_id>/sha2-<bits>`: the raw HMAC (transit answers `vault:v1:<base64>`)."""
        resp = await self._key_operation(
            "hmac",
            key_id,
            lambda v: {"input": _b64(message), "key_version": v},
            check,
            suffix=_transit_hash(algorithm),
        )
        if resp.not_found_400:
            raise KeyNotFound(key_id=key_id)
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
        resp = await self._key_operation(
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
