"""The HA HTTP transport to Vault/OpenBao: one pooled HTTP client (`http.py`) over the addresses of a
cluster, the active node preferred, a failed request retried within a bounded budget.

`VaultTransport.request()` takes plain values (method, path below `/v1/`, token, JSON body, query)
and returns a `VaultResponse` (status and JSON body) for any answer that is not an availability
failure; it raises BackendUnavailable when Vault does not answer within the budget, and
OutcomeUnknown when a request that must not be resent failed after Vault may have carried it out.
Everything above it (auth.py, kv.py, store.py) sees only those values.

Requests go to the current address; a connection failure, timeout, 503 (sealed), 429
(standby/rate limit) or 307 (a standby that cannot forward, e.g. during an election) moves to
another address. A transit rotate, which is not idempotent, is resent only when the failure proves
Vault never saw it (`resend=False`); otherwise the store reads the key's latest version to tell
whether it happened. The timing budget of one request:

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
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import logging
import random
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import certifi

from s3kms.errors import BackendUnavailable, InternalError, InvalidRequest, KMSError
from s3kms.keystore.vault.http import (
    ConnectFailed,
    HttpClient,
    HttpError,
    HttpResponse,
    RequestTimeout,
)
from s3kms.keystore.vault.settings import VaultSettings, redact_address, redact_urls
from s3kms.request import without_request

log = logging.getLogger("s3kms.keystore.vault")

# Vault calls in flight per s3kms node (and pooled keep-alive connections).
_MAX_IN_FLIGHT = 64
# Statuses that mean "this node cannot serve the request now; another node or a later try may".
_SEALED = 503
# A 307/308 comes from a standby that could not forward the request to the active node (during an
# election it names the node that just died); s3kms never follows it, it looks for the active node.
_UNAVAILABLE = frozenset({307, 308, 412, 429, 500, 502, 503, 504})
# Of those, the ones that prove the request was not carried out (safe to resend anything).
_NOT_PROCESSED = frozenset({307, 308, 412, 429, 503})
_BACKOFF_START = 0.1
_BACKOFF_MAX = 2.0
# Once every address has failed to connect (refused, or no connection within the connect
# timeout), a request is retried only until this many seconds after it began: a down Vault
# answers 503 at once instead of after the whole retry budget (see the module docstring).
_DOWN_RETRY = 1.0
# Leader preference (several addresses): how often to look for the active node.
_LEADER_RECHECK = 10.0  # while the current address is the known active node (in the background)
_LEADER_RETRY = 0.5  # while it is not (before a request)
_LEADER_AFTER_FAILURE = 0.1  # after a request failed on it or got a not-found answer
_HEALTH_TIMEOUT = 5.0  # status()
_DISCOVERY_TIMEOUT = 2.0  # looking for the active node (a healthy node answers in milliseconds)


class OutcomeUnknown(BackendUnavailable):
    """A request that must not be resent failed after Vault may have carried it out."""


@dataclass(slots=True)
class VaultResponse:
    """An answer from Vault: its status and its JSON body (`{}` when it had none)."""

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

    @property
    def not_found_400(self) -> bool:
        """A 400 whose message says "not found" (how transit answers about a missing key)."""
        return self.status == 400 and "not found" in self.errors

    def unexpected(self, what: str) -> KMSError:
        """The error for an answer the caller cannot use: Vault failed (5xx) or refused."""
        if self.status >= 500:
            return BackendUnavailable(f"Vault failed to {what}: {self.errors}")
        return InternalError(f"Vault refused to {what}: {self.errors}")


@dataclass(slots=True)
class _Attempts:
    """Book-keeping of one request's tries over the addresses."""

    reasons: list[str] = field(default_factory=list)
    pass_sealed: int = 0
    pass_unreachable: int = 0  # no connection at all: refused, connect timeout
    pass_tries: int = 0


@dataclass(slots=True, frozen=True)
class Health:
    """One address's sys/health: usable, why (e.g. "active", "Vault is sealed"), and whether
    a connection could be opened at all."""

    ok: bool
    reason: str
    connected: bool = True


def _is_answer(resp: VaultResponse, answers: tuple[str, ...]) -> bool:
    """A 500 that names one of the request's `answers` (see `VaultTransport.request`)."""
    return resp.status == 500 and any(text in resp.errors for text in answers)


def _describe(exc: HttpError) -> str:
    # redact_urls: an error may quote an address (the addresses have no userinfo, as connect()
    # checks; this is the second line).
    if isinstance(exc, ConnectFailed):
        return (
            "cannot connect (timed out)"
            if exc.timed_out
            else f"cannot connect ({redact_urls(str(exc))})"
        )
    if isinstance(exc, RequestTimeout):
        return "timed out"
    return redact_urls(str(exc)) or type(exc).__name__


def _json_object(response: HttpResponse) -> dict[str, Any]:
    """The JSON object a response carries, or {} (no JSON, or JSON that is not an object)."""
    try:
        body = jsonlib.loads(response.body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _tls_context(settings: VaultSettings) -> ssl.SSLContext:
    """How https addresses are verified: the configured CA file, else the CA bundle httpx
    used before (certifi's), or not at all with skip_tls_verify."""
    if settings.skip_tls_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=settings.ca_cert or certifi.where())
    except (OSError, ssl.SSLError) as exc:
        raise InvalidRequest(f"cannot load Vault CA certificate: {exc}") from exc


class VaultTransport:
    """Requests to one Vault/OpenBao cluster over its addresses (see the module docstring)."""

    def __init__(self, settings: VaultSettings) -> None:
        """Open the pooled client (no request yet); InvalidRequest for an unusable CA file."""
        self.addresses = settings.addresses
        # The addresses as messages and logs show them (never with a userinfo part).
        self._labels = tuple(redact_address(a) for a in settings.addresses)
        self._namespace = settings.namespace
        self._timeout = settings.timeout_seconds
        self._connect_timeout = min(settings.connect_timeout_seconds, settings.timeout_seconds)
        self._budget = 2 * settings.timeout_seconds
        # Connections stay alive between calls: reopening them under load costs more than the
        # Vault calls themselves.
        self._client = HttpClient(_tls_context(settings))
        # Calls beyond these wait here, in O(1), rather than open more connections.
        self._slots = asyncio.Semaphore(_MAX_IN_FLIGHT)
        self.current = 0
        # Leader preference: whether the current address is known to be the active node, when it
        # was last checked (loop time), and the background re-check, if one is running.
        self._multi = len(self.addresses) > 1
        self.active_known = not self._multi
        self._leader_checked = float("-inf")
        self._leader_lock = asyncio.Lock()
        self._leader_task: asyncio.Task[None] | None = None
        self.leader_changes = 0  # times the preferred address moved (observability, tests)
        # The last look for the active node opened no connection to any address (every one
        # refused or timed out connecting), and those addresses' reasons.
        self._none_reachable = False
        self._unreachable: list[str] = []
        self._degraded = False
        # Background work that uses this transport (the auth loop, the leader re-check), in the
        # order it started; close() stops it before it closes the client.
        self._tasks: dict[asyncio.Task[None], None] = {}
        self.closed = False

    def start(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run `work`, which uses this transport, in the background until it ends or close()."""
        # Not the work of the request that may have started it: its log lines name no request.
        task = asyncio.get_running_loop().create_task(work, name=name, context=without_request())
        self._tasks[task] = None
        task.add_done_callback(lambda done: self._tasks.pop(done, None))
        return task

    async def close(self) -> None:
        """Refuse new requests, stop the background work, close the client."""
        if self.closed:
            return
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._leader_task = None
        await self._client.aclose()

    async def health(self) -> list[tuple[str, Health]]:
        """Every address's sys/health (as messages show the address), all asked at once, so a
        hung node costs one health timeout, not one each."""
        results = await asyncio.gather(*(self._health(a) for a in self.addresses))
        return list(zip(self._labels, results, strict=True))

    async def _health(self, address: str, timeout: float = _HEALTH_TIMEOUT) -> Health:
        """One address's sys/health (no token needed); the reason of a usable address is
        "active" or "standby"."""
        try:
            resp = await self._client.request(
                "GET",
                address,
                "/v1/sys/health?standbyok=true&perfstandbyok=true",
                headers={},
                body=None,
                timeout=min(self._timeout, timeout),
                connect_timeout=self._connect_timeout,
            )
        except HttpError as exc:
            return Health(False, _describe(exc), connected=not isinstance(exc, ConnectFailed))
        body = _json_object(resp)
        if body.get("initialized") is False or resp.status == 501:
            return Health(False, "Vault is not initialized")
        if body.get("sealed") is True or resp.status == 503:
            return Health(False, "Vault is sealed")
        if resp.status in (200, 429, 472, 473):
            standby = body.get("standby") or body.get("performance_standby")
            standby = standby or resp.status != 200
            return Health(True, "standby" if standby else "active")
        return Health(False, f"health check answered HTTP {resp.status}")

    async def find_active(self) -> None:
        """At connect: point at the active node, else at a usable one, else fail."""
        reasons = await self._discover()
        if len(reasons) == len(self.addresses):
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
            for i, address in enumerate(self.addresses)
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
            # not be repeated at once by the next request (see request).
            self._leader_checked = loop.time()
        self._none_reachable = unconnected == len(self.addresses)
        self._unreachable = reasons if self._none_reachable else []
        if active is not None:
            self._prefer(active, active=True)
        elif standbys:
            self._prefer(self.current if self.current in standbys else min(standbys), False)
        else:
            self.active_known = False
        return reasons

    def _prefer(self, index: int, active: bool) -> None:
        if index != self.current:
            self.leader_changes += 1
            log.info(
                "Vault requests now go to %s (%s)",
                self._labels[index],
                "the active node" if active else "a standby: no active node found",
            )
        self.current = index
        self.active_known = active

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
        node (it may have stepped down silently); see `request` for the other case."""
        if self._leader_task is not None and not self._leader_task.done():
            return
        if asyncio.get_running_loop().time() - self._leader_checked >= _LEADER_RECHECK:
            self._leader_task = self.start(
                self._find_leader(_LEADER_RECHECK), name="s3kms-vault-leader"
            )

    def _headers(self, token: str | None) -> dict[str, str]:
        headers = {}
        if token:
            headers["X-Vault-Token"] = token
        if self._namespace:
            headers["X-Vault-Namespace"] = self._namespace
        return headers

    def _advance(self, index: int) -> None:
        if self.current == index:
            self.current = (index + 1) % len(self.addresses)

    async def _failed(self, index: int) -> None:
        """A request failed on address `index`: look for the active node (it may be another one
        now); when none is found, move on to the next address."""
        if self.current != index:
            return  # another request already moved on
        if self._multi:
            self.active_known = False
            await self._find_leader(_LEADER_AFTER_FAILURE)
            if self.active_known:
                return  # the active node: another one now, or the same after a passing failure
        self._advance(index)

    def _none_reachable_pass(self, attempts: _Attempts) -> bool:
        """When the last look for the active node could connect to no address, count that as a
        whole pass of `attempts` that found every address unreachable: trying each one again
        would only wait out the same connect timeouts."""
        if not (self._multi and not self.active_known and self._none_reachable):
            return False
        attempts.reasons += self._unreachable
        attempts.pass_tries = attempts.pass_unreachable = len(self.addresses)
        attempts.pass_sealed = 0
        return True

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None,
        json: Any = None,
        params: dict[str, str] | None = None,
        resend: bool = True,
        once: bool = False,
        answers: tuple[str, ...] = (),
    ) -> VaultResponse:
        """Send one Vault request, failing over between addresses and retrying within budget.

        resend: the request may be sent again after a failure that leaves it unknown whether Vault
        carried it out (idempotent or check-and-set requests). Failures that prove it was not
        carried out (connection refused, sealed, standby, rate limited) are always retried.
        once: one pass over the addresses, no backoff (connect-time checks).
        answers: error texts that make a 500 this request's answer rather than an availability
        failure: Vault refused the input itself, so no other node and no later try would do better
        (transit answers an RSA ciphertext that does not open with 500 "failed to RSA decrypt").
        Returns any answer that is not an availability failure; raises BackendUnavailable.
        """
        if self.closed:  # a caller that kept this store past a configuration change
            raise BackendUnavailable(
                "the Vault connection was closed (the KMS configuration changed)"
            )
        target = f"/v1/{path}" + (f"?{urlencode(params)}" if params else "")
        payload = None if json is None else jsonlib.dumps(json, separators=(",", ":")).encode()
        headers = self._headers(token)
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + self._budget
        single_pass = once or self._degraded
        attempts = _Attempts()
        backoff = _BACKOFF_START
        ambiguous = False
        n = len(self.addresses)
        while True:
            if self._multi:
                if self.active_known:
                    self._leader_check_due()
                else:
                    await self._find_leader(_LEADER_RETRY)
            if not self._none_reachable_pass(attempts):  # (a look at most _LEADER_RETRY ago)
                index = self.current
                address, label = self.addresses[index], self._labels[index]
                remaining = deadline - loop.time()
                try:
                    async with self._slots:
                        response = await self._client.request(
                            method,
                            address,
                            target,
                            headers=headers,
                            body=payload,
                            timeout=max(min(self._timeout, remaining), 0.05),
                            connect_timeout=self._connect_timeout,
                        )
                except HttpError as exc:
                    reason = _describe(exc)
                    sent = not isinstance(exc, ConnectFailed)
                    if sent and not resend:
                        raise OutcomeUnknown(
                            f"Vault at {label} failed during {method} {path}: {reason}"
                        ) from exc
                    ambiguous = ambiguous or sent
                    attempts.pass_unreachable += not sent
                    attempts.reasons.append(f"{label}: {reason}")
                else:
                    if log.isEnabledFor(logging.DEBUG):  # the path and status only: no secret
                        log.debug("Vault %s %s at %s: %d", method, path, label, response.status)
                    resp = VaultResponse(response.status, _json_object(response))
                    if resp.status not in _UNAVAILABLE or _is_answer(resp, answers):
                        self._degraded = False
                        if (
                            self._multi
                            and not self.active_known
                            and (resp.not_found or resp.not_found_400)
                        ):
                            # Maybe a lagging standby's answer. The request had no effect, so it
                            # is resent to the active node; while there is none (an election),
                            # it is retried with backoff, and the answer is only believed when
                            # the budget is spent.
                            await self._find_leader(_LEADER_AFTER_FAILURE)
                            moved = self.active_known and self.current != index
                            if moved and loop.time() < deadline:
                                continue
                            wait = backoff * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
                            if not (once or self.active_known) and loop.time() + wait < deadline:
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
                            raise OutcomeUnknown(
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
