"""`--json` on the commands that work on local files only, run as an operator runs them:
`s3kms audit verify`, `s3kms backup`, `s3kms restore` (and `metrics token`'s failure). Each prints
one JSON document on stdout and nothing else; a failure is one `{"error": {"code", "message"}}`
on stderr with the exit code it has without `--json`; without `--json` the output is unchanged.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from kmsserver import MASTER_KEY, ROOT_PASSWORD, ROOT_USER, KmsThread, thread_settings
from kmsserver import run_cli as s3kms

PASSPHRASE = "a passphrase long enough for a backup"
OTHER_MASTER_KEY = base64.b64encode(bytes(range(40, 72))).decode()
KEYS = ("json-one", "json-two")


def offline(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    """`s3kms ARGS` with no server, no terminal and no S3KMS_* but the passphrase and `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("S3KMS_")}
    base |= {"S3KMS_BACKUP_PASSPHRASE": PASSPHRASE, "S3KMS_MASTER_KEY": MASTER_KEY}
    return subprocess.run(
        [sys.executable, "-m", "s3kms", *args],
        capture_output=True, env=base | env, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def document(result: subprocess.CompletedProcess[bytes], code: int = 0) -> Any:
    """The one JSON document on stdout (json.loads refuses anything after it); nothing on stderr."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stderr == b"", result.stderr
    return json.loads(result.stdout)


def error_document(result: subprocess.CompletedProcess[bytes], code: int) -> dict[str, str]:
    """A failure's one JSON document, on stderr; nothing on stdout."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == b"", result.stdout
    failure = json.loads(result.stderr)
    assert set(failure) == {"error"} and set(failure["error"]) == {"code", "message"}
    error: dict[str, str] = failure["error"]
    return error


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Local data directory with two keys and an alias, made through a real server, which is
    stopped before the tests run: the audit log is complete."""
    data = tmp_path_factory.mktemp("cli-json") / "data"
    server = KmsThread(thread_settings(data)).start()
    try:
        for name in KEYS:
            assert s3kms(server, "key", "create", name).returncode == 0
        boto3.client(
            "kms", endpoint_url=server.url, region_name="us-east-1",
            aws_access_key_id=ROOT_USER, aws_secret_access_key=ROOT_PASSWORD,
        ).create_alias(AliasName="alias/json", TargetKeyId=KEYS[0])  # fmt: skip
    finally:
        server.stop()
    yield data


# -- audit verify ----------------------------------------------------------------------------------


def test_audit_verify_prints_the_files_lines_and_that_the_chain_is_intact(data: Path) -> None:
    log = data / "audit" / "audit.log"
    lines = len(log.read_bytes().splitlines())
    assert lines >= 3
    assert document(offline("audit", "verify", str(log), "--json")) == {
        "files": [str(log)],
        "lines": lines,
        "intact": True,
        "brokenAt": None,
        "problem": None,
    }
    text = offline("audit", "verify", str(log))  # unchanged without --json
    assert (text.returncode, text.stdout) == (0, f"ok: {lines} lines, chain intact\n".encode())


def test_a_broken_chain_is_the_answer_naming_the_file_and_line_with_exit_1(
    data: Path, tmp_path: Path
) -> None:
    lines = (data / "audit" / "audit.log").read_text().splitlines()
    older, newer = tmp_path / "audit.log.1", tmp_path / "audit.log"  # rotated: oldest first
    older.write_text("\n".join(lines[:2]) + "\n")
    assert len(lines) >= 4
    entry = json.loads(lines[2])
    entry["principal"] = "someone-else"  # its seq and prev as they were: only the hash differs
    edited = [json.dumps(entry, separators=(",", ":")), *lines[3:]]
    newer.write_text("\n".join(edited) + "\n")
    answer = document(offline("audit", "verify", str(older), str(newer), "--json"), code=1)
    # The edited line is the first of the second file; the chain breaks at the line after it.
    assert answer["files"] == [str(older), str(newer)]
    assert answer["intact"] is False and answer["lines"] == 3
    assert answer["brokenAt"] == {"file": str(newer), "line": 2}
    assert answer["problem"].startswith(f"{newer}:2: chain broken")
    text = offline("audit", "verify", str(older), str(newer))
    assert text.returncode == 1 and text.stdout == b""
    assert text.stderr.decode() == f"TAMPERED {answer['problem']}\n"


def test_audit_verify_usage_errors_are_json(tmp_path: Path) -> None:
    for path, said in ((tmp_path / "missing.log", "does not exist"), (tmp_path, "is a directory")):
        error = error_document(offline("audit", "verify", str(path), "--json"), 2)
        assert error["code"] == "UsageError" and said in error["message"], error
        assert offline("audit", "verify", str(path)).returncode == 2


# -- backup and restore ----------------------------------------------------------------------------


def test_backup_and_restore_print_what_they_wrote(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "kms.s3kb"
    made = document(offline("backup", str(out), "--data-dir", str(data), "--json"))
    assert made == {"file": str(out), "keys": 2, "aliases": 1, "bytes": out.stat().st_size}

    target = tmp_path / "restored"
    args = ("restore", str(out), "--data-dir", str(target), "--json")
    other = {"S3KMS_MASTER_KEY": OTHER_MASTER_KEY}
    restored = document(offline(*args, **other))
    assert restored == {"file": str(out), "restored": 2, "skipped": 0, "aliases": 1}
    kept = document(offline(*args, **other))
    assert kept == {"file": str(out), "restored": 0, "skipped": 2, "aliases": 0}
    replaced = document(offline(*args, "--overwrite", **other))
    assert replaced == {"file": str(out), "restored": 2, "skipped": 0, "aliases": 1}

    server = KmsThread(thread_settings(target, master_key=OTHER_MASTER_KEY)).start()
    try:  # the keys are there, under the other master key
        listed = json.loads(s3kms(server, "key", "list", "--json").stdout)
        assert sorted(k["keyId"] for k in listed["keys"]) == sorted(KEYS)
    finally:
        server.stop()

    # Without --json: as before, the summary on stderr and nothing on stdout.
    text = offline("backup", str(tmp_path / "text.s3kb"), "--data-dir", str(data))
    assert text.returncode == 0 and text.stdout == b""
    assert text.stderr.decode().startswith("backup: 2 key(s) written to ")


def test_backup_and_restore_failures_are_one_json_document(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "kms.s3kb"
    assert offline("backup", str(out), "--data-dir", str(data)).returncode == 0
    restore = ("restore", str(out), "--data-dir", str(tmp_path / "target"))
    cases: list[tuple[tuple[str, ...], dict[str, str], int, str, str]] = [
        (restore, {"S3KMS_BACKUP_PASSPHRASE": "not the passphrase"}, 1, "KMSInvalidRequest",
         "cannot open the backup: wrong passphrase, or the file is damaged"),
        (restore, {"S3KMS_MASTER_KEY": "garbage"}, 1, "MasterKeyError",
         "master key from S3KMS_MASTER_KEY is not valid base64"),
        (restore, {"S3KMS_BACKUP_PASSPHRASE": ""}, 1, "NoPassphrase",
         "no backup passphrase: give --passphrase-file or set S3KMS_BACKUP_PASSPHRASE"),
        (("restore", str(tmp_path / "none.s3kb")), {}, 2, "UsageError",
         f"Invalid value for 'IN': File '{tmp_path / 'none.s3kb'}' does not exist."),
        (("backup", str(tmp_path / "x.s3kb"), "--data-dir", str(data)),
         {"S3KMS_BACKUP_PASSPHRASE": "short"}, 1, "KMSInvalidRequest",
         "the backup passphrase must be at least 12 characters"),
        (("backup", str(tmp_path / "no-dir" / "x.s3kb"), "--data-dir", str(data)), {}, 1,
         "FileError", f"cannot write {tmp_path / 'no-dir' / 'x.s3kb'}: No such file or directory"),
        (("backup", str(tmp_path / "x.s3kb"), "--data-dir", str(tmp_path / "nowhere")), {}, 2,
         "UsageError", f"no data directory at {tmp_path / 'nowhere'}"),
    ]  # fmt: skip
    for args, env, exit_code, code, message in cases:
        error = error_document(offline(*args, "--json", **env), exit_code)
        assert error == {"code": code, "message": message}, args
        assert offline(*args, **env).returncode == exit_code, args  # the same exit without it
    assert not (tmp_path / "x.s3kb").exists()


def test_metrics_token_without_credentials_is_a_json_error(tmp_path: Path) -> None:
    args = ("metrics", "token", "--data-dir", str(tmp_path / "none"), "--json")
    error = error_document(offline(*args), 2)
    assert error["code"] == "UsageError" and error["message"].startswith("no credentials")
