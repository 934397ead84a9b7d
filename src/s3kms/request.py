"""The request as the HTTP shell hands it on: plain values, no framework type.

SigV4 verification (`auth/sigv4.py`) and the protocol handlers read it; nothing in it refers to
ASGI or to a connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import Context, ContextVar, copy_context
from dataclasses import dataclass

# The x-amz-request-id of the request this task serves, set by the HTTP shell: what the service
# records as a key's last use without every call carrying it.
current_request_id: ContextVar[str | None] = ContextVar("s3kms_request_id", default=None)


def without_request() -> Context:
    """The current context with no request in it: for background work that a request starts but
    that is not (only) its own (a Vault health check, a shared commit), so that its log lines do
    not carry that request's id (s3kms.logs)."""
    context = copy_context()
    context.run(current_request_id.set, None)
    return context


@dataclass(slots=True)  # not frozen: made per request, and a frozen one costs 3x to build
class RequestView:
    """The plain values an ASGI server has about a request."""

    method: str  # "GET"
    path: str  # raw path exactly as received, still percent-encoded
    query: str  # raw query string as received, without "?"
    headers: Mapping[str, str]  # lower-cased names -> values (duplicates joined with ",")
    body: bytes
    source_ip: str | None = None  # the peer's address (aws:SourceIp), when the server knows it
    secure: bool = False  # the request came over TLS (aws:SecureTransport)
