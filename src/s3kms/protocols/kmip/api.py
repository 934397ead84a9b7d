"""One KMIP request message in, one response message out: TTLV decoding and encoding (PyKMIP's
message classes), the request header's rules, the batch, the caller, audit lines and metrics.

- The response is in the request's protocol version (Ceph sends 1.0, PyKMIP 1.2); every batch
  item echoes its Operation and Unique Batch Item ID.
- A message that does not decode is answered Invalid Message (in the version its header names,
  when that much can be read), an operation s3kms does not serve Operation Not Supported; no
  input closes the connection but a frame the listener cannot delimit (http/kmip.py).
- Batch items run in order; with the Batch Error Continuation Option Stop (the default) the
  first failure ends the batch, with Continue every item runs; Undo is refused. An item may
  omit its Unique Identifier to name the object of the item before it (the ID Placeholder).
- A response over the request's Maximum Response Size is replaced by a Response Too Large
  error, which always fits.
- Each batch item is one audit line (its action `kmip:<Operation>`, its object, the caller),
  and an intent line before an item that changes state: no line, no change.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

from kmip.core import enums, utils
from kmip.core.messages import contents, messages

from s3kms.audit import AuditLog
from s3kms.auth.identity import Principal
from s3kms.auth.kmip import KmipAuthenticator
from s3kms.errors import AuditUnavailable, KMSError
from s3kms.metrics import Metrics
from s3kms.protocols.kmip.crypto_operations import CryptoOperations
from s3kms.protocols.kmip.errors import KmipFailure, reason_of
from s3kms.protocols.kmip.handlers import CHANGES, HANDLERS, served
from s3kms.protocols.kmip.operations import Call, action
from s3kms.request import current_request_id
from s3kms.runtime import Runtime

log = logging.getLogger("s3kms.kmip")

R = enums.ResultReason
_KMIP_VERSIONS = {
    (1, 0): enums.KMIPVersion.KMIP_1_0,
    (1, 1): enums.KMIPVersion.KMIP_1_1,
    (1, 2): enums.KMIPVersion.KMIP_1_2,
    (1, 3): enums.KMIPVersion.KMIP_1_3,
    (1, 4): enums.KMIPVersion.KMIP_1_4,
    (2, 0): enums.KMIPVersion.KMIP_2_0,
}
_OPERATION_TAG = b"\x42\x00\x5c\x05\x00\x00\x00\x04"
_DENIALS = frozenset({R.PERMISSION_DENIED, R.AUTHENTICATION_NOT_SUCCESSFUL})
MAX_BATCH_ITEMS = 256  # per request message: each is an operation with its own audit line
# The least a Maximum Response Size must leave: a Response Too Large answer fits in it.
_SMALLEST_ANSWER = 256


class KmipAPI:
    def __init__(
        self,
        runtime: Runtime,
        authenticator: KmipAuthenticator,
        *,
        audit: AuditLog | None,
        metrics: Metrics | None = None,
        new_request_id: Callable[[], str] | None = None,
    ) -> None:
        self.runtime = runtime
        self.authenticator = authenticator
        self.audit = audit
        self.metrics = metrics
        self._new_request_id = new_request_id

    # -- the message ------------------------------------------------------------------------

    async def handle(self, data: bytes, identity: str, source: tuple[str, int] | None) -> bytes:
        """The encoded response to one encoded request message."""
        request_id = self._new_request_id() if self._new_request_id else None
        current_request_id.set(request_id)
        started = time.perf_counter()
        version = _header_version(data)
        request = messages.RequestMessage()
        try:
            request.read(utils.BytearrayStream(data), kmip_version=enums.KMIPVersion.KMIP_1_0)
        except Exception:  # PyKMIP raises many kinds for malformed TTLV
            operation = _operation_of(data)
            if operation is not None and operation not in HANDLERS:
                return self._error(
                    version,
                    R.OPERATION_NOT_SUPPORTED,
                    f"{operation.name} is not supported",
                    operation,
                    _batch_item_id_of(data),
                )
            return self._error(version, R.INVALID_MESSAGE, "The request message is malformed")
        header = request.request_header
        version = (header.protocol_version.major, header.protocol_version.minor)
        if version not in _KMIP_VERSIONS:
            return self._error(
                (2, 0),
                R.INVALID_MESSAGE,
                f"Protocol version {version[0]}.{version[1]} is not supported",
            )
        failure = self._check_header(header, request.batch_items)
        if failure is not None:
            return self._error(version, *failure)
        ip = source[0] if source else None
        source_text = f"{source[0]}:{source[1]}" if source else None
        try:  # (the rate limit counts a request message once, whatever its batch)
            principal = self.authenticator.principal(identity, source_ip=ip)
        except KMSError as exc:  # SlowDown
            return self._error(version, reason_of(exc), exc.message)
        refusal = None
        if principal is None:
            refusal = "The client certificate is not an identity of this server"
        elif not self._credential_ok(header, principal):
            refusal = (
                "The credential is not the access key and secret key of the certificate's user"
            )
        if refusal is not None or principal is None:
            self._audit_refusal(request_id, source_text, started)
            return self._error(version, R.AUTHENTICATION_NOT_SUCCESSFUL, refusal or "")
        stop = header.batch_error_cont_option is None or (
            header.batch_error_cont_option.value is enums.BatchErrorContinuationOption.STOP
        )
        items = []
        placeholder: str | None = None
        for item in request.batch_items:
            # The principal records the item's action and object for its audit line.
            principal.action = principal.key_id = None
            answer, placeholder, failed = await self._item(
                item, principal, version, placeholder, request_id, source_text
            )
            items.append(answer)
            if failed and stop:
                break
        try:
            encoded = _encode(_response(version, items), version)
        except Exception:
            log.exception("KMIP request %s: the response does not encode", request_id)
            first = request.batch_items[0] if len(request.batch_items) == 1 else None
            batch_id = first.unique_batch_item_id if first is not None else None
            return self._error(
                version,
                R.GENERAL_FAILURE,
                f"internal error; request id {request_id}",
                first.operation.value if first is not None else None,
                batch_id.value if batch_id is not None else None,
            )
        limit = header.maximum_response_size.value if header.maximum_response_size else None
        if limit is not None and len(encoded) > max(limit, _SMALLEST_ANSWER):
            return self._error(
                version, R.RESPONSE_TOO_LARGE, f"The response is {len(encoded)} bytes, over {limit}"
            )
        return encoded

    def _check_header(self, header: Any, items: list[Any]) -> tuple[Any, str] | None:
        if header.asynchronous_indicator is not None and header.asynchronous_indicator.value:
            return R.INVALID_MESSAGE, "Asynchronous operations are not supported"
        option = header.batch_error_cont_option
        if option is not None and option.value is enums.BatchErrorContinuationOption.UNDO:
            return R.INVALID_MESSAGE, "Undo option for batch handling is not supported"
        if header.batch_count is None or header.batch_count.value != len(items) or not items:
            return R.INVALID_MESSAGE, "Batch Count does not match the batch items"
        if len(items) > MAX_BATCH_ITEMS:
            return R.INVALID_MESSAGE, f"A request has at most {MAX_BATCH_ITEMS} batch items"
        if len(items) > 1 and any(i.unique_batch_item_id is None for i in items):
            return R.INVALID_MESSAGE, "Batch item ID is undefined"
        return None

    def _credential_ok(self, header: Any, principal: Principal) -> bool:
        """A Username and Password credential, when the header carries one (Ceph can send it):
        the user's access key and secret key. Without one, the certificate decides alone."""
        authentication = header.authentication
        credentials = authentication.credentials if authentication is not None else None
        if not credentials:
            return True
        credential = credentials[0]
        if credential.credential_type is not enums.CredentialType.USERNAME_AND_PASSWORD:
            return False
        value = credential.credential_value
        username, password = value.username or "", value.password or ""
        secret = self.authenticator.secret_of(principal)
        return (
            secret is not None
            and hmac.compare_digest(username.encode(), principal.access_key.encode())
            and hmac.compare_digest(password.encode(), secret.encode())
        )

    # -- one batch item ---------------------------------------------------------------------

    async def _item(
        self,
        item: Any,
        principal: Principal,
        version: tuple[int, int],
        placeholder: str | None,
        request_id: str | None,
        source: str | None,
    ) -> tuple[Any, str | None, bool]:
        started = time.perf_counter()
        operation = item.operation.value
        caller = principal
        # An operation of a later protocol version than the request's is not served in it.
        handler = HANDLERS.get(operation) if operation in served(version) else None
        payload: Any = None
        reason: Any = None
        message = ""
        try:
            if handler is None:
                raise KmipFailure(R.OPERATION_NOT_SUPPORTED, f"{operation.name} is not supported")
            if operation in CHANGES:
                self._intent(request_id, caller, source, operation)
            async with self.runtime.use() as service:
                call = Call(caller, version, placeholder)
                payload, placeholder = await handler(
                    CryptoOperations(service), call, item.request_payload
                )
        except KmipFailure as exc:
            reason, message = exc.reason, exc.message
        except KMSError as exc:
            reason, message = reason_of(exc), exc.message
        except Exception:
            log.exception("KMIP request %s: %s failed", request_id, operation.name)
            reason = R.GENERAL_FAILURE
            message = f"internal error; request id {request_id}"
        failed = reason is not None
        if self.audit is not None:
            try:
                self._record(request_id, caller, source, operation, reason, started)
            except AuditUnavailable as exc:
                if operation not in CHANGES:  # a change whose intent is on record stands
                    payload, reason, message, failed = None, R.GENERAL_FAILURE, exc.message, True
        if self.metrics is not None:
            code = None if reason is None else reason.name
            self.metrics.request(action(operation), code, 0 if reason is None else 1, started)
        answer = messages.ResponseBatchItem(
            operation=contents.Operation(operation),
            unique_batch_item_id=item.unique_batch_item_id,
            result_status=contents.ResultStatus(
                enums.ResultStatus.OPERATION_FAILED if failed else enums.ResultStatus.SUCCESS
            ),
            result_reason=contents.ResultReason(reason) if reason is not None else None,
            result_message=contents.ResultMessage(message) if failed else None,
            response_payload=payload,
        )
        return answer, (None if failed else placeholder), failed

    # -- audit ------------------------------------------------------------------------------

    def _intent(
        self, request_id: str | None, caller: Principal, source: str | None, operation: Any
    ) -> None:
        if self.audit is None:
            return
        self.audit.record(
            request_id=request_id,
            principal=caller.access_key,
            source=source,
            action=action(operation),
            key=None,
            outcome="intent",
            status=0,
            error=None,
            started=time.perf_counter(),
        )

    def _record(
        self,
        request_id: str | None,
        caller: Principal,
        source: str | None,
        operation: Any,
        reason: Any,
        started: float,
    ) -> None:
        assert self.audit is not None
        outcome = "allowed" if reason is None else "denied" if reason in _DENIALS else "failed"
        self.audit.record(
            request_id=request_id,
            principal=caller.access_key,
            source=source,
            action=action(operation),
            key=caller.key_id,
            outcome=outcome,
            status=0 if reason is None else 1,
            error=None if reason is None else reason.name,
            started=started,
        )

    def _audit_refusal(self, request_id: str | None, source: str | None, started: float) -> None:
        audit = self.audit
        if audit is None or not audit.admit_unauthenticated():
            return
        with contextlib.suppress(AuditUnavailable):  # a refusal changes nothing
            audit.record(
                request_id=request_id,
                principal=None,
                source=source,
                action="kmip:",
                key=None,
                outcome="denied",
                status=1,
                error=R.AUTHENTICATION_NOT_SUCCESSFUL.name,
                started=started,
            )

    def _error(
        self,
        version: tuple[int, int],
        reason: Any,
        message: str,
        operation: Any = None,
        batch_item_id: bytes | None = None,
    ) -> bytes:
        if version not in _KMIP_VERSIONS:
            version = (1, 0)
        item = messages.ResponseBatchItem(
            operation=contents.Operation(operation) if operation is not None else None,
            unique_batch_item_id=(
                contents.UniqueBatchItemID(batch_item_id) if batch_item_id is not None else None
            ),
            result_status=contents.ResultStatus(enums.ResultStatus.OPERATION_FAILED),
            result_reason=contents.ResultReason(reason),
            result_message=contents.ResultMessage(message),
        )
        if self.metrics is not None:
            self.metrics.request("kmip:", reason.name, 1, time.perf_counter())
        return _encode(_response(version, [item]), version)


def _response(version: tuple[int, int], items: list[Any]) -> Any:
    header = messages.ResponseHeader(
        protocol_version=contents.ProtocolVersion(*version),
        time_stamp=contents.TimeStamp(int(time.time())),
        batch_count=contents.BatchCount(len(items)),
    )
    return messages.ResponseMessage(response_header=header, batch_items=items)


def _encode(response: Any, version: tuple[int, int]) -> bytes:
    stream = utils.BytearrayStream()
    response.write(stream, kmip_version=_KMIP_VERSIONS[version])
    return bytes(stream.buffer)


def _header_version(data: bytes) -> tuple[int, int]:
    """The protocol version a request's header names, read from its fixed position (so that
    a message that does not decode is still answered in its own version); (1, 0) if absent."""
    # Request Message, Request Header, Protocol Version (structures), then Major and Minor.
    if data[24:28] == b"\x42\x00\x6a\x02" and data[40:44] == b"\x42\x00\x6b\x02":
        major, minor = struct.unpack(">i", data[32:36])[0], struct.unpack(">i", data[48:52])[0]
        if (major, minor) in _KMIP_VERSIONS:
            return major, minor
    return 1, 0


_BATCH_ITEM_ID_TAG = b"\x42\x00\x93\x08"


def _batch_item_id_of(data: bytes) -> bytes | None:
    """The Unique Batch Item ID of a message's first batch item, found by its tag, or None."""
    at = data.find(_BATCH_ITEM_ID_TAG)
    if at < 0 or len(data) < at + 8:
        return None
    length = struct.unpack(">I", data[at + 4 : at + 8])[0]
    if length > 64 or len(data) < at + 8 + length:
        return None
    return data[at + 8 : at + 8 + length]


def _operation_of(data: bytes) -> Any:
    """The Operation of a message's first batch item, found by its tag, or None."""
    at = data.find(_OPERATION_TAG)
    if at < 0 or len(data) < at + 12:
        return None
    try:
        return enums.Operation(struct.unpack(">I", data[at + 8 : at + 12])[0])
    except ValueError:
        return None
