"""Policy evaluation: the pure module, case by case."""

from __future__ import annotations

import fnmatch
import json
import random
import re

import pytest

from s3kms.access.decision import is_allowed, key_resources
from s3kms.access.documents import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    MAX_PATTERN_LENGTH,
    MAX_PATTERNS,
    MAX_STATEMENTS,
    MAX_WILDCARDS,
    Policy,
    parse_policy,
)
from s3kms.access.glob import Glob, glob_match
from s3kms.errors import InvalidRequest

R = key_resources("app-1", "us-east-1", "000000000000")
NO_KEY = key_resources(None, "us-east-1", "000000000000")


def policy(*statements: dict[str, object]) -> list[Policy]:
    return [parse_policy("p", {"Version": "2012-10-17", "Statement": list(statements)})]


def allow(action: object, resource: object = "*") -> dict[str, object]:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


def deny(action: object, resource: object = "*") -> dict[str, object]:
    return {"Effect": "Deny", "Action": action, "Resource": resource}


def test_no_statement_matching_means_deny() -> None:
    assert not is_allowed([], "kms:Decrypt", R)
    assert not is_allowed(policy(allow("kms:Encrypt")), "kms:Decrypt", R)


def test_allow_and_explicit_deny_wins() -> None:
    both = policy(allow("kms:*"), deny("kms:Decrypt", "arn:aws:kms:*:*:key/app-*"))
    assert is_allowed(both, "kms:Encrypt", R)
    assert not is_allowed(both, "kms:Decrypt", R)
    # Deny wins even when the Allow comes from another policy listed later.
    split = [*policy(deny("kms:Decrypt")), *policy(allow("*"))]
    assert not is_allowed(split, "kms:Decrypt", R)


def test_action_wildcards_are_case_insensitive() -> None:
    p = policy(allow(["admin:KMS*", "kms:Generate?ataKey"]))
    assert is_allowed(p, "admin:KMSKeyStatus", NO_KEY)
    assert is_allowed(p, "ADMIN:kmscreatekey", NO_KEY)
    assert is_allowed(p, "kms:GenerateDataKey", R)
    assert not is_allowed(p, "kms:GenerateDataKeyWithoutPlaintext", R)


def test_resources_arn_and_minio_forms() -> None:
    aws = policy(allow("kms:Decrypt", "arn:aws:kms:us-east-1:000000000000:key/app-?"))
    minio = policy(allow("kms:Decrypt", "arn:minio:kms:::app-*"))
    assert is_allowed(aws, "kms:Decrypt", R)
    assert is_allowed(minio, "kms:Decrypt", R)
    other = key_resources("billing", "us-east-1", "000000000000")
    assert not is_allowed(minio, "kms:Decrypt", other)
    # Resources are case-sensitive: key ids are.
    upper = key_resources("APP-1", "us-east-1", "000000000000")
    assert not is_allowed(minio, "kms:Decrypt", upper)


def test_requests_about_no_key_need_star_resource() -> None:
    keyed = policy(allow("admin:KMSStatus", "arn:aws:kms:*:*:key/*"))
    assert not is_allowed(keyed, "admin:KMSStatus", NO_KEY)
    assert is_allowed(policy(allow("admin:KMSStatus")), "admin:KMSStatus", NO_KEY)


def test_regex_characters_are_literal() -> None:
    p = policy(allow("kms:Decrypt", "arn:minio:kms:::a.b"))
    assert is_allowed(p, "kms:Decrypt", key_resources("a.b", "r", "1"))
    assert not is_allowed(p, "kms:Decrypt", key_resources("axb", "r", "1"))


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        "[]",
        {"Version": "1999", "Statement": [allow("*")]},
        {"Statement": []},
        {"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]},
        {"Statement": [{"Effect": "Allow", "Action": [], "Resource": "*"}]},
        {"Statement": [{"Effect": "Allow", "Action": "*"}]},
        # Conditions are accepted now; an operator IAM does not have is not.
        {"Statement": [{**allow("*"), "Condition": {"StringEqualz": {"aws:username": "a"}}}]},
        {"Statement": [{**allow("*"), "Principal": "*"}]},  # identity policies name no principal
    ],
)
def test_bad_documents_are_refused(document: object) -> None:
    with pytest.raises(InvalidRequest):
        parse_policy("bad", document)  # type: ignore[arg-type]


def test_single_statement_object_is_accepted() -> None:
    p = parse_policy("one", {"Statement": {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}})
    assert is_allowed([p], "kms:Encrypt", R)


# -- the glob matcher -------------------------------------------------------------------------------


def regex_reference(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    """What the matcher replaces: `*` as `.*`, `?` as `.` (right, but exponential on some input)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.fullmatch(regex, text, flags) is not None


def test_glob_agrees_with_fnmatch_on_generated_cases() -> None:
    """Many small random patterns and texts over a small alphabet, so that matches, near misses
    and every arrangement of `*`, `?` and literals come up; fixed seed, so a failure repeats."""
    rng = random.Random(20240611)
    checked = matched = 0
    for _ in range(20000):
        pattern = "".join(rng.choice("ab*?.A") for _ in range(rng.randint(0, 10)))
        text = "".join(rng.choice("abAB.") for _ in range(rng.randint(0, 12)))
        expected = fnmatch.fnmatchcase(text, pattern)  # no `[` here, so plain glob semantics
        assert glob_match(pattern, text) is expected, (pattern, text)
        assert Glob.compile(pattern).match(text) is expected, (pattern, text)
        folded = regex_reference(pattern, text, ignore_case=True)
        assert glob_match(pattern, text, ignore_case=True) is folded, (pattern, text)
        checked += 1
        matched += expected
    assert checked == 20000 and matched > 1000  # the cases do exercise matches


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("", "", True),
        ("", "a", False),
        ("*", "", True),
        ("**", "anything", True),
        ("a*", "abc", True),
        ("a*", "ba", False),
        ("*c", "abc", True),
        ("a*c", "ac", True),
        ("a*c", "a", False),
        ("ab*ba", "aba", False),  # head and tail may not overlap
        ("ab*ba", "abba", True),
        ("?", "", False),
        ("??", "ab", True),
        ("*??*", "a", False),
        ("a?c*x?z", "abcxyz", True),
        ("a?c*x?z", "abcxxyz", True),
        ("*a?a*", "xabx", False),
        ("*a?a*", "xaaax", True),
        ("*ab?d*", "ababcabxd", True),  # the first candidate for `ab?d` fails, a later one fits
        ("[ab]", "a", False),  # brackets are literal, unlike fnmatch
        ("[ab]", "[ab]", True),
        ("a.b", "axb", False),
    ],
)
def test_glob_cases(pattern: str, text: str, expected: bool) -> None:
    assert glob_match(pattern, text) is expected
    assert regex_reference(pattern, text) is expected


def test_glob_does_not_backtrack_on_the_redos_pattern() -> None:
    """The pattern that pinned the server: as a regex, hours for one 60-character key id."""
    evil = "arn:aws:kms:*:*:key/" + "*a" * 12 + "*b"
    resources = key_resources("a" * 59 + "c", "us-east-1", "000000000000")
    assert not any(glob_match(evil, r) for r in resources)
    assert glob_match(evil, key_resources("a" * 59 + "b", "r", "1")[0])
    p = policy(allow("kms:GenerateDataKey", evil))
    for _ in range(1000):
        assert not is_allowed(p, "kms:GenerateDataKey", resources)
    with_questions = "*" + "a?" * 15 + "*b"
    assert not glob_match(with_questions, "a" * 200)
    assert glob_match(with_questions, "a" * 200 + "b")


def test_action_case_folding_is_on_both_sides() -> None:
    assert glob_match("KMS:Decrypt", "kms:DECRYPT", ignore_case=True)
    assert glob_match("kms:*CRYPT", "KMS:Decrypt", ignore_case=True)
    assert not glob_match("kms:*CRYPT", "kms:Decrypt")
    p = policy(allow("KMS:DECRYPT", "arn:minio:kms:::App-*"))
    assert is_allowed(p, "kms:Decrypt", key_resources("App-1", "r", "1"))
    assert not is_allowed(p, "kms:Decrypt", key_resources("app-1", "r", "1"))


# -- bounds ---------------------------------------------------------------------------------------


def refused(document: object, match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        parse_policy("big", document)  # type: ignore[arg-type]


def test_document_size_is_bounded() -> None:
    sid = "x" * MAX_DOCUMENT_BYTES
    big = {"Statement": [{"Sid": sid, "Effect": "Allow", "Action": "*", "Resource": "*"}]}
    refused(big, f"at most {MAX_DOCUMENT_BYTES} bytes")
    refused(json.dumps(big), f"at most {MAX_DOCUMENT_BYTES} bytes")
    # Counted in bytes of UTF-8, not characters.
    wide = {"Statement": [{"Sid": "é" * 20000, "Effect": "Allow", "Action": "*", "Resource": "*"}]}
    refused(json.dumps(wide, ensure_ascii=False), f"at most {MAX_DOCUMENT_BYTES} bytes")
    ok = {"Statement": [{"Sid": "x" * 30000, "Effect": "Allow", "Action": "*", "Resource": "*"}]}
    assert is_allowed([parse_policy("ok", ok)], "kms:Decrypt", R)


def test_statements_and_patterns_are_bounded() -> None:
    one = allow("kms:Decrypt")
    refused({"Statement": [one] * (MAX_STATEMENTS + 1)}, f"at most {MAX_STATEMENTS} statements")
    parse_policy("ok", {"Statement": [one] * MAX_STATEMENTS})
    many = [f"kms:A{i}" for i in range(MAX_PATTERNS + 1)]
    refused({"Statement": [allow(many)]}, f"at most {MAX_PATTERNS} Action entries")
    refused({"Statement": [allow("*", many)]}, f"at most {MAX_PATTERNS} Resource entries")
    parse_policy("ok", {"Statement": [allow(many[:-1], many[:-1])]})
    long = "k" * (MAX_PATTERN_LENGTH + 1)
    refused({"Statement": [allow(long)]}, f"at most {MAX_PATTERN_LENGTH} characters")
    refused({"Statement": [allow("*", long)]}, f"at most {MAX_PATTERN_LENGTH} characters")
    parse_policy("ok", {"Statement": [allow("*", long[:-1])]})


def test_wildcards_per_pattern_are_bounded() -> None:
    prefix = "arn:aws:kms:*:*:key/"  # two wildcards already
    at_limit = prefix + "*a" * (MAX_WILDCARDS - 3) + "?"
    assert at_limit.count("*") + at_limit.count("?") == MAX_WILDCARDS
    parse_policy("ok", {"Statement": [allow("kms:*", at_limit)]})
    refused({"Statement": [allow("kms:*", at_limit + "*")]}, f"at most {MAX_WILDCARDS} wildcards")
    refused({"Statement": [allow("?" * 33)]}, f"at most {MAX_WILDCARDS} wildcards")


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000, 100000])
def test_deep_nesting_is_invalid_request_not_recursion_error(depth: int) -> None:
    for text in ("[" * depth, '{"a":' * depth, "[" * depth + "]" * depth):
        with pytest.raises(InvalidRequest):
            parse_policy("deep", text)
    nested: object = "leaf"
    for _ in range(depth):
        nested = [nested]
    statement = {**allow("*"), "Sid": nested}
    with pytest.raises(InvalidRequest):
        parse_policy("deep", {"Statement": [statement]})
    with pytest.raises(InvalidRequest):
        parse_policy("deep", {"Statement": [statement], "Version": "2012-10-17"})


def test_nesting_up_to_the_limit_is_accepted() -> None:
    nested: object = "leaf"
    for _ in range(MAX_DEPTH - 3):  # the document, Statement list and statement take three
        nested = [nested]
    p = parse_policy("ok", {"Statement": [{**allow("*"), "Sid": nested}]})
    assert is_allowed([p], "kms:Decrypt", R)
    assert parse_policy("ok", p.document).document == p.document


def test_a_cyclic_or_unserialisable_dict_is_refused() -> None:
    cyclic: dict[str, object] = {"Statement": [allow("*")]}
    cyclic["Self"] = cyclic
    with pytest.raises(InvalidRequest):
        parse_policy("cycle", cyclic)
    with pytest.raises(InvalidRequest, match="not a JSON document"):
        parse_policy("odd", {"Statement": [allow("*")], "When": {1, 2}})
