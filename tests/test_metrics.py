"""`GET /metrics`: the Prometheus text format, exact counts, the access rule, workers, backends.

Every test scrapes a real server on loopback and parses the answer with `parse`, a strict
reader of the text exposition format 0.0.4 written from the format's description (not from
s3kms's writer): each family declared once by `# HELP` and `# TYPE` before its samples, valid
names and escapes, no duplicate series, and for every histogram cumulative buckets in
increasing `le` order that end with `+Inf` equal to `_count`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from s3kms import __version__, errors
from s3kms.cli import resolve_settings
from s3kms.client import Client
from s3kms.keystore.vault.settings import VaultSettings
from s3kms.metrics import exposition, token

from kmsserver import (
    MASTER_KEY,
    ROOT_PASSWORD,
    ROOT_USER,
    KmsProcess,
    KmsThread,
    run_cli,
    signed_admin,
    thread_settings,
)

# -- a strict parser of the text format --------------------------------------------------------

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    name: str
    kind: str
    help: str
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], value)


def _value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    assert re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text), f"bad value {text!r}"
    return float(text)


def _labels(text: str) -> Labels:
    if not text:
        return ()
    out: list[tuple[str, str]] = []
    pos = 0
    while True:
        match = _LABEL.match(text, pos)
        assert match, f"bad labels {text!r}"
        out.append((match.group(1), _unescape(match.group(2))))
        pos = match.end()
        if pos == len(text):
            break
        assert text[pos] == ",", f"bad labels {text!r}"
        pos += 1
    names = [name for name, _ in out]
    assert len(names) == len(set(names)), f"repeated label in {text!r}"
    return tuple(out)


def _sample_family(name: str, families: dict[str, Family]) -> Family:
    if name in families:
        family = families[name]
        assert family.kind in ("counter", "gauge", "untyped"), name
        return family
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base in families and families[base].kind == "histogram":
            return families[base]
    raise AssertionError(f"sample {name} of no declared family")


def parse(text: str) -> dict[str, Family]:
    assert text.endswith("\n"), "the exposition ends with a newline"
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    current: Family | None = None
    closed: set[str] = set()
    for line in text[:-1].split("\n"):
        assert line, "no empty lines"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            assert parts[1] in ("HELP", "TYPE"), f"unexpected comment {line!r}"
            name = parts[2]
            assert _NAME.fullmatch(name), name
            if parts[1] == "HELP":
                assert name not in helps, f"HELP {name} twice"
                helps[name] = _unescape(parts[3]) if len(parts) > 3 else ""
                continue
            assert name not in families, f"TYPE {name} twice"
            assert parts[3] in _TYPES, line
            if current is not None:
                closed.add(current.name)
            current = families[name] = Family(name, parts[3], helps.get(name, ""))
            continue
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        assert match, f"bad sample line {line!r}"
        family = _sample_family(match.group(1), families)
        assert family is current, f"{match.group(1)} outside its family's block"
        key = (match.group(1), _labels(match.group(2) or ""))
        assert key not in family.samples, f"duplicate series {line!r}"
        family.samples[key] = _value(match.group(3))
    assert set(helps) <= set(families), "HELP without TYPE"
    for family in families.values():
        if family.kind == "histogram":
            _check_histogram(family)
        if family.kind == "counter":
            assert family.name.endswith("_total"), family.name
            assert all(v >= 0 for v in family.samples.values()), family.name
    return families


def _check_histogram(family: Family) -> None:
    series: dict[Labels, list[tuple[float, float]]] = {}
    for (name, labels), value in family.samples.items():
        if name.endswith("_bucket"):
            le = dict(labels)["le"]
            rest = tuple(kv for kv in labels if kv[0] != "le")
            series.setdefault(rest, []).append((_value(le), value))
    for labels, buckets in series.items():
        bounds = [b for b, _ in buckets]
        assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), labels
        assert bounds[-1] == math.inf, f"{family.name}{labels}: no +Inf bucket"
        counts = [c for _, c in buckets]
        assert counts == sorted(counts), f"{family.name}{labels}: buckets not cumulative"
        assert family.samples[(f"{family.name}_count", labels)] == counts[-1]
        assert family.samples[(f"{family.name}_sum", labels)] >= 0


def families_samples(families: dict[str, Family], name: str) -> dict[tuple[str, Labels], float]:
    return families[name].samples


def value(families: dict[str, Family], name: str, **labels: str) -> float:
    """The sample `name` with exactly these labels; 0 when absent (a series not yet made)."""
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    family = families.get(name) or families[base]
    return family.samples.get((name, tuple(labels.items())), 0.0)


# -- helpers -----------------------------------------------------------------------------------


def scrape(url: str, **kw: Any) -> dict[str, Family]:
    response = signed_admin(url, "GET", "/metrics", **kw)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


def kms_client(url: str, access: str = ROOT_USER, secret: str = ROOT_PASSWORD) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1}),
    )


def requests(families: dict[str, Family], surface: str, operation: str, outcome: str = "ok",
             status: str = "200") -> float:  # fmt: skip
    return value(
        families,
        "s3kms_requests_total",
        surface=surface,
        operation=operation,
        outcome=outcome,
        status=status,
    )


def aws_error(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    code: str = info.value.response["Error"]["Code"]
    return code


@pytest.fixture
def server(tmp_path: Path) -> Iterator[KmsThread]:
    srv = KmsThread(thread_settings(tmp_path / "data", maintenance_interval=0.2)).start()
    try:
        yield srv
    finally:
        srv.stop()


# -- the format --------------------------------------------------------------------------------


def test_the_writer_escapes_what_the_format_escapes() -> None:
    text = exposition.render(
        [
            ("t_total", "counter", 'help with \\ and\nnewline', [("t_total", (("v", 'a"b\\c\nd'),), 3)]),
            ("g", "gauge", "", [("g", (), 0.25), ]),
        ]
    ).decode()  # fmt: skip
    families = parse(text)
    assert families["t_total"].help == "help with \\ and\nnewline"
    assert value(families, "t_total", v='a"b\\c\nd') == 3
    assert value(families, "g") == 0.25
    assert exposition.number(float("inf")) == "+Inf" and exposition.number(2.0) == "2"


# -- counting ----------------------------------------------------------------------------------


def test_counts_are_exact_by_surface_operation_and_error_code(server: KmsThread) -> None:
    url = server.url
    with Client(url, ROOT_USER, ROOT_PASSWORD) as kms:
        kms.create_key("counted")
    before = scrape(url)
    aws = kms_client(url)
    for _ in range(5):
        aws.encrypt(KeyId="counted", Plaintext=b"x")
    assert aws_error(aws.describe_key, KeyId="no-such-key") == "NotFoundException"
    assert aws_error(aws.describe_key, KeyId="no-such-key") == "NotFoundException"
    assert aws_error(aws.decrypt, CiphertextBlob=b"\x00" * 64) == "InvalidCiphertextException"
    aws_error(kms_client(url, secret="not-the-secret-key").list_keys)
    with Client(url, ROOT_USER, ROOT_PASSWORD) as kms:
        for _ in range(3):
            kms.key_status("counted")
    sts = boto3.client(
        "sts", endpoint_url=url, region_name="us-east-1", aws_access_key_id=ROOT_USER,
        aws_secret_access_key=ROOT_PASSWORD,
    )  # fmt: skip
    for _ in range(2):
        sts.get_caller_identity()
    after = scrape(url)

    def delta(*args: str) -> float:
        return requests(after, *args) - requests(before, *args)

    assert delta("aws", "Encrypt") == 5
    assert delta("aws", "DescribeKey", "KMSKeyNotFound", "400") == 2
    assert delta("aws", "Decrypt", "KMSInvalidCiphertext", "400") == 1
    assert delta("aws", "ListKeys", "SignatureDoesNotMatch", "400") == 1
    assert delta("admin", "KMSKeyStatus") == 3
    assert delta("sts", "GetCallerIdentity") == 2
    assert delta("metrics", "Scrape") == 1  # the first scrape, counted by the second
    # Every request is in its histogram: the count is the sum over outcomes.
    for surface, operation, made in (("aws", "Encrypt", 5), ("aws", "DescribeKey", 2)):
        name = "s3kms_request_duration_seconds_count"
        grown = value(after, name, surface=surface, operation=operation) - value(
            before, name, surface=surface, operation=operation
        )
        assert grown == made
    # Local keystore calls are in-process: not timed (the Vault test checks Vault's).
    assert not families_samples(after, "s3kms_keystore_call_duration_seconds")
    assert value(after, "s3kms_requests_in_flight") == 1  # the scrape itself
    assert value(after, "s3kms_backend_up", backend="local") == 1
    assert value(after, "s3kms_workers") == 1
    build = {"version": __version__, "python": platform.python_version()}
    assert value(after, "s3kms_build_info", **build) == 1
    for name in ("process_resident_memory_bytes", "process_open_fds", "process_max_fds"):
        assert value(after, name) > 0
    assert 0 < value(after, "process_start_time_seconds") <= time.time()
    assert value(after, "process_cpu_seconds_total") > 0


def test_the_key_count_is_cached_and_refreshed(server: KmsThread) -> None:
    with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:
        for name in ("one", "two", "three"):
            kms.create_key(name)
    deadline = time.monotonic() + 10
    while value(scrape(server.url), "s3kms_keys", backend="local") != 3:
        assert time.monotonic() < deadline, "the key count was not refreshed"
        time.sleep(0.1)


def test_keys_by_state_follow_the_maintenance_pass(server: KmsThread) -> None:
    """s3kms_keys_by_state: what the last maintenance pass found (the fixture's is 0.2 s)."""
    with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:
        known = {k.key_id: k.status for k in kms.list_keys()}
        kms.create_key("state-off")
        kms.disable_key("state-off")
        kms.create_key("state-gone")
        kms.schedule_key_deletion("state-gone", 7)
    expected = {"Enabled": 0, "Disabled": 1, "PendingDeletion": 1}
    words = {"enabled": "Enabled", "disabled": "Disabled", "pending_deletion": "PendingDeletion"}
    for status in known.values():
        expected[words[status]] += 1
    deadline = time.monotonic() + 10
    while True:
        text = scrape(server.url)
        found = {
            state: value(text, "s3kms_keys_by_state", backend="local", state=state)
            for state in expected
        }
        if found == expected:
            break
        assert time.monotonic() < deadline, (found, expected)
        time.sleep(0.1)


def test_a_failed_audit_write_is_counted(tmp_path: Path) -> None:
    srv = KmsThread(thread_settings(tmp_path / "data", audit_log="/dev/full")).start()
    try:
        with (
            Client(srv.url, ROOT_USER, ROOT_PASSWORD) as kms,
            pytest.raises(errors.AuditUnavailable),
        ):
            kms.create_key("refused")
        families = scrape(srv.url)  # a scrape writes no audit line, so it still answers
        assert value(families, "s3kms_audit_write_failures_total", kind="write") >= 1
        assert requests(families, "admin", "KMSCreateKey", "KMSAuditUnavailable", "503") == 1
    finally:
        srv.stop()


# -- who may scrape ----------------------------------------------------------------------------


def test_the_setting_comes_from_the_flag_the_environment_or_the_file(tmp_path: Path) -> None:
    assert resolve_settings({}, {}).metrics == "signed"
    assert resolve_settings({}, {"S3KMS_METRICS": "public"}).metrics == "public"
    assert resolve_settings({"metrics": "off"}, {"S3KMS_METRICS": "public"}).metrics == "off"
    config = tmp_path / "s3kms.toml"
    config.write_text('metrics = "off"\n')
    assert resolve_settings({"config": config}, {}).metrics == "off"
    with pytest.raises(ValueError, match="metrics must be off, public or signed"):
        resolve_settings({}, {"S3KMS_METRICS": "anyone"})


def test_signed_is_the_default_and_refuses_an_unauthenticated_scrape(server: KmsThread) -> None:
    url = server.url
    refused = httpx.get(f"{url}/metrics")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "AccessDenied"
    assert "# TYPE" not in refused.text
    assert httpx.post(f"{url}/metrics").status_code == 405
    for bad in ("Bearer nonsense", f"Bearer {token.derive(ROOT_USER, 'a wrong secret')}"):
        answer = httpx.get(f"{url}/metrics", headers={"Authorization": bad})
        assert answer.status_code == 403, bad
    assert httpx.get(
        f"{url}/metrics", headers={"Authorization": "AWS4-HMAC-SHA256 x"}
    ).status_code in (400, 403)
    # Root, signed (SigV4) or with its metrics token.
    scrape(url)
    root_token = token.derive(ROOT_USER, ROOT_PASSWORD)
    answer = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {root_token}"})
    assert answer.status_code == 200
    parse(answer.text)


def test_only_a_user_allowed_admin_prometheus_may_scrape(server: KmsThread) -> None:
    url = server.url
    with Client(url, ROOT_USER, ROOT_PASSWORD) as kms:
        kms.put_policy("prometheus", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "admin:Prometheus", "Resource": "*"}]})  # fmt: skip
        kms.put_policy("keys", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["kms:*", "admin:KMS*"], "Resource": "*"}]})  # fmt: skip
        kms.add_user("scraper", ["prometheus"], "scraper-secret-key-0001")
        kms.add_user("keyadmin", ["keys"], "keyadmin-secret-key-0002")
    families = scrape(url, access="scraper", secret="scraper-secret-key-0001")
    assert value(families, "s3kms_workers") == 1
    bearer = {"Authorization": f"Bearer {token.derive('scraper', 'scraper-secret-key-0001')}"}
    assert httpx.get(f"{url}/metrics", headers=bearer).status_code == 200
    denied = signed_admin(
        url, "GET", "/metrics", access="keyadmin", secret="keyadmin-secret-key-0002"
    )
    assert denied.status_code == 403
    assert "admin:Prometheus" in denied.json()["error"]["message"]
    bearer = {"Authorization": f"Bearer {token.derive('keyadmin', 'keyadmin-secret-key-0002')}"}
    assert httpx.get(f"{url}/metrics", headers=bearer).status_code == 403
    # The token opens /metrics only, not the rest of the admin API.
    assert httpx.get(f"{url}/rustfs/admin/v3/kms/status", headers=bearer).status_code in (400, 403)
    families = scrape(url)
    assert requests(families, "metrics", "Scrape", "AccessDenied", "403") == 2


def test_public_serves_anyone_and_off_serves_nothing(tmp_path: Path) -> None:
    public = KmsThread(thread_settings(tmp_path / "public", metrics="public")).start()
    try:
        answer = httpx.get(f"{public.url}/metrics")
        assert answer.status_code == 200
        assert value(parse(answer.text), "s3kms_backend_up", backend="local") == 1
    finally:
        public.stop()
    off = KmsThread(thread_settings(tmp_path / "off", metrics="off")).start()
    try:
        assert httpx.get(f"{off.url}/metrics").status_code == 404
        assert signed_admin(off.url, "GET", "/metrics").status_code == 404
        assert off.app.metrics is None  # nothing is counted either
    finally:
        off.stop()


def test_no_key_id_alias_or_secret_in_the_output(server: KmsThread) -> None:
    url = server.url
    secret_names = ["tenant-acme-payroll-key", "alias/tenant-acme-payroll", "ghost-key-4711"]
    with Client(url, ROOT_USER, ROOT_PASSWORD) as kms:
        kms.create_key(secret_names[0])
        kms.add_user("some-user", [], "user-secret-key-abcdef-0003")
    aws = kms_client(url)
    aws.create_alias(AliasName=secret_names[1], TargetKeyId=secret_names[0])
    blob = aws.encrypt(KeyId=secret_names[1], Plaintext=b"payroll")["CiphertextBlob"]
    aws.decrypt(CiphertextBlob=blob)
    aws_error(aws.describe_key, KeyId=secret_names[2])
    aws_error(aws.encrypt, KeyId=secret_names[2], Plaintext=b"x")
    # What a client writes into a request never becomes a label either.
    signed_admin(url, "GET", "/rustfs/admin/v3/kms/key/status?keyName=ghost-key-4711")
    httpx.post(url, headers={"X-Amz-Target": "TrentService.Evil-Operation-Name"}, content=b"{}")
    httpx.get(f"{url}/some/private-path-9876")
    text = signed_admin(url, "GET", "/metrics").text
    parse(text)
    for secret in [*secret_names, "ghost-key", "payroll", ROOT_PASSWORD, ROOT_USER,
                   "user-secret-key-abcdef-0003", "some-user", MASTER_KEY, "Evil-Operation",
                   "private-path", token.derive(ROOT_USER, ROOT_PASSWORD)]:  # fmt: skip
        assert secret not in text, secret
    assert 'operation="UnknownOperation"' in text
    assert 'surface="other",operation="none"' in text


def test_the_cli_prints_the_metrics_token(server: KmsThread) -> None:
    done = run_cli(server, "metrics", "token")
    assert done.returncode == 0, done.stderr
    printed = done.stdout.decode().strip()
    assert printed == token.derive(ROOT_USER, ROOT_PASSWORD)
    answer = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {printed}"})
    assert answer.status_code == 200
    as_json = json.loads(run_cli(server, "metrics", "token", "--json").stdout)
    assert as_json == {"accessKey": ROOT_USER, "token": printed}


# -- workers -----------------------------------------------------------------------------------


def _prefix(request_id: str) -> str:
    return request_id[:8]  # RequestIds: a random prefix per process, then a counter


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores for two workers")
def test_any_worker_answers_the_totals_of_all_workers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stale = data / "metrics"
    stale.mkdir(parents=True)
    (stale / "4242.slab").write_bytes(b"\0" * 16)  # an earlier run's: emptied at start
    server = KmsProcess(data, args=["--workers", "2"])
    server.start()
    try:
        deadline = time.monotonic() + 20
        while len(list(stale.glob("*.slab"))) != 2:  # both workers serve
            assert time.monotonic() < deadline, list(stale.iterdir())
            time.sleep(0.1)
        assert not (stale / "4242.slab").exists()
        with Client(server.url, ROOT_USER, ROOT_PASSWORD) as kms:
            kms.create_key("spread")
        # New connections until both workers have answered; every request counted.
        served: set[str] = set()
        made = 0
        while len(served) < 2:
            assert made < 400, "the kernel never gave a connection to the second worker"
            answer = kms_client(server.url).encrypt(KeyId="spread", Plaintext=b"x")
            served.add(_prefix(answer["ResponseMetadata"]["RequestId"]))
            made += 1
        # Scrapes through new connections until both workers have answered one: each shows
        # the totals of both.
        scraped: set[str] = set()
        for _ in range(400):
            answer = signed_admin(server.url, "GET", "/metrics")
            assert answer.status_code == 200
            families = parse(answer.text)
            assert requests(families, "aws", "Encrypt") == made
            assert value(families, "s3kms_workers") == 2
            assert value(families, "s3kms_requests_in_flight") == 1
            scraped.add(_prefix(answer.headers["x-amz-request-id"]))
            if len(scraped) == 2:
                break
        assert len(scraped) == 2, "every scrape went to the same worker"
        # A worker that dies keeps its counts in the totals; uvicorn starts another.
        os.kill(int(sorted(stale.glob("*.slab"))[0].name.partition("-")[0]), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            try:
                families = scrape(server.url)
                if value(families, "s3kms_workers") == 2 and len(list(stale.glob("*.slab"))) == 3:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "no new worker"
            time.sleep(0.2)
        assert requests(families, "aws", "Encrypt") == made
        assert value(families, "s3kms_requests_in_flight") == 1
    finally:
        server.stop()
    assert not stale.exists()  # removed at a clean stop


# -- the Vault backend -------------------------------------------------------------------------


@pytest.mark.vault
def test_vault_calls_are_timed_and_an_outage_shows(bao_dev_private: Any, tmp_path: Path) -> None:
    vault = bao_dev_private
    settings = thread_settings(
        tmp_path / "data",
        backend="vault",
        maintenance_interval=0.2,
        vault=VaultSettings(
            addresses=(vault.addr,),
            token=vault.root_token,
            kv_prefix="s3kms-metrics",
            timeout_seconds=2.0,
        ),
    )
    srv = KmsThread(settings).start()
    try:
        with Client(srv.url, ROOT_USER, ROOT_PASSWORD) as kms:
            kms.create_key("vault-counted")
            for _ in range(3):
                kms.encrypt("vault-counted", b"x")
            families = scrape(srv.url)
            assert value(families, "s3kms_backend_up", backend="vault") == 1
            calls = "s3kms_keystore_call_duration_seconds_count"
            assert value(families, calls, backend="vault", operation="encrypt") == 3
            assert value(families, calls, backend="vault", operation="create_key") == 1
            assert not [
                k for k in families[calls.removesuffix("_count")].samples if "local" in str(k)
            ]
            deadline = time.monotonic() + 10
            while value(scrape(srv.url), "s3kms_keys", backend="vault") != 1:
                assert time.monotonic() < deadline, "the key count was not refreshed"
                time.sleep(0.1)
            vault.seal()
            with pytest.raises(errors.BackendUnavailable):
                kms.encrypt("vault-counted", b"x")
            families = scrape(srv.url)
            assert value(families, "s3kms_backend_up", backend="vault") == 0
            errors_total = "s3kms_keystore_call_errors_total"
            failed = value(
                families,
                errors_total,
                backend="vault",
                operation="encrypt",
                error="KMSConnectionError",
            )
            assert failed == 1
            assert requests(families, "aws", "Encrypt", "KMSConnectionError", "503") == 1
            vault.unseal()
            deadline = time.monotonic() + 15
            while value(scrape(srv.url), "s3kms_backend_up", backend="vault") != 1:
                assert time.monotonic() < deadline, "the backend did not come back"
                time.sleep(0.2)
    finally:
        srv.stop()
