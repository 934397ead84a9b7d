"""The JSON form of a key's grants and of its imported key materials, one for every place that
stores them: the Local keystore's `grants` and `materials` columns, the Vault keystore's KV
record and the backup payload.

A key material (an EXTERNAL key's, `KeyMaterial`) is an object with its field names, defaults
left out: `{"version": 1, "material_id": "<64 hex>", "imported": true, ...}`; an absent or
null list is none (a key made before imports existed).

A grant is an object with the `Grant` field names; a field at its default is left out (an empty
`name`, no `retiring_principal`, no constraint), so a key with many grants keeps a small record:

    {"grant_id": "<64 hex>", "token": "...", "grantee_principal": "arn:...",
     "issuing_account": "arn:aws:iam::<account>:root", "operations": ["Encrypt", ...],
     "created_at": 1767225600.0,
     "name": "...", "retiring_principal": "arn:...",            (when set)
     "context_subset": {"k": "v"}, "context_equals": {"k": "v"}}  (when set, at most one)

The list keeps the grants in creation order. An absent or null list is no grants (a record or
backup written before grants existed). A malformed entry raises KeyError, TypeError or
ValueError; the reader turns that into its own error. `GrantsMemo` keeps the parse of a key's
large grants text for the keystore's next read of the same text.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from s3kms.model import Grant, KeyMaterial


def _constraint_json(pairs: tuple[tuple[str, str], ...] | None) -> dict[str, str] | None:
    return None if pairs is None else dict(pairs)


def _constraint(value: Any) -> tuple[tuple[str, str], ...] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError("a grant constraint must be an object")
    return tuple((str(k), str(v)) for k, v in value.items())


def grant_json(grant: Grant) -> dict[str, Any]:
    out: dict[str, Any] = {
        "grant_id": grant.grant_id,
        "token": grant.token,
        "grantee_principal": grant.grantee_principal,
        "issuing_account": grant.issuing_account,
        "operations": list(grant.operations),
        "created_at": grant.created_at,
    }
    if grant.name:
        out["name"] = grant.name
    if grant.retiring_principal is not None:
        out["retiring_principal"] = grant.retiring_principal
    if grant.context_subset is not None:
        out["context_subset"] = _constraint_json(grant.context_subset)
    if grant.context_equals is not None:
        out["context_equals"] = _constraint_json(grant.context_equals)
    return out


def grant_from_json(data: Any) -> Grant:
    if not isinstance(data, dict):
        raise TypeError("a grant must be an object")
    operations = data["operations"]
    if not isinstance(operations, list):
        raise TypeError("a grant's operations must be a list")
    retiring = data.get("retiring_principal")
    return Grant(
        grant_id=str(data["grant_id"]),
        token=str(data["token"]),
        name=str(data.get("name", "")),
        grantee_principal=str(data["grantee_principal"]),
        retiring_principal=None if retiring is None else str(retiring),
        issuing_account=str(data["issuing_account"]),
        operations=tuple(str(op) for op in operations),
        created_at=float(data["created_at"]),
        context_subset=_constraint(data.get("context_subset")),
        context_equals=_constraint(data.get("context_equals")),
    )


def grants_json(grants: Sequence[Grant]) -> list[dict[str, Any]]:
    return [grant_json(g) for g in grants]


def grants_from_json(data: Any) -> tuple[Grant, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise TypeError("a key's grants must be a list")
    return tuple(grant_from_json(g) for g in data)


def dump_grants(grants: Sequence[Grant]) -> str:
    """The grants as one compact JSON text (the Local keystore's column)."""
    if not grants:
        return "[]"
    return json.dumps(grants_json(grants), separators=(",", ":"))


def load_grants(text: str | None) -> tuple[Grant, ...]:
    if not text or text == "[]":
        return ()
    return grants_from_json(json.loads(text))


class GrantsMemo:
    """The last grants text of a few keys with many grants, with its parse, for a keystore.

    A key's metadata is read again and again (Local: whenever any process commits anything, as
    the generation moves; Vault: every metadata cache window), and parsing 10,000 grants costs
    more than the rest of a CreateGrant together (~80 ms; the text is ~380 bytes a grant). An
    entry is only used for the exact text it was made from, so it can never answer stale
    grants; a CreateGrant appends to the text written last instead of encoding every grant
    again. Safe from several threads (Local parses on its SQLite thread and encodes on the event
    loop): each entry is one (text, grants) pair, replaced whole under a lock, so a race costs
    at most a parse.
    """

    MIN_TEXT = 16 * 1024  # below this, parsing is cheaper than keeping the text
    MAX_ENTRIES = 16

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, tuple[Grant, ...]]] = {}
        self._lock = threading.Lock()

    def load(self, key_id: str, text: str) -> tuple[Grant, ...]:
        if len(text) < self.MIN_TEXT:
            return load_grants(text)
        entry = self._entries.get(key_id)
        if entry is not None and entry[0] == text:
            return entry[1]
        grants = load_grants(text)
        self.keep(key_id, text, grants)
        return grants

    def dump(self, key_id: str, grants: tuple[Grant, ...]) -> str:
        entry = self._entries.get(key_id)
        if entry is not None:
            text, known = entry
            if grants is known:
                return text
            if (
                len(grants) == len(known) + 1
                and known
                and all(a is b for a, b in zip(known, grants, strict=False))
            ):  # one grant appended (CreateGrant): the text it wrote last, and one more
                return f"{text[:-1]},{dump_grants(grants[-1:])[1:]}"
        return dump_grants(grants)

    def keep(self, key_id: str, text: str, grants: tuple[Grant, ...]) -> None:
        """Remember `grants` as the parse of `text` (a large one) for `key_id`."""
        with self._lock:
            self._entries.pop(key_id, None)
            if len(text) < self.MIN_TEXT:
                return
            if len(self._entries) >= self.MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]  # the oldest
            self._entries[key_id] = (text, grants)

    def drop(self, key_id: str) -> None:
        with self._lock:
            self._entries.pop(key_id, None)


# -- imported key materials -----------------------------------------------------------------


def material_json(material: KeyMaterial) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": material.version,
        "material_id": material.material_id,
        "imported": material.imported,
    }
    if material.expiration_model is not None:
        out["expiration_model"] = material.expiration_model
    if material.valid_to is not None:
        out["valid_to"] = material.valid_to
    if material.description:
        out["description"] = material.description
    if material.pending:
        out["pending"] = True
    if material.rotated_at is not None:
        out["rotated_at"] = material.rotated_at
    return out


def material_from_json(data: Any) -> KeyMaterial:
    if not isinstance(data, dict):
        raise TypeError("a key material must be an object")
    model = data.get("expiration_model")
    valid_to = data.get("valid_to")
    rotated_at = data.get("rotated_at")
    return KeyMaterial(
        version=int(data["version"]),
        material_id=str(data["material_id"]),
        imported=bool(data["imported"]),
        expiration_model=None if model is None else str(model),
        valid_to=None if valid_to is None else float(valid_to),
        description=str(data.get("description", "")),
        pending=bool(data.get("pending", False)),
        rotated_at=None if rotated_at is None else float(rotated_at),
    )


def materials_json(materials: Sequence[KeyMaterial]) -> list[dict[str, Any]]:
    return [material_json(m) for m in materials]


def materials_from_json(data: Any) -> tuple[KeyMaterial, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise TypeError("a key's materials must be a list")
    return tuple(material_from_json(m) for m in data)


def dump_materials(materials: Sequence[KeyMaterial]) -> str:
    if not materials:
        return "[]"
    return json.dumps(materials_json(materials), separators=(",", ":"))


def load_materials(text: str | None) -> tuple[KeyMaterial, ...]:
    if not text or text == "[]":
        return ()
    return materials_from_json(json.loads(text))
