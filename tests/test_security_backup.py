"""Backup and restore as an operator runs them: `s3kms backup` / `s3kms restore` and `POST .../backup`.

The central claim: every ciphertext made before a backup decrypts after restoring it into a fresh
data directory that has a different master key. Ciphertexts are made and decrypted through the real
AWS KMS API (the Python client and boto3), keys changed through the admin API.
"""

from __future__ import annotations

import base64
import os
import pty
import re
import select
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from s3kms.client import Client, KeyStatus
from s3kms.errors import KeyDisabled, KeyInvalidState

from kmsserver import MASTER_KEY, ROOT_PASSWORD, ROOT_USER, KmsThread, thread_settings

PASSPHRASE = "correct horse battery staple"
OTHER_MASTER_KEY = base64.b64encode(bytes(range(101, 133))).decode()
CONTEXT = {"bucket": "photos", "object": "2026/cat.jpg"}
KEYS = ("plain", "disabled-key", "rotated", "doomed")
FAILURE = "cannot open the backup: wrong passphrase, or the file is damaged"


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("S3KMS_")}
    base |= {"S3KMS_BACKUP_PASSPHRASE": PASSPHRASE, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "s3kms", *args],
        capture_output=True, text=True, timeout=60, env=base | env, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def backup(data: Path, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return cli(
        "backup", str(out), "--data-dir", str(data), **({"S3KMS_MASTER_KEY": MASTER_KEY} | env)
    )


def restore(
    backup_file: Path, data: Path, *extra: str, **env: str
) -> subprocess.CompletedProcess[str]:
    env = {"S3KMS_MASTER_KEY": OTHER_MASTER_KEY} | env
    return cli("restore", str(backup_file), "--data-dir", str(data), *extra, **env)


def boto(url: str) -> Any:
    return boto3.client(
        "kms", endpoint_url=url, region_name="us-east-1", aws_access_key_id=ROOT_USER,
        aws_secret_access_key=ROOT_PASSWORD, config=Config(retries={"total_max_attempts": 1}),
    )  # fmt: skip


@dataclass
class Source:
    data_dir: Path
    server: KmsThread
    # (key, plaintext, ciphertext) made before the backup, over every key and version
    sealed: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    statuses: dict[str, KeyStatus] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


def key_statuses(kms: Client) -> dict[str, KeyStatus]:
    return {k.key_id: kms.key_status(k.key_id) for k in kms.list_keys()}


def alias_map(url: str) -> dict[str, str]:
    listed = boto(url).list_aliases()["Aliases"]
    return {a["AliasName"]: a["TargetKeyId"] for a in listed if "TargetKeyId" in a}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    """A data directory with keys in every state and several versions, and what was sealed."""
    data = tmp_path_factory.mktemp("backup") / "source"
    server = KmsThread(thread_settings(data)).start()
    src = Source(data, server)
    with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:

        def seal(key: str, text: bytes) -> None:
            src.sealed.append((key, text, kms.encrypt(key, text, CONTEXT)))

        for key in KEYS:
            kms.create_key(key)
            seal(key, f"secret of {key}".encode())
        for version in (2, 3):
            kms.rotate_key("rotated")  # admin key/rotate
            seal("rotated", f"rotated v{version}".encode())
        data_key = kms.generate_data_key("plain", context=CONTEXT)
        src.sealed.append(("plain", data_key.plaintext, data_key.ciphertext))
        kms.disable_key("disabled-key")
        kms.schedule_key_deletion("doomed", 7)
        aws = boto(server.url)
        aws.create_alias(AliasName="alias/photos", TargetKeyId="plain")
        aws.create_alias(AliasName="alias/history", TargetKeyId="rotated")
        src.statuses = key_statuses(kms)
    src.aliases = alias_map(server.url)
    assert src.statuses["rotated"].current_version == 3
    assert src.statuses["disabled-key"].status == "disabled"
    assert src.statuses["doomed"].status == "pending_deletion"
    assert src.aliases == {"alias/photos": "plain", "alias/history": "rotated"}
    yield src  # the server keeps running: `s3kms backup` reads the data directory beside it
    server.stop()


@pytest.fixture(scope="module")
def backup_file(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out") / "kms.s3kb"
    result = backup(source.data_dir, out)
    assert result.returncode == 0, result.stderr
    assert f"backup: {len(KEYS)} key(s) written to {out}" in result.stderr
    return out


def test_backup_file_is_private_and_sealed(backup_file: Path, tmp_path: Path) -> None:
    assert stat.S_IMODE(backup_file.stat().st_mode) == 0o600
    raw = backup_file.read_bytes()
    assert raw[:4] == b"S3KB"
    # Nothing of the payload is readable: not even the key names or the aliases.
    for word in (*KEYS, "alias/photos", "material", "versions"):
        assert word.encode() not in raw
    # One flipped byte anywhere in the sealed part, or in the header, and it does not open.
    for offset in (0, 9, 30, 40, len(raw) // 2, len(raw) - 1):
        damaged = bytearray(raw)
        damaged[offset] ^= 0x01
        path = tmp_path / f"flipped-{offset}.s3kb"
        path.write_bytes(bytes(damaged))
        result = restore(path, tmp_path / f"target-{offset}")
        assert result.returncode == 1, (offset, result.stderr)
        assert FAILURE in result.stderr and "Traceback" not in result.stderr


def test_restore_into_a_fresh_directory_with_another_master_key(
    source: Source, backup_file: Path, tmp_path: Path
) -> None:
    target = tmp_path / "restored"
    result = restore(backup_file, target)
    assert result.returncode == 0, result.stderr
    assert f"restore: {len(KEYS)} key(s) restored, 0 kept as they were" in result.stderr
    assert "2 alias(es)" in result.stderr
    assert base64.b64decode(OTHER_MASTER_KEY) != base64.b64decode(MASTER_KEY)

    server = KmsThread(thread_settings(target, master_key=OTHER_MASTER_KEY)).start()
    try:
        with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:
            # Same keys, states, versions, creation and deletion dates.
            assert key_statuses(kms) == source.statuses
            assert alias_map(server.url) == source.aliases
            # States are restored, so the disabled and doomed keys refuse to decrypt...
            by_key = {key: blob for key, _, blob in source.sealed}
            with pytest.raises(KeyDisabled):
                kms.decrypt(by_key["disabled-key"], CONTEXT)
            with pytest.raises(KeyInvalidState):
                kms.decrypt(by_key["doomed"], CONTEXT)
            # ...until they are enabled again; then every ciphertext made before the backup opens.
            kms.cancel_key_deletion("doomed")
            kms.enable_key("doomed")
            kms.enable_key("disabled-key")
            for key, plaintext, blob in source.sealed:
                assert kms.decrypt(blob, CONTEXT) == plaintext, key
            # New encryption goes to the current (third) version of the rotated key.
            again = kms.encrypt("alias/history", b"after the restore", CONTEXT)
            assert kms.decrypt(again, CONTEXT, key="rotated") == b"after the restore"
            assert kms.key_status("rotated").current_version == 3
    finally:
        server.stop()
    # The restored keystore is wrapped under the new master key only.
    refused = backup(target, tmp_path / "x.s3kb")  # the old master key does not open it
    assert refused.returncode == 1 and "not the key this keystore" in refused.stderr


def test_restore_keeps_existing_keys_unless_overwrite(backup_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "existing"
    assert restore(backup_file, target).returncode == 0
    server = KmsThread(thread_settings(target, master_key=OTHER_MASTER_KEY)).start()
    try:
        with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:
            kms.disable_key("plain")  # a change made after the restore
            kms.rotate_key("rotated")
    finally:
        server.stop()

    kept = restore(backup_file, target)
    assert kept.returncode == 0, kept.stderr
    assert f"0 key(s) restored, {len(KEYS)} kept as they were (use --overwrite" in kept.stderr
    server = KmsThread(thread_settings(target, master_key=OTHER_MASTER_KEY)).start()
    try:
        with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:
            assert kms.key_status("plain").status == "disabled"  # not undone
            assert kms.key_status("rotated").current_version == 4
    finally:
        server.stop()
    replaced = restore(backup_file, target, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert f"{len(KEYS)} key(s) restored, 0 kept" in replaced.stderr

    server = KmsThread(thread_settings(target, master_key=OTHER_MASTER_KEY)).start()
    try:
        with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:
            assert kms.key_status("plain").status == "enabled"  # back to the backup's state
            assert kms.key_status("rotated").current_version == 3
    finally:
        server.stop()


def test_wrong_passphrase_and_damaged_files_fail_clearly(backup_file: Path, tmp_path: Path) -> None:
    wrong = restore(backup_file, tmp_path / "t1", S3KMS_BACKUP_PASSPHRASE="not the passphrase!")
    assert wrong.returncode == 1 and FAILURE in wrong.stderr
    assert "Traceback" not in wrong.stderr
    truncated = tmp_path / "truncated.s3kb"
    truncated.write_bytes(backup_file.read_bytes()[:30])
    not_backup = tmp_path / "notes.txt"
    not_backup.write_text("just some text, not a backup at all\n" * 3)
    for path in (truncated, not_backup):
        result = restore(path, tmp_path / "t2")
        assert result.returncode == 1 and FAILURE in result.stderr, result.stderr
    # A header asking for a huge scrypt cost (16 GiB) is refused before any work is done.
    greedy = bytearray(backup_file.read_bytes())
    greedy[6], greedy[7], greedy[8] = 22, 32, 16  # log2(N), r, p
    costly = tmp_path / "costly.s3kb"
    costly.write_bytes(bytes(greedy))
    started = time.monotonic()
    result = restore(costly, tmp_path / "t2")
    assert result.returncode == 1 and FAILURE in result.stderr, result.stderr
    assert time.monotonic() - started < 20
    # Nothing was half-restored: the good file still restores every key into that directory.
    good = restore(backup_file, tmp_path / "t2")
    assert good.returncode == 0 and f"{len(KEYS)} key(s) restored, 0 kept" in good.stderr

    short = backup(tmp_path / "t2", tmp_path / "short.s3kb", S3KMS_MASTER_KEY=OTHER_MASTER_KEY,
                   S3KMS_BACKUP_PASSPHRASE="short")  # fmt: skip
    assert short.returncode == 1 and "at least 12 characters" in short.stderr
    assert not (tmp_path / "short.s3kb").exists()


def test_passphrase_file_option(source: Source, tmp_path: Path) -> None:
    secret_file = tmp_path / "passphrase"
    secret_file.write_text("a passphrase kept in a file\n")
    out = tmp_path / "from-file.s3kb"
    made = backup(source.data_dir, out, S3KMS_BACKUP_PASSPHRASE="")
    assert made.returncode != 0  # no passphrase anywhere and no terminal: no backup
    assert not out.exists()
    made = cli("backup", str(out), "--data-dir", str(source.data_dir), "--passphrase-file",
               str(secret_file), S3KMS_MASTER_KEY=MASTER_KEY, S3KMS_BACKUP_PASSPHRASE="")  # fmt: skip
    assert made.returncode == 0, made.stderr
    back = restore(out, tmp_path / "t", "--passphrase-file", str(secret_file))
    assert back.returncode == 0 and f"{len(KEYS)} key(s) restored" in back.stderr
    assert restore(out, tmp_path / "t3").returncode == 1  # the environment's passphrase is wrong


def test_server_backup_route_restores_offline(source: Source, tmp_path: Path) -> None:
    with Client(source.server.url, ROOT_USER, ROOT_PASSWORD) as kms:
        data = kms.backup(PASSPHRASE)
        with pytest.raises(Exception, match="at least 12"):
            kms.backup("short")
    assert data[:4] == b"S3KB" and b"rotated" not in data
    path = tmp_path / "from-server.s3kb"
    path.write_bytes(data)
    target = tmp_path / "from-server"
    result = restore(path, target)
    assert result.returncode == 0, result.stderr
    assert f"{len(KEYS)} key(s) restored" in result.stderr
    server = KmsThread(thread_settings(target, master_key=OTHER_MASTER_KEY)).start()
    try:
        with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:
            assert key_statuses(kms) == source.statuses
            kms.enable_key("disabled-key")
            kms.cancel_key_deletion("doomed")
            kms.enable_key("doomed")
            for key, plaintext, blob in source.sealed:
                assert kms.decrypt(blob, CONTEXT) == plaintext, key
    finally:
        server.stop()


def run_on_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the CLI with stdout/stderr on a pseudo-terminal, as an operator sees it."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "s3kms", *args],
        stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif proc.poll() is not None:
            break
    os.close(leader)
    shown = b"".join(chunks).decode(errors="replace")
    return proc.wait(10), re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)  # colours and cursor moves


def test_progress_and_summary_on_a_terminal(source: Source, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3KMS_")}
    env |= {"S3KMS_BACKUP_PASSPHRASE": PASSPHRASE, "COLUMNS": "120", "TERM": "xterm"}
    out = tmp_path / "tty.s3kb"
    code, shown = run_on_terminal(
        ["backup", str(out), "--data-dir", str(source.data_dir)],
        env | {"S3KMS_MASTER_KEY": MASTER_KEY},
    )
    assert code == 0, shown
    assert "backing up keys" in shown and f"{len(KEYS)}/{len(KEYS)}" in shown, shown
    assert f"backup: {len(KEYS)} key(s) written" in shown
    code, shown = run_on_terminal(
        ["restore", str(out), "--data-dir", str(tmp_path / "tty")],
        env | {"S3KMS_MASTER_KEY": OTHER_MASTER_KEY},
    )
    assert code == 0, shown
    assert "restoring keys" in shown and f"{len(KEYS)}/{len(KEYS)}" in shown, shown
    assert f"restore: {len(KEYS)} key(s) restored" in shown
