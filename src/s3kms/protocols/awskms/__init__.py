"""The AWS KMS JSON 1.1 API (TrentService), what boto3, the AWS CLI and the Encryption SDK speak."""
