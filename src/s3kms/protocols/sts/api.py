"""STS on the KMS port: which requests to `/` are STS's, and `GetCallerIdentity`.

A request to `/` is an STS request, not an AWS KMS one, when it carries no `X-Amz-Target` and is
either a `POST` with a form body (`Content-Type: application/x-www-form-urlencoded`, as botocore
and the AWS CLI send it) or a `GET` or `POST` whose query string names an `Action` (a presigned
URL, as `aws eks get-token` makes one). Its parameters are the query string's followed by the form
body's; the first occurrence of a name counts. Its signature must be scoped to the service `sts`.

`GetCallerIdentity` needs no permission: as in AWS, no policy can deny it (it tells the caller
only who it already is). It answers the caller's ARN, user id and account
(`auth/identity.py` holds the mapping). Every request has its audit line, with the action
`sts:<Action>` for an operation of STS's model and `sts:UnknownOperation` for anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote_plus

from s3kms.auth.identity import STS_SERVICES, Authenticator, Principal
from s3kms.auth.sigv4 import format_amz_date, request_date
from s3kms.errors import RequestTimeTooSkewed
from s3kms.http.responses import Response
from s3kms.protocols.sts.errors import (
    TEXT_XML,
    XMLNS,
    InvalidAction,
    MissingAction,
    SignatureExpired,
    StsError,
    xml_text,
)
from s3kms.request import RequestView

VERSION = "2011-06-15"
UNKNOWN_ACTION = "sts:UnknownOperation"
MAX_SKEW = 900  # seconds; what sigv4.verify_request allows, named in STS's message
MAX_PARAMETERS = 64  # GetCallerIdentity takes two; the presign parameters add six
# The operations of STS's model (botocore's sts/2011-06-15): the only names an audit line records.
OPERATIONS = frozenset(
    {
        "AssumeRole", "AssumeRoleWithSAML", "AssumeRoleWithWebIdentity", "AssumeRoot",
        "DecodeAuthorizationMessage", "GetAccessKeyInfo", "GetCallerIdentity",
        "GetDelegatedAccessToken", "GetFederationToken", "GetScopedCredentials",
        "GetSessionToken", "GetWebIdentityToken",
    }
)  # fmt: skip
SERVED = frozenset({"GetCallerIdentity"})
_FORM = "application/x-www-form-urlencoded"
_ECHO = 128  # characters of an unknown Action or Version quoted back in a message


class InvalidParameterValue(StsError):
    code = "InvalidParameterValue"
    default_message = "An invalid or out-of-range value was supplied for the input parameter."


def _names_action(text: str) -> bool:
    return text.startswith("Action=") or "&Action=" in text


def wants(method: str, headers: Mapping[str, str], query: str) -> bool:
    """Whether a request to `/` is for STS rather than AWS KMS (decided before the body is read)."""
    if "x-amz-target" in headers:
        return False
    if method == "POST":
        media = headers.get("content-type", "").partition(";")[0].strip().lower()
        return media == _FORM or _names_action(query)
    return method == "GET" and _names_action(query)


def _first_action(text: str) -> str | None:
    """The first `Action=` value of a form-encoded string, found without parsing all of it."""
    if text.startswith("Action="):
        start = 7
    else:
        at = text.find("&Action=")
        if at < 0:
            return None
        start = at + 8
    end = text.find("&", start)
    value = text[start : end if end >= 0 else min(len(text), start + 3 * _ECHO)]
    return unquote_plus(value[: 3 * _ECHO]) if ("%" in value or "+" in value) else value


def audit_action(req: RequestView) -> str:
    """The audit action before authentication: cheap (no full parse of a body nobody vouched
    for) and from a fixed vocabulary. Once authenticated, the handler records the exact one."""
    name = _first_action(req.query)
    if name is None and req.body:
        name = _first_action(req.body.decode("utf-8", "replace"))
    return _action_name(name)


def _action_name(name: str | None) -> str:
    return f"sts:{name}" if name in OPERATIONS else UNKNOWN_ACTION


def parameters(req: RequestView) -> dict[str, str]:
    """The query string's parameters followed by the form body's; the first of a name counts."""
    texts = [req.query]
    if req.method == "POST" and req.body:
        texts.append(req.body.decode("utf-8", "replace"))
    params: dict[str, str] = {}
    for text in texts:
        if not text:
            continue
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_PARAMETERS)
        except ValueError:
            raise InvalidParameterValue(
                f"The request has more than {MAX_PARAMETERS} parameters."
            ) from None
        for name, value in pairs:
            params.setdefault(name, value)
    return params


def _quoted(value: str) -> str:
    return value if len(value) <= _ECHO else value[:_ECHO] + "..."


class StsAPI:
    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    def authenticate(self, req: RequestView) -> Principal:
        """SigV4 scoped to `sts` (generic flavour, as botocore signs STS)."""
        try:
            return self.auth.authenticate(req, admin=False, services=STS_SERVICES)
        except RequestTimeTooSkewed:
            raise self._expired(req) from None

    def _expired(self, req: RequestView) -> SignatureExpired:
        """STS's message for a request time more than 15 minutes off."""
        amz_date, moment = request_date(req.headers)
        now = self.auth.clock.now()
        if moment < now:
            return SignatureExpired(
                f"Signature expired: {amz_date} is now earlier than "
                f"{format_amz_date(now - MAX_SKEW)} ({format_amz_date(now)} - 15 min.)"
            )
        return SignatureExpired(
            f"Signature not yet current: {amz_date} is still later than "
            f"{format_amz_date(now + MAX_SKEW)} ({format_amz_date(now)} + 15 min.)"
        )

    def handle(self, req: RequestView, principal: Principal, request_id: str) -> Response:
        params = parameters(req)
        action = params.get("Action")
        # No policy check (AWS: no policy can deny GetCallerIdentity); the exact action is noted
        # for the audit line all the same.
        principal.action = _action_name(action)
        if not action:
            raise MissingAction()
        version = params.get("Version", VERSION)
        if action not in SERVED or version != VERSION:
            if action in OPERATIONS and version == VERSION:
                raise InvalidAction(f"{action} is not supported by s3kms")
            raise InvalidAction(
                f"Could not find operation {_quoted(action)} for version {_quoted(version)}"
            )
        return caller_identity(principal, request_id)


def caller_identity(principal: Principal, request_id: str) -> Response:
    """STS's answer, element for element (`Arn`, `UserId`, `Account`, then the request id)."""
    body = (
        f'<GetCallerIdentityResponse xmlns="{XMLNS}">\n'
        "  <GetCallerIdentityResult>\n"
        f"    <Arn>{xml_text(principal.arn)}</Arn>\n"
        f"    <UserId>{xml_text(principal.user_id)}</UserId>\n"
        f"    <Account>{xml_text(principal.account)}</Account>\n"
        "  </GetCallerIdentityResult>\n"
        "  <ResponseMetadata>\n"
        f"    <RequestId>{xml_text(request_id)}</RequestId>\n"
        "  </ResponseMetadata>\n"
        "</GetCallerIdentityResponse>\n"
    )
    return Response(200, body.encode(), TEXT_XML)
