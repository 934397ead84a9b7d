"""The Vault keystore's lookup index (`KeyStore.find_keys`), against a real OpenBao.

A key's lookup terms (`KeyMetadata.lookup`: KMIP objects' owner and Name hashes, record.py's
`terms`) are one string of its KV record and one KV entry each at
`<prefix>/lookup/<term>/<key id>` (store.py, `_write_indexed`), so that `find_keys` is one KV
LIST. Checked through KeyService: the index after a create, a change of the terms (a rename), a
deletion and a Register; limit and order; another node; the extra entries a crash leaves, which
KeyService.find_keys leaves out; the write order when two nodes change one object's terms at
once; the Vault calls of each write (none more for a write that keeps the terms); region-
qualified ids. Without a server: the record's field and its strings.

Every test has its own KV prefix (the OpenBao server is the session's).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from s3kms.clock import OffsetClock
from s3kms.errors import (
    InternalError,
    InvalidRequest,
    KeyAlreadyExists,
    LimitExceeded,
    UnsupportedOperation,
)
from s3kms.keystore.base import WriteConflict
from s3kms.keystore.regional import RegionalKeyStore
from s3kms.keystore.vault import VaultKeyStore, VaultSettings
from s3kms.keystore.vault.kv import Record
from s3kms.keystore.vault.store import (
    _KV_WRITE_STRINGS,
    MAX_REQUEST_STRINGS,
    _checked_record,
    _json_strings,
    _meta_to_record,
    _record_to_meta,
)
from s3kms.model import KeyMetadata, KeyState, KeyVersion
from s3kms.protocols.kmip.record import ACTIVE, KmipRecord, name_term, owner_term
from s3kms.service import KeyService

from openbao import VaultApi

T = TypeVar("T")
Change = Callable[[str], Awaitable[KeyMetadata]]

ACCOUNT = "111122223333"
OWNER = "arn:aws:iam::000000000000:user/alice"
OTHER_OWNER = "arn:aws:iam::000000000000:user/bob"
POLICY = '{"Version": "2012-10-17", "Statement": []}'


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def kmip(*names: str, owner: str = OWNER) -> KmipRecord:
    return KmipRecord(
        owner=owner, object_type=2, state=ACTIVE, initial_date=0, last_change_date=0, names=names
    )


def settings(api: VaultApi, prefix: str) -> VaultSettings:
    return VaultSettings(
        addresses=(api.addr,), token=api.root_token, kv_prefix=prefix, timeout_seconds=10.0
    )


@asynccontextmanager
async def node(api: VaultApi, prefix: str) -> AsyncIterator[tuple[KeyService, VaultKeyStore]]:
    """One node: a KeyService on its own connection to the Vault keystore, and the keystore."""
    store = await VaultKeyStore.connect(settings(api, prefix))
    try:
        yield KeyService(store, OffsetClock(), region="us-east-1", account_id=ACCOUNT), store
    finally:
        await store.close()


async def create(svc: KeyService, record: KmipRecord, **kwargs: Any) -> KeyMetadata:
    """A KMIP Create's key: its record and terms, as operations.py makes them."""
    return await svc.create_key(
        kwargs.pop("key_id", None),
        kmip=record.dump(),
        lookup=record.terms(),
        state=record.key_state(),
        **kwargs,
    )


async def rename(svc: KeyService, key_id: str, record: KmipRecord) -> KeyMetadata:
    """A KMIP change of the object's Names: its record and terms."""
    return await svc.modify(key_id, lambda m: replace(m, kmip=record.dump(), lookup=record.terms()))


async def found(svc: KeyService, term: str) -> list[str]:
    """KeyService.find_keys' answer: the keys read and checked."""
    return [m.key_id for m in await svc.find_keys(term)]


def listed(api: VaultApi, prefix: str, path: str) -> list[str]:
    resp = api.api("LIST", f"secret/metadata/{prefix}/{path}")
    if resp.status_code == 404:
        return []
    keys: list[str] = resp.json()["data"]["keys"]
    return keys


def entry(api: VaultApi, prefix: str, term: str, key_id: str) -> dict[str, Any] | None:
    resp = api.api("GET", f"secret/data/{prefix}/lookup/{term}/{key_id}")
    if resp.status_code == 404:
        return None
    data: dict[str, Any] = resp.json()["data"]["data"]
    return data


def record_of(api: VaultApi, prefix: str, key_id: str) -> dict[str, Any]:
    data: dict[str, Any] = api.call("GET", f"secret/data/{prefix}/keys/{key_id}")["data"]["data"]
    return data


class Calls:
    """The requests a keystore sends to Vault (through its transport), from now on."""

    def __init__(self, store: VaultKeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[tuple[str, str]] = []
        original = store._transport.request

        async def request(method: str, path: str, **kwargs: Any) -> Any:
            self.sent.append((method, path))
            return await original(method, path, **kwargs)

        monkeypatch.setattr(store._transport, "request", request)

    def take(self) -> list[tuple[str, str]]:
        """The requests since the last take."""
        sent, self.sent = self.sent, []
        return sent


def index_calls(sent: list[tuple[str, str]]) -> list[str]:
    return [method for method, path in sent if "/lookup/" in path]


def key_calls(sent: list[tuple[str, str]], key_id: str) -> list[str]:
    return [method for method, path in sent if path.endswith(f"/keys/{key_id}")]


@pytest.fixture
def prefix() -> str:
    return f"s3kms-lookup-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- without a server


def test_the_terms_are_one_string_of_the_record_and_read_back() -> None:
    meta = KeyMetadata(key_id="k", state=KeyState.ENABLED, created_at=1.0, policy=POLICY)
    versions = [KeyVersion(1, 1.0, None)]
    record = kmip("a", "b")
    plain = _meta_to_record(replace(meta, kmip=record.dump()), versions)
    assert "lookup" not in plain  # no terms: no field, the record as it was
    indexed = _meta_to_record(replace(meta, kmip=record.dump(), lookup=record.terms()), versions)
    assert indexed == {**plain, "lookup": json.dumps(list(record.terms()), separators=(",", ":"))}
    assert _record_to_meta(Record(indexed, 3)).lookup == record.terms()
    assert _record_to_meta(Record(plain, 3)).lookup == ()  # absent: none
    # Only hashes: no name, no owner in clear.
    assert "alice" not in indexed["lookup"] and '"a"' not in indexed["lookup"]
    assert record.terms() == (owner_term(OWNER), name_term(OWNER, "a"), name_term(OWNER, "b"))
    for bad in ({"x": 1}, '{"x": 1}', "[1]", "not json"):
        with pytest.raises(InternalError, match="malformed key metadata"):
            _record_to_meta(Record({**indexed, "lookup": bad}, 3))
    # A term that is no path segment of the index is refused before anything is written.
    for term in ("Upper", "a/b", "..", "", "x" * 129, "kmip-name:é"):
        with pytest.raises(InvalidRequest, match="lookup term"):
            _meta_to_record(replace(meta, lookup=(term,)), versions)


def test_a_kmip_objects_strings_are_39_plus_2_per_tag_however_many_names() -> None:
    """`kmip` and `lookup`, one string each: a KMIP object with a key policy (and never
    multi-Region) has 39 strings plus 2 per tag in its write; 480 tags fit (999 strings)."""
    meta = KeyMetadata(key_id="k", state=KeyState.ENABLED, created_at=1.0, policy=POLICY)
    versions = [KeyVersion(1, 1.0, None)]
    for names in ((), ("one",), tuple(f"name-{i}" for i in range(64))):
        record = kmip(*names)
        data = _meta_to_record(replace(meta, kmip=record.dump(), lookup=record.terms()), versions)
        assert _json_strings(data) + _KV_WRITE_STRINGS == 39
    most = (MAX_REQUEST_STRINGS - 39) // 2
    assert most == 480
    record = kmip(*(f"name-{i}" for i in range(64)))
    for tags, fits in ((most, True), (most + 1, False)):  # 999 and 1,001 strings
        tagged = replace(
            meta,
            kmip=record.dump(),
            lookup=record.terms(),
            tags=tuple((f"t{i:03}", "v") for i in range(tags)),
        )
        data = _meta_to_record(tagged, versions)
        if fits:
            assert _json_strings(_checked_record(data)) + _KV_WRITE_STRINGS == 999
        else:
            with pytest.raises(LimitExceeded, match="JSON strings"):
                _checked_record(data)


# --------------------------------------------------------------------------- on OpenBao


@pytest.mark.vault
def test_find_keys_after_create_rename_register_and_delete(bao: VaultApi, prefix: str) -> None:
    async def main() -> None:
        async with node(bao, prefix) as (svc, store):
            a = await create(svc, kmip("bucket-a"))
            b = await create(svc, kmip("bucket-b"))
            theirs = await create(svc, kmip("bucket-a", owner=OTHER_OWNER))
            plain = await svc.create_key()  # no KMIP object: no terms, no entries
            assert a.lookup == kmip("bucket-a").terms()
            name_a, name_b = name_term(OWNER, "bucket-a"), name_term(OWNER, "bucket-b")
            owner = owner_term(OWNER)
            assert await store.find_keys(name_a, limit=10) == [a.key_id]
            assert await store.find_keys(name_b, limit=10) == [b.key_id]
            assert await store.find_keys(owner, limit=10) == sorted([a.key_id, b.key_id])
            assert await store.find_keys(name_term(OTHER_OWNER, "bucket-a"), limit=10) == [
                theirs.key_id
            ]
            assert await store.find_keys(name_term(OWNER, "nothing"), limit=10) == []
            # As stored: the record's one string, one tiny entry per term; no name in clear.
            assert json.loads(record_of(bao, prefix, a.key_id)["lookup"]) == list(a.lookup)
            assert "lookup" not in record_of(bao, prefix, plain.key_id)
            assert entry(bao, prefix, name_a, a.key_id) == {"format": 1}
            terms = listed(bao, prefix, "lookup")
            assert sorted(terms) == sorted(f"{t}/" for t in {*a.lookup, *b.lookup, *theirs.lookup})
            assert not any("bucket" in t or "alice" in t for t in terms)

            # A rename: bucket-a's term removed, bucket-c's added, the owner's kept.
            renamed = await rename(svc, a.key_id, kmip("bucket-c"))
            name_c = name_term(OWNER, "bucket-c")
            assert renamed.lookup == (owner, name_c)
            assert await store.find_keys(name_a, limit=10) == []
            assert entry(bao, prefix, name_a, a.key_id) is None
            assert await store.find_keys(name_c, limit=10) == [a.key_id]
            assert await found(svc, name_c) == [a.key_id]
            assert await store.find_keys(owner, limit=10) == sorted([a.key_id, b.key_id])
            # A second Name, then none.
            await rename(svc, a.key_id, kmip("bucket-c", "bucket-d"))
            assert await found(svc, name_term(OWNER, "bucket-d")) == [a.key_id]
            await rename(svc, a.key_id, kmip())
            assert (await svc.describe(a.key_id)).lookup == (owner,)
            for name in ("bucket-c", "bucket-d"):
                assert await store.find_keys(name_term(OWNER, name), limit=10) == []
            # Changes of anything else keep the terms and the entries.
            await svc.modify(b.key_id, lambda m: replace(m, description="changed"))
            await svc.tag(b.key_id, {"team": "storage"})
            await svc.disable(b.key_id)
            await svc.rotate(a.key_id)
            assert (await svc.describe(b.key_id)).lookup == b.lookup
            assert await found(svc, name_b) == [b.key_id]
            assert await found(svc, owner) == sorted([a.key_id, b.key_id])

            # A Register (an EXTERNAL key made with its material, transit's or KV's): indexed.
            registered = await svc.create_with_material(
                svc.new_key_id(),
                os.urandom(40),
                key_spec="SECRET_DATA",
                key_usage="ENCRYPT_DECRYPT",
                kmip=kmip("secret").dump(),
                lookup=kmip("secret").terms(),
            )
            imported = await svc.create_with_material(
                svc.new_key_id(),
                os.urandom(32),
                key_spec="SYMMETRIC_DEFAULT",
                kmip=kmip("imported").dump(),
                lookup=kmip("imported").terms(),
            )
            for meta, name in ((registered, "secret"), (imported, "imported")):
                assert await found(svc, name_term(OWNER, name)) == [meta.key_id]
                assert meta.key_id in await found(svc, owner)

            # Deleted (KMIP Destroy): its record, then its entries.
            await svc.destroy_now(b.key_id)
            await svc.destroy_now(registered.key_id)
            assert await store.find_keys(name_b, limit=10) == []
            assert await store.find_keys(owner, limit=10) == sorted([a.key_id, imported.key_id])
            assert entry(bao, prefix, owner, b.key_id) is None
            assert listed(bao, prefix, f"lookup/{name_term(OWNER, 'secret')}") == []
            # A restore into Vault (import_key) is refused, and writes nothing.
            meta = replace(a, key_id=svc.new_key_id(), lookup=(name_term(OWNER, "restored"),))
            with pytest.raises(UnsupportedOperation, match="snapshot"):
                await store.import_key(meta, [], overwrite=False)
            assert listed(bao, prefix, f"lookup/{name_term(OWNER, 'restored')}") == []

    run(main())


@pytest.mark.vault
def test_limit_and_order(bao: VaultApi, prefix: str) -> None:
    async def main() -> None:
        async with node(bao, prefix) as (svc, store):
            # Ids of every character a key id has, made in no particular order.
            made = [f"{c}{sep}{uuid.uuid4().hex[:8]}" for c in "edZA90" for sep in "._-"]
            for key_id in made:
                await create(svc, kmip("shared"), key_id=key_id)
            ids = sorted(made)
            term = name_term(OWNER, "shared")
            assert await store.find_keys(term, limit=100) == ids
            assert await store.find_keys(term, limit=3) == ids[:3]
            assert await store.find_keys(term, limit=len(ids)) == ids
            assert await store.find_keys(term, limit=0) == []
            assert await found(svc, term) == ids
            assert [m.key_id for m in await svc.find_keys(term, limit=5)] == ids[:5]
            # A term that cannot be stored is held by no key: no call, no error.
            assert await store.find_keys("not/a/term", limit=10) == []

    run(main())


@pytest.mark.vault
def test_another_node_finds_terms_at_once(bao: VaultApi, prefix: str) -> None:
    """The entries are in KV and never cached: another node finds a new object, a rename and
    a deletion at once (its metadata cache window, 1 s by default, applies to crypto only)."""

    async def main() -> None:
        async with node(bao, prefix) as (one, _), node(bao, prefix) as (two, other):
            made = await create(one, kmip("first"))
            first, second = name_term(OWNER, "first"), name_term(OWNER, "second")
            assert await found(two, first) == [made.key_id]
            await two.encrypt(made.key_id, b"cached")  # its metadata cached on node two
            await rename(one, made.key_id, kmip("second"))
            assert await other.find_keys(first, limit=10) == []
            assert await found(two, second) == [made.key_id]
            assert (await two.describe(made.key_id)).lookup == (owner_term(OWNER), second)
            await rename(two, made.key_id, kmip("first"))  # and back, through the other node
            assert await found(one, first) == [made.key_id]
            assert await found(one, second) == []
            await one.destroy_now(made.key_id)
            assert await found(two, first) == []
            assert await other.find_keys(owner_term(OWNER), limit=10) == []

    run(main())


@pytest.mark.vault
def test_extra_entries_left_by_a_crash_are_left_out(
    bao: VaultApi, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create cut off between its entries and its record (the record write fails), an entry
    written by hand for a key that does not hold the term, and one for a key that does not
    exist: the keystore answers them (it may), KeyService.find_keys leaves them out."""

    async def main() -> None:
        async with node(bao, prefix) as (svc, store):
            kept = await create(svc, kmip("crash"))
            term = name_term(OWNER, "crash")
            original = store._kv.write

            async def crash(path: str, data: dict[str, Any], cas: int) -> int | None:
                if "/keys/" in path:
                    raise ConnectionError("the node died before its record write")
                return await original(path, data, cas)

            monkeypatch.setattr(store._kv, "write", crash)
            lost = svc.new_key_id()
            with pytest.raises(ConnectionError):
                await create(svc, kmip("crash"), key_id=lost)
            monkeypatch.setattr(store._kv, "write", original)
            assert entry(bao, prefix, term, lost) == {"format": 1}  # written before the record

            other = await create(svc, kmip("other"))
            missing = "no-such-key"
            for key_id in (other.key_id, missing):  # as a crash would leave them
                bao.call("POST", f"secret/data/{prefix}/lookup/{term}/{key_id}", {"data": {}})
            assert await store.find_keys(term, limit=10) == sorted(
                [kept.key_id, lost, other.key_id, missing]
            )
            assert await found(svc, term) == [kept.key_id]
            # A create of the id the crash left completes it; the entry is reused.
            await create(svc, kmip("crash"), key_id=lost)
            assert await found(svc, term) == sorted([kept.key_id, lost])
            # A rename whose record write loses its check-and-set (another node wrote the
            # record between the update's read and its write) leaves the old term's entry (the
            # record still holds it) and an extra entry for the new term.
            path = f"secret/data/{prefix}/keys/{kept.key_id}"

            async def overtaken(key_path: str, data: dict[str, Any], cas: int) -> int | None:
                if key_path.endswith(f"/keys/{kept.key_id}"):
                    now = record_of(bao, prefix, kept.key_id)
                    bao.call("POST", path, {"options": {"cas": cas}, "data": now})
                return await original(key_path, data, cas)

            monkeypatch.setattr(store._kv, "write", overtaken)
            renamed = kmip("renamed")
            current = await svc.describe(kept.key_id)
            with pytest.raises(WriteConflict):
                await store.update_key(
                    replace(current, kmip=renamed.dump(), lookup=renamed.terms())
                )
            monkeypatch.setattr(store._kv, "write", original)
            assert (await svc.describe(kept.key_id)).lookup == kmip("crash").terms()
            assert kept.key_id in await store.find_keys(term, limit=10)
            assert await found(svc, term) == sorted([kept.key_id, lost])
            assert await store.find_keys(name_term(OWNER, "renamed"), limit=10) == [kept.key_id]
            assert await found(svc, name_term(OWNER, "renamed")) == []

    run(main())


@pytest.mark.vault
@pytest.mark.parametrize("removal", ["before the adder's record write", "after the adder"])
def test_two_nodes_removing_and_adding_a_term_at_once_never_lose_its_entry(
    bao: VaultApi, prefix: str, monkeypatch: pytest.MonkeyPatch, removal: str
) -> None:
    """Node one removes a Name (its record written, its entry not deleted yet) while node two
    adds it back; node one's deletion lands between node two's entry write and its record
    write, or after node two is done. Either way the entry is there at the end (node two's
    second write, or node one's read of the record after its deletion)."""

    async def main() -> None:
        async with node(bao, prefix) as (one, store_one), node(bao, prefix) as (two, store_two):
            made = await create(one, kmip("contested"))
            term = name_term(OWNER, "contested")
            at_unindex, release_one, one_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
            unindex = store_one._unindex

            async def paused_unindex(key_id: str, terms: Any) -> None:
                at_unindex.set()
                await release_one.wait()
                await unindex(key_id, terms)
                one_done.set()

            monkeypatch.setattr(store_one, "_unindex", paused_unindex)
            if removal.startswith("before"):
                write = store_two._kv.write

                async def paused_write(path: str, data: dict[str, Any], cas: int) -> int | None:
                    if path.endswith(f"/keys/{made.key_id}"):
                        release_one.set()  # node two's entry is written: node one deletes it
                        await one_done.wait()
                    return await write(path, data, cas)

                monkeypatch.setattr(store_two._kv, "write", paused_write)
            removing = asyncio.ensure_future(rename(one, made.key_id, kmip()))
            await at_unindex.wait()  # node one's record no longer holds the term
            assert await found(two, term) == []
            await rename(two, made.key_id, kmip("contested"))
            release_one.set()
            await removing
            assert (await two.describe(made.key_id)).lookup == (owner_term(OWNER), term)
            assert entry(bao, prefix, term, made.key_id) == {"format": 1}
            assert await found(one, term) == [made.key_id]

    run(main())


@pytest.mark.vault
def test_the_vault_calls_of_each_write(
    bao: VaultApi, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that keeps the terms sends exactly what it sent before the index: the update's
    read and its check-and-set write, no index call. One that adds n terms writes n entries
    before the record and n after; one that removes r deletes r and reads the record once."""

    async def main() -> None:
        async with node(bao, prefix) as (svc, store):
            calls = Calls(store, monkeypatch)
            plain = await svc.create_key()
            plain_create = calls.take()
            assert index_calls(plain_create) == []
            made = await create(svc, kmip("one", "two"))  # 3 terms
            sent = calls.take()
            assert index_calls(sent) == ["POST"] * 6
            assert len(sent) == len(plain_create) + 6
            # Each term's entry, then the record, then each again.
            record_at = sent.index(("POST", f"secret/data/{prefix}/keys/{made.key_id}"))
            assert index_calls(sent[:record_at]) == index_calls(sent[record_at:]) == ["POST"] * 3

            def described(key_id: str) -> Awaitable[KeyMetadata]:
                return svc.update_description(key_id, "changed")

            def tagged(key_id: str) -> Awaitable[KeyMetadata]:
                return svc.tag(key_id, {"team": "storage"})

            def redescribed(key_id: str) -> Awaitable[KeyMetadata]:
                return svc.update_description(key_id, "kmip")

            def kmip_change(key_id: str) -> Awaitable[KeyMetadata]:  # (the KMIP object only)
                return svc.modify(key_id, lambda m: replace(m, description="kmip"))

            changes: list[tuple[Change, Change]] = [
                (described, described),
                (tagged, tagged),
                (svc.disable, svc.disable),
                (svc.enable, svc.enable),
                (redescribed, kmip_change),
            ]
            for of_plain, of_made in changes:
                await of_plain(plain.key_id)
                before = calls.take()
                await of_made(made.key_id)
                after = calls.take()
                assert index_calls(after) == []
                assert len(after) == len(before)
                # KeyService's read, then the update's read and its write.
                assert key_calls(after, made.key_id) == ["GET", "GET", "POST"]
            await svc.rotate(made.key_id)
            assert index_calls(calls.take()) == []

            # A rename: one term removed, one added (the owner's and "two" kept).
            await rename(svc, made.key_id, kmip("three", "two"))
            sent = calls.take()
            assert index_calls(sent) == ["POST", "POST", "DELETE"]
            assert key_calls(sent, made.key_id) == ["GET", "GET", "POST", "GET"]
            # Names removed only: r deletes and one read of the record.
            await rename(svc, made.key_id, kmip())
            sent = calls.take()
            assert index_calls(sent) == ["DELETE", "DELETE"]
            assert key_calls(sent, made.key_id) == ["GET", "GET", "POST", "GET"]

            # A deletion: the record read first for its terms, its deletes after the record's.
            await store.delete_key(plain.key_id)
            plain_delete = calls.take()
            await store.delete_key(made.key_id)
            sent = calls.take()
            assert index_calls(sent) == ["DELETE"]  # the owner's term
            assert len(sent) == len(plain_delete) + 2  # and the record's read after it
            deleted_at = sent.index(("DELETE", f"secret/metadata/{prefix}/keys/{made.key_id}"))
            assert index_calls(sent[deleted_at:]) == ["DELETE"]

            # find_keys: one LIST.
            await store.find_keys(owner_term(OWNER), limit=10)
            assert calls.take() == [("GET", f"secret/metadata/{prefix}/lookup/{owner_term(OWNER)}")]

    run(main())


@pytest.mark.vault
def test_region_qualified_ids_are_indexed_as_stored(bao: VaultApi, prefix: str) -> None:
    """A key of another region has a qualified id (`~<region>~<id>`) in KV: its entries too;
    each region's view answers its own keys, by their bare ids."""

    async def main() -> None:
        async with node(bao, prefix) as (_, store):
            home = RegionalKeyStore(store, "us-east-1", "us-east-1")
            europe = RegionalKeyStore(store, "eu-west-1", "us-east-1")
            record = kmip("regional")
            term = name_term(OWNER, "regional")
            meta = KeyMetadata(
                key_id="same-id",
                state=KeyState.ENABLED,
                created_at=1.0,
                kmip=record.dump(),
                lookup=record.terms(),
            )
            await home.create_key(meta)
            await europe.create_key(meta)
            with pytest.raises(KeyAlreadyExists):
                await europe.create_key(meta)
            assert await store.find_keys(term, limit=10) == ["same-id", "~eu-west-1~same-id"]
            assert listed(bao, prefix, f"lookup/{term}") == ["same-id", "~eu-west-1~same-id"]
            assert await home.find_keys(term, limit=10) == ["same-id"]
            assert await europe.find_keys(term, limit=10) == ["same-id"]
            await europe.delete_key("same-id", keep_material=True)
            assert await store.find_keys(term, limit=10) == ["same-id"]
            assert await europe.find_keys(term, limit=10) == []

    run(main())
