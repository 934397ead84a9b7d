"""`GET /metrics`: who may scrape (`--metrics`), and what a scrape answers.

    off      no route: `/metrics` is 404 and nothing is counted
    public   anyone who reaches the port (a listener only the monitoring network reaches)
    signed   (the default) a caller whose policies allow `admin:Prometheus` (root may), by a
             SigV4 signature of the admin API's kind or by the metrics token of its credentials
             (token.py), which Prometheus sends as a bearer token

A scrape is not a KMS route: it writes no audit line (as `/health/*`), and it is counted under
`surface="metrics"`. Besides the counters of every worker (registry.py) it answers what it reads
at that moment: whether the backend answers (its status check, bounded by a timeout), the key
count the last `count_keys` pass found (one per `maintenance_interval`, never a scan per scrape),
the live workers, the process metrics and the build.
"""

from __future__ import annotations

import asyncio
import logging
import platform

from s3kms import __version__
from s3kms.auth.identity import Authenticator, Principal
from s3kms.errors import AccessDenied, KMSError, MethodNotAllowed, NotConfigured
from s3kms.http.responses import Response
from s3kms.metrics import exposition, process, token
from s3kms.metrics.registry import FAMILIES, Metrics, Totals
from s3kms.request import RequestView
from s3kms.runtime import Runtime

log = logging.getLogger("s3kms.metrics")

PATH = "/metrics"
ACTION = "admin:Prometheus"  # the policy action that allows a scrape (MinIO's name for it)
STATUS_TIMEOUT = 5.0  # seconds a scrape waits for the backend's status check


class Scrape:
    """The `/metrics` route of one worker."""

    def __init__(
        self,
        metrics: Metrics,
        runtime: Runtime,
        auth: Authenticator,
        *,
        mode: str,
        root: tuple[str, str],
        supervisor: int | None = None,
    ) -> None:
        self.metrics = metrics
        self.runtime = runtime
        self.auth = auth
        self.mode = mode
        self._root = root
        self._supervisor = supervisor  # with workers: the parent process, in process_*
        self.keys: tuple[str, int] | None = None  # (backend, count) of the last count

    async def __call__(self, req: RequestView) -> Response:
        if req.method != "GET":
            raise MethodNotAllowed
        if self.mode != "public":
            self.authorize(req)
        body = await self.render()
        return Response(200, body, exposition.CONTENT_TYPE)

    # -- access ---------------------------------------------------------------------------------

    def authorize(self, req: RequestView) -> Principal:
        """The caller, allowed `admin:Prometheus`; an AuthError (403/400) otherwise."""
        header = req.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            principal = self._token_principal(header[7:].strip())
        elif header or "X-Amz-Signature=" in req.query:
            principal = self.auth.authenticate(req, admin=True)
        else:
            raise AccessDenied(
                "scraping the metrics needs a SigV4 signature or a metrics token "
                "(s3kms metrics token): see docs/operations.md"
            )
        principal.authorize(ACTION)
        return principal

    def _token_principal(self, text: str) -> Principal:
        """The user a metrics token names, when the token is that user's (token.py)."""
        named = token.access_key_of(text)
        if named is not None:
            access_key, mac = named
            users = self.auth.users
            is_root = access_key == self._root[0]
            if is_root:
                secret: str | None = self._root[1]
            else:
                secret = users.secret_for(access_key) if users is not None else None
            if secret is not None and token.verify(access_key, mac, secret):
                policies = users.policies_for(access_key) if users and not is_root else None
                settings = self.runtime.settings
                return Principal(
                    access_key, is_root, policies, settings.region, settings.account_id
                )
        raise AccessDenied("the bearer token is not a valid metrics token")

    # -- what a scrape answers --------------------------------------------------------------------

    async def render(self) -> bytes:
        totals = self.metrics.collect()
        families: list[exposition.Family] = [
            (f.name, f.kind, f.help, totals.samples(f)) for f in FAMILIES
        ]
        families += await self._backend()
        families += self._server(totals)
        return exposition.render(families)

    async def _backend(self) -> list[exposition.Family]:
        kind, up = self.runtime.config.kms_type, 0
        by_state: list[exposition.Sample] = []
        try:
            lease = self.runtime.use()
        except NotConfigured:
            pass
        else:
            async with lease as service:
                for state, count in (service.key_states or {}).items():
                    labels = (("backend", kind), ("state", state))
                    by_state.append(("s3kms_keys_by_state", labels, count))
                try:
                    report = await asyncio.wait_for(
                        service.backend_report(count_keys=False), STATUS_TIMEOUT
                    )
                    up = int(report.connected)
                except (TimeoutError, KMSError):
                    pass
        keys: list[exposition.Sample] = []
        if self.keys is not None:
            keys.append(("s3kms_keys", (("backend", self.keys[0]),), self.keys[1]))
        return [
            (
                "s3kms_backend_up",
                "gauge",
                "Whether the configured key backend answers its status check now (1) or not "
                "(0); backend=none when none is configured.",
                [("s3kms_backend_up", (("backend", kind),), up)],
            ),
            (
                "s3kms_keys",
                "gauge",
                "Keys in the backend at the last count (once per maintenance_interval).",
                keys,
            ),
            (
                "s3kms_keys_by_state",
                "gauge",
                "Keys in each state (Enabled, Disabled, PendingDeletion) after the last "
                "maintenance pass of this worker (every maintenance_interval).",
                by_state,
            ),
        ]

    def _server(self, totals: Totals) -> list[exposition.Family]:
        pids = list(totals.processes)
        if self._supervisor is not None:
            pids.insert(0, self._supervisor)
        stats = process.sample(pids)

        build = (
            ("version", __version__),
            ("python", platform.python_version()),
        )
        return [
            one("s3kms_workers", "gauge", "Worker processes serving now.", len(totals.processes)),
            one(
                "s3kms_metrics_dropped_series_total",
                "counter",
                "Series not recorded because a worker's metrics memory was full (should be 0).",
                totals.dropped,
            ),
            (
                "s3kms_build_info",
                "gauge",
                "The running s3kms: its version and Python's, as labels; always 1.",
                [("s3kms_build_info", build, 1)],
            ),
            one(
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time of the server's processes, in seconds.",
                stats.cpu_seconds,
            ),
            one(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory of the server's processes, in bytes.",
                stats.resident_bytes,
            ),
            one(
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory of the server's processes, in bytes.",
                stats.virtual_bytes,
            ),
            one(
                "process_open_fds",
                "gauge",
                "Open file descriptors of the server's processes.",
                stats.open_fds,
            ),
            one(
                "process_max_fds",
                "gauge",
                "The open-file limit of one process (ulimit -n).",
                stats.max_fds,
            ),
            one(
                "process_start_time_seconds",
                "gauge",
                "When the server started, in seconds since the epoch.",
                stats.start_time,
            ),
        ]

    # -- the key count --------------------------------------------------------------------------

    async def count_keys(self, interval: float) -> None:
        """Count the backend's keys now and every `interval` seconds, until cancelled."""
        while True:
            try:
                async with self.runtime.use() as service:
                    report = await service.backend_report(count_keys=True)
                count = report.key_count
                self.keys = None if count is None else (report.kind, count)
            except NotConfigured:
                self.keys = None
            except Exception:
                log.warning("metrics: cannot count the keys; will retry", exc_info=True)
            await asyncio.sleep(interval)


def one(name: str, kind: str, text: str, value: float) -> exposition.Family:
    """A family of one sample without labels."""
    return (name, kind, text, [(name, (), value)])
