"""The error tree in KES's envelope: `{"message": "..."}` with the status KES answers.

MinIO's KES client (minio/kms-go `kes/error.go`) compares the status *and* the exact text of an
error with its own values (`errors.Is(err, kes.ErrKeyNotFound)`), and reads the body as JSON only
when the content type is `application/json`; so the texts below are KES's, byte for byte:

    404 key does not exist                               KeyNotFound; a key pending deletion
    400 key already exists                               KeyAlreadyExists
    400 decryption failed: ciphertext is not authentic   InvalidCiphertext, IncorrectKey
    403 not authorized: insufficient permissions         AccessDenied, an unknown identity

The rest have no text MinIO matches and carry s3kms's message: 400 for a bad request (a bad
name, JSON, base64, a disabled key), 413 for a body over the route's limit, 501 for what this
server does not do (HMAC with a key that is not an HMAC key, which MinIO tolerates), 503 when
the backend or the audit log is unavailable (MinIO's client retries a 503 twice), 500 with only a
request id for an unexpected failure.
"""

from __future__ import annotations

from s3kms.errors import (
    AccessDenied,
    AuthError,
    IncorrectKey,
    InvalidCiphertext,
    KeyAlreadyExists,
    KeyInvalidState,
    KeyNotFound,
    KMSError,
    MethodNotAllowed,
    RequestTooLarge,
    RouteNotFound,
    SlowDown,
    UnsupportedOperation,
)
from s3kms.http.responses import JSON, Response, json_bytes

NOT_ALLOWED = (403, "not authorized: insufficient permissions")
KEY_NOT_FOUND = (404, "key does not exist")
KEY_EXISTS = (400, "key already exists")
NOT_AUTHENTIC = (400, "decryption failed: ciphertext is not authentic")


def status_and_text(exc: KMSError) -> tuple[int, str]:
    """The status and message KES answers `exc` with."""
    if isinstance(exc, KeyNotFound | KeyInvalidState):
        # A key pending deletion is deleted as far as KES can tell (its `delete` is final).
        return KEY_NOT_FOUND
    if isinstance(exc, KeyAlreadyExists):
        return KEY_EXISTS
    if isinstance(exc, InvalidCiphertext | IncorrectKey):
        return NOT_AUTHENTIC
    if isinstance(exc, SlowDown):
        return 503, "too many requests: slow down"
    if isinstance(exc, AccessDenied | AuthError):
        return NOT_ALLOWED
    if isinstance(exc, RequestTooLarge):
        return 413, "request body too large"
    if isinstance(exc, UnsupportedOperation):
        return 501, exc.message
    if isinstance(exc, RouteNotFound):
        return 404, "404 page not found"
    if isinstance(exc, MethodNotAllowed):
        return 405, exc.message
    if exc.status >= 500:
        return exc.status, exc.message
    if 400 <= exc.status < 500:
        return 400 if exc.status == 409 else exc.status, exc.message
    return 500, exc.message


def error_response(status: int, text: str) -> Response:
    return Response(status, json_bytes({"message": text}), JSON)


def render(exc: KMSError) -> Response:
    return error_response(*status_and_text(exc))
