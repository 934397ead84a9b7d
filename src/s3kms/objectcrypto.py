"""Cryptography with the material of KMIP objects, in the modes the caller names: the use cases
of KMIP's Encrypt, Decrypt, Sign, SignatureVerify, MAC, MACVerify, DeriveKey and key wrapping.

Only a KMIP object's material leaves the keystore (`KeyService.export_material`); this module
computes with it (crypto/raw.py) and forgets it. Which object serves which operation is the key
spec's family: AES keys encrypt, RSA keys encrypt and sign, EC and Ed25519 keys sign, public key
objects encrypt and verify, HMAC keys MAC; secret data and symmetric keys are derivation bases.
A wrong pairing is InvalidKeyUsage; bad parameters or data are InvalidRequest.
"""

from __future__ import annotations

from s3kms.crypto import keyspecs, raw
from s3kms.crypto.raw import CipherParams
from s3kms.errors import InvalidKeyUsage, InvalidRequest
from s3kms.keystore.base import StateCheck
from s3kms.model import KeyMetadata
from s3kms.service import KeyService

# CipherParams: the words of the modes and parameters, for the protocols that name them.
__all__ = ["CipherParams", "ObjectCrypto"]

_SYMMETRIC = frozenset({"symmetric", "aes"})
_PRIVATE = frozenset({"rsa", "ecc", "ed25519"})


def _family(meta: KeyMetadata) -> str:
    return keyspecs.spec(meta.key_spec).family


def _refuse(meta: KeyMetadata, operation: str) -> InvalidKeyUsage:
    return InvalidKeyUsage(
        f"object {meta.key_id} ({meta.key_spec}) cannot {operation}", key_id=meta.key_id
    )


class ObjectCrypto:
    def __init__(self, service: KeyService) -> None:
        self.service = service

    async def _material(self, ref: str, access: StateCheck | None) -> tuple[KeyMetadata, bytes]:
        return await self.service.export_material(ref, access=access)

    async def encrypt(
        self,
        ref: str,
        params: CipherParams,
        data: bytes,
        iv: bytes | None,
        aad: bytes | None = None,
        *,
        access: StateCheck | None = None,
    ) -> tuple[bytes, bytes | None, bytes | None]:
        """(ciphertext, the IV made when none was given, the GCM tag)."""
        meta, material = await self._material(ref, access)
        family = _family(meta)
        try:
            if family in _SYMMETRIC:
                return raw.symmetric_encrypt(material, params, data, iv, aad)
            if family == "rsa":
                return raw.rsa_encrypt(raw.public_of(material), params, data), None, None
            if family == "public":
                return raw.rsa_encrypt(material, params, data), None, None
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        raise _refuse(meta, "encrypt")

    async def decrypt(
        self,
        ref: str,
        params: CipherParams,
        data: bytes,
        iv: bytes | None,
        aad: bytes | None = None,
        tag: bytes | None = None,
        *,
        access: StateCheck | None = None,
    ) -> bytes:
        meta, material = await self._material(ref, access)
        family = _family(meta)
        try:
            if family in _SYMMETRIC:
                return raw.symmetric_decrypt(material, params, data, iv, aad, tag)
            if family == "rsa":
                return raw.rsa_decrypt(material, params, data)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        raise _refuse(meta, "decrypt")

    async def sign(
        self, ref: str, params: CipherParams, data: bytes, *, access: StateCheck | None = None
    ) -> bytes:
        meta, material = await self._material(ref, access)
        if _family(meta) not in _PRIVATE:
            raise _refuse(meta, "sign")
        try:
            return raw.sign(material, params, data)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None

    async def verify(
        self,
        ref: str,
        params: CipherParams,
        data: bytes,
        signature: bytes,
        *,
        access: StateCheck | None = None,
    ) -> bool:
        meta, material = await self._material(ref, access)
        family = _family(meta)
        if family == "public":
            public = material
        elif family in _PRIVATE:
            public = raw.public_of(material)
        else:
            raise _refuse(meta, "verify signatures")
        try:
            return raw.verify(public, params, data, signature)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None

    async def mac(
        self, ref: str, hash_name: str | None, data: bytes, *, access: StateCheck | None = None
    ) -> bytes:
        """The HMAC of `data`; `hash_name` None: the HMAC key's own (HMAC_256: SHA256)."""
        meta, material = await self._material(ref, access)
        info = keyspecs.spec(meta.key_spec)
        if info.family not in ("hmac", "symmetric", "aes"):
            raise _refuse(meta, "compute a MAC")
        if hash_name is None:
            if info.family != "hmac":
                raise InvalidRequest("The MAC algorithm is missing")
            hash_name = f"SHA{info.size}"
        try:
            return raw.mac(material, hash_name, data)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None

    async def public_key(self, ref: str) -> bytes:
        """The SubjectPublicKeyInfo of a private key object, in any state (CreateKeyPair makes
        its Public Key object of it)."""
        meta, material = await self._material(ref, None)
        if _family(meta) not in _PRIVATE:
            raise _refuse(meta, "have a public key")
        return raw.public_of(material)

    async def derive(
        self,
        ref: str,
        method: str,
        length: int,
        *,
        params: CipherParams,
        data: bytes = b"",
        salt: bytes | None = None,
        iterations: int | None = None,
        iv: bytes | None = None,
        access: StateCheck | None = None,
    ) -> bytes:
        """`length` bytes derived from the base object `ref` by `method`: PBKDF2, NIST800_108_C
        (counter mode, HMAC), HMAC (RFC 5869 HKDF, as PyKMIP does) or ENCRYPT (the data
        encrypted under the base). The base is a symmetric key, an HMAC key or secret data."""
        if method == "ENCRYPT":
            ciphertext, _, _ = await self.encrypt(ref, params, data, iv, access=access)
            return bytes(ciphertext[:length])
        meta, material = await self._material(ref, access)
        if _family(meta) not in ("symmetric", "aes", "hmac") and meta.key_spec != "SECRET_DATA":
            raise _refuse(meta, "be a derivation base")
        try:
            if method == "PBKDF2":
                if salt is None or iterations is None:
                    raise InvalidRequest("PBKDF2 needs a Salt and an Iteration Count")
                return raw.pbkdf2(material, params.hash, salt, iterations, length)
            if method == "NIST800_108_C":
                return raw.nist_800_108_counter(material, params.hash, data, length)
            if method == "HMAC":
                return raw.hkdf(material, params.hash, salt, data, length)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        raise InvalidRequest(f"Derivation Method {method} is not supported")

    async def wrap(self, ref: str, material: bytes, *, access: StateCheck | None = None) -> bytes:
        """NIST AES Key Wrap of `material` under the AES key `ref` (KMIP Get's wrapping)."""
        meta, key = await self._material(ref, access)
        if _family(meta) not in _SYMMETRIC:
            raise _refuse(meta, "wrap keys")
        return raw.key_wrap(key, material)

    async def unwrap(self, ref: str, wrapped: bytes, *, access: StateCheck | None = None) -> bytes:
        meta, key = await self._material(ref, access)
        if _family(meta) not in _SYMMETRIC:
            raise _refuse(meta, "unwrap keys")
        try:
            return raw.key_unwrap(key, wrapped)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
