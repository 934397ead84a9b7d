"""The KMS admin API of `kms-admin-api.md`, served under `/rustfs/admin/v3/kms/` and `/minio/admin/v3/kms/`.

Bodies are exactly the document's (field names, casing, value words); the lifecycle routes that
the document lacks (`key/rotate`, `key/delete`, `key/cancel-deletion`) follow its style. The key is
named by `keyName`, or by `key-id` (what MinIO's clients send) or `key`. `key/create` also takes an
AWS `keySpec` and `keyUsage`, and `origin` (`EXTERNAL`: a key for imported material, made
without any, PendingImport until ImportKeyMaterial); `key/status` names a key's spec in
`algorithm` (`AES256`, the document's word, for SYMMETRIC_DEFAULT), adds `keyUsage` for every
other spec and `origin` for an EXTERNAL key.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

from s3kms.audit import AuditLog
from s3kms.auth.certificates import normalize_identity
from s3kms.auth.identity import Authenticator, Principal
from s3kms.clock import rfc3339
from s3kms.config import parse_configure_body
from s3kms.errors import (
    AccessDenied,
    InvalidRequest,
    MethodNotAllowed,
    NotConfigured,
    RouteNotFound,
    StorageUnavailable,
)
from s3kms.http.jsonbody import parse_json
from s3kms.http.responses import JSON, Response, json_bytes, json_response
from s3kms.model import ORIGIN_AWS_KMS, ORIGIN_EXTERNAL, KeyMetadata, KeyState
from s3kms.request import RequestView
from s3kms.runtime import Runtime
from s3kms.service import DEFAULT_PENDING_DAYS, SYMMETRIC, KeyService, validate_key_name
from s3kms.users import SURFACE_NAMES, IdentitySurface, UserStore, generate_secret

log = logging.getLogger("s3kms.http")

Query = dict[str, str]
Handler = Callable[[RequestView, Query, str | None, Principal], Awaitable[Any]]
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
    if meta.key_spec == SYMMETRIC:
        out["algorithm"] = "AES256"  # the document's word for a SYMMETRIC_DEFAULT key
    else:
        out["algorithm"] = meta.key_spec  # the AWS KeySpec: RSA_2048, HMAC_256, ...
        out["keyUsage"] = meta.key_usage
    out["currentVersion"] = meta.current_version
    if meta.external:  # (an s3kms extension, as keyUsage: only where it is not the default)
        out["origin"] = meta.origin
    if meta.state is KeyState.PENDING_DELETION and meta.deletion_date is not None:
        out["deletionDate"] = rfc3339(meta.deletion_date)
    return out


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    action: str  # the policy action, e.g. admin:KMSKeyStatus
    handler: Handler
    key: str = "none"  # "required", "optional" or "none": whether the route names a key
    changes: bool = False  # changes state: the audit log records its intent before it runs


class BoundRoute:
    """A route matched for one request: authorises, then runs the handler."""

    __slots__ = ("action", "route")

    def __init__(self, route: Route) -> None:
        self.route = route
        self.action = route.action

    async def __call__(self, req: RequestView, principal: Principal) -> Response:
        route = self.route
        query = _query(req)
        key_id = (
            None if route.key == "none" else _key_param(query, required=route.key == "required")
        )
        principal.authorize(route.action, key_id)
        try:
            result = await route.handler(req, query, key_id, principal)
        except OSError as exc:
            # Every file s3kms writes is replaced atomically (temp file, fsync, rename): a failed
            # write (disk full, read-only) changed nothing, and the client may retry.
            log.error("admin %s: cannot write to disk: %s", route.action, exc)
            raise StorageUnavailable from None
        return result if isinstance(result, Response) else json_response(200, result)


class AdminAPI:
    def __init__(self, runtime: Runtime, auth: Authenticator, audit: AuditLog | None) -> None:
        self.runtime = runtime
        self.users = auth.users
        self.audit = audit
        post, get = frozenset({"POST"}), frozenset({"GET"})
        # One table serves both prefixes.
        self.routes: dict[str, Route] = {
            "configure": Route(post, "admin:KMSConfigure", self.configure, changes=True),
            "status": Route(frozenset({"GET", "POST"}), "admin:KMSStatus", self.kms_status),
            "key/create": Route(post, "admin:KMSCreateKey", self.create, "optional", changes=True),
            "key/list": Route(get, "admin:KMSListKeys", self.list_keys),
            "key/status": Route(get, "admin:KMSKeyStatus", self.key_status, "required"),
            "key/enable": Route(post, "admin:KMSEnableKey", self.enable, "required", changes=True),
            "key/disable": Route(
                post, "admin:KMSDisableKey", self.disable, "required", changes=True
            ),
            "key/rotate": Route(post, "admin:KMSRotateKey", self.rotate, "required", changes=True),
            "key/delete": Route(
                frozenset({"POST", "DELETE"}),
                "admin:KMSDeleteKey",
                self.schedule_deletion,
                "required",
                changes=True,
            ),
            "key/cancel-deletion": Route(
                post, "admin:KMSCancelKeyDeletion", self.cancel_deletion, "required", changes=True
            ),
            "audit": Route(get, "admin:KMSAudit", self.audit_lines),
            "backup": Route(post, "admin:KMSBackup", self.backup),
            "user/add": Route(post, "admin:KMSManageUsers", self.add_user, changes=True),
            "user/remove": Route(post, "admin:KMSManageUsers", self.remove_user, changes=True),
            "user/list": Route(get, "admin:KMSManageUsers", self.list_users),
            "policy/add": Route(post, "admin:KMSManagePolicies", self.add_policy, changes=True),
            "policy/remove": Route(
                post, "admin:KMSManagePolicies", self.remove_policy, changes=True
            ),
            "policy/list": Route(get, "admin:KMSManagePolicies", self.list_policies),
            # The certificate identities of users (docs/kes.md, docs/kmip.md): managed as users
            # are, the same routes for each surface.
            **self._identity_routes("kes"),
            **self._identity_routes("kmip"),
        }

    def _identity_routes(self, surface: IdentitySurface) -> dict[str, Route]:
        """`<surface>/identity/add`, `remove` and `list`."""
        post, get = frozenset({"POST"}), frozenset({"GET"})
        manage = "admin:KMSManageUsers"
        return {
            f"{surface}/identity/add": Route(
                post, manage, partial(self.add_identity, surface), changes=True
            ),
            f"{surface}/identity/remove": Route(
                post, manage, partial(self.remove_identity, surface), changes=True
            ),
            f"{surface}/identity/list": Route(get, manage, partial(self.list_identities, surface)),
        }

    def route(self, path: str, method: str) -> BoundRoute:
        """The route for a path under an admin prefix: RouteNotFound / MethodNotAllowed otherwise."""
        route = self.routes.get(path.split("/kms/", 1)[1])
        if route is None:
            raise RouteNotFound
        if method not in route.methods:
            raise MethodNotAllowed
        return BoundRoute(route)

    # -- KMS --------------------------------------------------------------------------------------

    async def configure(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> dict[str, Any]:
        try:
            body = parse_json(req.body or b"null")
        except ValueError:
            raise InvalidRequest("request body is not valid JSON") from None
        await self.runtime.configure(parse_configure_body(body))
        return {"status": "success", "message": "KMS configured successfully"}

    async def kms_status(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> dict[str, Any]:
        return await self.kms_status_payload()

    async def kms_status_payload(self, *, count_keys: bool = True) -> dict[str, Any]:
        try:
            lease = self.runtime.use()
        except NotConfigured:
            return {
                "status": "not_configured",
                "kmsType": None,
                "endpoint": None,
                "keyCount": 0,
                "defaultKeyId": None,
            }
        # Held for the whole call, so a concurrent `configure` cannot close the store under it.
        async with lease as service:
            report = await service.backend_report(count_keys=count_keys)
            return {
                "status": "connected" if report.connected else "disconnected",
                "kmsType": report.kind,
                "endpoint": report.endpoint,
                "keyCount": report.key_count,
                "defaultKeyId": service.default_key_id,
            }

    # -- keys -------------------------------------------------------------------------------------

    async def create(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> dict[str, Any]:
        # An AWS KeySpec and KeyUsage; the service decides what fits (a usage is required for
        # every spec but SYMMETRIC_DEFAULT) and refuses the rest, before anything is written.
        key_spec = query.get("keySpec") or SYMMETRIC
        key_usage = query.get("keyUsage") or None
        # An AWS OriginType: EXTERNAL makes a key without material, for ImportKeyMaterial.
        origin = query.get("origin") or ORIGIN_AWS_KMS
        if origin not in (ORIGIN_AWS_KMS, ORIGIN_EXTERNAL):
            raise InvalidRequest(f"origin must be AWS_KMS or EXTERNAL, not {origin[:64]!r}")
        async with self.runtime.use() as service:
            meta = await service.create_key(
                key_id, key_spec=key_spec, key_usage=key_usage, origin=origin
            )
        return {"keyId": meta.key_id, "status": "created", "createdAt": rfc3339(meta.created_at)}

    async def list_keys(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> Response:
        """Streamed page by page, so a million keys never sit in memory at once."""
        pattern = query.get("pattern") or "*"
        if len(pattern) > 256:
            raise InvalidRequest("pattern is too long")
        # The literal part before the first glob character narrows the scan to a key id range.
        special = _GLOB_SPECIAL.search(pattern)
        prefix = pattern if special is None else pattern[: special.start()]
        lease = self.runtime.use()
        service = await lease.__aenter__()
        pages = service.key_pages(prefix=prefix)
        try:
            # The first page is read before the status line, so a failing backend gets its error.
            first = await anext(pages, None)
        except BaseException:
            await lease.__aexit__(None, None, None)
            raise

        async def body() -> AsyncGenerator[bytes, None]:
            try:
                yield b'{"keys":['
                separator = b""
                page = first
                while page is not None:
                    entries = [
                        json_bytes(_key_summary(m))
                        for m in page
                        if fnmatch.fnmatchcase(m.key_id, pattern)
                    ]
                    if entries:
                        yield separator + b",".join(entries)
                        separator = b","
                    page = await anext(pages, None)
                yield b"]}"
            finally:
                await lease.__aexit__(None, None, None)

        # Started here, so its `finally` (which frees the lease) runs even if the answer is
        # discarded before streaming (a failed audit line) or the client goes away.
        stream = body()
        head = await anext(stream)
        return Response(200, head, JSON, stream)

    async def key_status(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> dict[str, Any]:
        assert key_id is not None
        async with self.runtime.use() as service:
            return _key_status(await service.describe(key_id))

    async def _transition(
        self,
        key_id: str | None,
        action: Callable[[KeyService, str], Awaitable[KeyMetadata]],
        message: str,
    ) -> dict[str, Any]:
        assert key_id is not None
        async with self.runtime.use() as service:
            meta = await action(service, key_id)
        return {"keyId": meta.key_id, "status": meta.state.admin_word, "message": message}

    async def enable(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> dict[str, Any]:
        return await self._transition(key_id, KeyService.enable, "Key enabled successfully")

    async def disable(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> dict[str, Any]:
        return await self._transition(key_id, KeyService.disable, "Key disabled successfully")

    async def cancel_deletion(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> dict[str, Any]:
        return await self._transition(
            key_id, KeyService.cancel_deletion, "Key deletion cancelled successfully"
        )

    async def rotate(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> dict[str, Any]:
        assert key_id is not None
        async with self.runtime.use() as service:
            meta = await service.rotate(key_id)
        return {
            "keyId": meta.key_id,
            "status": meta.state.admin_word,
            "currentVersion": meta.current_version,
            "message": "Key rotated successfully",
        }

    async def schedule_deletion(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> dict[str, Any]:
        assert key_id is not None
        raw_days = query.get("pendingWindowDays", str(DEFAULT_PENDING_DAYS))
        # ASCII digits only: "²".isdigit() is true, and int() refuses thousands of digits.
        if not (raw_days.isascii() and raw_days.isdigit() and len(raw_days) <= 3):
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

    # -- audit and backup -------------------------------------------------------------------------

    async def audit_lines(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> Response:
        """Stream the audit log's lines (NDJSON), optionally only those at or after `since`."""
        if self.audit is None:
            raise InvalidRequest("the audit log is disabled on this server")
        since = query.get("since")
        since_ts: float | None = None
        if since:
            since_ts = _parse_since(since)
        self.audit.sync()
        lines = self.audit.lines_since(since_ts)  # checks `since` now, before the status line

        async def body() -> AsyncGenerator[bytes, None]:
            batch: list[bytes] = []
            for line in lines:
                batch.append(line)
                if len(batch) == 1000:
                    yield b"".join(batch)
                    batch = []
            yield b"".join(batch)

        return Response(200, b"", b"application/x-ndjson", body())

    async def backup(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> Response:
        passphrase = _json_body(req).get("passphrase")
        if not isinstance(passphrase, str):
            raise InvalidRequest("passphrase is required")

        def may_export(key: str) -> None:
            # A backup opens every key under a passphrase the caller chose: it takes the right to
            # decrypt with each key it holds. One key denied refuses the whole backup.
            if not principal.may("kms:Decrypt", key):
                raise AccessDenied(
                    f"{principal.access_key} is not authorized to take a backup: a backup holds "
                    "every key, and kms:Decrypt is not allowed on all of them"
                )

        async with self.runtime.use() as service:
            data = await service.backup(passphrase, authorize_key=may_export)
        return Response(200, data, b"application/octet-stream")

    # -- users and policies -----------------------------------------------------------------------

    def _user_store(self) -> UserStore:
        if self.users is None:
            raise InvalidRequest("user management is not available on this server")
        return self.users

    async def add_user(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> dict[str, Any]:
        body = _json_body(req)
        access_key = query.get("accessKey") or body.get("accessKey")
        policies = body.get("policies", [])
        if not isinstance(access_key, str) or not isinstance(policies, list):
            raise InvalidRequest("accessKey and a list of policies are required")
        given = body.get("secretKey")
        if given is not None and not isinstance(given, str):
            raise InvalidRequest("secretKey must be a string")
        secret = given or generate_secret()
        user = self._user_store().add_user(access_key, secret, [str(p) for p in policies])
        # The secret is returned this once, and only when the server generated it.
        out: dict[str, Any] = {"accessKey": user.access_key, "policies": list(user.policies)}
        if not given:  # generated (an empty secretKey also asks for one)
            out["secretKey"] = secret
        return out

    async def remove_user(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> dict[str, Any]:
        access_key = query.get("accessKey", "")
        self._user_store().remove_user(access_key)
        return {"accessKey": access_key, "message": "User removed successfully"}

    async def list_users(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> dict[str, Any]:
        return {
            "users": [
                {"accessKey": u.access_key, "policies": list(u.policies), "managed": u.managed}
                for u in self._user_store().list_users()
            ]
        }

    def _identity_params(self, req: RequestView, query: Query) -> tuple[str, str]:
        body = _json_body(req) if req.body else {}
        access_key = query.get("accessKey") or body.get("accessKey")
        identity = query.get("identity") or body.get("identity")
        if not isinstance(access_key, str) or not isinstance(identity, str):
            raise InvalidRequest("accessKey and identity are required")
        try:
            return access_key, normalize_identity(identity)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None

    async def add_identity(
        self,
        surface: IdentitySurface,
        req: RequestView,
        query: Query,
        key_id: str | None,
        principal: Principal,
    ) -> dict[str, Any]:
        access_key, identity = self._identity_params(req, query)
        admin = self.runtime.settings.kes_admin_identity
        if surface == "kes" and admin is not None and admin.strip().lower() == identity:
            raise InvalidRequest("this identity is the KES admin identity (--kes-admin-identity)")
        self._user_store().add_identity(surface, access_key, identity)
        message = f"{SURFACE_NAMES[surface]} identity added"
        return {"accessKey": access_key, "identity": identity, "message": message}

    async def remove_identity(
        self,
        surface: IdentitySurface,
        req: RequestView,
        query: Query,
        key_id: str | None,
        principal: Principal,
    ) -> dict[str, Any]:
        access_key, identity = self._identity_params(req, query)
        self._user_store().remove_identity(surface, access_key, identity)
        message = f"{SURFACE_NAMES[surface]} identity removed"
        return {"accessKey": access_key, "identity": identity, "message": message}

    async def list_identities(
        self,
        surface: IdentitySurface,
        req: RequestView,
        query: Query,
        key_id: str | None,
        principal: Principal,
    ) -> dict[str, Any]:
        return {
            "identities": [
                {"identity": identity, "accessKey": u.access_key, "managed": u.managed}
                for u in self._user_store().list_users()
                for identity in u.identities(surface)
            ]
        }

    async def add_policy(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> dict[str, Any]:
        name = query.get("name", "")
        policy = self._user_store().set_policy(name, _json_body(req))
        return {"name": policy.name, "message": "Policy saved successfully"}

    async def remove_policy(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> dict[str, Any]:
        name = query.get("name", "")
        self._user_store().remove_policy(name)
        return {"name": name, "message": "Policy removed successfully"}

    async def list_policies(
        self, req: RequestView, query: Query, key_id: str | None, principal: Principal
    ) -> dict[str, Any]:
        return {
            "policies": [
                {"name": p.name, "policy": json.loads(p.document)}
                for p in self._user_store().list_policies()
            ]
        }


def _parse_since(text: str) -> float:
    """An RFC 3339 time as epoch seconds; a time without an offset is UTC."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.astimezone(UTC).timestamp()
    except (ValueError, OverflowError, OSError):  # 9999-12-31T23:59:59-23:59 is past year 9999
        raise InvalidRequest("since must be an RFC 3339 time") from None


def _json_body(req: RequestView) -> dict[str, Any]:
    try:
        body = parse_json(req.body or b"{}")
    except ValueError:
        raise InvalidRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body
