"""The `Condition` element of a policy statement: compiled once, evaluated in linear time.

    "Condition": {"StringEquals": {"kms:EncryptionContext:app": ["web", "batch"]},
                  "ForAllValues:StringLike": {"kms:EncryptionContextKeys": "app*"},
                  "BoolIfExists": {"aws:SecureTransport": "true"}}

IAM's rules (IAM User Guide, "Condition element", "Condition operators", "Single-valued vs.
multivalued context keys"), which this module follows:

- Several operators, and several keys under one operator, must all hold (AND); several values for
  one key are alternatives (OR).
- A key the request does not have makes the test false, except for the negated operators
  (`StringNotEquals`, `StringNotLike`, `ArnNotEquals`, `ArnNotLike`, `NumericNotEquals`,
  `DateNotEquals`, `NotIpAddress`), which then hold; `...IfExists` makes any test hold when the
  key is absent; `Null` tests presence itself (`"true"`: the key is absent).
- Set qualifiers, for keys with several values (`kms:EncryptionContextKeys`, `aws:TagKeys`,
  `kms:GrantOperations`, `kms:ResourceAliases`): `ForAnyValue:` holds when at least one request
  value passes the operator (false when the key is absent or empty), `ForAllValues:` when every
  request value does (true when the key is absent or empty). Without a qualifier a key with
  several values is tested as with `ForAnyValue:`; a negated operator is the negation of that.
- Condition key names are case-insensitive, including the part after `kms:EncryptionContext:`
  and `aws:ResourceTag/` (KMS Developer Guide, "Case sensitivity of the encryption context
  condition": "the condition key, which consists of the kms:EncryptionContext: prefix and the
  context-key replacement, is not case sensitive"); values compare as the operator says.

Operators: String{Equals,NotEquals,EqualsIgnoreCase,NotEqualsIgnoreCase,Like,NotLike},
Arn{Equals,NotEquals,Like,NotLike} (each of the six colon-separated parts matched on its own,
wildcards allowed), Bool, Numeric{Equals,NotEquals,LessThan,LessThanEquals,GreaterThan,
GreaterThanEquals}, Date{...the same six} (ISO 8601 or epoch seconds), IpAddress/NotIpAddress
(CIDR, IPv4 and IPv6), BinaryEquals (base64), Null; each but Null with `...IfExists`. Operator
names and qualifiers are matched case-insensitively.

Values are compiled when the policy is parsed (numbers, dates, networks and patterns checked
there); a test costs at most (request values) x (policy values) comparisons, each a glob match at
worst (linear, see `glob.py`), so a condition's cost is linear in its size.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from s3kms.access.glob import Glob

# What a request has for a condition key: one string, several (a tuple), or nothing (None).
Value = str | tuple[str, ...]
Lookup = Callable[[str], Value | None]

MAX_CONDITION_KEYS = 100  # keys in one statement's Condition, all operators together
MAX_CONDITION_VALUES = 100  # values of one key under one operator
MAX_VALUE_LENGTH = 1024  # characters of one condition value


class ConditionError(ValueError):
    """A Condition the grammar refuses; the message says why (documents.py words the error)."""


class UnsupportedOperator(ConditionError):
    """An operator name AWS does not have (or this evaluator does not implement)."""


class OverlyPermissive(ConditionError):
    """`ForAllValues:` with a single-valued key AWS refuses it for (KMS Developer Guide)."""


_ANY, _ALL = "any", "all"
_NUMBER_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "equals": operator.eq,
    "lessthan": operator.lt,
    "lessthanequals": operator.le,
    "greaterthan": operator.gt,
    "greaterthanequals": operator.ge,
}


def _number(text: str) -> float | None:
    return float(text) if _NUMBER_RE.fullmatch(text) else None


def _date(text: str) -> float | None:
    """Epoch seconds of an ISO 8601 date or date-time (UTC when no offset), or of a number."""
    if _NUMBER_RE.fullmatch(text):
        return float(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def _binary(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class _Matcher:
    """Whether one request value passes the (positive) operator for one of the policy values."""

    def hit(self, value: str) -> bool:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class _Exact(_Matcher):
    values: frozenset[str]
    fold: bool  # StringEqualsIgnoreCase: both sides lowered

    def hit(self, value: str) -> bool:
        return (value.lower() if self.fold else value) in self.values


@dataclass(frozen=True, slots=True)
class _Like(_Matcher):
    globs: tuple[Glob, ...]

    def hit(self, value: str) -> bool:
        return any(g.match_folded(value) for g in self.globs)


@dataclass(frozen=True, slots=True)
class _Arn(_Matcher):
    """ArnEquals/ArnLike (the same in IAM): the six parts `arn:partition:service:region:account:
    resource` compared one by one, each a glob; a value that is no ARN matches nothing."""

    patterns: tuple[tuple[Glob, ...], ...]

    def hit(self, value: str) -> bool:
        parts = value.split(":", 5)
        if len(parts) != 6:
            return False
        return any(
            all(g.match_folded(p) for g, p in zip(pattern, parts, strict=True))
            for pattern in self.patterns
        )


@dataclass(frozen=True, slots=True)
class _Compare(_Matcher):
    values: tuple[float, ...]
    compare: Callable[[float, float], bool]
    parse: Callable[[str], float | None]

    def hit(self, value: str) -> bool:
        got = self.parse(value)
        return got is not None and any(self.compare(got, v) for v in self.values)


@dataclass(frozen=True, slots=True)
class _Ip(_Matcher):
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def hit(self, value: str) -> bool:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return False
        return any(address in n for n in self.networks)


@dataclass(frozen=True, slots=True)
class _Binary(_Matcher):
    values: frozenset[bytes]

    def hit(self, value: str) -> bool:
        raw = _binary(value)
        return raw is not None and raw in self.values


@dataclass(frozen=True, slots=True)
class Test:
    """One key under one operator."""

    key: str  # lowered
    matcher: _Matcher | None  # None for Null
    negated: bool
    if_exists: bool
    qualifier: str | None  # _ANY, _ALL or None
    null_wanted: frozenset[bool] = frozenset()  # Null: True = "the key is absent"

    def holds(self, lookup: Lookup) -> bool:
        found = lookup(self.key)
        if found is None:  # the common case in a key policy: the request lacks the key
            values: tuple[str, ...] = ()
        else:
            values = (found,) if isinstance(found, str) else found
        if self.matcher is None:  # Null
            return (not values) in self.null_wanted
        if not values:
            if self.if_exists or self.qualifier == _ALL:
                return True
            if self.qualifier == _ANY:
                return False
            return self.negated
        hit = self.matcher.hit
        if self.qualifier == _ALL:
            return all(hit(v) is not self.negated for v in values)
        if self.qualifier == _ANY:
            return any(hit(v) is not self.negated for v in values)
        return any(hit(v) for v in values) is not self.negated


@dataclass(frozen=True, slots=True)
class Condition:
    tests: tuple[Test, ...]

    def holds(self, lookup: Lookup) -> bool:
        tests = self.tests
        if len(tests) == 1:  # most conditions test one key: no generator per statement
            return tests[0].holds(lookup)
        return all(t.holds(lookup) for t in tests)


# operator name (lowered, no qualifier, no IfExists) -> (kind, negated)
_OPERATORS: dict[str, tuple[str, bool]] = {
    "stringequals": ("string", False),
    "stringnotequals": ("string", True),
    "stringequalsignorecase": ("string_ic", False),
    "stringnotequalsignorecase": ("string_ic", True),
    "stringlike": ("like", False),
    "stringnotlike": ("like", True),
    "arnequals": ("arn", False),
    "arnlike": ("arn", False),
    "arnnotequals": ("arn", True),
    "arnnotlike": ("arn", True),
    "bool": ("bool", False),
    "ipaddress": ("ip", False),
    "notipaddress": ("ip", True),
    "binaryequals": ("binary", False),
    "null": ("null", False),
}
for _kind in ("numeric", "date"):
    for _name in _COMPARISONS:
        _OPERATORS[_kind + _name] = (f"{_kind}:{_name}", False)
    _OPERATORS[_kind + "notequals"] = (f"{_kind}:equals", True)

# Single-valued keys that AWS KMS refuses under ForAllValues (KMS Developer Guide, "kms:
# EncryptionContext:context-key" and "aws:RequestTag/tag-key"): the exact messages.
_OVERLY_PERMISSIVE = {
    "kms:encryptioncontext:": (
        "OverlyPermissiveCondition:EncryptionContext: Using the ForAllValues set operator with a "
        "single-valued condition key matches requests without the specified encryption context "
        "or with an unspecified encryption context. To fix, remove ForAllValues."
    ),
    "aws:requesttag/": (
        "OverlyPermissiveCondition: Using the ForAllValues set operator with a single-valued "
        "condition key matches requests without the specified tag or with an unspecified tag. "
        "To fix, remove ForAllValues."
    ),
}


def _text(value: Any, variables: bool) -> str:
    """A condition value as IAM reads it: strings as they are, numbers and booleans as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        if len(value) > MAX_VALUE_LENGTH:
            raise ConditionError(f"a condition value may be at most {MAX_VALUE_LENGTH} characters")
        if variables and "${" in value:
            raise ConditionError("policy variables (${...}) are not supported in conditions")
        return value
    raise ConditionError("a condition value must be a string, a number or a boolean")


def _split_operator(name: str) -> tuple[str, str | None, bool]:
    """(base operator lowered, qualifier, if_exists) of e.g. `ForAnyValue:StringLikeIfExists`."""
    lowered = name.lower()
    qualifier = None
    for prefix, q in (("foranyvalue:", _ANY), ("forallvalues:", _ALL)):
        if lowered.startswith(prefix):
            lowered, qualifier = lowered[len(prefix) :], q
            break
    if_exists = lowered.endswith("ifexists") and lowered != "ifexists"
    if if_exists:
        lowered = lowered[: -len("ifexists")]
    if lowered not in _OPERATORS or (if_exists and lowered == "null"):
        raise UnsupportedOperator(name)
    return lowered, qualifier, if_exists


_V = TypeVar("_V")


def _parsed(texts: list[str], parse: Callable[[str], _V | None], what: str) -> list[_V]:
    """Each text parsed, or ConditionError naming the first that is not `what`."""
    values = []
    for t in texts:
        value = parse(t)
        if value is None:
            raise ConditionError(f"{t!r} is not {what}")
        values.append(value)
    return values


def _matcher(kind: str, texts: list[str]) -> _Matcher | None:
    if kind == "string":
        return _Exact(frozenset(texts), False)
    if kind == "string_ic":
        return _Exact(frozenset(t.lower() for t in texts), True)
    if kind == "like":
        return _Like(tuple(Glob.compile(t) for t in texts))
    if kind == "bool":
        return _Exact(frozenset(t.lower() for t in texts), True)
    if kind == "arn":
        patterns = []
        for t in texts:
            parts = t.split(":", 5)
            if len(parts) != 6 and t != "*":
                raise ConditionError(
                    f"{t!r} is not an ARN (arn:partition:service:region:account:resource)"
                )
            parts = ["*"] * 6 if t == "*" else parts
            patterns.append(tuple(Glob.compile(p) for p in parts))
        return _Arn(tuple(patterns))
    if kind == "ip":
        return _Ip(tuple(_parsed(texts, _network, "an IP address or CIDR block")))
    if kind == "binary":
        return _Binary(frozenset(_parsed(texts, _binary, "base64")))
    family, _, comparison = kind.partition(":")
    parse = _number if family == "numeric" else _date
    what = "a number" if family == "numeric" else "a date (ISO 8601 or epoch seconds)"
    return _Compare(tuple(_parsed(texts, parse, what)), _COMPARISONS[comparison], parse)


def compile_condition(raw: Any, *, variables: bool = True) -> Condition | None:
    """The compiled Condition element (None when it is empty), or ConditionError. `variables`:
    the policy's Version (2012-10-17) has policy variables, which s3kms refuses rather than
    read literally (under 2008-10-17 `${...}` is plain text)."""
    if not isinstance(raw, Mapping):
        raise ConditionError("Condition must be an object of operators")
    tests: list[Test] = []
    for op_name, block in raw.items():
        base, qualifier, if_exists = _split_operator(str(op_name))
        kind, negated = _OPERATORS[base]
        if not isinstance(block, Mapping) or not block:
            raise ConditionError(f"{op_name} must be an object of condition keys")
        for key, value in block.items():
            if not isinstance(key, str) or not key:
                raise ConditionError("a condition key must be a non-empty string")
            lowered = key.lower()
            if qualifier == _ALL:
                for prefix, message in _OVERLY_PERMISSIVE.items():
                    if lowered.startswith(prefix):
                        raise OverlyPermissive(message)
            items = value if isinstance(value, list) else [value]
            if not items:
                raise ConditionError(f"{op_name} {key}: give at least one value")
            if len(items) > MAX_CONDITION_VALUES:
                raise ConditionError(
                    f"a condition key may have at most {MAX_CONDITION_VALUES} values"
                )
            texts = [_text(v, variables) for v in items]
            if kind == "null":
                wanted = set()
                for t in texts:
                    if t.lower() not in ("true", "false"):
                        raise ConditionError(f"Null takes true or false, not {t!r}")
                    wanted.add(t.lower() == "true")
                tests.append(Test(lowered, None, False, False, None, frozenset(wanted)))
            else:
                matcher = _matcher(kind, texts)
                tests.append(Test(lowered, matcher, negated, if_exists, qualifier))
            if len(tests) > MAX_CONDITION_KEYS:
                raise ConditionError(
                    f"a statement may test at most {MAX_CONDITION_KEYS} condition keys"
                )
    return Condition(tuple(tests)) if tests else None
