"""Real s3kms servers on loopback ports, for the integration tests.

Two ways to run one, both serving real HTTP on 127.0.0.1:
- `KmsProcess`: `s3kms server` as a subprocess (what a user runs): restarts, `kill -9`, workers, logs.
- `KmsThread`: the same ASGI app under uvicorn in a thread of the test process, with an
  injectable clock, so deletion windows and rotation periods can be tested without waiting.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import httpx
import uvicorn

from s3kms.auth import sigv4
from s3kms.clock import OffsetClock
from s3kms.config import Settings
from s3kms.server import build_app, uvicorn_options

ROOT_USER = "testroot"
ROOT_PASSWORD = "test-root-password-0123456789"  # a test credential, scanned for in logs
MASTER_KEY = "kZ8QnXlJb9Yw2m0mC0nKQ1H8dU7oN4vX6W1s2t3u4v8="


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, timeout: float = 20.0, verify: bool | str = True) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/live", timeout=1.0, verify=verify).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"s3kms at {url} did not become ready: {last}")


@dataclass
class KmsProcess:
    data_dir: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    scheme: str = "http"
    verify: bool | str = True
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    preexec_fn: Callable[[], Any] | None = None  # run in the child before exec (e.g. setrlimit)
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        env = {
            **os.environ,
            "S3KMS_ROOT_USER": ROOT_USER,
            "S3KMS_ROOT_PASSWORD": ROOT_PASSWORD,
            "S3KMS_MASTER_KEY": MASTER_KEY,
            **self.env,
        }
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        self._log = self.log_path.open("ab")
        cmd = [
            sys.executable, "-m", "s3kms", "server",
            "--address", f"127.0.0.1:{self.port}",
            "--data-dir", str(self.data_dir),
            *self.args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, preexec_fn=self.preexec_fn
        )
        if wait:
            try:
                wait_ready(self.url, verify=self.verify)
            except RuntimeError:
                self.stop()
                raise RuntimeError(f"server did not start; log:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._close_log()
        return code

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run, like a crash or power loss of the process."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_log()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()


class KmsThread:
    """The s3kms app under uvicorn in a background thread; `clock.offset` moves its time."""

    def __init__(self, settings: Settings, clock: OffsetClock | None = None) -> None:
        self.clock = clock or OffsetClock()
        self.port = free_port()
        self.settings = replace(settings, host="127.0.0.1", port=self.port)
        self.app = build_app(self.settings, clock=self.clock)
        # The options `s3kms server` runs with (protocol, limits, timeouts), on a quieter log.
        options = {**uvicorn_options(self.settings), "log_level": "warning"}
        config = uvicorn.Config(self.app, **options)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> KmsThread:
        self._thread.start()
        wait_ready(self.url)
        return self

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the server's own event loop (e.g. the maintenance pass)."""
        assert self.app.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.app.loop).result(30)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(15)


def thread_settings(data_dir: Path, **overrides: Any) -> Settings:
    base = Settings(
        data_dir=data_dir,
        root_user=ROOT_USER,
        root_password=ROOT_PASSWORD,
        master_key=MASTER_KEY,
        maintenance_interval=3600.0,
    )
    return replace(base, **overrides)


def signed_admin(
    url: str,
    method: str,
    path: str,
    access: str = ROOT_USER,
    secret: str = ROOT_PASSWORD,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """An admin request signed S3-style (as minio-py and madmin sign them), as root by default."""
    target = url + path
    signed_headers = sigv4.sign_headers(
        method, target, headers or {}, body, access_key=access, secret_key=secret,
        region="us-east-1", service="s3", now=time.time(),
    )  # fmt: skip
    return httpx.request(method, target, headers=signed_headers, content=body, timeout=20)


def run_cli(
    srv: KmsThread,
    *args: str,
    stdin: bytes = b"",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """`s3kms ARGS` as a user runs it against `srv` as root (wide terminal, no other S3KMS_*)."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("S3KMS_")}
    base_env |= {
        "S3KMS_ENDPOINT": srv.url,
        "S3KMS_ACCESS_KEY": ROOT_USER,
        "S3KMS_SECRET_KEY": ROOT_PASSWORD,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "s3kms", *args],
        input=stdin,
        capture_output=True,
        env=base_env | (env or {}),
        timeout=60,
        cwd=cwd,
    )
