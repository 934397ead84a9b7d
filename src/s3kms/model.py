"""The values the service passes around: frozen dataclasses, no behaviour beyond small derivations."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

# A key name as the admin API accepts it: 1-128 of [A-Za-z0-9._-], starting with a letter or digit.
KEY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class KeyState(enum.Enum):
    """The key state machine. The value is the AWS KMS `KeyState` word."""

    ENABLED = "Enabled"
    DISABLED = "Disabled"
    PENDING_DELETION = "PendingDeletion"
    # An EXTERNAL key without its key material: never imported, deleted, or expired.
    PENDING_IMPORT = "PendingImport"
    # A multi-Region primary key scheduled for deletion while it has replicas: it waits for
    # them to be deleted, then its waiting period (PendingDeletion) begins.
    PENDING_REPLICA_DELETION = "PendingReplicaDeletion"

    @property
    def admin_word(self) -> str:
        """The word the admin API document uses for this state."""
        return _ADMIN_WORDS[self]


_ADMIN_WORDS = {
    KeyState.ENABLED: "enabled",
    KeyState.DISABLED: "disabled",
    KeyState.PENDING_DELETION: "pending_deletion",
    KeyState.PENDING_IMPORT: "pending_import",
    KeyState.PENDING_REPLICA_DELETION: "pending_replica_deletion",
}


class RotationType(enum.Enum):
    AUTOMATIC = "AUTOMATIC"
    ON_DEMAND = "ON_DEMAND"


@dataclass(frozen=True, slots=True)
class KeyVersion:
    version: int
    created_at: float  # epoch seconds
    rotation_type: RotationType | None  # None for the first version


@dataclass(frozen=True, slots=True)
class Grant:
    """A grant on a key (AWS CreateGrant): `operations` of the key for `grantee_principal`,
    while the request's encryption context fits the constraints. Stored in its key's metadata,
    so it is written with check-and-set and reaches every worker and node as key state does."""

    grant_id: str  # 64 lowercase hex characters
    token: str  # the grant token CreateGrant answered (opaque to clients)
    name: str  # "" when the request gave none (CreateGrant's Name idempotency)
    grantee_principal: str  # an ARN, as given
    retiring_principal: str | None
    issuing_account: str  # arn:aws:iam::<account>:root
    operations: tuple[str, ...]  # AWS GrantOperation words, in the order given
    created_at: float  # epoch seconds
    # Constraints (at most one of them set): EncryptionContextSubset, EncryptionContextEquals.
    context_subset: tuple[tuple[str, str], ...] | None = None
    context_equals: tuple[tuple[str, str], ...] | None = None


# Where a key's material came from (AWS OriginType): made by s3kms, or imported (BYOK).
ORIGIN_AWS_KMS = "AWS_KMS"
ORIGIN_EXTERNAL = "EXTERNAL"
# AWS ExpirationModelType.
EXPIRES = "KEY_MATERIAL_EXPIRES"
DOES_NOT_EXPIRE = "KEY_MATERIAL_DOES_NOT_EXPIRE"


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """One imported key material of an EXTERNAL key (AWS's "key material" of ImportKeyMaterial,
    ListKeyRotations and DescribeKey). The material itself is in the keystore, stored as key
    version `version`, the number its ciphertexts name; this is what the service knows of it."""

    version: int
    material_id: str  # 64 lowercase hex: AWS's KeyMaterialId (crypto/wrapping.material_id)
    imported: bool  # False once deleted or expired: the same material may be imported again
    expiration_model: str | None = None  # EXPIRES | DOES_NOT_EXPIRE while imported
    valid_to: float | None = None  # epoch seconds, with EXPIRES
    description: str = ""  # AWS KeyMaterialDescription
    # Imported as NEW_KEY_MATERIAL and waiting for RotateKeyOnDemand (AWS PENDING_ROTATION).
    pending: bool = False
    rotated_at: float | None = None  # when RotateKeyOnDemand made it current; None: the first


@dataclass(frozen=True, slots=True)
class KeyMetadata:
    key_id: str
    state: KeyState
    created_at: float  # epoch seconds
    description: str = ""
    current_version: int = 1
    deletion_date: float | None = None
    pending_window_days: int | None = None
    rotation_enabled: bool = False
    rotation_period_days: int = 365
    next_rotation: float | None = None  # epoch seconds, when automatic rotation is due
    tags: tuple[tuple[str, str], ...] = field(default=())
    # Bumped by every metadata write; the keystore's compare-and-set checks it.
    revision: int = 0
    key_spec: str = "SYMMETRIC_DEFAULT"  # an AWS KeySpec (crypto/keyspecs.py)
    key_usage: str = "ENCRYPT_DECRYPT"  # an AWS KeyUsage the spec allows
    # The key policy as the caller gave it (GetKeyPolicy returns it unchanged); None until one
    # is put: the account's default key policy (s3kms.access), computed, never stored.
    policy: str | None = None
    grants: tuple[Grant, ...] = field(default=())
    origin: str = ORIGIN_AWS_KMS  # ORIGIN_EXTERNAL: material comes from ImportKeyMaterial
    # An EXTERNAL key's materials, by version (empty until the first import). The keystore
    # stores them with the rest of the record, written by the same compare-and-set update.
    materials: tuple[KeyMaterial, ...] = field(default=())

    # A multi-Region key (`mrk-` id): its primary region, and its replicas' regions, in every
    # region's record of it (ReplicateKey and UpdatePrimaryRegion rewrite them all). None, ():
    # a single-Region key. The regions share the key's material (keystore/regional.py).
    primary_region: str | None = None
    replica_regions: tuple[str, ...] = field(default=())
    # A KMIP object's attributes (protocols/kmip/record.py's JSON text, opaque to the service
    # and the keystores, which store it with the record); None: a key not made through KMIP.
    # Only such a key's material may leave the keystore (KMIP Get: KeyService.export_material).
    kmip: str | None = None
    # Terms a protocol finds the key by (KMIP: its owner, and each Name with its owner; opaque
    # strings of [0-9a-z:-]): the keystore indexes them, and `KeyStore.find_keys(term)` answers
    # the keys holding one without reading every key.
    lookup: tuple[str, ...] = field(default=())

    @property
    def multi_region(self) -> bool:
        return self.primary_region is not None

    @property
    def external(self) -> bool:
        return self.origin == ORIGIN_EXTERNAL

    @property
    def enabled(self) -> bool:
        return self.state is KeyState.ENABLED


@dataclass(slots=True)  # not frozen: made per request, and a frozen one costs 3x to build
class LastUse:
    """The last successful cryptographic operation with a key (GetKeyLastUsage)."""

    key_id: str
    operation: str  # the AWS operation name: Encrypt, Sign, GenerateMac, ...
    at: float  # epoch seconds
    request_id: str | None  # the x-amz-request-id of that request (its audit line's request_id)


@dataclass(frozen=True, slots=True)
class Alias:
    name: str  # always starts with "alias/"
    key_id: str
    created_at: float


@dataclass(slots=True)  # not frozen: made per request, and a frozen one costs 3x to build
class DataKey:
    plaintext: bytes
    ciphertext: bytes
    key_id: str

    def __repr__(self) -> str:  # the plaintext data key is a secret
        return f"DataKey(key_id={self.key_id!r}, plaintext=<{len(self.plaintext)} bytes>)"
