"""Users and IAM-style policies through the real server: admin routes, users files, workers.

Each user here is made by root through the admin routes (or read from a `--users-file`) and then
talks to the server with its own credentials, signed as a real client signs.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3kms.auth import sigv4
from s3kms.client import Client
from s3kms.errors import AuthError, InvalidAccessKeyId, KeyAlreadyExists

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsProcess, KmsThread, thread_settings
from kmsserver import signed_admin as signed

ADMIN = "/rustfs/admin/v3/kms"
MINIO = "/minio/admin/v3/kms"


def allow(actions: str | list[str], resources: str | list[str]) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}],
    }


def denied(resp: httpx.Response, code: str = "AccessDenied") -> dict[str, Any]:
    """The admin envelope of a denial: 403 and exactly `{"error": {code, message, resource}}`."""
    assert resp.status_code == 403, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "resource"}, body
    assert body["error"]["code"] == code, body
    err: dict[str, Any] = body["error"]
    return err


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    server = KmsThread(thread_settings(tmp_path_factory.mktemp("policies") / "data")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def root(srv: KmsThread) -> Iterator[Client]:
    with Client(srv.url, ROOT_USER, ROOT_PASSWORD) as kms:
        for name in ("app-1", "app-2-existing", "other-1", "secret-1"):
            kms.create_key(name)
        yield kms


def new_user(root: Client, name: str, policies: list[str]) -> str:
    created = root.add_user(name, policies)
    secret: str = created["secretKey"]
    return secret


# -- scoping a user to its keys --------------------------------------------------------------------


def test_key_status_policy_on_app_keys(srv: KmsThread, root: Client) -> None:
    root.put_policy("app-status", allow("admin:KMSKeyStatus", "arn:minio:kms:::app-*"))
    secret = new_user(root, "app-reader", ["app-status"])

    with Client(srv.url, "app-reader", secret) as kms:
        assert kms.key_status("app-1").key_id == "app-1"
        with pytest.raises(AuthError) as exc:
            kms.key_status("other-1")
        assert exc.value.code == "AccessDenied"

    for prefix in (ADMIN, MINIO):
        ok = signed(srv.url, "GET", f"{prefix}/key/status?keyName=app-1", "app-reader", secret)
        assert ok.status_code == 200 and ok.json()["keyId"] == "app-1"
        path = f"{prefix}/key/status?keyName=other-1"
        err = denied(signed(srv.url, "GET", path, "app-reader", secret))
        assert err["resource"] == f"{prefix}/key/status"
        assert "admin:KMSKeyStatus" in err["message"] and "other-1" in err["message"]
        # Allowed to read app-* keys is not allowed to create one, list, or change one.
        denied(signed(srv.url, "POST", f"{prefix}/key/create?keyName=app-9", "app-reader", secret))
        denied(signed(srv.url, "GET", f"{prefix}/key/list", "app-reader", secret))
        denied(signed(srv.url, "POST", f"{prefix}/key/disable?keyName=app-1", "app-reader", secret))
        denied(signed(srv.url, "GET", f"{prefix}/status", "app-reader", secret))
    assert "app-9" not in {k.key_id for k in root.list_keys()}
    assert root.key_status("app-1").status == "enabled"


def test_aws_arn_resources_and_action_wildcards(srv: KmsThread, root: Client) -> None:
    root.put_policy(
        "app-admin",
        allow("admin:KMS*Key", "arn:aws:kms:us-east-1:000000000000:key/app-?-*"),
    )
    secret = new_user(root, "app-admin-user", ["app-admin"])
    with Client(srv.url, "app-admin-user", secret) as kms:
        assert kms.create_key("app-3-new").key_id == "app-3-new"  # admin:KMSCreateKey
        assert kms.disable_key("app-3-new").status == "disabled"  # admin:KMSDisableKey
        assert kms.enable_key("app-3-new").status == "enabled"
        with pytest.raises(AuthError):
            kms.key_status("app-3-new")  # admin:KMSKeyStatus does not match KMS*Key
        with pytest.raises(AuthError):
            kms.create_key("app-x")  # `?-` needs one character then a dash
        with pytest.raises(AuthError):
            kms.create_key()  # no name: a request about no key matches only "*"


def test_explicit_deny_wins_in_any_order(srv: KmsThread, root: Client) -> None:
    root.put_policy("everything", allow("admin:*", "*"))
    root.put_policy(
        "no-secrets",
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Deny", "Action": "admin:*", "Resource": "arn:aws:kms:*:*:key/secret-*"}
            ],
        },
    )
    for name, order in (("deny-last", ["everything", "no-secrets"]),
                        ("deny-first", ["no-secrets", "everything"])):  # fmt: skip
        secret = new_user(root, name, order)
        with Client(srv.url, name, secret) as kms:
            assert kms.key_status("app-1").status == "enabled"
            assert any(k.key_id == "secret-1" for k in kms.list_keys())  # no key: "*" allows
            for call in (kms.key_status, kms.disable_key, kms.rotate_key):
                with pytest.raises(AuthError) as exc:
                    call("secret-1")
                assert exc.value.code == "AccessDenied"
    assert root.key_status("secret-1").status == "enabled"
    assert root.key_status("secret-1").current_version == 1


def test_no_policy_means_denied(srv: KmsThread, root: Client) -> None:
    secret = new_user(root, "nobody", [])
    for method, path in (
        ("GET", f"{ADMIN}/status"),
        ("GET", f"{ADMIN}/key/list"),
        ("GET", f"{ADMIN}/key/status?keyName=app-1"),
        ("POST", f"{ADMIN}/key/create?keyName=nobodys"),
        ("GET", f"{ADMIN}/audit"),
    ):
        denied(signed(srv.url, method, path, "nobody", secret))
    # A policy that is removed stops applying to the users it was attached to.
    root.put_policy("short-lived", allow("admin:KMSStatus", "*"))
    secret = new_user(root, "short", ["short-lived"])
    assert signed(srv.url, "GET", f"{ADMIN}/status", "short", secret).status_code == 200
    root.remove_policy("short-lived")
    denied(signed(srv.url, "GET", f"{ADMIN}/status", "short", secret))


def test_users_cannot_grant_themselves_more(srv: KmsThread, root: Client) -> None:
    root.put_policy("status-only", allow("admin:KMSStatus", "*"))
    secret = new_user(root, "climber", ["status-only"])
    with Client(srv.url, "climber", secret) as kms:
        assert kms.status().status == "connected"
        with pytest.raises(AuthError):
            kms.put_policy("status-only", allow("admin:*", "*"))
        with pytest.raises(AuthError):
            kms.add_user("climber-2", ["everything"])
        with pytest.raises(AuthError):
            kms.list_users()
        with pytest.raises(AuthError):
            kms.backup("a long enough passphrase")
    assert not any(u["accessKey"] == "climber-2" for u in root.list_users())
    stored = {p["name"]: p["policy"] for p in root.list_policies()}
    assert stored["status-only"] == allow("admin:KMSStatus", "*")


def test_removed_user_is_an_unknown_access_key(srv: KmsThread, root: Client) -> None:
    root.put_policy("list-only", allow("admin:KMSListKeys", "*"))
    secret = new_user(root, "leaver", ["list-only"])
    assert signed(srv.url, "GET", f"{ADMIN}/key/list", "leaver", secret).status_code == 200
    root.remove_user("leaver")
    denied(signed(srv.url, "GET", f"{ADMIN}/key/list", "leaver", secret), "InvalidAccessKeyId")
    with Client(srv.url, "leaver", secret) as kms, pytest.raises(InvalidAccessKeyId):
        kms.list_keys()
    assert "leaver" not in {u["accessKey"] for u in root.list_users()}
    # A wrong secret for an existing user is a signature failure, not a policy decision.
    denied(
        signed(srv.url, "GET", f"{ADMIN}/key/list", "app-reader", "not-the-secret"),
        "SignatureDoesNotMatch",
    )


def test_generated_secret_is_shown_once(srv: KmsThread, root: Client) -> None:
    created = root.add_user("once", [])
    assert set(created) == {"accessKey", "policies", "secretKey"}
    secret = created["secretKey"]
    assert len(secret) >= 32
    # Nowhere again: listings, a repeated add, the status.
    listed = signed(srv.url, "GET", f"{ADMIN}/user/list", ROOT_USER, ROOT_PASSWORD)
    entry = next(u for u in listed.json()["users"] if u["accessKey"] == "once")
    assert entry == {"accessKey": "once", "policies": [], "managed": True}
    again = signed(srv.url, "POST", f"{ADMIN}/user/add?accessKey=once", ROOT_USER, ROOT_PASSWORD)
    assert again.status_code == 409
    with pytest.raises(KeyAlreadyExists):
        root.add_user("once", [])
    for resp in (
        listed,
        again,
        signed(srv.url, "GET", f"{ADMIN}/policy/list", ROOT_USER, ROOT_PASSWORD),
    ):
        assert secret not in resp.text
    # A secret the caller chose is not echoed back; an empty one asks for a generated one.
    chosen = root.add_user("chosen", [], secret_key="chosen-secret-value-123")
    assert "secretKey" not in chosen and "chosen-secret" not in json.dumps(chosen)
    empty = signed(
        srv.url, "POST", f"{ADMIN}/user/add?accessKey=empty-secret", ROOT_USER, ROOT_PASSWORD,
        json.dumps({"policies": [], "secretKey": ""}).encode(),
    )  # fmt: skip
    assert empty.status_code == 200 and len(empty.json()["secretKey"]) >= 32


def test_users_file_is_private_and_holds_no_secret(srv: KmsThread, root: Client) -> None:
    secret = new_user(root, "stored", [])
    path = srv.settings.data_dir / "users.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(srv.settings.data_dir.stat().st_mode) == 0o700
    raw = path.read_bytes()
    assert b'"stored"' in raw
    for form in (
        secret.encode(),
        base64.b64encode(secret.encode()),
        secret.encode().hex().encode(),
    ):
        assert form not in raw
    assert b"chosen-secret-value-123" not in raw


def test_bad_policies_are_rejected(srv: KmsThread, root: Client) -> None:
    for doc in (
        {"Statement": [{"Effect": "Maybe", "Action": "admin:*", "Resource": "*"}]},
        # NotAction is accepted; a Principal in an identity policy is not (as in IAM).
        {"Statement": [{"Effect": "Allow", "NotAction": "a", "Resource": "*", "Principal": "*"}]},
        {"Statement": []},
        {
            "Version": "2099-01-01",
            "Statement": [{"Effect": "Allow", "Action": "a", "Resource": "*"}],
        },
    ):
        body = json.dumps(doc).encode()
        resp = signed(
            srv.url, "POST", f"{ADMIN}/policy/add?name=bad", ROOT_USER, ROOT_PASSWORD, body
        )
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "KMSInvalidRequest"
    assert "bad" not in {p["name"] for p in root.list_policies()}
    with pytest.raises(Exception, match="unknown policy"):
        root.add_user("dangling", ["no-such-policy"])


# -- users from a file ------------------------------------------------------------------------------

FILE_SECRET = "file-user-secret-0123456789"

USERS_JSON = {
    "policies": {"file-status": allow(["admin:KMSKeyStatus", "admin:KMSListKeys"], ["*"])},
    "users": [{"access_key": "file-user", "secret_key": FILE_SECRET, "policies": ["file-status"]}],
}

USERS_TOML = f"""
[policies.file-status]
Version = "2012-10-17"

[[policies.file-status.Statement]]
Effect = "Allow"
Action = ["admin:KMSKeyStatus", "admin:KMSListKeys"]
Resource = ["*"]

[[users]]
access_key = "file-user"
secret_key = "{FILE_SECRET}"
policies = ["file-status"]
"""


@pytest.mark.parametrize("suffix", ["json", "toml"])
def test_users_file(tmp_path: Path, suffix: str) -> None:
    users_file = tmp_path / f"users.{suffix}"
    users_file.write_text(json.dumps(USERS_JSON) if suffix == "json" else USERS_TOML)
    server = KmsThread(thread_settings(tmp_path / "data", users_file=users_file)).start()
    try:
        with Client(server.url, ROOT_USER, ROOT_PASSWORD) as root:
            root.create_key("filed")
            listed = {u["accessKey"]: u for u in root.list_users()}
            assert listed["file-user"] == {
                "accessKey": "file-user", "policies": ["file-status"], "managed": False,
            }  # fmt: skip
            with pytest.raises(Exception, match="users file"):
                root.remove_user("file-user")
            with pytest.raises(Exception, match="users file"):
                root.put_policy("file-status", allow("admin:*", "*"))
        with Client(server.url, "file-user", FILE_SECRET) as kms:
            assert kms.key_status("filed").status == "enabled"
            assert [k.key_id for k in kms.list_keys()] == ["filed"]
            with pytest.raises(AuthError):
                kms.create_key("not-allowed")
        # The operator's file is never written, and its secret is not copied to users.json.
        assert FILE_SECRET in users_file.read_text()
        stored = server.settings.data_dir / "users.json"
        assert not stored.exists() or FILE_SECRET not in stored.read_text()
    finally:
        server.stop()


# -- several worker processes -------------------------------------------------------------------------


def one_connection_each(url: str, access: str, secret: str, n: int) -> list[httpx.Response]:
    """n requests, each on a new connection, so the kernel spreads them over the workers."""
    out = []
    for _ in range(n):
        with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            path = f"{ADMIN}/key/list"
            headers = sigv4.sign_headers(
                "GET", url + path, {}, b"", access_key=access, secret_key=secret,
                region="us-east-1", service="s3", now=time.time(),
            )  # fmt: skip
            out.append(http.get(url + path, headers=headers))
    return out


def worker_of(resp: httpx.Response) -> str:
    return resp.headers["x-amz-request-id"][:8]  # a random prefix per process


def test_users_added_through_one_worker_are_seen_by_the_other(tmp_path: Path) -> None:
    """`s3kms server --workers 2 --users-file F`: two processes share users.json."""
    users_file = tmp_path / "users.json"
    users_file.write_text(json.dumps(USERS_JSON))
    server = KmsProcess(tmp_path / "data", args=["--workers", "2", "--users-file", str(users_file)])
    server.start()
    try:
        with Client(server.url, ROOT_USER, ROOT_PASSWORD) as root:
            root.put_policy("list-keys", allow("admin:KMSListKeys", "*"))
            secret = new_user(root, "roaming", ["list-keys"])
        answers = one_connection_each(server.url, "roaming", secret, 40)
        assert [r.status_code for r in answers] == [200] * 40, [r.text for r in answers]
        workers = {worker_of(r) for r in answers}
        assert len(workers) == 2, "the requests did not reach both workers"
        file_user = one_connection_each(server.url, "file-user", FILE_SECRET, 20)
        assert [r.status_code for r in file_user] == [200] * 20

        with Client(server.url, ROOT_USER, ROOT_PASSWORD) as root:
            root.remove_user("roaming")
        after = one_connection_each(server.url, "roaming", secret, 40)
        assert {worker_of(r) for r in after} == workers
        for resp in after:
            denied(resp, "InvalidAccessKeyId")
    finally:
        server.stop()


# -- the AWS KMS API ------------------------------------------------------------------------------------


def boto_kms(url: str, access: str, secret: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "kms",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1}),
    )


def test_aws_decrypt_only_user_cannot_encrypt(srv: KmsThread, root: Client) -> None:
    from botocore.exceptions import ClientError

    # The source file: a wheel's module is compiled (hatch_build.py), and inspect cannot read it.
    crypto_source = Path(__file__).resolve().parents[1] / "src/s3kms/protocols/awskms/crypto.py"
    assert "principal.authorize(" in crypto_source.read_text()
    root.create_key("aws-scoped")
    blob = root.encrypt("aws-scoped", b"for the decrypt-only user")
    root.put_policy("decrypt-only", allow("kms:Decrypt", "arn:aws:kms:*:*:key/aws-*"))
    secret = new_user(root, "decrypter", ["decrypt-only"])
    kms = boto_kms(srv.url, "decrypter", secret)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"for the decrypt-only user"
    for call in (
        lambda: kms.encrypt(KeyId="aws-scoped", Plaintext=b"not allowed"),
        lambda: kms.generate_data_key(KeyId="aws-scoped", NumberOfBytes=32),
        lambda: kms.create_key(),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert exc.value.response["Error"]["Code"] == "AccessDeniedException"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_aws_policy_applies_to_the_key_an_alias_names(srv: KmsThread, root: Client) -> None:
    from botocore.exceptions import ClientError

    admin = boto_kms(srv.url, ROOT_USER, ROOT_PASSWORD)
    admin.create_alias(AliasName="alias/aws-lookalike", TargetKeyId="other-1")
    # Checked against the alias's own name, `key/*aws*` would match: it must be other-1's ARN.
    root.put_policy("encrypt-aws", allow("kms:Encrypt", "arn:aws:kms:*:*:key/*aws*"))
    secret = new_user(root, "aws-encrypter", ["encrypt-aws"])
    kms = boto_kms(srv.url, "aws-encrypter", secret)
    root.create_key("aws-enc")
    assert kms.encrypt(KeyId="aws-enc", Plaintext=b"ok")["KeyId"].endswith("key/aws-enc")
    with pytest.raises(ClientError) as exc:
        kms.encrypt(KeyId="alias/aws-lookalike", Plaintext=b"no")
    assert exc.value.response["Error"]["Code"] == "AccessDeniedException"


def test_revocation_is_seen_by_another_process_at_once(tmp_path: Path) -> None:
    """Two workers' stores on one users.json: a change made within the filesystem's timestamp
    granularity (a few ms) must still be seen, or a removed user keeps working on the other."""
    from s3kms.users import UserStore

    master = bytes(range(1, 33))
    for i in range(20):
        data = tmp_path / f"d{i}"
        data.mkdir()
        first, second = UserStore(data, master), UserStore(data, master)
        first.add_user("quick", "quick-secret-123", [])
        assert second.secret_for("quick") == "quick-secret-123"
        first.remove_user("quick")
        assert second.secret_for("quick") is None
        first.add_user("quick", "another-secret-456", [])
        assert second.secret_for("quick") == "another-secret-456"


def test_revocation_through_the_shared_counter_is_seen_at_once(tmp_path: Path) -> None:
    """The server's stores share users.gen: the other worker sees a change on its next request
    without looking at the file, and a file replaced by other means within a second."""
    import time

    from s3kms.keystore.generation import Generation
    from s3kms.users import RESTAT_SECONDS, USERS_GENERATION_FILE, UserStore

    master = bytes(range(1, 33))
    for i in range(10):
        data = tmp_path / f"d{i}"
        data.mkdir()
        first, second = (
            UserStore(data, master, generation=Generation(data / USERS_GENERATION_FILE))
            for _ in range(2)
        )
        first.add_user("quick", "quick-secret-123", [])
        assert second.secret_for("quick") == "quick-secret-123"
        first.remove_user("quick")
        assert second.secret_for("quick") is None
        first.add_user("quick", "another-secret-456", [])
        assert second.secret_for("quick") == "another-secret-456"
    # A users.json put back by hand (no counter bump) is still read within RESTAT_SECONDS.
    other = tmp_path / "other"
    other.mkdir()
    UserStore(other, master).add_user("restored", "restored-secret-1", [])
    (other / "users.json").replace(data / "users.json")
    deadline = time.monotonic() + RESTAT_SECONDS + 2.0
    while second.secret_for("restored") is None:
        assert time.monotonic() < deadline, "a replaced users.json was never read"
        time.sleep(0.05)
    assert second.secret_for("quick") is None


def cli(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("S3KMS_")}
    base |= {
        "S3KMS_ENDPOINT": url,
        "S3KMS_ACCESS_KEY": ROOT_USER,
        "S3KMS_SECRET_KEY": ROOT_PASSWORD,
    }
    return subprocess.run(
        [sys.executable, "-m", "s3kms", *args],
        capture_output=True, text=True, timeout=60, env=base | env,
    )  # fmt: skip


def test_cli_user_and_policy_commands(srv: KmsThread, root: Client, tmp_path: Path) -> None:
    doc = tmp_path / "cli-policy.json"
    doc.write_text(json.dumps(allow("admin:KMSKeyStatus", "arn:minio:kms:::app-*")))
    added = cli(srv.url, "policy", "add", "cli-status", str(doc), "--json")
    assert added.returncode == 0, added.stderr
    listed = cli(srv.url, "policy", "list", "--json")
    assert any(p["name"] == "cli-status" for p in json.loads(listed.stdout)["policies"])

    made = cli(srv.url, "user", "add", "cli-user", "--policy", "cli-status", "--json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["accessKey"] == "cli-user" and created["policies"] == ["cli-status"]
    secret = created["secretKey"]
    assert secret != ROOT_PASSWORD  # the caller's own --secret-key is not the new user's
    with Client(srv.url, "cli-user", secret) as kms:
        assert kms.key_status("app-1").status == "enabled"

    chosen = cli(
        srv.url, "user", "add", "cli-chosen", "--json", S3KMS_NEW_USER_SECRET="cli-chosen-secret-1"
    )
    assert chosen.returncode == 0, chosen.stderr
    assert "secretKey" not in json.loads(chosen.stdout)
    with Client(srv.url, "cli-chosen", "cli-chosen-secret-1") as kms, pytest.raises(AuthError):
        kms.key_status("app-1")  # authenticated (no policy): denied, not unknown

    users = json.loads(cli(srv.url, "user", "list", "--json").stdout)["users"]
    assert {"cli-user", "cli-chosen"} <= {u["accessKey"] for u in users}
    assert all("secretKey" not in u for u in users)
    removed = cli(srv.url, "user", "remove", "cli-user", "--json")
    assert removed.returncode == 0, removed.stderr
    with Client(srv.url, "cli-user", secret) as kms, pytest.raises(InvalidAccessKeyId):
        kms.key_status("app-1")
    assert cli(srv.url, "policy", "remove", "cli-status").returncode == 0
    assert "cli-status" not in {p["name"] for p in root.list_policies()}


def test_denials_say_who_what_where_and_why_in_awss_words(srv: KmsThread, root: Client) -> None:
    """AWS's AccessDeniedException message: the caller's ARN, the action, the resource, and
    whether no policy allowed it or a Deny matched (as recorded from real AWS KMS)."""
    from botocore.exceptions import ClientError

    root.create_key("why-denied")
    root.put_policy(
        "encrypt-but-not-why",
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"},
                {
                    "Effect": "Deny",
                    "Action": "kms:Encrypt",
                    "Resource": "arn:aws:kms:*:*:key/why-*",
                },
            ],
        },
    )
    secret = new_user(root, "asks-why", ["encrypt-but-not-why"])
    kms = boto_kms(srv.url, "asks-why", secret)
    user = "User: arn:aws:iam::000000000000:user/asks-why is not authorized to perform:"
    key = "arn:aws:kms:us-east-1:000000000000:key/why-denied"
    expected = {
        lambda: kms.encrypt(KeyId="why-denied", Plaintext=b"x"): (
            f"{user} kms:Encrypt on resource: {key} with an explicit deny in an identity-based "
            "policy"
        ),
        lambda: kms.decrypt(CiphertextBlob=root.encrypt("why-denied", b"x")): (
            f"{user} kms:Decrypt on resource: {key} because no identity-based policy allows the "
            "kms:Decrypt action"
        ),
        lambda: kms.list_keys(): (
            f"{user} kms:ListKeys on resource: * because no identity-based policy allows the "
            "kms:ListKeys action"
        ),
    }
    for call, message in expected.items():
        with pytest.raises(ClientError) as exc:
            call()
        assert exc.value.response["Error"]["Code"] == "AccessDeniedException"
        assert exc.value.response["Error"]["Message"] == message
