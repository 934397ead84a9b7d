"""OpenStack Swift's `kmip_keymaster` takes its root secret from s3kms's KMIP listener.

Swift's own middleware code (Debian bookworm's python3-swift 2.30, with Debian's python3-pykmip
0.10 as its KMIP client: a PyKMIP one release older than the tests' own) runs under Debian's
/usr/bin/python3, configured as docs/kmip.md shows: the options in the `[filter:kmip_keymaster]`
section of a proxy-server.conf, with the Username/Password credential. It fetches an AES-256
object by Unique Identifier, checks it is AES-256, and keeps its bytes as the root secret; the
test compares them with the object's material fetched through the tests' PyKMIP client.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kmip.core import enums
from kmip.pie.client import ProxyKmipClient

from s3kms.auth.certificates import identity_of
from s3kms.client import Client

from debian import ensure_packages
from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsProcess, free_port

pytestmark = pytest.mark.timeout(600)

SYSTEM_PYTHON = "/usr/bin/python3"
PACKAGES = ("python3-swift", "python3-pykmip")
REQUIRE_ENV = "S3KMS_REQUIRE_SWIFT"
SECRET = "swift-kmip-secret-key"

# Swift's middleware, built from the proxy's conf as Swift's proxy builds its filters.
FETCH = textwrap.dedent(
    """
    import json, sys
    from swift.common.middleware.crypto import kmip_keymaster
    from swift.common.utils import readconf
    conf_path = sys.argv[1]
    # The filter section's options, the file and the filter's name: what Swift's loader hands
    # a filter factory (its loadwsgi context adds __name__ to PasteDeploy's local conf).
    conf = dict(readconf(conf_path, "filter:kmip_keymaster"), __name__="kmip_keymaster")
    keymaster = kmip_keymaster.filter_factory({}, **conf)(lambda env, start_response: [])
    print(json.dumps({"root_secret": keymaster.root_secret.hex()}))
    """
)


def _missing() -> list[str]:
    probe = [SYSTEM_PYTHON, "-c", "import swift.common.middleware.crypto.kmip_keymaster"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=60, check=False)
    except FileNotFoundError:
        return [SYSTEM_PYTHON]
    return [] if done.returncode == 0 else ["swift.common.middleware.crypto.kmip_keymaster"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("swift-pki")
    ca = trustme.CA()
    paths: dict[str, Any] = {"dir": directory, "ca": directory / "ca.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths["server_cert"], paths["server_key"] = directory / "kmip.crt", directory / "kmip.key"
    server.cert_chain_pems[0].write_to_path(str(paths["server_cert"]))
    server.private_key_pem.write_to_path(str(paths["server_key"]))
    client = ca.issue_cert("swift-proxy.clients.test")
    paths["client_cert"], paths["client_key"] = directory / "swift.crt", directory / "swift.key"
    client.cert_chain_pems[0].write_to_path(str(paths["client_cert"]))
    client.private_key_pem.write_to_path(str(paths["client_key"]))
    loaded = x509.load_pem_x509_certificate(paths["client_cert"].read_bytes())
    paths["identity"] = identity_of(loaded.public_bytes(serialization.Encoding.DER))
    return paths


def _proxy_conf(path: Path, pki: dict[str, Any], port: int, key_id: str, password: str) -> None:
    path.write_text(
        textwrap.dedent(
            f"""
            [DEFAULT]

            [pipeline:main]
            pipeline = catch_errors kmip_keymaster encryption proxy-server

            [filter:kmip_keymaster]
            use = egg:swift#kmip_keymaster
            key_id = {key_id}
            host = 127.0.0.1
            port = {port}
            certfile = {pki["client_cert"]}
            keyfile = {pki["client_key"]}
            ca_certs = {pki["ca"]}
            username = swift
            password = {password}
            """
        )
    )


def _fetch(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYSTEM_PYTHON, "-c", FETCH, str(conf)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_swift_kmip_keymaster_fetches_its_root_secret(pki: dict[str, Any], tmp_path: Path) -> None:
    ensure_packages("swift", PACKAGES, _missing, REQUIRE_ENV)
    port = free_port()
    server = KmsProcess(
        tmp_path / "s3kms",
        args=[
            "--kmip-address", f"127.0.0.1:{port}",
            "--kmip-tls-cert", str(pki["server_cert"]), "--kmip-tls-key", str(pki["server_key"]),
            "--kmip-ca-cert", str(pki["ca"]),
        ],
    )  # fmt: skip
    server.start()
    try:
        with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:
            kms.put_policy("swift", {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["kmip:Create", "kmip:Activate", "kmip:Get"],
                 "Resource": "*"}]})  # fmt: skip
            kms.add_user("swift", ["swift"], SECRET)
            kms.add_kmip_identity("swift", pki["identity"])
        with ProxyKmipClient(
            hostname="127.0.0.1", port=port, cert=str(pki["client_cert"]),
            key=str(pki["client_key"]), ca=str(pki["ca"]), config_file=None,
        ) as kmip:  # fmt: skip
            root_id = kmip.create(enums.CryptographicAlgorithm.AES, 256, name="swift-root")
            kmip.activate(root_id)
            material = kmip.get(root_id).value
            aes128_id = kmip.create(enums.CryptographicAlgorithm.AES, 128, name="not-a-root")

        conf = tmp_path / "proxy-server.conf"
        _proxy_conf(conf, pki, port, root_id, SECRET)
        done = _fetch(conf)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.strip().splitlines()[-1]) == {"root_secret": material.hex()}

        # Swift refuses a root secret that is not AES-256 (its check, on s3kms's answer).
        _proxy_conf(conf, pki, port, aes128_id, SECRET)
        refused = _fetch(conf)
        assert refused.returncode != 0
        assert "to be an AES-256 key, not AES-128" in refused.stderr

        # A wrong password in the header credential: s3kms refuses the request.
        _proxy_conf(conf, pki, port, root_id, "not-the-secret")
        wrong = _fetch(conf)
        assert wrong.returncode != 0
        assert "AUTHENTICATION_NOT_SUCCESSFUL" in wrong.stderr

        audit = server.data_dir / "audit" / "audit.log"
        lines = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
        gets = [
            line for line in lines
            if line.get("action") == "kmip:Get" and line.get("outcome") == "allowed"
        ]  # fmt: skip
        assert any(line.get("key") == root_id for line in gets)
    finally:
        server.stop()
