"""The error tree rendered as AWS KMS does: `{"__type", "message"}`.

Every client error is HTTP 400 (what real AWS KMS sends; the status comes from the error's
`aws_status`); `InvalidCiphertextException` has no message. Messages about a key name its ARN,
built from the error's `key_id`: `<arn> is disabled.`, `Key '<arn>' does not exist`,
`Alias <arn> is not found.` An `X-Amz-Target` that names no operation is a `RouteNotFound`; one
that names an AWS KMS operation s3kms does not implement, `UnsupportedOperationException`.
"""

from __future__ import annotations

from s3kms.errors import (
    AliasNotFound,
    InvalidKeyUsage,
    KeyDisabled,
    KeyInvalidState,
    KeyNotFound,
    KMSError,
    RouteNotFound,
    UnsupportedOperation,
)
from s3kms.http.responses import AWS_JSON, Response, json_response
from s3kms.protocols.awskms.handler import arn_prefix
from s3kms.runtime import Runtime

# The UnsupportedOperationException messages AWS starts with the key's ARN (recorded).
_ARN_NAMED = ("which is not valid for this operation.", "is not a multi-region primary key.")


def error_response(exc: KMSError, runtime: Runtime, region: str | None = None) -> Response:
    """`region`: the one the request was signed for (its ARNs'); None: the home region."""
    kind = exc.aws_type
    if kind == "InvalidCiphertextException":
        # Every decryption failure looks the same: no message, nothing to tell the checks apart.
        return Response(exc.aws_status, b'{"__type":"InvalidCiphertextException"}', AWS_JSON)
    if not exc.message:  # AWS sends some errors without a message (KMSInvalidSignatureException)
        return json_response(exc.aws_status, {"__type": kind}, AWS_JSON)
    payload = {"__type": kind, "message": _aws_message(exc, arn_prefix(runtime, region))}
    return json_response(exc.aws_status, payload, AWS_JSON)


def _aws_message(exc: KMSError, prefix: str) -> str:
    """The message AWS sends for `exc`: keys and aliases named by their full ARN."""
    if isinstance(exc, AliasNotFound):
        # The keystores raise AliasNotFound with the alias name as its message.
        name = exc.message
        return f"Alias {prefix}{name} is not found." if name.startswith("alias/") else name
    key_id = exc.key_id
    if key_id is None:
        return exc.message
    arn = f"{prefix}key/{key_id}"
    if isinstance(exc, KeyNotFound):
        return f"Key '{arn}' does not exist"
    if isinstance(exc, KeyDisabled):
        return f"{arn} is disabled."
    if exc.message.startswith(f"{key_id} ") and (
        isinstance(exc, InvalidKeyUsage)
        or (isinstance(exc, UnsupportedOperation) and exc.message.endswith(_ARN_NAMED))
    ):
        # "<key> key usage is SIGN_VERIFY which is not valid for Encrypt.", "<key> origin is
        # AWS_KMS which is not valid for this operation.": AWS names the ARN (recorded).
        return arn + exc.message[len(key_id) :]
    if isinstance(exc, KeyInvalidState):
        # The service says "Key <id> <what>" ("is pending deletion", "is not pending deletion").
        head = f"Key {key_id} "
        if exc.message.startswith(head):
            return f"{arn} {exc.message[len(head) :]}."
    return exc.message


def unknown_operation(target: str | None, unsupported: str | None) -> KMSError:
    """The error for an `X-Amz-Target` no handler serves; `unsupported` is the name of the AWS KMS
    operation it names when s3kms does not implement that operation."""
    if target is None:
        return RouteNotFound("Missing X-Amz-Target header: no operation named")
    if unsupported is not None:
        return UnsupportedOperation(f"{unsupported} is not supported by s3kms")
    return RouteNotFound(f"Unknown operation {target}")
