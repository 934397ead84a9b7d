"""The error tree rendered as STS renders errors (the AWS Query protocol's envelope):

    <ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
      <Error>
        <Type>Sender</Type>
        <Code>InvalidClientTokenId</Code>
        <Message>The security token included in the request is invalid.</Message>
      </Error>
      <RequestId>...</RequestId>
    </ErrorResponse>

`Type` is `Sender` for a client error (4xx) and `Receiver` for a server one (5xx); botocore reads
`Code` and `Message` into `ClientError.response["Error"]` (with `Type`) and `RequestId` into its
`ResponseMetadata`. The request id is the one in `x-amz-request-id` and the audit line.

Authentication failures carry STS's codes, statuses and messages instead of s3kms's (the audit
log keeps s3kms's code, as on every surface):

    MissingSecurityHeader         403 MissingAuthenticationToken  Request is missing Authentication Token
    AuthorizationHeaderMalformed  400 IncompleteSignature         (s3kms's message)
    InvalidAccessKeyId            403 InvalidClientTokenId        The security token included in the request is invalid.
    SignatureDoesNotMatch         403 SignatureDoesNotMatch       The request signature we calculated does not match ...
    RequestTimeTooSkewed          403 SignatureDoesNotMatch       Signature expired: <t> is now earlier than <now - 15 min> (<now> - 15 min.)
    ContentSHA256Mismatch         403 SignatureDoesNotMatch       (s3kms's message)
    AccessDenied (presigned URL)  403 AccessDenied                (s3kms's message)
    SlowDown                      400 Throttling                  Rate exceeded

STS's own errors are `InvalidAction` (400: an Action or Version STS does not serve) and
`MissingAction` (400). Any other error keeps s3kms's code and status; a 503 is
`ServiceUnavailable` and any other 5xx `InternalFailure` (500), with s3kms's message.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

from s3kms.errors import (
    AccessDenied,
    AuthError,
    AuthorizationHeaderMalformed,
    ContentSHA256Mismatch,
    InvalidAccessKeyId,
    KMSError,
    MissingSecurityHeader,
    RequestTimeTooSkewed,
    SignatureDoesNotMatch,
    SlowDown,
)
from s3kms.http.responses import Response

XMLNS = "https://sts.amazonaws.com/doc/2011-06-15/"
TEXT_XML = b"text/xml"

# Characters XML 1.0 cannot hold even escaped (controls, lone surrogates, U+FFFE/FFFF): a message
# may quote a request's bytes (a credential scope's region), so they become U+FFFD.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: str) -> str:
    """`value` as XML character data."""
    return escape(_NOT_XML.sub("\ufffd", value))


class StsError(KMSError):
    """An error of the STS surface only; its `code` is STS's."""

    status = 400


class InvalidAction(StsError):
    code = "InvalidAction"
    default_message = "The action or operation requested is invalid."


class MissingAction(StsError):
    code = "MissingAction"
    default_message = "The request is missing an action or a required parameter."


class SignatureExpired(RequestTimeTooSkewed):
    """Header auth more than 15 minutes off, with STS's message (which names the times)."""


_SIGNATURE_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. Check your "
    "AWS Secret Access Key and signing method. Consult the service documentation for details."
)

# (class, STS code, status, message or None for the error's own), most specific first.
_AUTH: tuple[tuple[type[KMSError], str, int, str | None], ...] = (
    (MissingSecurityHeader, "MissingAuthenticationToken", 403, "Request is missing Authentication Token"),
    (AuthorizationHeaderMalformed, "IncompleteSignature", 400, None),
    (InvalidAccessKeyId, "InvalidClientTokenId", 403, "The security token included in the request is invalid."),
    (SignatureDoesNotMatch, "SignatureDoesNotMatch", 403, _SIGNATURE_MESSAGE),
    (RequestTimeTooSkewed, "SignatureDoesNotMatch", 403, None),
    (ContentSHA256Mismatch, "SignatureDoesNotMatch", 403, None),
    (AccessDenied, "AccessDenied", 403, None),
    (SlowDown, "Throttling", 400, "Rate exceeded"),
    (AuthError, "AccessDenied", 403, None),
)  # fmt: skip


def sts_error(exc: KMSError) -> tuple[str, int, str]:
    """(STS code, HTTP status, message) for an error."""
    if isinstance(exc, StsError):
        return exc.code, exc.status, exc.message
    for kind, code, status, message in _AUTH:
        if isinstance(exc, kind):
            return code, status, exc.message if message is None else message
    if exc.status == 503:
        return "ServiceUnavailable", 503, exc.message
    if exc.status >= 500:
        return "InternalFailure", 500, exc.message
    return exc.code, exc.status, exc.message


def error_response(exc: KMSError, request_id: str) -> Response:
    code, status, message = sts_error(exc)
    kind = "Sender" if status < 500 else "Receiver"
    body = (
        f'<ErrorResponse xmlns="{XMLNS}">\n'
        "  <Error>\n"
        f"    <Type>{kind}</Type>\n"
        f"    <Code>{code}</Code>\n"
        f"    <Message>{xml_text(message)}</Message>\n"
        "  </Error>\n"
        f"  <RequestId>{xml_text(request_id)}</RequestId>\n"
        "</ErrorResponse>\n"
    )
    return Response(status, body.encode(), TEXT_XML)
