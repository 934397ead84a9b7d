"""Regions: one keystore holds the keys of every region a server serves; `RegionalKeyStore` is
one region's view of it, a KeyStore itself, so the service above it is the same in every region.

AWS's regional endpoints are separate KMSs: a key or alias of one region is not found in another,
and its ARN names its region. s3kms keeps them apart by storage id:

    the home region (--region)   the key id itself                 1234abcd-..., my-key
    any other region             "~<region>~" + the key id         ~eu-west-1~1234abcd-...

Alias names are qualified the same way. `~` is in no key id or alias name (KEY_NAME_RE, UUIDs,
`mrk-` ids, AWS alias names), so no id of one region can name another region's key, and every
qualified id sorts after every home id (which lets the home view end its listing at the first
one). A server that serves only its home region uses the keystore directly: what it stores is
exactly what earlier releases stored.

Key material is stored under the *bare* key id (`material_name`): the replicas of a multi-Region
key share its id, and so they share its material and its rotations, as AWS's do; a keystore
destroys a key's material only when asked to (`delete_key(..., keep_material=False)`), which
the service does for the last region holding a multi-Region key.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from typing import Any, Concatenate, ParamSpec, TypeVar

from s3kms.errors import AliasNotFound, KeyNotFound, KMSError
from s3kms.keystore.base import BackendStatus, KeyStore, RotationDue, StateCheck
from s3kms.model import Alias, KeyMetadata, KeyVersion, LastUse, RotationType

SEPARATOR = "~"

P = ParamSpec("P")
T = TypeVar("T")


# Extra ids a non-home region's find_keys asks for: other regions' holders of the same term
# (KMIP, which uses it, serves the home region only).
_REGION_SLACK = 1000


def _bare_errors(
    method: Callable[Concatenate[RegionalKeyStore, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[RegionalKeyStore, P], Coroutine[Any, Any, T]]:
    """The keystore's errors name keys by their stored ids: name them as this region does."""

    @functools.wraps(method)
    async def translated(store: RegionalKeyStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(store, *args, **kwargs)
        except KMSError as exc:
            raise store._bare(exc)  # noqa: B904 (the same exception, renamed in place)

    return translated


def qualifier(region: str) -> str:
    return f"{SEPARATOR}{region}{SEPARATOR}"


def material_name(storage_id: str) -> str:
    """The id a key's material is stored under: its bare key id."""
    if storage_id.startswith(SEPARATOR):
        return storage_id.rsplit(SEPARATOR, 1)[1]
    return storage_id


def split(storage_id: str, home: str) -> tuple[str, str]:
    """(region, bare id) of a storage id."""
    if storage_id.startswith(SEPARATOR):
        _, region, bare = storage_id.split(SEPARATOR, 2)
        return region, bare
    return home, storage_id


def storage_id(region: str, key_id: str, home: str) -> str:
    return key_id if region == home else qualifier(region) + key_id


class RegionalKeyStore:
    """One region's view of a keystore (see the module docstring). Ids and alias names go in
    qualified and come out bare; an id that is already qualified names nothing here."""

    def __init__(self, store: KeyStore, region: str, home: str) -> None:
        self.store = store
        self.region = region
        self._home = region == home
        self._q = "" if self._home else qualifier(region)
        self.kind = store.kind
        self.endpoint = store.endpoint
        self.material_exportable = store.material_exportable
        self.supported_specs = store.supported_specs
        self.kmip_specs = store.kmip_specs
        self.unsupported_algorithms: Mapping[str, str] = store.unsupported_algorithms

    # -- ids ------------------------------------------------------------------------------------

    def _in(self, key_id: str) -> str:
        if SEPARATOR in key_id:
            raise KeyNotFound(key_id=key_id)
        return self._q + key_id

    def _out(self, meta: KeyMetadata) -> KeyMetadata:
        if self._home:
            return meta
        return replace(meta, key_id=meta.key_id[len(self._q) :])

    def _meta_in(self, meta: KeyMetadata) -> KeyMetadata:
        if self._home:
            return meta
        return replace(meta, key_id=self._in(meta.key_id))

    def _bare(self, exc: KMSError) -> KMSError:
        """`exc` naming keys as this region does: a keystore's errors name the stored id."""
        if self._q:
            if exc.key_id is not None and exc.key_id.startswith(self._q):
                exc.key_id = exc.key_id[len(self._q) :]
            exc.message = exc.message.replace(self._q, "")
            exc.args = (exc.message,)
        return exc

    def _check(self, check: StateCheck) -> StateCheck:
        if self._home:
            return check

        def regional(meta: KeyMetadata) -> None:
            check(self._out(meta))

        return regional

    def _alias_in(self, name: str) -> str:
        if SEPARATOR in name:
            raise AliasNotFound(name)
        return self._q + name

    def _alias_out(self, alias: Alias) -> Alias:
        if self._home:
            return alias
        return Alias(alias.name[len(self._q) :], alias.key_id[len(self._q) :], alias.created_at)

    def _mine(self, name: str) -> bool:
        if self._home:
            return not name.startswith(SEPARATOR)
        return name.startswith(self._q)

    # -- keys -----------------------------------------------------------------------------------

    @_bare_errors
    async def create_key(self, meta: KeyMetadata, *, replica: bool = False) -> KeyMetadata:
        return self._out(await self.store.create_key(self._meta_in(meta), replica=replica))

    @_bare_errors
    async def get_key(self, key_id: str) -> KeyMetadata:
        return self._out(await self.store.get_key(self._in(key_id)))

    @_bare_errors
    async def forget(self, key_id: str) -> None:
        if SEPARATOR not in key_id:
            await self.store.forget(self._q + key_id)

    @_bare_errors
    async def find_keys(self, term: str, *, limit: int) -> Sequence[str]:
        """This region's keys holding the term (the index spans every region: a region's term
        is found under each region's ids, and the others' are left out). Home ids sort before
        qualified ones, so another region's view asks for more and cuts after filtering."""
        if self._home:
            found = await self.store.find_keys(term, limit=limit)
            return [k for k in found if not k.startswith(SEPARATOR)]
        found = await self.store.find_keys(term, limit=limit + _REGION_SLACK)
        return [k[len(self._q) :] for k in found if k.startswith(self._q)][:limit]

    @_bare_errors
    async def list_keys(
        self, *, after: str | None, limit: int, prefix: str = ""
    ) -> Sequence[KeyMetadata]:
        if SEPARATOR in prefix or (after is not None and SEPARATOR in after):
            return []
        if self._home:
            found = await self.store.list_keys(after=after, limit=limit, prefix=prefix)
            # Qualified ids sort after every home id: the first one ends the home region's keys.
            return [m for m in found if not m.key_id.startswith(SEPARATOR)]
        found = await self.store.list_keys(
            after=None if after is None else self._q + after, limit=limit, prefix=self._q + prefix
        )
        return [self._out(m) for m in found]

    async def count_keys(self) -> int:
        """Every region's keys: the backend's count (admin status and metrics are the home
        region's, and speak for the whole backend)."""
        return await self.store.count_keys()

    @_bare_errors
    async def update_key(self, meta: KeyMetadata) -> KeyMetadata:
        return self._out(await self.store.update_key(self._meta_in(meta)))

    @_bare_errors
    async def set_material(
        self, meta: KeyMetadata, version: int, material: bytes | None
    ) -> KeyMetadata:
        return self._out(await self.store.set_material(self._meta_in(meta), version, material))

    async def seal(self, purpose: str, data: bytes) -> bytes:
        return await self.store.seal(purpose, data)

    async def unseal(self, purpose: str, sealed: bytes) -> bytes:
        return await self.store.unseal(purpose, sealed)

    @_bare_errors
    async def rotate_key(
        self, key_id: str, rotation_type: RotationType, now: float, next_rotation: RotationDue
    ) -> KeyMetadata:
        def due(meta: KeyMetadata) -> float | None:
            return next_rotation(self._out(meta))

        meta = await self.store.rotate_key(self._in(key_id), rotation_type, now, due)
        return self._out(meta)

    @_bare_errors
    async def list_versions(self, key_id: str) -> Sequence[KeyVersion]:
        return await self.store.list_versions(self._in(key_id))

    @_bare_errors
    async def delete_key(self, key_id: str, *, keep_material: bool = False) -> None:
        await self.store.delete_key(self._in(key_id), keep_material=keep_material)

    @_bare_errors
    async def export_versions(self, key_id: str) -> Sequence[tuple[KeyVersion, bytes | None]]:
        return await self.store.export_versions(self._in(key_id))

    @_bare_errors
    async def export_material(self, key_id: str, version: int) -> bytes:
        return await self.store.export_material(self._in(key_id), version)

    @_bare_errors
    async def import_key(
        self, meta: KeyMetadata, versions: Sequence[tuple[KeyVersion, bytes]], *, overwrite: bool
    ) -> None:
        await self.store.import_key(self._meta_in(meta), versions, overwrite=overwrite)

    # -- crypto ---------------------------------------------------------------------------------

    @_bare_errors
    async def encrypt(
        self, key_id: str, plaintext: bytes, aad: bytes, check: StateCheck
    ) -> tuple[int, bytes]:
        return await self.store.encrypt(self._in(key_id), plaintext, aad, self._check(check))

    @_bare_errors
    async def decrypt(
        self, key_id: str, version: int, sealed: bytes, aad: bytes, check: StateCheck
    ) -> bytes:
        return await self.store.decrypt(self._in(key_id), version, sealed, aad, self._check(check))

    @_bare_errors
    async def public_key(self, key_id: str, check: StateCheck) -> bytes:
        return await self.store.public_key(self._in(key_id), self._check(check))

    @_bare_errors
    async def sign(
        self, key_id: str, algorithm: str, message: bytes, message_type: str, check: StateCheck
    ) -> bytes:
        return await self.store.sign(
            self._in(key_id), algorithm, message, message_type, self._check(check)
        )

    @_bare_errors
    async def generate_mac(
        self, key_id: str, algorithm: str, message: bytes, check: StateCheck
    ) -> bytes:
        return await self.store.generate_mac(
            self._in(key_id), algorithm, message, self._check(check)
        )

    @_bare_errors
    async def decrypt_asymmetric(
        self, key_id: str, algorithm: str, ciphertext: bytes, check: StateCheck
    ) -> bytes:
        return await self.store.decrypt_asymmetric(
            self._in(key_id), algorithm, ciphertext, self._check(check)
        )

    @_bare_errors
    async def derive_shared_secret(
        self, key_id: str, peer_public_key: bytes, check: StateCheck
    ) -> bytes:
        return await self.store.derive_shared_secret(
            self._in(key_id), peer_public_key, self._check(check)
        )

    @_bare_errors
    async def decapsulate(self, key_id: str, ciphertext: bytes, check: StateCheck) -> bytes:
        return await self.store.decapsulate(self._in(key_id), ciphertext, self._check(check))

    # -- last use -------------------------------------------------------------------------------

    async def usage_tracking_since(self) -> float:
        return await self.store.usage_tracking_since()

    @_bare_errors
    async def record_last_uses(self, uses: Sequence[LastUse]) -> None:
        if not self._home:
            uses = [replace(u, key_id=self._q + u.key_id) for u in uses]
        await self.store.record_last_uses(uses)

    @_bare_errors
    async def last_use(self, key_id: str) -> LastUse | None:
        use = await self.store.last_use(self._in(key_id))
        if use is None or self._home:
            return use
        return replace(use, key_id=key_id)

    # -- aliases --------------------------------------------------------------------------------

    @_bare_errors
    async def put_alias(self, alias: Alias, *, replace: bool) -> None:
        qualified = Alias(self._alias_in(alias.name), self._in(alias.key_id), alias.created_at)
        await self.store.put_alias(qualified, replace=replace)

    @_bare_errors
    async def get_alias(self, name: str) -> Alias:
        try:
            return self._alias_out(await self.store.get_alias(self._alias_in(name)))
        except AliasNotFound:
            raise AliasNotFound(name) from None  # (named as the caller named it)

    @_bare_errors
    async def delete_alias(self, name: str) -> None:
        try:
            await self.store.delete_alias(self._alias_in(name))
        except AliasNotFound:
            raise AliasNotFound(name) from None

    @_bare_errors
    async def list_aliases(self) -> Sequence[Alias]:
        return [self._alias_out(a) for a in await self.store.list_aliases() if self._mine(a.name)]

    # -- lifecycle ------------------------------------------------------------------------------

    async def status(self) -> BackendStatus:
        return await self.store.status()

    async def close(self) -> None:
        """Nothing: the keystore is shared by every region and closed by its owner."""
