"""The ASGI application: routing, body limits, authentication, request ids, error rendering.

Plain ASGI with no framework: the hot path (AWS `GenerateDataKey`/`Decrypt`, admin `key/status`)
is parse, verify, call the service, encode. Each API surface renders the error tree in its own
envelope; an unexpected exception becomes a 500 `InternalError` with the request id, logged with
that id and never shown to the client.

Three surfaces share the port: the admin API (its two path prefixes), and at `/` the AWS KMS JSON
API (`X-Amz-Target: TrentService.*`) and STS's Query protocol (`protocols/sts.wants`: no target,
a form body or an `Action` in the query string).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from s3kms.audit import AuditLog
from s3kms.auth.identity import Authenticator, Principal
from s3kms.errors import (
    AccessDenied,
    AuditUnavailable,
    InvalidRequest,
    KMSError,
    MethodNotAllowed,
    RequestTooLarge,
    RouteNotFound,
)
from s3kms.http.responses import Response, admin_error, json_response
from s3kms.metrics import Metrics, unrouted
from s3kms.metrics.endpoint import PATH as METRICS_PATH
from s3kms.metrics.endpoint import Scrape
from s3kms.protocols import awskms, sts
from s3kms.protocols.admin import api as admin
from s3kms.request import RequestView, current_request_id
from s3kms.runtime import Runtime

log = logging.getLogger("s3kms.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 1024 * 1024  # the default; `s3kms server --max-body-bytes` sets it
# Header count and size, the request line and the deadlines are limits of the connection,
# enforced before a request gets here (http/connection.py).
ADMIN_PREFIXES = ("/rustfs/admin/v3/kms/", "/minio/admin/v3/kms/")
# Dev mode only (`s3kms server --dev`): wipe the whole state; 404 otherwise.
RESET_PATH = "/_s3kms/reset"
RESET_ACTION = "s3kms:Reset"


class Listener(Protocol):
    """Another port this process serves while the application runs (the KES API, http/mtls.py)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class RequestIds:
    """Unique request ids: a random per-process prefix and a counter (no syscall per request)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(4).hex().upper()
        self._next = itertools.count(1).__next__

    def __call__(self) -> str:
        return f"{self._prefix}{self._next() & 0xFFFFFFFF:08X}"


new_request_id = RequestIds()


# Error codes that mean "the caller may not", as opposed to "the request failed".
_DENIALS = frozenset(
    {
        "AccessDenied",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "RequestTimeTooSkewed",
        "AuthorizationHeaderMalformed",
        "MissingSecurityHeader",
        "XAmzContentSHA256Mismatch",
        "SlowDown",
    }
)


class Call:
    """What the audit log needs to know about one request, filled in as dispatch learns it."""

    __slots__ = (
        "action",
        "changes",
        "intent_recorded",
        "principal",
        "request_id",
        "scope",
        "started",
        "sts",
    )

    def __init__(self, request_id: str, scope: Scope, started: float) -> None:
        self.request_id = request_id
        self.scope = scope
        self.started = started
        self.action: str | None = None  # set once the request reached a KMS route
        self.changes = False  # the route changes state: its intent is recorded before it runs
        self.intent_recorded = False
        self.principal: Principal | None = None
        self.sts = False  # an STS (Query protocol) request: errors in STS's XML envelope


def _source(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


class App:
    def __init__(
        self,
        runtime: Runtime,
        auth: Authenticator,
        *,
        background_interval: float = 60.0,
        audit: AuditLog | None = None,
        max_body: int = MAX_BODY,
        metrics: Metrics | None = None,
        scrape: Scrape | None = None,
        dev: bool = False,
        kes: Listener | None = None,
        kmip: Listener | None = None,
    ):
        self.dev = dev  # serves POST /_s3kms/reset
        # The listeners of the other doors, started and stopped with the application.
        self.kes = kes  # the KES API's (--kes-address)
        self.kmip = kmip  # KMIP's (--kmip-address)
        self.runtime = runtime
        self.metrics = metrics  # None with --metrics off: nothing is counted
        self.scrape = scrape
        self.max_body = max_body
        self.auth = auth
        self.audit = audit
        self.admin = admin.AdminAPI(runtime, auth, audit)
        self.aws = awskms.AwsKmsAPI(runtime, auth.users)
        self.sts = sts.StsAPI(auth)
        self._background_interval = background_interval
        self.loop: asyncio.AbstractEventLoop | None = None  # set at start-up, for tests
        # Called once the application has started (`s3kms server --workers N`: a worker reports
        # that it serves, so the start summary is logged once all of them do; see server.py).
        self.on_started: Callable[[], None] | None = None
        # `s3kms server` sets it (server.py): a process of its own. Not in tests' in-process
        # servers, whose objects would otherwise never be collected once frozen.
        self.freeze_after_start = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if self.metrics is None:
                await self._http(scope, receive, send)
            else:
                with self.metrics.in_flight:
                    await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        tasks: list[asyncio.Task[None]] = []
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.loop = asyncio.get_running_loop()
                if self.metrics is not None:
                    self.metrics.start()  # with workers: this worker's file
                try:
                    await self.runtime.start()
                except Exception as exc:
                    log.error("cannot start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                started: list[Listener] = []
                for listener, name in ((self.kes, "the KES API (--kes-address)"),
                                       (self.kmip, "KMIP (--kmip-address)")):  # fmt: skip
                    if listener is None:
                        continue
                    try:
                        await listener.start()
                    except OSError as exc:
                        log.error("cannot start %s: %s", name, exc)
                        for other in started:
                            await other.close()
                        await self.runtime.close()
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                    started.append(listener)
                tasks = [
                    asyncio.create_task(self.runtime.run_background(self._background_interval))
                ]
                if self.audit is not None:
                    tasks.append(asyncio.create_task(self._tick_audit(self.audit)))
                if self.scrape is not None:
                    counting = self.scrape.count_keys(self._background_interval)
                    tasks.append(asyncio.create_task(counting))
                if self.freeze_after_start:
                    # What start-up made (the libraries, caches, the keystore) lives as long as
                    # the process: out of the cyclic collector's way, where each full collection
                    # scanned all of it on the event loop (a p99 of 25 ms at 32 connections, 8 ms
                    # without; benchmarks/README.md, *Hot path*).
                    gc.collect()
                    gc.freeze()
                await send({"type": "lifespan.startup.complete"})
                if self.on_started is not None:
                    self.on_started()
            elif message["type"] == "lifespan.shutdown":
                for task in tasks:
                    task.cancel()
                for listener in (self.kes, self.kmip):
                    if listener is not None:
                        await listener.close()
                await self.runtime.close()
                if self.audit is not None:
                    self.audit.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _tick_audit(audit: AuditLog) -> None:
        """fsync every `fsync_interval` seconds, and write the count of suppressed lines."""
        interval = audit.fsync_interval if audit.fsync_interval > 0 else 1.0
        while True:
            await asyncio.sleep(interval)
            audit.tick()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = new_request_id()
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("utf-8", "surrogateescape")
        method: str = scope["method"]
        is_admin = path.startswith(ADMIN_PREFIXES)
        current_request_id.set(request_id)  # this request's task only: the service reads it
        call = Call(request_id, scope, started)
        error: str | None = None
        try:
            response = await self._dispatch(scope, receive, method, path, is_admin, call)
        except KMSError as exc:
            response = self._error(exc, path, is_admin, call)
            error = exc.code
        except Exception:
            log.exception("request %s failed: %s %s", request_id, method, path)
            response = self._error(
                KMSError(f"internal error; request id {request_id}"), path, is_admin, call
            )
            error = "InternalError"
        if self.audit is not None and call.action is not None:
            try:
                self._record(self.audit, call, response.status, error)
            except AuditUnavailable as exc:
                # Fail closed: no line, no answer. A change whose intent is on record has been
                # carried out, so its true answer stands (never a failure for an applied change).
                if not call.intent_recorded:
                    await response.discard()
                    response = self._error(exc, path, is_admin, call)
                    error = exc.code
        if self.metrics is not None:
            action = call.action or unrouted(path, is_admin)
            self.metrics.request(action, error, response.status, started)
        rid = request_id.encode()
        headers = [(b"content-type", response.content_type), (b"x-amz-request-id", rid)]
        if not is_admin:
            headers.append((b"x-amzn-requestid", rid))  # AWS KMS's header: SDKs report it
        if response.chunks is None:
            headers.append((b"content-length", str(len(response.body)).encode()))
            await send(
                {"type": "http.response.start", "status": response.status, "headers": headers}
            )
            await send({"type": "http.response.body", "body": response.body})
            return
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        try:
            if response.body:  # a streamed answer's first chunk, read before the status line
                await send({"type": "http.response.body", "body": response.body, "more_body": True})
            async for chunk in response.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.discard()  # the client may have gone: release what the stream holds

    @staticmethod
    def _record(audit: AuditLog, call: Call, status: int, error: str | None) -> None:
        """The request's line, written before the response leaves."""
        who = call.principal
        if who is None and error is not None and not audit.admit_unauthenticated():
            return  # counted; the periodic `audit:suppressed` line carries the count
        # Once authorised, the principal knows the precise action and key the request was about.
        authorised = who is not None and who.action is not None
        audit.record(
            request_id=call.request_id,
            principal=who.access_key if who else None,
            source=_source(call.scope),
            action=who.action if who and authorised else call.action,
            key=who.key_id if who and authorised else None,
            outcome="allowed" if error is None else "denied" if error in _DENIALS else "failed",
            status=status,
            error=error,
            started=call.started,
        )

    def _record_intent(self, call: Call) -> None:
        """Before a change runs: if this line cannot be written, nothing is changed."""
        if self.audit is None or not call.changes:
            return
        who = call.principal
        self.audit.record(
            request_id=call.request_id,
            principal=who.access_key if who else None,
            source=_source(call.scope),
            action=call.action,
            key=None,
            outcome="intent",
            status=0,
            error=None,
            started=call.started,
        )
        call.intent_recorded = True

    def _error(self, exc: KMSError, path: str, is_admin: bool, call: Call) -> Response:
        if call.sts:
            return sts.error_response(exc, call.request_id)
        if not is_admin and path == "/":
            region = call.principal.region if call.principal is not None else None
            return awskms.error_response(exc, self.runtime, region)
        return admin_error(exc, path)

    async def _dispatch(
        self, scope: Scope, receive: Receive, method: str, path: str, is_admin: bool, call: Call
    ) -> Response:
        if path.startswith("/health/"):
            return await self._health(path)
        reset = path == RESET_PATH
        if reset and not self.dev:
            raise RouteNotFound
        if not is_admin and path != "/" and path != METRICS_PATH and not reset:
            raise RouteNotFound
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("utf-8", "surrogateescape")
            text = value.decode("utf-8", "surrogateescape")
            headers[key] = f"{headers[key]},{text}" if key in headers else text
        query = scope["query_string"].decode("utf-8", "surrogateescape")
        if path == METRICS_PATH:  # not a KMS route: no audit line, as /health
            if self.scrape is None:
                raise RouteNotFound
            body = await read_body(receive, headers, self.max_body)
            return await self.scrape(RequestView(method, path, query, headers, body))
        if reset:
            if method != "POST":
                raise MethodNotAllowed
            call.action, call.changes = RESET_ACTION, True
        elif is_admin:
            route = self.admin.route(path, method)  # 404/405 before reading the body
            call.action = route.action
            call.changes = route.route.changes
        elif sts.wants(method, headers, query):
            call.sts = True
            call.action = sts.UNKNOWN_ACTION  # until the body that names it has been read
        elif method != "POST":
            raise MethodNotAllowed
        else:
            call.action, call.changes = self.aws.audit_action(headers.get("x-amz-target"))
        body = await read_body(receive, headers, self.max_body)
        client = scope.get("client")
        secure = scope.get("scheme") in ("https", "wss")
        req = RequestView(method, path, query, headers, body, client[0] if client else None, secure)
        if call.sts:  # STS changes nothing: no intent line
            call.action = sts.audit_action(req)
            principal = call.principal = self.sts.authenticate(req)
            return self.sts.handle(req, principal, call.request_id)
        if reset:  # signed as the admin API is: service s3 or kms, S3's signing forms too
            return await self._reset(req, call)
        principal = call.principal = self.auth.authenticate(req, admin=is_admin)
        self._record_intent(call)
        if is_admin:
            return await route(req, principal)
        return await self.aws.handle(req, principal)

    async def _reset(self, req: RequestView, call: Call) -> Response:
        """`POST /_s3kms/reset` (dev mode, root only): every key, alias, grant, key policy, user,
        policy and audit line goes; the audit log starts again with this request's line."""
        principal = call.principal = self.auth.authenticate(req, admin=True)
        principal.action = RESET_ACTION
        if not principal.is_root:
            raise AccessDenied(f"only the root user may call {RESET_ACTION}")
        if self.runtime.settings.workers > 1:
            raise InvalidRequest("POST /_s3kms/reset needs one worker process (--workers 1)")
        self._record_intent(call)
        await self.runtime.reset(self._wipe)
        return json_response(200, {"status": "reset"})

    def _wipe(self) -> None:
        """The rest of a reset, run right after the keystore swap (runtime.reset)."""
        if self.auth.users is not None:
            self.auth.users.clear()
        if self.audit is not None:
            self.audit.reset()

    async def _health(self, path: str) -> Response:
        if path == "/health/live":
            return json_response(200, {"status": "ok"})
        if path == "/health/ready":
            # Cheap for load balancers: backend reachability only, no key count.
            status = await self.admin.kms_status_payload(count_keys=False)
            ready = status["status"] in ("connected", "not_configured")
            return json_response(200 if ready else 503, {"status": status["status"]})
        raise RouteNotFound


async def read_body(receive: Receive, headers: dict[str, str], limit: int = MAX_BODY) -> bytes:
    declared = headers.get("content-length")
    # ASCII digits only ("²".isdigit() is true) and never int() of thousands of digits.
    if (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and (len(declared) > 12 or int(declared) > limit)
    ):
        raise RequestTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
