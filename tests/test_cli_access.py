"""`s3kms key policy` and `s3kms grant`, run as a user runs them, against a real server: the
commands reach the AWS API's key-policy and grant operations, and what they set decides who may
use the key."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3kms.access.documents import default_key_policy

from kmsserver import KmsThread, thread_settings
from kmsserver import run_cli as s3kms

ACCOUNT = "000000000000"  # thread_settings' account
ALICE, ALICE_SECRET = "alice", "alice-secret-0123456789"
ALICE_ARN = f"arn:aws:iam::{ACCOUNT}:user/{ALICE}"
AS_ALICE = {"S3KMS_ACCESS_KEY": ALICE, "S3KMS_SECRET_KEY": ALICE_SECRET}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    server = KmsThread(thread_settings(tmp_path_factory.mktemp("cli-access") / "data")).start()
    added = s3kms(server, "user", "add", ALICE, "--new-secret-key", ALICE_SECRET, "--json")
    assert added.returncode == 0, added.stderr.decode()
    yield server
    server.stop()


def ok(result: subprocess.CompletedProcess[bytes]) -> Any:
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def refused(result: subprocess.CompletedProcess[bytes], code: str) -> str:
    """The error message of a command that failed with `code` (its --json error document)."""
    assert result.returncode == 1, result.stdout.decode()
    assert result.stdout == b""
    error = json.loads(result.stderr)["error"]
    assert error["code"] == code, error
    return str(error["message"])


def test_key_policy_get_and_put(srv: KmsThread, tmp_path: Path) -> None:
    ok(s3kms(srv, "key", "create", "pol-key", "--json"))
    got = s3kms(srv, "key", "policy", "get", "pol-key")
    assert got.returncode == 0
    assert got.stdout.decode() == default_key_policy(ACCOUNT) + "\n"
    assert ok(s3kms(srv, "key", "policy", "get", "pol-key", "--json")) == {
        "Policy": default_key_policy(ACCOUNT),
        "PolicyName": "default",
    }
    # Alice has no identity policy: the default key policy leaves her out.
    message = refused(s3kms(srv, "datakey", "pol-key", "--json", env=AS_ALICE), "AccessDenied")
    assert ALICE_ARN in message and "kms:GenerateDataKey" in message

    # A key policy that keeps the account in charge and lets Alice encrypt, sent as written.
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": ALICE_ARN},
                    "Action": ["kms:Encrypt", "kms:GenerateDataKey"],
                    "Resource": "*",
                },
            ],
        },
        indent=1,
    )
    document = tmp_path / "policy.json"
    document.write_text(policy)
    assert ok(s3kms(srv, "key", "policy", "put", "pol-key", str(document), "--json")) == {
        "KeyId": "pol-key",
        "PolicyName": "default",
    }
    assert ok(s3kms(srv, "key", "policy", "get", "pol-key", "--json"))["Policy"] == policy
    data_key = ok(s3kms(srv, "datakey", "pol-key", "--json", env=AS_ALICE))
    assert data_key["KeyId"].endswith(":key/pol-key")
    # Decrypt is not in the policy: still refused to her.
    blob = data_key["CiphertextBlob"]
    denied = s3kms(srv, "decrypt", "--json", env=AS_ALICE, stdin=blob.encode())
    refused(denied, "AccessDenied")


def test_lockout_check_and_its_bypass(srv: KmsThread, tmp_path: Path) -> None:
    ok(s3kms(srv, "key", "create", "locked-key", "--json"))
    only_alice = tmp_path / "only-alice.json"
    only_alice.write_text(
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": ALICE_ARN},
                        "Action": "kms:Decrypt",
                        "Resource": "*",
                    }
                ],
            }
        )
    )
    put = ["key", "policy", "put", "locked-key", str(only_alice), "--json"]
    message = refused(s3kms(srv, *put), "KMSInvalidRequest")
    assert "will not allow you to update the key policy" in message
    ok(s3kms(srv, *put, "--bypass-lockout-check"))
    # Root itself is now out of the key policy: AWS's root is too.
    refused(s3kms(srv, "key", "policy", "get", "locked-key", "--json"), "AccessDenied")
    # The admin API is the way back: its routes are not governed by key policies.
    assert ok(s3kms(srv, "key", "disable", "locked-key", "--json"))["status"] == "disabled"
    assert ok(s3kms(srv, "key", "status", "locked-key", "--json"))["status"] == "disabled"


def test_grant_commands(srv: KmsThread) -> None:
    ok(s3kms(srv, "key", "create", "granted-key", "--json"))
    refused(s3kms(srv, "datakey", "granted-key", "--json", env=AS_ALICE), "AccessDenied")
    created = ok(
        s3kms(
            srv, "grant", "create", "granted-key",
            "--grantee", ALICE_ARN,
            "--operation", "GenerateDataKey", "--operation", "Decrypt",
            "--retiring", ALICE_ARN,
            "--context-subset", "bucket=photos",
            "--json",
        )
    )  # fmt: skip
    assert set(created) == {"GrantId", "GrantToken"} and len(created["GrantId"]) == 64

    # The grant lets Alice in, with the context it names only.
    data_key = ok(
        s3kms(srv, "datakey", "granted-key", "--context", "bucket=photos", "--json", env=AS_ALICE)
    )
    refused(s3kms(srv, "datakey", "granted-key", "--json", env=AS_ALICE), "AccessDenied")
    other = ["datakey", "granted-key", "--context", "bucket=music", "--json"]
    refused(s3kms(srv, *other, env=AS_ALICE), "AccessDenied")
    decrypted = s3kms(
        srv, "decrypt", "--context", "bucket=photos", "--json",
        env=AS_ALICE, stdin=data_key["CiphertextBlob"].encode(),
    )  # fmt: skip
    assert ok(decrypted)["Plaintext"] == data_key["Plaintext"]

    listed = ok(s3kms(srv, "grant", "list", "granted-key", "--json"))["Grants"]
    assert [g["GrantId"] for g in listed] == [created["GrantId"]]
    assert listed[0]["GranteePrincipal"] == ALICE_ARN
    assert listed[0]["Operations"] == ["GenerateDataKey", "Decrypt"]
    assert listed[0]["Constraints"] == {"EncryptionContextSubset": {"bucket": "photos"}}
    retirable = ok(s3kms(srv, "grant", "retirable", ALICE_ARN, "--json"))["Grants"]
    assert [g["GrantId"] for g in retirable] == [created["GrantId"]]
    table = s3kms(srv, "grant", "list", "granted-key")
    assert table.returncode == 0 and created["GrantId"] in table.stdout.decode()

    # Alice, the retiring principal, retires it by its token; then she is out again.
    retired = ok(
        s3kms(srv, "grant", "retire", "--token", created["GrantToken"], "--json", env=AS_ALICE)
    )
    assert retired == {"GrantId": None, "message": "grant retired"}
    refused(
        s3kms(srv, "datakey", "granted-key", "--context", "bucket=photos", "--json", env=AS_ALICE),
        "AccessDenied",
    )
    assert ok(s3kms(srv, "grant", "list", "granted-key", "--json"))["Grants"] == []

    # Revoke: by the key's owner, by key and grant id.
    again = ok(
        s3kms(
            srv, "grant", "create", "granted-key", "--grantee", ALICE_ARN,
            "--operation", "Encrypt", "--json",
        )
    )  # fmt: skip
    revoked = ok(s3kms(srv, "grant", "revoke", "granted-key", again["GrantId"], "--json"))
    assert revoked == {"GrantId": again["GrantId"], "message": "grant revoked"}
    gone = s3kms(srv, "grant", "revoke", "granted-key", again["GrantId"], "--json")
    refused(gone, "KMSKeyNotFound")


def test_grant_usage_errors(srv: KmsThread) -> None:
    both = s3kms(
        srv, "grant", "create", "k", "--grantee", ALICE_ARN, "--operation", "Encrypt",
        "--context-subset", "a=b", "--context-equals", "a=b",
    )  # fmt: skip
    assert both.returncode == 2 and b"not both" in both.stderr
    no_pair = s3kms(
        srv, "grant", "create", "k", "--grantee", ALICE_ARN, "--operation", "Encrypt",
        "--context-subset", "ab",
    )  # fmt: skip
    assert no_pair.returncode == 2 and b"--context-subset" in no_pair.stderr
    neither = s3kms(srv, "grant", "retire", "k")
    assert neither.returncode == 2 and b"--token" in neither.stderr
