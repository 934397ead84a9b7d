"""Imported key material (BYOK) and sealing on the Vault keystore, against a real OpenBao.

The keystore is driven directly (no service, no HTTP server of ours), as the service drives it:
an EXTERNAL key is created without material, `set_material` imports a material into transit
(`keys/<id>/import`, then `import_version`) and writes the record with check-and-set, or destroys
it (the transit key goes when it holds one version; with more, Vault refuses); `seal`/`unseal`
use the transit sealing key. Every test has its own KV prefix and key ids (the shared server is
shared by the session; transit key names are global to the mount).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
import uuid
from collections.abc import Awaitable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from s3kms.errors import (
    InvalidCiphertext,
    KeyDisabled,
    KeyInvalidState,
    UnsupportedOperation,
)
from s3kms.keystore.base import WriteConflict
from s3kms.keystore.vault import VaultKeyStore, VaultSettings, imports
from s3kms.model import (
    DOES_NOT_EXPIRE,
    KEY_NAME_RE,
    ORIGIN_AWS_KMS,
    ORIGIN_EXTERNAL,
    KeyMaterial,
    KeyMetadata,
    KeyState,
    KeyVersion,
    RotationType,
)

from openbao import VaultApi

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


def allow(meta: KeyMetadata) -> None:
    """A state check that lets everything through (the keystore must still not break)."""


def require_enabled(meta: KeyMetadata) -> None:
    if not meta.enabled:
        raise KeyDisabled(key_id=meta.key_id)


def external_meta(key_id: str, **fields: Any) -> KeyMetadata:
    """An EXTERNAL key as CreateKey Origin=EXTERNAL makes it: PendingImport, no material."""
    values: dict[str, Any] = {
        "state": KeyState.PENDING_IMPORT,
        "created_at": float(int(time.time())),
        "origin": ORIGIN_EXTERNAL,
        "tags": (("team", "byok"),),
    }
    values.update(fields)
    return KeyMetadata(key_id=key_id, **values)


def material_record(version: int, *, imported: bool = True, **fields: Any) -> KeyMaterial:
    return KeyMaterial(
        version=version,
        material_id=hashlib.sha256(f"material {version} {fields}".encode()).hexdigest(),
        imported=imported,
        expiration_model=DOES_NOT_EXPIRE if imported else None,
        **fields,
    )


def imported(meta: KeyMetadata, *materials: KeyMaterial) -> KeyMetadata:
    """`meta` once its materials are these, Enabled when every held one is imported."""
    held = [m for m in materials if not m.pending]
    usable = bool(held) and all(m.imported for m in held)
    return replace(
        meta, materials=materials, state=KeyState.ENABLED if usable else KeyState.PENDING_IMPORT
    )


def stored(api: VaultApi, prefix: str, key_id: str) -> tuple[dict[str, Any], int]:
    data = api.call("GET", f"secret/data/{prefix}/keys/{key_id}")["data"]
    return data["data"], int(data["metadata"]["version"])


def transit_latest(api: VaultApi, key_id: str) -> int | None:
    resp = api.api("GET", f"transit/keys/{key_id}")
    if resp.status_code == 404:
        return None
    return int(resp.json()["data"]["latest_version"])


def import_directly(api: VaultApi, key_id: str, material: bytes, key_type: str) -> None:
    """Import into transit behind the keystore's back (an import whose record write failed)."""
    wrapping = imports.load_wrapping_key(
        api.call("GET", "transit/wrapping_key")["data"]["public_key"]
    )
    body = {"ciphertext": imports.wrap(wrapping, material), "hash_function": "SHA256"}
    if transit_latest(api, key_id) is None:
        api.call("POST", f"transit/keys/{key_id}/import", {**body, "type": key_type})
    else:
        api.call("POST", f"transit/keys/{key_id}/import_version", body)


def transit_open(material: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Open transit's AES-GCM ciphertext (nonce || ciphertext || tag) with the material itself:
    proof that transit encrypts with exactly the imported material."""
    return AESGCM(material).decrypt(sealed[:12], sealed[12:], aad)


def pkcs8(key: Any) -> bytes:
    der: bytes = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return der


@pytest.fixture
def prefix() -> str:
    return unique("s3kms-imports")


# --------------------------------------------------------------------------- records


def test_an_external_key_is_a_record_without_a_transit_key(bao: VaultApi, prefix: str) -> None:
    key_id = unique("ext")
    rsa_id = unique("ext-rsa")

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            created = await store.create_key(external_meta(key_id))
            assert created.revision == 1 and created.external
            assert await store.get_key(key_id) == created
            record, _ = stored(bao, prefix, key_id)
            assert record["origin"] == ORIGIN_EXTERNAL and record["materials"] == "[]"
            assert record["versions"] == "[]"
            assert transit_latest(bao, key_id) is None  # no material, no transit key
            assert await store.list_versions(key_id) == []
            assert await store.export_versions(key_id) == []
            # The service refuses crypto on a PendingImport key; a check that lets it through
            # still gets a clear error from the keystore, never a transit key made by upsert.
            with pytest.raises(KeyDisabled):
                await store.encrypt(key_id, b"x", b"", require_enabled)
            with pytest.raises(KeyInvalidState, match="pending import"):
                await store.encrypt(key_id, b"x", b"", allow)
            with pytest.raises(InvalidCiphertext):
                await store.decrypt(key_id, 1, b"\0" * 40, b"", allow)
            assert transit_latest(bao, key_id) is None
            await store.create_key(
                external_meta(rsa_id, key_spec="RSA_2048", key_usage="SIGN_VERIFY")
            )
            with pytest.raises(KeyInvalidState, match="pending import"):
                await store.public_key(rsa_id, allow)
            with pytest.raises(KeyInvalidState, match="pending import"):
                await store.sign(rsa_id, "RSASSA_PSS_SHA_256", b"m", "RAW", allow)
            # Its material comes by import, never by rotation.
            with pytest.raises(UnsupportedOperation, match="imported key material"):
                await store.rotate_key(key_id, RotationType.ON_DEMAND, time.time(), lambda m: None)
            await store.delete_key(key_id)  # no transit key to delete: fine
            assert await store.count_keys() == 1

    run(main())


def test_a_record_without_origin_and_materials_reads_as_aws_kms(bao: VaultApi, prefix: str) -> None:
    key_id = unique("old")

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            created = await store.create_key(
                KeyMetadata(key_id=key_id, state=KeyState.ENABLED, created_at=1767225600.0)
            )
            record, revision = stored(bao, prefix, key_id)
            assert record["origin"] == ORIGIN_AWS_KMS and record["materials"] == "[]"
            old = {k: v for k, v in record.items() if k not in ("origin", "materials")}
            bao.call(
                "POST",
                f"secret/data/{prefix}/keys/{key_id}",
                {"options": {"cas": revision}, "data": old},
            )
            meta = await store.get_key(key_id)
            assert meta.origin == ORIGIN_AWS_KMS and meta.materials == ()
            assert meta == replace(created, revision=revision + 1)
            # Its next write writes both; the versions stay a key made by s3kms's.
            updated = await store.update_key(replace(meta, description="converted"))
            record, _ = stored(bao, prefix, key_id)
            assert record["origin"] == ORIGIN_AWS_KMS and record["materials"] == "[]"
            assert await store.get_key(key_id) == updated
            assert await store.list_versions(key_id) == [KeyVersion(1, 1767225600.0, None)]

    run(main())


def test_update_key_writes_the_current_version_but_never_the_origin(
    bao: VaultApi, prefix: str
) -> None:
    key_id = unique("cur")

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            meta = await store.create_key(
                KeyMetadata(key_id=key_id, state=KeyState.ENABLED, created_at=1767225600.0)
            )
            rotated = await store.rotate_key(
                key_id, RotationType.ON_DEMAND, 1767225700.0, lambda m: None
            )
            assert rotated.current_version == 2
            # An update written from a stale read loses its check-and-set (a rotation moved
            # the revision), so writing the current version cannot undo a rotation.
            with pytest.raises(WriteConflict):
                await store.update_key(replace(meta, description="stale"))
            same = await store.update_key(replace(rotated, origin=ORIGIN_EXTERNAL))
            assert same.current_version == 2 and same.origin == ORIGIN_AWS_KMS
            versions = await store.list_versions(key_id)
            assert [(v.version, v.rotation_type) for v in versions] == [
                (1, None),
                (2, RotationType.ON_DEMAND),
            ]
            assert (await store.encrypt(key_id, b"x", b"", allow))[0] == 2

    run(main())


# --------------------------------------------------------------------------- symmetric


def test_symmetric_import_encrypt_decrypt_and_compare_and_set(bao: VaultApi, prefix: str) -> None:
    key_id = unique("sym")
    material = os.urandom(32)

    async def main() -> None:
        async with (
            await VaultKeyStore.connect(settings(bao, prefix)) as store,
            await VaultKeyStore.connect(settings(bao, prefix)) as other,
        ):
            created = await store.create_key(external_meta(key_id))
            first = imported(created, material_record(1))
            done = await store.set_material(first, 1, material)
            assert done == replace(first, revision=2)
            assert await other.get_key(key_id) == done
            assert transit_latest(bao, key_id) == 1
            key = bao.call("GET", f"transit/keys/{key_id}")["data"]
            assert key["imported_key"] is True and key["exportable"] is False
            assert key["type"] == "aes256-gcm96"

            version, sealed = await store.encrypt(key_id, b"secret", b"ctx", require_enabled)
            assert version == 1
            assert transit_open(material, sealed, b"ctx") == b"secret"
            assert await other.decrypt(key_id, 1, sealed, b"ctx", require_enabled) == b"secret"
            versions = await store.list_versions(key_id)
            assert [(v.version, v.rotation_type) for v in versions] == [(1, None)]

            # Check-and-set: a stale revision writes nothing, and changes nothing in transit.
            with pytest.raises(WriteConflict):
                await store.set_material(replace(first, description="stale"), 1, material)
            with pytest.raises(WriteConflict):
                await store.set_material(replace(first, revision=1), 1, None)
            assert stored(bao, prefix, key_id)[1] == 2
            assert transit_latest(bao, key_id) == 1
            assert await store.decrypt(key_id, 1, sealed, b"ctx", allow) == b"secret"

    run(main())


def test_an_import_repeated_after_its_record_write_failed_is_completed(
    bao: VaultApi, prefix: str
) -> None:
    """Transit holds the version (the import got there, its record write did not): the same
    material is not imported again, the record is written; another material is refused."""
    key_id = unique("again")
    material = os.urandom(32)

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            created = await store.create_key(external_meta(key_id))
            import_directly(bao, key_id, material, "aes256-gcm96")
            with pytest.raises(UnsupportedOperation, match="already holds other key material"):
                await store.set_material(imported(created, material_record(1)), 1, os.urandom(32))
            assert stored(bao, prefix, key_id)[1] == 1  # nothing written
            done = await store.set_material(imported(created, material_record(1)), 1, material)
            assert done.revision == 2 and done.enabled
            assert transit_latest(bao, key_id) == 1  # no second import
            version, sealed = await store.encrypt(key_id, b"x", b"", allow)
            assert (version, transit_open(material, sealed, b"")) == (1, b"x")
            # A version transit cannot add (it adds only the next one) writes nothing.
            with pytest.raises(UnsupportedOperation, match="can add only version 2"):
                await store.set_material(
                    imported(done, material_record(1), material_record(3, pending=True)),
                    3,
                    os.urandom(32),
                )
            assert stored(bao, prefix, key_id)[1] == 2

    run(main())


def test_new_material_waits_for_its_rotation_then_becomes_current(
    bao: VaultApi, prefix: str
) -> None:
    key_id = unique("rot")
    one, two = os.urandom(32), os.urandom(32)

    async def main() -> None:
        async with (
            await VaultKeyStore.connect(settings(bao, prefix)) as store,
            await VaultKeyStore.connect(settings(bao, prefix, metadata_cache_seconds=0)) as cold,
        ):
            first = material_record(1)
            meta = await store.set_material(
                imported(await store.create_key(external_meta(key_id)), first), 1, one
            )
            _, old = await store.encrypt(key_id, b"version 1", b"", allow)
            # NEW_KEY_MATERIAL: version 2, pending (the current version stays 1).
            pending = material_record(2, pending=True)
            meta = await store.set_material(imported(meta, first, pending), 2, two)
            assert meta.current_version == 1 and transit_latest(bao, key_id) == 2
            # Transit encrypts with its latest version unless told: both nodes, cached or not,
            # still encrypt with the key's current version.
            for node in (store, cold, store):
                version, sealed = await node.encrypt(key_id, b"still 1", b"", require_enabled)
                assert (version, transit_open(one, sealed, b"")) == (1, b"still 1")
            assert [v.version for v in await store.list_versions(key_id)] == [1, 2]

            # RotateKeyOnDemand: the service's update makes version 2 current.
            rotated_at = float(int(time.time()))
            done = replace(pending, pending=False, rotated_at=rotated_at)
            meta = await store.update_key(replace(meta, current_version=2, materials=(first, done)))
            assert meta.current_version == 2
            assert (await cold.get_key(key_id)).current_version == 2
            versions = await store.list_versions(key_id)
            assert versions[1] == KeyVersion(2, rotated_at, RotationType.ON_DEMAND)
            assert versions[0].version == 1 and versions[0].rotation_type is None
            for node in (store, cold):
                version, sealed = await node.encrypt(key_id, b"now 2", b"", require_enabled)
                assert (version, transit_open(two, sealed, b"")) == (2, b"now 2")
            assert await cold.decrypt(key_id, 1, old, b"", allow) == b"version 1"

            # Destroying one version of a two-version transit key: refused, nothing written.
            revision = stored(bao, prefix, key_id)[1]
            for version in (1, 2):
                gone = replace(first if version == 1 else done, imported=False)
                others = (gone, done) if version == 1 else (first, gone)
                with pytest.raises(UnsupportedOperation, match="cannot destroy one version"):
                    await store.set_material(imported(meta, *others), version, None)
            assert stored(bao, prefix, key_id)[1] == revision
            assert transit_latest(bao, key_id) == 2
            assert await store.decrypt(key_id, 1, old, b"", allow) == b"version 1"

    run(main())


def test_destroying_the_only_version_deletes_the_transit_key_and_reimport_restores_it(
    bao: VaultApi, prefix: str
) -> None:
    key_id = unique("del")
    material = os.urandom(32)

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            first = material_record(1)
            meta = await store.set_material(
                imported(await store.create_key(external_meta(key_id)), first), 1, material
            )
            _, sealed = await store.encrypt(key_id, b"before", b"aad", allow)
            listed = await store.list_versions(key_id)

            gone = replace(first, imported=False, expiration_model=None)
            meta = await store.set_material(imported(meta, gone), 1, None)
            assert meta.state is KeyState.PENDING_IMPORT and meta.revision == 3
            assert transit_latest(bao, key_id) is None  # the material is destroyed
            assert await store.get_key(key_id) == meta
            assert await store.list_versions(key_id) == []
            with pytest.raises(InvalidCiphertext):
                await store.decrypt(key_id, 1, sealed, b"aad", allow)
            with pytest.raises(KeyInvalidState):
                await store.encrypt(key_id, b"x", b"", allow)
            # Destroyed again (a transit key that is not there): the record only.
            meta = await store.set_material(replace(meta, description="again"), 1, None)
            assert meta.revision == 4
            # Without version 1 in transit, version 2 cannot be imported.
            with pytest.raises(UnsupportedOperation, match="import the key material of version 1"):
                await store.set_material(
                    imported(meta, gone, material_record(2, pending=True)), 2, os.urandom(32)
                )
            assert stored(bao, prefix, key_id)[1] == 4

            # The same material imported again: a new transit key, every old ciphertext opens.
            meta = await store.set_material(imported(meta, first), 1, material)
            assert meta.enabled and transit_latest(bao, key_id) == 1
            assert await store.decrypt(key_id, 1, sealed, b"aad", require_enabled) == b"before"
            assert await store.list_versions(key_id) == listed  # dated at its first import

    run(main())


def test_concurrent_imports_of_one_key_make_one_transit_version(bao: VaultApi, prefix: str) -> None:
    key_id = unique("race")
    material = os.urandom(32)

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            created = await store.create_key(external_meta(key_id))
            first = imported(created, material_record(1))
            results = await asyncio.gather(
                *(store.set_material(first, 1, material) for _ in range(3)),
                return_exceptions=True,
            )
            assert sum(isinstance(r, KeyMetadata) for r in results) == 1, results
            assert sum(isinstance(r, WriteConflict) for r in results) == 2, results
            assert transit_latest(bao, key_id) == 1

    run(main())


# --------------------------------------------------------------------------- other key specs


def test_rsa_ecdsa_ed25519_imports_sign_with_the_imported_private_key(
    bao: VaultApi, prefix: str
) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p256 = ec.generate_private_key(ec.SECP256R1())
    edwards = ed25519.Ed25519PrivateKey.generate()
    cases = [
        ("RSA_2048", rsa_key, "RSASSA_PSS_SHA_256"),
        ("RSA_2048", rsa_key, "RSASSA_PKCS1_V1_5_SHA_256"),
        ("ECC_NIST_P256", p256, "ECDSA_SHA_256"),
        ("ECC_NIST_EDWARDS25519", edwards, "ED25519_SHA_512"),
    ]

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            for spec, private, algorithm in cases:
                key_id = unique(spec.lower().replace("_", "-"))
                created = await store.create_key(
                    external_meta(key_id, key_spec=spec, key_usage="SIGN_VERIFY")
                )
                await store.set_material(imported(created, material_record(1)), 1, pkcs8(private))
                der = await store.public_key(key_id, require_enabled)
                public = private.public_key()
                assert der == public.public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                message = b"signed by imported material"
                signature = await store.sign(key_id, algorithm, message, "RAW", require_enabled)
                if spec.startswith("RSA"):
                    pad: Any = (
                        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
                        if "PSS" in algorithm
                        else padding.PKCS1v15()
                    )
                    public.verify(signature, message, pad, hashes.SHA256())
                elif spec.startswith("ECC_NIST_P"):
                    public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
                else:
                    public.verify(signature, message)
                # Re-importing the same private key (after a failed record write) is a no-op;
                # another private key is refused.
                meta = await store.get_key(key_id)
                again = await store.set_material(meta, 1, pkcs8(private))
                assert again.revision == meta.revision + 1 and transit_latest(bao, key_id) == 1
                other = (
                    rsa.generate_private_key(public_exponent=65537, key_size=2048)
                    if spec.startswith("RSA")
                    else ec.generate_private_key(ec.SECP256R1())
                    if spec.startswith("ECC_NIST_P")
                    else ed25519.Ed25519PrivateKey.generate()
                )
                with pytest.raises(UnsupportedOperation, match="other key material"):
                    await store.set_material(again, 1, pkcs8(other))

    run(main())


def test_hmac_imports_mac_as_the_material_does(bao: VaultApi, prefix: str) -> None:
    """HMAC_256 with 32 bytes and 64; HMAC_224 with 28 (below transit's 32-byte minimum: padded
    with zeros, which gives the same MACs) and HMAC_512 with 128."""
    cases = [("HMAC_256", 32, "sha256"), ("HMAC_256", 64, "sha256"), ("HMAC_224", 28, "sha224")]
    cases.append(("HMAC_512", 128, "sha512"))

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix)) as store:
            for spec, size, digest in cases:
                key_id = unique(spec.lower().replace("_", "-"))
                material = os.urandom(size)
                created = await store.create_key(
                    external_meta(key_id, key_spec=spec, key_usage="GENERATE_VERIFY_MAC")
                )
                meta = await store.set_material(imported(created, material_record(1)), 1, material)
                algorithm = f"HMAC_SHA_{spec[5:]}"
                mac = await store.generate_mac(key_id, algorithm, b"message", require_enabled)
                assert mac == hmac.new(material, b"message", digest).digest()
                again = await store.set_material(meta, 1, material)  # recognised: a no-op
                assert transit_latest(bao, key_id) == 1 and again.revision == meta.revision + 1
                with pytest.raises(UnsupportedOperation, match="other key material"):
                    await store.set_material(again, 1, os.urandom(size))

    run(main())


# --------------------------------------------------------------------------- sealing


def test_seal_unseal_across_nodes_and_purposes(bao: VaultApi, prefix: str) -> None:
    assert len(imports.SEALING_KEY) > 128 and not KEY_NAME_RE.fullmatch(imports.SEALING_KEY)
    secret = os.urandom(600)

    async def main() -> None:
        async with (
            await VaultKeyStore.connect(settings(bao, prefix)) as node_a,
            await VaultKeyStore.connect(settings(bao, prefix)) as node_b,
            await VaultKeyStore.connect(settings(bao, unique("s3kms-imports"))) as elsewhere,
        ):
            # Several nodes making the sealing key at once all succeed, with one key.
            sealed_a, sealed_b = await asyncio.gather(
                node_a.seal("import-token", secret), node_b.seal("import-token", secret)
            )
            assert sealed_a != sealed_b and sealed_a.startswith(b"vault:v1:")
            assert secret not in sealed_a
            assert await node_b.unseal("import-token", sealed_a) == secret
            assert await node_a.unseal("import-token", sealed_b) == secret
            assert await node_a.unseal("import-token", sealed_a) == secret
            assert await node_a.unseal("x", await node_a.seal("x", b"")) == b""

            bad = [
                b"",
                b"vault:v1:",
                b"\xff\xfe",
                sealed_a[:-4] + (b"AAAA" if not sealed_a.endswith(b"AAAA") else b"BBBB"),
                sealed_a.replace(b"vault:v1:", b"vault:v2:"),
                sealed_a.replace(b"vault:v1:", b"vault:v0:"),
                sealed_a + b"\n",
                b"vault:v1:" + b"A" * 40,
                b"not a token at all",
            ]
            for token in bad:
                with pytest.raises(InvalidCiphertext):
                    await node_a.unseal("import-token", token)
            with pytest.raises(InvalidCiphertext):  # another purpose
                await node_b.unseal("another-purpose", sealed_a)
            with pytest.raises(InvalidCiphertext):  # another deployment (KV prefix)
                await elsewhere.unseal("import-token", sealed_a)
            # A sealed secret is the sealing key's ciphertext, not a KMS key's.
            record = bao.call("GET", f"transit/keys/{imports.SEALING_KEY}")["data"]
            assert record["type"] == "aes256-gcm96" and record["exportable"] is False

    run(main())


# --------------------------------------------------------------------------- least privilege


def test_imports_and_sealing_work_with_the_documented_policy(bao: VaultApi, prefix: str) -> None:
    """docs/vault.md's least-privilege policy (read from the document) covers the wrapping key,
    import, import_version, the deletion of a destroyed material and the sealing key."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "vault.md").read_text()
    hcl = text.split("```hcl\n", 1)[1].split("```", 1)[0]
    hcl = hcl.replace("secret/data/s3kms/", f"secret/data/{prefix}/")
    hcl = hcl.replace("secret/metadata/s3kms/", f"secret/metadata/{prefix}/")
    bao.call("POST", "transit/config/keys", {"disable_upsert": True})
    policy = unique("s3kms-import-policy")
    bao.write_policy(policy, hcl)
    token = bao.call(
        "POST",
        "auth/token/create",
        {"policies": [policy], "ttl": "10m", "no_default_policy": True},
    )["auth"]["client_token"]
    key_id = unique("policy")
    one, two = os.urandom(32), os.urandom(32)

    async def main() -> None:
        async with await VaultKeyStore.connect(settings(bao, prefix, token=token)) as store:
            first = material_record(1)
            meta = await store.set_material(
                imported(await store.create_key(external_meta(key_id)), first), 1, one
            )
            pending = material_record(2, pending=True)
            meta = await store.set_material(imported(meta, first, pending), 2, two)
            assert transit_latest(bao, key_id) == 2
            sealed = await store.seal("import-token", b"token")
            assert await store.unseal("import-token", sealed) == b"token"
            await store.delete_key(key_id)
            assert transit_latest(bao, key_id) is None

            single = unique("policy-single")
            meta = await store.set_material(
                imported(await store.create_key(external_meta(single)), first), 1, one
            )
            await store.set_material(imported(meta, replace(first, imported=False)), 1, None)
            assert transit_latest(bao, single) is None

    run(main())
