"""Imported key material (BYOK) on transit, and the sealing key: the pure part, no I/O.

Transit takes key material only wrapped (OpenBao's and Vault's "bring your own key", `POST
<mount>/keys/<name>/import` for a key's first version, `.../import_version` for the next one):
a fresh AES-256 key encrypted with RSA-OAEP-SHA-256 under the mount's wrapping key (RSA-4096,
`GET <mount>/wrapping_key`), followed by the material wrapped with that AES key by AES key wrap
with padding (RFC 5649). The material is what the service hands the keystore: 32 raw bytes for
a symmetric key, the raw key of an HMAC key, PKCS#8 DER for an asymmetric one; an HMAC key
shorter than transit's 32-byte minimum (an HMAC_224 key of 28 to 31 bytes) is padded with zero
bytes first, which changes no MAC (HMAC pads every key shorter than the hash's block, 64 bytes
for SHA-224, with zeros itself).

Whether transit's version N already holds a given material (an import repeated after its
metadata write failed) is asked without the material leaving s3kms's memory: a symmetric key
decrypts a probe s3kms encrypted with the material in transit's own format (`vault:vN:` +
base64 of nonce || ciphertext || tag); an HMAC key's MAC of a probe is compared with the
material's; an asymmetric key's public key with the material's.

The sealing key (`SEALING_KEY`) seals what the service hands out and gets back (an import
token): an `aes256-gcm96` transit key whose name is longer than any KMS key id can be (transit
names allow the very characters KMS key ids do), so that no key can ever be created under it.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from s3kms.crypto.keyspecs import KeySpecInfo

# The transit key that seals the service's secrets. 134 characters: every KMS key id is at most
# 128 (model.KEY_NAME_RE, UUIDs, `mrk-` ids), and transit names take only [A-Za-z0-9_.-].
SEALING_KEY = (
    "s3kms-internal-sealing-key_not-a-kms-key_its-name-is-longer-than-the-128-characters-of-"
    "any-kms-key-id-so-it-can-never-collide-with-one"
)
SEALING_TYPE = "aes256-gcm96"
# The size of transit's wrapping key (OpenBao: the first 512 bytes of an import's ciphertext
# are the RSA-OAEP part).
WRAPPING_KEY_BITS = 4096
# Transit's smallest HMAC key (OpenBao keysutil.HmacMinKeySize).
_HMAC_MIN_BYTES = 32
_AES_NONCE_BYTES = 12
_PROBE_BYTES = 32
_SEALED_RE = re.compile(r"vault:v[1-9][0-9]{0,9}:[A-Za-z0-9+/]+={0,2}")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def load_wrapping_key(pem: object) -> rsa.RSAPublicKey:
    """Transit's wrapping key from its PEM; ValueError unless it is an RSA-4096 public key."""
    if not isinstance(pem, str) or not pem:
        raise ValueError("no wrapping key in transit's answer")
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != WRAPPING_KEY_BITS:
        raise ValueError("transit's wrapping key is not an RSA-4096 key")
    return key


def transit_material(info: KeySpecInfo, material: bytes) -> bytes:
    """The material as transit takes it: an HMAC key below 32 bytes zero-padded (same MACs)."""
    if info.family == "hmac" and len(material) < _HMAC_MIN_BYTES:
        return material + bytes(_HMAC_MIN_BYTES - len(material))
    return material


def wrap(wrapping_key: rsa.RSAPublicKey, material: bytes) -> str:
    """The `ciphertext` of transit's import: RSA-OAEP-SHA-256(AES key) || KWP(material), base64."""
    ephemeral = os.urandom(32)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    head = wrapping_key.encrypt(ephemeral, oaep)
    return _b64(head + aes_key_wrap_with_padding(ephemeral, material))


def aes_probe(material: bytes, version: int) -> tuple[bytes, str]:
    """A random probe and its encryption under a symmetric `material` as transit writes it for
    `version`: transit decrypts it to the probe only if its version holds that material."""
    probe = os.urandom(_PROBE_BYTES)
    nonce = os.urandom(_AES_NONCE_BYTES)
    sealed = nonce + AESGCM(material).encrypt(nonce, probe, None)
    return probe, f"vault:v{version}:{_b64(sealed)}"


def hmac_probe(info: KeySpecInfo, material: bytes) -> tuple[bytes, bytes]:
    """A random probe and its HMAC under `material` (transit's form), with the key's hash."""
    probe = os.urandom(_PROBE_BYTES)
    return probe, hmac.new(material, probe, f"sha{info.size}").digest()


def public_key_der(material: bytes) -> bytes:
    """The SubjectPublicKeyInfo DER of a PKCS#8 DER private key; ValueError when it is none."""
    key = serialization.load_der_private_key(material, password=None)
    der: bytes = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def sealing_aad(prefix: str, purpose: str) -> str:
    """The associated data of a sealed secret, base64: its purpose and the deployment (the KV
    prefix), so it opens only for that purpose, on the nodes of that deployment."""
    return _b64(json.dumps(["s3kms-sealed", prefix, purpose], separators=(",", ":")).encode())


def sealed_text(sealed: bytes) -> str | None:
    """`sealed` as transit's ciphertext text, or None when it cannot be one."""
    try:
        text = sealed.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if _SEALED_RE.fullmatch(text) else None
