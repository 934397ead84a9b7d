"""Every error the server sends, as the Python client raises it and the CLI prints it.

The client maps an error answer to a class by (surface, code) exactly: the admin API's `code`, the
AWS API's `__type`. Each pair is provoked through a client method against a real server where a
method can reach it; the pairs no method reaches come as real answers to raw requests, read by the
client's answer parser; and every error class the server has is rendered by the server's own
renderers and read back, so a new class, or a new code shared by two classes, fails here until the
client maps it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import importlib
import json
import os
import pkgutil
import re
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import s3kms
from s3kms import client as client_module
from s3kms import errors
from s3kms.auth import sigv4
from s3kms.client import (
    ADMIN,
    AWS,
    SHARED_CODES,
    Client,
    Surface,
    UnknownError,
    error_class,
    error_from_answer,
    server_error_classes,
    surface_code,
)
from s3kms.http.responses import admin_error
from s3kms.protocols.awskms import error_response
from s3kms.users import UserNotFound

from kmsserver import (
    ROOT_PASSWORD,
    ROOT_USER,
    KmsThread,
    free_port,
    run_cli,
    signed_admin,
    thread_settings,
)
from openbao import ENV_VAULT_CACERT, VaultApi

ADMIN_PATH = "/rustfs/admin/v3/kms"
ARN = "arn:aws:kms:us-east-1:000000000000:"
SURFACES: tuple[Surface, ...] = (ADMIN, AWS)

# What the test expects a code shared by several classes to be raised as (the client's
# SHARED_CODES must say the same).
SHARED_MEANING: dict[tuple[Surface, str], type[errors.KMSError]] = {
    (ADMIN, "AccessDenied"): errors.AccessDenied,
    (ADMIN, "KMSInvalidRequest"): errors.InvalidRequest,
    (ADMIN, "KMSKeyNotFound"): errors.KeyNotFound,
    (ADMIN, "InternalError"): errors.InternalError,
    (AWS, "AccessDeniedException"): errors.AccessDenied,
    (AWS, "InvalidSignatureException"): errors.SignatureDoesNotMatch,
    (AWS, "ValidationException"): errors.ValidationError,  # never RequestTooLarge
    (AWS, "NotFoundException"): errors.KeyNotFound,
    (AWS, "KMSInvalidStateException"): errors.KeyInvalidState,
    (AWS, "DependencyTimeoutException"): errors.BackendUnavailable,
    (AWS, "UnknownOperationException"): errors.RouteNotFound,
    (AWS, "KMSInternalException"): errors.InternalError,
}


def all_pairs() -> dict[tuple[Surface, str], list[type[errors.KMSError]]]:
    """Every (surface, code) the server's error classes answer with, and the classes behind it."""
    found: dict[tuple[Surface, str], list[type[errors.KMSError]]] = {}
    for cls in server_error_classes():
        for surface in SURFACES:
            found.setdefault((surface, surface_code(cls, surface)), []).append(cls)
    return found


def expected_class(surface: Surface, cls: type[errors.KMSError]) -> type[errors.KMSError]:
    """What an answer naming `cls` on `surface` must be raised as."""
    pair = (surface, surface_code(cls, surface))
    classes = all_pairs()[pair]
    return SHARED_MEANING[pair] if len(classes) > 1 else classes[0]


# -- servers ------------------------------------------------------------------------------------


SETTINGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "unconfigured": {"backend": "none"},
    "no_audit": {"audit_log": "/dev/full"},  # every write fails (ENOSPC)
    "throttled": {"rate_limit": 0.001},  # one request, then none for 1000 s
    "vault": {},  # configured for Vault once started
}


class Servers:
    """The servers the cases need, each started on first use: `plain` (Local, default settings),
    `unconfigured` (no backend), `no_audit` (an audit log that cannot be written), `throttled` (a
    rate limit of one request per 1000 s) and `vault` (Vault transit on OpenBao, token revoked)."""

    def __init__(self, tmp: pytest.TempPathFactory, request: pytest.FixtureRequest) -> None:
        self._tmp = tmp
        self._request = request
        self._started: dict[str, KmsThread] = {}
        self._clients: list[Client] = []

    def server(self, kind: str = "plain") -> KmsThread:
        if kind not in self._started:
            data = self._tmp.mktemp(f"client-errors-{kind}") / "data"
            overrides = SETTINGS[kind]
            srv = KmsThread(thread_settings(data, **overrides)).start()
            self._started[kind] = srv
            if kind == "plain":
                self._seed(srv)
            if kind == "vault":
                self._configure_vault(srv)
        return self._started[kind]

    def client(
        self,
        kind: str = "plain",
        access: str = ROOT_USER,
        secret: str = ROOT_PASSWORD,
        region: str = "us-east-1",
    ) -> Client:
        kms = Client(self.server(kind).url, access, secret, region=region)
        self._clients.append(kms)
        return kms

    def root(self, kind: str = "plain") -> Client:
        return self.client(kind)

    def restricted(self) -> Client:
        """A user whose one policy allows listing keys: anything else is denied."""
        self.server()
        return self.client(access="ce-restricted", secret=self._restricted_secret)

    def _seed(self, srv: KmsThread) -> None:
        with Client(srv.url, ROOT_USER, ROOT_PASSWORD) as root:
            for name in ("ce-key", "ce-other", "ce-disabled", "ce-pending"):
                root.create_key(name)
            root.create_key("ce-signer", spec="ECC_NIST_P256", usage="SIGN_VERIFY")
            root.create_key("ce-hmac", spec="HMAC_256", usage="GENERATE_VERIFY_MAC")
            root.create_key("ce-external", origin="EXTERNAL")  # for imported material
            root.disable_key("ce-disabled")
            root.schedule_key_deletion("ce-pending", 7)
            root.put_policy(
                "ce-list-only",
                {
                    "Statement": [
                        {"Effect": "Allow", "Action": "admin:KMSListKeys", "Resource": "*"}
                    ]
                },
            )
            self._restricted_secret = root.add_user("ce-restricted", ["ce-list-only"])["secretKey"]

    def _configure_vault(self, srv: KmsThread) -> None:
        """Vault transit with a token of its own, then the token revoked: Vault refuses every
        call (permission denied), which s3kms reports as its backend being unavailable."""
        bao: VaultApi = self._request.getfixturevalue("bao")
        token = bao.create_token(["root"], ttl="1h")
        with Client(srv.url, ROOT_USER, ROOT_PASSWORD) as root:
            body: dict[str, Any] = {
                "kms_type": "vault",
                "vault_address": bao.addr,
                "vault_token": token,
                "vault_mount_path": "transit",
                "vault_kv_prefix": f"s3kms-client-errors-{time.time_ns()}",
            }
            if os.environ.get(ENV_VAULT_CACERT):
                body["vault_ca_cert"] = os.environ[ENV_VAULT_CACERT]
            root.configure(**body)
            root.create_key("ce-vault")
        bao.call("POST", "auth/token/revoke", {"token": token})

    def close(self) -> None:
        for kms in self._clients:
            kms.close()
        for srv in self._started.values():
            srv.stop()


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Servers]:
    found = Servers(tmp_path_factory, request)
    yield found
    found.close()


@pytest.fixture(scope="module")
def srv(servers: Servers) -> KmsThread:
    return servers.server()


# -- through the client's methods ----------------------------------------------------------------


def skewed(servers: Servers, call: Callable[[Client], object]) -> object:
    """`call` while the server's clock runs an hour ahead of the client's."""
    srv = servers.server()
    srv.clock.offset = 3600
    try:
        return call(servers.root())
    finally:
        srv.clock.offset = 0


def expired_import_token(servers: Servers) -> object:
    """ImportKeyMaterial with a token 25 hours old: the server's clock and the client's signing
    clock moved a day and an hour on (the token is valid 24 hours)."""
    srv, kms = servers.server(), servers.root()
    params = kms.get_parameters_for_import("ce-external", wrapping_key_spec="RSA_2048")
    later = 25 * 3600
    srv.clock.offset = later
    real = client_module.time
    client_module.time = types.SimpleNamespace(time=lambda: real.time() + later)  # type: ignore[assignment]
    try:
        return kms.import_key_material("ce-external", params.import_token, b"m" * 256)
    finally:
        client_module.time = real
        srv.clock.offset = 0


def throttled(servers: Servers, call: Callable[[Client], object]) -> object:
    """`call` once the one request the bucket holds is spent (by this call or an earlier one)."""
    kms = servers.root("throttled")
    with contextlib.suppress(errors.SlowDown):
        kms.list_keys()
    return call(kms)


def unwritable_users_file(servers: Servers) -> object:
    """A user added while the users file cannot be replaced (its temp file's name is taken by a
    directory): the write fails, nothing is changed."""
    srv = servers.server()
    blocker = srv.settings.data_dir / ".users.json.tmp"
    blocker.mkdir()
    try:
        return servers.root().add_user("ce-never-added", [])
    finally:
        blocker.rmdir()


@dataclass(frozen=True)
class Case:
    surface: Surface
    code: str  # as the server sends it
    raised: type[errors.KMSError]
    message: str | re.Pattern[str]  # the whole message, or a pattern it holds
    call: Callable[[Servers], object]
    name: str


def case(
    name: str,
    surface: Surface,
    code: str,
    raised: type[errors.KMSError],
    message: str | re.Pattern[str],
    call: Callable[[Servers], object],
) -> Case:
    return Case(surface, code, raised, message, call, name)


AUDIT_REFUSED = "The audit log cannot be written right now; the request was refused"
VAULT_REFUSED = re.compile(r"permission denied")  # Vault's words, quoted by s3kms

LIVE: list[Case] = [
    # -- the admin API (Client's admin methods)
    case("denied", ADMIN, "AccessDenied", errors.AccessDenied,
         "User: arn:aws:iam::000000000000:user/ce-restricted is not authorized to perform: "
         f"admin:KMSKeyStatus on resource: {ARN}key/ce-key because no identity-based policy "
         "allows the admin:KMSKeyStatus action",
         lambda s: s.restricted().key_status("ce-key")),
    case("wrong secret", ADMIN, "SignatureDoesNotMatch", errors.SignatureDoesNotMatch,
         errors.SignatureDoesNotMatch.default_message,
         lambda s: s.client(secret="wrong").key_status("ce-key")),
    case("unknown access key", ADMIN, "InvalidAccessKeyId", errors.InvalidAccessKeyId,
         errors.InvalidAccessKeyId.default_message,
         lambda s: s.client(access="ce-nobody").key_status("ce-key")),
    case("clock an hour off", ADMIN, "RequestTimeTooSkewed", errors.RequestTimeTooSkewed,
         errors.RequestTimeTooSkewed.default_message,
         lambda s: skewed(s, lambda kms: kms.key_status("ce-key"))),
    case("wrong region", ADMIN, "AuthorizationHeaderMalformed",
         errors.AuthorizationHeaderMalformed,
         "The authorization header is malformed; the region 'eu-west-1' is wrong; expecting "
         "'us-east-1'.",
         lambda s: s.client(region="eu-west-1").key_status("ce-key")),
    case("spec without usage", ADMIN, "KMSInvalidRequest", errors.InvalidRequest,
         "You must specify a KeyUsage value for all KMS keys except for symmetric encryption "
         "keys.",
         lambda s: s.root().create_key("ce-rsa", spec="RSA_2048")),
    case("missing key", ADMIN, "KMSKeyNotFound", errors.KeyNotFound,
         "The specified KMS key does not exist", lambda s: s.root().key_status("ce-missing")),
    case("key exists", ADMIN, "KMSKeyAlreadyExists", errors.KeyAlreadyExists,
         "Key with the same ID already exists", lambda s: s.root().create_key("ce-key")),
    case("rotate disabled key", ADMIN, "KMSKeyDisabled", errors.KeyDisabled,
         "The specified KMS key is disabled", lambda s: s.root().rotate_key("ce-disabled")),
    case("enable pending deletion", ADMIN, "KMSInvalidState", errors.KeyInvalidState,
         "Key ce-pending is pending deletion", lambda s: s.root().enable_key("ce-pending")),
    case("no backend", ADMIN, "KMSNotConfigured", errors.NotConfigured,
         errors.NotConfigured.default_message,
         lambda s: s.root("unconfigured").key_status("ce-key")),
    case("vault refuses", ADMIN, "KMSConnectionError", errors.BackendUnavailable,
         VAULT_REFUSED, lambda s: s.root("vault").key_status("ce-vault")),
    case("users file unwritable", ADMIN, "KMSStorageUnavailable", errors.StorageUnavailable,
         errors.StorageUnavailable.default_message, unwritable_users_file),
    case("audit log unwritable", ADMIN, "KMSAuditUnavailable", errors.AuditUnavailable,
         AUDIT_REFUSED, lambda s: s.root("no_audit").key_status("ce-key")),
    case("body over 1 MiB", ADMIN, "EntityTooLarge", errors.RequestTooLarge,
         errors.RequestTooLarge.default_message,
         lambda s: s.root().put_policy("ce-huge", {"Statement": [], "Pad": "x" * (1 << 20)})),
    case("rate limit", ADMIN, "SlowDown", errors.SlowDown, errors.SlowDown.default_message,
         lambda s: throttled(s, lambda kms: kms.key_status("ce-key"))),
    case("missing user", ADMIN, "KMSUserNotFound", UserNotFound,
         UserNotFound.default_message, lambda s: s.root().remove_user("ce-nobody")),
    # -- the AWS API (Client's AWS KMS methods)
    case("denied", AWS, "AccessDeniedException", errors.AccessDenied,
         "User: arn:aws:iam::000000000000:user/ce-restricted is not authorized to perform: "
         f"kms:Encrypt on resource: {ARN}key/ce-key because no identity-based policy allows the "
         "kms:Encrypt action",
         lambda s: s.restricted().encrypt("ce-key", b"x")),
    case("wrong secret", AWS, "InvalidSignatureException", errors.SignatureDoesNotMatch,
         errors.SignatureDoesNotMatch.default_message,
         lambda s: s.client(secret="wrong").encrypt("ce-key", b"x")),
    case("clock an hour off", AWS, "InvalidSignatureException", errors.SignatureDoesNotMatch,
         errors.RequestTimeTooSkewed.default_message,
         lambda s: skewed(s, lambda kms: kms.encrypt("ce-key", b"x"))),
    case("unknown access key", AWS, "UnrecognizedClientException", errors.InvalidAccessKeyId,
         errors.InvalidAccessKeyId.default_message,
         lambda s: s.client(access="ce-nobody").encrypt("ce-key", b"x")),
    case("wrong region", AWS, "IncompleteSignatureException",
         errors.AuthorizationHeaderMalformed,
         "The authorization header is malformed; the region 'eu-west-1' is wrong; expecting "
         "'us-east-1'.",
         lambda s: s.client(region="eu-west-1").encrypt("ce-key", b"x")),
    case("empty plaintext", AWS, "ValidationException", errors.ValidationError,
         "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
         "Member must have length greater than or equal to 1",
         lambda s: s.root().encrypt("ce-key", b"")),
    case("too many bytes", AWS, "ValidationException", errors.ValidationError,
         "1 validation error detected: Value '5000' at 'numberOfBytes' failed to satisfy "
         "constraint: Member must have value less than or equal to 1024",
         lambda s: s.root().generate_data_key("ce-key", number_of_bytes=5000)),
    case("body over 1 MiB", AWS, "ValidationException", errors.ValidationError,
         errors.RequestTooLarge.default_message,
         lambda s: s.root().encrypt("ce-key", b"x" * (1 << 20))),
    case("public key of a symmetric key", AWS, "UnsupportedOperationException",
         errors.UnsupportedOperation,
         "ce-key is a SYMMETRIC_DEFAULT key: only asymmetric keys have a public key",
         lambda s: s.root().public_key("ce-key")),
    case("missing key", AWS, "NotFoundException", errors.KeyNotFound,
         f"Key '{ARN}key/ce-missing' does not exist",
         lambda s: s.root().encrypt("ce-missing", b"x")),
    case("pending deletion", AWS, "KMSInvalidStateException", errors.KeyInvalidState,
         f"{ARN}key/ce-pending is pending deletion.",
         lambda s: s.root().encrypt("ce-pending", b"x")),
    case("disabled key", AWS, "DisabledException", errors.KeyDisabled,
         f"{ARN}key/ce-disabled is disabled.", lambda s: s.root().encrypt("ce-disabled", b"x")),
    case("bad ciphertext", AWS, "InvalidCiphertextException", errors.InvalidCiphertext,
         errors.InvalidCiphertext.default_message,  # the server sends no message
         lambda s: s.root().decrypt(b"not a ciphertext" * 4)),
    case("another key's ciphertext", AWS, "IncorrectKeyException", errors.IncorrectKey,
         errors.IncorrectKey.default_message,
         lambda s: s.root().decrypt(s.root().encrypt("ce-key", b"x"), key="ce-other")),
    case("sign with an AES key", AWS, "InvalidKeyUsageException", errors.InvalidKeyUsage,
         f"{ARN}key/ce-key key usage is ENCRYPT_DECRYPT which is not valid for Sign.",
         lambda s: s.root().sign("ce-key", b"m", "ECDSA_SHA_256")),
    case("material of the wrong size", AWS, "IncorrectKeyMaterialException",
         errors.IncorrectKeyMaterial, "symmetric key material must be 256 bits (32 bytes)",
         lambda s: s.root().import_material("ce-external", b"short", wrapping_key_spec="RSA_2048")),
    case("not an import token", AWS, "InvalidImportTokenException", errors.InvalidImportToken,
         errors.InvalidImportToken.default_message,
         lambda s: s.root().import_key_material("ce-external", b"t" * 64, b"m" * 256)),
    case("import token a day old", AWS, "ExpiredImportTokenException", errors.ExpiredImportToken,
         errors.ExpiredImportToken.default_message, expired_import_token),
    case("audit log unwritable", AWS, "DependencyTimeoutException", errors.BackendUnavailable,
         AUDIT_REFUSED, lambda s: s.root("no_audit").encrypt("ce-key", b"x")),
    case("vault refuses", AWS, "DependencyTimeoutException", errors.BackendUnavailable,
         VAULT_REFUSED, lambda s: s.root("vault").encrypt("ce-vault", b"x")),
    case("no backend", AWS, "KMSInternalException", errors.InternalError,
         errors.NotConfigured.default_message,
         lambda s: s.root("unconfigured").encrypt("ce-key", b"x")),
    case("rate limit", AWS, "ThrottlingException", errors.SlowDown,
         errors.SlowDown.default_message,
         lambda s: throttled(s, lambda kms: kms.encrypt("ce-key", b"x"))),
]  # fmt: skip


@pytest.mark.parametrize("c", LIVE, ids=[f"{c.surface}-{c.code}-{c.name}" for c in LIVE])
def test_error_round_trips_through_the_client(servers: Servers, c: Case) -> None:
    with pytest.raises(errors.KMSError) as caught:
        c.call(servers)
    exc = caught.value
    assert type(exc) is c.raised, (type(exc), exc.code, exc.message)
    # The class raised is one the server answers with exactly this code on this surface...
    assert surface_code(c.raised, c.surface) == c.code
    # ...its code is the class's, and the message is the server's, as it sent it.
    assert exc.code == c.raised.code
    if isinstance(c.message, re.Pattern):
        assert c.message.search(exc.message), exc.message
    else:
        assert exc.message == c.message


def test_verify_answers_false_only_for_an_invalid_signature_or_mac(servers: Servers) -> None:
    """KMSInvalidSignatureException and KMSInvalidMacException (no message) are the classes
    verify() and verify_mac() turn into False: mapped to anything else they would raise."""
    kms = servers.root()
    signature = kms.sign("ce-signer", b"message", "ECDSA_SHA_256")
    assert kms.verify("ce-signer", b"message", signature, "ECDSA_SHA_256") is True
    assert kms.verify("ce-signer", b"another", signature, "ECDSA_SHA_256") is False
    mac = kms.generate_mac("ce-hmac", b"message", "HMAC_SHA_256")
    assert kms.verify_mac("ce-hmac", b"message", mac, "HMAC_SHA_256") is True
    assert kms.verify_mac("ce-hmac", b"another", mac, "HMAC_SHA_256") is False


# -- real answers no client method asks for ----------------------------------------------------


def aws_raw(
    srv: KmsThread, operation: str, body: bytes, *, sign: bool = True, sent: bytes | None = None
) -> httpx.Response:
    """An AWS KMS request signed as the client signs it; `sent` replaces the body after signing
    (the signed body's SHA-256 is in `x-amz-content-sha256`: the server sees the mismatch)."""
    url = f"{srv.url}/"
    headers = {
        "content-type": "application/x-amz-json-1.1",
        "x-amz-target": f"TrentService.{operation}",
    }
    if sign:
        headers = sigv4.sign_headers(
            "POST", url, headers, body, access_key=ROOT_USER, secret_key=ROOT_PASSWORD,
            region="us-east-1", service="kms", now=time.time(), s3_flavour=sent is not None,
        )  # fmt: skip
    return httpx.post(url, headers=headers, content=body if sent is None else sent, timeout=20)


def admin_sha_mismatch(srv: KmsThread) -> httpx.Response:
    url = f"{srv.url}{ADMIN_PATH}/key/create?keyName=ce-never"
    signed = sigv4.sign_headers(
        "POST", url, {}, b"", access_key=ROOT_USER, secret_key=ROOT_PASSWORD,
        region="us-east-1", service="s3", now=time.time(),
    )  # fmt: skip
    assert httpx.Headers(signed)["x-amz-content-sha256"] == hashlib.sha256(b"").hexdigest()
    return httpx.post(url, headers=signed, content=b"{}", timeout=20)


def sign_body(message: bytes, signature: bytes) -> bytes:
    return json.dumps({
        "KeyId": "ce-signer", "Message": base64.b64encode(message).decode(), "MessageType": "RAW",
        "Signature": base64.b64encode(signature).decode(), "SigningAlgorithm": "ECDSA_SHA_256",
    }).encode()  # fmt: skip


def bad_signature(srv: KmsThread) -> httpx.Response:
    with Client(srv.url, ROOT_USER, ROOT_PASSWORD) as kms:
        signature = kms.sign("ce-signer", b"message", "ECDSA_SHA_256")
    return aws_raw(srv, "Verify", sign_body(b"another", signature))


def bad_mac(srv: KmsThread) -> httpx.Response:
    body = {"KeyId": "ce-hmac", "Message": "bWVzc2FnZQ==", "Mac": "A" * 44,
            "MacAlgorithm": "HMAC_SHA_256"}  # fmt: skip
    return aws_raw(srv, "VerifyMac", json.dumps(body).encode())


def alias_twice(srv: KmsThread) -> httpx.Response:
    body = json.dumps({"AliasName": "alias/ce-twice", "TargetKeyId": "ce-key"}).encode()
    aws_raw(srv, "CreateAlias", body)
    return aws_raw(srv, "CreateAlias", body)


@dataclass(frozen=True)
class Raw:
    surface: Surface
    code: str
    raised: type[errors.KMSError]
    message: str
    ask: Callable[[KmsThread], httpx.Response]


# CreateCustomKeyStore bodies s3kms must refuse as AWS does when no cluster or proxy is reachable.
CLOUDHSM_STORE = {
    "CustomKeyStoreName": "ce-hsm", "CloudHsmClusterId": "cluster-abcdefghijk",
    "TrustAnchorCertificate": "-----BEGIN CERTIFICATE-----", "KeyStorePassword": "kmsuser-pw",
}  # fmt: skip
XKS_STORE = {
    "CustomKeyStoreName": "ce-xks", "CustomKeyStoreType": "EXTERNAL_KEY_STORE",
    "XksProxyUriEndpoint": "https://xks.example.com", "XksProxyUriPath": "/kms/xks/v1",
    "XksProxyAuthenticationCredential": {
        "AccessKeyId": "ABCDEFGHIJKLMNOPQRST", "RawSecretAccessKey": "A" * 43,
    },
    "XksProxyConnectivity": "PUBLIC_ENDPOINT",
}  # fmt: skip
XKS_VPC_STORE = {
    **XKS_STORE,
    "XksProxyConnectivity": "VPC_ENDPOINT_SERVICE",
    "XksProxyVpcEndpointServiceName": "com.amazonaws.vpce.us-east-1.vpce-svc-0abc123",
}

RAW: list[Raw] = [
    Raw(ADMIN, "MissingSecurityHeader", errors.MissingSecurityHeader,
        errors.MissingSecurityHeader.default_message,
        lambda srv: httpx.get(f"{srv.url}{ADMIN_PATH}/status", timeout=20)),
    Raw(ADMIN, "XAmzContentSHA256Mismatch", errors.ContentSHA256Mismatch,
        errors.ContentSHA256Mismatch.default_message, admin_sha_mismatch),
    Raw(ADMIN, "NotFound", errors.RouteNotFound, errors.RouteNotFound.default_message,
        lambda srv: signed_admin(srv.url, "GET", f"{ADMIN_PATH}/no-such-route")),
    Raw(ADMIN, "MethodNotAllowed", errors.MethodNotAllowed,
        errors.MethodNotAllowed.default_message,
        lambda srv: signed_admin(srv.url, "DELETE", f"{ADMIN_PATH}/status")),
    Raw(AWS, "MissingAuthenticationTokenException", errors.MissingSecurityHeader,
        errors.MissingSecurityHeader.default_message,
        lambda srv: aws_raw(srv, "ListKeys", b"{}", sign=False)),
    Raw(AWS, "InvalidSignatureException", errors.SignatureDoesNotMatch,
        errors.ContentSHA256Mismatch.default_message,
        lambda srv: aws_raw(srv, "ListKeys", b"{}", sent=b'{"Limit": 1}')),
    Raw(AWS, "UnknownOperationException", errors.RouteNotFound,
        "Unknown operation TrentService.NoSuchOperation",
        lambda srv: aws_raw(srv, "NoSuchOperation", b"{}")),
    Raw(AWS, "SerializationException", errors.SerializationError,
        "The request body is not valid JSON", lambda srv: aws_raw(srv, "ListKeys", b"not json")),
    Raw(AWS, "DryRunOperationException", errors.DryRunOperation,
        errors.DryRunOperation.default_message,
        lambda srv: aws_raw(srv, "Encrypt", b'{"KeyId": "ce-key", "Plaintext": "eA==", '
                                            b'"DryRun": true}')),
    Raw(AWS, "TagException", errors.TagError, "Tags beginning with aws: are reserved",
        lambda srv: aws_raw(srv, "CreateKey", b'{"Tags": [{"TagKey": "aws:x", "TagValue": "y"}]}')),
    Raw(AWS, "CustomKeyStoreNotFoundException", errors.CustomKeyStoreNotFound,
        "Custom key store 'cks-1234567890abcdef0' does not exist",
        lambda srv: aws_raw(srv, "DeleteCustomKeyStore",
                            b'{"CustomKeyStoreId": "cks-1234567890abcdef0"}')),
    Raw(AWS, "CloudHsmClusterNotFoundException", errors.CloudHsmClusterNotFound,
        "The CloudHSM cluster cluster-abcdefghijk cannot be found: s3kms has no CloudHSM clusters.",
        lambda srv: aws_raw(srv, "CreateCustomKeyStore", json.dumps(CLOUDHSM_STORE).encode())),
    Raw(AWS, "XksProxyUriUnreachableException", errors.XksProxyUriUnreachable,
        "The external key store proxy at https://xks.example.com/kms/xks/v1 cannot be reached: "
        "s3kms does not connect to external key store proxies.",
        lambda srv: aws_raw(srv, "CreateCustomKeyStore", json.dumps(XKS_STORE).encode())),
    Raw(AWS, "XksProxyVpcEndpointServiceNotFoundException",
        errors.XksProxyVpcEndpointServiceNotFound,
        "The VPC endpoint service com.amazonaws.vpce.us-east-1.vpce-svc-0abc123 cannot be found: "
        "s3kms reaches no VPC endpoint service.",
        lambda srv: aws_raw(srv, "CreateCustomKeyStore", json.dumps(XKS_VPC_STORE).encode())),
    Raw(AWS, "NotAuthorizedException", errors.ReservedName,
        "alias/aws/x: the alias/aws/ prefix is reserved for AWS managed keys",
        lambda srv: aws_raw(srv, "CreateAlias", b'{"AliasName": "alias/aws/x", '
                                                b'"TargetKeyId": "ce-key"}')),
    Raw(AWS, "AlreadyExistsException", errors.KeyAlreadyExists,
        f"An alias with the name {ARN}alias/ce-twice already exists", alias_twice),
    Raw(AWS, "InvalidMarkerException", errors.InvalidMarker, "Invalid marker",
        lambda srv: aws_raw(srv, "ListKeys", b'{"Marker": "bogus"}')),
    Raw(AWS, "KMSInvalidSignatureException", errors.InvalidSignature, "", bad_signature),
    Raw(AWS, "KMSInvalidMacException", errors.InvalidMac, "", bad_mac),
    # -- key policies and grants
    Raw(AWS, "InvalidArnException", errors.InvalidArn,
        "Key Aliases are not supported for this operation.",
        lambda srv: aws_raw(srv, "GetKeyPolicy", b'{"KeyId": "alias/ce-any"}')),
    Raw(AWS, "MalformedPolicyDocumentException", errors.MalformedPolicyDocument,
        "The key policy is not valid JSON.",
        lambda srv: aws_raw(srv, "PutKeyPolicy", b'{"KeyId": "ce-key", "Policy": "{not json"}')),
    Raw(AWS, "LimitExceededException", errors.LimitExceeded,
        "The key policy may be at most 32768 bytes.",
        lambda srv: aws_raw(srv, "PutKeyPolicy", json.dumps(
            {"KeyId": "ce-key", "Policy": " " * 32769}).encode())),
    Raw(AWS, "InvalidGrantIdException", errors.InvalidGrantId, "Grant ID 'nope' is not valid",
        lambda srv: aws_raw(srv, "RevokeGrant", b'{"KeyId": "ce-key", "GrantId": "nope"}')),
    Raw(AWS, "InvalidGrantTokenException", errors.InvalidGrantToken,
        errors.InvalidGrantToken.default_message,
        lambda srv: aws_raw(srv, "RetireGrant", b'{"GrantToken": "bogus"}')),
]  # fmt: skip


@pytest.mark.parametrize("r", RAW, ids=[f"{r.surface}-{r.code}" for r in RAW])
def test_real_answer_no_method_asks_for_is_read_right(srv: KmsThread, r: Raw) -> None:
    response = r.ask(srv)
    assert response.status_code != 200, response.text
    sent = response.json()
    assert (sent["error"]["code"] if r.surface == ADMIN else sent["__type"]) == r.code, sent
    exc = error_from_answer(r.surface, response)
    assert type(exc) is r.raised
    assert exc.message == r.message
    assert exc.code == r.raised.code


# Pairs neither a client method nor a request from outside can provoke on purpose: a race, a
# crash, or an error of the other surface that this one renders with its own code (checked by
# the rendering round trip below).
NOT_PROVOKED = {
    (ADMIN, "KMSConcurrentChange"): "two changes of one key at the same instant",
    (ADMIN, "KMSInvalidCiphertext"): "crypto is the AWS API's",
    (ADMIN, "KMSIncorrectKey"): "crypto is the AWS API's",
    (ADMIN, "KMSInvalidKeyUsage"): "crypto is the AWS API's",
    (ADMIN, "KMSInvalidSignature"): "crypto is the AWS API's",
    (ADMIN, "KMSInvalidMac"): "crypto is the AWS API's",
    (ADMIN, "DryRunOperation"): "DryRun is the AWS API's",
    (ADMIN, "KMSIncorrectKeyMaterial"): "imports are the AWS API's",
    (ADMIN, "KMSInvalidImportToken"): "imports are the AWS API's",
    (ADMIN, "KMSExpiredImportToken"): "imports are the AWS API's",
    (ADMIN, "InternalError"): "an unexpected exception in the server",
}


def test_every_pair_is_provoked_or_named_as_not_provokable() -> None:
    """A new error class, or a new code, fails here until a case provokes it (or says why none
    can) - on top of the rendering round trip that checks its mapping."""
    provoked = {(c.surface, c.code) for c in LIVE} | {(r.surface, r.code) for r in RAW}
    assert not provoked & set(NOT_PROVOKED)
    assert provoked | set(NOT_PROVOKED) == set(all_pairs())


# -- the mapping table against the error classes -----------------------------------------------


def every_error_class_in_s3kms() -> set[type[errors.KMSError]]:
    for module in pkgutil.walk_packages(s3kms.__path__, "s3kms."):
        if module.name != "s3kms.__main__":
            importlib.import_module(module.name)
    found: set[type[errors.KMSError]] = set()
    pending: list[type[errors.KMSError]] = [errors.KMSError]
    while pending:
        cls = pending.pop()
        if cls.__module__.startswith("s3kms.") and cls is not UnknownError:
            found.add(cls)
        pending.extend(cls.__subclasses__())
    return found


def answer_surface_classes() -> set[type[errors.KMSError]]:
    """Every KMSError subclass in s3kms but those of the STS surface (XML: the client does not
    speak it)."""
    return {
        c
        for c in every_error_class_in_s3kms()
        if not c.__module__.startswith("s3kms.protocols.sts")
    }


def test_the_client_knows_every_code_the_server_has() -> None:
    """The client's table holds the classes of errors.py and users.py; a class elsewhere must
    keep codes of those (as BackupError keeps InvalidRequest's), or be added to the table."""
    known = set(server_error_classes())
    assert errors.RequestTooLarge in known and UserNotFound in known
    for cls in answer_surface_classes() - known:
        for surface in SURFACES:
            assert (surface, surface_code(cls, surface)) in all_pairs(), (cls, surface)


@pytest.mark.parametrize("surface", SURFACES)
def test_classes_outside_the_table_are_read_as_the_class_their_code_means(
    srv: KmsThread, surface: Surface
) -> None:
    others = answer_surface_classes() - set(server_error_classes())
    for cls in others:
        read, _ = render_and_read(srv, surface, cls())
        assert type(read) is expected_class(surface, cls), (cls, surface)
        assert isinstance(read, errors.KMSError) and not isinstance(read, UnknownError)


def test_shared_codes_are_resolved_explicitly() -> None:
    shared = {pair: classes for pair, classes in all_pairs().items() if len(classes) > 1}
    assert set(shared) == set(SHARED_MEANING) == set(SHARED_CODES)  # none missing, none stale
    for pair, classes in shared.items():
        assert SHARED_CODES[pair] is SHARED_MEANING[pair] and SHARED_CODES[pair] in classes
        assert error_class(*pair) is SHARED_MEANING[pair]
    # The finding: an AWS ValidationException is a validation error, not the admin API's 413.
    assert error_class(AWS, "ValidationException") is errors.ValidationError
    assert error_class(ADMIN, "EntityTooLarge") is errors.RequestTooLarge


def test_unique_codes_map_to_their_one_class() -> None:
    for (surface, code), classes in all_pairs().items():
        if len(classes) == 1:
            assert error_class(surface, code) is classes[0], (surface, code)


def render_and_read(
    srv: KmsThread, surface: Surface, exc: errors.KMSError
) -> tuple[errors.KMSError, httpx.Response]:
    """`exc` as the server answers it on `surface`, and what the client makes of that answer."""
    if surface == ADMIN:
        rendered = admin_error(exc, f"{ADMIN_PATH}/key/status")
        url = f"{srv.url}{ADMIN_PATH}/key/status"
    else:
        rendered = error_response(exc, srv.app.runtime)
        url = f"{srv.url}/"
    response = httpx.Response(
        rendered.status,
        content=rendered.body,
        headers={"content-type": rendered.content_type.decode()},
        request=httpx.Request("POST", url),
    )
    return error_from_answer(surface, response), response


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("cls", server_error_classes(), ids=lambda c: c.__name__)
def test_every_class_rendered_by_the_server_is_read_back(
    srv: KmsThread, surface: Surface, cls: type[errors.KMSError]
) -> None:
    """Each class as the server's own renderers put it on the wire, read by the client."""
    read, response = render_and_read(srv, surface, cls())
    want = expected_class(surface, cls)
    assert type(read) is want
    payload = response.json()
    sent = (payload["error"] if surface == ADMIN else payload).get("message")
    # The message as sent; none (InvalidCiphertextException): the class's own.
    assert read.message == (sent or want.default_message)


# -- codes the client has no class for ------------------------------------------------------------


class _Stub(http.server.BaseHTTPRequestHandler):
    """A newer server, or a proxy: answers the client never saw."""

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path == "/":
            self._send(
                400,
                "application/x-amz-json-1.1",
                {"__type": "com.amazonaws.kms#FutureException", "message": "not yet [b]"},
            )
        elif "/key/status" in self.path:
            self._send(
                418,
                "application/json",
                {"error": {"code": "KMSFutureError", "message": "from a newer server"}},
            )
        else:  # a proxy's page
            self._send(502, "text/html", "<html><body>bad gateway</body></html>")  # fmt: skip

    def _send(self, status: int, content_type: str, payload: Any) -> None:
        body = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def stub() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_unknown_codes_keep_their_code_status_and_message(stub: str) -> None:
    with Client(stub, "a", "b") as kms:
        with pytest.raises(UnknownError) as admin:
            kms.key_status("k")
        assert (admin.value.code, admin.value.status) == ("KMSFutureError", 418)
        assert admin.value.message == "from a newer server"
        with pytest.raises(UnknownError) as aws:
            kms.encrypt("k", b"x")
        assert (aws.value.code, aws.value.status, aws.value.message) == (
            "FutureException",
            400,
            "not yet [b]",
        )
        with pytest.raises(UnknownError) as proxy:
            kms.list_keys()
        assert (proxy.value.code, proxy.value.status) == ("HTTP 502", 502)
        assert proxy.value.message == "Bad Gateway"
    assert isinstance(proxy.value, errors.KMSError)


def test_an_answer_without_an_error_document_is_an_unknown_error(tmp_path: Path) -> None:
    """The connection layer's plain-text refusal of a request target over the limit."""
    srv = KmsThread(thread_settings(tmp_path / "data", max_request_line=256)).start()
    try:
        with Client(srv.url, ROOT_USER, ROOT_PASSWORD) as kms, pytest.raises(UnknownError) as exc:
            kms.key_status("k" * 300)
    finally:
        srv.stop()
    assert (exc.value.code, exc.value.status, exc.value.message) == (
        "HTTP 414",
        414,
        "Request-URI Too Long",
    )


# -- the CLI ------------------------------------------------------------------------------------


def one_error_line(result: subprocess.CompletedProcess[bytes], code: int = 1) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and "Error(" not in lines[0]
    return lines[0]


def test_cli_empty_plaintext_is_a_validation_error(srv: KmsThread) -> None:
    line = one_error_line(run_cli(srv, "encrypt", "ce-key", stdin=b""))  # < /dev/null
    assert line == (
        "error KMSInvalidRequest: 1 validation error detected: Value at 'plaintext' failed to "
        "satisfy constraint: Member must have length greater than or equal to 1"
    )
    assert "EntityTooLarge" not in line


def test_cli_too_many_data_key_bytes_names_the_flag(srv: KmsThread) -> None:
    """`--bytes` is checked before a request (as `--days`); the server's own validation error
    for NumberOfBytes is the client-level case "too many bytes" above."""
    result = run_cli(srv, "datakey", "ce-key", "--bytes", "5000")
    assert result.returncode == 2
    assert b"Invalid value for '--bytes': 5000 is not in the range 1<=x<=1024." in result.stderr
    assert b"EntityTooLarge" not in result.stderr


def test_cli_prints_the_servers_message_as_sent(srv: KmsThread, stub: str) -> None:
    """Square brackets in a message are text, not console markup."""
    line = one_error_line(run_cli(srv, "encrypt", "[bold]x", stdin=b"m"))
    assert line == f"error KMSKeyNotFound: Key '{ARN}key/[bold]x' does not exist"
    unknown = run_cli(srv, "key", "status", "k", env={"S3KMS_ENDPOINT": stub})
    assert one_error_line(unknown) == "error KMSFutureError: from a newer server"
    user = run_cli(srv, "user", "remove", "ce-nobody")
    assert one_error_line(user) == "error KMSUserNotFound: User 'ce-nobody' does not exist"


# -- no server ----------------------------------------------------------------------------------


def s3kms_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """`s3kms ARGS` with root's credentials and no S3KMS_ENDPOINT unless `env` sets one."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("S3KMS_")}
    base |= {"S3KMS_ACCESS_KEY": ROOT_USER, "S3KMS_SECRET_KEY": ROOT_PASSWORD, "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "s3kms", *args],
        input=b"data",
        capture_output=True,
        env=base | (env or {}),
        timeout=60,
    )


@pytest.mark.parametrize(
    "args", [("status",), ("key", "list"), ("encrypt", "k"), ("datakey", "k")], ids=" ".join
)
def test_no_server_names_the_address_and_why(args: tuple[str, ...]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    line = one_error_line(s3kms_cli(*args, "--endpoint", url), code=2)
    assert line == f"error cannot reach {url}: Connection refused"


def test_no_server_at_the_endpoint_from_the_environment() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = one_error_line(s3kms_cli("status", env={"S3KMS_ENDPOINT": url}), code=2)
    assert line == f"error cannot reach {url}: Connection refused"


def test_no_server_at_the_default_address() -> None:
    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex(("127.0.0.1", 9000)) == 0:
            pytest.skip("something listens on 127.0.0.1:9000")
    line = one_error_line(s3kms_cli("status"), code=2)
    assert line == "error cannot reach http://127.0.0.1:9000: Connection refused"
    assert "None" not in line


def test_an_unknown_host_is_named_too() -> None:
    line = one_error_line(s3kms_cli("status", "--endpoint", "http://s3kms.invalid:9000"), code=2)
    assert re.fullmatch(r"error cannot reach http://s3kms\.invalid:9000: \S.*", line), line
