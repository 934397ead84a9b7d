"""The floor: a bare ASGI app answering every request with one fixed ~60-byte JSON body.

No routing, no parsing, no allocation beyond what uvicorn does: whatever a KMS does on top of
this costs throughput. `benchmarks/run.py` serves it on the same stack as s3kms (uvicorn, uvloop,
httptools, access log off, no server header, one process unless `--workers`):

    python -m uvicorn bare_app:app --app-dir benchmarks --loop uvloop --http httptools \
        --no-access-log --no-server-header --log-level warning --port 9100

or standalone: `python benchmarks/bare_app.py [PORT]`.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]

BODY = b'{"KeyId":"bench","KeyState":"Enabled","Plaintext":"AAAAAAAAAA"}'
_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ],
}
_BODY: Message = {"type": "http.response.body", "body": BODY}


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "http":
        await send(_START)
        await send(_BODY)
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]) if len(sys.argv) > 1 else 9100,
        loop="uvloop",
        http="httptools",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        log_level="warning",
    )
