"""A Vault key record stays within Vault's JSON limits, however often the key rotates.

OpenBao >= 2.4.1 (CVE-2025-6203) refuses a JSON request body of more than
`max_request_json_strings` strings (1,000 by default; object keys and string values, each
occurrence; numbers, booleans and nulls do not count): "refused JSON input due to high
complexity: exceeded maximum number of strings". The previous release kept a key's versions as
a list of objects (4 strings each, 3 for the first), so its record of a key with t tags held at
most (976 - 2t) / 4 versions (243 with 2 tags, 219 with 50): the next rotation failed, and every
later one, each after transit had added its version (with the `policy` and `grants` fields, three
strings more, a key with 2 tags failed at its 242nd rotation). The versions are now one JSON
string (as the grants and an imported key's materials are), so a record's write holds 34 strings
plus 2 per tag, whatever the number of versions, grants and materials (store.py,
MAX_REQUEST_STRINGS).

Checked against the shared OpenBao dev server (tests/openbao.py) through KeyService: 300
rotations then disable, enable, tag and decrypts of the first and the last version; a record of
the previous release (a list of versions, and a key stuck at the limit with a transit version its
record lacks) is read, converted by its next write and completes its history; the tag limit is
exactly OpenBao's; a full transit batch is far below it. Without a server: the string count of
the worst-case record and the reading of both layouts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from s3kms.clock import OffsetClock
from s3kms.errors import InternalError, KeyDisabled, LimitExceeded
from s3kms.keystore.vault import VaultKeyStore, VaultSettings
from s3kms.keystore.vault.batch import MAX_ITEMS
from s3kms.keystore.vault.store import (
    _KV_WRITE_STRINGS,
    MAX_REQUEST_STRINGS,
    _dump_versions,
    _json_strings,
    _meta_to_record,
    _record_versions,
)
from s3kms.model import (
    DOES_NOT_EXPIRE,
    Grant,
    KeyMaterial,
    KeyMetadata,
    KeyState,
    KeyVersion,
    RotationType,
)
from s3kms.service import KeyService

from openbao import VaultApi

T = TypeVar("T")

ACCOUNT = "111122223333"
TOO_COMPLEX = "exceeded maximum number of strings"
TWO_TAGS = (("env", "test"), ("team", "storage"))
POLICY = '{"Version": "2012-10-17", "Statement": []}'
# The most tags a key's record can hold within MAX_REQUEST_STRINGS: 34 strings plus 2 per tag.
MAX_TAGS = (MAX_REQUEST_STRINGS - 36) // 2


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


@asynccontextmanager
async def vault_service(api: VaultApi, prefix: str) -> AsyncIterator[KeyService]:
    settings = VaultSettings(
        addresses=(api.addr,), token=api.root_token, kv_prefix=prefix, timeout_seconds=10.0
    )
    store = await VaultKeyStore.connect(settings)
    try:
        yield KeyService(store, OffsetClock(), region="us-east-1", account_id=ACCOUNT)
    finally:
        await store.close()


def new_prefix() -> str:
    return f"s3kms-limits-{uuid.uuid4().hex[:10]}"


def record_path(prefix: str, key_id: str) -> str:
    return f"secret/data/{prefix}/keys/{key_id}"


def stored(api: VaultApi, prefix: str, key_id: str) -> tuple[dict[str, Any], int]:
    """The key's KV record as Vault holds it, and its KV version."""
    data = api.call("GET", record_path(prefix, key_id))["data"]
    return data["data"], int(data["metadata"]["version"])


def write_strings(record: dict[str, Any]) -> int:
    """The strings of kv.py's write of `record` (its wrapper included), as OpenBao counts them."""
    return _json_strings({"options": {"cas": 1}, "data": {**record, "write_id": "0" * 32}})


def old_versions(versions: list[KeyVersion]) -> list[dict[str, Any]]:
    """Versions in the previous release's layout: a list of objects."""
    return [
        {
            "version": v.version,
            "created_at": v.created_at,
            "rotation_type": v.rotation_type.value if v.rotation_type else None,
        }
        for v in versions
    ]


def full_meta(key_id: str, tags: int) -> KeyMetadata:
    """A key with every field set: description, policy, grants, deletion date, `tags` tags, and
    the regions of a multi-Region key (one string more than a single-Region key's null)."""
    grant = Grant(
        grant_id="g" * 64,
        token="t" * 100,
        name="app",
        grantee_principal=f"arn:aws:iam::{ACCOUNT}:user/alice",
        retiring_principal=f"arn:aws:iam::{ACCOUNT}:user/bob",
        issuing_account=f"arn:aws:iam::{ACCOUNT}:root",
        operations=("Encrypt", "Decrypt"),
        created_at=1.0,
        context_subset=(("bucket", "photos"),),
    )
    return KeyMetadata(
        key_id=key_id,
        state=KeyState.PENDING_DELETION,
        created_at=1.0,
        description="d" * 8192,
        current_version=3,
        deletion_date=2.0,
        pending_window_days=7,
        primary_region="us-east-1",
        replica_regions=("eu-west-1", "ap-southeast-1"),
        rotation_enabled=True,
        next_rotation=3.0,
        tags=tuple((f"k{i}", "v" * 256) for i in range(tags)),
        policy=POLICY,
        grants=(grant,) * 50,
    )


# --------------------------------------------------------------------------- without a server


def test_a_records_strings_are_36_plus_2_per_tag_whatever_its_versions_and_grants() -> None:
    versions = [KeyVersion(1, 1.0, None)] + [
        KeyVersion(n, float(n), RotationType.ON_DEMAND) for n in range(2, 10_001)
    ]
    materials = tuple(
        KeyMaterial(n, f"{n:064x}", True, DOES_NOT_EXPIRE, description="m" * 256)
        for n in range(1, 1_001)
    )
    for tags in (0, 2, 50, MAX_TAGS):
        for meta in (full_meta("k", tags), replace(full_meta("k", tags), materials=materials)):
            record = _meta_to_record(meta, versions)
            assert write_strings(record) == 36 + 2 * tags
            assert _json_strings(record) + _KV_WRITE_STRINGS == write_strings(record)
    # AWS's 50 tags per key: 136 strings, far below the 1,000.
    assert write_strings(_meta_to_record(full_meta("k", 50), versions)) == 136
    assert 36 + 2 * MAX_TAGS <= MAX_REQUEST_STRINGS < 36 + 2 * (MAX_TAGS + 1)
    # A single-Region key: its null regions count no string.
    single = replace(full_meta("k", 2), primary_region=None, replica_regions=())
    assert write_strings(_meta_to_record(single, versions)) == 35 + 2 * 2
    # The previous release's layout (no policy, no grants, versions as objects): 24 strings,
    # 2 per tag and 4 per version but the first (3): (976 - 2 * tags) / 4 versions at most.
    for tags, most in ((0, 244), (2, 243), (50, 219)):
        old = _meta_to_record(full_meta("k", tags), [])
        del old["policy"], old["grants"], old["origin"], old["materials"], old["multi_region"]
        assert write_strings({**old, "versions": old_versions(versions[:most])}) <= 1_000
        assert write_strings({**old, "versions": old_versions(versions[: most + 1])}) > 1_000


def test_versions_read_from_either_layout() -> None:
    versions = [
        KeyVersion(1, 1767225600.0, None),
        KeyVersion(2, 1767225700.25, RotationType.ON_DEMAND),
        KeyVersion(3, 1767225800.5, RotationType.AUTOMATIC),
    ]
    text = _dump_versions(versions)
    assert text == (
        '[[1,1767225600.0,null],[2,1767225700.25,"ON_DEMAND"],[3,1767225800.5,"AUTOMATIC"]]'
    )
    assert _record_versions({"versions": text}) == versions
    assert _record_versions({"versions": old_versions(versions[::-1])}) == versions  # sorted
    assert _record_versions({}) == []
    for bad in ("[[1,2]]", "[1]", "{", 7, [{"version": 1}], ["x"], '[[1,2,"SOMETIMES"]]'):
        with pytest.raises(InternalError, match="malformed key versions"):
            _record_versions({"key_id": "k", "versions": bad})


def test_a_full_transit_batch_holds_few_strings() -> None:
    """batch.py's largest call: MAX_ITEMS items of 2 fields each (encrypt: plaintext and
    associated_data; decrypt: ciphertext and associated_data), 4 strings an item."""
    encrypt = {"batch_input": [{"plaintext": "cA==", "associated_data": "YQ=="}] * MAX_ITEMS}
    decrypt = {"batch_input": [{"ciphertext": "vault:v1:x", "associated_data": "YQ=="}] * MAX_ITEMS}
    assert _json_strings(encrypt) == _json_strings(decrypt) == 1 + 4 * MAX_ITEMS == 513
    assert (MAX_REQUEST_STRINGS - 1) // 4 == 249  # the most items OpenBao's default would take


# --------------------------------------------------------------------------- on OpenBao


@pytest.mark.vault
def test_300_rotations_then_updates_and_decrypts_of_the_first_and_last_version(
    bao: VaultApi,
) -> None:
    prefix = new_prefix()
    rotations = 300

    async def main() -> tuple[str, float]:
        async with vault_service(bao, prefix) as svc:
            key = (await svc.create_key(description="rotated often", tags=TWO_TAGS)).key_id
            _, first = await svc.encrypt(key, b"version 1", {"purpose": "test"})
            strings = write_strings(stored(bao, prefix, key)[0])
            began = time.monotonic()
            for n in range(rotations):  # every tenth an automatic one, as the maintenance task
                kind = RotationType.AUTOMATIC if n % 10 == 9 else RotationType.ON_DEMAND
                await svc.rotate(key, kind)
            took = time.monotonic() - began
            record = stored(bao, prefix, key)[0]
            assert isinstance(record["versions"], str)
            # 35 + 2 per tag (a single-Region key), but one: the default policy is null.
            assert write_strings(record) == strings == 34 + 2 * len(TWO_TAGS)

            await svc.disable(key)
            with pytest.raises(KeyDisabled):
                await svc.encrypt(key, b"refused")
            await svc.enable(key)
            await svc.tag(key, {"owner": "alice"})
            _, last = await svc.encrypt(key, b"latest version", {"purpose": "test"})
            meta = await svc.describe(key)
            assert meta.current_version == rotations + 1 and meta.enabled
            assert meta.tags == tuple(sorted((*TWO_TAGS, ("owner", "alice"))))
            assert (await svc.decrypt(first, {"purpose": "test"})).plaintext == b"version 1"
            assert (await svc.decrypt(last, {"purpose": "test"})).plaintext == b"latest version"
            versions = await svc.versions(key)
            assert [v.version for v in versions] == list(range(1, rotations + 2))
            assert versions[0].rotation_type is None
            assert versions[10].rotation_type is RotationType.AUTOMATIC
            assert versions[11].rotation_type is RotationType.ON_DEMAND
        async with vault_service(bao, prefix) as other:  # another node reads the same
            assert await other.versions(key) == versions
            assert (await other.decrypt(first, {"purpose": "test"})).plaintext == b"version 1"
        return key, took

    key, took = run(main())
    assert bao.call("GET", f"transit/keys/{key}")["data"]["latest_version"] == rotations + 1
    print(f"\n{rotations} rotations through KeyService on OpenBao: {took:.2f} s")


@pytest.mark.vault
def test_a_key_the_previous_release_left_stuck_at_the_limit_rotates_again(bao: VaultApi) -> None:
    """The previous release's record of a key with 2 tags and 243 versions (a list of objects:
    exactly 1,000 strings in the write), whose 243rd rotation added transit version 244 and then
    could not record it. It is read as it is, converted by its next write, and its next rotation
    records both the lost version and the new one."""
    prefix = new_prefix()

    async def main() -> None:
        async with vault_service(bao, prefix) as svc:
            key = (await svc.create_key(tags=TWO_TAGS)).key_id
            _, first = await svc.encrypt(key, b"version 1")
            for _ in range(243):  # transit at version 244, as the failed rotation left it
                bao.call("POST", f"transit/keys/{key}/rotate")
            _, lost = await svc.encrypt(key, b"version 244")  # transit encrypts with its latest
            record, revision = stored(bao, prefix, key)
            created = record["created_at"]
            listed = [KeyVersion(1, created, None)] + [
                KeyVersion(n, created + n, RotationType.ON_DEMAND) for n in range(2, 244)
            ]
            old = {**record, "current_version": 243, "versions": old_versions(listed)}
            del old["policy"], old["grants"], old["origin"], old["materials"]
            del old["multi_region"], old["write_id"]
            body = {"options": {"cas": revision}, "data": {**old, "write_id": "0" * 32}}
            assert _json_strings(body) == MAX_REQUEST_STRINGS
            bao.call("POST", record_path(prefix, key), json=body)
            # Its 244th version, in that layout: four strings too many for OpenBao.
            body["options"]["cas"] = revision + 1
            body["data"]["versions"] = old_versions(
                [*listed, KeyVersion(244, 9.0, RotationType.ON_DEMAND)]
            )
            refused = bao.api("POST", record_path(prefix, key), json=body)
            assert refused.status_code == 400 and TOO_COMPLEX in refused.text

            assert await svc.versions(key) == listed  # read as the previous release wrote it
            assert (await svc.describe(key)).current_version == 243
            await svc.disable(key)  # the first write converts the versions
            assert isinstance(stored(bao, prefix, key)[0]["versions"], str)
            assert await svc.versions(key) == listed
            await svc.enable(key)
            rotated = await svc.rotate(key)
            assert rotated.current_version == 245
            versions = await svc.versions(key)
            assert [v.version for v in versions] == list(range(1, 246))
            assert versions[:243] == listed
            assert (await svc.decrypt(first)).plaintext == b"version 1"
            assert (await svc.decrypt(lost)).plaintext == b"version 244"
            _, latest = await svc.encrypt(key, b"version 245")
            assert (await svc.decrypt(latest)).plaintext == b"version 245"

    run(main())


@pytest.mark.vault
def test_the_tag_limit_is_exactly_openbaos(bao: VaultApi) -> None:
    """MAX_TAGS tags fit (a write of exactly 1,000 strings) and the key still rotates; one more
    is refused by the store before anything is sent, and would have been refused by OpenBao."""
    prefix = new_prefix()
    tags = tuple((f"tag-{i:03}", "value") for i in range(MAX_TAGS))

    async def main() -> None:
        async with vault_service(bao, prefix) as svc:
            refused_id = f"many-tags-{uuid.uuid4().hex[:10]}"
            with pytest.raises(LimitExceeded, match="JSON strings"):
                await svc.create_key(
                    refused_id, tags=(*tags, ("one", "more")), policy=POLICY, multi_region=True
                )
            # Refused before the transit key was made.
            assert bao.api("GET", f"transit/keys/{refused_id}").status_code == 404
            # A key policy (a string; the default one is null) and a multi-Region key's regions:
            # the largest record there is.
            key = (await svc.create_key(tags=tags, policy=POLICY, multi_region=True)).key_id
            record, revision = stored(bao, prefix, key)
            assert write_strings(record) == MAX_REQUEST_STRINGS
            await svc.rotate(key)
            with pytest.raises(LimitExceeded, match="each tag counts two"):
                await svc.tag(key, {"one": "more"})
            record, revision = stored(bao, prefix, key)
            assert len(record["tags"]) == MAX_TAGS  # nothing was written
            await svc.tag(key, {"tag-000": "changed"})  # a changed value adds nothing
            await svc.disable(key)
            assert (await svc.describe(key)).current_version == 2
            # The record as written, with one string more (a key whose value is a number, no
            # string), or with the tag the store refused: OpenBao refuses both.
            record, revision = stored(bao, prefix, key)
            for body, strings in (
                ({"options": {"cas": revision}, "data": {**record, "x": 0}}, 1_001),
                (
                    {
                        "options": {"cas": revision},
                        "data": {**record, "tags": [*record["tags"], ["one", "more"]]},
                    },
                    1_002,
                ),
            ):
                assert _json_strings(body) == strings
                refused = bao.api("POST", record_path(prefix, key), json=body)
                assert refused.status_code == 400 and TOO_COMPLEX in refused.text
            assert stored(bao, prefix, key)[1] == revision

    run(main())


@pytest.mark.vault
def test_a_full_transit_batch_is_accepted(bao: VaultApi) -> None:
    """A `batch_input` of MAX_ITEMS encrypt items, then decrypt items, as batch.py sends them
    (store.py's encrypt and decrypt bodies)."""
    prefix = new_prefix()

    async def main() -> None:
        async with vault_service(bao, prefix) as svc:
            key = (await svc.create_key()).key_id
            items = [{"plaintext": "cA==", "associated_data": "YQ=="} for _ in range(MAX_ITEMS)]
            body = {"batch_input": items}
            sealed = bao.call("POST", f"transit/encrypt/{key}", json=body)["data"]
            ciphertexts = [r["ciphertext"] for r in sealed["batch_results"]]
            assert len(ciphertexts) == MAX_ITEMS
            back = [{"ciphertext": c, "associated_data": "YQ=="} for c in ciphertexts]
            opened = bao.call("POST", f"transit/decrypt/{key}", json={"batch_input": back})
            assert {r["plaintext"] for r in opened["data"]["batch_results"]} == {"cA=="}
            # The margin: 249 items (997 strings) pass, 250 (1,001) are refused.
            for count, status in ((249, 200), (250, 400)):
                body = {"batch_input": [items[0]] * count}
                assert bao.api("POST", f"transit/encrypt/{key}", json=body).status_code == status

    run(main())
