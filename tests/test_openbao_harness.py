"""The OpenBao test harness (tests/openbao.py) drives real servers correctly."""

from __future__ import annotations

import base64
import socket
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from openbao import (
    ENV_VAULT_ADDR,
    ENV_VAULT_TOKEN,
    BaoCluster,
    BaoDevServer,
    BaoError,
    ExternalVault,
    VaultApi,
    bao_binary,
    external_configured,
    external_server,
    free_port,
    free_ports,
    start_cluster,
)


def local_bao() -> str:
    """The bao binary; skip (rather than fail) when only an external Vault is available."""
    try:
        return bao_binary()
    except RuntimeError:
        if external_configured():
            pytest.skip("no local `bao` binary; running against an external Vault only")
        raise


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def encrypt(api: VaultApi, key: str, plaintext: bytes, token: str | None = None) -> str:
    resp = api.api("POST", f"transit/encrypt/{key}", {"plaintext": b64(plaintext)}, token)
    assert resp.status_code == 200, resp.text
    ciphertext = resp.json()["data"]["ciphertext"]
    assert isinstance(ciphertext, str)
    return ciphertext


def decrypt(api: VaultApi, key: str, ciphertext: str, token: str | None = None) -> bytes:
    resp = api.api("POST", f"transit/decrypt/{key}", {"ciphertext": ciphertext}, token)
    assert resp.status_code == 200, resp.text
    return base64.b64decode(resp.json()["data"]["plaintext"])


# --------------------------------------------------------------------------- plumbing


def test_bao_binary_is_real_openbao() -> None:
    out = subprocess.run(
        [local_bao(), "version"], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.startswith("OpenBao v"), out.stdout


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(4)
    assert len(set(ports)) == 4
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))


def test_external_server_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAULT_ADDR, raising=False)
    monkeypatch.delenv(ENV_VAULT_TOKEN, raising=False)
    assert external_server() is None
    monkeypatch.setenv(ENV_VAULT_ADDR, "http://127.0.0.1:1/")
    assert external_server() is None  # the token is required too
    monkeypatch.setenv(ENV_VAULT_TOKEN, "t0ken")
    external = external_server()
    assert external is not None
    try:
        assert external.addr == "http://127.0.0.1:1"
        assert external.root_token == "t0ken"
    finally:
        external.close()


# --------------------------------------------------------------------------- dev server


def test_dev_server_is_up_with_transit_and_kv(bao_dev_private: BaoDevServer) -> None:
    bao = bao_dev_private
    assert bao.running
    assert bao.addr.startswith("http://127.0.0.1:")
    assert bao.unseal_key
    health = bao.api("GET", "sys/health", token="")
    assert health.status_code == 200
    assert health.json()["sealed"] is False
    mounts = bao.call("GET", "sys/mounts")["data"]
    assert mounts["transit/"]["type"] == "transit"
    assert mounts["secret/"]["type"] == "kv"
    assert mounts["secret/"]["options"]["version"] == "2"
    # KV v2 is usable at once.
    written = bao.call("POST", "secret/data/probe", {"data": {"a": "b"}})
    assert written["data"]["version"] == 1
    assert bao.call("GET", "secret/data/probe")["data"]["data"] == {"a": "b"}
    # Without a token: 403.
    assert bao.api("GET", "sys/mounts", token="").status_code == 403
    # No token helper file was written (dev server started with -dev-no-store-token and a
    # HOME of its own).
    assert not (bao.workdir / ".vault-token").exists()


def test_transit_round_trip(bao: VaultApi) -> None:
    key = unique("harness")
    bao.call("POST", f"transit/keys/{key}", {"type": "aes256-gcm96"})
    ciphertext = encrypt(bao, key, b"hello openbao")
    assert ciphertext.startswith("vault:v1:")
    assert decrypt(bao, key, ciphertext) == b"hello openbao"
    # Associated data is bound: decrypting without it fails with a 400.
    with_ad = bao.call(
        "POST", f"transit/encrypt/{key}", {"plaintext": b64(b"x"), "associated_data": b64(b"ctx")}
    )["data"]["ciphertext"]
    assert bao.api("POST", f"transit/decrypt/{key}", {"ciphertext": with_ad}).status_code == 400
    ok = bao.call(
        "POST",
        f"transit/decrypt/{key}",
        {"ciphertext": with_ad, "associated_data": b64(b"ctx")},
    )
    assert base64.b64decode(ok["data"]["plaintext"]) == b"x"


def test_enable_transit_is_idempotent(bao: VaultApi) -> None:
    bao.enable_transit("transit")
    mount = unique("transit")
    try:
        bao.enable_transit(mount)
        bao.enable_transit(mount)
        bao.enable_kv_v2("secret")
        assert bao.call("GET", "sys/mounts")["data"][f"{mount}/"]["type"] == "transit"
    finally:
        bao.call("DELETE", f"sys/mounts/{mount}")


def test_seal_answers_503_and_unseal_restores(bao_dev_private: BaoDevServer) -> None:
    bao = bao_dev_private
    bao.call("POST", "transit/keys/sealtest")
    ciphertext = encrypt(bao, "sealtest", b"before seal")

    bao.seal()
    resp = bao.api("POST", "transit/decrypt/sealtest", {"ciphertext": ciphertext})
    assert resp.status_code == 503
    assert "sealed" in " ".join(resp.json()["errors"]).lower()
    assert bao.api("GET", "sys/health", token="").status_code == 503
    assert bao.call("GET", "sys/seal-status", token="")["sealed"] is True

    bao.unseal()
    # In-memory storage lives as long as the process: the key survived the seal.
    assert decrypt(bao, "sealtest", ciphertext) == b"before seal"


def test_kill_then_fresh_start(bao_dev_private: BaoDevServer) -> None:
    bao = bao_dev_private
    addr, first_key = bao.addr, bao.unseal_key
    proc = bao.process
    assert proc is not None

    bao.kill()
    assert proc.returncode is not None  # reaped
    assert not bao.running
    with pytest.raises(httpx.TransportError):
        bao.api("GET", "sys/health", token="")

    bao.start()
    assert bao.addr == addr  # same address and root token, fresh in-memory server
    assert bao.unseal_key != first_key
    assert bao.api("GET", "sys/health", token="").status_code == 200
    assert "transit/" not in bao.call("GET", "sys/mounts")["data"]
    bao.enable_transit()
    bao.call("POST", "transit/keys/after-restart")
    assert decrypt(bao, "after-restart", encrypt(bao, "after-restart", b"x")) == b"x"

    bao.stop()
    bao.stop()  # idempotent
    assert not bao.running


def test_start_failure_reports_log_tail(tmp_path: Path) -> None:
    local_bao()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = busy.getsockname()[1]
        server = BaoDevServer(tmp_path, port=port)
        try:
            with pytest.raises(BaoError, match="address already in use") as info:
                server.start()
        finally:
            server.close()
    assert "log tail" in str(info.value)
    assert not server.running


def test_approle_login_gives_a_token(bao: VaultApi) -> None:
    key, policy, role = unique("approle-key"), unique("approle-pol"), unique("role")
    bao.call("POST", f"transit/keys/{key}")
    bao.write_policy(
        policy,
        f'path "transit/encrypt/{key}" {{ capabilities = ["update"] }}\n'
        f'path "transit/decrypt/{key}" {{ capabilities = ["update"] }}\n',
    )
    role_id, secret_id = bao.enable_approle(role, [policy], token_ttl="5m", secret_id_ttl="10m")
    bao.enable_approle(unique("role"), [policy], token_ttl="1m")  # approle enable is idempotent

    login = bao.api(
        "POST", "auth/approle/login", {"role_id": role_id, "secret_id": secret_id}, token=""
    )
    assert login.status_code == 200, login.text
    auth = login.json()["auth"]
    token = auth["client_token"]
    assert 0 < auth["lease_duration"] <= 300
    assert policy in auth["policies"]
    assert bao.approle_login(role_id, secret_id)  # the helper logs in too

    assert decrypt(bao, key, encrypt(bao, key, b"via approle", token), token) == b"via approle"
    assert bao.api("GET", "sys/mounts", token=token).status_code == 403
    bad = bao.api("POST", "auth/approle/login", {"role_id": role_id, "secret_id": "nope"}, "")
    assert bad.status_code == 400


def test_token_with_short_ttl_expires(bao: VaultApi) -> None:
    token = bao.create_token(["default"], ttl="2s")
    created = time.monotonic()
    first = bao.api("GET", "auth/token/lookup-self", token=token)
    assert first.status_code == 200
    assert first.json()["data"]["ttl"] <= 2

    deadline = created + 15
    while time.monotonic() < deadline:
        if bao.api("GET", "auth/token/lookup-self", token=token).status_code == 403:
            break
        time.sleep(0.2)
    else:
        pytest.fail("a token with ttl 2s was still valid after 15s")
    assert time.monotonic() - created >= 1.5


def test_create_token_renewable_flag(bao: VaultApi) -> None:
    fixed = bao.create_token(["default"], ttl="1m", renewable=False)
    assert bao.call("GET", "auth/token/lookup-self", token=fixed)["data"]["renewable"] is False
    assert bao.api("POST", "auth/token/renew-self", {}, token=fixed).status_code == 400
    renewable = bao.create_token(["default"], ttl="1m")
    assert bao.call("POST", "auth/token/renew-self", {}, token=renewable)["auth"]["renewable"]


def test_external_vault_helpers_against_a_real_server(bao_dev_private: BaoDevServer) -> None:
    """ExternalVault (the S3KMS_TEST_VAULT_* path) works against any real server."""
    external = ExternalVault(bao_dev_private.addr + "/", bao_dev_private.root_token)
    try:
        external.check()
        external.enable_transit()  # already mounted: ignored
        external.enable_transit()
        external.enable_kv_v2("secret")  # the dev server's own KV v2: accepted
        role_id, secret_id = external.enable_approle("ext", ["default"], token_ttl="1m")
        assert external.approle_login(role_id, secret_id)
        external.write_policy("ext", 'path "transit/*" { capabilities = ["read", "list"] }')
        token = external.create_token(["ext"], ttl="1m")
        assert external.api("LIST", "transit/keys", token=token).status_code == 404  # none yet
        with (
            ExternalVault(bao_dev_private.addr, "wrong-token") as wrong,
            pytest.raises(BaoError, match="not usable"),
        ):
            wrong.check()
        with pytest.raises(BaoError, match="not KV v2"):
            external.enable_kv_v2("transit")
    finally:
        external.close()


# --------------------------------------------------------------------------- cluster


@pytest.mark.slow
def test_cluster_survives_losing_its_leader(bao_cluster: BaoCluster) -> None:
    cluster = bao_cluster
    print(f"\ncluster formed in {cluster.start_seconds:.1f}s")

    peers = cluster.raft_peers()
    assert sorted(p["node_id"] for p in peers) == ["node1", "node2", "node3"]
    assert all(p["voter"] for p in peers)
    assert sum(bool(p["leader"]) for p in peers) == 1
    assert len(set(cluster.addresses())) == 3

    leader = cluster.leader()
    standbys = [n for n in cluster.nodes if n is not leader]
    assert [cluster.health(n) for n in standbys] == [429, 429]

    cluster.call("POST", "transit/keys/survivor", {"type": "aes256-gcm96"})
    ciphertext = encrypt(cluster, "survivor", b"replicated")
    # A standby forwards the request to the active node itself (no 307 to follow).
    for node in standbys:
        resp = cluster.node_api(node, "POST", "transit/encrypt/survivor", {"plaintext": b64(b"s")})
        assert resp.status_code == 200, resp.text

    cluster.kill(leader)
    assert not leader.running
    new_leader = cluster.wait_for_new_leader(excluding=leader, timeout=60)
    print(f"new leader {new_leader.node_id} after {cluster.election_seconds:.1f}s")
    assert new_leader is not leader

    for node in cluster.live_nodes():  # the new leader and the remaining standby
        resp = cluster.node_api(
            node, "POST", "transit/decrypt/survivor", {"ciphertext": ciphertext}
        )
        assert resp.status_code == 200, (node.node_id, resp.text)
        assert base64.b64decode(resp.json()["data"]["plaintext"]) == b"replicated"
    assert decrypt(cluster, "survivor", ciphertext) == b"replicated"

    # The killed node comes back from its raft data as a standby.
    cluster.restart_node(leader)
    assert cluster.health(leader) == 429
    resp = cluster.node_api(leader, "POST", "transit/decrypt/survivor", {"ciphertext": ciphertext})
    assert resp.status_code == 200, resp.text


@pytest.mark.slow
def test_cluster_without_standby_reads_is_read_after_write_consistent(tmp_path: Path) -> None:
    """disable_standby_reads = true: standbys forward every request to the active node, so a
    key created on the active node decrypts through a standby at once and a rotation is seen
    immediately. (With OpenBao's default standby reads, both can briefly be stale.)"""
    local_bao()
    cluster = start_cluster(tmp_path, standby_reads=False)
    try:
        assert "disable_standby_reads = true" in cluster.nodes[0].config_path.read_text()
        leader = cluster.leader()
        standbys = [n for n in cluster.nodes if n is not leader]
        for i in range(5):
            key = f"raw-{i}"
            cluster.call("POST", f"transit/keys/{key}")
            ciphertext = encrypt(cluster, key, b"fresh")
            for node in standbys:
                resp = cluster.node_api(
                    node, "POST", f"transit/decrypt/{key}", {"ciphertext": ciphertext}
                )
                assert resp.status_code == 200, (node.node_id, resp.text)
        cluster.call("POST", "transit/keys/raw-0/rotate")
        resp = cluster.node_api(
            standbys[0], "POST", "transit/encrypt/raw-0", {"plaintext": b64(b"x")}
        )
        assert resp.json()["data"]["key_version"] == 2
        cluster.call("POST", "secret/data/raw", {"data": {"v": 1}})
        resp = cluster.node_api(standbys[1], "GET", "secret/data/raw")
        assert resp.status_code == 200
        assert resp.json()["data"]["data"] == {"v": 1}
    finally:
        cluster.close()
    assert not any(node.running for node in cluster.nodes)
