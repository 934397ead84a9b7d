"""`--workers N`: several processes on one port share keys, and cache invalidation crosses them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from s3kms.client import Client
from s3kms.errors import AccessDenied, KeyDisabled

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


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores for two workers")
def test_grants_and_key_policies_reach_every_worker_at_once(tmp_path: Path) -> None:
    """A grant made, a key policy put, a grant revoked through one worker: every worker's next
    request decides by the new state (the key's metadata carries them, invalidated across
    processes like a disabled key)."""
    server = KmsProcess(tmp_path / "data", args=["--workers", "2"])
    server.start()
    try:
        with fresh_client(server) as kms:
            key = kms.create_key("granted").key_id
            kms.add_user("worker-user", [], "worker-user-secret-012345")
        user_arn = "arn:aws:iam::000000000000:user/worker-user"

        def as_user() -> Client:
            return Client(server.url, "worker-user", "worker-user-secret-012345")

        # Warm every worker's caches with the key as it is: the user is refused.
        for _ in range(20):
            with as_user() as kms, pytest.raises(AccessDenied):
                kms.encrypt(key, b"payload")
        with fresh_client(server) as kms:
            grant = kms.create_grant(key, user_arn, ["Encrypt", "Decrypt"])
        blobs = []
        for _ in range(20):
            with as_user() as kms:
                blobs.append(kms.encrypt(key, b"payload"))
        with fresh_client(server) as kms:
            kms.revoke_grant(key, grant.grant_id)
        for blob in blobs:
            with as_user() as kms, pytest.raises(AccessDenied):
                kms.decrypt(blob)
        # A key policy that names the user: allowed by every worker at once, without a grant.
        policy = json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::000000000000:root"},
                     "Action": "kms:*", "Resource": "*"},
                    {"Effect": "Allow", "Principal": {"AWS": user_arn},
                     "Action": "kms:Decrypt", "Resource": "*"},
                ],
            }
        )  # fmt: skip
        with fresh_client(server) as kms:
            kms.put_key_policy(key, policy)
        for blob in blobs:
            with as_user() as kms:
                assert kms.decrypt(blob) == b"payload"
    finally:
        server.stop()
