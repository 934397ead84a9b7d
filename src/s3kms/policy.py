"""IAM-style access policies: parsing and evaluation, pure functions.

    {"Version": "2012-10-17",
     "Statement": [{"Effect": "Allow", "Action": ["kms:Decrypt", "admin:KMSKeyStatus"],
                    "Resource": ["arn:aws:kms:*:*:key/app-*"]},
                   {"Effect": "Deny", "Action": "kms:*", "Resource": "arn:minio:kms:::secret-*"}]}

Evaluation: an explicit Deny that matches wins; otherwise an Allow that matches allows; otherwise
deny. Actions match case-insensitively (as in IAM), resources case-sensitively; both take the
wildcards `*` (any run of characters) and `?` (one character). A request about a key is checked
against the key's ARN and MinIO's `arn:minio:kms:::<key>`; a request about no key (status, list,
configure) against `*`, which only `"Resource": "*"` matches.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from s3kms.errors import InvalidRequest

VERSIONS = ("2012-10-17", "2008-10-17")


@dataclass(frozen=True)
class Statement:
    allow: bool
    actions: tuple[re.Pattern[str], ...]
    resources: tuple[re.Pattern[str], ...]

    def matches(self, action: str, resources: Sequence[str]) -> bool:
        return any(p.fullmatch(action) for p in self.actions) and any(
            p.fullmatch(r) for p in self.resources for r in resources
        )


@dataclass(frozen=True)
class Policy:
    name: str
    statements: tuple[Statement, ...]
    document: str  # the JSON as given, for listing


def _pattern(text: str, *, ignore_case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in text)
    return re.compile(regex, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _strings(value: Any, field: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        raise InvalidRequest(f"policy {field} must be a non-empty string or list of strings")
    return items


def parse_policy(name: str, document: str | dict[str, Any]) -> Policy:
    """Validate a policy document; every problem is KMSInvalidRequest naming what is wrong."""
    try:
        doc = json.loads(document) if isinstance(document, str) else document
    except ValueError:
        raise InvalidRequest(f"policy {name!r} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidRequest(f"policy {name!r} must be a JSON object")
    if doc.get("Version", VERSIONS[0]) not in VERSIONS:
        raise InvalidRequest(f"policy {name!r}: Version must be one of {', '.join(VERSIONS)}")
    raw_statements = doc.get("Statement")
    if isinstance(raw_statements, dict):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list) or not raw_statements:
        raise InvalidRequest(f"policy {name!r}: Statement must be a non-empty list")
    statements = []
    for raw in raw_statements:
        if not isinstance(raw, dict):
            raise InvalidRequest(f"policy {name!r}: each Statement must be an object")
        effect = raw.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise InvalidRequest(f"policy {name!r}: Effect must be Allow or Deny")
        if "NotAction" in raw or "NotResource" in raw or "Condition" in raw:
            raise InvalidRequest(
                f"policy {name!r}: NotAction, NotResource and Condition are not supported"
            )
        statements.append(
            Statement(
                allow=effect == "Allow",
                actions=tuple(
                    _pattern(a, ignore_case=True) for a in _strings(raw.get("Action"), "Action")
                ),
                resources=tuple(
                    _pattern(r, ignore_case=False)
                    for r in _strings(raw.get("Resource"), "Resource")
                ),
            )
        )
    text = document if isinstance(document, str) else json.dumps(document, sort_keys=True)
    return Policy(name, tuple(statements), text)


def is_allowed(policies: Iterable[Policy], action: str, resources: Sequence[str]) -> bool:
    allowed = False
    for policy in policies:
        for statement in policy.statements:
            if statement.matches(action, resources):
                if not statement.allow:
                    return False  # an explicit Deny wins over every Allow
                allowed = True
    return allowed


def key_resources(key_id: str | None, region: str, account_id: str) -> tuple[str, ...]:
    """The resource names a request is checked against."""
    if key_id is None:
        return ("*",)
    return (f"arn:aws:kms:{region}:{account_id}:key/{key_id}", f"arn:minio:kms:::{key_id}")
