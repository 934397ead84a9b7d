"""The KMIP operations: each takes the caller and PyKMIP's request payload and returns the
response payload, through the service's methods (a KMIP object is an s3kms key).

Authorisation is the one evaluator's (access/), as `kmip:<Operation>` on the object's ARN; the
default key policy delegates `kmip:` actions to the account's identity policies as it does
`kms:` ones. Objects are scoped to their owner besides: an object another identity made is Item
Not Found to the caller (root sees every object). A key made through the AWS or admin API is
reached by its key id and decided by policy alone; KMIP never returns its material, nor changes
or destroys it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kmip.core import attributes as core_attributes
from kmip.core import enums, misc, objects
from kmip.core.messages import contents, payloads

from s3kms.auth.identity import KeyGate, Principal
from s3kms.errors import KeyNotFound
from s3kms.model import KEY_NAME_RE, KeyMetadata
from s3kms.protocols.kmip import attributes as attrs
from s3kms.protocols.kmip import objects as kobjects
from s3kms.protocols.kmip.errors import KmipFailure
from s3kms.protocols.kmip.payloads import AddAttributeResponsePayload
from s3kms.protocols.kmip.record import (
    ACTIVE,
    COMPROMISED,
    DEACTIVATED,
    PRE_ACTIVE,
    KmipRecord,
    name_term,
    owner_term,
    record_of,
)
from s3kms.service import KeyService

R = enums.ResultReason
Op = enums.Operation
OT = enums.ObjectType

# The protocol versions served, newest first (DiscoverVersions' answer without a list).
VERSIONS = ((2, 0), (1, 4), (1, 3), (1, 2), (1, 1), (1, 0))
MAX_LOCATE = 1000  # identifiers per Locate answer without Maximum Items
MAX_CANDIDATES = 100_000  # of the caller's objects a Locate considers


@dataclass(frozen=True, slots=True)
class Call:
    """One batch item's context: the caller, the request's protocol version, and the ID
    Placeholder (the unique identifier the batch's previous operation produced)."""

    principal: Principal
    version: tuple[int, int]
    placeholder: str | None


@functools.cache
def action(operation: enums.Operation) -> str:
    """`kmip:GetAttributes`: the policy action of a KMIP operation, as the specification names
    it without spaces (policy actions match case-insensitively)."""
    name = _SPELLED.get(operation)
    if name is None:
        name = "".join(word.capitalize() for word in operation.name.split("_"))
    return "kmip:" + name


_SPELLED = {enums.Operation.MAC: "MAC", enums.Operation.REKEY: "ReKey"}


class Operations:
    def __init__(self, service: KeyService) -> None:
        self.service = service

    def _now(self) -> int:
        return int(self.service.clock.now())

    # -- objects ----------------------------------------------------------------------------

    @staticmethod
    def _uid(call: Call, identifier: Any) -> str:
        uid = getattr(identifier, "value", identifier)
        if uid is None:
            uid = call.placeholder
        if not isinstance(uid, str) or not uid:
            raise KmipFailure(R.INVALID_FIELD, "Unique Identifier is missing")
        if KEY_NAME_RE.fullmatch(uid) is None:
            raise KmipFailure(R.ITEM_NOT_FOUND, f"Object {uid[:128]} not found")
        return uid

    @staticmethod
    def _owner_check(call: Call, uid: str, access: KeyGate) -> KeyGate:
        """The policy's check, then the owner's: another identity's object is not found."""
        principal = call.principal

        def check(meta: KeyMetadata) -> None:
            record = record_of(meta)
            if record is not None and record.owner != principal.arn and not principal.is_root:
                raise KmipFailure(R.ITEM_NOT_FOUND, f"Object {uid} not found")
            access(meta)

        return check

    async def _object(
        self, call: Call, operation: enums.Operation, identifier: Any
    ) -> tuple[str, KeyMetadata, KmipRecord, bool]:
        """(uid, metadata, record, made through KMIP) of the object a request names, once the
        caller may run `operation` on it."""
        uid = self._uid(call, identifier)
        gate = call.principal.gate(action(operation), uid)
        try:
            meta = await self.service.describe(uid, access=self._owner_check(call, uid, gate))
        except KeyNotFound:
            raise KmipFailure(R.ITEM_NOT_FOUND, f"Object {uid} not found") from None
        record = record_of(meta)
        if record is None:
            return uid, meta, kobjects.foreign_record(meta), False
        return uid, meta, record, True

    async def _change(
        self,
        call: Call,
        operation: enums.Operation,
        identifier: Any,
        change: Callable[[KmipRecord], KmipRecord],
    ) -> tuple[str, KmipRecord]:
        """Apply `change` to an object's record (compare-and-set; a lost race re-reads)."""
        uid = self._uid(call, identifier)
        gate = call.principal.gate(action(operation), uid)
        now = self._now()
        result: list[KmipRecord] = []

        def apply(meta: KeyMetadata) -> KeyMetadata:
            record = record_of(meta)
            if record is None:
                raise KmipFailure(
                    R.PERMISSION_DENIED,
                    f"Object {uid} was made through the AWS or admin API: KMIP does not change it",
                )
            new = change(record)
            result[:] = [replace(new, last_change_date=now)]
            return new.apply(meta, record, now)

        try:
            await self.service.modify(uid, apply, access=self._owner_check(call, uid, gate))
        except KeyNotFound:
            raise KmipFailure(R.ITEM_NOT_FOUND, f"Object {uid} not found") from None
        return uid, result[0]

    def _new_record(self, call: Call, object_type: int, found: dict[str, Any]) -> KmipRecord:
        now = self._now()
        record = KmipRecord(
            owner=call.principal.arn,
            object_type=object_type,
            state=PRE_ACTIVE,
            initial_date=now,
            last_change_date=now,
        )
        record = attrs.apply_settable(record, found)
        if record.activation_date is not None and record.activation_date <= now:
            record = replace(record, state=ACTIVE)
        return record

    # -- Create, Register -------------------------------------------------------------------

    async def create(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        if payload.object_type is not OT.SYMMETRIC_KEY:
            kind = getattr(payload.object_type, "name", payload.object_type)
            raise KmipFailure(R.INVALID_FIELD, f"Create makes symmetric keys, not {kind}")
        found = attrs.parse_template(template_attributes(payload.template_attribute))
        algorithm = found.pop("Cryptographic Algorithm", None)
        length = found.pop("Cryptographic Length", None)
        if algorithm is None:
            raise KmipFailure(R.INVALID_FIELD, "Cryptographic Algorithm is missing")
        if algorithm == enums.CryptographicAlgorithm.AES and length is None:
            raise KmipFailure(R.INVALID_FIELD, "Cryptographic Length is missing")
        spec, usage = kobjects.symmetric_spec(algorithm, length)
        bits = int(length) if length is not None else int(spec.split("_")[1])
        found.setdefault(
            "Cryptographic Usage Mask",
            kobjects.ENCRYPT_DECRYPT if usage == "ENCRYPT_DECRYPT" else kobjects.MAC,
        )
        record = replace(
            self._new_record(call, OT.SYMMETRIC_KEY.value, found),
            algorithm=algorithm.value,
            length=bits,
        )
        uid = self.service.new_key_id()
        call.principal.authorize(action(Op.CREATE), uid)
        await self.service.create_key(
            uid,
            key_spec=spec,
            key_usage=usage,
            kmip=record.dump(),
            lookup=record.terms(),
            state=record.key_state(),
        )
        return payloads.CreateResponsePayload(
            object_type=OT.SYMMETRIC_KEY, unique_identifier=uid
        ), uid

    async def register(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        uid = self.service.new_key_id()
        call.principal.authorize(action(Op.REGISTER), uid)  # before any material is read
        spec, usage, material, fields = kobjects.registered(payload.managed_object)
        if payload.object_type is not None and payload.object_type.value != fields["object_type"]:
            raise KmipFailure(R.INVALID_FIELD, "Object Type does not match the managed object")
        found = attrs.parse_template(template_attributes(payload.template_attribute))
        found.pop("Cryptographic Algorithm", None)
        found.pop("Cryptographic Length", None)
        record = replace(self._new_record(call, fields["object_type"], found), **fields)
        await self.service.create_with_material(
            uid,
            material,
            key_spec=spec,
            key_usage=usage,
            kmip=record.dump(),
            lookup=record.terms(),
            state=record.key_state(),
        )
        return payloads.RegisterResponsePayload(unique_identifier=uid), uid

    # -- Locate, Get, attributes ------------------------------------------------------------

    async def locate(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        principal = call.principal
        principal.authorize(action(Op.LOCATE))
        wanted = list(payload.attributes or ())
        for attribute in wanted:
            name = attribute.attribute_name.value
            if name not in _LOCATABLE and not attrs.is_custom(name):
                raise KmipFailure(R.INVALID_FIELD, f"Locate by {name} is not supported")
        found: list[tuple[int, str]] = []
        for meta in await self._candidates(principal, wanted):
            record = record_of(meta)
            if record is None or (record.owner != principal.arn and not principal.is_root):
                continue
            if attrs.matches(meta.key_id, record, wanted):
                found.append((record.initial_date, meta.key_id))
        found.sort(key=lambda pair: (-pair[0], pair[1]))  # newest first
        offset = payload.offset_items or 0
        limit = payload.maximum_items if payload.maximum_items is not None else MAX_LOCATE
        chosen = [uid for _, uid in found[offset : offset + min(limit, MAX_LOCATE)]]
        located = len(found) if call.version >= (1, 3) else None
        answer = payloads.LocateResponsePayload(located_items=located, unique_identifiers=chosen)
        return answer, chosen[0] if len(chosen) == 1 else None

    async def _candidates(self, principal: Principal, wanted: Sequence[Any]) -> list[KeyMetadata]:
        """The objects a Locate must look at, by the keystore's lookup index (record.terms):
        the caller's objects of the Name asked for, or all the caller's objects; never a scan of
        every key (Ceph RGW sends a Locate by Name for every S3 request)."""
        if principal.is_root:
            return [meta async for meta in self.service.iter_keys()]
        names = [attrs.plain_value(a) for a in wanted if a.attribute_name.value == "Name"]
        if names and isinstance(names[0], str):
            term = name_term(principal.arn, names[0])
        else:
            term = owner_term(principal.arn)
        return await self.service.find_keys(term, limit=MAX_CANDIDATES)

    async def get(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        if payload.key_wrapping_specification is not None:
            raise KmipFailure(R.FEATURE_NOT_SUPPORTED, "Key wrapping on Get is not supported yet")
        if payload.key_compression_type is not None:
            raise KmipFailure(
                R.KEY_COMPRESSION_TYPE_NOT_SUPPORTED, "Key compression is not supported"
            )
        uid = self._uid(call, payload.unique_identifier)
        gate = self._owner_check(call, uid, call.principal.gate(action(Op.GET), uid))

        def extractable(meta: KeyMetadata) -> None:
            gate(meta)
            record = record_of(meta)
            if record is None or not record.extractable:
                raise KmipFailure(
                    R.PERMISSION_DENIED,
                    f"The material of object {uid} is not extractable"
                    + ("" if record else ": it was made through the AWS or admin API"),
                )
            held = record.held_elsewhere(meta)
            if held is not None:
                raise KmipFailure(R.WRONG_KEY_LIFECYCLE_STATE, f"Object {uid} is {held}")

        # One read of the object: its checks run on the metadata the material is read with.
        try:
            meta, material = await self.service.export_material(uid, access=extractable)
        except KeyNotFound:
            raise KmipFailure(R.ITEM_NOT_FOUND, f"Object {uid} not found") from None
        record = record_of(meta)
        assert record is not None  # (extractable() refused any other key)
        secret = kobjects.core_object(record, material, payload.key_format_type)
        answer = payloads.GetResponsePayload(
            object_type=OT(record.object_type), unique_identifier=uid, secret=secret
        )
        return answer, uid

    async def get_attributes(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        uid, _, record, _ = await self._object(call, Op.GET_ATTRIBUTES, payload.unique_identifier)
        names = list(payload.attribute_names or ())
        found = attrs.to_attributes(attrs.values_of(uid, record), names or None, call.version)
        return payloads.GetAttributesResponsePayload(unique_identifier=uid, attributes=found), uid

    async def get_attribute_list(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        uid, _, record, _ = await self._object(
            call, Op.GET_ATTRIBUTE_LIST, payload.unique_identifier
        )
        answer = payloads.GetAttributeListResponsePayload(
            unique_identifier=uid, attribute_names=attrs.names_of(uid, record)
        )
        return answer, uid

    async def modify_attribute(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        attribute = payload.attribute
        if attribute is None:  # KMIP 2.0's form: New Attribute (the first instance changes)
            new = payload.new_attribute
            if new is None:
                raise KmipFailure(R.INVALID_FIELD, "Modify Attribute needs an attribute")
            attribute = _attribute_of_2_0(new)
        uid, _ = await self._change(
            call, Op.MODIFY_ATTRIBUTE, payload.unique_identifier,
            lambda r: attrs.modify(r, attribute),
        )  # fmt: skip
        # (a fresh attribute: PyKMIP re-encodes a decoded text of 8n bytes with 8 bytes too many)
        echoed = None
        if call.version < (2, 0):
            name = attribute.attribute_name.value
            index = attribute.attribute_index.value if attribute.attribute_index else None
            echoed = attrs.make_attribute(name, attrs.plain_value(attribute), index)
        answer = payloads.ModifyAttributeResponsePayload(unique_identifier=uid, attribute=echoed)
        return answer, uid

    async def add_attribute(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        if call.version >= (2, 0):
            attribute = _attribute_of_2_0(payload.new_attribute)
        elif payload.attribute is not None:
            attribute = payload.attribute
        else:
            raise KmipFailure(R.INVALID_FIELD, "Add Attribute needs an attribute")
        name = attribute.attribute_name.value
        added: list[Any] = []

        def change(record: KmipRecord) -> KmipRecord:
            new, index = attrs.add(record, attribute)
            added[:] = [attrs.make_attribute(name, attrs.plain_value(attribute), index)]
            return new

        uid, _ = await self._change(call, Op.ADD_ATTRIBUTE, payload.unique_identifier, change)
        answer = AddAttributeResponsePayload(
            unique_identifier=uid, attribute=added[0] if call.version < (2, 0) else None
        )
        return answer, uid

    async def set_attribute(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        attribute = _attribute_of_2_0(payload.new_attribute)
        name = attribute.attribute_name.value

        def change(record: KmipRecord) -> KmipRecord:
            if name in attrs.MULTI_VALUED:
                raise KmipFailure(
                    R.MULTI_VALUED_ATTRIBUTE, f"{name} is multi-valued: use Add Attribute"
                )
            return attrs.set_single(record, name, attrs.plain_value(attribute))

        uid, _ = await self._change(call, Op.SET_ATTRIBUTE, payload.unique_identifier, change)
        return payloads.SetAttributeResponsePayload(unique_identifier=uid), uid

    async def delete_attribute(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        if payload.attribute_name is not None:
            name = payload.attribute_name
            index = payload.attribute_index
        elif payload.current_attribute is not None:
            name = _attribute_of_2_0(payload.current_attribute).attribute_name.value
            index = None
        elif payload.attribute_reference is not None:
            name = payload.attribute_reference.attribute_name
            index = None
        else:
            raise KmipFailure(R.INVALID_FIELD, "Delete Attribute needs an attribute name")
        deleted: list[Any] = []

        def change(record: KmipRecord) -> KmipRecord:
            before = [v for n, v in attrs.values_of("", record) if n == name]
            position = index or 0
            if 0 <= position < len(before):
                deleted[:] = [attrs.make_attribute(name, before[position], index)]
            return attrs.delete(record, name, index)

        uid, _ = await self._change(call, Op.DELETE_ATTRIBUTE, payload.unique_identifier, change)
        answer = payloads.DeleteAttributeResponsePayload(
            unique_identifier=uid,
            attribute=deleted[0] if deleted and call.version < (2, 0) else None,
        )
        return answer, uid

    # -- the life cycle ---------------------------------------------------------------------

    async def activate(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        now = self._now()

        def change(record: KmipRecord) -> KmipRecord:
            if record.state != PRE_ACTIVE:
                raise KmipFailure(
                    R.PERMISSION_DENIED, "The object is not pre-active and cannot be activated"
                )
            return replace(record, state=ACTIVE, activation_date=now)

        uid, _ = await self._change(call, Op.ACTIVATE, _identifier(payload), change)
        answer = payloads.ActivateResponsePayload(unique_identifier=_unique_identifier(uid))
        return answer, uid

    async def revoke(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        now = self._now()
        reason = payload.revocation_reason
        if reason is None or reason.revocation_code is None:
            raise KmipFailure(R.INVALID_FIELD, "Revocation Reason is missing")
        code = reason.revocation_code.value
        message = reason.revocation_message.value if reason.revocation_message else None
        occurred = payload.compromise_occurrence_date
        occurred_at = int(occurred.value) if occurred is not None else None

        def change(record: KmipRecord) -> KmipRecord:
            revoked = replace(record, revocation_reason=code.value, revocation_message=message)
            if code in (
                enums.RevocationReasonCode.KEY_COMPROMISE,
                enums.RevocationReasonCode.CA_COMPROMISE,
            ):
                return replace(
                    revoked,
                    state=COMPROMISED,
                    compromise_date=now,
                    compromise_occurrence_date=occurred_at or now,
                )
            if record.state == COMPROMISED:
                return record  # a compromised object stays so
            return replace(
                revoked, state=DEACTIVATED, deactivation_date=record.deactivation_date or now
            )

        uid, _ = await self._change(call, Op.REVOKE, _identifier(payload), change)
        answer = payloads.RevokeResponsePayload(unique_identifier=_unique_identifier(uid))
        return answer, uid

    async def destroy(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        uid, _, record, kmip = await self._object(call, Op.DESTROY, payload.unique_identifier)
        if not kmip:
            raise KmipFailure(
                R.PERMISSION_DENIED,
                f"Object {uid} was made through the AWS or admin API: schedule its deletion there",
            )
        if record.state == ACTIVE:
            raise KmipFailure(
                R.PERMISSION_DENIED, "The object is active and cannot be destroyed: revoke it first"
            )
        await self.service.destroy_now(uid)
        return payloads.DestroyResponsePayload(unique_identifier=_unique_identifier(uid)), None

    # -- the server -------------------------------------------------------------------------

    @staticmethod
    def served(version: tuple[int, int]) -> frozenset[enums.Operation]:
        """The operations served in a protocol version (Query's answer): the handlers'."""
        from s3kms.protocols.kmip.handlers import served

        return served(version)

    async def query(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        call.principal.authorize(action(Op.QUERY))
        asked = set(payload.query_functions or ())
        answer = payloads.QueryResponsePayload()
        if enums.QueryFunction.QUERY_OPERATIONS in asked:
            answer.operations = sorted(self.served(call.version), key=lambda op: op.value)
        if enums.QueryFunction.QUERY_OBJECTS in asked:
            answer.object_types = [
                OT.SYMMETRIC_KEY, OT.PRIVATE_KEY, OT.PUBLIC_KEY, OT.CERTIFICATE,
                OT.SECRET_DATA, OT.OPAQUE_DATA, OT.SPLIT_KEY,
            ]  # fmt: skip
        if enums.QueryFunction.QUERY_SERVER_INFORMATION in asked:
            answer.vendor_identification = "s3kms"
            answer.server_information = misc.ServerInformation()
        return answer, None

    async def discover_versions(self, call: Call, payload: Any) -> tuple[Any, str | None]:
        offered = [(v.major, v.minor) for v in (payload.protocol_versions or ())]
        chosen = [v for v in offered if v in VERSIONS] if offered else list(VERSIONS)
        versions = [contents.ProtocolVersion(major, minor) for major, minor in chosen]
        return payloads.DiscoverVersionsResponsePayload(protocol_versions=versions), None


_LOCATABLE = frozenset(
    {
        "Name", "Object Type", "Cryptographic Algorithm", "Cryptographic Length", "State",
        "Cryptographic Usage Mask", "Object Group", "Application Specific Information",
        "Operation Policy Name", "Initial Date", "Activation Date", "Deactivation Date",
        "Last Change Date", "Unique Identifier", "Contact Information",
    }
)  # fmt: skip


def template_attributes(template: Any) -> Sequence[Any]:
    if template is None:
        return ()
    if getattr(template, "names", None):
        raise KmipFailure(R.ITEM_NOT_FOUND, "Attribute templates are not supported")
    return list(template.attributes or ())


def _attribute_of_2_0(new_attribute: Any) -> Any:
    """A KMIP 2.0 New/Current Attribute as the 1.x Attribute the rest of this code reads."""
    value = getattr(new_attribute, "attribute", new_attribute)
    if value is None:
        raise KmipFailure(R.INVALID_FIELD, "The attribute is missing")
    if isinstance(value, objects.Attribute):
        return value
    tag = value.tag
    name = _NAME_OF_TAG.get(tag)
    if name is None:
        raise KmipFailure(R.INVALID_FIELD, f"The attribute {tag.name} is not supported")
    return objects.Attribute(
        attribute_name=objects.Attribute.AttributeName(name), attribute_value=value
    )


_NAME_OF_TAG = {
    enums.Tags.NAME: "Name",
    enums.Tags.OBJECT_GROUP: "Object Group",
    enums.Tags.CRYPTOGRAPHIC_USAGE_MASK: "Cryptographic Usage Mask",
    enums.Tags.OPERATION_POLICY_NAME: "Operation Policy Name",
    enums.Tags.CONTACT_INFORMATION: "Contact Information",
    enums.Tags.APPLICATION_SPECIFIC_INFORMATION: "Application Specific Information",
    enums.Tags.SENSITIVE: "Sensitive",
    enums.Tags.EXTRACTABLE: "Extractable",
    enums.Tags.ACTIVATION_DATE: "Activation Date",
    enums.Tags.DEACTIVATION_DATE: "Deactivation Date",
}


def _identifier(payload: Any) -> Any:
    uid = payload.unique_identifier
    return None if uid is None else uid.value if hasattr(uid, "value") else uid


def _unique_identifier(uid: str) -> Any:
    return core_attributes.UniqueIdentifier(uid)
