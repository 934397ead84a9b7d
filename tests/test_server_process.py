"""`s3kms server` as a user runs it: persistence, kill -9, master key checks, credentials, files."""

from __future__ import annotations

import base64
import gc
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from s3kms.client import Client
from s3kms.errors import KeyNotFound

from kmsserver import (
    MASTER_KEY,
    ROOT_PASSWORD,
    ROOT_USER,
    KmsProcess,
    KmsThread,
    free_port,
    thread_settings,
    wait_ready,
)


def client_for(server: KmsProcess) -> Client:
    return Client(server.url, ROOT_USER, ROOT_PASSWORD)


def test_restart_keeps_keys_states_and_configuration(tmp_path: Path) -> None:
    server = KmsProcess(tmp_path / "data")
    server.start()
    try:
        with client_for(server) as kms:
            kms.create_key("kept")
            kms.create_key("kept-disabled")
            kms.disable_key("kept-disabled")
            kms.configure(kms_type="local", default_key_id="kept")
            blob = kms.encrypt("kept", b"survives restarts")
        server.restart()
        with client_for(server) as kms:
            assert {k.key_id: k.status for k in kms.list_keys()} == {
                "kept": "enabled",
                "kept-disabled": "disabled",
            }
            assert kms.status().default_key_id == "kept"
            assert kms.decrypt(blob) == b"survives restarts"
    finally:
        server.stop()


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    server = KmsProcess(tmp_path / "data")
    server.start()
    with client_for(server) as kms:
        for i in range(20):
            kms.create_key(f"k{i:02d}")
        kms.disable_key("k03")
        kms.disable_key("k07")
        kms.enable_key("k07")
    server.kill()  # right after the last acknowledged response: no shutdown code runs
    server.start()
    try:
        with client_for(server) as kms:
            states = {k.key_id: k.status for k in kms.list_keys()}
        assert len(states) == 20
        assert states["k03"] == "disabled"
        assert states["k07"] == "enabled"
    finally:
        server.stop()


def test_wrong_master_key_stops_the_server(tmp_path: Path) -> None:
    server = KmsProcess(tmp_path / "data")
    server.start()
    with client_for(server) as kms:
        kms.create_key("guarded")
    server.stop()
    other = base64.b64encode(os.urandom(32)).decode()
    wrong = KmsProcess(tmp_path / "data", env={"S3KMS_MASTER_KEY": other})
    wrong.start(wait=False)
    assert wrong.wait_exit() != 0
    assert "not the key this keystore" in wrong.log()
    assert other not in wrong.log()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("not base64!!", "not valid base64"), (base64.b64encode(b"short").decode(), "32 bytes"),
     (base64.b64encode(bytes(32)).decode(), "all zeros")],
)  # fmt: skip
def test_malformed_master_key_stops_the_server(tmp_path: Path, value: str, fragment: str) -> None:
    server = KmsProcess(tmp_path / "data", env={"S3KMS_MASTER_KEY": value})
    server.start(wait=False)
    assert server.wait_exit() != 0
    assert fragment in server.log()


def _bare_server(data: Path, port: int) -> subprocess.Popen[bytes]:
    """`s3kms server` with no S3KMS_* settings at all, as on a user's first start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3KMS_")}
    return subprocess.Popen(
        [sys.executable, "-m", "s3kms", "server", "--address", f"127.0.0.1:{port}",
         "--data-dir", str(data)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_first_start_generates_master_key_and_credentials(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    proc = _bare_server(data, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        creds = json.loads((data / "credentials").read_text())
        for name in ("credentials", "master.key", "keystore.db"):
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        with Client(f"http://127.0.0.1:{port}", creds["access_key"], creds["secret_key"]) as kms:
            assert kms.status().kms_type == "local"
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0].decode()
    # Printed once, with a warning that key and data sit together.
    assert creds["secret_key"] in output
    assert "master key" in output and "same directory" in output
    assert base64.b64decode((data / "master.key").read_text()) != bytes(32)

    again = _bare_server(data, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}")
    finally:
        again.terminate()
        second = again.communicate(timeout=20)[0].decode()
    assert creds["secret_key"] not in second


def test_master_key_file_flag(tmp_path: Path) -> None:
    key_file = tmp_path / "mk"
    key_file.write_text(MASTER_KEY)
    server = KmsProcess(
        tmp_path / "data", args=["--master-key-file", str(key_file)], env={"S3KMS_MASTER_KEY": ""}
    )
    server.start()
    try:
        with client_for(server) as kms:
            kms.create_key("filekey")
            assert kms.key_status("filekey").status == "enabled"
            with pytest.raises(KeyNotFound):
                kms.key_status("nokey")
        assert not (tmp_path / "data" / "master.key").exists()
    finally:
        server.stop()


def test_start_up_objects_are_frozen_out_of_the_cyclic_collector(tmp_path: Path) -> None:
    """Once started, `s3kms server` has moved what start-up made into the collector's permanent
    generation (gc.freeze), so full collections do not scan it on the event loop; requests are
    served as before. (In-process here: a server process's collector cannot be read.)"""
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    server = KmsThread(thread_settings(tmp_path / "data"))
    server.app.freeze_after_start = True  # as `s3kms server` sets it (server.py)
    server.start()
    try:
        assert gc.get_freeze_count() > 10_000  # the libraries, the app, the keystore
        with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:
            kms.create_key("frozen")
            assert kms.key_status("frozen").key_id == "frozen"
    finally:
        server.stop()
        gc.unfreeze()
