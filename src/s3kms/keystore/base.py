"""The KeyStore protocol: what the service needs from a backend, and nothing about HTTP.

A keystore stores key metadata and aliases and does the cryptography with key material it never
hands out. It does not enforce the key state machine (the service does); it does enforce
uniqueness (`create_key` raises KeyAlreadyExists) and compare-and-set on metadata (`update_key`
raises WriteConflict when another writer got there first, and the service retries).

Key ids may carry a region qualifier (`~<region>~<id>`, keystore/regional.py); a keystore stores
a key's material under `regional.material_name(key_id)`, the bare id, so that the regions of a
multi-Region key share it.

A key's metadata includes its key policy (`KeyMetadata.policy`, the text as given, or None for
the default one) and its grants (`KeyMetadata.grants`): a keystore stores and returns them with
the rest of the record, written by the same compare-and-set update, so they reach every worker and
node exactly as a state change does, survive rotation, and are destroyed with the key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from s3kms.model import Alias, KeyMetadata, KeyVersion, LastUse, RotationType

# Raises when the key's state forbids the operation (the service owns the state machine).
StateCheck: TypeAlias = Callable[[KeyMetadata], None]


class WriteConflict(Exception):
    """A compare-and-set metadata write lost to a concurrent writer; re-read and retry."""


# The next automatic rotation of a key just rotated (epoch seconds), or None: the service's rule.
RotationDue: TypeAlias = Callable[[KeyMetadata], float | None]


@dataclass(frozen=True, slots=True)
class BackendStatus:
    connected: bool
    detail: str = ""


class KeyStore(Protocol):
    kind: str  # "local" | "vault"
    endpoint: str  # shown by /kms/status: the data directory or the Vault address
    # Whether key material can leave the backend (a backup that restores elsewhere): Local yes;
    # Vault no, its transit keys are not exportable.
    material_exportable: bool
    # The key specs (crypto/keyspecs.py) this backend can hold; CreateKey of another is refused.
    supported_specs: frozenset[str]
    # The key specs of which this backend holds KMIP objects (keys with `meta.kmip`), whose
    # material `export_material` releases; empty: the KMIP API cannot store objects here.
    kmip_specs: frozenset[str]
    # Algorithms of those specs that this backend cannot compute, each with the reason: an
    # operation asking for one is refused with it, after the key's state and usage checks
    # (DescribeKey still lists it, as AWS does), and CreateKey refuses a key usage none of whose
    # algorithms remain (KEY_AGREEMENT without ECDH).
    unsupported_algorithms: Mapping[str, str]

    async def create_key(self, meta: KeyMetadata, *, replica: bool = False) -> KeyMetadata:
        """Create a key with fresh material (version 1). KeyAlreadyExists when the id is taken.
        An EXTERNAL key (`meta.external`) is created without material: `set_material` brings it.
        `replica`: a multi-Region key's replica in another region, whose material (under the
        same bare id) exists already: only its record is written."""
        ...

    async def set_material(
        self, meta: KeyMetadata, version: int, material: bytes | None
    ) -> KeyMetadata:
        """Write `meta` as `update_key` does (compare-and-set on `meta.revision`, WriteConflict,
        its current version too) and store `material` as key version `version` of an EXTERNAL
        key, replacing what that version held; or, with None, destroy that version's material.
        Returns `meta` with revision+1.

        Nothing is half done: the metadata and the material change in one transaction, or,
        where the backend has none, material is stored before the metadata names it and
        destroyed only after the metadata stopped naming it. A backend that cannot do what is
        asked (Vault transit cannot destroy one version of a key) raises UnsupportedOperation
        before it writes anything."""
        ...

    async def seal(self, purpose: str, data: bytes) -> bytes:
        """Encrypt a secret the service hands to a client and gets back later (an import token
        holds its wrapping key's private half), so that any node of this backend can open it.
        `purpose` is bound to it: `unseal` under another purpose fails."""
        ...

    async def unseal(self, purpose: str, sealed: bytes) -> bytes:
        """What `seal` sealed; InvalidCiphertext when it is not authentic or of another purpose."""
        ...

    async def get_key(self, key_id: str) -> KeyMetadata:
        """Current metadata; KeyNotFound when absent. Never stale for a state change."""
        ...

    async def forget(self, key_id: str) -> None:
        """Drop whatever this node caches of the key's metadata, so that its next read, on the
        crypto path too, is fresh: a request names a grant (by its token) that another node
        created within the backend's cache window. A backend whose cache is never stale does
        nothing. Never raises for a key that does not exist."""
        ...

    async def find_keys(self, term: str, *, limit: int) -> Sequence[str]:
        """Up to `limit` ids of keys whose `meta.lookup` holds `term`, sorted. A backend whose
        index is written apart from the record (Vault) may also answer a key that no longer
        holds it, never miss one that does: the caller reads each key and checks."""
        ...

    async def list_keys(
        self, *, after: str | None, limit: int, prefix: str = ""
    ) -> Sequence[KeyMetadata]:
        """Up to `limit` keys with id > `after` that start with `prefix`, sorted by key id."""
        ...

    async def count_keys(self) -> int: ...

    async def update_key(self, meta: KeyMetadata) -> KeyMetadata:
        """Write `meta` if the stored revision is still `meta.revision`; returns it with revision+1.
        Every field is written but the key id, spec, usage, origin and creation date, which never
        change (the current version does: RotateKeyOnDemand of an EXTERNAL key)."""
        ...

    async def rotate_key(
        self, key_id: str, rotation_type: RotationType, now: float, next_rotation: RotationDue
    ) -> KeyMetadata:
        """Add a new key version made of fresh material and make it current; store
        `next_rotation(meta)` (the service's rule, given the key as read in the same write) as
        the key's next automatic rotation."""
        ...

    async def list_versions(self, key_id: str) -> Sequence[KeyVersion]: ...

    async def delete_key(self, key_id: str, *, keep_material: bool = False) -> None:
        """Destroy the key material, its metadata and its aliases. Idempotent. `keep_material`:
        leave the material, which other regions' replicas of a multi-Region key still use
        (keystore/regional.py: material is stored under the bare key id)."""
        ...

    async def export_material(self, key_id: str, version: int) -> bytes:
        """The material of a KMIP object's key version (KMIP Get), as `set_material` took it or
        `create_key` made it. Only a key whose metadata has `kmip` is ever asked: `create_key`
        and `set_material` store such a key's material so that it can be released (Vault:
        an exportable transit key, or KV where transit has no such key type). KeyNotFound
        when the key or version does not exist."""
        ...

    async def export_versions(self, key_id: str) -> Sequence[tuple[KeyVersion, bytes | None]]:
        """Every version of a key with its material, or None where the backend never releases it
        (for an encrypted backup only)."""
        ...

    async def import_key(
        self, meta: KeyMetadata, versions: Sequence[tuple[KeyVersion, bytes]], *, overwrite: bool
    ) -> None:
        """Store a key with the given material (a restore); KeyAlreadyExists unless `overwrite`.
        A backend whose material is not exportable refuses with UnsupportedOperation."""
        ...

    async def encrypt(
        self, key_id: str, plaintext: bytes, aad: bytes, check: StateCheck
    ) -> tuple[int, bytes]:
        """AES-GCM under the key's current version: `(version, nonce || ciphertext || tag)`.

        `check(meta)` is called with the key's current metadata and raises when the key's state
        forbids the operation; nothing is returned unless it passed. A backend may fetch the
        metadata and do the crypto concurrently (one round trip), but must call `check` first.
        """
        ...

    async def decrypt(
        self, key_id: str, version: int, sealed: bytes, aad: bytes, check: StateCheck
    ) -> bytes:
        """Open what `encrypt` returned, after `check(meta)` passed. Bad input: InvalidCiphertext."""
        ...

    # -- by key spec (see crypto/keyspecs.py); each calls `check(meta)` before any crypto ------

    async def public_key(self, key_id: str, check: StateCheck) -> bytes:
        """An asymmetric key's public half, SubjectPublicKeyInfo DER."""
        ...

    async def sign(
        self, key_id: str, algorithm: str, message: bytes, message_type: str, check: StateCheck
    ) -> bytes:
        """A signature by an asymmetric SIGN_VERIFY key (message RAW, DIGEST or EXTERNAL_MU)."""
        ...

    async def generate_mac(
        self, key_id: str, algorithm: str, message: bytes, check: StateCheck
    ) -> bytes:
        """The HMAC of `message` under an HMAC key."""
        ...

    async def decrypt_asymmetric(
        self, key_id: str, algorithm: str, ciphertext: bytes, check: StateCheck
    ) -> bytes:
        """Open an RSA OAEP ciphertext; InvalidCiphertext when it does not open."""
        ...

    async def derive_shared_secret(
        self, key_id: str, peer_public_key: bytes, check: StateCheck
    ) -> bytes:
        """ECDH with the key's private half and the peer's public key (DER); ValueError on a
        key of another curve."""
        ...

    async def decapsulate(self, key_id: str, ciphertext: bytes, check: StateCheck) -> bytes:
        """ML-KEM: the shared secret of a ciphertext made with the key's public half."""
        ...

    # -- last use (GetKeyLastUsage) ------------------------------------------------------------

    async def usage_tracking_since(self) -> float:
        """When this keystore began recording keys' last uses (epoch seconds)."""
        ...

    async def record_last_uses(self, uses: Sequence[LastUse]) -> None:
        """Keep, for each key, the later of the stored last use and the one given."""
        ...

    async def last_use(self, key_id: str) -> LastUse | None: ...

    async def put_alias(self, alias: Alias, *, replace: bool) -> None:
        """Create an alias (KeyAlreadyExists if taken) or, with replace, repoint an existing one."""
        ...

    async def get_alias(self, name: str) -> Alias:
        """AliasNotFound when absent."""
        ...

    async def delete_alias(self, name: str) -> None: ...

    async def list_aliases(self) -> Sequence[Alias]: ...

    async def status(self) -> BackendStatus: ...

    async def close(self) -> None: ...
