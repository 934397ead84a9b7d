"""KMIP objects' material on Vault, whose material is released (KMIP Get): the pure part, no I/O.

A KMIP object (a key whose metadata has `kmip`) is held where its key spec fits:

* in transit, as an **exportable** key of the type `transit_type` gives (the AWS key specs, and
  AES_128 as `aes128-gcm96`), made by transit (`exportable: true`) or imported (BYOK `import`
  with `exportable: true`, for a Register). Its material comes back from `GET
  <mount>/export/<kind>/<name>/<version>`, `EXPORT_KINDS` naming the kind, in transit's form
  (`from_export` makes it the keystore's: raw bytes, PKCS#8 DER). What OpenBao 2.7.2 answers:

      aes128-gcm96, aes256-gcm96  encryption-key: base64 of the raw key (16, 32 bytes)
      hmac                        hmac-key: base64 of the raw key, as imported or made (32 to
                                  128 bytes; an HMAC_224 material below 32 bytes was padded
                                  with zeros on its way in, see `unpadded_hmac`)
      rsa-2048/3072/4096          signing-key (or encryption-key, the same): PKCS#1 PEM
                                  ("RSA PRIVATE KEY")
      ecdsa-p256/p384/p521        signing-key: SEC1 PEM ("EC PRIVATE KEY")
      ed25519                     signing-key: base64 of the 32-byte seed and the 32-byte
                                  public key

  (A non-HMAC key's `hmac-key` is another key, transit's own HMAC key of it: never asked.)

* in KV, sealed, for the specs transit has no key type for (`sealed_spec`: AES_192 and the
  KMIP-only byte objects, Secret Data, Opaque Objects, certificates, split keys, public keys):
  one entry per key, `<prefix>/material/<bare key id>`, `{"format": 1, "versions": {"<version>":
  "<sealed>"}}`, each version's material encrypted by transit's `encrypt` under `MATERIAL_KEY`
  (an `aes256-gcm96` key of s3kms's own, never exportable, made on first use) with
  `material_aad` as associated data: the deployment (the KV prefix), the key and the version,
  so that a sealed material opens only as the very version of the very key it was written for.
  Never plaintext in KV.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from s3kms.crypto import keyspecs, wrapping

# The transit key that seals the KV-held materials. Longer than any KMS key id (at most 128
# characters), as imports.SEALING_KEY, so no key can be created under it; and another key than
# the sealing key, whose loss costs only the import tokens outstanding: this one's costs every
# KV-held KMIP object.
MATERIAL_KEY = (
    "s3kms-internal-kmip-material-key_not-a-kms-key_it-seals-the-kmip-objects-transit-has-no-"
    "key-type-for_its-name-is-longer-than-any-kms-key-id"
)
MATERIAL_TYPE = "aes256-gcm96"
ENTRY_FORMAT = 1
# KMIP objects of these specs are transit keys too (no AWS key spec: made through KMIP only).
KMIP_TRANSIT_TYPES: Mapping[str, str] = MappingProxyType({"AES_128": "aes128-gcm96"})
# The families whose KMIP-only specs without a transit type are KV-held (sealed): bytes that
# s3kms stores and releases, and never computes with in the keystore.
_SEALED_FAMILIES = frozenset({"aes", "data", "public"})
# `GET <mount>/export/<kind>/...`: the kind that holds a transit type's key material.
EXPORT_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "aes128-gcm96": "encryption-key",
        "aes256-gcm96": "encryption-key",
        "hmac": "hmac-key",
        "rsa-2048": "signing-key",
        "rsa-3072": "signing-key",
        "rsa-4096": "signing-key",
        "ecdsa-p256": "signing-key",
        "ecdsa-p384": "signing-key",
        "ecdsa-p521": "signing-key",
        "ed25519": "signing-key",
    }
)
# Transit's smallest HMAC key (bytes), as imports.py pads to.
_HMAC_MIN_BYTES = 32
_ED25519_SEED_BYTES = 32


def sealed_spec(info: keyspecs.KeySpecInfo) -> bool:
    """Whether a KMIP object of this spec is KV-held (transit has no key type for it)."""
    return (
        info.kmip_only and info.family in _SEALED_FAMILIES and info.name not in KMIP_TRANSIT_TYPES
    )


def sealed_specs() -> frozenset[str]:
    """Every KV-held spec of keyspecs.KEY_SPECS (available ones)."""
    return frozenset(n for n, i in keyspecs.KEY_SPECS.items() if i.available and sealed_spec(i))


def material_aad(prefix: str, name: str, version: int) -> str:
    """The associated data of a KV-held material, base64: deployment, bare key id, version."""
    text = json.dumps(["s3kms-kmip-material", prefix, name, version], separators=(",", ":"))
    return base64.b64encode(text.encode()).decode("ascii")


def entry_versions(data: Mapping[str, Any]) -> dict[int, str]:
    """The sealed materials of a KV material entry, by version; ValueError when malformed."""
    versions = data.get("versions")
    if data.get("format") != ENTRY_FORMAT or not isinstance(versions, dict):
        raise ValueError("not a material entry")
    out: dict[int, str] = {}
    for version, sealed in versions.items():
        if not isinstance(sealed, str):
            raise ValueError("a sealed material must be a string")
        out[int(version)] = sealed
    return out


def entry(versions: Mapping[int, str]) -> dict[str, Any]:
    """The KV material entry of these sealed materials."""
    return {"format": ENTRY_FORMAT, "versions": {str(v): s for v, s in sorted(versions.items())}}


def from_export(info: keyspecs.KeySpecInfo, transit_type: str, text: Any) -> bytes:
    """A version's material from transit's export answer, in the keystore's form: the raw key
    (AES, HMAC) or PKCS#8 DER (RSA, ECDSA from their PEM; Ed25519 from its seed). ValueError
    when the answer is not such a key of the spec."""
    if not isinstance(text, str) or not text:
        raise ValueError("no key in transit's export")
    if transit_type.startswith(("rsa-", "ecdsa-")):
        # Transit made it or took it imported (the service validated it then): its RSA
        # consistency check (a quarter of a second for RSA-4096) is not repeated on every Get.
        key: Any = serialization.load_pem_private_key(
            text.encode("ascii"), password=None, unsafe_skip_rsa_key_validation=True
        )
    else:
        try:
            raw = base64.b64decode(text.encode("ascii"), validate=True)
        except binascii.Error:
            raise ValueError("transit's export is not base64") from None
        if transit_type != "ed25519":
            return raw
        if len(raw) != 2 * _ED25519_SEED_BYTES:
            raise ValueError("an Ed25519 export is the seed and the public key, 64 bytes")
        key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:_ED25519_SEED_BYTES])
    if not _fits(info, key):
        raise ValueError(f"transit's export is not a {info.name} key")
    der: bytes = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return der


def _fits(info: keyspecs.KeySpecInfo, key: Any) -> bool:
    if info.family == "rsa":
        return isinstance(key, rsa.RSAPrivateKey) and key.key_size == info.size
    if info.family == "ecc":
        return isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == info.curve
    return info.family == "ed25519" and isinstance(key, ed25519.Ed25519PrivateKey)


def unpadded_hmac(
    info: keyspecs.KeySpecInfo, raw: bytes, key_ids: tuple[str, ...], material_id: str | None
) -> bytes:
    """An HMAC key as it was given to transit: an HMAC_224 material of 28 to 31 bytes was padded
    with zeros to transit's 32 (imports.transit_material), which changes no MAC but is not the
    material. `material_id`: the recorded id of an imported material (wrapping.material_id of
    the key id and the material: the one length whose id matches is the material's); None: a
    key s3kms made, whose material is the spec's size (28 bytes for HMAC_224)."""
    size = info.size // 8
    if info.family != "hmac" or size >= _HMAC_MIN_BYTES or len(raw) != _HMAC_MIN_BYTES:
        return raw
    if material_id is None:
        return raw[:size] if not any(raw[size:]) else raw
    for length in range(size, _HMAC_MIN_BYTES):
        if any(raw[length:]):
            continue
        for key_id in key_ids:
            if hmac.compare_digest(wrapping.material_id(key_id, raw[:length]), material_id):
                return raw[:length]
    return raw
