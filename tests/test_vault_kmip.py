"""KMIP objects on the Vault keystore, through KeyService, against a real OpenBao.

A KMIP object is a key whose metadata has `kmip` (the KMIP API's record, opaque here) and whose
material is released (`KeyService.export_material`, KMIP Get). On Vault (store.py, exports.py)
its material is an exportable transit key (made by transit, or imported exportable for a
Register), or, for the specs transit has no key type for, a KV entry sealed by transit under
s3kms's own material key. Every spec in `kmip_specs` is created (where s3kms makes material)
and registered, exported and checked against what the other surfaces compute with it; the
record roundtrips through a change and another node; destruction removes the material; a key
made through the AWS API is never exported. Without a server: the record's fields and strings,
and transit's export forms.

Every test has its own KV prefix and key ids (the shared server is shared by the session;
transit key names are global to the mount).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from s3kms.clock import OffsetClock
from s3kms.crypto import blob, keyspecs, wrapping
from s3kms.crypto.context import canonical_context
from s3kms.errors import InternalError, KeyNotFound, UnsupportedOperation
from s3kms.keystore.vault import VaultKeyStore, VaultSettings, exports
from s3kms.keystore.vault.kv import Record
from s3kms.keystore.vault.store import (
    _KV_WRITE_STRINGS,
    KMIP_SPECS,
    SEALED_SPECS,
    TRANSIT_TYPES,
    _json_strings,
    _meta_to_record,
    _record_to_meta,
)
from s3kms.model import DOES_NOT_EXPIRE, KeyMaterial, KeyMetadata, KeyState, KeyVersion
from s3kms.protocols.kmip.record import KmipRecord, name_term, owner_term
from s3kms.service import KeyService

from openbao import VaultApi

T = TypeVar("T")

ACCOUNT = "111122223333"
OWNER = "arn:aws:iam::000000000000:user/u"
KMIP = KmipRecord(owner=OWNER, object_type=2, state=1, initial_date=0, last_change_date=0).dump()
CONTEXT = {"bucket": "photos"}
# The specs s3kms makes material for (KMIP Create, CreateKeyPair); the others are registered only.
MADE_FAMILIES = frozenset({"symmetric", "aes", "hmac", "rsa", "ecc", "ed25519"})
USAGES = {
    "hmac": "GENERATE_VERIFY_MAC",
    "rsa": "SIGN_VERIFY",
    "ecc": "SIGN_VERIFY",
    "ed25519": "SIGN_VERIFY",
}
CREATED = sorted(s for s in KMIP_SPECS if keyspecs.spec(s).family in MADE_FAMILIES)
REGISTERED = sorted(KMIP_SPECS)


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def settings(api: VaultApi, prefix: str, token: str | None = None) -> VaultSettings:
    return VaultSettings(
        addresses=(api.addr,),
        token=token or api.root_token,
        kv_prefix=prefix,
        timeout_seconds=10.0,
    )


@asynccontextmanager
async def vault_service(
    api: VaultApi, prefix: str, token: str | None = None
) -> AsyncIterator[KeyService]:
    """A KeyService on its own connection to the Vault keystore: one node."""
    store = await VaultKeyStore.connect(settings(api, prefix, token))
    try:
        yield KeyService(store, OffsetClock(), region="us-east-1", account_id=ACCOUNT)
    finally:
        await store.close()


def usage(spec: str) -> str:
    return USAGES.get(keyspecs.spec(spec).family, "ENCRYPT_DECRYPT")


def pkcs8(key: Any) -> bytes:
    der: bytes = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return der


def spki(key: Any) -> bytes:
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def material_for(spec: str) -> bytes:
    """Material a Register brings for `spec`, as the service checks it (wrapping.py)."""
    info = keyspecs.spec(spec)
    if info.family == "symmetric":
        return os.urandom(32)
    if info.family == "aes":
        return os.urandom(info.size // 8)
    if info.family == "hmac":
        # HMAC_224: 29 bytes ending in a zero byte, below transit's 32-byte minimum (padded
        # on its way in); the others at their largest.
        if info.size == 224:
            return os.urandom(28) + b"\0"
        return os.urandom({256: 64, 384: 128, 512: 128}[info.size])
    if info.family == "rsa":
        return pkcs8(rsa.generate_private_key(public_exponent=65537, key_size=info.size))
    if info.family == "ecc":
        curves: dict[str, ec.EllipticCurve] = {
            "secp256r1": ec.SECP256R1(),
            "secp384r1": ec.SECP384R1(),
            "secp521r1": ec.SECP521R1(),
        }
        assert info.curve is not None
        return pkcs8(ec.generate_private_key(curves[info.curve]))
    if info.family == "ed25519":
        return pkcs8(ed25519.Ed25519PrivateKey.generate())
    if info.family == "public":
        return spki(ec.generate_private_key(ec.SECP256R1()).public_key())
    assert info.family == "data", spec
    if spec == "OPAQUE_DATA":
        return os.urandom(65536)  # the largest object (wrapping.MAX_DATA_BYTES)
    return os.urandom(100) + b"\0"


def transit_key(api: VaultApi, key_id: str) -> dict[str, Any] | None:
    resp = api.api("GET", f"transit/keys/{key_id}")
    if resp.status_code == 404:
        return None
    data: dict[str, Any] = resp.json()["data"]
    return data


def kv_entry(api: VaultApi, prefix: str, path: str) -> dict[str, Any] | None:
    resp = api.api("GET", f"secret/data/{prefix}/{path}")
    if resp.status_code == 404:
        return None
    data: dict[str, Any] = resp.json()["data"]["data"]
    return data


def assert_material_stored_as_expected(
    api: VaultApi, prefix: str, key_id: str, spec: str, material: bytes
) -> None:
    """Where the spec's material lives: an exportable transit key, or a sealed KV entry (and
    no plaintext anywhere in KV)."""
    entry = kv_entry(api, prefix, f"material/{key_id}")
    record = kv_entry(api, prefix, f"keys/{key_id}")
    assert record is not None and record["kmip"] == KMIP
    for text in (json.dumps(entry), json.dumps(record)):
        assert base64.b64encode(material).decode() not in text
        assert material.hex() not in text
    if spec in SEALED_SPECS:
        assert transit_key(api, key_id) is None
        assert entry is not None and set(entry["versions"]) == {"1"}
        assert entry["versions"]["1"].startswith("vault:v1:")
    else:
        key = transit_key(api, key_id)
        assert key is not None and key["exportable"] is True
        assert entry is None


async def check_with_other_surfaces(svc: KeyService, key_id: str, material: bytes) -> None:
    """The exported material is the key the AWS operations use: transit's AES-GCM output
    opens with it, its HMAC is transit's, its public key is GetPublicKey's and signs alike."""
    meta = await svc.describe(key_id)
    info = keyspecs.spec(meta.key_spec)
    if info.family == "symmetric":
        _, ciphertext = await svc.encrypt(key_id, b"through the service", CONTEXT)
        assert (await svc.decrypt(ciphertext, CONTEXT)).plaintext == b"through the service"
        parsed = blob.decode(ciphertext)
        aad = blob.header(key_id) + canonical_context(CONTEXT)
        opened = AESGCM(material).decrypt(parsed.sealed[:12], parsed.sealed[12:], aad)
        assert opened == b"through the service"
    elif info.family == "hmac":
        algorithm = f"HMAC_SHA_{info.size}"
        _, tag = await svc.generate_mac(key_id, b"message", algorithm)
        assert tag == hmac.new(material, b"message", f"sha{info.size}").digest()
    elif info.family in ("rsa", "ecc", "ed25519"):
        private: Any = serialization.load_der_private_key(material, password=None)
        _, public = await svc.public_key(key_id)
        assert spki(private.public_key()) == public
        algorithm = info.algorithms("SIGN_VERIFY")[0]  # PSS SHA-256, ECDSA's hash, Ed25519
        _, signature = await svc.sign(key_id, b"message", "RAW", algorithm)
        assert await svc.verify(key_id, b"message", "RAW", algorithm, signature) == key_id
        if info.family == "rsa":  # made offline with the exported key: verifies through s3kms
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            offline = private.sign(b"offline", pss, hashes.SHA256())
            assert await svc.verify(key_id, b"offline", "RAW", algorithm, offline) == key_id


# --------------------------------------------------------------------------- without a server


def test_kmip_specs_are_every_transit_type_and_the_kv_held_specs() -> None:
    assert VaultKeyStore.kmip_specs == KMIP_SPECS
    assert set(TRANSIT_TYPES) | {"AES_128"} <= KMIP_SPECS
    assert {"AES_192", "SECRET_DATA", "OPAQUE_DATA"} <= SEALED_SPECS <= KMIP_SPECS
    for spec in KMIP_SPECS:
        info = keyspecs.spec(spec)
        assert info.available
        # Transit holds it (as an exportable key) or KV does (sealed), never both, never none.
        in_transit = spec in TRANSIT_TYPES or spec in exports.KMIP_TRANSIT_TYPES
        assert in_transit != (spec in SEALED_SPECS), spec
        assert spec in SEALED_SPECS or exports.EXPORT_KINDS.get(
            TRANSIT_TYPES.get(spec) or exports.KMIP_TRANSIT_TYPES[spec]
        )
    # The KMIP-only specs are held, but the AWS API cannot make them (the service refuses).
    assert all(keyspecs.spec(s).kmip_only for s in SEALED_SPECS | {"AES_128"})
    assert VaultKeyStore.material_exportable is False  # backups hold no material, as before


def test_a_kmip_objects_record_has_its_text_and_no_other_record_changes() -> None:
    meta = KeyMetadata(key_id="k", state=KeyState.ENABLED, created_at=1.0, policy="{}")
    versions = [KeyVersion(1, 1.0, None)]
    plain = _meta_to_record(meta, versions)
    assert "kmip" not in plain  # any other key's record is what it was
    kmip = _meta_to_record(replace(meta, kmip=KMIP), versions)
    assert kmip == {**plain, "kmip": KMIP}
    # Two strings more (the field and its one string, however many attributes), and a KMIP
    # object is single-Region: 37 + 2 per tag with a key policy (39 with its lookup terms, two
    # more: tests/test_vault_lookup.py).
    for record in (plain, kmip):
        assert _json_strings(record) + _KV_WRITE_STRINGS == (35 if record is plain else 37)
    many = KmipRecord(
        owner=OWNER,
        object_type=2,
        state=1,
        initial_date=0,
        last_change_date=0,
        names=tuple(f"name-{i}" for i in range(500)),
    ).dump()
    assert _json_strings(_meta_to_record(replace(meta, kmip=many), versions)) == 32
    # Read back: a record with it, one without (written before KMIP), one malformed.
    assert _record_to_meta(Record(kmip, 1)).kmip == KMIP
    assert _record_to_meta(Record(plain, 1)).kmip is None
    with pytest.raises(InternalError, match="malformed key metadata"):
        _record_to_meta(Record({**plain, "kmip": {"owner": OWNER}}, 1))


def test_transit_export_forms_become_the_keystores() -> None:
    info = keyspecs.spec
    raw = os.urandom(32)
    assert (
        exports.from_export(
            info("SYMMETRIC_DEFAULT"), "aes256-gcm96", base64.b64encode(raw).decode()
        )
        == raw
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    assert pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert exports.from_export(info("RSA_2048"), "rsa-2048", pem) == pkcs8(key)
    with pytest.raises(ValueError, match="not a RSA_3072 key"):
        exports.from_export(info("RSA_3072"), "rsa-3072", pem)
    ec_key = ec.generate_private_key(ec.SECP384R1())
    sec1 = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    assert exports.from_export(info("ECC_NIST_P384"), "ecdsa-p384", sec1) == pkcs8(ec_key)
    with pytest.raises(ValueError):
        exports.from_export(info("ECC_NIST_P256"), "ecdsa-p256", sec1)
    ed = ed25519.Ed25519PrivateKey.generate()
    seed = ed.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = ed.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    text = base64.b64encode(seed + public).decode()
    assert exports.from_export(info("ECC_NIST_EDWARDS25519"), "ed25519", text) == pkcs8(ed)
    for bad in (None, "", "not base64!", base64.b64encode(seed).decode()):
        with pytest.raises(ValueError):
            exports.from_export(info("ECC_NIST_EDWARDS25519"), "ed25519", bad)


def test_an_hmac_224_material_is_given_back_unpadded() -> None:
    info = keyspecs.spec("HMAC_224")
    made = os.urandom(28)
    assert exports.unpadded_hmac(info, made + bytes(4), ("k",), None) == made
    for length in (28, 29, 30, 31):
        material = os.urandom(length - 1) + b"\0"  # ends in a zero byte: only the id tells
        padded = material + bytes(32 - length)
        material_id = hashlib.sha256(b"s3kms-key-material-id\x00k\x00" + material).hexdigest()
        assert exports.unpadded_hmac(info, padded, ("k",), material_id) == material
        # The id of another key's material: nothing matches, the bytes are as transit has them.
        assert exports.unpadded_hmac(info, padded, ("other",), material_id) == padded
    whole = os.urandom(32)
    assert exports.unpadded_hmac(info, whole, ("k",), None) == whole
    assert exports.unpadded_hmac(keyspecs.spec("HMAC_256"), made + bytes(4), ("k",), None) == (
        made + bytes(4)
    )


# --------------------------------------------------------------------------- on OpenBao


@pytest.fixture
def prefix() -> str:
    return unique("s3kms-kmip")


@pytest.mark.vault
@pytest.mark.parametrize("spec", CREATED)
def test_create_then_export(bao: VaultApi, prefix: str, spec: str) -> None:
    info = keyspecs.spec(spec)

    async def main() -> None:
        async with vault_service(bao, prefix) as svc:
            meta = await svc.create_key(
                key_spec=spec, key_usage=usage(spec), kmip=KMIP, state=KeyState.ENABLED
            )
            assert meta.kmip == KMIP and not meta.external
            got, material = await svc.export_material(meta.key_id)
            assert got.key_id == meta.key_id and got.kmip == KMIP
            if info.family in ("symmetric", "aes", "hmac"):
                assert len(material) == (32 if info.family == "symmetric" else info.size // 8)
            else:
                key = serialization.load_der_private_key(material, password=None)
                assert pkcs8(key) == material
                if info.family == "rsa":
                    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == info.size
                elif info.family == "ecc":
                    assert isinstance(key, ec.EllipticCurvePrivateKey)
                    assert key.curve.name == info.curve
                else:
                    assert isinstance(key, ed25519.Ed25519PrivateKey)
            assert_material_stored_as_expected(bao, prefix, meta.key_id, spec, material)
            await check_with_other_surfaces(svc, meta.key_id, material)
            # Every export is the same material; another node exports it too.
            assert (await svc.export_material(meta.key_id))[1] == material
        async with vault_service(bao, prefix) as other:
            assert (await other.export_material(meta.key_id))[1] == material
            with pytest.raises(KeyNotFound):  # a version that was never made
                await other.store.export_material(meta.key_id, 2)

    run(main())


@pytest.mark.vault
@pytest.mark.parametrize("spec", REGISTERED)
def test_register_then_export_gives_the_bytes_registered(
    bao: VaultApi, prefix: str, spec: str
) -> None:
    material = material_for(spec)

    async def main() -> None:
        async with vault_service(bao, prefix) as svc:
            key_id = svc.new_key_id()
            meta = await svc.create_with_material(
                key_id,
                material,
                key_spec=spec,
                key_usage=usage(spec),
                kmip=KMIP,
                state=KeyState.DISABLED,  # a Pre-Active object
            )
            assert meta.external and meta.kmip == KMIP and meta.state is KeyState.DISABLED
            assert (await svc.export_material(key_id))[1] == material
            assert_material_stored_as_expected(bao, prefix, key_id, spec, material)
            if spec not in SEALED_SPECS:
                key = transit_key(bao, key_id)
                assert key is not None and key["imported_key"] is True
            await svc.enable(key_id)
            await check_with_other_surfaces(svc, key_id, material)
        async with vault_service(bao, prefix) as other:
            assert (await other.export_material(key_id))[1] == material

    run(main())


@pytest.mark.vault
def test_the_kmip_record_roundtrips_through_modify_and_another_node(
    bao: VaultApi, prefix: str
) -> None:
    changed = KmipRecord(
        owner=OWNER,
        object_type=2,
        state=2,
        initial_date=0,
        last_change_date=5,
        names=("ceph-bucket-key",),
        custom=(("x-app", "rgw"),),
    ).dump()

    async def main() -> None:
        async with vault_service(bao, prefix) as svc:
            made = await svc.create_key(kmip=KMIP, state=KeyState.DISABLED)
            registered = await svc.create_with_material(
                svc.new_key_id(),
                os.urandom(40),
                key_spec="SECRET_DATA",
                key_usage="ENCRYPT_DECRYPT",
                kmip=KMIP,
            )
            plain = await svc.create_key()
            for meta in (made, registered):
                new = await svc.modify(
                    meta.key_id, lambda m: replace(m, kmip=changed, state=KeyState.ENABLED)
                )
                assert new.kmip == changed and new.state is KeyState.ENABLED
                assert (await svc.describe(meta.key_id)).kmip == changed
                assert (kv_entry(bao, prefix, f"keys/{meta.key_id}") or {})["kmip"] == changed
                # Other changes (AWS API ones) keep it.
                await svc.tag(meta.key_id, {"team": "storage"})
                await svc.update_description(meta.key_id, "described")
                assert (await svc.describe(meta.key_id)).kmip == changed
            with pytest.raises(UnsupportedOperation, match="not made through KMIP"):
                await svc.modify(plain.key_id, lambda m: replace(m, kmip=changed))
            assert "kmip" not in (kv_entry(bao, prefix, f"keys/{plain.key_id}") or {})
            # A rotation of the AES-256 object keeps it too, and each version exports.
            first = (await svc.export_material(made.key_id))[1]
            rotated = await svc.rotate(made.key_id)
            assert rotated.kmip == changed and rotated.current_version == 2
            second = (await svc.export_material(made.key_id))[1]
            assert second != first and len(second) == 32
            assert await svc.store.export_material(made.key_id, 1) == first
        async with vault_service(bao, prefix) as other:  # another node: a new connection
            for meta in (made, registered):
                assert (await other.describe(meta.key_id)).kmip == changed
            listed = {m.key_id: m.kmip for m in await other.list_keys()}
            assert listed == {made.key_id: changed, registered.key_id: changed, plain.key_id: None}
            assert (await other.export_material(made.key_id))[1] == second

    run(main())


@pytest.mark.vault
def test_destroy_now_removes_the_material(bao: VaultApi, prefix: str) -> None:
    async def main() -> None:
        async with vault_service(bao, prefix) as svc:
            keys = [
                await svc.create_key(kmip=KMIP),  # transit, made
                await svc.create_key(  # transit, made by s3kms and imported
                    key_spec="HMAC_224", key_usage="GENERATE_VERIFY_MAC", kmip=KMIP
                ),
                await svc.create_key(  # KV, made
                    key_spec="AES_192", key_usage="ENCRYPT_DECRYPT", kmip=KMIP
                ),
                await svc.create_with_material(  # transit, registered
                    svc.new_key_id(),
                    os.urandom(16),
                    key_spec="AES_128",
                    key_usage="ENCRYPT_DECRYPT",
                    kmip=KMIP,
                ),
                await svc.create_with_material(  # KV, registered
                    svc.new_key_id(),
                    b"a password",
                    key_spec="SECRET_DATA",
                    key_usage="ENCRYPT_DECRYPT",
                    kmip=KMIP,
                ),
            ]
            for meta in keys:
                await svc.export_material(meta.key_id)
                assert (transit_key(bao, meta.key_id) is None) == (meta.key_spec in SEALED_SPECS)
                assert (kv_entry(bao, prefix, f"material/{meta.key_id}") is None) == (
                    meta.key_spec not in SEALED_SPECS
                )
                gone = await svc.destroy_now(meta.key_id)
                assert gone.key_id == meta.key_id
                assert transit_key(bao, meta.key_id) is None
                for path in (f"material/{meta.key_id}", f"keys/{meta.key_id}"):
                    resp = bao.api("GET", f"secret/metadata/{prefix}/{path}")
                    assert resp.status_code == 404  # every version of the entry gone
                with pytest.raises(KeyNotFound):
                    await svc.export_material(meta.key_id)
                with pytest.raises(KeyNotFound):
                    await svc.store.export_material(meta.key_id, 1)
                await svc.store.delete_key(meta.key_id)  # idempotent

    run(main())


@pytest.mark.vault
def test_a_non_kmip_keys_material_is_never_exported(bao: VaultApi, prefix: str) -> None:
    async def main() -> None:
        async with vault_service(bao, prefix) as svc:
            aws = await svc.create_key()
            hmac_key = await svc.create_key(key_spec="HMAC_256", key_usage="GENERATE_VERIFY_MAC")
            for meta in (aws, hmac_key):
                key = transit_key(bao, meta.key_id)
                assert key is not None and key["exportable"] is False  # exactly as before
                with pytest.raises(UnsupportedOperation, match="not extractable"):
                    await svc.export_material(meta.key_id)
                # Even once someone made its transit key exportable (transit lets a token with
                # keys/*/config do so), the keystore itself refuses: no KMIP record.
                bao.call("POST", f"transit/keys/{meta.key_id}/config", {"exportable": True})
                with pytest.raises(UnsupportedOperation, match="no KMIP object"):
                    await svc.store.export_material(meta.key_id, 1)
                with pytest.raises(UnsupportedOperation):
                    await svc.destroy_now(meta.key_id)
            # The KMIP-only specs are not the AWS API's.
            with pytest.raises(Exception, match="not a key spec"):
                await svc.create_key(key_spec="AES_192", key_usage="ENCRYPT_DECRYPT")

    run(main())


@pytest.mark.vault
def test_a_sealed_material_opens_only_as_its_own_keys_version(bao: VaultApi, prefix: str) -> None:
    """The material entry of one key copied over another's (or named as another version)
    does not open: its associated data names the deployment, the key and the version."""

    async def main() -> None:
        async with vault_service(bao, prefix) as svc:
            one = await svc.create_with_material(
                svc.new_key_id(), b"first secret", key_spec="SECRET_DATA",
                key_usage="ENCRYPT_DECRYPT", kmip=KMIP,
            )  # fmt: skip
            two = await svc.create_with_material(
                svc.new_key_id(), b"second secret", key_spec="SECRET_DATA",
                key_usage="ENCRYPT_DECRYPT", kmip=KMIP,
            )  # fmt: skip
            entry = kv_entry(bao, prefix, f"material/{one.key_id}")
            assert entry is not None
            bao.call("POST", f"secret/data/{prefix}/material/{two.key_id}", {"data": entry})
            with pytest.raises(InternalError, match="does not open"):
                await svc.export_material(two.key_id)
            assert (await svc.export_material(one.key_id))[1] == b"first secret"
            # The sealing is the material key's, never a KMS key's nor the import tokens'.
            key = transit_key(bao, exports.MATERIAL_KEY)
            assert key is not None and key["exportable"] is False
            assert len(exports.MATERIAL_KEY) > 128

    run(main())


@pytest.mark.vault
def test_a_destroyed_registered_material_and_its_import_again(bao: VaultApi, prefix: str) -> None:
    """set_material(None) of a KV-held object removes that version after the record stopped
    naming it; the same material imported again is exported again."""

    async def main() -> None:
        async with vault_service(bao, prefix) as svc:
            material = os.urandom(24)
            meta = await svc.create_with_material(
                svc.new_key_id(), material, key_spec="AES_192",
                key_usage="ENCRYPT_DECRYPT", kmip=KMIP,
            )  # fmt: skip
            store = svc.store
            emptied = await store.set_material(
                replace(meta, state=KeyState.PENDING_IMPORT,
                        materials=tuple(replace(m, imported=False) for m in meta.materials)),
                1,
                None,
            )  # fmt: skip
            entry = kv_entry(bao, prefix, f"material/{meta.key_id}")
            assert entry is not None and entry["format"] == 1 and entry["versions"] == {}
            with pytest.raises(KeyNotFound):
                await store.export_material(meta.key_id, 1)
            back = await store.set_material(replace(emptied, materials=meta.materials), 1, material)
            assert back.materials == meta.materials
            assert await store.export_material(meta.key_id, 1) == material

    run(main())


@pytest.mark.vault
def test_half_made_kmip_objects(bao: VaultApi, prefix: str) -> None:
    """A transit key left by a create that did not complete: a KMIP create of that id completes
    over an exportable one of its type, and refuses a non-exportable one (and the reverse)."""
    done, wrong, reverse = unique("half-kmip"), unique("half-nonexp"), unique("half-exp")
    bao.call("POST", f"transit/keys/{done}", {"type": "aes256-gcm96", "exportable": True})
    bao.call("POST", f"transit/keys/{wrong}", {"type": "aes256-gcm96"})
    bao.call("POST", f"transit/keys/{reverse}", {"type": "aes256-gcm96", "exportable": True})

    async def main() -> None:
        async with vault_service(bao, prefix) as svc:
            made = await svc.create_key(done, kmip=KMIP)
            exported = base64.b64decode(
                bao.call("GET", f"transit/export/encryption-key/{done}/1")["data"]["keys"]["1"]
            )
            assert (await svc.export_material(made.key_id))[1] == exported
            with pytest.raises(InternalError, match="not exportable"):
                await svc.create_key(wrong, kmip=KMIP)
            with pytest.raises(InternalError, match="is exportable"):
                await svc.create_key(reverse)
            for key_id in (wrong, reverse):
                with pytest.raises(KeyNotFound):
                    await svc.describe(key_id)

    run(main())


@pytest.mark.vault
def test_kmip_objects_with_the_documented_policy(bao: VaultApi, prefix: str) -> None:
    """docs/vault.md's least-privilege policy (read from the document) covers KMIP objects:
    exportable transit keys and their export, the material key, the KV-held materials and the
    lookup index (its entries written, listed and deleted)."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "vault.md").read_text()
    hcl = text.split("```hcl\n", 1)[1].split("```", 1)[0]
    assert 'path "transit/export/*"' in hcl
    hcl = hcl.replace("secret/data/s3kms/", f"secret/data/{prefix}/")
    hcl = hcl.replace("secret/metadata/s3kms/", f"secret/metadata/{prefix}/")
    policy = unique("s3kms-kmip-policy")
    bao.write_policy(policy, hcl)
    token = bao.call(
        "POST",
        "auth/token/create",
        {"policies": [policy], "ttl": "10m", "no_default_policy": True},
    )["auth"]["client_token"]

    async def main() -> None:
        async with vault_service(bao, prefix, token=token) as svc:
            made = [
                await svc.create_key(kmip=KMIP),
                await svc.create_key(
                    key_spec="HMAC_224", key_usage="GENERATE_VERIFY_MAC", kmip=KMIP
                ),
                await svc.create_key(key_spec="AES_192", key_usage="ENCRYPT_DECRYPT", kmip=KMIP),
                await svc.create_with_material(
                    svc.new_key_id(),
                    material_for("RSA_2048"),
                    key_spec="RSA_2048",
                    key_usage="SIGN_VERIFY",
                    kmip=KMIP,
                ),
                await svc.create_with_material(
                    svc.new_key_id(),
                    b"opaque",
                    key_spec="OPAQUE_DATA",
                    key_usage="ENCRYPT_DECRYPT",
                    kmip=KMIP,
                ),
            ]
            named = KmipRecord(
                owner=OWNER,
                object_type=2,
                state=1,
                initial_date=0,
                last_change_date=0,
                names=("by-policy",),
            )
            term = name_term(OWNER, "by-policy")
            made.append(await svc.create_key(kmip=named.dump(), lookup=named.terms()))
            assert [m.key_id for m in await svc.find_keys(term)] == [made[-1].key_id]
            unnamed = replace(named, names=())
            await svc.modify(
                made[-1].key_id, lambda m: replace(m, kmip=unnamed.dump(), lookup=unnamed.terms())
            )
            assert await svc.store.find_keys(term, limit=10) == []
            for meta in made:
                assert (await svc.export_material(meta.key_id))[1]
                await svc.modify(meta.key_id, lambda m: replace(m, description="changed"))
                await svc.destroy_now(meta.key_id)
                assert transit_key(bao, meta.key_id) is None
                assert kv_entry(bao, prefix, f"material/{meta.key_id}") is None
            assert await svc.store.find_keys(owner_term(OWNER), limit=10) == []

    run(main())


@pytest.mark.vault
def test_a_registered_aes_keys_next_material_is_exportable_too(bao: VaultApi, prefix: str) -> None:
    """A registered AES-256 object's second material (ImportKeyMaterial NEW_KEY_MATERIAL)
    becomes transit version 2 by `import_version`: exportable with the key, each version its
    own material."""
    first, second = os.urandom(32), os.urandom(32)

    async def main() -> None:
        async with vault_service(bao, prefix) as svc:
            key_id = svc.new_key_id()
            meta = await svc.create_with_material(
                key_id, first, key_spec="SYMMETRIC_DEFAULT", kmip=KMIP
            )
            pending = KeyMaterial(
                2, wrapping.material_id(key_id, second), True, DOES_NOT_EXPIRE, pending=True
            )
            await svc.store.set_material(
                replace(meta, materials=(*meta.materials, pending)), 2, second
            )
            assert (transit_key(bao, key_id) or {})["latest_version"] == 2
            assert await svc.store.export_material(key_id, 1) == first
            assert await svc.store.export_material(key_id, 2) == second
            assert (await svc.export_material(key_id))[1] == first  # still the current one

    run(main())
