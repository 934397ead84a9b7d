"""Which handler serves which KMIP operation, from which protocol version, and which operations
change state (their audit intent is written first)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from kmip.core import enums

from s3kms.protocols.kmip.crypto_operations import CryptoOperations as KmipOperations
from s3kms.protocols.kmip.operations import Call

Op = enums.Operation
Handler = Callable[[KmipOperations, Call, Any], Awaitable[tuple[Any, str | None]]]

HANDLERS: dict[enums.Operation, Handler] = {
    Op.CREATE: KmipOperations.create,
    Op.CREATE_KEY_PAIR: KmipOperations.create_key_pair,
    Op.REGISTER: KmipOperations.register,
    Op.REKEY: KmipOperations.rekey,
    Op.DERIVE_KEY: KmipOperations.derive_key,
    Op.LOCATE: KmipOperations.locate,
    Op.GET: KmipOperations.get,
    Op.GET_ATTRIBUTES: KmipOperations.get_attributes,
    Op.GET_ATTRIBUTE_LIST: KmipOperations.get_attribute_list,
    Op.MODIFY_ATTRIBUTE: KmipOperations.modify_attribute,
    Op.SET_ATTRIBUTE: KmipOperations.set_attribute,
    Op.DELETE_ATTRIBUTE: KmipOperations.delete_attribute,
    Op.ACTIVATE: KmipOperations.activate,
    Op.REVOKE: KmipOperations.revoke,
    Op.DESTROY: KmipOperations.destroy,
    Op.QUERY: KmipOperations.query,
    Op.DISCOVER_VERSIONS: KmipOperations.discover_versions,
    Op.ENCRYPT: KmipOperations.encrypt,
    Op.DECRYPT: KmipOperations.decrypt,
    Op.SIGN: KmipOperations.sign,
    Op.SIGNATURE_VERIFY: KmipOperations.signature_verify,
    Op.MAC: KmipOperations.mac,
    Op.MAC_VERIFY: KmipOperations.mac_verify,
    Op.ADD_ATTRIBUTE: KmipOperations.add_attribute,
}
# What changes state: its intent is on the audit record before it runs.
CHANGES = frozenset(
    {
        Op.CREATE, Op.CREATE_KEY_PAIR, Op.REGISTER, Op.REKEY, Op.DERIVE_KEY,
        Op.ADD_ATTRIBUTE, Op.MODIFY_ATTRIBUTE, Op.SET_ATTRIBUTE, Op.DELETE_ATTRIBUTE, Op.ACTIVATE, Op.REVOKE,
        Op.DESTROY,
    }
)  # fmt: skip
# Operations by the protocol version that introduced them (served from there on).
# DiscoverVersions (1.1) is served in every version: a client negotiates with it.
_SINCE = {
    Op.ENCRYPT: (1, 2), Op.DECRYPT: (1, 2), Op.SIGN: (1, 2), Op.SIGNATURE_VERIFY: (1, 2),
    Op.MAC: (1, 2), Op.MAC_VERIFY: (1, 2),
    Op.SET_ATTRIBUTE: (2, 0),
}  # fmt: skip


@functools.cache
def served(version: tuple[int, int]) -> frozenset[enums.Operation]:
    """The operations served in a protocol version."""
    return frozenset(op for op in HANDLERS if version >= _SINCE.get(op, (1, 0)))
