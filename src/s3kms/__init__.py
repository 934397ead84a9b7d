"""s3kms: a key management service for S3-compatible object stores."""

from s3kms import errors
from s3kms.client import Client

__version__ = "0.1.0"
__all__ = ["Client", "__version__", "errors"]
