"""Users besides root: access keys, their secrets, and the policies attached to them.

Users and policies come from two places:
- an operator's file (`--users-file`, JSON or TOML), read at start and never written:
      {"policies": {"app-decrypt": {IAM-style document}},
       "users": [{"access_key": "app", "secret_key": "...", "policies": ["app-decrypt"]}]}
- the admin routes (`.../kms/user/add`, `user/remove`, `user/list`, `policy/add`, `policy/remove`,
  `policy/list`), stored in `<data-dir>/users.json` (mode 0600, written atomically), each secret
  sealed with AES-256-GCM under a key derived (HKDF) from the master key.

SigV4 needs the secret itself to check a signature, so secrets are encrypted, not hashed. A change
made through one worker process is seen by the others on their next request by a non-root user:
the server's store shares a change counter with the other workers (`users.gen`, memory-mapped
like the keystore's), which every change bumps after the file is replaced, so a request reads
one integer instead of calling stat() on the file (that was a tenth of a user's request). The
file is still compared (inode, modification time, size) at most once a second, for a file
replaced by other means; a store without a counter compares it on every request.

A change is written to `users.json` first and only then made in memory: when the write fails
(disk full, read-only), the OSError reaches the caller and the store is as it was.

A user may also have client-certificate identities (hex SHA-256 of a certificate's public key,
auth/certificates.py) on each mutual-TLS surface: `kes_identities` (the KES API, auth/kes.py) and
`kmip_identities` (the KMIP API, auth/kmip.py). A client presenting such a certificate on that
surface acts as that user, with its policies (`.../kms/kes/identity/add`,
`.../kms/kmip/identity/add`, `s3kms kes|kmip identity add`; in the operator's file, a user's
`"kes_identities": [...]`, `"kmip_identities": [...]`). On each surface an identity names at most
one user; the surfaces are independent: one certificate may be a KES identity of one user and a
KMIP identity of another, or of the same. They live in the same file and reach every worker
through the same counter as users and policies.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from s3kms.access.documents import Policy, parse_policy
from s3kms.auth.certificates import IDENTITY_RE
from s3kms.config import read_toml
from s3kms.crypto import aead
from s3kms.errors import InvalidRequest, KeyAlreadyExists, KMSError
from s3kms.fsutil import write_private_file
from s3kms.keystore.generation import Generation

USERS_FILE = "users.json"
USERS_GENERATION_FILE = "users.gen"
RESTAT_SECONDS = 1.0  # with a counter: how often the file itself is compared all the same
_AAD = b"s3kms-user-secret\x00"
# ASCII only: str.isalnum would also take letters and digits of other scripts (ü, ٣).
_ACCESS_KEY_RE = re.compile(r"[A-Za-z0-9._-]{3,128}")
_POLICY_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
# The surfaces whose clients are named by a certificate identity (the lower-case hex SHA-256 of a
# certificate's SubjectPublicKeyInfo, auth/certificates.py), each with its own identities.
IdentitySurface = Literal["kes", "kmip"]
IDENTITY_SURFACES: tuple[IdentitySurface, ...] = ("kes", "kmip")
SURFACE_NAMES: dict[IdentitySurface, str] = {"kes": "KES", "kmip": "KMIP"}
MAX_IDENTITIES = 100  # per user and surface


class UserNotFound(KMSError):
    code = "KMSUserNotFound"
    status = 404
    aws_type = "NotFoundException"
    default_message = "The specified user does not exist"


@dataclass(frozen=True)
class User:
    access_key: str
    secret_key: str = field(repr=False)
    policies: tuple[str, ...]
    managed: bool  # True: added through the API (removable); False: from the operator's file
    kes_identities: tuple[str, ...] = ()  # KES client identities acting as this user
    kmip_identities: tuple[str, ...] = ()  # KMIP client identities acting as this user

    def identities(self, surface: IdentitySurface) -> tuple[str, ...]:
        """The client-certificate identities acting as this user on `surface`."""
        return self.kmip_identities if surface == "kmip" else self.kes_identities

    def with_identities(self, surface: IdentitySurface, identities: tuple[str, ...]) -> User:
        if surface == "kmip":
            return replace(self, kmip_identities=identities)
        return replace(self, kes_identities=identities)


# The users.json and users-file field of each surface's identities (and the User field).
_FIELDS: dict[IdentitySurface, str] = {"kes": "kes_identities", "kmip": "kmip_identities"}


def _validate_access_key(access_key: str) -> None:
    if _ACCESS_KEY_RE.fullmatch(access_key) is None:
        raise InvalidRequest("accessKey must be 3-128 characters of A-Z a-z 0-9 . _ -")


def _validate_policy_name(name: str) -> None:
    if _POLICY_NAME_RE.fullmatch(name) is None:
        raise InvalidRequest("policy name must be 1-128 characters of A-Z a-z 0-9 . _ -")


def _validate_encodable(value: str, what: str) -> None:
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate, e.g. from the JSON escape "\ud800"
        raise InvalidRequest(f"{what} must be valid Unicode (no lone surrogates)") from None


def _validate_identity(identity: str) -> None:
    if IDENTITY_RE.fullmatch(identity) is None:
        raise InvalidRequest(
            "identity must be 64 lower-case hexadecimal digits (the SHA-256 of a public key)"
        )


def _validate_secret(secret_key: str) -> None:
    if len(secret_key) < 8:
        raise InvalidRequest("secretKey must be at least 8 characters")
    _validate_encodable(secret_key, "secretKey")


class UserStore:
    def __init__(
        self,
        data_dir: Path,
        master_key: bytes,
        users_file: Path | None = None,
        *,
        generation: Generation | None = None,
    ) -> None:
        self._path = data_dir / USERS_FILE
        self._generation = generation  # shared with the other workers (the server's store)
        self._seen_generation = -1
        self._next_stat = 0.0
        key = HKDF(hashes.SHA256(), 32, salt=None, info=b"s3kms users v1").derive(master_key)
        self._aead = AESGCM(key)
        self._static_users: dict[str, User] = {}
        self._static_policies: dict[str, Policy] = {}
        if users_file is not None:
            self._load_static(users_file)
        self._stamp: tuple[int, int, int] | None = (-1, -1, -1)
        self._users: dict[str, User] = {}
        self._policies: dict[str, Policy] = {}
        # Per surface: identity -> access key.
        self._identities: dict[IdentitySurface, dict[str, str]] = {s: {} for s in IDENTITY_SURFACES}
        self._refresh()

    def __repr__(self) -> str:
        return f"UserStore(path={str(self._path)!r}, users={len(self._users)})"

    # -- reading ----------------------------------------------------------------------------------

    def _load_static(self, path: Path) -> None:
        self._static_users, self._static_policies = read_users_file(path)

    def _refresh(self) -> None:
        if self._generation is not None:
            seen = self._generation.current()  # read before the file: a bump follows a replace
            now = time.monotonic()
            if seen == self._seen_generation and now < self._next_stat:
                return
            self._seen_generation, self._next_stat = seen, now + RESTAT_SECONDS
        # The file is replaced by rename on every change, so its inode changes too: mtime alone
        # can miss a change made within the filesystem's timestamp granularity (a few ms).
        try:
            st = self._path.stat()
            stamp: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return
        users = dict(self._static_users)
        policies = dict(self._static_policies)
        if stamp is not None:
            stored = json.loads(self._path.read_text())
            for name, document in stored.get("policies", {}).items():
                policies[name] = parse_policy(name, document)
            for access, entry in stored.get("users", {}).items():
                sealed = base64.b64decode(entry["secret"])
                secret = aead.open_sealed(self._aead, sealed, _AAD + access.encode()).decode()
                users[access] = User(
                    access, secret, tuple(entry["policies"]), managed=True,
                    kes_identities=tuple(entry.get("kes_identities", ())),
                    kmip_identities=tuple(entry.get("kmip_identities", ())),
                )  # fmt: skip
        owners = {s: {i: u.access_key for u in users.values() for i in u.identities(s)}
                  for s in IDENTITY_SURFACES}  # fmt: skip
        self._users, self._policies, self._identities, self._stamp = users, policies, owners, stamp

    def secret_for(self, access_key: str) -> str | None:
        self._refresh()
        user = self._users.get(access_key)
        return user.secret_key if user else None

    def policies_for(self, access_key: str) -> list[Policy]:
        self._refresh()
        user = self._users.get(access_key)
        if user is None:
            return []
        return [self._policies[name] for name in user.policies if name in self._policies]

    def user_for_identity(self, surface: IdentitySurface, identity: str) -> str | None:
        """The access key of the user an identity is attached to on `surface`, or None."""
        self._refresh()
        return self._identities[surface].get(identity)

    def list_users(self) -> list[User]:
        self._refresh()
        return sorted(self._users.values(), key=lambda u: u.access_key)

    def list_policies(self) -> list[Policy]:
        self._refresh()
        return sorted(self._policies.values(), key=lambda p: p.name)

    # -- writing (admin routes) -------------------------------------------------------------------

    def _commit(self, users: dict[str, User], policies: dict[str, Policy]) -> None:
        """Write `users` and `policies` to users.json, then adopt them.

        Nothing in memory changes before the file is replaced: if encoding or writing fails
        (InvalidRequest, OSError), the error propagates and the store is as it was.
        """
        try:
            sealed = {
                u.access_key: {
                    "secret": base64.b64encode(
                        aead.seal(self._aead, u.secret_key.encode(), _AAD + u.access_key.encode())
                    ).decode(),
                    "policies": list(u.policies),
                    **{f: list(u.identities(s)) for s, f in _FIELDS.items() if u.identities(s)},
                }
                for u in users.values()
                if u.managed
            }
        except UnicodeEncodeError:  # every route validates first; this is the last line
            raise InvalidRequest("user names and secrets must be valid Unicode") from None
        stored = {
            p.name: json.loads(p.document)
            for name, p in policies.items()
            if name not in self._static_policies
        }
        # ensure_ascii (the default): the file is ASCII whatever the documents hold.
        data = json.dumps({"users": sealed, "policies": stored}).encode()
        write_private_file(self._path, data)
        if self._generation is not None:
            self._generation.bump()  # after the replace: the other workers re-read it now
        self._users, self._policies = users, policies
        self._stamp = (-1, -1, -1)
        self._seen_generation = -1
        self._refresh()

    def add_user(self, access_key: str, secret_key: str, policies: Sequence[str]) -> User:
        self._refresh()
        _validate_access_key(access_key)
        _validate_secret(secret_key)
        if access_key in self._users:
            raise KeyAlreadyExists(f"user {access_key} already exists")
        missing = [p for p in policies if p not in self._policies]
        if missing:
            raise InvalidRequest(f"unknown policy: {', '.join(missing)}")
        user = User(access_key, secret_key, tuple(policies), managed=True)
        self._commit({**self._users, access_key: user}, self._policies)
        return user

    def remove_user(self, access_key: str) -> None:
        self._refresh()
        user = self._users.get(access_key)
        if user is None:
            raise UserNotFound
        if not user.managed:
            raise InvalidRequest("this user comes from the users file; remove it there")
        users = {k: u for k, u in self._users.items() if k != access_key}
        self._commit(users, self._policies)

    def add_identity(self, surface: IdentitySurface, access_key: str, identity: str) -> User:
        """Attach an identity on `surface` to a user added through the API; on each surface an
        identity names one user (the surfaces are independent of each other)."""
        self._refresh()
        _validate_identity(identity)
        name = SURFACE_NAMES[surface]
        user = self._users.get(access_key)
        if user is None:
            raise UserNotFound
        if not user.managed:
            raise InvalidRequest("this user comes from the users file; change it there")
        owner = self._identities[surface].get(identity)
        if owner is not None:
            raise KeyAlreadyExists(
                f"{name} identity {identity} is already attached to user {owner}"
            )
        held = user.identities(surface)
        if len(held) >= MAX_IDENTITIES:
            raise InvalidRequest(f"a user has at most {MAX_IDENTITIES} {name} identities")
        changed = user.with_identities(surface, (*held, identity))
        self._commit({**self._users, access_key: changed}, self._policies)
        return changed

    def remove_identity(self, surface: IdentitySurface, access_key: str, identity: str) -> User:
        self._refresh()
        user = self._users.get(access_key)
        if user is None:
            raise UserNotFound
        held = user.identities(surface)
        if identity not in held:
            raise InvalidRequest(
                f"{SURFACE_NAMES[surface]} identity {identity} is not attached to user {access_key}"
            )
        if not user.managed:
            raise InvalidRequest("this user comes from the users file; change it there")
        changed = user.with_identities(surface, tuple(i for i in held if i != identity))
        self._commit({**self._users, access_key: changed}, self._policies)
        return changed

    def set_policy(self, name: str, document: str | dict[str, Any]) -> Policy:
        self._refresh()
        _validate_policy_name(name)
        if name in self._static_policies:
            raise InvalidRequest("this policy comes from the users file; change it there")
        policy = parse_policy(name, document)
        self._commit(self._users, {**self._policies, name: policy})
        return policy

    def clear(self) -> None:
        """Dev mode (`POST /_s3kms/reset`): remove every user and policy added through the API
        (those of the users file stay: it is read at start)."""
        self._refresh()
        static = {k: u for k, u in self._users.items() if not u.managed}
        self._commit(static, dict(self._static_policies))

    def remove_policy(self, name: str) -> None:
        self._refresh()
        if name not in self._policies or name in self._static_policies:
            raise InvalidRequest(f"no removable policy named {name}")
        policies = {k: p for k, p in self._policies.items() if k != name}
        self._commit(self._users, policies)


def read_users_file(path: Path) -> tuple[dict[str, User], dict[str, Policy]]:
    """The users and policies of an operator's file (`--users-file`, JSON or TOML).

    Raises OSError, ValueError (not JSON/TOML), KeyError/TypeError (a missing or mistyped field)
    or InvalidRequest (a bad name or policy).
    """
    text = path.read_text()
    doc: Mapping[str, Any] = read_toml(path) if path.suffix == ".toml" else json.loads(text)
    policies: dict[str, Policy] = {}
    users: dict[str, User] = {}
    owners: dict[IdentitySurface, dict[str, str]] = {s: {} for s in IDENTITY_SURFACES}
    for name, document in dict(doc.get("policies", {})).items():
        policies[name] = parse_policy(name, document)
    for entry in doc.get("users", []):
        access, secret = entry["access_key"], entry["secret_key"]
        _validate_access_key(access)
        _validate_encodable(secret, f"the secret_key of {access}")
        users[access] = User(
            access, secret, tuple(entry.get("policies", [])), managed=False,
            kes_identities=_file_identities(entry, "kes", access, owners["kes"]),
            kmip_identities=_file_identities(entry, "kmip", access, owners["kmip"]),
        )  # fmt: skip
    return users, policies


def _file_identities(
    entry: Mapping[str, Any], surface: IdentitySurface, access: str, owners: dict[str, str]
) -> tuple[str, ...]:
    """A users-file user's identities on `surface` (lower-cased); InvalidRequest for a bad one,
    too many, or one another user of the file has on that surface. Records them in `owners`."""
    identities = tuple(dict.fromkeys(str(i).lower() for i in entry.get(_FIELDS[surface], [])))
    name = SURFACE_NAMES[surface]
    if len(identities) > MAX_IDENTITIES:
        raise InvalidRequest(f"user {access} has more than {MAX_IDENTITIES} {name} identities")
    for identity in identities:
        _validate_identity(identity)
        owner = owners.setdefault(identity, access)
        if owner != access:
            raise InvalidRequest(
                f"{name} identity {identity} is given to users {owner} and {access}: it names one"
            )
    return identities


def generate_secret() -> str:
    return base64.urlsafe_b64encode(os.urandom(30)).decode()
