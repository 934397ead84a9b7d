"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# =============================================================================
# OpenBao / Vault fixtures (harness in tests/openbao.py)
#
# bao              session: one server shared by tests that do not seal, kill or
#                  restart it - a harness-owned `bao server -dev` (transit at
#                  transit/, KV v2 at secret/), or the external Vault named by
#                  S3KMS_TEST_VAULT_ADDR / S3KMS_TEST_VAULT_TOKEN when both are set.
#                  Tests must use unique key/role/policy names (the server is shared).
# bao_dev_private  function: a fresh dev server of its own, for tests that seal,
#                  kill or restart it. Skipped when an external Vault is configured.
# bao_cluster      function: a fresh three-node raft cluster. Skipped when an external
#                  Vault is configured. Tests using it should be marked `slow`.
# =============================================================================
from openbao import (
    ENV_VAULT_ADDR,
    BaoCluster,
    BaoDevServer,
    VaultApi,
    external_configured,
    external_server,
    start_cluster,
    start_dev_server,
)

_EXTERNAL_SKIP = (
    f"${ENV_VAULT_ADDR} points the tests at an external Vault, which the harness cannot "
    "seal, kill or restart"
)


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultApi]:
    external = external_server()
    if external is not None:
        try:
            external.check()
            external.enable_transit("transit")
            external.enable_kv_v2("secret")
            yield external
        finally:
            external.close()
        return
    server = start_dev_server(tmp_path_factory.mktemp("bao-shared"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def bao_dev_private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoDevServer]:
    if external_configured():
        pytest.skip(_EXTERNAL_SKIP)
    server = start_dev_server(tmp_path_factory.mktemp("bao-dev"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def bao_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoCluster]:
    if external_configured():
        pytest.skip(_EXTERNAL_SKIP)
    cluster = start_cluster(tmp_path_factory.mktemp("bao-cluster"))
    try:
        yield cluster
    finally:
        cluster.close()


# =============================================================================
# end of OpenBao / Vault fixtures
# =============================================================================
