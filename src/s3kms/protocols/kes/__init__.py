"""The KES API (MinIO's KMS protocol): routes and JSON in api.py, its error texts in errors.py."""
