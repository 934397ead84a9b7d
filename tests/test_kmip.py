"""The KMIP API against a real server over mutual TLS, driven by the real PyKMIP client
(`ProxyKmipClient`, its `KMIPProxy`) and, for framing and hostile input, by raw TLS sockets
(tests/kmipserver.py). One server for the module; each test makes its own objects (and users
when it needs to see only its own)."""

from __future__ import annotations

import os
import ssl
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import trustme
from botocore.exceptions import ClientError
from kmip.core import attributes as core_attributes
from kmip.core import enums, misc
from kmip.core import objects as cobjects
from kmip.core.messages import contents, payloads
from kmip.pie import objects as pie
from kmip.pie.client import ProxyKmipClient

from kmipserver import (
    ENCRYPT_DECRYPT,
    HEAD,
    OT,
    VERSIONS,
    A,
    Alg,
    KmipIdentity,
    KmipTestServer,
    Mask,
    Op,
    R,
    State,
    V,
    allow,
    attr,
    attributes_of,
    batch_item,
    create,
    decode_response,
    encode_request,
    ok,
    one,
    open_client,
    plain,
    reason_of,
    refused,
    register_core,
    response_version,
    ttlv_items,
    ttlv_values,
    unique,
)

# kmipserver.py's fixtures client, client20 and kms (imported for pytest, hence `x as x`)
from kmipserver import client20_fixture as client20_fixture
from kmipserver import client_fixture as client_fixture
from kmipserver import kms_fixture as kms_fixture
from kmsserver import ROOT_PASSWORD, ROOT_USER

ALL_VERSIONS = list(VERSIONS)
REQUEST_HEAD = b"\x42\x00\x78\x01"  # Request Message, Structure


# -- fixtures ---------------------------------------------------------------------------------
# (and kmipserver.py's: client, in PyKMIP's default protocol version, 1.2; client20; kms)


@pytest.fixture(scope="module")
def kmip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmipTestServer]:
    with KmipTestServer(tmp_path_factory.mktemp("kmip")) as server:
        yield server


@pytest.fixture(scope="module")
def alice(kmip: KmipTestServer) -> KmipIdentity:
    return kmip.user(["kmip:*"], name="alice")


# -- helpers ----------------------------------------------------------------------------------


def raw_request(
    kmip: KmipTestServer, who: KmipIdentity, version: enums.KMIPVersion, *items: Any, **header: Any
) -> Any:
    """One request over a fresh raw connection, the decoded response."""
    raw = kmip.raw(who)
    try:
        return decode_response(raw.request(encode_request(version, list(items), **header)))
    finally:
        raw.close()


def discover_item(item_id: bytes | None = None) -> Any:
    return batch_item(Op.DISCOVER_VERSIONS, payloads.DiscoverVersionsRequestPayload(), item_id)


def get_item(uid: str | None, item_id: bytes | None = None) -> Any:
    return batch_item(Op.GET, payloads.GetRequestPayload(unique_identifier=uid), item_id)


def register_opaque(client: ProxyKmipClient, size: int) -> tuple[str, bytes]:
    value = os.urandom(size)
    return client.register(pie.OpaqueObject(value, enums.OpaqueDataType.NONE)), value


# -- the server: DiscoverVersions, Query --------------------------------------------------------


def test_discover_versions_lists_every_served_version_newest_first(client: ProxyKmipClient) -> None:
    result = ok(client.proxy.discover_versions())
    versions = [(v.major, v.minor) for v in result.protocol_versions]
    assert versions == [(2, 0), (1, 4), (1, 3), (1, 2), (1, 1), (1, 0)]


def test_discover_versions_keeps_the_offered_versions_it_serves(client: ProxyKmipClient) -> None:
    offered = [
        contents.ProtocolVersion(3, 0),
        contents.ProtocolVersion(1, 4),
        contents.ProtocolVersion(1, 1),
    ]
    result = ok(client.proxy.discover_versions(protocol_versions=offered))
    assert [(v.major, v.minor) for v in result.protocol_versions] == [(1, 4), (1, 1)]
    none = ok(client.proxy.discover_versions(protocol_versions=[contents.ProtocolVersion(9, 9)]))
    assert not none.protocol_versions


def test_query_answers_operations_objects_and_server_information(client: ProxyKmipClient) -> None:
    Q = enums.QueryFunction
    result = ok(
        client.proxy.query(
            query_functions=[Q.QUERY_OPERATIONS, Q.QUERY_OBJECTS, Q.QUERY_SERVER_INFORMATION]
        )
    )
    operations = set(result.operations)
    served = {  # at least; Query names no operation the server does not serve
        Op.CREATE, Op.REGISTER, Op.LOCATE, Op.GET, Op.GET_ATTRIBUTES, Op.GET_ATTRIBUTE_LIST,
        Op.MODIFY_ATTRIBUTE, Op.DELETE_ATTRIBUTE, Op.ACTIVATE, Op.REVOKE, Op.DESTROY, Op.QUERY,
        Op.DISCOVER_VERSIONS,
    }  # fmt: skip
    assert served <= operations
    assert Op.SET_ATTRIBUTE not in operations  # KMIP 2.0's, and this is 1.2
    assert Op.CHECK not in operations and Op.ARCHIVE not in operations
    objects = set(result.object_types)
    assert {OT.SYMMETRIC_KEY, OT.SECRET_DATA, OT.OPAQUE_DATA} <= objects
    assert result.vendor_identification == "s3kms"


def test_query_in_2_0_lists_set_attribute(client20: ProxyKmipClient) -> None:
    result = ok(client20.proxy.query(query_functions=[enums.QueryFunction.QUERY_OPERATIONS]))
    operations = set(result.operations)
    assert Op.SET_ATTRIBUTE in operations and Op.CREATE in operations


# -- Create -------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [128, 192, 256])
def test_create_aes_makes_a_pre_active_key_of_that_length(
    client: ProxyKmipClient, length: int
) -> None:
    uid = client.create(
        Alg.AES, length, name=unique("aes"), cryptographic_usage_mask=ENCRYPT_DECRYPT
    )
    key = client.get(uid)
    assert isinstance(key, pie.SymmetricKey)
    assert key.cryptographic_algorithm is Alg.AES and key.cryptographic_length == length
    assert len(key.value) == length // 8
    assert key.key_format_type is enums.KeyFormatType.RAW
    found = attributes_of(client, uid)
    assert found["Object Type"] == [OT.SYMMETRIC_KEY]
    assert found["Cryptographic Algorithm"] == [Alg.AES]
    assert found["Cryptographic Length"] == [length]
    assert found["State"] == [State.PRE_ACTIVE]
    assert found["Cryptographic Usage Mask"] == [Mask.ENCRYPT.value | Mask.DECRYPT.value]
    assert client.get(uid).value == key.value  # the same material every time


@pytest.mark.parametrize(
    ("algorithm", "length"),
    [(Alg.HMAC_SHA256, 256), (Alg.HMAC_SHA384, 384), (Alg.HMAC_SHA512, 512)],
)
def test_create_hmac_makes_a_key_of_the_hash_length(
    client: ProxyKmipClient, algorithm: enums.CryptographicAlgorithm, length: int
) -> None:
    # (the pie client's create adds Encrypt and Decrypt to any mask: KMIPProxy's create here)
    uid = create(client, algorithm, length, [Mask.MAC_GENERATE, Mask.MAC_VERIFY])
    key = client.get(uid)
    assert isinstance(key, pie.SymmetricKey)
    assert key.cryptographic_algorithm is algorithm
    assert len(key.value) * 8 == length == key.cryptographic_length
    assert one(client, uid, "Cryptographic Length") == length
    assert (
        one(client, uid, "Cryptographic Usage Mask")
        == Mask.MAC_GENERATE.value | Mask.MAC_VERIFY.value
    )


@pytest.mark.parametrize(
    ("algorithm", "length"),
    [
        (Alg.AES, 100),
        (Alg.AES, 512),
        (Alg.IDEA, 128),
        (Alg.TRIPLE_DES, 192),
        (Alg.DES, 64),
        (Alg.RSA, 2048),
        (Alg.HMAC_SHA256, 128),
    ],
)
def test_create_refuses_what_s3kms_does_not_hold(
    client: ProxyKmipClient, algorithm: enums.CryptographicAlgorithm, length: int
) -> None:
    with refused(R.INVALID_FIELD):
        client.create(algorithm, length)


def test_create_of_another_object_type_is_refused(client: ProxyKmipClient) -> None:
    template = cobjects.TemplateAttribute(
        attributes=[attr(A.CRYPTOGRAPHIC_ALGORITHM, Alg.AES), attr(A.CRYPTOGRAPHIC_LENGTH, 256)]
    )
    with refused(R.INVALID_FIELD):
        ok(client.proxy.create(OT.SECRET_DATA, template))


def test_create_refuses_an_attribute_the_server_sets(client: ProxyKmipClient) -> None:
    with refused(R.INVALID_FIELD):
        create(client, Alg.AES, 256, ENCRYPT_DECRYPT, attr(A.STATE, State.ACTIVE))


# -- Register, Get ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "size"),
    [(Alg.AES, 16), (Alg.AES, 24), (Alg.AES, 32), (Alg.HMAC_SHA256, 32), (Alg.HMAC_SHA512, 64)],
)
def test_register_symmetric_key_then_get_returns_its_bytes(
    client: ProxyKmipClient, algorithm: enums.CryptographicAlgorithm, size: int
) -> None:
    material = os.urandom(size)
    name = unique("reg")
    key = pie.SymmetricKey(algorithm, size * 8, material, name=name)
    uid = client.register(key)
    got = client.get(uid)
    assert isinstance(got, pie.SymmetricKey)
    assert got.value == material
    assert got.cryptographic_algorithm is algorithm and got.cryptographic_length == size * 8
    found = attributes_of(client, uid)
    assert found["Name"] == [name] and found["State"] == [State.PRE_ACTIVE]
    assert found["Cryptographic Length"] == [size * 8]


def test_register_aes_whose_length_is_not_its_material_is_refused(client: ProxyKmipClient) -> None:
    with refused(R.INVALID_FIELD):
        register_core(
            client, OT.SYMMETRIC_KEY, os.urandom(32), enums.KeyFormatType.RAW, Alg.AES, 128
        )


@pytest.mark.parametrize("data_type", [enums.SecretDataType.PASSWORD, enums.SecretDataType.SEED])
def test_register_secret_data_then_get_returns_it(
    client: ProxyKmipClient, data_type: enums.SecretDataType
) -> None:
    value = b"correct horse battery staple " + os.urandom(8)
    uid = client.register(pie.SecretData(value, data_type, name=unique("secret")))
    got = client.get(uid)
    assert isinstance(got, pie.SecretData)
    assert got.value == value and got.data_type is data_type
    assert one(client, uid, "Object Type") is OT.SECRET_DATA


def test_register_opaque_object_then_get_returns_it(client: ProxyKmipClient) -> None:
    value = os.urandom(1000)
    uid = client.register(pie.OpaqueObject(value, enums.OpaqueDataType.NONE, name=unique("opaque")))
    got = client.get(uid)
    assert isinstance(got, pie.OpaqueObject)
    assert got.value == value and got.opaque_type is enums.OpaqueDataType.NONE
    assert one(client, uid, "Object Type") is OT.OPAQUE_DATA


def test_get_in_raw_key_format_returns_the_key(client: ProxyKmipClient) -> None:
    uid = client.create(Alg.AES, 256)
    result = ok(client.proxy.get(uid, key_format_type=misc.KeyFormatType(enums.KeyFormatType.RAW)))
    block = result.secret.key_block
    assert block.key_format_type.value is enums.KeyFormatType.RAW
    assert len(block.key_value.key_material.value) == 32


@pytest.mark.parametrize(
    ("kind", "key_format"),
    [
        ("symmetric", enums.KeyFormatType.PKCS_8),
        ("symmetric", enums.KeyFormatType.X_509),
        ("secret", enums.KeyFormatType.PKCS_8),
        ("secret", enums.KeyFormatType.RAW),
    ],
)
def test_get_in_a_key_format_the_object_has_not_is_refused(
    client: ProxyKmipClient, kind: str, key_format: enums.KeyFormatType
) -> None:
    if kind == "symmetric":
        uid = client.create(Alg.AES, 256)
    else:
        uid = client.register(pie.SecretData(b"s3cr3t", enums.SecretDataType.PASSWORD))
    with refused(R.KEY_FORMAT_TYPE_NOT_SUPPORTED):
        ok(client.proxy.get(uid, key_format_type=misc.KeyFormatType(key_format)))


def test_get_in_transparent_symmetric_key_format(
    kmip: KmipTestServer, alice: KmipIdentity, client: ProxyKmipClient
) -> None:
    """Key Format Type Transparent Symmetric Key: the Key Material is a structure holding the
    Key (read raw: PyKMIP's reader knows only Raw key material)."""
    uid = client.create(Alg.AES, 192)
    raw_key = client.get(uid).value
    item = batch_item(
        Op.GET,
        payloads.GetRequestPayload(
            unique_identifier=uid,
            key_format_type=enums.KeyFormatType.TRANSPARENT_SYMMETRIC_KEY,
        ),
    )
    data = kmip.raw(alice).request(encode_request(V.KMIP_1_2, [item]))
    assert ttlv_values(data, enums.Tags.RESULT_STATUS) == [enums.ResultStatus.SUCCESS.value]
    assert ttlv_values(data, enums.Tags.KEY_FORMAT_TYPE) == [
        enums.KeyFormatType.TRANSPARENT_SYMMETRIC_KEY.value
    ]
    items = ttlv_items(data)
    material = [i for i, (tag, _, _) in enumerate(items) if tag == enums.Tags.KEY_MATERIAL.value]
    assert len(material) == 1
    assert items[material[0]][1] == 0x01  # a structure
    assert items[material[0] + 1][:2] == (enums.Tags.KEY.value, 0x08)
    assert items[material[0] + 1][2] == raw_key


def test_a_key_pairs_objects_link_to_each_other(
    kmip: KmipTestServer, alice: KmipIdentity, client: ProxyKmipClient
) -> None:
    """GetAttributes by name Link (1.x) answers Link Type and Linked Object Identifier (read
    raw: PyKMIP 0.11 cannot decode a Link)."""
    public, private = client.create_key_pair(Alg.RSA, 2048)
    for uid, link_type, other in (
        (private, enums.LinkType.PUBLIC_KEY_LINK, public),
        (public, enums.LinkType.PRIVATE_KEY_LINK, private),
    ):
        item = batch_item(
            Op.GET_ATTRIBUTES,
            payloads.GetAttributesRequestPayload(unique_identifier=uid, attribute_names=["Link"]),
        )
        data = kmip.raw(alice).request(encode_request(V.KMIP_1_2, [item]))
        assert ttlv_values(data, enums.Tags.RESULT_STATUS) == [enums.ResultStatus.SUCCESS.value]
        assert ttlv_values(data, enums.Tags.LINK_TYPE) == [link_type.value]
        assert ttlv_values(data, enums.Tags.LINKED_OBJECT_IDENTIFIER) == [other]


def test_get_of_an_unknown_object_is_item_not_found(client: ProxyKmipClient) -> None:
    with refused(R.ITEM_NOT_FOUND):
        client.get(str(uuid.uuid4()))
    with refused(R.ITEM_NOT_FOUND):
        client.get("no such object / not even an id")


# -- Locate -------------------------------------------------------------------------------------


class Located:
    """The objects of a user of their own, with distinct Initial Dates (the server's clock is
    moved back for the older ones)."""

    def __init__(self, kmip: KmipTestServer) -> None:
        self.user = kmip.user(["kmip:*"])
        self.client = kmip.client(self.user)
        tag = uuid.uuid4().hex[:8]
        self.names = {k: f"loc-{k}-{tag}" for k in ("a", "b", "c", "secret")}
        now = int(time.time())
        clock = kmip.srv.clock
        try:
            clock.offset = -400.0
            self.a = create(
                self.client, Alg.AES, 128, ENCRYPT_DECRYPT,
                attr(A.NAME, self.names["a"]),
                attr(A.OBJECT_GROUP, f"group-1-{tag}"),
                attr(A.APPLICATION_SPECIFIC_INFORMATION,
                     {"application_namespace": "ceph", "application_data": f"tenant-{tag}"}),
            )  # fmt: skip
            self.a_date = one(self.client, self.a, "Initial Date")
            clock.offset = -300.0
            self.b = create(
                self.client, Alg.AES, 256, ENCRYPT_DECRYPT,
                attr(A.NAME, self.names["b"]),
                attr(A.OBJECT_GROUP, f"group-2-{tag}"),
            )  # fmt: skip
            self.client.activate(self.b)
            self.b_date = one(self.client, self.b, "Initial Date")
            clock.offset = -200.0
            self.c = create(
                self.client, Alg.HMAC_SHA256, 256, [Mask.MAC_GENERATE, Mask.MAC_VERIFY],
                attr(A.NAME, self.names["c"]),
            )  # fmt: skip
            self.c_date = one(self.client, self.c, "Initial Date")
            clock.offset = -100.0
            self.secret = self.client.register(
                pie.SecretData(b"pw", enums.SecretDataType.PASSWORD, name=self.names["secret"])
            )
            self.secret_date = one(self.client, self.secret, "Initial Date")
        finally:
            clock.offset = 0.0
        self.tag = tag
        self.newest_first = [self.secret, self.c, self.b, self.a]
        assert now - 450 <= self.a_date < self.b_date < self.c_date < self.secret_date <= now

    def locate(self, *attributes: Any, **options: Any) -> list[str]:
        found: list[str] = self.client.locate(attributes=list(attributes) or None, **options)
        return found


@pytest.fixture(scope="module")
def located(kmip: KmipTestServer) -> Located:
    return Located(kmip)


def test_locate_by_name(located: Located) -> None:
    assert located.locate(attr(A.NAME, located.names["a"])) == [located.a]
    assert located.locate(attr(A.NAME, located.names["secret"])) == [located.secret]
    assert located.locate(attr(A.NAME, "no-such-name")) == []


def test_locate_by_object_type(located: Located) -> None:
    assert located.locate(attr(A.OBJECT_TYPE, OT.SECRET_DATA)) == [located.secret]
    assert located.locate(attr(A.OBJECT_TYPE, OT.SYMMETRIC_KEY)) == [
        located.c,
        located.b,
        located.a,
    ]
    assert located.locate(attr(A.OBJECT_TYPE, OT.OPAQUE_DATA)) == []


def test_locate_by_cryptographic_algorithm_and_length(located: Located) -> None:
    assert located.locate(attr(A.CRYPTOGRAPHIC_ALGORITHM, Alg.HMAC_SHA256)) == [located.c]
    assert located.locate(attr(A.CRYPTOGRAPHIC_ALGORITHM, Alg.AES)) == [located.b, located.a]
    assert located.locate(attr(A.CRYPTOGRAPHIC_LENGTH, 128)) == [located.a]
    both = located.locate(
        attr(A.CRYPTOGRAPHIC_ALGORITHM, Alg.AES), attr(A.CRYPTOGRAPHIC_LENGTH, 256)
    )
    assert both == [located.b]  # every attribute must match


def test_locate_by_state(located: Located) -> None:
    assert located.locate(attr(A.STATE, State.ACTIVE)) == [located.b]
    assert located.locate(attr(A.STATE, State.PRE_ACTIVE)) == [located.secret, located.c, located.a]


def test_locate_by_cryptographic_usage_mask(located: Located) -> None:
    assert located.locate(attr(A.CRYPTOGRAPHIC_USAGE_MASK, [Mask.MAC_GENERATE])) == [located.c]
    assert located.locate(attr(A.CRYPTOGRAPHIC_USAGE_MASK, [Mask.ENCRYPT, Mask.DECRYPT])) == [
        located.b,
        located.a,
    ]
    assert located.locate(attr(A.CRYPTOGRAPHIC_USAGE_MASK, [Mask.SIGN])) == []


def test_locate_by_object_group(located: Located) -> None:
    assert located.locate(attr(A.OBJECT_GROUP, f"group-1-{located.tag}")) == [located.a]
    assert located.locate(attr(A.OBJECT_GROUP, f"group-2-{located.tag}")) == [located.b]
    assert located.locate(attr(A.OBJECT_GROUP, "group-none")) == []


def test_locate_by_application_specific_information(located: Located) -> None:
    info = {"application_namespace": "ceph", "application_data": f"tenant-{located.tag}"}
    assert located.locate(attr(A.APPLICATION_SPECIFIC_INFORMATION, info)) == [located.a]
    other = {"application_namespace": "ceph", "application_data": "tenant-other"}
    assert located.locate(attr(A.APPLICATION_SPECIFIC_INFORMATION, other)) == []


def test_locate_by_initial_date_exact_and_range(located: Located) -> None:
    assert located.locate(attr(A.INITIAL_DATE, located.b_date)) == [located.b]
    # Two Initial Dates: a range, both ends included.
    inner = located.locate(
        attr(A.INITIAL_DATE, located.b_date), attr(A.INITIAL_DATE, located.c_date)
    )
    assert inner == [located.c, located.b]
    before = located.locate(attr(A.INITIAL_DATE, 0), attr(A.INITIAL_DATE, located.a_date))
    assert before == [located.a]
    after = located.locate(
        attr(A.INITIAL_DATE, located.secret_date + 1),
        attr(A.INITIAL_DATE, located.secret_date + 10**6),
    )
    assert after == []


def test_locate_without_attributes_lists_everything_newest_first(located: Located) -> None:
    assert located.locate() == located.newest_first


def test_locate_offset_and_maximum_items(located: Located) -> None:
    assert located.locate(maximum_items=2) == located.newest_first[:2]
    assert located.locate(offset_items=1) == located.newest_first[1:]
    assert located.locate(offset_items=1, maximum_items=2) == located.newest_first[1:3]
    assert located.locate(offset_items=10) == []
    assert located.locate(attr(A.OBJECT_TYPE, OT.SYMMETRIC_KEY), maximum_items=1) == [located.c]


def test_locate_ceph_pattern_name_only_in_1_0_finds_exactly_one(
    kmip: KmipTestServer, located: Located
) -> None:
    """RGW: Locate with one Name (Uninterpreted Text String), no Object Type, protocol 1.0, one
    Unique Identifier back; then Get of it, Raw, 32 bytes."""
    ceph = kmip.client(located.user, V.KMIP_1_0)
    name = core_attributes.Name.create(located.names["b"], enums.NameType.UNINTERPRETED_TEXT_STRING)
    found = ceph.locate(attributes=[attr(A.NAME, name)])
    assert found == [located.b]
    key = ceph.get(found[0])
    assert isinstance(key, pie.SymmetricKey) and len(key.value) == 32
    assert key.key_format_type is enums.KeyFormatType.RAW


def test_locate_by_an_attribute_it_does_not_search_is_refused(located: Located) -> None:
    with refused(R.INVALID_FIELD):
        located.locate(
            attr(A.CRYPTOGRAPHIC_PARAMETERS, {"block_cipher_mode": enums.BlockCipherMode.CBC})
        )


# -- attributes ---------------------------------------------------------------------------------


def test_get_attributes_returns_every_attribute(client: ProxyKmipClient) -> None:
    name = unique("attrs")
    uid = client.create(Alg.AES, 256, name=name, cryptographic_usage_mask=ENCRYPT_DECRYPT)
    found = attributes_of(client, uid)
    assert found["Unique Identifier"] == [uid]
    assert found["Name"] == [name]
    assert found["Object Type"] == [OT.SYMMETRIC_KEY]
    assert found["Cryptographic Algorithm"] == [Alg.AES]
    assert found["Cryptographic Length"] == [256]
    assert found["State"] == [State.PRE_ACTIVE]
    now = time.time()
    (initial,) = found["Initial Date"]
    assert now - 60 < initial <= now + 1
    assert found["Last Change Date"][0] >= initial
    assert "Activation Date" not in found


def test_get_attributes_by_name_returns_only_those(client: ProxyKmipClient) -> None:
    uid = client.create(Alg.AES, 128, name=unique("named"))
    found = attributes_of(client, uid, ["State", "Cryptographic Length", "Contact Information"])
    assert found == {"State": [State.PRE_ACTIVE], "Cryptographic Length": [128]}


def test_get_attributes_in_2_0_is_readable_by_pykmip(client20: ProxyKmipClient) -> None:
    """PyKMIP's 2.0 client reads an Attributes structure with its attribute value factory,
    which knows fewer attributes than 1.x's (not Extractable, Revocation Reason, Link...)."""
    uid = client20.create(Alg.AES, 256, name=unique("attrs20"))
    found = attributes_of(client20, uid)
    assert found["Cryptographic Length"] == [256] and found["State"] == [State.PRE_ACTIVE]


def test_get_attributes_in_2_0_of_an_object_with_a_custom_attribute(
    kmip: KmipTestServer, alice: KmipIdentity, client: ProxyKmipClient
) -> None:
    """An x- attribute set in 1.x has no KMIP 2.0 tag (PyKMIP's 2.0 payloads convert attributes
    by tag): a 2.0 GetAttributes of the object must still be answered (read raw: PyKMIP's 2.0
    client cannot decode some attributes, see above)."""
    uid = create(client, Alg.AES, 256, ENCRYPT_DECRYPT, attr("x-tenant-id", "blue"))
    item = batch_item(
        Op.GET_ATTRIBUTES, payloads.GetAttributesRequestPayload(unique_identifier=uid)
    )
    data = kmip.raw(alice).request(encode_request(V.KMIP_2_0, [item]))
    assert ttlv_values(data, enums.Tags.RESULT_MESSAGE) == []
    assert ttlv_values(data, enums.Tags.RESULT_STATUS) == [enums.ResultStatus.SUCCESS.value]
    assert uid in ttlv_values(data, enums.Tags.UNIQUE_IDENTIFIER)
    assert ttlv_values(data, enums.Tags.OPERATION) == [Op.GET_ATTRIBUTES.value]


def test_get_attribute_list_names_the_attributes(client: ProxyKmipClient) -> None:
    uid = client.create(Alg.AES, 256, name=unique("list"), cryptographic_usage_mask=ENCRYPT_DECRYPT)
    names = client.get_attribute_list(uid)
    assert len(names) == len(set(names))
    assert {
        "Unique Identifier", "Object Type", "Cryptographic Algorithm", "Cryptographic Length",
        "Name", "Cryptographic Usage Mask", "State", "Initial Date", "Last Change Date",
    } <= set(names)  # fmt: skip
    assert "Activation Date" not in names
    client.activate(uid)
    assert "Activation Date" in client.get_attribute_list(uid)


def test_modify_attribute_changes_a_name_in_1_x(client: ProxyKmipClient) -> None:
    old, new = unique("old"), unique("new")
    uid = client.create(Alg.AES, 256, name=old)
    got_uid, answered = client.modify_attribute(uid, attribute=attr(A.NAME, new, 0))
    assert got_uid == uid
    assert answered is not None and plain(answered.attribute_value) == new
    assert attributes_of(client, uid)["Name"] == [new]
    assert client.locate(attributes=[attr(A.NAME, new)]) == [uid]
    assert client.locate(attributes=[attr(A.NAME, old)]) == []


def test_modify_attribute_changes_an_object_group(client: ProxyKmipClient) -> None:
    uid = create(
        client,
        Alg.AES,
        256,
        ENCRYPT_DECRYPT,
        attr(A.OBJECT_GROUP, "before"),
        attr(A.OBJECT_GROUP, "kept"),
    )
    client.modify_attribute(uid, attribute=attr(A.OBJECT_GROUP, "after", 0))
    assert attributes_of(client, uid)["Object Group"] == ["after", "kept"]
    with refused(R.ITEM_NOT_FOUND):  # no value at index 5
        client.modify_attribute(uid, attribute=attr(A.OBJECT_GROUP, "x", 5))


def test_custom_attributes_are_set_modified_and_deleted(client: ProxyKmipClient) -> None:
    uid = create(client, Alg.AES, 256, ENCRYPT_DECRYPT, attr("x-tenant-id", "blue"))
    assert attributes_of(client, uid)["x-tenant-id"] == ["blue"]
    assert "x-tenant-id" in client.get_attribute_list(uid)
    _, answered = client.modify_attribute(uid, attribute=attr("x-tenant-id", "green"))
    assert answered is not None and answered.attribute_value.value == "green"
    assert attributes_of(client, uid)["x-tenant-id"] == ["green"]
    assert client.locate(attributes=[attr("x-tenant-id", "green")]) == [uid]
    got_uid, _ = client.delete_attribute(uid, attribute_name="x-tenant-id")
    assert got_uid == uid
    assert "x-tenant-id" not in attributes_of(client, uid)
    with refused(R.ITEM_NOT_FOUND):
        client.modify_attribute(uid, attribute=attr("x-tenant-id", "red"))
    with refused(R.ITEM_NOT_FOUND):
        client.delete_attribute(uid, attribute_name="x-tenant-id")


@pytest.mark.parametrize(
    ("name", "value"), [("Name", "pykmip-1"), ("x-tenant", "blue"), ("x-tenant-id", "tenant-1")]
)
def test_modify_attribute_answer_is_well_formed_for_text_of_8_bytes(
    kmip: KmipTestServer, alice: KmipIdentity, client: ProxyKmipClient, name: str, value: str
) -> None:
    """Modify Attribute (1.x) answers the attribute it set. A text of 8, 16, ... bytes (a Name
    such as `pykmip-1`, a custom attribute named `x-tenant`) must be encoded without padding."""
    kind: enums.AttributeType | str = A.NAME if name == "Name" else name
    uid = create(client, Alg.AES, 256, ENCRYPT_DECRYPT, attr(kind, "start"))
    item = batch_item(
        Op.MODIFY_ATTRIBUTE,
        payloads.ModifyAttributeRequestPayload(
            unique_identifier=uid, attribute=attr(kind, value, 0 if name == "Name" else None)
        ),
    )
    raw = kmip.raw(alice)
    data = raw.request(encode_request(V.KMIP_1_2, [item]))
    ttlv_items(data)  # strictly well-formed (ValueError otherwise)
    assert ttlv_values(data, enums.Tags.RESULT_STATUS) == [enums.ResultStatus.SUCCESS.value]
    assert value in ttlv_values(data, enums.Tags.ATTRIBUTE_VALUE) + ttlv_values(
        data, enums.Tags.NAME_VALUE
    )
    assert attributes_of(client, uid)[name] == [value]


def test_delete_attribute_removes_a_name_in_1_x(client: ProxyKmipClient) -> None:
    first, second = unique("first"), unique("second")
    uid = create(client, Alg.AES, 256, ENCRYPT_DECRYPT, attr(A.NAME, first), attr(A.NAME, second))
    assert attributes_of(client, uid)["Name"] == [first, second]
    got_uid, deleted = client.delete_attribute(uid, attribute_name="Name", attribute_index=0)
    assert got_uid == uid
    assert deleted is not None and plain(deleted.attribute_value) == first  # 1.x returns it
    assert attributes_of(client, uid)["Name"] == [second]
    with refused(R.ITEM_NOT_FOUND):
        client.delete_attribute(uid, attribute_name="Name", attribute_index=3)


def test_delete_of_an_object_group(client: ProxyKmipClient) -> None:
    uid = create(client, Alg.AES, 256, ENCRYPT_DECRYPT, attr(A.OBJECT_GROUP, "gone"))
    client.delete_attribute(uid, attribute_name="Object Group")
    assert "Object Group" not in attributes_of(client, uid)


def test_read_only_attributes_are_not_changed(client: ProxyKmipClient) -> None:
    uid = client.create(Alg.AES, 256)
    with refused(R.PERMISSION_DENIED):
        client.modify_attribute(uid, attribute=attr(A.CRYPTOGRAPHIC_LENGTH, 128))
    with refused(R.PERMISSION_DENIED):
        client.delete_attribute(uid, attribute_name="State")
    assert one(client, uid, "Cryptographic Length") == 256


def test_add_attribute_in_1_x_and_2_0(
    kmip: KmipTestServer, alice: KmipIdentity, client: ProxyKmipClient
) -> None:
    """Add Attribute (sent raw: PyKMIP's client has no method for it): a second Name gets index
    1 and is located; a custom attribute is added once; a read-only one is refused."""
    from kmip.core import primitives

    from s3kms.protocols.kmip.payloads import AddAttributeRequestPayload

    first, second = unique("add-a"), unique("add-b")
    uid = client.create(Alg.AES, 256, name=first)
    raw = kmip.raw(alice)

    def add(version: Any, **fields: Any) -> Any:
        item = batch_item(
            Op.ADD_ATTRIBUTE, AddAttributeRequestPayload(unique_identifier=uid, **fields)
        )
        return decode_response(raw.request(encode_request(version, [item])), version).batch_items[0]

    answer = add(V.KMIP_1_2, attribute=attr(A.NAME, second))
    assert answer.result_status.value is enums.ResultStatus.SUCCESS
    assert client.get_attributes(uid, ["Name"])[1][1].attribute_index.value == 1
    assert client.locate(attributes=[attr(A.NAME, second)]) == [uid]
    assert add(V.KMIP_1_2, attribute=attr("x-team", "storage")).result_status.value is (
        enums.ResultStatus.SUCCESS
    )
    assert add(V.KMIP_1_2, attribute=attr("x-team", "again")).result_reason.value is R.INVALID_FIELD
    refused_answer = add(V.KMIP_1_2, attribute=attr(A.CRYPTOGRAPHIC_LENGTH, 128))
    assert refused_answer.result_reason.value is R.PERMISSION_DENIED
    group = unique("group")
    answer = add(
        V.KMIP_2_0,
        new_attribute=cobjects.NewAttribute(
            attribute=primitives.TextString(group, tag=enums.Tags.OBJECT_GROUP)
        ),
    )
    assert answer.result_status.value is enums.ResultStatus.SUCCESS
    assert client.locate(attributes=[attr(A.OBJECT_GROUP, group)]) == [uid]


def test_set_attribute_in_2_0(client20: ProxyKmipClient) -> None:
    uid = client20.create(Alg.AES, 256, name=unique("set"))
    assert (
        client20.set_attribute(uid, attribute_name="Contact Information", attribute_value="ops@x")
        == uid
    )
    assert one(client20, uid, "Contact Information") == "ops@x"
    client20.set_attribute(uid, attribute_name="Contact Information", attribute_value="sec@x")
    assert one(client20, uid, "Contact Information") == "sec@x"
    client20.set_attribute(uid, attribute_name="Sensitive", attribute_value=True)
    assert one(client20, uid, "Sensitive") is True


def test_set_attribute_of_a_multi_valued_attribute_is_refused(client20: ProxyKmipClient) -> None:
    uid = client20.create(Alg.AES, 256)
    with refused(R.MULTI_VALUED_ATTRIBUTE):
        client20.set_attribute(uid, attribute_name="Object Group", attribute_value="g")


# -- the life cycle -----------------------------------------------------------------------------


def test_activate_makes_a_pre_active_key_active_with_its_activation_date(
    client: ProxyKmipClient,
) -> None:
    uid = client.create(Alg.AES, 256)
    assert one(client, uid, "State") is State.PRE_ACTIVE
    before = int(time.time())
    client.activate(uid)
    found = attributes_of(client, uid)
    assert found["State"] == [State.ACTIVE]
    assert before - 1 <= found["Activation Date"][0] <= time.time() + 1
    with refused(R.PERMISSION_DENIED):  # not Pre-Active any more
        client.activate(uid)
    assert one(client, uid, "Activation Date") == found["Activation Date"][0]


# What a revoked object has (by name: see the test of GetAttributes without names below).
REVOKED = ["State", "Deactivation Date", "Compromise Date", "Compromise Occurrence Date"]


def test_revoke_cessation_of_operation_deactivates(client: ProxyKmipClient) -> None:
    uid = client.create(Alg.AES, 256)
    client.activate(uid)
    client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid, "retired")
    found = attributes_of(client, uid, REVOKED)
    assert found["State"] == [State.DEACTIVATED]
    assert time.time() - 60 < found["Deactivation Date"][0] <= time.time() + 1
    assert "Compromise Date" not in found
    assert "Revocation Reason" in client.get_attribute_list(uid)
    assert isinstance(client.get(uid), pie.SymmetricKey)  # still there, still readable


def test_get_attributes_of_a_revoked_object_is_readable_by_pykmip(client: ProxyKmipClient) -> None:
    """PyKMIP's client (0.11) cannot decode a Revocation Reason attribute (its attribute value
    factory raises NotImplementedError): a GetAttributes answer that carries one breaks it."""
    uid = client.create(Alg.AES, 256)
    client.activate(uid)
    client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
    found = attributes_of(client, uid)
    assert found["State"] == [State.DEACTIVATED]


def test_revoke_key_compromise_makes_it_compromised(client: ProxyKmipClient) -> None:
    uid = client.create(Alg.AES, 256)
    client.activate(uid)
    occurred = int(time.time()) - 3600
    client.revoke(
        enums.RevocationReasonCode.KEY_COMPROMISE, uid, compromise_occurrence_date=occurred
    )
    found = attributes_of(client, uid, REVOKED)
    assert found["State"] == [State.COMPROMISED]
    assert found["Compromise Occurrence Date"] == [occurred]
    assert time.time() - 60 < found["Compromise Date"][0] <= time.time() + 1
    # A later cessation leaves it compromised.
    client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
    assert one(client, uid, "State") is State.COMPROMISED


def test_destroy_of_an_active_object_is_refused(client: ProxyKmipClient) -> None:
    uid = client.create(Alg.AES, 256)
    client.activate(uid)
    with refused(R.PERMISSION_DENIED):
        client.destroy(uid)
    assert one(client, uid, "State") is State.ACTIVE
    assert len(client.get(uid).value) == 32


def test_destroy_after_revoke_then_the_object_is_not_found(client: ProxyKmipClient) -> None:
    name = unique("doomed")
    uid = client.create(Alg.AES, 256, name=name)
    client.activate(uid)
    client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
    client.destroy(uid)
    with refused(R.ITEM_NOT_FOUND):
        client.get(uid)
    with refused(R.ITEM_NOT_FOUND):
        client.get_attributes(uid)
    with refused(R.ITEM_NOT_FOUND):
        client.destroy(uid)
    assert client.locate(attributes=[attr(A.NAME, name)]) == []


def test_destroy_of_a_pre_active_or_compromised_object_works(client: ProxyKmipClient) -> None:
    fresh = client.create(Alg.AES, 256)
    client.destroy(fresh)
    compromised = client.create(Alg.AES, 256)
    client.activate(compromised)
    client.revoke(enums.RevocationReasonCode.KEY_COMPROMISE, compromised)
    client.destroy(compromised)
    for uid in (fresh, compromised):
        with refused(R.ITEM_NOT_FOUND):
            client.get(uid)


def test_create_with_an_activation_date_in_the_past_is_active(client: ProxyKmipClient) -> None:
    past = int(time.time()) - 600
    uid = create(client, Alg.AES, 256, ENCRYPT_DECRYPT, attr(A.ACTIVATION_DATE, past))
    found = attributes_of(client, uid)
    assert found["State"] == [State.ACTIVE] and found["Activation Date"] == [past]
    future = create(
        client, Alg.AES, 256, ENCRYPT_DECRYPT, attr(A.ACTIVATION_DATE, int(time.time()) + 86400)
    )
    assert one(client, future, "State") is State.PRE_ACTIVE


# -- protocol versions --------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=[v.value for v in ALL_VERSIONS])
def test_a_round_in_each_protocol_version(
    kmip: KmipTestServer, alice: KmipIdentity, version: enums.KMIPVersion
) -> None:
    c = kmip.client(alice, version)
    name = unique(f"v{version.value}")
    uid = c.create(Alg.AES, 256, name=name, cryptographic_usage_mask=ENCRYPT_DECRYPT)
    assert c.locate(attributes=[attr(A.NAME, name)]) == [uid]
    key = c.get(uid)
    assert isinstance(key, pie.SymmetricKey) and len(key.value) == 32
    found = attributes_of(c, uid)
    assert found["Name"] == [name] and found["Cryptographic Length"] == [256]
    assert found["State"] == [State.PRE_ACTIVE]
    c.destroy(uid)
    with refused(R.ITEM_NOT_FOUND):
        c.get(uid)


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=[v.value for v in ALL_VERSIONS])
def test_the_response_is_in_the_request_version(
    kmip: KmipTestServer, alice: KmipIdentity, version: enums.KMIPVersion
) -> None:
    raw = kmip.raw(alice)
    uid = kmip.client(alice).create(Alg.AES, 256)
    for item in (discover_item(), get_item(uid), get_item(str(uuid.uuid4()))):
        data = raw.request(encode_request(version, [item]))
        assert response_version(data) == VERSIONS[version]
        decoded = decode_response(data)
        assert decoded.batch_items[0].operation.value is item.operation.value


def test_an_unknown_protocol_version_is_an_invalid_message(
    kmip: KmipTestServer, alice: KmipIdentity
) -> None:
    data = bytearray(encode_request(V.KMIP_1_0, [discover_item()]))
    assert data[24:28] == b"\x42\x00\x6a\x02"
    data[32:36] = struct.pack(">i", 3)  # Protocol Version 3.0
    raw = kmip.raw(alice)
    response = decode_response(raw.request(bytes(data)))
    (item,) = response.batch_items
    assert item.result_status.value is enums.ResultStatus.OPERATION_FAILED
    assert item.result_reason.value is R.INVALID_MESSAGE


# -- who may do what ----------------------------------------------------------------------------


def test_a_certificate_attached_to_no_user_is_not_authenticated(kmip: KmipTestServer) -> None:
    stranger = kmip.certificate()
    c = kmip.client(stranger)
    with refused(R.AUTHENTICATION_NOT_SUCCESSFUL):
        c.create(Alg.AES, 256)
    with refused(R.AUTHENTICATION_NOT_SUCCESSFUL):
        c.locate()


def test_a_certificate_of_another_ca_fails_the_handshake(kmip: KmipTestServer) -> None:
    # Its identity is a user's: only its issuer is wrong.
    outsider = kmip.user(["kmip:*"], ca=trustme.CA())
    c = kmip.client(outsider, open=False)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        open_client(c)
        c.create(Alg.AES, 256)  # TLS 1.3: the server's refusal arrives after the client's handshake
    with pytest.raises((ssl.SSLError, ConnectionError)):
        raw = kmip.raw(outsider)
        raw.request(encode_request(V.KMIP_1_2, [discover_item()]))


def test_a_policy_without_kmip_get_refuses_get_but_not_get_attributes(kmip: KmipTestServer) -> None:
    reader = kmip.user(["kmip:Create", "kmip:GetAttributes", "kmip:Locate"])
    c = kmip.client(reader)
    uid = c.create(Alg.AES, 256, name=unique("noget"))
    assert one(c, uid, "Cryptographic Length") == 256
    with refused(R.PERMISSION_DENIED):
        c.get(uid)
    with refused(R.PERMISSION_DENIED):
        c.activate(uid)


def test_a_policy_without_kmip_create_refuses_create(kmip: KmipTestServer) -> None:
    c = kmip.client(kmip.user(["kmip:Locate"]))
    with refused(R.PERMISSION_DENIED):
        c.create(Alg.AES, 256)
    assert c.locate() == []


def test_an_explicit_deny_wins(kmip: KmipTestServer) -> None:
    c = kmip.client(kmip.user(allow("kmip:*", deny=["kmip:Get", "kmip:Destroy"])))
    uid = c.create(Alg.AES, 256)
    assert one(c, uid, "State") is State.PRE_ACTIVE
    with refused(R.PERMISSION_DENIED):
        c.get(uid)
    with refused(R.PERMISSION_DENIED):
        c.destroy(uid)


def test_objects_are_scoped_to_their_owner(kmip: KmipTestServer) -> None:
    a = kmip.client(kmip.user(["kmip:*"]))
    b = kmip.client(kmip.user(["kmip:*"]))
    name = unique("mine")
    uid = a.create(Alg.AES, 256, name=name)
    for call in (
        lambda: b.get(uid),
        lambda: b.get_attributes(uid),
        lambda: b.get_attribute_list(uid),
        lambda: b.activate(uid),
        lambda: b.modify_attribute(uid, attribute=attr(A.NAME, "stolen", 0)),
        lambda: b.destroy(uid),
    ):
        assert reason_of(call) is R.ITEM_NOT_FOUND
    assert b.locate(attributes=[attr(A.NAME, name)]) == []
    assert uid not in b.locate()
    assert a.locate(attributes=[attr(A.NAME, name)]) == [uid]  # untouched
    assert len(a.get(uid).value) == 32


def test_a_username_and_password_credential_of_the_user_is_accepted(kmip: KmipTestServer) -> None:
    user = kmip.user(["kmip:*"])
    c = kmip.client(user, username=user.access_key, password=user.secret_key)
    uid = c.create(Alg.AES, 256)
    assert len(c.get(uid).value) == 32


def test_a_wrong_username_or_password_is_not_authenticated(kmip: KmipTestServer) -> None:
    user, other = kmip.user(["kmip:*"]), kmip.user(["kmip:*"])
    assert user.access_key and user.secret_key and other.access_key and other.secret_key
    for username, password in (
        (user.access_key, user.secret_key + "x"),
        (other.access_key, other.secret_key),  # another user's, under this certificate
        (ROOT_USER, ROOT_PASSWORD),
    ):
        c = kmip.client(user, username=username, password=password)
        with refused(R.AUTHENTICATION_NOT_SUCCESSFUL):
            c.create(Alg.AES, 256)


# -- the other surfaces -------------------------------------------------------------------------


def test_an_aes_256_object_is_an_aws_key_usable_while_active(
    kmip: KmipTestServer, client: ProxyKmipClient, kms: Any
) -> None:
    uid = client.create(Alg.AES, 256, name=unique("shared"))
    with pytest.raises(ClientError) as disabled:
        kms.encrypt(KeyId=uid, Plaintext=b"hello")
    assert disabled.value.response["Error"]["Code"] == "DisabledException"
    client.activate(uid)
    blob = kms.encrypt(KeyId=uid, Plaintext=b"hello")["CiphertextBlob"]
    done = kms.decrypt(CiphertextBlob=blob)
    assert done["Plaintext"] == b"hello" and done["KeyId"].endswith(f"key/{uid}")
    assert kms.describe_key(KeyId=uid)["KeyMetadata"]["KeySpec"] == "SYMMETRIC_DEFAULT"
    listed = [
        k["KeyId"] for page in kms.get_paginator("list_keys").paginate() for k in page["Keys"]
    ]
    assert uid in listed
    assert uid in [k.key_id for k in kmip.admin().list_keys()]
    # Revoked: Deactivated, so disabled for the AWS API again.
    client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
    with pytest.raises(ClientError) as again:
        kms.encrypt(KeyId=uid, Plaintext=b"hello")
    assert again.value.response["Error"]["Code"] == "DisabledException"


def test_another_apis_disable_and_deletion_hold_a_kmip_object(
    client: ProxyKmipClient, kms: Any
) -> None:
    """The AWS API's DisableKey of an Active object stops KMIP Get, and a KMIP change of its
    names does not enable it again; EnableKey lets Get through; ScheduleKeyDeletion stops Get
    and survives a KMIP Revoke."""
    name = unique("held")
    uid = client.create(Alg.AES, 256, name=name)
    client.activate(uid)
    assert len(client.get(uid).value) == 32
    kms.disable_key(KeyId=uid)
    with refused(R.WRONG_KEY_LIFECYCLE_STATE):
        client.get(uid)
    client.modify_attribute(uid, attribute=attr(A.NAME, unique("renamed"), 0))
    assert kms.describe_key(KeyId=uid)["KeyMetadata"]["KeyState"] == "Disabled"
    assert attributes_of(client, uid)["State"] == [State.ACTIVE]  # KMIP's own state
    kms.enable_key(KeyId=uid)
    assert len(client.get(uid).value) == 32
    kms.schedule_key_deletion(KeyId=uid, PendingWindowInDays=7)
    with refused(R.WRONG_KEY_LIFECYCLE_STATE):
        client.get(uid)
    client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
    assert kms.describe_key(KeyId=uid)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    with refused(R.WRONG_KEY_LIFECYCLE_STATE):
        client.get(uid)


def test_an_aws_key_is_seen_by_kmip_but_not_exported_nor_destroyed(
    client: ProxyKmipClient, kms: Any
) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    found = attributes_of(client, key_id)
    assert found["Object Type"] == [OT.SYMMETRIC_KEY]
    assert found["Cryptographic Algorithm"] == [Alg.AES]
    assert found["Cryptographic Length"] == [256]
    assert found["State"] == [State.ACTIVE]
    with refused(R.PERMISSION_DENIED):
        client.get(key_id)
    with refused(R.PERMISSION_DENIED):
        client.destroy(key_id)
    with refused(R.PERMISSION_DENIED):
        client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, key_id)
    assert key_id not in client.locate()  # Locate lists the caller's KMIP objects
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"


# -- transport and hostile input ----------------------------------------------------------------


def test_many_requests_on_one_connection(kmip: KmipTestServer, alice: KmipIdentity) -> None:
    raw = kmip.raw(alice)
    uid = kmip.client(alice).create(Alg.AES, 256)
    for n in range(40):
        item = get_item(uid) if n % 2 else discover_item()
        response = decode_response(raw.request(encode_request(V.KMIP_1_0, [item])))
        assert response.batch_items[0].result_status.value is enums.ResultStatus.SUCCESS


def test_pipelined_requests_are_answered_in_order(
    kmip: KmipTestServer, alice: KmipIdentity
) -> None:
    raw = kmip.raw(alice)
    uid = kmip.client(alice).create(Alg.AES, 256)
    ids = [f"item-{n}".encode() for n in range(12)]
    raw.send(b"".join(encode_request(V.KMIP_1_2, [get_item(uid, i)]) for i in ids))
    answered = [decode_response(raw.read_message()).batch_items[0] for _ in ids]
    assert [item.unique_batch_item_id.value for item in answered] == ids
    assert all(item.result_status.value is enums.ResultStatus.SUCCESS for item in answered)


def test_a_frame_that_is_not_a_request_message_closes_the_connection(
    kmip: KmipTestServer, alice: KmipIdentity
) -> None:
    raw = kmip.raw(alice)
    body = b"\x00" * 16
    raw.send(b"\x42\x00\x7b\x01" + struct.pack(">I", len(body)) + body)  # a Response Message
    assert raw.closed_by_server()
    other = kmip.raw(alice)
    other.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert other.closed_by_server()


def test_a_length_over_the_maximum_message_closes_the_connection(
    kmip: KmipTestServer, alice: KmipIdentity
) -> None:
    raw = kmip.raw(alice)
    raw.send(REQUEST_HEAD + struct.pack(">I", kmip.max_message) + b"\x00" * 64)
    assert raw.closed_by_server()


def test_a_garbage_body_is_an_invalid_message_and_the_connection_stays(
    kmip: KmipTestServer, alice: KmipIdentity
) -> None:
    raw = kmip.raw(alice)
    garbage = os.urandom(200)
    response = decode_response(
        raw.request(REQUEST_HEAD + struct.pack(">I", len(garbage)) + garbage)
    )
    (item,) = response.batch_items
    assert item.result_status.value is enums.ResultStatus.OPERATION_FAILED
    assert item.result_reason.value is R.INVALID_MESSAGE
    # A message that lies about its own structure, then one that is fine.
    truncated = encode_request(V.KMIP_1_2, [discover_item()])[:-16]
    broken = REQUEST_HEAD + struct.pack(">I", len(truncated) - HEAD.size) + truncated[HEAD.size :]
    assert (
        decode_response(raw.request(broken)).batch_items[0].result_reason.value is R.INVALID_MESSAGE
    )
    fine = decode_response(raw.request(encode_request(V.KMIP_1_2, [discover_item()])))
    assert fine.batch_items[0].result_status.value is enums.ResultStatus.SUCCESS


def test_an_operation_not_served_is_operation_not_supported(
    kmip: KmipTestServer, alice: KmipIdentity
) -> None:
    uid = kmip.client(alice).create(Alg.AES, 256)
    check = batch_item(Op.CHECK, payloads.CheckRequestPayload(unique_identifier=uid), b"c1")
    archive = batch_item(Op.ARCHIVE, payloads.ArchiveRequestPayload(unique_identifier=uid))
    raw = kmip.raw(alice)
    for item in (check, archive):
        # (PyKMIP has no response payload classes for these: read the answer's TTLV)
        data = raw.request(encode_request(V.KMIP_1_2, [item]))
        T = enums.Tags
        assert ttlv_values(data, T.RESULT_STATUS) == [enums.ResultStatus.OPERATION_FAILED.value]
        assert ttlv_values(data, T.RESULT_REASON) == [R.OPERATION_NOT_SUPPORTED.value]
        assert ttlv_values(data, T.OPERATION) == [item.operation.value.value]
    data = raw.request(encode_request(V.KMIP_1_2, [check]))
    assert ttlv_values(data, enums.Tags.UNIQUE_BATCH_ITEM_ID) == [b"c1"]


@pytest.mark.parametrize("operation", [Op.ARCHIVE, Op.RECOVER])
def test_an_operation_not_served_echoes_its_unique_batch_item_id(
    kmip: KmipTestServer, alice: KmipIdentity, operation: enums.Operation
) -> None:
    """KMIP: a response batch item carries the Unique Batch Item ID of its request item. Archive
    and Recover requests do not decode with PyKMIP's classes (the server answers them from the
    raw message); their answers must still carry it."""
    item = batch_item(Op.ARCHIVE, payloads.ArchiveRequestPayload(unique_identifier="x"), b"id-7")
    message = bytearray(encode_request(V.KMIP_1_2, [item]))
    at = message.find(b"\x42\x00\x5c\x05\x00\x00\x00\x04")
    message[at + 8 : at + 12] = struct.pack(">I", operation.value)
    data = kmip.raw(alice).request(bytes(message))
    assert ttlv_values(data, enums.Tags.RESULT_REASON) == [R.OPERATION_NOT_SUPPORTED.value]
    assert ttlv_values(data, enums.Tags.OPERATION) == [operation.value]
    assert ttlv_values(data, enums.Tags.UNIQUE_BATCH_ITEM_ID) == [b"id-7"]


def test_an_operation_not_served_in_a_message_that_does_not_decode_is_still_echoed(
    kmip: KmipTestServer, alice: KmipIdentity
) -> None:
    """An operation PyKMIP has no payload class for (Recover) cannot be decoded; the answer
    still names it."""
    message = bytearray(
        encode_request(
            V.KMIP_1_2,
            [batch_item(Op.ARCHIVE, payloads.ArchiveRequestPayload(unique_identifier="x"))],
        )
    )
    at = message.find(b"\x42\x00\x5c\x05\x00\x00\x00\x04")
    assert at > 0
    message[at + 8 : at + 12] = struct.pack(">I", Op.RECOVER.value)
    raw = kmip.raw(alice)
    data = raw.request(bytes(message))
    assert ttlv_values(data, enums.Tags.RESULT_REASON) == [R.OPERATION_NOT_SUPPORTED.value]
    assert ttlv_values(data, enums.Tags.OPERATION) == [Op.RECOVER.value]


def test_two_batch_items_create_then_get_of_the_id_placeholder(
    kmip: KmipTestServer, alice: KmipIdentity
) -> None:
    template = cobjects.TemplateAttribute(
        attributes=[
            attr(A.CRYPTOGRAPHIC_ALGORITHM, Alg.AES),
            attr(A.CRYPTOGRAPHIC_LENGTH, 256),
            attr(A.CRYPTOGRAPHIC_USAGE_MASK, ENCRYPT_DECRYPT),
        ]
    )
    create_item = batch_item(
        Op.CREATE, payloads.CreateRequestPayload(OT.SYMMETRIC_KEY, template), b"\x01create"
    )
    response = raw_request(kmip, alice, V.KMIP_1_2, create_item, get_item(None, b"\x02get"))
    assert response.response_header.batch_count.value == 2
    first, second = response.batch_items
    assert (first.operation.value, first.unique_batch_item_id.value) == (Op.CREATE, b"\x01create")
    assert (second.operation.value, second.unique_batch_item_id.value) == (Op.GET, b"\x02get")
    assert first.result_status.value is second.result_status.value is enums.ResultStatus.SUCCESS
    uid = first.response_payload.unique_identifier
    assert second.response_payload.unique_identifier == uid
    assert len(second.response_payload.secret.key_block.key_value.key_material.value) == 32


def test_a_failed_batch_item_stops_the_batch_unless_continue(
    kmip: KmipTestServer, alice: KmipIdentity
) -> None:
    missing = str(uuid.uuid4())
    items = [get_item(missing, b"1"), discover_item(b"2")]
    stopped = raw_request(kmip, alice, V.KMIP_1_2, *items)
    assert [i.unique_batch_item_id.value for i in stopped.batch_items] == [b"1"]
    assert stopped.batch_items[0].result_reason.value is R.ITEM_NOT_FOUND
    go_on = raw_request(
        kmip, alice, V.KMIP_1_2, *items, batch_error=enums.BatchErrorContinuationOption.CONTINUE
    )
    assert [i.unique_batch_item_id.value for i in go_on.batch_items] == [b"1", b"2"]
    assert go_on.batch_items[1].result_status.value is enums.ResultStatus.SUCCESS


def test_a_batch_count_that_does_not_match_is_an_invalid_message(
    kmip: KmipTestServer, alice: KmipIdentity
) -> None:
    response = raw_request(kmip, alice, V.KMIP_1_2, discover_item(), batch_count=2)
    assert response.batch_items[0].result_reason.value is R.INVALID_MESSAGE


def test_a_maximum_response_size_too_small_is_response_too_large(
    kmip: KmipTestServer, alice: KmipIdentity, client: ProxyKmipClient
) -> None:
    uid, value = register_opaque(client, 2000)
    small = raw_request(kmip, alice, V.KMIP_1_2, get_item(uid), maximum_response_size=1024)
    (item,) = small.batch_items
    assert item.result_status.value is enums.ResultStatus.OPERATION_FAILED
    assert item.result_reason.value is R.RESPONSE_TOO_LARGE
    big = raw_request(kmip, alice, V.KMIP_1_2, get_item(uid), maximum_response_size=8192)
    assert big.batch_items[0].response_payload.secret.opaque_data_value.value == value


@pytest.mark.parametrize("tls", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_each_response_arrives_in_one_tls_record(
    kmip: KmipTestServer, alice: KmipIdentity, client: ProxyKmipClient, tls: ssl.TLSVersion
) -> None:
    """libkmip (Ceph) reads the 8-byte head, then the body in one read: one recv of a TLS socket
    returns at most one record, so the whole message must come back from one recv."""
    opaque, _ = register_opaque(client, 7000)  # a ~7 KiB answer, under Ceph's 8192
    key = client.create(Alg.AES, 256)
    raw = kmip.raw(alice, maximum_version=tls)
    assert raw.sock.version() == ("TLSv1.2" if tls is ssl.TLSVersion.TLSv1_2 else "TLSv1.3")
    for uid in (opaque, key, opaque, key):
        raw.send(encode_request(V.KMIP_1_0, [get_item(uid)], maximum_response_size=8192))
        data = raw.recv_once()
        _, _, length = HEAD.unpack_from(data)
        assert len(data) == HEAD.size + length, (len(data), length)
        assert (
            decode_response(data).batch_items[0].result_status.value is enums.ResultStatus.SUCCESS
        )
    for uid in (opaque, key):
        raw.send(encode_request(V.KMIP_1_0, [get_item(uid)], maximum_response_size=8192))
        assert decode_response(raw.read_as_libkmip()).batch_items[0].response_payload is not None


# -- audit --------------------------------------------------------------------------------------


def test_each_kmip_request_is_an_audit_line(kmip: KmipTestServer) -> None:
    user = kmip.user(["kmip:Create", "kmip:Activate", "kmip:GetAttributes", "kmip:Locate"])
    c = kmip.client(user)
    uid = c.create(Alg.AES, 256, name=unique("audited"))
    c.activate(uid)
    c.get_attributes(uid)
    c.locate()
    with refused(R.PERMISSION_DENIED):
        c.get(uid)
    lines = [line for line in kmip.audit_lines() if line["principal"] == user.access_key]
    done = [
        (line["action"], line["key"], line["outcome"])
        for line in lines
        if line["outcome"] != "intent"
    ]
    assert done == [
        ("kmip:Create", uid, "allowed"),
        ("kmip:Activate", uid, "allowed"),
        ("kmip:GetAttributes", uid, "allowed"),
        ("kmip:Locate", None, "allowed"),
        ("kmip:Get", uid, "denied"),
    ]
    denied = lines[-1]
    assert denied["error"] == "PERMISSION_DENIED" and denied["status"] == 1
    intents = [line["action"] for line in lines if line["outcome"] == "intent"]
    assert intents == ["kmip:Create", "kmip:Activate"]  # before each change
    assert all(line["source"].startswith("127.0.0.1:") for line in lines)
