"""KMIP's errors: a batch item fails with a Result Reason and a Result Message, never a dropped
connection. `KmipFailure` is raised by the KMIP code itself; `reason_of` words s3kms's errors
(errors.py) in KMIP's reasons."""

from __future__ import annotations

from kmip.core import enums

from s3kms.errors import (
    AccessDenied,
    AuditUnavailable,
    ConcurrentChange,
    IncorrectKeyMaterial,
    InvalidCiphertext,
    InvalidKeyUsage,
    InvalidRequest,
    KeyAlreadyExists,
    KeyDisabled,
    KeyInvalidState,
    KeyNotFound,
    KMSError,
    SlowDown,
    UnsupportedOperation,
)

R = enums.ResultReason


class KmipFailure(Exception):
    """A batch item's failure: Operation Failed with `reason` and `message`."""

    def __init__(self, reason: enums.ResultReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# The first class that matches decides (subclasses before their bases).
_REASONS: tuple[tuple[type[KMSError], enums.ResultReason], ...] = (
    (AccessDenied, R.PERMISSION_DENIED),
    (KeyNotFound, R.ITEM_NOT_FOUND),
    (UnsupportedOperation, R.PERMISSION_DENIED),
    (IncorrectKeyMaterial, R.INVALID_FIELD),
    (KeyAlreadyExists, R.INVALID_FIELD),
    (InvalidCiphertext, R.CRYPTOGRAPHIC_FAILURE),
    (InvalidKeyUsage, R.INVALID_FIELD),  # an object of the wrong kind for the operation
    (KeyDisabled, R.WRONG_KEY_LIFECYCLE_STATE),
    (KeyInvalidState, R.WRONG_KEY_LIFECYCLE_STATE),
    (InvalidRequest, R.INVALID_FIELD),
    (ConcurrentChange, R.GENERAL_FAILURE),
    (SlowDown, R.GENERAL_FAILURE),
    (AuditUnavailable, R.GENERAL_FAILURE),
)


def reason_of(exc: KMSError) -> enums.ResultReason:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return R.GENERAL_FAILURE
