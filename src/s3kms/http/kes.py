"""The ASGI application of the KES port: routing, body limits, identity, audit, metrics, errors.

The KES counterpart of app.py, for requests that arrive through the mutual-TLS listener
(mtls.py), which puts the client's identity in the scope. Per request: find the route (404/405
before the body is read), read the body within the route's limit (KES's `max_body`), map the
identity to a principal (403 for one s3kms does not know), write the intent line of a route that
changes state, run the handler (protocols/kes/api.py), write the audit line (surface `kes`), count
it (`surface="kes"` in the metrics), answer. As on the other surfaces the log fails closed: no
line, no answer (503), unless the change's intent is on record; an unexpected exception is a 500
naming only the request id, logged with it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from s3kms.audit import AuditLog
from s3kms.auth.identity import Principal
from s3kms.errors import AuditUnavailable, KMSError, RequestTooLarge
from s3kms.http.app import Message, Receive, Scope, Send, new_request_id
from s3kms.http.responses import Response
from s3kms.metrics import Metrics
from s3kms.protocols.kes import errors
from s3kms.protocols.kes.api import KesAPI, Route
from s3kms.request import current_request_id

log = logging.getLogger("s3kms.kes")

SURFACE = "kes"
_DENIALS = frozenset({"AccessDenied", "SlowDown"})


class _Call:
    __slots__ = ("action", "intent_recorded", "principal", "route")

    def __init__(self) -> None:
        self.route: Route | None = None
        self.principal: Principal | None = None
        self.action: str | None = None
        self.intent_recorded = False


def _identity(scope: Scope) -> str | None:
    extension = (scope.get("extensions") or {}).get("s3kms.kes")
    identity = extension.get("identity") if extension else None
    return identity if isinstance(identity, str) else None


def _source(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


class KesApp:
    def __init__(
        self, api: KesAPI, *, audit: AuditLog | None, metrics: Metrics | None = None
    ) -> None:
        self.api = api
        self.audit = audit
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if self.metrics is None:
            await self._http(scope, receive, send)
        else:
            with self.metrics.in_flight:
                await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = new_request_id()
        current_request_id.set(request_id)
        call = _Call()
        error: str | None = None
        try:
            response = await self._dispatch(scope, receive, call)
        except KMSError as exc:
            response = errors.render(exc)
            error = exc.code
        except Exception:
            log.exception(
                "KES request %s failed: %s %s", request_id, scope["method"], scope["path"]
            )
            response = errors.error_response(500, f"internal error; request id {request_id}")
            error = "InternalError"
        if error is None and response.status >= 400:  # a KES answer of its own (406, 504)
            error = "InvalidRequest" if response.status < 500 else "BackendUnavailable"
        if self.audit is not None and call.route is not None:
            try:
                self._record(self.audit, scope, call, request_id, started, response, error)
            except AuditUnavailable as exc:
                if not call.intent_recorded:
                    response = errors.render(exc)
                    error = exc.code
        if self.metrics is not None:
            operation = call.route.operation if call.route is not None else "kes:"
            self.metrics.request(operation, error, response.status, started)
        rid = request_id.encode()
        headers = [
            (b"content-length", str(len(response.body)).encode()),
            (b"x-amz-request-id", rid),
        ]
        if response.content_type:
            headers.append((b"content-type", response.content_type))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    async def _dispatch(self, scope: Scope, receive: Receive, call: _Call) -> Response:
        route, resource = self.api.route(scope["path"])
        call.route = route
        route.check_method(scope["method"])
        body = await _read_body(receive, scope, route.max_body)
        identity = _identity(scope)
        principal: Principal | None = None
        if not route.public:
            if identity is None:  # the listener admits no connection without a certificate
                raise KMSError("no client identity")
            client = scope.get("client")
            principal = call.principal = self.api.authenticate(
                identity, client[0] if client else None
            )
            if route.changes:
                self._record_intent(scope, call, route)
        return await route.handler(principal, resource, body)

    def _record_intent(self, scope: Scope, call: _Call, route: Route) -> None:
        if self.audit is None:
            return
        who = call.principal
        self.audit.record(
            request_id=current_request_id.get(),
            principal=who.access_key if who else None,
            source=_source(scope),
            action=route.operation,
            key=None,
            outcome="intent",
            status=0,
            error=None,
            started=time.perf_counter(),
            surface=SURFACE,
        )
        call.intent_recorded = True

    @staticmethod
    def _record(
        audit: AuditLog,
        scope: Scope,
        call: _Call,
        request_id: str,
        started: float,
        response: Response,
        error: str | None,
    ) -> None:
        who = call.principal
        if who is None and error is not None and not audit.admit_unauthenticated():
            return  # counted; the periodic `audit:suppressed` line carries the count
        assert call.route is not None
        authorised = who is not None and who.action is not None
        audit.record(
            request_id=request_id,
            principal=who.access_key if who else None,
            source=_source(scope),
            action=who.action if who is not None and authorised else call.route.operation,
            key=who.key_id if who is not None and authorised else None,
            outcome="allowed" if error is None else "denied" if error in _DENIALS else "failed",
            status=response.status,
            error=error,
            started=started,
            surface=SURFACE,
        )


async def _read_body(receive: Receive, scope: Scope, limit: int) -> bytes:
    """The body, refused (413) past the route's limit; a chunked body is counted as it comes."""
    for name, value in scope["headers"]:
        if name == b"content-length" and (
            not value.isdigit() or len(value) > 12 or int(value) > limit
        ):
            raise RequestTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk: Any = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
