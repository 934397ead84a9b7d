"""The Local keystore: keys in SQLite, material wrapped with AES-256-GCM under the master key.

Durability: WAL with `synchronous=FULL`, one transaction per write, so an acknowledged create,
enable or disable is on disk before the response leaves. Key material is stored only wrapped,
with the key id and version as associated data (a row moved to another key does not open).

Speed: the hot path (metadata lookup, AES-GCM with a key's material) is served from memory.
The caches are dropped whenever the shared generation counter moves, which every process bumps
after it commits a change, so a key disabled through one worker is refused by all of them.
All SQLite calls run on one dedicated thread with one connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from s3kms.crypto import aead, asymmetric, keyspecs
from s3kms.crypto.masterkey import MasterKey, MasterKeyError
from s3kms.errors import (
    AliasNotFound,
    InvalidCiphertext,
    KeyAlreadyExists,
    KeyNotFound,
    StorageUnavailable,
)
from s3kms.keystore.base import BackendStatus, RotationDue, StateCheck, WriteConflict
from s3kms.keystore.codec import GrantsMemo, dump_grants, dump_materials, load_materials
from s3kms.keystore.generation import Generation
from s3kms.keystore.regional import material_name
from s3kms.model import Alias, Grant, KeyMetadata, KeyState, KeyVersion, LastUse, RotationType
from s3kms.request import without_request

T = TypeVar("T")
log = logging.getLogger("s3kms.keystore")

SCHEMA_VERSION = "1"
# Entries per in-memory cache (metadata; unwrapped key versions). Past it the cache starts over,
# which keeps a server with a million keys at bounded memory while hot keys refill at once.
MAX_CACHED_KEYS = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    description TEXT NOT NULL,
    current_version INTEGER NOT NULL,
    deletion_date REAL,
    pending_window_days INTEGER,
    rotation_enabled INTEGER NOT NULL,
    rotation_period_days INTEGER NOT NULL,
    next_rotation REAL,
    tags TEXT NOT NULL,
    revision INTEGER NOT NULL,
    key_spec TEXT NOT NULL DEFAULT 'SYMMETRIC_DEFAULT',
    key_usage TEXT NOT NULL DEFAULT 'ENCRYPT_DECRYPT',
    policy TEXT,
    grants TEXT NOT NULL DEFAULT '[]',
    origin TEXT NOT NULL DEFAULT 'AWS_KMS',
    materials TEXT NOT NULL DEFAULT '[]',
    multi_region TEXT,
    kmip TEXT,
    lookup TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS key_lookup (
    term TEXT NOT NULL,
    key_id TEXT NOT NULL,
    PRIMARY KEY (term, key_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS key_lookup_by_key ON key_lookup (key_id);
CREATE TABLE IF NOT EXISTS key_versions (
    key_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    rotation_type TEXT,
    wrapped BLOB NOT NULL,
    PRIMARY KEY (key_id, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS aliases_by_key ON aliases (key_id);
CREATE TABLE IF NOT EXISTS key_last_use (
    key_id TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    at REAL NOT NULL,
    request_id TEXT
) WITHOUT ROWID;
"""

_KEY_COLUMNS = (
    "key_id, state, created_at, description, current_version, deletion_date, pending_window_days,"
    " rotation_enabled, rotation_period_days, next_rotation, tags, revision, key_spec, key_usage,"
    " policy, grants, origin, materials, multi_region, kmip, lookup"
)
_KEY_PLACEHOLDERS = ",".join("?" * 21)
# Columns added after the first release: (name, definition) for ALTER TABLE on an older database.
# A key of a release before key policies and grants reads as: the default key policy (NULL), no
# grants ('[]'), exactly what the model means by those defaults.
_ADDED_KEY_COLUMNS = (
    ("key_spec", "TEXT NOT NULL DEFAULT 'SYMMETRIC_DEFAULT'"),
    ("key_usage", "TEXT NOT NULL DEFAULT 'ENCRYPT_DECRYPT'"),
    ("policy", "TEXT"),  # the key policy as given; NULL: the default key policy
    ("grants", "TEXT NOT NULL DEFAULT '[]'"),  # keystore/codec.py's JSON list
    # A key of a release before imports: made by s3kms, no imported materials.
    ("origin", "TEXT NOT NULL DEFAULT 'AWS_KMS'"),
    ("materials", "TEXT NOT NULL DEFAULT '[]'"),  # codec.py's JSON list of KeyMaterial
    # NULL: a single-Region key; else {"primary": region, "replicas": [region, ...]}.
    ("multi_region", "TEXT"),
    ("kmip", "TEXT"),  # NULL: not a KMIP object; else protocols/kmip/record.py's JSON
    ("lookup", "TEXT"),  # NULL: no lookup terms; else a JSON list (indexed in key_lookup)
)


def _row_to_meta(
    row: tuple[Any, ...], grants: Callable[[str, str], tuple[Grant, ...]]
) -> KeyMetadata:
    return KeyMetadata(
        key_id=row[0],
        state=KeyState(row[1]),
        created_at=row[2],
        description=row[3],
        current_version=row[4],
        deletion_date=row[5],
        pending_window_days=row[6],
        rotation_enabled=bool(row[7]),
        rotation_period_days=row[8],
        next_rotation=row[9],
        tags=tuple((k, v) for k, v in json.loads(row[10])),
        revision=row[11],
        key_spec=row[12],
        key_usage=row[13],
        policy=row[14],
        grants=grants(row[0], row[15]),
        origin=row[16],
        materials=load_materials(row[17]),
        **_regions_of(row[18]),
        kmip=row[19],
        lookup=tuple(json.loads(row[20])) if row[20] else (),
    )


def _regions_of(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    data = json.loads(text)
    return {"primary_region": data["primary"], "replica_regions": tuple(data["replicas"])}


def _regions_text(meta: KeyMetadata) -> str | None:
    if meta.primary_region is None:
        return None
    return json.dumps({"primary": meta.primary_region, "replicas": list(meta.replica_regions)})


def _meta_values(meta: KeyMetadata) -> tuple[Any, ...]:
    return (
        meta.key_id,
        meta.state.value,
        meta.created_at,
        meta.description,
        meta.current_version,
        meta.deletion_date,
        meta.pending_window_days,
        int(meta.rotation_enabled),
        meta.rotation_period_days,
        meta.next_rotation,
        json.dumps([list(t) for t in meta.tags]),
        meta.revision,
        meta.key_spec,
        meta.key_usage,
        meta.policy,
        dump_grants(meta.grants),
        meta.origin,
        dump_materials(meta.materials),
        _regions_text(meta),
        meta.kmip,
        _lookup_text(meta),
    )


def _lookup_text(meta: KeyMetadata) -> str | None:
    return json.dumps(list(meta.lookup)) if meta.lookup else None


def _index_lookup(conn: sqlite3.Connection, meta: KeyMetadata) -> None:
    """The key_lookup rows of a key, as its metadata names them (in the record's transaction)."""
    conn.execute("DELETE FROM key_lookup WHERE key_id = ?", (meta.key_id,))
    if meta.lookup:
        conn.executemany(
            "INSERT OR IGNORE INTO key_lookup VALUES (?, ?)",
            [(term, meta.key_id) for term in meta.lookup],
        )


def _wrap_aad(name: str, version: int) -> bytes:
    """`name`: the key's material name (regional.material_name: the bare key id)."""
    return b"s3kms-key-material\x00" + name.encode() + b"\x00" + str(version).encode()


def _seal_aad(purpose: str) -> bytes:
    return b"s3kms-sealed\x00" + purpose.encode()


def open_database(path: Path) -> sqlite3.Connection:
    # SQLite gives the -wal and -shm files the database file's mode: create it 0600 first, so no
    # umask makes any of the three readable by others.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.executescript(_SCHEMA)
    present = {row[1] for row in conn.execute("PRAGMA table_info(keys)")}
    for name, definition in _ADDED_KEY_COLUMNS:
        if name not in present:  # a keystore made by an older s3kms: every key is symmetric
            try:
                conn.execute(f"ALTER TABLE keys ADD COLUMN {name} {definition}")
            except sqlite3.OperationalError as exc:  # another worker added it first
                if "duplicate column" not in str(exc):
                    raise
    return conn


def wrong_master_key(master_key: MasterKey, db_path: Path) -> MasterKeyError:
    return MasterKeyError(
        f"the master key from {master_key.source} is not the key this keystore ({db_path}) "
        "was created with"
    )


def _read_check_value(uri: str) -> str | None:
    conn = sqlite3.connect(uri, uri=True)
    try:
        has_meta = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if has_meta is None:
            return None
        row = conn.execute("SELECT value FROM meta WHERE name = 'master_check'").fetchone()
        return None if row is None else str(row[0])
    finally:
        conn.close()


def stored_master_check(data_dir: Path) -> str | None:
    """The master key check value of the keystore in `data_dir` (None: no keystore, or one
    without a check value yet), read without writing anything into `data_dir`.

    SQLite's `mode=ro` would still create the -wal and -shm files, so the database is opened
    `immutable`, which reads the main file only. The check value is written once, at creation,
    and never changed; only a keystore that crashed before its first checkpoint holds it in the
    WAL alone, and then copies of the two files in a temporary directory are read instead.
    Raises sqlite3.DatabaseError (not a database, damaged) or OSError.
    """
    db_path = data_dir / "keystore.db"
    if not db_path.exists():
        return None
    value = _read_check_value(f"{db_path.absolute().as_uri()}?immutable=1")
    wal = data_dir / "keystore.db-wal"
    if value is None and wal.exists() and wal.stat().st_size > 0:
        with tempfile.TemporaryDirectory(prefix="s3kms-check-") as tmp:
            copy = Path(tmp) / "keystore.db"
            shutil.copyfile(db_path, copy)
            shutil.copyfile(wal, Path(tmp) / "keystore.db-wal")
            value = _read_check_value(copy.as_uri())  # a copy: replaying the WAL is harmless
    return value


class LocalKeyStore:
    kind = "local"
    material_exportable = True
    supported_specs = frozenset(n for n, info in keyspecs.KEY_SPECS.items() if info.available)
    kmip_specs = supported_specs  # all material is wrapped alike, and can be unwrapped
    unsupported_algorithms: Mapping[str, str] = MappingProxyType({})

    def __init__(self, data_dir: Path, master_key: MasterKey) -> None:
        self.endpoint = str(data_dir.resolve())
        self._master = AESGCM(master_key.material)
        self._db_path = data_dir / "keystore.db"
        self._conn = open_database(self._db_path)
        for companion in ("keystore.db-wal", "keystore.db-shm"):  # made by an older version
            if (data_dir / companion).exists():
                (data_dir / companion).chmod(0o600)
        self._check_master_key(master_key)
        self._tracking_since = self._start_usage_tracking()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3kms-sqlite")
        self._generation = Generation(data_dir / "keystore.gen")
        self._seen_generation = -1
        self._meta_cache: dict[str, KeyMetadata] = {}
        self._grants = GrantsMemo()
        self._aead_cache: dict[tuple[str, int], AESGCM] = {}
        self._material_cache: dict[str, tuple[int, bytes]] = {}  # key -> (version, material)
        # (write, its future, whether it changes keys: only those move the generation)
        self._pending: list[
            tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any], bool]
        ] = []
        self._flushing = False

    def _check_master_key(self, master_key: MasterKey) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE name = 'master_check'").fetchone()
        if row is None:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('master_check', ?), ('schema', ?)",
                    (master_key.check_value(), SCHEMA_VERSION),
                )
            row = self._conn.execute(
                "SELECT value FROM meta WHERE name = 'master_check'"
            ).fetchone()
        if not master_key.matches(row[0]):
            raise wrong_master_key(master_key, self._db_path)

    def _start_usage_tracking(self) -> float:
        """When this keystore began recording last uses: the first open that knew how."""
        self._conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('usage_tracking_since', ?)",
            (repr(float(int(time.time()))),),  # whole seconds, as key creation dates are
        )
        row = self._conn.execute(
            "SELECT value FROM meta WHERE name = 'usage_tracking_since'"
        ).fetchone()
        return float(row[0])

    # -- plumbing -------------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _fresh_caches(self) -> None:
        """Drop the caches if any process changed a key since they were filled."""
        current = self._generation.current()
        if current != self._seen_generation:
            self._meta_cache.clear()
            self._aead_cache.clear()
            self._material_cache.clear()
            self._seen_generation = current

    async def _write(self, fn: Callable[[sqlite3.Connection], T], *, keys: bool = True) -> T:
        """Run `fn` in a transaction; return once it is committed (on disk).

        Group commit: writes that arrive while a commit is in progress wait and then share the
        next transaction (one fsync for all of them), each inside its own savepoint, so one
        write failing (a duplicate key, say) undoes only itself. With `synchronous=FULL` one
        fsync per batch instead of per write is what makes concurrent creates fast.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future, keys))
        if not self._flushing:
            self._flushing = True
            # One commit for the writes of several requests: its log lines name none of them.
            asyncio.get_running_loop().create_task(self._flush(), context=without_request())
        result: T = await future
        return result

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                # Only a batch that changed keys moves the generation (and so every cache).
                keys = any(changes for _, _, changes in batch)
                try:
                    outcomes = await self._run(self._commit_batch, [fn for fn, _, _ in batch], keys)
                except BaseException as exc:  # the commit itself failed: nothing was written
                    outcomes = [exc] * len(batch)
                for (_, future, _), outcome in zip(batch, outcomes, strict=True):
                    if future.cancelled():
                        continue
                    if isinstance(outcome, sqlite3.Error):
                        # Disk full, read-only, I/O error: the transaction was rolled back.
                        log.error("keystore write failed: %s", outcome)
                        future.set_exception(StorageUnavailable())
                    elif isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._flushing = False

    def _commit_batch(
        self, fns: list[Callable[[sqlite3.Connection], Any]], keys: bool = True
    ) -> list[Any]:
        conn = self._conn
        outcomes: list[Any] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for fn in fns:
                conn.execute("SAVEPOINT write")
                try:
                    outcomes.append(fn(conn))
                except Exception as exc:
                    conn.execute("ROLLBACK TO write")
                    outcomes.append(exc)
                conn.execute("RELEASE write")
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (SQLITE_FULL does): end whatever is left.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if keys:
            self._generation.bump()
        return outcomes

    def _wrap(self, name: str, version: int, material: bytes) -> bytes:
        return aead.seal(self._master, material, _wrap_aad(name, version))

    # -- keys -----------------------------------------------------------------------------------

    async def create_key(self, meta: KeyMetadata, *, replica: bool = False) -> KeyMetadata:
        info = keyspecs.spec(meta.key_spec)
        name = material_name(meta.key_id)
        wrapped: bytes | None = None
        if meta.external or replica:
            pass  # no material until ImportKeyMaterial; a replica's is its primary's
        elif info.symmetric:
            material = aead.new_key()
        else:  # an RSA-4096 key takes about a second: not on the event loop, nor the SQLite thread
            material = await asyncio.to_thread(asymmetric.generate, info)
        if not (meta.external or replica):
            wrapped = self._wrap(name, 1, material)

        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    f"INSERT INTO keys ({_KEY_COLUMNS}) VALUES ({_KEY_PLACEHOLDERS})",
                    _meta_values(meta),
                )
            except sqlite3.IntegrityError:
                raise KeyAlreadyExists(key_id=meta.key_id) from None
            if meta.lookup:
                _index_lookup(conn, meta)
            if wrapped is not None:
                conn.execute(
                    "INSERT INTO key_versions VALUES (?, 1, ?, NULL, ?)",
                    (name, meta.created_at, wrapped),
                )
            elif (
                replica
                and not conn.execute(
                    "SELECT 1 FROM key_versions WHERE key_id = ? LIMIT 1", (name,)
                ).fetchone()
            ):
                raise KeyNotFound(f"no key material to replicate for {meta.key_id}")

        await self._write(insert)
        return meta

    def _select_key(self, key_id: str) -> KeyMetadata | None:
        row = self._conn.execute(
            f"SELECT {_KEY_COLUMNS} FROM keys WHERE key_id = ?", (key_id,)
        ).fetchone()
        return None if row is None else _row_to_meta(row, self._grants.load)

    async def get_key(self, key_id: str) -> KeyMetadata:
        self._fresh_caches()
        meta = self._meta_cache.get(key_id)
        if meta is not None:
            return meta
        seen = self._seen_generation
        found = await self._run(self._select_key, key_id)
        if found is None:
            raise KeyNotFound(key_id=key_id)
        if seen == self._seen_generation == self._generation.current():
            if len(self._meta_cache) >= MAX_CACHED_KEYS:
                self._meta_cache.clear()  # bounded memory with a million keys; refills on use
            self._meta_cache[key_id] = found
        return found

    async def forget(self, key_id: str) -> None:
        """Nothing to do: this cache is never stale. Every process that commits a change bumps
        the shared generation counter (keystore.gen) before the write is acknowledged, and every
        read compares the counter first and drops the caches when it moved; so the next read
        after another worker's write (a grant it created, say) already sees it."""

    async def list_keys(
        self, *, after: str | None, limit: int, prefix: str = ""
    ) -> Sequence[KeyMetadata]:
        def select() -> list[KeyMetadata]:
            sql = f"SELECT {_KEY_COLUMNS} FROM keys WHERE key_id > ?"
            args: list[Any] = [after or ""]
            if prefix:
                # key ids are ASCII, so every id starting with prefix sorts below prefix + '\x7f'
                sql += " AND key_id >= ? AND key_id < ?"
                args += [prefix, prefix + "\x7f"]
            sql += " ORDER BY key_id LIMIT ?"
            args.append(limit)
            return [_row_to_meta(r, self._grants.load) for r in self._conn.execute(sql, args)]

        return await self._run(select)

    async def find_keys(self, term: str, *, limit: int) -> Sequence[str]:
        def select() -> list[str]:
            rows = self._conn.execute(
                "SELECT key_id FROM key_lookup WHERE term = ? ORDER BY key_id LIMIT ?",
                (term, limit),
            )
            return [row[0] for row in rows]

        return await self._run(select)

    async def count_keys(self) -> int:
        def count() -> int:
            value: int = self._conn.execute("SELECT count(*) FROM keys").fetchone()[0]
            return value

        return await self._run(count)

    async def update_key(self, meta: KeyMetadata) -> KeyMetadata:
        return await self._update_key(meta, None)

    async def set_material(
        self, meta: KeyMetadata, version: int, material: bytes | None
    ) -> KeyMetadata:
        """The metadata and the material change in one transaction."""
        name = material_name(meta.key_id)
        wrapped = None if material is None else self._wrap(name, version, material)

        def change(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM key_versions WHERE key_id = ? AND version = ?", (name, version)
            )
            if wrapped is not None:
                conn.execute(  # (the import's date is in meta.materials; this one is the row's)
                    "INSERT INTO key_versions VALUES (?, ?, ?, NULL, ?)",
                    (name, version, time.time(), wrapped),
                )

        return await self._update_key(meta, change)

    async def seal(self, purpose: str, data: bytes) -> bytes:
        return aead.seal(self._master, data, _seal_aad(purpose))

    async def unseal(self, purpose: str, sealed: bytes) -> bytes:
        return aead.open_sealed(self._master, sealed, _seal_aad(purpose))

    async def _update_key(
        self, meta: KeyMetadata, change_material: Callable[[sqlite3.Connection], None] | None
    ) -> KeyMetadata:
        from dataclasses import replace

        new = replace(meta, revision=meta.revision + 1)
        grants = self._grants.dump(meta.key_id, new.grants)  # (not on the one SQLite thread)

        def update(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE keys SET state=?, description=?, deletion_date=?, pending_window_days=?,"
                " rotation_enabled=?, rotation_period_days=?, next_rotation=?, tags=?, revision=?,"
                " policy=?, grants=?, current_version=?, materials=?, multi_region=?, kmip=?,"
                " lookup=?"
                " WHERE key_id=? AND revision=?",
                (
                    new.state.value,
                    new.description,
                    new.deletion_date,
                    new.pending_window_days,
                    int(new.rotation_enabled),
                    new.rotation_period_days,
                    new.next_rotation,
                    json.dumps([list(t) for t in new.tags]),
                    new.revision,
                    new.policy,
                    grants,
                    new.current_version,
                    dump_materials(new.materials),
                    _regions_text(new),
                    new.kmip,
                    _lookup_text(new),
                    meta.key_id,
                    meta.revision,
                ),
            )
            if cursor.rowcount != 1:
                if self._select_key(meta.key_id) is None:
                    raise KeyNotFound(key_id=meta.key_id)
                raise WriteConflict(meta.key_id)
            if new.lookup or new.kmip is not None:  # (only KMIP objects have terms)
                _index_lookup(conn, new)
            if change_material is not None:
                change_material(conn)

        await self._write(update)
        self._grants.keep(meta.key_id, grants, new.grants)
        return new

    async def rotate_key(
        self, key_id: str, rotation_type: RotationType, now: float, next_rotation: RotationDue
    ) -> KeyMetadata:
        material = aead.new_key()
        name = material_name(key_id)

        def rotate(conn: sqlite3.Connection) -> KeyMetadata:
            meta = self._select_key(key_id)
            if meta is None:
                raise KeyNotFound(key_id=key_id)
            # (the regions of a multi-Region key share its versions: the next one of them all)
            (latest,) = conn.execute(
                "SELECT max(version) FROM key_versions WHERE key_id = ?", (name,)
            ).fetchone()
            version = max(meta.current_version, latest or 0) + 1
            conn.execute(
                "INSERT INTO key_versions VALUES (?, ?, ?, ?, ?)",
                (name, version, now, rotation_type.value, self._wrap(name, version, material)),
            )
            conn.execute(
                "UPDATE keys SET current_version=?, next_rotation=?, revision=revision+1"
                " WHERE key_id=?",
                (version, next_rotation(meta), key_id),
            )
            found = self._select_key(key_id)
            assert found is not None
            return found

        return await self._write(rotate)

    async def list_versions(self, key_id: str) -> Sequence[KeyVersion]:
        def select() -> list[KeyVersion]:
            return [
                KeyVersion(v, c, RotationType(r) if r else None)
                for v, c, r in self._conn.execute(
                    "SELECT version, created_at, rotation_type FROM key_versions"
                    " WHERE key_id = ? ORDER BY version",
                    (material_name(key_id),),
                )
            ]

        return await self._run(select)

    async def delete_key(self, key_id: str, *, keep_material: bool = False) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM keys WHERE key_id = ?", (key_id,))
            if not keep_material:
                conn.execute("DELETE FROM key_versions WHERE key_id = ?", (material_name(key_id),))
            conn.execute("DELETE FROM aliases WHERE key_id = ?", (key_id,))
            conn.execute("DELETE FROM key_last_use WHERE key_id = ?", (key_id,))
            conn.execute("DELETE FROM key_lookup WHERE key_id = ?", (key_id,))

        await self._write(delete)
        self._grants.drop(key_id)

    # -- last use -------------------------------------------------------------------------------

    async def usage_tracking_since(self) -> float:
        return self._tracking_since

    async def record_last_uses(self, uses: Sequence[LastUse]) -> None:
        rows = [(u.key_id, u.operation, u.at, u.request_id, u.key_id) for u in uses]

        def upsert(conn: sqlite3.Connection) -> None:
            # Only for keys that still exist, and only when later than what is stored.
            conn.executemany(
                "INSERT INTO key_last_use SELECT ?, ?, ?, ?"
                " WHERE EXISTS (SELECT 1 FROM keys WHERE key_id = ?)"
                " ON CONFLICT (key_id) DO UPDATE SET operation = excluded.operation,"
                " at = excluded.at, request_id = excluded.request_id"
                " WHERE excluded.at > key_last_use.at",
                rows,
            )

        await self._write(upsert, keys=False)

    async def last_use(self, key_id: str) -> LastUse | None:
        def select() -> LastUse | None:
            row = self._conn.execute(
                "SELECT operation, at, request_id FROM key_last_use WHERE key_id = ?", (key_id,)
            ).fetchone()
            return None if row is None else LastUse(key_id, row[0], row[1], row[2])

        return await self._run(select)

    # -- backup ---------------------------------------------------------------------------------

    async def export_versions(self, key_id: str) -> Sequence[tuple[KeyVersion, bytes | None]]:
        """Every version of a key with its unwrapped material (for an encrypted backup only)."""

        name = material_name(key_id)

        def select() -> list[tuple[KeyVersion, bytes | None]]:
            rows = self._conn.execute(
                "SELECT version, created_at, rotation_type, wrapped FROM key_versions"
                " WHERE key_id = ? ORDER BY version",
                (name,),
            ).fetchall()
            return [
                (
                    KeyVersion(v, c, RotationType(r) if r else None),
                    aead.open_sealed(self._master, w, _wrap_aad(name, v)),
                )
                for v, c, r, w in rows
            ]

        return await self._run(select)

    async def export_material(self, key_id: str, version: int) -> bytes:
        # The material cache of `_material` (a KMIP client such as Ceph RGW fetches the same
        # key for every request): no SQLite read or unwrapping once it is there.
        self._fresh_caches()
        cached = self._material_cache.get(key_id)
        if cached is not None and cached[0] == version:
            return cached[1]
        seen = self._seen_generation
        material = await self._run(self._load_material, key_id, version)
        if material is None:
            raise KeyNotFound(key_id=key_id)
        if seen == self._seen_generation == self._generation.current():
            if len(self._material_cache) >= MAX_CACHED_KEYS:
                self._material_cache.clear()
            self._material_cache[key_id] = (version, material)
        return material

    async def import_key(
        self, meta: KeyMetadata, versions: Sequence[tuple[KeyVersion, bytes]], *, overwrite: bool
    ) -> None:
        """Store a key from a backup, re-wrapped under this keystore's master key."""
        name = material_name(meta.key_id)
        wrapped = [(v, self._wrap(name, v.version, m)) for v, m in versions]

        def insert(conn: sqlite3.Connection) -> None:
            exists = self._select_key(meta.key_id) is not None
            if exists and not overwrite:
                raise KeyAlreadyExists(key_id=meta.key_id)
            conn.execute("DELETE FROM keys WHERE key_id = ?", (meta.key_id,))
            # (a multi-Region key's regions share the rows: the same material, written again)
            conn.execute("DELETE FROM key_versions WHERE key_id = ?", (name,))
            conn.execute(
                f"INSERT INTO keys ({_KEY_COLUMNS}) VALUES ({_KEY_PLACEHOLDERS})",
                _meta_values(meta),
            )
            _index_lookup(conn, meta)
            conn.executemany(
                "INSERT INTO key_versions VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        name,
                        v.version,
                        v.created_at,
                        v.rotation_type.value if v.rotation_type else None,
                        w,
                    )
                    for v, w in wrapped
                ],
            )

        await self._write(insert)

    # -- crypto ---------------------------------------------------------------------------------

    def _load_material(self, key_id: str, version: int) -> bytes | None:
        name = material_name(key_id)
        row = self._conn.execute(
            "SELECT wrapped FROM key_versions WHERE key_id = ? AND version = ?", (name, version)
        ).fetchone()
        if row is None:
            return None
        return aead.open_sealed(self._master, row[0], _wrap_aad(name, version))

    async def _aead_for(self, key_id: str, version: int) -> AESGCM | None:
        self._fresh_caches()
        cached = self._aead_cache.get((key_id, version))
        if cached is not None:
            return cached
        seen = self._seen_generation
        material = await self._run(self._load_material, key_id, version)
        if material is None:
            return None
        cipher = AESGCM(material)
        if seen == self._seen_generation == self._generation.current():
            if len(self._aead_cache) >= MAX_CACHED_KEYS:
                self._aead_cache.clear()
            self._aead_cache[(key_id, version)] = cipher
        return cipher

    async def _material(self, key_id: str, check: StateCheck) -> bytes:
        """The current material of a key (private key DER, HMAC key), once `check` passed."""
        meta = await self.get_key(key_id)
        check(meta)
        self._fresh_caches()
        cached = self._material_cache.get(key_id)
        if cached is not None and cached[0] == meta.current_version:
            return cached[1]
        seen = self._seen_generation
        material = await self._run(self._load_material, key_id, meta.current_version)
        if material is None:
            raise KeyNotFound(key_id=key_id)
        if seen == self._seen_generation == self._generation.current():
            if len(self._material_cache) >= MAX_CACHED_KEYS:
                self._material_cache.clear()
            self._material_cache[key_id] = (meta.current_version, material)
        return material

    async def public_key(self, key_id: str, check: StateCheck) -> bytes:
        return asymmetric.public_key_der(await self._material(key_id, check))

    async def sign(
        self, key_id: str, algorithm: str, message: bytes, message_type: str, check: StateCheck
    ) -> bytes:
        material = await self._material(key_id, check)
        return asymmetric.sign(material, algorithm, message, message_type)

    async def generate_mac(
        self, key_id: str, algorithm: str, message: bytes, check: StateCheck
    ) -> bytes:
        return asymmetric.mac(await self._material(key_id, check), algorithm, message)

    async def decrypt_asymmetric(
        self, key_id: str, algorithm: str, ciphertext: bytes, check: StateCheck
    ) -> bytes:
        material = await self._material(key_id, check)
        plaintext = asymmetric.rsa_decrypt(material, algorithm, ciphertext)
        if plaintext is None:
            raise InvalidCiphertext
        return plaintext

    async def derive_shared_secret(
        self, key_id: str, peer_public_key: bytes, check: StateCheck
    ) -> bytes:
        material = await self._material(key_id, check)
        return asymmetric.derive_shared_secret(material, peer_public_key)

    async def decapsulate(self, key_id: str, ciphertext: bytes, check: StateCheck) -> bytes:
        return asymmetric.decapsulate(await self._material(key_id, check), ciphertext)

    async def encrypt(
        self, key_id: str, plaintext: bytes, aad: bytes, check: StateCheck
    ) -> tuple[int, bytes]:
        meta = await self.get_key(key_id)
        check(meta)
        cipher = await self._aead_for(key_id, meta.current_version)
        if cipher is None:
            raise KeyNotFound(key_id=key_id)
        return meta.current_version, aead.seal(cipher, plaintext, aad)

    async def decrypt(
        self, key_id: str, version: int, sealed: bytes, aad: bytes, check: StateCheck
    ) -> bytes:
        check(await self.get_key(key_id))
        cipher = await self._aead_for(key_id, version)
        if cipher is None:
            raise InvalidCiphertext
        return aead.open_sealed(cipher, sealed, aad)

    # -- aliases --------------------------------------------------------------------------------

    async def put_alias(self, alias: Alias, *, replace: bool) -> None:
        def put(conn: sqlite3.Connection) -> None:
            if replace:
                cursor = conn.execute(
                    "UPDATE aliases SET key_id = ? WHERE name = ?", (alias.key_id, alias.name)
                )
                if cursor.rowcount != 1:
                    raise AliasNotFound(alias.name)
                return
            try:
                conn.execute(
                    "INSERT INTO aliases VALUES (?, ?, ?)",
                    (alias.name, alias.key_id, alias.created_at),
                )
            except sqlite3.IntegrityError:
                raise KeyAlreadyExists(
                    f"An alias with the name {alias.name} already exists"
                ) from None

        await self._write(put)

    async def get_alias(self, name: str) -> Alias:
        def select() -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = self._conn.execute(
                "SELECT name, key_id, created_at FROM aliases WHERE name = ?", (name,)
            ).fetchone()
            return row

        row = await self._run(select)
        if row is None:
            raise AliasNotFound(name)
        return Alias(*row)

    async def delete_alias(self, name: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM aliases WHERE name = ?", (name,)).rowcount != 1:
                raise AliasNotFound(name)

        await self._write(delete)

    async def list_aliases(self) -> Sequence[Alias]:
        def select() -> list[Alias]:
            return [
                Alias(*row)
                for row in self._conn.execute(
                    "SELECT name, key_id, created_at FROM aliases ORDER BY name"
                )
            ]

        return await self._run(select)

    # -- lifecycle ------------------------------------------------------------------------------

    async def status(self) -> BackendStatus:
        return BackendStatus(connected=True)

    async def close(self) -> None:
        await self._run(self._conn.close)
        self._executor.shutdown(wait=True)
        self._generation.close()
