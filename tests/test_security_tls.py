"""HTTPS through the real `s3kms server`: trustme certificates, TLS 1.2+, clients that verify.

Also the start-up warning when the server listens beyond loopback without TLS.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme

from s3kms.client import Client

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsProcess, free_port

CLEAR_TEXT_WARNING = "without TLS: credentials, data keys and plaintexts travel in clear"


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate clients trust
    cert: Path  # the server's certificate chain (127.0.0.1 and localhost)
    key: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    where = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    out = Pki(where / "ca.pem", where / "server.pem", where / "server.key")
    ca.cert_pem.write_to_path(str(out.ca))
    for i, blob in enumerate(issued.cert_chain_pems):
        blob.write_to_path(str(out.cert), append=i > 0)
    issued.private_key_pem.write_to_path(str(out.key))
    return out


def tls_args(pki: Pki) -> list[str]:
    return ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]


@pytest.fixture(scope="module")
def server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsProcess]:
    # `verify` gets an SSLContext: httpx 0.28 deprecates a CA path there (an error under pytest).
    proc = KmsProcess(
        tmp_path_factory.mktemp("tls") / "data",
        args=tls_args(pki),
        scheme="https",
        verify=pki.context(),  # type: ignore[arg-type]
    )
    proc.start()
    yield proc
    proc.stop()


def test_https_serves_the_admin_api_with_a_verifiable_certificate(
    server: KmsProcess, pki: Pki
) -> None:
    with Client(server.url, ROOT_USER, ROOT_PASSWORD, ca_cert=str(pki.ca)) as kms:
        kms.create_key("over-tls")
        assert kms.key_status("over-tls").status == "enabled"
        assert kms.status().status == "connected"
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        pki.context().wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        names = dict(tls.getpeercert() or {}).get("subjectAltName", ())
        assert ("IP Address", "127.0.0.1") in names


def test_plain_http_is_not_served(server: KmsProcess) -> None:
    plain = f"http://127.0.0.1:{server.port}"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain}/health/live", timeout=5)
    with (
        pytest.raises(httpx.TransportError),
        Client(plain, ROOT_USER, ROOT_PASSWORD, timeout=5) as kms,
    ):
        kms.list_keys()


def _tls_1_1_only(ca: Path) -> ssl.SSLContext:
    with warnings.catch_warnings():  # TLSVersion.TLSv1_1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(str(ca))
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # TLS 1.1 needs SHA-1 signatures
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


def _local_openssl_speaks_tls_1_1(pki: Pki) -> bool:
    """Control: can this OpenSSL negotiate TLS 1.1 at all (with a server that allows it)?"""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            server_ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        server_ctx.load_cert_chain(str(pki.cert), str(pki.key))
        client_ctx = _tls_1_1_only(pki.ca)
    except (ssl.SSLError, ValueError):
        return False
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            return tls.version() == "TLSv1.1"
    except (OSError, ssl.SSLError):
        return False
    finally:
        thread.join(5)
        listener.close()


def test_only_tls_1_2_and_later(server: KmsProcess, pki: Pki) -> None:
    # Capped at TLS 1.2 the handshake works: 1.2 is accepted.
    capped = pki.context()
    capped.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        capped.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() == "TLSv1.2"
    if not _local_openssl_speaks_tls_1_1(pki):
        # This OpenSSL cannot even offer 1.1: the best we can check is what gets negotiated.
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
            pki.context().wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        return
    # The same client negotiates TLS 1.1 with a server that allows it (the control above),
    # so a refusal here is s3kms refusing 1.1.
    with (
        pytest.raises(ssl.SSLError),
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        _tls_1_1_only(pki.ca).wrap_socket(raw, server_hostname="127.0.0.1"),
    ):
        pass


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("S3KMS_")}
    base |= {"S3KMS_ACCESS_KEY": ROOT_USER, "S3KMS_SECRET_KEY": ROOT_PASSWORD, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "s3kms", *args],
        capture_output=True,
        env=base | (env or {}),
        timeout=60,
    )


def test_cli_verifies_the_certificate(server: KmsProcess, pki: Pki) -> None:
    flag = cli("status", "--json", "--endpoint", server.url, "--ca-cert", str(pki.ca))
    assert flag.returncode == 0, flag.stderr.decode()
    assert json.loads(flag.stdout)["status"] == "connected"

    env = cli(
        "key", "list", "--json", env={"S3KMS_ENDPOINT": server.url, "S3KMS_CA_CERT": str(pki.ca)}
    )
    assert env.returncode == 0, env.stderr.decode()
    assert isinstance(json.loads(env.stdout)["keys"], list)

    untrusted = cli("status", "--json", "--endpoint", server.url)
    assert untrusted.returncode != 0
    err = untrusted.stderr.decode()
    assert "CERTIFICATE_VERIFY_FAILED" in err or "certificate verify failed" in err, err
    assert "Traceback" not in err, err  # a clear one-line error, not a crash
    assert untrusted.stdout == b""


def test_python_client_verifies_the_certificate(server: KmsProcess, pki: Pki) -> None:
    with Client(server.url, ROOT_USER, ROOT_PASSWORD, ca_cert=str(pki.ca)) as kms:
        assert kms.status().kms_type == "local"
    with (
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
        Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms,
    ):
        kms.status()
    # Trusting another CA is no better than trusting none.
    other = trustme.CA()
    other_pem = pki.ca.with_name("other-ca.pem")
    other.cert_pem.write_to_path(str(other_pem))
    with (
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
        Client(server.url, ROOT_USER, ROOT_PASSWORD, ca_cert=str(other_pem)) as kms,
    ):
        kms.status()


@pytest.mark.parametrize(
    ("host", "tls", "warned"),
    [("0.0.0.0", False, True), ("127.0.0.1", False, False), ("0.0.0.0", True, False)],
    ids=["any-clear", "loopback-clear", "any-tls"],
)
def test_clear_text_warning(tmp_path: Path, pki: Pki, host: str, tls: bool, warned: bool) -> None:
    port = free_port()
    proc = KmsProcess(
        tmp_path / "data",
        port=port,
        args=["--address", f"{host}:{port}", *(tls_args(pki) if tls else [])],
        scheme="https" if tls else "http",
        verify=pki.context() if tls else True,  # type: ignore[arg-type]
    )
    proc.start()  # ready: start-up messages are written
    proc.stop()
    log = proc.log()
    assert "Application startup complete" in log
    if warned:
        assert f"listening on {host} {CLEAR_TEXT_WARNING}" in log, log
        assert "WARNING" in log
    else:
        assert CLEAR_TEXT_WARNING not in log, log
