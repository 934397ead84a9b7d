"""KMIP managed objects <-> s3kms keys: which key spec holds an object, the object a Get
returns, the material a Register brings, and the KMIP view of a key made through another API.

    KMIP object                         key spec (crypto/keyspecs.py)
    Symmetric Key, AES 128/192/256      AES_128, AES_192 (KMIP only), SYMMETRIC_DEFAULT
    Symmetric Key, HMAC-SHA224..512     HMAC_224..512 (the key length is the material's)
    Secret Data                         SECRET_DATA (KMIP only)
    Opaque Object                       OPAQUE_DATA (KMIP only)

An AES-256 or HMAC object is an ordinary key of the AWS API too (its Encrypt, GenerateMac).
Key formats (PKCS#8, PKCS#1, X.509, ...) are converted here with `cryptography`'s encoders:
they are KMIP's representation of a key, not cryptography done with it.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from kmip.core import attributes as core_attributes
from kmip.core import enums, misc, primitives, secrets, utils
from kmip.core import objects as cobjects
from kmip.pie import objects as pie
from kmip.pie.factory import ObjectFactory

from s3kms.model import KeyMetadata, KeyState
from s3kms.protocols.kmip.errors import KmipFailure
from s3kms.protocols.kmip.record import ACTIVE, DEACTIVATED, PRE_ACTIVE, KmipRecord

_FACTORY = ObjectFactory()
R = enums.ResultReason
Alg = enums.CryptographicAlgorithm
OT = enums.ObjectType

_AES_SPECS = {128: "AES_128", 192: "AES_192", 256: "SYMMETRIC_DEFAULT"}
_HMAC_SPECS = {
    Alg.HMAC_SHA224: "HMAC_224",
    Alg.HMAC_SHA256: "HMAC_256",
    Alg.HMAC_SHA384: "HMAC_384",
    Alg.HMAC_SHA512: "HMAC_512",
}
_HMAC_OF_SPEC = {spec: alg for alg, spec in _HMAC_SPECS.items()}
ENCRYPT_DECRYPT = (
    enums.CryptographicUsageMask.ENCRYPT.value | enums.CryptographicUsageMask.DECRYPT.value
)
MAC = (
    enums.CryptographicUsageMask.MAC_GENERATE.value | enums.CryptographicUsageMask.MAC_VERIFY.value
)


def symmetric_spec(algorithm: Any, length: int | None) -> tuple[str, str]:
    """(key spec, key usage) of a symmetric key Create makes; Invalid Field for what s3kms does
    not hold (other algorithms: DES, 3DES, IDEA, ... are not kept)."""
    if algorithm == Alg.AES:
        spec = _AES_SPECS.get(length or 0)
        if spec is None:
            raise KmipFailure(R.INVALID_FIELD, f"AES keys are 128, 192 or 256 bits, not {length}")
        return spec, "ENCRYPT_DECRYPT"
    if algorithm in _HMAC_SPECS:
        spec = _HMAC_SPECS[algorithm]
        bits = int(spec.split("_")[1])
        if length not in (None, bits):
            raise KmipFailure(
                R.INVALID_FIELD, f"{algorithm.name} keys made here are {bits} bits, not {length}"
            )
        return spec, "GENERATE_VERIFY_MAC"
    name = getattr(algorithm, "name", algorithm)
    raise KmipFailure(R.INVALID_FIELD, f"The cryptographic algorithm {name} is not supported")


def registered(managed: Any) -> tuple[str, str, bytes, dict[str, Any]]:
    """(key spec, key usage, material, record fields) of a Register's object."""
    if managed is None:
        raise KmipFailure(R.INVALID_FIELD, "Register needs a managed object")
    block: Any = getattr(managed, "key_block", None)
    if block is not None and block.key_wrapping_data is not None:
        return _registered_wrapped(managed, block)
    if isinstance(managed, secrets.PrivateKey):  # (pie's class knows only 3 key formats)
        key_format = block.key_format_type.value
        spec, der = private_key_spec(bytes(block.key_value.key_material.value), key_format)
        fields = {
            "object_type": OT.PRIVATE_KEY.value,
            "algorithm": block.cryptographic_algorithm.value.value,
            "length": block.cryptographic_length.value,
            "key_format": enums.KeyFormatType.PKCS_8.value,  # Get's default, whatever came in
        }
        return spec, usage_of_private(spec), der, fields
    try:
        obj = _FACTORY.convert(managed)
    except (TypeError, ValueError, AttributeError):
        raise KmipFailure(R.INVALID_FIELD, "The managed object is not one s3kms holds") from None
    if isinstance(obj, pie.SymmetricKey) and not obj.key_wrapping_data:
        aes = obj.cryptographic_algorithm == Alg.AES
        if aes and len(obj.value) * 8 != obj.cryptographic_length:
            raise KmipFailure(R.INVALID_FIELD, "Cryptographic Length does not match the key")
        spec, usage = symmetric_spec(
            obj.cryptographic_algorithm,
            None if obj.cryptographic_algorithm != Alg.AES else obj.cryptographic_length,
        )
        fields = {
            "object_type": OT.SYMMETRIC_KEY.value,
            "algorithm": obj.cryptographic_algorithm.value,
            "length": len(obj.value) * 8,
        }
        return spec, usage, bytes(obj.value), fields
    if getattr(obj, "key_wrapping_data", None):
        raise KmipFailure(R.FEATURE_NOT_SUPPORTED, "Wrapped key material is not supported")
    if isinstance(obj, pie.PublicKey):
        der = public_key_der(obj.value, obj.key_format_type)
        fields = {
            "object_type": OT.PUBLIC_KEY.value,
            "algorithm": obj.cryptographic_algorithm.value,
            "length": obj.cryptographic_length,
            "key_format": enums.KeyFormatType.X_509.value,  # Get's default, whatever came in
        }
        return "PUBLIC_KEY", "ENCRYPT_DECRYPT", der, fields
    if isinstance(obj, pie.Certificate):
        fields = {"object_type": OT.CERTIFICATE.value, "data_type": obj.certificate_type.value}
        return "CERTIFICATE", "ENCRYPT_DECRYPT", bytes(obj.value), fields
    if isinstance(obj, pie.SplitKey):
        fields = {
            "object_type": OT.SPLIT_KEY.value,
            "algorithm": obj.cryptographic_algorithm.value,
            "length": obj.cryptographic_length,
            "key_format": obj.key_format_type.value,
            "split": (
                obj.split_key_parts, obj.key_part_identifier, obj.split_key_threshold,
                obj.split_key_method.value, obj.prime_field_size or 0,
            ),
        }  # fmt: skip
        return "SPLIT_KEY", "ENCRYPT_DECRYPT", bytes(obj.value), fields
    if isinstance(obj, pie.SecretData):
        fields = {"object_type": OT.SECRET_DATA.value, "data_type": obj.data_type.value}
        return "SECRET_DATA", "ENCRYPT_DECRYPT", bytes(obj.value), fields
    if isinstance(obj, pie.OpaqueObject):
        fields = {"object_type": OT.OPAQUE_DATA.value, "data_type": obj.opaque_type.value}
        return "OPAQUE_DATA", "ENCRYPT_DECRYPT", bytes(obj.value), fields
    raise KmipFailure(
        R.FEATURE_NOT_SUPPORTED, f"Register of a {type(obj).__name__} is not supported yet"
    )


TRANSPARENT = enums.KeyFormatType.TRANSPARENT_SYMMETRIC_KEY


def _transparent_symmetric(material: bytes) -> Any:
    """A Transparent Symmetric Key's Key Material: a structure holding the Key (byte string)."""
    struct = cobjects.KeyMaterialStruct()
    key = primitives.ByteString(material, enums.Tags.KEY)
    stream = utils.BytearrayStream()
    key.write(stream)
    struct.data = utils.BytearrayStream(bytes(stream.buffer))
    return struct


# The core classes of the objects that may be registered wrapped (Split Key is not).
_WRAPPABLE = {
    secrets.SymmetricKey: OT.SYMMETRIC_KEY,
    secrets.PrivateKey: OT.PRIVATE_KEY,
    secrets.PublicKey: OT.PUBLIC_KEY,
    secrets.SecretData: OT.SECRET_DATA,
}


def _registered_wrapped(managed: Any, block: Any) -> tuple[str, str, bytes, dict[str, Any]]:
    """A key registered wrapped: kept as given, wrapped (s3kms does not unwrap it), and given
    back by Get with its Key Wrapping Data; it serves no cryptographic operation (its spec is
    OPAQUE_DATA: bytes)."""
    kind = _WRAPPABLE.get(type(managed))
    data = block.key_wrapping_data
    if kind is None:
        raise KmipFailure(R.FEATURE_NOT_SUPPORTED, "This object cannot be registered wrapped")
    if data.wrapping_method is not enums.WrappingMethod.ENCRYPT:
        raise KmipFailure(R.FEATURE_NOT_SUPPORTED, "Only keys wrapped by encryption")
    info = data.encryption_key_information
    if info is None or not info.unique_identifier:
        raise KmipFailure(R.INVALID_FIELD, "Encryption Key Information is missing")
    parameters = info.cryptographic_parameters
    mode = parameters.block_cipher_mode if parameters is not None else None
    material = block.key_value.key_material
    if not isinstance(getattr(material, "value", None), bytes):
        raise KmipFailure(R.INVALID_FIELD, "A wrapped Key Value is a byte string")
    algorithm = block.cryptographic_algorithm
    length = block.cryptographic_length
    encoding = data.encoding_option or enums.EncodingOption.NO_ENCODING
    fields: dict[str, Any] = {
        "object_type": kind.value,
        "algorithm": algorithm.value.value if algorithm is not None else None,
        "length": length.value if length is not None else None,
        "key_format": block.key_format_type.value.value,
        "wrapping": (
            data.wrapping_method.value, info.unique_identifier,
            mode.value if mode is not None else 0, encoding.value,
        ),
    }  # fmt: skip
    if kind is OT.SECRET_DATA:
        fields["data_type"] = managed.secret_data_type.value.value
    return "OPAQUE_DATA", "ENCRYPT_DECRYPT", bytes(material.value), fields


def _wrapped_object(record: KmipRecord, material: bytes) -> Any:
    """The object a key registered wrapped was, with its material and Key Wrapping Data."""
    method, uid, mode, encoding = record.wrapping
    parameters = (
        core_attributes.CryptographicParameters(block_cipher_mode=enums.BlockCipherMode(mode))
        if mode
        else None
    )
    block = cobjects.KeyBlock(
        key_format_type=misc.KeyFormatType(enums.KeyFormatType(record.key_format)),
        key_compression_type=None,
        key_value=cobjects.KeyValue(cobjects.KeyMaterial(material)),
        cryptographic_algorithm=(
            core_attributes.CryptographicAlgorithm(Alg(record.algorithm))
            if record.algorithm is not None
            else None
        ),
        cryptographic_length=(
            core_attributes.CryptographicLength(record.length)
            if record.length is not None
            else None
        ),
        key_wrapping_data=cobjects.KeyWrappingData(
            wrapping_method=enums.WrappingMethod(method),
            encryption_key_information=cobjects.EncryptionKeyInformation(
                unique_identifier=uid, cryptographic_parameters=parameters
            ),
            encoding_option=enums.EncodingOption(encoding),
        ),
    )
    kind = OT(record.object_type)
    if kind is OT.SECRET_DATA:
        data_type = secrets.SecretData.SecretDataType(enums.SecretDataType(record.data_type))
        return secrets.SecretData(data_type, block)
    cls = {v: k for k, v in _WRAPPABLE.items()}[kind]
    return cls(block)


def _refuse_format(key_format: Any) -> KmipFailure:
    return KmipFailure(
        R.KEY_FORMAT_TYPE_NOT_SUPPORTED, f"Key Format Type {key_format.name} is not supported"
    )


def _key_block(key_format: Any, value: bytes, algorithm: int | None, length: int | None) -> Any:
    """A key block built from PyKMIP's core classes: ten times cheaper than its pie objects
    (SQLAlchemy models) and their conversion, and on the path of every KMIP Get."""
    return cobjects.KeyBlock(
        key_format_type=misc.KeyFormatType(key_format),
        key_compression_type=None,
        key_value=cobjects.KeyValue(cobjects.KeyMaterial(value)),
        cryptographic_algorithm=(
            core_attributes.CryptographicAlgorithm(Alg(algorithm))
            if algorithm is not None
            else None
        ),
        cryptographic_length=(
            core_attributes.CryptographicLength(length) if length is not None else None
        ),
        key_wrapping_data=None,
    )


def core_object(record: KmipRecord, material: bytes, key_format: Any) -> Any:
    """The object Get returns, PyKMIP's core secret; Key Format Type Not Supported for a format
    s3kms does not produce (symmetric keys: Raw, Transparent Symmetric Key; Secret Data: Opaque;
    private keys: PKCS#8, PKCS#1 for RSA, EC Private Key for EC; public keys: X.509, PKCS#1
    for RSA)."""
    kind = OT(record.object_type)
    if record.wrapping:
        if key_format not in (None, enums.KeyFormatType(record.key_format)):
            raise _refuse_format(key_format)
        return _wrapped_object(record, material)
    if kind is OT.SYMMETRIC_KEY:
        if key_format not in (None, enums.KeyFormatType.RAW, TRANSPARENT):
            raise _refuse_format(key_format)
        block = _key_block(enums.KeyFormatType.RAW, material, record.algorithm, len(material) * 8)
        if key_format is TRANSPARENT:
            block.key_format_type = misc.KeyFormatType(TRANSPARENT)
            # (set after construction: KeyValue's check knows only Raw key material)
            block.key_value.key_material = _transparent_symmetric(material)
        return secrets.SymmetricKey(block)
    if kind is OT.PRIVATE_KEY:
        chosen = key_format or enums.KeyFormatType(
            record.key_format or enums.KeyFormatType.PKCS_8.value
        )
        value = private_key_in(material, chosen)
        return secrets.PrivateKey(_key_block(chosen, value, record.algorithm, record.length))
    if kind is OT.PUBLIC_KEY:
        chosen = key_format or enums.KeyFormatType(
            record.key_format or enums.KeyFormatType.X_509.value
        )
        value = public_key_in(material, chosen)
        return secrets.PublicKey(_key_block(chosen, value, record.algorithm, record.length))
    if kind is OT.SECRET_DATA:
        if key_format not in (None, enums.KeyFormatType.OPAQUE):
            raise _refuse_format(key_format)
        data_type = enums.SecretDataType(record.data_type or enums.SecretDataType.PASSWORD.value)
        block = _key_block(enums.KeyFormatType.OPAQUE, material, None, None)
        return secrets.SecretData(secrets.SecretData.SecretDataType(data_type), block)
    if kind is OT.OPAQUE_DATA:
        opaque_type = enums.OpaqueDataType(record.data_type or enums.OpaqueDataType.NONE.value)
        return secrets.OpaqueObject(
            secrets.OpaqueObject.OpaqueDataType(opaque_type),
            secrets.OpaqueObject.OpaqueDataValue(material),
        )
    if kind is OT.CERTIFICATE:
        if key_format is not None:
            raise _refuse_format(key_format)
        return _FACTORY.convert(pie.X509Certificate(material))
    if kind is OT.SPLIT_KEY:
        if key_format not in (None, enums.KeyFormatType(record.key_format)):
            raise _refuse_format(key_format)
        parts, identifier, threshold, method, prime = record.split
        split = pie.SplitKey(
            cryptographic_algorithm=Alg(record.algorithm),
            cryptographic_length=record.length,
            key_value=material,
            key_format_type=enums.KeyFormatType(record.key_format),
            split_key_parts=parts,
            key_part_identifier=identifier,
            split_key_threshold=threshold,
            split_key_method=enums.SplitKeyMethod(method),
            prime_field_size=prime or None,
        )
        return _FACTORY.convert(split)
    raise KmipFailure(R.FEATURE_NOT_SUPPORTED, f"Get of a {kind.name} is not supported yet")


def foreign_record(meta: KeyMetadata) -> KmipRecord:
    """How KMIP sees a key made through the AWS or admin API: its type, algorithm and state;
    no owner, not extractable."""
    spec = meta.key_spec
    algorithm: int | None = None
    length: int | None = None
    mask = 0
    if spec == "SYMMETRIC_DEFAULT":
        kind, algorithm, length, mask = OT.SYMMETRIC_KEY, Alg.AES.value, 256, ENCRYPT_DECRYPT
    elif spec in _HMAC_OF_SPEC:
        kind, algorithm, mask = OT.SYMMETRIC_KEY, _HMAC_OF_SPEC[spec].value, MAC
        length = int(spec.split("_")[1])
    elif spec.startswith("RSA_"):
        kind, algorithm, length = OT.PRIVATE_KEY, Alg.RSA.value, int(spec.split("_")[1])
    elif spec.startswith("ECC_NIST_EDWARDS"):
        kind, algorithm = OT.PRIVATE_KEY, Alg.ED25519.value
    elif spec.startswith("ECC_"):
        kind, algorithm = OT.PRIVATE_KEY, Alg.EC.value
    else:
        kind = OT.PRIVATE_KEY
    if meta.state is KeyState.ENABLED:
        state = ACTIVE
    elif meta.state is KeyState.PENDING_IMPORT:
        state = PRE_ACTIVE
    else:
        state = DEACTIVATED
    created = int(meta.created_at)
    return KmipRecord(
        owner="",
        object_type=kind.value,
        state=state,
        initial_date=created,
        last_change_date=created,
        algorithm=algorithm,
        length=length,
        usage_mask=mask,
        extractable=False,
        sensitive=True,
    )


# -- private and public keys ----------------------------------------------------------------------

_CURVES = {"secp256r1": "ECC_NIST_P256", "secp384r1": "ECC_NIST_P384", "secp521r1": "ECC_NIST_P521"}
KEY_PAIR_SPECS = {
    (Alg.RSA, 2048): "RSA_2048", (Alg.RSA, 3072): "RSA_3072", (Alg.RSA, 4096): "RSA_4096",
    (Alg.EC, 256): "ECC_NIST_P256", (Alg.EC, 384): "ECC_NIST_P384", (Alg.EC, 521): "ECC_NIST_P521",
    (Alg.ECDSA, 256): "ECC_NIST_P256", (Alg.ECDSA, 384): "ECC_NIST_P384",
    (Alg.ECDSA, 521): "ECC_NIST_P521",
}  # fmt: skip


def usage_of_private(spec: str) -> str:
    """The AWS key usage of a KMIP private key: signing (the AWS API's use of such keys)."""
    return "SIGN_VERIFY"


def private_key_spec(value: bytes, key_format: Any) -> tuple[str, bytes]:
    """(key spec, PKCS#8 DER) of a registered private key in PKCS#8, PKCS#1 or EC form."""
    if key_format not in (
        enums.KeyFormatType.PKCS_8, enums.KeyFormatType.PKCS_1, enums.KeyFormatType.EC_PRIVATE_KEY,
    ):  # fmt: skip
        raise _refuse_format(key_format)
    try:
        key = serialization.load_der_private_key(value, password=None)
    except (ValueError, TypeError):
        raise KmipFailure(R.INVALID_FIELD, "The private key does not decode") from None
    if isinstance(key, rsa.RSAPrivateKey):
        spec = KEY_PAIR_SPECS.get((Alg.RSA, key.key_size))
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        spec = _CURVES.get(key.curve.name)
    else:
        spec = None
    if spec is None:
        raise KmipFailure(R.INVALID_FIELD, "Only RSA 2048/3072/4096 and NIST P-256/384/521 keys")
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return spec, der


def private_key_in(pkcs8: bytes, key_format: Any) -> bytes:
    key = serialization.load_der_private_key(pkcs8, password=None)
    if key_format is enums.KeyFormatType.PKCS_8:
        return pkcs8
    if (key_format is enums.KeyFormatType.PKCS_1 and isinstance(key, rsa.RSAPrivateKey)) or (
        key_format is enums.KeyFormatType.EC_PRIVATE_KEY
        and isinstance(key, ec.EllipticCurvePrivateKey)
    ):
        return key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    raise _refuse_format(key_format)


def public_key_der(value: bytes, key_format: Any) -> bytes:
    """The SubjectPublicKeyInfo DER of a registered public key (X.509 or PKCS#1)."""
    try:
        if key_format is enums.KeyFormatType.X_509:
            key = serialization.load_der_public_key(value)
        elif key_format is enums.KeyFormatType.PKCS_1:
            key = _pkcs1_public(value)
        else:
            raise _refuse_format(key_format)
    except (ValueError, TypeError):
        raise KmipFailure(R.INVALID_FIELD, "The public key does not decode") from None
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_in(spki: bytes, key_format: Any) -> bytes:
    if key_format is enums.KeyFormatType.X_509:
        return spki
    key = serialization.load_der_public_key(spki)
    if key_format is enums.KeyFormatType.PKCS_1 and isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    raise _refuse_format(key_format)


def _pkcs1_public(value: bytes) -> Any:
    """An RSAPublicKey (PKCS#1 DER): `cryptography` reads that form only as PEM."""
    text = base64.encodebytes(value).decode()
    return serialization.load_pem_public_key(
        f"-----BEGIN RSA PUBLIC KEY-----\n{text}-----END RSA PUBLIC KEY-----\n".encode()
    )
