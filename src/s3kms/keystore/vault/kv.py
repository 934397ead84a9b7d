"""One KV version 2 mount: records (JSON objects) at paths below it, versioned, and written with
check-and-set on the version, so concurrent writers on different nodes cannot lose each other's
updates.

Each write stores a random `write_id` in the record: when a write had to be resent (an earlier try
may have been carried out) and the resend then loses its check-and-set, the record's `write_id`
tells whether the earlier try was this write.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from s3kms.keystore.vault.auth import VaultAuth


@dataclass(slots=True)
class Record:
    """A record's data and its KV version."""

    data: dict[str, Any]
    version: int


class KVStore:
    """Read, check-and-set write, delete and list the records of the KV v2 engine at `mount`."""

    def __init__(self, auth: VaultAuth, mount: str) -> None:
        self._auth = auth
        self.mount = mount

    async def read(self, path: str) -> Record | None:
        """The record at `path`, or None (none there, or its current version deleted)."""
        resp = await self._auth.call("GET", f"{self.mount}/data/{path}")
        if resp.not_found:
            return None
        if resp.status != 200:
            raise resp.unexpected(f"read {self.mount}/data/{path}")
        payload = resp.data.get("data")
        if not isinstance(payload, dict):  # a deleted or destroyed version
            return None
        version = int((resp.data.get("metadata") or {}).get("version") or 0)
        return Record(payload, version)

    async def write(self, path: str, data: dict[str, Any], cas: int) -> int | None:
        """Check-and-set write; the new KV version, or None when `cas` is not the current one."""
        write_id = uuid.uuid4().hex
        body = {"options": {"cas": cas}, "data": {**data, "write_id": write_id}}
        resp = await self._auth.call("POST", f"{self.mount}/data/{path}", json=body)
        if resp.status in (200, 204):
            return int(resp.data.get("version") or cas + 1)
        if resp.status == 400 and "check-and-set" in resp.errors:
            if resp.resent:
                # An earlier attempt may have succeeded and this resend lost to it.
                current = await self.read(path)
                if current is not None and current.data.get("write_id") == write_id:
                    return current.version
            return None
        raise resp.unexpected(f"write {self.mount}/data/{path}")

    async def create(self, path: str, data: dict[str, Any]) -> bool:
        """Write `data` at `path` only if nothing is there (check-and-set 0, no `write_id`: for
        entries whose content never changes). True: written; False: an entry was there (this
        write's earlier try, resent, or another's), which a check-and-set 0 leaves as it is
        without writing anything to storage."""
        body = {"options": {"cas": 0}, "data": data}
        resp = await self._auth.call("POST", f"{self.mount}/data/{path}", json=body)
        if resp.status in (200, 204):
            return True
        if resp.status == 400 and "check-and-set" in resp.errors:
            return False
        raise resp.unexpected(f"write {self.mount}/data/{path}")

    async def delete(self, path: str) -> None:
        """Delete the record at `path` with all its versions; nothing there is no error."""
        resp = await self._auth.call("DELETE", f"{self.mount}/metadata/{path}")
        if resp.status not in (200, 204) and not resp.not_found:
            raise resp.unexpected(f"delete {self.mount}/metadata/{path}")

    async def list_dir(self, path: str) -> list[str]:
        """The names directly below `path` (a folder's ends with "/"); [] when there are none."""
        resp = await self._auth.call(
            "GET", f"{self.mount}/metadata/{path}", params={"list": "true"}
        )
        if resp.not_found:
            return []
        if resp.status != 200:
            raise resp.unexpected(f"list {self.mount}/metadata/{path}")
        keys = resp.data.get("keys") or []
        return [str(k) for k in keys]

    async def list_tree(self, path: str, base: str = "") -> list[str]:
        """Every record name below `path`, folders walked (`a/b`), relative to `path`."""
        out: list[str] = []
        for entry in await self.list_dir(f"{path}/{quote(base, safe='/')}".rstrip("/")):
            if entry.endswith("/"):
                out += await self.list_tree(path, f"{base}{entry}")
            else:
                out.append(f"{base}{entry}")
        return out
