"""The KMIP operations that compute or make material: CreateKeyPair, ReKey, DeriveKey, Encrypt,
Decrypt, Sign, SignatureVerify, MAC, and Get with key wrapping (NIST AES Key Wrap).

They run on KMIP objects only (a key made through the AWS API keeps its material in the
keystore; the AWS API is its way). Each checks, on the object's current metadata and before any
material is read: the policy (`kmip:<Operation>`), the owner, the object's state (protecting
operations need Active; Decrypt and SignatureVerify also serve Deactivated and Compromised
objects, as KMIP allows) and its Cryptographic Usage Mask.
"""

from __future__ import annotations

import hmac
from dataclasses import replace
from typing import Any

from kmip.core import enums
from kmip.core.attributes import UniqueIdentifier
from kmip.core.messages import payloads
from kmip.core.objects import KeyMaterial, KeyWrappingData, MACData

from s3kms.auth.identity import KeyGate
from s3kms.errors import KeyNotFound
from s3kms.model import KeyMetadata
from s3kms.objectcrypto import CipherParams, ObjectCrypto
from s3kms.protocols.kmip import attributes as attrs
from s3kms.protocols.kmip import objects as kobjects
from s3kms.protocols.kmip.errors import KmipFailure
from s3kms.protocols.kmip.operations import Call, Operations, action, template_attributes
from s3kms.protocols.kmip.payloads import MACVerifyResponsePayload
from s3kms.protocols.kmip.record import ACTIVE, COMPROMISED, DEACTIVATED, KmipRecord, record_of

R = enums.ResultReason
Op = enums.Operation
OT = enums.ObjectType
M = enums.CryptographicUsageMask
LINK = enums.LinkType

_DERIVATIONS = {
    enums.DerivationMethod.PBKDF2: "PBKDF2",
    enums.DerivationMethod.NIST800_108_C: "NIST800_108_C",
    enums.DerivationMethod.HMAC: "HMAC",
    enums.DerivationMethod.ENCRYPT: "ENCRYPT",
}
_PROTECT = frozenset({ACTIVE})
_PROCESS = frozenset({ACTIVE, DEACTIVATED, COMPROMISED})
_MODES = {
    enums.BlockCipherMode.CBC: "CBC",
    enums.BlockCipherMode.ECB: "ECB",
    enums.BlockCipherMode.CTR: "CTR",
    enums.BlockCipherMode.GCM: "GCM",
}
_PADDINGS = {
    enums.PaddingMethod.NONE: "NONE",
    enums.PaddingMethod.PKCS5: "PKCS5",
    enums.PaddingMethod.OAEP: "OAEP",
    enums.PaddingMethod.PKCS1v15: "PKCS1v15",
    enums.PaddingMethod.PSS: "PSS",
}
_HASHES = {
    enums.HashingAlgorithm.SHA_1: "SHA1",
    enums.HashingAlgorithm.SHA_224: "SHA224",
    enums.HashingAlgorithm.SHA_256: "SHA256",
    enums.HashingAlgorithm.SHA_384: "SHA384",
    enums.HashingAlgorithm.SHA_512: "SHA512",
}
_MAC_HASHES = {
    enums.CryptographicAlgorithm.HMAC_SHA1: "SHA1",
    enums.CryptographicAlgorithm.HMAC_SHA224: "SHA224",
    enums.CryptographicAlgorithm.HMAC_SHA256: "SHA256",
    enums.CryptographicAlgorithm.HMAC_SHA384: "SHA384",
    enums.CryptographicAlgorithm.HMAC_SHA512: "SHA512",
}
DSA = enums.DigitalSignatureAlgorithm
_SIGNATURES = {
    DSA.SHA1_WITH_RSA_ENCRYPTION: ("PKCS1v15", "SHA1"),
    DSA.SHA224_WITH_RSA_ENCRYPTION: ("PKCS1v15", "SHA224"),
    DSA.SHA256_WITH_RSA_ENCRYPTION: ("PKCS1v15", "SHA256"),
    DSA.SHA384_WITH_RSA_ENCRYPTION: ("PKCS1v15", "SHA384"),
    DSA.SHA512_WITH_RSA_ENCRYPTION: ("PKCS1v15", "SHA512"),
    DSA.ECDSA_WITH_SHA1: (None, "SHA1"),
    DSA.ECDSA_WITH_SHA224: (None, "SHA224"),
    DSA.ECDSA_WITH_SHA256: (None, "SHA256"),
    DSA.ECDSA_WITH_SHA384: (None, "SHA384"),
    DSA.ECDSA_WITH_SHA512: (None, "SHA512"),
}


def cipher_params(parameters: Any) -> CipherParams:
    """KMIP's Cryptographic Parameters in crypto/raw.py's words."""
    if parameters is None:
        return CipherParams()
    mode = parameters.block_cipher_mode
    pad = parameters.padding_method
    hashing = parameters.hashing_algorithm
    for value, table, what in (
        (mode, _MODES, "Block Cipher Mode"),
        (pad, _PADDINGS, "Padding Method"),
        (hashing, _HASHES, "Hashing Algorithm"),
    ):
        if value is not None and value not in table:
            raise KmipFailure(R.INVALID_FIELD, f"{what} {value.name} is not supported")
    padding = _PADDINGS.get(pad) if pad is not None else None
    hash_name = _HASHES.get(hashing) if hashing is not None else None
    signature = parameters.digital_signature_algorithm
    if signature is not None:
        if signature is DSA.RSASSA_PSS:
            padding = "PSS"
        elif signature in _SIGNATURES:
            padding, hash_name = _SIGNATURES[signature][0] or padding, _SIGNATURES[signature][1]
        else:
            raise KmipFailure(R.INVALID_FIELD, f"{signature.name} is not supported")
    if parameters.cryptographic_algorithm in _MAC_HASHES:
        hash_name = _MAC_HASHES[parameters.cryptographic_algorithm]
    tag = parameters.tag_length if parameters.tag_length is not None else 16
    return CipherParams(
        mode=_MODES.get(mode) if mode is not None else None,
        padding=padding,
        hash=hash_name,
        tag_length=tag,
    )


class CryptoOperations(Operations):
    def _usable(
        self, call: Call, operation: enums.Operation, uid: str, mask: int, states: frozenset[int]
    ) -> KeyGate:
        """The check run on the object's metadata before its material is read."""
        gate = self._owner_check(call, uid, call.principal.gate(action(operation), uid))

        def check(meta: KeyMetadata) -> None:
            gate(meta)
            record = record_of(meta)
            if record is None:
                raise KmipFailure(
                    R.PERMISSION_DENIED,
                    f"Object {uid} was made through the AWS or admin API: use that API for it",
                )
            held = record.held_elsewhere(meta)
            if held is not None:
                raise KmipFailure(R.WRONG_KEY_LIFECYCLE_STATE, f"Object {uid} is {held}")
            if record.state not in states:
                raise KmipFailure(
                    R.WRONG_KEY_LIFECYCLE_STATE,
                    f"Object {uid} is {enums.State(record.state).name.replace('_', '-').lower()}",
                )
            if not record.usage_mask & mask:
                raise KmipFailure(
                    R.PERMISSION_DENIED,
                    f"The Cryptographic Usage Mask of object {uid} does not allow "
                    f"{M(mask).name.replace('_', ' ').title()}",
                )

        return check

    def _crypto(self) -> ObjectCrypto:
        return ObjectCrypto(self.service)

    async def _run(self, coroutine: Any) -> Any:
        try:
            return await coroutine
        except KeyNotFound as exc:
            raise KmipFailure(R.ITEM_NOT_FOUND, exc.message) from None

    # -- Encrypt, Decrypt, Sign, SignatureVerify, MAC ---------------------------------------

    async def encrypt(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        uid = self._uid(call, payload.unique_identifier)
        check = self._usable(call, Op.ENCRYPT, uid, M.ENCRYPT.value, _PROTECT)
        params = cipher_params(payload.cryptographic_parameters)
        if payload.data is None:
            raise KmipFailure(R.INVALID_FIELD, "Encrypt needs Data")
        if params.mode == "GCM" and call.version < (1, 4):
            # Its tag would be lost: the Authenticated Encryption Tag exists from KMIP 1.4 on.
            raise KmipFailure(R.INVALID_FIELD, "GCM needs KMIP 1.4 or later (its tag)")
        data, made_iv, tag = await self._run(
            self._crypto().encrypt(
                uid, params, payload.data, payload.iv_counter_nonce,
                payload.auth_additional_data, access=check,
            )
        )  # fmt: skip
        answer = payloads.EncryptResponsePayload(
            unique_identifier=uid, data=data, iv_counter_nonce=made_iv, auth_tag=tag
        )
        return answer, uid

    async def decrypt(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        uid = self._uid(call, payload.unique_identifier)
        check = self._usable(call, Op.DECRYPT, uid, M.DECRYPT.value, _PROCESS)
        params = cipher_params(payload.cryptographic_parameters)
        if payload.data is None:
            raise KmipFailure(R.INVALID_FIELD, "Decrypt needs Data")
        if params.mode == "GCM" and call.version < (1, 4):
            raise KmipFailure(R.INVALID_FIELD, "GCM needs KMIP 1.4 or later (its tag)")
        data = await self._run(
            self._crypto().decrypt(
                uid, params, payload.data, payload.iv_counter_nonce,
                payload.auth_additional_data, payload.auth_tag, access=check,
            )
        )  # fmt: skip
        return payloads.DecryptResponsePayload(unique_identifier=uid, data=data), uid

    async def sign(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        uid = self._uid(call, payload.unique_identifier)
        check = self._usable(call, Op.SIGN, uid, M.SIGN.value, _PROTECT)
        if payload.data is None:
            raise KmipFailure(R.INVALID_FIELD, "Sign needs Data")
        params = cipher_params(payload.cryptographic_parameters)
        signature = await self._run(self._crypto().sign(uid, params, payload.data, access=check))
        return payloads.SignResponsePayload(unique_identifier=uid, signature_data=signature), uid

    async def signature_verify(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        uid = self._uid(call, payload.unique_identifier)
        check = self._usable(call, Op.SIGNATURE_VERIFY, uid, M.VERIFY.value, _PROCESS)
        if payload.data is None or payload.signature_data is None:
            raise KmipFailure(R.INVALID_FIELD, "SignatureVerify needs Data and Signature Data")
        if payload.correlation_value is not None or payload.init_indicator:
            raise KmipFailure(R.FEATURE_NOT_SUPPORTED, "Streaming verification is not supported")
        params = cipher_params(payload.cryptographic_parameters)
        valid = await self._run(
            self._crypto().verify(uid, params, payload.data, payload.signature_data, access=check)
        )
        indicator = enums.ValidityIndicator.VALID if valid else enums.ValidityIndicator.INVALID
        answer = payloads.SignatureVerifyResponsePayload(
            unique_identifier=uid, validity_indicator=indicator
        )
        return answer, uid

    async def mac(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        uid = self._uid(call, payload.unique_identifier)
        check = self._usable(call, Op.MAC, uid, M.MAC_GENERATE.value, _PROTECT)
        if payload.data is None:
            raise KmipFailure(R.INVALID_FIELD, "MAC needs Data")
        data = payload.data.value  # (this payload holds objects, not values)
        hash_name = cipher_params(payload.cryptographic_parameters).hash  # None: the key's own
        digest = await self._run(self._crypto().mac(uid, hash_name, data, access=check))
        answer = payloads.MACResponsePayload(
            unique_identifier=UniqueIdentifier(uid), mac_data=MACData(digest)
        )
        return answer, uid

    async def mac_verify(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        uid = self._uid(call, payload.unique_identifier)
        check = self._usable(call, Op.MAC_VERIFY, uid, M.MAC_VERIFY.value, _PROCESS)
        if payload.data is None or payload.mac_data is None:
            raise KmipFailure(R.INVALID_FIELD, "MAC Verify needs Data and MAC Data")
        hash_name = cipher_params(payload.cryptographic_parameters).hash  # None: the key's own
        digest = await self._run(self._crypto().mac(uid, hash_name, payload.data, access=check))
        valid = hmac.compare_digest(digest, payload.mac_data)
        return MACVerifyResponsePayload(unique_identifier=uid, valid=valid), uid

    # -- CreateKeyPair, ReKey, DeriveKey ----------------------------------------------------

    async def create_key_pair(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        common = attrs.parse_template(template_attributes(payload.common_template_attribute))
        private = attrs.parse_template(template_attributes(payload.private_key_template_attribute))
        public = attrs.parse_template(template_attributes(payload.public_key_template_attribute))
        merged = {**common, **private, **public}
        algorithm = merged.get("Cryptographic Algorithm")
        length = merged.get("Cryptographic Length")
        spec = kobjects.KEY_PAIR_SPECS.get((algorithm, length)) if isinstance(length, int) else None
        if spec is None or algorithm is None:
            name = getattr(algorithm, "name", algorithm)
            raise KmipFailure(
                R.INVALID_FIELD,
                f"Key pairs are RSA 2048/3072/4096 or EC 256/384/521, not {name} {length}",
            )
        fields = {"algorithm": algorithm.value, "length": length}
        private_uid, public_uid = self.service.new_key_id(), self.service.new_key_id()
        settable = {k: v for k, v in common.items() if k not in _FIXED}
        private_record = replace(
            self._new_record(call, OT.PRIVATE_KEY.value, {**settable, **_settable(private)}),
            **fields,
            key_format=enums.KeyFormatType.PKCS_8.value,
            links=((LINK.PUBLIC_KEY_LINK.value, public_uid),),
        )
        public_record = replace(
            self._new_record(call, OT.PUBLIC_KEY.value, {**settable, **_settable(public)}),
            **fields,
            key_format=enums.KeyFormatType.X_509.value,
            links=((LINK.PRIVATE_KEY_LINK.value, private_uid),),
        )
        call.principal.authorize(action(Op.CREATE_KEY_PAIR), private_uid)
        await self.service.create_key(
            private_uid,
            key_spec=spec,
            key_usage=kobjects.usage_of_private(spec),
            kmip=private_record.dump(),
            lookup=private_record.terms(),
            state=private_record.key_state(),
        )
        spki = await self._crypto().public_key(private_uid)
        await self.service.create_with_material(
            public_uid,
            spki,
            key_spec="PUBLIC_KEY",
            key_usage="ENCRYPT_DECRYPT",
            kmip=public_record.dump(),
            lookup=public_record.terms(),
            state=public_record.key_state(),
        )
        answer = payloads.CreateKeyPairResponsePayload(
            private_key_unique_identifier=private_uid, public_key_unique_identifier=public_uid
        )
        return answer, private_uid

    async def rekey(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        """A new symmetric key replacing the one named: the same type, length, usage mask and
        groups, fresh material; the Names move to it; the two link to each other."""
        uid, meta, record, kmip = await self._object(call, Op.REKEY, payload.unique_identifier)
        if not kmip or record.object_type != OT.SYMMETRIC_KEY.value:
            raise KmipFailure(R.PERMISSION_DENIED, "ReKey replaces KMIP symmetric keys only")
        offset = int(payload.offset or 0)
        found = attrs.parse_template(template_attributes(payload.template_attribute))
        now = self._now()
        new_uid = self.service.new_key_id()
        activation = now + offset if record.state == ACTIVE else None
        fresh = replace(
            attrs.apply_settable(record, found),
            owner=call.principal.arn,
            initial_date=now,
            last_change_date=now,
            activation_date=activation,
            deactivation_date=None,
            compromise_date=None,
            compromise_occurrence_date=None,
            revocation_reason=None,
            revocation_message=None,
            state=ACTIVE
            if activation is not None and activation <= now
            else enums.State.PRE_ACTIVE.value,
            links=((LINK.REPLACED_OBJECT_LINK.value, uid),),
        )
        call.principal.authorize(action(Op.REKEY), new_uid)
        await self.service.create_key(
            new_uid,
            key_spec=meta.key_spec,
            key_usage=meta.key_usage,
            kmip=fresh.dump(),
            lookup=fresh.terms(),
            state=fresh.key_state(),
        )

        def retire(old: KmipRecord) -> KmipRecord:
            links = tuple(x for x in old.links if x[0] != LINK.REPLACEMENT_OBJECT_LINK.value)
            return replace(
                old, names=(), links=(*links, (LINK.REPLACEMENT_OBJECT_LINK.value, new_uid))
            )

        await self._change(call, Op.REKEY, uid, retire)
        return payloads.RekeyResponsePayload(unique_identifier=new_uid), new_uid

    async def derive_key(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        kind = payload.object_type
        if kind not in (OT.SYMMETRIC_KEY, OT.SECRET_DATA):
            raise KmipFailure(R.INVALID_FIELD, "DeriveKey makes symmetric keys or secret data")
        identifiers = list(payload.unique_identifiers or ())
        if len(identifiers) != 1:
            raise KmipFailure(R.INVALID_FIELD, "DeriveKey takes exactly one base object")
        base = self._uid(call, identifiers[0])
        check = self._usable(call, Op.DERIVE_KEY, base, M.DERIVE_KEY.value, _PROTECT)
        found = attrs.parse_template(template_attributes(payload.template_attribute))
        bits = found.pop("Cryptographic Length", None)
        algorithm = found.pop("Cryptographic Algorithm", None)
        if not isinstance(bits, int) or bits <= 0 or bits % 8 or bits > 8192:
            raise KmipFailure(R.INVALID_FIELD, "Cryptographic Length (bits, a multiple of 8)")
        length = bits // 8
        derived = await self._run(self._derive(base, payload, length, check))
        if kind is OT.SYMMETRIC_KEY:
            if algorithm is None:
                raise KmipFailure(R.INVALID_FIELD, "Cryptographic Algorithm is missing")
            spec, usage = kobjects.symmetric_spec(algorithm, bits)
            # As Create: a usable key unless the template says otherwise.
            found.setdefault(
                "Cryptographic Usage Mask",
                kobjects.ENCRYPT_DECRYPT if usage == "ENCRYPT_DECRYPT" else kobjects.MAC,
            )
            fields: dict[str, Any] = {
                "object_type": OT.SYMMETRIC_KEY.value, "algorithm": algorithm.value, "length": bits,
            }  # fmt: skip
        else:
            spec, usage = "SECRET_DATA", "ENCRYPT_DECRYPT"
            fields = {
                "object_type": OT.SECRET_DATA.value,
                "data_type": enums.SecretDataType.SEED.value,
            }
        record = replace(self._new_record(call, fields["object_type"], found), **fields)
        uid = self.service.new_key_id()
        call.principal.authorize(action(Op.DERIVE_KEY), uid)
        await self.service.create_with_material(
            uid,
            derived,
            key_spec=spec,
            key_usage=usage,
            kmip=record.dump(),
            lookup=record.terms(),
            state=record.key_state(),
        )
        return payloads.DeriveKeyResponsePayload(unique_identifier=uid), uid

    async def _derive(self, base: str, payload: Any, length: int, check: KeyGate) -> bytes:
        method = payload.derivation_method
        parameters = payload.derivation_parameters
        if parameters is None:
            raise KmipFailure(R.INVALID_FIELD, "Derivation Parameters are missing")
        if method not in _DERIVATIONS:
            name = getattr(method, "name", method)
            raise KmipFailure(R.INVALID_FIELD, f"Derivation Method {name} is not supported")
        return await self._crypto().derive(
            base,
            _DERIVATIONS[method],
            length,
            params=cipher_params(parameters.cryptographic_parameters),
            data=parameters.derivation_data or b"",
            salt=parameters.salt,
            iterations=parameters.iteration_count,
            iv=parameters.initialization_vector,
            access=check,
        )

    # -- Get, with key wrapping -------------------------------------------------------------

    async def get(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        spec = payload.key_wrapping_specification
        if spec is None:
            return await super().get(call, payload)
        if spec.wrapping_method is not enums.WrappingMethod.ENCRYPT:
            raise KmipFailure(R.FEATURE_NOT_SUPPORTED, "Key wrapping by encryption only")
        info = spec.encryption_key_information
        if info is None:
            raise KmipFailure(R.INVALID_FIELD, "Encryption Key Information is missing")
        mode = (
            info.cryptographic_parameters.block_cipher_mode
            if info.cryptographic_parameters
            else None
        )
        if mode not in (None, enums.BlockCipherMode.NIST_KEY_WRAP):
            raise KmipFailure(R.FEATURE_NOT_SUPPORTED, "Key wrapping with NIST Key Wrap only")
        if spec.attribute_names:
            raise KmipFailure(R.FEATURE_NOT_SUPPORTED, "Wrapping attributes is not supported")
        if spec.encoding_option not in (None, enums.EncodingOption.NO_ENCODING):
            raise KmipFailure(R.ENCODING_OPTION_ERROR, "Only No Encoding is supported")
        plain_payload = replace_payload(payload)
        answer, uid = await super().get(call, plain_payload)
        wrapper = self._uid(call, info.unique_identifier)
        check = self._usable(call, Op.GET, wrapper, M.WRAP_KEY.value, _PROTECT)
        block = answer.secret.key_block
        if block.key_wrapping_data is not None:
            raise KmipFailure(R.FEATURE_NOT_SUPPORTED, f"Object {uid} is wrapped already")
        material = block.key_value.key_material.value
        wrapped = await self._run(self._crypto().wrap(wrapper, material, access=check))
        block.key_value.key_material = KeyMaterial(wrapped)  # (a new one: it has a length)
        block.key_wrapping_data = KeyWrappingData(
            wrapping_method=enums.WrappingMethod.ENCRYPT,
            encryption_key_information=info,
            encoding_option=enums.EncodingOption.NO_ENCODING,
        )
        return answer, uid


_FIXED = frozenset({"Cryptographic Algorithm", "Cryptographic Length"})


def _settable(found: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in found.items() if k not in _FIXED}


def replace_payload(payload: Any) -> Any:
    """The Get request without its wrapping specification (the object as Get returns it)."""
    return payloads.GetRequestPayload(
        unique_identifier=payload.unique_identifier,
        key_format_type=payload.key_format_type,
        key_compression_type=payload.key_compression_type,
    )
