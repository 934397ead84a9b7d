"""The response value handlers return, and the admin API's error envelope."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from s3kms.errors import KMSError

JSON = b"application/json"
AWS_JSON = b"application/x-amz-json-1.1"


class Response:
    """A status, a content type and either a body or, for streamed responses, chunks (after
    `body`, their already-read first part)."""

    __slots__ = ("body", "chunks", "content_type", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: bytes = JSON,
        chunks: AsyncGenerator[bytes, None] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.chunks = chunks

    async def discard(self) -> None:
        """Close the stream (running its cleanup) if it is not sent, or not sent to the end."""
        if self.chunks is not None:
            await self.chunks.aclose()


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def json_bytes(payload: Any) -> bytes:
    return _encode(payload).encode()


def json_response(status: int, payload: Any, content_type: bytes = JSON) -> Response:
    return Response(status, _encode(payload).encode(), content_type)


def admin_error(exc: KMSError, path: str) -> Response:
    """The document's envelope: `{"error": {"code", "message", "resource"}}`."""
    return json_response(
        exc.status, {"error": {"code": exc.code, "message": exc.message, "resource": path}}
    )
