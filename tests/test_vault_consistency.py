"""The consistency window of the Vault backend's metadata cache (`vault_metadata_cache_seconds`),
against a real OpenBao.

A key's state change made through one s3kms node holds at once on that node, and on every other
node within the window; from a node's first refusal on it never serves the key again. And the
cache does spare Vault the metadata reads: counted in OpenBao's own audit log, not in s3kms.

The servers run in-process (test_vault_server's `Server` helpers) and are driven with the Python
client, as an application would. Time bounds leave `SLACK` for scheduling on a small (2-core)
machine; every wait is a bounded loop that fails with what it saw.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from s3kms.client import Client
from s3kms.errors import KeyDisabled, KeyInvalidState, KMSError
from test_vault_server import Server, servers, start, unique, vault_settings

from openbao import BaoDevServer, VaultApi, external_configured, start_dev_server

pytestmark = pytest.mark.vault
# `servers` is test_vault_server's fixture (the servers a test starts, stopped at its end): named
# here so that pytest finds it in this module.
__all__ = ["servers"]

WINDOW = 1.0  # vault_metadata_cache_seconds: the default, set explicitly
SLACK = 1.0  # for scheduling on a 2-core machine
CONTEXT = {"bucket": "b", "object": "o"}


# --------------------------------------------------------------------------- helpers


def first_refusal(call: Callable[[], object], refusal: type[KMSError], since: float) -> float:
    """Run `call` back to back until it raises `refusal`; returns the seconds from `since` (when
    the change made through the other node returned) to that answer. Fails once it is still
    served past WINDOW + SLACK."""
    served = 0
    while True:
        try:
            call()
        except refusal:
            return time.monotonic() - since
        served += 1
        elapsed = time.monotonic() - since
        assert elapsed <= WINDOW + SLACK, (
            f"still served ({served} requests) {elapsed:.2f}s after the change through the other "
            f"node; the window is {WINDOW}s (+{SLACK}s slack)"
        )


def always_refused(
    calls: dict[str, Callable[[], object]], refusal: type[KMSError], seconds: float
) -> int:
    """Run each of `calls` in turn for `seconds`: every one must raise `refusal` (never served
    again). Returns how many were refused."""
    refused = 0
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        for name, call in calls.items():
            try:
                call()
            except refusal:
                refused += 1
                continue
            pytest.fail(
                f"{name} was served again {time.monotonic() - began:.2f}s after the node's first "
                f"refusal (after {refused} refusals)"
            )
    return refused


def first_success(call: Callable[[], object], refusal: type[KMSError], since: float) -> float:
    """Run `call` back to back while it raises `refusal`; returns the seconds from `since` to
    its first success. Fails once it is still refused past WINDOW + SLACK."""
    refused = 0
    while True:
        try:
            call()
        except refusal:
            refused += 1
            elapsed = time.monotonic() - since
            assert elapsed <= WINDOW + SLACK, (
                f"still refused ({refused} requests) {elapsed:.2f}s after the change through the "
                f"other node; the window is {WINDOW}s (+{SLACK}s slack)"
            )
            continue
        return time.monotonic() - since


@pytest.fixture
def nodes(bao: VaultApi, servers: list[Server], tmp_path: Path) -> tuple[Server, Server]:
    """Two s3kms nodes, A and B, on one OpenBao and one KV prefix, with the default window."""
    settings = vault_settings(bao, unique("s3kms-window"), metadata_cache_seconds=WINDOW)
    a = start(servers, tmp_path / "a", backend="vault", vault=settings)
    b = start(servers, tmp_path / "b", backend="vault", vault=settings)
    return a, b


# --------------------------------------------------------------------------- the window


def test_a_key_disabled_on_one_node_is_refused_by_every_node_within_the_window(
    nodes: tuple[Server, Server],
) -> None:
    a, b = nodes
    key = a.client.create_key(unique("window")).key_id
    made = b.client.encrypt(key, b"made before the disable", CONTEXT)
    for _ in range(3):  # B has used the key's metadata: Enabled
        b.client.generate_data_key(key, context=CONTEXT)
        b.client.encrypt(key, b"warm", CONTEXT)

    a.client.disable_key(key)
    disabled = time.monotonic()
    with pytest.raises(KeyDisabled):  # at once on the node the change went through
        a.client.encrypt(key, b"x", CONTEXT)
    refused_after = first_refusal(
        lambda: b.client.encrypt(key, b"x", CONTEXT), KeyDisabled, disabled
    )
    # From B's first refusal on, B never serves the key again, whatever the operation.
    refused = always_refused(
        {
            "Encrypt": lambda: b.client.encrypt(key, b"x", CONTEXT),
            "GenerateDataKey": lambda: b.client.generate_data_key(key, context=CONTEXT),
            "Decrypt of a ciphertext made before the disable": lambda: b.client.decrypt(
                made, CONTEXT
            ),
        },
        KeyDisabled,
        2 * WINDOW,
    )
    assert refused >= 10, f"only {refused} requests in {2 * WINDOW}s: too few to tell"

    a.client.enable_key(key)
    enabled = time.monotonic()
    assert a.client.decrypt(made, CONTEXT) == b"made before the disable"  # at once on A
    served_after = first_success(lambda: b.client.decrypt(made, CONTEXT), KeyDisabled, enabled)
    assert b.client.generate_data_key(key, context=CONTEXT).key_id.endswith(key)
    b.client.encrypt(key, b"served again", CONTEXT)
    print(
        f"\nB refused {refused_after:.2f}s after the disable on A returned, "
        f"served {served_after:.2f}s after the enable (window {WINDOW}s)"
    )


def test_scheduled_deletion_on_one_node_is_refused_by_every_node_within_the_window(
    nodes: tuple[Server, Server],
) -> None:
    a, b = nodes
    key = a.client.create_key(unique("doomed")).key_id
    made = b.client.encrypt(key, b"made before", CONTEXT)
    b.client.generate_data_key(key, context=CONTEXT)  # B has used the key's metadata: Enabled

    a.client.schedule_key_deletion(key, 7)
    scheduled = time.monotonic()
    with pytest.raises(KeyInvalidState):  # at once on A
        a.client.encrypt(key, b"x", CONTEXT)
    first_refusal(
        lambda: b.client.generate_data_key(key, context=CONTEXT), KeyInvalidState, scheduled
    )
    always_refused(
        {
            "Encrypt": lambda: b.client.encrypt(key, b"x", CONTEXT),
            "Decrypt": lambda: b.client.decrypt(made, CONTEXT),
        },
        KeyInvalidState,
        WINDOW,
    )
    assert a.client.cancel_key_deletion(key).status == "disabled"


# --------------------------------------------------------------------------- the reads it spares

AUDIT_DEVICE = "s3kms-metadata-reads"


@pytest.fixture
def audited_bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BaoDevServer, Path]]:
    """A dev OpenBao of this test's own with a file audit device, and the device's log.

    OpenBao refuses to enable an audit device through `sys/audit` ("use declarative, config-based
    audit device management"), so the device is declared in the server's configuration; the
    session's shared `bao` is never touched, and the device ends with the server."""
    if external_configured():
        pytest.skip(
            "counts reads in the audit log of an OpenBao of its own; an external Vault is set"
        )
    workdir = tmp_path_factory.mktemp("bao-audited")
    log = workdir / "audit.log"
    hcl = f'audit "file" "{AUDIT_DEVICE}" {{ options {{ file_path = {json.dumps(str(log))} }} }}\n'
    server = start_dev_server(workdir, config=hcl)
    try:
        yield server, log
    finally:
        server.close()


def kv_reads(log: Path, path: str) -> int:
    """The reads of the Vault path `path` that the audit device recorded (one `request` entry
    each, written before Vault answers)."""
    reads = 0
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        request = entry.get("request") or {}
        if (entry.get("type"), request.get("path"), request.get("operation")) == (
            "request",
            path,
            "read",
        ):
            reads += 1
    return reads


def encrypt_for(client: Client, key: str, seconds: float) -> tuple[int, float]:
    """Encrypts under `key`, one after the other, for `seconds`: (how many, the seconds taken)."""
    done = 0
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        client.encrypt(key, b"x", CONTEXT)
        done += 1
    return done, time.monotonic() - began


def test_the_cache_spares_vault_the_metadata_reads(
    audited_bao: tuple[BaoDevServer, Path], servers: list[Server], tmp_path: Path
) -> None:
    vault, log = audited_bao
    kv = unique("s3kms-reads")
    strict = start(servers, tmp_path / "strict", backend="vault",
                   vault=vault_settings(vault, kv, metadata_cache_seconds=0))  # fmt: skip
    cached = start(servers, tmp_path / "cached", backend="vault",
                   vault=vault_settings(vault, kv, metadata_cache_seconds=WINDOW))  # fmt: skip
    strict_key = strict.client.create_key(unique("strict")).key_id
    cached_key = cached.client.create_key(unique("cached")).key_id

    def record(key: str) -> str:  # the key's metadata in KV v2 (store.py's layout)
        return f"secret/data/{kv}/keys/{key}"

    # Without the cache: one read of the key's record per request (which also shows that the
    # audit device sees these reads).
    before = kv_reads(log, record(strict_key))
    requests, elapsed = encrypt_for(strict.client, strict_key, WINDOW)
    reads = kv_reads(log, record(strict_key)) - before
    assert requests >= 10, f"only {requests} Encrypts in {elapsed:.2f}s: too few to tell"
    assert reads >= requests, f"{reads} KV reads for {requests} Encrypts without the cache"

    # With it: at most one read per window (counted from each read's start), plus the edges.
    before = kv_reads(log, record(cached_key))
    requests, elapsed = encrypt_for(cached.client, cached_key, 3 * WINDOW)
    reads = kv_reads(log, record(cached_key)) - before
    bound = math.ceil(elapsed / WINDOW) + 2
    assert requests >= 3 * bound, f"only {requests} Encrypts in {elapsed:.2f}s: too few to tell"
    assert reads <= bound, (
        f"{reads} KV reads of the key's record for {requests} Encrypts in {elapsed:.2f}s; with a "
        f"{WINDOW}s window at most {bound}"
    )
    print(f"\n{requests} Encrypts in {elapsed:.2f}s read the key's record {reads} times")
