"""The AWS KMS JSON 1.1 API (`POST /`, `X-Amz-Target: TrentService.<Op>`), what boto3 speaks."""

from __future__ import annotations

from typing import Any

from s3kms.errors import KMSError, UnsupportedOperation
from s3kms.http.auth import Principal
from s3kms.http.responses import AWS_JSON, Response, json_response
from s3kms.http.sigv4 import RequestView
from s3kms.runtime import Runtime


def error_response(exc: KMSError, runtime: Runtime) -> Response:
    payload: dict[str, Any] = {"__type": exc.aws_type, "message": exc.message}
    return json_response(exc.aws_status, payload, AWS_JSON)


class AwsKmsAPI:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def handle(self, req: RequestView, principal: Principal) -> Response:
        raise UnsupportedOperation
