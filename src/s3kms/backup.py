"""Backup and restore of keys: every key with its versions, states, metadata (key policy and
grants included) and aliases.

A backup file is encrypted and authenticated under a key derived from a passphrase:

    offset size  field
    0      4     magic "S3KB"
    4      1     format version = 0x01
    5      1     KDF = 0x01 (scrypt)
    6      1     log2(N)    (scrypt cost, 15 -> N = 32768)
    7      1     r          (8)
    8      1     p          (1)
    9      16    salt
    25     12    AES-GCM nonce
    37     ...   AES-256-GCM(JSON payload), AAD = bytes 0..37

The JSON payload: `{"format": 1, "created_at", "backend", "keys": [{metadata..., "versions":
[{"version", "created_at", "rotation_type", "material": base64 | null}]}], "aliases": [...]}`.
A key's metadata holds its `policy` (the key policy as given, or null: the default policy) and
its `grants` (keystore/codec.py's list, tokens included, so a token issued before the backup
still names its grant after a restore); a backup made before key policies and grants existed has
neither and restores with the default policy and no grants. A key's `origin` (`AWS_KMS`, or
`EXTERNAL` for imported material) and `materials` (keystore/codec.py's list of its imported
materials: version, KeyMaterialId, whether imported, expiration, description, pending rotation)
come with it; a backup made before imports has neither and restores as keys made by s3kms. An
EXTERNAL key's versions are those whose material is imported: a deleted or expired material has
no version in the backup, and restores as deleted (the key PendingImport until it is imported
again).

A backup holds every region's keys and aliases under their stored ids (`~<region>~<id>` for
a region other than the home one: keystore/regional.py), with a multi-Region key's
`primary_region` and `replica_regions`.

On the Local backend the key material is in the backup (re-encrypted under the backup key; it is
never written unwrapped to disk), so a restore into a fresh data directory, with another master key,
decrypts every ciphertext made before the backup. On the Vault backend the material is not
exportable and stays in Vault: the backup holds s3kms's metadata and aliases, and Vault's own
snapshots (`bao operator raft snapshot save`, `vault operator raft snapshot save`) back up the keys.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from s3kms.errors import InvalidRequest, KeyAlreadyExists
from s3kms.keystore.base import KeyStore
from s3kms.keystore.codec import (
    grants_from_json,
    grants_json,
    materials_from_json,
    materials_json,
)
from s3kms.model import Alias, KeyMetadata, KeyState, KeyVersion, RotationType

MAGIC = b"S3KB"
_HEADER = struct.Struct(">4sBBBBB16s12s")
_LOG2_N, _R, _P = 15, 8, 1
MIN_PASSPHRASE = 12

Progress = Callable[[int, int], None]


class BackupError(InvalidRequest):
    """A backup that cannot be read: wrong passphrase, damaged or not a backup (one error for all)."""

    default_message = "cannot open the backup: wrong passphrase, or the file is damaged"


@dataclass(frozen=True)
class RestoreSummary:
    restored: int
    skipped: int  # present already and not overwritten
    aliases: int


def _derive(passphrase: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    if not 10 <= log2_n <= 22 or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise BackupError
    if r * (1 << log2_n) * p > 1 << 23:  # the header is not yet authenticated: cap memory and time
        raise BackupError  # (at most 1 GiB; 32 times the cost of the parameters s3kms writes)
    return Scrypt(salt=salt, length=32, n=1 << log2_n, r=r, p=p).derive(passphrase.encode())


def seal(payload: dict[str, Any], passphrase: str) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE:
        raise InvalidRequest(f"the backup passphrase must be at least {MIN_PASSPHRASE} characters")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = _HEADER.pack(MAGIC, 1, 1, _LOG2_N, _R, _P, salt, nonce)
    key = _derive(passphrase, salt, _LOG2_N, _R, _P)
    return header + AESGCM(key).encrypt(nonce, json.dumps(payload).encode(), header)


def open_backup(data: bytes, passphrase: str) -> dict[str, Any]:
    if len(data) < _HEADER.size + 16:
        raise BackupError
    magic, version, kdf, log2_n, r, p, salt, nonce = _HEADER.unpack_from(data)
    if magic != MAGIC or version != 1 or kdf != 1:
        raise BackupError
    header = data[: _HEADER.size]
    try:
        plain = AESGCM(_derive(passphrase, salt, log2_n, r, p)).decrypt(
            nonce, data[_HEADER.size :], header
        )
    except InvalidTag:
        raise BackupError from None
    payload: dict[str, Any] = json.loads(plain)
    return payload


def _meta_json(meta: KeyMetadata) -> dict[str, Any]:
    out = asdict(meta)
    out["state"] = meta.state.value
    out["tags"] = [list(t) for t in meta.tags]
    out["grants"] = grants_json(meta.grants)
    out["materials"] = materials_json(meta.materials)
    del out["revision"]
    return out


def _meta_from(data: dict[str, Any]) -> KeyMetadata:
    fields = {k: v for k, v in data.items() if k != "versions"}
    fields["state"] = KeyState(fields["state"])
    fields["tags"] = tuple((k, v) for k, v in fields["tags"])
    # Absent from a backup made before key policies and grants: the defaults.
    fields["grants"] = grants_from_json(fields.get("grants"))
    # Absent from a backup made before imports: a key made by s3kms (origin AWS_KMS, the
    # model's default), with no imported materials.
    fields["materials"] = materials_from_json(fields.get("materials"))
    # A multi-Region key's regions (absent before regions: a single-Region key).
    fields["replica_regions"] = tuple(fields.get("replica_regions") or ())
    return KeyMetadata(**fields)


async def create_backup(
    store: KeyStore,
    passphrase: str,
    progress: Progress | None = None,
    authorize_key: Callable[[str], None] | None = None,
) -> bytes:
    """Every key (read page by page), its versions and the aliases, sealed under the passphrase.

    `authorize_key` is called with each key id before its material is read, and raises to refuse
    the whole backup (a caller who may not use every key may not take one).
    """
    total = await store.count_keys()
    keys: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = await store.list_keys(after=after, limit=500)
        for meta in page:
            if authorize_key is not None:
                authorize_key(meta.key_id)
            entry = _meta_json(meta)
            versions = await store.export_versions(meta.key_id)
            entry["versions"] = [
                {
                    "version": v.version,
                    "created_at": v.created_at,
                    "rotation_type": v.rotation_type.value if v.rotation_type else None,
                    "material": base64.b64encode(m).decode() if m is not None else None,
                }
                for v, m in versions
            ]
            keys.append(entry)
            if progress:
                progress(len(keys), max(total, len(keys)))
        if len(page) < 500:
            break
        after = page[-1].key_id
    aliases = [asdict(a) for a in await store.list_aliases()]
    payload = {
        "format": 1,
        "created_at": time.time(),
        "backend": store.kind,
        "keys": keys,
        "aliases": aliases,
    }
    return seal(payload, passphrase)


async def restore_backup(
    store: KeyStore,
    data: bytes,
    passphrase: str,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RestoreSummary:
    """Bring a backup's keys into `store`; existing keys are kept unless `overwrite`."""
    payload = open_backup(data, passphrase)
    if not store.material_exportable:
        raise InvalidRequest(
            f"restore into the {store.kind} backend is not supported: its key material lives "
            "in Vault; restore Vault from its own snapshot (bao operator raft snapshot restore)"
        )
    if payload.get("backend") != "local":
        raise InvalidRequest("this backup holds Vault metadata only, not key material")
    restored = skipped = 0
    keys = payload["keys"]
    for i, entry in enumerate(keys, start=1):
        versions = [
            (
                KeyVersion(
                    v["version"],
                    v["created_at"],
                    RotationType(v["rotation_type"]) if v["rotation_type"] else None,
                ),
                base64.b64decode(v["material"]),
            )
            for v in entry["versions"]
        ]
        try:
            await store.import_key(_meta_from(entry), versions, overwrite=overwrite)
            restored += 1
        except KeyAlreadyExists:
            skipped += 1
        if progress:
            progress(i, len(keys))
    aliases = 0
    for raw in payload["aliases"]:
        alias = Alias(**raw)
        try:
            await store.put_alias(alias, replace=False)
            aliases += 1
        except KeyAlreadyExists:
            if overwrite:
                await store.put_alias(alias, replace=True)
                aliases += 1
    return RestoreSummary(restored, skipped, aliases)
