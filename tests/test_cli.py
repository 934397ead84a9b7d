"""The `s3kms` client commands, run as a user runs them, against a real server."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsThread, thread_settings
from kmsserver import run_cli as s3kms


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    server = KmsThread(thread_settings(tmp_path_factory.mktemp("cli") / "data")).start()
    yield server
    server.stop()


def as_json(result: subprocess.CompletedProcess[bytes]) -> object:
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def test_key_commands_json(srv: KmsThread) -> None:
    created = as_json(s3kms(srv, "key", "create", "cli-key", "--json"))
    assert created == {
        "keyId": "cli-key",
        "status": "created",
        "createdAt": created["createdAt"],
    }  # type: ignore[index]
    listed = as_json(s3kms(srv, "key", "list", "--pattern", "cli-*", "--json"))
    assert [k["keyId"] for k in listed["keys"]] == ["cli-key"]  # type: ignore[index]
    status = as_json(s3kms(srv, "key", "status", "cli-key", "--json"))
    assert status["algorithm"] == "AES256" and status["status"] == "enabled"  # type: ignore[index]
    disabled = as_json(s3kms(srv, "key", "disable", "cli-key", "--json"))
    assert disabled["status"] == "disabled"  # type: ignore[index]
    enabled = as_json(s3kms(srv, "key", "enable", "cli-key", "--json"))
    assert enabled["message"] == "Key enabled successfully"  # type: ignore[index]
    kms = as_json(s3kms(srv, "status", "--json"))
    assert kms["kmsType"] == "local" and kms["status"] == "connected"  # type: ignore[index]


def test_table_output_for_people(srv: KmsThread) -> None:
    s3kms(srv, "key", "create", "table-key")
    result = s3kms(srv, "key", "list")
    assert result.returncode == 0
    out = result.stdout.decode()
    assert "table-key" in out and "key id" in out


def test_failure_exits_non_zero_with_code(srv: KmsThread) -> None:
    result = s3kms(srv, "key", "status", "no-such-key")
    assert result.returncode == 1
    assert "KMSKeyNotFound" in result.stderr.decode()
    bad = s3kms(srv, "key", "status", "x", env={"S3KMS_SECRET_KEY": "wrong"})
    assert bad.returncode == 1 and "SignatureDoesNotMatch" in bad.stderr.decode()


def test_credentials_fall_back_to_data_dir(srv: KmsThread, tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "credentials").write_text(
        json.dumps({"access_key": ROOT_USER, "secret_key": ROOT_PASSWORD})
    )
    result = s3kms(
        srv,
        "status",
        "--json",
        "--data-dir",
        str(data),
        env={"S3KMS_ACCESS_KEY": "", "S3KMS_SECRET_KEY": ""},
    )
    assert as_json(result)["status"] == "connected"  # type: ignore[index]


def test_configure_command(srv: KmsThread) -> None:
    result = as_json(s3kms(srv, "configure", "--kms-type", "local", "--json"))
    assert result == {"status": "success", "message": "KMS configured successfully"}
    bad = s3kms(srv, "configure", "--kms-type", "vault")
    assert bad.returncode == 1 and "KMSInvalidRequest" in bad.stderr.decode()
