"""The hot path without the HTTP server: s3kms's ASGI app called in-process, per request.

    .venv/bin/python benchmarks/hotpath.py                      # CPU microseconds per request
    .venv/bin/python benchmarks/hotpath.py --callgrind          # instructions per request
    .venv/bin/python benchmarks/hotpath.py --callgrind --source /tmp/base/src   # another tree

`run.py` measures what a client sees, through uvicorn and the kernel, and on a shared 2-core
machine its figures move by 10 to 40 % between runs. This measures only what s3kms's own code
costs per request: the app (`server.build_app`, the settings `s3kms server` has by default: Local
backend, audit log and metrics on) gets the same signed requests as run.py's, as uvicorn would hand
them over (the ASGI scope, one body message), on the standard asyncio loop.

- Without `--callgrind`: the CPU time of `--requests` requests per operation, after 500 warm-up
  requests. Still subject to the machine's noise, but without the load generator's.
- With `--callgrind`: the same run under valgrind's callgrind, which counts the instructions the
  process executes (`callgrind_control --dump` before and after each operation's requests); the
  count per request is the same from one run to the next whatever else the machine does, so
  two source trees compare exactly (`--source DIR` runs with `PYTHONPATH=DIR`, e.g. a `git
  archive` of an earlier commit's `src`). It leaves out the kernel's share (system calls).
  About 1 minute per tree with the defaults. Needs valgrind (`apt-get install valgrind`).
- `--cprofile`: print cProfile's top functions for each operation (cProfile slows Python code
  2 to 3 times more than C code: use it for call counts, py-spy for proportions, see README).
- `--data-dir DIR` keeps the data directory (default: a temporary one), and `--keys N` first
  creates keys `scale-0000000` ... up to N in it, as run.py's `--keys` does over HTTP. Create them
  once without `--callgrind`, then count instructions on that directory: how a request's cost
  moves with the number of keys, exactly (README, *A million keys*).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# benchmarks/kmip.py would shadow PyKMIP's `kmip`, which the server imports: this directory goes
# to the end of the path, where `import run` still finds benchmarks/run.py.
sys.path.remove(os.path.dirname(os.path.realpath(__file__)))
sys.path.append(os.path.dirname(os.path.realpath(__file__)))

from run import (
    KEY_NAME,
    MAC_KEY_SPEC,
    MASTER_KEY,
    ROOT_PASSWORD,
    ROOT_USER,
    SIGN_KEY_SPEC,
    AwsKeys,
    Request,
    admin_request,
    aws_body,
    aws_request,
    scale_key_route,
)

URL = "http://127.0.0.1:9000"  # what the requests are signed for; nothing listens there
OPS = ("GenerateDataKey", "Decrypt", "Encrypt", "GenerateMac", "Sign", "key/status")
WARMUP = 500
Message = MutableMapping[str, Any]


def aws(op: str, params: dict[str, Any]) -> Request:
    return aws_request(URL, op, params, ROOT_USER, ROOT_PASSWORD)


def scope_of(req: Request) -> Message:
    """The scope uvicorn's httptools protocol builds for this request, with the Content-Length
    wrk adds to a request with a body."""
    parts = urlsplit(req.url)
    headers = dict(req.headers)
    if req.body:
        headers["Content-Length"] = str(len(req.body))
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "server": ("127.0.0.1", 9000), "client": ("127.0.0.1", 50000), "scheme": "http",
        "method": req.method, "root_path": "", "path": parts.path,
        "raw_path": parts.path.encode(), "query_string": parts.query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }  # fmt: skip


async def call(app: Callable[..., Awaitable[None]], req: Request) -> tuple[int, bytes]:
    scope = scope_of(req)
    body = req.body
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def create_keys(app: Callable[..., Awaitable[None]], count: int) -> None:
    """Keys `scale-0000000` ... up to `count`, as run.py names them; existing ones are kept."""
    started = time.perf_counter()
    for index in range(count):
        route = scale_key_route(index, count)
        status, body = await call(app, admin_request(URL, "POST", route, ROOT_USER, ROOT_PASSWORD))
        assert status in (200, 409), body
        if index and index % 100_000 == 0:
            print(f"{index:,} keys, {time.perf_counter() - started:.0f} s", flush=True)
    print(f"{count:,} keys in {time.perf_counter() - started:.0f} s", flush=True)


def dump(label: str) -> None:
    """Under callgrind: write the counts since the last dump, labelled, and start again."""
    subprocess.run(
        ["callgrind_control", "--dump=" + label, str(os.getpid())], capture_output=True, check=True
    )


async def measure(args: argparse.Namespace) -> None:
    from s3kms.config import Settings
    from s3kms.server import build_app

    os.environ["S3KMS_MASTER_KEY"] = MASTER_KEY
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="s3kms-hotpath-"))
    app = build_app(Settings(data_dir=data_dir, root_user=ROOT_USER, root_password=ROOT_PASSWORD))
    lifespan: asyncio.Queue[Message] = asyncio.Queue()
    started = asyncio.Event()

    async def life_send(message: Message) -> None:
        assert message["type"].endswith(".complete"), message
        started.set()

    await lifespan.put({"type": "lifespan.startup"})
    life = asyncio.create_task(app({"type": "lifespan"}, lifespan.get, life_send))
    await started.wait()
    create = admin_request(URL, "POST", f"key/create?keyName={KEY_NAME}", ROOT_USER, ROOT_PASSWORD)
    status, body = await call(app, create)
    assert status in (200, 409), body  # 409: a reused --data-dir has it
    if args.keys:
        await create_keys(app, args.keys)
    keys = AwsKeys(KEY_NAME)
    status, body = await call(app, aws("GenerateDataKey", aws_body("GenerateDataKey", keys)))
    assert status == 200, body
    keys.ciphertext = json.loads(body)["CiphertextBlob"]
    made: dict[str, str] = {}
    for spec, usage in ((MAC_KEY_SPEC, "GENERATE_VERIFY_MAC"), (SIGN_KEY_SPEC, "SIGN_VERIFY")):
        status, body = await call(app, aws("CreateKey", {"KeySpec": spec, "KeyUsage": usage}))
        assert status == 200, body
        made[spec] = json.loads(body)["KeyMetadata"]["KeyId"]
    keys.mac, keys.sign = made[MAC_KEY_SPEC], made[SIGN_KEY_SPEC]
    status_route = f"key/status?keyName={KEY_NAME}"
    requests = {op: aws(op, aws_body(op, keys)) for op in OPS if op != "key/status"}
    requests["key/status"] = admin_request(URL, "GET", status_route, ROOT_USER, ROOT_PASSWORD)
    for op in args.ops:
        req = requests[op]
        for _ in range(WARMUP):
            status, body = await call(app, req)
            assert status == 200, (op, body)
        profile = cProfile.Profile() if args.cprofile else None
        if args.under_callgrind:
            dump(f"before-{op}")
        if profile is not None:
            profile.enable()
        cpu = time.process_time()
        for _ in range(args.requests):
            await call(app, req)
        cpu = time.process_time() - cpu
        if profile is not None:
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        if args.under_callgrind:
            dump(f"op-{op}")
        print(f"cpu {op} {cpu / args.requests * 1e6:.1f}", flush=True)
    await lifespan.put({"type": "lifespan.shutdown"})
    await life


def callgrind(args: argparse.Namespace) -> int:
    """Run this script under callgrind and read the instruction count of each operation."""
    out_dir = Path(tempfile.mkdtemp(prefix="s3kms-callgrind-"))
    env = dict(os.environ)
    if args.source is not None:
        env["PYTHONPATH"] = str(args.source)
    cmd = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/cg.out",
        sys.executable, __file__, "--under-callgrind", "--requests", str(args.requests),
        "--ops", ",".join(args.ops),
        *(["--data-dir", str(args.data_dir)] if args.data_dir else []),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stdout, done.stderr, file=sys.stderr)
        return 1
    counts: dict[str, int] = {}
    for part in sorted(out_dir.glob("cg.out.*")):
        text = part.read_text(errors="replace")
        trigger = next((ln for ln in text.splitlines() if ln.startswith("desc: Trigger:")), "")
        summary = next(ln for ln in text.splitlines() if ln.startswith("summary:"))
        if "op-" in trigger:
            counts[trigger.rsplit("op-", 1)[1].strip()] = int(summary.split()[1])
    tree = args.source or "the working tree"
    print(f"instructions per request ({args.requests} requests per op, {tree}):")
    for op in args.ops:
        print(f"  {op:16s} {counts[op] / args.requests:10,.0f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default=",".join(OPS), help=f"from {', '.join(OPS)}")
    parser.add_argument("--requests", type=int, default=None, help="per operation")
    parser.add_argument("--callgrind", action="store_true", help="count instructions")
    parser.add_argument("--source", type=Path, help="with --callgrind: PYTHONPATH of the tree")
    parser.add_argument("--cprofile", action="store_true", help="print cProfile's top functions")
    parser.add_argument("--data-dir", type=Path, help="data directory to use and keep")
    parser.add_argument("--keys", type=int, default=0, help="first create keys up to this many")
    parser.add_argument("--under-callgrind", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.ops = [op for op in args.ops.split(",") if op]
    unknown = set(args.ops) - set(OPS)
    if unknown:
        parser.error(f"unknown ops: {', '.join(sorted(unknown))}")
    if args.requests is None:
        args.requests = 1000 if args.callgrind or args.under_callgrind else 20000
    if args.keys and (args.callgrind or args.under_callgrind):
        parser.error("create the keys first, without --callgrind")
    if args.callgrind:
        return callgrind(args)
    asyncio.run(measure(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
