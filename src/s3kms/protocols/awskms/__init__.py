"""The AWS KMS JSON 1.1 API (TrentService), what boto3, the AWS CLI and the Encryption SDK speak.

`api.py` holds the operation table and the dispatch; the handlers live by concept (`keys.py`,
`crypto.py`, `signing.py`, `mac.py`, `agreement.py`, `rotation.py`, `aliases.py`, `tags.py`,
`policies.py` (key policies), `grants.py`), sharing `handler.py` (their signature and context,
the request's facts for the caller's gate), `members.py` (the AWS model's member checks),
`paging.py` (markers) and `errors.py` (the error tree as AWS renders it).
"""

from s3kms.protocols.awskms.api import AwsKmsAPI
from s3kms.protocols.awskms.errors import error_response

__all__ = ["AwsKmsAPI", "error_response"]
