"""The KES API (minio/kes `internal/api`), as MinIO and its forks call it through minio/kms-go.

Routes, their methods, body limits and timeouts are KES's (`state.go` `initRoutes`); a route KES
serves with PUT takes POST too, as KES's does (kms-go sends POST to create, import, generate,
encrypt and decrypt, PUT to hmac). A path KES would redirect to its trailing-slash form
(`/v1/key/list`, what kms-go sends for an empty prefix) is that route with an empty name.

Keys are the keys of every other surface, by name: a KES key `my-key` is the key whose key id is
`my-key` (with an AWS ARN, listed by the admin API and by AWS ListKeys). Names are KES's
(`validName`: 1-80 of `0-9 A-Z a-z _ -`, `-` neither first nor last, not `_`); s3kms key ids
also start with a letter or a digit, so a KES name starting with `_` is refused with its own
message. A name with `.` (which s3kms allows and KES does not) is left out of KES listings.

Each route is authorised through the caller's `Principal` (auth/kes.py) as the AWS surface
authorises the same operation, on the key's ARN (`ACTIONS`; docs/kes.md has the table), and
runs the service's own methods: `create_key`, `describe`, `iter_keys`, `schedule_deletion`,
`generate_data_key`, `encrypt`, `decrypt`, `generate_mac`. The ciphertext is s3kms's ciphertext
blob (docs/ciphertext-format.md): it names the key and its version, so a rotated key decrypts
what its older versions encrypted.

The context (base64 of any bytes in KES; MinIO sends JSON text) is bound as the encryption
context (`encryption_context`): a JSON object of strings, which is what MinIO sends, binds as
that map, exactly as the AWS API binds an `EncryptionContext` (so grants and conditions on
context keys apply, and the AWS API decrypts with the same map); any other bytes bind as the
one pair `{"kes:context": <their base64>}`. The two never collide (a JSON object naming
`kes:context` takes the second form), and `{}` is no context.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import platform
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from s3kms import __version__
from s3kms.access.facts import Facts
from s3kms.auth.identity import Principal
from s3kms.auth.kes import KesAuthenticator
from s3kms.clock import rfc3339
from s3kms.errors import (
    AccessDenied,
    InvalidCiphertext,
    InvalidRequest,
    KeyNotFound,
    KMSError,
    MethodNotAllowed,
    RouteNotFound,
    UnsupportedOperation,
)
from s3kms.http.jsonbody import parse_json
from s3kms.http.responses import JSON, Response, json_bytes
from s3kms.model import KEY_NAME_RE, KeyState
from s3kms.protocols.kes.errors import error_response
from s3kms.runtime import Runtime
from s3kms.service import DEFAULT_PENDING_DAYS, SYMMETRIC

MB = 1_000_000  # aead.dev/mem's MB: KES's body limit of its key routes
DATA_KEY_SIZE = 32  # KES generates 256-bit data keys
LIST_PAGE = 10_000  # names per listing (kms-go reads at most 1 MiB of it)
# The context is bound to the ciphertext and written nowhere else; AWS's limit for its map.
MAX_CONTEXT_BYTES = 8192
CONTEXT_KEY = "kes:context"

Handler = Callable[[Principal | None, str, bytes], Awaitable[Response]]
# A scrape of the metrics registry: (body, content type); None with `--metrics off`.
MetricsRender = Callable[[], Awaitable[tuple[bytes, bytes]]]

_OK_EMPTY = b""
_HMAC_ALGORITHMS = {f"HMAC_{bits}": f"HMAC_SHA_{bits}" for bits in (224, 256, 384, 512)}
_ENCRYPTION_ALGORITHM = {"kms:encryptionalgorithm": "SYMMETRIC_DEFAULT"}
_NO_CONTEXT_FACTS = Facts(values=_ENCRYPTION_ALGORITHM)
_CREATE_FACTS = Facts(
    values={
        "kms:keyspec": SYMMETRIC,
        "kms:keyusage": "ENCRYPT_DECRYPT",
        "kms:keyorigin": "AWS_KMS",
        "kms:multiregion": "false",
    }
)
_GO_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


# -- names ------------------------------------------------------------------------------------------


def valid_name(s: str) -> bool:
    """minio/kes `auth.go` validName, as written there."""
    if s == "" or s == "_" or len(s) > 80:
        return False
    n = len(s) - 1
    for i, r in enumerate(s):
        if "0" <= r <= "9" or "A" <= r <= "Z" or "a" <= r <= "z" or r == "_":
            continue
        if r == "-" and 0 < i < n:
            continue
        return False
    return True


def valid_pattern(s: str) -> bool:
    """minio/kes `auth.go` validPattern, as written there."""
    if s == "*":
        return True
    if s == "_" or len(s) > 80:
        return False
    n = len(s) - 1
    for i, r in enumerate(s):
        if "0" <= r <= "9" or "A" <= r <= "Z" or "a" <= r <= "z" or r == "_":
            continue
        if (r == "-" and 0 < i < n) or (r == "*" and i == n):
            continue
        return False
    return True


def key_name(resource: str) -> str:
    """The key a route names: a KES name that is also an s3kms key id."""
    if not valid_name(resource):
        raise InvalidRequest(
            f"key name '{resource}' is empty, too long or contains invalid characters"
        )
    if not KEY_NAME_RE.fullmatch(resource):
        raise InvalidRequest(
            f"key name '{resource}' is not supported: s3kms key names start with a letter or "
            "a digit"
        )
    return resource


# -- bodies -----------------------------------------------------------------------------------------

INVALID_BODY = "invalid request body"


def json_object(body: bytes, *, optional: bool = False, message: str = INVALID_BODY) -> Any:
    """The body's JSON object (Go's json.Decoder: unknown fields ignored; a first value only)."""
    if not body.strip():
        if optional:
            return {}
        raise InvalidRequest(message)
    try:
        value = parse_json(body)
    except ValueError:
        raise InvalidRequest(message) from None
    if not isinstance(value, dict):
        raise InvalidRequest(message)
    return value


def byte_field(fields: dict[str, Any], name: str, message: str = INVALID_BODY) -> bytes | None:
    """A Go `[]byte` field: standard base64 (padded) or null; None when absent or null."""
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(message)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(message) from None


def encryption_context(raw: bytes | None) -> dict[str, str] | None:
    """The encryption context a KES context binds (the module docstring gives the rule)."""
    if not raw:
        return None
    if len(raw) > MAX_CONTEXT_BYTES:
        raise InvalidRequest(f"context is too large: at most {MAX_CONTEXT_BYTES} bytes")
    if raw[:1] == b"{":
        try:
            value = parse_json(raw)
        except ValueError:
            value = None
        if (
            isinstance(value, dict)
            and CONTEXT_KEY not in value
            and all(type(v) is str for v in value.values())
            # A duplicate name would be dropped by the parse: such bytes bind as bytes.
            and len(json.loads(raw, object_pairs_hook=lambda pairs: pairs)) == len(value)
        ):
            return value or None
    return {CONTEXT_KEY: base64.b64encode(raw).decode()}


def _facts(context: dict[str, str] | None) -> Facts:
    if context is None:
        return _NO_CONTEXT_FACTS
    return Facts(encryption_context=context, values=_ENCRYPTION_ALGORITHM)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _ok(payload: Any) -> Response:
    # KES's ReplyWith: json.Encoder.Encode, which ends the document with a newline.
    return Response(200, json_bytes(payload) + b"\n", JSON)


def _empty() -> Response:
    return Response(200, _OK_EMPTY, b"")


# -- the route table --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    method: str  # KES's; POST is taken for PUT as KES takes it
    path: str  # "/v1/key/create/" for a route with a name, else the whole path
    max_body: int  # bytes
    timeout: int  # seconds, as /v1/api reports it
    operation: str  # the name of the route in metrics and in the audit line before auth
    handler: Handler
    named: bool = False  # the path ends with a key name or a listing pattern
    changes: bool = False  # the audit log records its intent before it runs
    public: bool = False  # no identity check (/version, as KES's InsecureSkipVerify)

    def check_method(self, method: str) -> None:
        if method != self.method and not (method == "POST" and self.method == "PUT"):
            raise MethodNotAllowed(f"received method '{method}' expected '{self.method}'")


# The policy action of each route, for docs/kes.md's table and the tests.
ACTIONS = {
    "/version": None,
    "/v1/api": "admin:KMSStatus",
    "/v1/status": "admin:KMSStatus",
    "/v1/ready": "admin:KMSStatus",
    "/v1/metrics": "admin:Prometheus",
    "/v1/key/create/": "kms:CreateKey",
    "/v1/key/import/": "kms:ImportKeyMaterial",
    "/v1/key/describe/": "kms:DescribeKey",
    "/v1/key/list/": "kms:ListKeys",
    "/v1/key/delete/": "kms:ScheduleKeyDeletion",
    "/v1/key/generate/": "kms:GenerateDataKey",
    "/v1/key/encrypt/": "kms:Encrypt",
    "/v1/key/decrypt/": "kms:Decrypt",
    "/v1/key/hmac/": "kms:GenerateMac",
}


class KesAPI:
    """The routes of one KES listener; `route` finds one, its handler answers."""

    def __init__(
        self,
        runtime: Runtime,
        auth: KesAuthenticator,
        metrics: MetricsRender | None = None,
        *,
        list_page: int = LIST_PAGE,
    ) -> None:
        self.runtime = runtime
        self.auth = auth
        self.metrics = metrics
        self.list_page = list_page
        self._started = time.monotonic()
        get, put, delete = "GET", "PUT", "DELETE"
        table = [
            Route(get, "/version", 0, 10, "kes:Version", self.version, public=True),
            Route(get, "/v1/api", 0, 10, "kes:ListAPIs", self.apis),
            Route(get, "/v1/status", 0, 15, "kes:Status", self.status),
            Route(get, "/v1/ready", 0, 15, "kes:Ready", self.ready),
            Route(get, "/v1/metrics", 0, 15, "kes:Metrics", self.metrics_route),
            Route(put, "/v1/key/create/", 0, 15, "kes:KeyCreate", self.create, True, True),
            Route(put, "/v1/key/import/", MB, 15, "kes:KeyImport", self.import_key, True, True),
            Route(get, "/v1/key/describe/", 0, 15, "kes:KeyDescribe", self.describe, True),
            Route(get, "/v1/key/list/", 0, 15, "kes:KeyList", self.list_keys, True),
            Route(delete, "/v1/key/delete/", 0, 15, "kes:KeyDelete", self.delete, True, True),
            Route(put, "/v1/key/generate/", MB, 15, "kes:KeyGenerate", self.generate, True),
            Route(put, "/v1/key/encrypt/", MB, 15, "kes:KeyEncrypt", self.encrypt, True),
            Route(put, "/v1/key/decrypt/", MB, 15, "kes:KeyDecrypt", self.decrypt, True),
            Route(put, "/v1/key/hmac/", MB, 15, "kes:KeyHMAC", self.hmac, True),
        ]
        self.routes = {route.path: route for route in table}

    def route(self, path: str) -> tuple[Route, str]:
        """(the route, the name or pattern after its prefix); RouteNotFound otherwise."""
        route = self.routes.get(path)
        if route is not None:  # a whole path, or a named route's prefix itself (empty name)
            return route, ""
        if path.startswith("/v1/key/"):
            end = path.find("/", 8)
            if end < 0:  # "/v1/key/list": KES's mux redirects it to "/v1/key/list/"
                route = self.routes.get(path + "/")
                if route is not None:
                    return route, ""
            else:
                route = self.routes.get(path[: end + 1])
                if route is not None:
                    return route, path[end + 1 :]
        raise RouteNotFound

    def authenticate(self, identity: str, source_ip: str | None) -> Principal:
        """The caller of an identity; KES's 403 for one s3kms does not know."""
        principal = self.auth.principal(identity, source_ip=source_ip)
        if principal is None:
            raise AccessDenied("not authorized: unknown identity")
        return principal

    # -- server routes ------------------------------------------------------------------------------

    async def version(self, principal: Principal | None, resource: str, body: bytes) -> Response:
        return _ok({"version": __version__, "commit": ""})

    async def apis(self, principal: Principal | None, resource: str, body: bytes) -> Response:
        assert principal is not None
        principal.authorize("admin:KMSStatus")
        return _ok(
            [
                {"method": r.method, "path": r.path, "max_body": r.max_body, "timeout": r.timeout}
                for r in self.routes.values()
            ]
        )

    async def _reachable(self) -> tuple[bool, float]:
        started = time.perf_counter()
        try:
            async with self.runtime.use() as service:
                report = await service.backend_report(count_keys=False)
        except KMSError:
            return False, 0.0
        return report.connected, time.perf_counter() - started

    async def status(self, principal: Principal | None, resource: str, body: bytes) -> Response:
        assert principal is not None
        principal.authorize("admin:KMSStatus")
        reachable, latency = await self._reachable()
        payload: dict[str, Any] = {
            "version": __version__,
            "os": platform.system().lower(),
            "arch": _GO_ARCH.get(platform.machine().lower(), platform.machine().lower()),
            "uptime": int(time.monotonic() - self._started),
            "num_cpu": os.cpu_count() or 1,
            "num_cpu_used": len(os.sched_getaffinity(0)),
            "mem_heap_used": _resident_bytes(),
            "mem_stack_used": 0,
        }
        if reachable:  # milliseconds, at least 1 (as KES reports it)
            payload["keystore_latency"] = max(1, round(latency * 1000))
        else:
            payload["keystore_unreachable"] = True
        return _ok(payload)

    async def ready(self, principal: Principal | None, resource: str, body: bytes) -> Response:
        assert principal is not None
        principal.authorize("admin:KMSStatus")
        reachable, _ = await self._reachable()
        if not reachable:
            return error_response(504, "key store is not reachable")
        return _empty()

    async def metrics_route(
        self, principal: Principal | None, resource: str, body: bytes
    ) -> Response:
        assert principal is not None
        principal.authorize("admin:Prometheus")
        if self.metrics is None:
            raise UnsupportedOperation("metrics are off on this server (--metrics off)")
        text, content_type = await self.metrics()
        return Response(200, text, content_type)

    # -- key routes ---------------------------------------------------------------------------------

    async def create(self, principal: Principal | None, resource: str, body: bytes) -> Response:
        assert principal is not None
        name = key_name(resource)
        # On the key's ARN, as the admin API's key/create: a policy may name the keys one creates.
        principal.authorize("kms:CreateKey", name, _CREATE_FACTS)
        async with self.runtime.use() as service:
            await service.create_key(name)
        return _empty()

    async def import_key(self, principal: Principal | None, resource: str, body: bytes) -> Response:
        assert principal is not None
        name = key_name(resource)
        message = "invalid import key request body"
        fields = json_object(body, message=message)
        cipher = fields.get("cipher")
        material = byte_field(fields, "key", message)
        if cipher not in ("AES256", "AES256-GCM_SHA256"):
            return error_response(406, f"algorithm '{cipher}' is not supported")
        if material is None or len(material) != DATA_KEY_SIZE:
            return error_response(406, f"invalid key size for '{cipher}'")
        # It makes the key: the caller may create keys, and import material into this one.
        principal.authorize("kms:CreateKey", name, _CREATE_FACTS)
        principal.authorize("kms:ImportKeyMaterial", name)
        async with self.runtime.use() as service:
            await service.create_imported_key(name, material)
        return _empty()

    async def describe(self, principal: Principal | None, resource: str, body: bytes) -> Response:
        assert principal is not None
        name = key_name(resource)
        gate = principal.gate("kms:DescribeKey", name)
        async with self.runtime.use() as service:
            meta = await service.describe(name, access=gate)
        if meta.state is KeyState.PENDING_DELETION:
            raise KeyNotFound(key_id=name)
        payload: dict[str, Any] = {"name": name}
        if meta.key_spec == SYMMETRIC:  # kms-go knows AES256 and ChaCha20 only
            payload["algorithm"] = "AES256"
        payload["created_at"] = rfc3339(meta.created_at)
        return _ok(payload)

    async def list_keys(self, principal: Principal | None, resource: str, body: bytes) -> Response:
        assert principal is not None
        if not valid_pattern(resource):
            raise InvalidRequest(f"listing pattern '{resource}' is empty, too long or is invalid")
        principal.authorize("kms:ListKeys")
        prefix = resource[:-1] if resource.endswith("*") else resource
        names: list[str] = []
        continue_at = ""
        after: str | None = None
        async with self.runtime.use() as service:
            while not continue_at:
                page = await service.list_keys(after=after, limit=1000, prefix=prefix)
                for meta in page:
                    if meta.state is KeyState.PENDING_DELETION or not valid_name(meta.key_id):
                        continue
                    if len(names) == self.list_page:
                        continue_at = meta.key_id  # as KES's keystore.List: the next name
                        break
                    names.append(meta.key_id)
                if len(page) < 1000:
                    break
                after = page[-1].key_id
        payload: dict[str, Any] = {"names": names}
        if continue_at:
            payload["continue_at"] = continue_at
        return _ok(payload)

    async def delete(self, principal: Principal | None, resource: str, body: bytes) -> Response:
        """KES deletes at once; s3kms schedules the deletion (the admin API's default window),
        after which the key is gone for KES (404) and may still be cancelled by an operator."""
        assert principal is not None
        name = key_name(resource)
        gate = principal.gate("kms:ScheduleKeyDeletion", name)
        async with self.runtime.use() as service:
            await service.schedule_deletion(name, DEFAULT_PENDING_DAYS, access=gate)
        return _empty()

    async def generate(self, principal: Principal | None, resource: str, body: bytes) -> Response:
        assert principal is not None
        name = key_name(resource)
        context = encryption_context(byte_field(json_object(body, optional=True), "context"))
        gate = principal.gate("kms:GenerateDataKey", name, _facts(context))
        async with self.runtime.use() as service:
            data_key = await service.generate_data_key(name, DATA_KEY_SIZE, context, access=gate)
        return _ok({"plaintext": _b64(data_key.plaintext), "ciphertext": _b64(data_key.ciphertext)})

    async def encrypt(self, principal: Principal | None, resource: str, body: bytes) -> Response:
        assert principal is not None
        name = key_name(resource)
        fields = json_object(body)
        plaintext = byte_field(fields, "plaintext") or b""
        context = encryption_context(byte_field(fields, "context"))
        gate = principal.gate("kms:Encrypt", name, _facts(context))
        async with self.runtime.use() as service:
            _, ciphertext = await service.encrypt(name, plaintext, context, access=gate)
        return _ok({"ciphertext": _b64(ciphertext)})

    async def decrypt(self, principal: Principal | None, resource: str, body: bytes) -> Response:
        assert principal is not None
        name = key_name(resource)
        fields = json_object(body)
        ciphertext = byte_field(fields, "ciphertext") or b""
        context = encryption_context(byte_field(fields, "context"))
        gate = principal.gate("kms:Decrypt", name, _facts(context))
        async with self.runtime.use() as service:
            try:
                named = service.ciphertext_key_id(ciphertext)
            except KMSError:
                named = None
            if named != name:
                # Not a ciphertext of this key. The caller learns that only once it may decrypt
                # with the key it named (KES authorises before it reads anything).
                await service.describe(name, access=gate)
                raise InvalidCiphertext(key_id=name)
            decrypted = await service.decrypt(ciphertext, context, name, access=gate)
        return _ok({"plaintext": _b64(decrypted.plaintext)})

    async def hmac(self, principal: Principal | None, resource: str, body: bytes) -> Response:
        assert principal is not None
        name = key_name(resource)
        message = byte_field(json_object(body), "message") or b""
        gate = principal.gate("kms:GenerateMac", name)
        async with self.runtime.use() as service:
            meta = await service.describe(name, access=gate)
            if meta.state is KeyState.PENDING_DELETION:
                raise KeyNotFound(key_id=name)
            algorithm = _HMAC_ALGORITHMS.get(meta.key_spec)
            if algorithm is None:
                # 501: MinIO then derives no root credentials from the KMS (it tolerates 501).
                raise UnsupportedOperation("key does not support HMAC")
            _, tag = await service.generate_mac(name, message, algorithm, access=gate)
        return _ok({"hmac": _b64(tag)})


def _resident_bytes() -> int:
    """This process's resident memory (the nearest to Go's heap figure a Python process has)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
