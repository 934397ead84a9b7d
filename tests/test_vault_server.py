"""s3kms servers on the Vault backend, against a real OpenBao (or the Vault named by
$S3KMS_TEST_VAULT_ADDR / $S3KMS_TEST_VAULT_TOKEN; the tests that seal, kill or restart it skip).

Servers run in-process (KmsThread) or as `s3kms server` subprocesses (KmsProcess) and are driven
over HTTP: the admin API signed like madmin, and the AWS KMS API (Encrypt, Decrypt, GenerateDataKey)
through `s3kms.client.Client`. Every test uses its own KV prefix and key names: the shared server is
shared by the whole session, and transit key names are global to the transit mount.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import boto3
import httpx
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from s3kms.auth import sigv4
from s3kms.cli import resolve_settings
from s3kms.client import Client
from s3kms.config import KMSConfig, parse_configure_body
from s3kms.crypto import blob
from s3kms.errors import (
    BackendUnavailable,
    InvalidCiphertext,
    InvalidRequest,
    KeyDisabled,
    KeyInvalidState,
    KeyNotFound,
)
from s3kms.keystore.vault import VaultKeyStore, VaultSettings

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsProcess, KmsThread, thread_settings
from openbao import (
    ENV_VAULT_ADDR,
    ENV_VAULT_CACERT,
    BaoCluster,
    BaoDevServer,
    VaultApi,
    external_configured,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.vault

T = TypeVar("T")

PREFIXES = ["/rustfs/admin/v3/kms", "/minio/admin/v3/kms"]
ADMIN = "/rustfs/admin/v3/kms"


# --------------------------------------------------------------------------- helpers


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Signed:
    """Admin requests signed S3-style with the root credentials (raw responses, any prefix)."""

    def __init__(self, url: str, clock: Any = None) -> None:
        self.url = url
        self.clock = clock  # sign with the server's (possibly shifted) clock
        self.http = httpx.Client(timeout=30)

    def __call__(self, method: str, path: str, body: Any = None) -> httpx.Response:
        url = self.url + path
        data = b"" if body is None else json.dumps(body).encode()
        headers = sigv4.sign_headers(
            method, url, {}, data, access_key=ROOT_USER, secret_key=ROOT_PASSWORD,
            region="us-east-1", service="s3",
            now=self.clock.now() if self.clock else time.time(),
        )  # fmt: skip
        return self.http.request(method, url, headers=headers, content=data)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        resp = self(method, path, body)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)
        return resp.json()

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.ok("GET", f"{ADMIN}/status")
        return result

    def close(self) -> None:
        self.http.close()


def error_of(resp: httpx.Response) -> dict[str, Any]:
    err: dict[str, Any] = resp.json()["error"]
    return err


class Server:
    """A KmsThread with its signed admin caller and its client."""

    def __init__(self, data_dir: Path, **settings: Any) -> None:
        self.srv = KmsThread(thread_settings(data_dir, **settings)).start()
        self.admin = Signed(self.srv.url, self.srv.clock)
        self.client = Client(self.srv.url, ROOT_USER, ROOT_PASSWORD, timeout=30)

    def store(self) -> Any:
        return self.srv.app.runtime.service.store

    def configure(self, body: dict[str, Any]) -> httpx.Response:
        return self.admin("POST", f"{ADMIN}/configure", body)

    def close(self) -> None:
        self.admin.close()
        self.client.close()
        self.srv.stop()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    """The servers a test starts with `start(servers, ...)`, all stopped at its end."""
    made: list[Server] = []
    yield made
    for server in made:
        server.close()


def start(servers: list[Server], data_dir: Path, **settings: Any) -> Server:
    server = Server(data_dir, **settings)
    servers.append(server)
    return server


def ca_cert() -> str | None:
    return os.environ.get(ENV_VAULT_CACERT) or None


def vault_body(api: VaultApi, prefix: str, **extra: Any) -> dict[str, Any]:
    """The configure body of the document, plus our KV prefix."""
    body: dict[str, Any] = {
        "kms_type": "vault",
        "vault_address": api.addr,
        "vault_token": api.root_token,
        "vault_mount_path": "transit",
        "vault_kv_prefix": prefix,
    }
    if ca_cert():
        body["vault_ca_cert"] = ca_cert()
    body.update(extra)
    return body


def vault_settings(api: VaultApi, prefix: str, **extra: Any) -> VaultSettings:
    values: dict[str, Any] = {
        "addresses": (api.addr,),
        "token": api.root_token,
        "kv_prefix": prefix,
        "ca_cert": ca_cert(),
        "timeout_seconds": 5.0,
    }
    values.update(extra)
    return VaultSettings(**values)


def kv_key_ids(api: VaultApi, prefix: str) -> set[str]:
    resp = api.api("LIST", f"secret/metadata/{prefix}/keys")
    if resp.status_code == 404:
        return set()
    assert resp.status_code == 200, resp.text
    return set(resp.json()["data"]["keys"])


def transit_key(api: VaultApi, key_id: str) -> dict[str, Any] | None:
    resp = api.api("GET", f"transit/keys/{key_id}")
    if resp.status_code == 404:
        return None
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


def s3kms_policy(api: VaultApi, prefix: str) -> str:
    """Set Vault up as docs/vault.md tells an operator (upsert off), write the least-privilege
    policy of docs/vault.md (read from the document itself) for KV prefix `prefix`, and return
    the policy's name."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "vault.md").read_text()
    hcl = text.split("```hcl\n", 1)[1].split("```", 1)[0]
    assert 'path "secret/data/s3kms/*"' in hcl and 'path "transit/encrypt/*"' in hcl
    hcl = hcl.replace("secret/data/s3kms/", f"secret/data/{prefix}/")
    hcl = hcl.replace("secret/metadata/s3kms/", f"secret/metadata/{prefix}/")
    api.call("POST", "transit/config/keys", {"disable_upsert": True})
    name = unique("s3kms-policy")
    api.write_policy(name, hcl)
    return name


def policy_token(api: VaultApi, policy: str, ttl: str, renewable: bool = True) -> str:
    """A token with only `policy`: not even Vault's `default` policy (which would also grant
    lookup-self and renew-self), so the documented policy is tested on its own."""
    body = {"policies": [policy], "ttl": ttl, "renewable": renewable, "no_default_policy": True}
    return str(api.call("POST", "auth/token/create", body)["auth"]["client_token"])


class Traffic:
    """A thread doing requests against a server until stopped; records what happened."""

    def __init__(self, server: Server, key_id: str, ciphertext: bytes) -> None:
        self.server = server
        self.key_id = key_id
        self.ciphertext = ciphertext
        self.results: list[tuple[float, str, float]] = []  # (when, outcome, seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        admin = Signed(self.server.srv.url)
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                resp = admin("GET", f"{ADMIN}/key/status?keyName={self.key_id}")
                outcome = str(resp.status_code)
                if resp.status_code != 200:
                    outcome += " " + error_of(resp)["code"]
                else:
                    try:
                        self.server.client.decrypt(self.ciphertext)
                    except BackendUnavailable:
                        outcome = "503 KMSConnectionError"
                    except Exception as exc:
                        outcome = f"crypto {type(exc).__name__}"
                self.results.append((began, outcome, time.monotonic() - began))
                time.sleep(0.05)
        finally:
            admin.close()

    def outcomes(self, since: float = 0.0) -> list[str]:
        return [o for t, o, _ in self.results if t >= since]

    def wait_for(self, outcome: str, since: float, timeout: float) -> float:
        """Wait until a request started after `since` had `outcome`; returns when it started."""
        found: float = wait_until(
            lambda: next((t for t, o, _ in self.results if t >= since and o == outcome), None),
            timeout=timeout,
            what=f"a request with outcome {outcome}",
            interval=0.05,
        )
        return found


# --------------------------------------------------------------------------- starting on Vault


def test_s3kms_server_boots_straight_onto_vault(bao: VaultApi, tmp_path: Path) -> None:
    """`s3kms server --backend vault --vault-address ...` with the token in S3KMS_VAULT_TOKEN; a
    second, stateless node configured only through S3KMS_* variables sees the same keys."""
    prefix = unique("s3kms-boot")
    extra = ["--vault-ca-cert", ca_cert()] if ca_cert() else []
    first = KmsProcess(
        tmp_path / "one",
        args=["--backend", "vault", "--vault-address", bao.addr, "--vault-kv-prefix", prefix,
              "--vault-timeout-seconds", "5", *extra],
        env={"S3KMS_VAULT_TOKEN": bao.root_token},
    )  # fmt: skip
    first.start()
    try:
        with Client(first.url, ROOT_USER, ROOT_PASSWORD) as client:
            status = client.status()
            assert (status.status, status.kms_type, status.endpoint) == (
                "connected", "vault", bao.addr
            )  # fmt: skip
            assert status.key_count == 0
            key = client.create_key(unique("boot")).key_id
            assert client.status().key_count == 1
            made = client.encrypt(key, b"made by node one", {"bucket": "b"})
        # The key material is a non-exportable aes256-gcm96 transit key; the state is in KV.
        material = transit_key(bao, key)
        assert material is not None
        assert material["type"] == "aes256-gcm96" and material["exportable"] is False
        assert kv_key_ids(bao, prefix) == {key}
    finally:
        first.stop()
    assert bao.root_token not in first.log()

    env = {"S3KMS_BACKEND": "vault", "S3KMS_VAULT_ADDRESS": bao.addr,
           "S3KMS_VAULT_TOKEN": bao.root_token, "S3KMS_VAULT_KV_PREFIX": prefix}  # fmt: skip
    if ca_cert():
        env["S3KMS_VAULT_CA_CERT"] = str(ca_cert())
    second = KmsProcess(tmp_path / "two", env=env)
    second.start()
    try:
        with Client(second.url, ROOT_USER, ROOT_PASSWORD) as client:
            assert [k.key_id for k in client.list_keys()] == [key]
            assert client.key_status(key).status == "enabled"
            assert client.decrypt(made, {"bucket": "b"}) == b"made by node one"
    finally:
        second.stop()


# --------------------------------------------------------------------------- configure


def test_configure_with_the_documents_body(
    bao: VaultApi, servers: list[Server], tmp_path: Path
) -> None:
    """Exactly the document's fields (default KV prefix `s3kms`); keyCount comes from KV."""
    server = start(servers, tmp_path / "data")
    body = {
        "kms_type": "vault",
        "vault_address": bao.addr,
        "vault_token": bao.root_token,
        "vault_mount_path": "transit",
    }
    if ca_cert():
        body["vault_ca_cert"] = str(ca_cert())
    resp = server.configure(body)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"status": "success", "message": "KMS configured successfully"}
    status = server.admin.status()
    assert status["kmsType"] == "vault" and status["endpoint"] == bao.addr
    assert status["status"] == "connected"
    assert status["keyCount"] == len(kv_key_ids(bao, "s3kms"))
    key = unique("doc")
    server.admin.ok("POST", f"{ADMIN}/key/create?keyName={key}")
    assert key in kv_key_ids(bao, "s3kms")
    listed = server.admin.ok("GET", f"{ADMIN}/key/list?pattern={key[:-3]}*")["keys"]
    assert [k["keyId"] for k in listed] == [key]
    assert server.admin.status()["keyCount"] == len(kv_key_ids(bao, "s3kms"))
    # Tidy up (this key only: the default prefix may hold someone else's keys on a real Vault).
    server.srv.run(server.store().delete_key(key))
    assert key not in kv_key_ids(bao, "s3kms") and transit_key(bao, key) is None


@pytest.mark.parametrize("failure", ["unreachable", "bad-token", "missing-mount", "not-transit"])
def test_failed_configure_keeps_the_previous_backend(
    bao: VaultApi, servers: list[Server], tmp_path: Path, failure: str
) -> None:
    server = start(servers, tmp_path / "data")
    assert server.configure({"kms_type": "local"}).status_code == 200  # persisted
    server.admin.ok("POST", f"{ADMIN}/key/create?keyName=local-one")
    bad_token = "s.bad-" + uuid.uuid4().hex
    body, status, code, fragment = {
        "unreachable": (
            vault_body(bao, "x", vault_address=f"http://127.0.0.1:{free_port()}"),
            503, "KMSConnectionError", "cannot connect",
        ),
        "bad-token": (
            vault_body(bao, "x", vault_token=bad_token), 400, "KMSInvalidRequest",
            "Vault rejected the token: permission denied",
        ),
        "missing-mount": (
            vault_body(bao, "x", vault_mount_path="no-such-transit"), 400, "KMSInvalidRequest",
            "transit engine not mounted at 'no-such-transit'",
        ),
        "not-transit": (
            vault_body(bao, "x", vault_mount_path="secret"), 400, "KMSInvalidRequest",
            "is a kv engine, not a transit engine",
        ),
    }[failure]  # fmt: skip
    began = time.monotonic()
    resp = server.configure(body)
    assert time.monotonic() - began < 3.0
    assert resp.status_code == status, resp.text
    err = error_of(resp)
    assert err["code"] == code
    assert fragment in err["message"]
    assert bad_token not in resp.text
    # The previous configuration stays, in memory and on disk, and keeps working.
    assert server.admin.status()["kmsType"] == "local"
    assert server.admin.ok("GET", f"{ADMIN}/key/status?keyName=local-one")["status"] == "enabled"
    persisted = json.loads((tmp_path / "data" / "kms-config.json").read_text())
    assert persisted["kms_type"] == "local"


# --------------------------------------------------------------------------- no secrets in addresses

PASSWORD_IN_URL = "s3cr3t-pw"


def test_configure_refuses_a_vault_address_with_credentials(bao: VaultApi, tmp_path: Path) -> None:
    """A `user:password@` in vault_address (any of the list, with or without a scheme) is refused
    with 400 KMSInvalidRequest, and the password is in neither the answer, the server's log, the
    audit log nor the persisted configuration."""
    host = bao.addr.split("://", 1)[1]
    server = KmsProcess(tmp_path / "data")
    server.start()
    admin = Signed(server.url)
    try:
        for address in (
            f"http://user:{PASSWORD_IN_URL}@{host}",
            f"{bao.addr},https://user:{PASSWORD_IN_URL}@{host}",
            f"user:{PASSWORD_IN_URL}@{host}",  # no scheme
            f"http://user:{PASSWORD_IN_URL}/,x@{host}",  # "/" and "," would cut the address
        ):
            resp = admin("POST", f"{ADMIN}/configure", vault_body(bao, "x", vault_address=address))
            assert resp.status_code == 400, resp.text
            assert error_of(resp)["code"] == "KMSInvalidRequest"
            assert error_of(resp)["message"] == (
                "vault_address must not contain credentials (user:password@); "
                "use vault_token or AppRole"
            )
            assert PASSWORD_IN_URL not in resp.text
        assert admin.status()["kmsType"] == "local"  # nothing changed
    finally:
        admin.close()
        server.stop()
    assert PASSWORD_IN_URL not in server.log()
    audit = sorted((tmp_path / "data" / "audit").glob("audit.log*"))
    assert audit and any("KMSConfigure" in p.read_text() for p in audit)
    assert not any(PASSWORD_IN_URL in p.read_text() for p in audit)
    assert not (tmp_path / "data" / "kms-config.json").exists()


@pytest.mark.parametrize("source", ["flag", "environment", "config file", "persisted"])
def test_server_refuses_to_start_with_credentials_in_the_vault_address(
    tmp_path: Path, source: str
) -> None:
    """`s3kms server` exits with a clear message that does not hold the password, whether the
    address comes from --vault-address, S3KMS_VAULT_ADDRESS, the TOML file, or a kms-config.json
    persisted before addresses were checked (VaultKeyStore.connect refuses it too)."""
    address = f"http://u:{PASSWORD_IN_URL}@127.0.0.1:{free_port()}"
    data = tmp_path / "data"
    args: list[str] = []
    env = {"S3KMS_VAULT_TOKEN": "a-token"}
    if source == "flag":
        args = ["--backend", "vault", "--vault-address", address]
    elif source == "environment":
        env |= {"S3KMS_BACKEND": "vault", "S3KMS_VAULT_ADDRESS": address}
    elif source == "config file":
        toml = tmp_path / "s3kms.toml"
        toml.write_text(f'backend = "vault"\nvault_address = "{address}"\n')
        args = ["--config", str(toml)]
    else:
        data.mkdir(mode=0o700)
        stored = {"kms_type": "vault", "default_key_id": None,
                  "vault": {"addresses": [address], "token": "a-token"}}  # fmt: skip
        (data / "kms-config.json").write_text(json.dumps(stored))
    server = KmsProcess(data, args=args, env=env)
    server.start(wait=False)
    assert server.wait_exit() != 0
    assert "vault_address must not contain credentials (user:password@)" in server.log()
    assert PASSWORD_IN_URL not in server.log()


# --------------------------------------------------------------------------- the metadata cache window

CACHE_OUT_OF_RANGE = "vault_metadata_cache_seconds must be a number in [0, 60]"


def test_the_metadata_cache_window_is_a_setting(tmp_path: Path) -> None:
    """`vault_metadata_cache_seconds` (default 1, 0 = no cache, at most 60) from a flag, an
    S3KMS_* variable, the TOML file, the configure body or a persisted kms-config.json; settings
    built in code are checked by validate() before the keystore connects."""
    address = "http://127.0.0.1:8200"
    flags = {"backend": "vault", "vault_address": address, "vault_token": "t"}

    def window(flags: dict[str, Any], env: dict[str, str] | None = None) -> float:
        vault = resolve_settings(flags, env or {}).vault
        assert vault is not None
        return vault.metadata_cache_seconds

    env = {"S3KMS_VAULT_METADATA_CACHE_SECONDS": "2.5"}
    toml = tmp_path / "s3kms.toml"
    toml.write_text("vault_metadata_cache_seconds = 0\n")
    assert window(flags) == 1.0
    assert window({**flags, "vault_metadata_cache_seconds": 0.0}) == 0.0
    assert window(flags, env) == 2.5
    assert window({**flags, "config": toml}) == 0.0
    assert window({**flags, "config": toml}, env) == 2.5  # the environment wins over the file
    assert window({**flags, "vault_metadata_cache_seconds": 60.0}, env) == 60.0  # the flag wins
    for bad in (-0.5, 60.5, float("nan"), float("inf")):
        with pytest.raises(InvalidRequest, match=re.escape(CACHE_OUT_OF_RANGE)):
            window({**flags, "vault_metadata_cache_seconds": bad})

    body = {"kms_type": "vault", "vault_address": address, "vault_token": "t"}
    for value, expected in ((None, 1.0), (0, 0.0), (0.25, 0.25), (60, 60.0)):
        extra = {} if value is None else {"vault_metadata_cache_seconds": value}
        vault = parse_configure_body({**body, **extra}).vault
        assert vault is not None and vault.metadata_cache_seconds == expected
        assert isinstance(vault.metadata_cache_seconds, float)
    for bad_value in (-1, 61, "1", True, None, [1]):
        with pytest.raises(InvalidRequest) as refused:
            parse_configure_body({**body, "vault_metadata_cache_seconds": bad_value})
        assert refused.value.message == CACHE_OUT_OF_RANGE

    strict = VaultSettings(addresses=(address,), token="t", metadata_cache_seconds=0.0)
    strict.validate()
    assert "metadata_cache_seconds=0.0" in repr(strict)
    for bad in (-1.0, 61.0, float("nan")):
        with pytest.raises(InvalidRequest, match=re.escape(CACHE_OUT_OF_RANGE)):
            VaultSettings(addresses=(address,), token="t", metadata_cache_seconds=bad).validate()
    # kms-config.json keeps it; one written before the setting existed gets the default.
    config = KMSConfig("vault", None, strict)
    assert KMSConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    older = config.to_json()
    del older["vault"]["metadata_cache_seconds"]
    persisted = KMSConfig.from_json(older).vault
    assert persisted is not None and persisted.metadata_cache_seconds == 1.0


@pytest.mark.parametrize("source", ["flag", "persisted"])
def test_server_refuses_to_start_with_a_metadata_cache_window_out_of_range(
    tmp_path: Path, source: str
) -> None:
    """`s3kms server` exits with the setting's name, before any connection to Vault: from the
    flag (a usage error), or from a kms-config.json (VaultSettings.validate)."""
    data = tmp_path / "data"
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens: no connection is tried
    args: list[str] = []
    if source == "flag":
        args = ["--backend", "vault", "--vault-address", address,
                "--vault-metadata-cache-seconds", "61"]  # fmt: skip
    else:
        data.mkdir(mode=0o700)
        stored = {"kms_type": "vault", "default_key_id": None,
                  "vault": {"addresses": [address], "token": "a-token",
                            "metadata_cache_seconds": -1}}  # fmt: skip
        (data / "kms-config.json").write_text(json.dumps(stored))
    server = KmsProcess(data, args=args, env={"S3KMS_VAULT_TOKEN": "a-token"})
    server.start(wait=False)
    assert server.wait_exit() != 0
    assert CACHE_OUT_OF_RANGE in server.log()
    assert "cannot connect" not in server.log()


def test_configure_sets_the_metadata_cache_window(
    bao: VaultApi, servers: list[Server], tmp_path: Path
) -> None:
    """The configure body's `vault_metadata_cache_seconds` is used and persisted; a value out of
    range is refused and changes nothing."""
    server = start(servers, tmp_path / "data")
    kv = unique("s3kms-window-conf")
    resp = server.configure(vault_body(bao, kv, vault_metadata_cache_seconds=61))
    assert resp.status_code == 400 and error_of(resp)["message"] == CACHE_OUT_OF_RANGE
    assert server.admin.status()["kmsType"] == "local"
    resp = server.configure(vault_body(bao, kv, vault_metadata_cache_seconds=0))
    assert resp.status_code == 200, resp.text
    assert server.store().settings.metadata_cache_seconds == 0.0
    persisted = json.loads((tmp_path / "data" / "kms-config.json").read_text())
    assert persisted["vault"]["metadata_cache_seconds"] == 0.0


# --------------------------------------------------------------------------- the admin API


@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_admin_route_on_vault(
    bao: VaultApi, servers: list[Server], tmp_path: Path, prefix: str
) -> None:
    kv = unique("s3kms-routes")
    server = start(servers, tmp_path / "data")
    assert server.configure(vault_body(bao, kv)).status_code == 200
    call = server.admin
    name = unique("route")

    created = call.ok("POST", f"{prefix}/key/create?keyName={name}")
    assert created["keyId"] == name and created["status"] == "created"
    generated = call.ok("POST", f"{prefix}/key/create")["keyId"]
    assert len(generated) == 36 and transit_key(bao, generated) is not None
    duplicate = call("POST", f"{prefix}/key/create?keyName={name}")
    assert duplicate.status_code == 409
    assert error_of(duplicate)["code"] == "KMSKeyAlreadyExists"
    assert kv_key_ids(bao, kv) == {name, generated}

    status = call.ok("GET", f"{prefix}/key/status?keyName={name}")
    assert status == {"keyId": name, "status": "enabled", "createdAt": created["createdAt"],
                      "algorithm": "AES256", "currentVersion": 1}  # fmt: skip
    listed = call.ok("GET", f"{prefix}/key/list?pattern={quote(name[:-4] + '*')}")["keys"]
    assert listed == [{"keyId": name, "status": "enabled", "createdAt": created["createdAt"]}]
    everything = [k["keyId"] for k in call.ok("GET", f"{prefix}/key/list")["keys"]]
    assert everything == sorted([name, generated])
    missing = call("GET", f"{prefix}/key/status?keyName=no-such-{name}")
    assert missing.status_code == 404 and error_of(missing)["code"] == "KMSKeyNotFound"

    ciphertext = server.client.encrypt(name, b"payload", {"bucket": "b"})
    assert call.ok("POST", f"{prefix}/key/disable?keyName={name}")["status"] == "disabled"
    with pytest.raises(KeyDisabled):
        server.client.encrypt(name, b"x")
    with pytest.raises(KeyDisabled):
        server.client.decrypt(ciphertext, {"bucket": "b"})
    assert call.ok("POST", f"{prefix}/key/enable?keyName={name}")["status"] == "enabled"
    assert server.client.decrypt(ciphertext, {"bucket": "b"}) == b"payload"

    rotated = call.ok("POST", f"{prefix}/key/rotate?keyName={name}")
    assert rotated["currentVersion"] == 2
    material = transit_key(bao, name)
    assert material is not None and material["latest_version"] == 2
    assert blob.decode(server.client.encrypt(name, b"new")).key_version == 2
    assert server.client.decrypt(ciphertext, {"bucket": "b"}) == b"payload"  # version 1 still

    deleting = call.ok("POST", f"{prefix}/key/delete?keyName={name}&pendingWindowDays=7")
    assert deleting["status"] == "pending_deletion" and "deletionDate" in deleting
    assert call.ok("GET", f"{prefix}/key/status?keyName={name}")["deletionDate"]
    with pytest.raises(KeyInvalidState):
        server.client.generate_data_key(name)
    cancelled = call.ok("POST", f"{prefix}/key/cancel-deletion?keyName={name}")
    assert cancelled["status"] == "disabled"

    kms = call.ok("GET", f"{prefix}/status")
    assert kms == {"status": "connected", "kmsType": "vault", "endpoint": bao.addr,
                   "keyCount": 2, "defaultKeyId": None}  # fmt: skip
    assert call.ok("POST", f"{prefix}/status") == kms

    # A deletion that falls due destroys the transit key and the metadata.
    call.ok("POST", f"{prefix}/key/delete?keyName={generated}&pendingWindowDays=7")
    server.srv.clock.offset += 8 * 86400
    assert server.srv.run(server.srv.app.runtime.service.run_due_work()) == (1, 0)
    assert call(
        "GET", f"{prefix}/key/status?keyName={generated}"
    ).status_code == 404  # fmt: skip
    assert transit_key(bao, generated) is None and kv_key_ids(bao, kv) == {name}
    assert call.ok("GET", f"{prefix}/status")["keyCount"] == 1


def test_two_s3kms_nodes_share_one_openbao(
    bao: VaultApi, servers: list[Server], tmp_path: Path
) -> None:
    kv = unique("s3kms-two")
    # The strict mode: no metadata cache, so every change holds on the other node's next request
    # (with the default window: within it, tests/test_vault_consistency.py).
    settings = vault_settings(bao, kv, metadata_cache_seconds=0)
    a = start(servers, tmp_path / "a", backend="vault", vault=settings)
    b = start(servers, tmp_path / "b", backend="vault", vault=settings)
    key = a.client.create_key(unique("shared")).key_id
    assert [k.key_id for k in b.client.list_keys()] == [key]
    made = a.client.encrypt(key, b"from a", {"ctx": "1"})
    assert b.client.decrypt(made, {"ctx": "1"}) == b"from a"
    dk = b.client.generate_data_key(key)
    assert a.client.decrypt(dk.ciphertext) == dk.plaintext

    # Disabled on A: refused by B on its very next request (no cache), every operation.
    a.client.disable_key(key)
    assert b.client.key_status(key).status == "disabled"
    with pytest.raises(KeyDisabled):
        b.client.encrypt(key, b"x")
    with pytest.raises(KeyDisabled):
        b.client.generate_data_key(key)
    with pytest.raises(KeyDisabled):
        b.client.decrypt(made, {"ctx": "1"})
    b.client.enable_key(key)
    assert a.client.decrypt(made, {"ctx": "1"}) == b"from a"

    # Rotated on B: A's next encrypt uses the new version.
    b.client.rotate_key(key)
    assert blob.decode(a.client.encrypt(key, b"x")).key_version == 2
    # Scheduled for deletion on A: B refuses crypto, and B may cancel it.
    a.client.schedule_key_deletion(key, 7)
    with pytest.raises(KeyInvalidState):
        b.client.encrypt(key, b"x")
    assert b.client.cancel_key_deletion(key).status == "disabled"
    assert a.client.key_status(key).status == "disabled"

    # The same name created on both at once: exactly one wins.
    name = unique("race")
    codes: list[int] = []

    def create(server: Server) -> None:
        caller = Signed(server.srv.url)
        codes.append(caller("POST", f"{ADMIN}/key/create?keyName={name}").status_code)
        caller.close()

    threads = [threading.Thread(target=create, args=(s,)) for s in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200, 409, 409, 409]
    assert a.client.status().key_count == b.client.status().key_count == 2


# --------------------------------------------------------------------------- switching


def test_switching_local_vault_local_shows_each_backends_keys(
    bao: VaultApi, servers: list[Server], tmp_path: Path
) -> None:
    kv = unique("s3kms-switch")
    server = start(servers, tmp_path / "data")
    local_key = server.client.create_key(unique("local")).key_id
    local_blob = server.client.encrypt(local_key, b"local data")

    assert server.configure(vault_body(bao, kv)).status_code == 200
    assert server.client.list_keys() == []  # the local keys are not visible on Vault
    with pytest.raises(KeyNotFound):
        server.client.key_status(local_key)
    with pytest.raises(InvalidCiphertext):  # a Local ciphertext names a key Vault does not have
        server.client.decrypt(local_blob)
    vault_key = server.client.create_key(unique("vault")).key_id
    vault_blob = server.client.encrypt(vault_key, b"vault data")
    server.client.disable_key(vault_key)

    assert server.configure({"kms_type": "local"}).status_code == 200
    assert [k.key_id for k in server.client.list_keys()] == [local_key]
    assert server.client.decrypt(local_blob) == b"local data"
    with pytest.raises(InvalidCiphertext):
        server.client.decrypt(vault_blob)

    assert server.configure(vault_body(bao, kv)).status_code == 200
    assert [(k.key_id, k.status) for k in server.client.list_keys()] == [(vault_key, "disabled")]
    server.client.enable_key(vault_key)
    assert server.client.decrypt(vault_blob) == b"vault data"


def test_a_request_in_flight_finishes_on_the_old_backend(
    bao: VaultApi, servers: list[Server], tmp_path: Path
) -> None:
    kv = unique("s3kms-inflight")
    server = start(servers, tmp_path / "data", backend="vault", vault=vault_settings(bao, kv))
    key = server.client.create_key(unique("slow")).key_id
    store = server.store()
    assert isinstance(store, VaultKeyStore)
    entered, release = threading.Event(), threading.Event()
    read_key = store.get_key

    async def slow_get_key(key_id: str) -> Any:
        entered.set()
        while not release.is_set():
            await asyncio.sleep(0.01)
        return await read_key(key_id)

    store.get_key = slow_get_key
    answers: list[httpx.Response] = []
    caller = Signed(server.srv.url)
    slow = threading.Thread(
        target=lambda: answers.append(caller("GET", f"{ADMIN}/key/status?keyName={key}"))
    )
    slow.start()
    try:
        assert entered.wait(10)
        # Switching does not wait for the request in flight; new requests use the new backend.
        assert server.configure({"kms_type": "local"}).status_code == 200
        assert server.admin.status()["kmsType"] == "local"
        assert server.admin("GET", f"{ADMIN}/key/status?keyName={key}").status_code == 404
        assert not store._transport.closed  # still serving the request in flight
    finally:
        release.set()
        slow.join(30)
    caller.close()
    assert answers[0].status_code == 200 and answers[0].json()["keyId"] == key
    wait_until(lambda: store._transport.closed, timeout=5, what="the old Vault store to be closed")


def test_configure_under_load_never_fails_a_request(
    bao: VaultApi, servers: list[Server], tmp_path: Path
) -> None:
    """Requests keep being answered while the backend flips local <-> vault."""
    kv = unique("s3kms-load")
    server = start(servers, tmp_path / "data")
    both = unique("both")
    server.client.create_key(both)
    assert server.configure(vault_body(bao, kv)).status_code == 200
    server.client.create_key(both)
    codes: list[int] = []
    stop = threading.Event()

    def load() -> None:
        caller = Signed(server.srv.url)
        try:
            while not stop.is_set():
                codes.append(caller("GET", f"{ADMIN}/key/status?keyName={both}").status_code)
                codes.append(
                    caller("POST", f"{ADMIN}/key/create?keyName={unique('l')}").status_code
                )
                try:
                    server.client.generate_data_key(both)
                    codes.append(200)
                except Exception as exc:
                    codes.append(getattr(exc, "status", 999))
                codes.append(caller("GET", f"{ADMIN}/status").status_code)
        finally:
            caller.close()

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        for i in range(8):
            body = {"kms_type": "local"} if i % 2 == 0 else vault_body(bao, kv)
            assert server.configure(body).status_code == 200
            time.sleep(0.1)
    finally:
        stop.set()
        for w in workers:
            w.join(30)
    assert len(codes) > 50
    assert set(codes) == {200}


# --------------------------------------------------------------------------- OpenBao outages


def test_sealed_openbao_mid_traffic_then_unsealed(
    bao_dev_private: BaoDevServer, servers: list[Server], tmp_path: Path
) -> None:
    vault = bao_dev_private
    settings = vault_settings(vault, unique("s3kms-seal"), timeout_seconds=2.0)
    server = start(servers, tmp_path / "data", backend="vault", vault=settings)
    key = server.client.create_key(unique("seal")).key_id
    ciphertext = server.client.encrypt(key, b"before the seal")
    with Traffic(server, key, ciphertext) as traffic:
        time.sleep(0.3)
        vault.seal()  # returns once OpenBao itself reports sealed
        sealed_at = time.monotonic()
        traffic.wait_for("503 KMSConnectionError", sealed_at, timeout=5)
        status = server.admin.status()
        assert status["status"] == "disconnected" and status["kmsType"] == "vault"
        # A new configuration cannot be made on a sealed Vault; the current one stays.
        resp = server.configure(vault_body(vault, "other"))
        assert resp.status_code == 503 and "sealed" in error_of(resp)["message"]
        time.sleep(1.0)
        unsealed_at = time.monotonic()
        vault.unseal()
        # The node recovers by itself: no restart, no configure.
        traffic.wait_for("200", unsealed_at, timeout=10)
        time.sleep(0.5)
    # Every request that ran entirely while OpenBao was sealed failed with 503 (one that began just
    # before the unseal may legitimately finish after it, and succeed).
    during = [o for t, o, s in traffic.results if sealed_at <= t and t + s < unsealed_at]
    assert during and set(during) == {"503 KMSConnectionError"}
    # Sealed answers come fast, the first one too: no waiting out the retry budget (2 x 2 s) on a
    # Vault that cannot recover by itself.
    assert max(s for _, o, s in traffic.results if o.startswith("503")) < 1.0
    assert set(traffic.outcomes()) <= {"200", "503 KMSConnectionError"}
    assert traffic.outcomes()[-3:] == ["200"] * 3
    assert server.admin.status()["status"] == "connected"
    assert server.client.decrypt(ciphertext) == b"before the seal"


@pytest.fixture
def bao_persistent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoCluster]:
    """One OpenBao node with raft storage: unlike a dev server it keeps its data over a kill."""
    if external_configured():
        pytest.skip(f"${ENV_VAULT_ADDR} points the tests at an external Vault, which the harness "
                    "cannot kill or restart")  # fmt: skip
    node = BaoCluster(tmp_path_factory.mktemp("bao-raft1"), size=1)
    try:
        node.start()
        yield node
    finally:
        node.close()


def test_openbao_killed_and_restarted_mid_traffic(
    bao_persistent: BaoCluster, servers: list[Server], tmp_path: Path
) -> None:
    """kill -9 of OpenBao while keys are being created: 503s while it is down, recovery by
    itself, every acknowledged create exists afterwards, and a create that failed half-way is
    completed by a retry."""
    vault = bao_persistent
    node = vault.nodes[0]
    kv = unique("s3kms-kill")
    settings = VaultSettings(addresses=(node.addr,), token=vault.root_token, kv_prefix=kv,
                             timeout_seconds=1.0)  # fmt: skip
    server = start(servers, tmp_path / "data", backend="vault", vault=settings)
    acknowledged: dict[str, bytes] = {}  # key -> ciphertext of b"payload"
    failed: list[str] = []
    unexpected: list[str] = []
    timeline: list[tuple[float, bool, float]] = []  # (when, ok, seconds)
    stop = threading.Event()

    def creator() -> None:
        with Client(server.srv.url, ROOT_USER, ROOT_PASSWORD, timeout=30) as client:
            i = 0
            while not stop.is_set():
                i += 1
                name = f"kill-{kv[-10:]}-{i:04d}"
                began = time.monotonic()
                try:
                    client.create_key(name)
                except BackendUnavailable:
                    failed.append(name)
                    timeline.append((began, False, time.monotonic() - began))
                    continue
                except Exception as exc:
                    unexpected.append(f"create {name}: {type(exc).__name__}: {exc}")
                    continue
                timeline.append((began, True, time.monotonic() - began))
                try:
                    acknowledged[name] = client.encrypt(name, b"payload")
                except BackendUnavailable:
                    acknowledged[name] = b""
                except Exception as exc:
                    unexpected.append(f"encrypt {name}: {type(exc).__name__}: {exc}")
                time.sleep(0.01)

    worker = threading.Thread(target=creator)
    worker.start()
    try:
        time.sleep(0.5)
        killed_at = time.monotonic()
        vault.kill(node)
        wait_until(lambda: sum(1 for t, ok, _ in timeline if t > killed_at and not ok) >= 5,
                   timeout=15, what="failed requests while OpenBao is down")  # fmt: skip
        status = server.admin.status()
        assert status["status"] == "disconnected" and status["keyCount"] is None
        restarted_at = time.monotonic()
        vault.restart_node(node)
        wait_until(lambda: any(t > restarted_at and ok for t, ok, _ in timeline),
                   timeout=15, what="a create to succeed after the restart")  # fmt: skip
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join(60)
    assert not unexpected, unexpected
    down = [s for t, ok, s in timeline if killed_at < t < restarted_at and not ok]
    assert len(down) >= 5
    # While down, only the first request retries (for at most 1 s); the rest fail fast.
    assert sorted(down)[-2] < 0.5, down
    assert server.admin.status()["status"] == "connected"

    # Nothing acknowledged was lost, and every acknowledged ciphertext still decrypts.
    listed = {k.key_id for k in server.client.list_keys(f"kill-{kv[-10:]}-*")}
    assert set(acknowledged) <= listed
    for ciphertext in acknowledged.values():
        if ciphertext:
            assert server.client.decrypt(ciphertext) == b"payload"
    # A failed create may have made the transit key and not the metadata (invisible), or both
    # (its answer was lost); a retry completes it either way, and the key works.
    for name in failed:
        resp = server.admin("POST", f"{ADMIN}/key/create?keyName={name}")
        assert resp.status_code in (200, 409), resp.text
        assert server.client.decrypt(server.client.encrypt(name, b"retried")) == b"retried"
    # No transit key of ours is left without its metadata.
    transit = vault.api("LIST", "transit/keys").json()["data"]["keys"]
    ours = {k for k in transit if k.startswith(f"kill-{kv[-10:]}-")}
    assert ours == kv_key_ids(vault, kv) == set(acknowledged) | set(failed)


# The requirement of an outage: every request answers 503 within this, the first one too.
OUTAGE_ANSWER_BOUND = 5.0


def boto_kms(url: str) -> Any:
    """A boto3 KMS client that sends each request once (botocore would retry a 503)."""
    return boto3.client(
        "kms", endpoint_url=url, region_name="us-east-1", aws_access_key_id=ROOT_USER,
        aws_secret_access_key=ROOT_PASSWORD, config=BotoConfig(retries={"total_max_attempts": 1}),
    )  # fmt: skip


def timed(call: Callable[[], T]) -> tuple[float, T]:
    began = time.monotonic()
    result = call()
    return time.monotonic() - began, result


def aws_data_key(kms: Any, key: str) -> tuple[int, str]:
    """GenerateDataKey: (HTTP status, AWS error code or "")."""
    try:
        kms.generate_data_key(KeyId=key, KeySpec="AES_256")
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]
    return 200, ""


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A loopback address that never completes a TCP connection: its listen queue is full, so
    the kernel drops new SYNs, as a firewalled or powered-off host does (a closed port, by
    contrast, refuses at once). Nothing answers on it; it is not a fake Vault."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except TimeoutError:
            pass
        else:
            pytest.skip("this kernel does not drop connections to a full listen queue")
        yield f"http://127.0.0.1:{port}"
    finally:
        for sock in (*fillers, listener):
            sock.close()


@pytest.mark.parametrize("listed", ["one address", "and a closed port", "and a blackhole"])
def test_openbao_killed_answers_503_within_seconds_then_recovers(
    bao_persistent: BaoCluster,
    servers: list[Server],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    listed: str,
) -> None:
    """SIGKILL of OpenBao with the default timeouts: key/status (admin API, 503
    KMSConnectionError) and GenerateDataKey (AWS API, 503 DependencyTimeoutException) answer
    within seconds, also the first requests of the outage, and also when the address list holds a
    port that refuses or an address that never answers as well. After a restart on the same
    address and storage, requests succeed again with no restart or configure of s3kms."""
    vault = bao_persistent
    node = vault.nodes[0]
    extra = {
        "one address": (),
        "and a closed port": (f"http://127.0.0.1:{free_port()}",),
        "and a blackhole": (request.getfixturevalue("blackhole"),),
    }[listed]
    # Defaults for everything else: vault_timeout_seconds 10, the connect timeout.
    settings = VaultSettings(
        addresses=(*extra, node.addr), token=vault.root_token, kv_prefix=unique("s3kms-down")
    )
    server = start(servers, tmp_path / "data", backend="vault", vault=settings)
    key = server.client.create_key(unique("down")).key_id
    kms = boto_kms(server.srv.url)
    made = kms.generate_data_key(KeyId=key, KeySpec="AES_256")
    status_path = f"{ADMIN}/key/status?keyName={key}"

    vault.kill(node)
    # The first requests of the outage, at once (each used to wait out 2 x vault_timeout_seconds
    # of retries), then one more of each while the outage is known.
    with ThreadPoolExecutor(2) as pool:
        first_status = pool.submit(timed, lambda: server.admin("GET", status_path))
        first_data_key = pool.submit(timed, lambda: aws_data_key(kms, key))
        answers = [(first_status.result(), first_data_key.result())]
    answers.append((timed(lambda: server.admin("GET", status_path)),
                    timed(lambda: aws_data_key(kms, key))))  # fmt: skip
    for (status_took, resp), (data_key_took, data_key) in answers:
        assert resp.status_code == 503, resp.text
        assert error_of(resp)["code"] == "KMSConnectionError"
        assert node.addr in error_of(resp)["message"]
        assert data_key == (503, "DependencyTimeoutException")
        assert status_took < OUTAGE_ANSWER_BOUND, answers
        assert data_key_took < OUTAGE_ANSWER_BOUND, answers
    assert server.admin.status()["status"] == "disconnected"
    print(f"\n503 after (key/status, GenerateDataKey): first {answers[0][0][0]:.2f} s, "
          f"{answers[0][1][0]:.2f} s; next {answers[1][0][0]:.2f} s, {answers[1][1][0]:.2f} s")  # fmt: skip

    # Back on the same address with the same storage: the node recovers by itself.
    vault.restart_node(node)
    wait_until(lambda: server.admin("GET", status_path).status_code == 200, timeout=15,
               what="key/status to succeed after the restart")  # fmt: skip
    assert aws_data_key(kms, key) == (200, "")
    decrypted = kms.decrypt(CiphertextBlob=made["CiphertextBlob"])
    assert decrypted["Plaintext"] == made["Plaintext"]
    assert server.admin.status()["status"] == "connected"


# --------------------------------------------------------------------------- auth lifecycle


def test_expired_token_then_a_new_one(bao: VaultApi, servers: list[Server], tmp_path: Path) -> None:
    kv = unique("s3kms-expire")
    policy = s3kms_policy(bao, kv)
    token = policy_token(bao, policy, ttl="3s", renewable=False)
    server = start(servers, tmp_path / "data")
    began = time.monotonic()
    assert server.configure(vault_body(bao, kv, vault_token=token)).status_code == 200
    key = server.client.create_key(unique("exp")).key_id
    ciphertext = server.client.encrypt(key, b"x")
    time.sleep(max(0.0, began + 3.5 - time.monotonic()))
    # Expired: Vault says "permission denied", s3kms answers 503 and reports itself disconnected.
    resp = server.admin("GET", f"{ADMIN}/key/status?keyName={key}")
    assert resp.status_code == 503
    assert error_of(resp)["code"] == "KMSConnectionError"
    assert "permission denied" in error_of(resp)["message"]
    assert server.admin.status()["status"] == "disconnected"
    # A new token through configure: everything is back.
    fresh = policy_token(bao, policy, ttl="10m")
    assert server.configure(vault_body(bao, kv, vault_token=fresh)).status_code == 200
    assert server.client.decrypt(ciphertext) == b"x"
    assert server.admin.status()["status"] == "connected"


def test_renewable_token_is_kept_alive_by_the_server(
    bao: VaultApi, servers: list[Server], tmp_path: Path
) -> None:
    kv = unique("s3kms-renew")
    policy = s3kms_policy(bao, kv)
    token = policy_token(bao, policy, ttl="2s")
    server = start(servers, tmp_path / "data", backend="vault",
                   vault=vault_settings(bao, kv, token=token))  # fmt: skip
    key = server.client.create_key(unique("ren")).key_id
    time.sleep(3.0)  # idle for longer than the token's TTL
    assert server.client.decrypt(server.client.encrypt(key, b"alive")) == b"alive"
    assert server.store().auth_refreshes >= 2
    assert server.admin.status()["status"] == "connected"


def test_approle_login_renewed_through_the_server(
    bao: VaultApi, servers: list[Server], tmp_path: Path
) -> None:
    kv = unique("s3kms-approle")
    policy = s3kms_policy(bao, kv)
    role = unique("s3kms")
    role_id, secret_id = bao.enable_approle(role, [policy], token_ttl="2s")
    bao.call("POST", f"auth/approle/role/{role}", {"token_no_default_policy": True})
    server = start(servers, tmp_path / "data")
    body = vault_body(bao, kv, vault_app_role_id=role_id, vault_app_role_secret_id=secret_id)
    del body["vault_token"]
    assert server.configure(body).status_code == 200
    key = server.client.create_key(unique("ar")).key_id
    ciphertext = server.client.encrypt(key, b"approle")
    store = server.store()
    first_token = store._auth.token
    time.sleep(2.5)  # past the first token's lease: the server logged in again by itself
    assert server.client.decrypt(ciphertext) == b"approle"
    assert store.auth_refreshes >= 1 and store._auth.token != first_token
    # The current token revoked behind the server's back: the next request logs in again.
    bao.call("POST", "auth/token/revoke", {"token": store._auth.token})
    assert server.admin.ok("GET", f"{ADMIN}/key/status?keyName={key}")["status"] == "enabled"
    assert server.admin.status()["status"] == "connected"
    assert secret_id not in server.admin("GET", f"{ADMIN}/status").text
    # The rest of a key's life under the documented policy: rotation, and the deletion that the
    # maintenance pass carries out once the waiting period is over.
    assert server.client.rotate_key(key).status == "enabled"
    assert blob.decode(server.client.encrypt(key, b"v2")).key_version == 2
    server.client.schedule_key_deletion(key, 7)
    server.srv.run(store.delete_key(key))
    assert transit_key(bao, key) is None and kv_key_ids(bao, kv) == set()
