"""The Local backend's master key: where it comes from, and how a wrong one is detected.

The key is 32 random bytes written as base64 (in `S3KMS_MASTER_KEY`, a `--master-key-file`, or the
generated `<data-dir>/master.key`). There is never a fallback or all-zero key: a missing or malformed
key stops the server. A check value (HMAC-SHA256 of a fixed label) stored beside the keys tells a
wrong key from the right one before anything is decrypted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from s3kms.crypto.aead import KEY_SIZE, new_key
from s3kms.fsutil import write_private_file

_CHECK_LABEL = b"s3kms master key check v1"


class MasterKeyError(Exception):
    """The master key is missing, malformed or not the one the keystore was made with."""


@dataclass(frozen=True)
class MasterKey:
    material: bytes
    source: str  # where it came from, for messages (never the key itself)
    generated: bool = False

    def __repr__(self) -> str:
        return f"MasterKey(source={self.source!r})"

    def check_value(self) -> str:
        return hmac.new(self.material, _CHECK_LABEL, hashlib.sha256).hexdigest()

    def matches(self, check_value: str) -> bool:
        return hmac.compare_digest(self.check_value(), check_value)


def parse(text: str, source: str) -> MasterKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"master key from {source} is not valid base64") from None
    if len(raw) != KEY_SIZE:
        raise MasterKeyError(
            f"master key from {source} must be base64 of {KEY_SIZE} bytes, got {len(raw)}"
        )
    if raw == bytes(KEY_SIZE):
        raise MasterKeyError(f"master key from {source} is all zeros")
    return MasterKey(raw, source)


def _read(path: Path) -> str:
    text = path.read_bytes()
    try:
        return text.decode("ascii")
    except UnicodeDecodeError:
        raise MasterKeyError(f"master key from {path} is not valid base64") from None


def find(data_dir: Path, key_file: Path | None, env: str | None) -> MasterKey | None:
    """The master key from the environment, an explicit file or `<data-dir>/master.key`, read
    without writing anything; None when none of them exists (a first start generates one)."""
    if env:
        return parse(env, "S3KMS_MASTER_KEY")
    if key_file is not None:
        try:
            return parse(_read(key_file), str(key_file))
        except OSError as exc:
            raise MasterKeyError(
                f"cannot read master key file {key_file}: {exc.strerror or exc}"
            ) from None
    default = data_dir / "master.key"
    try:
        return parse(_read(default), str(default))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MasterKeyError(f"cannot read master key file {default}: {exc.strerror}") from None


def load(data_dir: Path, key_file: Path | None, env: str | None) -> MasterKey:
    """Find the master key: environment, then an explicit file, then `<data-dir>/master.key`.

    Only when none of them exists is a new key generated into the data directory.
    """
    found = find(data_dir, key_file, env)
    if found is not None:
        return found
    default = data_dir / "master.key"
    material = new_key()
    write_private_file(default, base64.b64encode(material) + b"\n")
    return MasterKey(material, str(default), generated=True)


def generate_text() -> str:
    """A new master key in the form the environment variable and key files take."""
    return base64.b64encode(os.urandom(KEY_SIZE)).decode()
