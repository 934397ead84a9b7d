"""The Python client: one method per route, typed results, errors raised as the error tree.

    from s3kms import Client
    with Client("http://127.0.0.1:9000", "ACCESS", "SECRET") as kms:
        kms.create_key("my-key")
        dk = kms.generate_data_key("my-key", context={"bucket": "b/obj"})
        kms.create_key("signer", spec="ECC_NIST_P256", usage="SIGN_VERIFY")
        sig = kms.sign("signer", b"message", "ECDSA_SHA_256")
        assert kms.verify("signer", b"message", sig, "ECDSA_SHA_256")
        kms.create_key("byok", origin="EXTERNAL")  # imported material (BYOK)
        kms.import_material("byok", open("key.bin", "rb").read())

Admin routes are signed S3-style (service `s3`); the AWS KMS operations are signed like boto3
(service `kms`, generic flavour). Both use the server's own SigV4 module.
"""

from __future__ import annotations

import base64
import functools
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote, urlencode

import httpx

from s3kms import errors
from s3kms.auth import sigv4

ADMIN_PREFIX = "/rustfs/admin/v3/kms"


Surface = Literal["admin", "aws"]
ADMIN: Surface = "admin"  # {"error": {"code", "message", "resource"}}
AWS: Surface = "aws"  # {"__type", "message"}

# A code that several error classes share on one surface is raised as the class that surface means
# by it; every other code names exactly one class. A shared code missing here is raised as an
# UnknownError (never as one of the classes that share it), and tests/test_client_errors.py fails.
SHARED_CODES: dict[tuple[Surface, str], type[errors.KMSError]] = {
    (ADMIN, "AccessDenied"): errors.AccessDenied,  # AuthError's own code too
    (ADMIN, "KMSInvalidRequest"): errors.InvalidRequest,  # every InvalidRequest subclass
    (ADMIN, "KMSKeyNotFound"): errors.KeyNotFound,  # AliasNotFound too
    (ADMIN, "InternalError"): errors.InternalError,  # KMSError's own code too
    (AWS, "AccessDeniedException"): errors.AccessDenied,
    # RequestTimeTooSkewed and ContentSHA256Mismatch too; the message tells which.
    (AWS, "InvalidSignatureException"): errors.SignatureDoesNotMatch,
    # A member constraint, bad parameters, and a body over the limit (the admin API's 413
    # EntityTooLarge, RequestTooLarge) are all a ValidationException on the AWS API.
    (AWS, "ValidationException"): errors.ValidationError,
    (AWS, "NotFoundException"): errors.KeyNotFound,  # AliasNotFound; users are admin-API only
    (AWS, "KMSInvalidStateException"): errors.KeyInvalidState,  # ConcurrentChange too
    # The backend, the key store's disk or the audit log could not be written: retry.
    (AWS, "DependencyTimeoutException"): errors.BackendUnavailable,
    (AWS, "UnknownOperationException"): errors.RouteNotFound,  # MethodNotAllowed too
    (AWS, "KMSInternalException"): errors.InternalError,  # NotConfigured, KMSError too
}


class UnknownError(errors.KMSError):
    """An error answer the client has no class for (a newer server, a proxy in between): the code
    as the answer names it (the admin API's `code`, the AWS API's `__type`, or `HTTP <status>`
    when it names none), the HTTP status and the message as received."""

    def __init__(self, message: str, *, code: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def server_error_classes() -> list[type[errors.KMSError]]:
    """Every error class the server sends: the tree of errors.py and the users module's."""
    from s3kms import users  # UserNotFound; imported on the first error answer only

    return [
        value
        for module in (errors, users)
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, errors.KMSError)
        and value.__module__ == module.__name__
    ]


def surface_code(cls: type[errors.KMSError], surface: Surface) -> str:
    """The code an answer on `surface` names `cls` by."""
    return cls.code if surface == ADMIN else cls.aws_type


@functools.cache
def _error_table() -> dict[tuple[Surface, str], type[errors.KMSError]]:
    sharing: dict[tuple[Surface, str], list[type[errors.KMSError]]] = {}
    for cls in server_error_classes():
        for surface in (ADMIN, AWS):
            sharing.setdefault((surface, surface_code(cls, surface)), []).append(cls)
    table: dict[tuple[Surface, str], type[errors.KMSError]] = {}
    for pair, classes in sharing.items():
        if len(classes) == 1:
            table[pair] = classes[0]
        elif SHARED_CODES.get(pair) in classes:
            table[pair] = SHARED_CODES[pair]
    return table


def error_class(surface: Surface, code: str) -> type[errors.KMSError] | None:
    """The class an error answer on `surface` with `code` is raised as; None: an UnknownError."""
    return _error_table().get((surface, code))


def error_from_answer(surface: Surface, response: httpx.Response) -> errors.KMSError:
    """The exception for an error answer: its class by (surface, code), the server's message."""
    payload = _json(response)
    if surface == ADMIN:
        payload = payload.get("error") if isinstance(payload, dict) else None
    fields = payload if isinstance(payload, dict) else {}
    code = fields.get("code" if surface == ADMIN else "__type")
    if isinstance(code, str) and surface == AWS:
        # AWS JSON may qualify the type: "com.amazonaws.kms#NotFoundException", "X:http://..."
        code = code.split(":", 1)[0].rsplit("#", 1)[-1]
    code = code if isinstance(code, str) and code else None
    message = fields.get("message")
    message = message if isinstance(message, str) and message else None
    cls = None if code is None else error_class(surface, code)
    if cls is not None:
        # No message (InvalidCiphertextException has none): the class's own.
        return cls(message)
    return UnknownError(
        message or _plain_reason(response),
        code=code or f"HTTP {response.status_code}",
        status=response.status_code,
    )


def _plain_reason(response: httpx.Response) -> str:
    """An answer without an error document: its short plain-text body, else the status phrase."""
    if response.headers.get("content-type", "").startswith("text/plain"):
        text = response.text.strip()
        if text and len(text) <= 200 and text.isprintable():
            return text
    return response.reason_phrase or f"HTTP {response.status_code}"


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    status: str
    created_at: str


@dataclass(frozen=True)
class KeyStatus:
    key_id: str
    status: str
    created_at: str
    algorithm: str
    current_version: int | None = None
    deletion_date: str | None = None
    key_usage: str | None = None  # reported for every spec but SYMMETRIC_DEFAULT (algorithm AES256)
    origin: str | None = None  # reported for an EXTERNAL key (imported material) only


@dataclass(frozen=True)
class KeyChange:
    key_id: str
    status: str
    message: str
    current_version: int | None = None  # key/rotate answers it
    deletion_date: str | None = None  # key/delete answers it


@dataclass(frozen=True)
class KMSStatus:
    status: str
    kms_type: str | None
    endpoint: str | None
    key_count: int | None
    default_key_id: str | None


@dataclass(frozen=True)
class GeneratedDataKey:
    key_id: str
    ciphertext: bytes
    plaintext: bytes

    def __repr__(self) -> str:
        return f"GeneratedDataKey(key_id={self.key_id!r}, plaintext=<{len(self.plaintext)} bytes>)"


@dataclass(frozen=True)
class ImportParameters:
    """GetParametersForImport's answer: the wrapping key (DER SubjectPublicKeyInfo) and the
    import token that goes with it, both valid until `valid_to` (epoch seconds, 24 hours)."""

    key_id: str  # the key's ARN
    import_token: bytes
    public_key: bytes
    valid_to: float


@dataclass(frozen=True)
class ImportedMaterial:
    """ImportKeyMaterial's or DeleteImportedKeyMaterial's answer; `key_material_id` only for a
    symmetric encryption key (AWS reports it for no other)."""

    key_id: str  # the key's ARN
    key_material_id: str | None = None


@dataclass(frozen=True)
class CreatedGrant:
    grant_id: str
    grant_token: str


class Client:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        *,
        region: str = "us-east-1",
        ca_cert: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.access_key = access_key
        self._secret_key = secret_key
        self.region = region
        # A CA bundle path becomes an SSLContext: httpx >= 0.28 deprecates `verify=<path>`.
        verify = ssl.create_default_context(cafile=ca_cert) if ca_cert else True
        self._http = httpx.Client(timeout=timeout, verify=verify)

    def __repr__(self) -> str:
        return f"Client(endpoint={self.endpoint!r}, access_key={self.access_key!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport --------------------------------------------------------------------------------

    def _send_admin(
        self,
        method: str,
        route: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> httpx.Response:
        """Sign (S3-style) and send an admin request; raises the error tree on failure."""
        url = f"{self.endpoint}{ADMIN_PREFIX}/{route}"
        if query:
            url += "?" + urlencode(query, quote_via=quote, safe="-_.~")
        data = b"" if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if body is not None else {}
        signed = sigv4.sign_headers(
            method, url, headers, data, access_key=self.access_key, secret_key=self._secret_key,
            region=self.region, service="s3", now=time.time(), s3_flavour=True,
        )  # fmt: skip
        response = self._http.request(method, url, headers=signed, content=data)
        if response.status_code != 200:
            raise error_from_answer(ADMIN, response)
        return response

    def _admin(
        self,
        method: str,
        route: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        return _json(self._send_admin(method, route, query, body))

    def _aws(self, operation: str, body: Mapping[str, Any]) -> Any:
        url = f"{self.endpoint}/"
        data = json.dumps(body).encode()
        headers = {
            "content-type": "application/x-amz-json-1.1",
            "x-amz-target": f"TrentService.{operation}",
        }
        signed = sigv4.sign_headers(
            "POST",
            url,
            headers,
            data,
            access_key=self.access_key,
            secret_key=self._secret_key,
            region=self.region,
            service="kms",
            now=time.time(),
            s3_flavour=False,
        )
        response = self._http.post(url, headers=signed, content=data)
        if response.status_code != 200:
            raise error_from_answer(AWS, response)
        return _json(response)

    # -- admin API --------------------------------------------------------------------------------

    def configure(self, **fields: Any) -> str:
        return str(self._admin("POST", "configure", body=fields)["message"])

    def status(self) -> KMSStatus:
        p = self._admin("GET", "status")
        return KMSStatus(p["status"], p["kmsType"], p["endpoint"], p["keyCount"], p["defaultKeyId"])

    def create_key(
        self,
        name: str | None = None,
        spec: str | None = None,
        usage: str | None = None,
        origin: str | None = None,
    ) -> KeyInfo:
        """A new key: SYMMETRIC_DEFAULT (AES-256) unless `spec` names another AWS KeySpec, which
        also needs its AWS KeyUsage (`create_key("signer", spec="RSA_2048", usage="SIGN_VERIFY")`).
        `origin="EXTERNAL"`: a key without material, pending import until `import_material`."""
        query = {"keyName": name, "keySpec": spec, "keyUsage": usage, "origin": origin}
        p = self._admin("POST", "key/create", {k: v for k, v in query.items() if v})
        return KeyInfo(p["keyId"], p["status"], p["createdAt"])

    def list_keys(self, pattern: str | None = None) -> list[KeyInfo]:
        p = self._admin("GET", "key/list", {"pattern": pattern} if pattern else None)
        return [KeyInfo(k["keyId"], k["status"], k["createdAt"]) for k in p["keys"]]

    def key_status(self, name: str) -> KeyStatus:
        p = self._admin("GET", "key/status", {"keyName": name})
        return KeyStatus(
            p["keyId"],
            p["status"],
            p["createdAt"],
            p["algorithm"],
            p.get("currentVersion"),
            p.get("deletionDate"),
            p.get("keyUsage"),
            p.get("origin"),
        )

    def _change(self, route: str, name: str, extra: Mapping[str, str] | None = None) -> KeyChange:
        p = self._admin("POST", route, {"keyName": name, **(extra or {})})
        return KeyChange(
            p["keyId"], p["status"], p["message"], p.get("currentVersion"), p.get("deletionDate")
        )

    def enable_key(self, name: str) -> KeyChange:
        return self._change("key/enable", name)

    def disable_key(self, name: str) -> KeyChange:
        return self._change("key/disable", name)

    def rotate_key(self, name: str) -> KeyChange:
        return self._change("key/rotate", name)

    def schedule_key_deletion(self, name: str, pending_window_days: int = 30) -> KeyChange:
        return self._change("key/delete", name, {"pendingWindowDays": str(pending_window_days)})

    def cancel_key_deletion(self, name: str) -> KeyChange:
        return self._change("key/cancel-deletion", name)

    def add_user(
        self, access_key: str, policies: list[str], secret_key: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"policies": policies}
        if secret_key:
            body["secretKey"] = secret_key
        result: dict[str, Any] = self._admin("POST", "user/add", {"accessKey": access_key}, body)
        return result

    def remove_user(self, access_key: str) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("POST", "user/remove", {"accessKey": access_key})
        return result

    def list_users(self) -> list[dict[str, Any]]:
        users: list[dict[str, Any]] = self._admin("GET", "user/list")["users"]
        return users

    def add_identity(self, surface: str, access_key: str, identity: str) -> dict[str, Any]:
        """Let the client of `identity` (hex SHA-256 of its certificate's public key) on
        `surface` (`kes` or `kmip`) act as the user `access_key`."""
        query = {"accessKey": access_key, "identity": identity}
        result: dict[str, Any] = self._admin("POST", f"{surface}/identity/add", query)
        return result

    def remove_identity(self, surface: str, access_key: str, identity: str) -> dict[str, Any]:
        query = {"accessKey": access_key, "identity": identity}
        result: dict[str, Any] = self._admin("POST", f"{surface}/identity/remove", query)
        return result

    def list_identities(self, surface: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._admin("GET", f"{surface}/identity/list")["identities"]
        return found

    def add_kes_identity(self, access_key: str, identity: str) -> dict[str, Any]:
        """Let the KES client of `identity` (hex SHA-256 of its certificate's public key) act
        as the user `access_key` (docs/kes.md)."""
        return self.add_identity("kes", access_key, identity)

    def remove_kes_identity(self, access_key: str, identity: str) -> dict[str, Any]:
        return self.remove_identity("kes", access_key, identity)

    def list_kes_identities(self) -> list[dict[str, Any]]:
        return self.list_identities("kes")

    def add_kmip_identity(self, access_key: str, identity: str) -> dict[str, Any]:
        """Let the KMIP client of `identity` (hex SHA-256 of its certificate's public key) act
        as the user `access_key` (docs/kmip.md)."""
        return self.add_identity("kmip", access_key, identity)

    def remove_kmip_identity(self, access_key: str, identity: str) -> dict[str, Any]:
        return self.remove_identity("kmip", access_key, identity)

    def list_kmip_identities(self) -> list[dict[str, Any]]:
        return self.list_identities("kmip")

    def put_policy(self, name: str, document: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("POST", "policy/add", {"name": name}, document)
        return result

    def remove_policy(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("POST", "policy/remove", {"name": name})
        return result

    def list_policies(self) -> list[dict[str, Any]]:
        policies: list[dict[str, Any]] = self._admin("GET", "policy/list")["policies"]
        return policies

    def audit_lines(self, since: str | None = None) -> list[dict[str, Any]]:
        response = self._send_admin("GET", "audit", {"since": since} if since else None)
        return [json.loads(line) for line in response.text.splitlines() if line]

    def backup(self, passphrase: str) -> bytes:
        """An encrypted backup made by the server (all backends)."""
        return self._send_admin("POST", "backup", body={"passphrase": passphrase}).content

    # -- AWS KMS operations -----------------------------------------------------------------------

    def generate_data_key(
        self, key: str, *, number_of_bytes: int = 32, context: Mapping[str, str] | None = None
    ) -> GeneratedDataKey:
        body: dict[str, Any] = {"KeyId": key, "NumberOfBytes": number_of_bytes}
        if context:
            body["EncryptionContext"] = dict(context)
        p = self._aws("GenerateDataKey", body)
        return GeneratedDataKey(
            p["KeyId"], base64.b64decode(p["CiphertextBlob"]), base64.b64decode(p["Plaintext"])
        )

    def encrypt(
        self, key: str, plaintext: bytes, context: Mapping[str, str] | None = None
    ) -> bytes:
        body: dict[str, Any] = {"KeyId": key, "Plaintext": base64.b64encode(plaintext).decode()}
        if context:
            body["EncryptionContext"] = dict(context)
        return base64.b64decode(self._aws("Encrypt", body)["CiphertextBlob"])

    def decrypt(
        self, ciphertext: bytes, context: Mapping[str, str] | None = None, key: str | None = None
    ) -> bytes:
        body: dict[str, Any] = {"CiphertextBlob": base64.b64encode(ciphertext).decode()}
        if context:
            body["EncryptionContext"] = dict(context)
        if key:
            body["KeyId"] = key
        return base64.b64decode(self._aws("Decrypt", body)["Plaintext"])

    def sign(self, key: str, message: bytes, algorithm: str, message_type: str = "RAW") -> bytes:
        """The signature of `message` (RAW: at most 4096 bytes; DIGEST: the algorithm's hash of
        it) with an asymmetric SIGN_VERIFY key: DER for ECDSA, raw for RSA, Ed25519 and ML-DSA."""
        body = {
            "KeyId": key,
            "Message": _b64(message),
            "MessageType": message_type,
            "SigningAlgorithm": algorithm,
        }
        return base64.b64decode(self._aws("Sign", body)["Signature"])

    def verify(
        self,
        key: str,
        message: bytes,
        signature: bytes,
        algorithm: str,
        message_type: str = "RAW",
    ) -> bool:
        """True when `signature` is valid for `message` and the key, False when it is not; any
        other failure (unknown key, wrong usage or algorithm) raises as every call does."""
        body = {
            "KeyId": key,
            "Message": _b64(message),
            "MessageType": message_type,
            "Signature": _b64(signature),
            "SigningAlgorithm": algorithm,
        }
        try:
            return bool(self._aws("Verify", body)["SignatureValid"])
        except errors.InvalidSignature:
            return False

    def public_key(self, key: str) -> bytes:
        """An asymmetric key's public key, DER (SubjectPublicKeyInfo), for verifying offline."""
        return base64.b64decode(self._aws("GetPublicKey", {"KeyId": key})["PublicKey"])

    def generate_mac(self, key: str, message: bytes, algorithm: str) -> bytes:
        """The HMAC of `message` (at most 4096 bytes) with a GENERATE_VERIFY_MAC key."""
        body = {"KeyId": key, "Message": _b64(message), "MacAlgorithm": algorithm}
        return base64.b64decode(self._aws("GenerateMac", body)["Mac"])

    def verify_mac(self, key: str, message: bytes, mac: bytes, algorithm: str) -> bool:
        """True when `mac` is the key's HMAC of `message`, False when it is not; other failures
        raise."""
        body = {"KeyId": key, "Message": _b64(message), "Mac": _b64(mac), "MacAlgorithm": algorithm}
        try:
            return bool(self._aws("VerifyMac", body)["MacValid"])
        except errors.InvalidMac:
            return False

    # -- imported key material (BYOK) ------------------------------------------------------------

    def get_parameters_for_import(
        self,
        key: str,
        wrapping_algorithm: str = "RSA_AES_KEY_WRAP_SHA_256",
        wrapping_key_spec: str = "RSA_4096",
    ) -> ImportParameters:
        """A fresh wrapping key and import token for an EXTERNAL key (GetParametersForImport)."""
        body = {
            "KeyId": key,
            "WrappingAlgorithm": wrapping_algorithm,
            "WrappingKeySpec": wrapping_key_spec,
        }
        p = self._aws("GetParametersForImport", body)
        return ImportParameters(
            p["KeyId"],
            base64.b64decode(p["ImportToken"]),
            base64.b64decode(p["PublicKey"]),
            float(p["ParametersValidTo"]),
        )

    def import_key_material(
        self,
        key: str,
        import_token: bytes,
        encrypted_material: bytes,
        *,
        valid_to: float | datetime | None = None,
        new_material: bool = False,
        material_id: str | None = None,
        description: str | None = None,
    ) -> ImportedMaterial:
        """ImportKeyMaterial of material wrapped under the token's wrapping key. It expires at
        `valid_to` (epoch seconds or an aware datetime), or never when None; `new_material`
        imports it as NEW_KEY_MATERIAL (the key's next material, current once the key is
        rotated on demand), else it is the key's first material or one it had before."""
        body: dict[str, Any] = {
            "KeyId": key,
            "ImportToken": _b64(import_token),
            "EncryptedKeyMaterial": _b64(encrypted_material),
        }
        if valid_to is None:
            body["ExpirationModel"] = "KEY_MATERIAL_DOES_NOT_EXPIRE"
        else:
            body["ExpirationModel"] = "KEY_MATERIAL_EXPIRES"
            body["ValidTo"] = valid_to.timestamp() if isinstance(valid_to, datetime) else valid_to
        if new_material:
            body["ImportType"] = "NEW_KEY_MATERIAL"
        if material_id:
            body["KeyMaterialId"] = material_id
        if description is not None:
            body["KeyMaterialDescription"] = description
        p = self._aws("ImportKeyMaterial", body)
        return ImportedMaterial(p["KeyId"], p.get("KeyMaterialId"))

    def import_material(
        self,
        key: str,
        material: bytes,
        *,
        wrapping_algorithm: str = "RSA_AES_KEY_WRAP_SHA_256",
        wrapping_key_spec: str = "RSA_4096",
        valid_to: float | datetime | None = None,
        new_material: bool = False,
        description: str | None = None,
    ) -> ImportedMaterial:
        """The whole import: GetParametersForImport, `material` wrapped here (the plaintext
        material never leaves this process unwrapped), ImportKeyMaterial. `material`: 32 bytes
        for a symmetric key, the HMAC key's bytes, or a PKCS#8 DER private key."""
        from s3kms.crypto import wrapping  # (cryptography: loaded by the commands that need it)

        params = self.get_parameters_for_import(key, wrapping_algorithm, wrapping_key_spec)
        wrapped = wrapping.wrap(params.public_key, wrapping_algorithm, material)
        return self.import_key_material(
            key,
            params.import_token,
            wrapped,
            valid_to=valid_to,
            new_material=new_material,
            description=description,
        )

    def delete_imported_key_material(
        self, key: str, material_id: str | None = None
    ) -> ImportedMaterial:
        """Delete the key's current imported material (or the one `material_id` names); the key
        is pending import until that material is imported again."""
        body = {"KeyId": key, **({"KeyMaterialId": material_id} if material_id else {})}
        p = self._aws("DeleteImportedKeyMaterial", body)
        return ImportedMaterial(p["KeyId"], p.get("KeyMaterialId"))

    # -- key policies and grants (docs/security.md) ---------------------------------------------------

    def get_key_policy(self, key: str) -> str:
        """The key's policy document, as stored (the account's default when none was put)."""
        return str(self._aws("GetKeyPolicy", {"KeyId": key, "PolicyName": "default"})["Policy"])

    def put_key_policy(self, key: str, policy: str, *, bypass_lockout_check: bool = False) -> None:
        """Replace the key's policy. The server refuses a policy that would keep the caller from
        changing it again unless `bypass_lockout_check` (BypassPolicyLockoutSafetyCheck)."""
        body: dict[str, Any] = {"KeyId": key, "PolicyName": "default", "Policy": policy}
        if bypass_lockout_check:
            body["BypassPolicyLockoutSafetyCheck"] = True
        self._aws("PutKeyPolicy", body)

    def create_grant(
        self,
        key: str,
        grantee: str,
        operations: list[str],
        *,
        retiring_principal: str | None = None,
        name: str | None = None,
        context_subset: Mapping[str, str] | None = None,
        context_equals: Mapping[str, str] | None = None,
    ) -> CreatedGrant:
        """A grant of `operations` (AWS GrantOperation names: Decrypt, GenerateDataKey, ...) on
        the key to the principal ARN `grantee`; the same `name` and parameters again answer the
        same grant."""
        body: dict[str, Any] = {"KeyId": key, "GranteePrincipal": grantee, "Operations": operations}
        if retiring_principal:
            body["RetiringPrincipal"] = retiring_principal
        if name:
            body["Name"] = name
        if context_subset is not None:
            body["Constraints"] = {"EncryptionContextSubset": dict(context_subset)}
        if context_equals is not None:
            body["Constraints"] = {"EncryptionContextEquals": dict(context_equals)}
        p = self._aws("CreateGrant", body)
        return CreatedGrant(p["GrantId"], p["GrantToken"])

    def list_grants(
        self, key: str, *, grant_id: str | None = None, grantee: str | None = None
    ) -> list[dict[str, Any]]:
        """Every grant on the key (all pages), as ListGrants names their fields."""
        body: dict[str, Any] = {"KeyId": key}
        if grant_id:
            body["GrantId"] = grant_id
        if grantee:
            body["GranteePrincipal"] = grantee
        return self._pages("ListGrants", body, "Grants")

    def list_retirable_grants(self, retiring_principal: str) -> list[dict[str, Any]]:
        """Every grant, on any key, that `retiring_principal` may retire (all pages)."""
        return self._pages(
            "ListRetirableGrants", {"RetiringPrincipal": retiring_principal}, "Grants"
        )

    def retire_grant(
        self, *, token: str | None = None, key: str | None = None, grant_id: str | None = None
    ) -> None:
        """Retire a grant named by its token, or by its key and grant id."""
        body = {"GrantToken": token, "KeyId": key, "GrantId": grant_id}
        self._aws("RetireGrant", {k: v for k, v in body.items() if v})

    def revoke_grant(self, key: str, grant_id: str) -> None:
        self._aws("RevokeGrant", {"KeyId": key, "GrantId": grant_id})

    def _pages(self, operation: str, body: dict[str, Any], field: str) -> list[dict[str, Any]]:
        """Every entry of a paged AWS list operation (Marker / NextMarker / Truncated)."""
        items: list[dict[str, Any]] = []
        marker: str | None = None
        while True:
            page = self._aws(operation, {**body, "Marker": marker} if marker else body)
            items.extend(page.get(field, []))
            marker = page.get("NextMarker")
            if not page.get("Truncated") or not marker:
                return items


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {}
