"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test an installed s3kms that is not this tree's `src/`.

    The README's `pip install '.[test]'` installs a copy (with the compiled hot path,
    hatch_build.py): once `src/` is edited, that copy is what the tests would still run."""
    import s3kms

    installed = Path(s3kms.__file__).resolve().parent
    source = Path(__file__).resolve().parents[1] / "src" / "s3kms"
    if installed == source or not source.is_dir():
        return  # an editable install runs src/ itself
    ours = {p.relative_to(source) for p in source.rglob("*.py")}
    theirs = {p.relative_to(installed) for p in installed.rglob("*.py")}
    differ = sorted(
        str(rel)
        for rel in ours | theirs
        if rel not in ours
        or rel not in theirs
        or (source / rel).read_bytes() != (installed / rel).read_bytes()
    )
    if differ:
        raise pytest.UsageError(
            f"the s3kms installed in {installed} is not src/ as it is now ({', '.join(differ[:5])}"
            f"{', ...' if len(differ) > 5 else ''} differ): reinstall it (.venv/bin/pip install "
            "'.[test]'), or install src/ editable (.venv/bin/pip install -e '.[test]')"
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
