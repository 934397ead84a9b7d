"""KMIP identities of users: the store (`users.json`, the users file), the principal a KMIP client
certificate stands for (auth/kmip.py), and the admin routes `kmip/identity/add|remove|list` on a
real server. The rule: on each surface an identity names at most one user; the KES and the KMIP
identities are independent of each other (one certificate may be both, of one user or of two)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from s3kms.auth.certificates import identity_of, identity_of_spki, normalize_identity
from s3kms.auth.identity import Authenticator
from s3kms.auth.kes import KesAuthenticator
from s3kms.auth.kmip import KmipAuthenticator
from s3kms.client import Client
from s3kms.clock import SystemClock
from s3kms.errors import InvalidRequest, KeyAlreadyExists, SlowDown
from s3kms.users import MAX_IDENTITIES, UserNotFound, UserStore, read_users_file

from kesclient import self_signed_certificate
from kmsserver import ROOT_PASSWORD, ROOT_USER, KmsThread, signed_admin, thread_settings

MASTER = bytes(range(32))
POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}]}  # fmt: skip


def hexid(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def store_with_users(path: Path, *names: str) -> UserStore:
    store = UserStore(path, MASTER)
    store.set_policy("decrypt", POLICY)
    for name in names:
        store.add_user(name, "a-secret-key-123", ["decrypt"])
    return store


# -- the store ----------------------------------------------------------------------------------------


def test_kmip_identities_are_added_listed_removed_and_persist(tmp_path: Path) -> None:
    store = store_with_users(tmp_path, "app", "other")
    first, second = hexid("one"), hexid("two")
    store.add_identity("kmip", "app", first)
    changed = store.add_identity("kmip", "app", second)
    assert changed.kmip_identities == (first, second) and changed.kes_identities == ()
    assert store.user_for_identity("kmip", first) == "app"
    assert store.user_for_identity("kes", first) is None  # a KMIP identity only
    # users.json holds them under their own field, and a new store (a restart) reads them.
    stored = json.loads((tmp_path / "users.json").read_text())["users"]["app"]
    assert stored["kmip_identities"] == [first, second] and "kes_identities" not in stored
    reloaded = UserStore(tmp_path, MASTER)
    assert reloaded.user_for_identity("kmip", second) == "app"
    assert [u.kmip_identities for u in reloaded.list_users() if u.access_key == "app"] == [
        (first, second)
    ]
    reloaded.remove_identity("kmip", "app", first)
    again = UserStore(tmp_path, MASTER)
    assert again.user_for_identity("kmip", first) is None
    assert again.user_for_identity("kmip", second) == "app"
    # A change made through one store is seen by another on the same directory.
    store.remove_identity("kmip", "app", second)
    assert again.user_for_identity("kmip", second) is None
    assert (
        "kmip_identities" not in json.loads((tmp_path / "users.json").read_text())["users"]["app"]
    )


def test_an_identity_names_one_user_per_surface(tmp_path: Path) -> None:
    """Per surface: a second user cannot take a KMIP identity another has; the same certificate
    may all the same be a KES identity, of that user or of another."""
    store = store_with_users(tmp_path, "alice", "bob")
    shared = hexid("shared")
    store.add_identity("kmip", "alice", shared)
    with pytest.raises(KeyAlreadyExists, match=r"KMIP identity .* already attached to user alice"):
        store.add_identity("kmip", "bob", shared)
    with pytest.raises(KeyAlreadyExists):
        store.add_identity("kmip", "alice", shared)  # twice to the same user: also one
    store.add_identity("kes", "bob", shared)  # another surface: independent
    store.add_identity("kes", "alice", hexid("alice-kes"))
    assert store.user_for_identity("kmip", shared) == "alice"
    assert store.user_for_identity("kes", shared) == "bob"
    with pytest.raises(KeyAlreadyExists, match=r"KES identity .* already attached to user bob"):
        store.add_identity("kes", "alice", shared)
    # Removing it from one surface leaves the other.
    store.remove_identity("kes", "bob", shared)
    assert store.user_for_identity("kes", shared) is None
    assert store.user_for_identity("kmip", shared) == "alice"
    with pytest.raises(InvalidRequest, match=r"KMIP identity .* is not attached to user bob"):
        store.remove_identity("kmip", "bob", shared)
    # The same user may have one certificate on both surfaces.
    store.add_identity("kes", "alice", shared)
    alice = next(u for u in UserStore(tmp_path, MASTER).list_users() if u.access_key == "alice")
    assert shared in alice.kes_identities and alice.kmip_identities == (shared,)


def test_kmip_identity_refusals(tmp_path: Path) -> None:
    store = store_with_users(tmp_path, "app")
    with pytest.raises(InvalidRequest, match="64 lower-case hexadecimal digits"):
        store.add_identity("kmip", "app", "ABC")
    with pytest.raises(UserNotFound):
        store.add_identity("kmip", "nobody", hexid("x"))
    with pytest.raises(UserNotFound):
        store.remove_identity("kmip", "nobody", hexid("x"))
    for n in range(MAX_IDENTITIES):
        store.add_identity("kmip", "app", hexid(f"id-{n}"))
    with pytest.raises(InvalidRequest, match=f"at most {MAX_IDENTITIES} KMIP identities"):
        store.add_identity("kmip", "app", hexid("one-too-many"))
    store.add_identity("kes", "app", hexid("one-too-many"))  # the KES ones are counted apart
    # A removed user takes its identities with it.
    store.remove_user("app")
    assert store.user_for_identity("kmip", hexid("id-0")) is None


def test_the_users_file_gives_kmip_identities(tmp_path: Path) -> None:
    identity, other = hexid("file-kmip"), hexid("file-other")
    users_file = tmp_path / "users.json"
    users_file.write_text(json.dumps({"users": [
        {"access_key": "filed", "secret_key": "a-secret-key-123", "kes_identities": [identity],
         "kmip_identities": [identity.upper()]},
        {"access_key": "second", "secret_key": "a-secret-key-123", "kmip_identities": [other]},
    ]}))  # fmt: skip
    users, _ = read_users_file(users_file)
    assert users["filed"].kmip_identities == (identity,) and users["filed"].kes_identities == (
        identity,
    )
    (tmp_path / "data").mkdir()
    store = UserStore(tmp_path / "data", MASTER, users_file)
    assert store.user_for_identity("kmip", identity) == "filed"
    assert store.user_for_identity("kmip", other) == "second"
    with pytest.raises(InvalidRequest, match="comes from the users file"):
        store.add_identity("kmip", "filed", hexid("new"))
    with pytest.raises(InvalidRequest, match="comes from the users file"):
        store.remove_identity("kmip", "filed", identity)
    store.add_user("api-user", "a-secret-key-123", [])
    with pytest.raises(KeyAlreadyExists, match="attached to user filed"):
        store.add_identity("kmip", "api-user", identity)
    # In the file, too, an identity names one user per surface (on the two surfaces it may).
    clash = tmp_path / "clash.toml"
    clash.write_text(
        f'[[users]]\naccess_key = "one"\nsecret_key = "a-secret-key-123"\n'
        f'kmip_identities = ["{other}"]\n'
        f'[[users]]\naccess_key = "two"\nsecret_key = "a-secret-key-123"\n'
        f'kmip_identities = ["{other}"]\n'
    )
    with pytest.raises(InvalidRequest, match=r"KMIP identity .* is given to users one and two"):
        read_users_file(clash)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"users": [
        {"access_key": "one", "secret_key": "a-secret-key-123", "kmip_identities": ["xyz"]}]}))  # fmt: skip
    with pytest.raises(InvalidRequest, match="64 lower-case hexadecimal digits"):
        read_users_file(bad)


# -- the principal of a KMIP identity ---------------------------------------------------------------


def test_a_kmip_identity_is_its_users_principal(tmp_path: Path) -> None:
    store = store_with_users(tmp_path, "app", "kes-only")
    identity = hexid("kmip-client")
    store.add_identity("kmip", "app", identity)
    store.add_identity("kes", "kes-only", hexid("kes-client"))
    auth = Authenticator(ROOT_USER, ROOT_PASSWORD, "us-east-1", SystemClock(), users=store)
    kmip = KmipAuthenticator(auth)
    principal = kmip.principal(identity, source_ip="192.0.2.7")
    assert principal is not None
    assert (principal.access_key, principal.is_root) == ("app", False)
    assert principal.source_ip == "192.0.2.7" and principal.secure
    assert [p.name for p in principal.policies] == ["decrypt"]
    assert principal.may("kms:Decrypt", "some-key") and not principal.may("kms:CreateKey")
    assert kmip.principal(hexid("unknown"), source_ip=None) is None
    # A KES identity is no KMIP identity, and the other way round.
    assert kmip.principal(hexid("kes-client"), source_ip=None) is None
    assert KesAuthenticator(auth, None).principal(identity, source_ip=None) is None
    # Removed: unknown at once.
    store.remove_identity("kmip", "app", identity)
    assert kmip.principal(identity, source_ip=None) is None


def test_a_kmip_identity_meets_its_users_rate_limit(tmp_path: Path) -> None:
    store = store_with_users(tmp_path, "limited")
    identity = hexid("limited")
    store.add_identity("kmip", "limited", identity)
    auth = Authenticator(
        ROOT_USER, ROOT_PASSWORD, "us-east-1", SystemClock(), users=store, rate_limit=1.0
    )
    kmip = KmipAuthenticator(auth)
    with pytest.raises(SlowDown):
        for _ in range(10):
            assert kmip.principal(identity, source_ip=None) is not None


def test_the_identity_functions_moved_to_certificates() -> None:
    """One identity for every surface: the hex SHA-256 of the certificate's SPKI bytes."""
    key = ec.generate_private_key(ec.SECP256R1())
    der = x509.load_pem_x509_certificate(self_signed_certificate(key)).public_bytes(Encoding.DER)
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert identity_of(der) == identity_of_spki(spki) == hashlib.sha256(spki).hexdigest()
    assert normalize_identity(f"  {identity_of(der).upper()}\n") == identity_of(der)
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        normalize_identity("abc")


# -- the admin routes -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsThread]:
    directory = tmp_path_factory.mktemp("kmip-identities")
    kes_admin = hexid("kes-admin")
    server = KmsThread(thread_settings(directory / "data", kes_admin_identity=kes_admin)).start()
    try:
        yield server
    finally:
        server.stop()


def admin(srv: KmsThread) -> Client:
    return Client(srv.url, ROOT_USER, ROOT_PASSWORD, timeout=30)


def test_kmip_identity_routes(srv: KmsThread) -> None:
    user, second = unique("kmip-app"), unique("kmip-two")
    identity = hexid(user)
    with admin(srv) as kms:
        kms.add_user(user, [], "a-secret-key-123")
        kms.add_user(second, [], "a-secret-key-123")
        added = kms.add_kmip_identity(user, identity.upper())  # stored lower-case
        assert added == {"accessKey": user, "identity": identity, "message": "KMIP identity added"}
        listed = kms.list_kmip_identities()
        assert {"identity": identity, "accessKey": user, "managed": True} in listed
        assert identity not in [i["identity"] for i in kms.list_kes_identities()]
        with pytest.raises(KeyAlreadyExists):
            kms.add_kmip_identity(second, identity)
        with pytest.raises(InvalidRequest):
            kms.add_kmip_identity(second, "not-hex")
        with pytest.raises(UserNotFound):
            kms.add_kmip_identity(unique("nobody"), hexid("n"))
        with pytest.raises(InvalidRequest):
            kms.remove_kmip_identity(second, identity)
        # Per surface: the same identity as a KES identity of the second user.
        assert kms.add_kes_identity(second, identity)["message"] == "KES identity added"
        assert {"identity": identity, "accessKey": second, "managed": True} in (
            kms.list_kes_identities()
        )
        # No admin identity on KMIP: the KES admin identity may be a user's KMIP identity.
        kms.add_kmip_identity(second, hexid("kes-admin"))
        with pytest.raises(InvalidRequest):
            kms.add_kes_identity(second, hexid("kes-admin"))
        removed = kms.remove_kmip_identity(user, identity)
        assert removed == {
            "accessKey": user, "identity": identity, "message": "KMIP identity removed"
        }  # fmt: skip
        assert identity not in [i["identity"] for i in kms.list_kmip_identities()]
        assert {"identity": identity, "accessKey": second, "managed": True} in (
            kms.list_kes_identities()
        )
    # The principal the server's own store resolves.
    kmip = KmipAuthenticator(srv.app.auth)
    found = kmip.principal(hexid("kes-admin"), source_ip=None)
    assert found is not None and found.access_key == second and not found.is_root


@pytest.mark.parametrize("prefix", ["/rustfs/admin/v3/kms", "/minio/admin/v3/kms"])
def test_kmip_identity_routes_on_both_prefixes_in_the_body_too(srv: KmsThread, prefix: str) -> None:
    user = unique("kmip-body")
    identity = hexid(user)
    with admin(srv) as kms:
        kms.add_user(user, [], "a-secret-key-123")
    body = json.dumps({"accessKey": user, "identity": identity}).encode()
    done = signed_admin(srv.url, "POST", f"{prefix}/kmip/identity/add", body=body)
    assert done.status_code == 200, done.text
    listed = signed_admin(srv.url, "GET", f"{prefix}/kmip/identity/list").json()["identities"]
    assert {"identity": identity, "accessKey": user, "managed": True} in listed
    missing = signed_admin(srv.url, "POST", f"{prefix}/kmip/identity/add?accessKey={user}")
    assert missing.status_code == 400
    assert "accessKey and identity are required" in missing.json()["error"]["message"]
    wrong = signed_admin(srv.url, "GET", f"{prefix}/kmip/identity/add?accessKey={user}")
    assert wrong.status_code == 405


def test_kmip_identity_routes_need_manage_users(srv: KmsThread) -> None:
    reader, policy = unique("kmip-reader"), unique("kmip-read-only")
    with admin(srv) as kms:
        kms.put_policy(policy, {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "admin:KMSStatus", "Resource": "*"}]})  # fmt: skip
        kms.add_user(reader, [policy], "reader-secret-123")
    for method, route in (
        ("POST", f"kmip/identity/add?accessKey={reader}&identity={hexid(reader)}"),
        ("POST", f"kmip/identity/remove?accessKey={reader}&identity={hexid(reader)}"),
        ("GET", "kmip/identity/list"),
    ):
        denied = signed_admin(
            srv.url, method, f"/rustfs/admin/v3/kms/{route}", reader, "reader-secret-123"
        )
        assert denied.status_code == 403, (route, denied.text)
    manager, managing = unique("kmip-manager"), unique("kmip-manage")
    with admin(srv) as kms:
        kms.put_policy(managing, {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "admin:KMSManageUsers", "Resource": "*"}]})  # fmt: skip
        kms.add_user(manager, [managing], "manager-secret-123")
    with Client(srv.url, manager, "manager-secret-123") as kms:
        kms.add_kmip_identity(reader, hexid(reader))
        assert {"identity": hexid(reader), "accessKey": reader, "managed": True} in (
            kms.list_kmip_identities()
        )
