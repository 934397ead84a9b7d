"""The `s3kms` client commands, run as a user runs them, against a real server."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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


# -- imported key material (BYOK) -----------------------------------------------------------------


def error_document(result: subprocess.CompletedProcess[bytes], code: int) -> dict[str, str]:
    """A failure's one JSON document on stderr (with --json); nothing on stdout."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == b""
    failure = json.loads(result.stderr)
    assert set(failure) == {"error"} and set(failure["error"]) == {"code", "message"}
    error: dict[str, str] = failure["error"]
    return error


def test_key_import_delete_material_and_import_again(srv: KmsThread, tmp_path: Path) -> None:
    arn = "arn:aws:kms:us-east-1:000000000000:key/cli-imported"
    created = as_json(s3kms(srv, "key", "create", "cli-imported", "--origin", "EXTERNAL", "--json"))
    assert created["status"] == "created"  # type: ignore[index]
    status = as_json(s3kms(srv, "key", "status", "cli-imported", "--json"))
    assert status["status"] == "pending_import" and status["origin"] == "EXTERNAL"  # type: ignore[index]
    refused = s3kms(srv, "datakey", "cli-imported")
    assert refused.returncode == 1
    assert " ".join(refused.stderr.decode().split()) == (
        f"error KMSInvalidState: {arn} is pending import."
    )
    material = tmp_path / "key.bin"
    material.write_bytes(os.urandom(32))
    # The defaults: RSA_4096 and RSA_AES_KEY_WRAP_SHA_256; no expiry.
    imported = as_json(
        s3kms(srv, "key", "import", "cli-imported", "--material", str(material), "--json")
    )
    assert imported["KeyId"] == arn and len(imported["KeyMaterialId"]) == 64  # type: ignore[index]
    status = as_json(s3kms(srv, "key", "status", "cli-imported", "--json"))
    assert status["status"] == "enabled" and status["origin"] == "EXTERNAL"  # type: ignore[index]
    data_key = as_json(s3kms(srv, "datakey", "cli-imported", "--json"))
    plaintext = base64.b64decode(data_key["Plaintext"])  # type: ignore[index]
    ciphertext = data_key["CiphertextBlob"].encode()  # type: ignore[index]
    # The ciphertext is the imported material's (docs/ciphertext-format.md).
    raw = base64.b64decode(ciphertext)
    head, nonce = raw[: 6 + raw[5]], raw[10 + raw[5] : 22 + raw[5]]
    assert AESGCM(material.read_bytes()).decrypt(nonce, raw[22 + raw[5] :], head + b"\0\0") == (
        plaintext
    )
    opened = s3kms(srv, "decrypt", stdin=ciphertext)
    assert opened.returncode == 0 and opened.stdout == plaintext
    deleted = as_json(s3kms(srv, "key", "delete-material", "cli-imported", "--json"))
    assert deleted == {"KeyId": arn, "KeyMaterialId": imported["KeyMaterialId"]}  # type: ignore[index]
    status = as_json(s3kms(srv, "key", "status", "cli-imported", "--json"))
    assert status["status"] == "pending_import"  # type: ignore[index]
    assert s3kms(srv, "decrypt", stdin=ciphertext).returncode == 1
    # Again, with other wrapping choices and an expiry: the old ciphertext opens again.
    valid_to = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S")
    again = as_json(
        s3kms(
            srv, "key", "import", "cli-imported", "--material", str(material),
            "--wrapping-algorithm", "RSAES_OAEP_SHA_256", "--wrapping-key-spec", "RSA_2048",
            "--valid-to", valid_to, "--json",
        )
    )  # fmt: skip
    assert again == imported
    assert s3kms(srv, "decrypt", stdin=ciphertext).stdout == plaintext
    # (--valid-to without an offset is UTC.)
    described = boto3.client(
        "kms", endpoint_url=srv.url, region_name="us-east-1", aws_access_key_id=ROOT_USER,
        aws_secret_access_key=ROOT_PASSWORD,
    ).describe_key(KeyId="cli-imported")["KeyMetadata"]  # fmt: skip
    assert described["ValidTo"] == dt.datetime.fromisoformat(valid_to + "+00:00")


def test_key_import_of_new_material_and_rotate(srv: KmsThread, tmp_path: Path) -> None:
    s3kms(srv, "key", "create", "cli-rotated-import", "--origin", "EXTERNAL")
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    first.write_bytes(os.urandom(32))
    second.write_bytes(os.urandom(32))
    one = as_json(
        s3kms(
            srv, "key", "import", "cli-rotated-import", "--material", str(first),
            "--wrapping-key-spec", "RSA_2048", "--json",
        )
    )  # fmt: skip
    old = s3kms(srv, "encrypt", "cli-rotated-import", stdin=b"old").stdout
    valid_to = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    two = as_json(
        s3kms(
            srv, "key", "import", "cli-rotated-import", "--material", str(second),
            "--wrapping-key-spec", "RSA_2048", "--new-material", "--description", "next",
            "--valid-to", valid_to, "--json",
        )
    )  # fmt: skip
    assert two["KeyMaterialId"] != one["KeyMaterialId"]  # type: ignore[index]
    rotated = as_json(s3kms(srv, "key", "rotate", "cli-rotated-import", "--json"))
    assert rotated["currentVersion"] == 2  # type: ignore[index]
    new = s3kms(srv, "encrypt", "cli-rotated-import", stdin=b"new").stdout
    assert s3kms(srv, "decrypt", stdin=old).stdout == b"old"
    assert s3kms(srv, "decrypt", stdin=new).stdout == b"new"


def test_key_import_errors(srv: KmsThread, tmp_path: Path) -> None:
    s3kms(srv, "key", "create", "cli-import-errors", "--origin", "EXTERNAL")
    short = tmp_path / "short.bin"
    short.write_bytes(os.urandom(16))
    args = ("key", "import", "cli-import-errors", "--material", str(short))
    result = s3kms(srv, *args, "--wrapping-key-spec", "RSA_2048")
    assert result.returncode == 1 and result.stdout == b""
    assert " ".join(result.stderr.decode().split()) == (
        "error KMSIncorrectKeyMaterial: symmetric key material must be 256 bits (32 bytes)"
    )
    error = error_document(s3kms(srv, *args, "--wrapping-key-spec", "RSA_2048", "--json"), 1)
    assert error == {
        "code": "KMSIncorrectKeyMaterial",
        "message": "symmetric key material must be 256 bits (32 bytes)",
    }
    # Checked before anything is sent: a date that is none, and material too long for OAEP.
    error = error_document(s3kms(srv, *args, "--valid-to", "tomorrow", "--json"), 2)
    assert error["code"] == "UsageError" and "--valid-to" in error["message"]
    long = tmp_path / "long.bin"
    long.write_bytes(os.urandom(200))
    error = error_document(
        s3kms(
            srv, "key", "import", "cli-import-errors", "--material", str(long),
            "--wrapping-algorithm", "RSAES_OAEP_SHA_256", "--wrapping-key-spec", "RSA_2048",
            "--json",
        ),
        2,
    )  # fmt: skip
    assert "wraps at most 190 bytes, not 200" in error["message"]
    status = as_json(s3kms(srv, "key", "status", "cli-import-errors", "--json"))
    assert status["status"] == "pending_import"  # type: ignore[index]
    # An AWS_KMS key takes no imported material (AWS's message).
    s3kms(srv, "key", "create", "cli-not-external")
    material = tmp_path / "key.bin"
    material.write_bytes(os.urandom(32))
    error = error_document(
        s3kms(srv, "key", "import", "cli-not-external", "--material", str(material), "--json"), 1
    )
    assert error == {
        "code": "KMSInvalidRequest",  # the CLI names errors by the admin API's codes
        "message": "arn:aws:kms:us-east-1:000000000000:key/cli-not-external origin is AWS_KMS "
        "which is not valid for this operation.",
    }
