"""Policy and user-store hardening through the real server.

- A policy pattern cannot pin the server (glob matching without backtracking).
- Policy documents are bounded: size, statements, patterns, wildcards, nesting.
- Access keys and policy names are ASCII `A-Z a-z 0-9 . _ -`, not any Unicode letter or digit.
- users.json is written before memory changes: a failed write leaves the users as they were, and
  a secret that cannot be encoded (a lone surrogate) is a 400, not a store broken until restart.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from s3kms import users as users_module
from s3kms.access.documents import MAX_DOCUMENT_BYTES, MAX_WILDCARDS
from s3kms.client import Client
from s3kms.errors import InvalidRequest
from s3kms.users import UserStore

from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsProcess, KmsThread, thread_settings
from kmsserver import signed_admin as signed

ADMIN = "/rustfs/admin/v3/kms"
EVIL = "arn:aws:kms:*:*:key/" + "*a" * 12 + "*b"


def allow(actions: str | list[str], resources: str | list[str]) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}],
    }


def invalid_request(resp: httpx.Response, mentions: str = "") -> str:
    """A 400 KMSInvalidRequest in the admin envelope; its message."""
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "KMSInvalidRequest", error
    message: str = error["message"]
    assert mentions in message, message
    return message


def user_names(url: str) -> set[str]:
    resp = signed(url, "GET", f"{ADMIN}/user/list")
    assert resp.status_code == 200, resp.text
    return {u["accessKey"] for u in resp.json()["users"]}


def policy_names(url: str) -> set[str]:
    resp = signed(url, "GET", f"{ADMIN}/policy/list")
    assert resp.status_code == 200, resp.text
    return {p["name"] for p in resp.json()["policies"]}


def add_user(url: str, access: str, secret: str, policies: list[str]) -> httpx.Response:
    body = json.dumps({"policies": policies, "secretKey": secret}).encode()
    return signed(url, "POST", f"{ADMIN}/user/add?accessKey={access}", body=body)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    server = KmsThread(thread_settings(tmp_path_factory.mktemp("hardening") / "data")).start()
    yield server
    server.stop()


# -- ReDoS ----------------------------------------------------------------------------------------


def test_backtracking_pattern_does_not_pin_the_server(tmp_path: Path) -> None:
    """The Resource `key/*a*a...*a*b` (12 `*a`) and one GenerateDataKey with a 60-character KeyId
    that does not match: as a regex that is hours of CPU, the server unresponsive and deaf to
    SIGTERM. Now a normal denial. A subprocess server, so a hang is bounded by the client's
    timeout (a server thread would hold the test's GIL)."""
    server = KmsProcess(tmp_path / "data")
    server.start()
    try:
        with Client(server.url, ROOT_USER, ROOT_PASSWORD) as root:
            root.put_policy("evil", allow("kms:GenerateDataKey", EVIL))
            secret = root.add_user("victim", ["evil"])["secretKey"]
            # The key must exist: with key policies, a request is judged on the key's metadata.
            root.create_key("a" * 59 + "c")
        kms = boto3.client(
            "kms",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="victim",
            aws_secret_access_key=secret,
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10),
        )
        with pytest.raises(ClientError) as exc:
            kms.generate_data_key(KeyId="a" * 59 + "c", NumberOfBytes=32)
        assert exc.value.response["Error"]["Code"] == "AccessDeniedException"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        # A KeyId the pattern does match gets past the policy (and there is no such key).
        with pytest.raises(ClientError) as exc:
            kms.generate_data_key(KeyId="a" * 59 + "b", NumberOfBytes=32)
        assert exc.value.response["Error"]["Code"] == "NotFoundException"
        assert httpx.get(f"{server.url}/health/live", timeout=10).status_code == 200
    finally:
        server.stop()


# -- bounds ---------------------------------------------------------------------------------------


def test_oversized_policy_is_refused(srv: KmsThread) -> None:
    statement = {"Sid": "x" * MAX_DOCUMENT_BYTES, "Effect": "Allow", "Action": "*", "Resource": "*"}
    body = json.dumps({"Version": "2012-10-17", "Statement": [statement]}).encode()
    assert len(body) < 1024 * 1024  # under the request body limit: the policy bound answers
    resp = signed(srv.url, "POST", f"{ADMIN}/policy/add?name=huge", body=body)
    invalid_request(resp, f"at most {MAX_DOCUMENT_BYTES} bytes")
    assert "huge" not in policy_names(srv.url)


def test_too_many_wildcards_are_refused(srv: KmsThread) -> None:
    at_limit = "arn:aws:kms:*:*:key/" + "*a" * (MAX_WILDCARDS - 2)
    ok = signed(
        srv.url, "POST", f"{ADMIN}/policy/add?name=wild-ok",
        body=json.dumps(allow("kms:Decrypt", at_limit)).encode(),
    )  # fmt: skip
    assert ok.status_code == 200, ok.text
    resp = signed(
        srv.url, "POST", f"{ADMIN}/policy/add?name=wild",
        body=json.dumps(allow("kms:Decrypt", EVIL + "*a" * 20)).encode(),
    )  # fmt: skip
    invalid_request(resp, f"at most {MAX_WILDCARDS} wildcards")
    assert "wild" not in policy_names(srv.url)


# -- ASCII names ----------------------------------------------------------------------------------


def test_non_ascii_names_are_refused(srv: KmsThread) -> None:
    """`café`x and `ab٣` pass str.isalnum; the documented alphabet is ASCII only."""
    for quoted in ("caf%C3%A9x", "ab%D9%A3", "%EF%BC%A1bc"):  # é, ARABIC-INDIC THREE, FULLWIDTH A
        resp = signed(srv.url, "POST", f"{ADMIN}/user/add?accessKey={quoted}")
        invalid_request(resp, "accessKey must be 3-128 characters of A-Z a-z 0-9 . _ -")
    assert not {"caféx", "ab٣", "\uff21bc"} & user_names(srv.url)
    body = json.dumps(allow("kms:Decrypt", "*")).encode()
    for quoted in ("p%C3%BC", "%D9%A3"):
        resp = signed(srv.url, "POST", f"{ADMIN}/policy/add?name={quoted}", body=body)
        invalid_request(resp, "policy name must be 1-128 characters of A-Z a-z 0-9 . _ -")
    assert not {"pü", "٣"} & policy_names(srv.url)
    # The ASCII alphabet itself still works.
    assert add_user(srv.url, "Az09._-", "plain-secret-123", []).status_code == 200


# -- memory only after disk -----------------------------------------------------------------------


def test_failed_write_of_users_json_changes_nothing(tmp_path: Path) -> None:
    """users.json cannot be replaced (its temp path is a directory: works as root, unlike chmod).
    Every change answers an error and nothing changes, in the listings or for authentication;
    once the obstacle is gone, changes work again."""
    server = KmsThread(thread_settings(tmp_path / "data")).start()
    try:
        url = server.url
        with Client(url, ROOT_USER, ROOT_PASSWORD) as root:
            root.put_policy("status", allow("admin:KMSStatus", "*"))
            root.add_user("keeper", ["status"], secret_key="keeper-secret-123")
        users_json = server.settings.data_dir / "users.json"
        before = users_json.read_bytes()
        obstacle = server.settings.data_dir / ".users.json.tmp"
        obstacle.mkdir()

        added = add_user(url, "ghost", "ghost-secret-123", ["status"])
        assert 400 <= added.status_code < 600, added.text
        assert "ghost" not in user_names(url)
        gone = signed(url, "GET", f"{ADMIN}/status", "ghost", "ghost-secret-123")
        assert gone.status_code == 403 and gone.json()["error"]["code"] == "InvalidAccessKeyId"

        removed = signed(url, "POST", f"{ADMIN}/user/remove?accessKey=keeper")
        assert 400 <= removed.status_code < 600, removed.text
        assert "keeper" in user_names(url)
        assert (
            signed(url, "GET", f"{ADMIN}/status", "keeper", "keeper-secret-123").status_code == 200
        )

        body = json.dumps(allow("admin:*", "*")).encode()
        put = signed(url, "POST", f"{ADMIN}/policy/add?name=ghost-policy", body=body)
        assert 400 <= put.status_code < 600, put.text
        replaced = signed(url, "POST", f"{ADMIN}/policy/add?name=status", body=body)
        assert 400 <= replaced.status_code < 600, replaced.text
        dropped = signed(url, "POST", f"{ADMIN}/policy/remove?name=status")
        assert 400 <= dropped.status_code < 600, dropped.text
        assert policy_names(url) == {"status"}
        listed = signed(url, "GET", f"{ADMIN}/policy/list").json()["policies"]
        assert listed == [{"name": "status", "policy": allow("admin:KMSStatus", "*")}]
        # The keeper's policy still applies as it was: status yes, key/list no.
        assert (
            signed(url, "GET", f"{ADMIN}/status", "keeper", "keeper-secret-123").status_code == 200
        )
        assert (
            signed(url, "GET", f"{ADMIN}/key/list", "keeper", "keeper-secret-123").status_code
            == 403
        )
        assert users_json.read_bytes() == before

        obstacle.rmdir()
        assert add_user(url, "ghost", "ghost-secret-123", ["status"]).status_code == 200
        assert signed(url, "GET", f"{ADMIN}/status", "ghost", "ghost-secret-123").status_code == 200
        assert signed(url, "POST", f"{ADMIN}/user/remove?accessKey=keeper").status_code == 200
        assert user_names(url) == {"ghost"}
    finally:
        server.stop()


def test_lone_surrogate_secret_is_refused_and_the_store_keeps_working(srv: KmsThread) -> None:
    """`"secretKey": "abcdefgh\\ud800"` is valid JSON that json.loads turns into a lone surrogate,
    which cannot be encoded: refused up front (by the body parser or by the store, whichever
    sees it first), and later changes are not broken by it."""
    body = b'{"policies": [], "secretKey": "abcdefgh\\ud800"}'
    invalid_request(signed(srv.url, "POST", f"{ADMIN}/user/add?accessKey=surrogate", body=body))
    body = b'{"accessKey": "ab\\udfff", "policies": []}'
    invalid_request(signed(srv.url, "POST", f"{ADMIN}/user/add", body=body))
    assert "surrogate" not in user_names(srv.url)

    assert add_user(srv.url, "after-surrogate", "a-normal-secret-1", []).status_code == 200
    assert "after-surrogate" in user_names(srv.url)
    put = signed(
        srv.url, "POST", f"{ADMIN}/policy/add?name=after-surrogate",
        body=json.dumps(allow("admin:KMSStatus", "*")).encode(),
    )  # fmt: skip
    assert put.status_code == 200, put.text


# -- the store itself -----------------------------------------------------------------------------


def test_store_is_unchanged_when_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    master = bytes(range(32))
    store = UserStore(tmp_path, master)
    store.set_policy("p", allow("kms:Decrypt", "*"))
    store.add_user("kept", "kept-secret-1", ["p"])

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(users_module, "write_private_file", disk_full)
    for change in (
        lambda: store.add_user("new", "new-secret-1", ["p"]),
        lambda: store.remove_user("kept"),
        lambda: store.set_policy("q", allow("*", "*")),
        lambda: store.set_policy("p", allow("*", "*")),
        lambda: store.remove_policy("p"),
    ):
        with pytest.raises(OSError) as exc:
            change()
        assert exc.value.errno == errno.ENOSPC
        assert [u.access_key for u in store.list_users()] == ["kept"]
        assert store.secret_for("new") is None and store.secret_for("kept") == "kept-secret-1"
        assert [p.name for p in store.list_policies()] == ["p"]
        assert json.loads(store.list_policies()[0].document) == allow("kms:Decrypt", "*")
    monkeypatch.undo()
    # A second store on the same file (another worker, or a restart) sees what the first shows.
    assert [u.access_key for u in UserStore(tmp_path, master).list_users()] == ["kept"]
    store.add_user("new", "new-secret-1", ["p"])
    assert UserStore(tmp_path, master).secret_for("new") == "new-secret-1"


def test_store_refuses_access_keys_and_policy_names_outside_ascii(tmp_path: Path) -> None:
    store = UserStore(tmp_path, bytes(32))
    for name in ("caféx", "ab\u0663", "\uff21bc", "ab\udfff", "ab", "a" * 129, "a b", "a/b"):
        with pytest.raises(InvalidRequest, match="accessKey"):
            store.add_user(name, "a-fine-secret", [])
    for name in ("pü", "\u0663", "\uff21", "p\udfff", "", "a" * 129, "a b", "a/b"):
        with pytest.raises(InvalidRequest, match="policy name"):
            store.set_policy(name, allow("*", "*"))
    assert store.list_users() == [] and store.list_policies() == []
    store.set_policy("A-z.0_9", allow("*", "*"))
    store.add_user("A-z.0_9", "a-fine-secret", ["A-z.0_9"])
    assert [u.access_key for u in store.list_users()] == ["A-z.0_9"]


def test_store_refuses_a_lone_surrogate_secret(tmp_path: Path) -> None:
    store = UserStore(tmp_path, bytes(32))
    with pytest.raises(InvalidRequest, match="secretKey"):
        store.add_user("someone", "abcdefgh\ud800", [])
    assert store.list_users() == []
    store.add_user("someone", "abcdefgh", [])  # the store is not stuck on the refused secret
    assert UserStore(tmp_path, bytes(32)).secret_for("someone") == "abcdefgh"


def test_users_file_with_a_lone_surrogate_secret_is_refused_at_start(tmp_path: Path) -> None:
    """It could never sign a request (the secret is encoded for the HMAC): say so at start."""
    users_file = tmp_path / "users.json"
    entry = {"access_key": "filed", "secret_key": "abcdefgh\ud800", "policies": []}
    users_file.write_text(json.dumps({"users": [entry]}))  # ASCII, with the escape \ud800
    with pytest.raises(InvalidRequest, match="secret_key of filed"):
        UserStore(tmp_path / "data", bytes(32), users_file)
