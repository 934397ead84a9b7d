"""The KMS admin API of `kms-admin-api.md`, served under `/rustfs/admin/v3/kms/` and `/minio/admin/v3/kms/`.

Bodies are exactly the document's (field names, casing, value words); the lifecycle routes that
the document lacks (`key/rotate`, `key/delete`, `key/cancel-deletion`) follow its style. The key is
named by `keyName`, or by `key-id` (what MinIO's clients send) or `key`.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from s3kms.clock import rfc3339
from s3kms.config import parse_configure_body
from s3kms.errors import InvalidRequest, KMSError, MethodNotAllowed, NotConfigured, RouteNotFound
from s3kms.http.auth import Principal
from s3kms.http.responses import Response, json_response
from s3kms.http.sigv4 import RequestView
from s3kms.model import KeyMetadata, KeyState
from s3kms.runtime import Runtime
from s3kms.service import DEFAULT_PENDING_DAYS, KeyService, validate_key_name

Handler = Callable[[RequestView, Principal], Awaitable[Any]]
_GLOB_SPECIAL = re.compile(r"[*?\[]")


def _query(req: RequestView) -> dict[str, str]:
    query = req.query
    if "%" in query or "+" in query:
        return dict(parse_qsl(query, keep_blank_values=True))
    # Nothing to unescape: a plain split is several times cheaper than parse_qsl.
    return dict(p.partition("=")[::2] for p in query.split("&") if p)


def _key_param(query: dict[str, str], *, required: bool) -> str | None:
    for name in ("keyName", "key-id", "key"):
        value = query.get(name)
        if value:
            return validate_key_name(value)
    if required:
        raise InvalidRequest("keyName is required")
    return None


def _key_summary(meta: KeyMetadata) -> dict[str, Any]:
    return {
        "keyId": meta.key_id,
        "status": meta.state.admin_word,
        "createdAt": rfc3339(meta.created_at),
    }


def _key_status(meta: KeyMetadata) -> dict[str, Any]:
    out = _key_summary(meta)
    out["algorithm"] = "AES256"
    out["currentVersion"] = meta.current_version
    if meta.state is KeyState.PENDING_DELETION and meta.deletion_date is not None:
        out["deletionDate"] = rfc3339(meta.deletion_date)
    return out


class AdminAPI:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # route -> (methods, handler); the same table serves both prefixes.
        self.routes: dict[str, tuple[frozenset[str], Handler]] = {
            "configure": (frozenset({"POST"}), self.configure),
            "status": (frozenset({"GET", "POST"}), self.kms_status),
            "key/create": (frozenset({"POST"}), self.create),
            "key/list": (frozenset({"GET"}), self.list_keys),
            "key/status": (frozenset({"GET"}), self.key_status),
            "key/enable": (frozenset({"POST"}), self.enable),
            "key/disable": (frozenset({"POST"}), self.disable),
            "key/rotate": (frozenset({"POST"}), self.rotate),
            "key/delete": (frozenset({"POST", "DELETE"}), self.schedule_deletion),
            "key/cancel-deletion": (frozenset({"POST"}), self.cancel_deletion),
        }

    def route(
        self, path: str, method: str
    ) -> Callable[[RequestView, Principal], Awaitable[Response]]:
        """The handler for a path under an admin prefix: RouteNotFound / MethodNotAllowed otherwise."""
        name = path.split("/kms/", 1)[1]
        entry = self.routes.get(name)
        if entry is None:
            raise RouteNotFound
        methods, handler = entry
        if method not in methods:
            raise MethodNotAllowed
        return self._respond(handler)

    @staticmethod
    def _respond(handler: Handler) -> Callable[[RequestView, Principal], Awaitable[Response]]:
        async def call(req: RequestView, principal: Principal) -> Response:
            return json_response(200, await handler(req, principal))

        return call

    # -- KMS --------------------------------------------------------------------------------------

    async def configure(self, req: RequestView, principal: Principal) -> dict[str, Any]:
        try:
            body = json.loads(req.body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest("request body is not valid JSON") from None
        await self.runtime.configure(parse_configure_body(body))
        return {"status": "success", "message": "KMS configured successfully"}

    async def kms_status(self, req: RequestView, principal: Principal) -> dict[str, Any]:
        return await self.kms_status_payload()

    async def kms_status_payload(self) -> dict[str, Any]:
        try:
            service = self.runtime.service
        except NotConfigured:
            return {
                "status": "not_configured",
                "kmsType": None,
                "endpoint": None,
                "keyCount": 0,
                "defaultKeyId": None,
            }
        store = service.store
        backend = await store.status()
        key_count: int | None = None
        if backend.connected:
            try:
                key_count = await store.count_keys()
            except KMSError:
                backend = type(backend)(connected=False, detail="key count failed")
        return {
            "status": "connected" if backend.connected else "disconnected",
            "kmsType": store.kind,
            "endpoint": store.endpoint,
            "keyCount": key_count,
            "defaultKeyId": service.default_key_id,
        }

    # -- keys -------------------------------------------------------------------------------------

    async def create(self, req: RequestView, principal: Principal) -> dict[str, Any]:
        key_id = _key_param(_query(req), required=False)
        async with self.runtime.use() as service:
            meta = await service.create_key(key_id)
        return {"keyId": meta.key_id, "status": "created", "createdAt": rfc3339(meta.created_at)}

    async def list_keys(self, req: RequestView, principal: Principal) -> dict[str, Any]:
        pattern = _query(req).get("pattern") or "*"
        if len(pattern) > 256:
            raise InvalidRequest("pattern is too long")
        # The literal part before the first glob character narrows the scan to a key id range.
        special = _GLOB_SPECIAL.search(pattern)
        prefix = pattern if special is None else pattern[: special.start()]
        keys = []
        async with self.runtime.use() as service:
            async for meta in service.iter_keys(prefix=prefix):
                if fnmatch.fnmatchcase(meta.key_id, pattern):
                    keys.append(_key_summary(meta))
        return {"keys": keys}

    async def key_status(self, req: RequestView, principal: Principal) -> dict[str, Any]:
        key_id = _key_param(_query(req), required=True)
        assert key_id is not None
        async with self.runtime.use() as service:
            return _key_status(await service.store.get_key(key_id))

    async def _transition(
        self,
        req: RequestView,
        action: Callable[[KeyService, str], Awaitable[KeyMetadata]],
        message: str,
    ) -> dict[str, Any]:
        key_id = _key_param(_query(req), required=True)
        assert key_id is not None
        async with self.runtime.use() as service:
            meta = await action(service, key_id)
        return {"keyId": meta.key_id, "status": meta.state.admin_word, "message": message}

    async def enable(self, req: RequestView, principal: Principal) -> dict[str, Any]:
        return await self._transition(req, KeyService.enable, "Key enabled successfully")

    async def disable(self, req: RequestView, principal: Principal) -> dict[str, Any]:
        return await self._transition(req, KeyService.disable, "Key disabled successfully")

    async def cancel_deletion(self, req: RequestView, principal: Principal) -> dict[str, Any]:
        return await self._transition(
            req, KeyService.cancel_deletion, "Key deletion cancelled successfully"
        )

    async def rotate(self, req: RequestView, principal: Principal) -> dict[str, Any]:
        key_id = _key_param(_query(req), required=True)
        assert key_id is not None
        async with self.runtime.use() as service:
            meta = await service.rotate(key_id)
        return {
            "keyId": meta.key_id,
            "status": meta.state.admin_word,
            "currentVersion": meta.current_version,
            "message": "Key rotated successfully",
        }

    async def schedule_deletion(self, req: RequestView, principal: Principal) -> dict[str, Any]:
        query = _query(req)
        key_id = _key_param(query, required=True)
        assert key_id is not None
        raw_days = query.get("pendingWindowDays", str(DEFAULT_PENDING_DAYS))
        if not raw_days.isdigit():
            raise InvalidRequest("pendingWindowDays must be a whole number of days (7-30)")
        async with self.runtime.use() as service:
            meta = await service.schedule_deletion(key_id, int(raw_days))
        assert meta.deletion_date is not None
        return {
            "keyId": meta.key_id,
            "status": meta.state.admin_word,
            "deletionDate": rfc3339(meta.deletion_date),
            "message": "Key scheduled for deletion",
        }
