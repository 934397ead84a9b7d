"""Debian packages a test needs, installed with apt-get on first use (as CI runs: root, Debian).

`ensure_packages` checks with the caller's `missing()` what is absent; as root with apt-get it
runs `apt-get update` and `apt-get install --no-install-recommends` under a file lock (parallel
pytest processes install once); otherwise the test is skipped, or failed when the caller's
environment variable is `1` (`.ci/run` sets them: CI must never skip these tests silently).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

INSTALL_TIMEOUT = 900.0


def cannot_install(label: str, reason: str, require_env: str) -> None:
    """Skip, or fail when `$<require_env>=1`."""
    message = f"{label} is not available: {reason}"
    if os.environ.get(require_env) == "1":
        pytest.fail(f"{message} (and ${require_env}=1 requires it)", pytrace=False)
    pytest.skip(message)


def ensure_packages(
    label: str, packages: Sequence[str], missing: Callable[[], list[str]], require_env: str
) -> float:
    """Install `packages` when `missing()` names something; the seconds it took (0.0: none)."""
    absent = missing()
    if not absent:
        return 0.0
    what = f"missing {', '.join(absent)} (Debian packages: {' '.join(packages)})"
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        cannot_install(label, f"{what}, and there is no apt-get to install them", require_env)
    if os.geteuid() != 0:
        cannot_install(label, f"{what}; installing them needs root", require_env)
    assert apt_get is not None
    began = time.monotonic()
    lock_path = Path(tempfile.gettempdir()) / "s3kms-apt-install.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be installing: wait for it
        try:
            if missing():
                print(f"[{label}] {what}: installing them", file=sys.stderr, flush=True)
                _apt_install(label, apt_get, packages)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    still = missing()
    if still:
        pytest.fail(f"apt-get installed {list(packages)} but {still} are still missing")
    seconds = time.monotonic() - began
    print(f"[{label}] installed in {seconds:.1f}s", file=sys.stderr, flush=True)
    return seconds


def _apt_install(label: str, apt_get: str, packages: Sequence[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (
        [apt_get, "update"],
        [apt_get, "install", "-y", "--no-install-recommends", *packages],
    ):
        print(f"[{label}]   running {' '.join(args)}", file=sys.stderr, flush=True)
        step = time.monotonic()
        try:
            done = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=env,
                timeout=INSTALL_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(args)} did not finish in {INSTALL_TIMEOUT:.0f}s")
        output = (done.stdout + done.stderr).decode(errors="replace")
        if done.returncode != 0:
            tail = "\n".join(output.splitlines()[-30:])
            pytest.fail(f"{' '.join(args)} exited {done.returncode}:\n{tail}", pytrace=False)
        print(
            f"[{label}]   ... done in {time.monotonic() - step:.1f}s", file=sys.stderr, flush=True
        )
