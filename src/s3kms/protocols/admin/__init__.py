"""The KMS admin API of `kms-admin-api.md` (RustFS/MinIO), under both prefixes."""
