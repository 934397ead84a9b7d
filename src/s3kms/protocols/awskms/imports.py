"""Imported key material (BYOK): GetParametersForImport, ImportKeyMaterial,
DeleteImportedKeyMaterial. The rules are the service's (`s3kms.importing`); CreateKey with
`Origin: EXTERNAL` (keys.py) makes the key they apply to, RotateKeyOnDemand (rotation.py) makes
a material imported as NEW_KEY_MATERIAL current.

Recorded AWS answers followed here (LocalStack's AWS-validated snapshots, test_kms.py):
`<arn> origin is AWS_KMS which is not valid for this operation.` (UnsupportedOperationException),
`<arn> is pending import.` (KMSInvalidStateException), `A validTo date must be set if the
ExpirationModel is KEY_MATERIAL_EXPIRES` (ValidationException), and the message for a second
material pending rotation. ImportKeyMaterial answers `KeyId` (the ARN) and, for symmetric
encryption keys only, `KeyMaterialId`.
"""

from __future__ import annotations

import base64
from typing import Any

from s3kms.auth.identity import Principal
from s3kms.errors import ValidationError
from s3kms.http.responses import Response
from s3kms.protocols.awskms import members
from s3kms.protocols.awskms.handler import Ctx, ok
from s3kms.protocols.awskms.members import Params
from s3kms.service import KeyService

WRAPPING_ALGORITHMS = (
    "RSAES_PKCS1_V1_5", "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_1",
    "RSA_AES_KEY_WRAP_SHA_256", "SM2PKE",
)  # fmt: skip
WRAPPING_KEY_SPECS = ("RSA_2048", "RSA_3072", "RSA_4096", "SM2")
EXPIRATION_MODELS = ("KEY_MATERIAL_EXPIRES", "KEY_MATERIAL_DOES_NOT_EXPIRE")
IMPORT_TYPES = ("NEW_KEY_MATERIAL", "EXISTING_KEY_MATERIAL")
# The model's CiphertextType: 1 to 6144 bytes (the import token, the wrapped material).
MAX_CIPHERTEXT = 6144


def _material_id(p: Params, name: str) -> str | None:
    """A KeyMaterialId member: 64 lowercase hex digits (the model's BackingKeyIdType)."""
    value = members.opt_str(p, name, 64, 64)
    if value is not None and not all(c in "0123456789abcdef" for c in value):
        raise members.violation(
            name[0].lower() + name[1:],
            "satisfy regular expression pattern: ^[a-f0-9]+$",
            f"'{value}'",
        )
    return value


def _timestamp(p: Params, name: str) -> float | None:
    """A DateType member: boto3 sends epoch seconds as a number."""
    value = p.get(name)
    if value is None:
        return None
    if type(value) not in (int, float):
        raise members.wrong_type(name, "a timestamp (epoch seconds)")
    return float(value)


async def get_parameters_for_import(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    algorithm = members.req_enum(p, "WrappingAlgorithm", WRAPPING_ALGORITHMS)
    key_spec = members.req_enum(p, "WrappingKeySpec", WRAPPING_KEY_SPECS)
    if algorithm == "RSAES_PKCS1_V1_5":
        # "As of October 10, 2023, KMS does not support the RSAES_PKCS1_V1_5 wrapping algorithm."
        raise ValidationError("The RSAES_PKCS1_V1_5 wrapping algorithm is not supported")
    if algorithm == "SM2PKE" or key_spec == "SM2":
        raise ValidationError("SM2 wrapping is available only in the China Regions")
    key_id = await ctx.key(service, ref)
    access = principal.gate("kms:GetParametersForImport", key_id)
    params = await service.import_parameters(key_id, algorithm, key_spec, access=access)
    return ok(
        {
            "KeyId": service.key_arn(params.key_id),
            "ImportToken": base64.b64encode(params.token).decode(),
            "PublicKey": base64.b64encode(params.public_key).decode(),
            "ParametersValidTo": params.valid_to,
        }
    )


async def import_key_material(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    token = members.blob(p, "ImportToken", MAX_CIPHERTEXT)
    wrapped = members.blob(p, "EncryptedKeyMaterial", MAX_CIPHERTEXT)
    valid_to = _timestamp(p, "ValidTo")
    model = members.enum(p, "ExpirationModel", EXPIRATION_MODELS)
    import_type = members.enum(p, "ImportType", IMPORT_TYPES)
    description = members.opt_str(p, "KeyMaterialDescription", 0, 256)
    material_id = _material_id(p, "KeyMaterialId")
    key_id = await ctx.key(service, ref)
    access = principal.gate("kms:ImportKeyMaterial", key_id)
    meta, material = await service.import_material(
        key_id,
        token,
        wrapped,
        expiration_model=model,
        valid_to=valid_to,
        import_type=import_type,
        material_id=material_id,
        description=description,
        access=access,
    )
    out: dict[str, Any] = {"KeyId": service.key_arn(meta.key_id)}
    if service.has_material_ids(meta):
        out["KeyMaterialId"] = material.material_id
    return ok(out)


async def delete_imported_key_material(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    ref = members.req_str(p, "KeyId")
    material_id = _material_id(p, "KeyMaterialId")
    key_id = await ctx.key(service, ref)
    access = principal.gate("kms:DeleteImportedKeyMaterial", key_id)
    meta, material = await service.delete_material(key_id, material_id, access=access)
    out: dict[str, Any] = {"KeyId": service.key_arn(meta.key_id)}
    if service.has_material_ids(meta):
        out["KeyMaterialId"] = material.material_id
    return ok(out)
