"""KeyService: the key use cases and the key state machine, on top of one KeyStore.

Both API surfaces (the admin document and the AWS KMS JSON API) call these methods with plain
values. The state machine lives here and only here:

    Enabled          everything
    Disabled         enable, disable, schedule deletion, metadata; crypto -> KeyDisabled
    PendingDeletion  cancel deletion, metadata; crypto, enable, disable -> KeyInvalidState
    PendingImport    an EXTERNAL key without its material (importing.py): import, schedule
                     deletion, metadata; crypto, enable, disable -> KeyInvalidState
    PendingReplicaDeletion
                     a multi-Region primary scheduled for deletion while it has replicas: as
                     PendingDeletion; its waiting period starts when its last replica is gone

Regions: a service serves one region; `in_region` gives another region's view of the same
keystore (keystore/regional.py), and the multi-Region key operations (`replicate`,
`update_primary_region`, rotation and deletion of such keys) write every region's record.

Key references accept a key id, a key ARN, `alias/<name>` or an alias ARN.

Every method about one key takes `access`: the caller's authorisation (a protocol builds it, see
`Principal.gate`), run on the key's current metadata (its key policy and grants) before the state
checks and before anything is answered or written. None: no key-level check (the admin API, which
authorises its `admin:` actions against identity policies only).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from s3kms import granttoken, importing
from s3kms.backup import create_backup
from s3kms.clock import Clock
from s3kms.crypto import asymmetric, blob, keyspecs, wrapping
from s3kms.crypto.context import canonical_context
from s3kms.errors import (
    ConcurrentChange,
    IncorrectKey,
    IncorrectKeyMaterial,
    InvalidCiphertext,
    InvalidGrantId,
    InvalidGrantToken,
    InvalidImportToken,
    InvalidKeyUsage,
    InvalidMac,
    InvalidRequest,
    InvalidSignature,
    KeyAlreadyExists,
    KeyDisabled,
    KeyInvalidState,
    KeyNotFound,
    KMSError,
    LimitExceeded,
    UnsupportedOperation,
    ValidationError,
)
from s3kms.keystore import regional
from s3kms.keystore.base import KeyStore, RotationDue, StateCheck, WriteConflict
from s3kms.keystore.regional import RegionalKeyStore
from s3kms.model import (
    DOES_NOT_EXPIRE,
    KEY_NAME_RE,
    ORIGIN_AWS_KMS,
    ORIGIN_EXTERNAL,
    Alias,
    DataKey,
    Grant,
    KeyMaterial,
    KeyMetadata,
    KeyState,
    KeyVersion,
    LastUse,
    RotationType,
)
from s3kms.request import current_request_id

log = logging.getLogger("s3kms")

DAY = 86400.0
SYMMETRIC = keyspecs.SYMMETRIC_DEFAULT.name
MIN_PENDING_DAYS, MAX_PENDING_DAYS, DEFAULT_PENDING_DAYS = 7, 30, 30
MIN_ROTATION_DAYS, MAX_ROTATION_DAYS, DEFAULT_ROTATION_DAYS = 90, 2560, 365
# Grants per key. AWS's quota is 50,000 ("Grants per KMS key", Resource quotas); s3kms keeps a
# key's grants in its metadata record, which every change of the key rewrites whole (~380 bytes
# a grant), and holds at most this many: on Local a CreateGrant on a key with 5,000 grants takes
# ~22 ms, with 10,000 ~60 ms (measured; the write and fsync of the 3.8 MB row dominate). The
# Vault backend may refuse fewer: its record must fit one storage entry (vault/store.py
# MAX_RECORD_BYTES, about 2,400 grants).
MAX_GRANTS_PER_KEY = 5_000
# Grants for one grantee principal on one key: AWS's quota "Grants for a given principal per
# KMS key" (500, in AWS's resource quotas until 2022).
MAX_GRANTS_PER_GRANTEE = 500
_GRANT_ID = re.compile(r"[0-9a-f]{64}")
# Key spec families whose material can be imported (AWS: symmetric, HMAC, RSA, ECC; s3kms also
# Ed25519, whose PKCS#8 form is as plain). ML-DSA, ML-KEM and SM2 material is made in the KMS.
_IMPORTABLE_FAMILIES = frozenset({"symmetric", "hmac", "rsa", "ecc", "ed25519"})


def check_usable(meta: KeyMetadata) -> None:
    """The state check for every cryptographic operation."""
    if meta.state is KeyState.ENABLED:
        return
    if meta.state is KeyState.DISABLED:
        raise KeyDisabled(key_id=meta.key_id)
    raise KeyInvalidState(f"Key {meta.key_id} {_STATE_WORDS[meta.state]}", key_id=meta.key_id)


# How KeyInvalidState words a state ("Key <id> is pending deletion"; the AWS surface names the
# ARN: "<arn> is pending import.", as AWS answers).
_STATE_WORDS = {
    KeyState.PENDING_DELETION: "is pending deletion",
    KeyState.PENDING_IMPORT: "is pending import",
    KeyState.PENDING_REPLICA_DELETION: "is pending replica deletion",
}
# Views of other regions a service keeps (one per region name seen); past it, built per call.
_MAX_REGION_VIEWS = 256


def _not_primary(meta: KeyMetadata, region: str) -> None:
    """What only a multi-Region key's primary may do (ReplicateKey, UpdatePrimaryRegion, rotation):
    AWS's answer (recorded) names the key's ARN."""
    if meta.primary_region != region:
        raise UnsupportedOperation(
            f"{meta.key_id} is not a multi-region primary key.", key_id=meta.key_id
        )


def _members(meta: KeyMetadata) -> tuple[str, ...]:
    """Every region holding a multi-Region key: its primary's, then its replicas'."""
    assert meta.primary_region is not None
    return (meta.primary_region, *meta.replica_regions)


def next_rotation_after(now: float) -> RotationDue:
    """The rule for a key just rotated at `now`: its next automatic rotation, if enabled."""

    def due(meta: KeyMetadata) -> float | None:
        return now + meta.rotation_period_days * DAY if meta.rotation_enabled else None

    return due


def _not_for(meta: KeyMetadata, operation: str) -> InvalidKeyUsage:
    """AWS's message for a key whose usage does not serve `operation` (the AWS surface names
    the key's ARN where the message starts with its id)."""
    return InvalidKeyUsage(
        f"{meta.key_id} key usage is {meta.key_usage} which is not valid for {operation}.",
        key_id=meta.key_id,
    )


def _incompatible(meta: KeyMetadata, algorithm: str) -> InvalidKeyUsage:
    return InvalidKeyUsage(
        f"Algorithm {algorithm} is incompatible with key spec {meta.key_spec}.",
        key_id=meta.key_id,
    )


def _symmetric_check(operation: str) -> StateCheck:
    """The check for `operation` with SYMMETRIC_DEFAULT: usable, and a symmetric encryption key
    (an HMAC key's bytes must never serve as an AES key)."""

    def check(meta: KeyMetadata) -> None:
        check_usable(meta)
        if meta.key_spec != SYMMETRIC:
            if meta.key_usage != keyspecs.ENCRYPT_DECRYPT:
                raise _not_for(meta, operation)
            raise _incompatible(meta, SYMMETRIC)

    return check


# Built once: the hot path (Encrypt, Decrypt, GenerateDataKey) must not make a closure per call.
_SYMMETRIC_OPERATIONS = (
    "Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext",
)  # fmt: skip
SYMMETRIC_CHECKS = {op: _symmetric_check(op) for op in _SYMMETRIC_OPERATIONS}


def _gated(access: StateCheck | None, check: StateCheck) -> StateCheck:
    """`check` after the caller's `access` (authorisation first, as AWS answers AccessDenied
    before the key's state)."""
    if access is None:
        return check

    def gated(meta: KeyMetadata) -> None:
        access(meta)
        check(meta)

    return gated


def _usage_check(
    usage: str,
    operation: str,
    algorithm: str | None = None,
    unsupported: Mapping[str, str] = keyspecs.UNAVAILABLE_ALGORITHMS,
) -> StateCheck:
    """The check for an operation of `usage` (and `algorithm`): usable, right usage, algorithm
    among the spec's, and one the library and the backend compute (`unsupported`: why not)."""

    def check(meta: KeyMetadata) -> None:
        check_usable(meta)
        if meta.key_usage != usage:
            raise _not_for(meta, operation)
        if algorithm is not None:
            if algorithm not in keyspecs.spec(meta.key_spec).algorithms(usage):
                raise _incompatible(meta, algorithm)
            reason = unsupported.get(algorithm)
            if reason is not None:
                raise UnsupportedOperation(reason)

    return check


def _check_message(algorithm: str, message: bytes, message_type: str) -> None:
    """Sign/Verify: the message's size for its type, and the types the algorithm takes."""
    if message_type == "RAW":
        if len(message) > keyspecs.MAX_MESSAGE:
            raise ValidationError(
                f"Message is too long: RAW messages may hold at most {keyspecs.MAX_MESSAGE} bytes"
            )
        return
    pure = algorithm in ("ED25519_SHA_512",)
    if message_type == "EXTERNAL_MU" and algorithm != "ML_DSA_SHAKE_256":
        raise ValidationError("MessageType EXTERNAL_MU is only valid with ML_DSA_SHAKE_256")
    if message_type == "DIGEST" and (pure or algorithm == "ML_DSA_SHAKE_256"):
        raise ValidationError(f"MessageType DIGEST is not valid with {algorithm}")
    size = keyspecs.DIGEST_SIZES.get(algorithm)
    if size is not None and len(message) != size:
        raise ValidationError(f"Digest is invalid length for algorithm {algorithm}.")


def _rotatable(meta: KeyMetadata) -> None:
    """Only symmetric encryption keys rotate (new material under the same key id)."""
    if meta.key_spec != SYMMETRIC:
        raise UnsupportedOperation("", key_id=meta.key_id)  # AWS: no message (recorded for RSA)


def _auto_rotatable(meta: KeyMetadata) -> None:
    """Automatic rotation makes material; an EXTERNAL key's comes only by import (AWS answers
    EnableKeyRotation so, as for the other operations an origin does not allow)."""
    _rotatable(meta)
    if meta.external:
        raise UnsupportedOperation(
            f"{meta.key_id} origin is {meta.origin} which is not valid for this operation.",
            key_id=meta.key_id,
        )


def _not_pending_import(meta: KeyMetadata) -> None:
    """EnableKey and DisableKey: a key without its material has no state to switch."""
    _not_pending(meta)
    if meta.state is KeyState.PENDING_IMPORT:
        raise KeyInvalidState(f"Key {meta.key_id} is pending import", key_id=meta.key_id)


def _not_pending(meta: KeyMetadata) -> None:
    if meta.state in (KeyState.PENDING_DELETION, KeyState.PENDING_REPLICA_DELETION):
        raise KeyInvalidState(f"Key {meta.key_id} {_STATE_WORDS[meta.state]}", key_id=meta.key_id)


def _constraint(context: Mapping[str, str] | None) -> tuple[tuple[str, str], ...] | None:
    """A grant constraint as the model holds it: sorted pairs (so equal maps compare equal)."""
    return None if context is None else tuple(sorted(context.items()))


def _check_grant_id(grant_id: str) -> None:
    """A grant id is 64 lowercase hex digits (granttoken.py); anything else is not one."""
    if not _GRANT_ID.fullmatch(grant_id):
        raise InvalidGrantId(f"Grant ID {grant_id!r} is not valid")


def _grant_of(meta: KeyMetadata, grant_id: str) -> Grant:
    """The key's grant `grant_id`; NotFoundException when it has none of that id (AWS answers
    RevokeGrant of an unknown grant so: moto issue #5411, checked against AWS)."""
    for grant in meta.grants:
        if grant.grant_id == grant_id:
            return grant
    # (no key_id: the AWS surface would word it as a missing key)
    raise KeyNotFound(f"Grant ID {grant_id} not found")


def new_multi_region_key_id() -> str:
    """`mrk-` and 32 hex digits, as AWS makes a multi-Region key's id."""
    return "mrk-" + uuid.uuid4().hex


def _without_region(region: str, meta: KeyMetadata) -> KeyMetadata:
    """A multi-Region key's record once its replica in `region` is gone."""
    return replace(meta, replica_regions=tuple(r for r in meta.replica_regions if r != region))


def _without_grant(meta: KeyMetadata, grant_id: str) -> KeyMetadata:
    return replace(meta, grants=tuple(g for g in meta.grants if g.grant_id != grant_id))


def validate_key_name(name: str) -> str:
    if not KEY_NAME_RE.fullmatch(name):
        raise InvalidRequest(
            "invalid key name: use 1-128 characters of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class BackendReport:
    """What `/kms/status` shows of the backend."""

    kind: str  # "local" | "vault"
    endpoint: str
    connected: bool
    key_count: int | None  # None when not counted (or the count failed)


@dataclass(frozen=True, slots=True)
class ImportParameters:
    """GetParametersForImport's answer."""

    key_id: str
    token: bytes  # opaque: the keystore's seal of importing.TokenContent
    public_key: bytes  # SubjectPublicKeyInfo DER of the wrapping key
    valid_to: float  # epoch seconds


def _unwrapped(
    info: keyspecs.KeySpecInfo, private_key: bytes, algorithm: str, encrypted: bytes
) -> bytes:
    """The imported material, unwrapped and checked against the key spec (in a thread: RSA
    decryption and an imported RSA key's validation take tens of milliseconds)."""
    if algorithm.startswith("RSAES_OAEP") and info.family == "rsa":
        # AWS: "To import an RSA private key, you must use an RSA_AES wrapping algorithm."
        raise IncorrectKeyMaterial(
            f"{algorithm} cannot wrap RSA key material: use RSA_AES_KEY_WRAP_SHA_1 or _256"
        )
    material = wrapping.unwrap(private_key, algorithm, encrypted)
    if material is None:
        raise InvalidCiphertext
    try:
        return wrapping.check_material(info, material)
    except ValueError as exc:
        raise IncorrectKeyMaterial(str(exc)) from None


@dataclass(frozen=True, slots=True)
class DataKeyPair:
    key_id: str
    private_key: bytes  # PKCS#8 DER: a secret
    private_key_ciphertext: bytes
    public_key: bytes  # SubjectPublicKeyInfo DER

    def __repr__(self) -> str:
        return f"DataKeyPair(key_id={self.key_id!r}, private_key=<{len(self.private_key)} bytes>)"


@dataclass(frozen=True, slots=True)
class Decrypted:
    key_id: str
    plaintext: bytes

    def __repr__(self) -> str:
        return f"Decrypted(key_id={self.key_id!r}, plaintext=<{len(self.plaintext)} bytes>)"


class _KeyPages:
    """KeyService.key_pages. Classes, not async generators: mypyc compiles no async generator
    (hatch_build.py)."""

    def __init__(self, store: KeyStore, prefix: str, page: int) -> None:
        self._store = store
        self._prefix = prefix
        self._page = page
        self._after: str | None = None
        self._done = False

    def __aiter__(self) -> _KeyPages:
        return self

    async def __anext__(self) -> Sequence[KeyMetadata]:
        if self._done:
            raise StopAsyncIteration
        batch = await self._store.list_keys(
            after=self._after, limit=self._page, prefix=self._prefix
        )
        if len(batch) < self._page:
            self._done = True  # the last page
        if not batch:
            raise StopAsyncIteration
        self._after = batch[-1].key_id
        return batch


class _Keys:
    """KeyService.iter_keys: the keys of _KeyPages one by one."""

    def __init__(self, pages: _KeyPages) -> None:
        self._pages = pages
        self._batch: Iterator[KeyMetadata] = iter(())

    def __aiter__(self) -> _Keys:
        return self

    async def __anext__(self) -> KeyMetadata:
        while True:
            meta = next(self._batch, None)
            if meta is not None:
                return meta
            self._batch = iter(await self._pages.__anext__())  # StopAsyncIteration ends it


class KeyService:
    def __init__(
        self,
        store: KeyStore,
        clock: Clock,
        *,
        region: str,
        account_id: str,
        default_key_id: str | None = None,
        regions: Container[str] | None = None,
        home: KeyService | None = None,
    ) -> None:
        """`regions`: the regions served besides `region` (keystore/regional.py; None: this
        one only, and the keystore is used as it is). `home`: the home region's service, when
        this is another region's view of it (`in_region`)."""
        self.clock = clock
        self.region = region
        self._raw = store  # every region's keys (maintenance, backups)
        self._regions = regions
        self._home = home or self
        self.home_region = self._home.region if home is not None else region
        if regions is not None:
            store = RegionalKeyStore(store, region, self.home_region)
        self.store = store
        self._views: dict[str, KeyService] = {}  # (the home service's: other regions' views)
        self.account_id = account_id
        self.default_key_id = default_key_id
        self._arn_prefix = f"arn:aws:kms:{region}:{account_id}:"
        self.arn_prefix = self._arn_prefix
        self._uses: dict[str, LastUse] = {}  # noted since the last flush, by key
        # Keys per state (KeyState values) after the last complete maintenance pass; None
        # before the first one.
        self.key_states: Mapping[str, int] | None = None
        # What neither the library nor this backend computes, and why.
        self._unsupported: Mapping[str, str] = {
            **keyspecs.UNAVAILABLE_ALGORITHMS,
            **store.unsupported_algorithms,
        }

    # -- names ----------------------------------------------------------------------------------

    def key_arn(self, key_id: str) -> str:
        return f"{self._arn_prefix}key/{key_id}"

    def key_arn_in(self, region: str, key_id: str) -> str:
        return f"arn:aws:kms:{region}:{self.account_id}:key/{key_id}"

    # -- regions --------------------------------------------------------------------------------

    def serves(self, region: str) -> bool:
        return region == self.home_region or (self._regions is not None and region in self._regions)

    def in_region(self, region: str) -> KeyService:
        """This service as the region `region` sees it (a request's SigV4 scope names it)."""
        if region == self.region:
            return self
        if not self.serves(region):
            raise UnsupportedOperation(f"Region {region} is not served by this KMS")
        return self._view(region)

    def _view(self, region: str) -> KeyService:
        """A region's view, served or not (maintenance walks every region in the keystore)."""
        home = self._home
        if region == home.region:
            return home
        view = home._views.get(region)
        if view is None:
            view = KeyService(
                home._raw,
                home.clock,
                region=region,
                account_id=home.account_id,
                regions=home._regions if home._regions is not None else frozenset({region}),
                home=home,
            )
            if len(home._views) < _MAX_REGION_VIEWS:
                home._views[region] = view
        return view

    def _services(self) -> list[KeyService]:
        """The home service and every region view it made (what a flush covers)."""
        home = self._home
        return [home, *home._views.values()]

    async def close_store(self) -> None:
        """Store what every region noted, then close the keystore (all regions share it)."""
        for service in self._services():
            try:
                await service.flush_last_uses()
            except Exception:
                log.exception("could not store the keys' last uses before closing the keystore")
        await self._raw.close()

    def alias_arn(self, alias_name: str) -> str:
        return f"{self._arn_prefix}{alias_name}"

    async def resolve(self, ref: str) -> str:
        """The key id a reference names: key id, key ARN, alias name or alias ARN."""
        if ref.startswith("arn:"):
            parts = ref.split(":", 5)
            if len(parts) != 6 or parts[2] != "kms":
                raise KeyNotFound(f"Invalid arn {ref}")
            ref = parts[5]
            if ref.startswith("key/"):
                return ref[4:]
        if ref.startswith("alias/"):
            return (await self.store.get_alias(ref)).key_id
        return ref

    # -- lifecycle ------------------------------------------------------------------------------

    async def create_key(
        self,
        key_id: str | None = None,
        *,
        description: str = "",
        tags: Sequence[tuple[str, str]] = (),
        key_spec: str = keyspecs.SYMMETRIC_DEFAULT.name,
        key_usage: str | None = None,
        policy: str | None = None,
        origin: str = ORIGIN_AWS_KMS,
        multi_region: bool = False,
        kmip: str | None = None,
        state: KeyState = KeyState.ENABLED,
        lookup: tuple[str, ...] = (),
    ) -> KeyMetadata:
        """A new key of `key_spec` for `key_usage` (None: ENCRYPT_DECRYPT, which only a symmetric
        key may leave out, as in AWS); refused when the spec, usage or backend do not fit.
        `policy`: its key policy, stored as given (the caller validated it); None: the default.
        `kmip`: a KMIP object's attributes (the KMIP API's record; its material may be
        exported); `state`: the state of a key made with material (a KMIP object is made
        Disabled while it is Pre-Active)."""
        info = self.spec_for_new_key(key_spec, key_usage, kmip=kmip is not None)
        if origin == ORIGIN_EXTERNAL and info.family not in _IMPORTABLE_FAMILIES:
            raise UnsupportedOperation(f"KeySpec {info.name} does not support Origin EXTERNAL")
        if multi_region:
            if origin == ORIGIN_EXTERNAL:
                raise UnsupportedOperation(
                    "multi-Region keys with imported key material are not supported by s3kms"
                )
            key_id = key_id or new_multi_region_key_id()
        key_id = validate_key_name(key_id) if key_id is not None else str(uuid.uuid4())
        meta = KeyMetadata(
            key_id=key_id,
            # An EXTERNAL key has no material until ImportKeyMaterial.
            state=KeyState.PENDING_IMPORT if origin == ORIGIN_EXTERNAL else state,
            origin=origin,
            primary_region=self.region if multi_region else None,
            created_at=float(int(self.clock.now())),
            description=description,
            tags=tuple(tags),
            key_spec=info.name,
            key_usage=key_usage or keyspecs.ENCRYPT_DECRYPT,
            policy=policy,
            kmip=kmip,
            lookup=lookup,
        )
        return await self.store.create_key(meta)

    @staticmethod
    def new_key_id() -> str:
        """A fresh key id, as CreateKey makes them."""
        return str(uuid.uuid4())

    def spec_for_new_key(
        self, key_spec: str, key_usage: str | None, *, kmip: bool = False
    ) -> keyspecs.KeySpecInfo:
        """The spec's row, when a key of it for `key_usage` can be made here; AWS's member rules
        first, then what the library and this backend can hold. `kmip`: a KMIP object, which
        may also be of the KMIP-only specs and needs a backend whose material is exportable."""
        info = keyspecs.KEY_SPECS.get(key_spec)
        if info is None or (info.kmip_only and not kmip):
            raise InvalidRequest(f"{key_spec} is not a key spec")
        if kmip and info.name not in self.store.kmip_specs:
            raise UnsupportedOperation(
                f"the {self.store.kind} backend does not hold KMIP objects of key spec {info.name}"
            )
        if key_usage is None and not info.symmetric:
            raise ValidationError(
                "You must specify a KeyUsage value for all KMS keys except for symmetric "
                "encryption keys."
            )
        usage = key_usage or keyspecs.ENCRYPT_DECRYPT
        if usage not in info.usages:
            raise ValidationError(f"KeyUsage {usage} is not compatible with KeySpec {info.name}")
        if not info.available:
            raise UnsupportedOperation(info.unavailable_reason)
        if info.name not in self.store.supported_specs:
            raise UnsupportedOperation(
                f"KeySpec {info.name} is not supported by the {self.store.kind} backend"
            )
        refused = self.store.unsupported_algorithms
        algorithms = info.algorithms(usage)
        if algorithms and all(a in refused for a in algorithms):
            raise UnsupportedOperation(
                f"KeyUsage {usage} of KeySpec {info.name} cannot be served: "
                f"{refused[algorithms[0]]}"
            )
        return info

    def _usage_check(
        self,
        usage: str,
        operation: str,
        algorithm: str | None = None,
        access: StateCheck | None = None,
    ) -> StateCheck:
        """`_usage_check`, refusing also the algorithms this backend cannot compute."""
        return _gated(access, _usage_check(usage, operation, algorithm, self._unsupported))

    async def describe(self, ref: str, *, access: StateCheck | None = None) -> KeyMetadata:
        meta = await self.store.get_key(await self.resolve(ref))
        if access is not None:
            access(meta)
        return meta

    async def find_keys(self, term: str, *, limit: int = 10_000) -> list[KeyMetadata]:
        """The keys whose lookup terms hold `term` (KeyMetadata.lookup), read and checked: an
        index entry of a key that no longer holds the term is left out."""
        found = []
        for key_id in await self.store.find_keys(term, limit=limit):
            try:
                meta = await self.store.get_key(key_id)
            except KeyNotFound:
                continue
            if term in meta.lookup:
                found.append(meta)
        return found

    async def list_keys(
        self, *, after: str | None = None, limit: int = 1000, prefix: str = ""
    ) -> Sequence[KeyMetadata]:
        """One page of keys in key id order, after the key id `after`."""
        return await self.store.list_keys(after=after, limit=limit, prefix=prefix)

    async def backend_report(self, *, count_keys: bool = True) -> BackendReport:
        store = self.store
        status = await store.status()
        key_count: int | None = None
        connected = status.connected
        if connected and count_keys:
            try:
                key_count = await store.count_keys()
            except KMSError:
                connected = False
        return BackendReport(store.kind, store.endpoint, connected, key_count)

    async def backup(
        self,
        passphrase: str,
        *,
        authorize_key: Callable[[str], None] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> bytes:
        """An encrypted backup of every key and alias, of every region (see backup.py)."""
        return await create_backup(
            self._raw, passphrase, progress=progress, authorize_key=authorize_key
        )

    @staticmethod
    def key_algorithms(meta: KeyMetadata) -> tuple[str, tuple[str, ...]]:
        """(the KeyMetadata field that lists them, the algorithms) of the key's usage."""
        info = keyspecs.spec(meta.key_spec)
        return keyspecs.ALGORITHM_FIELDS[meta.key_usage], info.algorithms(meta.key_usage)

    @staticmethod
    def legacy_spec(meta: KeyMetadata) -> str | None:
        """The deprecated `CustomerMasterKeySpec` AWS still reports, when the spec has one."""
        return keyspecs.spec(meta.key_spec).legacy_name

    @staticmethod
    def has_material_ids(meta: KeyMetadata) -> bool:
        """Whether AWS reports the key's KeyMaterialIds: for symmetric encryption keys only (the
        keys that can hold several materials)."""
        return meta.key_spec == SYMMETRIC

    @staticmethod
    def material_id(meta: KeyMetadata, version: int) -> str | None:
        """The KeyMaterialId of a key version: an imported material's, or the one of material
        s3kms made; None for a version an EXTERNAL key has no material record of."""
        if meta.external:
            return next((m.material_id for m in meta.materials if m.version == version), None)
        return wrapping.generated_material_id(meta.key_id, version)

    @staticmethod
    def ciphertext_key_id(ciphertext: bytes) -> str:
        """The key a ciphertext names (to authorise against it before decrypting anything)."""
        return blob.decode(ciphertext).key_id

    def key_pages(
        self, *, prefix: str = "", page: int = 1000
    ) -> AsyncIterator[Sequence[KeyMetadata]]:
        """Every key in key id order, a page at a time (never all at once)."""
        return _KeyPages(self.store, prefix, page)

    def iter_keys(self, *, prefix: str = "", page: int = 1000) -> AsyncIterator[KeyMetadata]:
        return _Keys(_KeyPages(self.store, prefix, page))

    async def _modify(
        self,
        ref: str,
        change: Callable[[KeyMetadata], KeyMetadata],
        access: StateCheck | None = None,
    ) -> KeyMetadata:
        """Read-modify-write with compare-and-set; a lost race re-reads and re-applies (and
        re-authorises: the policy may have changed too)."""
        key_id = await self.resolve(ref)
        for _ in range(20):
            meta = await self.store.get_key(key_id)
            if access is not None:
                access(meta)
            new = change(meta)
            if new == meta:
                return meta
            try:
                return await self.store.update_key(new)
            except WriteConflict:
                continue
        raise ConcurrentChange(f"Key {key_id} is being changed by concurrent requests; retry")

    async def enable(self, ref: str, *, access: StateCheck | None = None) -> KeyMetadata:
        def change(meta: KeyMetadata) -> KeyMetadata:
            _not_pending_import(meta)
            return replace(meta, state=KeyState.ENABLED)

        return await self._modify(ref, change, access)

    async def disable(self, ref: str, *, access: StateCheck | None = None) -> KeyMetadata:
        def change(meta: KeyMetadata) -> KeyMetadata:
            _not_pending_import(meta)
            return replace(meta, state=KeyState.DISABLED)

        return await self._modify(ref, change, access)

    async def schedule_deletion(
        self, ref: str, days: int = DEFAULT_PENDING_DAYS, *, access: StateCheck | None = None
    ) -> KeyMetadata:
        if not MIN_PENDING_DAYS <= days <= MAX_PENDING_DAYS:
            raise InvalidRequest(
                f"PendingWindowInDays must be between {MIN_PENDING_DAYS} and {MAX_PENDING_DAYS}"
            )
        now = self.clock.now()

        def change(meta: KeyMetadata) -> KeyMetadata:
            _not_pending(meta)
            if meta.primary_region == self.region and meta.replica_regions:
                # A primary waits for its replicas' deletion; its waiting period starts then.
                return replace(
                    meta,
                    state=KeyState.PENDING_REPLICA_DELETION,
                    deletion_date=None,
                    pending_window_days=days,
                )
            return replace(
                meta,
                state=KeyState.PENDING_DELETION,
                deletion_date=float(int(now + days * DAY)),
                pending_window_days=days,
            )

        return await self._modify(ref, change, access)

    async def cancel_deletion(self, ref: str, *, access: StateCheck | None = None) -> KeyMetadata:
        def change(meta: KeyMetadata) -> KeyMetadata:
            if meta.state not in (KeyState.PENDING_DELETION, KeyState.PENDING_REPLICA_DELETION):
                raise KeyInvalidState(
                    f"Key {meta.key_id} is not pending deletion", key_id=meta.key_id
                )
            # A key whose material is gone waits for it again (imported keys).
            state = (
                KeyState.PENDING_IMPORT
                if meta.external and not importing.all_imported(meta.materials)
                else KeyState.DISABLED
            )
            return replace(meta, state=state, deletion_date=None, pending_window_days=None)

        return await self._modify(ref, change, access)

    async def update_description(
        self, ref: str, description: str, *, access: StateCheck | None = None
    ) -> KeyMetadata:
        def change(meta: KeyMetadata) -> KeyMetadata:
            _not_pending(meta)
            return replace(meta, description=description)

        return await self._modify(ref, change, access)

    async def tag(
        self, ref: str, tags: Mapping[str, str], *, access: StateCheck | None = None
    ) -> KeyMetadata:
        def change(meta: KeyMetadata) -> KeyMetadata:
            _not_pending(meta)
            merged = dict(meta.tags) | dict(tags)
            return replace(meta, tags=tuple(sorted(merged.items())))

        return await self._modify(ref, change, access)

    async def untag(
        self, ref: str, keys: Sequence[str], *, access: StateCheck | None = None
    ) -> KeyMetadata:
        def change(meta: KeyMetadata) -> KeyMetadata:
            _not_pending(meta)
            return replace(meta, tags=tuple(t for t in meta.tags if t[0] not in set(keys)))

        return await self._modify(ref, change, access)

    # -- rotation -------------------------------------------------------------------------------

    async def rotate(
        self,
        ref: str,
        rotation_type: RotationType = RotationType.ON_DEMAND,
        *,
        access: StateCheck | None = None,
    ) -> KeyMetadata:
        key_id = await self.resolve(ref)
        meta = await self.store.get_key(key_id)
        if access is not None:
            access(meta)
        check_usable(meta)
        _rotatable(meta)
        now = self.clock.now()
        if meta.external:  # the material imported for it (NEW_KEY_MATERIAL) becomes current
            arn = self.key_arn(key_id)

            def change(current: KeyMetadata) -> KeyMetadata:
                check_usable(current)
                return importing.plan_rotation(current, now, arn)

            return await self._modify(key_id, change, access)
        if meta.multi_region:
            _not_primary(meta, self.region)
        return await self._rotate_now(key_id, rotation_type, now)

    async def _rotate_now(
        self, key_id: str, rotation_type: RotationType, now: float
    ) -> KeyMetadata:
        """Rotate; a multi-Region primary's replicas share its material, and take its new
        current version and next rotation (AWS synchronises rotation to the replicas)."""
        new = await self.store.rotate_key(key_id, rotation_type, now, next_rotation_after(now))
        if new.multi_region:
            await self._to_replicas(
                new,
                lambda m: replace(
                    m,
                    current_version=max(m.current_version, new.current_version),
                    next_rotation=new.next_rotation,
                ),
            )
        return new

    async def _to_replicas(
        self, primary: KeyMetadata, change: Callable[[KeyMetadata], KeyMetadata]
    ) -> None:
        """Apply `change` to the key's record in every other region holding it (one that is
        gone meanwhile is skipped: its deletion already took it out)."""
        for region in _members(primary):
            if region == self.region:
                continue
            try:
                await self._view(region)._modify(primary.key_id, change)
            except KeyNotFound:
                continue

    async def set_rotation(
        self,
        ref: str,
        enabled: bool,
        period_days: int | None = None,
        *,
        access: StateCheck | None = None,
    ) -> KeyMetadata:
        if period_days is not None and not MIN_ROTATION_DAYS <= period_days <= MAX_ROTATION_DAYS:
            raise InvalidRequest(
                f"RotationPeriodInDays must be between {MIN_ROTATION_DAYS} and {MAX_ROTATION_DAYS}"
            )
        now = self.clock.now()

        def change(meta: KeyMetadata) -> KeyMetadata:
            check_usable(meta)
            _auto_rotatable(meta)
            if meta.multi_region:
                _not_primary(meta, self.region)  # a shared property, set on the primary
            if not enabled:
                return replace(meta, rotation_enabled=False, next_rotation=None)
            period = period_days or meta.rotation_period_days
            return replace(
                meta,
                rotation_enabled=True,
                rotation_period_days=period,
                next_rotation=float(int(now + period * DAY)),
            )

        new = await self._modify(ref, change, access)
        if new.multi_region:
            await self._to_replicas(
                new,
                lambda m: replace(
                    m,
                    rotation_enabled=new.rotation_enabled,
                    rotation_period_days=new.rotation_period_days,
                    next_rotation=new.next_rotation,
                ),
            )
        return new

    async def versions(self, ref: str, *, access: StateCheck | None = None) -> Sequence[KeyVersion]:
        key_id = await self.resolve(ref)
        meta = await self.store.get_key(key_id)
        if access is not None:
            access(meta)
        if meta.primary_region not in (None, self.region):
            # A replica's versions are its primary's (they share material and rotations).
            with contextlib.suppress(KeyNotFound):
                return await self._view(meta.primary_region).store.list_versions(key_id)
        return await self.store.list_versions(key_id)

    # -- multi-Region keys ----------------------------------------------------------------------

    async def replicate(
        self,
        ref: str,
        replica_region: str,
        *,
        description: str = "",
        tags: Sequence[tuple[str, str]] = (),
        policy: str | None = None,
        access: StateCheck | None = None,
    ) -> KeyMetadata:
        """ReplicateKey: the key's replica in `replica_region`, with the same id, material and
        rotation, and its own description, tags, key policy and state. Every region's record
        of the key then lists the new replica."""
        meta = await self.describe(ref, access=access)
        if not meta.multi_region:
            raise UnsupportedOperation(
                f"Unable to replicate a non-MultiRegion key {meta.key_id}", key_id=meta.key_id
            )
        _not_primary(meta, self.region)
        check_usable(meta)
        if not self.serves(replica_region):
            raise UnsupportedOperation(f"Region {replica_region} is not served by this KMS")
        if replica_region in _members(meta):
            raise KeyAlreadyExists(
                f"Unable to replicate key {meta.key_id} to region {replica_region}, as the key "
                "already exists there"
            )
        regions = (*meta.replica_regions, replica_region)
        replica = KeyMetadata(
            key_id=meta.key_id,
            state=KeyState.ENABLED,
            created_at=float(int(self.clock.now())),
            description=description,
            current_version=meta.current_version,
            rotation_enabled=meta.rotation_enabled,
            rotation_period_days=meta.rotation_period_days,
            next_rotation=meta.next_rotation,
            tags=tuple(tags),
            key_spec=meta.key_spec,
            key_usage=meta.key_usage,
            policy=policy,
            origin=meta.origin,
            primary_region=self.region,
            replica_regions=regions,
        )
        target = self._view(replica_region)
        try:
            made = await target.store.create_key(replica, replica=True)
        except KeyAlreadyExists:
            made = None  # (a replica made by an earlier try whose last step did not happen)
        await self._modify(meta.key_id, lambda m: replace(m, replica_regions=regions))
        await self._to_replicas(
            replace(meta, replica_regions=regions),
            lambda m: replace(m, replica_regions=regions) if m.primary_region else m,
        )
        if made is None:
            raise KeyAlreadyExists(
                f"Unable to replicate key {meta.key_id} to region {replica_region}, as the key "
                "already exists there"
            )
        return made

    async def update_primary_region(
        self, ref: str, primary_region: str, *, access: StateCheck | None = None
    ) -> KeyMetadata:
        """UpdatePrimaryRegion: the replica in `primary_region` becomes the primary and this
        region's key a replica; every region's record says so."""
        meta = await self.describe(ref, access=access)
        if not meta.multi_region:
            raise UnsupportedOperation(
                f"{meta.key_id} is not a multi-Region key", key_id=meta.key_id
            )
        _not_primary(meta, self.region)
        check_usable(meta)
        if primary_region == self.region:
            return meta
        if primary_region not in meta.replica_regions:
            raise KeyNotFound(f"Key {meta.key_id} has no replica in {primary_region}")
        replicas = tuple(r for r in _members(meta) if r != primary_region)

        def switch(m: KeyMetadata) -> KeyMetadata:
            return replace(m, primary_region=primary_region, replica_regions=replicas)

        # The new primary first: a crash after it leaves two records naming it primary (the
        # old one answers as a replica already), never none.
        await self._view(primary_region)._modify(meta.key_id, switch)
        new = await self._modify(meta.key_id, switch)
        await self._to_replicas(new, switch)
        return new

    async def _destroy(self, meta: KeyMetadata) -> None:
        """Delete a key whose waiting period is over; a multi-Region key's material stays while
        another region holds the key, and the others' records stop listing this region."""
        if not meta.multi_region:
            await self.store.delete_key(meta.key_id)
            return
        others = tuple(r for r in _members(meta) if r != self.region)
        await self.store.delete_key(meta.key_id, keep_material=bool(others))
        for region in others:
            try:
                await self._view(region)._modify(
                    meta.key_id, functools.partial(_without_region, self.region)
                )
            except KeyNotFound:
                continue

    # -- imported key material (importing.py has the rules) -------------------------------------

    async def import_parameters(
        self,
        ref: str,
        wrapping_algorithm: str,
        wrapping_key_spec: str,
        *,
        access: StateCheck | None = None,
    ) -> ImportParameters:
        """GetParametersForImport: a fresh RSA wrapping key and the token that carries its
        private half, sealed by the keystore, valid for 24 hours."""
        meta = await self.describe(ref, access=access)
        importing.require_external(meta)
        _not_pending(meta)
        private, public = await asyncio.to_thread(wrapping.new_wrapping_key, wrapping_key_spec)
        expires = float(int(self.clock.now() + importing.TOKEN_VALIDITY))
        content = importing.TokenContent(meta.key_id, wrapping_algorithm, expires, private)
        token = await self.store.seal(importing.TOKEN_PURPOSE, importing.token_plaintext(content))
        return ImportParameters(meta.key_id, token, public, expires)

    async def import_material(
        self,
        ref: str,
        token: bytes,
        encrypted_material: bytes,
        *,
        expiration_model: str | None = None,
        valid_to: float | None = None,
        import_type: str | None = None,
        material_id: str | None = None,
        description: str | None = None,
        access: StateCheck | None = None,
    ) -> tuple[KeyMetadata, KeyMaterial]:
        """ImportKeyMaterial: unwrap the material with the token's key, check it fits the key,
        and store it with the key's new metadata in one write."""
        key_id = await self.resolve(ref)
        meta = await self.describe(key_id, access=access)
        importing.require_external(meta)
        _not_pending(meta)
        now = self.clock.now()
        try:
            plaintext = await self.store.unseal(importing.TOKEN_PURPOSE, token)
        except InvalidCiphertext:
            raise InvalidImportToken from None
        content = importing.read_token(plaintext, key_id, now)
        model, until = importing.expiration(expiration_model, valid_to, now)
        info = keyspecs.spec(meta.key_spec)
        material = await asyncio.to_thread(
            _unwrapped, info, content.private_key, content.algorithm, encrypted_material
        )
        return await self._store_material(
            meta,
            material,
            symmetric=info.symmetric,
            import_type=import_type,
            expected_id=material_id,
            expiration_model=model,
            valid_to=until,
            description=description,
            access=access,
        )

    async def _store_material(
        self,
        meta: KeyMetadata,
        material: bytes,
        *,
        symmetric: bool,
        import_type: str | None,
        expected_id: str | None,
        expiration_model: str,
        valid_to: float | None,
        description: str | None,
        access: StateCheck | None,
        state: KeyState | None = None,
    ) -> tuple[KeyMetadata, KeyMaterial]:
        """Plan the import of checked, unwrapped `material` (importing.plan_import) and write
        it with the key's new metadata; a lost race re-reads, re-authorises and re-plans.
        `state`: the key's state after it, in the same write (else the import's rule)."""
        key_id = meta.key_id
        material_id = wrapping.material_id(key_id, material)
        for _ in range(20):
            new, record = importing.plan_import(
                meta,
                material_id,
                symmetric=symmetric,
                import_type=import_type,
                expected_id=expected_id,
                expiration_model=expiration_model,
                valid_to=valid_to,
                description=description,
                key_arn=self.key_arn(key_id),
            )
            if state is not None:
                new = replace(new, state=state)
            try:
                return await self.store.set_material(new, record.version, material), record
            except WriteConflict:
                meta = await self.describe(key_id, access=access)
        raise ConcurrentChange(f"Key {key_id} is being changed by concurrent requests; retry")

    async def create_with_material(
        self,
        key_id: str,
        material: bytes,
        *,
        key_spec: str,
        key_usage: str | None = None,
        kmip: str | None = None,
        state: KeyState = KeyState.ENABLED,
        lookup: tuple[str, ...] = (),
    ) -> KeyMetadata:
        """An EXTERNAL key of `key_spec` made with `material` at once, never expiring: a KMIP
        Register (`kmip`: its record; `state`: Disabled while the object is Pre-Active). The
        key exists without material for a moment: a crash there leaves a key in PendingImport,
        never a key with half its material."""
        info = self.spec_for_new_key(key_spec, key_usage, kmip=kmip is not None)
        try:
            material = wrapping.check_material(info, material)
        except ValueError as exc:
            raise IncorrectKeyMaterial(str(exc)) from None
        if info.family not in _IMPORTABLE_FAMILIES | {"aes", "data", "public"}:
            raise UnsupportedOperation(f"KeySpec {info.name} does not support Origin EXTERNAL")
        meta = KeyMetadata(
            key_id=validate_key_name(key_id),
            state=KeyState.PENDING_IMPORT,
            origin=ORIGIN_EXTERNAL,
            created_at=float(int(self.clock.now())),
            key_spec=info.name,
            key_usage=key_usage or keyspecs.ENCRYPT_DECRYPT,
            kmip=kmip,
            lookup=lookup,
        )
        meta = await self.store.create_key(meta)
        stored, _ = await self._store_material(
            meta,
            material,
            symmetric=info.symmetric,
            import_type=None,
            expected_id=None,
            expiration_model=DOES_NOT_EXPIRE,
            valid_to=None,
            description=None,
            access=None,
            state=state,
        )
        return stored

    async def export_material(
        self, ref: str, *, access: StateCheck | None = None
    ) -> tuple[KeyMetadata, bytes]:
        """A KMIP object's current material (KMIP Get). Keys made through any other API are
        never extractable: their material stays in the keystore whatever a policy says."""
        meta = await self.describe(ref, access=access)
        if meta.kmip is None:
            raise UnsupportedOperation(
                f"the material of key {meta.key_id} is not extractable: it was made through the "
                "AWS or admin API",
                key_id=meta.key_id,
            )
        return meta, await self.store.export_material(meta.key_id, meta.current_version)

    async def modify(
        self,
        ref: str,
        change: Callable[[KeyMetadata], KeyMetadata],
        *,
        access: StateCheck | None = None,
    ) -> KeyMetadata:
        """Apply `change` to a KMIP object's metadata (its record and the state it implies),
        with compare-and-set; UnsupportedOperation for a key not made through KMIP."""

        def kmip_change(meta: KeyMetadata) -> KeyMetadata:
            if meta.kmip is None:
                raise UnsupportedOperation(
                    f"key {meta.key_id} was not made through KMIP: change it through the API "
                    "that made it",
                    key_id=meta.key_id,
                )
            new = change(meta)
            # What a KMIP change may touch: its record and lookup terms, the key's state and
            # description.
            return replace(
                meta,
                kmip=new.kmip,
                lookup=new.lookup,
                state=new.state,
                description=new.description,
            )

        return await self._modify(ref, kmip_change, access)

    async def destroy_now(self, ref: str, *, access: StateCheck | None = None) -> KeyMetadata:
        """Delete a KMIP object and its material at once (KMIP Destroy, which has no waiting
        period); UnsupportedOperation for a key made through another API (ScheduleKeyDeletion
        is its way)."""
        meta = await self.describe(ref, access=access)
        if meta.kmip is None:
            raise UnsupportedOperation(
                f"key {meta.key_id} was not made through KMIP: schedule its deletion instead",
                key_id=meta.key_id,
            )
        await self._destroy(meta)
        return meta

    async def create_imported_key(self, key_id: str, material: bytes) -> KeyMetadata:
        """A symmetric EXTERNAL key made with `material` (32 bytes) at once, never expiring: the
        KES API's key/import, whose client hands the material itself over mutual TLS. A retry
        after a failure between the two writes (the key made, its material not yet) finishes
        the import; any other existing key is KeyAlreadyExists."""
        try:
            material = wrapping.check_material(keyspecs.SYMMETRIC_DEFAULT, material)
        except ValueError as exc:
            raise IncorrectKeyMaterial(str(exc)) from None
        try:
            meta = await self.create_key(key_id, origin=ORIGIN_EXTERNAL)
        except KeyAlreadyExists:
            meta = await self.store.get_key(key_id)
            if not (meta.external and not meta.materials and meta.key_spec == SYMMETRIC):
                raise
        stored, _ = await self._store_material(
            meta,
            material,
            symmetric=True,
            import_type=None,
            expected_id=None,
            expiration_model=DOES_NOT_EXPIRE,
            valid_to=None,
            description=None,
            access=None,
        )
        return stored

    async def delete_material(
        self, ref: str, material_id: str | None = None, *, access: StateCheck | None = None
    ) -> tuple[KeyMetadata, KeyMaterial]:
        """DeleteImportedKeyMaterial: destroy a material (None: the current one)."""
        key_id = await self.resolve(ref)
        return await self._drop_material(
            key_id, lambda meta: importing.plan_delete(meta, material_id), access
        )

    async def _drop_material(
        self,
        key_id: str,
        plan: Callable[[KeyMetadata], tuple[KeyMetadata, KeyMaterial]],
        access: StateCheck | None = None,
    ) -> tuple[KeyMetadata, KeyMaterial]:
        for _ in range(20):
            meta = await self.store.get_key(key_id)
            if access is not None:
                access(meta)
            new, target = plan(meta)
            if new is meta:  # already gone
                return meta, target
            try:
                return await self.store.set_material(new, target.version, None), target
            except WriteConflict:
                continue
        raise ConcurrentChange(f"Key {key_id} is being changed by concurrent requests; retry")

    async def _expire_materials(self, meta: KeyMetadata, now: float) -> KeyMetadata:
        """The maintenance pass: delete every material of the key whose ValidTo has passed."""
        while (gone := importing.expired(meta, now)) is not None:

            def plan(
                current: KeyMetadata, target: KeyMaterial = gone
            ) -> tuple[KeyMetadata, KeyMaterial]:
                same = next(
                    (m for m in current.materials if m.material_id == target.material_id), target
                )
                return importing.without(current, same), same

            try:
                meta, _ = await self._drop_material(meta.key_id, plan)
            except UnsupportedOperation as exc:
                # The backend cannot destroy it (Vault: one version of several): the key is
                # still made unusable until the material is imported again.
                log.warning("key %s: expired key material kept: %s", meta.key_id, exc.message)
                current = await self.store.get_key(meta.key_id)
                meta = await self.store.update_key(importing.without(current, gone))
        return meta

    # -- crypto ---------------------------------------------------------------------------------

    async def encrypt(
        self,
        ref: str,
        plaintext: bytes,
        context: Mapping[str, str] | None = None,
        operation: str = "Encrypt",
        *,
        access: StateCheck | None = None,
    ) -> tuple[str, bytes]:
        """Returns (key id, ciphertext blob)."""
        key_id = await self.resolve(ref)
        header = blob.header(key_id)
        check = _gated(access, SYMMETRIC_CHECKS[operation])
        version, sealed = await self.store.encrypt(
            key_id, plaintext, header + canonical_context(context), check
        )
        self._note_use(key_id, operation)
        return key_id, blob.assemble(header, version, sealed)

    async def generate_data_key(
        self,
        ref: str,
        size: int,
        context: Mapping[str, str] | None = None,
        operation: str = "GenerateDataKey",
        *,
        access: StateCheck | None = None,
    ) -> DataKey:
        plaintext = os.urandom(size)  # fresh every call; never cached or reused
        key_id, ciphertext = await self.encrypt(ref, plaintext, context, operation, access=access)
        return DataKey(plaintext, ciphertext, key_id)

    async def generate_data_key_pair(
        self,
        ref: str,
        pair_spec: str,
        context: Mapping[str, str] | None = None,
        operation: str = "GenerateDataKeyPair",
        *,
        access: StateCheck | None = None,
    ) -> DataKeyPair:
        """A fresh key pair of `pair_spec`; its private key (PKCS#8 DER) encrypted under the
        symmetric key `ref` with the encryption context, as a ciphertext blob."""
        info = keyspecs.KEY_SPECS.get(pair_spec)
        if info is None or not info.asymmetric:
            raise InvalidRequest(f"{pair_spec} is not a key pair spec")
        if not info.available:
            raise UnsupportedOperation(info.unavailable_reason)
        key_id = await self.resolve(ref)
        check = _gated(access, SYMMETRIC_CHECKS[operation])
        check(await self.store.get_key(key_id))  # before a second of RSA-4096 work
        # An RSA-4096 pair takes about a second: not on the event loop.
        private, public = await asyncio.to_thread(asymmetric.generate_pair, info)
        key_id, ciphertext = await self.encrypt(key_id, private, context, operation, access=access)
        return DataKeyPair(key_id, private, ciphertext, public)

    async def decrypt(
        self,
        ciphertext: bytes,
        context: Mapping[str, str] | None = None,
        expected_ref: str | None = None,
        operation: str = "Decrypt",
        *,
        access: StateCheck | None = None,
    ) -> Decrypted:
        parsed = blob.decode(ciphertext)
        if expected_ref is not None and await self.resolve(expected_ref) != parsed.key_id:
            if access is not None:  # a caller not allowed the ciphertext's key learns nothing more
                try:
                    access(await self.store.get_key(parsed.key_id))
                except KeyNotFound:
                    raise InvalidCiphertext from None
            raise IncorrectKey
        try:
            plaintext = await self.store.decrypt(
                parsed.key_id,
                parsed.key_version,
                parsed.sealed,
                parsed.aad(canonical_context(context)),
                _gated(access, SYMMETRIC_CHECKS[operation]),
            )
        except KeyNotFound:
            # The blob names a key that does not exist: to the caller it is just a bad ciphertext.
            raise InvalidCiphertext from None
        self._note_use(parsed.key_id, operation)
        return Decrypted(parsed.key_id, plaintext)

    async def re_encrypt(
        self,
        ciphertext: bytes,
        source_context: Mapping[str, str] | None,
        destination_ref: str,
        destination_context: Mapping[str, str] | None,
        source_ref: str | None = None,
        source_algorithm: str = SYMMETRIC,
        destination_algorithm: str = SYMMETRIC,
        *,
        source_access: StateCheck | None = None,
        destination_access: StateCheck | None = None,
    ) -> tuple[str, str, bytes]:
        """Returns (source key id, destination key id, new ciphertext). An RSA source needs
        `source_ref` (its ciphertext names no key); the plaintext never leaves the service."""
        if source_algorithm == SYMMETRIC:
            decrypted = await self.decrypt(
                ciphertext, source_context, source_ref, "ReEncrypt", access=source_access
            )
        else:
            if source_ref is None:
                raise ValidationError(f"SourceKeyId is required to decrypt with {source_algorithm}")
            decrypted = await self.decrypt_asymmetric(
                source_ref, ciphertext, source_algorithm, "ReEncrypt", access=source_access
            )
        if destination_algorithm == SYMMETRIC:
            key_id, new = await self.encrypt(
                destination_ref,
                decrypted.plaintext,
                destination_context,
                "ReEncrypt",
                access=destination_access,
            )
        else:
            key_id, new = await self.encrypt_asymmetric(
                destination_ref,
                decrypted.plaintext,
                destination_algorithm,
                "ReEncrypt",
                access=destination_access,
            )
        return decrypted.key_id, key_id, new

    # -- crypto by key spec (crypto/keyspecs.py) --------------------------------------------------

    async def public_key(
        self, ref: str, *, access: StateCheck | None = None
    ) -> tuple[KeyMetadata, bytes]:
        """An asymmetric key's metadata and public key (SubjectPublicKeyInfo DER)."""
        key_id = await self.resolve(ref)
        meta = await self.store.get_key(key_id)
        if access is not None:
            access(meta)
        if not keyspecs.spec(meta.key_spec).asymmetric:
            raise UnsupportedOperation(
                f"{meta.key_id} is a {meta.key_spec} key: only asymmetric keys have a public key",
                key_id=meta.key_id,
            )
        return meta, await self.store.public_key(key_id, _gated(access, check_usable))

    async def sign(
        self,
        ref: str,
        message: bytes,
        message_type: str,
        algorithm: str,
        *,
        access: StateCheck | None = None,
    ) -> tuple[str, bytes]:
        """(key id, signature)."""
        _check_message(algorithm, message, message_type)
        key_id = await self.resolve(ref)
        check = self._usage_check(keyspecs.SIGN_VERIFY, "Sign", algorithm, access)
        signature = await self.store.sign(key_id, algorithm, message, message_type, check)
        self._note_use(key_id, "Sign")
        return key_id, signature

    async def verify(
        self,
        ref: str,
        message: bytes,
        message_type: str,
        algorithm: str,
        signature: bytes,
        *,
        access: StateCheck | None = None,
    ) -> str:
        """The key id when the signature is valid; InvalidSignature otherwise."""
        _check_message(algorithm, message, message_type)
        key_id = await self.resolve(ref)
        check = self._usage_check(keyspecs.SIGN_VERIFY, "Verify", algorithm, access)
        public = await self.store.public_key(key_id, check)
        if not asymmetric.verify(public, algorithm, message, message_type, signature):
            raise InvalidSignature(key_id=key_id)
        self._note_use(key_id, "Verify")
        return key_id

    async def generate_mac(
        self, ref: str, message: bytes, algorithm: str, *, access: StateCheck | None = None
    ) -> tuple[str, bytes]:
        key_id = await self.resolve(ref)
        check = self._usage_check(keyspecs.GENERATE_VERIFY_MAC, "GenerateMac", algorithm, access)
        tag = await self.store.generate_mac(key_id, algorithm, message, check)
        self._note_use(key_id, "GenerateMac")
        return key_id, tag

    async def verify_mac(
        self,
        ref: str,
        message: bytes,
        algorithm: str,
        mac: bytes,
        *,
        access: StateCheck | None = None,
    ) -> str:
        """The key id when the MAC is valid; InvalidMac otherwise."""
        key_id = await self.resolve(ref)
        check = self._usage_check(keyspecs.GENERATE_VERIFY_MAC, "VerifyMac", algorithm, access)
        expected = await self.store.generate_mac(key_id, algorithm, message, check)
        if not hmac.compare_digest(expected, mac):
            raise InvalidMac(key_id=key_id)
        self._note_use(key_id, "VerifyMac")
        return key_id

    async def encrypt_asymmetric(
        self,
        ref: str,
        plaintext: bytes,
        algorithm: str,
        operation: str = "Encrypt",
        *,
        access: StateCheck | None = None,
    ) -> tuple[str, bytes]:
        """RSA OAEP with the key's public half: (key id, the raw OAEP ciphertext)."""
        key_id = await self.resolve(ref)
        meta = await self.store.get_key(key_id)
        self._usage_check(keyspecs.ENCRYPT_DECRYPT, "Encrypt", algorithm, access)(meta)
        limit = keyspecs.spec(meta.key_spec).max_plaintext(algorithm)
        if len(plaintext) > limit:
            raise ValidationError(
                f"Algorithm {algorithm} and key spec {meta.key_spec} cannot encrypt data larger "
                f"than {limit} bytes."
            )
        public = await self.store.public_key(key_id, _gated(access, check_usable))
        ciphertext = asymmetric.rsa_encrypt(public, algorithm, plaintext)
        self._note_use(key_id, operation)
        return key_id, ciphertext

    async def decrypt_asymmetric(
        self,
        ref: str,
        ciphertext: bytes,
        algorithm: str,
        operation: str = "Decrypt",
        *,
        access: StateCheck | None = None,
    ) -> Decrypted:
        key_id = await self.resolve(ref)
        check = self._usage_check(keyspecs.ENCRYPT_DECRYPT, "Decrypt", algorithm, access)
        plaintext = await self.store.decrypt_asymmetric(key_id, algorithm, ciphertext, check)
        self._note_use(key_id, operation)
        return Decrypted(key_id, plaintext)

    async def derive_shared_secret(
        self, ref: str, peer_public_key: bytes, *, access: StateCheck | None = None
    ) -> tuple[str, bytes]:
        key_id = await self.resolve(ref)
        check = self._usage_check(keyspecs.KEY_AGREEMENT, "DeriveSharedSecret", "ECDH", access)
        try:
            secret = await self.store.derive_shared_secret(key_id, peer_public_key, check)
        except ValueError:
            raise ValidationError("") from None  # AWS answers a bad PublicKey with no message
        self._note_use(key_id, "DeriveSharedSecret")
        return key_id, secret

    async def encapsulate(
        self, ref: str, *, access: StateCheck | None = None
    ) -> tuple[str, bytes, bytes]:
        """ML-KEM with the key's public half: (key id, shared secret, its ciphertext)."""
        key_id = await self.resolve(ref)
        check = self._usage_check(keyspecs.ENCAPSULATE_DECAPSULATE, "Encapsulate", "ML_KEM", access)
        secret, ciphertext = asymmetric.encapsulate(await self.store.public_key(key_id, check))
        self._note_use(key_id, "Encapsulate")
        return key_id, secret, ciphertext

    async def decapsulate(
        self, ref: str, ciphertext: bytes, *, access: StateCheck | None = None
    ) -> tuple[str, bytes]:
        key_id = await self.resolve(ref)
        check = self._usage_check(keyspecs.ENCAPSULATE_DECAPSULATE, "Decapsulate", "ML_KEM", access)
        try:
            secret = await self.store.decapsulate(key_id, ciphertext, check)
        except ValueError:
            raise InvalidCiphertext from None
        self._note_use(key_id, "Decapsulate")
        return key_id, secret

    # -- last use (GetKeyLastUsage) ---------------------------------------------------------------

    def _note_use(self, key_id: str, operation: str) -> None:
        """Remember a successful cryptographic operation; `flush_last_uses` stores it. A dict
        write on the hot path: the keystore sees one write per key per flush, not per request."""
        self._uses[key_id] = LastUse(key_id, operation, self.clock.now(), current_request_id.get())

    async def flush_last_uses(self) -> None:
        """Store the uses noted since the last flush (the background pass; at shutdown)."""
        if not self._uses:
            return
        uses, self._uses = self._uses, {}
        try:
            await self.store.record_last_uses(list(uses.values()))
        except BaseException:
            for key_id, use in uses.items():  # keep them for the next pass, newer ones first
                self._uses.setdefault(key_id, use)
            raise

    async def last_usage(
        self, ref: str, *, access: StateCheck | None = None
    ) -> tuple[KeyMetadata, float, LastUse | None]:
        """(the key, when tracking began for it, its last use): this node's newest noted use,
        else the stored one (other nodes' uses arrive with their next flush)."""
        key_id = await self.resolve(ref)
        meta = await self.store.get_key(key_id)
        if access is not None:
            access(meta)
        since = max(await self.store.usage_tracking_since(), meta.created_at)
        noted = self._uses.get(key_id)
        stored = await self.store.last_use(key_id)
        candidates = [u for u in (noted, stored) if u is not None]
        return meta, since, max(candidates, key=lambda u: u.at) if candidates else None

    # -- aliases --------------------------------------------------------------------------------

    async def create_alias(
        self, name: str, target_ref: str, *, access: StateCheck | None = None
    ) -> None:
        key_id = await self.resolve(target_ref)
        meta = await self.store.get_key(key_id)
        if access is not None:
            access(meta)
        _not_pending(meta)
        await self.store.put_alias(Alias(name, key_id, self.clock.now()), replace=False)

    async def update_alias(
        self,
        name: str,
        target_ref: str,
        *,
        expected_key_id: str | None = None,
        access: StateCheck | None = None,
    ) -> None:
        """Point the alias at another key; `expected_key_id` is the target the caller was
        authorised against, and a concurrent retarget in between is refused, not overwritten.
        `access` is checked on the new target."""
        key_id = await self.resolve(target_ref)
        meta = await self.store.get_key(key_id)
        if access is not None:
            access(meta)
        _not_pending(meta)
        current = await self.store.get_alias(name)
        if expected_key_id is not None and current.key_id != expected_key_id:
            raise ConcurrentChange(f"Alias {name} was retargeted by a concurrent request; retry")
        await self.store.put_alias(replace(current, key_id=key_id), replace=True)

    async def delete_alias(self, name: str) -> None:
        await self.store.delete_alias(name)

    async def aliases(self, key_ref: str | None = None) -> Sequence[Alias]:
        found = await self.store.list_aliases()
        if key_ref is None:
            return found
        key_id = await self.resolve(key_ref)
        await self.store.get_key(key_id)
        return [a for a in found if a.key_id == key_id]

    # -- key policies and grants ------------------------------------------------------------------
    #
    # Both live in the key's metadata and are written by the same compare-and-set `_modify` as a
    # state change, so they reach every worker and node as key state does, survive rotation and
    # enable/disable, and die with the key. The protocols validate a policy's text and a grant's
    # operations and principals (s3kms.access) before calling these; the service stores them.
    #
    # Key states (AWS, "Key states of AWS KMS keys",
    # https://docs.aws.amazon.com/kms/latest/developerguide/key-state.html, its table):
    # PutKeyPolicy, GetKeyPolicy, ListGrants, ListRetirableGrants, RetireGrant and RevokeGrant
    # succeed in every state; CreateGrant only on an Enabled key: Disabled answers
    # DisabledException ("[1] <key ARN> is disabled"), PendingDeletion DisabledException or
    # KMSInvalidStateException ("[2] or [3] <key ARN> is pending deletion"), so it takes the state
    # check of the cryptographic operations (`check_usable`).

    async def forget(self, key_id: str) -> None:
        """Drop this node's cached metadata of `key_id` (KeyStore.forget): for a request whose
        grant token names a grant this node has not seen yet (created through another node
        within the backend's cache window)."""
        await self.store.forget(key_id)

    async def put_key_policy(
        self, ref: str, policy: str, *, access: StateCheck | None = None
    ) -> KeyMetadata:
        """Replace the key's policy with `policy`, stored exactly as given (GetKeyPolicy returns
        it unchanged; `KeyMetadata.policy` of `describe`)."""

        def change(meta: KeyMetadata) -> KeyMetadata:
            return replace(meta, policy=policy)

        return await self._modify(ref, change, access)

    async def create_grant(
        self,
        ref: str,
        *,
        grantee_principal: str,
        operations: Sequence[str],
        retiring_principal: str | None = None,
        name: str = "",
        context_subset: Mapping[str, str] | None = None,
        context_equals: Mapping[str, str] | None = None,
        access: StateCheck | None = None,
    ) -> Grant:
        """A new grant on the key (its id, token and creation time made here), or, when `name`
        is given and a grant of that name on the key has every other parameter the same, that
        grant (AWS CreateGrant's Name: "you can retry a CreateGrant request with identical
        parameters; if the grant already exists, the original GrantId is returned without
        creating a new grant"); the same name with other parameters is a new grant.

        Refused (LimitExceeded) past MAX_GRANTS_PER_KEY grants on the key or
        MAX_GRANTS_PER_GRANTEE for one grantee principal.

        AWS answers a new grant token to every CreateGrant, even one that returns an existing
        grant ("All grant tokens for the same grant ID can be used interchangeably"), and so
        does s3kms (granttoken.py: a nonce in every token)."""
        issuer = f"arn:aws:iam::{self.account_id}:root"
        ops = tuple(operations)
        subset = _constraint(context_subset)
        equals = _constraint(context_equals)
        grant_id = granttoken.new_grant_id()
        created_at = self.clock.now()
        answer: list[Grant] = []  # what the attempt that was written made or found

        def change(meta: KeyMetadata) -> KeyMetadata:
            answer.clear()
            check_usable(meta)
            if name:
                for grant in meta.grants:
                    if (
                        grant.name == name
                        and grant.grantee_principal == grantee_principal
                        and grant.retiring_principal == retiring_principal
                        and sorted(grant.operations) == sorted(ops)
                        and grant.context_subset == subset
                        and grant.context_equals == equals
                    ):
                        answer.append(
                            replace(grant, token=granttoken.encode(meta.key_id, grant.grant_id))
                        )
                        return meta  # unchanged: _modify writes nothing
            if len(meta.grants) >= MAX_GRANTS_PER_KEY:
                raise LimitExceeded(
                    f"Key {meta.key_id} has {len(meta.grants)} grants, the most s3kms allows on "
                    f"one key ({MAX_GRANTS_PER_KEY}); retire or revoke grants first",
                    key_id=meta.key_id,
                )
            same = sum(1 for g in meta.grants if g.grantee_principal == grantee_principal)
            if same >= MAX_GRANTS_PER_GRANTEE:
                raise LimitExceeded(
                    f"Key {meta.key_id} has {same} grants for {grantee_principal}, the most "
                    f"for one grantee principal ({MAX_GRANTS_PER_GRANTEE}); retire or revoke "
                    "grants first",
                    key_id=meta.key_id,
                )
            grant = Grant(
                grant_id=grant_id,
                token=granttoken.encode(meta.key_id, grant_id),
                name=name,
                grantee_principal=grantee_principal,
                retiring_principal=retiring_principal,
                issuing_account=issuer,
                operations=ops,
                created_at=created_at,
                context_subset=subset,
                context_equals=equals,
            )
            answer.append(grant)
            return replace(meta, grants=(*meta.grants, grant))

        await self._modify(ref, change, access)
        return answer[0]

    async def list_grants(self, ref: str, *, access: StateCheck | None = None) -> Sequence[Grant]:
        """The key's grants in creation order (the caller filters and pages)."""
        return (await self.describe(ref, access=access)).grants

    async def revoke_grant(
        self, ref: str, grant_id: str, *, access: StateCheck | None = None
    ) -> None:
        """Delete the grant. An id that is no grant id: InvalidGrantId; no such grant on the
        key: NotFoundException (`KeyNotFound`, "Grant ID ... not found")."""
        _check_grant_id(grant_id)

        def change(meta: KeyMetadata) -> KeyMetadata:
            _grant_of(meta, grant_id)
            return _without_grant(meta, grant_id)

        await self._modify(ref, change, access)

    async def retire_grant(
        self, ref: str, grant_id: str, *, check: Callable[[KeyMetadata, Grant], None]
    ) -> None:
        """Delete the grant once `check(meta, grant)` passed (it raises when the caller may not
        retire it: who may is the protocol's rule). Unknown ids as `revoke_grant`."""
        _check_grant_id(grant_id)

        def change(meta: KeyMetadata) -> KeyMetadata:
            check(meta, _grant_of(meta, grant_id))
            return _without_grant(meta, grant_id)

        await self._modify(ref, change)

    async def grant_by_token(self, token: str) -> tuple[str, Grant]:
        """(key id, grant) a grant token names, read fresh (never from a crypto-path cache).
        A token s3kms did not issue: InvalidGrantToken; one whose key or grant is gone:
        NotFoundException (`KeyNotFound`), as for an unknown grant id."""
        decoded = granttoken.decode(token)
        if decoded is None:
            raise InvalidGrantToken
        key_id, grant_id = decoded
        return key_id, _grant_of(await self.store.get_key(key_id), grant_id)

    async def retirable_grants(self, retiring_principal: str) -> list[tuple[str, Grant]]:
        """Every (key id, grant) whose retiring principal is `retiring_principal`, by key id
        and then creation order (ListRetirableGrants; a scan of every key)."""
        found: list[tuple[str, Grant]] = []
        async for meta in self.iter_keys():
            found += [
                (meta.key_id, g) for g in meta.grants if g.retiring_principal == retiring_principal
            ]
        return found

    # -- background work ------------------------------------------------------------------------

    async def run_due_work(self) -> tuple[int, int]:
        """Delete keys whose deletion date passed, rotate keys whose rotation is due, expire
        imported key material, in every region of the keystore.

        Returns (deleted, rotated). Called periodically by the server. A pass that walks every
        key also leaves `key_states`: how many keys are in each state after it (the metrics'
        keys by state, without a walk of their own).
        """
        for service in self._services():
            try:
                await service.flush_last_uses()
            except KMSError as exc:  # kept for the next pass; never a reason to skip due work
                log.warning("could not store the keys' last uses: %s", exc.message)
        now = self.clock.now()
        deleted = rotated = 0
        states = dict.fromkeys((state.value for state in KeyState), 0)
        home = self._home
        after: str | None = None
        while True:  # the raw keystore: every region's keys, a page at a time
            batch = await home._raw.list_keys(after=after, limit=1000)
            for stored in batch:
                region, bare = regional.split(stored.key_id, home.region)
                view = home._view(region)
                state, gone, turned = await view._maintain(replace(stored, key_id=bare), now)
                deleted += gone
                rotated += turned
                if state is not None:
                    states[state.value] += 1
            if len(batch) < 1000:
                break
            after = batch[-1].key_id
        self.key_states = states
        return deleted, rotated

    async def _maintain(self, meta: KeyMetadata, now: float) -> tuple[KeyState | None, bool, bool]:
        """One key's due work: (its state after it, None once deleted; deleted; rotated)."""
        if meta.state is KeyState.PENDING_DELETION and (meta.deletion_date or 0) <= now:
            await self._destroy(meta)
            return None, True, False
        if meta.state is KeyState.PENDING_REPLICA_DELETION and not meta.replica_regions:
            # Its last replica is gone: the waiting period begins.
            days = meta.pending_window_days or DEFAULT_PENDING_DAYS

            def start(m: KeyMetadata) -> KeyMetadata:
                if m.state is not KeyState.PENDING_REPLICA_DELETION or m.replica_regions:
                    return m
                return replace(
                    m, state=KeyState.PENDING_DELETION, deletion_date=float(int(now + days * DAY))
                )

            meta = await self._modify(meta.key_id, start)
        if meta.materials and importing.expired(meta, now) is not None:
            meta = await self._expire_materials(meta, now)
        if (
            meta.rotation_enabled
            and meta.state is KeyState.ENABLED
            and meta.next_rotation is not None
            and meta.next_rotation <= now
            and meta.primary_region in (None, self.region)  # a replica follows its primary
        ):
            await self._rotate_now(meta.key_id, RotationType.AUTOMATIC, now)
            return meta.state, False, True
        return meta.state, False, False
