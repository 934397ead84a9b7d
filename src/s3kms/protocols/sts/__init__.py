"""AWS STS (Security Token Service) on the KMS port: `GetCallerIdentity`, so the AWS CLI and SDKs
can ask who they are (`aws sts get-caller-identity --endpoint-url ...`).

STS speaks the AWS Query protocol: form-encoded parameters (`Action=GetCallerIdentity&Version=
2011-06-15`) in a `POST /` body or a `GET /` query string, SigV4 with the service `sts`, XML
answers. `api.py` tells an STS request from an AWS KMS one and serves it; `errors.py` renders the
error tree as STS does (`<ErrorResponse><Error><Type>...`).
"""

from s3kms.protocols.sts.api import UNKNOWN_ACTION, StsAPI, audit_action, wants
from s3kms.protocols.sts.errors import error_response

__all__ = ["UNKNOWN_ACTION", "StsAPI", "audit_action", "error_response", "wants"]
