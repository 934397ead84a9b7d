"""VaultKeyStore against a real OpenBao (the `bao` / `bao_dev_private` fixtures, tests/openbao.py).

The keystore is driven directly (no HTTP server of ours). Every test uses its own kv_prefix and
its own key ids: the shared server is shared by the whole session, and transit key names are
global to the transit mount.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from s3kms.errors import (
    AliasNotFound,
    BackendUnavailable,
    InternalError,
    InvalidCiphertext,
    InvalidRequest,
    KeyAlreadyExists,
    KeyDisabled,
    KeyNotFound,
    UnsupportedOperation,
)
from s3kms.keystore.base import WriteConflict
from s3kms.keystore.vault import VaultKeyStore, VaultSettings
from s3kms.model import Alias, KeyMetadata, KeyState, RotationType
from s3kms.service import next_rotation_after

from openbao import BaoDevServer, VaultApi, free_port

pytestmark = pytest.mark.vault

T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def settings(api: VaultApi, prefix: str, **overrides: Any) -> VaultSettings:
    values: dict[str, Any] = {
        "addresses": (api.addr,),
        "token": api.root_token,
        "kv_prefix": prefix,
        "timeout_seconds": 5.0,
    }
    values.update(overrides)
    return VaultSettings(**values)


def new_meta(key_id: str, **fields: Any) -> KeyMetadata:
    values: dict[str, Any] = {
        "state": KeyState.ENABLED,
        "created_at": time.time(),
        "description": "a test key",
        "tags": (("team", "storage"), ("env", "test")),
    }
    values.update(fields)
    return KeyMetadata(key_id=key_id, **values)


def allow(meta: KeyMetadata) -> None:
    """A state check that lets everything through."""


def require_enabled(meta: KeyMetadata) -> None:
    if not meta.enabled:
        raise KeyDisabled(key_id=meta.key_id)


def refuse(meta: KeyMetadata) -> None:
    raise KeyDisabled(key_id=meta.key_id)


def kms_policy(
    prefix: str,
    transit: str = "transit",
    *,
    config: tuple[str, ...] = ("read", "update"),
    encrypt: tuple[str, ...] = ("update",),
) -> str:
    """A least-privilege policy for one store: no sys/ access beyond the default policy.
    Granting `create` on encrypt re-opens transit's upsert trap (encrypt creates keys)."""

    def caps(names: tuple[str, ...]) -> str:
        return "[" + ", ".join(f'"{n}"' for n in names) + "]"

    return f"""
path "{transit}/keys/*" {{ capabilities = ["create", "read", "update", "delete"] }}
path "{transit}/encrypt/*" {{ capabilities = {caps(encrypt)} }}
path "{transit}/decrypt/*" {{ capabilities = ["update"] }}
path "{transit}/config/keys" {{ capabilities = {caps(config)} }}
path "secret/data/{prefix}/*" {{ capabilities = ["create", "read", "update", "delete"] }}
path "secret/metadata/{prefix}/*" {{ capabilities = ["read", "delete", "list"] }}
"""


async def keep_working(store: VaultKeyStore, key_id: str, seconds: float) -> int:
    """Round trips for `seconds`; returns how many succeeded (all must)."""
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        version, sealed = await store.encrypt(key_id, b"payload", b"aad", allow)
        assert await store.decrypt(key_id, version, sealed, b"aad", allow) == b"payload"
        done += 1
        await asyncio.sleep(0.25)
    return done


async def timed(fn: Callable[[], Awaitable[T]]) -> tuple[float, T | BaseException]:
    began = time.monotonic()
    try:
        result: T | BaseException = await fn()
    except Exception as exc:
        result = exc
    return time.monotonic() - began, result


@pytest.fixture
def prefix() -> str:
    return unique("s3kms-test")


# --------------------------------------------------------------------------- keys


def test_create_get_list_count(bao: VaultApi, prefix: str) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = [f"{tag}-a1", f"{tag}-a2", f"{tag}-b1", f"{tag}-b2", f"{tag}-c1"]

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            assert store.kind == "vault"
            assert store.endpoint == bao.addr
            assert await store.count_keys() == 0
            assert await store.list_keys(after=None, limit=10) == []
            made = {}
            for key_id in reversed(ids):
                meta = new_meta(key_id, rotation_enabled=True, rotation_period_days=90)
                created = await store.create_key(meta)
                assert created == replace(meta, revision=1)
                made[key_id] = created
            got = await store.get_key(ids[0])
            assert got == made[ids[0]]  # every field survives the KV round trip exactly
            assert await store.count_keys() == 5

            listed = await store.list_keys(after=None, limit=100)
            assert [m.key_id for m in listed] == ids
            assert listed[2] == made[ids[2]]
            page = await store.list_keys(after=None, limit=2)
            assert [m.key_id for m in page] == ids[:2]
            page = await store.list_keys(after=ids[1], limit=2)
            assert [m.key_id for m in page] == ids[2:4]
            page = await store.list_keys(after=ids[3], limit=2)
            assert [m.key_id for m in page] == ids[4:]
            page = await store.list_keys(after=None, limit=10, prefix=f"{tag}-b")
            assert [m.key_id for m in page] == [f"{tag}-b1", f"{tag}-b2"]
            page = await store.list_keys(after=f"{tag}-b1", limit=10, prefix=f"{tag}-b")
            assert [m.key_id for m in page] == [f"{tag}-b2"]
            assert await store.list_keys(after=None, limit=0) == []

            with pytest.raises(KeyNotFound):
                await store.get_key(f"{tag}-missing")
            versions = await store.list_versions(ids[0])
            assert [(v.version, v.rotation_type) for v in versions] == [(1, None)]
            assert versions[0].created_at == made[ids[0]].created_at

    run(main())


def test_create_existing_key_raises(bao: VaultApi, prefix: str) -> None:
    key_id = unique("dup")

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            await store.create_key(new_meta(key_id))
            version, sealed = await store.encrypt(key_id, b"x", b"", allow)
            with pytest.raises(KeyAlreadyExists):
                await store.create_key(new_meta(key_id, description="second"))
            # The first key and its material are untouched.
            assert (await store.get_key(key_id)).description == "a test key"
            assert await store.decrypt(key_id, version, sealed, b"", allow) == b"x"

    run(main())


def test_concurrent_creates_of_one_id_exactly_one_wins(bao: VaultApi, prefix: str) -> None:
    async def main() -> None:
        async with (
            await VaultKeyStore.connect(settings(bao, prefix)) as node_a,
            await VaultKeyStore.connect(settings(bao, prefix)) as node_b,
        ):
            for _ in range(5):
                key_id = unique("race")
                results = await asyncio.gather(
                    node_a.create_key(new_meta(key_id, description="from a")),
                    node_b.create_key(new_meta(key_id, description="from b")),
                    return_exceptions=True,
                )
                winners = [r for r in results if isinstance(r, KeyMetadata)]
                losers = [r for r in results if isinstance(r, KeyAlreadyExists)]
                assert len(winners) == 1 and len(losers) == 1, results
                stored = await node_b.get_key(key_id)
                assert stored == winners[0]
                # The one transit key serves both nodes.
                version, sealed = await node_a.encrypt(key_id, b"both", b"", allow)
                assert await node_b.decrypt(key_id, version, sealed, b"", allow) == b"both"

    run(main())


def test_update_key_compare_and_set(bao: VaultApi, prefix: str) -> None:
    key_id = unique("cas")

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            created = await store.create_key(new_meta(key_id))
            updated = await store.update_key(replace(created, description="changed"))
            assert updated.revision == created.revision + 1
            assert await store.get_key(key_id) == updated
            with pytest.raises(WriteConflict):  # stale revision
                await store.update_key(replace(created, description="lost update"))
            assert (await store.get_key(key_id)).description == "changed"
            disabled = await store.update_key(replace(updated, state=KeyState.DISABLED))
            assert disabled.state is KeyState.DISABLED
            assert disabled.revision == updated.revision + 1
            with pytest.raises(KeyNotFound):
                await store.update_key(new_meta(unique("absent"), revision=1))

            # Two writers holding the same revision: exactly one wins.
            base = await store.get_key(key_id)
            results = await asyncio.gather(
                store.update_key(replace(base, description="one")),
                store.update_key(replace(base, description="two")),
                return_exceptions=True,
            )
            assert sum(isinstance(r, KeyMetadata) for r in results) == 1, results
            assert sum(isinstance(r, WriteConflict) for r in results) == 1, results

    run(main())


def test_two_nodes_see_each_others_changes_at_once(bao: VaultApi, prefix: str) -> None:
    key_id = unique("shared")

    async def main() -> None:
        strict = settings(bao, prefix, metadata_cache_seconds=0)  # no metadata cache
        async with (
            await VaultKeyStore.connect(strict) as node_a,
            await VaultKeyStore.connect(strict) as node_b,
        ):
            await node_a.create_key(new_meta(key_id))
            meta_b = await node_b.get_key(key_id)
            assert meta_b.key_id == key_id
            version, sealed = await node_b.encrypt(key_id, b"hello", b"ctx", require_enabled)

            # Disable on B; A refuses on its very next request (metadata_cache_seconds 0).
            await node_b.update_key(replace(meta_b, state=KeyState.DISABLED))
            with pytest.raises(KeyDisabled):
                await node_a.encrypt(key_id, b"hello", b"ctx", require_enabled)
            with pytest.raises(KeyDisabled):
                await node_a.decrypt(key_id, version, sealed, b"ctx", require_enabled)

            # Enable on A; B works again at once.
            meta_a = await node_a.get_key(key_id)
            await node_a.update_key(replace(meta_a, state=KeyState.ENABLED))
            assert await node_b.decrypt(key_id, version, sealed, b"ctx", require_enabled) == (
                b"hello"
            )
            # Rotation on A is used by B's next encrypt.
            await node_a.rotate_key(
                key_id, RotationType.ON_DEMAND, time.time(), next_rotation_after(time.time())
            )
            assert (await node_b.encrypt(key_id, b"x", b"", allow))[0] == 2
            # Deletion on A: B no longer finds it.
            await node_a.delete_key(key_id)
            with pytest.raises(KeyNotFound):
                await node_b.get_key(key_id)

    run(main())


# --------------------------------------------------------------------------- crypto


def test_encrypt_decrypt_round_trip_with_aad(bao: VaultApi, prefix: str) -> None:
    key_id = unique("crypt")

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            await store.create_key(new_meta(key_id))
            for plaintext in (b"", b"secret data key", bytes(range(256)) * 4):
                aad = b"S3KC\x01\x05hello" + b'{"bucket":"b"}'
                version, sealed = await store.encrypt(key_id, plaintext, aad, allow)
                assert version == 1
                assert len(sealed) == 12 + len(plaintext) + 16  # nonce || ct || tag
                assert await store.decrypt(key_id, version, sealed, aad, allow) == plaintext
            # Empty aad works too.
            version, sealed = await store.encrypt(key_id, b"no context", b"", allow)
            assert await store.decrypt(key_id, version, sealed, b"", allow) == b"no context"

    run(main())
    # The bytes are exactly transit's payload: transit itself opens them.
    resp = bao.api(
        "POST",
        f"transit/encrypt/{key_id}",
        {"plaintext": base64.b64encode(b"direct").decode(), "associated_data": "YWFk"},
    )
    ciphertext = resp.json()["data"]["ciphertext"]
    _, version_text, payload = ciphertext.split(":")

    async def open_direct() -> bytes:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            return await store.decrypt(
                key_id, int(version_text[1:]), base64.b64decode(payload), b"aad", allow
            )

    assert run(open_direct()) == b"direct"


def test_debug_logging_names_each_vault_call_and_never_the_token(
    bao: VaultApi, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    key_id = unique("logged")

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            await store.create_key(new_meta(key_id))
            await store.encrypt(key_id, b"plaintext", b"aad", allow)

    with caplog.at_level(logging.DEBUG, logger="s3kms.keystore.vault"):
        run(main())
    calls = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Vault ")]
    assert any(
        f"Vault POST transit/encrypt/{key_id} at " in m and m.endswith(": 200") for m in calls
    )
    assert any(f"Vault POST transit/keys/{key_id} at " in m for m in calls)
    assert bao.root_token not in caplog.text
    assert base64.b64encode(b"plaintext").decode() not in caplog.text


def test_bad_ciphertexts_are_invalid_ciphertext(bao: VaultApi, prefix: str) -> None:
    key_id = unique("bad")
    other_id = unique("other")

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            await store.create_key(new_meta(key_id))
            await store.create_key(new_meta(other_id))
            version, sealed = await store.encrypt(key_id, b"plaintext", b"right aad", allow)

            async def expect_invalid(
                key: str, ver: int, blob: bytes, aad: bytes = b"right aad"
            ) -> None:
                with pytest.raises(InvalidCiphertext) as info:
                    await store.decrypt(key, ver, blob, aad, allow)
                assert info.value.message == InvalidCiphertext.default_message  # no detail

            await expect_invalid(key_id, version, sealed, b"wrong aad")
            await expect_invalid(key_id, version, sealed, b"")
            for i in (0, 12, len(sealed) - 1):  # nonce, ciphertext, tag
                tampered = bytearray(sealed)
                tampered[i] ^= 0x01
                await expect_invalid(key_id, version, bytes(tampered))
            await expect_invalid(key_id, version, sealed[:20])  # too short
            await expect_invalid(key_id, version, b"")
            await expect_invalid(key_id, version + 5, sealed)  # version too new
            await expect_invalid(key_id, 0, sealed)
            await expect_invalid(other_id, version, sealed)  # another key's material
            assert await store.decrypt(key_id, version, sealed, b"right aad", allow) == (
                b"plaintext"
            )
            with pytest.raises(KeyNotFound):
                await store.decrypt(unique("nokey"), version, sealed, b"right aad", allow)

    run(main())


def test_state_check_blocks_encrypt_and_decrypt(bao: VaultApi, prefix: str) -> None:
    key_id = unique("check")

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            created = await store.create_key(new_meta(key_id))
            version, sealed = await store.encrypt(key_id, b"data", b"aad", allow)
            seen: list[KeyMetadata] = []

            def spy(meta: KeyMetadata) -> None:
                seen.append(meta)
                raise KeyDisabled(key_id=meta.key_id)

            with pytest.raises(KeyDisabled):
                await store.encrypt(key_id, b"data", b"aad", spy)
            with pytest.raises(KeyDisabled):
                await store.decrypt(key_id, version, sealed, b"aad", spy)
            assert seen == [created, created]  # called with the current metadata
            # The check runs before transit's verdict: a disabled key says disabled, not
            # "invalid ciphertext", even for garbage.
            with pytest.raises(KeyDisabled):
                await store.decrypt(key_id, version, b"garbage" * 5, b"aad", refuse)

            # With the real state.
            await store.update_key(replace(created, state=KeyState.DISABLED))
            with pytest.raises(KeyDisabled):
                await store.encrypt(key_id, b"data", b"aad", require_enabled)
            with pytest.raises(KeyDisabled):
                await store.decrypt(key_id, version, sealed, b"aad", require_enabled)

    run(main())


def test_encrypt_never_creates_a_missing_transit_key(bao: VaultApi, prefix: str) -> None:
    key_id = unique("ghost")

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            assert store._upsert_disabled  # so metadata and transit are asked concurrently
            with pytest.raises(KeyNotFound):
                await store.encrypt(key_id, b"data", b"", allow)

    run(main())
    assert bao.api("GET", f"transit/keys/{key_id}").status_code == 404
    assert bao.call("GET", "transit/config/keys")["data"]["disable_upsert"] is True


def test_encrypt_without_permission_to_disable_upsert(bao: VaultApi, prefix: str) -> None:
    """On a mount where upsert stays on (the token may not change the config) and the policy
    grants `create` on encrypt, the store still never creates a key by encrypting."""
    mount = unique("transit-upsert")
    policy = unique("kms-noconfig")
    bao.enable_transit(mount)
    bao.write_policy(
        policy, kms_policy(prefix, mount, config=("read",), encrypt=("create", "update"))
    )
    token = bao.create_token([policy], ttl="10m")
    key_id = unique("ghost")

    async def main() -> None:
        config = settings(bao, prefix, token=token, mount_path=mount)
        async with await VaultKeyStore.connect(config) as store:
            assert not store._upsert_disabled  # so encrypt reads the metadata first
            with pytest.raises(KeyNotFound):
                await store.encrypt(key_id, b"data", b"", allow)
            assert bao.api("GET", f"{mount}/keys/{key_id}").status_code == 404
            await store.create_key(new_meta(key_id))
            version, sealed = await store.encrypt(key_id, b"data", b"", allow)
            assert await store.decrypt(key_id, version, sealed, b"", allow) == b"data"

    try:
        run(main())
        assert bao.call("GET", f"{mount}/config/keys")["data"]["disable_upsert"] is False
    finally:
        bao.api("DELETE", f"sys/mounts/{mount}")


def test_rotate(bao: VaultApi, prefix: str) -> None:
    key_id = unique("rot")

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            created = await store.create_key(
                new_meta(key_id, rotation_enabled=True, rotation_period_days=30)
            )
            v1, sealed1 = await store.encrypt(key_id, b"old", b"a", allow)
            now = time.time()
            rotated = await store.rotate_key(
                key_id, RotationType.ON_DEMAND, now, next_rotation_after(now)
            )
            assert rotated.current_version == 2
            assert rotated.revision == created.revision + 1
            assert rotated.next_rotation == now + 30 * 86400
            assert await store.get_key(key_id) == rotated
            v2, sealed2 = await store.encrypt(key_id, b"new", b"a", allow)
            assert (v1, v2) == (1, 2)
            assert await store.decrypt(key_id, v1, sealed1, b"a", allow) == b"old"
            assert await store.decrypt(key_id, v2, sealed2, b"a", allow) == b"new"
            # A version-1 blob relabelled as version 2 does not open.
            with pytest.raises(InvalidCiphertext):
                await store.decrypt(key_id, 2, sealed1, b"a", allow)

            later = now + 100
            again = await store.rotate_key(
                key_id, RotationType.AUTOMATIC, later, next_rotation_after(later)
            )
            assert again.current_version == 3
            versions = await store.list_versions(key_id)
            assert [(v.version, v.created_at, v.rotation_type) for v in versions] == [
                (1, created.created_at, None),
                (2, now, RotationType.ON_DEMAND),
                (3, later, RotationType.AUTOMATIC),
            ]
            with pytest.raises(KeyNotFound):
                await store.rotate_key(
                    unique("absent"), RotationType.ON_DEMAND, now, next_rotation_after(now)
                )
            # Without automatic rotation there is no next rotation date.
            plain = await store.create_key(new_meta(unique("rot-plain")))
            assert (
                await store.rotate_key(
                    plain.key_id, RotationType.ON_DEMAND, now, next_rotation_after(now)
                )
            ).next_rotation is None

            # Concurrent rotations (OpenBao answers some of them "500 transaction commit
            # failed", which the store retries): every transit version ends up in the history.
            await asyncio.gather(
                *(
                    store.rotate_key(
                        key_id, RotationType.ON_DEMAND, later, next_rotation_after(later)
                    )
                    for _ in range(16)
                )
            )
            final = await store.get_key(key_id)
            assert final.current_version == 19
            assert [v.version for v in await store.list_versions(key_id)] == list(range(1, 20))

    run(main())
    assert bao.call("GET", f"transit/keys/{key_id}")["data"]["latest_version"] == 19


# --------------------------------------------------------------------------- delete, half-made


def test_delete_key_removes_material_metadata_and_aliases(bao: VaultApi, prefix: str) -> None:
    key_id = unique("del")
    keep_id = unique("keep")

    async def main() -> tuple[int, bytes]:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            await store.create_key(new_meta(key_id))
            await store.create_key(new_meta(keep_id))
            now = time.time()
            await store.put_alias(Alias("alias/del-one", key_id, now), replace=False)
            await store.put_alias(Alias("alias/nested/del-two", key_id, now), replace=False)
            await store.put_alias(Alias("alias/keep", keep_id, now), replace=False)
            sealed = await store.encrypt(key_id, b"gone", b"", allow)

            await store.delete_key(key_id)
            with pytest.raises(KeyNotFound):
                await store.get_key(key_id)
            assert [m.key_id for m in await store.list_keys(after=None, limit=10)] == [keep_id]
            assert [a.name for a in await store.list_aliases()] == ["alias/keep"]
            with pytest.raises(KeyNotFound):
                await store.encrypt(key_id, b"x", b"", allow)
            await store.delete_key(key_id)  # idempotent
            await store.delete_key(unique("never-existed"))
            return sealed

    version, sealed = run(main())
    assert bao.api("GET", f"transit/keys/{key_id}").status_code == 404
    assert bao.api("GET", f"secret/metadata/{prefix}/keys/{key_id}").status_code == 404

    async def recreate() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            recreated = await store.create_key(new_meta(key_id))
            assert recreated.revision == 1
            # New material: the old ciphertext does not open under the new key.
            with pytest.raises(InvalidCiphertext):
                await store.decrypt(key_id, version, sealed, b"", allow)

    run(recreate())


def test_half_created_key_is_invisible_and_create_completes_it(bao: VaultApi, prefix: str) -> None:
    key_id = unique("half")
    bao.call("POST", f"transit/keys/{key_id}", {"type": "aes256-gcm96"})

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            with pytest.raises(KeyNotFound):
                await store.get_key(key_id)
            assert await store.list_keys(after=None, limit=10) == []
            assert await store.count_keys() == 0
            with pytest.raises(KeyNotFound):
                await store.encrypt(key_id, b"x", b"", allow)
            created = await store.create_key(new_meta(key_id))
            assert created.revision == 1 and created.current_version == 1
            assert await store.get_key(key_id) == created
            version, sealed = await store.encrypt(key_id, b"done", b"", allow)
            assert await store.decrypt(key_id, version, sealed, b"", allow) == b"done"

    run(main())


def test_create_refuses_when_metadata_exists_without_touching_transit(
    bao: VaultApi, prefix: str
) -> None:
    key_id = unique("meta-only")
    bao.call(
        "POST",
        f"secret/data/{prefix}/keys/{key_id}",
        {"data": {"key_id": key_id, "state": "Enabled", "created_at": 1.0, "current_version": 1}},
    )

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            with pytest.raises(KeyAlreadyExists):
                await store.create_key(new_meta(key_id))

    run(main())
    assert bao.api("GET", f"transit/keys/{key_id}").status_code == 404


def test_asymmetric_and_hmac_keys_half_created_then_completed(bao: VaultApi, prefix: str) -> None:
    """A transit key left without metadata (and even rotated meanwhile) is completed by the next
    create of its spec; sign, public key and HMAC then use the version the metadata names."""
    signer, mac, clash = unique("half-ec"), unique("half-hmac"), unique("half-clash")
    bao.call("POST", f"transit/keys/{signer}", {"type": "ecdsa-p384"})
    bao.call("POST", f"transit/keys/{signer}/rotate", {})
    bao.call("POST", f"transit/keys/{mac}", {"type": "hmac", "key_size": 64})
    bao.call("POST", f"transit/keys/{clash}", {"type": "rsa-2048"})
    digest = hashlib.sha384(b"message").digest()

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            made = await store.create_key(
                new_meta(signer, key_spec="ECC_NIST_P384", key_usage="SIGN_VERIFY")
            )
            assert made.current_version == 2
            public = serialization.load_der_public_key(await store.public_key(signer, allow))
            assert isinstance(public, ec.EllipticCurvePublicKey)
            signature = await store.sign(signer, "ECDSA_SHA_384", digest, "DIGEST", allow)
            public.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA384())))
            await store.create_key(
                new_meta(mac, key_spec="HMAC_512", key_usage="GENERATE_VERIFY_MAC")
            )
            tag = await store.generate_mac(mac, "HMAC_SHA_512", b"m", allow)
            assert len(tag) == 64
            with pytest.raises(InternalError, match="already exists with type rsa-2048"):
                await store.create_key(
                    new_meta(clash, key_spec="RSA_3072", key_usage="SIGN_VERIFY")
                )
            with pytest.raises(KeyNotFound):
                await store.get_key(clash)

    run(main())


def test_every_key_spec_operation_runs_the_check_first(bao: VaultApi, prefix: str) -> None:
    signer, mac, rsa_key = unique("chk-ed"), unique("chk-hmac"), unique("chk-rsa")

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            await store.create_key(
                new_meta(signer, key_spec="ECC_NIST_EDWARDS25519", key_usage="SIGN_VERIFY")
            )
            await store.create_key(
                new_meta(mac, key_spec="HMAC_256", key_usage="GENERATE_VERIFY_MAC")
            )
            await store.create_key(
                new_meta(rsa_key, key_spec="RSA_2048", key_usage="ENCRYPT_DECRYPT")
            )
            public = serialization.load_der_public_key(await store.public_key(rsa_key, allow))
            assert isinstance(public, rsa.RSAPublicKey)
            sha256 = hashes.SHA256()
            oaep = padding.OAEP(mgf=padding.MGF1(sha256), algorithm=sha256, label=None)
            ciphertext = public.encrypt(b"secret", oaep)
            calls: list[Callable[[Callable[[KeyMetadata], None]], Awaitable[bytes]]] = [
                lambda c: store.public_key(signer, c),
                lambda c: store.sign(signer, "ED25519_SHA_512", b"m", "RAW", c),
                lambda c: store.generate_mac(mac, "HMAC_SHA_256", b"m", c),
                lambda c: store.decrypt_asymmetric(rsa_key, "RSAES_OAEP_SHA_256", ciphertext, c),
            ]
            for call in calls:
                with pytest.raises(KeyDisabled):
                    await call(refuse)
                assert await call(allow)
            plain = await store.decrypt_asymmetric(rsa_key, "RSAES_OAEP_SHA_256", ciphertext, allow)
            assert plain == b"secret"
            with pytest.raises(InvalidCiphertext):  # transit's 500: an answer, not an outage
                await store.decrypt_asymmetric(rsa_key, "RSAES_OAEP_SHA_256", b"x" * 256, allow)
            assert not store._transport._degraded
            with pytest.raises(UnsupportedOperation):
                await store.decrypt_asymmetric(rsa_key, "RSAES_OAEP_SHA_1", ciphertext, allow)
            with pytest.raises(KeyDisabled):  # and the check comes before that refusal
                await store.decrypt_asymmetric(rsa_key, "RSAES_OAEP_SHA_1", ciphertext, refuse)

    run(main())


# --------------------------------------------------------------------------- aliases


def test_alias_crud(bao: VaultApi, prefix: str) -> None:
    key_a, key_b = unique("ka"), unique("kb")

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            await store.create_key(new_meta(key_a))
            await store.create_key(new_meta(key_b))
            assert await store.list_aliases() == []
            created_at = time.time()
            alias = Alias("alias/app", key_a, created_at)
            await store.put_alias(alias, replace=False)
            assert await store.get_alias("alias/app") == alias
            with pytest.raises(KeyAlreadyExists) as info:
                await store.put_alias(Alias("alias/app", key_b, created_at + 1), replace=False)
            assert info.value.message == "An alias with the name alias/app already exists"

            await store.put_alias(Alias("alias/app", key_b, created_at + 5), replace=True)
            moved = await store.get_alias("alias/app")
            assert moved == Alias("alias/app", key_b, created_at)  # created_at kept
            with pytest.raises(AliasNotFound):
                await store.put_alias(Alias("alias/nope", key_a, created_at), replace=True)
            with pytest.raises(AliasNotFound):
                await store.get_alias("alias/nope")

            await store.put_alias(Alias("alias/zeta", key_a, created_at), replace=False)
            await store.put_alias(Alias("alias/team/one", key_a, created_at), replace=False)
            await store.put_alias(Alias("alias/team/two/deep", key_b, created_at), replace=False)
            await store.put_alias(Alias("alias/beta", key_b, created_at), replace=False)
            names = [a.name for a in await store.list_aliases()]
            assert names == [
                "alias/app",
                "alias/beta",
                "alias/team/one",
                "alias/team/two/deep",
                "alias/zeta",
            ]
            assert (await store.get_alias("alias/team/two/deep")).key_id == key_b

            await store.delete_alias("alias/app")
            with pytest.raises(AliasNotFound):
                await store.get_alias("alias/app")
            with pytest.raises(AliasNotFound):
                await store.delete_alias("alias/app")
            assert len(await store.list_aliases()) == 4
            # The name is free again.
            await store.put_alias(Alias("alias/app", key_a, created_at), replace=False)

            # Two nodes racing to create one alias: one wins.
            results = await asyncio.gather(
                store.put_alias(Alias("alias/race", key_a, created_at), replace=False),
                store.put_alias(Alias("alias/race", key_b, created_at), replace=False),
                return_exceptions=True,
            )
            assert sum(r is None for r in results) == 1, results
            assert sum(isinstance(r, KeyAlreadyExists) for r in results) == 1, results

    run(main())


# --------------------------------------------------------------------------- connect, status


def test_connect_to_closed_port_fails_fast(prefix: str) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    config = VaultSettings(addresses=(address,), token="t", kv_prefix=prefix, timeout_seconds=5)
    elapsed, result = run(timed(lambda: VaultKeyStore.connect(config)))
    assert isinstance(result, BackendUnavailable), result
    assert result.code == "KMSConnectionError"
    assert address in result.message
    assert elapsed < 2.0


def test_credentials_in_an_address_are_refused_and_never_shown(prefix: str) -> None:
    """Settings built without parse_vault_addresses (an older kms-config.json, code): connect()
    refuses a userinfo part before any request, and repr() and endpoint never show it."""
    address = f"http://user:s3cr3t-pw@127.0.0.1:{free_port()}"
    config = VaultSettings(addresses=("http://127.0.0.1:1", address), token="t", kv_prefix=prefix)
    assert "s3cr3t-pw" not in repr(config) and "s3cr3t-pw" not in config.endpoint
    assert config.endpoint.endswith("http://***@127.0.0.1:" + address.rsplit(":", 1)[1])
    elapsed, result = run(timed(lambda: VaultKeyStore.connect(config)))
    assert isinstance(result, InvalidRequest), result
    assert "must not contain credentials" in result.message
    assert "s3cr3t-pw" not in result.message
    assert elapsed < 0.5  # refused before any connection attempt


def test_connect_with_bad_token_is_invalid_request(bao: VaultApi, prefix: str) -> None:
    token = "s.not-a-real-token-" + uuid.uuid4().hex
    with pytest.raises(InvalidRequest) as info:
        run(VaultKeyStore.connect(settings(bao, prefix, token=token)))
    assert "permission denied" in info.value.message
    assert token not in info.value.message


def test_connect_without_transit_mount_is_invalid_request(bao: VaultApi, prefix: str) -> None:
    mount = unique("no-such-transit")
    with pytest.raises(InvalidRequest) as info:
        run(VaultKeyStore.connect(settings(bao, prefix, mount_path=mount)))
    assert f"transit engine not mounted at {mount!r}" in info.value.message
    # A mount of the wrong kind is named as such.
    with pytest.raises(InvalidRequest) as info:
        run(VaultKeyStore.connect(settings(bao, prefix, mount_path="secret")))
    assert "is a kv engine, not a transit engine" in info.value.message


def test_connect_without_kv_mount_is_invalid_request(bao: VaultApi, prefix: str) -> None:
    mount = unique("no-such-kv")
    with pytest.raises(InvalidRequest) as info:
        run(VaultKeyStore.connect(settings(bao, prefix, kv_mount=mount)))
    assert "KV version 2 engine not mounted" in info.value.message


def test_least_privilege_token_works(bao: VaultApi, prefix: str) -> None:
    policy = unique("kms")
    bao.write_policy(policy, kms_policy(prefix))
    token = bao.create_token([policy], ttl="10m")
    key_id = unique("lp")

    async def main() -> None:
        config = settings(bao, prefix, token=token)
        async with await VaultKeyStore.connect(config) as store:
            assert token not in repr(store)
            # Without `create` on encrypt, transit answers 403 for a missing key: still
            # KeyNotFound, and the backend is not reported as broken.
            with pytest.raises(KeyNotFound):
                await store.encrypt(key_id, b"data", b"aad", allow)
            assert (await store.status()).connected
            await store.create_key(new_meta(key_id))
            version, sealed = await store.encrypt(key_id, b"data", b"aad", allow)
            assert await store.decrypt(key_id, version, sealed, b"aad", allow) == b"data"
            await store.rotate_key(
                key_id, RotationType.ON_DEMAND, time.time(), next_rotation_after(time.time())
            )
            await store.put_alias(Alias("alias/lp", key_id, time.time()), replace=False)
            assert len(await store.list_keys(after=None, limit=5)) == 1
            await store.delete_key(key_id)
            assert (await store.status()).connected

        # The same policy on another prefix: Vault refuses, the store reports the backend.
        other = settings(bao, unique("elsewhere"), token=token)
        async with await VaultKeyStore.connect(other) as store:
            with pytest.raises(BackendUnavailable) as info:
                await store.get_key(key_id)
            assert "permission denied" in info.value.message
            status = await store.status()
            assert not status.connected and "permission denied" in status.detail

    run(main())


def test_failover_to_the_next_address(bao: VaultApi, prefix: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    key_id = unique("fo")

    async def main() -> None:
        config = settings(bao, prefix, addresses=(dead, bao.addr))
        async with await VaultKeyStore.connect(config) as store:
            assert store.endpoint == f"{dead},{bao.addr}"
            await store.create_key(new_meta(key_id))
            store._transport.current = 0  # as if the dead node had been the current one
            began = time.monotonic()
            version, sealed = await store.encrypt(key_id, b"x", b"", allow)
            assert time.monotonic() - began < 2.0
            assert store._transport.current == 1
            assert await store.decrypt(key_id, version, sealed, b"", allow) == b"x"
            assert (await store.status()).connected

    run(main())


def test_status_reports_health(bao: VaultApi, prefix: str) -> None:
    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            status = await store.status()
            assert status.connected, status
            assert bao.addr in status.detail

    run(main())


# --------------------------------------------------------------------------- outages (private)


def test_sealed_vault_then_recovery(bao_dev_private: BaoDevServer, prefix: str) -> None:
    server = bao_dev_private
    key_id = unique("seal")

    async def main() -> None:
        config = settings(server, prefix, timeout_seconds=3.0)
        async with await VaultKeyStore.connect(config) as store:
            await store.create_key(new_meta(key_id))
            version, sealed = await store.encrypt(key_id, b"before", b"", allow)

            await asyncio.to_thread(server.seal)
            elapsed, result = await timed(lambda: store.encrypt(key_id, b"x", b"", allow))
            assert isinstance(result, BackendUnavailable), result
            assert "sealed" in result.message
            assert elapsed < 1.0  # sealed everywhere: no pointless retrying
            elapsed, result = await timed(lambda: store.get_key(key_id))
            assert isinstance(result, BackendUnavailable)
            status = await store.status()
            assert not status.connected and "sealed" in status.detail
            # A new store cannot connect to a sealed Vault either.
            elapsed, result = await timed(lambda: VaultKeyStore.connect(config))
            assert isinstance(result, BackendUnavailable) and "sealed" in result.message

            await asyncio.to_thread(server.unseal)
            # The same store works again, with no restart and no stuck state.
            assert await store.decrypt(key_id, version, sealed, b"", allow) == b"before"
            v2, sealed2 = await store.encrypt(key_id, b"after", b"", allow)
            assert await store.decrypt(key_id, v2, sealed2, b"", allow) == b"after"
            assert (await store.status()).connected

    run(main())


def test_vault_down_is_bounded_then_recovers(bao_dev_private: BaoDevServer, prefix: str) -> None:
    server = bao_dev_private
    key_id = unique("down")

    async def main() -> None:
        config = settings(server, prefix, timeout_seconds=1.0)
        async with await VaultKeyStore.connect(config) as store:
            await store.create_key(new_meta(key_id))
            await asyncio.to_thread(server.stop)
            # Connection refused everywhere: retried briefly with backoff (1 s), then 503.
            elapsed, result = await timed(lambda: store.get_key(key_id))
            assert isinstance(result, BackendUnavailable), result
            assert result.status == 503
            assert 0.3 < elapsed < 3.0
            # Known outage: the next request fails at once instead of waiting again.
            elapsed, result = await timed(lambda: store.get_key(key_id))
            assert isinstance(result, BackendUnavailable)
            assert elapsed < 0.5
            assert not (await store.status()).connected

            # Back (a dev server comes back empty): the same store talks to it again.
            await asyncio.to_thread(server.start)
            with pytest.raises(KeyNotFound):
                await store.get_key(key_id)
            assert await store.count_keys() == 0
            assert (await store.status()).connected

    run(main())


# --------------------------------------------------------------------------- auth lifecycle


def test_approle_login_and_relogin(bao: VaultApi, prefix: str) -> None:
    policy = unique("kms-approle")
    bao.write_policy(policy, kms_policy(prefix))
    role = unique("s3kms")
    role_id, secret_id = bao.enable_approle(role, [policy], token_ttl="3s")
    key_id = unique("ar")

    async def main() -> None:
        config = settings(
            bao, prefix, token=None, app_role_id=role_id, app_role_secret_id=secret_id
        )
        async with await VaultKeyStore.connect(config) as store:
            assert secret_id not in repr(store) and secret_id not in repr(config)
            await store.create_key(new_meta(key_id))
            first_token = store._auth.token
            # Idle past the 3 s lease: the background task logged in again at half-life
            # (twice by now; a login forced by a 403 would make it one).
            await asyncio.sleep(3.5)
            assert store.auth_refreshes >= 2
            assert store._auth.token != first_token
            assert await keep_working(store, key_id, 1.5) >= 4
            lookup = bao.api("GET", "auth/token/lookup-self", token=first_token)
            assert lookup.status_code == 403  # the first token has expired by now

            # From here on, time-based refreshing is switched off: only a 403 can cause a login.
            assert store._auth.task is not None
            store._auth.task.cancel()
            store._auth.ttl = 0.0
            before = store.auth_refreshes
            # A request about a key that does not exist does not cause a login.
            with pytest.raises(KeyNotFound):
                await store.encrypt(unique("nokey"), b"x", b"", allow)
            assert store.auth_refreshes == before

            # A token revoked behind the store's back: one 403, a new login, the retry works.
            bao.call("POST", "auth/token/revoke", {"token": store._auth.token})
            version, sealed = await store.encrypt(key_id, b"after revoke", b"", allow)
            assert store.auth_refreshes == before + 1  # concurrent 403s, a single login
            assert await store.decrypt(key_id, version, sealed, b"", allow) == b"after revoke"

    run(main())

    bad = settings(bao, prefix, token=None, app_role_id=role_id, app_role_secret_id="wrong")
    with pytest.raises(InvalidRequest) as info:
        run(VaultKeyStore.connect(bad))
    assert "AppRole login failed" in info.value.message
    assert "wrong" not in info.value.message.replace("AppRole", "")


def test_renewable_token_is_renewed(bao: VaultApi, prefix: str) -> None:
    policy = unique("kms-renew")
    bao.write_policy(policy, kms_policy(prefix))
    token = bao.create_token([policy], ttl="2s", renewable=True)
    key_id = unique("rn")

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix, token=token)) as store:
            await store.create_key(new_meta(key_id))
            # Idle for longer than the token's TTL: only the background task keeps it alive.
            await asyncio.sleep(3.0)
            assert store.auth_refreshes >= 2
            assert await keep_working(store, key_id, 2.0) >= 5
            assert store._auth.token == token  # renewed, not replaced
        # Closed: no more renewals, and the token runs out by itself.
        await asyncio.sleep(2.5)
        lookup = bao.api("GET", "auth/token/lookup-self", token=token)
        assert lookup.status_code == 403

    run(main())
