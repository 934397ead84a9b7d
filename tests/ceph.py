"""A real single-node Ceph cluster with radosgw (RGW) for the test suite (test support, not a
test module).

Debian bookworm's packages (``ceph-mon ceph-mgr ceph-osd radosgw ceph-common``, Ceph 16.2.15
"pacific", whose RGW has the KMIP client built in) run one monitor, one manager, one OSD on
``memstore`` (objects in RAM) and radosgw's beast frontend on 127.0.0.1, in the pattern of
go-ceph's ``micro-osd.sh``: no cephx (``auth ... required = none``), pools of size 1, CRUSH
choosing OSDs rather than hosts. Nothing is faked.

* :func:`ensure_ceph_installed` - the binaries, installed with apt-get when missing (as root),
  else a skip (or a failure when ``S3KMS_REQUIRE_CEPH=1``, which CI sets).
* :func:`ceph_cluster` - a context manager: the running cluster as a :class:`CephCluster`
  (S3 endpoint, an S3 user's keys, the ``ceph``/``rados``/``radosgw-admin`` CLIs, the raw RADOS
  objects RGW stored); every daemon is killed and the cluster's data removed on exit.
* :class:`KmipClientConfig` - RGW's KMIP client settings (SSE-KMS with ``backend = kmip``).

Ground rules (as in tests/openbao.py): everything lives under the given directory - the
``ceph.conf`` every command gets with ``--conf``, run dir, admin sockets, pid files, logs, mon
and OSD data; nothing is read from or written to /etc/ceph or /var/lib/ceph. Daemons run in the
foreground (``-f``) with ``subprocess.Popen`` (never a shell), each in its own session, so a
kill of its process group leaves nothing behind; an ``atexit`` hook kills whatever a crashed
test run left. Every wait and every CLI call is bounded and fails with the tail of the
relevant log. Ports (mon v1/v2, RGW) are free loopback ports, so clusters of parallel test
processes do not collide; the OSD binds its own from Ceph's 6800-7300 range.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from debian import ensure_packages
from openbao import free_ports, log_tail, wait_until

__all__ = [
    "CEPH_BINARIES",
    "CEPH_PACKAGES",
    "DATA_POOL",
    "ENV_REQUIRE_CEPH",
    "RGW_NAME",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "CephCluster",
    "CephError",
    "KmipClientConfig",
    "ceph_cluster",
    "ensure_ceph_installed",
]

#: Set to 1 (CI does) to turn "Ceph cannot be installed here" from a skip into a failure.
ENV_REQUIRE_CEPH = "S3KMS_REQUIRE_CEPH"
CEPH_PACKAGES = ("ceph-mon", "ceph-mgr", "ceph-osd", "radosgw", "ceph-common")
CEPH_BINARIES = ("ceph-mon", "ceph-osd", "ceph-mgr", "radosgw", "ceph", "rados", "radosgw-admin")
#: Serialises installs of parallel pytest processes (pytest-xdist, several checkouts).

#: The S3 user every cluster gets (``radosgw-admin user create``).
S3_USER = "s3kms-test"
S3_ACCESS_KEY = "S3KMSTESTACCESSKEY01"
S3_SECRET_KEY = "s3kms-test-secret-key-0123456789abcdefghij"
#: The pool RGW keeps object data in (heads of objects, their tails, multipart parts).
DATA_POOL = "default.rgw.buckets.data"
RGW_NAME = "client.rgw.s3kms"
#: ceph-mgr 16.2's Python modules (/usr/share/ceph/mgr) other than the "always on" ones
#: (balancer crash devicehealth orchestrator pg_autoscaler progress rbd_support status
#: telemetry volumes): not even loaded. RGW needs none of them; they would cost ~1 s and
#: ~120 MiB more. Disabling the always-on ones too would save another ~120 MiB but turn
#: the cluster's health into HEALTH_ERR ("10 mgr modules have failed").
MGR_DISABLED_MODULES = (
    "alerts", "cephadm", "dashboard", "diskprediction_local", "influx", "insights", "iostat",
    "k8sevents", "localpool", "mirroring", "nfs", "osd_perf_query", "osd_support",
    "prometheus", "restful", "rook", "selftest", "snap_schedule", "stats", "telegraf",
    "test_orchestrator", "zabbix",
)  # fmt: skip

#: Bound for the whole cluster to answer S3 (measured 1.5-3 s; 5 s on a cold page cache).
START_TIMEOUT = 90.0
#: Bound for one CLI call (``ceph``, ``rados``, ``radosgw-admin``).
CLI_TIMEOUT = 60.0
#: Daemons' admin sockets (not set globally: every CLI call would then fight over
#: client.admin.asok). Ceph's default for clients such as RGW adds pid and a context id,
#: which overflows a unix socket path in a pytest tmp_path.
ADMIN_SOCKET = "$run_dir/$name.asok"
POLL_INTERVAL = 0.1
#: Starts tried when a daemon could not bind its port (someone took it after we picked it).
START_ATTEMPTS = 3
_ADDRESS_IN_USE = "Address already in use"


class CephError(RuntimeError):
    """A harness operation failed (a CLI call failed or timed out, a daemon died)."""


# --------------------------------------------------------------------------- installation

_install_seconds: float | None = None


def _missing_binaries() -> list[str]:
    return [name for name in CEPH_BINARIES if shutil.which(name) is None]


def ensure_ceph_installed() -> float:
    """Make sure the Ceph binaries are on PATH; return the seconds spent installing them
    (tests/debian.py: apt-get as root, else a skip, or a failure with
    ``$S3KMS_REQUIRE_CEPH=1``). The first call's result is remembered in this process."""
    global _install_seconds
    if _install_seconds is None:
        _install_seconds = ensure_packages(
            "ceph", CEPH_PACKAGES, lambda: _missing_binaries(), ENV_REQUIRE_CEPH
        )
    return _install_seconds


# --------------------------------------------------------------------------- processes

#: Every daemon started here and not yet reaped; killed at interpreter exit.
_LIVE: set[subprocess.Popen[bytes]] = set()
_PR_SET_PDEATHSIG = 1


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        _kill(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group of ``proc`` (its own session) and reap it.

    No SIGTERM first: the cluster is thrown away, and a terminating memstore OSD would
    first write every object it holds to its data directory."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()
    _LIVE.discard(proc)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, even by SIGKILL or
    ``os._exit`` (pytest-timeout's thread method), when no atexit hook runs (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _env(workdir: Path) -> dict[str, str]:
    """The caller's environment without anything that configures Ceph or Python (the CLIs
    are Python scripts of the system's python3, not the venv's), HOME moved to ``workdir``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CEPH_", "PYTHON", "VIRTUAL_ENV")) and k != "__PYVENV_LAUNCHER__"
    }
    env["HOME"] = str(workdir)
    return env


def _run(
    args: list[str], workdir: Path, *, timeout: float = CLI_TIMEOUT, what: str | None = None
) -> bytes:
    """Run a Ceph CLI to completion (own session; on timeout its whole group is killed);
    return stdout, raise :class:`CephError` with its stderr unless it exits 0."""
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=workdir,
        env=_env(workdir),
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise CephError(f"{what or ' '.join(args)} did not finish in {timeout:.0f}s") from None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise CephError(
            f"{what or ' '.join(args)} exited {proc.returncode}:\n"
            f"{err.decode(errors='replace').strip()}"
        )
    return out


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class KmipClientConfig:
    """RGW's KMIP client (``rgw crypt s3 kms backend = kmip``).

    ``addr`` is ``host:port`` of the KMIP server; RGW loads ``ca_path`` but does not verify
    the server certificate; ``client_cert``/``client_key`` are PEM files. ``key_template``
    turns an S3 ``SSEKMSKeyId`` into the KMIP Name RGW locates (``$keyid`` = the key id)."""

    addr: str
    ca_path: Path
    client_cert: Path
    client_key: Path
    key_template: str = "pykmip-$keyid"


def _conf_value(value: object) -> str:
    text = str(value)
    if "\n" in text:
        raise ValueError(f"a ceph.conf value cannot contain a newline: {text!r}")
    return text


def _section(name: str, options: Mapping[str, object]) -> str:
    lines = [f"[{name}]", *(f"{key} = {_conf_value(val)}" for key, val in options.items())]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the cluster


@dataclass
class CephCluster:
    """A running single-node cluster; made by :func:`ceph_cluster`, which also ends it.

    ``endpoint_url``/``access_key``/``secret_key`` are for an S3 client (path-style addressing,
    any region name). The CLI methods run against this cluster's ``ceph.conf``."""

    workdir: Path
    rgw_port: int = 0
    mon_ports: tuple[int, int] = (0, 0)
    kmip: KmipClientConfig | None = None
    rgw_options: Mapping[str, object] = field(default_factory=dict)
    access_key: str = S3_ACCESS_KEY
    secret_key: str = S3_SECRET_KEY
    fsid: str = field(default_factory=lambda: str(uuid.uuid4()))
    #: Seconds :meth:`start` took until RGW answered and the S3 user existed.
    start_seconds: float = 0.0
    #: Seconds since the start of :meth:`start` at which each phase ended.
    timings: dict[str, float] = field(default_factory=dict)
    daemons: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list, repr=False)
    #: Admin sockets and pid files: ``workdir/run``, or a short temporary directory when that
    #: path is too long for a unix socket (108 bytes).
    run_dir: Path = field(init=False)
    _began: float = field(default=0.0, repr=False)
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self.run_dir = self.workdir / "run"
        if len(str(self.run_dir / f"{RGW_NAME}.asok")) > 100:
            self.run_dir = Path(tempfile.mkdtemp(prefix="s3kms-ceph-"))

    # -- paths

    @property
    def conf_path(self) -> Path:
        return self.workdir / "ceph.conf"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "log"

    def log_path(self, name: str) -> Path:
        """The log of daemon ``name`` (``mon.a``, ``mgr.x``, ``osd.0``, ``client.rgw.s3kms``)."""
        return self.log_dir / f"{name}.log"

    @property
    def rgw_log(self) -> Path:
        return self.log_path(RGW_NAME)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.rgw_port}"

    # -- configuration

    def config_text(self) -> str:
        w = self.workdir
        v2, v1 = self.mon_ports
        glob = {
            "fsid": self.fsid,
            "mon host": f"[v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]",
            "public addr": "127.0.0.1",
            "ms bind ipv6": "false",
            "auth cluster required": "none",
            "auth service required": "none",
            "auth client required": "none",
            # Clients would otherwise search /etc/ceph for keyrings.
            "keyring": w / "keyring",
            "run dir": self.run_dir,
            "pid file": "$run_dir/$name.pid",
            "crash dir": w / "crash",
            "log file": self.log_dir / "$name.log",
            "mon cluster log file": self.log_dir / "cluster.log",
            "osd pool default size": 1,
            "osd pool default min size": 1,
            # RGW creates ~7 pools; the default 32 PGs each nearly reaches the 250 PG/OSD limit.
            "osd pool default pg num": 8,
            "osd pool default pgp num": 8,
            "osd pool default pg autoscale mode": "off",
            "osd crush chooseleaf type": 0,
            "mon allow pool size one": "true",
            "mon allow pool delete": "true",
            "mon warn on pool no redundancy": "false",
            "mon warn on insecure global id reclaim allowed": "false",
        }
        rgw: dict[str, object] = {
            "admin socket": ADMIN_SOCKET,
            "rgw frontends": f"beast endpoint=127.0.0.1:{self.rgw_port}",
            "rgw data": w / "rgw",
            "rgw crypt require ssl": "false",  # SSE over plain-HTTP S3 (tests only)
            "rgw thread pool size": 64,  # default 512
            # radosgw defaults to "secure" mode to the monitors, which needs cephx: without
            # this it retries "get_initial_auth_request returned -13" forever.
            "ms mon client mode": "crc",
        }
        if self.kmip is not None:
            rgw |= {
                "rgw crypt s3 kms backend": "kmip",
                "rgw crypt kmip addr": self.kmip.addr,
                "rgw crypt kmip ca path": self.kmip.ca_path,
                "rgw crypt kmip client cert": self.kmip.client_cert,
                "rgw crypt kmip client key": self.kmip.client_key,
                "rgw crypt kmip kms key template": self.kmip.key_template,
            }
        rgw |= dict(self.rgw_options)
        return "\n".join(
            [
                _section("global", glob),
                _section(
                    "mon",
                    {
                        "admin socket": ADMIN_SOCKET,
                        "mon data": w / "mon" / "$id",
                        "mon data avail crit": 0,
                        "mon data avail warn": 1,
                        # Each pool RGW creates is two monitor proposals, by default at most
                        # one per second: ~11 s of RGW's start-up.
                        "paxos propose interval": 0.05,
                        "paxos min wait": 0.01,
                    },
                ),
                _section(
                    "mgr",
                    {
                        "admin socket": ADMIN_SOCKET,
                        "mgr data": w / "mgr" / "$id",
                        "mgr disabled modules": " ".join(MGR_DISABLED_MODULES),
                    },
                ),
                _section(
                    "osd",
                    {
                        "admin socket": ADMIN_SOCKET,
                        "osd data": w / "osd" / "$id",
                        "osd objectstore": "memstore",
                        "osd class load list": "*",
                        "osd class default list": "*",
                    },
                ),
                # The CLIs (ceph, rados, radosgw-admin) run as client.admin: bound their waits.
                _section(
                    "client.admin",
                    {
                        "client mount timeout": 15,
                        "rados mon op timeout": 30,
                        "rados osd op timeout": 30,
                    },
                ),
                _section(RGW_NAME, rgw),
            ]
        )

    # -- CLIs

    def _cli(self, binary: str, args: tuple[str, ...], timeout: float) -> bytes:
        return _run(
            [binary, "--conf", str(self.conf_path), *args],
            self.workdir,
            timeout=timeout,
            what=f"{binary} {' '.join(args)}",
        )

    def ceph(self, *args: str, timeout: float = CLI_TIMEOUT) -> str:
        """``ceph ARGS`` against this cluster; its stdout."""
        return self._cli("ceph", args, timeout).decode()

    def ceph_json(self, *args: str, timeout: float = CLI_TIMEOUT) -> object:
        """``ceph ARGS --format json``, decoded."""
        return json.loads(self.ceph(*args, "--format", "json", timeout=timeout))

    def rados(self, *args: str, timeout: float = CLI_TIMEOUT) -> bytes:
        """``rados ARGS`` against this cluster; its stdout (bytes: ``get NAME -`` is binary)."""
        return self._cli("rados", args, timeout)

    def radosgw_admin(self, *args: str, timeout: float = CLI_TIMEOUT) -> str:
        """``radosgw-admin ARGS`` against this cluster; its stdout."""
        return self._cli("radosgw-admin", args, timeout).decode()

    def admin_socket(self, name: str) -> Path:
        """The admin socket of daemon ``name`` (``mon.a``, ``osd.0``, ``client.rgw.s3kms``...)."""
        return self.run_dir / f"{name}.asok"

    def daemon_command(self, name: str, *args: str, timeout: float = CLI_TIMEOUT) -> str:
        """A command through daemon ``name``'s admin socket (``ceph daemon``), e.g.
        ``daemon_command("client.rgw.s3kms", "config", "set", "debug_rgw", "20")``."""
        return self.ceph("--admin-daemon", str(self.admin_socket(name)), *args, timeout=timeout)

    def raw_objects(self, pool: str = DATA_POOL) -> dict[str, bytes]:
        """Every RADOS object of ``pool`` (all namespaces) with its content, as stored.

        Keys are the object names, prefixed with ``<namespace>/`` outside the default
        namespace. For RGW's data pool: object heads (``<bucket marker>_<key>``), tails
        (``..._shadow_...``) and multipart parts (``..._multipart_...``)."""
        listing = json.loads(self.rados("-p", pool, "ls", "--all", "--format", "json"))
        objects: dict[str, bytes] = {}
        for entry in listing:
            name, namespace = entry["name"], entry.get("namespace", "")
            args = ["-p", pool]
            if namespace:
                args += ["-N", namespace]
            if entry.get("locator"):
                args += ["--object-locator", entry["locator"]]
            key = f"{namespace}/{name}" if namespace else name
            objects[key] = self.rados(*args, "get", name, "-")
        return objects

    # -- state

    def memory_rss(self) -> dict[str, int]:
        """Resident memory of each running daemon, in bytes (from /proc/PID/status)."""
        sizes: dict[str, int] = {}
        for name, proc in self.daemons.items():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        sizes[name] = int(line.split()[1]) * 1024
        return sizes

    def alive(self, name: str) -> bool:
        proc = self.daemons.get(name)
        return proc is not None and proc.poll() is None

    def _all_alive(self) -> bool:
        return all(proc.poll() is None for proc in self.daemons.values())

    # -- start and stop

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.log_dir / f"{name}.stdout.log").open("ab")
        self._logs.append(log)
        proc = subprocess.Popen(
            [*args, "--conf", str(self.conf_path), "-f"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=_env(self.workdir),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        _LIVE.add(proc)
        self.daemons[name] = proc

    def _dead_daemon_report(self) -> str:
        parts = []
        for name, proc in self.daemons.items():
            code = proc.poll()
            if code is not None:
                parts.append(
                    f"{name} exited {code}\n--- {name}.log ---\n{log_tail(self.log_path(name))}"
                    f"\n--- {name}.stdout.log ---\n"
                    f"{log_tail(self.log_dir / f'{name}.stdout.log', 15)}"
                )
        return "\n".join(parts)

    def _remaining(self) -> float:
        return max(1.0, self._deadline - time.monotonic())

    def _failed(self, what: str, cause: BaseException | None = None) -> CephError:
        report = self._dead_daemon_report()
        detail = f": {cause}" if cause is not None else ""
        return CephError(f"{what}{detail}\n{report}" if report else f"{what}{detail}")

    def _mark(self, phase: str) -> None:
        self.timings[phase] = round(time.monotonic() - self._began, 2)

    def start(self) -> None:
        """Write ceph.conf and start mon, mgr, OSD and RGW; return once RGW answers S3 and
        the S3 user exists (bounded by ``START_TIMEOUT`` in all). On failure the caller must
        still :meth:`stop`."""
        self._began = time.monotonic()
        self._deadline = self._began + START_TIMEOUT
        w = self.workdir
        for sub in ("log", "crash", "mon/a", "mgr/x", "osd/0", "rgw"):
            (w / sub).mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (w / "keyring").touch()
        v2, v1, self.rgw_port = free_ports(3)
        self.mon_ports = (v2, v1)
        self.conf_path.write_text(self.config_text())

        # Monitor: a monmap with just this one monitor, mkfs, run.
        monmap = w / "monmap"
        _run(
            [
                "monmaptool", "--create", "--clobber", "--fsid", self.fsid,
                "--addv", "a", f"[v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]", str(monmap),
            ],
            w,
        )  # fmt: skip
        _run(
            [
                "ceph-mon", "--conf", str(self.conf_path), "--id", "a", "--mkfs",
                "--monmap", str(monmap), "--keyring", "/dev/null",
            ],
            w,
        )  # fmt: skip
        (w / "mon" / "a" / "keyring").touch()
        self._spawn("mon.a", ["ceph-mon", "--id", "a"])
        self._spawn("mgr.x", ["ceph-mgr", "--id", "x"])
        self._mark("mon started")

        # The OSD: registered with the monitor (the first `ceph` call waits for its quorum of
        # one), placed in CRUSH, mkfs, run.
        osd_id = self._osd_create()
        self._mark("mon answers")
        self.ceph("osd", "crush", "add", f"osd.{osd_id}", "1", "root=default")
        _run(["ceph-osd", "--conf", str(self.conf_path), "--id", osd_id, "--mkfs"], w)
        self._spawn(f"osd.{osd_id}", ["ceph-osd", "--id", osd_id])
        self._mark("osd started")

        # RGW creates its pools and default zone itself, as soon as the OSD is up.
        self._spawn(RGW_NAME, ["radosgw", "--name", RGW_NAME])
        what = f"radosgw to answer HTTP at {self.endpoint_url}"
        try:
            wait_until(
                self._rgw_answers,
                timeout=self._remaining(),
                what=what,
                log=self.rgw_log,
                alive=self._all_alive,
                interval=POLL_INTERVAL,
            )
        except Exception as exc:
            raise self._failed("cluster start failed", exc) from exc
        self._mark("rgw answers")
        self.radosgw_admin(
            "user", "create", "--uid", S3_USER, "--display-name", "s3kms tests",
            "--access-key", self.access_key, "--secret-key", self.secret_key,
            timeout=self._remaining(),
        )  # fmt: skip
        self._mark("s3 user created")
        self.start_seconds = time.monotonic() - self._began

    def _osd_create(self) -> str:
        """``ceph osd create`` (the new OSD's id), retried until the monitor answers."""
        while True:
            try:
                return self.ceph("osd", "create", timeout=min(20.0, self._remaining())).strip()
            except CephError as exc:
                if time.monotonic() > self._deadline or not self.alive("mon.a"):
                    raise self._failed(
                        f"the monitor did not come up\n{log_tail(self.log_path('mon.a'))}", exc
                    ) from exc
                time.sleep(POLL_INTERVAL)

    def _rgw_answers(self) -> bool:
        return httpx.get(self.endpoint_url + "/", timeout=2.0).status_code == 200

    def stop(self) -> None:
        """Kill every daemon (process groups), close logs, remove the cluster's data (the
        logs and ceph.conf stay for post-mortems). Idempotent."""
        for proc in list(self.daemons.values()):
            _kill(proc)
        for log in self._logs:
            log.close()
        self._logs.clear()
        for path in [*(self.workdir / sub for sub in ("mon", "mgr", "osd", "rgw")), self.run_dir]:
            shutil.rmtree(path, ignore_errors=True)
        (self.workdir / "monmap").unlink(missing_ok=True)


@contextlib.contextmanager
def ceph_cluster(
    workdir: Path,
    *,
    kmip: KmipClientConfig | None,
    rgw_options: Mapping[str, object] | None = None,
) -> Iterator[CephCluster]:
    """A running single-node Ceph with RGW on a free 127.0.0.1 port, everything under
    ``workdir``; killed and removed on exit (also when starting it fails).

    ``kmip`` configures SSE-KMS through RGW's KMIP client (``None``: no KMS backend set);
    ``rgw_options`` are further ``ceph.conf`` options of the RGW daemon (e.g.
    ``{"debug rgw": 20}``). Installs Ceph first if needed (see :func:`ensure_ceph_installed`).
    """
    ensure_ceph_installed()
    workdir = Path(workdir)
    for attempt in range(1, START_ATTEMPTS + 1):
        cluster = CephCluster(workdir, kmip=kmip, rgw_options=dict(rgw_options or {}))
        try:
            cluster.start()
        except CephError as exc:
            cluster.stop()
            # A port picked free was taken before the daemon bound it: again, on new ports.
            if _ADDRESS_IN_USE not in str(exc) or attempt == START_ATTEMPTS:
                raise
            cluster.log_dir.rename(workdir / f"log.attempt-{attempt}")
            continue
        except BaseException:
            cluster.stop()
            raise
        break
    try:
        yield cluster
    finally:
        cluster.stop()
