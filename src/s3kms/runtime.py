"""The running KMS: which backend is configured, switching it atomically, and background work.

`configure` opens and checks the new backend first; only when that succeeds does it persist the
configuration and swap the service pointer. Requests in flight keep the service they started with
and finish on the old backend; the old keystore is closed once its last request is done.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from s3kms.clock import Clock
from s3kms.config import KMSConfig, Settings, load_kms_config, save_kms_config, served_regions
from s3kms.crypto import masterkey
from s3kms.errors import NotConfigured
from s3kms.fsutil import ensure_private_dir, write_private_file
from s3kms.keystore.base import KeyStore
from s3kms.keystore.local import LocalKeyStore
from s3kms.keystore.vault import VaultKeyStore, VaultSettings
from s3kms.metrics import Metrics
from s3kms.metrics.keystore import time_calls
from s3kms.service import KeyService

log = logging.getLogger("s3kms")


# Dev mode: the file in the data directory naming the directory of the current Local keystore,
# once `POST /_s3kms/reset` has replaced the first one (which is the data directory itself).
DEV_KEYSTORE_FILE = "dev-keystore"


@dataclass
class _Slot:
    """A service and the requests currently using it."""

    service: KeyService
    inflight: int = 0
    retired: bool = False
    cleanup: Callable[[], None] | None = None  # once the retired keystore is closed (reset)


class _Lease:
    """Holds a slot while a request uses it; a class, not a generator: it is on the hot path."""

    __slots__ = ("_slot",)

    def __init__(self, slot: _Slot) -> None:
        self._slot = slot

    async def __aenter__(self) -> KeyService:
        self._slot.inflight += 1
        return self._slot.service

    async def __aexit__(self, *exc: object) -> None:
        slot = self._slot
        slot.inflight -= 1
        if slot.retired and slot.inflight == 0:
            await _retire(slot)


class Runtime:
    def __init__(self, settings: Settings, clock: Clock, master_key_env: str | None) -> None:
        self.settings = settings
        self.clock = clock
        self.data_dir = settings.data_dir
        self._master_key_env = master_key_env
        self._master_key: masterkey.MasterKey | None = None
        # Where the Local keystore is: the data directory, or in dev mode the one a reset made.
        self.store_dir = self.data_dir
        if settings.dev:
            try:
                name = (self.data_dir / DEV_KEYSTORE_FILE).read_text().strip()
            except FileNotFoundError:
                name = ""
            if name:
                self.store_dir = self.data_dir / name
        self._slot: _Slot | None = None
        self.config = KMSConfig("none")
        self._switch_lock = asyncio.Lock()
        self.metrics: Metrics | None = None  # when set, the Vault keystore's calls are timed

    # -- start-up -------------------------------------------------------------------------------

    def master_key(self) -> masterkey.MasterKey:
        if self._master_key is None:
            key_file = self.settings.master_key_file
            self._master_key = masterkey.load(self.data_dir, key_file, self._master_key_env)
            if self._master_key.generated and not self.settings.dev:  # dev: thrown away
                kms_type = self.initial_config().kms_type
                log.warning(generated_master_key_warning(self._master_key.source, kms_type))
        return self._master_key

    def initial_config(self) -> KMSConfig:
        return initial_config(self.settings)

    async def open_store(self, config: KMSConfig) -> KeyStore | None:
        if config.kms_type == "local":
            return LocalKeyStore(self.store_dir, self.master_key())
        if config.kms_type == "vault":
            assert config.vault is not None
            store = await open_vault(config.vault)
            if self.metrics is not None:
                # Round trips to Vault: worth their histogram. (Local calls are in-process,
                # mostly cache hits: the request histogram covers them, at no extra cost.)
                time_calls(store, self.metrics)
            return store
        return None

    def _service(self, store: KeyStore, config: KMSConfig) -> KeyService:
        return KeyService(
            store,
            self.clock,
            region=self.settings.region,
            account_id=self.settings.account_id,
            default_key_id=config.default_key_id,
            regions=served_regions(self.settings),
        )

    async def start(self) -> None:
        config = self.initial_config()
        store = await self.open_store(config)
        self.config = config
        if store is not None:
            self._slot = _Slot(self._service(store, config))

    # -- use ------------------------------------------------------------------------------------

    @property
    def service(self) -> KeyService:
        slot = self._slot
        if slot is None:
            raise NotConfigured
        return slot.service

    def use(self) -> _Lease:
        """The current service, held for the duration of one request (`async with`)."""
        slot = self._slot
        if slot is None:
            raise NotConfigured
        return _Lease(slot)

    async def configure(self, config: KMSConfig) -> None:
        """Switch to `config`: check the new backend, persist, swap; the old one stays on failure."""
        async with self._switch_lock:
            store = await self.open_store(config)  # raises with the backend's reason
            try:
                save_kms_config(self.data_dir, config)
            except BaseException:
                if store is not None:
                    await store.close()
                raise
            old, self._slot = (
                self._slot,
                None if store is None else _Slot(self._service(store, config)),
            )
            self.config = config
            if old is not None:
                old.retired = True
                if old.inflight == 0:
                    await _close(old.service)

    async def reset(self, wipe: Callable[[], None] | None = None) -> None:
        """Dev mode: swap to a fresh, empty Local keystore in a new directory (every key, alias,
        grant and key policy gone at once), then run `wipe` (users, audit) before any other
        request runs: no await separates the swap from it, so no request sees half a reset.
        Requests in flight finish on the old keystore, whose files go once it is closed."""
        async with self._switch_lock:
            name = f"dev/{uuid.uuid4().hex}"
            directory = self.data_dir / name
            ensure_private_dir(directory.parent)
            ensure_private_dir(directory)
            try:
                store = LocalKeyStore(directory, self.master_key())
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                raise
            try:
                write_private_file(self.data_dir / DEV_KEYSTORE_FILE, name.encode() + b"\n")
            except BaseException:
                await store.close()
                shutil.rmtree(directory, ignore_errors=True)
                raise
            config = KMSConfig("local", self.settings.default_key_id)
            old, old_dir = self._slot, self.store_dir
            self._slot = _Slot(self._service(store, config))
            self.store_dir, self.config = directory, config
            if wipe is not None:
                wipe()
            discard = functools.partial(_discard_keystore, old_dir, self.data_dir)
            if old is None:
                discard()
            else:
                old.retired, old.cleanup = True, discard
                if old.inflight == 0:
                    await _retire(old)

    async def close(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            await _close(slot.service)

    # -- background work ------------------------------------------------------------------------

    async def run_background(self, interval: float) -> None:
        """Delete due keys and rotate due keys every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            slot = self._slot
            if slot is None:
                continue
            try:
                deleted, rotated = await slot.service.run_due_work()
                if deleted or rotated:
                    log.info("background: deleted %d key(s), rotated %d key(s)", deleted, rotated)
            except Exception:
                log.exception("background key maintenance failed; will retry")


async def _retire(slot: _Slot) -> None:
    await _close(slot.service)
    if slot.cleanup is not None:
        slot.cleanup()


def _discard_keystore(directory: Path, data_dir: Path) -> None:
    """A Local keystore's files, once closed: a reset's directory whole, the first one's files."""
    if directory != data_dir:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for name in ("keystore.db", "keystore.db-wal", "keystore.db-shm", "keystore.gen"):
        (directory / name).unlink(missing_ok=True)


async def _close(service: KeyService) -> None:
    """Store what the service noted (keys' last uses), then close its keystore."""
    await service.close_store()


def generated_master_key_warning(path: str, kms_type: str) -> str:
    """The warning of a first start that generated `<data-dir>/master.key`: what the key protects
    on the backend the server starts with, and that it sits beside what it protects."""
    advice = "keep a copy elsewhere and prefer S3KMS_MASTER_KEY or --master-key-file in production"
    if kms_type == "vault":
        return (
            f"generated a new master key in {path}: on the Vault backend it protects only the "
            "secrets of the users in users.json (the keystore is in Vault, not under this key), "
            "and sits in the same directory as them; it would also protect a Local keystore "
            f"configured later; {advice}"
        )
    if kms_type == "local":
        return (
            f"generated a new master key in {path}: it protects the Local keystore (keystore.db) "
            "and the secrets of the users in users.json, and sits in the same directory as them; "
            f"{advice}"
        )
    return (  # none: not configured yet
        f"generated a new master key in {path}: it protects the secrets of the users in "
        "users.json and the Local keystore once one is configured, and sits in the same "
        f"directory as them; {advice}"
    )


def initial_config(settings: Settings) -> KMSConfig:
    """The backend at start: flags/environment win; otherwise the persisted configuration;
    otherwise Local."""
    s = settings
    if s.backend == "none":
        return KMSConfig("none")
    if s.backend == "vault":
        if s.vault is None:
            raise ValueError("--backend vault needs --vault-address and credentials")
        return KMSConfig("vault", s.default_key_id, s.vault)
    if s.backend == "local":
        return KMSConfig("local", s.default_key_id)
    persisted = load_kms_config(s.data_dir)
    if persisted is not None:
        return persisted
    return KMSConfig("local", s.default_key_id)


async def open_vault(settings: VaultSettings) -> KeyStore:
    return await VaultKeyStore.connect(settings)
