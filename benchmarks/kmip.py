"""Benchmark the KMIP listener: Get and Locate as Ceph RGW sends them, beside the HTTP figures.

    .venv/bin/python benchmarks/kmip.py [--duration 4] [--warmup 1] [--connections 1,32]
        [--profile 5] [--output FILE] [--codec-only]

(about 2 1/2 minutes with the defaults; `--codec-only`: the codec timings alone, no server)

wrk cannot speak KMIP (nor present a client certificate), so, as benchmarks/kes.py does, this
harness drives every surface with one asyncio load generator of its own (uvloop, keep-alive TLS
connections opened before the measured window, the same request bytes sent again and again),
against one `s3kms server` (Local backend, one worker, audit log on) serving the AWS API over
HTTPS (`--tls-cert`), the KES API (`--kes-address`) and KMIP (`--kmip-address`, with
`--kmip-tls-cert`/`--kmip-tls-key` and `--kmip-ca-cert` from a trustme PKI). The HTTPS and KES
certificates are kes.py's (`make_pki`).

Before the run, as root through the admin API: a policy allowing `kmip:*`, a user `rgw` with it,
and the identity of a client certificate the CA issued attached to that user as a KMIP
identity. Then, as that user through PyKMIP's `ProxyKmipClient` (what Ceph's QA uses), the key
RGW asks for (Create AES-256 named `pykmip-bench`, Encrypt|Decrypt, then Activate) and 100 other
AES-256 objects (`pykmip-other-NNNN`), so that Locate has something to search; later 900 more.

The KMIP requests are what RGW sends (docs/kmip.md, *Ceph RGW*), encoded once with PyKMIP's
message classes: protocol 1.0, Maximum Response Size 8192, Batch Count 1, one batch item, no
Unique Batch Item ID, no credential. Rows:

- `kmip Get`: Get of the AES-256 key by its Unique Identifier (the answer: Raw, 32 bytes);
- `kmip Locate`: Locate by Name (Name Type Uninterpreted Text String), which must find exactly
  the one object; with 100 and with 1,000 other objects in the keystore (Locate scans every key);
- `kmip Locate+Get`: the pair RGW sends for each SSE-KMS S3 request, one after the other on one
  connection (a "request" of this row is the pair);
- `aws GenerateDataKey`, `aws Decrypt` (HTTPS, signed once) and `kes generate`: kes.py's requests,
  on the same server in the same run;
- `kmip Get, beside a Locate loop`, `aws GenerateDataKey, beside a Locate loop` (1,000 objects):
  one connection of Get or GenerateDataKey while one more connection sends Locates, which all
  run on the process's one event loop (the server CPU of these rows is both loads': no figure
  per request).

A request counts when every answer is 200 (HTTP) or has Result Status Success (KMIP); each request
is sent and its answer checked once before its row runs. `server CPU us/req` is the server's
user+system CPU (from /proc) over the answered requests; `srv cores` and `client cores` are the
server's and the load generator's CPU per second of run, `other cores` the rest of the machine's
busy CPU (/proc/stat: kernel work for loopback traffic, or a neighbour; above ~0.3 the row was
disturbed). They share the machine, so req/s is a floor and the CPU per request is the figure
to compare.

Then, in-process, PyKMIP's codec alone (`timeit`, the best of 3 rounds of 7 repeats): decoding
the two requests, building and encoding their answers, and Locate's per-object test; and, with `--profile S` (py-spy, when
installed), S seconds of the server under `kmip Get` and under `kmip Locate` (1,000 objects) at
32 connections, samples grouped by where they are (TLS, framing, PyKMIP decode, the operation,
PyKMIP encode, audit, ...). Writes the table, the settings and all of that to
`benchmarks/results/<timestamp>-kmip.json`. See benchmarks/README.md, *KMIP*.
"""

from __future__ import annotations

import os
import sys

# This file is kmip.py, the name of PyKMIP's package: its directory goes to the end of the path,
# so that `import kmip` is PyKMIP and `import kes` still finds benchmarks/kes.py.
sys.path.remove(os.path.dirname(os.path.realpath(__file__)))
sys.path.append(os.path.dirname(os.path.realpath(__file__)))

import argparse
import asyncio
import base64
import collections
import datetime
import json
import platform
import resource
import shutil
import ssl
import statistics
import subprocess
import tempfile
import time
import timeit
import uuid
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trustme
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kes import (
    CONTEXT,
    CONTEXT_TEXT,
    MASTER_KEY,
    ROOT_PASSWORD,
    ROOT_USER,
    _answer,
    _cpu_seconds,
    _free_port,
    _one,
    aws_request,
    kes_request,
    make_pki,
    wait_healthy,
)
from kmip.core import attributes as core_attributes
from kmip.core import enums, misc, secrets, utils
from kmip.core import objects as core_objects
from kmip.core.factories.attributes import AttributeFactory
from kmip.core.messages import contents, messages, payloads
from kmip.pie.client import ProxyKmipClient
from run import package_versions, source_digest

from s3kms.auth.certificates import identity_of
from s3kms.client import Client
from s3kms.protocols.kmip.attributes import matches
from s3kms.protocols.kmip.objects import core_object
from s3kms.protocols.kmip.record import ACTIVE, KmipRecord

HERE = Path(__file__).resolve().parent
V10 = enums.KMIPVersion.KMIP_1_0
KEY_NAME = "pykmip-bench"  # RGW's `pykmip-$keyid` for SSEKMSKeyId=bench
USER, USER_SECRET = "rgw", "rgw-secret-0123456789abcdef"
# Result Status Success, as it stands in an answer (tag, Enumeration, length 4, 0, padding).
SUCCESS = bytes.fromhex("42007f05000000040000000000000000")
PACKAGES = ("s3kms", "PyKMIP", "pyOpenSSL", "cryptography", "uvloop", "uvicorn", "httptools")

Exchange = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


# -- KMIP messages ----------------------------------------------------------------------------


def kmip_request(operation: enums.Operation, payload: Any) -> bytes:
    """One request message as RGW's libkmip sends it: protocol 1.0, Maximum Response Size 8192,
    Batch Count 1, one batch item without a Unique Batch Item ID, no credential."""
    header = messages.RequestHeader(
        protocol_version=contents.ProtocolVersion(1, 0),
        maximum_response_size=contents.MaximumResponseSize(8192),
        batch_count=contents.BatchCount(1),
    )
    item = messages.RequestBatchItem(
        operation=contents.Operation(operation), request_payload=payload
    )
    stream = utils.BytearrayStream()
    messages.RequestMessage(request_header=header, batch_items=[item]).write(
        stream, kmip_version=V10
    )
    return bytes(stream.buffer)


def name_attribute(name: str) -> Any:
    return AttributeFactory().create_attribute(enums.AttributeType.NAME, name)


def locate_request(name: str) -> bytes:
    payload = payloads.LocateRequestPayload(attributes=[name_attribute(name)])
    return kmip_request(enums.Operation.LOCATE, payload)


def get_request(uid: str) -> bytes:
    return kmip_request(enums.Operation.GET, payloads.GetRequestPayload(unique_identifier=uid))


def decode_response(data: bytes) -> Any:
    response = messages.ResponseMessage()
    response.read(utils.BytearrayStream(data), kmip_version=V10)
    return response


def _payload(answer: bytes) -> Any:
    item = decode_response(answer).batch_items[0]
    if item.result_status.value is not enums.ResultStatus.SUCCESS:
        reason = item.result_reason.value if item.result_reason else None
        message = item.result_message.value if item.result_message else None
        raise SystemExit(f"KMIP answered {reason}: {message}")
    return item.response_payload


# -- the load generator -----------------------------------------------------------------------


def kmip_exchange(*requests: bytes) -> Exchange:
    """Send each message in turn and read its answer (the 8-byte TTLV head, then the body)."""

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        ok = True
        for request in requests:
            writer.write(request)
            head = await reader.readexactly(8)
            body = await reader.readexactly(int.from_bytes(head[4:], "big"))
            ok = ok and SUCCESS in body
        return ok

    return exchange


def http_exchange(request: bytes) -> Exchange:
    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(request)
        return await _answer(reader) == 200

    return exchange


async def _kmip_once(port: int, context: ssl.SSLContext, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
    )
    writer.write(request)
    head = await reader.readexactly(8)
    body = await reader.readexactly(int.from_bytes(head[4:], "big"))
    writer.close()
    return head + body


@dataclass
class Row:
    surface: str
    op: str
    objects: int | None  # other KMIP objects in the keystore (KMIP rows)
    connections: int
    req_per_s: float
    p50_ms: float
    p99_ms: float
    failed: int
    server_cpu_us_per_req: float | None  # None: another load ran beside this one
    server_cores: float
    client_cores: float
    other_cores: float  # the rest of the machine's busy CPU (/proc/stat): a neighbour, the kernel


async def _drive(
    port: int, context: ssl.SSLContext, exchange: Exchange, connections: int,
    warmup: float, seconds: float, pid: int,
) -> dict[str, Any]:  # fmt: skip
    streams = []
    for _ in range(connections):
        streams.append(
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
            )
        )
    latencies: list[float] = []
    counts = [0, 0]

    async def one(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, until: float, keep: bool
    ) -> None:
        while time.perf_counter() < until:
            started = time.perf_counter()
            ok = await exchange(reader, writer)
            if keep:
                latencies.append(time.perf_counter() - started)
                counts[not ok] += 1

    until = time.perf_counter() + warmup
    await asyncio.gather(*(one(r, w, until, False) for r, w in streams))
    cpu, own, busy = _cpu_seconds(pid), _own_cpu(), _busy_seconds()
    started = time.perf_counter()
    await asyncio.gather(*(one(r, w, started + seconds, True) for r, w in streams))
    elapsed = time.perf_counter() - started
    used, own_used = _cpu_seconds(pid) - cpu, _own_cpu() - own
    busy = _busy_seconds() - busy
    for _, writer in streams:
        writer.close()
    return {
        "ok": counts[0], "failed": counts[1], "latencies": latencies, "elapsed": elapsed,
        "server_cpu": used, "client_cpu": own_used, "other_cpu": busy - used - own_used,
    }  # fmt: skip


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (/proc/stat: all but idle and iowait)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _beside(
    background: Callable[[], Coroutine[Any, Any, Any]],
    foreground: Callable[[], Coroutine[Any, Any, dict[str, Any]]],
) -> dict[str, Any]:
    """`foreground`'s figures while `background` runs (it must outlast it)."""
    behind = asyncio.ensure_future(background())
    await asyncio.sleep(0.2)
    try:
        return await foreground()
    finally:
        await behind


def measure(
    pid: int, surface: str, op: str, objects: int | None, port: int, context: ssl.SSLContext,
    exchange: Exchange, connections: int, warmup: float, seconds: float,
    beside: tuple[int, ssl.SSLContext, Exchange] | None = None,
) -> Row:  # fmt: skip
    """One row; with `beside` (a port, its context, an exchange), that exchange runs on one
    more connection meanwhile (the row's server CPU is then both's: not per request)."""

    def drive() -> Coroutine[Any, Any, dict[str, Any]]:
        return _drive(port, context, exchange, connections, warmup, seconds, pid)

    def busy() -> Coroutine[Any, Any, dict[str, Any]]:
        assert beside is not None
        other_port, other_context, other = beside
        return _drive(other_port, other_context, other, 1, 0.0, warmup + seconds + 1, pid)

    got: dict[str, Any] = uvloop.run(drive() if beside is None else _beside(busy, drive))
    latencies, elapsed = sorted(got["latencies"]), got["elapsed"]
    answered = max(got["ok"] + got["failed"], 1)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    cpu = None if beside else round(got["server_cpu"] / answered * 1e6, 1)
    row = Row(
        surface, op, objects, connections, round(got["ok"] / elapsed, 1),
        round(statistics.median(latencies) * 1000, 3) if latencies else 0.0,
        round(p99 * 1000, 3), got["failed"], cpu,
        round(got["server_cpu"] / elapsed, 2), round(got["client_cpu"] / elapsed, 2),
        round(got["other_cpu"] / elapsed, 2),
    )  # fmt: skip
    print(_line(row), flush=True)
    return row


# -- the setup --------------------------------------------------------------------------------


def make_kmip_pki(work: Path) -> dict[str, Any]:
    """A CA, the KMIP port's certificate for 127.0.0.1, and RGW's client certificate (trustme
    puts the clientAuth extended key usage PyKMIP needs in it) with its identity."""
    ca = trustme.CA()
    files = {name: work / f"kmip-{name}.pem" for name in ("ca", "cert", "key", "client", "ckey")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server = ca.issue_cert("127.0.0.1", "localhost")
    files["cert"].write_bytes(b"".join(pem.bytes() for pem in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(files["key"]))
    client = ca.issue_cert("rgw.kmip.bench")
    client.cert_chain_pems[0].write_to_path(str(files["client"]))
    client.private_key_pem.write_to_path(str(files["ckey"]))
    der = x509.load_pem_x509_certificate(client.cert_chain_pems[0].bytes()).public_bytes(
        serialization.Encoding.DER
    )
    (work / "pykmip.conf").write_text("")  # PyKMIP reads a configuration file; an empty one
    return {**files, "identity": identity_of(der), "conf": work / "pykmip.conf"}


def pykmip_client(port: int, pki: dict[str, Any]) -> ProxyKmipClient:
    client = ProxyKmipClient(
        hostname="127.0.0.1", port=port, cert=str(pki["client"]), key=str(pki["ckey"]),
        ca=str(pki["ca"]), config_file=str(pki["conf"]),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # PyKMIP's ssl.PROTOCOL_SSLv23
        client.open()
    return client


def create_objects(client: ProxyKmipClient, first: int, count: int) -> float:
    """`count` more AES-256 objects named pykmip-other-NNNN; the seconds it took."""
    started = time.perf_counter()
    for number in range(first, first + count):
        client.create(
            enums.CryptographicAlgorithm.AES, 256, name=f"pykmip-other-{number:04d}",
            cryptographic_usage_mask=[
                enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT,
            ],
        )  # fmt: skip
    return time.perf_counter() - started


# -- the codec alone --------------------------------------------------------------------------


def _best_us(call: Callable[[], Any], repeat: int = 7) -> float:
    timer = timeit.Timer(call)
    number, _ = timer.autorange()
    return round(min(timer.repeat(repeat, number)) / number * 1e6, 2)


def _written(value: Any) -> bytes:
    stream = utils.BytearrayStream()
    value.write(stream, kmip_version=V10)
    return bytes(stream.buffer)


def codec_timings(uid: str, owner: str, rounds: int = 3) -> dict[str, Any]:
    """In-process microseconds of PyKMIP's work for one Get and one Locate, as api.py and
    operations.py do it (the best of `rounds` x 7 `timeit` repeats)."""
    get, locate = get_request(uid), locate_request(KEY_NAME)

    def read(data: bytes) -> Callable[[], Any]:
        def decode() -> Any:
            request = messages.RequestMessage()
            request.read(utils.BytearrayStream(data), kmip_version=V10)
            return request

        return decode

    now = int(time.time())
    record = KmipRecord(
        owner=owner, object_type=enums.ObjectType.SYMMETRIC_KEY.value, state=ACTIVE,
        initial_date=now, last_change_date=now, algorithm=enums.CryptographicAlgorithm.AES.value,
        length=256, usage_mask=12, names=(KEY_NAME,), activation_date=now,
    )  # fmt: skip
    material = os.urandom(32)

    def direct_secret() -> Any:  # the same Symmetric Key, without PyKMIP's pie object
        block = core_objects.KeyBlock(
            key_format_type=misc.KeyFormatType(enums.KeyFormatType.RAW),
            key_value=core_objects.KeyValue(core_objects.KeyMaterial(material)),
            cryptographic_algorithm=core_attributes.CryptographicAlgorithm(
                enums.CryptographicAlgorithm.AES
            ),
            cryptographic_length=core_attributes.CryptographicLength(256),
        )
        return secrets.SymmetricKey(block)

    def get_answer() -> Any:
        secret = core_object(record, material, None)
        payload = payloads.GetResponsePayload(
            object_type=enums.ObjectType.SYMMETRIC_KEY, unique_identifier=uid, secret=secret
        )
        return _response(enums.Operation.GET, payload)

    def locate_answer() -> Any:
        payload = payloads.LocateResponsePayload(unique_identifiers=[uid])
        return _response(enums.Operation.LOCATE, payload)

    def write(build: Callable[[], Any]) -> Callable[[], bytes]:
        built = build()
        return lambda: _written(built)

    other = KmipRecord(**{**asdict(record), "names": ("pykmip-other-0001",)}).dump()
    wanted = read(locate)().batch_items[0].request_payload.attributes

    def scan_one() -> bool:  # what Locate does for each KMIP object in the keystore
        return matches("other-uid", KmipRecord.load(other), wanted)

    calls: dict[str, Callable[[], Any]] = {
        "decode Get request": read(get),
        "decode Locate request": read(locate),
        "build Get answer (core_object + payload + message)": get_answer,
        "core_object alone (objects.py: the Get answer's secret)": lambda: core_object(
            record, material, None
        ),
        "the same secret from kmip.core classes (no pie object)": direct_secret,
        "encode Get answer (ResponseMessage.write)": write(get_answer),
        "build Locate answer": locate_answer,
        "encode Locate answer (ResponseMessage.write)": write(locate_answer),
        "Locate, per object: KmipRecord.load + matches": scan_one,
        "KmipRecord.load alone": lambda: KmipRecord.load(other),
    }
    best = dict.fromkeys(calls, float("inf"))
    busy, started = _busy_seconds(), time.perf_counter()
    for _ in range(rounds):  # rounds of every timing: a busy neighbour spoils one, not all
        for name, call in calls.items():
            best[name] = min(best[name], _best_us(call))
    busy = (_busy_seconds() - busy) / (time.perf_counter() - started)
    same = _written(core_object(record, material, None)) == _written(direct_secret())
    return {
        **best,
        "same bytes (core_object, kmip.core)": same,
        "busy CPUs meanwhile (1.0: this process alone)": round(busy, 2),
    }


def _response(operation: enums.Operation, payload: Any) -> Any:
    """An answer as api.py builds it (KmipAPI._item's batch item, api._response's header)."""
    item = messages.ResponseBatchItem(
        operation=contents.Operation(operation),
        result_status=contents.ResultStatus(enums.ResultStatus.SUCCESS),
        response_payload=payload,
    )
    header = messages.ResponseHeader(
        protocol_version=contents.ProtocolVersion(1, 0),
        time_stamp=contents.TimeStamp(int(time.time())),
        batch_count=contents.BatchCount(1),
    )
    return messages.ResponseMessage(response_header=header, batch_items=[item])


# -- the profile ------------------------------------------------------------------------------

# (category, where): the innermost frame of a sample that is in `where` (py-spy names frames
# "function (path:line)", the path relative to site-packages) names its category; PyKMIP's
# frames (and SQLAlchemy's, under PyKMIP's pie objects) take theirs from the s3kms frame that
# called them, pyOpenSSL's from mtls.py's; asyncio's and the thread pool's from their caller.
_LOOP = "event loop, thread pool, other"
_PLACES = (
    (_LOOP, "(s3kms/server.py:"),
    (_LOOP, "(s3kms/cli.py:"),
    ("TLS (mtls.py, pyOpenSSL)", "(s3kms/http/mtls.py:"),
    ("framing (KmipConnection)", "(s3kms/http/kmip.py:"),
    ("KmipAPI: header, principal, batch", "(s3kms/protocols/kmip/api.py:"),
    ("audit", "(s3kms/audit"),
    ("metrics", "(s3kms/metrics"),
    ("operation (protocols/kmip)", "(s3kms/protocols/kmip/"),
    ("authorisation (access/, auth/)", "(s3kms/access/"),
    ("authorisation (access/, auth/)", "(s3kms/auth/"),
    ("service", "(s3kms/service.py:"),
    ("keystore", "(s3kms/keystore/"),
    ("runtime", "(s3kms/runtime"),
    ("crypto", "(s3kms/crypto/"),
    ("other s3kms", "(s3kms/"),
)
_PYKMIP = ("(kmip/", "(sqlalchemy/")


def _category(frames: list[str]) -> str:
    category, caller = _LOOP, ""
    for frame in frames:
        if any(where in frame for where in _PYKMIP):
            if not category.startswith("PyKMIP"):
                function, _, where = caller.partition(" (")
                function = function.rsplit(".", 1)[-1]
                if "api.py" in where and function == "handle":
                    category = "PyKMIP decode (RequestMessage.read)"
                elif "api.py" in where and function == "_encode":
                    category = "PyKMIP encode (ResponseMessage.write)"
                elif caller and category != _LOOP:
                    category = f"PyKMIP objects ({where.split(':')[0]} {function})"
                else:
                    category = "PyKMIP (a stack py-spy read without its s3kms caller)"
            continue
        for name, where in _PLACES:
            if where in frame:
                category, caller = name, frame
                break
    return category


def summarize_profile(raw: Path) -> dict[str, Any]:
    """py-spy's raw (collapsed) stacks, by category: share of the samples."""
    samples: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        samples[_category(frames)] += int(count)
        functions[frames[-1]] += int(count)
    total = sum(samples.values()) or 1
    return {
        "samples": total,
        "categories": {k: round(v / total * 100, 1) for k, v in samples.most_common()},
        "top_leaf_functions": {k: round(v / total * 100, 1) for k, v in functions.most_common(25)},
    }


def profile(
    spy: str, pid: int, seconds: float, out: Path, port: int, context: ssl.SSLContext,
    exchange: Exchange, connections: int,
) -> dict[str, Any]:  # fmt: skip
    """py-spy on the server for `seconds` while `exchange` runs on `connections`."""
    # Blocking (py-spy stops the process for each sample): --nonblocking tears the stacks.
    cmd = [
        spy, "record", "--pid", str(pid), "--rate", "250", "--duration", str(int(seconds)),
        "--format", "raw", "--output", str(out),
    ]  # fmt: skip
    spying = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    uvloop.run(_drive(port, context, exchange, connections, 0.5, seconds + 1.0, pid))
    _, err = spying.communicate(timeout=60)
    if spying.returncode != 0 or not out.exists():
        return {"error": err.decode(errors="replace")[-2000:]}
    return {"raw": str(out), **summarize_profile(out)}


# -- reporting --------------------------------------------------------------------------------

_HEADER = (
    "| surface | op | other objects | conns | req/s | p50 ms | p99 ms | failed "
    "| server CPU us/req | srv cores | client cores | other cores |"
)


def _line(r: Row) -> str:
    objects = "-" if r.objects is None else f"{r.objects:,}"
    cpu = "-" if r.server_cpu_us_per_req is None else f"{r.server_cpu_us_per_req:,.0f}"
    return (
        f"| {r.surface} | {r.op} | {objects} | {r.connections} | {r.req_per_s:,.0f} "
        f"| {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.failed} | {cpu} "
        f"| {r.server_cores:.2f} | {r.client_cores:.2f} | {r.other_cores:.2f} |"
    )


def table(rows: list[Row]) -> str:
    align = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    return "\n".join([_HEADER, align, *(_line(r) for r in rows)])


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    versions = package_versions(PACKAGES)
    return {
        "nproc": len(os.sched_getaffinity(0)), "cpu_model": model,
        "python": platform.python_version(), "platform": platform.platform(),
        "packages": versions, "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }  # fmt: skip


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=HERE.parent, capture_output=True, text=True, check=False
        )
        return done.stdout.rstrip("\n")

    changed = git("status", "--porcelain").splitlines()
    return {
        "head": git("rev-parse", "HEAD").strip(),
        "dirty": bool(changed),
        "changed": changed,
        "src_dirty": any(line[3:].startswith("src/") for line in changed),
    }


# -- the run ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per row")
    parser.add_argument("--connections", default="1,32", help="connection counts")
    parser.add_argument(
        "--profile", type=float, default=5.0, help="seconds of py-spy per profile (0: none)"
    )
    parser.add_argument("--output", type=Path, help="JSON output (results/<ts>-kmip.json)")
    parser.add_argument(
        "--codec-only", action="store_true", help="print the in-process codec timings only"
    )
    args = parser.parse_args(argv)
    owner = f"arn:aws:iam::000000000000:user/{USER}"
    if args.codec_only:
        for name, value in codec_timings(str(uuid.uuid4()), owner).items():
            print(f"{name}: {value}")
        return 0
    counts = [int(c) for c in args.connections.split(",")]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    output = args.output or HERE / "results" / f"{stamp}-kmip.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    busy = _busy_seconds()
    time.sleep(1.0)
    idle_check = round(_busy_seconds() - busy, 2)
    if idle_check > 0.2:
        print(f"warning: the machine was busy before the start ({idle_check} CPUs)", flush=True)
    work = Path(tempfile.mkdtemp(prefix="s3kms-kmip-bench-"))
    pki, kmip_pki = make_pki(work), make_kmip_pki(work)
    port, kes_port, kmip_port = _free_port(), _free_port(), _free_port()
    env = {
        **os.environ, "S3KMS_ROOT_USER": ROOT_USER, "S3KMS_ROOT_PASSWORD": ROOT_PASSWORD,
        "S3KMS_MASTER_KEY": MASTER_KEY,
    }  # fmt: skip
    cmd = [
        str(Path(sys.executable).parent / "s3kms"), "server", "--address", f"127.0.0.1:{port}",
        "--data-dir", str(work / "data"), "--log-level", "warning", "--backend", "local",
        "--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]),
        "--kes-address", f"127.0.0.1:{kes_port}",
        "--kes-admin-identity", (work / "identity").read_text(),
        "--kmip-address", f"127.0.0.1:{kmip_port}",
        "--kmip-tls-cert", str(kmip_pki["cert"]), "--kmip-tls-key", str(kmip_pki["key"]),
        "--kmip-ca-cert", str(kmip_pki["ca"]),
    ]  # fmt: skip
    log = (work / "server.log").open("wb")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    setup: dict[str, Any] = {}
    profiles: dict[str, Any] = {}
    rows: list[Row] = []
    try:
        url = f"https://127.0.0.1:{port}"
        wait_healthy(url, pki["ca"])
        with Client(url, ROOT_USER, ROOT_PASSWORD, ca_cert=str(pki["ca"])) as kms:
            kms.create_key("bench")
            aws_ciphertext = kms.generate_data_key("bench", context=CONTEXT).ciphertext
            kms.put_policy("kmip-all", {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ["kmip:*"], "Resource": "*"}],
            })  # fmt: skip
            kms.add_user(USER, ["kmip-all"], USER_SECRET)
            kms.add_kmip_identity(USER, kmip_pki["identity"])
        pykmip = pykmip_client(kmip_port, kmip_pki)
        try:
            uid = pykmip.create(
                enums.CryptographicAlgorithm.AES, 256, name=KEY_NAME,
                cryptographic_usage_mask=[
                    enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT,
                ],
            )  # fmt: skip
            pykmip.activate(uid)
            setup["create_100_seconds"] = round(create_objects(pykmip, 0, 100), 2)
        finally:
            pykmip.close()

        # The contexts: HTTPS without a client certificate; KES and KMIP with one.
        plain = ssl.create_default_context(cafile=str(pki["ca"]))
        plain.set_alpn_protocols(["http/1.1"])
        mutual = ssl.create_default_context(cafile=str(pki["ca"]))
        mutual.load_cert_chain(str(pki["client_cert"]), str(pki["client_key"]))
        mutual.set_alpn_protocols(["h2", "http/1.1"])  # as Go offers
        rgw = ssl.create_default_context(cafile=str(kmip_pki["ca"]))
        rgw.load_cert_chain(str(kmip_pki["client"]), str(kmip_pki["ckey"]))

        # What RGW sends, checked once: Locate finds exactly the key, Get returns its 32 bytes.
        locate, get = locate_request(KEY_NAME), get_request(uid)
        found = _payload(uvloop.run(_kmip_once(kmip_port, rgw, locate))).unique_identifiers
        if list(found) != [uid]:
            raise SystemExit(f"Locate of {KEY_NAME} found {found}, not [{uid}]")
        got = _payload(uvloop.run(_kmip_once(kmip_port, rgw, get)))
        material = got.secret.key_block.key_value.key_material.value
        if got.object_type is not enums.ObjectType.SYMMETRIC_KEY or len(material) != 32:
            raise SystemExit(f"Get answered {got.object_type} with {len(material)} bytes")
        setup["locate_request_bytes"], setup["get_request_bytes"] = len(locate), len(get)

        context_b64 = base64.b64encode(CONTEXT_TEXT).decode()
        generate = kes_request(kes_port, "/v1/key/generate/bench", {"context": context_b64})
        uvloop.run(_one(kes_port, mutual, generate))  # checks it answers a ciphertext
        gdk = aws_request(port, "GenerateDataKey", {
            "KeyId": "bench", "NumberOfBytes": 32, "EncryptionContext": CONTEXT})  # fmt: skip
        decrypt = aws_request(port, "Decrypt", {
            "CiphertextBlob": base64.b64encode(aws_ciphertext).decode(),
            "EncryptionContext": CONTEXT})  # fmt: skip
        http_rows = [
            ("aws", "GenerateDataKey", port, plain, http_exchange(gdk)),
            ("aws", "Decrypt", port, plain, http_exchange(decrypt)),
            ("kes", "generate", kes_port, mutual, http_exchange(generate)),
        ]
        kmip_rows = [
            ("Get", kmip_exchange(get)),
            ("Locate", kmip_exchange(locate)),
            ("Locate+Get", kmip_exchange(locate, get)),
        ]
        for surface, op, p, context, exchange in http_rows:
            if not uvloop.run(_check(p, context, exchange)):
                raise SystemExit(f"{surface} {op} did not answer 200")
        print(_HEADER, flush=True)
        pid = server.pid
        for c in counts:
            for surface, op, p, context, exchange in http_rows:
                rows.append(measure(pid, surface, op, None, p, context, exchange, c,
                                    args.warmup, args.duration))  # fmt: skip
            for op, exchange in kmip_rows:
                rows.append(measure(pid, "kmip", op, 100, kmip_port, rgw, exchange, c,
                                    args.warmup, args.duration))  # fmt: skip
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        spying = args.profile > 0 and Path(spy).exists()
        if spying:
            profiles["Get, 100 objects, 32 connections"] = profile(
                spy, pid, args.profile, output.with_suffix(".get.pyspy.txt"), kmip_port, rgw,
                kmip_exchange(get), 32,
            ) | {"row": ["Get", 100, 32]}  # fmt: skip
        pykmip = pykmip_client(kmip_port, kmip_pki)
        try:
            setup["create_900_seconds"] = round(create_objects(pykmip, 100, 900), 2)
        finally:
            pykmip.close()
        for c in counts:
            for op, exchange in kmip_rows:
                rows.append(measure(pid, "kmip", op, 1000, kmip_port, rgw, exchange, c,
                                    args.warmup, args.duration))  # fmt: skip
        # What a Locate over the keystore does to the other requests of the process: a Get and
        # an AWS GenerateDataKey on one connection while another connection sends Locates.
        locating = (kmip_port, rgw, kmip_exchange(locate))
        rows.append(measure(pid, "kmip", "Get, beside a Locate loop", 1000, kmip_port, rgw,
                            kmip_exchange(get), 1, args.warmup, args.duration, locating))  # fmt: skip
        rows.append(measure(pid, "aws", "GenerateDataKey, beside a Locate loop", 1000, port,
                            plain, http_exchange(gdk), 1, args.warmup, args.duration,
                            locating))  # fmt: skip
        if spying:
            profiles["Locate, 1,000 objects, 32 connections"] = profile(
                spy, pid, args.profile, output.with_suffix(".locate.pyspy.txt"), kmip_port, rgw,
                kmip_exchange(locate), 32,
            ) | {"row": ["Locate", 1000, 32]}  # fmt: skip
    finally:
        server.terminate()
        server.wait(10)
        log.close()
    codec = codec_timings(uid, owner)
    print()
    print(table(rows))
    print()
    for name, us in codec.items():
        print(f"{name}: {us}" + (" us" if isinstance(us, float) and "CPUs" not in name else ""))
    for name, found_profile in profiles.items():
        op, objects, conns = found_profile["row"]
        cpu = next(
            (r.server_cpu_us_per_req for r in rows
             if (r.surface, r.op, r.objects, r.connections) == ("kmip", op, objects, conns)),
            None,
        )  # fmt: skip
        found_profile["server_cpu_us_per_req"] = cpu
        print(f"\nprofile, {name} (% of the samples, and of the row's {cpu} us/req):")
        for category, share in found_profile.get("categories", {}).items():
            us = "" if cpu is None else f"{share * cpu / 100:8,.0f} us"
            print(f"  {share:5.1f} % {us}  {category}")
        if "error" in found_profile:
            print(f"  py-spy failed: {found_profile['error']}")
    output.write_text(json.dumps({
        "when": stamp, "duration": args.duration, "warmup": args.warmup, "connections": counts,
        "command": [sys.executable, *sys.argv], "machine": machine(), "git": git_state(),
        "busy_cpus_before": idle_check,
        "s3kms_source": source_digest(), "setup": setup, "rows": [asdict(r) for r in rows],
        "table": table(rows), "codec_us": codec, "profiles": profiles,
        "server_log_tail": (work / "server.log").read_text(errors="replace")[-4000:],
    }, indent=2))  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    print(f"\nwrote {output}")
    return 1 if any(r.failed for r in rows) else 0


async def _check(port: int, context: ssl.SSLContext, exchange: Exchange) -> bool:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
    )
    try:
        return await exchange(reader, writer)
    finally:
        writer.close()


if __name__ == "__main__":
    sys.exit(main())
