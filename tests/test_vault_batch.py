"""Transit batching (src/s3kms/keystore/vault/batch.py) and the metadata cache as VaultKeyStore
uses them, against the real OpenBao of the `bao` fixture (tests/openbao.py); plus
`item_response` and TransitBatcher on hand-made answers.

Every test uses its own kv_prefix and key ids (the server is shared by the session, and transit
key names are global to the mount).
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
import uuid
from collections.abc import Awaitable, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from s3kms.errors import BackendUnavailable, InvalidCiphertext, KeyDisabled, KeyNotFound
from s3kms.keystore.vault import VaultKeyStore
from s3kms.keystore.vault.batch import TransitBatcher, item_response
from s3kms.keystore.vault.transport import VaultResponse
from s3kms.model import KeyMetadata, KeyState
from s3kms.service import SYMMETRIC_CHECKS
from test_vault_keystore import settings

from openbao import VaultApi

T = TypeVar("T")

vault = pytest.mark.vault

ENCRYPT = SYMMETRIC_CHECKS["Encrypt"]  # the service's own state checks
DECRYPT = SYMMETRIC_CHECKS["Decrypt"]
BURST = 200
SLACK = 1.0  # for scheduling on a small machine


# --------------------------------------------------------------------------- helpers


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def new_meta(key_id: str) -> KeyMetadata:
    return KeyMetadata(key_id=key_id, state=KeyState.ENABLED, created_at=time.time())


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class Counted:
    """The batcher's counters since this was made."""

    def __init__(self, store: VaultKeyStore) -> None:
        self._batches = store._batches
        self._calls, self._items = store._batches.calls, store._batches.items

    @property
    def calls(self) -> int:
        return self._batches.calls - self._calls

    @property
    def items(self) -> int:
        return self._batches.items - self._items


@pytest.fixture
def prefix() -> str:
    return unique("s3kms-batch")


# --------------------------------------------------------------------------- encrypt


@vault
def test_a_burst_of_encrypts_is_batched_and_each_ciphertext_is_its_own(
    bao: VaultApi, prefix: str
) -> None:
    key_id = unique("burst")
    plaintexts = [f"plaintext {i} ".encode() * (1 + i % 5) for i in range(BURST)]
    aads = [f"context {i}".encode() for i in range(BURST)]

    async def main() -> list[tuple[int, bytes]]:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            await store.create_key(new_meta(key_id))

            # One at a time: one call per item, nothing held back to wait for others.
            one_by_one = Counted(store)
            for i in range(5):
                version, sealed = await store.encrypt(key_id, plaintexts[i], aads[i], ENCRYPT)
                opened = await store.decrypt(key_id, version, sealed, aads[i], DECRYPT)
                assert opened == plaintexts[i]
            assert (one_by_one.calls, one_by_one.items) == (10, 10)

            store._cache.invalidate(key_id)  # the burst also starts with a metadata miss
            burst = Counted(store)
            results = await asyncio.gather(
                *(
                    store.encrypt(key_id, p, a, ENCRYPT)
                    for p, a in zip(plaintexts, aads, strict=True)
                )
            )
            assert burst.items == BURST
            assert burst.calls < BURST / 4, (burst.calls, burst.items)

            # The store opens each with its own context (a burst again: batched decrypts).
            burst = Counted(store)
            back = await asyncio.gather(
                *(
                    store.decrypt(key_id, version, sealed, aad, DECRYPT)
                    for (version, sealed), aad in zip(results, aads, strict=True)
                )
            )
            assert back == plaintexts
            assert burst.items == BURST
            assert burst.calls < BURST / 4, (burst.calls, burst.items)
            return results

    results = run(main())
    assert len({sealed for _, sealed in results}) == BURST
    for (version, sealed), plaintext in zip(results, plaintexts, strict=True):
        assert version == 1
        assert len(sealed) == 12 + len(plaintext) + 16  # nonce || ciphertext || tag

    # Transit itself, without s3kms, opens item i with context i only: nothing was mixed up
    # between the items of a batch.
    def direct(shift: int) -> list[dict[str, Any]]:
        body = {
            "batch_input": [
                {
                    "ciphertext": f"vault:v{version}:{b64(sealed)}",
                    "associated_data": b64(aads[(i + shift) % BURST]),
                }
                for i, (version, sealed) in enumerate(results)
            ]
        }
        answer: list[dict[str, Any]] = bao.api("POST", f"transit/decrypt/{key_id}", body).json()[
            "data"
        ]["batch_results"]
        return answer

    assert [base64.b64decode(r["plaintext"]) for r in direct(0)] == plaintexts
    assert all(r.get("error") for r in direct(1))  # the neighbour's context opens none


# --------------------------------------------------------------------------- decrypt


@vault
def test_a_batch_of_good_and_bad_decrypts_fails_exactly_the_bad_ones(
    bao: VaultApi, prefix: str
) -> None:
    key_id, other_id = unique("mixed"), unique("mixed-other")

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            await store.create_key(new_meta(key_id))
            await store.create_key(new_meta(other_id))
            good: list[tuple[bytes, bytes, int, bytes]] = []
            for i in range(40):
                plaintext, aad = f"good {i}".encode(), f"aad {i}".encode()
                good.append((plaintext, aad, *await store.encrypt(key_id, plaintext, aad, ENCRYPT)))
            theirs = [
                await store.encrypt(other_id, f"theirs {i}".encode(), b"aad", ENCRYPT)
                for i in range(8)
            ]

            # (plaintext or None when it must fail, aad, version, sealed)
            cases: list[tuple[bytes | None, bytes, int, bytes]] = [
                (p, a, v, s) for p, a, v, s in good
            ]
            for _, aad, version, sealed in good[:8]:
                cases.append((None, aad + b"!", version, sealed))  # wrong context
            for i, (_, aad, version, sealed) in enumerate(good[8:16]):
                damaged = bytearray(sealed)
                damaged[(0, 12, len(sealed) - 1)[i % 3]] ^= 0x01  # nonce, ciphertext, tag
                cases.append((None, aad, version, bytes(damaged)))
            for _, aad, version, sealed in good[16:20]:
                cases.append((None, aad, version, sealed[:10]))  # too short
            for _, aad, version, sealed in good[20:24]:
                cases.append((None, aad, version + 3, sealed))  # no such version
            for version, sealed in theirs:
                cases.append((None, b"aad", version, sealed))  # another key's ciphertext
            random.Random(7).shuffle(cases)

            burst = Counted(store)
            results = await asyncio.gather(
                *(store.decrypt(key_id, v, s, a, DECRYPT) for _, a, v, s in cases),
                return_exceptions=True,
            )
            assert burst.items == len(cases)
            assert burst.calls < len(cases) / 4, (burst.calls, burst.items)  # really batched
            for (expected, *_), result in zip(cases, results, strict=True):
                if expected is None:
                    assert isinstance(result, InvalidCiphertext), result
                    assert result.message == InvalidCiphertext.default_message  # no detail
                else:
                    assert result == expected

    run(main())


# --------------------------------------------------------------------------- state changes


@vault
def test_a_disabled_key_is_refused_at_once_here_and_within_the_window_elsewhere(
    bao: VaultApi, prefix: str
) -> None:
    key_id = unique("disable")

    async def main() -> None:
        async with (
            await VaultKeyStore.connect(settings(bao, prefix)) as node_a,
            await VaultKeyStore.connect(
                settings(bao, prefix, metadata_cache_seconds=1.0)
            ) as node_b,
        ):
            created = await node_a.create_key(new_meta(key_id))
            version, sealed = await node_a.encrypt(key_id, b"data", b"aad", ENCRYPT)
            await node_b.encrypt(key_id, b"data", b"aad", ENCRYPT)
            assert node_a._cache.fresh(key_id) is not None  # both have it cached
            assert node_b._cache.fresh(key_id) is not None

            disabled = await node_a.update_key(replace(created, state=KeyState.DISABLED))
            changed = time.monotonic()
            assert node_a._cache.fresh(key_id) is None
            with pytest.raises(KeyDisabled):
                await node_a.encrypt(key_id, b"data", b"aad", ENCRYPT)
            with pytest.raises(KeyDisabled):
                await node_a.decrypt(key_id, version, sealed, b"aad", DECRYPT)
            refused = await asyncio.gather(
                *(node_a.encrypt(key_id, b"data", b"aad", ENCRYPT) for _ in range(20)),
                *(node_a.decrypt(key_id, version, sealed, b"aad", DECRYPT) for _ in range(20)),
                return_exceptions=True,
            )
            assert all(isinstance(r, KeyDisabled) for r in refused), refused

            # The other node: within its window (loose bound), then never again.
            while True:
                try:
                    await node_b.encrypt(key_id, b"data", b"aad", ENCRYPT)
                except KeyDisabled:
                    break
                assert time.monotonic() - changed <= 1.0 + SLACK, "node B still serves"
                await asyncio.sleep(0.05)
            for _ in range(3):
                with pytest.raises(KeyDisabled):
                    await node_b.decrypt(key_id, version, sealed, b"aad", DECRYPT)

            # Enabled again through A: A serves at once.
            await node_a.update_key(replace(disabled, state=KeyState.ENABLED))
            assert await node_a.decrypt(key_id, version, sealed, b"aad", DECRYPT) == b"data"

    run(main())


# --------------------------------------------------------------------------- whole-call failure


@vault
def test_a_whole_call_failure_reaches_every_item_as_a_single_call_gets_it(
    bao: VaultApi, prefix: str
) -> None:
    """The transit key vanished behind s3kms's back (its metadata is still there): transit
    refuses the whole batch call with 400 "encryption key not found"."""
    key_id = unique("vanished")

    async def errors_of(calls: list[Awaitable[object]]) -> list[BaseException]:
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, BaseException) for r in results), results
        return [r for r in results if isinstance(r, BaseException)]

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            await store.create_key(new_meta(key_id))
            version, sealed = await store.encrypt(key_id, b"data", b"aad", ENCRYPT)
            bao.call("POST", f"transit/keys/{key_id}/config", {"deletion_allowed": True})
            bao.call("DELETE", f"transit/keys/{key_id}")
            assert (await store.get_key(key_id)).enabled

            with pytest.raises(KeyNotFound) as single:
                await store.encrypt(key_id, b"data", b"aad", ENCRYPT)
            with pytest.raises(InvalidCiphertext):
                await store.decrypt(key_id, version, sealed, b"aad", DECRYPT)

            burst = Counted(store)
            encrypts = await errors_of(
                [store.encrypt(key_id, b"%d" % i, b"aad", ENCRYPT) for i in range(50)]
            )
            decrypts = await errors_of(
                [store.decrypt(key_id, version, sealed, b"aad", DECRYPT) for _ in range(50)]
            )
            assert all(type(e) is KeyNotFound for e in encrypts), encrypts
            assert {str(e) for e in encrypts} == {str(single.value)}
            assert all(type(e) is InvalidCiphertext for e in decrypts), decrypts
            assert burst.items == 100
            assert burst.calls < 100 / 4, (burst.calls, burst.items)

    run(main())


# --------------------------------------------------------------------------- item_response


def test_item_response_of_a_200_batch() -> None:
    whole = VaultResponse(
        200,
        {
            "data": {
                "batch_results": [{"ciphertext": "vault:v1:AAA"}, {"ciphertext": "vault:v2:BB"}]
            }
        },
    )
    first, second = item_response(whole, 0), item_response(whole, 1)
    assert (first.status, first.data) == (200, {"ciphertext": "vault:v1:AAA"})
    assert (second.status, second.data) == (200, {"ciphertext": "vault:v2:BB"})
    assert not first.resent


def test_item_response_of_a_400_batch_with_one_failed_item() -> None:
    """Transit answers 400 as soon as one item failed (the others carry their results)."""
    whole = VaultResponse(
        400,
        {
            "data": {
                "batch_results": [
                    {"plaintext": "YQ==", "reference": ""},
                    {"plaintext": "", "error": "cipher: message authentication failed"},
                    {"plaintext": "Yg==", "reference": "", "error": ""},
                ]
            }
        },
        resent=True,
    )
    ok, failed, also_ok = (item_response(whole, i) for i in range(3))
    assert (ok.status, ok.data["plaintext"], ok.resent) == (200, "YQ==", True)
    assert (failed.status, failed.errors, failed.resent) == (
        400,
        "cipher: message authentication failed",
        True,
    )
    assert not failed.not_found_400
    assert (also_ok.status, also_ok.data["plaintext"]) == (200, "Yg==")


def test_item_response_of_a_200_batch_with_a_failed_item_is_a_400_for_it() -> None:
    # (transit's `partial_failure_response_code` can make a partly failed batch a 200)
    whole = VaultResponse(
        200,
        {"data": {"batch_results": [{"error": "invalid ciphertext length"}, {"plaintext": ""}]}},
    )
    assert (item_response(whole, 0).status, item_response(whole, 0).errors) == (
        400,
        "invalid ciphertext length",
    )
    assert (item_response(whole, 1).status, item_response(whole, 1).data) == (
        200,
        {"plaintext": ""},
    )


def test_item_response_of_a_500_batch() -> None:
    whole = VaultResponse(
        500, {"data": {"batch_results": [{"plaintext": "YQ=="}, {"error": "internal failure"}]}}
    )
    ok, failed = item_response(whole, 0), item_response(whole, 1)
    assert (ok.status, ok.data) == (200, {"plaintext": "YQ=="})
    assert (failed.status, failed.errors) == (500, "internal failure")
    assert isinstance(failed.unexpected("decrypt"), BackendUnavailable)


def test_item_response_of_a_call_refused_as_a_whole() -> None:
    for whole in (
        VaultResponse(400, {"errors": ["encryption key not found"]}),
        VaultResponse(403, {"errors": ["permission denied"]}),
        VaultResponse(503, {"errors": ["Vault is sealed"]}),
        VaultResponse(404, {"data": {"batch_results": [{"plaintext": "YQ=="}]}}),
        VaultResponse(200, {"data": {"batch_results": {"not": "a list"}}}),
    ):
        for index in range(3):
            assert item_response(whole, index) is whole
    missing = VaultResponse(400, {"errors": ["encryption key not found"]})
    assert item_response(missing, 2).not_found_400  # encrypt: KeyNotFound, as a single call


def test_item_response_of_a_batch_with_fewer_results_than_items() -> None:
    whole = VaultResponse(200, {"data": {"batch_results": [{"ciphertext": "vault:v1:AAA"}, None]}})
    assert item_response(whole, 0).status == 200
    for index in (1, 2, 10):  # not a result, or none at all
        lost = item_response(whole, index)
        assert lost.status == 500
        assert "without this item" in lost.errors
        assert isinstance(lost.unexpected("encrypt"), BackendUnavailable)


# --------------------------------------------------------------------------- TransitBatcher alone


class FakeTransit:
    """`send` for a TransitBatcher: each call waits until the test lets it answer."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[dict[str, Any]]]] = []
        self.gate = asyncio.Event()
        self.error: Exception | None = None

    async def send(self, op: str, key_id: str, items: list[dict[str, Any]]) -> VaultResponse:
        self.calls.append((op, key_id, items))
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        results = [{"echo": item["n"]} for item in items]
        return VaultResponse(200, {"data": {"batch_results": results}})


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_batcher_queues_past_max_calls_and_answers_each_item() -> None:
    async def main() -> None:
        transit = FakeTransit()
        batcher = TransitBatcher(transit.send, max_calls=2, max_items=10)
        first = asyncio.ensure_future(batcher.call("encrypt", "k", {"n": 0}))
        await settle()
        assert [len(items) for *_, items in transit.calls] == [1]  # an idle lane: at once
        rest = [asyncio.ensure_future(batcher.call("encrypt", "k", {"n": n})) for n in range(1, 26)]
        other = asyncio.ensure_future(batcher.call("decrypt", "k", {"n": 99}))  # another lane
        await settle()
        # The second call of the lane took what was queued then (up to max_items), the
        # other lane went out on its own; the rest waits for a call to finish.
        assert [(op, len(items)) for op, _, items in transit.calls] == [
            ("encrypt", 1),
            ("encrypt", 10),
            ("decrypt", 1),
        ]
        transit.gate.set()
        answers = await asyncio.gather(first, *rest)
        assert [a.data for a in answers] == [{"echo": n} for n in range(26)]
        assert (await other).data == {"echo": 99}
        assert sorted(len(items) for op, _, items in transit.calls if op == "encrypt") == [
            1,
            5,
            10,
            10,
        ]
        assert (batcher.calls, batcher.items) == (5, 27)
        assert batcher._lanes == {}

    run(main())


def test_batcher_exception_reaches_every_item_of_the_call() -> None:
    async def main() -> None:
        transit = FakeTransit()
        transit.error = BackendUnavailable("Vault is down")
        batcher = TransitBatcher(transit.send, max_calls=1)
        calls = [asyncio.ensure_future(batcher.call("encrypt", "k", {"n": n})) for n in range(5)]
        await settle()
        transit.gate.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(r is transit.error for r in results), results
        assert [len(items) for *_, items in transit.calls] == [5]  # one call, one failure for all

    run(main())


def test_batcher_a_cancelled_caller_leaves_the_others_answered() -> None:
    async def main() -> None:
        transit = FakeTransit()
        batcher = TransitBatcher(transit.send, max_calls=1)
        calls = [asyncio.ensure_future(batcher.call("encrypt", "k", {"n": n})) for n in range(4)]
        await settle()
        calls[2].cancel()
        transit.gate.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[2], asyncio.CancelledError)
        assert [r.data for i, r in enumerate(results) if isinstance(r, VaultResponse)] == [
            {"echo": n} for n in (0, 1, 3)
        ]

    run(main())
