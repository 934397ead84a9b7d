"""Vault authentication: the token every request carries, and keeping it alive.

A renewable token with a TTL is renewed, and an AppRole token replaced by a new login, at
half its life by a background task (so an idle node keeps a live token); a request past 3/4 of
the life refreshes first (the backstop), and with AppRole a 403 causes one new login and one
retry. The token and the secret id never appear in logs, messages or repr().
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from s3kms.errors import BackendUnavailable, InvalidRequest, KMSError
from s3kms.keystore.vault.settings import VaultSettings
from s3kms.keystore.vault.transport import VaultResponse, VaultTransport

log = logging.getLogger("s3kms.keystore.vault")


class VaultAuth:
    """The token of one keystore: obtained at connect (`authenticate`), kept alive by a background
    task (`start`), and carried by `call`, the authenticated request."""

    def __init__(self, settings: VaultSettings, transport: VaultTransport) -> None:
        self._settings = settings
        self._transport = transport
        self._approle = settings.app_role_id is not None
        # The token is never logged nor put into a message or repr.
        self.token: str | None = settings.token
        self.ttl = 0.0  # seconds the token had to live when last obtained; 0 = no expiry
        self._obtained = 0.0  # time.monotonic() of that moment
        self._renewable = False
        self._lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None
        # Why Vault refuses this keystore's credentials, while it does (status() reports it).
        self.problem: str | None = None
        self.refreshes = 0  # renewals + re-logins since connect (observability, tests)

    def start(self) -> None:
        """Start the background task that keeps the token alive (`_loop`)."""
        self.task = self._transport.start(self._loop(), name="s3kms-vault-auth")

    async def authenticate(self) -> None:
        """At connect: look the token up (its TTL, whether renewable) or log in with AppRole;
        InvalidRequest when Vault refuses the credentials."""
        if self._approle:
            await self._login(configuring=True)
            return
        resp = await self._transport.request(
            "GET", "auth/token/lookup-self", token=self.token, once=True
        )
        if resp.status in (400, 401, 403):
            raise InvalidRequest(f"Vault rejected the token: {resp.errors}")
        if resp.status != 200:
            raise InvalidRequest(f"Vault token lookup failed: {resp.errors}")
        data = resp.data
        self._set_token(self.token, float(data.get("ttl") or 0), bool(data.get("renewable")))
        if self.ttl and not self._renewable:
            log.warning("the Vault token is not renewable and expires in %.0f s", self.ttl)

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        resend: bool = True,
        once: bool = False,
        raw: bool = False,
        answers: tuple[str, ...] = (),
    ) -> VaultResponse:
        """An authenticated request: refreshes a token about to expire, and with AppRole logs in
        again once on a 403 and retries. A final 403 raises BackendUnavailable unless raw.
        `answers`: see `VaultTransport.request`."""
        await self._refresh_if_expiring()
        token = self.token
        resp = await self._transport.request(
            method,
            path,
            token=token,
            json=json,
            params=params,
            resend=resend,
            once=once,
            answers=answers,
        )
        if resp.status == 403 and self._approle and not raw:
            await self._refresh(stale=token)
            resp = await self._transport.request(
                method,
                path,
                token=self.token,
                json=json,
                params=params,
                resend=resend,
                once=once,
                answers=answers,
            )
        if resp.status == 403 and not raw:
            self.problem = f"Vault denied {method} {path}: {resp.errors}"
            raise BackendUnavailable(self.problem)
        if resp.status != 403:
            self.problem = None
        return resp

    def _set_token(self, token: str | None, ttl: float, renewable: bool) -> None:
        self.token = token
        self.ttl = ttl
        self._renewable = renewable
        self._obtained = time.monotonic()

    def _refreshable(self) -> bool:
        return self.ttl > 0 and (self._approle or self._renewable)

    def _refresh_due(self) -> float:
        """monotonic() time of the next refresh: half way through the token's life."""
        return self._obtained + self.ttl / 2

    async def _login(self, *, configuring: bool = False) -> None:
        resp = await self._transport.request(
            "POST",
            "auth/approle/login",
            token=None,
            json={
                "role_id": self._settings.app_role_id,
                "secret_id": self._settings.app_role_secret_id,
            },
            once=configuring,
        )
        if resp.status != 200:
            message = f"Vault AppRole login failed: {resp.errors}"
            if configuring:
                raise InvalidRequest(message)
            self.problem = message
            raise BackendUnavailable(message)
        auth = resp.body.get("auth") or {}
        token = auth.get("client_token")
        if not isinstance(token, str) or not token:
            raise InvalidRequest("Vault AppRole login returned no token")
        self._set_token(token, float(auth.get("lease_duration") or 0), bool(auth.get("renewable")))
        self.problem = None
        if not configuring:
            self.refreshes += 1
        log.info("logged in to Vault with AppRole; token lease %.0f s", self.ttl)

    async def _renew(self) -> None:
        resp = await self._transport.request(
            "POST", "auth/token/renew-self", token=self.token, json={}
        )
        if resp.status != 200:
            self.problem = f"Vault token renewal failed: {resp.errors}"
            raise BackendUnavailable(self.problem)
        auth = resp.body.get("auth") or {}
        previous = self.ttl
        self._set_token(
            self.token, float(auth.get("lease_duration") or 0), bool(auth.get("renewable"))
        )
        self.refreshes += 1
        if self.ttl < previous:
            # Renewals no longer extend the token: it reached its max TTL and will expire.
            log.warning("the Vault token reached its maximum TTL and expires in %.0f s", self.ttl)
        else:
            log.info("renewed the Vault token; lease %.0f s", self.ttl)

    async def _refresh(self, *, stale: str | None = None) -> None:
        """Renew the token or log in again. With `stale`, only if nobody replaced that token yet;
        without, only if the refresh is due."""
        async with self._lock:
            if stale is not None:
                if self.token != stale:
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
        if self._refreshable() and time.monotonic() >= self._obtained + 0.75 * self.ttl:
            try:
                await self._refresh()
            except KMSError as exc:
                if time.monotonic() >= self._obtained + self.ttl:
                    raise
                log.warning("Vault token refresh failed, using the current one: %s", exc.message)

    async def _loop(self) -> None:
        """Renew (token) or log in again (AppRole) at half the token's life, even when idle."""
        failures = 0
        while self._refreshable():
            await asyncio.sleep(max(self._refresh_due() - time.monotonic(), 0.0))
            try:
                await self._refresh()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                message = exc.message if isinstance(exc, KMSError) else type(exc).__name__
                expired = time.monotonic() >= self._obtained + self.ttl
                if expired and not self._approle:
                    log.error("the Vault token expired and cannot be renewed: %s", message)
                    return
                log.warning("Vault token refresh failed (attempt %d): %s", failures, message)
                await asyncio.sleep(min(0.5 * 2**failures, 30.0))
