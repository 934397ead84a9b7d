"""Benchmark the KES API beside the AWS API: GenerateDataKey and Decrypt over both, and handshakes.

    .venv/bin/python benchmarks/kes.py [--duration 5] [--connections 1,32] [--output FILE]

wrk cannot present a client certificate, so this harness drives both surfaces itself, with the
same asyncio load generator (uvloop, raw HTTP/1.1 on keep-alive connections, the same request
bytes sent again and again, as wrk does): one `s3kms server` (Local backend, one worker, audit log
on) serving the AWS API over HTTPS (`--tls-cert`, uvicorn's TLS) and the KES API on its mutual-TLS
port (`--kes-address`, pyOpenSSL over memory BIOs, http/mtls.py), both with the same server
certificate. Rows:

- `aws GenerateDataKey`, `aws Decrypt`: signed once before the run (the signature stays valid
  for the run), 32-byte data keys, the context `{"bucket": "bucket/object"}`;
- `kes generate`, `kes decrypt`: what MinIO sends (a chunked JSON body, the context as MinIO's
  JSON text, base64), as the admin identity (an API key's self-signed Ed25519 certificate);
- `aws handshake`, `kes handshake`: a new TLS connection for each request (`/health/live`,
  `/version`), the cost of the handshake with and without a client certificate.

The load generator shares the machine with the server, so req/s is a floor of what the server
does; `server CPU us/req` (the server's user+system CPU time over the answered requests, from
/proc) is the figure to compare across surfaces. Writes the table and the settings to
`benchmarks/results/<timestamp>-kes.json`. See benchmarks/README.md, *KES API*.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from s3kms.auth.kes import APIKey
from s3kms.auth.sigv4 import sign_headers
from s3kms.client import Client

HERE = Path(__file__).resolve().parent
ROOT_USER, ROOT_PASSWORD = "benchroot", "bench-root-password-0123456789"
MASTER_KEY = base64.b64encode(bytes(range(1, 33))).decode()
CONTEXT = {"bucket": "bucket/object"}
CONTEXT_TEXT = b'{"bucket":"bucket/object"}'  # MinIO's Context.MarshalText of it


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(work: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1, and the admin's API-key client certificate."""
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("bench CA")).issuer_name(_name("bench CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - day).not_valid_after(now + day)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    server = (
        x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - day).not_valid_after(now + day)
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    api_key = APIKey.generate()
    client_key = api_key.private_key()
    client = (  # kms-go's GenerateCertificate: self-signed Ed25519, CN = the identity
        x509.CertificateBuilder().subject_name(_name(api_key.identity))
        .issuer_name(_name(api_key.identity)).public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + 90 * day)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(client_key, None)
    )  # fmt: skip
    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    files = {
        "ca": (work / "ca.pem", ca.public_bytes(pem)),
        "cert": (work / "server.pem", server.public_bytes(pem)),
        "key": (work / "server.key", key.private_bytes(pem, pkcs8, none)),
        "client_cert": (work / "client.pem", client.public_bytes(pem)),
        "client_key": (work / "client.key", client_key.private_bytes(pem, pkcs8, none)),
    }
    for path, data in files.values():
        path.write_bytes(data)
    (work / "identity").write_text(api_key.identity)
    return {name: path for name, (path, _) in files.items()}


@dataclass
class Row:
    surface: str
    op: str
    connections: int
    req_per_s: float
    p50_ms: float
    p99_ms: float
    non_200: int
    server_cpu_us_per_req: float


def wait_healthy(url: str, ca: Path) -> None:
    """Until the server started at `url` answers its health check (at most about 10 s)."""
    for _ in range(200):
        try:
            if httpx.get(f"{url}/health/live", verify=str(ca)).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _load(
    port: int, context: ssl.SSLContext, request: bytes, connections: int, seconds: float,
    reconnect: bool,
) -> tuple[int, int, list[float]]:  # fmt: skip
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    counts = [0, 0]

    async def one() -> None:
        reader = writer = None
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            if writer is None:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
                )
            assert reader is not None
            writer.write(request)
            status = await _answer(reader)
            latencies.append(time.perf_counter() - started)
            counts[status != 200] += 1
            if reconnect:
                writer.close()
                writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return counts[0], counts[1], latencies


def measure(
    pid: int, surface: str, op: str, port: int, context: ssl.SSLContext, request: bytes,
    connections: int, seconds: float, reconnect: bool = False,
) -> Row:  # fmt: skip
    asyncio.run(_load(port, context, request, connections, min(1.0, seconds), reconnect))
    cpu = _cpu_seconds(pid)
    started = time.perf_counter()
    ok, bad, latencies = asyncio.run(_load(port, context, request, connections, seconds, reconnect))
    elapsed = time.perf_counter() - started
    used = _cpu_seconds(pid) - cpu
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    return Row(
        surface, op, connections, round(ok / elapsed, 1),
        round(statistics.median(latencies) * 1000, 3) if latencies else 0.0,
        round(p99 * 1000, 3), bad, round(used / max(ok + bad, 1) * 1e6, 1),
    )  # fmt: skip


def aws_request(port: int, operation: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    url = f"https://127.0.0.1:{port}/"
    headers = {
        "content-type": "application/x-amz-json-1.1",
        "x-amz-target": f"TrentService.{operation}",
    }
    signed = sign_headers(
        "POST", url, headers, data, access_key=ROOT_USER, secret_key=ROOT_PASSWORD,
        region="us-east-1", service="kms", now=time.time(), s3_flavour=False,
    )  # fmt: skip
    lines = ["POST / HTTP/1.1", f"content-length: {len(data)}"]
    lines += [f"{k}: {v}" for k, v in signed.items() if k.lower() != "content-length"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def kes_request(port: int, path: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Go-http-client/1.1\r\n"
        "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n"
        "Accept-Encoding: gzip\r\n\r\n"
    ).encode()
    return head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


def table(rows: list[Row]) -> str:
    out = [
        "| surface | op | conns | req/s | p50 ms | p99 ms | non-200 | server CPU us/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r.surface} | {r.op} | {r.connections} | {r.req_per_s:,.0f} | {r.p50_ms:.2f} "
            f"| {r.p99_ms:.2f} | {r.non_200} | {r.server_cpu_us_per_req:,.0f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    parser.add_argument("--connections", default="1,32", help="connection counts")
    parser.add_argument("--output", type=Path, help="JSON output (results/<ts>-kes.json)")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.connections.split(",")]
    work = Path(tempfile.mkdtemp(prefix="s3kms-kes-bench-"))
    pki = make_pki(work)
    port, kes_port = _free_port(), _free_port()
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
    ]  # fmt: skip
    log = (work / "server.log").open("wb")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"https://127.0.0.1:{port}"
        wait_healthy(url, pki["ca"])
        with Client(url, ROOT_USER, ROOT_PASSWORD, ca_cert=str(pki["ca"])) as kms:
            kms.create_key("bench")
            aws_ciphertext = kms.generate_data_key("bench", context=CONTEXT).ciphertext
        plain = ssl.create_default_context(cafile=str(pki["ca"]))
        plain.set_alpn_protocols(["http/1.1"])
        mutual = ssl.create_default_context(cafile=str(pki["ca"]))
        mutual.load_cert_chain(str(pki["client_cert"]), str(pki["client_key"]))
        mutual.set_alpn_protocols(["h2", "http/1.1"])  # as Go offers
        context_b64 = base64.b64encode(CONTEXT_TEXT).decode()
        generate = kes_request(kes_port, "/v1/key/generate/bench", {"context": context_b64})
        kes_ciphertext = asyncio.run(_one(kes_port, mutual, generate))
        requests = [
            ("aws", "GenerateDataKey", port, plain, aws_request(port, "GenerateDataKey",
             {"KeyId": "bench", "NumberOfBytes": 32, "EncryptionContext": CONTEXT}), False),
            ("kes", "generate", kes_port, mutual, generate, False),
            ("aws", "Decrypt", port, plain, aws_request(port, "Decrypt", {
                "CiphertextBlob": base64.b64encode(aws_ciphertext).decode(),
                "EncryptionContext": CONTEXT}), False),
            ("kes", "decrypt", kes_port, mutual, kes_request(kes_port, "/v1/key/decrypt/bench", {
                "ciphertext": kes_ciphertext, "context": context_b64}), False),
            ("aws", "handshake", port, plain,
             f"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode(), True),
            ("kes", "handshake", kes_port, mutual,
             f"GET /version HTTP/1.1\r\nHost: 127.0.0.1:{kes_port}\r\n\r\n".encode(), True),
        ]  # fmt: skip
        rows = [
            measure(server.pid, surface, op, p, ctx, req, c, args.duration, reconnect)
            for surface, op, p, ctx, req, reconnect in requests
            for c in counts
        ]
    finally:
        server.terminate()
        server.wait(10)
        log.close()
    print(table(rows))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    output = args.output or HERE / "results" / f"{stamp}-kes.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "when": stamp, "duration": args.duration, "connections": counts,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "rows": [asdict(r) for r in rows], "table": table(rows),
    }, indent=2))  # fmt: skip
    return 1 if any(r.non_200 for r in rows) else 0


async def _one(port: int, context: ssl.SSLContext, request: bytes) -> str:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
    )
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line[15:]) for line in head.split(b"\r\n") if line[:15].lower() == b"content-length:"
    )
    body = json.loads(await reader.readexactly(length))
    writer.close()
    return str(body["ciphertext"])


if __name__ == "__main__":
    sys.exit(main())
