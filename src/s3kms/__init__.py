"""s3kms: a key management service for S3-compatible object stores."""

__version__ = "0.1.0"
