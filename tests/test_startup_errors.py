"""`s3kms server` start-up failures, as a user meets them: each ends the real process with one line
on stderr (what failed, where, what to do, no traceback) and the exit code of its kind
(s3kms.startup.ExitCode, docs/configuration.md#exit-codes), and leaves the data directory exactly
as it was: every name, mode, size, modification time and content, or not created at all."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from s3kms.startup import ExitCode

from kmsserver import MASTER_KEY, ROOT_PASSWORD, ROOT_USER, KmsProcess, free_port, signed_admin

ADMIN = "/rustfs/admin/v3/kms"
WRONG_KEY = base64.b64encode(hashlib.sha256(b"not the master key").digest()).decode()
ROOT = {"S3KMS_ROOT_USER": ROOT_USER, "S3KMS_ROOT_PASSWORD": ROOT_PASSWORD}
RIGHT = {**ROOT, "S3KMS_MASTER_KEY": MASTER_KEY}
WRONG = {**ROOT, "S3KMS_MASTER_KEY": WRONG_KEY}

Snapshot = dict[str, tuple[int, int, int, str | None]]


def snapshot(path: Path) -> Snapshot | None:
    """Every entry under `path` (and `path` itself): mode, size, mtime and content hash."""
    if not os.path.lexists(path):
        return None
    entries: Snapshot = {}
    for entry in [path, *sorted(path.rglob("*"))]:
        st = entry.lstat()
        digest = hashlib.sha256(entry.read_bytes()).hexdigest() if entry.is_file() else None
        entries[str(entry.relative_to(path))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return entries


def start_fails(
    data: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`s3kms server` with only the S3KMS_* variables in `env`; it must end by itself."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("S3KMS_")}
    return subprocess.run(
        [sys.executable, "-m", "s3kms", "server", "--address", "127.0.0.1:0",
         "--data-dir", str(data), *args],
        capture_output=True, text=True, timeout=15, env=clean | (env or {}), cwd=cwd,
    )  # fmt: skip


def assert_one_line(
    result: subprocess.CompletedProcess[str], code: ExitCode, *fragments: str
) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    line = lines[0]
    assert line.startswith("s3kms: ") and "; " in line, line  # what failed; what to do
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert WRONG_KEY not in line and ROOT_PASSWORD not in line
    return line


def fails_unchanged(
    data: Path, code: ExitCode, fragments: tuple[str, ...], *args: str, env: dict[str, str]
) -> str:
    before = snapshot(data)
    result = start_fails(data, *args, env=env)
    after = snapshot(data)
    line = assert_one_line(result, code, *fragments)
    assert after == before, f"the failed start changed {data}"
    return line


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory in use: a key, a user (its secret sealed under the master key), a
    persisted configuration and an audit log, from a real server stopped cleanly."""
    data = tmp_path_factory.mktemp("made") / "data"
    server = KmsProcess(data)
    server.start()
    try:
        assert signed_admin(server.url, "POST", f"{ADMIN}/key/create?keyName=k1").status_code == 200
        added = signed_admin(server.url, "POST", f"{ADMIN}/user/add?accessKey=app-user",
                             body=json.dumps({"policies": []}).encode())  # fmt: skip
        assert added.status_code == 200, added.text
        configured = signed_admin(server.url, "POST", f"{ADMIN}/configure",
                                  body=json.dumps({"kms_type": "local"}).encode())  # fmt: skip
        assert configured.status_code == 200, configured.text
    finally:
        server.stop()
    names = {p.name for p in data.iterdir()}
    assert {"keystore.db", "users.json", "kms-config.json", "audit"} <= names, names
    assert "master.key" not in names and "credentials" not in names
    return data


@pytest.fixture
def copy(made: Path, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(made, target)
    return target


# -- the master key --------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_wrong_master_key_with_a_user(copy: Path, workers: str) -> None:
    fails_unchanged(
        copy, ExitCode.MASTER_KEY,
        ("the master key from S3KMS_MASTER_KEY is not the key this keystore", "keystore.db",
         "start with the master key this data directory was made with"),
        "--workers", workers, env=WRONG,
    )  # fmt: skip


def test_a_wrong_master_key_without_users(copy: Path) -> None:
    (copy / "users.json").unlink()
    fails_unchanged(copy, ExitCode.MASTER_KEY, ("not the key this keystore",), env=WRONG)


def test_a_wrong_master_key_with_users_and_no_keystore(copy: Path) -> None:
    """The Vault backend keeps no keystore here, but the users are sealed under the key."""
    for name in ("keystore.db", "keystore.gen", "kms-config.json"):
        (copy / name).unlink()
    fails_unchanged(
        copy, ExitCode.MASTER_KEY,
        ("cannot open the users in", "users.json", "not the key they were sealed with"),
        "--backend", "none", env=WRONG,
    )  # fmt: skip


def test_a_wrong_master_key_after_a_crash(tmp_path: Path) -> None:
    """Killed before its first checkpoint, the keystore holds its check value only in the WAL:
    it is still checked, and neither the -wal nor the -shm file is touched."""
    data = tmp_path / "data"
    server = KmsProcess(data)
    server.start()
    assert signed_admin(server.url, "POST", f"{ADMIN}/key/create?keyName=k1").status_code == 200
    server.kill()
    assert (data / "keystore.db-wal").stat().st_size > 0
    fails_unchanged(data, ExitCode.MASTER_KEY, ("not the key this keystore",), env=WRONG)


def test_no_master_key_for_data_made_with_one(copy: Path) -> None:
    """No S3KMS_MASTER_KEY, no --master-key-file, no master.key: a new key is not generated over
    data sealed under another."""
    fails_unchanged(
        copy, ExitCode.MASTER_KEY,
        ("no master key", "master.key does not exist", "keystore.db was made with one",
         "S3KMS_MASTER_KEY or --master-key-file"),
        env=ROOT,
    )  # fmt: skip


MALFORMED = [
    ("garbage", "is not valid base64"),
    (base64.b64encode(b"short").decode(), "must be base64 of 32 bytes, got 5"),
    (base64.b64encode(bytes(32)).decode(), "is all zeros"),
]


@pytest.mark.parametrize(("value", "fragment"), MALFORMED)
def test_a_malformed_master_key_variable(tmp_path: Path, value: str, fragment: str) -> None:
    """On a fresh start too: the data directory is not created, no credentials generated."""
    data = tmp_path / "data"
    line = fails_unchanged(
        data, ExitCode.MASTER_KEY, ("S3KMS_MASTER_KEY", fragment, "head -c 32 /dev/urandom"),
        env={"S3KMS_MASTER_KEY": value},
    )  # fmt: skip
    assert not data.exists() and value not in line


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh", "in-use"])
def test_a_malformed_master_key_file(copy: Path, tmp_path: Path, fresh: bool) -> None:
    """No root credentials in the environment: none are generated into the data directory."""
    key_file = tmp_path / "bad.key"
    key_file.write_text("not a key\n")
    data = tmp_path / "fresh" if fresh else copy
    fails_unchanged(
        data, ExitCode.MASTER_KEY,
        (f"master key from {key_file} is not valid base64", "fix --master-key-file"),
        "--master-key-file", str(key_file), env={},
    )  # fmt: skip
    assert not (data / "credentials").exists()


def test_a_missing_master_key_file(copy: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such" / "master.key"
    fails_unchanged(
        copy, ExitCode.MASTER_KEY,
        (f"cannot read master key file {missing}: No such file or directory",
         "fix --master-key-file"),
        "--master-key-file", str(missing), env=ROOT,
    )  # fmt: skip


def test_a_malformed_master_key_in_the_data_directory(copy: Path) -> None:
    (copy / "master.key").write_bytes(b"\xff\xfe binary\n")
    fails_unchanged(
        copy, ExitCode.MASTER_KEY, (f"{copy / 'master.key'} is not valid base64",), env=ROOT
    )


# -- root credentials -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        ({"S3KMS_ROOT_USER": "admin", "S3KMS_ROOT_PASSWORD": "short"},
         ("S3KMS_ROOT_PASSWORD must be at least 8 characters", "set a longer one")),
        ({"S3KMS_ROOT_USER": "admin"},
         ("S3KMS_ROOT_USER and S3KMS_ROOT_PASSWORD must be set together", "set both")),
    ],
)  # fmt: skip
def test_unusable_root_credentials(
    copy: Path, env: dict[str, str], fragments: tuple[str, ...]
) -> None:
    line = fails_unchanged(
        copy, ExitCode.CREDENTIALS, fragments, env={**env, "S3KMS_MASTER_KEY": MASTER_KEY}
    )
    assert "short;" not in line  # the password itself is not shown


def test_a_damaged_credentials_file(copy: Path) -> None:
    (copy / "credentials").write_text('{"access_key": "S3KMSX"')
    fails_unchanged(
        copy, ExitCode.CREDENTIALS,
        (f"cannot read the root credentials {copy / 'credentials'}", "S3KMS_ROOT_USER"),
        env={"S3KMS_MASTER_KEY": MASTER_KEY},
    )  # fmt: skip


# -- the data directory ---------------------------------------------------------------------------


def test_a_data_directory_below_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    fails_unchanged(
        blocker / "data", ExitCode.DATA_DIR,
        (f"cannot write to the data directory {blocker / 'data'}: Not a directory", "--data-dir"),
        env=RIGHT,
    )  # fmt: skip
    assert blocker.read_text() == "in the way"


@pytest.mark.parametrize(
    ("name", "content", "fragments"),
    [
        ("users.json", b"{not json", ("cannot read the users", "restore the file")),
        ("kms-config.json", b'{"kms_type": ', ("cannot read the saved configuration",
                                                "fix or remove the file")),
        ("keystore.db", b"not a database" * 100, ("cannot read the keystore",
                                                   "file is not a database", "s3kms restore")),
    ],
)  # fmt: skip
def test_a_damaged_file_in_the_data_directory(
    copy: Path, name: str, content: bytes, fragments: tuple[str, ...]
) -> None:
    (copy / name).write_bytes(content)
    fails_unchanged(copy, ExitCode.DATA_DIR, (str(copy / name), *fragments), env=RIGHT)


# -- the address ----------------------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_an_address_in_use(copy: Path, taken_port: int) -> None:
    fails_unchanged(
        copy, ExitCode.ADDRESS,
        (f"cannot listen on 127.0.0.1:{taken_port} (--address): Address already in use",
         "choose another --address"),
        "--address", f"127.0.0.1:{taken_port}", env=RIGHT,
    )  # fmt: skip


def test_an_address_of_another_host(copy: Path) -> None:
    fails_unchanged(
        copy, ExitCode.ADDRESS, ("cannot listen on 192.0.2.1:", "not one of this machine's"),
        "--address", f"192.0.2.1:{free_port()}", env=RIGHT,
    )  # fmt: skip


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [("data_dir = \n", "is not valid TOML: Invalid value (at line 1, column 12)"),
     ("no_such_setting = 1\n", "unknown setting(s): no_such_setting"),
     ('workers = "many"\n', "workers must be an integer, not 'many'")],
)  # fmt: skip
def test_a_bad_config_file(copy: Path, tmp_path: Path, toml: str, fragment: str) -> None:
    config = tmp_path / "s3kms.toml"
    config.write_text(toml)
    fails_unchanged(
        copy, ExitCode.USAGE, (fragment, "s3kms server --help"), "--config", str(config), env=RIGHT
    )


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        ([], {"S3KMS_CONFIG": "/no/such/s3kms.toml"},
         "cannot read the config file /no/such/s3kms.toml: No such file or directory"),
        (["--config", "/no/such/s3kms.toml"], {}, "'/no/such/s3kms.toml' does not exist"),
        (["--address", "nonsense"], {}, "--address: address must be HOST:PORT"),
        (["--no-such-flag"], {}, "--no-such-flag"),  # click words it by version
        ([], {"S3KMS_MAX_CONNECTIONS": "0"}, "max_connections must be a positive number"),
        (["--tls-cert", "/no/such/cert.pem"], {}, "--tls-cert and --tls-key go together"),
        (["--tls-cert", "/no/such/cert.pem", "--tls-key", "/no/such/key.pem"], {},
         "cannot read the TLS file /no/such/cert.pem (--tls-cert)"),
        (["--backend", "vault"], {}, "--backend vault needs --vault-address"),
        (["--backend", "vault", "--vault-address", "http://127.0.0.1:1"], {},
         "a Vault token or an AppRole role_id and secret_id is required"),
    ],
)  # fmt: skip
def test_a_bad_setting(copy: Path, args: list[str], env: dict[str, str], fragment: str) -> None:
    fails_unchanged(copy, ExitCode.USAGE, (fragment,), *args, env={**RIGHT, **env})


def test_a_tls_certificate_that_is_not_one(copy: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    key.write_text("not a key\n")
    fails_unchanged(
        copy, ExitCode.USAGE, (f"cannot use the TLS certificate {cert} (--tls-cert)", "PEM"),
        "--tls-cert", str(cert), "--tls-key", str(key), env=RIGHT,
    )  # fmt: skip


def test_a_bad_users_file(copy: Path, tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"users": [{"access_key": "app"}]}))
    fails_unchanged(
        copy, ExitCode.USAGE,
        (f"cannot use the users file {users} (--users-file): missing field 'secret_key'",),
        "--users-file", str(users), env=RIGHT,
    )  # fmt: skip


# -- the Vault backend ----------------------------------------------------------------------------


def test_an_unreachable_vault_from_the_flags(copy: Path) -> None:
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    fails_unchanged(
        copy, ExitCode.BACKEND,
        (f"Vault is unavailable: {address}: cannot connect", "from --backend",
         "start or unseal Vault"),
        "--backend", "vault", "--vault-address", address, "--vault-connect-timeout-seconds", "0.5",
        env={**RIGHT, "S3KMS_VAULT_TOKEN": "a-token"},
    )  # fmt: skip


def test_an_unreachable_vault_from_the_saved_configuration(copy: Path) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    stored = {"kms_type": "vault", "default_key_id": None,
              "vault": {"addresses": [address], "token": "a-token",
                        "connect_timeout_seconds": 0.5}}  # fmt: skip
    (copy / "kms-config.json").write_text(json.dumps(stored))
    line = fails_unchanged(
        copy, ExitCode.BACKEND, (f"Vault is unavailable: {address}", "kms-config.json"), env=RIGHT
    )
    assert "a-token" not in line


# -- the KMIP listener ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kmip_tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A server certificate, its key and the CA that signed it (also what a --kmip-ca-cert is)."""
    directory = tmp_path_factory.mktemp("kmip-tls")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    paths = {name: directory / f"{name}.pem" for name in ("cert", "key", "ca")}
    paths["cert"].write_bytes(b"".join(b.bytes() for b in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(paths["key"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    return {name: str(path) for name, path in paths.items()}


def _kmip_cases(tls: dict[str, str]) -> list[tuple[list[str], dict[str, str], str]]:
    address = f"127.0.0.1:{free_port()}"
    files = ["--kmip-tls-cert", tls["cert"], "--kmip-tls-key", tls["key"]]
    on = ["--kmip-address", address, *files]
    return [
        # off: none of its settings may be given, in any form
        (files, {}, "--kmip-tls-cert is given but the KMIP API is off"),
        (["--kmip-ca-cert", tls["ca"]], {}, "--kmip-ca-cert is given but the KMIP API is off"),
        ([], {"S3KMS_KMIP_TLS_KEY": tls["key"], "S3KMS_KMIP_TLS_CERT": tls["cert"]},
         "--kmip-tls-cert is given but the KMIP API is off"),
        ([], {"S3KMS_KMIP_MAX_MESSAGE": "2048"},
         "--kmip-max-message is given but the KMIP API is off"),
        (["--kmip-address", address, "--kmip-tls-cert", tls["cert"]], {},
         "--kmip-tls-cert and --kmip-tls-key go together"),
        (["--kmip-address", "nowhere", *files], {}, "--kmip-address: 'nowhere' is not HOST:PORT"),
        (["--kmip-address", address], {}, "the KMIP API serves TLS only and has no certificate"),
        (["--kmip-address", address, "--kmip-tls-cert", tls["cert"], "--kmip-tls-key", tls["ca"]],
         {}, "the KMIP certificate: cannot use"),
        ([*on, "--kmip-ca-cert", "/no/such/ca.pem"], {},
         "cannot read the CA file /no/such/ca.pem (--kmip-ca-cert): No such file or directory"),
        ([*on, "--kmip-ca-cert", tls["key"]], {},
         f"the CA file {tls['key']} (--kmip-ca-cert) holds no PEM certificate"),
        # the main port's certificate serves when the KMIP one is not given
        (["--kmip-address", address, "--tls-cert", tls["cert"], "--tls-key", tls["key"],
          "--kmip-ca-cert", tls["key"]], {}, "(--kmip-ca-cert) holds no PEM certificate"),
        ([*on, "--kmip-max-message", "1023"], {},
         "--kmip-max-message 1023 is not a size from 1024 to 67108864 bytes"),
        (on, {"S3KMS_KMIP_MAX_MESSAGE": str(64 * 1024 * 1024 + 1)},
         "--kmip-max-message 67108865 is not a size from 1024 to 67108864 bytes"),
        (on, {"S3KMS_KMIP_MAX_MESSAGE": "many"}, "kmip_max_message must be an integer, not 'many'"),
    ]  # fmt: skip


def test_bad_kmip_settings(copy: Path, kmip_tls: dict[str, str]) -> None:
    for args, env, fragment in _kmip_cases(kmip_tls):
        fails_unchanged(copy, ExitCode.USAGE, (fragment,), *args, env={**RIGHT, **env})


def test_bad_kmip_settings_in_the_config_file(
    copy: Path, tmp_path: Path, kmip_tls: dict[str, str]
) -> None:
    config = tmp_path / "s3kms.toml"
    config.write_text(
        f'kmip_address = "127.0.0.1:{free_port()}"\nkmip_tls_cert = "{kmip_tls["cert"]}"\n'
        f'kmip_tls_key = "{kmip_tls["key"]}"\nkmip_ca_cert = "{kmip_tls["ca"]}"\n'
        "kmip_max_message = 512\n"
    )
    fails_unchanged(
        copy, ExitCode.USAGE, ("--kmip-max-message 512 is not a size from 1024",),
        "--config", str(config), env=RIGHT,
    )  # fmt: skip


def test_kmip_addresses_taken(copy: Path, kmip_tls: dict[str, str], taken_port: int) -> None:
    files = ["--kmip-tls-cert", kmip_tls["cert"], "--kmip-tls-key", kmip_tls["key"]]
    main, kes = free_port(), free_port()
    kes_files = ["--kes-tls-cert", kmip_tls["cert"], "--kes-tls-key", kmip_tls["key"]]
    fails_unchanged(
        copy, ExitCode.ADDRESS,
        (f"--kmip-address 127.0.0.1:{main} is the main --address", "a port of its own", "5696"),
        "--address", f"127.0.0.1:{main}", "--kmip-address", f"127.0.0.1:{main}", *files, env=RIGHT,
    )  # fmt: skip
    fails_unchanged(
        copy, ExitCode.ADDRESS, (f"--kmip-address 127.0.0.1:{kes} is the --kes-address",),
        "--kes-address", f"127.0.0.1:{kes}", *kes_files,
        "--kmip-address", f"127.0.0.1:{kes}", *files, env=RIGHT,
    )  # fmt: skip
    fails_unchanged(
        copy, ExitCode.ADDRESS,
        (f"cannot listen on 127.0.0.1:{taken_port} (--kmip-address): Address already in use",
         "choose another --kmip-address"),
        "--kmip-address", f"127.0.0.1:{taken_port}", *files, env=RIGHT,
    )  # fmt: skip


def test_dev_mode_serves_kmip_on_loopback_only(copy: Path, kmip_tls: dict[str, str]) -> None:
    address = f"0.0.0.0:{free_port()}"
    fails_unchanged(
        copy, ExitCode.NOT_LOOPBACK,
        (f"--dev listens on loopback only, not on {address} (--kmip-address)",),
        "--dev", "--kmip-address", address,
        "--kmip-tls-cert", kmip_tls["cert"], "--kmip-tls-key", kmip_tls["key"], env=RIGHT,
    )  # fmt: skip


def test_kmip_settings_that_pass_the_checks(tmp_path: Path, kmip_tls: dict[str, str]) -> None:
    """Every KMIP setting valid, from flags and variables: the server starts, its workers too
    (the settings reach them through the environment, paths as paths)."""
    server = KmsProcess(
        tmp_path / "data",
        args=[
            "--workers", "2", "--kmip-address", f"127.0.0.1:{free_port()}",
            "--kmip-tls-cert", kmip_tls["cert"], "--kmip-tls-key", kmip_tls["key"],
        ],
        env={"S3KMS_KMIP_CA_CERT": kmip_tls["ca"], "S3KMS_KMIP_MAX_MESSAGE": "65536"},
    )  # fmt: skip
    server.start()
    try:
        status = signed_admin(server.url, "GET", f"{ADMIN}/status")
        assert status.status_code == 200, status.text
    finally:
        server.stop()
