"""The Vault keystore: key material in Vault/OpenBao transit, key metadata in Vault KV version 2.

Every KMS node is stateless: a key's state lives only in Vault, so a key disabled through one node
is refused by every other node on its next request (there is no cache). The layout:

    <mount_path>/keys/<key_id>                      transit aes256-gcm96 key (never exportable)
    <kv_mount>/data/<kv_prefix>/keys/<key_id>       KeyMetadata + rotation history
    <kv_mount>/data/<kv_prefix>/aliases/<name>      an alias ("alias/" stripped from the name)

Transit key names are the bare key ids: two deployments that must not share keys need separate
transit mounts (kv_prefix separates only the metadata).

`KeyMetadata.revision` is the KV version of the key's record, and every metadata write is a KV
check-and-set on it, so concurrent writers on different nodes cannot lose each other's updates.
A key exists when its KV record exists: a transit key without a record (a create that failed half
way) is invisible, and the next create of that id completes it.

Encrypt and decrypt read the metadata and call transit concurrently (one round trip of latency),
then run the caller's state check before anything is returned. Encrypt never creates a transit
key: connect() sets the mount's `disable_upsert`, and where it may not, encrypt reads the
metadata first and calls transit only for a key that exists.

Transport: one pooled httpx client. Requests go to the current address; a connection failure,
timeout, 503 (sealed), 429 (standby/rate limit) or 307 (a standby that cannot forward, e.g. during
an election) moves to another address. A transit rotate, which is not idempotent, is resent only
when the failure proves Vault never saw it; otherwise the key's latest version tells whether it
happened. The timing budget of one request:

- Each try is bounded by `timeout_seconds` (default 10), of which opening the connection (TCP and
  TLS) by `connect_timeout_seconds` (default 2; a healthy node connects in milliseconds).
- When every address has been tried once (a pass) and failed, what follows depends on why:
  - Sealed on every address: 503 at once (waiting does not unseal Vault).
  - No address accepted a connection (refused, or none within the connect timeout): Vault is
    down or unreachable, and the request certainly reached nothing. It is retried with backoff
    only until `_DOWN_RETRY` (1 s) after it began, then 503. A killed Vault or a closed port thus
    answers within about 1 s; an address that drops packets costs one connect timeout, and with
    several addresses one more look for the active node (at most 2 s, all addresses at once):
    at most 4 s with the defaults.
  - Otherwise (some node answered: a standby during an election with 307 or 500, a 429, a
    proxy's 502/504; or a node accepted the connection and then hung until `timeout_seconds`):
    requests that are safe to resend are retried with exponential backoff (0.1 s doubling to
    2 s) until `2 * timeout_seconds` have passed. This rides out an election (2-3 s on the test
    cluster, while the dead leader refuses and the standbys answer 307) and moves past a hung
    node, at the cost of one `timeout_seconds` per hung try.
- After a request has exhausted its retries the store is "degraded": later requests make one pass
  over the addresses without backoff, so during an outage only the first requests wait (at most
  the budget above), and the first answer from Vault ends the degraded state.

Leader preference: with several addresses (the nodes of one HA cluster), the current address is the
cluster's ACTIVE node whenever one can be found. OpenBao's standbys answer reads (KV reads, transit
decrypt and encrypt) from their own raft replica, which can lag the active node: right after a
write through the active node a standby may answer 404 / "encryption key not found", or encrypt
with the previous key version. Two s3kms nodes reading through different standbys would then
disagree, so every request goes to the active node. It is found with `sys/health` on every
address at once (active: unsealed and not a standby) at connect; again, before the retry, when a
request fails on the current address (it may have lost its leadership or died); at most every
0.5 s while the current address is not known to be active (an election, or no listed node is
active); every 10 s in the background otherwise (a leadership change that caused no error, e.g. a
step-down); and when a not-found answer came from a node not known to be active. Such an answer
may be stale (the thing was written moments ago through the active node), so the request (which
had no effect) is resent to the active node, or, while there is none (an election), retried with
backoff; only when the budget is spent is the standby's answer believed. With no active node in
reach, requests go to any unsealed standby (which forwards writes). So list every node of the
cluster (or one address that always reaches the active node). Setting `disable_standby_reads =
true` on the servers makes every standby forward everything instead; leader preference then only
saves the forwarding hop.

Auth: a renewable token with a TTL is renewed, and an AppRole token replaced by a new login, at
half its life by a background task (so an idle node keeps a live token); a request past 3/4 of
the life refreshes first (the backstop), and with AppRole a 403 causes one new login and one
retry. The token and the secret id never appear in logs, messages or repr().
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import random
import ssl
import time
import uuid
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from s3kms.config import CREDENTIALS_IN_ADDRESS, VaultSettings, redact_address, redact_urls
from s3kms.errors import (
    AliasNotFound,
    BackendUnavailable,
    InternalError,
    InvalidCiphertext,
    InvalidRequest,
    KeyAlreadyExists,
    KeyNotFound,
    KMSError,
    UnsupportedOperation,
)
from s3kms.keystore.base import BackendStatus, RotationDue, StateCheck, WriteConflict
from s3kms.model import Alias, KeyMetadata, KeyState, KeyVersion, RotationType

log = logging.getLogger("s3kms.keystore.vault")

T = TypeVar("T")

KEY_TYPE = "aes256-gcm96"
RECORD_FORMAT = 1
# Vault calls in flight per s3kms node (and pooled keep-alive connections).
_MAX_IN_FLIGHT = 64
_ALIAS_PREFIX = "alias/"
# Statuses that mean "this node cannot serve the request now; another node or a later try may".
_SEALED = 503
# A 307/308 comes from a standby that could not forward the request to the active node (during an
# election it names the node that just died); s3kms never follows it, it looks for the active node.
_UNAVAILABLE = frozenset({307, 308, 412, 429, 500, 502, 503, 504})
# Of those, the ones that prove the request was not carried out (safe to resend anything).
_NOT_PROCESSED = frozenset({307, 308, 412, 429, 503})
_READ_CONCURRENCY = 16
_BACKOFF_START = 0.1
_BACKOFF_MAX = 2.0
# Once every address has failed to connect (refused, or no connection within the connect
# timeout), a request is retried only until this many seconds after it began: a down Vault
# answers 503 at once instead of after the whole retry budget (see the module docstring).
_DOWN_RETRY = 1.0
_CAS_RETRIES = 20
# Leader preference (several addresses): how often to look for the active node.
_LEADER_RECHECK = 10.0  # while the current address is the known active node (in the background)
_LEADER_RETRY = 0.5  # while it is not (before a request)
_LEADER_AFTER_FAILURE = 0.1  # after a request failed on it or got a not-found answer
_HEALTH_TIMEOUT = 5.0  # status()
_DISCOVERY_TIMEOUT = 2.0  # looking for the active node (a healthy node answers in milliseconds)


class _OutcomeUnknown(BackendUnavailable):
    """A request that must not be resent failed after Vault may have carried it out."""


@dataclass(slots=True)
class _Resp:
    status: int
    body: dict[str, Any]
    # True when an earlier attempt of this request may have been carried out by Vault.
    resent: bool = False

    @property
    def data(self) -> dict[str, Any]:
        data = self.body.get("data")
        return data if isinstance(data, dict) else {}

    @property
    def errors(self) -> str:
        errors = self.body.get("errors")
        if isinstance(errors, list) and errors:
            return "; ".join(" ".join(str(e).split()) for e in errors)
        return f"HTTP {self.status}"

    @property
    def not_found(self) -> bool:
        """A 404 for a missing item (`{"errors": []}`), not for a missing mount or route."""
        return self.status == 404 and "no handler for route" not in self.errors


@dataclass(slots=True)
class _Record:
    data: dict[str, Any]
    version: int


@dataclass(slots=True)
class _Attempts:
    """Book-keeping of one request's tries over the addresses."""

    reasons: list[str] = field(default_factory=list)
    pass_sealed: int = 0
    pass_unreachable: int = 0  # no connection at all: refused, connect timeout
    pass_tries: int = 0


@dataclass(slots=True, frozen=True)
class _Health:
    """One address's sys/health: usable, why (e.g. "active", "Vault is sealed"), and whether
    a connection could be opened at all."""

    ok: bool
    reason: str
    connected: bool = True


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _meta_to_record(meta: KeyMetadata, versions: Sequence[KeyVersion]) -> dict[str, Any]:
    return {
        "format": RECORD_FORMAT,
        "key_id": meta.key_id,
        "state": meta.state.value,
        "created_at": meta.created_at,
        "description": meta.description,
        "current_version": meta.current_version,
        "deletion_date": meta.deletion_date,
        "pending_window_days": meta.pending_window_days,
        "rotation_enabled": meta.rotation_enabled,
        "rotation_period_days": meta.rotation_period_days,
        "next_rotation": meta.next_rotation,
        "tags": [[k, v] for k, v in meta.tags],
        "versions": [
            {
                "version": v.version,
                "created_at": v.created_at,
                "rotation_type": v.rotation_type.value if v.rotation_type else None,
            }
            for v in versions
        ],
    }


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _record_to_meta(record: _Record) -> KeyMetadata:
    d = record.data
    try:
        return KeyMetadata(
            key_id=str(d["key_id"]),
            state=KeyState(d["state"]),
            created_at=float(d["created_at"]),
            description=str(d.get("description", "")),
            current_version=int(d["current_version"]),
            deletion_date=_opt_float(d.get("deletion_date")),
            pending_window_days=(
                None if d.get("pending_window_days") is None else int(d["pending_window_days"])
            ),
            rotation_enabled=bool(d.get("rotation_enabled", False)),
            rotation_period_days=int(d.get("rotation_period_days", 365)),
            next_rotation=_opt_float(d.get("next_rotation")),
            tags=tuple((str(k), str(v)) for k, v in d.get("tags", [])),
            revision=record.version,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InternalError(f"malformed key metadata in Vault for key {d.get('key_id')!r}") from exc


def _record_versions(data: dict[str, Any]) -> list[KeyVersion]:
    out = []
    for v in data.get("versions", []):
        rt = v.get("rotation_type")
        out.append(
            KeyVersion(int(v["version"]), float(v["created_at"]), RotationType(rt) if rt else None)
        )
    return sorted(out, key=lambda kv: kv.version)


def _parse_ciphertext(text: Any) -> tuple[int, bytes]:
    """`vault:v<N>:<base64>` -> (N, raw bytes)."""
    if isinstance(text, str):
        parts = text.split(":")
        if len(parts) == 3 and parts[1].startswith("v") and parts[1][1:].isdigit():
            with contextlib.suppress(binascii.Error, ValueError):
                return int(parts[1][1:]), _unb64(parts[2])
    raise InternalError("Vault transit returned a malformed ciphertext")


def _connect_failed(exc: httpx.TransportError) -> bool:
    """No connection was opened (refused, unresolvable, TLS handshake, connect timeout): the
    request certainly never reached Vault."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def _describe(exc: httpx.TransportError) -> str:
    # redact_urls: an httpx message may quote the URL (the addresses have no userinfo, as
    # connect() checks; this is the second line).
    if isinstance(exc, httpx.ConnectTimeout):
        return "cannot connect (timed out)"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({redact_urls(str(exc))})" if str(exc) else "cannot connect"
    return f"{type(exc).__name__}: {redact_urls(str(exc))}" if str(exc) else type(exc).__name__


async def _bounded_gather(items: Iterable[Awaitable[T]], limit: int) -> list[T]:
    sem = asyncio.Semaphore(limit)

    async def one(aw: Awaitable[T]) -> T:
        async with sem:
            return await aw

    return list(await asyncio.gather(*(one(aw) for aw in items)))


class VaultKeyStore:
    """The KeyStore protocol on HashiCorp Vault / OpenBao (transit + KV v2). Build with connect()."""

    kind = "vault"
    material_exportable = False  # transit keys are created non-exportable

    def __init__(self, settings: VaultSettings, client: httpx.AsyncClient) -> None:
        """Use `connect()`, which authenticates and validates the configuration."""
        self.settings = settings
        self.endpoint = settings.endpoint
        self._client = client
        # Queue excess calls here, in O(1): httpcore's pool scans every waiting request and
        # connection on each release, which collapsed throughput at hundreds of requests in flight.
        self._slots = asyncio.Semaphore(_MAX_IN_FLIGHT)
        self._addresses = settings.addresses
        # The addresses as messages and logs show them (never with a userinfo part).
        self._labels = tuple(redact_address(a) for a in settings.addresses)
        self._current = 0
        # Leader preference: whether the current address is known to be the active node, when it
        # was last checked (loop time), and the background re-check, if one is running.
        self._multi = len(self._addresses) > 1
        self._active_known = not self._multi
        self._leader_checked = float("-inf")
        self._leader_lock = asyncio.Lock()
        self._leader_task: asyncio.Task[None] | None = None
        self.leader_changes = 0  # times the preferred address moved (observability, tests)
        # The last look for the active node opened no connection to any address (every one
        # refused or timed out connecting), and those addresses' reasons.
        self._none_reachable = False
        self._unreachable: list[str] = []
        self._timeout = settings.timeout_seconds
        self._connect_timeout = min(settings.connect_timeout_seconds, settings.timeout_seconds)
        self._budget = 2 * settings.timeout_seconds
        self._degraded = False
        self._transit = settings.mount_path.strip("/")
        self._kv = settings.kv_mount.strip("/")
        self._prefix = settings.kv_prefix.strip("/")
        self._approle = settings.app_role_id is not None
        # Auth state. The token is never logged nor put into a message or repr.
        self._token: str | None = settings.token
        self._token_ttl = 0.0  # seconds the token had to live when last obtained; 0 = no expiry
        self._token_obtained = 0.0  # time.monotonic() of that moment
        self._token_renewable = False
        self._auth_lock = asyncio.Lock()
        self._auth_task: asyncio.Task[None] | None = None
        self._auth_problem: str | None = None
        self.auth_refreshes = 0  # renewals + re-logins since connect (observability, tests)
        self._upsert_disabled = False
        self._closed = False

    def __repr__(self) -> str:
        return f"VaultKeyStore(endpoint={self.endpoint!r}, mount={self._transit!r})"

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    async def connect(cls, settings: VaultSettings) -> VaultKeyStore:
        """Open the client, authenticate and check the Vault side; raise instead of half-working.

        BackendUnavailable: Vault unreachable, sealed, or timing out on every address.
        InvalidRequest: Vault answers but rejects the credentials or lacks the mounts.
        """
        if not settings.addresses:
            raise InvalidRequest("no Vault address configured")
        if any("@" in a for a in settings.addresses):
            # parse_vault_addresses refuses these; settings may also come from an older
            # kms-config.json or be built directly. httpx would send them as Basic auth.
            raise InvalidRequest(CREDENTIALS_IN_ADDRESS)
        if settings.token is None and (
            settings.app_role_id is None or settings.app_role_secret_id is None
        ):
            raise InvalidRequest("a Vault token or an AppRole role_id and secret_id is required")
        verify: ssl.SSLContext | bool
        if settings.skip_tls_verify:
            verify = False
        elif settings.ca_cert:
            try:
                verify = ssl.create_default_context(cafile=settings.ca_cert)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidRequest(f"cannot load Vault CA certificate: {exc}") from exc
        else:
            verify = True
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.timeout_seconds,
                connect=min(settings.connect_timeout_seconds, settings.timeout_seconds),
            ),
            verify=verify,
            # Keep every pooled connection alive: closing and reopening them under load costs more
            # than the Vault calls themselves (throughput fell as client connections rose).
            limits=httpx.Limits(
                max_connections=_MAX_IN_FLIGHT, max_keepalive_connections=_MAX_IN_FLIGHT
            ),
            trust_env=False,
        )
        store = cls(settings, client)
        try:
            await store._check_health()
            await store._authenticate()
            await store._check_mounts()
            await store._disable_upsert()
        except BaseException:
            await store.close()
            raise
        store._auth_task = asyncio.get_running_loop().create_task(
            store._auth_loop(), name="s3kms-vault-auth"
        )
        return store

    async def __aenter__(self) -> VaultKeyStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _timeouts(self, seconds: float) -> httpx.Timeout:
        """`seconds` for the whole try, of which at most the connect timeout to connect."""
        return httpx.Timeout(seconds, connect=min(self._connect_timeout, seconds))

    async def _health(self, address: str, timeout: float = _HEALTH_TIMEOUT) -> _Health:
        """One address's sys/health (no token needed); the reason of a usable address is
        "active" or "standby"."""
        try:
            resp = await self._client.get(
                f"{address}/v1/sys/health",
                params={"standbyok": "true", "perfstandbyok": "true"},
                timeout=self._timeouts(min(self._timeout, timeout)),
            )
        except httpx.TransportError as exc:
            return _Health(False, _describe(exc), connected=not _connect_failed(exc))
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if body.get("initialized") is False or resp.status_code == 501:
            return _Health(False, "Vault is not initialized")
        if body.get("sealed") is True or resp.status_code == 503:
            return _Health(False, "Vault is sealed")
        if resp.status_code in (200, 429, 472, 473):
            standby = body.get("standby") or body.get("performance_standby")
            standby = standby or resp.status_code != 200
            return _Health(True, "standby" if standby else "active")
        return _Health(False, f"health check answered HTTP {resp.status_code}")

    async def _check_health(self) -> None:
        """At connect: point at the active node, else at a usable one, else fail."""
        reasons = await self._discover()
        if len(reasons) == len(self._addresses):
            raise BackendUnavailable("Vault is unavailable: " + "; ".join(reasons))

    async def _discover(self) -> list[str]:
        """Ask every address's sys/health at once and prefer the active node: the first to say
        "active" becomes the current address (the other checks are dropped). Without an active
        node, a usable standby is taken (the current address if it is one). Returns the reasons
        of the addresses found unusable ("<address>: <reason>")."""
        loop = asyncio.get_running_loop()
        self._leader_checked = loop.time()
        pending = {
            asyncio.ensure_future(self._health(address, _DISCOVERY_TIMEOUT)): i
            for i, address in enumerate(self._addresses)
        }
        reasons: list[str] = []
        unconnected = 0
        standbys: list[int] = []
        active: int | None = None
        try:
            while pending and active is None:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    i = pending.pop(task)
                    health = task.result()
                    if not health.ok:
                        reasons.append(f"{self._labels[i]}: {health.reason}")
                        unconnected += not health.connected
                    elif health.reason == "active" and active is None:
                        active = i
                    else:
                        standbys.append(i)
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            # The result's age counts from now: a look that waited out connect timeouts must
            # not be repeated at once by the next request (see _request).
            self._leader_checked = loop.time()
        self._none_reachable = unconnected == len(self._addresses)
        self._unreachable = reasons if self._none_reachable else []
        if active is not None:
            self._prefer(active, active=True)
        elif standbys:
            self._prefer(self._current if self._current in standbys else min(standbys), False)
        else:
            self._active_known = False
        return reasons

    def _prefer(self, index: int, active: bool) -> None:
        if index != self._current:
            self.leader_changes += 1
            log.info(
                "Vault requests now go to %s (%s)",
                self._labels[index],
                "the active node" if active else "a standby: no active node found",
            )
        self._current = index
        self._active_known = active

    async def _find_leader(self, max_age: float) -> None:
        """Look for the active node unless someone did within `max_age` seconds (one at a time:
        concurrent callers wait for the running check and use its result)."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._leader_checked < max_age:
            return
        async with self._leader_lock:
            if loop.time() - self._leader_checked < max_age:
                return
            try:
                await self._discover()
            except Exception:  # never let a health check break a request
                log.exception("looking for the active Vault node failed")

    def _leader_check_due(self) -> None:
        """Before a request: a background re-check when the current address is the known active
        node (it may have stepped down silently); see `_request` for the other case."""
        if self._leader_task is not None and not self._leader_task.done():
            return
        if asyncio.get_running_loop().time() - self._leader_checked >= _LEADER_RECHECK:
            self._leader_task = asyncio.get_running_loop().create_task(
                self._find_leader(_LEADER_RECHECK), name="s3kms-vault-leader"
            )

    async def _authenticate(self) -> None:
        if self._approle:
            await self._login(configuring=True)
            return
        resp = await self._request("GET", "auth/token/lookup-self", token=self._token, once=True)
        if resp.status in (400, 401, 403):
            raise InvalidRequest(f"Vault rejected the token: {resp.errors}")
        if resp.status != 200:
            raise InvalidRequest(f"Vault token lookup failed: {resp.errors}")
        data = resp.data
        self._set_token(self._token, float(data.get("ttl") or 0), bool(data.get("renewable")))
        if self._token_ttl and not self._token_renewable:
            log.warning("the Vault token is not renewable and expires in %.0f s", self._token_ttl)

    async def _check_mounts(self) -> None:
        await self._check_mount(self._transit, "transit", "transit engine", f"{self._transit}/keys")
        await self._check_mount(
            self._kv, "kv", "KV version 2 engine", f"{self._kv}/metadata/{self._prefix}/keys"
        )

    async def _check_mount(self, mount: str, kind: str, label: str, list_path: str) -> None:
        resp = await self._call("GET", f"sys/internal/ui/mounts/{mount}", once=True, raw=True)
        if resp.status == 200:
            found = resp.data.get("type")
            if found != kind:
                raise InvalidRequest(
                    f"the Vault mount {mount!r} is a {found} engine, not a {label}"
                )
            options = resp.data.get("options") or {}
            if kind == "kv" and str(options.get("version")) != "2":
                raise InvalidRequest(f"the Vault mount {mount!r} is KV version 1, not a {label}")
            return
        # The mount lookup is denied both for a missing mount and for a token without access to
        # it: a LIST tells "no handler for route" (not mounted) from an answer (mounted).
        listed = await self._call("GET", list_path, params={"list": "true"}, once=True, raw=True)
        if listed.status == 404 and not listed.not_found:
            raise InvalidRequest(f"{label} not mounted at {mount!r}: {listed.errors}")
        if listed.status in (200, 404):
            return
        raise InvalidRequest(f"cannot use the {label} at {mount!r}: {resp.errors}")

    async def _disable_upsert(self) -> None:
        """Make encrypt to a missing transit key fail instead of creating it (mount-wide)."""
        resp = await self._call(
            "POST", f"{self._transit}/config/keys", json={"disable_upsert": True}, raw=True
        )
        if resp.status in (200, 204):
            self._upsert_disabled = True
            return
        if resp.status not in (403, 404, 405):
            log.warning("cannot set disable_upsert on %s: %s", self._transit, resp.errors)
        check = await self._call("GET", f"{self._transit}/config/keys", raw=True)
        self._upsert_disabled = check.status == 200 and check.data.get("disable_upsert") is True
        if not self._upsert_disabled:
            log.warning(
                "transit upsert is not disabled on %r (no permission to set it): encrypt will read"
                " key metadata before calling transit, costing a second round trip",
                self._transit,
            )

    # -- transport ------------------------------------------------------------------------------

    def _headers(self, token: str | None) -> dict[str, str]:
        headers = {}
        if token:
            headers["X-Vault-Token"] = token
        if self.settings.namespace:
            headers["X-Vault-Namespace"] = self.settings.namespace
        return headers

    def _advance(self, index: int) -> None:
        if self._current == index:
            self._current = (index + 1) % len(self._addresses)

    async def _failed(self, index: int) -> None:
        """A request failed on address `index`: look for the active node (it may be another one
        now); when none is found, move on to the next address."""
        if self._current != index:
            return  # another request already moved on
        if self._multi:
            self._active_known = False
            await self._find_leader(_LEADER_AFTER_FAILURE)
            if self._active_known:
                return  # the active node: another one now, or the same after a passing failure
        self._advance(index)

    def _none_reachable_pass(self, attempts: _Attempts) -> bool:
        """When the last look for the active node could connect to no address, count that as a
        whole pass of `attempts` that found every address unreachable: trying each one again
        would only wait out the same connect timeouts."""
        if not (self._multi and not self._active_known and self._none_reachable):
            return False
        attempts.reasons += self._unreachable
        attempts.pass_tries = attempts.pass_unreachable = len(self._addresses)
        attempts.pass_sealed = 0
        return True

    async def _request(
        self,
        method: str,
        path: str,
        *,
        token: str | None,
        json: Any = None,
        params: dict[str, str] | None = None,
        resend: bool = True,
        once: bool = False,
    ) -> _Resp:
        """Send one Vault request, failing over between addresses and retrying within budget.

        resend: the request may be sent again after a failure that leaves it unknown whether Vault
        carried it out (idempotent or check-and-set requests). Failures that prove it was not
        carried out (connection refused, sealed, standby, rate limited) are always retried.
        once: one pass over the addresses, no backoff (connect-time checks).
        Returns any answer that is not an availability failure; raises BackendUnavailable.
        """
        if self._closed:  # a caller that kept this store past a configuration change
            raise BackendUnavailable(
                "the Vault connection was closed (the KMS configuration changed)"
            )
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + self._budget
        single_pass = once or self._degraded
        attempts = _Attempts()
        backoff = _BACKOFF_START
        ambiguous = False
        n = len(self._addresses)
        while True:
            if self._multi:
                if self._active_known:
                    self._leader_check_due()
                else:
                    await self._find_leader(_LEADER_RETRY)
            if not self._none_reachable_pass(attempts):  # (a look at most _LEADER_RETRY ago)
                index = self._current
                address, label = self._addresses[index], self._labels[index]
                remaining = deadline - loop.time()
                try:
                    async with self._slots:
                        response = await self._client.request(
                            method,
                            f"{address}/v1/{path}",
                            json=json,
                            params=params,
                            headers=self._headers(token),
                            timeout=self._timeouts(max(min(self._timeout, remaining), 0.05)),
                        )
                except httpx.TransportError as exc:
                    reason = _describe(exc)
                    sent = not _connect_failed(exc)
                    if isinstance(exc, httpx.PoolTimeout):
                        sent = False
                    if sent and not resend:
                        raise _OutcomeUnknown(
                            f"Vault at {label} failed during {method} {path}: {reason}"
                        ) from exc
                    ambiguous = ambiguous or sent
                    attempts.pass_unreachable += _connect_failed(exc)
                    attempts.reasons.append(f"{label}: {reason}")
                else:
                    try:
                        body = response.json()
                    except ValueError:
                        body = {}
                    resp = _Resp(response.status_code, body if isinstance(body, dict) else {})
                    if resp.status not in _UNAVAILABLE:
                        self._degraded = False
                        if (
                            self._multi
                            and not self._active_known
                            and (
                                resp.not_found
                                or (resp.status == 400 and "not found" in resp.errors)
                            )
                        ):
                            # Maybe a lagging standby's answer. The request had no effect, so it
                            # is resent to the active node; while there is none (an election),
                            # it is retried with backoff, and the answer is only believed when
                            # the budget is spent.
                            await self._find_leader(_LEADER_AFTER_FAILURE)
                            moved = self._active_known and self._current != index
                            if moved and loop.time() < deadline:
                                continue
                            wait = backoff * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
                            if not (once or self._active_known) and loop.time() + wait < deadline:
                                await asyncio.sleep(wait)
                                backoff = min(backoff * 2, _BACKOFF_MAX)
                                continue
                        resp.resent = ambiguous
                        return resp
                    if resp.status in (307, 308):
                        location = redact_urls(response.headers.get("location", ""))
                        resp.body = {"errors": [f"standby redirected the request to {location}"]}
                    if resp.status not in _NOT_PROCESSED:
                        if not resend:
                            raise _OutcomeUnknown(
                                f"Vault at {label} failed during {method} {path}: {resp.errors}"
                            )
                        ambiguous = True
                    if resp.status == _SEALED:
                        attempts.pass_sealed += 1
                    attempts.reasons.append(f"{label}: {resp.errors}")
                await self._failed(index)
                attempts.pass_tries += 1
                self._none_reachable_pass(attempts)  # the look for the active node it caused
            if attempts.pass_tries >= n:  # every address failed once
                all_sealed = attempts.pass_sealed == n
                # Nothing to wait for: no address accepted a connection. A short retry covers
                # a passing refusal; a longer one would only make every caller wait.
                all_down = attempts.pass_unreachable == n
                attempts.pass_tries = attempts.pass_sealed = attempts.pass_unreachable = 0
                wait = backoff * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
                now = loop.time()
                if (
                    single_pass
                    or all_sealed
                    or now + wait >= deadline
                    or (all_down and now + wait >= began + _DOWN_RETRY)
                ):
                    break
                await asyncio.sleep(wait)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            elif loop.time() >= deadline:
                break
        self._degraded = True
        recent = attempts.reasons[-n:]
        raise BackendUnavailable("Vault is unavailable: " + "; ".join(recent))

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        resend: bool = True,
        once: bool = False,
        raw: bool = False,
    ) -> _Resp:
        """An authenticated request: refreshes a token about to expire, and with AppRole logs in
        again once on a 403 and retries. A final 403 raises BackendUnavailable unless raw."""
        await self._refresh_if_expiring()
        token = self._token
        resp = await self._request(
            method, path, token=token, json=json, params=params, resend=resend, once=once
        )
        if resp.status == 403 and self._approle and not raw:
            await self._refresh_auth(stale=token)
            resp = await self._request(
                method, path, token=self._token, json=json, params=params, resend=resend, once=once
            )
        if resp.status == 403 and not raw:
            self._auth_problem = f"Vault denied {method} {path}: {resp.errors}"
            raise BackendUnavailable(self._auth_problem)
        if resp.status != 403:
            self._auth_problem = None
        return resp

    @staticmethod
    def _unexpected(resp: _Resp, what: str) -> KMSError:
        if resp.status >= 500:
            return BackendUnavailable(f"Vault failed to {what}: {resp.errors}")
        return InternalError(f"Vault refused to {what}: {resp.errors}")

    # -- auth lifecycle -------------------------------------------------------------------------

    def _set_token(self, token: str | None, ttl: float, renewable: bool) -> None:
        self._token = token
        self._token_ttl = ttl
        self._token_renewable = renewable
        self._token_obtained = time.monotonic()

    def _refreshable(self) -> bool:
        return self._token_ttl > 0 and (self._approle or self._token_renewable)

    def _refresh_due(self) -> float:
        """monotonic() time of the next refresh: half way through the token's life."""
        return self._token_obtained + self._token_ttl / 2

    async def _login(self, *, configuring: bool = False) -> None:
        resp = await self._request(
            "POST",
            "auth/approle/login",
            token=None,
            json={
                "role_id": self.settings.app_role_id,
                "secret_id": self.settings.app_role_secret_id,
            },
            once=configuring,
        )
        if resp.status != 200:
            message = f"Vault AppRole login failed: {resp.errors}"
            if configuring:
                raise InvalidRequest(message)
            self._auth_problem = message
            raise BackendUnavailable(message)
        auth = resp.body.get("auth") or {}
        token = auth.get("client_token")
        if not isinstance(token, str) or not token:
            raise InvalidRequest("Vault AppRole login returned no token")
        self._set_token(token, float(auth.get("lease_duration") or 0), bool(auth.get("renewable")))
        self._auth_problem = None
        if not configuring:
            self.auth_refreshes += 1
        log.info("logged in to Vault with AppRole; token lease %.0f s", self._token_ttl)

    async def _renew(self) -> None:
        resp = await self._request("POST", "auth/token/renew-self", token=self._token, json={})
        if resp.status != 200:
            self._auth_problem = f"Vault token renewal failed: {resp.errors}"
            raise BackendUnavailable(self._auth_problem)
        auth = resp.body.get("auth") or {}
        previous = self._token_ttl
        self._set_token(
            self._token, float(auth.get("lease_duration") or 0), bool(auth.get("renewable"))
        )
        self.auth_refreshes += 1
        if self._token_ttl < previous:
            # Renewals no longer extend the token: it reached its max TTL and will expire.
            log.warning(
                "the Vault token reached its maximum TTL and expires in %.0f s", self._token_ttl
            )
        else:
            log.info("renewed the Vault token; lease %.0f s", self._token_ttl)

    async def _refresh_auth(self, *, stale: str | None = None) -> None:
        """Renew the token or log in again. With `stale`, only if nobody replaced that token yet;
        without, only if the refresh is due."""
        async with self._auth_lock:
            if stale is not None:
                if self._token != stale:
                    return
            elif not (self._refreshable() and time.monotonic() >= self._refresh_due()):
                return
            if self._approle:
                await self._login()
            else:
                await self._renew()

    async def _refresh_if_expiring(self) -> None:
        """The backstop for the background task (an event loop blocked, a Vault outage at the
        due time): refresh before a request once the token is past 3/4 of its life."""
        if (
            self._refreshable()
            and time.monotonic() >= self._token_obtained + 0.75 * self._token_ttl
        ):
            try:
                await self._refresh_auth()
            except KMSError as exc:
                if time.monotonic() >= self._token_obtained + self._token_ttl:
                    raise
                log.warning("Vault token refresh failed, using the current one: %s", exc.message)

    async def _auth_loop(self) -> None:
        """Renew (token) or log in again (AppRole) at half the token's life, even when idle."""
        failures = 0
        while self._refreshable():
            await asyncio.sleep(max(self._refresh_due() - time.monotonic(), 0.0))
            try:
                await self._refresh_auth()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                message = exc.message if isinstance(exc, KMSError) else type(exc).__name__
                expired = time.monotonic() >= self._token_obtained + self._token_ttl
                if expired and not self._approle:
                    log.error("the Vault token expired and cannot be renewed: %s", message)
                    return
                log.warning("Vault token refresh failed (attempt %d): %s", failures, message)
                await asyncio.sleep(min(0.5 * 2**failures, 30.0))

    # -- KV v2 ----------------------------------------------------------------------------------

    def _key_path(self, key_id: str) -> str:
        return f"{self._prefix}/keys/{quote(key_id, safe='')}"

    def _alias_path(self, name: str) -> str:
        short = name[len(_ALIAS_PREFIX) :] if name.startswith(_ALIAS_PREFIX) else name
        return f"{self._prefix}/aliases/{quote(short, safe='/')}"

    async def _kv_read(self, path: str) -> _Record | None:
        resp = await self._call("GET", f"{self._kv}/data/{path}")
        if resp.not_found:
            return None
        if resp.status != 200:
            raise self._unexpected(resp, f"read {self._kv}/data/{path}")
        payload = resp.data.get("data")
        if not isinstance(payload, dict):  # a deleted or destroyed version
            return None
        version = int((resp.data.get("metadata") or {}).get("version") or 0)
        return _Record(payload, version)

    async def _kv_write(self, path: str, data: dict[str, Any], cas: int) -> int | None:
        """Check-and-set write; the new KV version, or None when `cas` is not the current one."""
        write_id = uuid.uuid4().hex
        body = {"options": {"cas": cas}, "data": {**data, "write_id": write_id}}
        resp = await self._call("POST", f"{self._kv}/data/{path}", json=body)
        if resp.status in (200, 204):
            return int(resp.data.get("version") or cas + 1)
        if resp.status == 400 and "check-and-set" in resp.errors:
            if resp.resent:
                # An earlier attempt may have succeeded and this resend lost to it.
                current = await self._kv_read(path)
                if current is not None and current.data.get("write_id") == write_id:
                    return current.version
            return None
        raise self._unexpected(resp, f"write {self._kv}/data/{path}")

    async def _kv_delete(self, path: str) -> None:
        resp = await self._call("DELETE", f"{self._kv}/metadata/{path}")
        if resp.status not in (200, 204) and not resp.not_found:
            raise self._unexpected(resp, f"delete {self._kv}/metadata/{path}")

    async def _kv_list(self, path: str) -> list[str]:
        resp = await self._call("GET", f"{self._kv}/metadata/{path}", params={"list": "true"})
        if resp.not_found:
            return []
        if resp.status != 200:
            raise self._unexpected(resp, f"list {self._kv}/metadata/{path}")
        keys = resp.data.get("keys") or []
        return [str(k) for k in keys]

    async def _kv_list_recursive(self, path: str, base: str = "") -> list[str]:
        out: list[str] = []
        for entry in await self._kv_list(f"{path}/{quote(base, safe='/')}".rstrip("/")):
            if entry.endswith("/"):
                out += await self._kv_list_recursive(path, f"{base}{entry}")
            else:
                out.append(f"{base}{entry}")
        return out

    async def _read_key(self, key_id: str) -> _Record:
        if not key_id:
            raise KeyNotFound(key_id=key_id)
        record = await self._kv_read(self._key_path(key_id))
        if record is None:
            raise KeyNotFound(key_id=key_id)
        return record

    # -- keys -----------------------------------------------------------------------------------

    async def create_key(self, meta: KeyMetadata) -> KeyMetadata:
        path = self._key_path(meta.key_id)
        if await self._kv_read(path) is not None:
            raise KeyAlreadyExists(key_id=meta.key_id)
        # Creating a transit key that exists answers 200 with the existing key, so a retry after
        # a half-done create (transit key made, metadata write failed) completes it.
        resp = await self._call(
            "POST",
            f"{self._transit}/keys/{quote(meta.key_id, safe='')}",
            json={"type": KEY_TYPE, "exportable": False},
        )
        if resp.status not in (200, 204):
            raise self._unexpected(resp, f"create transit key {meta.key_id}")
        key = resp.data or await self._transit_key(meta.key_id)
        if key.get("type", KEY_TYPE) != KEY_TYPE:
            raise InternalError(
                f"transit key {meta.key_id} already exists with type {key.get('type')}"
            )
        latest = int(key.get("latest_version") or 1)
        times = key.get("keys") or {}
        versions = [KeyVersion(1, meta.created_at, None)] + [
            KeyVersion(v, float(times.get(str(v), meta.created_at)), RotationType.ON_DEMAND)
            for v in range(2, latest + 1)
        ]
        new = replace(meta, current_version=latest)
        revision = await self._kv_write(path, _meta_to_record(new, versions), cas=0)
        if revision is None:
            raise KeyAlreadyExists(key_id=meta.key_id)
        return replace(new, revision=revision)

    async def _transit_key(self, key_id: str) -> dict[str, Any]:
        resp = await self._call("GET", f"{self._transit}/keys/{quote(key_id, safe='')}")
        if resp.not_found:
            raise KeyNotFound(key_id=key_id)
        if resp.status != 200:
            raise self._unexpected(resp, f"read transit key {key_id}")
        return resp.data

    async def get_key(self, key_id: str) -> KeyMetadata:
        return _record_to_meta(await self._read_key(key_id))

    async def _key_ids(self) -> list[str]:
        return sorted(k for k in await self._kv_list(f"{self._prefix}/keys") if not k.endswith("/"))

    async def list_keys(
        self, *, after: str | None, limit: int, prefix: str = ""
    ) -> Sequence[KeyMetadata]:
        if limit <= 0:
            return []
        candidates = [
            k
            for k in await self._key_ids()
            if (after is None or k > after) and k.startswith(prefix)
        ]

        async def read(key_id: str) -> KeyMetadata | None:
            record = await self._kv_read(self._key_path(key_id))
            return None if record is None else _record_to_meta(record)

        out: list[KeyMetadata] = []
        # Read in chunks: a key deleted since the LIST is skipped and the next one taken.
        while candidates and len(out) < limit:
            chunk, candidates = candidates[: limit - len(out)], candidates[limit - len(out) :]
            found = await _bounded_gather((read(k) for k in chunk), _READ_CONCURRENCY)
            out += [m for m in found if m is not None]
        return out

    async def count_keys(self) -> int:
        return len(await self._key_ids())

    async def update_key(self, meta: KeyMetadata) -> KeyMetadata:
        record = await self._read_key(meta.key_id)
        if record.version != meta.revision:
            raise WriteConflict(meta.key_id)
        stored = _record_to_meta(record)
        # Rotation owns the version fields; an update changes the rest.
        new = replace(meta, current_version=stored.current_version, created_at=stored.created_at)
        versions = _record_versions(record.data)
        revision = await self._kv_write(
            self._key_path(meta.key_id), _meta_to_record(new, versions), cas=meta.revision
        )
        if revision is None:
            if await self._kv_read(self._key_path(meta.key_id)) is None:
                raise KeyNotFound(key_id=meta.key_id)
            raise WriteConflict(meta.key_id)
        return replace(new, revision=revision)

    async def _transit_rotate(self, key_id: str) -> int:
        """Add a transit key version; returns the latest version afterwards.

        A rotate is not idempotent, so it is never blindly resent. When its outcome is unknown
        (a timeout, a dropped connection, or OpenBao's 500 "transaction commit failed", which
        concurrent rotations of one key get although the rotation *was* applied), the key's
        latest version tells: above the version seen before, a new version exists; otherwise
        nothing happened and the rotate is tried again.
        """
        name = quote(key_id, safe="")
        before = int((await self._transit_key(key_id)).get("latest_version") or 0)
        for _ in range(3):
            try:
                resp = await self._call("POST", f"{self._transit}/keys/{name}/rotate", resend=False)
            except _OutcomeUnknown as exc:
                log.info("rotate of %s: outcome unknown (%s); reading the key", key_id, exc)
            else:
                if resp.status == 400 and "not found" in resp.errors:
                    raise KeyNotFound(key_id=key_id)
                if resp.status not in (200, 204):
                    raise self._unexpected(resp, f"rotate transit key {key_id}")
                latest = resp.data.get("latest_version")
                if latest is not None:
                    return int(latest)
            latest = int((await self._transit_key(key_id)).get("latest_version") or 0)
            if latest > before:
                return latest
        raise BackendUnavailable(f"could not rotate transit key {key_id}")

    async def rotate_key(
        self, key_id: str, rotation_type: RotationType, now: float, next_rotation: RotationDue
    ) -> KeyMetadata:
        await self._read_key(key_id)  # no rotation of a transit key without metadata
        latest = await self._transit_rotate(key_id)
        path = self._key_path(key_id)
        for _ in range(_CAS_RETRIES):
            record = await self._read_key(key_id)
            meta = _record_to_meta(record)
            versions = _record_versions(record.data)
            known = {v.version for v in versions}
            # Versions this rotation (or an earlier one whose metadata write failed) added.
            versions += [
                KeyVersion(v, now, rotation_type)
                for v in range(max(known, default=0) + 1, latest + 1)
            ]
            new = replace(
                meta,
                current_version=max(meta.current_version, latest),
                next_rotation=next_rotation(meta),
            )
            revision = await self._kv_write(
                path, _meta_to_record(new, versions), cas=record.version
            )
            if revision is not None:
                return replace(new, revision=revision)
        raise BackendUnavailable(f"could not record the rotation of {key_id}: too much contention")

    async def list_versions(self, key_id: str) -> Sequence[KeyVersion]:
        return _record_versions((await self._read_key(key_id)).data)

    async def export_versions(self, key_id: str) -> Sequence[tuple[KeyVersion, bytes | None]]:
        """The versions only: the material never leaves Vault (Vault snapshots back it up)."""
        return [(v, None) for v in await self.list_versions(key_id)]

    async def import_key(
        self, meta: KeyMetadata, versions: Sequence[tuple[KeyVersion, bytes]], *, overwrite: bool
    ) -> None:
        raise UnsupportedOperation(
            "importing key material into Vault transit is not supported: restore Vault from its "
            "own snapshot (bao operator raft snapshot restore)"
        )

    async def delete_key(self, key_id: str) -> None:
        name = quote(key_id, safe="")
        config = await self._call(
            "POST", f"{self._transit}/keys/{name}/config", json={"deletion_allowed": True}
        )
        if config.status in (200, 204):
            resp = await self._call("DELETE", f"{self._transit}/keys/{name}")
            if resp.status not in (200, 204) and not (
                resp.status == 400 and "not found" in resp.errors
            ):
                raise self._unexpected(resp, f"delete transit key {key_id}")
        elif not (config.status in (400, 404) and "no existing key" in config.errors):
            raise self._unexpected(config, f"allow deletion of transit key {key_id}")
        await self._kv_delete(self._key_path(key_id))
        aliases = [a for a in await self.list_aliases() if a.key_id == key_id]
        await _bounded_gather(
            (self._kv_delete(self._alias_path(a.name)) for a in aliases), _READ_CONCURRENCY
        )

    # -- crypto ---------------------------------------------------------------------------------

    async def _transit_op(
        self, op: str, key_id: str, body: dict[str, Any], *, raw: bool = False
    ) -> _Resp:
        path = f"{self._transit}/{op}/{quote(key_id, safe='')}"
        return await self._call("POST", path, json=body, raw=raw)

    async def _checked_transit(
        self, op: str, key_id: str, body: dict[str, Any], check: StateCheck, *, concurrent: bool
    ) -> _Resp:
        """Read the key's metadata and call transit (concurrently, or metadata first), run
        `check` on the metadata, and only then look at transit's answer."""
        record: _Record | BaseException
        result: _Resp | BaseException
        # raw: a 403 from transit may only mean "no such key, and no `create` capability on
        # encrypt"; it is judged once the metadata says the key exists (no re-login for a
        # request about a key that does not exist).
        if concurrent:
            record, result = await asyncio.gather(
                self._read_key(key_id),
                self._transit_op(op, key_id, body, raw=True),
                return_exceptions=True,
            )
        else:
            record = await self._read_key(key_id)
            result = await self._transit_op(op, key_id, body, raw=True)
        if isinstance(record, BaseException):
            raise record
        check(_record_to_meta(record))
        if isinstance(result, BaseException):
            raise result
        if result.status == 403:  # the key exists: re-login (AppRole) and retry once, or fail
            result = await self._transit_op(op, key_id, body)
        return result

    async def encrypt(
        self, key_id: str, plaintext: bytes, aad: bytes, check: StateCheck
    ) -> tuple[int, bytes]:
        body = {"plaintext": _b64(plaintext), "associated_data": _b64(aad)}
        # Without disable_upsert, transit would create a missing key on encrypt: then it is
        # only called once the metadata says the key exists.
        resp = await self._checked_transit(
            "encrypt", key_id, body, check, concurrent=self._upsert_disabled
        )
        if resp.status == 400 and "not found" in resp.errors:
            raise KeyNotFound(key_id=key_id)
        if resp.status != 200:
            raise self._unexpected(resp, f"encrypt with transit key {key_id}")
        return _parse_ciphertext(resp.data.get("ciphertext"))

    async def decrypt(
        self, key_id: str, version: int, sealed: bytes, aad: bytes, check: StateCheck
    ) -> bytes:
        if version < 1:
            check(await self.get_key(key_id))
            raise InvalidCiphertext
        body = {"ciphertext": f"vault:v{version}:{_b64(sealed)}", "associated_data": _b64(aad)}
        resp = await self._checked_transit("decrypt", key_id, body, check, concurrent=True)
        if resp.status == 400:
            # "invalid ciphertext: ...", "cipher: message authentication failed", a version
            # disallowed by policy, a missing transit key: all one error, without detail.
            raise InvalidCiphertext
        if resp.status != 200:
            raise self._unexpected(resp, f"decrypt with transit key {key_id}")
        try:
            return _unb64(str(resp.data.get("plaintext") or ""))
        except (binascii.Error, ValueError):
            raise InternalError("Vault transit returned a malformed plaintext") from None

    # -- aliases --------------------------------------------------------------------------------

    @staticmethod
    def _alias_record(alias: Alias) -> dict[str, Any]:
        return {"name": alias.name, "key_id": alias.key_id, "created_at": alias.created_at}

    @staticmethod
    def _record_alias(data: dict[str, Any]) -> Alias:
        return Alias(str(data["name"]), str(data["key_id"]), float(data["created_at"]))

    async def put_alias(self, alias: Alias, *, replace: bool) -> None:
        path = self._alias_path(alias.name)
        if not replace:
            if await self._kv_write(path, self._alias_record(alias), cas=0) is None:
                raise KeyAlreadyExists(f"An alias with the name {alias.name} already exists")
            return
        for _ in range(_CAS_RETRIES):
            record = await self._kv_read(path)
            if record is None:
                raise AliasNotFound(alias.name)
            existing = self._record_alias(record.data)
            updated = Alias(alias.name, alias.key_id, existing.created_at)
            if await self._kv_write(path, self._alias_record(updated), cas=record.version):
                return
        raise BackendUnavailable(f"could not update {alias.name}: too much contention")

    async def get_alias(self, name: str) -> Alias:
        record = await self._kv_read(self._alias_path(name))
        if record is None:
            raise AliasNotFound(name)
        return self._record_alias(record.data)

    async def delete_alias(self, name: str) -> None:
        path = self._alias_path(name)
        if await self._kv_read(path) is None:
            raise AliasNotFound(name)
        await self._kv_delete(path)

    async def list_aliases(self) -> Sequence[Alias]:
        names = await self._kv_list_recursive(f"{self._prefix}/aliases")

        async def read(short: str) -> Alias | None:
            record = await self._kv_read(f"{self._prefix}/aliases/{quote(short, safe='/')}")
            return None if record is None else self._record_alias(record.data)

        found = await _bounded_gather((read(n) for n in names), _READ_CONCURRENCY)
        return sorted((a for a in found if a is not None), key=lambda a: a.name)

    # -- lifecycle ------------------------------------------------------------------------------

    async def status(self) -> BackendStatus:
        """Reachable and unsealed on some address (plus a known auth problem); never raises.
        All addresses are asked at once, so a hung node costs one health timeout, not one each."""
        try:
            results = await asyncio.gather(*(self._health(a) for a in self._addresses))
            for label, health in zip(self._labels, results, strict=True):
                if health.ok:
                    if self._auth_problem:
                        return BackendStatus(False, f"{label}: {self._auth_problem}")
                    return BackendStatus(True, f"{label}: {health.reason}")
            return BackendStatus(
                False,
                "; ".join(f"{a}: {h.reason}" for a, h in zip(self._labels, results, strict=True)),
            )
        except Exception as exc:  # status must answer whatever happens
            return BackendStatus(False, f"status check failed: {type(exc).__name__}")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in (self._auth_task, self._leader_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._auth_task = self._leader_task = None
        await self._client.aclose()
