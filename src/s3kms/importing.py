"""The rules of imported key material (BYOK), pure: the import token, and what ImportKeyMaterial,
DeleteImportedKeyMaterial, expiry and RotateKeyOnDemand do to an EXTERNAL key's metadata.

The service reads the key, calls one of these, and writes the answer with the material change
(`KeyStore.set_material`), so every rule is here and every write is one compare-and-set.

The rules, as AWS documents them (Importing key material; ImportKeyMaterial;
DeleteImportedKeyMaterial; Rotating keys with imported material):
- A key's first material (version 1) becomes current at once and the key Enabled.
- Only a symmetric encryption key takes more: `NEW_KEY_MATERIAL` imports the next version as
  PENDING_ROTATION (one at a time), and RotateKeyOnDemand makes it current.
- `EXISTING_KEY_MATERIAL` (the default once a material exists) re-imports a material the key
  had, recognised by its KeyMaterialId (from the key id and the material).
- Deleting or expiring a material the key holds for good (not a pending one) leaves the key
  PendingImport (PendingDeletion stays), until that same material is imported again; a pending
  material is simply dropped.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace

from s3kms.errors import (
    ExpiredImportToken,
    IncorrectKeyMaterial,
    InvalidImportToken,
    KeyInvalidState,
    KeyNotFound,
    UnsupportedOperation,
    ValidationError,
)
from s3kms.model import (
    DOES_NOT_EXPIRE,
    EXPIRES,
    ORIGIN_EXTERNAL,
    KeyMaterial,
    KeyMetadata,
    KeyState,
)

DAY = 86400.0
TOKEN_VALIDITY = DAY  # "These items are valid for 24 hours" (GetParametersForImport)
MAX_VALID_TO = 365 * DAY  # "The maximum value is 365 days from the request date" (ValidTo)
TOKEN_PURPOSE = "import-token"  # noqa: S105 (KeyStore.seal's purpose label, no secret)
NEW_KEY_MATERIAL, EXISTING_KEY_MATERIAL = "NEW_KEY_MATERIAL", "EXISTING_KEY_MATERIAL"


# -- the import token ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenContent:
    """What an import token holds, sealed by the keystore (any node of the backend opens it):
    the key it is for, the wrapping algorithm, when it expires, and the wrapping key's private
    half, so that no state is kept between GetParametersForImport and ImportKeyMaterial."""

    key_id: str
    algorithm: str
    expires_at: float
    private_key: bytes  # PKCS#8 DER

    def __repr__(self) -> str:  # the private key is a secret
        return f"TokenContent(key_id={self.key_id!r}, algorithm={self.algorithm!r}, ...)"


def token_plaintext(content: TokenContent) -> bytes:
    return json.dumps(
        {
            "key_id": content.key_id,
            "algorithm": content.algorithm,
            "expires_at": content.expires_at,
            "private_key": base64.b64encode(content.private_key).decode(),
        },
        separators=(",", ":"),
    ).encode()


def read_token(plaintext: bytes, key_id: str, now: float) -> TokenContent:
    """The token's content, when it is for `key_id` and not expired."""
    try:
        data = json.loads(plaintext)
        content = TokenContent(
            key_id=str(data["key_id"]),
            algorithm=str(data["algorithm"]),
            expires_at=float(data["expires_at"]),
            private_key=base64.b64decode(data["private_key"], validate=True),
        )
    except (ValueError, KeyError, TypeError):
        raise InvalidImportToken from None
    if content.key_id != key_id:
        raise InvalidImportToken
    if content.expires_at <= now:
        raise ExpiredImportToken
    return content


# -- checks -------------------------------------------------------------------------------------


def require_external(meta: KeyMetadata) -> None:
    """AWS's answer for an import operation on a key whose material it made (recorded)."""
    if meta.origin != ORIGIN_EXTERNAL:
        raise UnsupportedOperation(
            f"{meta.key_id} origin is {meta.origin} which is not valid for this operation.",
            key_id=meta.key_id,
        )


def current_material(meta: KeyMetadata) -> KeyMaterial | None:
    for material in meta.materials:
        if material.version == meta.current_version and not material.pending:
            return material
    return None


def pending_material(meta: KeyMetadata) -> KeyMaterial | None:
    return next((m for m in meta.materials if m.pending), None)


def expiration(model: str | None, valid_to: float | None, now: float) -> tuple[str, float | None]:
    """(ExpirationModel, ValidTo) of an import; ValidationError for AWS's member rules."""
    model = model or EXPIRES  # "The default is KEY_MATERIAL_EXPIRES"
    if model == EXPIRES:
        if valid_to is None:
            raise ValidationError(
                "A validTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES"
            )
        if valid_to <= now:
            raise ValidationError("ValidTo must be a date and time in the future")
        if valid_to > now + MAX_VALID_TO:
            raise ValidationError("ValidTo must be at most 365 days from now")
        return model, valid_to
    if valid_to is not None:
        raise ValidationError(
            "ValidTo must not be set when the ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE"
        )
    return DOES_NOT_EXPIRE, None


def all_imported(materials: tuple[KeyMaterial, ...]) -> bool:
    """Whether every material the key holds for good (not one pending rotation) is imported:
    the key has material to use."""
    held = [m for m in materials if not m.pending]
    return bool(held) and all(m.imported for m in held)


def _usable_again(meta: KeyMetadata, materials: tuple[KeyMaterial, ...]) -> KeyState:
    """The key's state once every material it holds for good is imported."""
    if meta.state is KeyState.PENDING_DELETION:
        return meta.state
    if all_imported(materials):
        return KeyState.ENABLED if meta.state is KeyState.PENDING_IMPORT else meta.state
    return KeyState.PENDING_IMPORT


# -- ImportKeyMaterial --------------------------------------------------------------------------


def plan_import(
    meta: KeyMetadata,
    material_id: str,
    *,
    symmetric: bool,
    import_type: str | None,
    expected_id: str | None,
    expiration_model: str,
    valid_to: float | None,
    description: str | None,
    key_arn: str,
) -> tuple[KeyMetadata, KeyMaterial]:
    """The key after importing the material whose KeyMaterialId is `material_id`, and that
    material's record (its `version` is where the keystore stores it)."""
    require_external(meta)
    if meta.state is KeyState.PENDING_DELETION:
        raise KeyInvalidState(f"Key {meta.key_id} is pending deletion", key_id=meta.key_id)
    known = {m.material_id: m for m in meta.materials}
    kind = import_type or (EXISTING_KEY_MATERIAL if meta.materials else NEW_KEY_MATERIAL)
    if kind == NEW_KEY_MATERIAL:
        if expected_id is not None:
            raise ValidationError("KeyMaterialId cannot be specified with NEW_KEY_MATERIAL")
        if material_id in known:
            raise IncorrectKeyMaterial(
                f"Key material {material_id} is already associated with KMS key {meta.key_id}"
            )
        pending = pending_material(meta)
        if pending is not None:
            raise KeyInvalidState(
                f"New key material (id: {material_id}) cannot be imported into KMS key "
                f"{key_arn}, because another key material (id: {pending.material_id}) is "
                "pending rotation."
            )
        if meta.materials and not symmetric:
            raise UnsupportedOperation(
                f"{meta.key_id} can hold one key material only: only symmetric encryption "
                "keys take new key material",
                key_id=meta.key_id,
            )
        first = not meta.materials
        material = KeyMaterial(
            version=1 if first else max(m.version for m in meta.materials) + 1,
            material_id=material_id,
            imported=True,
            expiration_model=expiration_model,
            valid_to=valid_to,
            description=description or "",
            pending=not first,
        )
        materials = (*meta.materials, material)
    else:
        if expected_id is not None and expected_id != material_id:
            raise IncorrectKeyMaterial(
                f"The key material does not match key material {expected_id}"
            )
        old = known.get(material_id)
        if old is None:
            raise IncorrectKeyMaterial(
                "The key material is not the key material previously imported into KMS key "
                f"{meta.key_id}"
            )
        if old.imported:
            raise KeyInvalidState(
                f"Key material {material_id} of KMS key {meta.key_id} is already imported; "
                "delete it first to change its expiration"
            )
        material = replace(
            old,
            imported=True,
            expiration_model=expiration_model,
            valid_to=valid_to,
            description=old.description if description is None else description,
        )
        materials = tuple(material if m is old else m for m in meta.materials)
    return replace(meta, materials=materials, state=_usable_again(meta, materials)), material


# -- DeleteImportedKeyMaterial and expiry -------------------------------------------------------


def plan_delete(meta: KeyMetadata, material_id: str | None) -> tuple[KeyMetadata, KeyMaterial]:
    """The key after deleting a material (None: the current one), and that material. A material
    already deleted answers as deleted again, changing nothing."""
    require_external(meta)
    if material_id is None:
        target = current_material(meta)
        if target is None:  # never imported
            raise KeyInvalidState(f"Key {meta.key_id} is pending import", key_id=meta.key_id)
    else:
        found = [m for m in meta.materials if m.material_id == material_id]
        if not found:
            raise KeyNotFound(f"Key material {material_id} not found for key {meta.key_id}")
        target = found[0]
    return without(meta, target), target


def without(meta: KeyMetadata, target: KeyMaterial) -> KeyMetadata:
    """The key once `target`'s material is gone (deleted or expired)."""
    if not target.imported:
        return meta
    if target.pending:  # never held for good: forgotten, so another may be imported
        materials = tuple(m for m in meta.materials if m is not target)
    else:
        gone = replace(target, imported=False, expiration_model=None, valid_to=None)
        materials = tuple(gone if m is target else m for m in meta.materials)
    return replace(meta, materials=materials, state=_usable_again(meta, materials))


def expired(meta: KeyMetadata, now: float) -> KeyMaterial | None:
    """A material of the key whose ValidTo has passed (the maintenance pass deletes it)."""
    for material in meta.materials:
        if material.imported and material.valid_to is not None and material.valid_to <= now:
            return material
    return None


# -- RotateKeyOnDemand --------------------------------------------------------------------------


def plan_rotation(meta: KeyMetadata, now: float, key_arn: str) -> KeyMetadata:
    """An EXTERNAL key after RotateKeyOnDemand: its pending material becomes current."""
    pending = pending_material(meta)
    if pending is None:
        raise KeyInvalidState(f"No available key material pending rotation for the key: {key_arn}.")
    done = replace(pending, pending=False, rotated_at=now)
    return replace(
        meta,
        current_version=pending.version,
        materials=tuple(done if m is pending else m for m in meta.materials),
    )
