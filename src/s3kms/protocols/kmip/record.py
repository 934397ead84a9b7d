"""A KMIP object's attributes as s3kms stores them: `KmipRecord`, kept in `KeyMetadata.kmip`.

A KMIP object is an s3kms key (an ARN, a row of `key/list`, an audit trail); what KMIP knows of
it beyond the key (its owner, type, names, state and dates, usage mask, groups, custom
attributes) is this record, stored as compact JSON with the key's metadata, so it is written by
the same compare-and-set update and reaches every worker and node as key state does. Enum
attributes are stored as their KMIP numbers; dates as epoch seconds (KMIP's Date-Time).

The key's own state follows the KMIP state (`key_state`): an object is usable through the other
surfaces (the AWS API's Encrypt of an AES-256 object, GenerateMac of an HMAC one) only while it
is Active.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from kmip.core import enums

from s3kms.model import KeyMetadata, KeyState

# KMIP's numbers, named (enums.State).
PRE_ACTIVE = enums.State.PRE_ACTIVE.value
ACTIVE = enums.State.ACTIVE.value
DEACTIVATED = enums.State.DEACTIVATED.value
COMPROMISED = enums.State.COMPROMISED.value


@dataclass(frozen=True, slots=True)
class KmipRecord:
    owner: str  # the principal ARN of the identity that made it: objects are scoped to it
    object_type: int  # enums.ObjectType
    state: int  # enums.State
    initial_date: int
    last_change_date: int
    algorithm: int | None = None  # enums.CryptographicAlgorithm
    length: int | None = None  # Cryptographic Length, bits
    usage_mask: int = 0  # Cryptographic Usage Mask (enums.CryptographicUsageMask bits)
    names: tuple[str, ...] = ()
    activation_date: int | None = None
    deactivation_date: int | None = None
    compromise_date: int | None = None
    compromise_occurrence_date: int | None = None
    revocation_reason: int | None = None  # enums.RevocationReasonCode
    revocation_message: str | None = None
    object_groups: tuple[str, ...] = ()
    app_info: tuple[tuple[str, str], ...] = ()  # Application Specific Information
    custom: tuple[tuple[str, str], ...] = ()  # x-/y- attributes (text values)
    data_type: int | None = None  # Secret Data / Opaque Data / Certificate Type
    key_format: int | None = None  # enums.KeyFormatType a Get answers by default
    # A Split Key's Split Key Parts, Key Part Identifier, Split Key Threshold, Split Key Method,
    # Prime Field Size (0: none).
    split: tuple[int, ...] = ()
    # A key registered wrapped, kept as given: its Key Wrapping Data's Wrapping Method, the
    # wrapping key's Unique Identifier, Block Cipher Mode (0: none) and Encoding Option.
    wrapping: tuple[Any, ...] = ()
    operation_policy_name: str | None = None
    sensitive: bool = False
    contact_information: str | None = None
    extractable: bool = True  # KMIP 2.0's Extractable: Get may return the material
    links: tuple[tuple[int, str], ...] = field(default=())  # (enums.LinkType, unique id)

    def dump(self) -> str:
        data = {k: v for k, v in asdict(self).items() if v not in (None, (), [], False, 0)}
        data["owner"], data["object_type"], data["state"] = self.owner, self.object_type, self.state
        data["extractable"] = self.extractable
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def load(cls, text: str) -> KmipRecord:
        data: dict[str, Any] = json.loads(text)
        for name in ("names", "object_groups", "split", "wrapping"):
            data[name] = tuple(data.get(name, ()))
        for name in ("app_info", "custom", "links"):
            data[name] = tuple(tuple(pair) for pair in data.get(name, ()))
        return cls(**data)

    def key_state(self) -> KeyState:
        """The s3kms state of the key this object is: usable while Active only."""
        return KeyState.ENABLED if self.state == ACTIVE else KeyState.DISABLED

    def apply(self, meta: KeyMetadata, before: KmipRecord, now: int) -> KeyMetadata:
        """`meta` carrying this record (with its Last Change Date now). The key's state follows
        a change of the KMIP state only: a key another API disabled stays disabled while KMIP
        changes its names, and a key scheduled for deletion stays so whatever KMIP does."""
        record = replace(self, last_change_date=now)
        state = meta.state
        if record.state != before.state and meta.state in _FOLLOWS:
            state = record.key_state()
        return replace(meta, kmip=record.dump(), state=state, lookup=record.terms())

    def terms(self) -> tuple[str, ...]:
        """The lookup terms the keystore indexes this object by (KeyMetadata.lookup): its owner,
        and each of its Names with its owner, so that Locate reads the caller's objects (by
        Name: those of that Name) and no other key."""
        names = dict.fromkeys(name_term(self.owner, name) for name in self.names)
        return (owner_term(self.owner), *names)

    def held_elsewhere(self, meta: KeyMetadata) -> str | None:
        """Why the key may not serve KMIP now although its KMIP state would let it: another API
        scheduled its deletion, or disabled it while it is Active; None when nothing stops it."""
        if meta.state not in _FOLLOWS and meta.state is not KeyState.PENDING_IMPORT:
            return "pending deletion"
        if self.state == ACTIVE and meta.state is not KeyState.ENABLED:
            return "disabled through another API"
        return None


# The key states a KMIP state decides (others, PendingDeletion, are the AWS API's).
_FOLLOWS = frozenset({KeyState.ENABLED, KeyState.DISABLED})


def owner_term(owner: str) -> str:
    return "kmip-owner:" + hashlib.sha256(owner.encode()).hexdigest()[:40]


def name_term(owner: str, name: str) -> str:
    digest = hashlib.sha256(owner.encode() + b"\x00" + name.encode()).hexdigest()
    return "kmip-name:" + digest[:40]


def record_of(meta: KeyMetadata) -> KmipRecord | None:
    """The KMIP record of a key, or None for a key made through another API."""
    return _parsed(meta.kmip) if meta.kmip is not None else None


# Records are immutable and their text is their identity: Locate and every request parse the
# same few texts again and again (a frozen record is safe to share).
_parsed = functools.lru_cache(maxsize=16384)(KmipRecord.load)
