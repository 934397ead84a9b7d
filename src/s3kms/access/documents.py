"""Policy documents, parsed into compiled statements: identity policies and key policies.

    {"Version": "2012-10-17", "Id": "...",
     "Statement": [{"Sid": "...", "Effect": "Allow" | "Deny",
                    "Principal" | "NotPrincipal": "*" | {"AWS": "<arn or account>" | [...]},
                    "Action" | "NotAction": "kms:Decrypt" | [...],
                    "Resource" | "NotResource": "*" | [...],
                    "Condition": {...}}]}

`Statement` may be one object or a list. Actions match case-insensitively (as in IAM), resources
case-sensitively; both take the wildcards `*` and `?` (`glob.py`). Conditions: `conditions.py`.

- **Identity policies** (`parse_policy`: the users' policies of the admin API and the users
  file) have no Principal: a document with one is refused, as IAM refuses it ("Policy document
  should not specify a principal"). Every fault is `InvalidRequest` naming the policy and the
  fault.
- **Key policies** (`parse_key_policy`, AWS CreateKey/PutKeyPolicy) must name a principal in
  every statement. The principals s3kms has: `"*"` (anyone, `{"AWS": "*"}` too), the account
  (its id `<acct>` or `arn:aws:iam::<acct>:root`), and the account's users
  (`arn:aws:iam::<acct>:user/<name>`, which must exist when the policy is put). `{"Service":
  "<name>.amazonaws.com"}` is accepted, as AWS accepts it, and matches no caller (no AWS
  service calls s3kms). Other accounts, roles, groups, federated and canonical users, and
  wildcards inside an ARN are refused with AWS's "Policy contains a statement with one or more
  invalid principals.": s3kms has one account, and AWS too refuses principals that do not
  exist. A statement without Action or without Resource is accepted and has no effect, as AWS
  documents for CreateKey and PutKeyPolicy. Faults are `MalformedPolicyDocument` with AWS's
  message where one is known; a key policy over 32 KiB is `LimitExceeded`, as AWS documents.

Documents are bounded (`MAX_*` below) before anything else is looked at, and patterns are
compiled once: a policy cannot make the check of a request expensive.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from s3kms.access.conditions import (
    Condition,
    ConditionError,
    Lookup,
    OverlyPermissive,
    UnsupportedOperator,
    compile_condition,
)
from s3kms.access.glob import Glob
from s3kms.errors import InvalidRequest, KMSError, LimitExceeded, MalformedPolicyDocument

VERSIONS = ("2012-10-17", "2008-10-17")

# Bounds on a policy document; a document over any of them is refused.
MAX_DOCUMENT_BYTES = 32 * 1024  # UTF-8 of the text given, or of a dict as stored (sort_keys)
MAX_STATEMENTS = 100
MAX_PATTERNS = 100  # actions, and resources, per statement (principals too)
MAX_PATTERN_LENGTH = 1024  # characters of one action or resource pattern
MAX_WILDCARDS = 32  # `*` and `?` together, in one pattern
MAX_DEPTH = 32  # nesting of JSON objects and arrays (a statement's lists are at depth 4)

# AWS's words (MalformedPolicyDocumentException), from recorded AWS answers: see the report of
# issue 11 and docs/security.md. Others below are s3kms's own, in the same style.
INVALID_PRINCIPALS = "Policy contains a statement with one or more invalid principals."
NO_PRINCIPAL = "Policy contains a statement with no principal."
LOCKOUT = "The new key policy will not allow you to update the key policy in the future."

# A key policy may hold only these characters (PutKeyPolicy, `Policy`: "Printable ASCII
# characters from the space character (\u0020) through the end of the ASCII character range",
# the printable Latin-1 supplement "(through \u00FF)", tab, line feed and carriage return).
_KEY_POLICY_CHARS = re.compile(r"[\t\n\r\u0020-\u007f\u00a0-\u00ff]*")
_ACCOUNT_RE = re.compile(r"[0-9]{12}")
_SERVICE_RE = re.compile(r"[a-z0-9][a-z0-9.-]{0,126}\.amazonaws\.com(\.cn)?")
_USER_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True, slots=True)
class Principals:
    """A statement's Principal (or NotPrincipal), compiled."""

    anyone: bool  # "*" or {"AWS": "*"}
    account: bool  # the account: its id or arn:aws:iam::<acct>:root
    arns: frozenset[str]  # user ARNs

    def names(self, arn: str, is_root: bool) -> bool:
        """Whether the caller itself is named (the root by the account principal)."""
        return self.anyone or arn in self.arns or (is_root and self.account)

    def excludes(self, arn: str, is_root: bool) -> bool:
        """For NotPrincipal: whether the caller is left out. IAM evaluates a user together with
        its account, so a user is left out only when both are listed (IAM User Guide,
        "NotPrincipal"); the root when the account is."""
        if self.anyone or (is_root and self.account):
            return True
        return self.account and arn in self.arns


DIRECT, ACCOUNT = 1, 2  # how a key-policy statement covers a caller (0: not at all)


@dataclass(frozen=True, slots=True)
class Statement:
    allow: bool
    actions: tuple[Glob, ...]  # compiled case-insensitively
    resources: tuple[Glob, ...]  # compiled case-sensitively
    not_action: bool = False  # NotAction: the statement covers the actions matching none
    not_resource: bool = False
    principals: Principals | None = None  # None: an identity-policy statement
    not_principal: bool = False
    condition: Condition | None = None
    # The actions when none has a wildcard (the common case), lowered: one set lookup.
    exact_actions: frozenset[str] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if all(g.exact is not None for g in self.actions):
            exact = frozenset(g.exact for g in self.actions if g.exact is not None)
            object.__setattr__(self, "exact_actions", exact)

    def covers(self, folded_action: str, resources: Sequence[str]) -> bool:
        """Whether the action (already lowered) and resources fall under the statement, leaving
        its principal and condition aside."""
        return self.covers_action(folded_action) and self.covers_resources(resources)

    def covers_action(self, folded_action: str) -> bool:
        exact = self.exact_actions
        if exact is not None:
            return (folded_action in exact) is not self.not_action
        for glob in self.actions:
            if glob.match_folded(folded_action):
                return not self.not_action
        return self.not_action

    def covers_resources(self, resources: Sequence[str]) -> bool:
        for glob in self.resources:
            for resource in resources:
                if glob.match_folded(resource):
                    return not self.not_resource
        return self.not_resource

    def matches(self, action: str, resources: Sequence[str], lookup: Lookup | None = None) -> bool:
        """`covers`, and the condition holds for the request's condition keys (`lookup`; without
        one, as for a request that has none of them)."""
        if not self.covers(action.lower(), resources):
            return False
        return self.condition is None or self.condition.holds(lookup or _nothing)

    def reaches(self, arn: str, is_root: bool) -> int:
        """How a key-policy statement covers the caller: DIRECT (named, `*`, NotPrincipal not
        listing it, or the root by the account), ACCOUNT (a user of the account principal: the
        account delegates to its identity policies), or 0."""
        p = self.principals
        if p is None:
            return 0
        if self.not_principal:
            return 0 if p.excludes(arn, is_root) else DIRECT
        if p.names(arn, is_root):
            return DIRECT
        return ACCOUNT if p.account else 0


def _nothing(key: str) -> None:
    return None


@dataclass(frozen=True)
class Policy:
    name: str
    statements: tuple[Statement, ...]
    document: str  # the JSON as given, for listing (GetKeyPolicy returns it unchanged)
    # Whether a statement has a Condition (then a decision needs the request's context).
    conditional: bool = field(init=False)
    # action (lowered) -> the statements whose Action/NotAction covers it: filled as requests
    # come; the actions are the operation table's, so it stays small (and is bounded anyway).
    _by_action: dict[str, tuple[Statement, ...]] = field(
        init=False, default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        conditional = any(s.condition is not None for s in self.statements)
        object.__setattr__(self, "conditional", conditional)

    def for_action(self, folded_action: str) -> tuple[Statement, ...]:
        """The statements that cover the (lowered) action, in document order."""
        found = self._by_action.get(folded_action)
        if found is None:
            found = tuple(s for s in self.statements if s.covers_action(folded_action))
            if len(self._by_action) < _MAX_ACTIONS_KEPT:
                self._by_action[folded_action] = found
        return found


_MAX_ACTIONS_KEPT = 256


class _Grammar:
    """The parse of one document, and how its faults are worded (identity or key policy)."""

    def __init__(self, name: str, key_policy: bool) -> None:
        self.name = name
        self.key_policy = key_policy
        self.version = VERSIONS[1]  # the document's, once read: variables exist in 2012-10-17

    def fault(self, identity: str, key: str | None = None) -> KMSError:
        """InvalidRequest naming the policy (identity) or MalformedPolicyDocument (key)."""
        if self.key_policy:
            return MalformedPolicyDocument(key if key is not None else _sentence(identity))
        return InvalidRequest(f"policy {self.name!r}: {identity}")

    def too_big(self) -> KMSError:
        if self.key_policy:
            return LimitExceeded(f"The key policy may be at most {MAX_DOCUMENT_BYTES} bytes.")
        return InvalidRequest(
            f"policy {self.name!r}: the document may be at most {MAX_DOCUMENT_BYTES} bytes of JSON"
        )

    def not_json(self, what: str = "valid JSON") -> KMSError:
        if self.key_policy:
            return MalformedPolicyDocument(f"The key policy is not {what}.")
        return InvalidRequest(f"policy {self.name!r} is not {what}")

    def patterns(self, value: Any, field: str, *, ignore_case: bool) -> tuple[Glob, ...]:
        items = [value] if isinstance(value, str) else value
        if (
            not isinstance(items, list)
            or not items
            or not all(isinstance(i, str) and i for i in items)
        ):
            raise self.fault(f"{field} must be a non-empty string or list of strings")
        if len(items) > MAX_PATTERNS:
            raise self.fault(f"a statement may have at most {MAX_PATTERNS} {field} entries")
        for item in items:
            if len(item) > MAX_PATTERN_LENGTH:
                raise self.fault(f"a {field} may be at most {MAX_PATTERN_LENGTH} characters")
            if item.count("*") + item.count("?") > MAX_WILDCARDS:
                raise self.fault(f"a {field} may have at most {MAX_WILDCARDS} wildcards (* and ?)")
            if field.endswith("Resource") and "${" in item and self.version == VERSIONS[0]:
                raise self.fault(f"policy variables (${{...}}) are not supported in {field}")
        return tuple(Glob.compile(i, ignore_case=ignore_case) for i in items)

    def check_nesting(self, value: Any) -> None:
        """Refuse nesting deeper than MAX_DEPTH, without recursion; and, as every JSON value
        takes at least one byte, more values than MAX_DOCUMENT_BYTES (so the walk is bounded)."""
        stack: list[tuple[Any, int]] = [(value, 1)]
        budget = MAX_DOCUMENT_BYTES - 1
        while stack:
            item, depth = stack.pop()
            if isinstance(item, dict):
                children: Iterable[Any] = item.values()
            elif isinstance(item, (list, tuple)):
                children = item
            else:
                continue
            if depth > MAX_DEPTH:
                raise self.fault(f"objects and arrays may be nested at most {MAX_DEPTH} deep")
            budget -= len(item)
            if budget < 0:
                raise self.too_big()
            stack.extend((child, depth + 1) for child in children)

    def load(self, document: str | dict[str, Any]) -> tuple[Any, str]:
        """The document parsed, and as JSON text; bounded in size and nesting first."""
        if isinstance(document, str):
            # A character takes at most 4 bytes of UTF-8: the length alone settles most cases.
            if len(document) > MAX_DOCUMENT_BYTES or (
                len(document) * 4 > MAX_DOCUMENT_BYTES
                and len(document.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES
            ):
                raise self.too_big()
            if self.key_policy and not _KEY_POLICY_CHARS.fullmatch(document):
                raise MalformedPolicyDocument(
                    "The key policy may contain only printable ASCII and Latin-1 characters, "
                    "tab, line feed and carriage return."
                )
            try:
                doc = json.loads(document)
            except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
                raise self.not_json() from None
            self.check_nesting(doc)
            return doc, document
        self.check_nesting(document)
        try:
            text = json.dumps(document, sort_keys=True)  # ASCII: ensure_ascii escapes the rest
        except (RecursionError, TypeError, ValueError):
            raise self.not_json("a JSON document") from None
        if len(text) > MAX_DOCUMENT_BYTES:
            raise self.too_big()
        return document, text

    def statements(self, doc: Any) -> list[dict[str, Any]]:
        if not isinstance(doc, dict):
            if self.key_policy:
                raise MalformedPolicyDocument("The key policy must be a JSON object.")
            raise InvalidRequest(f"policy {self.name!r} must be a JSON object")
        version = doc.get("Version", VERSIONS[1])  # IAM's default when left out
        if version not in VERSIONS:
            raise self.fault(
                f"Version must be one of {', '.join(VERSIONS)}",
                f"The key policy has an unsupported Version: use {VERSIONS[0]}.",
            )
        self.version = version
        raw = doc.get("Statement")
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise self.fault(
                "Statement must be a non-empty list",
                "The key policy must have at least one statement.",
            )
        if len(raw) > MAX_STATEMENTS:
            raise self.fault(f"at most {MAX_STATEMENTS} statements are allowed")
        for item in raw:
            if not isinstance(item, dict):
                raise self.fault("each Statement must be an object")
        return raw

    def one_of(self, raw: dict[str, Any], field: str) -> tuple[Any, bool]:
        """(value, negated) of `field` or `Not<field>`; both is a fault; neither is (None, _)."""
        if field in raw and f"Not{field}" in raw:
            raise self.fault(f"a statement may have {field} or Not{field}, not both")
        if f"Not{field}" in raw:
            return raw[f"Not{field}"], True
        return raw.get(field), False

    def statement(
        self, raw: dict[str, Any], principal: Callable[[Any], Principals] | None
    ) -> Statement | None:
        effect = raw.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise self.fault(
                "Effect must be Allow or Deny",
                "Policy contains a statement with an invalid Effect: use Allow or Deny.",
            )
        if principal is None and ("Principal" in raw or "NotPrincipal" in raw):
            raise self.fault("Policy document should not specify a principal")
        who, not_principal = self.one_of(raw, "Principal")
        principals = None
        if principal is not None:
            if who is None:
                raise MalformedPolicyDocument(NO_PRINCIPAL)
            principals = principal(who)
        actions, not_action = self.one_of(raw, "Action")
        resources, not_resource = self.one_of(raw, "Resource")
        condition = None
        if "Condition" in raw:
            try:
                variables = self.version == VERSIONS[0]
                condition = compile_condition(raw["Condition"], variables=variables)
            except OverlyPermissive as exc:
                raise self.fault(str(exc), str(exc)) from None
            except UnsupportedOperator as exc:
                raise self.fault(
                    f"unsupported condition operator {exc}",
                    f"Policy contains a statement with an unsupported condition operator: {exc}.",
                ) from None
            except ConditionError as exc:
                raise self.fault(f"Condition: {exc}") from None
        if self.key_policy and (actions is None or resources is None):
            return None  # accepted, and without effect (AWS: CreateKey/PutKeyPolicy succeed)
        return Statement(
            allow=effect == "Allow",
            actions=self.patterns(
                actions, "NotAction" if not_action else "Action", ignore_case=True
            ),
            resources=self.patterns(
                resources, "NotResource" if not_resource else "Resource", ignore_case=False
            ),
            not_action=not_action,
            not_resource=not_resource,
            principals=principals,
            not_principal=not_principal,
            condition=condition,
        )


def _sentence(fragment: str) -> str:
    """A fault without an AWS wording of its own, as a key-policy message."""
    return f"The key policy is malformed: {fragment}."


def parse_policy(name: str, document: str | dict[str, Any]) -> Policy:
    """An identity policy, validated; every problem is KMSInvalidRequest naming what is wrong.

    Size and nesting are checked before the statements are looked at (for a JSON text, the size
    before it is parsed); then the number of statements, patterns, their length and wildcards.
    """
    grammar = _Grammar(name, key_policy=False)
    doc, text = grammar.load(document)
    statements = []
    for raw in grammar.statements(doc):
        statement = grammar.statement(raw, None)
        assert statement is not None  # identity statements are never dropped
        statements.append(statement)
    return Policy(name, tuple(statements), text)


def parse_key_policy(text: str, *, account: str, known_user: Callable[[str], bool]) -> Policy:
    """A key policy (AWS CreateKey/PutKeyPolicy `Policy`), validated for the account: raises
    MalformedPolicyDocument (LimitExceeded over 32 KiB) with AWS's message. `known_user(name)`
    says whether `arn:aws:iam::<account>:user/<name>` exists."""
    grammar = _Grammar("key policy", key_policy=True)
    doc, text = grammar.load(text)
    raw_statements = grammar.statements(doc)
    root = f"arn:aws:iam::{account}:root"
    user_prefix = f"arn:aws:iam::{account}:user/"

    def principal(value: Any) -> Principals:
        if value == "*":
            return Principals(True, False, frozenset())
        if not isinstance(value, dict) or not value:
            raise MalformedPolicyDocument(INVALID_PRINCIPALS)
        anyone = has_account = False
        arns: set[str] = set()
        for kind, names in value.items():
            items = [names] if isinstance(names, str) else names
            if not isinstance(items, list) or not items or len(items) > MAX_PATTERNS:
                raise MalformedPolicyDocument(INVALID_PRINCIPALS)
            for item in items:
                if not isinstance(item, str):
                    raise MalformedPolicyDocument(INVALID_PRINCIPALS)
                if kind == "Service" and _SERVICE_RE.fullmatch(item):
                    continue  # an AWS service: never the caller of s3kms
                if kind != "AWS":
                    raise MalformedPolicyDocument(INVALID_PRINCIPALS)
                if item == "*":
                    anyone = True
                elif item in (account, root):
                    has_account = True
                elif item.startswith(user_prefix) and _USER_NAME_RE.fullmatch(
                    name := item[len(user_prefix) :]
                ):
                    if not known_user(name):
                        raise MalformedPolicyDocument(INVALID_PRINCIPALS)
                    arns.add(item)
                else:
                    raise MalformedPolicyDocument(INVALID_PRINCIPALS)
        return Principals(anyone, has_account, frozenset(arns))

    statements = []
    for raw in raw_statements:
        statement = grammar.statement(raw, principal)
        if statement is not None:
            statements.append(statement)
    return Policy("key policy", tuple(statements), text)


def default_key_policy(account: str) -> str:
    """AWS's default key policy for a key created without one, byte for byte as GetKeyPolicy
    answers it: Jackson's pretty printer (`" : "`, two-space indent, `[ {` ... `} ]`).

    Recorded answers: the AWS CLI output in the KMS Developer Guide ("GetKeyPolicy: Get the Key
    Policy Attached to a CMK") and aws-samples' recorded `get-key-policy`; LocalStack's
    AWS-validated snapshot (tests/aws/services/kms/test_kms.snapshot.json, ReplicaPolicy) has the
    same document, parsed."""
    return (
        "{\n"
        '  "Version" : "2012-10-17",\n'
        '  "Id" : "key-default-1",\n'
        '  "Statement" : [ {\n'
        '    "Sid" : "Enable IAM User Permissions",\n'
        '    "Effect" : "Allow",\n'
        '    "Principal" : {\n'
        f'      "AWS" : "arn:aws:iam::{account}:root"\n'
        "    },\n"
        '    "Action" : "kms:*",\n'
        '    "Resource" : "*"\n'
        "  } ]\n"
        "}"
    )
