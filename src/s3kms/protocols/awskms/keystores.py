"""Custom key stores: CreateCustomKeyStore, DescribeCustomKeyStores, ConnectCustomKeyStore,
DisconnectCustomKeyStore, UpdateCustomKeyStore, DeleteCustomKeyStore.

s3kms has no CloudHSM clusters and reaches no external key store proxy, so its accounts hold no
custom key store, and every operation answers as AWS KMS does for an account that has none:

- DescribeCustomKeyStores without a filter lists none (`{"CustomKeyStores": [], "Truncated":
  false}`); naming a store, by `CustomKeyStoreId` or `CustomKeyStoreName`, is a
  `CustomKeyStoreNotFoundException` (the model: "KMS cannot find a custom key store with the
  specified key store name or ID").
- Connect, Disconnect, Update and Delete name a store by id, which never exists:
  `CustomKeyStoreNotFoundException` (each lists it in the botocore model).
- CreateCustomKeyStore checks its members against the model and against the type's rules (the
  API reference: CloudHsmClusterId, TrustAnchorCertificate and KeyStorePassword are required for
  AWS_CLOUDHSM, the default type; XksProxyUriEndpoint, XksProxyUriPath,
  XksProxyAuthenticationCredential and XksProxyConnectivity for EXTERNAL_KEY_STORE, with
  XksProxyVpcEndpointServiceName when the connectivity is VPC_ENDPOINT_SERVICE), then answers
  what AWS answers when the backing store cannot be used: no CloudHSM cluster can be found
  (`CloudHsmClusterNotFoundException`); a PUBLIC_ENDPOINT proxy, which KMS connects to while
  creating the store, cannot be reached (`XksProxyUriUnreachableException`); a
  VPC_ENDPOINT_SERVICE proxy's endpoint service cannot be found
  (`XksProxyVpcEndpointServiceNotFoundException`).

No recorded AWS answer gives these errors' messages, so the messages are s3kms's own. Members
are checked first, then the caller's right to the operation (`kms:<Operation>` on no key, as AWS
authorises these account-level operations by IAM policy alone), then the answer.
"""

from __future__ import annotations

import re

from s3kms.auth.identity import Principal
from s3kms.errors import (
    CloudHsmClusterNotFound,
    CustomKeyStoreNotFound,
    ValidationError,
    XksProxyUriUnreachable,
    XksProxyVpcEndpointServiceNotFound,
)
from s3kms.http.responses import Response
from s3kms.protocols.awskms import members, paging
from s3kms.protocols.awskms.handler import Ctx, Handler, ok
from s3kms.protocols.awskms.members import Params
from s3kms.service import KeyService

AWS_CLOUDHSM = "AWS_CLOUDHSM"
EXTERNAL_KEY_STORE = "EXTERNAL_KEY_STORE"
CUSTOM_KEY_STORE_TYPES = (AWS_CLOUDHSM, EXTERNAL_KEY_STORE)  # the model's order
PUBLIC_ENDPOINT = "PUBLIC_ENDPOINT"
VPC_ENDPOINT_SERVICE = "VPC_ENDPOINT_SERVICE"
XKS_PROXY_CONNECTIVITIES = (PUBLIC_ENDPOINT, VPC_ENDPOINT_SERVICE)

_MARKER_KIND = "customkeystores"

# The model's patterns, used with fullmatch (so `$` lets no trailing newline through), and as the
# model writes them (the validation message quotes that).
Pattern = tuple[re.Pattern[str], str]


def _model(text: str) -> Pattern:
    return re.compile(text.replace("^", "").replace("$", "")), text


_CLUSTER_ID = _model(r"cluster-[2-7a-zA-Z]{11,16}")
_XKS_URI_ENDPOINT = _model(r"^https://[a-zA-Z0-9.-]+$")
_XKS_URI_PATH = _model(r"^(/[a-zA-Z0-9\/_-]+/kms/xks/v\d{1,2})$|^(/kms/xks/v\d{1,2})$")
_XKS_VPC_SERVICE = _model(r"^(com|eu)\.amazonaws\.vpce\.([a-z]+-){2,3}\d+\.vpce-svc-[0-9a-z]+$")
_ACCOUNT_ID = _model(r"[0-9]{12}")
_XKS_ACCESS_KEY_ID = _model(r"^[A-Z2-7]+$")
_XKS_SECRET = _model(r"^[a-zA-Z0-9\/+=]+$")

# The members each type of store takes (the API reference's "required for custom key stores with
# a CustomKeyStoreType of ..."); XksProxyVpcEndpointServiceName/-Owner go with VPC connectivity.
_CLOUDHSM_MEMBERS = ("CloudHsmClusterId", "TrustAnchorCertificate", "KeyStorePassword")
_XKS_MEMBERS = (
    "XksProxyUriEndpoint",
    "XksProxyUriPath",
    "XksProxyAuthenticationCredential",
    "XksProxyConnectivity",
)
_XKS_VPC_MEMBERS = ("XksProxyVpcEndpointServiceName", "XksProxyVpcEndpointServiceOwner")


def _pattern(value: str | None, member: str, pattern: Pattern, secret: bool) -> None:
    """A string member against its model pattern; a sensitive one's value is never shown."""
    if value is not None and pattern[0].fullmatch(value) is None:
        rule = f"satisfy regular expression pattern: {pattern[1]}"
        raise members.violation(member, rule, None if secret else f"'{value}'")


def _store_id(p: Params) -> str:
    return members.req_str(p, "CustomKeyStoreId", 1, 64)


def store_not_found(store_id: str) -> CustomKeyStoreNotFound:
    # s3kms's message: no AWS recording of this error's message was found.
    return CustomKeyStoreNotFound(f"Custom key store '{store_id}' does not exist")


def _xks_members(p: Params) -> None:
    """The external key store proxy members of Create and Update, against the model."""
    endpoint = members.opt_str(p, "XksProxyUriEndpoint", 10, 128)
    _pattern(endpoint, "xksProxyUriEndpoint", _XKS_URI_ENDPOINT, secret=False)
    path = members.opt_str(p, "XksProxyUriPath", 10, 128)
    _pattern(path, "xksProxyUriPath", _XKS_URI_PATH, secret=False)
    service = members.opt_str(p, "XksProxyVpcEndpointServiceName", 20, 64)
    _pattern(service, "xksProxyVpcEndpointServiceName", _XKS_VPC_SERVICE, secret=False)
    owner = members.opt_str(p, "XksProxyVpcEndpointServiceOwner", 12, 12)
    _pattern(owner, "xksProxyVpcEndpointServiceOwner", _ACCOUNT_ID, secret=False)
    credential = p.get("XksProxyAuthenticationCredential")
    if credential is not None:
        if type(credential) is not dict:
            raise members.wrong_type("XksProxyAuthenticationCredential", "a structure")
        where = "xksProxyAuthenticationCredential."
        parts: tuple[tuple[str, int, int, Pattern], ...] = (
            ("AccessKeyId", 20, 30, _XKS_ACCESS_KEY_ID),
            ("RawSecretAccessKey", 43, 64, _XKS_SECRET),
        )
        for name, lo, hi, pattern in parts:
            value = credential.get(name)
            member = where + name[:1].lower() + name[1:]
            if value is None:
                raise members.violation(member, "not be null", "null")
            if type(value) is not str:
                raise members.wrong_type(name, "a string")
            # Both are sensitive in the model: the length and pattern messages leave them out.
            if not lo <= len(value) <= hi:
                bound = (
                    f"have length greater than or equal to {lo}"
                    if len(value) < lo
                    else f"have length less than or equal to {hi}"
                )
                raise members.violation(member, bound, None)
            _pattern(value, member, pattern, secret=True)
    members.enum(p, "XksProxyConnectivity", XKS_PROXY_CONNECTIVITIES)


def _cloudhsm_members(p: Params, *, anchor: bool) -> None:
    """The CloudHSM members of Create (`anchor`: with TrustAnchorCertificate) and Update."""
    cluster = members.opt_str(p, "CloudHsmClusterId", 19, 24)
    _pattern(cluster, "cloudHsmClusterId", _CLUSTER_ID, secret=False)
    if anchor:
        members.opt_str(p, "TrustAnchorCertificate", 1, 5000)
    password = p.get("KeyStorePassword")
    if password is not None:
        if type(password) is not str:
            raise members.wrong_type("KeyStorePassword", "a string")
        if not 7 <= len(password) <= 32:  # sensitive: its value is never shown
            bound = (
                "have length greater than or equal to 7"
                if len(password) < 7
                else "have length less than or equal to 32"
            )
            raise members.violation("keyStorePassword", bound, None)


def _only_members_of(p: Params, kind: str, allowed: tuple[str, ...]) -> None:
    """Refuse the members of the other type of store (s3kms's message)."""
    others = _XKS_MEMBERS + _XKS_VPC_MEMBERS if kind == AWS_CLOUDHSM else _CLOUDHSM_MEMBERS
    for name in others:
        if name not in allowed and p.get(name) is not None:
            raise ValidationError(f"{name} is not valid for a custom key store of type {kind}.")


def _required(p: Params, kind: str, names: tuple[str, ...], why: str | None = None) -> None:
    for name in names:
        if p.get(name) is None:
            reason = why or f"a custom key store of type {kind}"
            raise ValidationError(f"{name} is required for {reason}.")


async def create_custom_key_store(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    members.req_str(p, "CustomKeyStoreName", 1, 256)
    kind = members.enum(p, "CustomKeyStoreType", CUSTOM_KEY_STORE_TYPES) or AWS_CLOUDHSM
    _cloudhsm_members(p, anchor=True)
    _xks_members(p)
    if kind == AWS_CLOUDHSM:
        _only_members_of(p, kind, _CLOUDHSM_MEMBERS)
        _required(p, kind, _CLOUDHSM_MEMBERS)
    else:
        _only_members_of(p, kind, _XKS_MEMBERS + _XKS_VPC_MEMBERS)
        _required(p, kind, _XKS_MEMBERS)
        connectivity = p["XksProxyConnectivity"]
        if connectivity == VPC_ENDPOINT_SERVICE:
            _required(
                p,
                kind,
                ("XksProxyVpcEndpointServiceName",),
                "an external key store with VPC_ENDPOINT_SERVICE connectivity",
            )
        else:
            for name in _XKS_VPC_MEMBERS:
                if p.get(name) is not None:
                    raise ValidationError(
                        f"{name} is valid only for an external key store with "
                        "VPC_ENDPOINT_SERVICE connectivity."
                    )
    principal.authorize("kms:CreateCustomKeyStore")
    if kind == AWS_CLOUDHSM:
        # The model: "KMS cannot find the CloudHSM cluster with the specified cluster ID".
        cluster = p["CloudHsmClusterId"]
        raise CloudHsmClusterNotFound(
            f"The CloudHSM cluster {cluster} cannot be found: s3kms has no CloudHSM clusters."
        )
    endpoint, path = p["XksProxyUriEndpoint"], p["XksProxyUriPath"]
    if p["XksProxyConnectivity"] == VPC_ENDPOINT_SERVICE:
        # The model: "KMS could not find the specified VPC endpoint service".
        name = p["XksProxyVpcEndpointServiceName"]
        raise XksProxyVpcEndpointServiceNotFound(
            f"The VPC endpoint service {name} cannot be found: s3kms reaches no VPC endpoint "
            "service."
        )
    # The model: "KMS was unable to reach the specified XksProxyUriPath. The path must be
    # reachable before you create the external key store" (PUBLIC_ENDPOINT: KMS connects to the
    # proxy while creating the store).
    raise XksProxyUriUnreachable(
        f"The external key store proxy at {endpoint}{path} cannot be reached: s3kms does not "
        "connect to external key store proxies."
    )


async def describe_custom_key_stores(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    store_id = members.opt_str(p, "CustomKeyStoreId", 1, 64)
    name = members.opt_str(p, "CustomKeyStoreName", 1, 256)
    members.opt_int(p, "Limit", 1, 1000)
    paging.after(p, _MARKER_KIND)  # no store exists, so no marker s3kms issued names one
    principal.authorize("kms:DescribeCustomKeyStores")
    if store_id is not None:
        raise store_not_found(store_id)
    if name is not None:
        # s3kms's message: no AWS recording of this error's message was found.
        raise CustomKeyStoreNotFound(f"Custom key store with name '{name}' does not exist")
    return ok({"CustomKeyStores": [], "Truncated": False})


def _no_such_store(operation: str) -> Handler:
    """An operation on the store a CustomKeyStoreId names, of which there is none."""
    action = f"kms:{operation}"

    async def handler(ctx: Ctx, service: KeyService, p: Params, principal: Principal) -> Response:
        store_id = _store_id(p)
        principal.authorize(action)
        raise store_not_found(store_id)

    return handler


connect_custom_key_store = _no_such_store("ConnectCustomKeyStore")
disconnect_custom_key_store = _no_such_store("DisconnectCustomKeyStore")
delete_custom_key_store = _no_such_store("DeleteCustomKeyStore")


async def update_custom_key_store(
    ctx: Ctx, service: KeyService, p: Params, principal: Principal
) -> Response:
    store_id = _store_id(p)
    members.opt_str(p, "NewCustomKeyStoreName", 1, 256)
    _cloudhsm_members(p, anchor=False)
    _xks_members(p)
    principal.authorize("kms:UpdateCustomKeyStore")
    raise store_not_found(store_id)
