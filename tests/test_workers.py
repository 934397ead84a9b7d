"""`--workers N`: several processes on one port share keys, and cache invalidation crosses them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from s3kms.client import Client
from s3kms.errors import KeyDisabled

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsProcess


def fresh_client(server: KmsProcess) -> Client:
    # A new connection per client, so the kernel spreads requests over the worker processes.
    return Client(server.url, ROOT_USER, ROOT_PASSWORD)


def worker_pids(server: KmsProcess) -> set[int]:
    assert server.proc is not None
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
    return {int(pid) for pid in children}


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores for two workers")
def test_disable_through_one_worker_is_seen_by_all(tmp_path: Path) -> None:
    server = KmsProcess(tmp_path / "data", args=["--workers", "2"])
    server.start()
    try:
        assert len(worker_pids(server)) >= 2
        with fresh_client(server) as kms:
            kms.create_key("shared")
        blobs = []
        # Warm every worker's cache with the enabled key.
        for _ in range(40):
            with fresh_client(server) as kms:
                blobs.append(kms.encrypt("shared", b"payload"))
        with fresh_client(server) as kms:
            kms.disable_key("shared")
        for blob in blobs:
            with fresh_client(server) as kms, pytest.raises(KeyDisabled):
                kms.decrypt(blob)
        with fresh_client(server) as kms:
            kms.enable_key("shared")
        for blob in blobs[:20]:
            with fresh_client(server) as kms:
                assert kms.decrypt(blob) == b"payload"
    finally:
        server.stop()
