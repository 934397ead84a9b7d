"""The error tree of s3kms.

Every failure a client can see is one of these classes. Each carries the code and HTTP status of the
admin API (the document's `{"error": {"code", "message", "resource"}}` envelope) and the `__type` of
the AWS KMS JSON API (`{"__type", "message"}`); each API surface renders the same exception in its own
envelope, and no handler builds error JSON by hand.

    KMSError
    +-- AuthError                      authentication and authorisation (S3 codes on the admin API)
    |   +-- AccessDenied                 403
    |   |   +-- GrantNotVisible            403 (a grant token names a grant the key's metadata lacks)
    |   +-- SignatureDoesNotMatch        403
    |   +-- InvalidAccessKeyId           403
    |   +-- RequestTimeTooSkewed         403
    |   +-- AuthorizationHeaderMalformed 400
    |   +-- MissingSecurityHeader        400
    |   +-- ContentSHA256Mismatch        400
    +-- InvalidRequest                 KMSInvalidRequest 400 (bad parameters, bad JSON, bad names)
    |   +-- ValidationError              AWS ValidationException with the AWS message template
    |   +-- InvalidMarker                AWS InvalidMarkerException
    |   +-- UnsupportedOperation         AWS UnsupportedOperationException
    |   +-- SerializationError           AWS SerializationException (body not JSON, wrong member type)
    |   +-- TagError                     AWS TagException (reserved `aws:` tag keys)
    |   +-- ReservedName                 AWS NotAuthorizedException (`alias/aws/` names)
    |   +-- MalformedPolicyDocument      AWS MalformedPolicyDocumentException (key policies)
    |   +-- InvalidGrantId               AWS InvalidGrantIdException
    |   +-- InvalidGrantToken            AWS InvalidGrantTokenException
    |   +-- InvalidArn                   AWS InvalidArnException (a principal that is no ARN)
    |   +-- LimitExceeded                AWS LimitExceededException (grants per key)
    |   +-- CloudHsmClusterNotFound      AWS CloudHsmClusterNotFoundException (custom key stores)
    |   +-- XksProxyUriUnreachable       AWS XksProxyUriUnreachableException (custom key stores)
    |   +-- XksProxyVpcEndpointServiceNotFound  AWS XksProxyVpcEndpointServiceNotFoundException
    +-- KeyNotFound                    KMSKeyNotFound 404 / NotFoundException
    +-- AliasNotFound                  KMSKeyNotFound 404 / NotFoundException
    +-- CustomKeyStoreNotFound         KMSKeyNotFound 404 / CustomKeyStoreNotFoundException
    +-- KeyAlreadyExists               KMSKeyAlreadyExists 409 / AlreadyExistsException
    +-- ConcurrentChange               KMSConcurrentChange 409 / KMSInvalidStateException
    +-- KeyDisabled                    KMSKeyDisabled 400 / DisabledException
    +-- KeyInvalidState                KMSInvalidState 400 / KMSInvalidStateException
    +-- InvalidCiphertext              KMSInvalidCiphertext 400 / InvalidCiphertextException (no message)
    +-- IncorrectKey                   KMSIncorrectKey 400 / IncorrectKeyException
    +-- InvalidKeyUsage                KMSInvalidKeyUsage 400 / InvalidKeyUsageException
    +-- IncorrectKeyMaterial           KMSIncorrectKeyMaterial 400 / IncorrectKeyMaterialException
    +-- InvalidImportToken             KMSInvalidImportToken 400 / InvalidImportTokenException
    +-- ExpiredImportToken             KMSExpiredImportToken 400 / ExpiredImportTokenException
    +-- InvalidSignature               KMSInvalidSignature 400 / KMSInvalidSignatureException
    +-- InvalidMac                     KMSInvalidMac 400 / KMSInvalidMacException
    +-- DryRunOperation                400 / DryRunOperationException (AWS `DryRun: true`)
    +-- NotConfigured                  KMSNotConfigured 503
    +-- BackendUnavailable             KMSConnectionError 503 / DependencyTimeoutException
    +-- StorageUnavailable             KMSStorageUnavailable 503 / DependencyTimeoutException
    +-- AuditUnavailable               KMSAuditUnavailable 503 / DependencyTimeoutException
    +-- RouteNotFound                  404 / UnknownOperationException
    +-- MethodNotAllowed               405
    +-- RequestTooLarge                413
    +-- SlowDown                       429
    +-- InternalError                  500 / KMSInternalException
"""

from __future__ import annotations


class KMSError(Exception):
    """Root of every error a client can see."""

    code = "InternalError"
    status = 500
    aws_type = "KMSInternalException"
    default_message = "An internal error occurred"

    def __init__(self, message: str | None = None, *, key_id: str | None = None) -> None:
        # "" is a message of its own: some AWS errors carry none (KMSInvalidSignatureException).
        self.message = self.default_message if message is None else message
        # The key the failure is about (bare id), so the AWS surface can name its ARN.
        self.key_id = key_id
        super().__init__(self.message)

    @property
    def aws_status(self) -> int:
        # Real AWS KMS answers every client error with 400, whatever the Smithy model says.
        return self.status if self.status >= 500 else 400


class AuthError(KMSError):
    code = "AccessDenied"
    status = 403
    aws_type = "AccessDeniedException"
    default_message = "Access Denied."


class AccessDenied(AuthError):
    # True when an explicit Deny decided (not the absence of an Allow): what RetireGrant needs
    # to know of a denial (a grant's own principals need no Allow, but a Deny stops them).
    explicit = False


class GrantNotVisible(AccessDenied):
    """Denied, but a grant token of the request names a grant of the key that the metadata read
    does not show (yet): the service re-reads the key's metadata once and tries again."""


class SignatureDoesNotMatch(AuthError):
    code = "SignatureDoesNotMatch"
    aws_type = "InvalidSignatureException"
    default_message = (
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method."
    )


class InvalidAccessKeyId(AuthError):
    code = "InvalidAccessKeyId"
    aws_type = "UnrecognizedClientException"
    default_message = "The access key ID you provided does not exist in our records."


class RequestTimeTooSkewed(AuthError):
    code = "RequestTimeTooSkewed"
    aws_type = "InvalidSignatureException"
    default_message = "The difference between the request time and the server's time is too large."


class AuthorizationHeaderMalformed(AuthError):
    code = "AuthorizationHeaderMalformed"
    status = 400
    aws_type = "IncompleteSignatureException"
    default_message = "The authorization header is malformed."


class MissingSecurityHeader(AuthError):
    code = "MissingSecurityHeader"
    status = 400
    aws_type = "MissingAuthenticationTokenException"
    default_message = "Your request is missing a required header: Authorization."


class ContentSHA256Mismatch(AuthError):
    code = "XAmzContentSHA256Mismatch"
    status = 400
    aws_type = "InvalidSignatureException"
    default_message = "The provided 'x-amz-content-sha256' header does not match what was computed."


class InvalidRequest(KMSError):
    code = "KMSInvalidRequest"
    status = 400
    aws_type = "ValidationException"
    default_message = "Invalid request parameters"


class ValidationError(InvalidRequest):
    """An input that fails a member constraint; the message follows AWS's template."""


class InvalidMarker(InvalidRequest):
    aws_type = "InvalidMarkerException"
    default_message = "Invalid marker"


class UnsupportedOperation(InvalidRequest):
    aws_type = "UnsupportedOperationException"
    default_message = "The operation is not supported"


class SerializationError(InvalidRequest):
    aws_type = "SerializationException"
    default_message = "The request body could not be parsed"


class TagError(InvalidRequest):
    aws_type = "TagException"
    default_message = "Invalid tag"


class ReservedName(InvalidRequest):
    aws_type = "NotAuthorizedException"
    default_message = "The name is reserved"


class MalformedPolicyDocument(InvalidRequest):
    """A key policy that is not valid (bad JSON, unknown principals, too large, lockout)."""

    aws_type = "MalformedPolicyDocumentException"
    default_message = "The policy document is malformed"


class InvalidGrantId(InvalidRequest):
    aws_type = "InvalidGrantIdException"
    default_message = "The grant id is not valid"


class InvalidGrantToken(InvalidRequest):
    aws_type = "InvalidGrantTokenException"
    default_message = "The grant token is not valid"


class InvalidArn(InvalidRequest):
    aws_type = "InvalidArnException"
    default_message = "The ARN is not valid"


class LimitExceeded(InvalidRequest):
    aws_type = "LimitExceededException"
    default_message = "A limit was exceeded"


class CloudHsmClusterNotFound(InvalidRequest):
    """CreateCustomKeyStore: s3kms has no CloudHSM cluster to back a key store."""

    aws_type = "CloudHsmClusterNotFoundException"
    default_message = "The CloudHSM cluster cannot be found"


class XksProxyUriUnreachable(InvalidRequest):
    """CreateCustomKeyStore: s3kms reaches no external key store proxy (public endpoint)."""

    aws_type = "XksProxyUriUnreachableException"
    default_message = "The external key store proxy cannot be reached"


class XksProxyVpcEndpointServiceNotFound(InvalidRequest):
    """CreateCustomKeyStore: s3kms reaches no VPC endpoint service of an external key store proxy."""

    aws_type = "XksProxyVpcEndpointServiceNotFoundException"
    default_message = "The VPC endpoint service cannot be found"


class KeyNotFound(KMSError):
    code = "KMSKeyNotFound"
    status = 404
    aws_type = "NotFoundException"
    default_message = "The specified KMS key does not exist"


class AliasNotFound(KeyNotFound):
    default_message = "The specified alias does not exist"


class CustomKeyStoreNotFound(KMSError):
    """No custom key store has the id or name asked for (s3kms has none). Not a KeyNotFound: it
    names no key. The admin API never sends it; its code there is KeyNotFound's."""

    code = "KMSKeyNotFound"
    status = 404
    aws_type = "CustomKeyStoreNotFoundException"
    default_message = "The specified custom key store does not exist"


class KeyAlreadyExists(KMSError):
    code = "KMSKeyAlreadyExists"
    status = 409
    aws_type = "AlreadyExistsException"
    default_message = "Key with the same ID already exists"


class ConcurrentChange(KMSError):
    """Another request changed the same key or alias in between; nothing was changed: retry."""

    code = "KMSConcurrentChange"
    status = 409
    aws_type = "KMSInvalidStateException"
    default_message = "The resource was changed by a concurrent request; nothing was changed"


class KeyDisabled(KMSError):
    code = "KMSKeyDisabled"
    status = 400
    aws_type = "DisabledException"
    default_message = "The specified KMS key is disabled"


class KeyInvalidState(KMSError):
    code = "KMSInvalidState"
    status = 400
    aws_type = "KMSInvalidStateException"
    default_message = "The key is not in a valid state for this operation"


class InvalidCiphertext(KMSError):
    """Every decryption failure is this one error, so nothing tells which check failed."""

    code = "KMSInvalidCiphertext"
    status = 400
    aws_type = "InvalidCiphertextException"
    default_message = "The ciphertext is invalid"


class IncorrectKey(KMSError):
    code = "KMSIncorrectKey"
    status = 400
    aws_type = "IncorrectKeyException"
    default_message = "The key ID in the request does not identify the key that encrypted the data"


class InvalidKeyUsage(KMSError):
    """The key's usage or spec does not allow the operation or algorithm asked for."""

    code = "KMSInvalidKeyUsage"
    status = 400
    aws_type = "InvalidKeyUsageException"
    default_message = "The key usage or algorithm is not valid for this operation"


class IncorrectKeyMaterial(KMSError):
    """ImportKeyMaterial: the material is not what the key expects (another material than the
    one imported before, the wrong size or type for the key spec)."""

    code = "KMSIncorrectKeyMaterial"
    status = 400
    aws_type = "IncorrectKeyMaterialException"
    default_message = "The key material is not valid for this KMS key"


class InvalidImportToken(KMSError):
    """ImportKeyMaterial: the import token is not one this KMS made, or is for another key."""

    code = "KMSInvalidImportToken"
    status = 400
    aws_type = "InvalidImportTokenException"
    default_message = "The import token is invalid or is associated with a different KMS key"


class ExpiredImportToken(KMSError):
    code = "KMSExpiredImportToken"
    status = 400
    aws_type = "ExpiredImportTokenException"
    default_message = "The import token has expired; call GetParametersForImport for a new one"


class InvalidSignature(KMSError):
    """Verify: the signature is not valid for the message and key."""

    code = "KMSInvalidSignature"
    status = 400
    aws_type = "KMSInvalidSignatureException"
    default_message = ""  # AWS answers an invalid signature with no message


class InvalidMac(KMSError):
    """VerifyMac: the MAC is not valid for the message and key."""

    code = "KMSInvalidMac"
    status = 400
    aws_type = "KMSInvalidMacException"
    default_message = ""  # AWS answers an invalid MAC with no message


class DryRunOperation(KMSError):
    code = "DryRunOperation"
    status = 400
    aws_type = "DryRunOperationException"
    default_message = "The request would have succeeded, but the DryRun option is set."


class NotConfigured(KMSError):
    code = "KMSNotConfigured"
    status = 503
    aws_type = "KMSInternalException"
    default_message = "KMS service is not configured"


class BackendUnavailable(KMSError):
    code = "KMSConnectionError"
    status = 503
    aws_type = "DependencyTimeoutException"
    default_message = "Cannot connect to KMS backend"


class StorageUnavailable(KMSError):
    """A local file could not be written (disk full, read-only, I/O error): nothing was changed."""

    code = "KMSStorageUnavailable"
    status = 503
    aws_type = "DependencyTimeoutException"
    default_message = "The key store cannot be written right now; nothing was changed"


class AuditUnavailable(KMSError):
    """Fail closed: the audit line could not be written whole, so the request is refused."""

    code = "KMSAuditUnavailable"
    status = 503
    aws_type = "DependencyTimeoutException"
    default_message = "The audit log cannot be written right now; the request was refused"


class RouteNotFound(KMSError):
    code = "NotFound"
    status = 404
    aws_type = "UnknownOperationException"
    default_message = "The requested resource does not exist"


class MethodNotAllowed(KMSError):
    code = "MethodNotAllowed"
    status = 405
    aws_type = "UnknownOperationException"
    default_message = "The specified method is not allowed against this resource"


class RequestTooLarge(KMSError):
    code = "EntityTooLarge"
    status = 413
    aws_type = "ValidationException"
    default_message = "The request body exceeds the maximum allowed size"


class SlowDown(KMSError):
    code = "SlowDown"
    status = 429
    aws_type = "ThrottlingException"
    default_message = "Please reduce your request rate."

    @property
    def aws_status(self) -> int:
        return 400


class InternalError(KMSError):
    pass
