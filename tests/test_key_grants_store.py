"""Key policies and grants in the keystores, through KeyService: on a real Local keystore in a
temporary directory and on a real OpenBao (the shared `bao` dev server of tests/openbao.py).

What is checked: both are stored with the key's metadata by its check-and-set update, so they
survive a reopen (a restart, another node), rotation and enable/disable, and die with the key;
concurrent CreateGrants all land; CreateGrant's Name idempotency; revoke and retire with their
errors; the grant limits; a keystore of the previous release opens with its keys unchanged; a
backup carries both; and `forget` lets a Vault node see at once a grant another node created.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from s3kms import granttoken
from s3kms.backup import create_backup, open_backup, restore_backup, seal
from s3kms.clock import OffsetClock
from s3kms.crypto.masterkey import MasterKey
from s3kms.errors import (
    InvalidGrantId,
    InvalidGrantToken,
    KeyDisabled,
    KeyInvalidState,
    KeyNotFound,
    LimitExceeded,
)
from s3kms.keystore.codec import GrantsMemo, dump_grants, load_grants
from s3kms.keystore.local import LocalKeyStore
from s3kms.keystore.vault import VaultKeyStore, VaultSettings
from s3kms.model import Grant, KeyMetadata, KeyState
from s3kms.service import (
    DAY,
    MAX_GRANTS_PER_GRANTEE,
    MAX_GRANTS_PER_KEY,
    KeyService,
)

from openbao import VaultApi

T = TypeVar("T")

ACCOUNT = "111122223333"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
BOB = f"arn:aws:iam::{ACCOUNT}:user/bob"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
POLICY = (
    '{"Version": "2012-10-17", "Id": "key-policy", "Statement": [{"Sid": "Enable IAM User '
    'Permissions", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, '
    '"Action": "kms:*", "Resource": "*"}]}\n'
)
PASSPHRASE = "correct horse battery staple"

# Opens a service on the backend under test; each call is a new store (a restart of the node,
# or another node) on the same data: the same data directory, or the same Vault KV prefix.
Open = Callable[..., AbstractAsyncContextManager[KeyService]]


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


@asynccontextmanager
async def local_service(data_dir: Path, master: MasterKey, **_: Any) -> AsyncIterator[KeyService]:
    store = LocalKeyStore(data_dir, master)
    try:
        yield KeyService(store, OffsetClock(), region="us-east-1", account_id=ACCOUNT)
    finally:
        await store.close()


@asynccontextmanager
async def vault_service(
    api: VaultApi, prefix: str, *, cache_seconds: float = 1.0
) -> AsyncIterator[KeyService]:
    settings = VaultSettings(
        addresses=(api.addr,),
        token=api.root_token,
        kv_prefix=prefix,
        timeout_seconds=5.0,
        metadata_cache_seconds=cache_seconds,
    )
    store = await VaultKeyStore.connect(settings)
    try:
        yield KeyService(store, OffsetClock(), region="us-east-1", account_id=ACCOUNT)
    finally:
        await store.close()


@pytest.fixture(params=["local", pytest.param("vault", marks=pytest.mark.vault)])
def open_service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Open]:
    if request.param == "local":
        master = MasterKey(os.urandom(32), "test")
        yield lambda **kw: local_service(tmp_path, master, **kw)
    else:
        api: VaultApi = request.getfixturevalue("bao")
        prefix = f"s3kms-grants-{uuid.uuid4().hex[:10]}"
        yield lambda **kw: vault_service(api, prefix, **kw)


def made_grant(key_id: str, grantee: str, *, name: str = "") -> Grant:
    """A grant as CreateGrant makes one, for filling a key directly through the keystore."""
    grant_id = granttoken.new_grant_id()
    return Grant(
        grant_id=grant_id,
        token=granttoken.encode(key_id, grant_id),
        name=name,
        grantee_principal=grantee,
        retiring_principal=None,
        issuing_account=ROOT,
        operations=("Encrypt", "Decrypt", "GenerateDataKey"),
        created_at=time.time(),
    )


async def fill(svc: KeyService, key_id: str, grants: tuple[Grant, ...]) -> None:
    """Give the key `grants` in one metadata write (the keystore's update, as _modify does)."""
    meta = await svc.store.get_key(key_id)
    await svc.store.update_key(replace(meta, grants=grants))


# --------------------------------------------------------------------------- both backends


def test_policy_and_grants_persist_across_reopen_rotation_and_state_changes(
    open_service: Open,
) -> None:
    async def main() -> None:
        async with open_service() as svc:
            meta = await svc.create_key(description="with a policy", policy=POLICY)
            key = meta.key_id
            assert meta.policy == POLICY
            plain = await svc.create_key()
            assert plain.policy is None and plain.grants == ()
            first = await svc.create_grant(
                key,
                grantee_principal=ALICE,
                operations=["Encrypt", "Decrypt"],
                retiring_principal=BOB,
                name="app",
                context_subset={"bucket": "photos", "a": "1"},
            )
            second = await svc.create_grant(
                key,
                grantee_principal=BOB,
                operations=["GenerateDataKey"],
                context_equals={"tenant": "t-1"},
            )
            assert first.grant_id != second.grant_id
            assert granttoken.decode(first.token) == (key, first.grant_id)
            assert first.issuing_account == ROOT
            assert first.context_subset == (("a", "1"), ("bucket", "photos"))
            assert first.context_equals is None and second.context_subset is None
            new_policy = POLICY.replace("key-policy", "other")
            await svc.put_key_policy(key, new_policy)
            await svc.disable(key)
            await svc.enable(key)
            rotated = await svc.rotate(key)
            assert rotated.current_version == 2
            assert (rotated.policy, rotated.grants) == (new_policy, (first, second))
        async with open_service() as svc:  # a restart, or another node
            meta = await svc.describe(key)
            assert meta.policy == new_policy
            assert tuple(await svc.list_grants(key)) == (first, second)
            assert (await svc.describe(plain.key_id)).policy is None
            assert await svc.grant_by_token(second.token) == (key, second)
            assert await svc.retirable_grants(BOB) == [(key, first)]

    run(main())


def test_concurrent_create_grants_are_all_kept(open_service: Open) -> None:
    async def main() -> None:
        async with open_service() as one, open_service() as two:
            key = (await one.create_key()).key_id
            made = await asyncio.gather(
                *(
                    svc.create_grant(key, grantee_principal=ALICE, operations=["Decrypt"])
                    for svc in (one, two, one, two)
                )
            )
            kept = await one.list_grants(key)
            assert {g.grant_id for g in kept} == {g.grant_id for g in made}
            assert len(kept) == 4
            assert {g.grant_id for g in await two.list_grants(key)} == {g.grant_id for g in made}

    run(main())


def test_create_grant_name_is_idempotent(open_service: Open) -> None:
    async def main() -> None:
        async with open_service() as svc:
            key = (await svc.create_key()).key_id

            async def create(**changes: Any) -> Grant:
                params: dict[str, Any] = {
                    "grantee_principal": ALICE,
                    "operations": ["Encrypt", "Decrypt"],
                    "retiring_principal": BOB,
                    "name": "ebs-volume-1",
                    "context_equals": {"volume": "vol-1"},
                }
                return await svc.create_grant(key, **(params | changes))

            def same(a: Grant, b: Grant) -> bool:
                """The same grant; each CreateGrant answers a token of its own, as AWS does."""
                return replace(a, token="") == replace(b, token="") and a.token != b.token

            first = await create()
            retry = await create()  # a retry: the same grant, nothing added
            assert same(retry, first)
            assert granttoken.decode(retry.token) == (key, first.grant_id)
            assert same(await create(operations=["Decrypt", "Encrypt"]), first)  # same set
            assert len(await svc.list_grants(key)) == 1
            # The same name with another parameter is another grant (AWS: only "identical
            # parameters" return the existing one).
            others = [
                await create(grantee_principal=BOB),
                await create(operations=["Encrypt"]),
                await create(retiring_principal=None),
                await create(context_equals={"volume": "vol-2"}),
                await create(context_equals=None, context_subset={"volume": "vol-1"}),
            ]
            assert len({g.grant_id for g in others} | {first.grant_id}) == 6
            assert same(await create(grantee_principal=BOB), others[0])  # each is idempotent too
            # Without a name every request is a new grant.
            a = await create(name="")
            b = await create(name="")
            assert a.grant_id != b.grant_id
            assert len(await svc.list_grants(key)) == 8

    run(main())


def test_revoke_and_retire(open_service: Open) -> None:
    async def main() -> None:
        async with open_service() as svc:
            key = (await svc.create_key()).key_id
            kept = await svc.create_grant(key, grantee_principal=ALICE, operations=["Decrypt"])
            doomed = await svc.create_grant(
                key, grantee_principal=BOB, operations=["Decrypt"], retiring_principal=ALICE
            )
            retired = await svc.create_grant(key, grantee_principal=BOB, operations=["Encrypt"])

            await svc.revoke_grant(key, doomed.grant_id)
            assert [g.grant_id for g in await svc.list_grants(key)] == [
                kept.grant_id,
                retired.grant_id,
            ]
            with pytest.raises(KeyNotFound, match=f"Grant ID {doomed.grant_id} not found"):
                await svc.revoke_grant(key, doomed.grant_id)
            with pytest.raises(InvalidGrantId):
                await svc.revoke_grant(key, "not-a-grant-id")
            with pytest.raises(KeyNotFound):
                await svc.grant_by_token(doomed.token)  # decodes, but its grant is gone

            seen: list[tuple[str, str]] = []

            def refuse(meta: KeyMetadata, grant: Grant) -> None:
                seen.append((meta.key_id, grant.grant_id))
                raise KeyDisabled("not yours")

            def allow(meta: KeyMetadata, grant: Grant) -> None:
                seen.append((meta.key_id, grant.grant_id))

            with pytest.raises(KeyDisabled, match="not yours"):
                await svc.retire_grant(key, retired.grant_id, check=refuse)
            assert len(await svc.list_grants(key)) == 2  # a refused retire changed nothing
            token_key, by_token = await svc.grant_by_token(retired.token)
            await svc.retire_grant(token_key, by_token.grant_id, check=allow)
            assert seen == [(key, retired.grant_id)] * 2
            assert [g.grant_id for g in await svc.list_grants(key)] == [kept.grant_id]
            with pytest.raises(KeyNotFound, match="not found"):
                await svc.retire_grant(key, retired.grant_id, check=allow)
            with pytest.raises(InvalidGrantId):
                await svc.retire_grant(key, "A" * 64, check=allow)

            with pytest.raises(InvalidGrantToken):
                await svc.grant_by_token("not a token")
            with pytest.raises(InvalidGrantToken):
                await svc.grant_by_token("")
            with pytest.raises(KeyNotFound):  # a well-formed token of a key that never was
                await svc.grant_by_token(granttoken.encode("no-such-key", "ab" * 32))

    run(main())


def test_key_states(open_service: Open) -> None:
    """CreateGrant needs an Enabled key; the other grant and policy operations work in every
    state (AWS's key state table)."""

    async def flow() -> None:
        async with open_service() as svc:
            key = (await svc.create_key()).key_id
            grant = await svc.create_grant(key, grantee_principal=ALICE, operations=["Decrypt"])
            other = await svc.create_grant(key, grantee_principal=BOB, operations=["Decrypt"])
            await svc.disable(key)
            with pytest.raises(KeyDisabled):
                await svc.create_grant(key, grantee_principal=ALICE, operations=["Encrypt"])
            await svc.schedule_deletion(key, 7)
            with pytest.raises(KeyInvalidState):
                await svc.create_grant(key, grantee_principal=ALICE, operations=["Encrypt"])
            meta = await svc.put_key_policy(key, POLICY)
            assert meta.state is KeyState.PENDING_DELETION and meta.policy == POLICY
            assert [g.grant_id for g in await svc.list_grants(key)] == [
                grant.grant_id,
                other.grant_id,
            ]
            await svc.revoke_grant(key, grant.grant_id)
            await svc.retire_grant(key, other.grant_id, check=lambda meta, grant: None)
            assert await svc.list_grants(key) == ()
            await svc.cancel_deletion(key)
            await svc.enable(key)
            await svc.create_grant(key, grantee_principal=ALICE, operations=["Encrypt"])

    run(flow())


def test_grants_die_with_their_key(open_service: Open) -> None:
    async def main() -> None:
        async with open_service() as svc:
            key = (await svc.create_key()).key_id
            survivor = (await svc.create_key()).key_id
            grant = await svc.create_grant(
                key, grantee_principal=ALICE, operations=["Decrypt"], retiring_principal=BOB
            )
            kept = await svc.create_grant(
                survivor, grantee_principal=ALICE, operations=["Decrypt"], retiring_principal=BOB
            )
            assert await svc.retirable_grants(BOB) == sorted(
                [(key, grant), (survivor, kept)], key=lambda pair: pair[0]
            )
            await svc.schedule_deletion(key, 7)
            assert isinstance(svc.clock, OffsetClock)
            svc.clock.offset = 8 * DAY
            assert (await svc.run_due_work())[0] == 1
            with pytest.raises(KeyNotFound):
                await svc.list_grants(key)
            with pytest.raises(KeyNotFound):
                await svc.grant_by_token(grant.token)
            assert await svc.retirable_grants(BOB) == [(survivor, kept)]

    run(main())


def test_grant_limits(open_service: Open) -> None:
    async def main() -> None:
        async with open_service() as svc:
            key = (await svc.create_key()).key_id
            # One grantee: at most MAX_GRANTS_PER_GRANTEE grants; others may still get theirs.
            await fill(
                svc, key, tuple(made_grant(key, ALICE) for _ in range(MAX_GRANTS_PER_GRANTEE - 1))
            )
            await svc.create_grant(key, grantee_principal=ALICE, operations=["Decrypt"], name="n")
            with pytest.raises(LimitExceeded, match=f"grants for {ALICE}"):
                await svc.create_grant(key, grantee_principal=ALICE, operations=["Decrypt"])
            # An idempotent retry at the limit answers the grant, as before the limit.
            again = await svc.create_grant(
                key, grantee_principal=ALICE, operations=["Decrypt"], name="n"
            )
            assert again.name == "n"
            await svc.create_grant(key, grantee_principal=BOB, operations=["Decrypt"])
            assert len(await svc.list_grants(key)) == MAX_GRANTS_PER_GRANTEE + 1

    run(main())


def test_forget_reads_the_metadata_again(open_service: Open) -> None:
    """Local: nothing to forget (its cache follows every worker's writes). Vault: see the
    two-node test below; here, forget of any key, existing or not, is harmless."""

    async def main() -> None:
        async with open_service() as svc:
            key = (await svc.create_key()).key_id
            await svc.forget(key)
            await svc.forget("no-such-key")
            grant = await svc.create_grant(key, grantee_principal=ALICE, operations=["Decrypt"])
            seen: list[tuple[Grant, ...]] = []
            await svc.encrypt(key, b"x", access=lambda meta: seen.append(meta.grants))
            assert seen == [(grant,)]

    run(main())


def test_backup_carries_policies_and_grants(open_service: Open, tmp_path: Path) -> None:
    async def main() -> None:
        async with open_service() as svc:
            key = (await svc.create_key(policy=POLICY)).key_id
            plain = (await svc.create_key()).key_id
            grant = await svc.create_grant(
                key,
                grantee_principal=ALICE,
                operations=["Decrypt"],
                name="g",
                retiring_principal=BOB,
                context_equals={"k": "v"},
            )
            sealed = await create_backup(svc.store, PASSPHRASE)
            entries = {e["key_id"]: e for e in open_backup(sealed, PASSPHRASE)["keys"]}
            assert entries[key]["policy"] == POLICY
            assert entries[plain]["policy"] is None and entries[plain]["grants"] == []
            assert [g["grant_id"] for g in entries[key]["grants"]] == [grant.grant_id]
            if not svc.store.material_exportable:
                return  # Vault: metadata only; `s3kms restore` refuses it (docs/vault.md)
        # Into a fresh data directory with another master key.
        async with local_service(tmp_path / "restored", MasterKey(os.urandom(32), "new")) as new:
            summary = await restore_backup(new.store, sealed, PASSPHRASE)
            assert summary.restored == 2
            meta = await new.describe(key)
            assert (meta.policy, meta.grants) == (POLICY, (grant,))
            assert (await new.describe(plain)).policy is None
            assert await new.grant_by_token(grant.token) == (key, grant)

    (tmp_path / "restored").mkdir()
    run(main())


# --------------------------------------------------------------------------- Local only


def test_local_create_grant_on_a_full_key(tmp_path: Path) -> None:
    """MAX_GRANTS_PER_KEY grants fit; one more is refused. And the cost this limit was chosen
    by: a CreateGrant on a key near the limit stays well under 50 ms on a quiet machine (the
    assertion is looser, for a loaded CI runner)."""

    async def flow() -> None:
        master = MasterKey(os.urandom(32), "test")
        async with local_service(tmp_path, master) as svc:
            key = (await svc.create_key()).key_id
            await fill(
                svc,
                key,
                tuple(made_grant(key, f"{ALICE}-{i}") for i in range(MAX_GRANTS_PER_KEY - 3)),
            )
            began = time.perf_counter()
            made = [
                await svc.create_grant(key, grantee_principal=BOB, operations=[f"Op{i}"])
                for i in range(3)
            ]
            per_grant = (time.perf_counter() - began) / 3
            assert len(await svc.list_grants(key)) == MAX_GRANTS_PER_KEY
            with pytest.raises(LimitExceeded, match="the most s3kms allows on one key"):
                await svc.create_grant(key, grantee_principal=BOB, operations=["Decrypt"])
            assert per_grant < 0.5, f"CreateGrant took {per_grant * 1000:.0f} ms"
        async with local_service(tmp_path, master) as svc:  # what was appended reads back whole
            grants = await svc.list_grants(key)
            assert len(grants) == MAX_GRANTS_PER_KEY and list(grants[-3:]) == made

    run(flow())


# The tables of the previous release (before key policies and grants), as it created them.
PREVIOUS_RELEASE_SCHEMA = """
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
    key_usage TEXT NOT NULL DEFAULT 'ENCRYPT_DECRYPT'
) WITHOUT ROWID;
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


def test_local_keystore_of_the_previous_release_opens_and_keeps_working(tmp_path: Path) -> None:
    master = MasterKey(os.urandom(32), "test")

    async def make_old() -> tuple[str, bytes]:
        # A key made and used by a store; then its row moved into a database of the previous
        # release's layout, as that release wrote it (material wrapped under the same master key).
        async with local_service(tmp_path / "new", master) as svc:
            key = (await svc.create_key(description="old key")).key_id
            await svc.tag(key, {"team": "storage"})
            _, ciphertext = await svc.encrypt(key, b"made before the upgrade")
        return key, ciphertext

    (tmp_path / "new").mkdir()
    key, ciphertext = run(make_old())
    source = sqlite3.connect(tmp_path / "new" / "keystore.db")
    old = sqlite3.connect(tmp_path / "keystore.db")
    with old:
        old.executescript(PREVIOUS_RELEASE_SCHEMA)
        for table in ("meta", "key_versions"):
            rows = source.execute(f"SELECT * FROM {table}").fetchall()
            marks = ",".join("?" * len(rows[0]))
            old.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        row = source.execute(
            "SELECT key_id, state, created_at, description, current_version, deletion_date,"
            " pending_window_days, rotation_enabled, rotation_period_days, next_rotation, tags,"
            " revision, key_spec, key_usage FROM keys"
        ).fetchone()
        old.execute(f"INSERT INTO keys VALUES ({','.join('?' * 14)})", row)
    old.close()
    source.close()

    async def upgraded() -> None:
        async with local_service(tmp_path, master) as svc:
            meta = await svc.describe(key)
            assert (meta.description, meta.tags) == ("old key", (("team", "storage"),))
            assert (meta.policy, meta.grants) == (None, ())
            assert (await svc.decrypt(ciphertext)).plaintext == b"made before the upgrade"
            await svc.put_key_policy(key, POLICY)
            grant = await svc.create_grant(key, grantee_principal=ALICE, operations=["Decrypt"])
            new_key = (await svc.create_key(policy=POLICY)).key_id
        async with local_service(tmp_path, master) as svc:  # a second open: nothing to migrate
            meta = await svc.describe(key)
            assert (meta.policy, meta.grants) == (POLICY, (grant,))
            assert (await svc.describe(new_key)).policy == POLICY
            assert (await svc.decrypt(ciphertext)).plaintext == b"made before the upgrade"

    run(upgraded())
    columns = [
        r[1] for r in sqlite3.connect(tmp_path / "keystore.db").execute("PRAGMA table_info(keys)")
    ]
    # Every later column added by the migration, in release order.
    assert columns[-7:] == [
        "policy", "grants", "origin", "materials", "multi_region", "kmip", "lookup",
    ]  # fmt: skip


def test_restore_of_a_backup_made_before_policies_and_grants(tmp_path: Path) -> None:
    """A backup of the previous release: key entries without `policy` and `grants`."""
    master = MasterKey(os.urandom(32), "test")

    async def main() -> None:
        async with local_service(tmp_path / "source", master) as svc:
            key = (await svc.create_key(description="from an old backup")).key_id
            _, ciphertext = await svc.encrypt(key, b"secret")
            payload = open_backup(await create_backup(svc.store, PASSPHRASE), PASSPHRASE)
        for entry in payload["keys"]:
            del entry["policy"], entry["grants"]
        old_backup = seal(payload, PASSPHRASE)
        async with local_service(tmp_path / "target", MasterKey(os.urandom(32), "new")) as new:
            assert (await restore_backup(new.store, old_backup, PASSPHRASE)).restored == 1
            meta = await new.describe(key)
            assert (meta.description, meta.policy, meta.grants) == ("from an old backup", None, ())
            assert (await new.decrypt(ciphertext)).plaintext == b"secret"
            await new.create_grant(key, grantee_principal=ALICE, operations=["Decrypt"])

    (tmp_path / "source").mkdir()
    (tmp_path / "target").mkdir()
    run(main())


# --------------------------------------------------------------------------- Vault only


@pytest.mark.vault
def test_vault_forget_shows_a_grant_another_node_created(bao: VaultApi) -> None:
    """Node B caches the key's metadata for its crypto path (a 30 s window): a grant created
    through node A is not in B's copy until B forgets it, and then at once."""
    prefix = f"s3kms-grants-{uuid.uuid4().hex[:10]}"

    async def main() -> None:
        async with (
            vault_service(bao, prefix, cache_seconds=30) as a,
            vault_service(bao, prefix, cache_seconds=30) as b,
        ):
            key = (await a.create_key()).key_id
            seen: list[tuple[Grant, ...]] = []

            def note(meta: KeyMetadata) -> None:
                seen.append(meta.grants)

            await b.encrypt(key, b"x", access=note)  # B reads and caches the metadata
            grant = await a.create_grant(key, grantee_principal=ALICE, operations=["Encrypt"])
            await b.encrypt(key, b"x", access=note)  # within the window: B's cached copy
            assert seen == [(), ()]
            # Management reads are never cached: B finds the grant by its token at once...
            assert await b.grant_by_token(grant.token) == (key, grant)
            # ...and after forgetting its copy, B's crypto path sees it too.
            await b.forget(key)
            await b.encrypt(key, b"x", access=note)
            assert seen[-1] == (grant,)

    run(main())


@pytest.mark.vault
def test_vault_record_without_policy_and_grants_reads_as_defaults(bao: VaultApi) -> None:
    """A key record written by the previous release has neither field."""
    prefix = f"s3kms-grants-{uuid.uuid4().hex[:10]}"

    async def main() -> None:
        async with vault_service(bao, prefix) as svc:
            key = (await svc.create_key(description="old record", policy=POLICY)).key_id
            path = f"secret/data/{prefix}/keys/{key}"
            data = bao.call("GET", path)["data"]["data"]
            del data["policy"], data["grants"]
            bao.call("POST", path, json={"data": data})
            meta = await svc.describe(key)
            assert (meta.description, meta.policy, meta.grants) == ("old record", None, ())
            grant = await svc.create_grant(key, grantee_principal=ALICE, operations=["Decrypt"])
            assert (await svc.describe(key)).grants == (grant,)
            _, ciphertext = await svc.encrypt(key, b"still works")
            assert (await svc.decrypt(ciphertext)).plaintext == b"still works"

    run(main())


@pytest.mark.vault
def test_vault_refuses_a_record_too_large_for_one_storage_entry(bao: VaultApi) -> None:
    prefix = f"s3kms-grants-{uuid.uuid4().hex[:10]}"

    async def main() -> None:
        async with vault_service(bao, prefix) as svc:
            key = (await svc.create_key()).key_id
            many = tuple(made_grant(key, f"{ALICE}-{i}") for i in range(3000))
            with pytest.raises(LimitExceeded, match="one Vault storage entry"):
                await fill(svc, key, many)
            assert (await svc.describe(key)).grants == ()  # nothing was written
            await fill(svc, key, many[:2000])
            made = await svc.create_grant(key, grantee_principal=BOB, operations=["Decrypt"])
            assert len(await svc.list_grants(key)) == 2001
        async with vault_service(bao, prefix) as other:  # another node parses what was written
            assert await other.list_grants(key) == (*many[:2000], made)

    run(main())


def test_grants_memo_never_answers_other_grants_than_its_text() -> None:
    """The parse cache of large grant lists (keystore/codec.py), as both keystores use it."""
    memo = GrantsMemo()
    grants = tuple(made_grant("k", f"{ALICE}-{i}") for i in range(100))
    text = memo.dump("k", grants)
    assert text == dump_grants(grants) and len(text) > GrantsMemo.MIN_TEXT
    memo.keep("k", text, grants)
    assert memo.load("k", text) is grants  # the same text: the kept parse
    more = (*grants, made_grant("k", BOB))
    appended = memo.dump("k", more)  # one grant appended: the kept text and one more
    assert appended == dump_grants(more) and load_grants(appended) == more
    fewer = grants[1:]
    assert memo.load("k", dump_grants(fewer)) == fewer  # another text: parsed, not the kept one
    assert memo.load("other", text) == grants and memo.load("other", text) is not grants
    memo.drop("k")
    assert memo.load("k", appended) == more
