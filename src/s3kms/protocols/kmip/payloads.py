"""The payloads PyKMIP 0.11 has no classes for: Add Attribute (KMIP 1.0) and MAC Verify (1.2).

Written in PyKMIP's own style (a Struct that reads and writes its fields), and registered with
PyKMIP's payload factories, which raise NotImplementedError for both otherwise, so that a
message holding them decodes like any other. `install()` runs once, at import of the
KMIP package.
"""

from __future__ import annotations

from typing import Any

from kmip.core import attributes, enums, objects, primitives
from kmip.core.factories.payloads.request import RequestPayloadFactory
from kmip.core.factories.payloads.response import ResponsePayloadFactory
from kmip.core.messages.payloads import base
from kmip.core.utils import BytearrayStream

Tags = enums.Tags
V2 = enums.KMIPVersion.KMIP_2_0


def _unique_identifier(payload: Any, stream: Any, version: Any) -> Any:
    if payload.is_tag_next(Tags.UNIQUE_IDENTIFIER, stream):
        value = primitives.TextString(tag=Tags.UNIQUE_IDENTIFIER)
        value.read(stream, kmip_version=version)
        return value.value
    return None


def _write_uid(stream: Any, uid: str | None, version: Any) -> None:
    if uid is not None:
        primitives.TextString(uid, Tags.UNIQUE_IDENTIFIER).write(stream, kmip_version=version)


class AddAttributeRequestPayload(base.RequestPayload):  # type: ignore[misc]
    """Unique Identifier (optional: the ID Placeholder), then Attribute (1.x) or New Attribute
    (2.0)."""

    def __init__(
        self, unique_identifier: str | None = None, attribute: Any = None, new_attribute: Any = None
    ) -> None:
        super().__init__()
        self.unique_identifier = unique_identifier
        self.attribute = attribute
        self.new_attribute = new_attribute

    def read(self, istream: Any, kmip_version: Any = enums.KMIPVersion.KMIP_1_0) -> None:
        super().read(istream, kmip_version=kmip_version)
        stream = BytearrayStream(istream.read(self.length))
        self.unique_identifier = _unique_identifier(self, stream, kmip_version)
        if kmip_version >= V2:
            self.new_attribute = objects.NewAttribute()
            self.new_attribute.read(stream, kmip_version=kmip_version)
        else:
            self.attribute = objects.Attribute()
            self.attribute.read(stream, kmip_version=kmip_version)
        self.is_oversized(stream)

    def write(self, ostream: Any, kmip_version: Any = enums.KMIPVersion.KMIP_1_0) -> None:
        stream = BytearrayStream()
        _write_uid(stream, self.unique_identifier, kmip_version)
        chosen = self.new_attribute if kmip_version >= V2 else self.attribute
        chosen.write(stream, kmip_version=kmip_version)
        self.length = stream.length()
        super().write(ostream, kmip_version=kmip_version)
        ostream.write(stream.buffer)


class AddAttributeResponsePayload(base.ResponsePayload):  # type: ignore[misc]
    """Unique Identifier, and in 1.x the Attribute as added (with its index)."""

    def __init__(self, unique_identifier: str | None = None, attribute: Any = None) -> None:
        super().__init__()
        self.unique_identifier = unique_identifier
        self.attribute = attribute

    def read(self, istream: Any, kmip_version: Any = enums.KMIPVersion.KMIP_1_0) -> None:
        super().read(istream, kmip_version=kmip_version)
        stream = BytearrayStream(istream.read(self.length))
        self.unique_identifier = _unique_identifier(self, stream, kmip_version)
        if kmip_version < V2 and self.is_tag_next(Tags.ATTRIBUTE, stream):
            self.attribute = objects.Attribute()
            self.attribute.read(stream, kmip_version=kmip_version)
        self.is_oversized(stream)

    def write(self, ostream: Any, kmip_version: Any = enums.KMIPVersion.KMIP_1_0) -> None:
        stream = BytearrayStream()
        _write_uid(stream, self.unique_identifier, kmip_version)
        if kmip_version < V2 and self.attribute is not None:
            self.attribute.write(stream, kmip_version=kmip_version)
        self.length = stream.length()
        super().write(ostream, kmip_version=kmip_version)
        ostream.write(stream.buffer)


class MACVerifyRequestPayload(base.RequestPayload):  # type: ignore[misc]
    """Unique Identifier, Cryptographic Parameters, Data, MAC Data (no streaming)."""

    def __init__(
        self,
        unique_identifier: str | None = None,
        cryptographic_parameters: Any = None,
        data: bytes | None = None,
        mac_data: bytes | None = None,
    ) -> None:
        super().__init__()
        self.unique_identifier = unique_identifier
        self.cryptographic_parameters = cryptographic_parameters
        self.data = data
        self.mac_data = mac_data

    def read(self, istream: Any, kmip_version: Any = enums.KMIPVersion.KMIP_1_0) -> None:
        super().read(istream, kmip_version=kmip_version)
        stream = BytearrayStream(istream.read(self.length))
        self.unique_identifier = _unique_identifier(self, stream, kmip_version)
        if self.is_tag_next(Tags.CRYPTOGRAPHIC_PARAMETERS, stream):
            self.cryptographic_parameters = attributes.CryptographicParameters()
            self.cryptographic_parameters.read(stream, kmip_version=kmip_version)
        for name, tag, kind in (
            ("data", Tags.DATA, objects.Data),
            ("mac_data", Tags.MAC_DATA, objects.MACData),
        ):
            if self.is_tag_next(tag, stream):
                value = kind()
                value.read(stream, kmip_version=kmip_version)
                setattr(self, name, value.value)
        self.is_oversized(stream)

    def write(self, ostream: Any, kmip_version: Any = enums.KMIPVersion.KMIP_1_0) -> None:
        stream = BytearrayStream()
        _write_uid(stream, self.unique_identifier, kmip_version)
        if self.cryptographic_parameters is not None:
            self.cryptographic_parameters.write(stream, kmip_version=kmip_version)
        if self.data is not None:
            objects.Data(self.data).write(stream, kmip_version=kmip_version)
        if self.mac_data is not None:
            objects.MACData(self.mac_data).write(stream, kmip_version=kmip_version)
        self.length = stream.length()
        super().write(ostream, kmip_version=kmip_version)
        ostream.write(stream.buffer)


class MACVerifyResponsePayload(base.ResponsePayload):  # type: ignore[misc]
    """Unique Identifier, Validity Indicator."""

    def __init__(self, unique_identifier: str | None = None, valid: bool | None = None) -> None:
        super().__init__()
        self.unique_identifier = unique_identifier
        self.valid = valid

    def read(self, istream: Any, kmip_version: Any = enums.KMIPVersion.KMIP_1_0) -> None:
        super().read(istream, kmip_version=kmip_version)
        stream = BytearrayStream(istream.read(self.length))
        self.unique_identifier = _unique_identifier(self, stream, kmip_version)
        indicator = primitives.Enumeration(enums.ValidityIndicator, tag=Tags.VALIDITY_INDICATOR)
        indicator.read(stream, kmip_version=kmip_version)
        self.valid = indicator.value is enums.ValidityIndicator.VALID
        self.is_oversized(stream)

    def write(self, ostream: Any, kmip_version: Any = enums.KMIPVersion.KMIP_1_0) -> None:
        stream = BytearrayStream()
        _write_uid(stream, self.unique_identifier, kmip_version)
        indicator = enums.ValidityIndicator.VALID if self.valid else enums.ValidityIndicator.INVALID
        primitives.Enumeration(enums.ValidityIndicator, indicator, Tags.VALIDITY_INDICATOR).write(
            stream, kmip_version=kmip_version
        )
        self.length = stream.length()
        super().write(ostream, kmip_version=kmip_version)
        ostream.write(stream.buffer)


def install() -> None:
    """Make PyKMIP's payload factories build these for their operations (its response factory
    too: a client of this codec, the tests', then reads the answers)."""
    RequestPayloadFactory._create_add_attribute_payload = lambda self: AddAttributeRequestPayload()
    RequestPayloadFactory._create_mac_verify_payload = lambda self: MACVerifyRequestPayload()
    ResponsePayloadFactory._create_add_attribute_payload = lambda self: (
        AddAttributeResponsePayload()
    )
    ResponsePayloadFactory._create_mac_verify_payload = lambda self: MACVerifyResponsePayload()
