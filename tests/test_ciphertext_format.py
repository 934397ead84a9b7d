"""Golden vectors: every later s3kms must still decrypt what format version 1 wrote.

The vectors were produced once by s3kms 0.1.0 with fixed key material and nonces. Changing the
format, the canonical context or the key-wrapping scheme breaks these tests, which is the point:
add a new format version instead and keep these passing.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from s3kms.clock import SystemClock
from s3kms.crypto import blob
from s3kms.crypto.context import canonical_context
from s3kms.crypto.masterkey import MasterKey
from s3kms.errors import InvalidCiphertext
from s3kms.keystore.local import LocalKeyStore
from s3kms.service import KeyService

MASTER = bytes(range(32))
MATERIAL = bytes(range(100, 132))
KEY_ID = "golden-key"
# The key material as the Local keystore stores it: AES-256-GCM under MASTER, nonce 00..0b.
WRAPPED = bytes.fromhex(
    "000102030405060708090a0b2367b07cad8ca870e12cf9e4c1980a1ef7a3f14388022507441a9bfa"
    "9de88231dd4035e654fc2a5e50437b9c3f157ee4"
)
VECTORS = [
    (
        {},
        b"hello, s3kms",
        "53334b43010a676f6c64656e2d6b6579000000010707070707070707070707070894140441ce9a6e"
        "39369c0ea81e05fefdf7fc6c7e39494a31717754",
    ),
    (
        {"bucket": "b/o", "a": "1"},
        bytes(range(32)),
        "53334b43010a676f6c64656e2d6b657900000001090909090909090909090909291dd4edd0c857cd"
        "57e39129b9bbb8abb9626bdebd64eb0cc3378409a67653c0f84dabff2e5ac6fe40331cad124dd9ea",
    ),
]


def test_canonical_context_bytes() -> None:
    assert canonical_context(None) == b"\x00\x00"
    assert canonical_context({}) == b"\x00\x00"
    assert canonical_context({"bucket": "b/o", "a": "1"}).hex() == (
        "000200016100013100066275636b65740003622f6f"
    )
    # Length prefixes keep contexts that concatenate alike apart.
    assert canonical_context({"ab": "c"}) != canonical_context({"a": "bc"})


@pytest.mark.parametrize(("context", "plaintext", "golden"), VECTORS)
def test_blob_layout(context: dict[str, str], plaintext: bytes, golden: str) -> None:
    parsed = blob.decode(bytes.fromhex(golden))
    assert (parsed.key_id, parsed.key_version) == (KEY_ID, 1)
    assert parsed.encode().hex() == golden
    opened = AESGCM(MATERIAL).decrypt(
        parsed.sealed[:12], parsed.sealed[12:], parsed.aad(canonical_context(context))
    )
    assert opened == plaintext


# The `keys` table as the first release of the keystore made it (before key specs).
V1_KEYS_TABLE = """CREATE TABLE keys (
    key_id TEXT PRIMARY KEY, state TEXT NOT NULL, created_at REAL NOT NULL,
    description TEXT NOT NULL, current_version INTEGER NOT NULL, deletion_date REAL,
    pending_window_days INTEGER, rotation_enabled INTEGER NOT NULL,
    rotation_period_days INTEGER NOT NULL, next_rotation REAL, tags TEXT NOT NULL,
    revision INTEGER NOT NULL
) WITHOUT ROWID"""


def _golden_store(tmp_path: Path) -> LocalKeyStore:
    # A keystore as version 1 wrote it: its `keys` table without the key spec columns, and the
    # key's row and wrapped material exactly as it stored them. Opening it upgrades the table.
    conn = sqlite3.connect(tmp_path / "keystore.db")
    with conn:
        conn.execute(V1_KEYS_TABLE)
        conn.execute(
            "INSERT INTO keys VALUES (?, 'Enabled', 0, '', 1, NULL, NULL, 0, 365, NULL, '[]', 0)",
            (KEY_ID,),
        )
    conn.close()
    store = LocalKeyStore(tmp_path, MasterKey(MASTER, "golden"))
    conn = sqlite3.connect(tmp_path / "keystore.db")
    with conn:
        conn.execute("INSERT INTO key_versions VALUES (?, 1, 0, NULL, ?)", (KEY_ID, WRAPPED))
    conn.close()
    return store


def test_a_version_1_keystore_opens_with_its_keys_symmetric(tmp_path: Path) -> None:
    async def run() -> None:
        store = _golden_store(tmp_path)
        try:
            meta = await store.get_key(KEY_ID)
            assert (meta.key_spec, meta.key_usage) == ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")
        finally:
            await store.close()

    asyncio.run(run())


@pytest.mark.parametrize(("context", "plaintext", "golden"), VECTORS)
def test_local_keystore_decrypts_golden_blobs(
    tmp_path: Path, context: dict[str, str], plaintext: bytes, golden: str
) -> None:
    async def run() -> None:
        store = _golden_store(tmp_path)
        service = KeyService(store, SystemClock(), region="us-east-1", account_id="0")
        try:
            decrypted = await service.decrypt(bytes.fromhex(golden), context)
            assert decrypted.plaintext == plaintext and decrypted.key_id == KEY_ID
            with pytest.raises(InvalidCiphertext):
                await service.decrypt(bytes.fromhex(golden), {"other": "context"})
        finally:
            await store.close()

    asyncio.run(run())


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:-1],  # truncated tag
        lambda b: b[:3] + b"X" + b[4:],  # magic
        lambda b: b[:4] + b"\x02" + b[5:],  # unknown format version
        lambda b: b[:6] + b"G" + b[7:],  # key id changed (authenticated)
        lambda b: b[:-1] + bytes([b[-1] ^ 1]),  # tag bit flip
        lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:],  # nonce bit flip
        lambda b: b"",
    ],
)
def test_every_corruption_is_invalid_ciphertext(tmp_path: Path, mutate: object) -> None:
    golden = bytes.fromhex(VECTORS[0][2])

    async def run() -> None:
        store = _golden_store(tmp_path)
        service = KeyService(store, SystemClock(), region="us-east-1", account_id="0")
        try:
            with pytest.raises(InvalidCiphertext) as info:
                await service.decrypt(mutate(golden), {})  # type: ignore[operator]
            assert info.value.message == InvalidCiphertext.default_message
        finally:
            await store.close()

    asyncio.run(run())
