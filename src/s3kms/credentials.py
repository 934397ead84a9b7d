"""The root credentials: from the environment or config file, else generated once into the data dir.

There is no built-in default password. Generated credentials are written to
`<data-dir>/credentials` (mode 0600) and printed once at the first start.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from s3kms.fsutil import write_private_file

CREDENTIALS_FILE = "credentials"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)


def generate() -> Credentials:
    access = "S3KMS" + base64.b32encode(os.urandom(10)).decode().rstrip("=")
    return Credentials(access, secrets.token_urlsafe(30))


def read_file(data_dir: Path) -> Credentials | None:
    path = data_dir / CREDENTIALS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return Credentials(data["access_key"], data["secret_key"])


MIN_PASSWORD = 8  # characters of S3KMS_ROOT_PASSWORD; dev mode (`--dev`) allows any length


def check_given(user: str | None, password: str | None, *, min_length: int = MIN_PASSWORD) -> bool:
    """Whether root credentials are given (S3KMS_ROOT_USER/S3KMS_ROOT_PASSWORD or the config
    file); ValueError when they are given but unusable (shorter than `min_length`)."""
    if not (user or password):
        return False
    if not (user and password):
        raise ValueError("S3KMS_ROOT_USER and S3KMS_ROOT_PASSWORD must be set together")
    if len(password) < min_length:
        raise ValueError(
            f"S3KMS_ROOT_PASSWORD must be at least {min_length} characters, it has "
            f"{len(password)} (only `s3kms server --dev` allows a shorter one)"
        )
    return True


def load_root(
    data_dir: Path, user: str | None, password: str | None, *, min_length: int = MIN_PASSWORD
) -> tuple[Credentials, bool]:
    """The root credentials and whether they were generated just now."""
    if check_given(user, password, min_length=min_length):
        assert user is not None and password is not None
        return Credentials(user, password), False
    existing = read_file(data_dir)
    if existing is not None:
        return existing, False
    creds = generate()
    payload = {"access_key": creds.access_key, "secret_key": creds.secret_key}
    write_private_file(data_dir / CREDENTIALS_FILE, json.dumps(payload).encode() + b"\n")
    return creds, True
