"""KMIP attributes <-> `KmipRecord`: what a client may set, what GetAttributes answers, and
what Locate matches. Attribute objects are PyKMIP's (`kmip.core.objects.Attribute`), in the
1.x form; PyKMIP converts KMIP 2.0's Attributes structure to and from it in the payloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from kmip.core import attributes as core_attributes
from kmip.core import enums, objects, primitives, utils
from kmip.core.factories.attributes import AttributeFactory

from s3kms.protocols.kmip.errors import KmipFailure
from s3kms.protocols.kmip.record import KmipRecord

_FACTORY = AttributeFactory()
A = enums.AttributeType

# Attributes a client sets (Create, Register, Add/Modify/Set Attribute), by whether they take
# several values (an Attribute Index in 1.x).
MULTI_VALUED = frozenset(
    {A.NAME.value, A.OBJECT_GROUP.value, A.APPLICATION_SPECIFIC_INFORMATION.value}
)
CLIENT_SETTABLE = frozenset(
    {
        *MULTI_VALUED,
        A.CRYPTOGRAPHIC_USAGE_MASK.value,
        A.OPERATION_POLICY_NAME.value,
        A.ACTIVATION_DATE.value,
        A.DEACTIVATION_DATE.value,
        A.CONTACT_INFORMATION.value,
        A.SENSITIVE.value,
        A.EXTRACTABLE.value,
        # Set only with Create/Register (the object's type decides them; they never change).
        A.CRYPTOGRAPHIC_ALGORITHM.value,
        A.CRYPTOGRAPHIC_LENGTH.value,
    }
)
# Attributes fixed once the object exists (KMIP: "not modifiable by client").
_FIXED_AFTER_CREATION = frozenset(
    {
        A.CRYPTOGRAPHIC_ALGORITHM.value,
        A.CRYPTOGRAPHIC_LENGTH.value,
        A.ACTIVATION_DATE.value,
        A.CRYPTOGRAPHIC_USAGE_MASK.value,  # not modifiable by the client (KMIP 1.x and 2.0)
    }
)
_DELETABLE = frozenset({*MULTI_VALUED, A.CONTACT_INFORMATION.value, A.OPERATION_POLICY_NAME.value})


def is_custom(name: str) -> bool:
    return name.startswith(("x-", "y-"))


def plain_value(attribute: Any) -> Any:
    """The plain value of an attribute object: str, int, bool, an enum, or a pair."""
    value = attribute.attribute_value
    name = attribute.attribute_name.value
    if name == A.NAME.value:
        return value.name_value.value
    if name == A.APPLICATION_SPECIFIC_INFORMATION.value:
        return (value.application_namespace or "", value.application_data or "")
    return getattr(value, "value", None)  # str, int, bool, or a KMIP enum member


def parse_template(attributes: Sequence[Any]) -> dict[str, Any]:
    """The attributes of a Create/Register request: name -> value (a list for the multi-valued
    ones); an attribute no client may set is Invalid Field."""
    found: dict[str, Any] = {}
    for attribute in attributes:
        name = attribute.attribute_name.value
        if not (name in CLIENT_SETTABLE or is_custom(name)):
            raise KmipFailure(
                enums.ResultReason.INVALID_FIELD,
                f"The {name} attribute cannot be set by the client",
            )
        value = plain_value(attribute)
        if name in MULTI_VALUED:
            found.setdefault(name, []).append(value)
        elif name in found:
            raise KmipFailure(
                enums.ResultReason.INDEX_OUT_OF_BOUNDS,
                f"Cannot set multiple instances of the {name} attribute",
            )
        else:
            found[name] = value
    return found


def _mask(value: Any) -> int:
    if isinstance(value, int):
        return value
    raise KmipFailure(enums.ResultReason.INVALID_FIELD, "Cryptographic Usage Mask is malformed")


def _text(name: str, value: Any, limit: int = 1024) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise KmipFailure(enums.ResultReason.INVALID_FIELD, f"The {name} attribute is malformed")
    return value


MAX_VALUES = 64  # per multi-valued attribute: a record stays small


def apply_settable(record: KmipRecord, found: dict[str, Any]) -> KmipRecord:
    """`record` with the client-set attributes of a Create/Register (algorithm and length are
    the caller's: they choose the key spec)."""
    changes: dict[str, Any] = {}
    if A.NAME.value in found:
        changes["names"] = tuple(_text("Name", v, 256) for v in found[A.NAME.value])
    if A.OBJECT_GROUP.value in found:
        changes["object_groups"] = tuple(
            _text("Object Group", v) for v in found[A.OBJECT_GROUP.value]
        )
    if A.APPLICATION_SPECIFIC_INFORMATION.value in found:
        changes["app_info"] = tuple(found[A.APPLICATION_SPECIFIC_INFORMATION.value])
    if A.CRYPTOGRAPHIC_USAGE_MASK.value in found:
        changes["usage_mask"] = _mask(found[A.CRYPTOGRAPHIC_USAGE_MASK.value])
    if A.OPERATION_POLICY_NAME.value in found:
        changes["operation_policy_name"] = _text(
            "Operation Policy Name", found[A.OPERATION_POLICY_NAME.value]
        )
    if A.CONTACT_INFORMATION.value in found:
        changes["contact_information"] = _text(
            "Contact Information", found[A.CONTACT_INFORMATION.value]
        )
    if A.SENSITIVE.value in found:
        changes["sensitive"] = bool(found[A.SENSITIVE.value])
    if A.EXTRACTABLE.value in found:
        changes["extractable"] = bool(found[A.EXTRACTABLE.value])
    if A.ACTIVATION_DATE.value in found:
        changes["activation_date"] = int(found[A.ACTIVATION_DATE.value])
    if A.DEACTIVATION_DATE.value in found:
        changes["deactivation_date"] = int(found[A.DEACTIVATION_DATE.value])
    custom = [(n, _text(n, v)) for n, v in found.items() if is_custom(n)]
    if custom:
        changes["custom"] = tuple(custom)
    new = replace(record, **changes)
    _check_sizes(new)
    return new


def _check_sizes(record: KmipRecord) -> None:
    for name, values in (
        ("Name", record.names),
        ("Object Group", record.object_groups),
        ("Application Specific Information", record.app_info),
        ("custom", record.custom),
    ):
        if len(values) > MAX_VALUES:
            raise KmipFailure(
                enums.ResultReason.INDEX_OUT_OF_BOUNDS,
                f"an object holds at most {MAX_VALUES} {name} attributes",
            )


# -- reading: GetAttributes, GetAttributeList, Locate ---------------------------------------------


def values_of(uid: str, record: KmipRecord) -> list[tuple[str, Any]]:
    """Every attribute the object has, as (name, value) pairs in KMIP's order; multi-valued
    attributes appear once per value."""
    out: list[tuple[str, Any]] = [
        (A.UNIQUE_IDENTIFIER.value, uid),
        (A.OBJECT_TYPE.value, enums.ObjectType(record.object_type)),
    ]
    if record.algorithm is not None:
        out.append(
            (A.CRYPTOGRAPHIC_ALGORITHM.value, enums.CryptographicAlgorithm(record.algorithm))
        )
    if record.length is not None:
        out.append((A.CRYPTOGRAPHIC_LENGTH.value, record.length))
    out += [(A.NAME.value, n) for n in record.names]
    if record.operation_policy_name is not None:
        out.append((A.OPERATION_POLICY_NAME.value, record.operation_policy_name))
    if record.usage_mask:
        out.append((A.CRYPTOGRAPHIC_USAGE_MASK.value, record.usage_mask))
    out += [
        (A.STATE.value, enums.State(record.state)),
        (A.INITIAL_DATE.value, record.initial_date),
    ]
    for name, date in (
        (A.ACTIVATION_DATE.value, record.activation_date),
        (A.DEACTIVATION_DATE.value, record.deactivation_date),
        (A.COMPROMISE_OCCURRENCE_DATE.value, record.compromise_occurrence_date),
        (A.COMPROMISE_DATE.value, record.compromise_date),
    ):
        if date is not None:
            out.append((name, date))
    if record.revocation_reason is not None:
        out.append(
            (A.REVOCATION_REASON.value, (record.revocation_reason, record.revocation_message))
        )
    out += [(A.OBJECT_GROUP.value, g) for g in record.object_groups]
    out += [(A.APPLICATION_SPECIFIC_INFORMATION.value, pair) for pair in record.app_info]
    if record.contact_information is not None:
        out.append((A.CONTACT_INFORMATION.value, record.contact_information))
    out.append((A.LAST_CHANGE_DATE.value, record.last_change_date))
    out.append((A.SENSITIVE.value, record.sensitive))
    out.append((A.EXTRACTABLE.value, record.extractable))
    out += [(A.LINK.value, link) for link in record.links]
    out += list(record.custom)
    return out


def names_of(uid: str, record: KmipRecord) -> list[str]:
    """GetAttributeList: the names of the attributes the object has, each once."""
    seen: dict[str, None] = {}
    for name, _ in values_of(uid, record):
        seen.setdefault(name, None)
    return list(seen)


# Answered only when asked for by name: clients written against KMIP 1.0-1.2 (PyKMIP's among
# them) cannot decode them in an answer to "every attribute".
_ON_REQUEST = frozenset({A.REVOCATION_REASON.value, A.EXTRACTABLE.value, A.LINK.value})
_INDEXED = MULTI_VALUED | {A.LINK.value}


def to_attributes(
    pairs: Sequence[tuple[str, Any]], wanted: Sequence[str] | None, version: tuple[int, int]
) -> list[Any]:
    """PyKMIP Attribute objects for `pairs` (those named in `wanted`, when given), with the
    Attribute Index of each value of a multi-valued attribute. KMIP 2.0 has no custom
    attribute names (its Vendor Attributes are another structure): they are left out there."""
    chosen = set(wanted) if wanted else None
    index: dict[str, int] = {}
    out = []
    for name, value in pairs:
        if chosen is None and name in _ON_REQUEST:
            continue
        if chosen is not None and name not in chosen:
            continue
        if version >= (2, 0) and (is_custom(name) or name == A.LINK.value):
            continue  # (PyKMIP's 2.0 encoder knows neither)
        position = None
        if name in _INDEXED:
            position = index.get(name, 0)
            index[name] = position + 1
        out.append(make_attribute(name, value, position))
    return out


class _Link(primitives.Struct):  # type: ignore[misc]
    """A Link attribute's value (Link Type, Linked Object Identifier): PyKMIP 0.11 has no class
    for it, so this writes the structure itself (in the Attribute Value tag of KMIP 1.x)."""

    def __init__(self, link_type: int, linked: str) -> None:
        super().__init__(enums.Tags.ATTRIBUTE_VALUE)
        self._type = primitives.Enumeration(
            enums.LinkType, enums.LinkType(link_type), enums.Tags.LINK_TYPE
        )
        self._linked = primitives.TextString(linked, enums.Tags.LINKED_OBJECT_IDENTIFIER)

    def write(self, ostream: Any, kmip_version: Any = enums.KMIPVersion.KMIP_1_0) -> None:
        inner = utils.BytearrayStream()
        self._type.write(inner, kmip_version=kmip_version)
        self._linked.write(inner, kmip_version=kmip_version)
        self.length = inner.length()
        super().write(ostream, kmip_version=kmip_version)
        ostream.write(inner.buffer)


def make_attribute(name: str, value: Any, index: int | None = None) -> Any:
    if name == A.LINK.value:
        attribute_name = objects.Attribute.AttributeName(name)
        attribute_index = objects.Attribute.AttributeIndex(index) if index is not None else None
        return objects.Attribute(
            attribute_name=attribute_name,
            attribute_index=attribute_index,
            attribute_value=_Link(*value),
        )
    if name == A.REVOCATION_REASON.value:
        code, message = value
        built = objects.RevocationReason(code=enums.RevocationReasonCode(code), message=message)
        attribute_name = objects.Attribute.AttributeName(name)
        return objects.Attribute(attribute_name=attribute_name, attribute_value=built)
    if name == A.CRYPTOGRAPHIC_USAGE_MASK.value:  # (the factory wants a list of flags)
        mask = core_attributes.CryptographicUsageMask(value)
        return objects.Attribute(
            attribute_name=objects.Attribute.AttributeName(name), attribute_value=mask
        )
    if name == A.APPLICATION_SPECIFIC_INFORMATION.value:
        value = {"application_namespace": value[0], "application_data": value[1]}
    kind: Any = name if is_custom(name) else enums.AttributeType(name)
    return _FACTORY.create_attribute(kind, value, index)


def matches(uid: str, record: KmipRecord, wanted: Sequence[Any]) -> bool:
    """Whether the object has every attribute of a Locate request. A date attribute given twice
    is a range (KMIP: "the two values are the start and end of a range"), inclusive."""
    have: dict[str, list[Any]] = {}
    for name, value in values_of(uid, record):
        have.setdefault(name, []).append(_plain(value))
    dates: dict[str, list[int]] = {}
    for attribute in wanted:
        name = attribute.attribute_name.value
        value = _plain(plain_value(attribute))
        if name in _DATES:
            dates.setdefault(name, []).append(int(value))
            continue
        if name == A.CRYPTOGRAPHIC_USAGE_MASK.value:
            # Locate by usage mask: every bit asked for is set.
            masks = have.get(name, [0])
            if not any(int(m) & int(value) == int(value) for m in masks):
                return False
            continue
        if value not in have.get(name, []):
            return False
    for name, bounds in dates.items():
        values = [int(v) for v in have.get(name, [])]
        if len(bounds) == 1:
            if bounds[0] not in values:
                return False
        else:
            low, high = min(bounds[:2]), max(bounds[:2])
            if not any(low <= v <= high for v in values):
                return False
    return True


_DATES = frozenset(
    {
        A.INITIAL_DATE.value,
        A.ACTIVATION_DATE.value,
        A.DEACTIVATION_DATE.value,
        A.COMPROMISE_DATE.value,
        A.COMPROMISE_OCCURRENCE_DATE.value,
        A.LAST_CHANGE_DATE.value,
    }
)


def _plain(value: Any) -> Any:
    return value.value if hasattr(value, "value") and not isinstance(value, (str, int)) else value


# -- changing: Add, Modify, Delete (1.x) and Set (2.0) Attribute ----------------------------------


def _check_changeable(name: str) -> None:
    if name in _FIXED_AFTER_CREATION or not (name in CLIENT_SETTABLE or is_custom(name)):
        raise KmipFailure(
            enums.ResultReason.PERMISSION_DENIED, f"The {name} attribute is read-only"
        )


def add(record: KmipRecord, attribute: Any) -> tuple[KmipRecord, int | None]:
    """Add Attribute (and Set Attribute of a multi-valued one): the new value, appended;
    returns the index it got."""
    name = attribute.attribute_name.value
    _check_changeable(name)
    value = plain_value(attribute)
    if name in MULTI_VALUED:
        field = _MULTI_FIELDS[name]
        values = (*getattr(record, field), _checked_multi(name, value))
        changed: dict[str, Any] = {field: values}
        new = replace(record, **changed)
        _check_sizes(new)
        return new, len(values) - 1
    return set_single(record, name, value, add_only=True), None


_MULTI_FIELDS = {
    A.NAME.value: "names",
    A.OBJECT_GROUP.value: "object_groups",
    A.APPLICATION_SPECIFIC_INFORMATION.value: "app_info",
}


def _checked_multi(name: str, value: Any) -> Any:
    if name == A.APPLICATION_SPECIFIC_INFORMATION.value:
        return value
    return _text(name, value, 256)


def set_single(record: KmipRecord, name: str, value: Any, *, add_only: bool = False) -> KmipRecord:
    """A single-valued attribute set (Add Attribute refuses one the object has already)."""
    _check_changeable(name)
    if is_custom(name):
        present = any(n == name for n, _ in record.custom)
        if add_only and present:
            raise KmipFailure(enums.ResultReason.INVALID_FIELD, f"The {name} attribute exists")
        kept = tuple((n, v) for n, v in record.custom if n != name)
        new = replace(record, custom=(*kept, (name, _text(name, value))))
        _check_sizes(new)
        return new
    current = dict(values_of("", record))
    if add_only and name in current and name != A.SENSITIVE.value:
        raise KmipFailure(enums.ResultReason.INVALID_FIELD, f"The {name} attribute exists")
    # KMIP's one-way switches: an object may become Sensitive, or stop being Extractable,
    # never the other way.
    if name == A.SENSITIVE.value and record.sensitive and not value:
        raise KmipFailure(enums.ResultReason.PERMISSION_DENIED, "Sensitive cannot become false")
    if name == A.EXTRACTABLE.value and not record.extractable and value:
        raise KmipFailure(enums.ResultReason.PERMISSION_DENIED, "Extractable cannot become true")
    return apply_settable(record, {name: value})


def modify(record: KmipRecord, attribute: Any) -> KmipRecord:
    """Modify Attribute (1.x): the value at the Attribute Index (0 when none) changes."""
    name = attribute.attribute_name.value
    _check_changeable(name)
    value = plain_value(attribute)
    if name in MULTI_VALUED:
        field = _MULTI_FIELDS[name]
        values = list(getattr(record, field))
        index = attribute.attribute_index.value if attribute.attribute_index else 0
        if not 0 <= index < len(values):
            raise KmipFailure(
                enums.ResultReason.ITEM_NOT_FOUND, f"No {name} attribute at index {index}"
            )
        values[index] = _checked_multi(name, value)
        changed: dict[str, Any] = {field: tuple(values)}
        return replace(record, **changed)
    if is_custom(name) and not any(n == name for n, _ in record.custom):
        raise KmipFailure(enums.ResultReason.ITEM_NOT_FOUND, f"No {name} attribute")
    return set_single(record, name, value)


def delete(record: KmipRecord, name: str, index: int | None) -> KmipRecord:
    """Delete Attribute: the value at `index` (0 when none) of the named attribute."""
    if not (name in _DELETABLE or is_custom(name)):
        raise KmipFailure(
            enums.ResultReason.PERMISSION_DENIED, f"The {name} attribute cannot be deleted"
        )
    if is_custom(name):
        if not any(n == name for n, _ in record.custom):
            raise KmipFailure(enums.ResultReason.ITEM_NOT_FOUND, f"No {name} attribute")
        return replace(record, custom=tuple((n, v) for n, v in record.custom if n != name))
    if name in MULTI_VALUED:
        field = _MULTI_FIELDS[name]
        values = list(getattr(record, field))
        position = index or 0
        if not 0 <= position < len(values):
            raise KmipFailure(
                enums.ResultReason.ITEM_NOT_FOUND, f"No {name} attribute at index {position}"
            )
        del values[position]
        changed: dict[str, Any] = {field: tuple(values)}
        return replace(record, **changed)
    field = {
        "Contact Information": "contact_information",
        "Operation Policy Name": "operation_policy_name",
    }[name]
    if getattr(record, field) is None:
        raise KmipFailure(enums.ResultReason.ITEM_NOT_FOUND, f"No {name} attribute")
    cleared: dict[str, Any] = {field: None}
    return replace(record, **cleared)
