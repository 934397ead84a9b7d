"""Two s3kms nodes on a real three-node OpenBao raft cluster lose the active OpenBao node.

The cluster runs with OpenBao's default `disable_standby_reads = false`: its standbys answer reads
from their own raft replica, which may lag the active node. Each s3kms node lists a standby
FIRST among the three addresses, so without leader preference (VaultKeyStore looks for the active
node and sends everything there) the nodes would read through different standbys and disagree
right after a write: a key created on A "not found" on B, an encrypt after a rotation made with
the old version.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from s3kms.client import Client
from s3kms.config import parse_vault_addresses
from s3kms.crypto import blob
from s3kms.errors import BackendUnavailable, KeyDisabled, KMSError
from s3kms.keystore.vault import VaultKeyStore, VaultSettings

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsThread, thread_settings
from openbao import BaoCluster, BaoNode, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.vault]


class Node:
    """One s3kms node: the in-process server and its client (admin API and AWS KMS API)."""

    def __init__(self, srv: KmsThread) -> None:
        self.srv = srv
        self.client = Client(srv.url, ROOT_USER, ROOT_PASSWORD, timeout=30)

    def store(self) -> VaultKeyStore:
        store = self.srv.app.runtime.service.store
        assert isinstance(store, VaultKeyStore)
        return store

    def preferred(self) -> str:
        store = self.store()
        return store._transport.addresses[store._transport.current]

    def close(self) -> None:
        self.client.close()
        self.srv.stop()


@pytest.fixture
def nodes(bao_cluster: BaoCluster, tmp_path: Path) -> Iterator[tuple[Node, Node, BaoNode]]:
    """(A, B, active OpenBao node). A is configured through the admin `configure` route with a
    comma-separated vault_address, B at start (like `s3kms server --backend vault
    --vault-address a,b,c`). Each lists a different standby first. Both run without the metadata
    cache (`vault_metadata_cache_seconds` 0): a state change on one holds on the other's next
    request, so the test sees any read from a lagging standby."""
    cluster = bao_cluster
    leader = cluster.leader()
    s1, s2 = [n for n in cluster.nodes if n is not leader]
    prefix = f"s3kms-cluster-{uuid.uuid4().hex[:8]}"
    a_addresses = ",".join(n.addr for n in (s1, leader, s2))
    b_addresses = ",".join(n.addr for n in (s2, s1, leader))

    a = Node(KmsThread(thread_settings(tmp_path / "a")).start())
    b_settings = VaultSettings(
        addresses=parse_vault_addresses(b_addresses),
        token=cluster.root_token,
        kv_prefix=prefix,
        timeout_seconds=3.0,
        metadata_cache_seconds=0,
    )
    b = Node(KmsThread(thread_settings(tmp_path / "b", backend="vault", vault=b_settings)).start())
    try:
        a.client.configure(
            kms_type="vault",
            vault_address=a_addresses,
            vault_token=cluster.root_token,
            vault_mount_path="transit",
            vault_kv_prefix=prefix,
            vault_timeout_seconds=3.0,
            vault_metadata_cache_seconds=0,
        )
        yield a, b, leader
    finally:
        a.close()
        b.close()


def test_s3kms_keeps_serving_when_the_active_openbao_node_dies(
    bao_cluster: BaoCluster, nodes: tuple[Node, Node, BaoNode]
) -> None:
    cluster = bao_cluster
    a, b, leader = nodes
    for node in (a, b):
        status = node.client.status()
        assert (status.status, status.kms_type) == ("connected", "vault")
        assert status.endpoint is not None and len(status.endpoint.split(",")) == 3
        # Leader preference: a standby is listed first, yet the active node is used.
        assert node.preferred() == leader.addr

    # -- traffic before the failure: every write on one node is seen at once by the other.
    keys: list[str] = []
    sealed: list[tuple[bytes, bytes, dict[str, str]]] = []  # (blob, plaintext, context)
    for i in range(16):
        maker, user = (a, b) if i % 2 == 0 else (b, a)
        key = maker.client.create_key(f"c-{uuid.uuid4().hex[:10]}").key_id
        keys.append(key)
        assert user.client.key_status(key).status == "enabled"
        context = {"bucket": "b", "object": str(i)}
        data = f"secret {i}".encode()
        made = user.client.encrypt(key, data, context)
        assert maker.client.decrypt(made, context) == data
        dk = maker.client.generate_data_key(key, context=context)
        assert user.client.decrypt(dk.ciphertext, context) == dk.plaintext
        sealed += [(made, data, context), (dk.ciphertext, dk.plaintext, context)]
    # A state change on A holds on B at once; a rotation on A is used by B's next encrypt.
    a.client.disable_key(keys[0])
    with pytest.raises(KeyDisabled):
        b.client.encrypt(keys[0], b"x")
    b.client.enable_key(keys[0])
    a.client.encrypt(keys[0], b"x")
    a.client.rotate_key(keys[1])
    assert blob.decode(b.client.encrypt(keys[1], b"v2")).key_version == 2
    assert {k.key_id for k in b.client.list_keys("c-*")} == set(keys)

    # A store that reaches only standbys (no active node listed) does not believe a standby's
    # "not found" for a key just written through the active node: it retries until the standby
    # has caught up (or, were an active node listed, asks the active node).
    async def through_standbys_only() -> None:
        settings = a.store().settings
        standbys = tuple(n.addr for n in cluster.nodes if n is not leader)
        async with await VaultKeyStore.connect(replace(settings, addresses=standbys)) as store:
            assert not store._transport.active_known
            for i in range(12):
                key = (
                    await asyncio.to_thread(a.client.create_key, f"c-sb{i}-{uuid.uuid4().hex[:6]}")
                ).key_id
                keys.append(key)
                assert (await store.get_key(key)).key_id == key

    asyncio.run(through_standbys_only())

    # -- kill the active OpenBao node while both s3kms nodes are busy.
    acknowledged: list[str] = []
    failures: list[BaseException] = []
    errors: list[str] = []
    stop = threading.Event()

    def traffic(node: Node, tag: str) -> None:
        with Client(node.srv.url, ROOT_USER, ROOT_PASSWORD, timeout=30) as client:
            i = 0
            while not stop.is_set():
                i += 1
                name = f"c-{tag}{i}-{uuid.uuid4().hex[:6]}"
                try:
                    client.create_key(name)
                    acknowledged.append(name)
                    client.decrypt(client.encrypt(name, b"during"))
                    made, data, context = sealed[i % len(sealed)]
                    assert client.decrypt(made, context) == data
                except BackendUnavailable as exc:  # 503 KMSConnectionError: allowed, not more
                    failures.append(exc)
                except KMSError as exc:
                    errors.append(f"{tag}{i}: {type(exc).__name__}: {exc.message}")
                time.sleep(0.02)

    workers = [threading.Thread(target=traffic, args=(n, t)) for n, t in ((a, "a"), (b, "b"))]
    for w in workers:
        w.start()
    try:
        time.sleep(0.5)
        killed_at = time.monotonic()
        cluster.kill(leader)
        new_leader = cluster.wait_for_new_leader(leader, timeout=60)
        elected = time.monotonic() - killed_at
        time.sleep(1.5)  # traffic on the new leader
    finally:
        stop.set()
        for w in workers:
            w.join(60)
    assert not errors, errors  # only 503s are allowed during the failover
    assert len(acknowledged) > 10

    # -- after the failover: both s3kms nodes send everything to the new active node ...
    for node in (a, b):
        wait_until(
            lambda n=node: n.preferred() == new_leader.addr and n.store()._transport.active_known,
            timeout=5,
            what="s3kms to prefer the new active node",
        )
        assert node.client.status().status == "connected"
    # ... every acknowledged key exists on both, every earlier ciphertext decrypts on both ...
    everything = set(keys) | set(acknowledged)
    for node in (a, b):
        assert everything <= {k.key_id for k in node.client.list_keys("c-*")}
        for key in acknowledged:
            assert node.client.key_status(key).status == "enabled"
        for made, data, context in sealed:
            assert node.client.decrypt(made, context) == data
    # ... and new keys, state changes and rotations are consistent across the nodes again.
    for maker, user in ((a, b), (b, a)):
        key = maker.client.create_key(f"c-after-{uuid.uuid4().hex[:8]}").key_id
        assert user.client.key_status(key).status == "enabled"
        made = user.client.encrypt(key, b"after", {"k": "v"})
        assert maker.client.decrypt(made, {"k": "v"}) == b"after"
        maker.client.rotate_key(key)
        assert blob.decode(user.client.encrypt(key, b"v2")).key_version == 2
        maker.client.disable_key(key)
        with pytest.raises(KeyDisabled):
            user.client.generate_data_key(key)
    print(
        f"\nOpenBao election {cluster.election_seconds:.1f}s (kill to new leader {elected:.1f}s); "
        f"{len(acknowledged)} creates acknowledged and {len(failures)} 503s during the failover"
    )
